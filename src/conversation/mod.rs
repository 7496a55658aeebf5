//! One chat between a buyer and a shop: the state machine that decides what the bot does with
//! each message, the worker that carries it out in order, and the dispatcher that keeps one
//! worker per chat.
//!
//! [`plan_message`] and [`plan_outgoing`] are pure: state, time (with whether the shop's people
//! are in, see [`Moment`]) and the routing decision in, the steps to take out. [`commands`] plans what agents do (claim, release, close, hand back,
//! transfer) the same way. The [`worker`] performs the plans — one atomic store write per message
//! first, then the gateway — so every rule of the conversation (greeting once per window, quiet
//! while queued, one queue notice, raising a waiting chat to a more serious queue, pause on
//! takeover, hand over after repeated fallbacks, idle agents, reply rate limit, one off-hours
//! notice per closed period) is tested without I/O.

pub mod commands;
pub mod dispatch;
mod policy;
pub mod worker;

pub use policy::ConversationPolicy;

use std::collections::VecDeque;

use crate::escalation::EscalationPolicy;
use crate::model::{Actor, Conversation, ConversationState, Queue};
pub use crate::routing::{Decided, OutcomeKind};

/// One thing the worker must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Close the chat's open escalation: the agent holding it went idle.
    CloseIdle,
    /// Hand the chat to a human queue (committed before anything is sent about it).
    Escalate {
        queue: Queue,
        reason: String,
        rule: Option<String>,
    },
    /// Move the waiting chat's escalation to a more serious queue.
    Raise { queue: Queue, reason: String },
    /// Send the reply `key` to the buyer. `off_hours` marks the acknowledgement of an
    /// escalation while the shop is closed: the worker sends its off-hours form
    /// (`<key>.off_hours`, else `escalated_off_hours`, else `key` itself).
    Send {
        key: String,
        queue: Option<Queue>,
        off_hours: bool,
    },
    /// A reply the rate limit held back.
    Suppressed { key: String },
}

/// The reply sent once per closed period to a buyer who writes while the shop is closed.
pub const OFF_HOURS_NOTICE: &str = "off_hours";

/// When a message is planned, and whether the shop's people are in at that moment. The worker
/// asks the shop's business hours; the planner never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// While the shop is closed, the start of the closed period (unix ms), which names it; `None`
    /// while people are in.
    pub closed_since_ms: Option<i64>,
}

impl Moment {
    /// A moment while people are in (and for shops that are always open).
    pub fn open(at_ms: i64) -> Moment {
        Moment {
            at_ms,
            closed_since_ms: None,
        }
    }

    /// A moment in the closed period that began at `since_ms`.
    pub fn closed(at_ms: i64, since_ms: i64) -> Moment {
        Moment {
            at_ms,
            closed_since_ms: Some(since_ms),
        }
    }

    /// Whether a chat last told of the closed period `told` should be told of this one.
    fn notice_due(&self, told: Option<i64>) -> bool {
        self.closed_since_ms
            .is_some_and(|period| told != Some(period))
    }
}

/// What to do with a message, and how the conversation changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Who caused the plan's state change, and why.
    pub state_change: Option<(Actor, String)>,
}

fn set_state(conversation: &mut Conversation, state: ConversationState, now_ms: i64) {
    if conversation.state != state {
        conversation.state = state;
        conversation.state_since_ms = now_ms;
    }
}

/// Plans the bot's response to a buyer message.
///
/// `open_queue` is the queue of the chat's open escalation, if any; `recent_replies` holds the
/// send times of this chat's recent bot replies (the rate limit reads and updates it).
///
/// While the shop is closed (`now.closed_since_ms`) FAQ answers go out as usual; the first
/// message of the closed period also gets the off-hours notice (after the greeting, before the
/// answer), and an escalation's acknowledgement is marked for its off-hours form, which says
/// when a person will pick the chat up and so stands for the notice too. A chat waiting in a
/// queue is told its wait once more in a new closed period, since the wait it was told before
/// no longer holds. A message the bot ignores ("好的") gets no notice.
pub fn plan_message(
    conversation: &mut Conversation,
    decided: &Decided,
    now: Moment,
    open_queue: Option<Queue>,
    policy: &ConversationPolicy,
    escalation: &EscalationPolicy,
    recent_replies: &mut VecDeque<i64>,
) -> Plan {
    let now_ms = now.at_ms;
    let closed = now.closed_since_ms.is_some();
    let mut plan = Plan::default();
    match conversation.state {
        ConversationState::Paused => {
            let expired = conversation
                .paused_until_ms
                .is_none_or(|until| now_ms >= until);
            if !expired {
                return plan;
            }
            set_state(conversation, ConversationState::Bot, now_ms);
            conversation.paused_until_ms = None;
            plan.state_change = Some((Actor::Timeout, "pause after a human reply ended".into()));
        }
        ConversationState::Human => {
            let last_activity = [conversation.last_buyer_ms, conversation.last_staff_ms]
                .into_iter()
                .flatten()
                .fold(conversation.state_since_ms, i64::max);
            conversation.last_buyer_ms = Some(now_ms);
            if now_ms.saturating_sub(last_activity) < policy.human_idle_ms() {
                if let Some(raise) = raise(decided, open_queue) {
                    // The agent sees the new point; the buyer is already talking to a person.
                    plan.steps.push(raise);
                }
                return plan;
            }
            set_state(conversation, ConversationState::Bot, now_ms);
            conversation.open_escalation = None;
            conversation.queued_notice_sent = false;
            conversation.fallback_streak = 0;
            plan.steps.push(Step::CloseIdle);
            plan.state_change = Some((
                Actor::Timeout,
                "no message from the buyer or the agent for the idle period; handed back to the bot"
                    .into(),
            ));
        }
        ConversationState::Queued => {
            conversation.last_buyer_ms = Some(now_ms);
            if let Some(raise) = raise(decided, open_queue) {
                // A new, more serious point is acknowledged once, as its own rule would.
                plan.steps.push(raise);
                if let Some(key) = &decided.reply_key {
                    plan.steps.push(Step::Send {
                        key: key.clone(),
                        queue: decided.queue,
                        off_hours: closed,
                    });
                    if closed {
                        conversation.off_hours_notice_ms = now.closed_since_ms;
                    }
                }
                apply_rate_limit(&mut plan, now_ms, policy, recent_replies);
                return plan;
            }
            // "好的谢谢" after a hand-over needs no "you are still queued" in return.
            let told_again = now.notice_due(conversation.off_hours_notice_ms);
            if (!conversation.queued_notice_sent || told_again)
                && decided.kind != OutcomeKind::Ignore
            {
                conversation.queued_notice_sent = true;
                if closed {
                    conversation.off_hours_notice_ms = now.closed_since_ms;
                }
                plan.steps.push(Step::Send {
                    key: "still_queued".into(),
                    queue: open_queue,
                    off_hours: false,
                });
            }
            return plan;
        }
        ConversationState::Bot => {}
    }
    conversation.last_buyer_ms = Some(now_ms);

    let greeting_due = policy.greeting_enabled()
        && conversation
            .greeted_at_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= policy.greeting_window_ms());
    // The greeting, and in a new closed period the off-hours notice, before the answer.
    let greet = |plan: &mut Plan, conversation: &mut Conversation| {
        if greeting_due {
            plan.steps.push(Step::Send {
                key: "greeting".into(),
                queue: None,
                off_hours: false,
            });
            conversation.greeted_at_ms = Some(now_ms);
        }
        off_hours_notice(plan, conversation, now);
    };
    match decided.kind {
        OutcomeKind::Escalate => {
            // An apology reads wrong after a cheerful welcome, so an escalating first message
            // gets the acknowledgement alone.
            conversation.greeted_at_ms = Some(now_ms);
            conversation.fallback_streak = 0;
            let queue = decided.queue.unwrap_or(Queue::Human);
            queue_chat(conversation, now);
            plan.state_change = Some((Actor::Bot, format!("escalated to queue {queue}")));
            escalate(&mut plan, queue, decided, "rule", closed);
        }
        OutcomeKind::Reply => {
            conversation.fallback_streak = 0;
            let key = decided
                .reply_key
                .clone()
                .unwrap_or_else(|| "fallback".into());
            if key == "greeting" {
                conversation.greeted_at_ms = Some(now_ms);
                plan.steps.push(Step::Send {
                    key,
                    queue: None,
                    off_hours: false,
                });
                off_hours_notice(&mut plan, conversation, now);
            } else {
                greet(&mut plan, conversation);
                plan.steps.push(Step::Send {
                    key,
                    queue: None,
                    off_hours: false,
                });
            }
        }
        OutcomeKind::Ignore => {
            conversation.fallback_streak = 0;
            if greeting_due {
                plan.steps.push(Step::Send {
                    key: "greeting".into(),
                    queue: None,
                    off_hours: false,
                });
                conversation.greeted_at_ms = Some(now_ms);
            }
        }
        OutcomeKind::Fallback => {
            conversation.fallback_streak += 1;
            if escalation.gives_up_after(conversation.fallback_streak) {
                conversation.fallback_streak = 0;
                let handoff = Decided {
                    kind: OutcomeKind::Escalate,
                    rule: None,
                    queue: Some(Queue::Human),
                    reply_key: Some("human_handoff".into()),
                    ..Default::default()
                };
                queue_chat(conversation, now);
                plan.state_change = Some((
                    Actor::Bot,
                    "the bot could not answer several messages in a row".into(),
                ));
                escalate(&mut plan, Queue::Human, &handoff, "fallbacks", closed);
            } else {
                greet(&mut plan, conversation);
                plan.steps.push(Step::Send {
                    key: "fallback".into(),
                    queue: None,
                    off_hours: false,
                });
            }
        }
    }
    apply_rate_limit(&mut plan, now_ms, policy, recent_replies);
    plan
}

/// The off-hours notice, when this chat has not had it in the current closed period.
fn off_hours_notice(plan: &mut Plan, conversation: &mut Conversation, now: Moment) {
    if now.notice_due(conversation.off_hours_notice_ms) {
        plan.steps.push(Step::Send {
            key: OFF_HOURS_NOTICE.into(),
            queue: None,
            off_hours: false,
        });
        conversation.off_hours_notice_ms = now.closed_since_ms;
    }
}

/// The chat waits for a person from now on. Closed, its acknowledgement says when a person is
/// back, which stands for this period's off-hours notice.
fn queue_chat(conversation: &mut Conversation, now: Moment) {
    set_state(conversation, ConversationState::Queued, now.at_ms);
    conversation.queued_notice_sent = false;
    conversation.paused_until_ms = None;
    if now.closed_since_ms.is_some() {
        conversation.off_hours_notice_ms = now.closed_since_ms;
    }
}

/// A raise of the waiting chat when `decided` escalates to a more serious queue than it waits in.
fn raise(decided: &Decided, open_queue: Option<Queue>) -> Option<Step> {
    let (OutcomeKind::Escalate, Some(queue), Some(current)) =
        (decided.kind, decided.queue, open_queue)
    else {
        return None;
    };
    (queue.severity() > current.severity()).then(|| Step::Raise {
        queue,
        reason: match &decided.rule {
            Some(rule) => format!("raised from {current} to {queue}: rule {rule}"),
            None => format!("raised from {current} to {queue}"),
        },
    })
}

fn escalate(plan: &mut Plan, queue: Queue, decided: &Decided, why: &str, off_hours: bool) {
    let reason = match (why, &decided.rule) {
        ("fallbacks", _) => "the bot could not answer several messages in a row".to_string(),
        (_, Some(rule)) => format!("rule {rule}"),
        // The learned model: what it decided, how sure, and the n-grams that pushed, so the
        // agent sees why a chat without a matching rule is in the queue.
        (_, None) if !decided.why.is_empty() => decided.why.clone(),
        (_, None) => "escalated".to_string(),
    };
    plan.steps.push(Step::Escalate {
        queue,
        reason,
        rule: decided.rule.clone(),
    });
    plan.steps.push(Step::Send {
        key: decided
            .reply_key
            .clone()
            .unwrap_or_else(|| "human_handoff".into()),
        queue: Some(queue),
        off_hours,
    });
}

/// Holds back replies past the per-chat limit. Acknowledgements of an escalation (or a raise)
/// always go out: a buyer whose complaint was taken must be told so.
fn apply_rate_limit(
    plan: &mut Plan,
    now_ms: i64,
    policy: &ConversationPolicy,
    recent: &mut VecDeque<i64>,
) {
    let window = policy.rate_window_ms();
    while recent.front().is_some_and(|&at| now_ms - at >= window) {
        recent.pop_front();
    }
    let escalating = plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::Escalate { .. } | Step::Raise { .. }));
    for step in &mut plan.steps {
        if let Step::Send { key, .. } = step {
            if escalating || recent.len() < policy.max_replies_per_window() {
                recent.push_back(now_ms);
            } else {
                *step = Step::Suppressed { key: key.clone() };
            }
        }
    }
}

/// Plans the reaction to a message the shop account sent from another client: the bot steps
/// back for the pause. While queued or owned by an agent it is already quiet.
pub fn plan_outgoing(
    conversation: &mut Conversation,
    now_ms: i64,
    policy: &ConversationPolicy,
) -> Plan {
    let mut plan = Plan::default();
    conversation.last_staff_ms = Some(now_ms);
    if matches!(
        conversation.state,
        ConversationState::Bot | ConversationState::Paused
    ) && policy.pause_ms() > 0
    {
        let was = conversation.state;
        set_state(conversation, ConversationState::Paused, now_ms);
        conversation.paused_until_ms = Some(now_ms.saturating_add(policy.pause_ms()));
        plan.state_change = Some((
            Actor::ShopOutgoing,
            if was == ConversationState::Paused {
                "a human answered again from another client; pause extended".into()
            } else {
                "a human answered from another client".into()
            },
        ));
    }
    plan
}

#[cfg(test)]
mod tests;
