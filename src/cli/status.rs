//! `xiaoer status --store URL [--json]`: the instances sharing a PostgreSQL store, the shops each
//! answers, how old each lease is, and the buyer messages recorded and not yet handled — what an
//! operator looks at after a machine died or during a rolling restart.
//!
//! A SQLite store has one daemon and no leases; the command says so instead of printing an
//! empty table.

use std::io::Write;

use crate::config::StoreLocation;
use crate::store::{ClusterStatus, Store, StoreError};

use super::StoreArgs;

/// Arguments of `xiaoer status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the status as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// An instance not heard from for this long counts as gone (its leases lapse at the same
    /// TTL); give the daemons' `[cluster] lease_ttl`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,
}

/// Runs `xiaoer status`, writing to `out`.
///
/// # Errors
///
/// The store cannot be reached or read, or `out` cannot be written.
pub async fn run(args: &StatusArgs, out: &mut impl Write) -> Result<(), StoreError> {
    let location = args.store.location();
    if let StoreLocation::Sqlite(path) = &location {
        writeln!(
            out,
            "{} is a SQLite store: one daemon serves it, and it has no shop leases (several \
             instances share a PostgreSQL store; see docs/scaling.md)",
            path.display()
        )
        .map_err(StoreError::Output)?;
        return Ok(());
    }
    let Some(mut leases) = Store::open_leases(&location).await? else {
        return Ok(());
    };
    let status = leases.status().await;
    leases.close().await;
    let status = status?;
    let ttl_ms = i64::try_from(args.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &status)
            .map_err(|e| StoreError::Output(e.into()))?;
        writeln!(out).map_err(StoreError::Output)?;
    } else {
        write_table(&status, ttl_ms, out).map_err(StoreError::Output)?;
    }
    Ok(())
}

/// Seconds, with one decimal, from a duration in milliseconds.
fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn write_table(status: &ClusterStatus, ttl_ms: i64, out: &mut impl Write) -> std::io::Result<()> {
    let now = status.now_ms;
    writeln!(out, "instances:")?;
    if status.instances.is_empty() {
        writeln!(out, "  none has served this store yet")?;
    }
    for instance in &status.instances {
        let owns = status
            .leases
            .iter()
            .filter(|l| l.owner.as_deref() == Some(&instance.id) && l.expires_ms > now)
            .count();
        let state = match instance.stopped_ms {
            Some(at) => format!("stopped {} ago", secs(now - at)),
            None if now - instance.seen_ms < ttl_ms => "live".to_owned(),
            None => format!("silent for {} (gone?)", secs(now - instance.seen_ms)),
        };
        writeln!(
            out,
            "  {}  {}  pid {} on {}  heartbeat {} ago  {} shop{}",
            instance.id,
            state,
            instance.pid,
            instance.host,
            secs(now - instance.seen_ms),
            owns,
            if owns == 1 { "" } else { "s" },
        )?;
    }
    writeln!(out, "shops:")?;
    if status.leases.is_empty() {
        writeln!(
            out,
            "  none yet (an instance adds the shops its gateways show)"
        )?;
    }
    for lease in &status.leases {
        let holder = match &lease.owner {
            Some(owner) if lease.expires_ms > now => format!(
                "{owner} (epoch {}, held {}, lapses in {})",
                lease.epoch,
                lease
                    .taken_ms
                    .map_or_else(|| "?".to_owned(), |at| secs(now - at)),
                secs(lease.expires_ms - now)
            ),
            Some(owner) => format!(
                "nobody: {owner}'s lease lapsed {} ago (epoch {})",
                secs(now - lease.expires_ms),
                lease.epoch
            ),
            None => format!("nobody (epoch {})", lease.epoch),
        };
        let backlog = match lease.oldest_unhandled_ms {
            Some(oldest) if lease.unhandled > 0 => format!(
                "  {} unhandled, oldest {} ago",
                lease.unhandled,
                secs(now - oldest)
            ),
            _ => String::new(),
        };
        writeln!(
            out,
            "  {}/{}  {holder}{backlog}",
            lease.platform, lease.self_id
        )?;
    }
    Ok(())
}
