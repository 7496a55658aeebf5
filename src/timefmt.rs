//! Unix-millisecond timestamps as the text people read, and shop-clock dates back to
//! timestamps, through `jiff` (the crate business hours already use): one calendar for the
//! console, the report, notifications and the CLI instead of one hand-written per module.
//!
//! "The shop's clock" is Beijing time, UTC+8 all year, which is what every shop xiaoer serves
//! reads; per-shop time zones live in `[shop.hours]`.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{self, TimeZone};

/// Beijing time.
pub fn shop_zone() -> TimeZone {
    TimeZone::fixed(tz::offset(8))
}

/// The instant of `ms`, clamped to what the calendar can show.
fn instant(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `ms` at the shop's clock, formatted with a `strftime` pattern (`%Y-%m-%d %H:%M`).
pub fn shop_local(ms: i64, pattern: &str) -> String {
    instant(ms)
        .to_zoned_datetime(shop_zone())
        .strftime(pattern)
        .to_string()
}

/// RFC 3339 in UTC with milliseconds: `2026-12-02T08:30:15.250Z`.
pub fn utc_rfc3339(ms: i64) -> String {
    instant(ms).strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Midnight of `year-month-day` at the shop's clock, in unix milliseconds; `None` for a date
/// that does not exist.
pub fn shop_midnight(year: i16, month: i8, day: i8) -> Option<i64> {
    let date = Date::new(year, month, day).ok()?;
    let zoned = date.to_zoned_datetime(shop_zone()).ok()?;
    Some(zoned.timestamp().as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_people_read_them() {
        // 2026-12-02T08:30:15.250Z, from Python's datetime.fromtimestamp(ms / 1000, utc).
        let ms = 1_796_200_215_250;
        assert_eq!(utc_rfc3339(ms), "2026-12-02T08:30:15.250Z");
        assert_eq!(shop_local(ms, "%Y-%m-%d %H:%M"), "2026-12-02 16:30");
        assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(shop_local(-1, "%Y-%m-%d %H:%M:%S"), "1970-01-01 07:59:59");
        assert!(!utc_rfc3339(i64::MAX).is_empty(), "out of range is clamped");
    }

    #[test]
    fn shop_midnights_are_in_beijing_time() {
        assert_eq!(shop_midnight(2026, 12, 2), Some(1_796_140_800_000));
        assert_eq!(shop_midnight(2028, 2, 29), Some(1_835_366_400_000));
        assert_eq!(shop_midnight(2027, 2, 29), None);
    }
}
