//! The SQL behind [`Store::report_rows`](crate::store::Store::report_rows) on PostgreSQL: the
//! SQLite backend's four plain selects over one period, optionally for one shop account.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::read::PgReader;
use super::rows;
use crate::model::{ConversationKey, EscalationEvent};
use crate::store::{
    DecisionRecord, ReportEscalationEvent, ReportLine, ReportRows, ResponseRound, StoreError,
};

const CX: &str = "reading the rows of a report";

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column)
        .map_err(|e| StoreError::query(format!("read column {column} while {CX}"), e))
}

fn key(row: &PgRow) -> Result<ConversationKey, StoreError> {
    Ok(ConversationKey {
        platform: get(row, "platform")?,
        self_id: get(row, "self_id")?,
        user_id: get(row, "user_id")?,
    })
}

fn event_kind(text: &str) -> Result<EscalationEvent, StoreError> {
    use EscalationEvent::{Claimed, Closed, Opened, Raised, Released, Transferred};
    [Opened, Raised, Claimed, Released, Transferred, Closed]
        .into_iter()
        .find(|kind| kind.as_str() == text)
        .ok_or_else(|| StoreError::Corrupt {
            context: CX.to_owned(),
            detail: format!("unknown escalation event {text:?}"),
        })
}

/// `$3 IS NULL OR self_id = $3`: one statement serves every shop and one shop.
const SHOP_FILTER: &str = "($3 IS NULL OR self_id = $3)";

impl PgReader {
    pub(crate) async fn report_rows(
        &self,
        since_ms: i64,
        until_ms: i64,
        shop: Option<&str>,
    ) -> Result<ReportRows, StoreError> {
        let lines = sqlx::query(&format!(
            "SELECT id, platform, self_id, user_id, direction, sender, body, delivery, at_ms, \
             action, topic, rule, decided_by FROM transcript \
             WHERE at_ms >= $1 AND at_ms < $2 AND {SHOP_FILTER} \
             ORDER BY platform, self_id, user_id, at_ms, id"
        ))
        .bind(since_ms)
        .bind(until_ms)
        .bind(shop)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query("read the transcript for a report", e))?;
        let lines = lines.iter().map(line).collect::<Result<Vec<_>, _>>()?;

        let escalations = sqlx::query(&format!(
            "SELECT {} FROM escalations WHERE created_ms >= $1 AND created_ms < $2 AND \
             {SHOP_FILTER} ORDER BY created_ms, id",
            rows::ESCALATION_COLUMNS
        ))
        .bind(since_ms)
        .bind(until_ms)
        .bind(shop)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query("read the escalations for a report", e))?;
        let escalations = escalations
            .iter()
            .map(rows::escalation)
            .collect::<Result<Vec<_>, _>>()?;

        let events = sqlx::query(
            "SELECT ev.escalation_id, ev.kind, ev.queue, ev.actor, ev.at_ms \
             FROM escalation_events ev JOIN escalations e ON e.id = ev.escalation_id \
             WHERE e.created_ms >= $1 AND e.created_ms < $2 AND ($3 IS NULL OR e.self_id = $3) \
             ORDER BY ev.escalation_id, ev.id",
        )
        .bind(since_ms)
        .bind(until_ms)
        .bind(shop)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query("read the escalation history for a report", e))?;
        let escalation_events = events
            .iter()
            .map(|row| {
                Ok(ReportEscalationEvent {
                    escalation_id: get(row, "escalation_id")?,
                    kind: event_kind(&get::<String>(row, "kind")?)?,
                    queue: rows::parse(&get::<String>(row, "queue")?, CX)?,
                    actor: rows::parse(&get::<String>(row, "actor")?, CX)?,
                    at_ms: get(row, "at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let rounds = sqlx::query(&format!(
            "SELECT platform, self_id, user_id, started_ms, budget_ms, answered_ms, answered_by, \
             counted_ms, outcome FROM response_rounds \
             WHERE started_ms >= $1 AND started_ms < $2 AND {SHOP_FILTER} ORDER BY started_ms, id"
        ))
        .bind(since_ms)
        .bind(until_ms)
        .bind(shop)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::query("read the response clock for a report", e))?;
        let rounds = rounds
            .iter()
            .map(|row| {
                Ok(ResponseRound {
                    key: key(row)?,
                    started_ms: get(row, "started_ms")?,
                    budget_ms: get(row, "budget_ms")?,
                    answered_ms: get(row, "answered_ms")?,
                    answered_by: get(row, "answered_by")?,
                    counted_ms: get(row, "counted_ms")?,
                    outcome: get(row, "outcome")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        Ok(ReportRows {
            lines,
            escalations,
            escalation_events,
            rounds,
        })
    }
}

fn line(row: &PgRow) -> Result<ReportLine, StoreError> {
    let action: Option<String> = get(row, "action")?;
    let decision = match action {
        Some(action) => Some(DecisionRecord {
            action,
            topic: get::<Option<String>>(row, "topic")?.unwrap_or_default(),
            rule: get(row, "rule")?,
            decided_by: get::<Option<String>>(row, "decided_by")?.unwrap_or_default(),
        }),
        None => None,
    };
    let delivery: Option<String> = get(row, "delivery")?;
    Ok(ReportLine {
        id: get(row, "id")?,
        key: key(row)?,
        direction: rows::parse(&get::<String>(row, "direction")?, CX)?,
        sender: rows::parse(&get::<String>(row, "sender")?, CX)?,
        text: get(row, "body")?,
        delivery: delivery.map(|d| rows::parse(&d, CX)).transpose()?,
        at_ms: get(row, "at_ms")?,
        decision,
    })
}
