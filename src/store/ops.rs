//! The writes the store knows, independent of the database behind it.
//!
//! The central one is the [`Turn`]: everything one handled message or agent command changes in
//! one chat — the inbound message id, its transcript line, the conversation's new state and its
//! history, an escalation step, the replies about to be sent — applied in one transaction or not
//! at all.

use crate::model::{
    Actor, Agent, Conversation, ConversationKey, Delivery, Direction, Note, Part, Queue, Sender,
    TranscriptEntry,
};

/// A message that reached the chat, recorded with the turn it caused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundLine {
    /// The platform's id: a turn whose message id the chat already has is not applied again.
    pub message_id: String,
    /// The buyer, or the shop account writing from another client.
    pub sender: Sender,
    /// Follows the sender: the buyer's messages are inbound, the shop's outbound.
    pub direction: Direction,
    pub text: String,
    pub parts: Vec<Part>,
    pub at_ms: i64,
    /// What routing made of a buyer message, kept with its line for the shift report.
    pub decision: Option<DecisionRecord>,
}

/// What routing decided for one buyer message, in the names `xiaoer route` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    /// `reply`, `escalate`, `fallback` or `ignore`.
    pub action: String,
    /// The topic, `fallback` when nothing matched.
    pub topic: String,
    pub rule: Option<String>,
    /// `rule`, `model` or `none`.
    pub decided_by: String,
}

/// A message to the buyer, recorded as [`Delivery::Pending`] before it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundLine {
    pub sender: Sender,
    pub text: String,
    pub at_ms: i64,
}

/// What a turn does to the chat's escalation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EscalationStep {
    /// Hand the chat to `queue`. The conversation's `open_escalation` is set to the new id.
    Open {
        queue: Queue,
        reason: String,
        rule: Option<String>,
        first_message: String,
    },
    /// Move the open escalation to a more serious queue.
    Raise {
        id: i64,
        queue: Queue,
        reason: String,
    },
    /// An agent takes it.
    Claim { id: i64, agent: String },
    /// Back to its queue, unowned.
    Release { id: i64 },
    /// To another queue (unowned) or to a named agent.
    Transfer {
        id: i64,
        queue: Queue,
        agent: Option<String>,
    },
    /// Done.
    Close { id: i64, outcome: Option<String> },
}

impl EscalationStep {
    /// The escalation this step is about (`None` for [`EscalationStep::Open`]).
    pub fn id(&self) -> Option<i64> {
        match self {
            EscalationStep::Open { .. } => None,
            EscalationStep::Raise { id, .. }
            | EscalationStep::Claim { id, .. }
            | EscalationStep::Release { id }
            | EscalationStep::Transfer { id, .. }
            | EscalationStep::Close { id, .. } => Some(*id),
        }
    }
}

/// What a turn does to the chat's response-clock round (see `escalation::clock`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoundStep {
    /// The buyer waits now: start a round at the turn's time, unless one is open already.
    Open { budget_ms: i64 },
    /// A valid reply at the turn's time ends the open round (the one a step before may have
    /// opened).
    Answer {
        /// `bot`, `agent:<name>` or `shop`.
        by: String,
        /// The wait as the platform counts it.
        counted_ms: i64,
        in_time: bool,
    },
}

/// A response-clock warning about round `round_id` at `pct` % of its budget: the notification
/// (about the chat's open escalation) and the round's `warned_pct`, written together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockWarning {
    pub round_id: i64,
    pub pct: u32,
    pub escalation_id: i64,
    pub detail: String,
    pub at_ms: i64,
}

impl ClockWarning {
    /// The idempotency key receivers see.
    pub fn key(&self) -> String {
        format!("clock.warning:{}:{}", self.round_id, self.pct)
    }
}

/// Everything one message or command changes in one chat, written atomically.
///
/// The conversation is written only if the stored one still has `conversation.version` (0: not
/// stored yet); otherwise the whole turn is refused with
/// [`StoreError::Conflict`](super::StoreError::Conflict) and the caller plans again from a fresh
/// read. A turn with an [`InboundLine`] whose id the chat already has is not applied at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    pub conversation: Conversation,
    pub inbound: Option<InboundLine>,
    /// Who caused the turn's changes and why: recorded with a state change and an escalation
    /// step.
    pub actor: Actor,
    pub reason: String,
    /// Steps on the chat's escalations, in order (an idle agent's escalation can close and a
    /// new one open in the same turn).
    pub escalations: Vec<EscalationStep>,
    pub outbound: Vec<OutboundLine>,
    /// Steps on the chat's response-clock round, in order (a bot answering at once opens and
    /// answers one in the same turn).
    pub clock: Vec<RoundStep>,
    /// When the turn happened (unix ms); escalation steps are stamped with it.
    pub at_ms: i64,
    /// The shop lease the turn was planned under, when several instances share the store: the
    /// turn is written only while this instance still holds the lease at this epoch.
    pub fence: Option<Fence>,
}

/// A shop lease as a chat worker saw it when it planned a turn (see `cluster`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The instance that holds the lease.
    pub owner: std::sync::Arc<str>,
    /// The lease's epoch: one more on every change of owner.
    pub epoch: i64,
}

/// A buyer message as an instance received it, recorded whether or not the instance answers
/// the shop, so that whoever answers it next can handle what was left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenMessage {
    pub key: ConversationKey,
    pub message_id: String,
    pub text: String,
    pub parts: Vec<Part>,
    pub received_ms: i64,
    /// The instance that recorded it.
    pub received_by: std::sync::Arc<str>,
}

impl Turn {
    /// A turn that only saves `conversation` (and whatever is added to it).
    pub fn new(
        conversation: Conversation,
        actor: Actor,
        reason: impl Into<String>,
        at_ms: i64,
    ) -> Self {
        Turn {
            conversation,
            inbound: None,
            actor,
            reason: reason.into(),
            escalations: Vec::new(),
            outbound: Vec::new(),
            clock: Vec::new(),
            at_ms,
            fence: None,
        }
    }

    pub fn key(&self) -> &ConversationKey {
        &self.conversation.key
    }
}

/// What a committed turn produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnOutcome {
    /// Written.
    Applied {
        /// The conversation's stored version now.
        version: i64,
        /// The escalation the turn opened or acted on.
        escalation: Option<i64>,
        /// Ids of the recorded outbound lines, in order, for [`Store::mark_delivery`](super::Store::mark_delivery).
        outbound: Vec<i64>,
    },
    /// The inbound message was handled before (a redelivery): nothing was written.
    Duplicate,
}

/// A change to console accounts, sessions, notes or quick phrases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountOp {
    /// A new account; refused if the name is taken.
    AddAgent {
        agent: Agent,
        password_hash: String,
    },
    /// A new password; every session of the account ends.
    SetPassword {
        name: String,
        password_hash: String,
    },
    /// Disable or enable an account; disabling ends its sessions.
    SetDisabled {
        name: String,
        disabled: bool,
    },
    CreateSession {
        token_hash: String,
        agent: String,
        csrf: String,
        at_ms: i64,
    },
    TouchSession {
        token_hash: String,
        at_ms: i64,
    },
    DeleteSession {
        token_hash: String,
    },
    /// Ends sessions last seen before `before_ms`.
    ExpireSessions {
        before_ms: i64,
    },
    AddNote(Note),
    AddPhrase {
        agent: String,
        text: String,
        at_ms: i64,
    },
    DeletePhrase {
        agent: String,
        id: i64,
    },
}

/// A change to the notification outbox (see `migrations/sqlite/0005_operations.sql`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxOp {
    /// A notification caused by time passing rather than by a turn (an SLA or response-clock
    /// warning), about escalation `escalation_id`; a `key` already in the outbox is left alone.
    Enqueue {
        key: String,
        event: String,
        escalation_id: i64,
        detail: String,
        at_ms: i64,
    },
    /// One pending delivery per target that wants the notification, first due at `due_ms`; the
    /// notification is then fanned out even when no target wants it.
    FanOut {
        outbox_id: i64,
        targets: Vec<String>,
        due_ms: i64,
    },
    /// The target took it.
    Delivered {
        outbox_id: i64,
        target: String,
        at_ms: i64,
    },
    /// The attempt failed; try again at `retry_at_ms`, or never (`None`: dead-lettered).
    Failed {
        outbox_id: i64,
        target: String,
        error: String,
        retry_at_ms: Option<i64>,
        at_ms: i64,
    },
    /// Dead-lettered deliveries to `target` (every target when `None`) are tried again now.
    Revive { target: Option<String>, at_ms: i64 },
}

/// One write (or a barrier) for the writer.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Turn(Box<Turn>),
    Account(AccountOp),
    Outbox(OutboxOp),
    ClockWarning(ClockWarning),
    /// What became of an outbound line after the send.
    MarkDelivery {
        line: i64,
        delivery: Delivery,
        message_id: Option<String>,
    },
    /// A transcript line on its own (a message set aside from a flooding chat).
    Append(TranscriptEntry),
    /// A buyer message into the inbound backlog (kept once per message id).
    Seen(SeenMessage),
    /// The replies to a shop's buyers still pending from before `before_ms` become
    /// [`Delivery::Unknown`]: their writer lost the shop before it could say whether it sent
    /// them.
    LeftUnsent {
        platform: String,
        self_id: String,
        before_ms: i64,
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
            Op::Turn(turn) => match (&turn.inbound, turn.escalations.first()) {
                (Some(inbound), _) => format!(
                    "record message {} of chat {} and what it changed",
                    inbound.message_id,
                    turn.key()
                ),
                (None, Some(_)) => format!("update the escalation of chat {}", turn.key()),
                (None, None) => format!("save chat {}", turn.key()),
            },
            Op::Account(op) => match op {
                AccountOp::AddAgent { agent, .. } => format!("add agent {}", agent.name),
                AccountOp::SetPassword { name, .. } => format!("set the password of {name}"),
                AccountOp::SetDisabled { name, disabled } => {
                    format!(
                        "{} agent {name}",
                        if *disabled { "disable" } else { "enable" }
                    )
                }
                AccountOp::CreateSession { agent, .. } => format!("start a session for {agent}"),
                AccountOp::TouchSession { .. } => "keep a console session alive".to_owned(),
                AccountOp::DeleteSession { .. } => "end a console session".to_owned(),
                AccountOp::ExpireSessions { .. } => "end expired console sessions".to_owned(),
                AccountOp::AddNote(note) => format!("add a note to chat {}", note.key),
                AccountOp::AddPhrase { agent, .. } => format!("add a quick phrase for {agent}"),
                AccountOp::DeletePhrase { agent, id } => {
                    format!("delete quick phrase {id} of {agent}")
                }
            },
            Op::Outbox(op) => match op {
                OutboxOp::Enqueue { key, .. } => format!("queue notification {key}"),
                OutboxOp::FanOut { outbox_id, .. } => {
                    format!("plan the deliveries of notification {outbox_id}")
                }
                OutboxOp::Delivered {
                    outbox_id, target, ..
                } => format!("mark notification {outbox_id} delivered to {target}"),
                OutboxOp::Failed {
                    outbox_id, target, ..
                } => format!("record a failed delivery of notification {outbox_id} to {target}"),
                OutboxOp::Revive { .. } => "retry dead-lettered notifications".to_owned(),
            },
            Op::ClockWarning(warning) => format!(
                "queue response-clock warning {} for escalation {}",
                warning.key(),
                warning.escalation_id
            ),
            Op::MarkDelivery { line, delivery, .. } => {
                format!("mark transcript line {line} as {}", delivery.as_str())
            }
            Op::Append(entry) => format!("append a transcript line for {}", entry.key),
            Op::LeftUnsent {
                platform, self_id, ..
            } => format!("mark the replies shop {platform}/{self_id} left unsent"),
            Op::Seen(seen) => format!(
                "record message {} of chat {} in the inbound backlog",
                seen.message_id, seen.key
            ),
            Op::Flush => "flush the store".to_owned(),
            Op::Shutdown => "close the store".to_owned(),
            #[cfg(test)]
            Op::FailForTest => "fail on purpose".to_owned(),
        }
    }

    /// Whether this write opens an escalation (the crash-test hooks stop at those).
    pub(crate) fn opens_escalation(&self) -> bool {
        matches!(self, Op::Turn(turn)
            if turn.escalations.iter().any(|s| matches!(s, EscalationStep::Open { .. })))
    }
}

/// What a request produced.
#[derive(Debug)]
pub(crate) enum Reply {
    Turn(TurnOutcome),
    /// The id of a row the write created (a note, a quick phrase).
    Created(i64),
    Done,
}
