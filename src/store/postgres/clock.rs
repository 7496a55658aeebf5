//! The SQL of the platform response clock on PostgreSQL: a turn's round steps and the warnings
//! (inside the writer's batch transaction; see `write.rs`), and the reads of open rounds (on
//! the pool).

use sqlx::postgres::{PgConnection, PgPool, PgRow};

use super::rows::{self, get};
use super::write::enqueue_notification;
use crate::model::ConversationKey;
use crate::store::ops::{ClockWarning, RoundStep};
use crate::store::{OpenRound, StoreError};

/// Applies one round step of a turn at `at_ms`. Opening leaves an open round alone (one per
/// conversation, by the unique index); answering with no round open does nothing.
pub(crate) async fn apply_step(
    conn: &mut PgConnection,
    key: &ConversationKey,
    step: &RoundStep,
    at_ms: i64,
) -> Result<(), sqlx::Error> {
    match step {
        RoundStep::Open { budget_ms } => {
            sqlx::query(
                "INSERT INTO response_rounds (platform, self_id, user_id, started_ms, budget_ms) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (platform, self_id, user_id) WHERE outcome IS NULL DO NOTHING",
            )
            .bind(&key.platform)
            .bind(&key.self_id)
            .bind(&key.user_id)
            .bind(at_ms)
            .bind(budget_ms)
            .execute(&mut *conn)
            .await?;
        }
        RoundStep::Answer {
            by,
            counted_ms,
            in_time,
        } => {
            sqlx::query(
                "UPDATE response_rounds SET answered_ms = $4, answered_by = $5, counted_ms = $6, \
                 outcome = $7 \
                 WHERE platform = $1 AND self_id = $2 AND user_id = $3 AND outcome IS NULL",
            )
            .bind(&key.platform)
            .bind(&key.self_id)
            .bind(&key.user_id)
            .bind(at_ms)
            .bind(by)
            .bind(counted_ms)
            .bind(if *in_time { "in_time" } else { "late" })
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Writes a warning's notification and raises the round's `warned_pct`; false (and nothing
/// written) when the notification was there already.
pub(crate) async fn warn(
    conn: &mut PgConnection,
    warning: &ClockWarning,
) -> Result<bool, sqlx::Error> {
    let written = enqueue_notification(
        conn,
        &warning.key(),
        "clock.warning",
        warning.escalation_id,
        &warning.detail,
        warning.at_ms,
    )
    .await?;
    // GREATEST is PostgreSQL's spelling of SQLite's two-argument MAX.
    sqlx::query("UPDATE response_rounds SET warned_pct = GREATEST(warned_pct, $2) WHERE id = $1")
        .bind(warning.round_id)
        .bind(i64::from(warning.pct))
        .execute(&mut *conn)
        .await?;
    Ok(written)
}

const OPEN_ROUNDS: &str = "SELECT r.id, r.platform, r.self_id, r.user_id, r.started_ms, \
     r.budget_ms, r.warned_pct, COALESCE(c.state, 'bot') AS state, c.open_escalation \
     FROM response_rounds r LEFT JOIN conversations c \
     ON c.platform = r.platform AND c.self_id = r.self_id AND c.user_id = r.user_id \
     WHERE r.outcome IS NULL";

const CX: &str = "reading the response clock";

fn open_round_row(row: &PgRow) -> Result<OpenRound, StoreError> {
    let state: String = get(row, "state", CX)?;
    let warned: i64 = get(row, "warned_pct", CX)?;
    Ok(OpenRound {
        id: get(row, "id", CX)?,
        key: rows::key(row, CX)?,
        started_ms: get(row, "started_ms", CX)?,
        budget_ms: get(row, "budget_ms", CX)?,
        warned_pct: u32::try_from(warned).unwrap_or(0),
        state: rows::parse(&state, CX)?,
        escalation: get(row, "open_escalation", CX)?,
    })
}

pub(crate) async fn open_round(
    pool: &PgPool,
    key: &ConversationKey,
) -> Result<Option<OpenRound>, StoreError> {
    let row = sqlx::query(&format!(
        "{OPEN_ROUNDS} AND r.platform = $1 AND r.self_id = $2 AND r.user_id = $3"
    ))
    .bind(&key.platform)
    .bind(&key.self_id)
    .bind(&key.user_id)
    .fetch_optional(pool)
    .await
    .map_err(|e| StoreError::query(format!("read the open response round of chat {key}"), e))?;
    row.as_ref().map(open_round_row).transpose()
}

pub(crate) async fn open_rounds(pool: &PgPool) -> Result<Vec<OpenRound>, StoreError> {
    sqlx::query(&format!("{OPEN_ROUNDS} ORDER BY r.started_ms, r.id"))
        .fetch_all(pool)
        .await
        .map_err(|e| StoreError::query("read the open response rounds", e))?
        .iter()
        .map(open_round_row)
        .collect()
}
