//! The period a report covers, from `--since` and `--until`.
//!
//! Accepted: a duration back from now (`24h`, `7d`, `90min`; humantime's units), a date
//! (`2026-12-01`, midnight at the shop's clock), or a date and time (`2026-12-01T08:00`,
//! `2026-12-01 08:00:00`, with `Z` or an offset such as `+08:00`; without one it is the shop's
//! clock). The shop's clock is China's, UTC+8 all year (no daylight saving), as in the console.
//! The few accepted shapes are split by hand so that each can be named in the error; dates are
//! checked and turned into instants by [`crate::timefmt`] (jiff).

use serde::Serialize;

/// China's clock: UTC+8, no daylight saving.
pub const SHOP_OFFSET_MS: i64 = 8 * 3600 * 1000;

/// What a report covers: `[since_ms, until_ms)`, one shop account or all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Period {
    pub since_ms: i64,
    pub until_ms: i64,
    /// The shop account (`self_id`), `None` for every shop.
    pub shop: Option<String>,
}

/// A `--since` or `--until` that is not a period or a time.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error(
        "{0:?} is not a time: write a duration back from now (24h, 7d), a date (2026-12-01) or a date and time (2026-12-01T08:00:00+08:00)"
    )]
    NotATime(String),
    #[error("the period is empty: --since {since} is not before --until {until}")]
    Empty { since: String, until: String },
}

impl Period {
    /// The period from the command line's `--since` and optional `--until` (default: now).
    ///
    /// # Errors
    ///
    /// [`PeriodError`] when either is not understood, or the period is empty.
    pub fn parse(
        since: &str,
        until: Option<&str>,
        shop: Option<String>,
        now_ms: i64,
    ) -> Result<Period, PeriodError> {
        let since_ms = instant(since, now_ms)?;
        let until_ms = match until {
            Some(until) => instant(until, now_ms)?,
            None => now_ms,
        };
        if since_ms >= until_ms {
            return Err(PeriodError::Empty {
                since: since.to_owned(),
                until: until.unwrap_or("now").to_owned(),
            });
        }
        Ok(Period {
            since_ms,
            until_ms,
            shop,
        })
    }
}

/// Unix milliseconds of `text` (a duration back from `now_ms`, a date or a date and time).
///
/// # Errors
///
/// [`PeriodError::NotATime`].
pub fn instant(text: &str, now_ms: i64) -> Result<i64, PeriodError> {
    let text = text.trim();
    let not_a_time = || PeriodError::NotATime(text.to_owned());
    if text.starts_with(|c: char| c.is_ascii_digit())
        && text.len() > 4
        && text.as_bytes()[4] == b'-'
    {
        return date_time(text).ok_or_else(not_a_time);
    }
    let back = humantime::parse_duration(text).map_err(|_| not_a_time())?;
    let back_ms = i64::try_from(back.as_millis()).map_err(|_| not_a_time())?;
    Ok(now_ms.saturating_sub(back_ms))
}

/// `YYYY-MM-DD`, optionally followed by `T` or a space, `HH:MM[:SS[.fff]]` and `Z` or `±HH:MM`.
fn date_time(text: &str) -> Option<i64> {
    let (date, rest) = text.split_at_checked(10)?;
    let mut fields = date.split('-');
    let year = i16::try_from(number(fields.next()?, 4)?).ok()?;
    let month = i8::try_from(number(fields.next()?, 2)?).ok()?;
    let day = i8::try_from(number(fields.next()?, 2)?).ok()?;
    let midnight_utc = crate::timefmt::shop_midnight(year, month, day)? + SHOP_OFFSET_MS;
    if rest.is_empty() {
        return Some(midnight_utc - SHOP_OFFSET_MS);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(zone_at);
    let offset_ms = match zone {
        "" => SHOP_OFFSET_MS,
        "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (hours, minutes) = zone[1..].split_once(':')?;
            let (hours, minutes): (i64, i64) = (number(hours, 2)?, number(minutes, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60) * 1000
        }
    };
    let mut parts = clock.split(':');
    let hours: i64 = number(parts.next()?, 2)?;
    let minutes: i64 = number(parts.next()?, 2)?;
    let seconds_ms = match parts.next() {
        None => 0,
        Some(seconds) => {
            let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
            let whole: i64 = number(whole, 2)?;
            if whole > 59 || !fraction.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let millis = format!("{fraction:0<3}");
            whole * 1000 + millis.get(..3)?.parse::<i64>().ok()?
        }
    };
    if parts.next().is_some() || hours > 23 || minutes > 59 {
        return None;
    }
    Some(midnight_utc + (hours * 3600 + minutes * 60) * 1000 + seconds_ms - offset_ms)
}

/// A field of exactly `digits` ASCII digits.
fn number(text: &str, digits: usize) -> Option<i64> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `YYYY-MM-DD HH:MM` at the shop's clock, for headings.
pub fn shop_time(ms: i64) -> String {
    crate::timefmt::shop_local(ms, "%Y-%m-%d %H:%M")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01T00:00:00Z.
    const DEC_1_UTC: i64 = 1_796_083_200_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn times_and_durations() {
        let now = DEC_1_UTC + 10 * HOUR;
        let cases: &[(&str, i64)] = &[
            ("24h", now - 24 * HOUR),
            ("7d", now - 7 * 24 * HOUR),
            ("90min", now - 90 * 60_000),
            ("2026-12-01", DEC_1_UTC - 8 * HOUR),
            ("2026-12-01T08:00:00Z", DEC_1_UTC + 8 * HOUR),
            ("2026-12-01T08:00:00+08:00", DEC_1_UTC),
            ("2026-12-01T08:00", DEC_1_UTC),
            ("2026-12-01 08:00:30.25", DEC_1_UTC + 30_250),
            (
                "2026-12-01T00:00:00-05:30",
                DEC_1_UTC + 5 * HOUR + 30 * 60_000,
            ),
            ("2024-02-29", 1_709_164_800_000 - 8 * HOUR),
        ];
        for (text, expected) in cases {
            assert_eq!(instant(text, now), Ok(*expected), "{text}");
        }
    }

    #[test]
    fn what_is_not_a_time() {
        for text in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "2026-12-1",
            "2026-12-01T25:00",
            "2026-12-01T08:00:00+8",
            "2026-12-01X",
            "-5h",
        ] {
            assert!(
                matches!(instant(text, DEC_1_UTC), Err(PeriodError::NotATime(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_period_must_not_be_empty() {
        let now = DEC_1_UTC;
        let period = Period::parse("7d", Some("24h"), None, now).unwrap();
        assert_eq!(period.until_ms - period.since_ms, 6 * 24 * HOUR);
        assert!(Period::parse("24h", Some("2026-12-02"), None, now).is_ok());
        assert!(matches!(
            Period::parse("2026-12-02", None, None, now),
            Err(PeriodError::Empty { .. })
        ));
    }

    #[test]
    fn shop_time_is_china_time() {
        assert_eq!(shop_time(DEC_1_UTC), "2026-12-01 08:00");
        assert_eq!(shop_time(DEC_1_UTC - 8 * HOUR), "2026-12-01 00:00");
        assert_eq!(shop_time(DEC_1_UTC - 8 * HOUR - 60_000), "2026-11-30 23:59");
    }
}
