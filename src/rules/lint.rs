//! Checks run on a compiled rule set: every rule's examples (errors when they fail) and advice
//! about rules that can never win or keywords that pull in different directions (warnings).
//!
//! The shared set is checked in full once and what was found is kept as [`Findings`]; a shop's
//! set then re-checks only what its overlay can change, which is what lets twenty shops load in
//! about the time of one.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::decide::standing;
use super::{Role, Rule, RuleSet};
use crate::diagnostics::Diagnostic;

/// One example or counter-example, as the set that checked it decided it.
struct CheckedExample {
    rule: usize,
    counter: bool,
    /// Position in the rule's `examples` or `counter_examples`.
    position: usize,
    normalised: String,
    winner: Option<usize>,
    passed: bool,
}

/// What checking a set found, kept so a set built on it can be checked incrementally.
#[derive(Default)]
pub(crate) struct Findings {
    examples: Vec<CheckedExample>,
    /// Errors about examples that failed, with their rule.
    example_errors: Vec<(usize, Diagnostic)>,
    /// `can never win` warnings: the rule, the rule that shadows it, the warning.
    shadowed: Vec<(usize, usize, Diagnostic)>,
    /// Warnings about keywords used by rules of different topics, and about `shared_keywords`
    /// entries no other topic uses, with the keyword.
    keyword_overlaps: Vec<(String, Diagnostic)>,
    shared_terms: TermLines,
}

/// Every term of a set, one a line, so overlay keywords are looked for in all of them in one
/// pass. No term holds a line break: normalisation drops whitespace.
#[derive(Default)]
struct TermLines {
    text: String,
    /// Where each term starts in `text`, by term number.
    starts: Vec<usize>,
}

impl TermLines {
    fn of(rules: &RuleSet) -> TermLines {
        let mut lines = TermLines::default();
        for term in 0..rules.term_total() {
            lines.starts.push(lines.text.len());
            lines.text.push_str(rules.term(term));
            lines.text.push('\n');
        }
        lines
    }
}

/// What re-checking a shop's set found: the shared set's findings that still hold, and the new
/// ones the overlay brought.
pub(crate) struct Rechecked {
    pub kept: Vec<Diagnostic>,
    pub fresh: Vec<Diagnostic>,
}

impl Findings {
    /// Checks every rule of a set that has no overlay.
    pub fn check(rules: &RuleSet) -> Findings {
        let mut findings = Findings {
            shared_terms: TermLines::of(rules),
            ..Findings::default()
        };
        for (index, rule) in rules.numbered_rules() {
            findings.check_examples_of(rules, index, rule);
            if let Some(shadower) = shadower_of(rules, index) {
                let warning = shadow_warning(rules, index, shadower);
                findings.shadowed.push((index, shadower, warning));
            }
        }
        for term in 0..rules.term_total() {
            // Two topics need two users: most keywords have one, and are settled without a
            // lookup unless that one marks it shared.
            let text = rules.term(term);
            let mut users = rules.term_uses(term).filter(|u| u.role == Role::Any);
            let lone_unmarked = match (users.next(), users.next()) {
                (None, _) => true,
                (Some(only), None) => !rules.rule(only.rule as usize).shares_keyword(text),
                (Some(_), Some(_)) => false,
            };
            if lone_unmarked {
                continue;
            }
            for warning in keyword_warnings(rules, text) {
                findings.keyword_overlaps.push((text.to_string(), warning));
            }
        }
        findings
    }

    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.example_errors
            .iter()
            .map(|(_, d)| d)
            .chain(self.shadowed.iter().map(|(_, _, d)| d))
            .chain(self.keyword_overlaps.iter().map(|(_, d)| d))
    }

    /// Checks `rules`, a shop's set built on the shared set these findings are about, looking
    /// only at what its overlay can change: its own rules, shared examples its rules could
    /// match or whose winner it switched off, and lints touching its rules or switched-off ones.
    pub fn recheck(&self, rules: &RuleSet) -> Rechecked {
        let mut own = Findings::default();
        let mut kept = Vec::new();
        for (index, rule) in rules.numbered_rules().filter(|(i, _)| rules.is_own(*i)) {
            own.check_examples_of(rules, index, rule);
        }
        for example in &self.examples {
            if rules.is_masked(example.rule) || !example.passed {
                continue;
            }
            // A rule's example changes hands only if an overlay rule now matches it; another
            // rule's counter-example only if the rule that won it is switched off.
            let may_change = if example.counter {
                example.winner.is_some_and(|w| rules.is_masked(w))
            } else {
                rules.own_rules_may_match(&example.normalised)
            };
            if may_change {
                let rule = rules.rule(example.rule);
                let list = if example.counter {
                    &rule.counter_examples
                } else {
                    &rule.examples
                };
                if let Some((text, span)) = list.get(example.position) {
                    let at = (example.counter, example.position);
                    let (_, error) = check_example(rules, example.rule, at, text, span);
                    if let Some(error) = error {
                        own.example_errors.push((example.rule, error));
                    }
                }
            }
        }
        for (rule, error) in &self.example_errors {
            if !rules.is_masked(*rule) {
                kept.push(error.clone());
            }
        }

        let mut fresh: Vec<Diagnostic> = own.example_errors.into_iter().map(|(_, d)| d).collect();
        fresh.extend(self.recheck_shadowed(rules, &mut kept));
        fresh.extend(self.recheck_keywords(rules, &mut kept));
        Rechecked { kept, fresh }
    }

    fn recheck_shadowed(&self, rules: &RuleSet, kept: &mut Vec<Diagnostic>) -> Vec<Diagnostic> {
        let mut fresh = Vec::new();
        let recompute =
            |index: usize| shadower_of(rules, index).map(|s| shadow_warning(rules, index, s));
        let overlay_may_shadow = self.shared_rules_under_own_plain_rules(rules);
        let overlay_may_shadow = |index: usize| overlay_may_shadow.contains(&index);
        let mut warned = vec![false; rules.shared_rule_count()];
        for (rule, shadower, warning) in &self.shadowed {
            if rules.is_masked(*rule) {
                continue;
            }
            warned[*rule] = true;
            if !rules.is_masked(*shadower) && !overlay_may_shadow(*rule) {
                kept.push(warning.clone());
                continue;
            }
            match recompute(*rule) {
                Some(now) if now == *warning => kept.push(now),
                Some(now) => fresh.push(now),
                None => {}
            }
        }
        for (index, _) in rules.numbered_rules() {
            let shared_unwarned = !rules.is_own(index) && !warned[index];
            if rules.is_own(index) || (shared_unwarned && overlay_may_shadow(index)) {
                fresh.extend(recompute(index));
            }
        }
        fresh
    }

    /// The shared rules with a term containing a plain overlay rule's keyword: the only shared
    /// rules an overlay can shadow. One pass over every shared term at once, not one per rule.
    fn shared_rules_under_own_plain_rules(&self, rules: &RuleSet) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        let own_plain = rules
            .numbered_rules()
            .any(|(index, _)| rules.is_own(index) && is_plain(rules, index));
        if !own_plain {
            return found;
        }
        let lines = &self.shared_terms;
        for (at, own_term) in rules.own_terms_at(&lines.text) {
            let implies = rules
                .term_uses(own_term)
                .any(|u| u.role == Role::Any && is_plain(rules, u.rule as usize));
            if !implies {
                continue;
            }
            let shared_term = lines.starts.partition_point(|&start| start <= at) - 1;
            for use_ in rules.term_uses(shared_term as u32) {
                if matches!(use_.role, Role::Any | Role::All(_)) {
                    found.insert(use_.rule as usize);
                }
            }
        }
        found
    }

    fn recheck_keywords(&self, rules: &RuleSet, kept: &mut Vec<Diagnostic>) -> Vec<Diagnostic> {
        let mut touched: BTreeSet<&str> = BTreeSet::new();
        for (index, rule) in rules.numbered_rules().filter(|(i, _)| rules.is_own(*i)) {
            touched.extend(rule.any.iter().map(|&t| rules.term_of_rule(index, t)));
        }
        for index in (0..rules.shared_rule_count()).filter(|&i| rules.is_masked(i)) {
            let rule = rules.rule(index);
            touched.extend(rule.any.iter().map(|&t| rules.term_of_rule(index, t)));
        }
        let mut before: BTreeMap<&str, Vec<&Diagnostic>> = BTreeMap::new();
        for (text, warning) in &self.keyword_overlaps {
            if touched.contains(text.as_str()) {
                before.entry(text).or_default().push(warning);
            } else {
                kept.push(warning.clone());
            }
        }
        let mut fresh = Vec::new();
        for text in touched {
            for warning in keyword_warnings(rules, text) {
                let held_before = before
                    .get(text)
                    .is_some_and(|old| old.iter().any(|&old| *old == warning));
                if held_before {
                    kept.push(warning);
                } else {
                    fresh.push(warning);
                }
            }
        }
        fresh
    }

    fn check_examples_of(&mut self, rules: &RuleSet, index: usize, rule: &Rule) {
        let lists = [(false, &rule.examples), (true, &rule.counter_examples)];
        for (counter, list) in lists {
            for (position, (text, span)) in list.iter().enumerate() {
                let (checked, error) = check_example(rules, index, (counter, position), text, span);
                self.examples.push(checked);
                if let Some(error) = error {
                    self.example_errors.push((index, error));
                }
            }
        }
    }
}

/// Decides one example of rule `index`, the one at (`counter`, `position`): each example must be
/// won by its rule, each counter-example must not be.
fn check_example(
    rules: &RuleSet,
    index: usize,
    (counter, position): (bool, usize),
    example: &str,
    span: &Range<usize>,
) -> (CheckedExample, Option<Diagnostic>) {
    let rule = rules.rule(index);
    let decision = rules.decide(example);
    let winner = decision.winner().map(|m| m.rule);
    let error = match (counter, decision.winner()) {
        (false, _) if winner == Some(index) => None,
        (false, _) => {
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
            Some(diagnostic)
        }
        (true, Some(won)) if won.rule == index => {
            let terms: Vec<&str> = won.terms.iter().map(|&t| rules.term(t)).collect();
            Some(
                Diagnostic::error(
                    rule.file,
                    span.clone(),
                    format!("counter-example \"{example}\" is decided by this rule"),
                )
                .about(&rule.id)
                .note(format!("it matched on: {}", terms.join(", ")))
                .note("add an exclusion to `none`, or narrow the keywords"),
            )
        }
        (true, _) => None,
    };
    let checked = CheckedExample {
        rule: index,
        counter,
        position,
        normalised: decision.normalised,
        winner,
        passed: error.is_none(),
    };
    (checked, error)
}

/// A rule that matches on the mere presence of any of its terms.
fn is_plain(rules: &RuleSet, index: usize) -> bool {
    let rule = rules.rule(index);
    rule.all_groups == 0 && rule.none.is_empty() && !rule.has_regex() && !rule.any.is_empty()
}

/// The plain rules in force that match any text containing `text`.
fn implied_by(rules: &RuleSet, text: &str) -> BTreeSet<usize> {
    let mut found = BTreeSet::new();
    for term in rules.terms_in(text) {
        for use_ in rules.term_uses(term) {
            if use_.role == Role::Any && is_plain(rules, use_.rule as usize) {
                found.insert(use_.rule as usize);
            }
        }
    }
    found
}

/// A rule that outranks rule `index` on every message and matches every message it
/// matches: a plain `any` rule implied by each of its `any` terms, or by each term of one of its
/// `all` groups.
fn shadower_of(rules: &RuleSet, index: usize) -> Option<usize> {
    let rule = rules.rule(index);
    let mut shadowers = BTreeSet::new();
    if !rule.any.is_empty() {
        let mut common: Option<BTreeSet<usize>> = None;
        for &term in &rule.any {
            let found = implied_by(rules, rules.term_of_rule(index, term));
            common = Some(match common {
                None => found,
                Some(previous) => previous.intersection(&found).copied().collect(),
            });
        }
        shadowers.extend(common.unwrap_or_default());
    }
    let mut groups: BTreeMap<u8, Option<BTreeSet<usize>>> = BTreeMap::new();
    for &(group, term) in &rule.all {
        let found = implied_by(rules, rules.term_of_rule(index, term));
        let entry = groups.entry(group).or_default();
        *entry = Some(match entry.take() {
            None => found,
            Some(previous) => previous.intersection(&found).copied().collect(),
        });
    }
    for group in groups.into_values().flatten() {
        shadowers.extend(group);
    }
    // The lowest id names the shadower, so the warning does not depend on how rules are numbered.
    shadowers
        .into_iter()
        .filter(|&other| {
            other != index
                && standing(rules.rule(other), rule)
                    .is_some_and(|(ordering, _)| ordering == Ordering::Greater)
        })
        .min_by(|&a, &b| rules.rule(a).id.cmp(&rules.rule(b).id))
}

fn shadow_warning(rules: &RuleSet, index: usize, shadower: usize) -> Diagnostic {
    let (rule, shadower) = (rules.rule(index), rules.rule(shadower));
    Diagnostic::warning(
        rule.file,
        rule.span.clone(),
        format!(
            "rule `{}` can never win: `{}` (priority {}) matches every message it matches",
            rule.id, shadower.id, shadower.priority
        ),
    )
    .about(&rule.id)
    .note(format!(
        "`{}` is defined at {}",
        shadower.id, shadower.location
    ))
}

/// The warnings about `any` keyword `text`: one when it triggers rules in force of different
/// topics and none of them lists it in `shared_keywords`, pointing at the keyword in the rule
/// defined last (each topic is named by its lowest rule id); and one for each `shared_keywords`
/// entry naming it when only one topic uses it, since the entry then marks nothing.
fn keyword_warnings(rules: &RuleSet, text: &str) -> Vec<Diagnostic> {
    let mut by_topic: BTreeMap<&str, &str> = BTreeMap::new();
    let mut last: Option<(usize, &Rule)> = None;
    let mut markers: Vec<&Rule> = Vec::new();
    for term in rules.terms_named(text) {
        for use_ in rules.term_uses(term).filter(|u| u.role == Role::Any) {
            let index = use_.rule as usize;
            let rule = rules.rule(index);
            let id = by_topic.entry(rule.topic.as_str()).or_insert(&rule.id);
            if rule.id.as_str() < *id {
                *id = &rule.id;
            }
            if last.is_none_or(|(_, l)| (l.file, l.span.start) < (rule.file, rule.span.start)) {
                last = Some((index, rule));
            }
            if rule.shares_keyword(text) && !markers.iter().any(|m| m.id == rule.id) {
                markers.push(rule);
            }
        }
    }
    if by_topic.len() < 2 {
        return markers
            .into_iter()
            .filter_map(|rule| {
                let (_, span) = rule.shared_keywords.iter().find(|(k, _)| k == text)?;
                Some(
                    Diagnostic::warning(
                        rule.file,
                        span.clone(),
                        format!(
                            "`shared_keywords` lists `{text}`, but no rule of another topic uses it"
                        ),
                    )
                    .about(&rule.id)
                    .note("remove it from `shared_keywords`"),
                )
            })
            .collect();
    }
    let Some((index, last)) = last.filter(|_| markers.is_empty()) else {
        return Vec::new();
    };
    let span = last
        .any
        .iter()
        .zip(&last.any_spans)
        .find(|&(&term, _)| rules.term_of_rule(index, term) == text)
        .map_or_else(|| last.span.clone(), |(_, span)| span.clone());
    let users: Vec<String> = by_topic
        .iter()
        .map(|(topic, id)| format!("`{id}` ({topic})"))
        .collect();
    vec![
        Diagnostic::warning(
            last.file,
            span,
            format!(
                "keyword `{text}` is used by rules of different topics: {}",
                users.join(", ")
            ),
        )
        .about(&last.id)
        .note("the higher-ranked rule always wins it; check that is what you want")
        .note(format!(
            "if it is, list it in `shared_keywords = [\"{text}\"]` of one of these rules"
        )),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Layer, Loaded, load};
    use crate::diagnostics::Diagnostic;

    const SHIPPING: &str = r#"
[[rule]]
id = "ship.when"
topic = "shipping"
reply = "ship_when"
any = ["发货", "几时发"]
"#;

    /// Loads `rules` (one file) over the fixture replies, with `overlay` rules as a shop on top.
    fn loaded(rules: &str, overlay: Option<&str>) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let rules_dir = dir.path().join("rules");
        std::fs::create_dir_all(&rules_dir).unwrap();
        std::fs::write(rules_dir.join("r.toml"), rules).unwrap();
        let replies = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good/replies");
        let mut layers = vec![Layer::new(&rules_dir, &replies)];
        if let Some(overlay) = overlay {
            let shop = dir.path().join("shop");
            std::fs::create_dir_all(shop.join("rules")).unwrap();
            std::fs::write(shop.join("rules/shop.toml"), overlay).unwrap();
            layers.push(Layer::overlay(&shop));
        }
        load(&layers).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The text each warning points at, with its message.
    fn pointed_at(loaded: &Loaded, warnings: &[Diagnostic]) -> Vec<(String, String)> {
        warnings
            .iter()
            .map(|d| {
                let text = &loaded.sources.text(d.file)[d.span.clone()];
                (text.to_string(), d.message.clone())
            })
            .collect()
    }

    #[test]
    fn a_keyword_of_two_topics_is_pointed_at_in_the_any_list_of_the_later_rule() {
        let rules = format!(
            "{SHIPPING}\n[[rule]]\nid = \"thanks.ship\"\ntopic = \"thanks\"\nreply = \"thanks\"\nany = [\"谢谢\", \"发貨\"]\n"
        );
        let loaded = loaded(&rules, None);
        let found = pointed_at(&loaded, &loaded.warnings);
        assert_eq!(found.len(), 1, "{found:?}");
        let (text, message) = &found[0];
        // The keyword as written (traditional 貨), in the rule defined last.
        assert_eq!(text, "\"发貨\"");
        assert_eq!(
            message,
            "keyword `发货` is used by rules of different topics: `ship.when` (shipping), `thanks.ship` (thanks)"
        );
        assert_eq!(loaded.warnings[0].subject.as_deref(), Some("thanks.ship"));
    }

    #[test]
    fn shared_keywords_marks_an_intended_overlap_so_it_is_not_warned_about() {
        let rules = format!(
            "{SHIPPING}\n[[rule]]\nid = \"thanks.ship\"\ntopic = \"thanks\"\nreply = \"thanks\"\nany = [\"谢谢\", \"发货\"]\nshared_keywords = [\"發貨\"]\n"
        );
        let loaded = loaded(&rules, None);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let rule = loaded.rules.rule_by_id("thanks.ship").unwrap();
        assert!(rule.shares_keyword("发货"));
    }

    #[test]
    fn a_shared_keywords_entry_that_is_not_an_any_keyword_is_a_warning() {
        let rules = format!("{SHIPPING}shared_keywords = [\"快递\"]\n");
        let loaded = loaded(&rules, None);
        let found = pointed_at(&loaded, &loaded.warnings);
        assert_eq!(
            found,
            [(
                "\"快递\"".to_string(),
                "`shared_keywords` names `快递`, which is not one of this rule's `any` keywords"
                    .to_string()
            )]
        );
    }

    #[test]
    fn a_shared_keywords_entry_no_other_topic_uses_is_a_warning() {
        let rules = format!("{SHIPPING}shared_keywords = [\"几时发\"]\n");
        let loaded = loaded(&rules, None);
        let found = pointed_at(&loaded, &loaded.warnings);
        assert_eq!(
            found,
            [(
                "\"几时发\"".to_string(),
                "`shared_keywords` lists `几时发`, but no rule of another topic uses it"
                    .to_string()
            )]
        );
    }

    #[test]
    fn an_overlay_can_make_a_shared_keywords_entry_needed_or_unused() {
        let rules = format!(
            "{SHIPPING}shared_keywords = [\"发货\"]\n\n[[rule]]\nid = \"thanks.ship\"\ntopic = \"thanks\"\nreply = \"thanks\"\nany = [\"谢谢\", \"发货\"]\n"
        );
        assert!(loaded(&rules, None).warnings.is_empty());

        // Switching off the other topic's rule leaves the mark marking nothing, for this shop.
        let shop = loaded(&rules, Some("disable = [\"thanks.ship\"]\n"));
        let found = pointed_at(&shop, &shop.overlay_warnings);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "\"发货\"");
        assert!(found[0].1.contains("no rule of another topic uses it"));

        // A third topic using the keyword is covered by the mark; an unmarked keyword is not.
        let overlay = "[[rule]]\nid = \"shop.order\"\ntopic = \"order\"\nreply = \"thanks\"\nany = [\"发货\", \"几时发\"]\n";
        let shop = loaded(&rules, Some(overlay));
        let found = pointed_at(&shop, &shop.overlay_warnings);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "\"几时发\"");
        assert!(
            found[0]
                .1
                .starts_with("keyword `几时发` is used by rules of different topics")
        );
    }
}
