//! `xiaoer queue list --data DIR [--json]`: the open and claimed escalations, read from the store
//! without disturbing a running daemon. `--store URL` (or `XIAOER_STORE`) names another store,
//! e.g. the daemon's PostgreSQL database, instead of the one in `--data`.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use unicode_width::UnicodeWidthStr;

use super::StoreArgs;
use crate::config::StoreLocation;
use crate::conversation::commands::{self, ActionError, AgentAction};
use crate::model::Escalation;
use crate::store::{Store, StoreError, now_ms};

/// Arguments of `xiaoer queue`.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    /// What to do with the human queues.
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// Subcommands of `xiaoer queue`.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// List open and claimed escalations, oldest first.
    List {
        #[command(flatten)]
        data: StoreArgs,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Closed escalations too, with who closed them and the outcome.
        #[arg(long)]
        all: bool,
    },
    /// Show one escalation with the chat's transcript (the evidence an agent needs).
    Show {
        /// The escalation id (from `queue list`).
        id: i64,
        /// How many of the latest messages to show.
        #[arg(long, default_value_t = 50)]
        last: u32,
        #[command(flatten)]
        data: StoreArgs,
    },
    /// Take an escalation: the chat becomes the agent's and the bot stays quiet in it.
    Claim {
        /// The escalation id (from `queue list`).
        id: i64,
        /// Who takes it.
        #[arg(long)]
        agent: String,
        #[command(flatten)]
        data: StoreArgs,
    },
    /// Close an escalation and hand the chat back to the bot.
    Close {
        /// The escalation id (from `queue list`).
        id: i64,
        /// Who closes it.
        #[arg(long)]
        agent: String,
        #[command(flatten)]
        data: StoreArgs,
    },
}

/// Runs `xiaoer queue ...`, writing to `out`.
///
/// # Errors
///
/// See [`list`].
pub async fn run(args: &QueueArgs, out: &mut impl Write) -> Result<(), StoreError> {
    match &args.command {
        QueueCommand::List { data, json, all } => list_at(&data.location(), *json, *all, out).await,
        QueueCommand::Show { id, last, data } => show_at(&data.location(), *id, *last, out).await,
        QueueCommand::Claim { id, agent, data } => {
            let store = open_for_agent(&data.location()).await?;
            let action = AgentAction::Claim {
                agent: agent.clone(),
            };
            let result = act(&store, *id, &action).await;
            store.close().await?;
            let escalation = result?;
            writeln!(
                out,
                "escalation {} ({} queue, buyer {}) claimed by {agent}; the bot stays quiet in that chat",
                escalation.id, escalation.queue, escalation.key.user_id
            )
            .map_err(StoreError::Output)
        }
        QueueCommand::Close { id, agent, data } => {
            let store = open_for_agent(&data.location()).await?;
            let action = AgentAction::HandBack {
                agent: agent.clone(),
            };
            let result = act(&store, *id, &action).await;
            store.close().await?;
            let escalation = result?;
            writeln!(
                out,
                "escalation {} closed by {agent}; the bot answers buyer {} again",
                escalation.id, escalation.key.user_id
            )
            .map_err(StoreError::Output)
        }
    }
}

/// Prints escalation `id` and the latest `last` messages of its chat, oldest first.
///
/// # Errors
///
/// No store, no such escalation, read or write failures.
pub async fn show(
    data_dir: &Path,
    id: i64,
    last: u32,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    show_at(&in_dir(data_dir), id, last, out).await
}

/// The SQLite store in the data directory `dir`.
fn in_dir(dir: &Path) -> StoreLocation {
    StoreLocation::Sqlite(dir.join(crate::store::DB_FILE))
}

/// [`show`] for the store at `location`.
///
/// # Errors
///
/// See [`show`].
pub async fn show_at(
    location: &StoreLocation,
    id: i64,
    last: u32,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let store = Store::open_existing_location(location).await?;
    let found = store.escalation(id).await;
    let escalation = match found {
        Ok(Some(escalation)) => escalation,
        Ok(None) => {
            store.close().await?;
            return Err(StoreError::EscalationNotFound { id });
        }
        Err(error) => {
            store.close().await?;
            return Err(error);
        }
    };
    let transcript = store.transcript(&escalation.key, last).await;
    store.close().await?;
    let transcript = transcript?;
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            out,
            "escalation {} · queue {} · {} · buyer {} at {}/{}",
            escalation.id,
            escalation.queue,
            escalation.state,
            escalation.key.user_id,
            escalation.key.platform,
            escalation.key.self_id
        )?;
        writeln!(
            out,
            "opened {} · reason: {}{}",
            rfc3339_utc(escalation.created_ms),
            escalation.reason,
            escalation
                .claimed_by
                .as_deref()
                .map(|agent| format!(" · claimed by {agent}"))
                .unwrap_or_default()
        )?;
        writeln!(out)?;
        for entry in &transcript {
            writeln!(
                out,
                "{}  {:<12} {}",
                rfc3339_utc(entry.at_ms),
                entry.sender.to_string(),
                entry.text.replace('\n', " ⏎ ")
            )?;
        }
        out.flush()
    };
    write(out).map_err(StoreError::Output)
}

/// How often an action is planned again when the daemon changed the chat meanwhile.
const ACT_ATTEMPTS: u32 = 5;

/// Carries out an agent's action on escalation `id` the way the daemon's chat worker does, and
/// returns the escalation as it is afterwards.
///
/// # Errors
///
/// No such escalation, an action that does not apply to it, or a failed write.
pub async fn act(store: &Store, id: i64, action: &AgentAction) -> Result<Escalation, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let escalation = store
            .escalation(id)
            .await?
            .ok_or(StoreError::EscalationNotFound { id })?;
        let now = now_ms();
        let conversation = store.conversation_or_new(&escalation.key, now).await?;
        let turn = commands::plan(conversation, &escalation, action, now).map_err(|e| match e {
            ActionError::Closed { id } => StoreError::EscalationClosed { id },
            ActionError::ClaimedByOther { id, agent } => StoreError::AlreadyClaimed { id, agent },
            ActionError::NotClaimed { id } => StoreError::NotClaimed { id },
            ActionError::OtherChat { id } => StoreError::EscalationNotFound { id },
        })?;
        match store.commit_turn(turn).await {
            Ok(_) => {
                return store
                    .escalation(id)
                    .await?
                    .ok_or(StoreError::EscalationNotFound { id });
            }
            Err(StoreError::Conflict { .. }) if attempt < ACT_ATTEMPTS => continue,
            Err(error) => return Err(error),
        }
    }
}

/// Opens an existing store for writing next to a running daemon (SQLite serialises the writers;
/// on PostgreSQL each chat's writes take turns by a lock of their own).
async fn open_for_agent(location: &StoreLocation) -> Result<Store, StoreError> {
    // Refuse to create an empty store in a mistyped directory.
    Store::open_existing_location(location)
        .await?
        .close()
        .await?;
    Store::open_location(location).await
}

/// One line of `queue list --json`.
#[derive(Serialize)]
struct JsonLine<'a> {
    id: i64,
    queue: &'a str,
    platform: &'a str,
    self_id: &'a str,
    user_id: &'a str,
    state: &'a str,
    reason: &'a str,
    rule: Option<&'a str>,
    created: String,
    created_ms: i64,
    claimed_by: Option<&'a str>,
    first_message: &'a str,
    closed_by: Option<&'a str>,
    outcome: Option<&'a str>,
}

/// Lists the open and claimed escalations in the store under `data_dir`: one JSON object per line
/// with `json`, else an aligned table with a count line.
///
/// Opens the store read-only, so it works while the daemon is running and writing.
///
/// # Errors
///
/// [`StoreError::Missing`] if there is no store under `data_dir`; read failures; failures to
/// write to `out`.
pub async fn list(
    data_dir: &Path,
    json: bool,
    all: bool,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    list_at(&in_dir(data_dir), json, all, out).await
}

/// [`list`] for the store at `location`.
///
/// # Errors
///
/// See [`list`].
pub async fn list_at(
    location: &StoreLocation,
    json: bool,
    all: bool,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let store = Store::open_existing_location(location).await?;
    let escalations = if all {
        store.all_escalations().await
    } else {
        store.open_escalations().await
    };
    store.close().await?;
    let escalations = escalations?;
    if json {
        write_json(&escalations, out)
    } else {
        write_table(&escalations, all, out)
    }
    .map_err(StoreError::Output)
}

fn write_json(escalations: &[Escalation], out: &mut impl Write) -> std::io::Result<()> {
    for e in escalations {
        let line = JsonLine {
            id: e.id,
            queue: e.queue.as_str(),
            platform: &e.key.platform,
            self_id: &e.key.self_id,
            user_id: &e.key.user_id,
            state: e.state.as_str(),
            reason: &e.reason,
            rule: e.rule.as_deref(),
            created: rfc3339_utc(e.created_ms),
            created_ms: e.created_ms,
            claimed_by: e.claimed_by.as_deref(),
            first_message: &e.first_message,
            closed_by: e.closed_by.as_deref(),
            outcome: e.outcome.as_deref(),
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn write_table(escalations: &[Escalation], all: bool, out: &mut impl Write) -> std::io::Result<()> {
    if escalations.is_empty() {
        writeln!(
            out,
            "{}",
            if all {
                "no escalations"
            } else {
                "no open escalations"
            }
        )?;
        return out.flush();
    }
    let mut header = vec![
        "ID", "QUEUE", "STATE", "CREATED", "PLATFORM", "SELF", "USER", "CLAIMED",
    ];
    if all {
        header.extend(["CLOSED BY", "OUTCOME"]);
    }
    header.push("REASON");
    let rows: Vec<Vec<String>> = escalations
        .iter()
        .map(|e| {
            let dash = |v: Option<&str>| v.map_or_else(|| "-".to_owned(), printable);
            let mut row = vec![
                e.id.to_string(),
                printable(e.queue.as_str()),
                printable(e.state.as_str()),
                rfc3339_utc(e.created_ms),
                printable(&e.key.platform),
                printable(&e.key.self_id),
                printable(&e.key.user_id),
                dash(e.claimed_by.as_deref()),
            ];
            if all {
                row.push(dash(e.closed_by.as_deref()));
                row.push(dash(e.outcome.as_deref()));
            }
            row.push(printable(&e.reason));
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    let header: Vec<String> = header.into_iter().map(str::to_owned).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths.iter().copied()).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.width() + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    let n = escalations.len();
    writeln!(out, "{n} open escalation{}", if n == 1 { "" } else { "s" })?;
    out.flush()
}

/// Keeps a table cell on one line: control characters (newlines, tabs, escapes) are shown escaped.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Formats unix milliseconds as an RFC 3339 UTC timestamp, e.g. `2024-05-01T08:30:00.123Z`.
fn rfc3339_utc(ms: i64) -> String {
    crate::timefmt::utc_rfc3339(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_714_552_200_123), "2024-05-01T08:30:00.123Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn table_cells_stay_on_one_line() {
        assert_eq!(printable("退款\n快点\t!"), "退款\\n快点\\t!");
    }
}
