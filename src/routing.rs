//! Routing: what to do with one buyer message, and what decided it.
//!
//! [`route`] is the one place a message becomes a [`Decided`]: the chat worker, `xiaoer route`,
//! `explain` and `eval` all call it, so they cannot disagree. Today the rules decide alone; a
//! learned model will be consulted here when no rule matches, and will say so through
//! [`DecidedBy`]. Pure and synchronous: text in, decision out, no I/O.

use std::fmt::Write as _;

use crate::model::{Queue, Topic};
use crate::rules::{Action, Decision, RuleSet};

/// What happens to a message, in the terms of the `route` contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutcomeKind {
    /// Answer with a reply.
    Reply,
    /// Hand the chat to a human queue.
    Escalate,
    /// Nothing matched: the fallback reply.
    #[default]
    Fallback,
    /// Stay silent.
    Ignore,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Reply => "reply",
            OutcomeKind::Escalate => "escalate",
            OutcomeKind::Fallback => "fallback",
            OutcomeKind::Ignore => "ignore",
        }
    }
}

/// What made the decision. A learned model will be one more variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DecidedBy {
    /// Nothing did: no rule matched and the fallback applies.
    #[default]
    Nothing,
    /// A rule matched and won.
    Rule,
}

impl DecidedBy {
    /// The name `route` prints in its `by` field.
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Nothing => "none",
            DecidedBy::Rule => "rule",
        }
    }
}

/// What to do with a message, and why. The default is the fallback with nothing matched, so
/// tests can build values with `..Default::default()`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decided {
    pub kind: OutcomeKind,
    /// What the message is about; `None` when nothing matched (shown as `fallback`).
    pub topic: Option<Topic>,
    /// The id of the rule that decided.
    pub rule: Option<String>,
    /// The human queue, when escalating.
    pub queue: Option<Queue>,
    /// The reply to send (the acknowledgement, when escalating); `fallback` when nothing matched,
    /// none when staying silent.
    pub reply_key: Option<String>,
    pub by: DecidedBy,
    /// What the deciding rule matched on, normalised: its keywords, then what its regex matched.
    pub terms: Vec<String>,
    /// One line for people, e.g. `rule refund.request: 退款`.
    pub why: String,
}

impl Decided {
    /// The topic as the `route` contract names it: `fallback` when nothing matched.
    pub fn topic_name(&self) -> &'static str {
        self.topic.map_or("fallback", Topic::as_str)
    }
}

/// Decides what to do with one buyer message.
///
/// # Examples
///
/// ```no_run
/// # let rules: xiaoer::rules::RuleSet = unimplemented!();
/// let decided = xiaoer::routing::route(&rules, "我要退貨");
/// println!("{} ({}): {}", decided.kind.as_str(), decided.topic_name(), decided.why);
/// ```
pub fn route(rules: &RuleSet, text: &str) -> Decided {
    route_explained(rules, text).0
}

/// [`route`], with the rule decision it came from: every matching rule and every exclusion, for
/// callers that show how a message was decided.
pub fn route_explained(rules: &RuleSet, text: &str) -> (Decided, Decision) {
    let decision = rules.decide(text);
    (decided_by_rules(rules, &decision), decision)
}

fn decided_by_rules(rules: &RuleSet, decision: &Decision) -> Decided {
    let Some(winner) = decision.winner() else {
        let mut why = "no rule matched".to_string();
        if let Some(exclusion) = decision.excluded.first() {
            let _ = write!(
                why,
                " ({} excluded by {})",
                rules.rule(exclusion.rule).id,
                rules.term(exclusion.term)
            );
        }
        return Decided {
            reply_key: Some("fallback".into()),
            why,
            ..Decided::default()
        };
    };
    let rule = rules.rule(winner.rule);
    let mut terms: Vec<String> = winner
        .terms
        .iter()
        .map(|&t| rules.term(t).to_string())
        .collect();
    terms.extend(winner.regex_match.clone());
    Decided {
        kind: match rule.action {
            Action::Reply { .. } => OutcomeKind::Reply,
            Action::Escalate { .. } => OutcomeKind::Escalate,
            Action::Ignore => OutcomeKind::Ignore,
        },
        topic: Some(rule.topic),
        rule: Some(rule.id.clone()),
        queue: rule.action.queue(),
        reply_key: rule.action.reply_key().map(str::to_string),
        by: DecidedBy::Rule,
        why: format!("rule {}: {}", rule.id, terms.join(", ")),
        terms,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::rules::{Layer, load};

    fn fixture() -> RuleSet {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
        match load(&[Layer::overlay(&root)]) {
            Ok(loaded) => loaded.rules,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn each_kind_of_outcome_says_what_decided_it() {
        let rules = fixture();
        let cases = [
            (
                "我要退貨",
                Decided {
                    kind: OutcomeKind::Escalate,
                    topic: Some(Topic::Refund),
                    rule: Some("refund.request".into()),
                    queue: Some(Queue::Refund),
                    reply_key: Some("refund_ack".into()),
                    by: DecidedBy::Rule,
                    terms: vec!["退货".into()],
                    why: "rule refund.request: 退货".into(),
                },
            ),
            (
                "质量太差了",
                Decided {
                    kind: OutcomeKind::Escalate,
                    topic: Some(Topic::AfterSale),
                    rule: Some("after_sale.quality".into()),
                    queue: Some(Queue::AfterSale),
                    reply_key: Some("after_sale_ack".into()),
                    by: DecidedBy::Rule,
                    terms: vec!["质量".into(), "差".into()],
                    why: "rule after_sale.quality: 质量, 差".into(),
                },
            ),
            (
                "破损了 单号123",
                Decided {
                    kind: OutcomeKind::Escalate,
                    topic: Some(Topic::AfterSale),
                    rule: Some("after_sale.order_number".into()),
                    queue: Some(Queue::AfterSale),
                    reply_key: Some("after_sale_ack".into()),
                    by: DecidedBy::Rule,
                    terms: vec!["破损了单号".into()],
                    why: "rule after_sale.order_number: 破损了单号".into(),
                },
            ),
            (
                "好的",
                Decided {
                    kind: OutcomeKind::Ignore,
                    topic: Some(Topic::Thanks),
                    rule: Some("thanks.ack".into()),
                    by: DecidedBy::Rule,
                    terms: vec!["好的".into()],
                    why: "rule thanks.ack: 好的".into(),
                    ..Default::default()
                },
            ),
            (
                "不想退款了",
                Decided {
                    reply_key: Some("fallback".into()),
                    why: "no rule matched (refund.request excluded by 不想退)".into(),
                    ..Default::default()
                },
            ),
            (
                "随便问问",
                Decided {
                    reply_key: Some("fallback".into()),
                    why: "no rule matched".into(),
                    ..Default::default()
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(route(&rules, text), expected, "route({text:?})");
        }
    }

    #[test]
    fn the_default_is_the_fallback_and_names_no_topic() {
        let decided = Decided::default();
        assert_eq!(decided.kind, OutcomeKind::Fallback);
        assert_eq!(decided.by.as_str(), "none");
        assert_eq!(decided.topic_name(), "fallback");
    }
}
