//! The one task that writes.
//!
//! Requests arrive over a bounded channel. The writer takes everything that is waiting (up to
//! [`BATCH_CAP`]), applies it in one transaction, commits, and only then answers each request.
//! A burst of a thousand chats therefore costs a handful of commits, and a caller that awaits its
//! answer (an escalation, an inbound message id) knows its write is durable.
//!
//! If a batch fails at the database, it is rolled back and replayed one request per transaction,
//! so one bad row fails only its own request. Refusals (claiming a closed escalation, ...) are
//! decided before anything is written and do not fail the batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Row, SqliteExecutor};
use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;
use super::rows;
use crate::model::{
    Actor, Conversation, ConversationKey, ConversationState, Direction, Escalation,
    EscalationState, Sender, TranscriptEntry,
};

/// The most requests committed in one transaction.
pub(crate) const BATCH_CAP: usize = 256;

/// One write (or a barrier) for the writer.
#[derive(Debug)]
pub(crate) enum Op {
    RecordInbound {
        key: ConversationKey,
        message_id: String,
        sender: Sender,
        text: String,
        at_ms: i64,
    },
    Append(TranscriptEntry),
    Escalate {
        key: ConversationKey,
        queue: String,
        reason: String,
        rule: Option<String>,
        first_message: String,
        at_ms: i64,
    },
    SaveConversation {
        conversation: Conversation,
        actor: Actor,
        reason: String,
    },
    Claim {
        id: i64,
        agent: String,
        at_ms: i64,
    },
    Close {
        id: i64,
        agent: String,
        at_ms: i64,
    },
    /// Answered once everything sent before it is committed.
    Flush,
    /// Like `Flush`, then the writer stops taking requests and exits when the channel is empty.
    Shutdown,
    /// Fails at the database, to exercise the retry path.
    #[cfg(test)]
    FailForTest,
}

impl Op {
    /// What this request does, for error messages and logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Op::RecordInbound {
                key, message_id, ..
            } => format!("record inbound message {message_id} for {key}"),
            Op::Append(entry) => format!("append transcript line for {}", entry.key),
            Op::Escalate { key, queue, .. } => format!("escalate {key} to queue {queue}"),
            Op::SaveConversation { conversation, .. } => {
                format!("save conversation {}", conversation.key)
            }
            Op::Claim { id, agent, .. } => format!("claim escalation {id} for {agent}"),
            Op::Close { id, agent, .. } => format!("close escalation {id} for {agent}"),
            Op::Flush => "flush the store".to_owned(),
            Op::Shutdown => "close the store".to_owned(),
            #[cfg(test)]
            Op::FailForTest => "fail on purpose".to_owned(),
        }
    }
}

/// What a request produced.
#[derive(Debug)]
pub(crate) enum Reply {
    Inbound { new: bool },
    Escalated { id: i64 },
    Escalation(Box<Escalation>),
    Done,
}

/// A request and where to send its answer (`None`: nobody waits; failures are logged).
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) reply: Option<oneshot::Sender<Result<Reply, StoreError>>>,
}

/// Counters the writer keeps, readable from any handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) retried_batches: AtomicU64,
    pub(crate) failed_requests: AtomicU64,
}

/// Runs until the store is closed (an [`Op::Shutdown`]) or every sender is gone.
pub(crate) async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Request>,
    counters: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(BATCH_CAP);
    loop {
        if rx.recv_many(&mut batch, BATCH_CAP).await == 0 {
            break;
        }
        if batch.iter().any(|r| matches!(r.op, Op::Shutdown)) {
            // Refuse new requests but still drain (and commit) what is already queued.
            rx.close();
        }
        commit_batch(&mut conn, &mut batch, &counters).await;
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the store's writer connection failed");
    }
    tracing::debug!("store writer stopped");
}

async fn commit_batch(conn: &mut SqliteConnection, batch: &mut Vec<Request>, counters: &Counters) {
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters
        .requests
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let results = match apply_all(conn, batch).await {
        Ok(results) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            results
        }
        Err(e) if batch.len() == 1 => vec![Err(e)],
        Err(e) => {
            counters.retried_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = %e,
                requests = batch.len(),
                "store batch failed; retrying its requests one by one"
            );
            let mut results = Vec::with_capacity(batch.len());
            for request in batch.iter() {
                let result = apply_one(conn, &request.op).await;
                if !matches!(&result, Err(e) if e.is_database_failure()) {
                    counters.commits.fetch_add(1, Ordering::Relaxed);
                }
                results.push(result);
            }
            results
        }
    };
    let failed = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.is_database_failure()))
        .count();
    counters
        .failed_requests
        .fetch_add(failed as u64, Ordering::Relaxed);
    for (request, result) in batch.drain(..).zip(results) {
        match request.reply {
            Some(reply) => {
                // The caller may have given up waiting; that is not the writer's problem.
                let _ = reply.send(result);
            }
            None => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "store write lost");
                }
            }
        }
    }
}

/// Applies a whole batch in one transaction. `Err` means nothing was committed.
async fn apply_all(
    conn: &mut SqliteConnection,
    batch: &[Request],
) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| StoreError::query("begin a write transaction", e))?;
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        match apply(&mut tx, &request.op).await {
            Err(e) if e.is_database_failure() => {
                // Dropping `tx` rolls back.
                return Err(e);
            }
            result => results.push(result),
        }
    }
    tx.commit()
        .await
        .map_err(|e| StoreError::query(format!("commit a batch of {} writes", batch.len()), e))?;
    Ok(results)
}

/// Applies one request in its own transaction.
async fn apply_one(conn: &mut SqliteConnection, op: &Op) -> Result<Reply, StoreError> {
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| StoreError::query(format!("begin a transaction to {}", op.describe()), e))?;
    let reply = apply(&mut tx, op).await?;
    tx.commit()
        .await
        .map_err(|e| StoreError::query(format!("commit ({})", op.describe()), e))?;
    Ok(reply)
}

async fn apply(conn: &mut SqliteConnection, op: &Op) -> Result<Reply, StoreError> {
    let cx = || op.describe();
    match op {
        Op::RecordInbound {
            key,
            message_id,
            sender,
            text,
            at_ms,
        } => record_inbound(conn, key, message_id, sender, text, *at_ms)
            .await
            .map(|new| Reply::Inbound { new })
            .map_err(|e| StoreError::query(cx(), e)),
        Op::Append(entry) => insert_transcript(&mut *conn, entry)
            .await
            .map(|()| Reply::Done)
            .map_err(|e| StoreError::query(cx(), e)),
        Op::Escalate {
            key,
            queue,
            reason,
            rule,
            first_message,
            at_ms,
        } => {
            let new = NewEscalation {
                key,
                queue,
                reason,
                rule: rule.as_deref(),
                first_message,
                at_ms: *at_ms,
            };
            escalate(conn, &new)
                .await
                .map(|id| Reply::Escalated { id })
                .map_err(|e| StoreError::query(cx(), e))
        }
        Op::SaveConversation {
            conversation,
            actor,
            reason,
        } => save_conversation(conn, conversation, actor, reason)
            .await
            .map(|()| Reply::Done)
            .map_err(|e| StoreError::query(cx(), e)),
        Op::Claim { id, agent, at_ms } => claim(conn, *id, agent, *at_ms, op).await,
        Op::Close { id, agent, at_ms } => close(conn, *id, agent, *at_ms, op).await,
        Op::Flush | Op::Shutdown => Ok(Reply::Done),
        #[cfg(test)]
        Op::FailForTest => sqlx::query("SELECT * FROM no_such_table")
            .execute(&mut *conn)
            .await
            .map(|_| Reply::Done)
            .map_err(|e| StoreError::query(cx(), e)),
    }
}

/// Records a message id (and its transcript line) unless already recorded; `true` if new.
async fn record_inbound(
    conn: &mut SqliteConnection,
    key: &ConversationKey,
    message_id: &str,
    sender: &Sender,
    text: &str,
    at_ms: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbound_messages (platform, self_id, user_id, message_id, at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&key.platform)
    .bind(&key.self_id)
    .bind(&key.user_id)
    .bind(message_id)
    .bind(at_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    let entry = TranscriptEntry {
        key: key.clone(),
        direction: Direction::Inbound,
        sender: sender.clone(),
        message_id: Some(message_id.to_owned()),
        text: text.to_owned(),
        at_ms,
    };
    insert_transcript(&mut *conn, &entry).await?;
    Ok(true)
}

struct NewEscalation<'a> {
    key: &'a ConversationKey,
    queue: &'a str,
    reason: &'a str,
    rule: Option<&'a str>,
    first_message: &'a str,
    at_ms: i64,
}

/// Creates an open escalation and queues the conversation, or returns the live escalation's id.
async fn escalate(
    conn: &mut SqliteConnection,
    new: &NewEscalation<'_>,
) -> Result<i64, sqlx::Error> {
    let key = new.key;
    let live: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM escalations \
         WHERE platform = $1 AND self_id = $2 AND user_id = $3 AND state <> 'closed'",
    )
    .bind(&key.platform)
    .bind(&key.self_id)
    .bind(&key.user_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = live {
        return Ok(id);
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO escalations \
         (platform, self_id, user_id, queue, reason, rule, state, created_ms, first_message) \
         VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8) RETURNING id",
    )
    .bind(&key.platform)
    .bind(&key.self_id)
    .bind(&key.user_id)
    .bind(new.queue)
    .bind(new.reason)
    .bind(new.rule)
    .bind(new.at_ms)
    .bind(new.first_message)
    .fetch_one(&mut *conn)
    .await?;
    let why = format!("escalated to queue {}: {}", new.queue, new.reason);
    transition(
        &mut *conn,
        key,
        ConversationState::Queued,
        new.at_ms,
        &Actor::Bot,
        &why,
    )
    .await?;
    sqlx::query(
        "UPDATE conversations \
         SET open_escalation = $4, queued_notice_sent = 0, paused_until_ms = NULL \
         WHERE platform = $1 AND self_id = $2 AND user_id = $3",
    )
    .bind(&key.platform)
    .bind(&key.self_id)
    .bind(&key.user_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Upserts a conversation and records a state change if its state differs from the stored one.
async fn save_conversation(
    conn: &mut SqliteConnection,
    c: &Conversation,
    actor: &Actor,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let before = current_state(&mut *conn, &c.key).await?;
    sqlx::query(
        "INSERT INTO conversations (platform, self_id, user_id, state, state_since_ms, \
         paused_until_ms, greeted_at_ms, fallback_streak, queued_notice_sent, \
         open_escalation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (platform, self_id, user_id) DO UPDATE SET \
         state = excluded.state, state_since_ms = excluded.state_since_ms, \
         paused_until_ms = excluded.paused_until_ms, \
         greeted_at_ms = excluded.greeted_at_ms, \
         fallback_streak = excluded.fallback_streak, \
         queued_notice_sent = excluded.queued_notice_sent, \
         open_escalation = excluded.open_escalation",
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
    .execute(&mut *conn)
    .await?;
    if before.as_deref() != Some(c.state.as_str()) {
        record_change(
            &mut *conn,
            &c.key,
            before.as_deref(),
            c.state,
            actor,
            reason,
            c.state_since_ms,
        )
        .await?;
    }
    Ok(())
}

/// An agent claims an escalation; its conversation goes to `human`. Refusals are decided before
/// anything is written.
async fn claim(
    conn: &mut SqliteConnection,
    id: i64,
    agent: &str,
    at_ms: i64,
    op: &Op,
) -> Result<Reply, StoreError> {
    let escalation = find_escalation(&mut *conn, id, op).await?;
    match (escalation.state, escalation.claimed_by.as_deref()) {
        (EscalationState::Closed, _) => return Err(StoreError::EscalationClosed { id }),
        (EscalationState::Claimed, Some(holder)) if holder == agent => {
            return Ok(Reply::Escalation(Box::new(escalation)));
        }
        (EscalationState::Claimed, holder) => {
            return Err(StoreError::AlreadyClaimed {
                id,
                agent: holder.unwrap_or("someone").to_owned(),
            });
        }
        _ => {}
    }
    let write = async {
        sqlx::query(
            "UPDATE escalations SET state = 'claimed', claimed_by = $2, claimed_ms = $3 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(agent)
        .bind(at_ms)
        .execute(&mut *conn)
        .await?;
        transition(
            &mut *conn,
            &escalation.key,
            ConversationState::Human,
            at_ms,
            &Actor::Agent(agent.to_owned()),
            &format!("claimed escalation {id}"),
        )
        .await
    };
    write
        .await
        .map_err(|e| StoreError::query(op.describe(), e))?;
    Ok(Reply::Escalation(Box::new(Escalation {
        state: EscalationState::Claimed,
        claimed_by: Some(agent.to_owned()),
        ..escalation
    })))
}

/// Closes an escalation; its conversation goes back to `bot` with streak, notice and pause reset.
async fn close(
    conn: &mut SqliteConnection,
    id: i64,
    agent: &str,
    at_ms: i64,
    op: &Op,
) -> Result<Reply, StoreError> {
    let escalation = find_escalation(&mut *conn, id, op).await?;
    if escalation.state == EscalationState::Closed {
        return Err(StoreError::EscalationClosed { id });
    }
    let key = &escalation.key;
    let write = async {
        sqlx::query(
            "UPDATE escalations SET state = 'closed', closed_by = $2, closed_ms = $3 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(agent)
        .bind(at_ms)
        .execute(&mut *conn)
        .await?;
        transition(
            &mut *conn,
            key,
            ConversationState::Bot,
            at_ms,
            &Actor::Agent(agent.to_owned()),
            &format!("closed escalation {id}"),
        )
        .await?;
        sqlx::query(
            "UPDATE conversations SET open_escalation = NULL, queued_notice_sent = 0, \
             fallback_streak = 0, paused_until_ms = NULL \
             WHERE platform = $1 AND self_id = $2 AND user_id = $3",
        )
        .bind(&key.platform)
        .bind(&key.self_id)
        .bind(&key.user_id)
        .execute(&mut *conn)
        .await
    };
    write
        .await
        .map_err(|e| StoreError::query(op.describe(), e))?;
    Ok(Reply::Escalation(Box::new(Escalation {
        state: EscalationState::Closed,
        ..escalation
    })))
}

async fn insert_transcript<'e>(
    conn: impl SqliteExecutor<'e>,
    entry: &TranscriptEntry,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO transcript \
         (platform, self_id, user_id, direction, sender, message_id, body, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&entry.key.platform)
    .bind(&entry.key.self_id)
    .bind(&entry.key.user_id)
    .bind(entry.direction.as_str())
    .bind(entry.sender.to_string())
    .bind(&entry.message_id)
    .bind(&entry.text)
    .bind(entry.at_ms)
    .execute(conn)
    .await?;
    Ok(())
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

async fn current_state(
    conn: &mut SqliteConnection,
    key: &ConversationKey,
) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT state FROM conversations WHERE platform = $1 AND self_id = $2 AND user_id = $3",
    )
    .bind(&key.platform)
    .bind(&key.self_id)
    .bind(&key.user_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| r.try_get("state")).transpose()
}

/// Moves a conversation to `to` (creating its row if needed) and records who did it, unless it
/// is already there.
async fn transition(
    conn: &mut SqliteConnection,
    key: &ConversationKey,
    to: ConversationState,
    at_ms: i64,
    actor: &Actor,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let before = current_state(&mut *conn, key).await?;
    if before.as_deref() == Some(to.as_str()) {
        return Ok(());
    }
    if before.is_some() {
        sqlx::query(
            "UPDATE conversations SET state = $4, state_since_ms = $5 \
             WHERE platform = $1 AND self_id = $2 AND user_id = $3",
        )
        .bind(&key.platform)
        .bind(&key.self_id)
        .bind(&key.user_id)
        .bind(to.as_str())
        .bind(at_ms)
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query(
            "INSERT INTO conversations (platform, self_id, user_id, state, state_since_ms, \
             fallback_streak, queued_notice_sent) VALUES ($1, $2, $3, $4, $5, 0, 0)",
        )
        .bind(&key.platform)
        .bind(&key.self_id)
        .bind(&key.user_id)
        .bind(to.as_str())
        .bind(at_ms)
        .execute(&mut *conn)
        .await?;
    }
    record_change(conn, key, before.as_deref(), to, actor, reason, at_ms).await
}

async fn record_change(
    conn: &mut SqliteConnection,
    key: &ConversationKey,
    from: Option<&str>,
    to: ConversationState,
    actor: &Actor,
    reason: &str,
    at_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO state_changes \
         (platform, self_id, user_id, from_state, to_state, actor, reason, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.platform)
    .bind(&key.self_id)
    .bind(&key.user_id)
    .bind(from)
    .bind(to.as_str())
    .bind(actor.to_string())
    .bind(reason)
    .bind(at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::ConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;

    fn request(op: Op) -> (Request, oneshot::Receiver<Result<Reply, StoreError>>) {
        let (tx, rx) = oneshot::channel();
        (
            Request {
                op,
                reply: Some(tx),
            },
            rx,
        )
    }

    fn inbound(id: &str) -> Op {
        Op::RecordInbound {
            key: ConversationKey::new("qq", "s", "u"),
            message_id: id.to_owned(),
            sender: Sender::Buyer,
            text: format!("text of {id}"),
            at_ms: 1,
        }
    }

    #[tokio::test]
    async fn a_failing_request_fails_alone_and_the_rest_of_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        super::super::MIGRATOR.run(&mut conn).await.unwrap();
        let counters = Counters::default();

        let (a, a_rx) = request(inbound("m1"));
        let (bad, bad_rx) = request(Op::FailForTest);
        let (b, b_rx) = request(inbound("m2"));
        let (dup, dup_rx) = request(inbound("m1"));
        let mut batch = vec![a, bad, b, dup];
        commit_batch(&mut conn, &mut batch, &counters).await;
        assert!(batch.is_empty());

        assert!(matches!(
            a_rx.await.unwrap(),
            Ok(Reply::Inbound { new: true })
        ));
        let err = bad_rx.await.unwrap().unwrap_err();
        assert!(
            err.to_string().starts_with("cannot fail on purpose: "),
            "{err}"
        );
        assert!(matches!(
            b_rx.await.unwrap(),
            Ok(Reply::Inbound { new: true })
        ));
        // Replayed one by one, the duplicate is still recognised as one.
        assert!(matches!(
            dup_rx.await.unwrap(),
            Ok(Reply::Inbound { new: false })
        ));

        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transcript")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows, 2);
        assert_eq!(counters.retried_batches.load(Ordering::Relaxed), 1);
        assert_eq!(counters.failed_requests.load(Ordering::Relaxed), 1);
        assert_eq!(counters.commits.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_good_batch_is_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        super::super::MIGRATOR.run(&mut conn).await.unwrap();
        let counters = Counters::default();
        let mut receivers = Vec::new();
        let mut batch = Vec::new();
        for i in 0..100 {
            let (r, rx) = request(inbound(&format!("m{i}")));
            batch.push(r);
            receivers.push(rx);
        }
        commit_batch(&mut conn, &mut batch, &counters).await;
        for rx in receivers {
            assert!(matches!(
                rx.await.unwrap(),
                Ok(Reply::Inbound { new: true })
            ));
        }
        assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
        assert_eq!(counters.requests.load(Ordering::Relaxed), 100);
    }
}
