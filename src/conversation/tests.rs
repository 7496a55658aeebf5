use super::*;
use crate::store::ConversationKey;

const MIN: i64 = 60 * 1000;

fn conversation() -> Conversation {
    Conversation::new(ConversationKey::new("dev", "shop1", "buyer1"), 0)
}

fn decided(kind: OutcomeKind, key: Option<&str>, queue: Option<Queue>) -> Decided {
    Decided {
        kind,
        rule: key.map(|k| format!("rule.{k}")),
        queue,
        reply_key: key.map(str::to_string),
        ..Default::default()
    }
}

fn faq() -> Decided {
    decided(OutcomeKind::Reply, Some("ship_when"), None)
}

fn fallback() -> Decided {
    decided(OutcomeKind::Fallback, None, None)
}

fn refund() -> Decided {
    decided(
        OutcomeKind::Escalate,
        Some("refund_ack"),
        Some(Queue::Refund),
    )
}

struct Chat {
    conversation: Conversation,
    policy: ConversationPolicy,
    escalation: EscalationPolicy,
    recent: VecDeque<i64>,
}

impl Chat {
    fn new() -> Self {
        Chat {
            conversation: conversation(),
            policy: ConversationPolicy::default(),
            escalation: EscalationPolicy::default(),
            recent: VecDeque::new(),
        }
    }

    fn says(&mut self, decided: &Decided, at: i64) -> Vec<String> {
        let plan = plan_message(
            &mut self.conversation,
            decided,
            at,
            Some(Queue::Refund),
            &self.policy,
            &self.escalation,
            &mut self.recent,
        );
        // The store sets the state on escalation; mirror it.
        if plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Escalate { .. }))
        {
            self.conversation.state = ConversationState::Queued;
            self.conversation.queued_notice_sent = false;
        }
        plan.steps.iter().map(describe).collect()
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::Escalate { queue, .. } => format!("escalate:{queue}"),
        Step::Send { key, .. } => format!("send:{key}"),
        Step::Suppressed { key } => format!("suppressed:{key}"),
    }
}

#[test]
fn first_contact_greets_and_answers_then_greets_once_per_window() {
    let mut chat = Chat::new();
    assert_eq!(chat.says(&faq(), 0), ["send:greeting", "send:ship_when"]);
    assert_eq!(chat.says(&faq(), MIN), ["send:ship_when"]);
    let window = chat.policy.greeting_window_ms();
    assert_eq!(
        chat.says(&faq(), window + 1),
        ["send:greeting", "send:ship_when"]
    );
}

#[test]
fn a_greeting_message_is_answered_by_one_greeting() {
    let mut chat = Chat::new();
    let hello = decided(OutcomeKind::Reply, Some("greeting"), None);
    assert_eq!(chat.says(&hello, 0), ["send:greeting"]);
    assert_eq!(chat.says(&faq(), MIN), ["send:ship_when"]);
}

#[test]
fn acknowledgements_are_silent_after_the_greeting() {
    let mut chat = Chat::new();
    let ok = decided(OutcomeKind::Ignore, None, None);
    assert_eq!(chat.says(&ok, 0), ["send:greeting"]);
    assert!(chat.says(&ok, MIN).is_empty());
}

#[test]
fn escalation_commits_before_acknowledging_and_skips_the_welcome() {
    let mut chat = Chat::new();
    assert_eq!(
        chat.says(&refund(), 0),
        ["escalate:refund", "send:refund_ack"]
    );
}

#[test]
fn queued_chat_gets_one_notice_then_silence() {
    let mut chat = Chat::new();
    chat.says(&refund(), 0);
    assert_eq!(chat.says(&faq(), MIN), ["send:still_queued"]);
    assert!(chat.says(&faq(), 2 * MIN).is_empty());
    assert!(chat.says(&refund(), 3 * MIN).is_empty());
    assert_eq!(chat.conversation.state, ConversationState::Queued);
}

#[test]
fn an_acknowledgement_while_queued_does_not_use_up_the_notice() {
    let mut chat = Chat::new();
    chat.says(&refund(), 0);
    let ok = decided(OutcomeKind::Ignore, None, None);
    assert!(chat.says(&ok, MIN).is_empty());
    assert_eq!(chat.says(&faq(), 2 * MIN), ["send:still_queued"]);
}

#[test]
fn repeated_fallbacks_hand_over_to_a_human() {
    let mut chat = Chat::new();
    assert_eq!(
        chat.says(&fallback(), 0),
        ["send:greeting", "send:fallback"]
    );
    assert_eq!(chat.says(&fallback(), MIN), ["send:fallback"]);
    assert_eq!(
        chat.says(&fallback(), 2 * MIN),
        ["escalate:human", "send:human_handoff"]
    );
}

#[test]
fn an_answer_resets_the_fallback_streak() {
    let mut chat = Chat::new();
    chat.says(&fallback(), 0);
    chat.says(&fallback(), MIN);
    chat.says(&faq(), 2 * MIN);
    assert_eq!(chat.says(&fallback(), 3 * MIN), ["send:fallback"]);
    assert_eq!(chat.conversation.fallback_streak, 1);
}

#[test]
fn a_human_reply_from_elsewhere_pauses_the_bot_until_it_expires() {
    let mut chat = Chat::new();
    chat.says(&faq(), 0);
    let plan = plan_outgoing(&mut chat.conversation, MIN, &chat.policy);
    assert_eq!(chat.conversation.state, ConversationState::Paused);
    assert!(matches!(plan.state_change, Some((Actor::ShopOutgoing, _))));
    assert!(chat.says(&faq(), 2 * MIN).is_empty());
    assert!(
        chat.says(&refund(), 10 * MIN).is_empty(),
        "even escalations wait while paused"
    );
    let after = MIN + chat.policy.pause_ms();
    assert_eq!(chat.says(&faq(), after), ["send:ship_when"]);
    assert_eq!(chat.conversation.state, ConversationState::Bot);
}

#[test]
fn outgoing_messages_do_not_disturb_a_queued_chat() {
    let mut chat = Chat::new();
    chat.says(&refund(), 0);
    let plan = plan_outgoing(&mut chat.conversation, MIN, &chat.policy);
    assert_eq!(plan, Plan::default());
    assert_eq!(chat.conversation.state, ConversationState::Queued);
}

#[test]
fn an_idle_agent_hands_the_chat_back() {
    let mut chat = Chat::new();
    chat.conversation.state = ConversationState::Human;
    chat.conversation.state_since_ms = 0;
    assert!(chat.says(&faq(), MIN).is_empty());
    let idle = chat.policy.human_idle_ms();
    assert_eq!(chat.says(&faq(), idle), ["send:greeting", "send:ship_when"]);
    assert_eq!(chat.conversation.state, ConversationState::Bot);
}

#[test]
fn the_reply_rate_limit_holds_back_a_flood_but_not_an_acknowledgement() {
    let mut chat = Chat::new();
    chat.policy.max_replies_per_window = 3;
    let mut sent = 0;
    let mut suppressed = 0;
    for second in 0..10 {
        for step in chat.says(&faq(), second * 1000) {
            if step.starts_with("send:") {
                sent += 1;
            } else {
                suppressed += 1;
            }
        }
    }
    assert_eq!(sent, 3);
    assert_eq!(suppressed, 8);
    assert_eq!(
        chat.says(&refund(), 11_000),
        ["escalate:refund", "send:refund_ack"]
    );
    // A minute later the window has moved on.
    let mut chat = Chat::new();
    chat.policy.max_replies_per_window = 1;
    chat.says(&faq(), 0);
    assert_eq!(chat.says(&faq(), 1000), ["suppressed:ship_when"]);
    assert_eq!(chat.says(&faq(), 61_000), ["send:ship_when"]);
}
