use super::*;
use crate::model::ConversationKey;

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
        self.says_at(decided, Moment::open(at))
    }

    fn says_at(&mut self, decided: &Decided, at: Moment) -> Vec<String> {
        let plan = plan_message(
            &mut self.conversation,
            decided,
            at,
            Some(Queue::Refund),
            &self.policy,
            &self.escalation,
            &mut self.recent,
        );
        plan.steps.iter().map(describe).collect()
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::CloseIdle => "close".to_string(),
        Step::Escalate { queue, .. } => format!("escalate:{queue}"),
        Step::Raise { queue, .. } => format!("raise:{queue}"),
        Step::Send {
            key,
            off_hours: true,
            ..
        } => format!("send:{key} (off hours)"),
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
    chat.conversation.open_escalation = Some(1);
    assert!(chat.says(&faq(), MIN).is_empty());
    let idle = chat.policy.human_idle_ms();
    assert_eq!(
        chat.says(&faq(), MIN + idle),
        ["close", "send:greeting", "send:ship_when"]
    );
    assert_eq!(chat.conversation.state, ConversationState::Bot);
    assert_eq!(chat.conversation.open_escalation, None);
}

fn claimed_at_zero() -> Chat {
    let mut chat = Chat::new();
    chat.conversation.state = ConversationState::Human;
    chat.conversation.state_since_ms = 0;
    chat.conversation.open_escalation = Some(1);
    chat
}

#[test]
fn agent_idle_timeout_runs_from_the_last_message_not_from_the_claim() {
    let idle = ConversationPolicy::default().human_idle_ms();
    // The buyer keeps writing to the agent: never idle, however long ago the claim was.
    let mut chat = claimed_at_zero();
    assert!(chat.says(&faq(), idle - MIN).is_empty());
    assert!(chat.says(&faq(), idle + MIN).is_empty());
    assert_eq!(chat.conversation.state, ConversationState::Human);
    // The agent answered recently (from the console or another client): not idle either.
    let mut chat = claimed_at_zero();
    chat.conversation.last_staff_ms = Some(idle - MIN);
    assert!(chat.says(&faq(), idle + MIN).is_empty());
    assert_eq!(chat.conversation.state, ConversationState::Human);
    // Silence on both sides for the whole period hands the chat back, as a timeout.
    let mut chat = claimed_at_zero();
    chat.conversation.last_staff_ms = Some(10 * MIN);
    let plan = plan_message(
        &mut chat.conversation,
        &faq(),
        Moment::open(10 * MIN + idle),
        Some(Queue::Refund),
        &chat.policy,
        &chat.escalation,
        &mut chat.recent,
    );
    assert_eq!(plan.steps.first(), Some(&Step::CloseIdle));
    assert!(matches!(plan.state_change, Some((Actor::Timeout, _))));
}

fn complaint() -> Decided {
    decided(
        OutcomeKind::Escalate,
        Some("complaint_ack"),
        Some(Queue::Complaint),
    )
}

#[test]
fn a_more_serious_message_while_queued_raises_the_escalation_once_acknowledged() {
    let mut chat = Chat::new();
    chat.says(&refund(), 0);
    assert_eq!(
        chat.says(&complaint(), MIN),
        ["raise:complaint", "send:complaint_ack"]
    );
    // The notice is still there for the first ordinary message, and only once.
    assert_eq!(chat.says(&faq(), 2 * MIN), ["send:still_queued"]);
    assert!(chat.says(&faq(), 3 * MIN).is_empty());
    // Not more serious (the same queue, or a lesser one): swallowed as before.
    assert!(chat.says(&refund(), 4 * MIN).is_empty());
}

#[test]
fn a_more_serious_message_to_an_agent_raises_without_a_bot_reply() {
    let mut chat = claimed_at_zero();
    assert_eq!(chat.says(&complaint(), MIN), ["raise:complaint"]);
    assert_eq!(chat.conversation.state, ConversationState::Human);
}

#[test]
fn a_message_without_text_is_no_fallback() {
    let mut chat = Chat::new();
    let sticker = decided(OutcomeKind::Ignore, None, None);
    assert_eq!(chat.says(&sticker, 0), ["send:greeting"]);
    for minute in 1..6 {
        assert!(chat.says(&sticker, minute * MIN).is_empty());
    }
    assert_eq!(chat.conversation.fallback_streak, 0);
    assert_eq!(chat.conversation.state, ConversationState::Bot);
}

#[test]
fn the_reply_rate_limit_holds_back_a_flood_but_not_an_acknowledgement() {
    let mut chat = Chat::new();
    chat.policy.max_replies = std::num::NonZeroU32::new(3).unwrap();
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
    chat.policy.max_replies = std::num::NonZeroU32::MIN;
    chat.says(&faq(), 0);
    assert_eq!(chat.says(&faq(), 1000), ["suppressed:ship_when"]);
    assert_eq!(chat.says(&faq(), 61_000), ["send:ship_when"]);
}

#[test]
fn a_shop_that_switched_the_greeting_off_gets_answers_alone() {
    let mut chat = Chat::new();
    chat.policy.greeting = false;
    assert_eq!(chat.says(&faq(), 0), ["send:ship_when"]);
    assert_eq!(chat.says(&fallback(), MIN), ["send:fallback"]);
}

/// A closed period that began at `since`: the evening of day 0 (ms from it).
fn closed(at: i64, since: i64) -> Moment {
    Moment::closed(at, since)
}

#[test]
fn the_off_hours_notice_goes_out_once_per_closed_period() {
    let hour = 60 * MIN;
    let evening = 18 * hour;
    let next_evening = evening + 24 * hour;
    let mut chat = Chat::new();
    // The greeting has its own window; left out here.
    chat.policy.greeting = false;
    // (moment, what the bot does)
    let cases: Vec<(Moment, Decided, Vec<&str>)> = vec![
        // Open: nothing about hours.
        (Moment::open(10 * hour), faq(), vec!["send:ship_when"]),
        // The first message after closing: the notice, and the FAQ answer still goes out.
        (
            closed(19 * hour, evening),
            faq(),
            vec!["send:off_hours", "send:ship_when"],
        ),
        // Later in the same closed period: the answer alone.
        (closed(22 * hour, evening), faq(), vec!["send:ship_when"]),
        (
            closed(22 * hour + MIN, evening),
            fallback(),
            vec!["send:fallback"],
        ),
        // The next morning people are in; the next evening is a new closed period.
        (Moment::open(33 * hour), faq(), vec!["send:ship_when"]),
        (
            closed(43 * hour, next_evening),
            faq(),
            vec!["send:off_hours", "send:ship_when"],
        ),
    ];
    for (moment, decided, expected) in cases {
        assert_eq!(chat.says_at(&decided, moment), expected, "at {moment:?}");
    }
    assert_eq!(chat.conversation.off_hours_notice_ms, Some(next_evening));
}

#[test]
fn off_hours_notice_order_and_what_gets_none() {
    let hour = 60 * MIN;
    // A first contact while closed: greeting, notice, answer.
    let mut chat = Chat::new();
    assert_eq!(
        chat.says_at(&faq(), closed(20 * hour, 18 * hour)),
        ["send:greeting", "send:off_hours", "send:ship_when"]
    );
    // A rule whose answer is the greeting itself: greeting, then the notice.
    let mut chat = Chat::new();
    let hello = decided(OutcomeKind::Reply, Some("greeting"), None);
    assert_eq!(
        chat.says_at(&hello, closed(20 * hour, 18 * hour)),
        ["send:greeting", "send:off_hours"]
    );
    // "好的" needs no notice; the next real question gets it.
    let mut chat = Chat::new();
    chat.conversation.greeted_at_ms = Some(19 * hour);
    let ok = decided(OutcomeKind::Ignore, None, None);
    assert!(chat.says_at(&ok, closed(20 * hour, 18 * hour)).is_empty());
    assert_eq!(
        chat.says_at(&faq(), closed(20 * hour + MIN, 18 * hour)),
        ["send:off_hours", "send:ship_when"]
    );
}

#[test]
fn an_escalation_while_closed_is_acknowledged_in_its_off_hours_form() {
    let hour = 60 * MIN;
    let evening = 18 * hour;
    let mut chat = Chat::new();
    chat.conversation.greeted_at_ms = Some(17 * hour);
    assert_eq!(
        chat.says_at(&refund(), closed(20 * hour, evening)),
        ["escalate:refund", "send:refund_ack (off hours)"]
    );
    // The acknowledgement said when a person is back: no separate notice in this period.
    assert_eq!(chat.conversation.off_hours_notice_ms, Some(evening));
    assert_eq!(chat.conversation.state, ConversationState::Queued);
    assert_eq!(
        chat.says_at(&faq(), closed(21 * hour, evening)),
        ["send:still_queued"]
    );
    assert!(chat.says_at(&faq(), closed(22 * hour, evening)).is_empty());
    // A more serious point while closed: its acknowledgement is in the off-hours form too.
    assert_eq!(
        chat.says_at(&complaint(), closed(23 * hour, evening)),
        ["raise:complaint", "send:complaint_ack (off hours)"]
    );

    // The same escalation while open is acknowledged as usual.
    let mut chat = Chat::new();
    chat.conversation.greeted_at_ms = Some(9 * hour);
    assert_eq!(
        chat.says_at(&refund(), Moment::open(10 * hour)),
        ["escalate:refund", "send:refund_ack"]
    );
    // Still waiting when the shop closes: told the wait once more in the closed period, once.
    assert_eq!(
        chat.says_at(&faq(), Moment::open(11 * hour)),
        ["send:still_queued"]
    );
    assert!(chat.says_at(&faq(), Moment::open(12 * hour)).is_empty());
    assert_eq!(
        chat.says_at(&faq(), closed(19 * hour, evening)),
        ["send:still_queued"]
    );
    assert!(chat.says_at(&faq(), closed(20 * hour, evening)).is_empty());
}

#[test]
fn the_fallback_hand_over_while_closed_uses_the_off_hours_form() {
    let hour = 60 * MIN;
    let mut chat = Chat::new();
    chat.conversation.greeted_at_ms = Some(19 * hour);
    chat.conversation.off_hours_notice_ms = Some(18 * hour);
    let at = |m: i64| closed(20 * hour + m * MIN, 18 * hour);
    assert_eq!(chat.says_at(&fallback(), at(0)), ["send:fallback"]);
    assert_eq!(chat.says_at(&fallback(), at(1)), ["send:fallback"]);
    assert_eq!(
        chat.says_at(&fallback(), at(2)),
        ["escalate:human", "send:human_handoff (off hours)"]
    );
}
