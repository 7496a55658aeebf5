//! `xiaoer eval FILE.jsonl`: score routing on labelled buyer messages, so rule work is measured.
//!
//! Each line is `{"text", "expect": "escalate"|"answer"|"either"|"quiet", "accept": [...],
//! "label"}`: an escalation's `accept[0]` is the right queue (the others are tolerable); an
//! answer's `accept` lists acceptable topics; `either` accepts `[queue, topic]`: escalating to
//! that queue or answering with that topic are both right; quiet messages (acknowledgements,
//! praise) must only not be escalated. The format is documented in docs/rules.md.
//!
//! Topics that stand in for each other (`shipping`/`logistics`) and queues that do
//! (`bad_review`/`complaint`) are listed in `accept` by the file, not assumed here.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::CliError;
use crate::classifier::Thresholds;
use crate::routing::{DecidedBy, OutcomeKind, route_by_model_only, route_with};
use crate::rules::RuleSet;

/// Unknown fields are refused, so a file in another shape (`"queue": …` instead of `"accept"`)
/// is reported rather than scored as if it accepted nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Labelled {
    text: String,
    expect: Expect,
    #[serde(default)]
    accept: Vec<String>,
    #[serde(default)]
    label: String,
    /// Where the message came from; kept for people, not scored.
    #[serde(default, rename = "source")]
    _source: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Escalate,
    Answer,
    Either,
    Quiet,
}

impl Expect {
    fn as_str(self) -> &'static str {
        match self {
            Expect::Escalate => "escalate",
            Expect::Answer => "answer",
            Expect::Either => "either",
            Expect::Quiet => "quiet",
        }
    }
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
    /// Why the first few skipped lines were skipped.
    pub skipped: Vec<String>,
    /// Share of must-escalate messages that were escalated.
    pub escalation_recall: Ratio,
    /// Share of escalated must-escalate messages sent to the right queue (`accept[0]`).
    pub right_queue: Ratio,
    /// Share of escalated must-escalate messages sent to any acceptable queue.
    pub acceptable_queue: Ratio,
    /// Share of answer and quiet messages that were escalated anyway (`either` messages are
    /// not counted: escalating them is allowed).
    pub false_escalation: Ratio,
    /// Share of answer and either messages handled: a real (non-fallback) reply to an answer
    /// message, or on an either message the allowed escalation or a reply on its topic.
    pub handled: Ratio,
    /// Share of answer messages that got a real (non-fallback) reply.
    pub answered: Ratio,
    /// Share of answered messages whose topic is acceptable.
    pub topic_accuracy: Ratio,
    /// Share of decisions the model made (the rest were rules or the fallback).
    pub by_model: Ratio,
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

/// How messages are decided while scoring.
#[derive(Debug, Clone, Copy)]
pub enum How<'a> {
    /// As the daemon does, with these thresholds instead of the rule set's when given.
    Routing(Option<&'a Thresholds>),
    /// By the model alone, no rules, no thresholds: how far the model carries by itself.
    ModelOnly,
}

/// Scores every line of `input`. `progress` is called every few hundred lines with the count so
/// far; `on_miss` sees every misrouted message.
pub fn score(
    rules: &RuleSet,
    how: How<'_>,
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
        let item = match serde_json::from_str::<Labelled>(&line) {
            Ok(item) => item,
            Err(error) => {
                scores.skipped_lines += 1;
                if scores.skipped.len() < 3 {
                    scores.skipped.push(format!("line {}: {error}", index + 1));
                }
                continue;
            }
        };
        scores.messages += 1;
        if scores.messages % 500 == 0 {
            progress(scores.messages);
        }
        let outcome = match how {
            How::Routing(thresholds) => route_with(rules, &item.text, thresholds),
            How::ModelOnly => route_by_model_only(rules, &item.text),
        };
        scores.by_model.add(outcome.by == DecidedBy::Model);
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
                scores.handled.add(answered);
                if answered {
                    let on_topic = item.accept.iter().any(|a| a == outcome.topic_name());
                    scores.topic_accuracy.add(on_topic);
                    on_topic
                } else {
                    false
                }
            }
            Expect::Either => {
                let right = match outcome.kind {
                    OutcomeKind::Escalate => {
                        queue.is_some() && item.accept.first().map(String::as_str) == queue
                    }
                    OutcomeKind::Reply => {
                        item.accept.get(1).map(String::as_str) == Some(outcome.topic_name())
                    }
                    OutcomeKind::Fallback | OutcomeKind::Ignore => false,
                };
                scores.handled.add(right);
                right
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
                expect: item.expect.as_str(),
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
    if scores.messages == 0 {
        let mut why = "no labelled messages in the file".to_string();
        if let Some(first) = scores.skipped.first() {
            why.push_str(&format!(
                " ({first}); each line must be {{\"text\", \"expect\": \"escalate\"|\"answer\"|\"either\"|\"quiet\", \"accept\": [...]}}, see docs/rules.md"
            ));
        }
        return Err(CliError::Input(why));
    }
    Ok(scores)
}

/// The targets the shipped rule pack is held to.
pub const TARGETS: &[(&str, f64, bool)] = &[
    ("escalation recall", 0.95, true),
    ("right queue", 0.92, true),
    ("false escalation", 0.02, false),
    ("handled", 0.92, true),
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
        for why in &scores.skipped {
            writeln!(out, "  {why}")?;
        }
    }
    let rows = [
        (scores.escalation_recall, "of must-escalate messages"),
        (scores.right_queue, "of those escalated"),
        (scores.false_escalation, "of answer and quiet messages"),
        (scores.handled, "of answer and either messages"),
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
    for (name, ratio) in [
        ("acceptable queue", scores.acceptable_queue),
        ("answered", scores.answered),
        ("decided by model", scores.by_model),
    ] {
        writeln!(
            out,
            "{name:<18} {:.3}  ({}/{})",
            ratio.value(),
            ratio.hit,
            ratio.of
        )?;
    }
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

/// The thresholds a sweep tries: 0.30 to 0.95 in steps of 0.05, then 0.97 and 0.99.
pub fn sweep_values() -> Vec<f32> {
    let mut values: Vec<f32> = (6..=19).map(|step| step as f32 * 0.05).collect();
    values.extend([0.97, 0.99]);
    values
}

/// One row of a sweep table.
pub fn sweep_row(value: f32, scores: &Scores, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{value:>6.2}  {:>6.3}  {:>6.3}  {:>6.3}  {:>6.3}  {:>6.3}  {:>6.3}",
        scores.escalation_recall.value(),
        scores.right_queue.value(),
        scores.false_escalation.value(),
        scores.handled.value(),
        scores.topic_accuracy.value(),
        scores.by_model.value(),
    )
}

/// The header of a sweep table.
pub fn sweep_header(name: &str, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "sweeping threshold `{name}`")?;
    writeln!(
        out,
        "{:>6}  {:>6}  {:>6}  {:>6}  {:>6}  {:>6}  {:>6}",
        "value", "recall", "queue", "false", "handl", "topic", "model"
    )
}
