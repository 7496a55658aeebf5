//! The SQL of agents' commands across instances: an instance whose console gets an agent's
//! reply or action on a chat of a shop another instance answers writes it to `agent_commands`
//! and wakes the others (`NOTIFY xiaoer_commands`); the shop's owner takes it, carries it out
//! through the chat's worker, and writes the outcome back for the first instance to read.

use sqlx::PgPool;
use sqlx::postgres::PgRow;

use super::rows;
use crate::model::{ConversationKey, Queue};
use crate::store::StoreError;

/// The channel owners listen on.
pub const CHANNEL: &str = "xiaoer_commands";

/// What an agent asked for, as it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteAction {
    Reply { text: String },
    Claim,
    Release,
    Resolve { outcome: Option<String> },
    HandBack,
    Transfer { queue: Queue, agent: Option<String> },
    LeaseExpired,
}

/// One agent's command for the owner of a chat's shop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteCommand {
    pub id: i64,
    pub key: ConversationKey,
    /// Who acts (`system` for a lapsed claim).
    pub agent: String,
    pub escalation_id: Option<i64>,
    pub action: RemoteAction,
}

/// How a command ended, as the owner wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    /// `ok`, `conflict`, `unavailable`, `not_delivered` or `failed`.
    pub outcome: String,
    /// A sent reply's message id, or what went wrong, in words.
    pub result: Option<String>,
}

fn parts(action: &RemoteAction) -> (&'static str, Option<&str>, Option<&str>, Option<&str>) {
    match action {
        RemoteAction::Reply { text } => ("reply", Some(text), None, None),
        RemoteAction::Claim => ("claim", None, None, None),
        RemoteAction::Release => ("release", None, None, None),
        RemoteAction::Resolve { outcome } => ("resolve", outcome.as_deref(), None, None),
        RemoteAction::HandBack => ("hand_back", None, None, None),
        RemoteAction::Transfer { queue, agent } => {
            ("transfer", None, Some(queue.as_str()), agent.as_deref())
        }
        RemoteAction::LeaseExpired => ("lease_expired", None, None, None),
    }
}

/// Writes a command and wakes the owners; returns its id.
pub(crate) async fn submit(
    pool: &PgPool,
    key: &ConversationKey,
    agent: &str,
    escalation_id: Option<i64>,
    action: &RemoteAction,
    requested_by: &str,
    at_ms: i64,
) -> Result<i64, StoreError> {
    let (kind, body, queue, to_agent) = parts(action);
    let cx = |e| {
        StoreError::query(
            format!("hand an agent's {kind} in chat {key} to the instance answering its shop"),
            e,
        )
    };
    let mut tx = pool.begin().await.map_err(cx)?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO agent_commands (platform, self_id, user_id, kind, agent, escalation_id, \
         body, queue, to_agent, created_ms, requested_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(&key.platform)
    .bind(&key.self_id)
    .bind(&key.user_id)
    .bind(kind)
    .bind(agent)
    .bind(escalation_id)
    .bind(body)
    .bind(queue)
    .bind(to_agent)
    .bind(at_ms)
    .bind(requested_by)
    .fetch_one(&mut *tx)
    .await
    .map_err(cx)?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(cx)?;
    tx.commit().await.map_err(cx)?;
    Ok(id)
}

/// The outcome of command `id`, once its owner wrote one.
pub(crate) async fn outcome(pool: &PgPool, id: i64) -> Result<Option<CommandOutcome>, StoreError> {
    let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT outcome, result FROM agent_commands WHERE id = $1 AND done_ms IS NOT NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(|e| StoreError::query(format!("read the outcome of agent command {id}"), e))?;
    Ok(row.map(|(outcome, result)| CommandOutcome {
        outcome: outcome.unwrap_or_else(|| "failed".to_owned()),
        result,
    }))
}

/// Takes the waiting commands for the shops `owner` holds now, oldest first.
pub(crate) async fn take(pool: &PgPool, owner: &str) -> Result<Vec<RemoteCommand>, StoreError> {
    let rows = sqlx::query(&format!(
        "UPDATE agent_commands c SET taken_by = $1 \
         FROM (SELECT a.id FROM agent_commands a JOIN shop_leases l \
                 ON l.platform = a.platform AND l.self_id = a.self_id \
               WHERE a.done_ms IS NULL AND a.taken_by IS NULL AND l.owner = $1 \
                 AND l.expires_ms > {} \
               ORDER BY a.id FOR UPDATE OF a SKIP LOCKED) waiting \
         WHERE c.id = waiting.id \
         RETURNING c.id, c.platform, c.self_id, c.user_id, c.kind, c.agent, c.escalation_id, \
                   c.body, c.queue, c.to_agent",
        super::lease::SERVER_NOW_MS
    ))
    .bind(owner)
    .fetch_all(pool)
    .await
    .map_err(|e| StoreError::query("take the agents' commands for this instance's shops", e))?;
    let mut commands: Vec<RemoteCommand> = rows.iter().filter_map(command).collect();
    commands.sort_by_key(|c| c.id);
    Ok(commands)
}

/// Records how command `id` ended.
pub(crate) async fn finish(
    pool: &PgPool,
    id: i64,
    outcome: &CommandOutcome,
    at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE agent_commands SET done_ms = $2, outcome = $3, result = $4 WHERE id = $1")
        .bind(id)
        .bind(at_ms)
        .bind(&outcome.outcome)
        .bind(&outcome.result)
        .execute(pool)
        .await
        .map_err(|e| StoreError::query(format!("record the outcome of agent command {id}"), e))?;
    Ok(())
}

/// A stored command; `None` for a kind this version does not know (it stays for a newer one).
fn command(row: &PgRow) -> Option<RemoteCommand> {
    const CX: &str = "reading an agent command";
    let kind: String = rows::get(row, "kind", CX).ok()?;
    let body: Option<String> = rows::get(row, "body", CX).ok()?;
    let action = match kind.as_str() {
        "reply" => RemoteAction::Reply {
            text: body.unwrap_or_default(),
        },
        "claim" => RemoteAction::Claim,
        "release" => RemoteAction::Release,
        "resolve" => RemoteAction::Resolve { outcome: body },
        "hand_back" => RemoteAction::HandBack,
        "transfer" => RemoteAction::Transfer {
            queue: rows::get::<Option<String>>(row, "queue", CX)
                .ok()??
                .parse()
                .ok()?,
            agent: rows::get(row, "to_agent", CX).ok()?,
        },
        "lease_expired" => RemoteAction::LeaseExpired,
        _ => return None,
    };
    Some(RemoteCommand {
        id: rows::get(row, "id", CX).ok()?,
        key: rows::key(row, CX).ok()?,
        agent: rows::get(row, "agent", CX).ok()?,
        escalation_id: rows::get(row, "escalation_id", CX).ok()?,
        action,
    })
}
