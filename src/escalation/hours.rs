//! A shop's business hours: when its people are in, in the shop's own time zone.
//!
//! A weekly schedule of shifts (split shifts, and shifts past midnight that belong to the day
//! they start on), holidays that close whole days, and China's make-up working days (调休), on
//! which a weekend day keeps another weekday's hours. [`BusinessHours`] answers the questions the
//! conversation and the response clock ask: is anyone in, when are they next, when do they
//! leave, which closed stretch is this, and how much open time lies inside an interval.
//!
//! Pure: a [`Timestamp`] in, answers out; no clock, no I/O. Time zones come from the IANA
//! database bundled into the binary by `jiff` (feature `tzdb-bundle-always`), so answers are the
//! same on a host without `/usr/share/zoneinfo`. Local times that a daylight-saving change skips
//! or repeats are resolved the usual way (a skipped 02:30 is read as 03:30, a repeated one as its
//! first occurrence), so a zone with DST needs nothing special from the schedule.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// The zone of a shop that names none.
pub const DEFAULT_ZONE: &str = "Asia/Shanghai";

/// How far ahead (and back) the schedule is searched for an opening: beyond a year, so that a
/// shop closed for a long holiday still has an answer, and short enough to stay cheap.
const HORIZON_DAYS: i32 = 400;

const MINUTES_PER_DAY: u16 = 24 * 60;

/// Why a business-hours setting cannot be used. Messages are for the shop's operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    #[error("{0:?} is not a time zone xiaoer knows: write an IANA name like \"Asia/Shanghai\"")]
    UnknownZone(String),
    #[error("{0:?} is not a time range: write it like \"09:00-18:00\"")]
    NotARange(String),
    #[error("{0:?} is not a time of day: write it like \"09:00\" (24:00 only as an end)")]
    NotATime(String),
    #[error("{0:?} is empty: it starts and ends at the same time (write 00:00-24:00 for all day)")]
    EmptyRange(String),
    #[error("{first:?} and {second:?} overlap")]
    Overlap { first: String, second: String },
    #[error("{0:?} is not a date: write it like \"2026-10-01\"")]
    NotADate(String),
    #[error("{0:?} ends before it starts")]
    BackwardDates(String),
    #[error("{0:?} is not a weekday: write monday, tuesday, … sunday")]
    NotAWeekday(String),
    #[error("{0} is both a holiday and a make-up working day")]
    HolidayAndWorkday(Date),
    #[error(
        "{0:?} is not a time: write it like \"2026-12-05 09:30\" (in the shop's zone) or \"2026-12-05T09:30:00+08:00\""
    )]
    NotAnInstant(String),
}

/// One shift of a day, in minutes from the day's midnight. `end` may pass midnight (up to the
/// next day's `start`): `22:00-02:00` is 1320..1560 and belongs to the day it starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shift {
    start: u16,
    end: u16,
}

impl Shift {
    /// Parses `HH:MM-HH:MM`. An end earlier than the start passes midnight; `24:00` is allowed
    /// as an end.
    ///
    /// # Errors
    ///
    /// A malformed range or time, or a range that starts and ends at the same time.
    pub fn parse(text: &str) -> Result<Shift, HoursError> {
        let (start, end) = text
            .split_once('-')
            .ok_or_else(|| HoursError::NotARange(text.to_owned()))?;
        let start = minutes(start.trim(), false)?;
        let end = minutes(end.trim(), true)?;
        match end.cmp(&start) {
            std::cmp::Ordering::Greater => Ok(Shift { start, end }),
            std::cmp::Ordering::Equal => Err(HoursError::EmptyRange(text.to_owned())),
            std::cmp::Ordering::Less => Ok(Shift {
                start,
                end: end + MINUTES_PER_DAY,
            }),
        }
    }

    /// Parses one day's shifts, e.g. `["09:00-12:00", "13:30-18:00"]`; returns them in order.
    ///
    /// # Errors
    ///
    /// The first shift that does not parse, or two shifts of the day that overlap.
    pub fn parse_day<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Shift>, HoursError> {
        let mut shifts = Vec::new();
        for text in texts {
            shifts.push((Shift::parse(text.as_ref())?, text.as_ref()));
        }
        shifts.sort();
        for pair in shifts.windows(2) {
            if let [(first, first_text), (second, second_text)] = pair
                && second.start < first.end
            {
                return Err(HoursError::Overlap {
                    first: (*first_text).to_owned(),
                    second: (*second_text).to_owned(),
                });
            }
        }
        Ok(shifts.into_iter().map(|(shift, _)| shift).collect())
    }
}

impl fmt::Display for Shift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = if self.end > MINUTES_PER_DAY {
            self.end - MINUTES_PER_DAY
        } else {
            self.end
        };
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            end / 60,
            end % 60
        )
    }
}

/// `HH:MM` as minutes from midnight; `24:00` only when `is_end`.
fn minutes(text: &str, is_end: bool) -> Result<u16, HoursError> {
    let bad = || HoursError::NotATime(text.to_owned());
    let (hours, mins) = text.split_once(':').ok_or_else(bad)?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !(1..=2).contains(&hours.len()) || !hours.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !two_digits(mins) {
        return Err(bad());
    }
    let hours: u16 = hours.parse().map_err(|_| bad())?;
    let mins: u16 = mins.parse().map_err(|_| bad())?;
    match (hours, mins) {
        (24, 0) if is_end => Ok(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Ok(hours * 60 + mins),
        _ => Err(bad()),
    }
}

/// Days closed from `first` to `last`, both included: `"2026-10-01..2026-10-07"` or one day
/// `"2027-01-01"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub first: Date,
    pub last: Date,
}

impl DateRange {
    fn contains(&self, date: Date) -> bool {
        self.first <= date && date <= self.last
    }
}

impl FromStr for DateRange {
    type Err = HoursError;

    fn from_str(text: &str) -> Result<DateRange, HoursError> {
        let (first, last) = match text.split_once("..") {
            Some((first, last)) => (parse_date(first.trim())?, parse_date(last.trim())?),
            None => {
                let day = parse_date(text.trim())?;
                (day, day)
            }
        };
        if last < first {
            return Err(HoursError::BackwardDates(text.to_owned()));
        }
        Ok(DateRange { first, last })
    }
}

/// A calendar date, `YYYY-MM-DD`.
///
/// # Errors
///
/// Anything else, including dates that do not exist (2026-02-30).
pub fn parse_date(text: &str) -> Result<Date, HoursError> {
    let bad = || HoursError::NotADate(text.to_owned());
    // jiff also reads forms like `20261001`; an operator's file should say one thing one way.
    if text.len() != 10 || text.as_bytes().get(4) != Some(&b'-') {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

/// `monday` … `sunday` (any case).
///
/// # Errors
///
/// Any other word.
pub fn parse_weekday(text: &str) -> Result<Weekday, HoursError> {
    let day = match text.trim().to_ascii_lowercase().as_str() {
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        "sunday" => Weekday::Sunday,
        _ => return Err(HoursError::NotAWeekday(text.to_owned())),
    };
    Ok(day)
}

/// The IANA zone `name` from the bundled database.
///
/// # Errors
///
/// A name the database does not have.
pub fn parse_zone(name: &str) -> Result<TimeZone, HoursError> {
    TimeZone::get(name.trim()).map_err(|_| HoursError::UnknownZone(name.to_owned()))
}

/// The weekday as buyers read it: 周一 … 周日.
pub fn weekday_zh(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "周一",
        Weekday::Tuesday => "周二",
        Weekday::Wednesday => "周三",
        Weekday::Thursday => "周四",
        Weekday::Friday => "周五",
        Weekday::Saturday => "周六",
        Weekday::Sunday => "周日",
    }
}

/// A shop's business hours: always open, or a weekly schedule with holidays and make-up days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessHours {
    zone: TimeZone,
    zone_name: String,
    /// Shifts by weekday, Monday first; `None` means open around the clock, every day.
    week: Option<[Vec<Shift>; 7]>,
    holidays: Vec<DateRange>,
    workdays: Vec<Date>,
    makeup: Weekday,
}

impl Default for BusinessHours {
    fn default() -> Self {
        BusinessHours::always_open()
    }
}

impl BusinessHours {
    /// A shop without `[shop.hours]`: people are always in.
    pub fn always_open() -> BusinessHours {
        BusinessHours {
            // Only for showing times; a missing bundled zone falls back to UTC.
            zone: TimeZone::get(DEFAULT_ZONE).unwrap_or(TimeZone::UTC),
            zone_name: DEFAULT_ZONE.to_owned(),
            week: None,
            holidays: Vec::new(),
            workdays: Vec::new(),
            makeup: Weekday::Monday,
        }
    }

    /// A weekly schedule in `zone` (named `zone_name`), shifts by weekday with Monday first; no
    /// holidays and no make-up days yet.
    pub fn weekly(zone: TimeZone, zone_name: impl Into<String>, week: [Vec<Shift>; 7]) -> Self {
        BusinessHours {
            zone,
            zone_name: zone_name.into(),
            week: Some(week),
            holidays: Vec::new(),
            workdays: Vec::new(),
            makeup: Weekday::Monday,
        }
    }

    /// Closes the given days.
    pub fn with_holidays(mut self, holidays: Vec<DateRange>) -> Self {
        self.holidays = holidays;
        self
    }

    /// Opens the given days (调休) with the hours of weekday `makeup`.
    ///
    /// # Errors
    ///
    /// A day that is a holiday too (set the holidays first).
    pub fn with_workdays(
        mut self,
        workdays: Vec<Date>,
        makeup: Weekday,
    ) -> Result<Self, HoursError> {
        if let Some(day) = workdays
            .iter()
            .find(|day| self.holidays.iter().any(|range| range.contains(**day)))
        {
            return Err(HoursError::HolidayAndWorkday(*day));
        }
        self.workdays = workdays;
        self.makeup = makeup;
        Ok(self)
    }

    /// Whether people are always in (no schedule).
    pub fn is_always_open(&self) -> bool {
        self.week.is_none()
    }

    /// The shop's zone.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The shop's zone as configured, e.g. `Asia/Shanghai`.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// Whether people are in at `at`.
    pub fn is_open(&self, at: Timestamp) -> bool {
        self.next_open(at) == Some(at)
    }

    /// When people are next in: `at` itself while they are; `None` when the schedule has no
    /// opening within about 400 days.
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        if self.week.is_none() {
            return Some(at);
        }
        self.shifts_from(self.date_of(at), HORIZON_DAYS)
            .find(|(_, end)| *end > at)
            .map(|(start, _)| start.max(at))
    }

    /// When people leave, if they are in at `at` and leave within about 400 days; `None` when
    /// they are out, or always in.
    pub fn closes_at(&self, at: Timestamp) -> Option<Timestamp> {
        self.week.as_ref()?;
        let mut shifts = self
            .shifts_from(self.date_of(at), HORIZON_DAYS)
            .skip_while(|(_, end)| *end <= at);
        let (start, mut end) = shifts.next()?;
        if start > at {
            return None;
        }
        // Shifts that touch or overlap (Friday 22:00-24:00, Saturday 00:00-02:00) are one stay.
        for (next_start, next_end) in shifts {
            if next_start > end {
                return Some(end);
            }
            end = end.max(next_end);
        }
        None
    }

    /// The closed stretch `at` is in, as (when people left, when they are back); `None` while
    /// they are in. The start names the stretch: it is the same for every moment of it, which
    /// is what "one notice per closed period" keys on. With no opening within about 400 days
    /// before or after, the bound is [`Timestamp::MIN`] or [`Timestamp::MAX`].
    pub fn closed_period(&self, at: Timestamp) -> Option<(Timestamp, Timestamp)> {
        self.week.as_ref()?;
        let opens = self.next_open(at);
        if opens == Some(at) {
            return None;
        }
        Some((
            self.last_close(at).unwrap_or(Timestamp::MIN),
            opens.unwrap_or(Timestamp::MAX),
        ))
    }

    /// The open time inside `from..until` (zero when `until` is not later).
    pub fn open_time_between(&self, from: Timestamp, until: Timestamp) -> Duration {
        if until <= from {
            return Duration::ZERO;
        }
        if self.week.is_none() {
            return duration_between(from, until);
        }
        let days = i32::try_from(
            until
                .duration_since(from)
                .as_secs()
                .saturating_div(86_400)
                .saturating_add(3),
        )
        .unwrap_or(i32::MAX);
        let mut total = Duration::ZERO;
        let mut covered = from;
        for (start, end) in self.shifts_from(self.date_of(from), days) {
            if start >= until {
                break;
            }
            let counted_from = start.max(covered);
            let counted_until = end.min(until);
            if counted_until > counted_from {
                total += duration_between(counted_from, counted_until);
            }
            covered = covered.max(end);
        }
        total
    }

    /// When people will be in, in words for a buyer reading at `now`: "今天 13:30",
    /// "明早 9:00", "明天 14:00", within the week ahead "周一 9:00", later "10月8日 9:00", and
    /// half a year or more ahead with the year.
    pub fn eta_words(&self, now: Timestamp, opens: Timestamp) -> String {
        let today = self.date_of(now);
        let local = opens.to_zoned_datetime(self.zone.clone());
        let day = local.date();
        let clock = format!("{}:{:02}", local.hour(), local.minute());
        let days_ahead = (day - today).get_days();
        match days_ahead {
            ..=0 => format!("今天 {clock}"),
            1 if (5..12).contains(&local.hour()) => format!("明早 {clock}"),
            1 => format!("明天 {clock}"),
            2..=6 => format!("{} {clock}", weekday_zh(day.weekday())),
            7..180 => format!("{}月{}日 {clock}", day.month(), day.day()),
            _ => format!("{}年{}月{}日 {clock}", day.year(), day.month(), day.day()),
        }
    }

    /// Reads a moment as an operator writes it: RFC 3339 (`2026-12-05T09:30:00+08:00`), or a
    /// local date and time in the shop's zone (`2026-12-05 09:30`).
    ///
    /// # Errors
    ///
    /// Text that is neither.
    pub fn parse_moment(&self, text: &str) -> Result<Timestamp, HoursError> {
        let text = text.trim();
        if let Ok(at) = text.parse::<Timestamp>() {
            return Ok(at);
        }
        text.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|local| self.zone.to_ambiguous_timestamp(local).compatible().ok())
            .ok_or_else(|| HoursError::NotAnInstant(text.to_owned()))
    }

    /// The local calendar date of `at` in the shop's zone.
    fn date_of(&self, at: Timestamp) -> Date {
        self.zone.to_datetime(at).date()
    }

    /// The shifts that start on `date`, after holidays and make-up days.
    fn shifts_on(&self, date: Date) -> &[Shift] {
        let Some(week) = &self.week else {
            return &[];
        };
        if self.holidays.iter().any(|range| range.contains(date)) {
            return &[];
        }
        let day = if self.workdays.contains(&date) {
            self.makeup
        } else {
            date.weekday()
        };
        let index = usize::try_from(day.to_monday_zero_offset()).unwrap_or(0);
        week.get(index).map_or(&[], Vec::as_slice)
    }

    /// Every shift as (start, end), from the shifts starting two days before `date` (one may
    /// still run) to those starting `days` days after it, in order of start.
    fn shifts_from(&self, date: Date, days: i32) -> impl Iterator<Item = (Timestamp, Timestamp)> {
        (-2..=days).flat_map(move |offset| {
            let day = date.checked_add(offset.days()).ok();
            day.into_iter().flat_map(move |day| {
                self.shifts_on(day).iter().filter_map(move |shift| {
                    Some((
                        self.instant(day, shift.start)?,
                        self.instant(day, shift.end)?,
                    ))
                })
            })
        })
    }

    /// The latest end of a shift at or before `at` within the horizon.
    fn last_close(&self, at: Timestamp) -> Option<Timestamp> {
        let today = self.date_of(at);
        let ends_on = |offset: i32| -> Option<Timestamp> {
            let day = today.checked_add(offset.days()).ok()?;
            self.shifts_on(day)
                .iter()
                .filter_map(|shift| self.instant(day, shift.end))
                .filter(|end| *end <= at)
                .max()
        };
        let mut offset = 1;
        while offset >= -HORIZON_DAYS {
            if let Some(end) = ends_on(offset) {
                // A long shift of the day before can end later than this day's early one.
                return Some(ends_on(offset - 1).map_or(end, |earlier| earlier.max(end)));
            }
            offset -= 1;
        }
        None
    }

    /// The instant `minutes` after the start of `date` on the shop's wall clock.
    fn instant(&self, date: Date, minutes: u16) -> Option<Timestamp> {
        let day = date
            .checked_add(i32::from(minutes / MINUTES_PER_DAY).days())
            .ok()?;
        let minute_of_day = minutes % MINUTES_PER_DAY;
        let hour = i8::try_from(minute_of_day / 60).ok()?;
        let minute = i8::try_from(minute_of_day % 60).ok()?;
        self.zone
            .to_ambiguous_timestamp(day.at(hour, minute, 0, 0))
            .compatible()
            .ok()
    }
}

fn duration_between(from: Timestamp, until: Timestamp) -> Duration {
    Duration::try_from(until.duration_since(from)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRI: usize = 4;
    const SAT: usize = 5;
    const SUN: usize = 6;

    fn day(texts: &[&str]) -> Vec<Shift> {
        Shift::parse_day(texts).unwrap()
    }

    /// Monday–Friday 09:00-12:00 and 13:30-18:00 in Shanghai; Friday also 22:00-02:00; weekend
    /// closed.
    fn office() -> BusinessHours {
        let split = day(&["09:00-12:00", "13:30-18:00"]);
        let mut week: [Vec<Shift>; 7] = Default::default();
        for weekday in week.iter_mut().take(5) {
            *weekday = split.clone();
        }
        week[FRI] = day(&["09:00-12:00", "13:30-18:00", "22:00-02:00"]);
        BusinessHours::weekly(parse_zone("Asia/Shanghai").unwrap(), "Asia/Shanghai", week)
    }

    /// 2026's National Day week (Thursday 1 to Wednesday 7 October) closed; Saturday 10 October
    /// a make-up working day with Monday's hours.
    fn office_with_holidays() -> BusinessHours {
        office()
            .with_holidays(vec!["2026-10-01..2026-10-07".parse().unwrap()])
            .with_workdays(vec![parse_date("2026-10-10").unwrap()], Weekday::Monday)
            .unwrap()
    }

    fn at(hours: &BusinessHours, local: &str) -> Timestamp {
        hours.parse_moment(local).unwrap()
    }

    fn show(hours: &BusinessHours, t: Option<Timestamp>) -> String {
        match t {
            Some(t) if t == Timestamp::MIN => "MIN".into(),
            Some(t) if t == Timestamp::MAX => "MAX".into(),
            Some(t) => t
                .to_zoned_datetime(hours.zone().clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string(),
            None => "-".into(),
        }
    }

    #[test]
    fn shifts_parse_and_refuse() {
        let cases: &[(&[&str], Result<&str, HoursError>)] = &[
            (
                &["09:00-12:00", "13:30-18:00"],
                Ok("09:00-12:00 13:30-18:00"),
            ),
            (
                &["13:30-18:00", "9:00-12:00"],
                Ok("09:00-12:00 13:30-18:00"),
            ),
            (&["22:00-02:00"], Ok("22:00-02:00")),
            (&["18:00-24:00"], Ok("18:00-24:00")),
            (&["00:00-24:00"], Ok("00:00-24:00")),
            (&[], Ok("")),
            (&["09:00"], Err(HoursError::NotARange("09:00".into()))),
            (&["9-12"], Err(HoursError::NotATime("9".into()))),
            (&["09:00-25:00"], Err(HoursError::NotATime("25:00".into()))),
            (&["24:00-02:00"], Err(HoursError::NotATime("24:00".into()))),
            (&["09:60-10:00"], Err(HoursError::NotATime("09:60".into()))),
            (
                &["09:00-09:00"],
                Err(HoursError::EmptyRange("09:00-09:00".into())),
            ),
            (
                &["09:00-12:00", "11:00-14:00"],
                Err(HoursError::Overlap {
                    first: "09:00-12:00".into(),
                    second: "11:00-14:00".into(),
                }),
            ),
            (
                &["22:00-02:00", "23:00-23:30"],
                Err(HoursError::Overlap {
                    first: "22:00-02:00".into(),
                    second: "23:00-23:30".into(),
                }),
            ),
        ];
        for (texts, expected) in cases {
            let got = Shift::parse_day(texts).map(|shifts| {
                shifts
                    .iter()
                    .map(Shift::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            assert_eq!(got, expected.clone().map(str::to_string), "{texts:?}");
        }
    }

    #[test]
    fn dates_weekdays_and_zones() {
        let range: DateRange = "2026-10-01..2026-10-07".parse().unwrap();
        assert_eq!(range.first, parse_date("2026-10-01").unwrap());
        assert_eq!(range.last, parse_date("2026-10-07").unwrap());
        let one: DateRange = "2027-01-01".parse().unwrap();
        assert_eq!(one.first, one.last);
        assert_eq!(
            "2026-10-07..2026-10-01".parse::<DateRange>(),
            Err(HoursError::BackwardDates("2026-10-07..2026-10-01".into()))
        );
        for bad in ["2026-02-30", "20261001", "2026/10/01", "tomorrow"] {
            assert_eq!(parse_date(bad), Err(HoursError::NotADate(bad.into())));
        }
        assert_eq!(parse_weekday("Saturday"), Ok(Weekday::Saturday));
        assert!(parse_weekday("sat").is_err());
        assert!(parse_zone("Europe/Berlin").is_ok());
        assert_eq!(
            parse_zone("Asia/Peking"),
            Err(HoursError::UnknownZone("Asia/Peking".into()))
        );
        let holiday = office()
            .with_holidays(vec!["2026-10-01..2026-10-07".parse().unwrap()])
            .with_workdays(vec![parse_date("2026-10-03").unwrap()], Weekday::Monday);
        assert_eq!(
            holiday,
            Err(HoursError::HolidayAndWorkday(
                parse_date("2026-10-03").unwrap()
            ))
        );
    }

    #[test]
    fn open_next_open_and_closes_at() {
        let hours = office_with_holidays();
        // (local time, open?, next open, closes at)
        let cases = [
            // A split shift: open in the morning, closed at lunch, open after it.
            (
                "2026-12-02 10:00",
                true,
                "2026-12-02 10:00",
                "2026-12-02 12:00",
            ),
            ("2026-12-02 12:00", false, "2026-12-02 13:30", "-"),
            (
                "2026-12-02 13:30",
                true,
                "2026-12-02 13:30",
                "2026-12-02 18:00",
            ),
            ("2026-12-02 08:59", false, "2026-12-02 09:00", "-"),
            // Past midnight across a weekend: Friday's night shift runs into Saturday.
            (
                "2026-12-04 23:00",
                true,
                "2026-12-04 23:00",
                "2026-12-05 02:00",
            ),
            (
                "2026-12-05 01:59",
                true,
                "2026-12-05 01:59",
                "2026-12-05 02:00",
            ),
            ("2026-12-05 02:00", false, "2026-12-07 09:00", "-"),
            ("2026-12-05 20:10", false, "2026-12-07 09:00", "-"),
            // The National Day week is closed; the make-up Saturday keeps Monday's hours.
            (
                "2026-09-30 17:00",
                true,
                "2026-09-30 17:00",
                "2026-09-30 18:00",
            ),
            ("2026-10-01 10:00", false, "2026-10-08 09:00", "-"),
            (
                "2026-10-08 09:30",
                true,
                "2026-10-08 09:30",
                "2026-10-08 12:00",
            ),
            (
                "2026-10-10 10:00",
                true,
                "2026-10-10 10:00",
                "2026-10-10 12:00",
            ),
            ("2026-10-10 19:00", false, "2026-10-12 09:00", "-"),
            // Sunday 11 October is an ordinary Sunday.
            ("2026-10-11 10:00", false, "2026-10-12 09:00", "-"),
        ];
        for (local, open, next, closes) in cases {
            let t = at(&hours, local);
            assert_eq!(hours.is_open(t), open, "open at {local}");
            assert_eq!(
                show(&hours, hours.next_open(t)),
                next,
                "next open from {local}"
            );
            assert_eq!(
                show(&hours, hours.closes_at(t)),
                closes,
                "closes at, from {local}"
            );
        }
    }

    #[test]
    fn a_night_shift_before_a_holiday_still_runs_into_it() {
        // A holiday from Saturday leaves Friday's night shift alone, past midnight too; a
        // holiday on the Friday cancels it, the part after midnight included.
        let hours = office().with_holidays(vec!["2026-12-05..2026-12-06".parse().unwrap()]);
        let t = at(&hours, "2026-12-05 01:00");
        assert!(hours.is_open(t));
        assert_eq!(show(&hours, hours.closes_at(t)), "2026-12-05 02:00");
        let closed_friday = office().with_holidays(vec!["2026-12-04".parse().unwrap()]);
        assert!(!closed_friday.is_open(at(&closed_friday, "2026-12-04 23:00")));
        assert!(!closed_friday.is_open(at(&closed_friday, "2026-12-05 01:00")));
    }

    #[test]
    fn touching_shifts_are_one_stay() {
        let mut week: [Vec<Shift>; 7] = Default::default();
        week[FRI] = day(&["18:00-24:00"]);
        week[SAT] = day(&["00:00-03:00", "10:00-12:00"]);
        let hours = BusinessHours::weekly(parse_zone("Asia/Shanghai").unwrap(), "x", week);
        let t = at(&hours, "2026-12-04 20:00");
        assert_eq!(show(&hours, hours.closes_at(t)), "2026-12-05 03:00");
    }

    #[test]
    fn closed_periods_are_named_by_their_start() {
        let hours = office_with_holidays();
        let cases = [
            (
                "2026-12-02 12:30",
                Some(("2026-12-02 12:00", "2026-12-02 13:30")),
            ),
            ("2026-12-02 10:00", None),
            // One stretch from Friday night's close to Monday morning.
            (
                "2026-12-05 03:00",
                Some(("2026-12-05 02:00", "2026-12-07 09:00")),
            ),
            (
                "2026-12-06 22:00",
                Some(("2026-12-05 02:00", "2026-12-07 09:00")),
            ),
            (
                "2026-10-04 12:00",
                Some(("2026-09-30 18:00", "2026-10-08 09:00")),
            ),
        ];
        for (local, expected) in cases {
            let got = hours
                .closed_period(at(&hours, local))
                .map(|(start, end)| (show(&hours, Some(start)), show(&hours, Some(end))));
            let expected = expected.map(|(s, e)| (s.to_string(), e.to_string()));
            assert_eq!(got, expected, "closed period at {local}");
        }
    }

    #[test]
    fn a_shop_that_never_opens_and_one_that_never_closes() {
        let never = BusinessHours::weekly(
            parse_zone("Asia/Shanghai").unwrap(),
            "Asia/Shanghai",
            Default::default(),
        );
        let t = at(&never, "2026-12-02 10:00");
        assert!(!never.is_open(t));
        assert_eq!(never.next_open(t), None);
        assert_eq!(
            never.closed_period(t),
            Some((Timestamp::MIN, Timestamp::MAX))
        );
        assert_eq!(never.open_time_between(t, t + 48.hours()), Duration::ZERO);

        let always = BusinessHours::always_open();
        assert!(always.is_always_open());
        assert!(always.is_open(t));
        assert_eq!(always.next_open(t), Some(t));
        assert_eq!(always.closes_at(t), None);
        assert_eq!(always.closed_period(t), None);
        assert_eq!(
            always.open_time_between(t, t + 2.hours()),
            Duration::from_secs(7200)
        );

        let around_the_clock: [Vec<Shift>; 7] = std::array::from_fn(|_| day(&["00:00-24:00"]));
        let hours = BusinessHours::weekly(parse_zone("UTC").unwrap(), "UTC", around_the_clock);
        assert!(hours.is_open(t));
        assert_eq!(
            hours.closes_at(t),
            None,
            "a schedule open every hour never closes"
        );
    }

    #[test]
    fn eta_words() {
        let hours = office_with_holidays();
        // (now, opening, words); Wednesday 2 December 2026 unless said otherwise.
        let cases = [
            ("2026-12-02 12:10", "2026-12-02 13:30", "今天 13:30"),
            ("2026-12-02 19:00", "2026-12-03 09:00", "明早 9:00"),
            ("2026-12-02 19:00", "2026-12-03 14:00", "明天 14:00"),
            ("2026-12-02 19:00", "2026-12-03 04:30", "明天 4:30"),
            ("2026-12-05 20:10", "2026-12-07 09:00", "周一 9:00"),
            ("2026-10-01 10:00", "2026-10-08 09:00", "10月8日 9:00"),
            ("2026-12-31 19:00", "2027-01-04 09:00", "周一 9:00"),
            ("2026-12-20 19:00", "2027-01-04 09:00", "1月4日 9:00"),
            ("2026-10-01 10:00", "2027-05-06 09:00", "2027年5月6日 9:00"),
        ];
        for (now, opens, words) in cases {
            assert_eq!(
                hours.eta_words(at(&hours, now), at(&hours, opens)),
                words,
                "{now} → {opens}"
            );
        }
    }

    #[test]
    fn open_time_between() {
        let hours = office_with_holidays();
        let minutes = |m: u64| Duration::from_secs(m * 60);
        let cases = [
            // Across the lunch break: 11:00-12:00 and 13:30-14:00.
            ("2026-12-02 11:00", "2026-12-02 14:00", minutes(90)),
            // Across a night: 17:00-18:00, then 09:00-10:00 the next morning.
            ("2026-12-02 17:00", "2026-12-03 10:00", minutes(120)),
            // Across Friday night's shift into the weekend: 22:00-02:00 only.
            ("2026-12-04 20:00", "2026-12-06 20:00", minutes(240)),
            // A whole ordinary working day.
            ("2026-12-02 00:00", "2026-12-03 00:00", minutes(450)),
            // The holiday week counts nothing; the make-up Saturday counts Monday's 7.5 hours,
            // after the two of Friday's night shift that run into it.
            ("2026-10-01 00:00", "2026-10-08 00:00", minutes(0)),
            ("2026-10-10 00:00", "2026-10-11 00:00", minutes(120 + 450)),
            ("2026-12-02 14:00", "2026-12-02 11:00", minutes(0)),
        ];
        for (from, until, expected) in cases {
            assert_eq!(
                hours.open_time_between(at(&hours, from), at(&hours, until)),
                expected,
                "{from} .. {until}"
            );
        }
    }

    #[test]
    fn a_zone_with_daylight_saving() {
        let zone = parse_zone("Europe/Berlin").unwrap();
        let mut week: [Vec<Shift>; 7] = std::array::from_fn(|_| day(&["09:00-18:00"]));
        week[SAT] = day(&["00:00-06:00"]);
        week[SUN] = day(&["00:00-06:00"]);
        let hours = BusinessHours::weekly(zone, "Europe/Berlin", week);
        // Sunday 29 March 2026 the clocks go from 02:00 to 03:00: five hours from midnight to 6.
        let spring = (
            at(&hours, "2026-03-29 00:00"),
            at(&hours, "2026-03-29 12:00"),
        );
        assert_eq!(
            hours.open_time_between(spring.0, spring.1),
            Duration::from_secs(5 * 3600)
        );
        // Sunday 25 October 2026 they go back from 03:00 to 02:00: seven hours.
        let autumn = (
            at(&hours, "2026-10-25 00:00"),
            at(&hours, "2026-10-25 12:00"),
        );
        assert_eq!(
            hours.open_time_between(autumn.0, autumn.1),
            Duration::from_secs(7 * 3600)
        );
        // Monday opens at 9:00 on the wall clock, which is 07:00 UTC in summer time.
        let sunday_night = at(&hours, "2026-03-29 20:00");
        let monday = hours.next_open(sunday_night).unwrap();
        assert_eq!(monday, "2026-03-30T07:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(hours.eta_words(sunday_night, monday), "明早 9:00");
        // A time the change skips is read as the hour after.
        assert_eq!(
            at(&hours, "2026-03-29 02:30"),
            "2026-03-29T01:30:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn moments_are_read_in_the_shop_zone_or_with_their_offset() {
        let hours = office();
        let expected: Timestamp = "2026-12-05T01:30:00Z".parse().unwrap();
        assert_eq!(hours.parse_moment("2026-12-05 09:30"), Ok(expected));
        assert_eq!(
            hours.parse_moment("2026-12-05T09:30:00+08:00"),
            Ok(expected)
        );
        assert_eq!(
            hours.parse_moment("next friday"),
            Err(HoursError::NotAnInstant("next friday".into()))
        );
    }
}
