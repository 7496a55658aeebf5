//! The SQLite backend: `xiaoer.db` under the data directory, WAL with `synchronous=FULL`, one
//! writer connection owned by the writer task and a pool of read-only connections.
//!
//! The schema lives in `migrations/sqlite`, embedded in the binary. The SQL is kept portable
//! (`$n` placeholders, `ON CONFLICT`, `RETURNING`, integer unix-ms timestamps) so a PostgreSQL
//! backend can mirror it.

mod read;
mod rows;
mod write;

use std::path::Path;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub(crate) use read::SqliteReader;
pub(crate) use write::SqliteWriter;

use super::StoreError;

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The newest schema version this program knows.
pub(crate) fn schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

fn base_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(BUSY_TIMEOUT)
}

/// The writer's connection: creates the file, WAL, and every commit synced to disk.
pub(crate) fn writer_options(path: &Path) -> SqliteConnectOptions {
    base_options(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Escalations are acknowledged to the buyer only after their commit: every commit must
        // survive a power cut, not just a crash (NORMAL in WAL mode may lose the last commits).
        .synchronous(SqliteSynchronous::Full)
}

/// Opens the writer connection and brings the schema up to date.
pub(crate) async fn open_writer(path: &Path) -> Result<SqliteWriter, StoreError> {
    let mut conn = writer_options(path)
        .connect()
        .await
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
    // `run_direct` takes the connection itself; `run` goes through `Acquire`, whose
    // higher-ranked bound makes every caller's future fail to be `Send`.
    MIGRATOR
        .run_direct(&mut conn)
        .await
        .map_err(|source| StoreError::Migrate {
            path: path.to_owned(),
            source,
        })?;
    Ok(SqliteWriter { conn })
}

/// Opens the read-only pool.
pub(crate) async fn open_reader(path: &Path) -> Result<SqliteReader, StoreError> {
    let pool: SqlitePool = SqlitePoolOptions::new()
        .max_connections(4)
        .min_connections(0)
        .connect_with(base_options(path).read_only(true))
        .await
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
    Ok(SqliteReader { pool })
}

#[cfg(test)]
mod tests;
