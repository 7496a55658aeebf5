//! The SQLite backend: `xiaoer.db` under the data directory, WAL with `synchronous=FULL`, one
//! writer connection and a pool of read-only connections.
//!
//! - `mod.rs`: opening, migrations, the integrity check and a damaged write-ahead log (sqlx);
//! - `write.rs`: every write, on one rusqlite connection owned by a thread of its own, so a whole
//!   batch costs one hand-off instead of one per statement (why, in its docs);
//! - `read.rs`, `report.rs`: the reads, on sqlx's read-only pool;
//! - `outbox.rs`, `clock.rs`: the notification outbox and the response clock, writes (rusqlite)
//!   and reads (sqlx) side by side;
//! - `rows.rs`: sqlx rows into the domain's records, and the parsing both sides share.
//!
//! The schema lives in `migrations/sqlite`, embedded in the binary. The SQL is kept portable
//! (numbered placeholders — `$n` for sqlx, `?n` for rusqlite —, `ON CONFLICT`, `RETURNING`,
//! integer unix-ms timestamps) so a PostgreSQL backend can mirror it.

pub(crate) mod clock;
pub(crate) mod outbox;
mod read;
mod report;
pub(crate) mod rows;
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

/// The write every backend makes at open, before any message is taken, to prove the store
/// takes writes (portable SQL; `$1` is the start time in unix ms as text).
pub(crate) const RECORD_START: &str = "INSERT INTO store_meta (key, value) VALUES ('last_start_ms', $1) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

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

/// Brings the schema up to date, checks the database and proves it writable (with sqlx), then
/// starts the writer thread with its own connection.
pub(crate) async fn open_writer(path: &Path) -> Result<SqliteWriter, StoreError> {
    set_aside_damaged_wal(path);
    let mut conn = writer_options(path)
        .connect()
        .await
        .map_err(|cause| StoreError::Open {
            path: path.to_owned(),
            cause,
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
    check_integrity(&mut conn, path).await?;
    // Proves the file is writable before any message is taken: SQLite opens a read-only file
    // quietly and fails only at the first write.
    sqlx::query(RECORD_START)
        .bind(crate::store::now_ms().to_string())
        .execute(&mut conn)
        .await
        .map_err(|cause| StoreError::Open {
            path: path.to_owned(),
            cause,
        })?;
    let inode = inode_of(path);
    // The writes themselves go through a rusqlite connection on a thread of its own (see
    // `write.rs`); sqlx's connection has done its part.
    let writer = SqliteWriter::start(path, inode).await?;
    if let Err(error) = sqlx::Connection::close(conn).await {
        tracing::warn!(%error, "closing the store's setup connection failed");
    }
    Ok(writer)
}

/// The file's identity, to notice it being deleted or replaced under a running daemon.
pub(crate) fn inode_of(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| m.ino())
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).ok().map(|_| 0)
    }
}

/// The first four bytes of every write-ahead log SQLite writes.
const WAL_MAGIC: [[u8; 4]; 2] = [[0x37, 0x7f, 0x06, 0x82], [0x37, 0x7f, 0x06, 0x83]];

/// A `-wal` file that is not a write-ahead log would be ignored by SQLite without a word, and
/// the writes it held silently lost: keep it aside for inspection and say so loudly.
fn set_aside_damaged_wal(path: &Path) {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::path::PathBuf::from(wal);
    let Ok(bytes) = std::fs::read(&wal) else {
        return;
    };
    if bytes.is_empty() || WAL_MAGIC.iter().any(|magic| bytes.starts_with(magic)) {
        return;
    }
    let mut aside = wal.as_os_str().to_owned();
    aside.push(format!(".damaged-{}", crate::store::now_ms()));
    let aside = std::path::PathBuf::from(aside);
    match std::fs::rename(&wal, &aside) {
        Ok(()) => tracing::error!(
            wal = %wal.display(),
            kept = %aside.display(),
            bytes = bytes.len(),
            "the store's write-ahead log is damaged: the most recent writes it held cannot be read \
             (escalations among them may be missing); it was moved aside for inspection"
        ),
        Err(error) => tracing::error!(
            wal = %wal.display(), %error,
            "the store's write-ahead log is damaged and cannot be moved aside"
        ),
    }
}

/// Runs SQLite's quick integrity check and refuses a damaged database.
async fn check_integrity(
    conn: &mut sqlx::sqlite::SqliteConnection,
    path: &Path,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let found: Vec<String> = sqlx::query_scalar("PRAGMA quick_check(5)")
        .fetch_all(&mut *conn)
        .await
        .map_err(|cause| StoreError::Open {
            path: path.to_owned(),
            cause,
        })?;
    if found.len() == 1 && found[0] == "ok" {
        tracing::info!(took = ?started.elapsed(), "store integrity check passed");
        return Ok(());
    }
    Err(StoreError::Damaged {
        path: path.to_owned(),
        found: found.join("; "),
    })
}

/// Opens the read-only pool.
pub(crate) async fn open_reader(path: &Path) -> Result<SqliteReader, StoreError> {
    let pool: SqlitePool = SqlitePoolOptions::new()
        .max_connections(4)
        .min_connections(0)
        .connect_with(base_options(path).read_only(true))
        .await
        .map_err(|cause| StoreError::Open {
            path: path.to_owned(),
            cause,
        })?;
    Ok(SqliteReader { pool })
}

#[cfg(test)]
mod tests;
