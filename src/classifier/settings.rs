//! `rules/model/model.toml`: how the model is trained, and how sure it must be before routing
//! lets it decide. Thresholds live beside the model, not in the daemon's config, because `route`,
//! `explain` and `eval` must decide exactly as the daemon does, and they read only the rules
//! directory; a reload picks up an edited threshold like an edited rule.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// The trained model, relative to `rules/model/`.
    #[serde(default = "default_file")]
    pub file: String,
    #[serde(default)]
    pub training: TrainingSettings,
    #[serde(default)]
    pub thresholds: Thresholds,
}

fn default_file() -> String {
    "xiaoer.model".into()
}

/// How `xiaoer train` trains. Changing any of these changes the model.
#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSettings {
    /// log2 of the number of hashed n-gram buckets.
    pub buckets_log2: u8,
    /// Passes over the training text.
    pub epochs: u32,
    /// Starting SGD step, decaying linearly to zero.
    pub learning_rate: f32,
    /// The order the examples are visited in comes from this.
    pub seed: u64,
    /// How many times each rule's own examples count.
    pub rule_example_weight: u32,
    /// How much smaller decisions are weighted up: each example's step is multiplied by
    /// (average examples per decision / its decision's examples) to this power; 0 trains on the
    /// text as written, 1 gives every decision the same total weight.
    pub balance: f32,
}

impl Default for TrainingSettings {
    fn default() -> Self {
        TrainingSettings {
            buckets_log2: 20,
            epochs: 20,
            learning_rate: 1.0,
            seed: 2026,
            rule_example_weight: 3,
            balance: 0.0,
        }
    }
}

/// How sure the model must be (its top probability) before it decides. Chosen on a labelled
/// set with `xiaoer eval --sweep`; docs/rules.md has the curve.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// No rule matched: answer with the model's topic reply.
    pub answer: f32,
    /// No rule matched: escalate to the model's queue.
    pub escalate: f32,
    /// No rule matched: stay quiet.
    pub quiet: f32,
    /// A rule marked `weak = true` escalated and the model's top decision is an answer: with
    /// this much of the model's weight off every queue, the answer replaces it (a worry before
    /// buying).
    pub overrule_weak: f32,
    /// The same with quiet as the top decision: silence replaces it (a re-order). Kept
    /// higher than `overrule_weak`, because silence on a real problem is the worst outcome.
    pub overrule_weak_quiet: f32,
    /// A rule answered: with this much of the model's weight on the queues together, its
    /// likeliest queue replaces the answer.
    pub overrule_answer: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            answer: 0.45,
            escalate: 0.5,
            quiet: 0.5,
            overrule_weak: 0.9,
            overrule_weak_quiet: 0.95,
            overrule_answer: 0.75,
        }
    }
}

impl Thresholds {
    /// Every threshold at `value`: 0 lets the model decide wherever routing asks it, above 1
    /// never (for measuring the rules or the model alone).
    pub fn all_at(value: f32) -> Thresholds {
        Thresholds {
            answer: value,
            escalate: value,
            quiet: value,
            overrule_weak: value,
            overrule_weak_quiet: value,
            overrule_answer: value,
        }
    }

    /// Every threshold with its name, for checks and reports.
    pub fn named(&self) -> [(&'static str, f32); 6] {
        [
            ("answer", self.answer),
            ("escalate", self.escalate),
            ("quiet", self.quiet),
            ("overrule_weak", self.overrule_weak),
            ("overrule_weak_quiet", self.overrule_weak_quiet),
            ("overrule_answer", self.overrule_answer),
        ]
    }

    /// Sets one threshold by name (for `eval --threshold name=value` and `--sweep`), or the
    /// three no-rule ones together for `unmatched`. False for an unknown name.
    pub fn set(&mut self, name: &str, value: f32) -> bool {
        if name == "unmatched" {
            self.answer = value;
            self.escalate = value;
            self.quiet = value;
            return true;
        }
        let slot = match name {
            "answer" => &mut self.answer,
            "escalate" => &mut self.escalate,
            "quiet" => &mut self.quiet,
            "overrule_weak" => &mut self.overrule_weak,
            "overrule_weak_quiet" => &mut self.overrule_weak_quiet,
            "overrule_answer" => &mut self.overrule_answer,
            _ => return false,
        };
        *slot = value;
        true
    }
}
