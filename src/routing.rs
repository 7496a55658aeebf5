//! Routing: what to do with one buyer message, and what decided it.
//!
//! [`route`] is the one place a message becomes a [`Decided`]: the chat worker, `xiaoer route`,
//! `explain` and `eval` all call it, so they cannot disagree. Pure and synchronous: text in,
//! decision out, no I/O.
//!
//! Rules decide first. When the rule set has a learned model ([`crate::classifier`]), it is
//! asked in three cases, each with its own threshold in `rules/model/model.toml`:
//!
//! 1. no rule matched: the model answers, escalates or stays quiet if its top probability
//!    reaches `answer`, `escalate` or `quiet`; otherwise the fallback applies as before;
//! 2. a rule marked `weak = true` escalated and the model's top decision is not an escalation:
//!    if the model puts at least `overrule_weak` of its weight on not escalating (one minus its
//!    summed escalation probability), its answer replaces the escalation (a worry before buying
//!    that names an alarm word); a quiet top decision needs `overrule_weak_quiet` (a re-order);
//! 3. a rule answered: if the model puts at least `overrule_answer` of its weight on escalating
//!    (summed over the queues), its likeliest queue takes the message instead — unless that
//!    queue is the rule's own subject (a refund-topic answer such as the return address is not
//!    overruled by a refund escalation).
//!
//! Cases 2 and 3 weigh escalation as a whole rather than the top probability: a model split
//! between two queues is still sure a person is needed, and one split between two answers is
//! still sure nobody is. On the dev set this gave a better recall/false-escalation curve along
//! the `overrule_weak` sweep (docs/rules.md, "How rules and the model combine").
//!
//! When an escalation rule was vetoed by one of its `none` terms (a negation such as 不会给差评),
//! the rule writer said no on purpose: the model never escalates to that rule's queue, and to
//! another queue only above the `overrule_answer` bar. If the model would have escalated to the
//! vetoed queue and no rule answered, the message is a reassurance or praise naming a problem
//! ("完全没有差评里讲的那股异味") and routing stays quiet instead of falling back.
//!
//! Every other rule decision stands, and the model is not run for it.

use std::fmt::Write as _;

use crate::classifier::{Classifier, Label, Prediction, Thresholds};
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

/// What made the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DecidedBy {
    /// Nothing did: no rule matched, the model (if any) was unsure, the fallback applies.
    #[default]
    Nothing,
    /// A rule matched and won.
    Rule,
    /// The learned model.
    Model,
}

impl DecidedBy {
    /// The name `route` prints in its `by` field.
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Nothing => "none",
            DecidedBy::Rule => "rule",
            DecidedBy::Model => "model",
        }
    }
}

/// What to do with a message, and why. The default is the fallback with nothing matched, so
/// tests can build values with `..Default::default()`.
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// What the deciding rule matched on, normalised: its keywords, then what its regex matched;
    /// for the model, the n-grams that pushed hardest.
    pub terms: Vec<String>,
    /// The model's probability for its top decision, when the model was asked.
    pub confidence: Option<f32>,
    /// One line for people, e.g. `rule refund.request: 退款`.
    pub why: String,
}

impl Decided {
    /// The topic as the `route` contract names it: `fallback` when nothing matched.
    pub fn topic_name(&self) -> &'static str {
        self.topic.map_or("fallback", Topic::as_str)
    }
}

/// Everything routing looked at for one message, for callers that show it.
#[derive(Debug, Clone)]
pub struct Explained {
    pub decided: Decided,
    /// Every matching rule and every exclusion.
    pub decision: Decision,
    /// What the model thought, whether or not it decided; `None` without a model.
    pub prediction: Option<Prediction>,
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
    route_with(rules, text, None)
}

/// [`route`] with other thresholds than the rule set's (for `eval --threshold` and sweeps).
pub fn route_with(rules: &RuleSet, text: &str, thresholds: Option<&Thresholds>) -> Decided {
    route_inner(rules, text, thresholds, false).decided
}

/// [`route`], with everything it looked at: every matching rule and exclusion, and the model's
/// prediction (always run here, even where routing would not ask it).
pub fn route_explained(rules: &RuleSet, text: &str) -> Explained {
    route_inner(rules, text, None, true)
}

/// Rules first, then the model where routing asks it (or always, with `always_predict`).
fn route_inner(
    rules: &RuleSet,
    text: &str,
    thresholds: Option<&Thresholds>,
    always_predict: bool,
) -> Explained {
    let decision = rules.decide(text);
    let by_rules = decided_by_rules(rules, &decision);
    let asked = model_is_asked(rules, &decision, by_rules.kind);
    let Some(model) = rules.model().filter(|_| asked || always_predict) else {
        return Explained {
            decided: by_rules,
            decision,
            prediction: None,
        };
    };
    let prediction = model.classifier.predict(&decision.normalised);
    let decided = if asked {
        let thresholds = thresholds.unwrap_or(model.thresholds());
        combine(
            rules,
            &model.classifier,
            by_rules,
            &decision,
            &prediction,
            thresholds,
        )
    } else {
        by_rules
    };
    Explained {
        decided,
        decision,
        prediction: Some(prediction),
    }
}

/// What the model alone would decide, ignoring every rule and threshold: for measuring the
/// model by itself (`xiaoer eval --model-only`). The fallback when the set has no model.
pub fn route_by_model_only(rules: &RuleSet, text: &str) -> Decided {
    let decision = rules.decide(text);
    let Some(model) = rules.model() else {
        return decided_by_rules(rules, &decision);
    };
    let prediction = model.classifier.predict(&decision.normalised);
    let every = Thresholds::all_at(0.0);
    combine(
        rules,
        &model.classifier,
        Decided::default(),
        &decision,
        &prediction,
        &every,
    )
}

/// Whether routing consults the model about what the rules decided (`kind`, from `decision`).
fn model_is_asked(rules: &RuleSet, decision: &Decision, kind: OutcomeKind) -> bool {
    match kind {
        OutcomeKind::Fallback | OutcomeKind::Reply => true,
        OutcomeKind::Escalate => decision
            .winner()
            .is_some_and(|winner| rules.rule(winner.rule).weak),
        OutcomeKind::Ignore => false,
    }
}

fn combine(
    rules: &RuleSet,
    classifier: &Classifier,
    by_rules: Decided,
    decision: &Decision,
    prediction: &Prediction,
    thresholds: &Thresholds,
) -> Decided {
    let (label, probability) = prediction.best();
    if let Label::Escalate(queue) = label
        && vetoed(rules, decision, Some(queue))
    {
        // A rule writer's `none` term said this phrase does not go to this queue ("不会给差评的",
        // "投诉都没理由投诉"); the model does not put it back. With nothing else to say, the
        // message is a reassurance or praise that names a problem: it needs no answer.
        let mut by_rules = by_rules;
        by_rules.confidence = Some(probability);
        if by_rules.kind == OutcomeKind::Fallback {
            return Decided {
                kind: OutcomeKind::Ignore,
                topic: Some(Topic::Thanks),
                by: DecidedBy::Model,
                confidence: Some(probability),
                why: format!(
                    "{}; the model sees {label} {probability:.2} but a rule for that queue was vetoed: \
                     a negation or praise, staying quiet",
                    by_rules.why
                ),
                ..Decided::default()
            };
        }
        let _ = write!(
            by_rules.why,
            "; model said {label} {probability:.2}, but a rule for that queue was vetoed here"
        );
        return by_rules;
    }
    // What the model decides instead, and how sure it is, when it takes over.
    let takes_over = match by_rules.kind {
        OutcomeKind::Fallback => {
            let needed = match label {
                // A rule writer's `none` term vetoed an escalation to another queue here: the
                // model needs the bar it needs to overrule a rule to escalate anyway.
                Label::Escalate(_) if vetoed(rules, decision, None) => {
                    thresholds.overrule_answer.max(thresholds.escalate)
                }
                Label::Escalate(_) => thresholds.escalate,
                Label::Answer(_) => thresholds.answer,
                Label::Quiet => thresholds.quiet,
            };
            (probability >= needed).then_some((label, probability))
        }
        OutcomeKind::Escalate => {
            weak_escalation_gives_way(prediction, thresholds).then_some((label, probability))
        }
        // A rule that answers a refund question on purpose ("退货地址是哪里") is not overruled by
        // a model that has only learned that the subject is refunds.
        OutcomeKind::Reply => answer_gives_way(prediction, thresholds, by_rules.topic),
        OutcomeKind::Ignore => None,
    };
    let Some((label, probability)) = takes_over else {
        let mut by_rules = by_rules;
        by_rules.confidence = Some(probability);
        if by_rules.kind == OutcomeKind::Fallback {
            let _ = write!(by_rules.why, "; model unsure ({label} {probability:.2})");
        }
        return by_rules;
    };
    let terms: Vec<String> = classifier
        .pushes(&decision.normalised, label, 3)
        .into_iter()
        .filter(|push| push.weight > 0.0)
        .map(|push| push.ngram)
        .collect();
    let mut why = format!("model {label} {probability:.2}: {}", terms.join(", "));
    if let Some(rule) = &by_rules.rule {
        let _ = write!(why, " (over rule {rule})");
    }
    Decided {
        kind: match label {
            Label::Escalate(_) => OutcomeKind::Escalate,
            Label::Answer(_) => OutcomeKind::Reply,
            Label::Quiet => OutcomeKind::Ignore,
        },
        topic: Some(label.topic()),
        rule: None,
        queue: match label {
            Label::Escalate(queue) => Some(queue),
            _ => None,
        },
        reply_key: label.reply_key(),
        by: DecidedBy::Model,
        terms,
        confidence: Some(probability),
        why,
    }
}

/// Whether a weak rule's escalation gives way to the model's top decision: an answer when the
/// model puts `overrule_weak` of its weight on not escalating, silence at `overrule_weak_quiet`.
fn weak_escalation_gives_way(prediction: &Prediction, thresholds: &Thresholds) -> bool {
    let calm = 1.0 - prediction.escalation_probability();
    match prediction.best().0 {
        Label::Escalate(_) => false,
        Label::Answer(_) => calm >= thresholds.overrule_weak,
        Label::Quiet => calm >= thresholds.overrule_weak_quiet,
    }
}

/// The queue, and the model's summed weight on escalating, when a rule's answer on
/// `rule_topic` gives way: that weight reaches `overrule_answer` and the likeliest queue is not
/// the answer's own subject.
fn answer_gives_way(
    prediction: &Prediction,
    thresholds: &Thresholds,
    rule_topic: Option<Topic>,
) -> Option<(Label, f32)> {
    let weight = prediction.escalation_probability();
    let &(queue, _) = prediction
        .ranked
        .iter()
        .find(|(label, _)| label.escalates())?;
    (weight >= thresholds.overrule_answer && rule_topic != Some(queue.topic()))
        .then_some((queue, weight))
}

/// Whether an escalation rule — to `queue`, or to any queue when `None` — would have matched
/// but for one of its `none` terms.
fn vetoed(rules: &RuleSet, decision: &Decision, queue: Option<Queue>) -> bool {
    decision.excluded.iter().any(|exclusion| {
        let vetoed = rules.rule(exclusion.rule).action.queue();
        vetoed.is_some() && (queue.is_none() || vetoed == queue)
    })
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
        confidence: None,
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
                    confidence: None,
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
                    confidence: None,
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
                    confidence: None,
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

    fn predicted(ranked: &[(Label, f32)]) -> Prediction {
        Prediction {
            ranked: ranked.to_vec(),
        }
    }

    fn overrule_bars(weak: f32, weak_quiet: f32, answer: f32) -> Thresholds {
        Thresholds {
            overrule_weak: weak,
            overrule_weak_quiet: weak_quiet,
            overrule_answer: answer,
            ..Thresholds::default()
        }
    }

    #[test]
    fn a_weak_escalation_gives_way_by_the_weight_on_not_escalating_not_the_top_answer_alone() {
        let bars = overrule_bars(0.85, 0.95, 0.75);
        // Split between two answers and silence, but sure nobody is needed: overruled.
        let calm = predicted(&[
            (Label::Answer(Topic::Product), 0.5),
            (Label::Answer(Topic::Price), 0.4),
            (Label::Escalate(Queue::AfterSale), 0.1),
        ]);
        assert!(weak_escalation_gives_way(&calm, &bars));
        // The same top answer with half the weight on queues: the escalation stands.
        let torn = predicted(&[
            (Label::Answer(Topic::Product), 0.5),
            (Label::Escalate(Queue::AfterSale), 0.3),
            (Label::Escalate(Queue::Refund), 0.2),
        ]);
        assert!(!weak_escalation_gives_way(&torn, &bars));
        // Silence needs the higher bar.
        let quiet = predicted(&[(Label::Quiet, 0.9), (Label::Escalate(Queue::Refund), 0.1)]);
        assert!(!weak_escalation_gives_way(&quiet, &bars));
        let quieter = predicted(&[(Label::Quiet, 0.97), (Label::Escalate(Queue::Refund), 0.03)]);
        assert!(weak_escalation_gives_way(&quieter, &bars));
    }

    #[test]
    fn an_answer_gives_way_to_the_likeliest_queue_when_the_queues_together_pass_the_bar() {
        let bars = overrule_bars(0.85, 0.95, 0.55);
        let split = predicted(&[
            (Label::Answer(Topic::Shipping), 0.4),
            (Label::Escalate(Queue::AfterSale), 0.35),
            (Label::Escalate(Queue::Refund), 0.25),
        ]);
        let (queue, weight) = answer_gives_way(&split, &bars, Some(Topic::Shipping))
            .expect("0.6 on queues passes a 0.55 bar");
        assert_eq!(queue, Label::Escalate(Queue::AfterSale));
        assert!((weight - 0.6).abs() < 1e-6);
        // Not over an answer on the queue's own subject, and not below the bar.
        let after_sale_topic = Label::Escalate(Queue::AfterSale).topic();
        assert_eq!(
            answer_gives_way(&split, &bars, Some(after_sale_topic)),
            None
        );
        assert_eq!(
            answer_gives_way(
                &split,
                &overrule_bars(0.85, 0.95, 0.7),
                Some(Topic::Shipping)
            ),
            None
        );
    }

    #[test]
    fn the_default_is_the_fallback_and_names_no_topic() {
        let decided = Decided::default();
        assert_eq!(decided.kind, OutcomeKind::Fallback);
        assert_eq!(decided.by.as_str(), "none");
        assert_eq!(decided.topic_name(), "fallback");
    }
}
