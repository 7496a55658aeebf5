//! The SQL of the notification outbox on PostgreSQL: the deliverer's writes (inside the
//! writer's batch transaction; see `write.rs`) and its reads (on the pool).

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool, PgRow};

use super::rows;
use super::write::enqueue_notification;
use crate::store::ops::OutboxOp;
use crate::store::{DeadLetter, DueDelivery, OutboxCounts, OutboxEntry, StoreError};

/// Applies one outbox change; false when an enqueued key was there already.
pub(crate) async fn apply(conn: &mut PgConnection, op: &OutboxOp) -> Result<bool, sqlx::Error> {
    match op {
        OutboxOp::Enqueue {
            key,
            event,
            escalation_id,
            detail,
            at_ms,
        } => {
            return enqueue_notification(conn, key, event, *escalation_id, detail, *at_ms).await;
        }
        OutboxOp::FanOut {
            outbox_id,
            targets,
            due_ms,
        } => {
            for target in targets {
                sqlx::query(
                    "INSERT INTO outbox_deliveries (outbox_id, target, state, next_attempt_ms) \
                     VALUES ($1, $2, 'pending', $3) ON CONFLICT (outbox_id, target) DO NOTHING",
                )
                .bind(outbox_id)
                .bind(target)
                .bind(due_ms)
                .execute(&mut *conn)
                .await?;
            }
            sqlx::query("UPDATE outbox SET fanned_out = 1 WHERE id = $1")
                .bind(outbox_id)
                .execute(&mut *conn)
                .await?;
        }
        OutboxOp::Delivered {
            outbox_id,
            target,
            at_ms,
        } => {
            sqlx::query(
                "UPDATE outbox_deliveries SET state = 'delivered', attempts = attempts + 1, \
                 done_ms = $3, last_error = NULL WHERE outbox_id = $1 AND target = $2",
            )
            .bind(outbox_id)
            .bind(target)
            .bind(at_ms)
            .execute(&mut *conn)
            .await?;
        }
        OutboxOp::Failed {
            outbox_id,
            target,
            error,
            retry_at_ms,
            at_ms,
        } => {
            sqlx::query(
                "UPDATE outbox_deliveries SET attempts = attempts + 1, last_error = $3, \
                 state = CASE WHEN $4::BIGINT IS NULL THEN 'dead' ELSE 'pending' END, \
                 next_attempt_ms = COALESCE($4, next_attempt_ms), \
                 done_ms = CASE WHEN $4::BIGINT IS NULL THEN $5 ELSE NULL END \
                 WHERE outbox_id = $1 AND target = $2",
            )
            .bind(outbox_id)
            .bind(target)
            .bind(error)
            .bind(retry_at_ms)
            .bind(at_ms)
            .execute(&mut *conn)
            .await?;
        }
        OutboxOp::Revive { target, at_ms } => {
            sqlx::query(
                "UPDATE outbox_deliveries SET state = 'pending', next_attempt_ms = $2, \
                 done_ms = NULL WHERE state = 'dead' AND ($1::TEXT IS NULL OR target = $1)",
            )
            .bind(target)
            .bind(at_ms)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(true)
}

const ENTRY_COLUMNS: &str = "o.id, o.key, o.event, o.platform, o.self_id, o.user_id, o.queue, \
     o.escalation_id, o.first_message, o.detail, o.at_ms";

fn entry(row: &PgRow) -> Result<OutboxEntry, StoreError> {
    const CX: &str = "reading a notification";
    let queue: String = rows::get(row, "queue", CX)?;
    Ok(OutboxEntry {
        id: rows::get(row, "id", CX)?,
        key: rows::get(row, "key", CX)?,
        event: rows::get(row, "event", CX)?,
        chat: rows::key(row, CX)?,
        queue: rows::parse(&queue, CX)?,
        escalation_id: rows::get(row, "escalation_id", CX)?,
        first_message: rows::get(row, "first_message", CX)?,
        detail: rows::get(row, "detail", CX)?,
        at_ms: rows::get(row, "at_ms", CX)?,
    })
}

/// Notifications whose deliveries are not planned yet, oldest first.
pub(crate) async fn unfanned(pool: &PgPool, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM outbox o WHERE o.fanned_out = 0 ORDER BY o.id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(|e| StoreError::query("list notifications to plan", e))?;
    rows.iter().map(entry).collect()
}

/// Pending deliveries due at `now_ms`, in the order their notifications were written.
pub(crate) async fn due(
    pool: &PgPool,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<DueDelivery>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS}, d.target, d.attempts FROM outbox_deliveries d \
         JOIN outbox o ON o.id = d.outbox_id \
         WHERE d.state = 'pending' AND d.next_attempt_ms <= $1 ORDER BY o.id LIMIT $2"
    ))
    .bind(now_ms)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(|e| StoreError::query("list notifications due for delivery", e))?;
    rows.iter()
        .map(|row| {
            Ok(DueDelivery {
                entry: entry(row)?,
                target: rows::get(row, "target", "reading a delivery")?,
                attempts: rows::get(row, "attempts", "reading a delivery")?,
            })
        })
        .collect()
}

/// Deliveries given up on, newest first.
pub(crate) async fn dead(pool: &PgPool, limit: i64) -> Result<Vec<DeadLetter>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS}, d.target, d.attempts, d.last_error, d.done_ms \
         FROM outbox_deliveries d JOIN outbox o ON o.id = d.outbox_id \
         WHERE d.state = 'dead' ORDER BY d.done_ms DESC, o.id DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(|e| StoreError::query("list dead-lettered notifications", e))?;
    const CX: &str = "reading a dead-lettered notification";
    rows.iter()
        .map(|row| {
            Ok(DeadLetter {
                entry: entry(row)?,
                target: rows::get(row, "target", CX)?,
                attempts: rows::get(row, "attempts", CX)?,
                last_error: rows::get(row, "last_error", CX)?,
                given_up_ms: rows::get::<Option<i64>>(row, "done_ms", CX)?.unwrap_or(0),
            })
        })
        .collect()
}

/// How many deliveries are in each state, and how many notifications wait to be planned.
pub(crate) async fn counts(pool: &PgPool) -> Result<OutboxCounts, StoreError> {
    let cx = |e| StoreError::query("count notifications", e);
    let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM outbox_deliveries GROUP BY state")
        .fetch_all(pool)
        .await
        .map_err(cx)?;
    let mut counts = OutboxCounts::default();
    for row in &rows {
        let state: String = row.try_get("state").map_err(cx)?;
        let n: i64 = row.try_get("n").map_err(cx)?;
        match state.as_str() {
            "pending" => counts.pending = n,
            "delivered" => counts.delivered = n,
            "dead" => counts.dead = n,
            _ => {}
        }
    }
    counts.unplanned = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE fanned_out = 0")
        .fetch_one(pool)
        .await
        .map_err(cx)?;
    Ok(counts)
}
