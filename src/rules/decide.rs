//! The decision: which rules match a message and which one wins.
//!
//! One pass of the keyword automaton over the normalised text yields every (rule, role, term)
//! hit; hits are grouped by rule and each touched rule is checked against its conditions. Only
//! rules with hits (plus the few unfiltered regex rules) are looked at, so the cost follows the
//! message, not the size of the rule set.

use std::cmp::{Ordering, Reverse};

use super::normalise::normalise;
use super::{Role, RuleSet};

/// A rule that matched, with what it matched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// Index into [`RuleSet::rules`].
    pub rule: usize,
    /// Automaton pattern ids of the matched `any`/`all` terms (see [`RuleSet::term`]).
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
    pub term: u32,
}

/// The result of [`RuleSet::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub normalised: String,
    /// Every matching rule, the winner first.
    pub matches: Vec<RuleMatch>,
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
    /// ```no_run
    /// # let rules: xiaoer::rules::RuleSet = unimplemented!();
    /// let decision = rules.decide("我要退貨");
    /// let outcome = rules.outcome(&decision);
    /// println!("{} via {:?}", outcome.kind.as_str(), outcome.rule.map(|r| &r.id));
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
        for found in self
            .automaton
            .iter()
            .flat_map(|a| a.find_overlapping_iter(text))
        {
            let term = found.value();
            for use_ in &self.term_uses[term as usize] {
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
        for &rule in &self.unfiltered {
            let rule_hits = hits_of(&hits, rule);
            if rule_hits.is_empty() {
                self.check_rule(rule as usize, &[], text, &mut matches, &mut excluded);
            }
        }
        matches.sort_by(|a, b| self.rank(b, a));
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
        let rule = &self.rules[index];
        let mut any_hit = false;
        let mut groups: u64 = 0;
        let mut gate_hit = false;
        let mut veto = None;
        let mut terms = Vec::new();
        let mut chars = 0;
        for hit in hits {
            match hit.role {
                Role::Any => {
                    any_hit = true;
                    terms.push(hit.term);
                    chars += self.term_chars[hit.term as usize];
                }
                Role::All(group) => {
                    groups |= 1 << group;
                    if !terms.contains(&hit.term) {
                        terms.push(hit.term);
                        chars += self.term_chars[hit.term as usize];
                    }
                }
                Role::None => {
                    veto.get_or_insert(hit.term);
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
        matches.push(RuleMatch {
            rule: index,
            terms,
            regex_match,
            chars,
        });
    }

    /// Orders two matches: priority, then escalation over the rest, then specificity, then id.
    pub(crate) fn rank(&self, a: &RuleMatch, b: &RuleMatch) -> Ordering {
        let key = |m: &RuleMatch| {
            let rule = &self.rules[m.rule];
            (
                rule.priority,
                rule.escalates(),
                m.chars,
                m.terms.len(),
                Reverse(rule.id_rank),
            )
        };
        key(a).cmp(&key(b))
    }
}

fn hits_of(hits: &[Hit], rule: u32) -> &[Hit] {
    let start = hits.partition_point(|h| h.rule < rule);
    let end = hits.partition_point(|h| h.rule <= rule);
    &hits[start..end]
}
