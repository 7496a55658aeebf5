//! The SQL of every read, on the pool; each statement sees everything committed before it
//! started (PostgreSQL's read committed). The statements are the SQLite reader's.

use sqlx::Row;
use sqlx::postgres::PgPool;

use super::rows;
use crate::model::{
    Agent, Conversation, ConversationKey, Escalation, EscalationEvent, Note, TranscriptEntry,
};
use crate::store::{EscalationRecord, QuickPhrase, Session, StateChange, StoreError};

pub(crate) struct PgReader {
    pub(crate) pool: PgPool,
}

impl PgReader {
    pub(crate) async fn conversation(
        &self,
        key: &ConversationKey,
    ) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM conversations WHERE platform = $1 AND self_id = $2 AND user_id = $3",
            rows::CONVERSATION_COLUMNS
        ))
        .bind(&key.platform)
        .bind(&key.self_id)
        .bind(&key.user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::query(format!("read conversation {key}"), e))?;
        row.as_ref().map(rows::conversation).transpose()
    }

    pub(crate) async fn escalations(
        &self,
        include_closed: bool,
    ) -> Result<Vec<Escalation>, StoreError> {
        let filter = if include_closed {
            ""
        } else {
            "WHERE state <> 'closed'"
        };
        let rows = sqlx::query(&format!(
            "SELECT {} FROM escalations {filter} ORDER BY created_ms, id",
            rows::ESCALATION_COLUMNS
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query("list escalations", e))?;
        rows.iter().map(rows::escalation).collect()
    }

    pub(crate) async fn escalations_of(
        &self,
        key: &ConversationKey,
    ) -> Result<Vec<Escalation>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM escalations WHERE platform = $1 AND self_id = $2 AND user_id = $3 \
             ORDER BY created_ms, id",
            rows::ESCALATION_COLUMNS
        ))
        .bind(&key.platform)
        .bind(&key.self_id)
        .bind(&key.user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query(format!("list the escalations of {key}"), e))?;
        rows.iter().map(rows::escalation).collect()
    }

    pub(crate) async fn escalation(&self, id: i64) -> Result<Option<Escalation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM escalations WHERE id = $1",
            rows::ESCALATION_COLUMNS
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::query(format!("read escalation {id}"), e))?;
        row.as_ref().map(rows::escalation).transpose()
    }

    pub(crate) async fn escalation_history(
        &self,
        id: i64,
    ) -> Result<Vec<EscalationRecord>, StoreError> {
        const CX: &str = "reading an escalation's history";
        let rows = sqlx::query(
            "SELECT kind, queue, actor, detail, at_ms FROM escalation_events \
             WHERE escalation_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query(format!("read the history of escalation {id}"), e))?;
        rows.iter()
            .map(|row| {
                let get = |column: &str| -> Result<String, StoreError> {
                    row.try_get(column).map_err(|e| StoreError::query(CX, e))
                };
                let kind = get("kind")?;
                Ok(EscalationRecord {
                    kind: match kind.as_str() {
                        "opened" => EscalationEvent::Opened,
                        "raised" => EscalationEvent::Raised,
                        "claimed" => EscalationEvent::Claimed,
                        "released" => EscalationEvent::Released,
                        "transferred" => EscalationEvent::Transferred,
                        "closed" => EscalationEvent::Closed,
                        other => {
                            return Err(StoreError::Corrupt {
                                context: CX.to_owned(),
                                detail: format!("unknown escalation event {other:?}"),
                            });
                        }
                    },
                    queue: rows::parse(&get("queue")?, CX)?,
                    actor: rows::parse(&get("actor")?, CX)?,
                    detail: get("detail")?,
                    at_ms: row.try_get("at_ms").map_err(|e| StoreError::query(CX, e))?,
                })
            })
            .collect()
    }

    pub(crate) async fn transcript(
        &self,
        key: &ConversationKey,
        limit: u32,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM transcript WHERE platform = $1 AND self_id = $2 AND user_id = $3 \
             ORDER BY at_ms DESC, id DESC LIMIT $4",
            rows::TRANSCRIPT_COLUMNS
        ))
        .bind(&key.platform)
        .bind(&key.self_id)
        .bind(&key.user_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query(format!("read transcript of {key}"), e))?;
        let mut entries = rows
            .iter()
            .map(rows::transcript_entry)
            .collect::<Result<Vec<_>, _>>()?;
        entries.reverse();
        Ok(entries)
    }

    pub(crate) async fn state_history(
        &self,
        key: &ConversationKey,
    ) -> Result<Vec<StateChange>, StoreError> {
        const CX: &str = "reading a conversation's state history";
        let rows = sqlx::query(
            "SELECT from_state, to_state, actor, reason, at_ms FROM state_changes \
             WHERE platform = $1 AND self_id = $2 AND user_id = $3 ORDER BY at_ms, id",
        )
        .bind(&key.platform)
        .bind(&key.self_id)
        .bind(&key.user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query(format!("read state history of {key}"), e))?;
        rows.iter()
            .map(|row| {
                let db = |e| StoreError::query(CX, e);
                let from: Option<String> = row.try_get("from_state").map_err(db)?;
                let to: String = row.try_get("to_state").map_err(db)?;
                let actor: String = row.try_get("actor").map_err(db)?;
                Ok(StateChange {
                    from: from.map(|s| rows::parse(&s, CX)).transpose()?,
                    to: rows::parse(&to, CX)?,
                    actor: rows::parse(&actor, CX)?,
                    reason: row.try_get("reason").map_err(db)?,
                    at_ms: row.try_get("at_ms").map_err(db)?,
                })
            })
            .collect()
    }

    pub(crate) async fn agent(&self, name: &str) -> Result<Option<(Agent, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT name, role, shops, disabled, created_ms, password_hash FROM agents \
             WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::query(format!("read agent {name}"), e))?;
        row.as_ref()
            .map(|row| {
                let hash: String = row
                    .try_get("password_hash")
                    .map_err(|e| StoreError::query("read an agent", e))?;
                Ok((rows::agent(row)?, hash))
            })
            .transpose()
    }

    pub(crate) async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        let rows =
            sqlx::query("SELECT name, role, shops, disabled, created_ms FROM agents ORDER BY name")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| StoreError::query("list agents", e))?;
        rows.iter().map(rows::agent).collect()
    }

    pub(crate) async fn session(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        const CX: &str = "reading a console session";
        let row = sqlx::query(
            "SELECT agent, csrf, created_ms, last_seen_ms FROM sessions WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::query(CX, e))?;
        row.map(|row| {
            let db = |e| StoreError::query(CX, e);
            Ok(Session {
                agent: row.try_get("agent").map_err(db)?,
                csrf: row.try_get("csrf").map_err(db)?,
                created_ms: row.try_get("created_ms").map_err(db)?,
                last_seen_ms: row.try_get("last_seen_ms").map_err(db)?,
            })
        })
        .transpose()
    }

    pub(crate) async fn notes(&self, key: &ConversationKey) -> Result<Vec<Note>, StoreError> {
        let rows = sqlx::query(
            "SELECT platform, self_id, user_id, escalation_id, author, kind, body, at_ms \
             FROM notes WHERE platform = $1 AND self_id = $2 AND user_id = $3 ORDER BY at_ms, id",
        )
        .bind(&key.platform)
        .bind(&key.self_id)
        .bind(&key.user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query(format!("read the notes of {key}"), e))?;
        rows.iter().map(rows::note).collect()
    }

    pub(crate) async fn phrases(&self, agent: &str) -> Result<Vec<QuickPhrase>, StoreError> {
        const CX: &str = "reading quick phrases";
        let rows = sqlx::query("SELECT id, text FROM quick_phrases WHERE agent = $1 ORDER BY id")
            .bind(agent)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::query(CX, e))?;
        rows.iter()
            .map(|row| {
                let db = |e| StoreError::query(CX, e);
                Ok(QuickPhrase {
                    id: row.try_get("id").map_err(db)?,
                    text: row.try_get("text").map_err(db)?,
                })
            })
            .collect()
    }

    pub(crate) async fn schema_version(&self) -> Result<i64, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| StoreError::query("read the schema version", e))?;
        Ok(found.unwrap_or(0))
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}
