//! Validation and compilation: raw rule files in, a [`RuleTable`] (or every problem found) out.
//!
//! Every keyword of every rule of a layer goes into one Aho-Corasick automaton (a character-wise
//! double array: it builds and searches Chinese text several times faster than a byte-wise one); each automaton pattern
//! remembers which rules use it and how (any-of, an all-of group, an exclusion, or a literal
//! that gates a regex). Regexes are compiled with size limits and only run for rules whose
//! keywords or literal prefilter hit, except for a capped number that have neither.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use daachorse::{CharwiseDoubleArrayAhoCorasickBuilder, MatchKind};
use regex::{Regex, RegexBuilder};
use toml::Spanned;

use super::file::{RawRule, RawRuleFile};
use super::normalise::normalise;
use super::{Action, Queue, Role, Rule, RuleTable, TermUse, Topic};
use crate::diagnostics::{Diagnostic, FileId, Sources};
use crate::replies::{Replies, toml_error};

/// Default priority of a rule that does not set one.
pub const DEFAULT_PRIORITY: u16 = 50;
pub const MAX_PRIORITY: i64 = 1000;
/// Compiled size cap of one regex (the `regex` crate's own measure).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
pub const REGEX_MAX_PATTERN_LEN: usize = 1024;
/// Regex rules with no keyword and no literal to prefilter on run on every message; keep few.
pub const MAX_UNFILTERED_REGEX_RULES: usize = 64;
/// All-of groups are tracked in a 64-bit mask.
pub const MAX_ALL_GROUPS: usize = 64;
const MAX_PREFILTER_LITERALS: usize = 64;

/// A rule as collected from one or more layers, before validation.
pub(crate) struct Collected {
    pub raw: RawRule,
    pub file: FileId,
    pub span: Range<usize>,
}

/// Gathers the rules of one or more layers: same id in a later layer replaces.
#[derive(Default)]
pub(crate) struct RuleCollector {
    rules: BTreeMap<String, (usize, Collected)>,
    disabled: Vec<(String, FileId, Range<usize>)>,
}

impl RuleCollector {
    pub fn add_file(
        &mut self,
        layer: usize,
        file: FileId,
        text: &str,
        sources: &Sources,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let raw: RawRuleFile = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(error) => {
                diagnostics.push(toml_error(file, &error));
                return;
            }
        };
        if raw.rule.is_empty() && raw.disable.is_empty() {
            diagnostics.push(Diagnostic::warning(
                file,
                0..0,
                "file has no [[rule]] tables",
            ));
        }
        for rule in raw.rule {
            let span = rule.span();
            let rule = rule.into_inner();
            let id = rule.id.get_ref().trim().to_string();
            if let Some((previous_layer, previous)) = self.rules.get(&id)
                && *previous_layer == layer
            {
                diagnostics.push(
                    Diagnostic::error(file, rule.id.span(), format!("duplicate rule id `{id}`"))
                        .about(&id)
                        .note(format!(
                            "first defined at {}",
                            sources.location(previous.file, previous.span.start)
                        )),
                );
                continue;
            }
            self.rules.insert(
                id,
                (
                    layer,
                    Collected {
                        raw: rule,
                        file,
                        span,
                    },
                ),
            );
        }
        for id in raw.disable {
            let span = id.span();
            self.disabled.push((id.into_inner(), file, span));
        }
    }

    /// The rules left once `disable` lists are applied, and the disabled ids that name none of
    /// them. An id that names neither a collected rule nor one `below` (a layer compiled before)
    /// is reported.
    pub fn finish(
        mut self,
        below: impl Fn(&str) -> bool,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> (Vec<Collected>, Vec<String>) {
        let mut disabled_below = Vec::new();
        for (id, file, span) in self.disabled {
            let here = self.rules.remove(&id).is_some();
            if below(&id) {
                disabled_below.push(id);
            } else if !here {
                diagnostics.push(
                    Diagnostic::warning(file, span, format!("`disable` names unknown rule `{id}`"))
                        .about(&id),
                );
            }
        }
        let rules = self.rules.into_values().map(|(_, rule)| rule).collect();
        (rules, disabled_below)
    }
}

/// Validates and compiles the collected rules of a layer. Rules with errors are left out (and
/// reported), so the examples of the others can still be checked; the caller refuses the set if
/// anything failed. `unfiltered_below` counts the regex rules without a prefilter that the
/// layers underneath already run on every message.
pub(crate) fn compile(
    collected: Vec<Collected>,
    replies: &Replies,
    unfiltered_below: usize,
    sources: &Sources,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<RuleTable> {
    let mut terms = TermTable::default();
    let mut rules = Vec::with_capacity(collected.len());
    // Regex compilation is the slowest part of checking a rule; it runs on a second thread,
    // a step ahead of the loop that needs its results.
    std::thread::scope(|scope| {
        let (compiled_tx, compiled_rx) = std::sync::mpsc::sync_channel(256);
        let patterns: Vec<(Vec<String>, bool)> = collected
            .iter()
            .filter(|c| !c.raw.regex.is_empty())
            .map(|c| {
                let sources = c.raw.regex.iter().map(|p| p.get_ref().clone()).collect();
                (sources, c.raw.any.is_empty() && c.raw.all.is_empty())
            })
            .collect();
        scope.spawn(move || {
            for (sources, needs_prefilter) in patterns {
                let compiled: Vec<_> = sources
                    .iter()
                    .map(|source| compile_pattern(source, needs_prefilter))
                    .collect();
                if compiled_tx.send(compiled).is_err() {
                    return;
                }
            }
        });
        for collected in collected {
            let compiled = if collected.raw.regex.is_empty() {
                Vec::new()
            } else {
                compiled_rx.recv().unwrap_or_else(|_| {
                    let stopped = || Err("internal error: the regex compiler stopped".to_string());
                    collected.raw.regex.iter().map(|_| stopped()).collect()
                })
            };
            let index = rules.len();
            let compiled_rule = compile_rule(
                collected,
                compiled,
                index,
                replies,
                sources,
                &mut terms,
                diagnostics,
            );
            if let Some(rule) = compiled_rule {
                rules.push(rule);
            }
        }
    });
    let unfiltered: Vec<u32> = rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| rule.unfiltered)
        .map(|(index, _)| index as u32)
        .collect();
    let room = MAX_UNFILTERED_REGEX_RULES.saturating_sub(unfiltered_below);
    if unfiltered.len() > room {
        for &index in &unfiltered[room..] {
            let rule: &Rule = &rules[index as usize];
            diagnostics.push(
                Diagnostic::error(
                    rule.file,
                    rule.span.clone(),
                    format!(
                        "too many regex-only rules without a literal prefilter (at most {MAX_UNFILTERED_REGEX_RULES})"
                    ),
                )
                .about(&rule.id)
                .note("add an `any` keyword, or start the pattern with literal text"),
            );
        }
    }
    let automaton = if terms.patterns.is_empty() {
        None
    } else {
        let numbered = terms
            .patterns
            .iter()
            .enumerate()
            .map(|(id, term)| (term.as_str(), id as u32));
        match CharwiseDoubleArrayAhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build_with_values(numbered)
        {
            Ok(automaton) => Some(automaton),
            Err(error) => {
                diagnostics.push(Diagnostic::error(
                    0,
                    0..0,
                    format!("cannot build the keyword automaton: {error}"),
                ));
                return None;
            }
        }
    };
    let by_id = rules
        .iter()
        .enumerate()
        .map(|(index, rule)| (rule.id.clone(), index as u32))
        .collect();
    let term_chars = terms
        .patterns
        .iter()
        .map(|t| t.chars().count() as u32)
        .collect();
    Some(RuleTable {
        rules,
        by_id,
        automaton,
        term_text: terms.patterns,
        term_chars,
        term_uses: terms.uses,
        unfiltered,
    })
}

#[derive(Default)]
struct TermTable {
    patterns: Vec<String>,
    index: HashMap<String, u32>,
    uses: Vec<Vec<TermUse>>,
    /// Patterns touched by the rule being compiled, to undo if that rule fails.
    touched: Vec<u32>,
}

impl TermTable {
    /// Forgets every use the failed rule `rule` added.
    fn rollback(&mut self, rule: u32) {
        for id in self.touched.drain(..) {
            self.uses[id as usize].retain(|u| u.rule != rule);
        }
    }

    fn add(&mut self, term: &str, use_: TermUse) -> u32 {
        let id = match self.index.get(term) {
            Some(&id) => id,
            None => {
                let id = self.patterns.len() as u32;
                self.patterns.push(term.to_string());
                self.index.insert(term.to_string(), id);
                self.uses.push(Vec::new());
                id
            }
        };
        self.touched.push(id);
        let uses = &mut self.uses[id as usize];
        if !uses.contains(&use_) {
            uses.push(use_);
        }
        id
    }
}

/// Normalises one keyword, reporting a keyword that normalises to nothing.
fn keyword(
    term: &Spanned<String>,
    file: FileId,
    id: &str,
    field: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<String> {
    let normalised = normalise(term.get_ref());
    if normalised.is_empty() {
        diagnostics.push(
            Diagnostic::error(file, term.span(), format!("empty keyword in `{field}`")).about(id),
        );
        return None;
    }
    Some(normalised)
}

fn compile_rule(
    collected: Collected,
    compiled_patterns: Vec<Result<CompiledPattern, String>>,
    index: usize,
    replies: &Replies,
    sources: &Sources,
    terms: &mut TermTable,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Rule> {
    let Collected { raw, file, span } = collected;
    let reported_before = diagnostics.len();
    let id = raw.id.get_ref().trim().to_string();
    let rule_index = index as u32;
    terms.touched.clear();
    if id.is_empty() {
        diagnostics.push(Diagnostic::error(file, raw.id.span(), "rule id is empty"));
    } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        diagnostics
            .push(Diagnostic::error(file, raw.id.span(), "rule id contains whitespace").about(&id));
    }
    let topic = match raw.topic.get_ref().parse::<Topic>() {
        Ok(topic) => Some(topic),
        Err(_) => {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    raw.topic.span(),
                    format!("unknown topic `{}`", raw.topic.get_ref()),
                )
                .about(&id)
                .note(format!("topics: {}", Topic::names())),
            );
            None
        }
    };
    let priority = match &raw.priority {
        None => DEFAULT_PRIORITY,
        Some(p) if (0..=MAX_PRIORITY).contains(p.get_ref()) => *p.get_ref() as u16,
        Some(p) => {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    p.span(),
                    format!(
                        "priority {} is out of range 0..={MAX_PRIORITY}",
                        p.get_ref()
                    ),
                )
                .about(&id),
            );
            DEFAULT_PRIORITY
        }
    };
    let action = rule_action(&raw, file, &span, &id, replies, diagnostics);

    let mut any = Vec::new();
    let mut any_spans = Vec::new();
    let mut any_texts = Vec::new();
    for term in &raw.any {
        if let Some(t) = keyword(term, file, &id, "any", diagnostics) {
            any.push(terms.add(
                &t,
                TermUse {
                    rule: rule_index,
                    role: Role::Any,
                },
            ));
            any_spans.push(term.span());
            any_texts.push(t);
        }
    }
    let mut shared_keywords: Vec<(String, Range<usize>)> = Vec::new();
    for entry in &raw.shared_keywords {
        let Some(text) = keyword(entry, file, &id, "shared_keywords", diagnostics) else {
            continue;
        };
        if !any_texts.contains(&text) {
            diagnostics.push(
                Diagnostic::warning(
                    file,
                    entry.span(),
                    format!(
                        "`shared_keywords` names `{}`, which is not one of this rule's `any` keywords",
                        entry.get_ref()
                    ),
                )
                .about(&id)
                .note("only `any` keywords are checked for use by other topics; remove the entry"),
            );
        } else if !shared_keywords.iter().any(|(k, _)| *k == text) {
            shared_keywords.push((text, entry.span()));
        }
    }
    if raw.all.len() > MAX_ALL_GROUPS {
        diagnostics.push(
            Diagnostic::error(
                file,
                span.clone(),
                format!("more than {MAX_ALL_GROUPS} `all` groups"),
            )
            .about(&id),
        );
    }
    let mut all_groups = 0u16;
    let mut all = Vec::new();
    for (group_index, group) in raw.all.iter().enumerate().take(MAX_ALL_GROUPS) {
        let members: Vec<String> = match group.get_ref() {
            toml::Value::String(s) => vec![s.clone()],
            toml::Value::Array(items) if !items.is_empty() => items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let valid_shape = match group.get_ref() {
            toml::Value::Array(items) => !items.is_empty() && items.len() == members.len(),
            toml::Value::String(_) => true,
            _ => false,
        };
        if !valid_shape {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    group.span(),
                    "each `all` entry must be a keyword or a non-empty list of keywords",
                )
                .about(&id),
            );
            continue;
        }
        for member in members {
            let normalised = normalise(&member);
            if normalised.is_empty() {
                diagnostics.push(
                    Diagnostic::error(file, group.span(), "empty keyword in `all`").about(&id),
                );
                continue;
            }
            let term = terms.add(
                &normalised,
                TermUse {
                    rule: rule_index,
                    role: Role::All(group_index as u8),
                },
            );
            all.push((group_index as u8, term));
        }
        all_groups += 1;
    }
    let mut none = Vec::new();
    for term in &raw.none {
        if let Some(t) = keyword(term, file, &id, "none", diagnostics) {
            none.push(t);
        }
    }

    let mut regexes = Vec::new();
    let has_keywords = !raw.any.is_empty() || !raw.all.is_empty();
    // A regex-only rule runs its patterns when one of their literal prefixes is in the text;
    // one pattern without usable literals makes the whole rule run on every message.
    let mut gate_literals = Vec::new();
    let mut unfiltered = false;
    for (pattern, compiled) in raw.regex.iter().zip(compiled_patterns) {
        match compiled {
            Ok(CompiledPattern { regex, literals }) => {
                if !has_keywords {
                    match literals {
                        Some(literals) if literals.is_empty() => diagnostics.push(
                            Diagnostic::warning(
                                file,
                                pattern.span(),
                                "pattern can never match normalised text (it needs uppercase, traditional characters or spaces)",
                            )
                            .about(&id),
                        ),
                        Some(literals) => gate_literals.extend(literals),
                        None => unfiltered = true,
                    }
                }
                regexes.push(regex);
            }
            Err(message) => {
                diagnostics.push(Diagnostic::error(file, pattern.span(), message).about(&id))
            }
        }
    }
    if !has_keywords && raw.regex.is_empty() {
        diagnostics.push(
            Diagnostic::error(
                file,
                span.clone(),
                "rule has no condition: give it `any`, `all` or `regex`",
            )
            .about(&id),
        );
    }
    if !unfiltered {
        for literal in gate_literals {
            terms.add(
                &literal,
                TermUse {
                    rule: rule_index,
                    role: Role::Gate,
                },
            );
        }
    }
    for term in &none {
        terms.add(
            term,
            TermUse {
                rule: rule_index,
                role: Role::None,
            },
        );
    }

    let weak = raw.weak.as_ref().is_some_and(|w| *w.get_ref());
    if let Some(flag) = &raw.weak
        && *flag.get_ref()
        && raw.escalate.is_none()
    {
        diagnostics.push(
            Diagnostic::error(
                file,
                flag.span(),
                "`weak = true` only means something on an escalation: it lets the model overrule it",
            )
            .about(&id),
        );
    }
    let examples = raw
        .examples
        .iter()
        .map(|e| (e.get_ref().clone(), e.span()))
        .collect();
    let counter_examples = raw
        .counter_examples
        .iter()
        .map(|e| (e.get_ref().clone(), e.span()))
        .collect();
    if has_error_since(diagnostics, reported_before) {
        terms.rollback(rule_index);
        return None;
    }
    let location = sources.location(file, span.start);
    Some(Rule {
        id,
        topic: topic?,
        action: action?,
        priority,
        weak,
        any,
        any_spans,
        shared_keywords,
        all_groups,
        all,
        none,
        regexes,
        unfiltered,
        gated: !has_keywords && !unfiltered,
        examples,
        counter_examples,
        file,
        span,
        location,
    })
}

/// Whether a diagnostic reported after the first `reported_before` is an error. Only the new
/// ones are looked at, so a file with an error in every rule is still checked in linear time.
fn has_error_since(diagnostics: &[Diagnostic], reported_before: usize) -> bool {
    diagnostics
        .get(reported_before..)
        .unwrap_or_default()
        .iter()
        .any(|d| d.severity == crate::diagnostics::Severity::Error)
}

fn rule_action(
    raw: &RawRule,
    file: FileId,
    span: &Range<usize>,
    id: &str,
    replies: &Replies,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Action> {
    let ignore = raw.ignore.as_ref().is_some_and(|i| *i.get_ref());
    let reply_key = |diagnostics: &mut Vec<Diagnostic>| -> Option<String> {
        let key = raw.reply.as_ref()?;
        if !replies.contains(key.get_ref()) {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    key.span(),
                    format!("unknown reply key `{}`", key.get_ref()),
                )
                .about(id)
                .note("define it in replies/*.toml"),
            );
            return None;
        }
        Some(key.get_ref().clone())
    };
    match (&raw.escalate, &raw.reply, ignore) {
        (Some(_), _, true) | (None, Some(_), true) => {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    span.clone(),
                    "a rule either ignores the message or answers it, not both",
                )
                .about(id),
            );
            None
        }
        (Some(queue), reply, false) => {
            let queue_value = match queue.get_ref().parse::<Queue>() {
                Ok(q) => Some(q),
                Err(_) => {
                    diagnostics.push(
                        Diagnostic::error(
                            file,
                            queue.span(),
                            format!("unknown queue `{}`", queue.get_ref()),
                        )
                        .about(id)
                        .note(format!("queues: {}", Queue::names())),
                    );
                    None
                }
            };
            if reply.is_none() {
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        queue.span(),
                        "an escalating rule needs `reply`, the acknowledgement the buyer gets",
                    )
                    .about(id),
                );
                return None;
            }
            let key = reply_key(diagnostics)?;
            Some(Action::Escalate {
                queue: queue_value?,
                reply: key,
            })
        }
        (None, Some(_), false) => Some(Action::Reply {
            reply: reply_key(diagnostics)?,
        }),
        (None, None, true) => Some(Action::Ignore),
        (None, None, false) => {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    raw.id.span(),
                    "rule has no action: set `reply`, `escalate` with `reply`, or `ignore = true`",
                )
                .about(id),
            );
            None
        }
    }
}

/// A compiled pattern and, for a rule without keywords, the literals it can be prefiltered on
/// (see [`prefilter_literals`]).
struct CompiledPattern {
    regex: Regex,
    literals: Option<Vec<String>>,
}

fn compile_pattern(source: &str, needs_prefilter: bool) -> Result<CompiledPattern, String> {
    let regex = compile_regex(source)?;
    let literals = if needs_prefilter {
        prefilter_literals(source)
    } else {
        None
    };
    Ok(CompiledPattern { regex, literals })
}

fn compile_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > REGEX_MAX_PATTERN_LEN {
        return Err(format!(
            "regex pattern is {} bytes long; the limit is {REGEX_MAX_PATTERN_LEN}",
            pattern.len()
        ));
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(4 * REGEX_SIZE_LIMIT)
        .nest_limit(50)
        .build()
        .map_err(|error| match error {
            regex::Error::CompiledTooBig(limit) => {
                format!("regex is too big once compiled (limit {limit} bytes); simplify it")
            }
            regex::Error::Syntax(message) => {
                let first = message.lines().last().unwrap_or("").trim().to_string();
                format!("invalid regex: {}", first.trim_start_matches("error: "))
            }
            other => format!("invalid regex: {other}"),
        })
}

/// Literals every match of `pattern` must start with, already in normalised form.
///
/// `None` when there is no usable finite set (the rule must run its regex on every message);
/// `Some(empty)` when every literal would be changed by normalisation, so the pattern can never
/// match normalised text.
fn prefilter_literals(pattern: &str) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let mut extractor = Extractor::new();
    extractor
        .kind(ExtractKind::Prefix)
        .limit_total(MAX_PREFILTER_LITERALS);
    let seq = extractor.extract(&hir);
    let literals = seq.literals()?;
    let mut out = Vec::new();
    for literal in literals {
        let bytes = literal.as_bytes();
        let valid = match std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(error) => std::str::from_utf8(&bytes[..error.valid_up_to()]).ok()?,
        };
        if valid.is_empty() {
            return None;
        }
        if normalise(valid) == valid && !out.iter().any(|o| o == valid) {
            out.push(valid.to_string());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefilter_literals_come_from_the_pattern_prefix() {
        assert_eq!(
            prefilter_literals("退.{0,2}款"),
            Some(vec!["退".to_string()])
        );
        assert_eq!(
            prefilter_literals("(退货|换货)单号"),
            Some(vec!["退货单号".to_string(), "换货单号".to_string()])
        );
        assert_eq!(prefilter_literals(r"\d{11}"), None);
        assert_eq!(prefilter_literals("ABC"), Some(vec![]));
    }

    #[test]
    fn oversized_regex_is_rejected_with_a_clear_message() {
        let error = compile_regex(r"\w{1000}\w{1000}").expect_err("too big");
        assert!(error.contains("too big once compiled"), "{error}");
        let error = compile_regex("(").expect_err("syntax");
        assert!(error.starts_with("invalid regex:"), "{error}");
    }
}
