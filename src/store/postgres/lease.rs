//! The SQL of shop leases: which instance answers which shop account, the instances'
//! heartbeats, and the inbound backlog a new owner handles first (see `cluster` for the
//! policy that drives these).
//!
//! Every time here is the server's clock ([`SERVER_NOW_MS`]), never an instance's: two machines
//! whose clocks disagree still agree on when a lease lapses. The statements run on a connection
//! of their own, so a renewal never waits behind the writer's batches; a broken connection is
//! dropped and opened again by the next call.

use std::sync::Arc;

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgRow};

use super::{Target, rows};
use crate::model::{ConversationKey, Part};
use crate::store::{SeenMessage, StoreError};

/// The server's clock in unix milliseconds, as SQL.
pub(crate) const SERVER_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// How many unhandled messages one takeover reads at most; more wait for the next.
const BACKLOG_PAGE: i64 = 10_000;

/// An instance as it introduces itself in `instances`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceInfo {
    pub id: Arc<str>,
    pub host: String,
    pub pid: i64,
    pub started_ms: i64,
}

/// What one heartbeat learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The server's clock.
    pub now_ms: i64,
    /// Instances seen within the lease TTL and not stopped, this one included.
    pub live: i64,
    /// Shop accounts known to the store.
    pub shops: i64,
}

/// A lease this instance holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeldLease {
    pub platform: String,
    pub self_id: String,
    pub epoch: i64,
}

impl HeldLease {
    /// The shop account: (platform, `self_id`).
    pub fn shop(&self) -> (String, String) {
        (self.platform.clone(), self.self_id.clone())
    }
}

/// One shop's lease as `xiaoer status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRow {
    pub platform: String,
    pub self_id: String,
    pub owner: Option<String>,
    pub epoch: i64,
    pub expires_ms: i64,
    pub taken_ms: Option<i64>,
    /// Buyer messages recorded and not yet handled.
    pub unhandled: i64,
    /// When the oldest of those arrived.
    pub oldest_unhandled_ms: Option<i64>,
}

/// One instance as `xiaoer status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InstanceRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub started_ms: i64,
    pub seen_ms: i64,
    pub stopped_ms: Option<i64>,
}

/// Everything `xiaoer status --store` prints.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStatus {
    /// The server's clock when it was read.
    pub now_ms: i64,
    pub instances: Vec<InstanceRow>,
    pub leases: Vec<LeaseRow>,
}

/// The lease statements, on a connection of their own.
pub struct ShopLeases {
    target: Target,
    conn: Option<PgConnection>,
    /// This connection holds the outbox lock (see [`ShopLeases::lead_outbox`]).
    leading: bool,
}

impl std::fmt::Debug for ShopLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShopLeases({})", self.target.name)
    }
}

impl ShopLeases {
    pub(crate) async fn open(target: Target) -> Result<ShopLeases, StoreError> {
        let conn = target.connect(&target.writer_options()).await?;
        Ok(ShopLeases {
            target,
            conn: Some(conn),
            leading: false,
        })
    }

    async fn conn(&mut self) -> Result<&mut PgConnection, StoreError> {
        self.target.reopened(&mut self.conn, "shop-lease").await
    }

    /// Drops the connection after a failed statement, so the next call opens a fresh one.
    fn failed(&mut self, context: &str, cause: sqlx::Error) -> StoreError {
        if matches!(
            cause,
            sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Database(_)
        ) {
            self.conn = None;
            self.leading = false;
        }
        StoreError::query(context, cause)
    }

    /// Whether this instance works the notification outbox: one instance of a store at a time
    /// does, the holder of a session lock on this connection (per database and schema). The
    /// lock goes with the connection, so when its holder dies another instance takes it on its
    /// next try.
    pub async fn lead_outbox(&mut self) -> Result<bool, StoreError> {
        if self.leading && self.conn.is_some() {
            return Ok(true);
        }
        let conn = self.conn().await?;
        let result = sqlx::query_scalar::<_, bool>(
            "SELECT pg_try_advisory_lock(hashtextextended('xiaoer outbox ' || current_schema(), 0))",
        )
        .fetch_one(conn)
        .await;
        match result {
            Ok(taken) => {
                self.leading = taken;
                Ok(taken)
            }
            Err(e) => Err(self.failed("take the notification outbox's lock", e)),
        }
    }

    /// Says this instance is alive and learns how many are.
    pub async fn heartbeat(
        &mut self,
        me: &InstanceInfo,
        ttl_ms: i64,
    ) -> Result<Heartbeat, StoreError> {
        let conn = self.conn().await?;
        let result = sqlx::query_as::<_, (i64, i64, i64)>(&format!(
            "WITH now AS (SELECT {SERVER_NOW_MS} AS ms), \
             beat AS (INSERT INTO instances (id, host, pid, started_ms, seen_ms) \
                 SELECT $1, $2, $3, $4, ms FROM now \
                 ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms, stopped_ms = NULL \
                 RETURNING id) \
             SELECT now.ms, \
                 (SELECT count(*) FROM instances \
                     WHERE stopped_ms IS NULL AND seen_ms > now.ms - $5 AND id <> $1) + \
                     (SELECT count(*) FROM beat), \
                 (SELECT count(*) FROM shop_leases) \
             FROM now"
        ))
        .bind(&*me.id)
        .bind(&me.host)
        .bind(me.pid)
        .bind(me.started_ms)
        .bind(ttl_ms)
        .fetch_one(conn)
        .await;
        match result {
            Ok((now_ms, live, shops)) => Ok(Heartbeat {
                now_ms,
                live,
                shops,
            }),
            Err(e) => Err(self.failed("send this instance's heartbeat", e)),
        }
    }

    /// Makes shop accounts known to the store, unowned, unless they are already.
    pub async fn add_shops(&mut self, shops: &[(String, String)]) -> Result<(), StoreError> {
        if shops.is_empty() {
            return Ok(());
        }
        let (platforms, ids) = columns(shops);
        let conn = self.conn().await?;
        let result = sqlx::query(
            "INSERT INTO shop_leases (platform, self_id) \
             SELECT * FROM unnest($1::TEXT[], $2::TEXT[]) ON CONFLICT DO NOTHING",
        )
        .bind(&platforms)
        .bind(&ids)
        .execute(conn)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed("record the shop accounts seen", e)),
        }
    }

    /// Extends every lease this instance still holds by `ttl_ms` from now; the ones returned are
    /// all it holds (a lease that lapsed is not renewed, even if nobody took it yet).
    pub async fn renew(
        &mut self,
        me: &InstanceInfo,
        ttl_ms: i64,
    ) -> Result<Vec<HeldLease>, StoreError> {
        let conn = self.conn().await?;
        let result = sqlx::query_as::<_, (String, String, i64)>(&format!(
            "UPDATE shop_leases SET expires_ms = {SERVER_NOW_MS} + $2 \
             WHERE owner = $1 AND expires_ms > {SERVER_NOW_MS} \
             RETURNING platform, self_id, epoch"
        ))
        .bind(&*me.id)
        .bind(ttl_ms)
        .fetch_all(conn)
        .await;
        match result {
            Ok(rows) => Ok(held(rows)),
            Err(e) => Err(self.failed("renew this instance's shop leases", e)),
        }
    }

    /// Takes up to `count` leases nobody holds (never taken, released, or lapsed), each at the
    /// next epoch. Two instances taking at once skip each other's rows.
    pub async fn take(
        &mut self,
        me: &InstanceInfo,
        ttl_ms: i64,
        count: i64,
    ) -> Result<Vec<HeldLease>, StoreError> {
        if count <= 0 {
            return Ok(Vec::new());
        }
        let conn = self.conn().await?;
        let result = sqlx::query_as::<_, (String, String, i64)>(&format!(
            "UPDATE shop_leases l \
             SET owner = $1, epoch = l.epoch + 1, expires_ms = {SERVER_NOW_MS} + $2, \
                 taken_ms = {SERVER_NOW_MS} \
             FROM (SELECT platform, self_id FROM shop_leases \
                   WHERE owner IS NULL OR expires_ms <= {SERVER_NOW_MS} \
                   ORDER BY expires_ms, platform, self_id LIMIT $3 \
                   FOR UPDATE SKIP LOCKED) free \
             WHERE l.platform = free.platform AND l.self_id = free.self_id \
             RETURNING l.platform, l.self_id, l.epoch"
        ))
        .bind(&*me.id)
        .bind(ttl_ms)
        .bind(count)
        .fetch_all(conn)
        .await;
        match result {
            Ok(rows) => Ok(held(rows)),
            Err(e) => Err(self.failed("take shop leases", e)),
        }
    }

    /// Gives leases up at once (for another instance to take on its next heartbeat).
    pub async fn release(
        &mut self,
        me: &InstanceInfo,
        shops: &[(String, String)],
    ) -> Result<(), StoreError> {
        if shops.is_empty() {
            return Ok(());
        }
        let (platforms, ids) = columns(shops);
        let conn = self.conn().await?;
        let result = sqlx::query(
            "UPDATE shop_leases SET owner = NULL, expires_ms = 0 \
             WHERE owner = $1 AND (platform, self_id) IN \
                 (SELECT * FROM unnest($2::TEXT[], $3::TEXT[]))",
        )
        .bind(&*me.id)
        .bind(&platforms)
        .bind(&ids)
        .execute(conn)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed("release shop leases", e)),
        }
    }

    /// Releases every lease and marks this instance stopped (a clean exit).
    pub async fn leave(&mut self, me: &InstanceInfo) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let result = async {
            let mut tx = conn.begin().await?;
            sqlx::query("UPDATE shop_leases SET owner = NULL, expires_ms = 0 WHERE owner = $1")
                .bind(&*me.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "UPDATE instances SET stopped_ms = {SERVER_NOW_MS} WHERE id = $1"
            ))
            .bind(&*me.id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed("release this instance's shop leases", e)),
        }
    }

    /// Forgets backlog rows and stopped or silent instances older than `keep_ms`.
    pub async fn forget_before(&mut self, keep_ms: i64) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let result = async {
            let gone = sqlx::query(&format!(
                "DELETE FROM inbound_backlog WHERE received_ms < {SERVER_NOW_MS} - $1"
            ))
            .bind(keep_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            sqlx::query(&format!(
                "DELETE FROM instances WHERE seen_ms < {SERVER_NOW_MS} - $1 \
                 AND NOT EXISTS (SELECT 1 FROM shop_leases WHERE owner = instances.id)"
            ))
            .bind(keep_ms)
            .execute(&mut *conn)
            .await?;
            Ok::<_, sqlx::Error>(gone)
        }
        .await;
        match result {
            Ok(gone) => Ok(gone),
            Err(e) => Err(self.failed("forget old backlog rows", e)),
        }
    }

    /// The instances, the leases and each shop's unhandled backlog.
    pub async fn status(&mut self) -> Result<ClusterStatus, StoreError> {
        let conn = self.conn().await?;
        let result = async {
            let now_ms: i64 = sqlx::query_scalar(&format!("SELECT {SERVER_NOW_MS}"))
                .fetch_one(&mut *conn)
                .await?;
            let instances = sqlx::query_as::<_, (String, String, i64, i64, i64, Option<i64>)>(
                "SELECT id, host, pid, started_ms, seen_ms, stopped_ms FROM instances \
                 ORDER BY started_ms, id",
            )
            .fetch_all(&mut *conn)
            .await?;
            let leases = sqlx::query_as::<
                _,
                (
                    String,
                    String,
                    Option<String>,
                    i64,
                    i64,
                    Option<i64>,
                    i64,
                    Option<i64>,
                ),
            >(
                "SELECT l.platform, l.self_id, l.owner, l.epoch, l.expires_ms, l.taken_ms, \
                        count(b.message_id), min(b.received_ms) \
                 FROM shop_leases l LEFT JOIN inbound_backlog b \
                     ON b.platform = l.platform AND b.self_id = l.self_id AND NOT EXISTS \
                        (SELECT 1 FROM inbound_messages m WHERE m.platform = b.platform \
                         AND m.self_id = b.self_id AND m.user_id = b.user_id \
                         AND m.message_id = b.message_id) \
                 GROUP BY l.platform, l.self_id ORDER BY l.platform, l.self_id",
            )
            .fetch_all(&mut *conn)
            .await?;
            Ok::<_, sqlx::Error>((now_ms, instances, leases))
        }
        .await;
        match result {
            Ok((now_ms, instances, leases)) => Ok(ClusterStatus {
                now_ms,
                instances: instances
                    .into_iter()
                    .map(
                        |(id, host, pid, started_ms, seen_ms, stopped_ms)| InstanceRow {
                            id,
                            host,
                            pid,
                            started_ms,
                            seen_ms,
                            stopped_ms,
                        },
                    )
                    .collect(),
                leases: leases
                    .into_iter()
                    .map(
                        |(platform, self_id, owner, epoch, expires_ms, taken_ms, n, oldest)| {
                            LeaseRow {
                                platform,
                                self_id,
                                owner,
                                epoch,
                                expires_ms,
                                taken_ms,
                                unhandled: n,
                                oldest_unhandled_ms: oldest,
                            }
                        },
                    )
                    .collect(),
            }),
            Err(e) => Err(self.failed("read the instances and shop leases", e)),
        }
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        if let Some(conn) = self.conn.take()
            && let Err(error) = conn.close().await
        {
            tracing::debug!(%error, "closing the shop-lease connection failed");
        }
    }

    /// One number from `sql` on the lease connection (benchmarks that read server statistics).
    #[doc(hidden)]
    pub async fn query_i64_for_test(&mut self, sql: &str) -> Result<i64, StoreError> {
        let conn = self.conn().await?;
        match sqlx::query_scalar::<_, i64>(sql).fetch_one(conn).await {
            Ok(value) => Ok(value),
            Err(e) => Err(self.failed("run a test query", e)),
        }
    }

    /// Runs `sql` on the lease connection (tests that move the server's view of time).
    #[doc(hidden)]
    pub async fn execute_for_test(&mut self, sql: &str) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        match sqlx::query(sql).execute(conn).await {
            Ok(done) => Ok(done.rows_affected()),
            Err(e) => Err(self.failed("run a test statement", e)),
        }
    }
}

/// The buyer messages of one shop that were recorded and never handled, oldest first.
pub(crate) async fn unhandled(
    pool: &sqlx::PgPool,
    platform: &str,
    self_id: &str,
) -> Result<Vec<SeenMessage>, StoreError> {
    let rows = sqlx::query(
        "SELECT b.platform, b.self_id, b.user_id, b.message_id, b.body, b.parts, \
                b.received_ms, b.received_by \
         FROM inbound_backlog b \
         WHERE b.platform = $1 AND b.self_id = $2 AND NOT EXISTS \
             (SELECT 1 FROM inbound_messages m WHERE m.platform = b.platform \
              AND m.self_id = b.self_id AND m.user_id = b.user_id \
              AND m.message_id = b.message_id) \
         ORDER BY b.received_ms, b.seq LIMIT $3",
    )
    .bind(platform)
    .bind(self_id)
    .bind(BACKLOG_PAGE)
    .fetch_all(pool)
    .await
    .map_err(|e| StoreError::query("read the messages a shop's last owner left", e))?;
    rows.iter().map(seen).collect()
}

/// Shop accounts as the two arrays `unnest` takes.
fn columns(shops: &[(String, String)]) -> (Vec<&str>, Vec<&str>) {
    shops.iter().map(|(p, s)| (p.as_str(), s.as_str())).unzip()
}

fn held(rows: Vec<(String, String, i64)>) -> Vec<HeldLease> {
    rows.into_iter()
        .map(|(platform, self_id, epoch)| HeldLease {
            platform,
            self_id,
            epoch,
        })
        .collect()
}

fn seen(row: &PgRow) -> Result<SeenMessage, StoreError> {
    const CX: &str = "reading the inbound backlog";
    let parts: Option<String> = rows::get(row, "parts", CX)?;
    let parts: Vec<Part> = match parts {
        Some(json) => serde_json::from_str(&json).unwrap_or_default(),
        None => Vec::new(),
    };
    let received_by: String = rows::get(row, "received_by", CX)?;
    Ok(SeenMessage {
        key: ConversationKey {
            platform: rows::get(row, "platform", CX)?,
            self_id: rows::get(row, "self_id", CX)?,
            user_id: rows::get(row, "user_id", CX)?,
        },
        message_id: rows::get(row, "message_id", CX)?,
        text: rows::get(row, "body", CX)?,
        parts,
        received_ms: rows::get(row, "received_ms", CX)?,
        received_by: received_by.into(),
    })
}
