//! The rows the shift and weekly report is computed from, independent of the database behind
//! them: one read ([`Store::report_rows`](super::Store::report_rows)) gives everything, so the
//! report's arithmetic (in [`crate::report`]) never sees SQL and a PostgreSQL backend only has
//! to fill these structs.

use serde::Serialize;

use super::DecisionRecord;
use crate::model::{
    Actor, ConversationKey, Delivery, Direction, Escalation, EscalationEvent, Queue, Sender,
};

/// Everything a report over one period reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportRows {
    /// Transcript lines written in the period, grouped by conversation, each conversation in
    /// the order the lines were written.
    pub lines: Vec<ReportLine>,
    /// Escalations opened in the period, oldest first.
    pub escalations: Vec<Escalation>,
    /// Every recorded step of those escalations (also steps after the period), in order.
    pub escalation_events: Vec<ReportEscalationEvent>,
    /// Response-clock rounds started in the period, oldest first.
    pub rounds: Vec<ResponseRound>,
}

impl ReportRows {
    /// Keeps only the rows of the shop accounts `keep` accepts (the console shows an agent the
    /// shops they serve).
    pub fn keep_shops(&mut self, keep: impl Fn(&str) -> bool) {
        self.lines.retain(|line| keep(&line.key.self_id));
        self.escalations.retain(|e| keep(&e.key.self_id));
        let ids: std::collections::HashSet<i64> = self.escalations.iter().map(|e| e.id).collect();
        self.escalation_events
            .retain(|event| ids.contains(&event.escalation_id));
        self.rounds.retain(|round| keep(&round.key.self_id));
    }
}

/// One transcript line, with what routing decided when it is a buyer message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportLine {
    /// The line's id: lines written in the same millisecond keep their order by it.
    pub id: i64,
    pub key: ConversationKey,
    pub direction: Direction,
    pub sender: Sender,
    pub text: String,
    /// For outbound lines, whether the gateway took it.
    pub delivery: Option<Delivery>,
    pub at_ms: i64,
    /// `None` on lines that were not routed (replies, and messages from before schema 5).
    pub decision: Option<DecisionRecord>,
}

/// One step in an escalation's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportEscalationEvent {
    pub escalation_id: i64,
    pub kind: EscalationEvent,
    /// The queue after the step.
    pub queue: Queue,
    pub actor: Actor,
    pub at_ms: i64,
}

/// One round of the platform's response clock: a buyer waiting for a reply that counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResponseRound {
    pub key: ConversationKey,
    pub started_ms: i64,
    /// How long the platform allows.
    pub budget_ms: i64,
    pub answered_ms: Option<i64>,
    /// `bot`, `agent:<name>` or `shop`.
    pub answered_by: Option<String>,
    /// The wait as the platform counts it (inside counted hours, capped).
    pub counted_ms: Option<i64>,
    /// `in_time` or `late`; `None` while the buyer still waits.
    pub outcome: Option<String>,
}
