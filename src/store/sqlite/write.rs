//! The SQL of every write, on the writer's one connection.
//!
//! A turn first checks everything that can refuse it (a stale conversation version, an
//! escalation in the wrong state, a message id the chat already has) and only then writes, so a
//! refused turn leaves nothing behind even inside a batch that commits.

use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Row, SqliteExecutor};

use super::rows;
use crate::model::{
    Actor, ConversationKey, ConversationState, Delivery, Direction, Escalation, EscalationEvent,
    EscalationState, Queue, TranscriptEntry,
};
use crate::store::StoreError;
use crate::store::ops::{
    AccountOp, DecisionRecord, EscalationStep, InboundLine, Op, Reply, Turn, TurnOutcome,
};

/// The writer's side of a SQLite store.
pub(crate) struct SqliteWriter {
    pub(crate) conn: SqliteConnection,
    pub(crate) path: std::path::PathBuf,
    /// The database file's inode at open; `None` where it cannot be read.
    pub(crate) inode: Option<u64>,
}

impl crate::store::writer::Backend for SqliteWriter {
    async fn apply_batch(
        &mut self,
        ops: &[&Op],
    ) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
        if self.inode.is_some() && super::inode_of(&self.path) != self.inode {
            // The connection would go on writing to a file nobody can open again.
            return Err(StoreError::Vanished {
                path: self.path.clone(),
            });
        }
        let result = apply_all(&mut self.conn, ops).await;
        if result.is_err() {
            // A failed COMMIT (a full disk) can leave the transaction open; a connection stuck
            // in it would report later batches as committed while writing nothing.
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        }
        result
    }

    async fn limit_pages(&mut self, pages: u32) {
        let _ = sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
            .execute(&mut self.conn)
            .await;
    }

    async fn close(self) {
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %e, "closing the store's writer connection failed");
        }
    }
}

async fn apply_all(
    conn: &mut SqliteConnection,
    ops: &[&Op],
) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
    // IMMEDIATE takes the write lock up front, so the version checks below read what the
    // transaction's writes will be based on, even with another process writing.
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| StoreError::query("begin a write transaction", e))?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        match apply(&mut tx, op).await {
            Err(e) if e.is_database_failure() => return Err(e),
            result => results.push(result),
        }
    }
    tx.commit()
        .await
        .map_err(|e| StoreError::query(format!("commit a batch of {} writes", ops.len()), e))?;
    Ok(results)
}

async fn apply(conn: &mut SqliteConnection, op: &Op) -> Result<Reply, StoreError> {
    let cx = || op.describe();
    match op {
        Op::Turn(turn) => apply_turn(conn, turn, op).await.map(Reply::Turn),
        Op::Account(account) => apply_account(conn, account, op).await,
        Op::Outbox(change) => super::outbox::apply(conn, change)
            .await
            .map(|written| Reply::Created(i64::from(written)))
            .map_err(|e| StoreError::query(cx(), e)),
        Op::ClockWarning(warning) => super::clock::warn(conn, warning)
            .await
            .map(|written| Reply::Created(i64::from(written)))
            .map_err(|e| StoreError::query(cx(), e)),
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
        .map_err(|e| StoreError::query(cx(), e)),
        Op::Append(entry) => insert_transcript(&mut *conn, entry, None)
            .await
            .map(|_| Reply::Done)
            .map_err(|e| StoreError::query(cx(), e)),
        Op::Flush | Op::Shutdown => Ok(Reply::Done),
        #[cfg(test)]
        Op::FailForTest => sqlx::query("SELECT * FROM no_such_table")
            .execute(&mut *conn)
            .await
            .map(|_| Reply::Done)
            .map_err(|e| StoreError::query(cx(), e)),
    }
}

async fn apply_turn(
    conn: &mut SqliteConnection,
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
            let state: String = row.try_get("state").map_err(db)?;
            let version: i64 = row.try_get("version").map_err(db)?;
            (
                Some(rows::parse::<ConversationState>(
                    &state,
                    "reading a conversation",
                )?),
                version,
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
            &mut *conn,
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
        outbound.push(
            insert_transcript(&mut *conn, &entry, None)
                .await
                .map_err(db)?,
        );
    }
    Ok(TurnOutcome::Applied {
        version,
        escalation: escalation_id,
        outbound,
    })
}

/// Refuses a step on an escalation that is not in a state it applies to.
async fn check_step(
    conn: &mut SqliteConnection,
    id: i64,
    turn: &Turn,
    step: &EscalationStep,
    op: &Op,
) -> Result<Escalation, StoreError> {
    let escalation = find_escalation(conn, id, op).await?;
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
    conn: &mut SqliteConnection,
    turn: &Turn,
    step: &EscalationStep,
    found: Option<Escalation>,
) -> Result<i64, sqlx::Error> {
    let key = turn.key();
    let at = turn.at_ms;
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
                 (platform, self_id, user_id, queue, reason, rule, state, created_ms, first_message) \
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
                 claimed_ms = CASE WHEN $4 IS NULL THEN NULL ELSE $5 END WHERE id = $1",
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
            .bind(turn.actor.to_string())
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
    .bind(turn.actor.to_string())
    .bind(&turn.reason)
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(notify) = notify {
        enqueue_notification(
            &mut *conn,
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
    conn: &mut SqliteConnection,
    key: &str,
    event: &str,
    id: i64,
    detail: &str,
    at_ms: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO outbox \
         (key, event, platform, self_id, user_id, queue, escalation_id, first_message, detail, at_ms) \
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
    .await?
    .rows_affected();
    Ok(inserted > 0)
}

fn queue_of(escalation: Option<&Escalation>) -> Queue {
    escalation.map_or(Queue::Human, |e| e.queue)
}

/// Records a message id unless the chat already has it; `true` if new.
async fn insert_inbound_id(
    conn: &mut SqliteConnection,
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
    .await?
    .rows_affected();
    Ok(inserted > 0)
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
    conn: &mut SqliteConnection,
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
pub(crate) async fn insert_transcript<'e>(
    conn: impl SqliteExecutor<'e>,
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
    .bind(rows::parts_json(&entry.parts))
    .bind(entry.delivery.map(Delivery::as_str))
    .bind(entry.at_ms)
    .bind(decision.map(|d| d.action.as_str()))
    .bind(decision.map(|d| d.topic.as_str()))
    .bind(decision.and_then(|d| d.rule.as_deref()))
    .bind(decision.map(|d| d.decided_by.as_str()))
    .fetch_one(conn)
    .await
}

async fn find_escalation(
    conn: &mut SqliteConnection,
    id: i64,
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
    match row {
        Some(row) => rows::escalation(&row),
        None => Err(StoreError::EscalationNotFound { id }),
    }
}

async fn record_change(
    conn: &mut SqliteConnection,
    turn: &Turn,
    from: Option<ConversationState>,
    to: ConversationState,
) -> Result<(), sqlx::Error> {
    let key = turn.key();
    let actor: &Actor = &turn.actor;
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
    .bind(actor.to_string())
    .bind(&turn.reason)
    .bind(turn.conversation.state_since_ms)
    .execute(conn)
    .await?;
    Ok(())
}

async fn apply_account(
    conn: &mut SqliteConnection,
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
            .map_err(db)?
            .rows_affected();
            if inserted == 0 {
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
                .map_err(db)?
                .rows_affected();
            if updated == 0 {
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
                .map_err(db)?
                .rows_affected();
            if updated == 0 {
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
            sqlx::query(
                "UPDATE sessions SET last_seen_ms = MAX(last_seen_ms, $2) WHERE token_hash = $1",
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

async fn end_sessions(conn: &mut SqliteConnection, agent: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE agent = $1")
        .bind(agent)
        .execute(conn)
        .await?;
    Ok(())
}
