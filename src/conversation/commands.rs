//! What people do to a chat — claim, release, resolve, hand back, transfer — planned as store
//! turns.
//!
//! Pure: the conversation and its escalation in, the [`Turn`] out. The chat worker uses it for
//! commands from the console, and `xiaoer queue claim/close` for commands from a shell, so both
//! paths change a chat in exactly the same way; the store refuses a turn planned from a state
//! that changed meanwhile.

use crate::model::{Actor, Conversation, ConversationState, Escalation, EscalationState, Queue};
use crate::store::{EscalationStep, Turn};

/// Something an agent (or supervisor) does with an escalated chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentAction {
    /// Take the chat: the bot stays quiet and the agent answers.
    Claim { agent: String },
    /// Put the chat back in its queue, unowned (end of shift, wrong person).
    Release { agent: String },
    /// Done with it, with what was done (`refunded`, `resent`, `explained`, …); the bot answers
    /// again.
    Resolve {
        agent: String,
        outcome: Option<String>,
    },
    /// The bot takes over again without a resolution (the buyer's question was a simple one).
    HandBack { agent: String },
    /// To another queue (unowned) or straight to a named agent.
    Transfer {
        by: String,
        queue: Queue,
        agent: Option<String>,
    },
    /// The holder did nothing in the chat for the lease period: back to its queue.
    LeaseExpired,
}

impl AgentAction {
    /// Who acts.
    pub fn agent(&self) -> &str {
        match self {
            AgentAction::Claim { agent }
            | AgentAction::Release { agent }
            | AgentAction::Resolve { agent, .. }
            | AgentAction::HandBack { agent }
            | AgentAction::Transfer { by: agent, .. } => agent,
            AgentAction::LeaseExpired => "timeout",
        }
    }

    /// Who the action is recorded as.
    pub fn actor(&self) -> Actor {
        match self {
            AgentAction::LeaseExpired => Actor::Timeout,
            other => Actor::Agent(other.agent().to_owned()),
        }
    }
}

/// Why an action cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("escalation {id} belongs to another chat")]
    OtherChat { id: i64 },
    #[error("escalation {id} is already closed")]
    Closed { id: i64 },
    #[error("escalation {id} is already claimed by {agent}")]
    ClaimedByOther { id: i64, agent: String },
    #[error("escalation {id} is not claimed by anyone")]
    NotClaimed { id: i64 },
}

fn enter(conversation: &mut Conversation, state: ConversationState, now_ms: i64) {
    if conversation.state != state {
        conversation.state = state;
        conversation.state_since_ms = now_ms;
    }
}

/// Plans `action` on `escalation` of the chat whose state is `conversation`.
///
/// # Errors
///
/// An [`ActionError`] when the escalation is not one the action applies to.
pub fn plan(
    mut conversation: Conversation,
    escalation: &Escalation,
    action: &AgentAction,
    now_ms: i64,
) -> Result<Turn, ActionError> {
    let id = escalation.id;
    if escalation.key != conversation.key {
        return Err(ActionError::OtherChat { id });
    }
    if escalation.state == EscalationState::Closed {
        return Err(ActionError::Closed { id });
    }
    let actor = action.actor();
    let (step, reason) = match action {
        AgentAction::Claim { agent } => {
            if let (EscalationState::Claimed, Some(holder)) =
                (escalation.state, escalation.claimed_by.as_deref())
                && holder != agent
            {
                return Err(ActionError::ClaimedByOther {
                    id,
                    agent: holder.to_owned(),
                });
            }
            enter(&mut conversation, ConversationState::Human, now_ms);
            conversation.last_staff_ms = Some(now_ms);
            (
                EscalationStep::Claim {
                    id,
                    agent: agent.clone(),
                },
                format!("claimed escalation {id}"),
            )
        }
        AgentAction::Release { .. } => {
            if escalation.state != EscalationState::Claimed {
                return Err(ActionError::NotClaimed { id });
            }
            enter(&mut conversation, ConversationState::Queued, now_ms);
            (
                EscalationStep::Release { id },
                format!(
                    "released escalation {id} back to queue {}",
                    escalation.queue
                ),
            )
        }
        AgentAction::LeaseExpired => {
            if escalation.state != EscalationState::Claimed {
                return Err(ActionError::NotClaimed { id });
            }
            enter(&mut conversation, ConversationState::Queued, now_ms);
            (
                EscalationStep::Release { id },
                format!(
                    "{} did nothing in the chat for the lease period; back to queue {}",
                    escalation.claimed_by.as_deref().unwrap_or("the agent"),
                    escalation.queue
                ),
            )
        }
        AgentAction::Resolve { outcome, .. } => {
            back_to_bot(&mut conversation, now_ms);
            let reason = match outcome {
                Some(outcome) => format!("resolved escalation {id}: {outcome}"),
                None => format!("closed escalation {id}"),
            };
            (
                EscalationStep::Close {
                    id,
                    outcome: outcome.clone(),
                },
                reason,
            )
        }
        AgentAction::HandBack { .. } => {
            back_to_bot(&mut conversation, now_ms);
            (
                EscalationStep::Close { id, outcome: None },
                format!("handed escalation {id} back to the bot"),
            )
        }
        AgentAction::Transfer { queue, agent, .. } => {
            let (state, reason) = match agent {
                Some(to) => (
                    ConversationState::Human,
                    format!("transferred escalation {id} to {to}"),
                ),
                None => (
                    ConversationState::Queued,
                    format!("transferred escalation {id} to queue {queue}"),
                ),
            };
            enter(&mut conversation, state, now_ms);
            (
                EscalationStep::Transfer {
                    id,
                    queue: *queue,
                    agent: agent.clone(),
                },
                reason,
            )
        }
    };
    let mut turn = Turn::new(conversation, actor, reason, now_ms);
    turn.escalations.push(step);
    Ok(turn)
}

fn back_to_bot(conversation: &mut Conversation, now_ms: i64) {
    enter(conversation, ConversationState::Bot, now_ms);
    conversation.open_escalation = None;
    conversation.queued_notice_sent = false;
    conversation.fallback_streak = 0;
    conversation.paused_until_ms = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConversationKey;

    fn chat() -> (Conversation, Escalation) {
        let key = ConversationKey::new("dev", "shop1", "b1");
        let mut conversation = Conversation::new(key.clone(), 0);
        conversation.state = ConversationState::Queued;
        conversation.open_escalation = Some(7);
        conversation.version = 3;
        let escalation = Escalation {
            id: 7,
            key,
            queue: Queue::Refund,
            reason: "rule refund".into(),
            rule: Some("refund".into()),
            state: EscalationState::Open,
            created_ms: 0,
            claimed_by: None,
            claimed_ms: None,
            first_message: "我要退款".into(),
            closed_by: None,
            outcome: None,
        };
        (conversation, escalation)
    }

    fn claim(agent: &str) -> AgentAction {
        AgentAction::Claim {
            agent: agent.into(),
        }
    }

    #[test]
    fn each_action_moves_the_chat_and_records_who() {
        let (conversation, open) = chat();
        let claimed = Escalation {
            state: EscalationState::Claimed,
            claimed_by: Some("alice".into()),
            ..open.clone()
        };
        let table: Vec<(AgentAction, &Escalation, ConversationState)> = vec![
            (claim("alice"), &open, ConversationState::Human),
            (
                AgentAction::Release {
                    agent: "alice".into(),
                },
                &claimed,
                ConversationState::Queued,
            ),
            (
                AgentAction::Resolve {
                    agent: "alice".into(),
                    outcome: Some("refunded".into()),
                },
                &claimed,
                ConversationState::Bot,
            ),
            (
                AgentAction::HandBack {
                    agent: "alice".into(),
                },
                &claimed,
                ConversationState::Bot,
            ),
            (
                AgentAction::Transfer {
                    by: "lead".into(),
                    queue: Queue::Complaint,
                    agent: None,
                },
                &claimed,
                ConversationState::Queued,
            ),
            (
                AgentAction::Transfer {
                    by: "lead".into(),
                    queue: Queue::Refund,
                    agent: Some("bob".into()),
                },
                &open,
                ConversationState::Human,
            ),
        ];
        for (action, escalation, state) in table {
            let turn = plan(conversation.clone(), escalation, &action, 1000)
                .unwrap_or_else(|e| panic!("{action:?}: {e}"));
            assert_eq!(turn.conversation.state, state, "{action:?}");
            assert_eq!(
                turn.conversation.version, 3,
                "planned from the read version"
            );
            assert_eq!(turn.actor, action.actor());
            assert_eq!(turn.escalations.len(), 1);
            if state == ConversationState::Bot {
                assert_eq!(turn.conversation.open_escalation, None);
            }
        }
    }

    #[test]
    fn refusals_name_the_reason() {
        let (conversation, open) = chat();
        let claimed = Escalation {
            state: EscalationState::Claimed,
            claimed_by: Some("alice".into()),
            ..open.clone()
        };
        assert_eq!(
            plan(conversation.clone(), &claimed, &claim("bob"), 1),
            Err(ActionError::ClaimedByOther {
                id: 7,
                agent: "alice".into()
            })
        );
        assert!(plan(conversation.clone(), &claimed, &claim("alice"), 1).is_ok());
        let release = AgentAction::Release {
            agent: "alice".into(),
        };
        assert_eq!(
            plan(conversation.clone(), &open, &release, 1),
            Err(ActionError::NotClaimed { id: 7 })
        );
        let closed = Escalation {
            state: EscalationState::Closed,
            ..open.clone()
        };
        assert_eq!(
            plan(conversation.clone(), &closed, &claim("alice"), 1),
            Err(ActionError::Closed { id: 7 })
        );
        let mut other = conversation;
        other.key.user_id = "someone else".into();
        assert_eq!(
            plan(other, &open, &claim("alice"), 1),
            Err(ActionError::OtherChat { id: 7 })
        );
    }
}
