//! `xiaoer explain "文本"`: how one message is decided, for people.

use std::fmt::Write as _;

use crate::replies::RenderContext;
use crate::routing::{OutcomeKind, route_explained};
use crate::rules::{Criterion, RuleSet};

/// The explanation of one message as text.
pub fn explain(rules: &RuleSet, text: &str) -> String {
    let explained = route_explained(rules, text);
    let (outcome, decision) = (&explained.decided, &explained.decision);
    let mut out = String::new();
    let _ = writeln!(out, "message:    {text}");
    let _ = writeln!(out, "normalised: {}", decision.normalised);
    if decision.matches.is_empty() {
        let _ = writeln!(out, "matched:    no rule");
    } else {
        let _ = writeln!(
            out,
            "matched:    {} rule{}",
            decision.matches.len(),
            if decision.matches.len() == 1 { "" } else { "s" }
        );
    }
    for (position, found) in decision.matches.iter().enumerate() {
        let rule = rules.rule(found.rule);
        let terms: Vec<&str> = found.terms.iter().map(|&t| rules.term(t)).collect();
        let mut on = terms.join(", ");
        if let Some(regex) = &found.regex_match {
            if !on.is_empty() {
                on.push_str("; ");
            }
            let _ = write!(on, "regex matched \"{regex}\"");
        }
        let _ = writeln!(
            out,
            "  {} {:<28} topic {:<11} priority {:<4} {} chars  on: {}   ({})",
            if position == 0 { "*" } else { " " },
            rule.id,
            rule.topic.as_str(),
            rule.priority,
            found.chars,
            on,
            rule.location,
        );
    }
    for exclusion in &decision.excluded {
        let rule = rules.rule(exclusion.rule);
        let _ = writeln!(
            out,
            "  x {:<28} excluded by `{}`   ({})",
            rule.id,
            rules.term(exclusion.term),
            rule.location
        );
    }
    let why = match (decision.matches.first(), decision.matches.get(1)) {
        (None, _) => "no rule matched, so the fallback reply is sent".to_string(),
        (Some(_), None) => "it is the only matching rule".to_string(),
        (Some(first), Some(second)) => {
            let (a, b) = (rules.rule(first.rule), rules.rule(second.rule));
            match rules.rank_by(first, second).1 {
                Some(Criterion::Priority) => format!(
                    "higher priority than `{}` ({} > {})",
                    b.id, a.priority, b.priority
                ),
                Some(Criterion::Escalation) => format!(
                    "same priority as `{}`, and escalation outranks answers",
                    b.id
                ),
                Some(Criterion::MatchedChars) => format!(
                    "more specific than `{}` ({} vs {} matched characters)",
                    b.id, first.chars, second.chars
                ),
                Some(Criterion::MatchedTerms) => format!("more matched terms than `{}`", b.id),
                Some(Criterion::Id) | None => format!("tied with `{}`; the lower id wins", b.id),
            }
        }
    };
    let _ = writeln!(
        out,
        "winner:     {} — {why}",
        decision
            .winner()
            .map_or("(fallback)", |winner| rules.rule(winner.rule).id.as_str())
    );
    if let (Some(prediction), Some(model)) = (&explained.prediction, rules.model()) {
        let top: Vec<String> = prediction
            .ranked
            .iter()
            .take(3)
            .map(|(label, p)| format!("{label} {p:.2}"))
            .collect();
        let _ = writeln!(out, "model:      {}", top.join(", "));
        let (best, _) = prediction.best();
        let pushes: Vec<String> = model
            .classifier
            .pushes(&decision.normalised, best, 6)
            .iter()
            .map(|push| format!("{} {:+.2}", push.ngram, push.weight))
            .collect();
        let _ = writeln!(out, "  pushed towards {best} by: {}", pushes.join(", "));
    }
    let _ = writeln!(out, "decided by: {} — {}", outcome.by.as_str(), outcome.why);
    let topic = outcome.topic_name();
    let action = match (outcome.kind, outcome.queue) {
        (OutcomeKind::Escalate, Some(queue)) => {
            format!("escalate to queue `{queue}` (topic {topic})")
        }
        (OutcomeKind::Escalate, None) => format!("escalate (topic {topic})"),
        (OutcomeKind::Reply, _) => format!("reply (topic {topic})"),
        (OutcomeKind::Ignore, _) => format!("ignore: stay silent (topic {topic})"),
        (OutcomeKind::Fallback, _) => "fallback reply".to_string(),
    };
    let _ = writeln!(out, "action:     {action}");
    if let Some(key) = outcome.reply_key.as_deref() {
        let context = RenderContext {
            queue: outcome.queue,
            ..Default::default()
        };
        let reply = rules.replies().render(key, 0, &context).unwrap_or_default();
        let _ = writeln!(out, "reply:      [{key}] {reply}");
    }
    out
}
