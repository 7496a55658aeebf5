//! The decision: which rules match a message and which one wins.
//!
//! One pass of each layer's keyword automaton over the normalised text yields every (rule, role,
//! term) hit; hits are grouped by rule and each touched rule is checked against its conditions.
//! Only rules with hits (plus the few unfiltered regex rules) are looked at, so the cost follows
//! the message, not the size of the rule set. [`RuleSet::rank`] is the one definition of which
//! match wins; `explain` and the lints ask it rather than restating it.

use std::cmp::Ordering;

use super::normalise::normalise;
use super::{Role, Rule, RuleSet};

/// A rule that matched, with what it matched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// The rule's number (see [`RuleSet::rule`]).
    pub rule: usize,
    /// Term numbers of the matched `any`/`all` terms (see [`RuleSet::term`]): `any` terms,
    /// then each `all` group's, by text within each.
    pub terms: Vec<u32>,
    /// What the rule's regex matched, if it has one.
    pub regex_match: Option<String>,
    /// Matched characters (keywords plus what the regex matched): the specificity measure.
    pub chars: u32,
}

/// A rule whose conditions held but an exclusion (`none`) term vetoed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    pub rule: usize,
    /// The vetoing term found in the text (the first by text, when several are).
    pub term: u32,
}

/// The result of [`RuleSet::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub normalised: String,
    /// Every matching rule, the winner first.
    pub matches: Vec<RuleMatch>,
    /// Vetoed rules, by id.
    pub excluded: Vec<Exclusion>,
}

impl Decision {
    pub fn winner(&self) -> Option<&RuleMatch> {
        self.matches.first()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Hit {
    rule: u32,
    role: Role,
    term: u32,
}

impl RuleSet {
    /// Decides what to do with one buyer message.
    ///
    /// # Examples
    ///
    /// Callers that act on a message go through [`crate::routing::route`], which turns this into
    /// what to do; the decision itself lists every matching rule, for `explain`.
    ///
    /// ```no_run
    /// # let rules: xiaoer::rules::RuleSet = unimplemented!();
    /// let decision = rules.decide("我要退貨");
    /// if let Some(winner) = decision.winner() {
    ///     println!("won by {}", rules.rule(winner.rule).id);
    /// }
    /// ```
    pub fn decide(&self, text: &str) -> Decision {
        let normalised = normalise(text);
        let (matches, excluded) = self.match_normalised(&normalised);
        Decision {
            normalised,
            matches,
            excluded,
        }
    }

    fn match_normalised(&self, text: &str) -> (Vec<RuleMatch>, Vec<Exclusion>) {
        let mut hits: Vec<Hit> = Vec::new();
        for term in self.terms_in(text) {
            for use_ in self.term_uses(term) {
                hits.push(Hit {
                    rule: use_.rule,
                    role: use_.role,
                    term,
                });
            }
        }
        hits.sort_unstable();
        hits.dedup();

        let mut matches = Vec::new();
        let mut excluded = Vec::new();
        let mut start = 0;
        while start < hits.len() {
            let rule = hits[start].rule;
            let end = start + hits[start..].iter().take_while(|h| h.rule == rule).count();
            self.check_rule(
                rule as usize,
                &hits[start..end],
                text,
                &mut matches,
                &mut excluded,
            );
            start = end;
        }
        for rule in self.unfiltered() {
            let rule_hits = hits_of(&hits, rule);
            if rule_hits.is_empty() {
                self.check_rule(rule as usize, &[], text, &mut matches, &mut excluded);
            }
        }
        matches.sort_by(|a, b| self.rank(b, a));
        excluded.sort_by(|a, b| self.rule(a.rule).id.cmp(&self.rule(b.rule).id));
        (matches, excluded)
    }

    fn check_rule(
        &self,
        index: usize,
        hits: &[Hit],
        text: &str,
        matches: &mut Vec<RuleMatch>,
        excluded: &mut Vec<Exclusion>,
    ) {
        let rule = self.rule(index);
        let mut any_hit = false;
        let mut groups: u64 = 0;
        let mut gate_hit = false;
        let mut veto = None;
        let mut terms: Vec<(Role, u32)> = Vec::new();
        let mut chars = 0;
        for hit in hits {
            match hit.role {
                Role::Any => {
                    any_hit = true;
                    terms.push((hit.role, hit.term));
                    chars += self.term_chars(hit.term);
                }
                Role::All(group) => {
                    groups |= 1 << group;
                    if !terms.iter().any(|&(_, term)| term == hit.term) {
                        terms.push((hit.role, hit.term));
                        chars += self.term_chars(hit.term);
                    }
                }
                Role::None => {
                    // Term numbers depend on how the layers were compiled; the text does not.
                    veto = match veto {
                        Some(other) if self.term(other) <= self.term(hit.term) => Some(other),
                        _ => Some(hit.term),
                    };
                }
                Role::Gate => gate_hit = true,
            }
        }
        let all_groups_hit = groups.count_ones() == u32::from(rule.all_groups);
        let keywords_hold = (rule.any.is_empty() || any_hit) && all_groups_hit;
        let prefilter_holds = !rule.gated || gate_hit;
        if !keywords_hold || !prefilter_holds {
            return;
        }
        let mut regex_match = None;
        if !rule.regexes.is_empty() {
            let Some(found) = rule.regexes.iter().find_map(|regex| regex.find(text)) else {
                return;
            };
            // A pattern that held is part of what made the rule specific.
            chars += found.as_str().chars().count() as u32;
            regex_match = Some(found.as_str().to_string());
        }
        if let Some(term) = veto {
            excluded.push(Exclusion { rule: index, term });
            return;
        }
        // In the rule's order of conditions, then by text, whatever the term numbers.
        terms.sort_by(|a, b| (a.0, self.term(a.1)).cmp(&(b.0, self.term(b.1))));
        matches.push(RuleMatch {
            rule: index,
            terms: terms.into_iter().map(|(_, term)| term).collect(),
            regex_match,
            chars,
        });
    }

    /// Orders two matches: priority, then escalation over the rest, then specificity, then id.
    /// The greater one wins.
    pub fn rank(&self, a: &RuleMatch, b: &RuleMatch) -> Ordering {
        self.rank_by(a, b).0
    }

    /// The order of two matches and the criterion that settled it (`None` only for a rule
    /// compared with itself).
    pub fn rank_by(&self, a: &RuleMatch, b: &RuleMatch) -> (Ordering, Option<Criterion>) {
        let (rule_a, rule_b) = (self.rule(a.rule), self.rule(b.rule));
        if let Some((ordering, criterion)) = standing(rule_a, rule_b) {
            return (ordering, Some(criterion));
        }
        [
            (Criterion::MatchedChars, a.chars.cmp(&b.chars)),
            (Criterion::MatchedTerms, a.terms.len().cmp(&b.terms.len())),
            // The lower id wins, so the outcome never depends on file order.
            (Criterion::Id, rule_b.id.cmp(&rule_a.id)),
        ]
        .into_iter()
        .find(|(_, ordering)| ordering.is_ne())
        .map_or((Ordering::Equal, None), |(criterion, ordering)| {
            (ordering, Some(criterion))
        })
    }
}

/// What ranks one match above another, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// The rule's `priority`.
    Priority,
    /// At the same priority, escalation outranks answers and ignores.
    Escalation,
    /// Specificity: more matched characters (keywords plus what a regex matched).
    MatchedChars,
    /// Then more matched terms.
    MatchedTerms,
    /// Finally the lower id in byte order.
    Id,
}

/// How two rules rank on the criteria that look at the rules alone, before what they matched:
/// a rule ahead here wins every message both match. `None` when these criteria tie.
pub(crate) fn standing(a: &Rule, b: &Rule) -> Option<(Ordering, Criterion)> {
    [
        (Criterion::Priority, a.priority.cmp(&b.priority)),
        (Criterion::Escalation, a.escalates().cmp(&b.escalates())),
    ]
    .into_iter()
    .find(|(_, ordering)| ordering.is_ne())
    .map(|(criterion, ordering)| (ordering, criterion))
}

fn hits_of(hits: &[Hit], rule: u32) -> &[Hit] {
    let start = hits.partition_point(|h| h.rule < rule);
    let end = hits.partition_point(|h| h.rule <= rule);
    &hits[start..end]
}
