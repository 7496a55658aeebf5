//! The SQL of the platform response clock: a turn's round steps (rusqlite, on the writer's
//! thread inside the turn's transaction; see `write.rs`), the warnings the outbox writes, and
//! the reads of open rounds (sqlx, on the read pool).

use rusqlite::{Connection, params};
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::rows::{self, get};
use super::write::enqueue_notification;
use crate::model::ConversationKey;
use crate::store::ops::{ClockWarning, RoundStep};
use crate::store::{OpenRound, StoreError};

/// Applies a turn's round steps at `at_ms`, in order.
///
/// A bot that answers at once opens and answers a round in the same turn. Written as the two
/// steps, that costs an insert into the open-round index and its removal again, plus an update
/// of the row just written; so when no round is open, the pair is written as one row that is
/// answered already. When one is open (the worker's view was stale), the steps apply one by one
/// and mean what they always meant.
pub(crate) fn apply_steps(
    conn: &Connection,
    key: &ConversationKey,
    steps: &[RoundStep],
    at_ms: i64,
) -> rusqlite::Result<()> {
    if let [
        RoundStep::Open { budget_ms },
        RoundStep::Answer {
            by,
            counted_ms,
            in_time,
        },
    ] = steps
    {
        let written = conn
            .prepare_cached(
                "INSERT INTO response_rounds (platform, self_id, user_id, started_ms, budget_ms, \
                 answered_ms, answered_by, counted_ms, outcome) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?4, ?6, ?7, ?8 \
                 WHERE NOT EXISTS (SELECT 1 FROM response_rounds \
                 WHERE platform = ?1 AND self_id = ?2 AND user_id = ?3 AND outcome IS NULL)",
            )?
            .execute(params![
                key.platform,
                key.self_id,
                key.user_id,
                at_ms,
                budget_ms,
                by,
                counted_ms,
                outcome(*in_time)
            ])?;
        if written == 1 {
            return Ok(());
        }
    }
    for step in steps {
        apply_step(conn, key, step, at_ms)?;
    }
    Ok(())
}

fn outcome(in_time: bool) -> &'static str {
    if in_time { "in_time" } else { "late" }
}

/// Applies one round step of a turn at `at_ms`. Opening leaves an open round alone (one per
/// conversation, by the unique index); answering with no round open does nothing.
fn apply_step(
    conn: &Connection,
    key: &ConversationKey,
    step: &RoundStep,
    at_ms: i64,
) -> rusqlite::Result<()> {
    match step {
        RoundStep::Open { budget_ms } => {
            conn.prepare_cached(
                "INSERT INTO response_rounds (platform, self_id, user_id, started_ms, budget_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (platform, self_id, user_id) WHERE outcome IS NULL DO NOTHING",
            )?
            .execute(params![
                key.platform,
                key.self_id,
                key.user_id,
                at_ms,
                budget_ms
            ])?;
        }
        RoundStep::Answer {
            by,
            counted_ms,
            in_time,
        } => {
            conn.prepare_cached(
                "UPDATE response_rounds SET answered_ms = ?4, answered_by = ?5, counted_ms = ?6, \
                 outcome = ?7 \
                 WHERE platform = ?1 AND self_id = ?2 AND user_id = ?3 AND outcome IS NULL",
            )?
            .execute(params![
                key.platform,
                key.self_id,
                key.user_id,
                at_ms,
                by,
                counted_ms,
                outcome(*in_time)
            ])?;
        }
    }
    Ok(())
}

/// Writes a warning's notification and raises the round's `warned_pct`; false (and nothing
/// written) when the notification was there already.
pub(crate) fn warn(conn: &Connection, warning: &ClockWarning) -> rusqlite::Result<bool> {
    let written = enqueue_notification(
        conn,
        &warning.key(),
        "clock.warning",
        warning.escalation_id,
        &warning.detail,
        warning.at_ms,
    )?;
    conn.prepare_cached(
        "UPDATE response_rounds SET warned_pct = MAX(warned_pct, ?2) WHERE id = ?1",
    )?
    .execute(params![warning.round_id, i64::from(warning.pct)])?;
    Ok(written)
}

const OPEN_ROUNDS: &str = "SELECT r.id, r.platform, r.self_id, r.user_id, r.started_ms, \
     r.budget_ms, r.warned_pct, COALESCE(c.state, 'bot') AS state, c.open_escalation \
     FROM response_rounds r LEFT JOIN conversations c \
     ON c.platform = r.platform AND c.self_id = r.self_id AND c.user_id = r.user_id \
     WHERE r.outcome IS NULL";

const CX: &str = "reading the response clock";

fn open_round_row(row: &SqliteRow) -> Result<OpenRound, StoreError> {
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
    pool: &SqlitePool,
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

pub(crate) async fn open_rounds(pool: &SqlitePool) -> Result<Vec<OpenRound>, StoreError> {
    sqlx::query(&format!("{OPEN_ROUNDS} ORDER BY r.started_ms, r.id"))
        .fetch_all(pool)
        .await
        .map_err(|e| StoreError::query("read the open response rounds", e))?
        .iter()
        .map(open_round_row)
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::model::{Actor, Conversation, ConversationKey, Direction, Sender};
    use crate::store::{InboundLine, RoundStep, Store, StoreError, Turn, TurnOutcome};

    fn buyer_turn(conversation: Conversation, id: &str, at_ms: i64) -> Turn {
        let mut turn = Turn::new(conversation, Actor::Bot, "message handled", at_ms);
        turn.inbound = Some(InboundLine {
            message_id: id.to_owned(),
            sender: Sender::Buyer,
            direction: Direction::Inbound,
            text: "在吗".to_owned(),
            parts: Vec::new(),
            at_ms,
            decision: None,
        });
        turn.clock = vec![RoundStep::Open { budget_ms: 180_000 }];
        turn
    }

    #[tokio::test]
    async fn turns_open_and_answer_rounds_with_everything_else_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let key = ConversationKey::new("qq", "shop1", "buyer1");
        let fresh = || Conversation::new(key.clone(), 1000);

        store
            .commit_turn(buyer_turn(fresh(), "m1", 1000))
            .await
            .unwrap();
        let open = store.open_round(&key).await.unwrap().unwrap();
        assert_eq!(
            (open.started_ms, open.budget_ms, open.warned_pct),
            (1000, 180_000, 0)
        );

        // A later message in the same wait does not restart the round, and a redelivery writes
        // nothing at all.
        let stored = store.conversation(&key).await.unwrap().unwrap();
        store
            .commit_turn(buyer_turn(stored.clone(), "m2", 5000))
            .await
            .unwrap();
        let stored = store.conversation(&key).await.unwrap().unwrap();
        assert_eq!(
            store
                .commit_turn(buyer_turn(stored.clone(), "m1", 9000))
                .await
                .unwrap(),
            TurnOutcome::Duplicate
        );
        assert_eq!(store.open_round(&key).await.unwrap().unwrap().id, open.id);

        let answer = |conversation: Conversation, at_ms| {
            let mut turn = Turn::new(
                conversation,
                Actor::Agent("a".into()),
                "agent replied",
                at_ms,
            );
            turn.clock = vec![RoundStep::Answer {
                by: "agent:a".into(),
                counted_ms: at_ms - 1000,
                in_time: false,
            }];
            turn
        };
        // A turn refused for a stale conversation leaves the round open.
        let stale = Conversation {
            version: stored.version - 1,
            ..stored.clone()
        };
        assert!(matches!(
            store.commit_turn(answer(stale, 200_000)).await,
            Err(StoreError::Conflict { .. })
        ));
        assert!(store.open_round(&key).await.unwrap().is_some());

        store.commit_turn(answer(stored, 200_000)).await.unwrap();
        assert_eq!(store.open_round(&key).await.unwrap(), None);
        let rounds = store.report_rows(0, i64::MAX, None).await.unwrap().rounds;
        assert_eq!(rounds.len(), 1);
        let round = &rounds[0];
        assert_eq!(
            (
                round.started_ms,
                round.answered_ms,
                round.answered_by.as_deref(),
                round.counted_ms,
                round.outcome.as_deref()
            ),
            (
                1000,
                Some(200_000),
                Some("agent:a"),
                Some(199_000),
                Some("late")
            )
        );

        // The buyer's next message opens the next round.
        let stored = store.conversation(&key).await.unwrap().unwrap();
        store
            .commit_turn(buyer_turn(stored, "m3", 300_000))
            .await
            .unwrap();
        let next = store.open_round(&key).await.unwrap().unwrap();
        assert_ne!(next.id, open.id);
        assert_eq!(next.started_ms, 300_000);
        store.close().await.unwrap();
    }
}
