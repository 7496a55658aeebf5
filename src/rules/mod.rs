//! Rules: the files ops teams edit, compiled into a [`RuleSet`] that decides what to do with a
//! buyer message.
//!
//! The flow is [`file`] (raw serde types with spans) → `compile` (validation collecting every
//! error, then one keyword automaton per layer) → [`RuleSet::decide`], which is pure and
//! synchronous: text in, [`Decision`] out, no I/O, safe to share across threads.
//!
//! A shop's set is the shared set's compiled rules, shared by reference, plus the shop overlay's
//! own compiled rules and the shared rules it switches off: loading twenty shops compiles the
//! shared rules once (see [`SharedRules::with_overlays`]).

mod compile;
mod decide;
mod file;
mod lint;
mod load;
mod normalise;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use daachorse::CharwiseDoubleArrayAhoCorasick;
use regex::Regex;

pub use crate::model::{Queue, Topic};
pub use decide::{Criterion, Decision, Exclusion, RuleMatch};
pub use load::{
    Layer, LoadError, LoadTimings, Loaded, SharedRules, load, load_shared, load_without_model,
};
pub use normalise::normalise;

use crate::classifier::serving::ServingModel;
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
    /// `weak = true`: an escalation the model may overrule when it is sure the message is a
    /// worry before buying or needs no one (see [`crate::routing`]).
    pub weak: bool,
    /// Term numbers of the `any` terms, in the rule's own layer (see [`RuleSet::term_of_rule`]).
    pub(crate) any: Vec<u32>,
    /// Where each `any` term is written in the rule file, in the order of [`Rule::any`].
    pub(crate) any_spans: Vec<Range<usize>>,
    /// `shared_keywords`: normalised `any` keywords the rule shares with rules of other topics
    /// on purpose, each with where it is written.
    pub(crate) shared_keywords: Vec<(String, Range<usize>)>,
    pub(crate) all_groups: u16,
    /// (group, term number in the rule's own layer) of the `all` terms.
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
}

impl Rule {
    pub fn escalates(&self) -> bool {
        matches!(self.action, Action::Escalate { .. })
    }

    pub fn has_regex(&self) -> bool {
        !self.regexes.is_empty()
    }

    /// Whether the rule marks normalised keyword `text` as shared with other topics on purpose.
    pub(crate) fn shares_keyword(&self, text: &str) -> bool {
        self.shared_keywords
            .iter()
            .any(|(keyword, _)| keyword == text)
    }
}

/// The compiled rules of one layer — the shared set, or a shop overlay — with their keyword
/// automaton. Rule and term numbers in it are its own; [`RuleSet`] maps them into one numbering.
#[derive(Default)]
pub(crate) struct RuleTable {
    rules: Vec<Rule>,
    by_id: HashMap<String, u32>,
    /// `None` when no rule has keywords (the automaton cannot be empty).
    automaton: Option<CharwiseDoubleArrayAhoCorasick<u32>>,
    term_text: Vec<String>,
    term_chars: Vec<u32>,
    term_uses: Vec<Vec<TermUse>>,
    unfiltered: Vec<u32>,
}

impl RuleTable {
    /// The table's patterns found in `text`, overlapping, by the table's own term numbers.
    fn terms_in<'a>(&'a self, text: &'a str) -> impl Iterator<Item = u32> + 'a {
        self.terms_at(text).map(|(_, term)| term)
    }

    /// [`RuleTable::terms_in`], with the byte offset each is found at.
    fn terms_at<'a>(&'a self, text: &'a str) -> impl Iterator<Item = (usize, u32)> + 'a {
        self.automaton
            .iter()
            .flat_map(move |a| a.find_overlapping_iter(text))
            .map(|found| (found.start(), found.value()))
    }

    /// The table's term whose text is exactly `text`: the automaton finds every pattern inside
    /// `text`, so one spanning all of it is that term.
    fn term_id(&self, text: &str) -> Option<u32> {
        self.automaton.as_ref().and_then(|a| {
            a.find_overlapping_iter(text)
                .find(|found| found.start() == 0 && found.end() == text.len())
                .map(|found| found.value())
        })
    }
}

/// A compiled, validated rule set with its replies. Immutable once built; the daemon swaps whole
/// sets on reload.
///
/// Rules are numbered across both layers: the shared rules first, then the overlay's. The same
/// goes for terms (see [`RuleSet::term`]).
pub struct RuleSet {
    shared: Arc<RuleTable>,
    /// The shop overlay's rules; empty in the shared set itself.
    own: RuleTable,
    /// Shared rules the overlay replaced or disabled, by shared rule number; empty when none.
    masked: Vec<bool>,
    masked_count: usize,
    replies: Replies,
    /// The learned model behind the rules, shared by a shop's set with the shared set.
    model: Option<Arc<ServingModel>>,
}

impl RuleSet {
    /// A set of one layer's rules.
    fn single(table: RuleTable, replies: Replies) -> RuleSet {
        RuleSet {
            shared: Arc::new(table),
            own: RuleTable::default(),
            masked: Vec::new(),
            masked_count: 0,
            replies,
            model: None,
        }
    }

    /// The shared rules of `base` (not its overlay, if it has one) with `own` on top, leaving
    /// out the shared rules numbered in `masked`.
    fn overlaid(base: &RuleSet, own: RuleTable, masked: Vec<bool>, replies: Replies) -> RuleSet {
        let masked_count = masked.iter().filter(|&&m| m).count();
        RuleSet {
            shared: Arc::clone(&base.shared),
            own,
            masked,
            masked_count,
            replies,
            model: base.model.clone(),
        }
    }

    /// The learned model consulted when rules do not settle a message, if the rules directory
    /// has one.
    pub fn model(&self) -> Option<&ServingModel> {
        self.model.as_deref()
    }

    pub(crate) fn set_model(&mut self, model: Option<Arc<ServingModel>>) {
        self.model = model;
    }

    /// Every rule in force: the shared ones not switched off, then the overlay's.
    pub fn rules(&self) -> Rules<'_> {
        Rules {
            set: self,
            next: 0,
            remaining: self.rule_count(),
        }
    }

    pub fn rule_count(&self) -> usize {
        self.shared.rules.len() - self.masked_count + self.own.rules.len()
    }

    /// Rule number `index`, as found in a [`Decision`].
    ///
    /// # Panics
    ///
    /// When `index` is not a rule number of this set.
    pub fn rule(&self, index: usize) -> &Rule {
        match index.checked_sub(self.shared.rules.len()) {
            None => &self.shared.rules[index],
            Some(own) => &self.own.rules[own],
        }
    }

    pub fn rule_by_id(&self, id: &str) -> Option<&Rule> {
        self.index_of(id).map(|index| self.rule(index))
    }

    pub(crate) fn index_of(&self, id: &str) -> Option<usize> {
        if let Some(&own) = self.own.by_id.get(id) {
            return Some(self.shared.rules.len() + own as usize);
        }
        self.shared
            .by_id
            .get(id)
            .map(|&shared| shared as usize)
            .filter(|&shared| !self.is_masked(shared))
    }

    /// Whether rule number `index` is a shared rule this set switched off.
    pub(crate) fn is_masked(&self, index: usize) -> bool {
        self.masked.get(index).copied().unwrap_or(false)
    }

    /// How many rules the shared layer has, switched off or not: overlay rules are numbered
    /// from here.
    pub(crate) fn shared_rule_count(&self) -> usize {
        self.shared.rules.len()
    }

    /// How many terms both layers have: terms are numbered below this.
    pub(crate) fn term_total(&self) -> u32 {
        (self.shared.term_text.len() + self.own.term_text.len()) as u32
    }

    /// The text of term `term` as rule number `rule` numbers it in [`Rule::any`] and
    /// [`Rule::all`] (by its own layer's numbering).
    pub(crate) fn term_of_rule(&self, rule: usize, term: u32) -> &str {
        let table = if self.is_own(rule) {
            &self.own
        } else {
            &self.shared
        };
        table
            .term_text
            .get(term as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Whether rule number `index` comes from the shop overlay.
    pub(crate) fn is_own(&self, index: usize) -> bool {
        index >= self.shared.rules.len()
    }

    /// Every rule in force with its number.
    pub(crate) fn numbered_rules(&self) -> impl Iterator<Item = (usize, &Rule)> {
        let offset = self.shared.rules.len();
        self.shared
            .rules
            .iter()
            .enumerate()
            .filter(|(index, _)| !self.is_masked(*index))
            .chain(
                self.own
                    .rules
                    .iter()
                    .enumerate()
                    .map(move |(index, rule)| (offset + index, rule)),
            )
    }

    /// The normalised text of term `term`.
    pub fn term(&self, term: u32) -> &str {
        let (table, term, _) = self.term_table(term);
        table
            .term_text
            .get(term as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The layer term `term` belongs to, its number there, and where that layer's rules start.
    fn term_table(&self, term: u32) -> (&RuleTable, u32, u32) {
        let shared_terms = self.shared.term_text.len() as u32;
        match term.checked_sub(shared_terms) {
            None => (&self.shared, term, 0),
            Some(own) => (&self.own, own, self.shared.rules.len() as u32),
        }
    }

    pub(crate) fn term_chars(&self, term: u32) -> u32 {
        let (table, term, _) = self.term_table(term);
        table.term_chars.get(term as usize).copied().unwrap_or(0)
    }

    /// Every term of either layer found in `text`, overlapping.
    pub(crate) fn terms_in<'a>(&'a self, text: &'a str) -> impl Iterator<Item = u32> + 'a {
        self.shared.terms_in(text).chain(self.own_terms_in(text))
    }

    /// The overlay's terms found in `text`.
    pub(crate) fn own_terms_in<'a>(&'a self, text: &'a str) -> impl Iterator<Item = u32> + 'a {
        self.own_terms_at(text).map(|(_, term)| term)
    }

    /// The overlay's terms found in `text`, with the byte offset each is found at.
    pub(crate) fn own_terms_at<'a>(
        &'a self,
        text: &'a str,
    ) -> impl Iterator<Item = (usize, u32)> + 'a {
        let offset = self.shared.term_text.len() as u32;
        self.own
            .terms_at(text)
            .map(move |(at, term)| (at, offset + term))
    }

    /// How the rules in force use term `term`, by rule number.
    pub(crate) fn term_uses(&self, term: u32) -> impl Iterator<Item = TermUse> + '_ {
        let (table, local, offset) = self.term_table(term);
        table
            .term_uses
            .get(local as usize)
            .into_iter()
            .flatten()
            .map(move |use_| TermUse {
                rule: offset + use_.rule,
                role: use_.role,
            })
            .filter(|use_| !self.is_masked(use_.rule as usize))
    }

    /// The terms whose text is exactly `text`, one per layer that has it.
    pub(crate) fn terms_named(&self, text: &str) -> impl Iterator<Item = u32> {
        let offset = self.shared.term_text.len() as u32;
        self.shared
            .term_id(text)
            .into_iter()
            .chain(self.own.term_id(text).map(|own| offset + own))
    }

    /// Regex rules in force that run on every message.
    pub(crate) fn unfiltered(&self) -> impl Iterator<Item = u32> + '_ {
        let offset = self.shared.rules.len() as u32;
        self.shared
            .unfiltered
            .iter()
            .copied()
            .filter(|&rule| !self.is_masked(rule as usize))
            .chain(self.own.unfiltered.iter().map(move |&rule| offset + rule))
    }

    /// Whether any overlay rule could match normalised `text`: it has a term in it, or runs its
    /// regex on everything.
    pub(crate) fn own_rules_may_match(&self, text: &str) -> bool {
        !self.own.unfiltered.is_empty() || self.own_terms_in(text).next().is_some()
    }

    pub fn replies(&self) -> &Replies {
        &self.replies
    }

    /// How many distinct keywords the rules in force use.
    pub fn keyword_count(&self) -> usize {
        let in_use = |term: u32| self.term_uses(term).next().is_some();
        let shared = (0..self.shared.term_text.len() as u32)
            .filter(|&term| in_use(term))
            .count();
        let offset = self.shared.term_text.len() as u32;
        let own_only = self
            .own
            .term_text
            .iter()
            .enumerate()
            .filter(|(_, text)| {
                self.shared
                    .term_id(text)
                    .is_none_or(|shared_term| !in_use(shared_term))
            })
            .filter(|(term, _)| in_use(offset + *term as u32))
            .count();
        shared + own_only
    }
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rule_count())
            .field("shared_rules_switched_off", &self.masked_count)
            .field("overlay_rules", &self.own.rules.len())
            .field(
                "keywords",
                &(self.shared.term_text.len() + self.own.term_text.len()),
            )
            .finish_non_exhaustive()
    }
}

/// The rules in force in a [`RuleSet`], shared ones first.
pub struct Rules<'a> {
    set: &'a RuleSet,
    next: usize,
    remaining: usize,
}

impl<'a> Iterator for Rules<'a> {
    type Item = &'a Rule;

    fn next(&mut self) -> Option<&'a Rule> {
        let total = self.set.shared.rules.len() + self.set.own.rules.len();
        while self.next < total {
            let index = self.next;
            self.next += 1;
            if !self.set.is_masked(index) {
                self.remaining -= 1;
                return Some(self.set.rule(index));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Rules<'_> {}
