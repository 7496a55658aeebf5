//! Turning PostgreSQL rows into the domain's records. Shared by the reader and the writer.
//!
//! The columns and their meaning are SQLite's (see `sqlite/rows.rs`, whose column lists and
//! parsing this reuses): flags are 0/1 BIGINTs, times unix ms, message parts JSON text.

use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::model::{
    Agent, Conversation, ConversationKey, Escalation, ItemRef, Note, Part, TranscriptEntry,
};
use crate::store::StoreError;
pub(crate) use crate::store::sqlite::rows::{
    CONVERSATION_COLUMNS, ESCALATION_COLUMNS, TRANSCRIPT_COLUMNS, parse,
};

pub(crate) fn get<'r, T>(row: &'r PgRow, column: &str, context: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column)
        .map_err(|e| StoreError::query(format!("read column {column} while {context}"), e))
}

pub(crate) fn key(row: &PgRow, context: &str) -> Result<ConversationKey, StoreError> {
    Ok(ConversationKey {
        platform: get(row, "platform", context)?,
        self_id: get(row, "self_id", context)?,
        user_id: get(row, "user_id", context)?,
    })
}

pub(crate) fn conversation(row: &PgRow) -> Result<Conversation, StoreError> {
    const CX: &str = "reading a conversation";
    let state: String = get(row, "state", CX)?;
    let item_id: Option<String> = get(row, "last_item_id", CX)?;
    let item_title: Option<String> = get(row, "last_item_title", CX)?;
    Ok(Conversation {
        key: key(row, CX)?,
        state: parse(&state, CX)?,
        state_since_ms: get(row, "state_since_ms", CX)?,
        paused_until_ms: get(row, "paused_until_ms", CX)?,
        greeted_at_ms: get(row, "greeted_at_ms", CX)?,
        fallback_streak: get(row, "fallback_streak", CX)?,
        queued_notice_sent: get::<i64>(row, "queued_notice_sent", CX)? != 0,
        open_escalation: get(row, "open_escalation", CX)?,
        last_buyer_ms: get(row, "last_buyer_ms", CX)?,
        last_staff_ms: get(row, "last_staff_ms", CX)?,
        last_item: item_id.map(|id| ItemRef {
            id,
            title: item_title.unwrap_or_default(),
        }),
        off_hours_notice_ms: get(row, "off_hours_notice_ms", CX)?,
        version: get(row, "version", CX)?,
    })
}

pub(crate) fn escalation(row: &PgRow) -> Result<Escalation, StoreError> {
    const CX: &str = "reading an escalation";
    Ok(Escalation {
        id: get(row, "id", CX)?,
        key: key(row, CX)?,
        queue: parse(&get::<String>(row, "queue", CX)?, CX)?,
        reason: get(row, "reason", CX)?,
        rule: get(row, "rule", CX)?,
        state: parse(&get::<String>(row, "state", CX)?, CX)?,
        created_ms: get(row, "created_ms", CX)?,
        claimed_by: get(row, "claimed_by", CX)?,
        claimed_ms: get(row, "claimed_ms", CX)?,
        first_message: get(row, "first_message", CX)?,
        closed_by: get(row, "closed_by", CX)?,
        outcome: get(row, "outcome", CX)?,
    })
}

pub(crate) fn transcript_entry(row: &PgRow) -> Result<TranscriptEntry, StoreError> {
    const CX: &str = "reading a transcript line";
    let direction: String = get(row, "direction", CX)?;
    let sender: String = get(row, "sender", CX)?;
    let parts: Option<String> = get(row, "parts", CX)?;
    let delivery: Option<String> = get(row, "delivery", CX)?;
    Ok(TranscriptEntry {
        key: key(row, CX)?,
        direction: parse(&direction, CX)?,
        sender: parse(&sender, CX)?,
        message_id: get(row, "message_id", CX)?,
        text: get(row, "body", CX)?,
        parts: match parts {
            None => Vec::new(),
            Some(json) => {
                serde_json::from_str::<Vec<Part>>(&json).map_err(|e| StoreError::Corrupt {
                    context: CX.to_owned(),
                    detail: format!("message parts are not readable: {e}"),
                })?
            }
        },
        delivery: delivery.map(|d| parse(&d, CX)).transpose()?,
        at_ms: get(row, "at_ms", CX)?,
    })
}

pub(crate) fn agent(row: &PgRow) -> Result<Agent, StoreError> {
    const CX: &str = "reading an agent";
    let shops: String = get(row, "shops", CX)?;
    Ok(Agent {
        name: get(row, "name", CX)?,
        role: parse(&get::<String>(row, "role", CX)?, CX)?,
        shops: shops.split_whitespace().map(str::to_owned).collect(),
        disabled: get::<i64>(row, "disabled", CX)? != 0,
        created_ms: get(row, "created_ms", CX)?,
    })
}

pub(crate) fn note(row: &PgRow) -> Result<Note, StoreError> {
    const CX: &str = "reading a note";
    Ok(Note {
        key: key(row, CX)?,
        escalation: get(row, "escalation_id", CX)?,
        author: get(row, "author", CX)?,
        kind: parse(&get::<String>(row, "kind", CX)?, CX)?,
        body: get(row, "body", CX)?,
        at_ms: get(row, "at_ms", CX)?,
    })
}
