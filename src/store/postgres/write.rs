//! The SQL of every write on PostgreSQL: the writer task's batches, one transaction each, on
//! one connection.
//!
//! # Refusals
//!
//! As on SQLite, a turn first checks everything that can refuse it (a stale conversation
//! version, an escalation in the wrong state, a message id the chat already has) and only then
//! writes, so a refused turn leaves nothing behind even inside a batch that commits. A failed
//! statement aborts a PostgreSQL transaction; that is a database failure, which fails the
//! whole batch and makes the writer replay it one request per transaction.
//!
//! # Other writers
//!
//! SQLite's `BEGIN IMMEDIATE` makes every writer wait for the others. Here each batch takes a
//! transaction-scoped advisory lock per conversation it writes, in one order (so two instances
//! cannot deadlock on them), before it reads any version: two processes writing one chat (the
//! daemon and `xiaoer queue claim`, or later two instances) take turns, and the version check
//! sees what the other committed. Chats that nobody else writes are not held up.
//!
//! # Shop leases
//!
//! A turn that carries a fence (several instances share the store) is written only if its
//! owner still holds the shop's lease at that epoch; the batch reads its owners' leases once,
//! `FOR SHARE`, so a takeover waits for the batch and a turn planned under a lease that has moved
//! on is refused without failing the others.
//!
//! # A lost connection
//!
//! When a batch fails and its transaction cannot even be rolled back, the connection is
//! dropped and a new one is opened before the next batch, so a restarted server costs the
//! batches sent while it was away, not the daemon.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::{Target, rows};
use crate::model::{
    ConversationKey, ConversationState, Delivery, Direction, Escalation, EscalationEvent,
    EscalationState, Queue, TranscriptEntry,
};
use crate::store::StoreError;
use crate::store::ops::{
    AccountOp, DecisionRecord, EscalationStep, InboundLine, Op, Reply, Turn, TurnOutcome,
};
use crate::store::sqlite::rows::parts_json;

/// What the writer says it was doing when BEGIN failed.
const BEGIN: &str = "begin a write transaction";

/// The writer's side of a PostgreSQL store.
pub(crate) struct PgWriter {
    /// `None` after the connection broke, until the next batch opens a new one.
    conn: Option<PgConnection>,
    target: Target,
}

impl PgWriter {
    pub(crate) fn new(conn: PgConnection, target: Target) -> Self {
        PgWriter {
            conn: Some(conn),
            target,
        }
    }

    /// The connection, opened again if it was lost.
    async fn connection(&mut self) -> Result<&mut PgConnection, StoreError> {
        self.target.reopened(&mut self.conn, "writer").await
    }

    /// One transaction for the batch; a connection found broken is dropped (see
    /// [`PgWriter::connection`]).
    async fn apply_batch_once(
        &mut self,
        ops: &[&Op],
    ) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
        let conn = self.connection().await?;
        // `broken`: the connection is in no state to trust (BEGIN, COMMIT or ROLLBACK failed).
        let (result, broken) = match conn.begin().await {
            Err(e) => (Err(StoreError::query(BEGIN, e)), true),
            Ok(mut tx) => match apply_all(&mut tx, ops).await {
                Ok(results) => match tx.commit().await {
                    Ok(()) => (Ok(results), false),
                    Err(e) => (
                        Err(StoreError::query(
                            format!("commit a batch of {} writes", ops.len()),
                            e,
                        )),
                        true,
                    ),
                },
                Err(e) => {
                    let broken = tx.rollback().await.is_err();
                    (Err(e), broken)
                }
            },
        };
        if broken && let Some(conn) = self.conn.take() {
            tracing::warn!(store = %self.target.name, "the store's writer connection failed; reconnecting before the next batch");
            if let Err(error) = conn.close().await {
                tracing::debug!(%error, "closing the store's broken writer connection failed");
            }
        }
        result
    }

    /// The writer's connection, for tests that look at what it wrote.
    #[cfg(test)]
    pub(crate) fn connection_for_test(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("the writer is connected")
    }
}

impl crate::store::writer::Backend for PgWriter {
    async fn apply_batch(
        &mut self,
        ops: &[&Op],
    ) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
        // A connection the server ended while it sat idle is found out by BEGIN; nothing of
        // the batch was sent, so it goes once more on a new connection.
        match self.apply_batch_once(ops).await {
            Err(StoreError::Query { context, .. }) if context == BEGIN && self.conn.is_none() => {
                self.apply_batch_once(ops).await
            }
            result => result,
        }
    }

    async fn limit_pages(&mut self, _pages: u32) {
        // The injected full disk is SQLite's page limit; a PostgreSQL server's disk is its own.
        tracing::warn!("the page-limit fault does nothing on a PostgreSQL store");
    }

    async fn close(self) {
        if let Some(conn) = self.conn
            && let Err(error) = conn.close().await
        {
            tracing::warn!(%error, "closing the store's writer connection failed");
        }
    }
}

/// The advisory-lock key of a conversation: the first eight bytes of a SHA-256 of its key, the
/// same in every process and every version of xiaoer.
fn lock_key(key: &ConversationKey) -> i64 {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for part in [&key.platform, &key.self_id, &key.user_id] {
        hash.update(part.as_bytes());
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        hash.update([0x1f]);
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

async fn apply_all(
    conn: &mut PgConnection,
    ops: &[&Op],
) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
    let mut locks: Vec<i64> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Turn(turn) => Some(lock_key(turn.key())),
            _ => None,
        })
        .collect();
    if !locks.is_empty() {
        locks.sort_unstable();
        locks.dedup();
        // unnest yields the array in order, so the locks are taken in sorted order.
        sqlx::query("SELECT pg_advisory_xact_lock(k) FROM unnest($1::BIGINT[]) AS k")
            .bind(&locks)
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::query("lock the chats of a batch", e))?;
    }
    let held = held_leases(conn, ops).await?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        if let Op::Turn(turn) = op
            && let Some(fence) = &turn.fence
        {
            let key = turn.key();
            let shop = (key.platform.as_str(), key.self_id.as_str(), fence.epoch);
            if !held
                .iter()
                .any(|(p, s, e)| (p.as_str(), s.as_str(), *e) == shop)
            {
                results.push(Err(StoreError::LeaseLost {
                    shop: format!("{}/{}", key.platform, key.self_id),
                }));
                continue;
            }
        }
        match apply(conn, op).await {
            Err(e) if e.is_database_failure() => return Err(e),
            result => results.push(result),
        }
    }
    Ok(results)
}

/// The shop leases (platform, shop, epoch) that the owners named by the batch's fenced turns
/// hold right now, by the server's clock, locked until the batch commits: a takeover waits
/// for the batch, and a turn planned under a lease that has moved on is refused. One query
/// per batch, none for a batch without fences.
async fn held_leases(
    conn: &mut PgConnection,
    ops: &[&Op],
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let mut owners: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Turn(turn) => turn.fence.as_ref().map(|f| &*f.owner),
            _ => None,
        })
        .collect();
    if owners.is_empty() {
        return Ok(Vec::new());
    }
    owners.sort_unstable();
    owners.dedup();
    sqlx::query_as(&format!(
        "SELECT platform, self_id, epoch FROM shop_leases \
         WHERE owner = ANY($1) AND expires_ms > {} FOR SHARE",
        super::lease::SERVER_NOW_MS
    ))
    .bind(&owners)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| StoreError::query("check the shop leases of a batch", e))
}

async fn apply(conn: &mut PgConnection, op: &Op) -> Result<Reply, StoreError> {
    let cx = |e| StoreError::query(op.describe(), e);
    match op {
        Op::Turn(turn) => apply_turn(conn, turn, op).await.map(Reply::Turn),
        Op::Account(account) => apply_account(conn, account, op).await,
        Op::Outbox(change) => super::outbox::apply(conn, change)
            .await
            .map(|written| Reply::Created(i64::from(written)))
            .map_err(cx),
        Op::ClockWarning(warning) => super::clock::warn(conn, warning)
            .await
            .map(|written| Reply::Created(i64::from(written)))
            .map_err(cx),
        Op::MarkDelivery {
            line,
            delivery,
            message_id,
        } => sqlx::query(
            "UPDATE transcript SET delivery = $2, message_id = COALESCE($3, message_id) \
             WHERE id = $1",
        )
        .bind(line)
        .bind(delivery.as_str())
        .bind(message_id)
        .execute(&mut *conn)
        .await
        .map(|_| Reply::Done)
        .map_err(cx),
        Op::Append(entry) => insert_transcript(conn, entry, None)
            .await
            .map(|_| Reply::Done)
            .map_err(cx),
        Op::LeftUnsent {
            platform,
            self_id,
            before_ms,
        } => sqlx::query(
            "UPDATE transcript SET delivery = 'unknown' WHERE platform = $1 AND self_id = $2 \
             AND direction = 'outbound' AND delivery = 'pending' AND at_ms < $3",
        )
        .bind(platform)
        .bind(self_id)
        .bind(before_ms)
        .execute(&mut *conn)
        .await
        .map(|done| Reply::Created(i64::try_from(done.rows_affected()).unwrap_or(i64::MAX)))
        .map_err(cx),
        Op::Seen(seen) => sqlx::query(
            "INSERT INTO inbound_backlog \
             (platform, self_id, user_id, message_id, body, parts, received_ms, received_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&seen.key.platform)
        .bind(&seen.key.self_id)
        .bind(&seen.key.user_id)
        .bind(&seen.message_id)
        .bind(&seen.text)
        .bind(parts_json(&seen.parts))
        .bind(seen.received_ms)
        .bind(&*seen.received_by)
        .execute(&mut *conn)
        .await
        .map(|_| Reply::Done)
        .map_err(cx),
        Op::Flush | Op::Shutdown => Ok(Reply::Done),
        #[cfg(test)]
        Op::FailForTest => sqlx::query("SELECT * FROM no_such_table")
            .execute(&mut *conn)
            .await
            .map(|_| Reply::Done)
            .map_err(cx),
    }
}

async fn apply_turn(
    conn: &mut PgConnection,
    turn: &Turn,
    op: &Op,
) -> Result<TurnOutcome, StoreError> {
    let db = |e| StoreError::query(op.describe(), e);
    let key = turn.key();
    let stored = sqlx::query(
        "SELECT state, version FROM conversations \
         WHERE platform = $1 AND self_id = $2 AND user_id = $3",
    )
    .bind(&key.platform)
    .bind(&key.self_id)
    .bind(&key.user_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    let (before, stored_version) = match &stored {
        Some(row) => {
            const CX: &str = "reading a conversation";
            let state: String = rows::get(row, "state", CX)?;
            (
                Some(rows::parse::<ConversationState>(&state, CX)?),
                rows::get::<i64>(row, "version", CX)?,
            )
        }
        None => (None, 0),
    };
    if stored_version != turn.conversation.version {
        return Err(StoreError::Conflict {
            key: key.clone(),
            expected: turn.conversation.version,
            found: stored_version,
        });
    }
    let mut found = Vec::with_capacity(turn.escalations.len());
    for step in &turn.escalations {
        found.push(match step.id() {
            Some(id) => Some(check_step(conn, id, turn, step, op).await?),
            None => None,
        });
    }
    if let Some(inbound) = &turn.inbound {
        if !insert_inbound_id(conn, key, inbound).await.map_err(db)? {
            return Ok(TurnOutcome::Duplicate);
        }
        insert_transcript(
            conn,
            &inbound_entry(key, inbound),
            inbound.decision.as_ref(),
        )
        .await
        .map_err(db)?;
    }
    let version = stored_version + 1;
    upsert_conversation(conn, turn, version).await.map_err(db)?;
    let after = turn.conversation.state;
    if before != Some(after) {
        record_change(conn, turn, before, after).await.map_err(db)?;
    }
    let mut escalation_id = None;
    for (step, found) in turn.escalations.iter().zip(found) {
        escalation_id = Some(apply_step(conn, turn, step, found).await.map_err(db)?);
    }
    for step in &turn.clock {
        super::clock::apply_step(conn, key, step, turn.at_ms)
            .await
            .map_err(db)?;
    }
    let mut outbound = Vec::with_capacity(turn.outbound.len());
    for line in &turn.outbound {
        let entry = TranscriptEntry {
            key: key.clone(),
            direction: Direction::Outbound,
            sender: line.sender.clone(),
            message_id: None,
            text: line.text.clone(),
            parts: Vec::new(),
            delivery: Some(Delivery::Pending),
            at_ms: line.at_ms,
        };
        outbound.push(insert_transcript(conn, &entry, None).await.map_err(db)?);
    }
    Ok(TurnOutcome::Applied {
        version,
        escalation: escalation_id,
        outbound,
    })
}

/// Refuses a step on an escalation that is not in a state it applies to.
async fn check_step(
    conn: &mut PgConnection,
    id: i64,
    turn: &Turn,
    step: &EscalationStep,
    op: &Op,
) -> Result<Escalation, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM escalations WHERE id = $1",
        rows::ESCALATION_COLUMNS
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| StoreError::query(op.describe(), e))?;
    let Some(row) = row else {
        return Err(StoreError::EscalationNotFound { id });
    };
    let escalation = rows::escalation(&row)?;
    if &escalation.key != turn.key() {
        return Err(StoreError::EscalationNotFound { id });
    }
    if escalation.state == EscalationState::Closed {
        return Err(StoreError::EscalationClosed { id });
    }
    match (step, escalation.claimed_by.as_deref()) {
        (EscalationStep::Claim { agent, .. }, Some(holder))
            if escalation.state == EscalationState::Claimed && holder != agent =>
        {
            Err(StoreError::AlreadyClaimed {
                id,
                agent: holder.to_owned(),
            })
        }
        (EscalationStep::Release { .. }, _) if escalation.state != EscalationState::Claimed => {
            Err(StoreError::NotClaimed { id })
        }
        _ => Ok(escalation),
    }
}

async fn apply_step(
    conn: &mut PgConnection,
    turn: &Turn,
    step: &EscalationStep,
    found: Option<Escalation>,
) -> Result<i64, sqlx::Error> {
    let key = turn.key();
    let at = turn.at_ms;
    let actor = turn.actor.to_string();
    // The notification this step causes, written with it so that a crash cannot separate them.
    let mut notify = None;
    let (id, kind, queue) = match step {
        EscalationStep::Open {
            queue,
            reason,
            rule,
            first_message,
        } => {
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO escalations \
                 (platform, self_id, user_id, queue, reason, rule, state, created_ms, \
                 first_message) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8) \
                 ON CONFLICT (platform, self_id, user_id) WHERE state <> 'closed' DO NOTHING \
                 RETURNING id",
            )
            .bind(&key.platform)
            .bind(&key.self_id)
            .bind(&key.user_id)
            .bind(queue.as_str())
            .bind(reason)
            .bind(rule)
            .bind(at)
            .bind(first_message)
            .fetch_optional(&mut *conn)
            .await?;
            notify = inserted.is_some().then_some("escalation.created");
            let id = match inserted {
                Some(id) => id,
                // The chat already waits (written by another process): it keeps its place.
                None => {
                    sqlx::query_scalar(
                        "SELECT id FROM escalations WHERE platform = $1 AND self_id = $2 \
                         AND user_id = $3 AND state <> 'closed'",
                    )
                    .bind(&key.platform)
                    .bind(&key.self_id)
                    .bind(&key.user_id)
                    .fetch_one(&mut *conn)
                    .await?
                }
            };
            sqlx::query(
                "UPDATE conversations SET open_escalation = $4 \
                 WHERE platform = $1 AND self_id = $2 AND user_id = $3",
            )
            .bind(&key.platform)
            .bind(&key.self_id)
            .bind(&key.user_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            (id, EscalationEvent::Opened, *queue)
        }
        EscalationStep::Raise { id, queue, reason } => {
            sqlx::query("UPDATE escalations SET queue = $2, reason = $3 WHERE id = $1")
                .bind(id)
                .bind(queue.as_str())
                .bind(reason)
                .execute(&mut *conn)
                .await?;
            notify = Some("escalation.raised");
            (*id, EscalationEvent::Raised, *queue)
        }
        EscalationStep::Claim { id, agent } => {
            sqlx::query(
                "UPDATE escalations SET state = 'claimed', claimed_by = $2, claimed_ms = $3 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(agent)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            (*id, EscalationEvent::Claimed, queue_of(found.as_ref()))
        }
        EscalationStep::Release { id } => {
            sqlx::query(
                "UPDATE escalations SET state = 'open', claimed_by = NULL, claimed_ms = NULL \
                 WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
            (*id, EscalationEvent::Released, queue_of(found.as_ref()))
        }
        EscalationStep::Transfer { id, queue, agent } => {
            let state = if agent.is_some() { "claimed" } else { "open" };
            sqlx::query(
                "UPDATE escalations SET queue = $2, state = $3, claimed_by = $4, \
                 claimed_ms = CASE WHEN $4::TEXT IS NULL THEN NULL ELSE $5 END WHERE id = $1",
            )
            .bind(id)
            .bind(queue.as_str())
            .bind(state)
            .bind(agent)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            (*id, EscalationEvent::Transferred, *queue)
        }
        EscalationStep::Close { id, outcome } => {
            sqlx::query(
                "UPDATE escalations SET state = 'closed', closed_by = $2, closed_ms = $3, \
                 outcome = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(&actor)
            .bind(at)
            .bind(outcome)
            .execute(&mut *conn)
            .await?;
            (*id, EscalationEvent::Closed, queue_of(found.as_ref()))
        }
    };
    let event: i64 = sqlx::query_scalar(
        "INSERT INTO escalation_events (escalation_id, kind, queue, actor, detail, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(id)
    .bind(kind.as_str())
    .bind(queue.as_str())
    .bind(&actor)
    .bind(&turn.reason)
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(notify) = notify {
        enqueue_notification(
            conn,
            &format!("{notify}:{id}:{event}"),
            notify,
            id,
            &turn.reason,
            at,
        )
        .await?;
    }
    Ok(id)
}

/// Puts a notification about escalation `id` in the outbox, as the escalation stands now; a key
/// already there is left alone, so an event noticed twice is delivered once.
pub(crate) async fn enqueue_notification(
    conn: &mut PgConnection,
    key: &str,
    event: &str,
    id: i64,
    detail: &str,
    at_ms: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO outbox \
         (key, event, platform, self_id, user_id, queue, escalation_id, first_message, \
         detail, at_ms) \
         SELECT $1, $2, platform, self_id, user_id, queue, id, first_message, $4, $5 \
         FROM escalations WHERE id = $3 \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(event)
    .bind(id)
    .bind(detail)
    .bind(at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

fn queue_of(escalation: Option<&Escalation>) -> Queue {
    escalation.map_or(Queue::Human, |e| e.queue)
}

/// Records a message id unless the chat already has it; `true` if new.
async fn insert_inbound_id(
    conn: &mut PgConnection,
    key: &ConversationKey,
    inbound: &InboundLine,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbound_messages (platform, self_id, user_id, message_id, at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&key.platform)
    .bind(&key.self_id)
    .bind(&key.user_id)
    .bind(&inbound.message_id)
    .bind(inbound.at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

fn inbound_entry(key: &ConversationKey, inbound: &InboundLine) -> TranscriptEntry {
    TranscriptEntry {
        key: key.clone(),
        direction: inbound.direction,
        sender: inbound.sender.clone(),
        message_id: Some(inbound.message_id.clone()),
        text: inbound.text.clone(),
        parts: inbound.parts.clone(),
        delivery: None,
        at_ms: inbound.at_ms,
    }
}

async fn upsert_conversation(
    conn: &mut PgConnection,
    turn: &Turn,
    version: i64,
) -> Result<(), sqlx::Error> {
    let c = &turn.conversation;
    sqlx::query(
        "INSERT INTO conversations (platform, self_id, user_id, state, state_since_ms, \
         paused_until_ms, greeted_at_ms, fallback_streak, queued_notice_sent, open_escalation, \
         last_buyer_ms, last_staff_ms, last_item_id, last_item_title, off_hours_notice_ms, \
         version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (platform, self_id, user_id) DO UPDATE SET \
         state = excluded.state, state_since_ms = excluded.state_since_ms, \
         paused_until_ms = excluded.paused_until_ms, greeted_at_ms = excluded.greeted_at_ms, \
         fallback_streak = excluded.fallback_streak, \
         queued_notice_sent = excluded.queued_notice_sent, \
         open_escalation = excluded.open_escalation, last_buyer_ms = excluded.last_buyer_ms, \
         last_staff_ms = excluded.last_staff_ms, last_item_id = excluded.last_item_id, \
         last_item_title = excluded.last_item_title, \
         off_hours_notice_ms = excluded.off_hours_notice_ms, version = excluded.version",
    )
    .bind(&c.key.platform)
    .bind(&c.key.self_id)
    .bind(&c.key.user_id)
    .bind(c.state.as_str())
    .bind(c.state_since_ms)
    .bind(c.paused_until_ms)
    .bind(c.greeted_at_ms)
    .bind(c.fallback_streak)
    .bind(i64::from(c.queued_notice_sent))
    .bind(c.open_escalation)
    .bind(c.last_buyer_ms)
    .bind(c.last_staff_ms)
    .bind(c.last_item.as_ref().map(|i| i.id.as_str()))
    .bind(c.last_item.as_ref().map(|i| i.title.as_str()))
    .bind(c.off_hours_notice_ms)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts a transcript line, with what routing decided when it is a buyer message; returns
/// its id.
async fn insert_transcript(
    conn: &mut PgConnection,
    entry: &TranscriptEntry,
    decision: Option<&DecisionRecord>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO transcript \
         (platform, self_id, user_id, direction, sender, message_id, body, parts, delivery, at_ms, \
         action, topic, rule, decided_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
    )
    .bind(&entry.key.platform)
    .bind(&entry.key.self_id)
    .bind(&entry.key.user_id)
    .bind(entry.direction.as_str())
    .bind(entry.sender.to_string())
    .bind(&entry.message_id)
    .bind(&entry.text)
    .bind(parts_json(&entry.parts))
    .bind(entry.delivery.map(Delivery::as_str))
    .bind(entry.at_ms)
    .bind(decision.map(|d| d.action.as_str()))
    .bind(decision.map(|d| d.topic.as_str()))
    .bind(decision.and_then(|d| d.rule.as_deref()))
    .bind(decision.map(|d| d.decided_by.as_str()))
    .fetch_one(&mut *conn)
    .await
}

async fn record_change(
    conn: &mut PgConnection,
    turn: &Turn,
    from: Option<ConversationState>,
    to: ConversationState,
) -> Result<(), sqlx::Error> {
    let key = turn.key();
    sqlx::query(
        "INSERT INTO state_changes \
         (platform, self_id, user_id, from_state, to_state, actor, reason, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.platform)
    .bind(&key.self_id)
    .bind(&key.user_id)
    .bind(from.map(ConversationState::as_str))
    .bind(to.as_str())
    .bind(turn.actor.to_string())
    .bind(&turn.reason)
    .bind(turn.conversation.state_since_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn apply_account(
    conn: &mut PgConnection,
    account: &AccountOp,
    op: &Op,
) -> Result<Reply, StoreError> {
    let db = |e| StoreError::query(op.describe(), e);
    match account {
        AccountOp::AddAgent {
            agent,
            password_hash,
        } => {
            let inserted = sqlx::query(
                "INSERT INTO agents (name, password_hash, role, shops, disabled, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&agent.name)
            .bind(password_hash)
            .bind(agent.role.as_str())
            .bind(agent.shops.join(" "))
            .bind(i64::from(agent.disabled))
            .bind(agent.created_ms)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            if inserted.rows_affected() == 0 {
                return Err(StoreError::AgentExists {
                    name: agent.name.clone(),
                });
            }
        }
        AccountOp::SetPassword {
            name,
            password_hash,
        } => {
            let updated = sqlx::query("UPDATE agents SET password_hash = $2 WHERE name = $1")
                .bind(name)
                .bind(password_hash)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::AgentNotFound { name: name.clone() });
            }
            end_sessions(conn, name).await.map_err(db)?;
        }
        AccountOp::SetDisabled { name, disabled } => {
            let updated = sqlx::query("UPDATE agents SET disabled = $2 WHERE name = $1")
                .bind(name)
                .bind(i64::from(*disabled))
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::AgentNotFound { name: name.clone() });
            }
            if *disabled {
                end_sessions(conn, name).await.map_err(db)?;
            }
        }
        AccountOp::CreateSession {
            token_hash,
            agent,
            csrf,
            at_ms,
        } => {
            sqlx::query(
                "INSERT INTO sessions (token_hash, agent, csrf, created_ms, last_seen_ms) \
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(token_hash)
            .bind(agent)
            .bind(csrf)
            .bind(at_ms)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        }
        AccountOp::TouchSession { token_hash, at_ms } => {
            // GREATEST is PostgreSQL's spelling of SQLite's two-argument MAX.
            sqlx::query(
                "UPDATE sessions SET last_seen_ms = GREATEST(last_seen_ms, $2) \
                 WHERE token_hash = $1",
            )
            .bind(token_hash)
            .bind(at_ms)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        }
        AccountOp::DeleteSession { token_hash } => {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(token_hash)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
        }
        AccountOp::ExpireSessions { before_ms } => {
            sqlx::query("DELETE FROM sessions WHERE last_seen_ms < $1")
                .bind(before_ms)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
        }
        AccountOp::AddNote(note) => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO notes \
                 (platform, self_id, user_id, escalation_id, author, kind, body, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(&note.key.platform)
            .bind(&note.key.self_id)
            .bind(&note.key.user_id)
            .bind(note.escalation)
            .bind(&note.author)
            .bind(note.kind.as_str())
            .bind(&note.body)
            .bind(note.at_ms)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
            return Ok(Reply::Created(id));
        }
        AccountOp::AddPhrase { agent, text, at_ms } => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO quick_phrases (agent, text, created_ms) VALUES ($1, $2, $3) \
                 RETURNING id",
            )
            .bind(agent)
            .bind(text)
            .bind(at_ms)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
            return Ok(Reply::Created(id));
        }
        AccountOp::DeletePhrase { agent, id } => {
            sqlx::query("DELETE FROM quick_phrases WHERE id = $1 AND agent = $2")
                .bind(id)
                .bind(agent)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
        }
    }
    Ok(Reply::Done)
}

async fn end_sessions(conn: &mut PgConnection, agent: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE agent = $1")
        .bind(agent)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
