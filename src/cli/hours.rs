//! `xiaoer hours`: whether a shop's people are in at a moment, and when they are next, from the
//! `[shop.hours]` of a config file — for checking a schedule before the daemon relies on it.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use jiff::Timestamp;

use super::CliError;
use crate::config::Config;
use crate::escalation::hours::{BusinessHours, weekday_zh};

/// Flags of `xiaoer hours`.
#[derive(Debug, Clone, Args)]
pub struct HoursArgs {
    /// The shop account id, as in the config file's `[[shop]] id`.
    #[arg(long)]
    pub shop: String,
    /// The moment to ask about: RFC 3339 (2026-12-05T20:10:00+08:00) or "2026-12-05 20:10" in
    /// the shop's zone. Default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// Config file (TOML) with the shop; see deploy/xiaoer.toml.
    #[arg(long, env = "XIAOER_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Prints one line about the shop at the moment asked.
///
/// # Errors
///
/// No config file, one that does not load, a shop it does not list, or an `--at` that is not a
/// time.
pub fn run(args: &HoursArgs, out: &mut impl Write) -> Result<(), CliError> {
    let Some(path) = &args.config else {
        return Err(CliError::Input(
            "no config file to read the shop's hours from: pass --config FILE or set XIAOER_CONFIG"
                .into(),
        ));
    };
    let config = Config::from_file(path).map_err(|error| CliError::Input(error.to_string()))?;
    let Some(shop) = config.shop(&args.shop) else {
        let known: Vec<_> = config.shops.iter().map(|s| s.id.as_str()).collect();
        let listed = if known.is_empty() {
            "it lists no [[shop]]".to_string()
        } else {
            format!("its shops are {}", known.join(", "))
        };
        return Err(CliError::Input(format!(
            "{} has no shop {:?}: {listed}",
            path.display(),
            args.shop
        )));
    };
    let at = match &args.at {
        Some(text) => shop
            .hours
            .parse_moment(text)
            .map_err(|error| CliError::Input(format!("--at {error}")))?,
        None => Timestamp::now(),
    };
    writeln!(out, "{}", describe(&shop.id, &shop.hours, at))
        .map_err(CliError::io("write standard output"))
}

/// `shop1 (Asia/Shanghai) 2026-12-05 20:10 周六: closed; people are next in 周一 9:00 (…)`.
pub fn describe(shop: &str, hours: &BusinessHours, at: Timestamp) -> String {
    let local = at.to_zoned_datetime(hours.zone().clone());
    let head = format!(
        "{shop} ({}) {} {}",
        hours.zone_name(),
        local.strftime("%Y-%m-%d %H:%M"),
        weekday_zh(local.weekday())
    );
    let full = |t: Timestamp| {
        t.to_zoned_datetime(hours.zone().clone())
            .strftime("%Y-%m-%d %H:%M %:z")
            .to_string()
    };
    if hours.is_always_open() {
        return format!("{head}: open (no [shop.hours]: people are always in)");
    }
    if hours.is_open(at) {
        return match hours.closes_at(at) {
            Some(closes) => {
                let same_day =
                    closes.to_zoned_datetime(hours.zone().clone()).date() == local.date();
                if same_day {
                    let closes = closes.to_zoned_datetime(hours.zone().clone());
                    format!(
                        "{head}: open until {}:{:02}",
                        closes.hour(),
                        closes.minute()
                    )
                } else {
                    format!(
                        "{head}: open until {} ({})",
                        hours.eta_words(at, closes),
                        full(closes)
                    )
                }
            }
            None => format!("{head}: open; the schedule does not close within a year"),
        };
    }
    match hours.next_open(at) {
        Some(opens) => format!(
            "{head}: closed; people are next in {} ({})",
            hours.eta_words(at, opens),
            full(opens)
        ),
        None => format!("{head}: closed; the schedule has no opening within a year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalation::hours::{Shift, parse_zone};

    #[test]
    fn one_line_per_situation() {
        let office: [Vec<Shift>; 7] = std::array::from_fn(|day| {
            let texts: &[&str] = match day {
                0..=3 => &["09:00-18:00"],
                4 => &["09:00-18:00", "22:00-02:00"],
                _ => &[],
            };
            Shift::parse_day(texts).unwrap()
        });
        let hours = BusinessHours::weekly(
            parse_zone("Asia/Shanghai").unwrap(),
            "Asia/Shanghai",
            office,
        );
        let at = |text: &str| hours.parse_moment(text).unwrap();
        let cases = [
            (
                "2026-12-05 01:10",
                "shop1 (Asia/Shanghai) 2026-12-05 01:10 周六: open until 2:00",
            ),
            (
                "2026-12-04 23:00",
                "shop1 (Asia/Shanghai) 2026-12-04 23:00 周五: open until 明天 2:00 (2026-12-05 02:00 +08:00)",
            ),
            (
                "2026-12-05 20:10",
                "shop1 (Asia/Shanghai) 2026-12-05 20:10 周六: closed; people are next in 周一 9:00 (2026-12-07 09:00 +08:00)",
            ),
        ];
        for (local, line) in cases {
            assert_eq!(describe("shop1", &hours, at(local)), line);
        }
        let always = BusinessHours::always_open();
        assert_eq!(
            describe("s", &always, at("2026-12-05 20:10")),
            "s (Asia/Shanghai) 2026-12-05 20:10 周六: open (no [shop.hours]: people are always in)"
        );
    }
}
