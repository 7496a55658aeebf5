//! `xiaoer report --data DIR [--shop ID] [--since 24h|7d|DATE] [--until …] [--format
//! text|json|html] [--out FILE]`: the shift and weekly report, read from the store without
//! disturbing a running daemon (see [`crate::report`] and `docs/report.md`).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::RuleDirs;
use crate::report::{self, Period, PeriodError, Report};
use crate::store::{Store, StoreError, now_ms};

/// Arguments of `xiaoer report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub store: super::StoreArgs,
    /// Only this shop account (the bot's `self` id); default every shop.
    #[arg(long, value_name = "ID")]
    pub shop: Option<String>,
    /// Start of the period: a duration back from now (24h, 7d), a date (2026-12-01, midnight
    /// Beijing time) or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// End of the period (same forms as --since); default now.
    #[arg(long)]
    pub until: Option<String>,
    /// How to print it.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Rule files, to list the rules that never fired (default ./rules when it exists).
    #[arg(long, value_name = "DIR", env = "XIAOER_RULES")]
    pub rules: Option<PathBuf>,
    /// Reply files that go with --rules (default ./replies).
    #[arg(long, value_name = "DIR", env = "XIAOER_REPLIES")]
    pub replies: Option<PathBuf>,
}

/// The forms of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Plain text for a terminal.
    Text,
    /// One JSON object (the [`Report`] struct).
    Json,
    /// One self-contained HTML page with charts; opens offline.
    Html,
}

/// Why `xiaoer report` could not make the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportCommandError {
    #[error("{0}")]
    Period(#[from] PeriodError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "cannot load the rules in {} to list the rules that never fired (run `xiaoer check --rules {} --replies {}` for details)",
        rules.display(),
        rules.display(),
        replies.display()
    )]
    Rules { rules: PathBuf, replies: PathBuf },
    #[error("cannot write the report to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The rule ids in force, from `--rules`/`--replies`, or from ./rules and ./replies when they
/// exist; `None` when no rules were given and there are none here.
fn rule_ids(args: &ReportArgs) -> Result<Option<Vec<String>>, ReportCommandError> {
    let rules = match &args.rules {
        Some(dir) => dir.clone(),
        None if Path::new("rules").is_dir() => PathBuf::from("rules"),
        None => return Ok(None),
    };
    let replies = args
        .replies
        .clone()
        .unwrap_or_else(|| PathBuf::from("replies"));
    let dirs = RuleDirs {
        rules: rules.clone(),
        replies: replies.clone(),
        shop: None,
    };
    let loaded = dirs
        .load()
        .map_err(|_| ReportCommandError::Rules { rules, replies })?;
    Ok(Some(loaded.rules.rules().map(|r| r.id.clone()).collect()))
}

/// Makes the report the arguments ask for.
///
/// # Errors
///
/// A period that is not understood, a store that cannot be read, rules that do not load.
pub async fn make(args: &ReportArgs) -> Result<Report, ReportCommandError> {
    let period = Period::parse(
        &args.since,
        args.until.as_deref(),
        args.shop.clone(),
        now_ms(),
    )?;
    let rule_ids = rule_ids(args)?;
    let store = Store::open_existing_location(&args.store.location()).await?;
    let rows = store
        .report_rows(period.since_ms, period.until_ms, period.shop.as_deref())
        .await;
    store.close().await?;
    Ok(report::compute(&rows?, period, rule_ids.as_deref()))
}

/// The report in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Text => report::text::render(report),
        Format::Json => {
            // A report is numbers and strings: serialising it cannot fail.
            let mut json = serde_json::to_string_pretty(report).unwrap_or_default();
            json.push('\n');
            json
        }
        Format::Html => report::html::document(report).into_string(),
    }
}

/// Runs `xiaoer report`: the report goes to `--out` or to `stdout`.
///
/// # Errors
///
/// See [`make`]; and a failed write.
pub async fn run(args: &ReportArgs, stdout: &mut impl Write) -> Result<(), ReportCommandError> {
    let text = render(&make(args).await?, args.format);
    match &args.out {
        Some(path) => std::fs::write(path, text).map_err(|source| ReportCommandError::Write {
            path: path.clone(),
            source,
        }),
        None => stdout
            .write_all(text.as_bytes())
            .map_err(|source| ReportCommandError::Write {
                path: PathBuf::from("stdout"),
                source,
            }),
    }
}
