//! `xiaoer eval FILE.jsonl`: score routing on labelled buyer messages, so rule work is measured.
//!
//! Each line is `{"text", "expect": "escalate"|"answer"|"quiet", "accept": [...], "label"}`: an
//! escalation's `accept[0]` is the right queue; an answer's `accept` lists acceptable topics;
//! quiet messages (acknowledgements, praise) must only not be escalated.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::CliError;
use crate::routing::{OutcomeKind, route};
use crate::rules::RuleSet;

#[derive(Debug, Deserialize)]
struct Labelled {
    text: String,
    expect: Expect,
    #[serde(default)]
    accept: Vec<String>,
    #[serde(default)]
    label: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Escalate,
    Answer,
    Quiet,
}

/// A count out of a total.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Ratio {
    pub hit: u64,
    pub of: u64,
}

impl Ratio {
    pub fn value(self) -> f64 {
        if self.of == 0 {
            0.0
        } else {
            self.hit as f64 / self.of as f64
        }
    }

    fn add(&mut self, hit: bool) {
        self.of += 1;
        self.hit += u64::from(hit);
    }
}

/// Per-label tally, for finding the weakest kinds of messages.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LabelScore {
    pub label: String,
    pub total: u64,
    pub wrong: u64,
    /// The most common wrong outcome, e.g. `fallback` or `escalate:refund`.
    pub typical_miss: Option<String>,
    #[serde(skip)]
    misses: BTreeMap<String, u64>,
}

/// The figures `eval` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scores {
    pub messages: u64,
    pub skipped_lines: u64,
    /// Share of must-escalate messages that were escalated.
    pub escalation_recall: Ratio,
    /// Share of escalated must-escalate messages sent to the right queue (`accept[0]`).
    pub right_queue: Ratio,
    /// Share of escalated must-escalate messages sent to any acceptable queue.
    pub acceptable_queue: Ratio,
    /// Share of answer and quiet messages that were escalated anyway.
    pub false_escalation: Ratio,
    /// Share of answer messages that got a real (non-fallback) reply.
    pub answered: Ratio,
    /// Share of answered messages whose rule topic is acceptable.
    pub topic_accuracy: Ratio,
    pub labels: Vec<LabelScore>,
}

/// One message routed differently from its label.
#[derive(Debug, Serialize)]
pub struct Miss<'a> {
    pub line: u64,
    pub label: &'a str,
    pub expect: &'a str,
    pub got: String,
    pub rule: Option<&'a str>,
    pub text: &'a str,
}

/// Scores every line of `input`. `progress` is called every few hundred lines with the count so
/// far; `on_miss` sees every misrouted message.
pub fn score(
    rules: &RuleSet,
    input: impl BufRead,
    mut progress: impl FnMut(u64),
    mut on_miss: impl FnMut(&Miss<'_>),
) -> Result<Scores, CliError> {
    let mut scores = Scores::default();
    let mut labels: BTreeMap<String, LabelScore> = BTreeMap::new();
    for (index, line) in input.lines().enumerate() {
        let line = line.map_err(CliError::io("read the labelled file"))?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(item) = serde_json::from_str::<Labelled>(&line) else {
            scores.skipped_lines += 1;
            continue;
        };
        scores.messages += 1;
        if scores.messages % 500 == 0 {
            progress(scores.messages);
        }
        let outcome = route(rules, &item.text);
        let escalated = outcome.kind == OutcomeKind::Escalate;
        let queue = outcome.queue.map(|q| q.as_str());
        let right = match item.expect {
            Expect::Escalate => {
                scores.escalation_recall.add(escalated);
                if escalated {
                    let right = item.accept.first().map(String::as_str) == queue;
                    scores.right_queue.add(right);
                    scores
                        .acceptable_queue
                        .add(queue.is_some_and(|q| item.accept.iter().any(|a| a == q)));
                    right
                } else {
                    false
                }
            }
            Expect::Answer => {
                scores.false_escalation.add(escalated);
                let answered = outcome.kind == OutcomeKind::Reply;
                scores.answered.add(answered);
                if answered {
                    let on_topic = item.accept.iter().any(|a| a == outcome.topic_name());
                    scores.topic_accuracy.add(on_topic);
                    on_topic
                } else {
                    false
                }
            }
            Expect::Quiet => {
                scores.false_escalation.add(escalated);
                !escalated
            }
        };
        let label = labels
            .entry(item.label.clone())
            .or_insert_with(|| LabelScore {
                label: item.label.clone(),
                ..Default::default()
            });
        label.total += 1;
        if !right {
            label.wrong += 1;
            let got = match (outcome.kind, queue) {
                (OutcomeKind::Escalate, Some(queue)) => format!("escalate:{queue}"),
                (kind, _) if kind == OutcomeKind::Reply || kind == OutcomeKind::Ignore => {
                    format!("{}:{}", kind.as_str(), outcome.topic_name())
                }
                (kind, _) => kind.as_str().to_string(),
            };
            *label.misses.entry(got.clone()).or_default() += 1;
            on_miss(&Miss {
                line: index as u64 + 1,
                label: &item.label,
                expect: match item.expect {
                    Expect::Escalate => "escalate",
                    Expect::Answer => "answer",
                    Expect::Quiet => "quiet",
                },
                got,
                rule: outcome.rule.as_deref(),
                text: &item.text,
            });
        }
    }
    let mut labels: Vec<LabelScore> = labels
        .into_values()
        .map(|mut label| {
            label.typical_miss = label
                .misses
                .iter()
                .max_by_key(|(_, count)| **count)
                .map(|(miss, count)| format!("{miss} ×{count}"));
            label
        })
        .collect();
    labels.sort_by(|a, b| {
        let share = |l: &LabelScore| l.wrong as f64 / l.total.max(1) as f64;
        share(b).total_cmp(&share(a)).then(b.wrong.cmp(&a.wrong))
    });
    scores.labels = labels;
    Ok(scores)
}

/// The targets the shipped rule pack is held to.
pub const TARGETS: &[(&str, f64, bool)] = &[
    ("escalation recall", 0.90, true),
    ("right queue", 0.85, true),
    ("false escalation", 0.04, false),
    ("answered", 0.80, true),
    ("topic accuracy", 0.90, true),
];

/// Writes the human report.
pub fn report(scores: &Scores, worst: usize, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{} messages scored", scores.messages)?;
    if scores.skipped_lines > 0 {
        writeln!(
            out,
            "{} lines skipped (not a labelled message)",
            scores.skipped_lines
        )?;
    }
    let rows = [
        (scores.escalation_recall, "of must-escalate messages"),
        (scores.right_queue, "of those escalated"),
        (scores.false_escalation, "of answer and quiet messages"),
        (scores.answered, "of answer messages got a real reply"),
        (scores.topic_accuracy, "of those answered"),
    ];
    for ((ratio, of), (name, target, at_least)) in rows.iter().zip(TARGETS) {
        let met = if *at_least {
            ratio.value() >= *target
        } else {
            ratio.value() <= *target
        };
        writeln!(
            out,
            "{name:<18} {:.3}  ({}/{} {of})   target {} {target:.2} {}",
            ratio.value(),
            ratio.hit,
            ratio.of,
            if *at_least { "≥" } else { "≤" },
            if met { "ok" } else { "MISSED" }
        )?;
    }
    writeln!(
        out,
        "{:<18} {:.3}  ({}/{})",
        "acceptable queue",
        scores.acceptable_queue.value(),
        scores.acceptable_queue.hit,
        scores.acceptable_queue.of
    )?;
    let worst_labels: Vec<_> = scores
        .labels
        .iter()
        .filter(|l| l.wrong > 0)
        .take(worst)
        .collect();
    if !worst_labels.is_empty() {
        writeln!(
            out,
            "\nworst labels (wrong/total, most common wrong outcome):"
        )?;
        for label in worst_labels {
            writeln!(
                out,
                "  {:>4}/{:<4} {:<36} {}",
                label.wrong,
                label.total,
                label.label,
                label.typical_miss.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(())
}
