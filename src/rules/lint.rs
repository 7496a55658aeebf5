//! Checks run on a compiled rule set: every rule's examples (errors when they fail) and advice
//! about rules that can never win or keywords that pull in different directions (warnings).

use std::collections::{BTreeMap, BTreeSet};

use super::{Role, RuleSet};
use crate::diagnostics::Diagnostic;

/// Each example must be won by its rule; each counter-example must not be.
pub(crate) fn check_examples(rules: &RuleSet, diagnostics: &mut Vec<Diagnostic>) {
    for (index, rule) in rules.rules().iter().enumerate() {
        for (example, span) in &rule.examples {
            let decision = rules.decide(example);
            let winner = decision.winner().map(|m| m.rule);
            if winner == Some(index) {
                continue;
            }
            let decided_by = match winner {
                Some(other) => {
                    let other = rules.rule(other);
                    format!("`{}` ({})", other.id, other.topic)
                }
                None => "no rule (fallback)".to_string(),
            };
            let mut diagnostic = Diagnostic::error(
                rule.file,
                span.clone(),
                format!("example \"{example}\" is decided by {decided_by}, not by this rule"),
            )
            .about(&rule.id)
            .note(format!("normalised text: {}", decision.normalised));
            if let Some(exclusion) = decision.excluded.iter().find(|e| e.rule == index) {
                diagnostic = diagnostic.note(format!(
                    "this rule matched but its exclusion `{}` vetoed it",
                    rules.term(exclusion.term)
                ));
            } else if let (Some(mine), Some(best)) = (
                decision.matches.iter().find(|m| m.rule == index),
                decision.winner(),
            ) {
                let other = rules.rule(best.rule);
                diagnostic = diagnostic.note(format!(
                    "this rule matched (priority {}, {} matched characters) but `{}` ranks higher (priority {}, {} matched characters)",
                    rule.priority, mine.chars, other.id, other.priority, best.chars
                ));
            } else {
                diagnostic = diagnostic.note("this rule's conditions do not hold for it");
            }
            diagnostics.push(diagnostic);
        }
        for (counter, span) in &rule.counter_examples {
            let decision = rules.decide(counter);
            if let Some(winner) = decision.winner().filter(|m| m.rule == index) {
                let terms: Vec<&str> = winner.terms.iter().map(|&t| rules.term(t)).collect();
                diagnostics.push(
                    Diagnostic::error(
                        rule.file,
                        span.clone(),
                        format!("counter-example \"{counter}\" is decided by this rule"),
                    )
                    .about(&rule.id)
                    .note(format!("it matched on: {}", terms.join(", ")))
                    .note("add an exclusion to `none`, or narrow the keywords"),
                );
            }
        }
    }
}

/// Warns about a rule whenever a plain `any` rule that outranks it matches every text it matches.
pub(crate) fn warn_shadowed(rules: &RuleSet, diagnostics: &mut Vec<Diagnostic>) {
    // Rules that match on the mere presence of any of their terms.
    let plain = |index: usize| {
        let rule = rules.rule(index);
        rule.all_groups == 0 && rule.none.is_empty() && !rule.has_regex() && !rule.any.is_empty()
    };
    // For a term, the plain rules that match any text containing it.
    let implied_by = |term: &str| -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        for hit in rules
            .automaton
            .iter()
            .flat_map(|a| a.find_overlapping_iter(term))
        {
            for use_ in &rules.term_uses[hit.value() as usize] {
                if use_.role == Role::Any && plain(use_.rule as usize) {
                    found.insert(use_.rule as usize);
                }
            }
        }
        found
    };
    for (index, rule) in rules.rules().iter().enumerate() {
        let mut shadowers = BTreeSet::new();
        if !rule.any.is_empty() {
            let mut common: Option<BTreeSet<usize>> = None;
            for &term in &rule.any {
                let found = implied_by(rules.term(term));
                common = Some(match common {
                    None => found,
                    Some(previous) => previous.intersection(&found).copied().collect(),
                });
            }
            shadowers.extend(common.unwrap_or_default());
        }
        let mut groups: BTreeMap<u8, Option<BTreeSet<usize>>> = BTreeMap::new();
        for &(group, term) in &rule.all {
            let found = implied_by(rules.term(term));
            let entry = groups.entry(group).or_default();
            *entry = Some(match entry.take() {
                None => found,
                Some(previous) => previous.intersection(&found).copied().collect(),
            });
        }
        for group in groups.into_values().flatten() {
            shadowers.extend(group);
        }
        let outranks = |other: usize| {
            let other = rules.rule(other);
            (other.priority, other.escalates()) > (rule.priority, rule.escalates())
        };
        if let Some(&shadower) = shadowers
            .iter()
            .find(|&&other| other != index && outranks(other))
        {
            let shadower = rules.rule(shadower);
            diagnostics.push(
                Diagnostic::warning(
                    rule.file,
                    rule.span.clone(),
                    format!(
                        "rule `{}` can never win: `{}` (priority {}) matches every message it matches",
                        rule.id, shadower.id, shadower.priority
                    ),
                )
                .about(&rule.id)
                .note(format!("`{}` is defined at {}", shadower.id, shadower.location)),
            );
        }
    }
}

/// Warns when one `any` keyword triggers rules of different topics.
pub(crate) fn warn_shared_keywords(rules: &RuleSet, diagnostics: &mut Vec<Diagnostic>) {
    for (term, uses) in rules.term_uses.iter().enumerate() {
        let mut by_topic: BTreeMap<&str, &str> = BTreeMap::new();
        for use_ in uses.iter().filter(|u| u.role == Role::Any) {
            let rule = rules.rule(use_.rule as usize);
            by_topic.entry(rule.topic.as_str()).or_insert(&rule.id);
        }
        if by_topic.len() < 2 {
            continue;
        }
        let Some(last) = uses
            .iter()
            .filter(|u| u.role == Role::Any)
            .map(|u| rules.rule(u.rule as usize))
            .max_by_key(|r| (r.file, r.span.start))
        else {
            continue;
        };
        let users: Vec<String> = by_topic
            .iter()
            .map(|(topic, id)| format!("`{id}` ({topic})"))
            .collect();
        diagnostics.push(
            Diagnostic::warning(
                last.file,
                last.span.clone(),
                format!(
                    "keyword `{}` is used by rules of different topics: {}",
                    rules.term(term as u32),
                    users.join(", ")
                ),
            )
            .about(&last.id)
            .note("the higher-ranked rule always wins it; check that is what you want"),
        );
    }
}
