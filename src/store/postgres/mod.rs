//! The PostgreSQL backend, for stores shared by several machines (`store =
//! "postgres://user@host/db"`): one writer connection that commits the writer's batches, and a
//! pool of connections for the reads.
//!
//! - `mod.rs`: connection settings (statement timeouts, durable commits), opening, migrations;
//! - `write.rs`: every write, one transaction per batch on the writer's connection, with the same
//!   refusals as SQLite's `write.rs`;
//! - `read.rs`, `report.rs`: the reads, on the pool;
//! - `outbox.rs`, `clock.rs`: the notification outbox and the response clock, writes and reads
//!   side by side;
//! - `rows.rs`: PostgreSQL rows into the domain's records;
//! - `commands.rs`: agents' commands handed to the instance that answers a chat's shop;
//! - `lease.rs`: shop leases, instances' heartbeats, the inbound backlog and `xiaoer status`'s
//!   read, on a connection of their own (several instances share a store; see `cluster`).
//!
//! The schema lives in `migrations/postgres`, one file per SQLite migration with the same
//! number, name, tables and columns (a test holds them in step). The SQL is the SQLite backend's
//! portable SQL; where PostgreSQL spells something differently (`GREATEST` for SQLite's
//! two-argument `MAX`) the statement says so.
//!
//! Where the database is, is told as `host:port/database` and never with the password.

pub(crate) mod clock;
pub(crate) mod commands;
pub(crate) mod lease;
pub(crate) mod outbox;
mod read;
mod report;
mod rows;
mod write;

use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

pub(crate) use read::PgReader;
pub(crate) use write::PgWriter;

use super::StoreError;

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The longest one statement may run before the server cancels it. A statement stuck behind a
/// lock or an overloaded server fails (and its batch is retried or reported) instead of
/// holding every chat's writes forever. A `statement_timeout` in the URL's `options` wins.
pub(crate) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections the read pool keeps at most.
const READ_CONNECTIONS: u32 = 8;

/// The newest schema version this program knows.
pub(crate) fn schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// A parsed store URL and how to name it in messages.
#[derive(Clone)]
pub(crate) struct Target {
    options: PgConnectOptions,
    /// `host:port/database`, for messages and logs: no user, no password.
    pub(crate) name: String,
    /// How long the server lets the writer sit idle inside a transaction before ending it.
    idle_in_transaction: Duration,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Target {
    /// Parses `url` (`postgres://…`); `shown` is the URL as it may be printed (password hidden),
    /// for when the URL itself is not understood.
    pub(crate) fn parse(url: &str, shown: &str) -> Result<Target, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(|cause| StoreError::Unreachable {
            target: shown.to_owned(),
            cause,
        })?;
        let place = match options.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => format!("{}:{}", options.get_host(), options.get_port()),
        };
        let database = options
            .get_database()
            .unwrap_or(options.get_username())
            .to_owned();
        Ok(Target {
            options,
            name: format!("{place}/{database}"),
            idle_in_transaction: Duration::from_secs(60),
        })
    }

    fn unreachable(&self, cause: sqlx::Error) -> StoreError {
        StoreError::Unreachable {
            target: self.name.clone(),
            cause,
        }
    }

    /// The settings every connection gets: a statement timeout (unless the URL sets one) and
    /// the program's name in `pg_stat_activity`.
    fn base(&self) -> PgConnectOptions {
        let mut options = self.options.clone();
        let given = options.get_options().unwrap_or_default().to_owned();
        if !given.contains("statement_timeout") {
            options = options.options([(
                "statement_timeout",
                format!("{}ms", STATEMENT_TIMEOUT.as_millis()),
            )]);
        }
        if options.get_application_name().is_none() {
            options = options.application_name("xiaoer");
        }
        options
    }

    /// The writer's connection: commits are durable on the server before they are answered
    /// (escalations are acknowledged to buyers only after their commit), and a transaction left
    /// open by a stuck writer is ended by the server.
    pub(crate) fn writer_options(&self) -> PgConnectOptions {
        self.base().options([
            ("synchronous_commit", "on"),
            (
                "idle_in_transaction_session_timeout",
                &format!("{}ms", self.idle_in_transaction.as_millis()),
            ),
        ])
    }

    /// Ends the writer's transactions that sit idle for `limit` (at most a minute). Instances
    /// sharing the store set it to the lease TTL: a batch holds its shops' lease rows until it
    /// commits, and a paused instance's open batch must not keep another instance from taking
    /// those shops for longer than a lease lasts.
    pub(crate) fn idle_in_transaction(mut self, limit: Duration) -> Target {
        self.idle_in_transaction = limit.clamp(Duration::from_millis(100), Duration::from_secs(60));
        self
    }

    fn reader_options(&self, read_only: bool) -> PgConnectOptions {
        let options = self.base();
        if read_only {
            options.options([("default_transaction_read_only", "on")])
        } else {
            options
        }
    }

    /// The connection in `slot`, opened again (with the writer's settings) if a failure dropped
    /// it; `which` names it in the log line that says it is back.
    pub(crate) async fn reopened<'c>(
        &self,
        slot: &'c mut Option<PgConnection>,
        which: &str,
    ) -> Result<&'c mut PgConnection, StoreError> {
        if slot.is_none() {
            let conn = self.connect(&self.writer_options()).await?;
            tracing::info!(store = %self.name, "the store's {which} connection is back");
            *slot = Some(conn);
        }
        slot.as_mut().ok_or_else(|| StoreError::Closed {
            context: format!("use the store's {which} connection"),
        })
    }

    /// One connection, or why not, within [`CONNECT_TIMEOUT`].
    pub(crate) async fn connect(
        &self,
        options: &PgConnectOptions,
    ) -> Result<PgConnection, StoreError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(cause)) => Err(self.unreachable(cause)),
            Err(_) => Err(self.unreachable(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the server did not answer within {} seconds",
                    CONNECT_TIMEOUT.as_secs()
                ),
            )))),
        }
    }
}

/// Connects the writer, brings the schema up to date and proves the database writable.
pub(crate) async fn open_writer(target: &Target) -> Result<PgWriter, StoreError> {
    let mut conn = target.connect(&target.writer_options()).await?;
    // sqlx's migrator holds an advisory lock while it runs, so instances starting together
    // migrate one after the other.
    MIGRATOR
        .run_direct(&mut conn)
        .await
        .map_err(|source| StoreError::MigrateDatabase {
            target: target.name.clone(),
            source,
        })?;
    // A standby or a user without write rights fails here, before any message is taken.
    sqlx::query(crate::store::sqlite::RECORD_START)
        .bind(crate::store::now_ms().to_string())
        .execute(&mut conn)
        .await
        .map_err(|cause| {
            StoreError::query(
                format!("write to the PostgreSQL store at {}", target.name),
                cause,
            )
        })?;
    Ok(PgWriter::new(conn, target.clone()))
}

/// Opens the read pool; `read_only` makes every transaction on it read-only (the handles of
/// [`Store::open_existing`](super::Store::open_existing)).
pub(crate) async fn open_reader(target: &Target, read_only: bool) -> Result<PgReader, StoreError> {
    // One connection first, so an unreachable server is reported at once rather than after the
    // pool has retried for its whole acquire timeout.
    let probe = target.connect(&target.reader_options(read_only)).await?;
    if let Err(error) = sqlx::Connection::close(probe).await {
        tracing::debug!(%error, "closing the store's probe connection failed");
    }
    let pool = PgPoolOptions::new()
        .max_connections(READ_CONNECTIONS)
        .min_connections(0)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(target.reader_options(read_only))
        .await
        .map_err(|cause| target.unreachable(cause))?;
    Ok(PgReader { pool })
}

#[cfg(test)]
mod tests;
