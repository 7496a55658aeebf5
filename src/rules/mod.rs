//! Rules: the files ops teams edit, compiled into a [`RuleSet`] that decides what to do with a
//! buyer message.
//!
//! The flow is [`file`] (raw serde types with spans) → [`compile`] (validation collecting every
//! error, then one keyword automaton) → [`RuleSet::decide`], which is pure and synchronous: text in,
//! [`Decision`] out, no I/O, safe to share across threads.

mod compile;
mod decide;
mod file;
mod lint;
mod load;
mod normalise;

use std::collections::HashMap;
use std::ops::Range;

use daachorse::CharwiseDoubleArrayAhoCorasick;
use regex::Regex;

pub use crate::model::{Queue, Topic};
pub use decide::{Decision, Exclusion, RuleMatch};
pub use load::{Layer, LoadError, LoadTimings, Loaded, load};
pub use normalise::normalise;

use crate::diagnostics::{FileId, Location};
use crate::replies::Replies;

/// What a rule does when it wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer with a reply key.
    Reply { reply: String },
    /// Hand the chat to a human queue, acknowledging with a reply key.
    Escalate { queue: Queue, reply: String },
    /// Stay silent.
    Ignore,
}

impl Action {
    pub fn reply_key(&self) -> Option<&str> {
        match self {
            Action::Reply { reply } | Action::Escalate { reply, .. } => Some(reply),
            Action::Ignore => None,
        }
    }

    pub fn queue(&self) -> Option<Queue> {
        match self {
            Action::Escalate { queue, .. } => Some(*queue),
            _ => None,
        }
    }
}

/// How a rule uses a keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    Any,
    All(u8),
    /// The rule may not match when this term is present.
    None,
    /// A literal every match of the rule's regex starts with.
    Gate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TermUse {
    pub rule: u32,
    pub role: Role,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub topic: Topic,
    pub action: Action,
    pub priority: u16,
    /// Automaton pattern ids of the `any` terms.
    pub(crate) any: Vec<u32>,
    pub(crate) all_groups: u16,
    /// (group, automaton pattern id) of the `all` terms.
    pub(crate) all: Vec<(u8, u32)>,
    /// Normalised exclusion terms (for lints and explain).
    pub none: Vec<String>,
    pub(crate) regexes: Vec<Regex>,
    /// A regex-only rule without literals: its regex runs on every message.
    pub(crate) unfiltered: bool,
    /// A regex-only rule whose regex runs when one of its literals is in the text.
    pub(crate) gated: bool,
    pub examples: Vec<(String, Range<usize>)>,
    pub counter_examples: Vec<(String, Range<usize>)>,
    pub file: FileId,
    pub span: Range<usize>,
    pub location: Location,
    /// Position of `id` in byte order among all rules: the last tie-breaker.
    pub(crate) id_rank: u32,
}

impl Rule {
    pub fn escalates(&self) -> bool {
        matches!(self.action, Action::Escalate { .. })
    }

    pub fn has_regex(&self) -> bool {
        !self.regexes.is_empty()
    }
}

/// A compiled, validated rule set with its replies. Immutable once built; the daemon swaps whole
/// sets on reload.
pub struct RuleSet {
    rules: Vec<Rule>,
    by_id: HashMap<String, usize>,
    /// `None` when no rule has keywords (the automaton cannot be empty).
    automaton: Option<CharwiseDoubleArrayAhoCorasick<u32>>,
    term_text: Vec<String>,
    term_chars: Vec<u32>,
    term_uses: Vec<Vec<TermUse>>,
    unfiltered: Vec<u32>,
    replies: Replies,
}

impl RuleSet {
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, index: usize) -> &Rule {
        &self.rules[index]
    }

    pub fn rule_by_id(&self, id: &str) -> Option<&Rule> {
        self.by_id.get(id).map(|&index| &self.rules[index])
    }

    /// The normalised text of automaton pattern `term`.
    pub fn term(&self, term: u32) -> &str {
        self.term_text
            .get(term as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn replies(&self) -> &Replies {
        &self.replies
    }

    /// How many distinct keywords the automaton holds.
    pub fn keyword_count(&self) -> usize {
        self.term_text.len()
    }

    /// The pieces of a decision that callers report: shared by `route`, `explain` and `eval`.
    pub fn outcome(&self, decision: &Decision) -> Outcome<'_> {
        match decision.winner() {
            None => Outcome {
                kind: OutcomeKind::Fallback,
                topic: "fallback",
                rule: None,
                queue: None,
                reply_key: Some("fallback"),
            },
            Some(winner) => {
                let rule = &self.rules[winner.rule];
                Outcome {
                    kind: match rule.action {
                        Action::Reply { .. } => OutcomeKind::Reply,
                        Action::Escalate { .. } => OutcomeKind::Escalate,
                        Action::Ignore => OutcomeKind::Ignore,
                    },
                    topic: rule.topic.as_str(),
                    rule: Some(rule),
                    queue: rule.action.queue(),
                    reply_key: rule.action.reply_key(),
                }
            }
        }
    }
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("keywords", &self.term_text.len())
            .field("unfiltered_regex_rules", &self.unfiltered.len())
            .finish_non_exhaustive()
    }
}

/// What happens to a message, in the terms of the `route` contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Reply,
    Escalate,
    Fallback,
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

#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub kind: OutcomeKind,
    /// The winning rule's topic, or `fallback`.
    pub topic: &'a str,
    pub rule: Option<&'a Rule>,
    pub queue: Option<Queue>,
    pub reply_key: Option<&'a str>,
}
