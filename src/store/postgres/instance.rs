//! One daemon per PostgreSQL store, as the lock file beside a SQLite store ensures: a daemon
//! holds a session advisory lock on a connection of its own for as long as it runs, and a second
//! daemon on the same database and schema is refused, naming the holder.
//!
//! This stands in until shops are owned by leases (several instances, each answering its own
//! shops); then the lease replaces it. Commands that write next to the daemon (`xiaoer queue
//! claim`) do not take it: their writes take turns with the daemon's chat by chat (see
//! `write.rs`).
//!
//! The lock goes with the connection: a daemon that dies releases it at once, and so does a
//! server restart, after which nothing stops a second daemon until this one reconnects its
//! lock (it does not; it says so in the log).

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::Target;
use crate::store::StoreError;

/// How often a taken lock is tried again before the start is refused: a daemon that was just
/// killed takes a moment to be noticed by the server.
const ATTEMPTS: u32 = 6;
const PAUSE: Duration = Duration::from_millis(500);

/// Held while the daemon runs; dropping it releases the lock.
pub struct InstanceLock {
    conn: Option<PgConnection>,
}

impl std::fmt::Debug for InstanceLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstanceLock")
    }
}

impl InstanceLock {
    /// Releases the lock now (closing its connection).
    pub async fn release(mut self) {
        if let Some(conn) = self.conn.take()
            && let Err(error) = conn.close().await
        {
            tracing::debug!(%error, "closing the store's instance-lock connection failed");
        }
    }
}

/// The lock's key: one per database and schema, so instances on other schemas of the same
/// database do not exclude each other.
fn key(schema: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("xiaoer instance\x1f{schema}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Takes the lock, or says who holds it.
pub(crate) async fn lock(target: &Target) -> Result<InstanceLock, StoreError> {
    let mut conn = target.connect(&target.base()).await?;
    let failed = |cause| StoreError::query("take the store's instance lock", cause);
    let schema: String = sqlx::query_scalar("SELECT current_schema()::TEXT")
        .fetch_one(&mut conn)
        .await
        .map_err(failed)?;
    let key = key(&schema);
    for attempt in 1..=ATTEMPTS {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(failed)?;
        if taken {
            return Ok(InstanceLock { conn: Some(conn) });
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(PAUSE).await;
        }
    }
    let holder = holder(&mut conn, key).await;
    let _ = conn.close().await;
    Err(StoreError::AlreadyServed {
        target: target.name.clone(),
        schema,
        holder,
    })
}

/// The holder's server process id, client address and application name.
type Holder = (i32, Option<String>, Option<String>);

/// Who holds the lock, in words, as far as the server tells.
async fn holder(conn: &mut PgConnection, key: i64) -> String {
    // A bigint advisory key is stored as two 32-bit halves.
    let high = key >> 32;
    let low = key & 0xffff_ffff;
    let found: Result<Option<Holder>, _> = sqlx::query_as(
        "SELECT a.pid, host(a.client_addr), a.application_name FROM pg_locks l \
         JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
         AND l.classid::BIGINT = $1 AND l.objid::BIGINT = $2",
    )
    .bind(high & 0xffff_ffff)
    .bind(low)
    .fetch_optional(conn)
    .await;
    match found {
        Ok(Some((pid, addr, app))) => format!(
            "{} connected from {} as server process {pid}",
            app.filter(|a| !a.is_empty())
                .unwrap_or_else(|| "a client".to_owned()),
            addr.unwrap_or_else(|| "a local socket".to_owned()),
        ),
        _ => "another client".to_owned(),
    }
}
