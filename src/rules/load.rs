//! Loading rule sets from directories: the shared set once, then shop overlays on top of it.
//!
//! Loading reads every file, reports every problem (parse, validation, failing examples) at once,
//! and produces a [`RuleSet`] only when there are no errors, so a bad edit can never replace a
//! working set. An overlay is put on a shared set that is already loaded ([`SharedRules`]): only
//! the overlay's files are read and compiled, and only what it can change is checked again, so a
//! shop costs what its overlay costs, not what the shared set costs.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::RuleSet;
use super::compile::{RuleCollector, compile};
use super::lint::Findings;
use crate::classifier::serving;
use crate::diagnostics::{Diagnostic, FileId, Severity, Sources};
use crate::replies::RepliesBuilder;

/// One layer of rule and reply directories. The first layer is the shared set; later layers are
/// shop overlays whose rule ids and reply keys replace earlier ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub rules: PathBuf,
    pub replies: PathBuf,
}

impl Layer {
    pub fn new(rules: impl Into<PathBuf>, replies: impl Into<PathBuf>) -> Self {
        Layer {
            rules: rules.into(),
            replies: replies.into(),
        }
    }

    /// A shop overlay directory holding `rules/` and `replies/`.
    pub fn overlay(dir: &Path) -> Self {
        Layer::new(dir.join("rules"), dir.join("replies"))
    }
}

/// A rule set that loaded, with the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub rules: RuleSet,
    /// Every warning about the set, the shared files' included.
    pub warnings: Vec<Diagnostic>,
    /// The part of `warnings` the overlays brought (empty for a shared set alone): what a shop's
    /// set adds to the shared set's warnings.
    pub overlay_warnings: Vec<Diagnostic>,
    pub sources: Sources,
    pub timings: LoadTimings,
}

/// Where loading spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadTimings {
    /// Reading the files and parsing the TOML.
    pub parse: Duration,
    /// Validating every rule and reply and building the matcher.
    pub compile: Duration,
    /// Running every rule's examples and the lints.
    pub checks: Duration,
}

/// Why a rule set did not load: every error found, and the warnings.
#[derive(Debug)]
pub struct LoadError {
    pub diagnostics: Vec<Diagnostic>,
    pub sources: Sources,
}

impl LoadError {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors: Vec<_> = self.errors().collect();
        write!(
            f,
            "rule set has {} error{}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        )?;
        for error in errors {
            write!(f, "\n  {}", self.sources.one_line(error))?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// Reads, validates and compiles the layers — the shared set, then any shop overlays on it —
/// and runs every rule's examples.
///
/// # Errors
///
/// A [`LoadError`] listing every problem when any file cannot be read or parsed, a rule or reply
/// is invalid, or an example is not decided the way its rule says.
pub fn load(layers: &[Layer]) -> Result<Loaded, LoadError> {
    let Some((shared, overlays)) = layers.split_first() else {
        let mut sources = Sources::default();
        let file = sources.add(Path::new("(no rule directories)"), String::new());
        return Err(LoadError {
            diagnostics: vec![Diagnostic::error(file, 0..0, "no rule directories to load")],
            sources,
        });
    };
    // A broken shared set is still compiled as far as it goes, so the overlays' problems are
    // reported in the same round.
    let shared = build_shared(shared, true)?;
    if overlays.is_empty() {
        shared.into_loaded()
    } else {
        shared.with_overlays(overlays)
    }
}

/// Loads one layer's rules and replies without its learned model: what `xiaoer train` needs,
/// since the model may not exist yet.
///
/// # Errors
///
/// A [`LoadError`] listing every problem, as for [`load`].
pub fn load_without_model(layer: &Layer) -> Result<Loaded, LoadError> {
    build_shared(layer, false)?.into_loaded()
}

/// Loads the shared set alone, ready to have shop overlays put on it.
///
/// # Errors
///
/// A [`LoadError`] listing every problem, as for [`load`].
pub fn load_shared(layer: &Layer) -> Result<SharedRules, LoadError> {
    let shared = build_shared(layer, true)?;
    if shared.compiled.iter().any(is_error) || shared.findings.diagnostics().any(is_error) {
        return Err(LoadError {
            diagnostics: shared.diagnostics(),
            sources: shared.sources,
        });
    }
    Ok(shared)
}

/// A loaded shared set, with what it takes to put shop overlays on it without compiling it again:
/// the file texts (a shop's diagnostics may point into shared files) and what its checks found.
pub struct SharedRules {
    rules: RuleSet,
    sources: Sources,
    timings: LoadTimings,
    reply_files: Vec<FileId>,
    rule_files: Vec<FileId>,
    /// Problems found reading, validating and compiling, before the checks.
    compiled: Vec<Diagnostic>,
    findings: Findings,
}

impl fmt::Debug for SharedRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRules")
            .field("rules", &self.rules)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

fn is_error(diagnostic: &Diagnostic) -> bool {
    diagnostic.severity == Severity::Error
}

fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by_key(|d| (d.file, d.span.start, d.severity));
}

impl SharedRules {
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn into_rules(self) -> RuleSet {
        self.rules
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    pub fn timings(&self) -> LoadTimings {
        self.timings
    }

    /// The shared set's warnings (and, before [`load_shared`] has refused it, its errors), in
    /// file order.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = self.compiled.to_vec();
        all.extend(self.findings.diagnostics().cloned());
        sort(&mut all);
        all
    }

    fn into_loaded(self) -> Result<Loaded, LoadError> {
        let diagnostics = self.diagnostics();
        if diagnostics.iter().any(is_error) {
            return Err(LoadError {
                diagnostics,
                sources: self.sources,
            });
        }
        Ok(Loaded {
            rules: self.rules,
            warnings: diagnostics,
            overlay_warnings: Vec::new(),
            sources: self.sources,
            timings: self.timings,
        })
    }

    /// The set of a shop: these shared rules with `overlays` on top, later ones winning. A rule
    /// with a shared rule's id replaces it, `disable = [...]` switches shared rules off, replies
    /// and `[vars]` with a shared key replace it. The shared rules are not compiled again.
    ///
    /// # Errors
    ///
    /// A [`LoadError`] listing every problem of the combined set: the overlay's files, and the
    /// examples and lints the overlay changes the outcome of.
    pub fn with_overlays(&self, overlays: &[Layer]) -> Result<Loaded, LoadError> {
        let started = Instant::now();
        let mut sources = self.sources.clone();
        let mut fresh = Vec::new();

        // Shared replies are few and small: they are parsed again from the texts in memory
        // rather than kept half-built. What they say about themselves was said for the shared set.
        let mut replies = RepliesBuilder::default();
        let mut reported_already = Vec::new();
        for &file in &self.reply_files {
            replies.add_file(file, sources.text(file), false, &mut reported_already);
        }
        let mut collector = RuleCollector::default();
        let mut unreadable = false;
        for (layer_index, layer) in overlays.iter().enumerate() {
            let dirs = [
                (&layer.replies, DirKind::Replies),
                (&layer.rules, DirKind::Rules),
            ];
            for (dir, kind) in dirs {
                let Some(texts) = read_toml_dir(dir, kind, true, &mut sources, &mut fresh) else {
                    unreadable = true;
                    continue;
                };
                for (path, text) in texts {
                    let file = sources.add(&path, text);
                    match kind {
                        DirKind::Replies => {
                            replies.add_file(file, sources.text(file), true, &mut fresh);
                        }
                        DirKind::Rules => {
                            let text = sources.text(file);
                            collector.add_file(layer_index, file, text, &sources, &mut fresh);
                        }
                    }
                }
            }
        }
        // As for the shared set: an unreadable directory is the one error, not what follows.
        if unreadable {
            return Err(LoadError {
                diagnostics: fresh,
                sources,
            });
        }
        let parsed_at = Instant::now();
        let anchor = self.reply_files.first().map(|&file| (file, 0..0));
        let mut replies_found = Vec::new();
        let replies = replies.finish(anchor, &mut replies_found);
        fresh.extend(
            replies_found
                .into_iter()
                .filter(|d| !self.reply_files.contains(&d.file)),
        );

        let shared = &self.rules;
        let (collected, disabled) =
            collector.finish(|id| shared.index_of(id).is_some(), &mut fresh);
        let mut masked = vec![false; shared.shared_rule_count()];
        let replaced = collected.iter().map(|c| c.raw.id.get_ref().trim());
        for id in replaced.chain(disabled.iter().map(String::as_str)) {
            if let Some(index) = shared.index_of(id) {
                masked[index] = true;
            }
        }
        if !masked.contains(&true) {
            masked = Vec::new();
        }
        let unfiltered_below = shared
            .unfiltered()
            .filter(|&rule| !masked.get(rule as usize).copied().unwrap_or(false))
            .count();
        let table = compile(collected, &replies, unfiltered_below, &sources, &mut fresh);
        let compiled_at = Instant::now();

        let masked_ids: HashSet<&str> = masked
            .iter()
            .enumerate()
            .filter(|(_, m)| **m)
            .map(|(index, _)| shared.rule(index).id.as_str())
            .collect();
        // What the shared files said about rules the overlay replaced or switched off no longer
        // holds for this set.
        let about_masked = |d: &Diagnostic| {
            self.rule_files.contains(&d.file)
                && d.subject
                    .as_deref()
                    .is_some_and(|id| masked_ids.contains(id))
        };
        let mut all: Vec<Diagnostic> = self
            .compiled
            .iter()
            .filter(|d| !about_masked(d))
            .cloned()
            .collect();
        let rules = table.map(|table| RuleSet::overlaid(shared, table, masked, replies));
        if let Some(rules) = &rules {
            let rechecked = self.findings.recheck(rules);
            all.extend(rechecked.kept);
            fresh.extend(rechecked.fresh);
        }
        let timings = LoadTimings {
            parse: parsed_at - started,
            compile: compiled_at - parsed_at,
            checks: compiled_at.elapsed(),
        };
        tracing::debug!(?timings, "overlay loaded");
        sort(&mut fresh);
        all.extend(fresh.iter().cloned());
        sort(&mut all);
        match rules {
            Some(rules) if !all.iter().any(is_error) => Ok(Loaded {
                rules,
                warnings: all,
                overlay_warnings: fresh,
                sources,
                timings,
            }),
            _ => Err(LoadError {
                diagnostics: all,
                sources,
            }),
        }
    }
}

/// Reads, validates, compiles and checks a shared set. Only a set that could not be compiled at
/// all is an error here; one with errors comes back with them, for [`load`] to report together
/// with its overlays'.
fn build_shared(layer: &Layer, with_model: bool) -> Result<SharedRules, LoadError> {
    let started = Instant::now();
    let mut sources = Sources::default();
    let mut diagnostics = Vec::new();
    let reply_texts = read_toml_dir(
        &layer.replies,
        DirKind::Replies,
        false,
        &mut sources,
        &mut diagnostics,
    );
    let rule_texts = read_toml_dir(
        &layer.rules,
        DirKind::Rules,
        false,
        &mut sources,
        &mut diagnostics,
    );
    // Without one of the directories every rule and reply key would be reported missing: the
    // directory is the one error worth reading.
    let (Some(reply_texts), Some(rule_texts)) = (reply_texts, rule_texts) else {
        return Err(LoadError {
            diagnostics,
            sources,
        });
    };
    let mut replies = RepliesBuilder::default();
    let mut reply_files = Vec::new();
    for (path, text) in reply_texts {
        let file = sources.add(&path, text);
        reply_files.push(file);
        replies.add_file(file, sources.text(file), false, &mut diagnostics);
    }
    let mut collector = RuleCollector::default();
    let mut rule_files = Vec::new();
    for (path, text) in rule_texts {
        let file = sources.add(&path, text);
        rule_files.push(file);
        collector.add_file(0, file, sources.text(file), &sources, &mut diagnostics);
    }
    let parsed_at = Instant::now();
    let anchor = reply_files.first().map(|&file| (file, 0..0));
    let replies = replies.finish(anchor, &mut diagnostics);
    let (collected, _) = collector.finish(|_| false, &mut diagnostics);
    let Some(table) = compile(collected, &replies, 0, &sources, &mut diagnostics) else {
        sort(&mut diagnostics);
        return Err(LoadError {
            diagnostics,
            sources,
        });
    };
    let mut rules = RuleSet::single(table, replies);
    let model = with_model
        .then(|| {
            serving::load(
                &layer.rules,
                rules.replies(),
                &mut sources,
                &mut diagnostics,
            )
        })
        .flatten();
    if let Some(model) = &model
        && let Some(stale) = serving::staleness(&layer.rules, model, &rules)
    {
        diagnostics.push(Diagnostic::warning(model.settings_file, 0..0, stale));
    }
    rules.set_model(model.map(std::sync::Arc::new));
    let compiled_at = Instant::now();
    let findings = Findings::check(&rules);
    let timings = LoadTimings {
        parse: parsed_at - started,
        compile: compiled_at - parsed_at,
        checks: compiled_at.elapsed(),
    };
    tracing::debug!(?timings, "rule set loaded");
    Ok(SharedRules {
        rules,
        sources,
        timings,
        reply_files,
        rule_files,
        compiled: diagnostics,
        findings,
    })
}

/// Which directory of a layer is read, for what a problem with it says.
#[derive(Debug, Clone, Copy)]
enum DirKind {
    Rules,
    Replies,
}

impl DirKind {
    fn name(self) -> &'static str {
        match self {
            DirKind::Rules => "rules",
            DirKind::Replies => "replies",
        }
    }

    /// Where the shared set's directory of this kind is set.
    fn setting(self) -> &'static str {
        match self {
            DirKind::Rules => "set --rules or XIAOER_RULES",
            DirKind::Replies => "set --replies or XIAOER_REPLIES",
        }
    }
}

/// The `*.toml` files of `dir` in name order, or `None` when the directory itself is the problem
/// (reported once): it cannot be read, or a shared one is missing or holds no `*.toml` file. A
/// missing overlay directory is fine: the shop changes nothing there.
fn read_toml_dir(
    dir: &Path,
    kind: DirKind,
    optional: bool,
    sources: &mut Sources,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Vec<(PathBuf, String)>> {
    let whose = if optional { "the shop's" } else { "the" };
    let mut problem = |sources: &mut Sources, message: String| {
        let file = sources.add(dir, String::new());
        let mut diagnostic = Diagnostic::error(file, 0..0, message);
        if dir.is_relative()
            && let Ok(cwd) = std::env::current_dir()
        {
            diagnostic = diagnostic.note(format!(
                "relative to the working directory {}",
                cwd.display()
            ));
        }
        diagnostics.push(diagnostic);
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if optional {
                return Some(Vec::new());
            }
            problem(
                sources,
                format!(
                    "the {} directory {} does not exist ({})",
                    kind.name(),
                    dir.display(),
                    kind.setting()
                ),
            );
            return None;
        }
        Err(error) => {
            problem(
                sources,
                format!(
                    "cannot read {whose} {} directory {}: {error}",
                    kind.name(),
                    dir.display()
                ),
            );
            return None;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() && !optional {
        problem(
            sources,
            format!(
                "the {} directory {} has no *.toml files",
                kind.name(),
                dir.display()
            ),
        );
        return None;
    }
    let mut files = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((path, text)),
            Err(error) => {
                let file = sources.add(&path, String::new());
                diagnostics.push(Diagnostic::error(
                    file,
                    0..0,
                    format!("cannot read {}: {error}", path.display()),
                ));
            }
        }
    }
    Some(files)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn shops_share_the_compiled_shared_rules_instead_of_compiling_their_own() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
        let shared = load_shared(&Layer::overlay(&root)).unwrap();
        let overlay = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(overlay.path().join("rules")).unwrap();
        std::fs::write(
            overlay.path().join("rules/shop.toml"),
            "disable = [\"thanks.ack\"]\n",
        )
        .unwrap();
        let shops: Vec<Loaded> = (0..3)
            .map(|_| {
                shared
                    .with_overlays(&[Layer::overlay(overlay.path())])
                    .unwrap()
            })
            .collect();
        for shop in &shops {
            assert!(Arc::ptr_eq(&shop.rules.shared, &shared.rules().shared));
            assert_eq!(shop.rules.rule_count(), shared.rules().rule_count() - 1);
        }
        assert!(shared.rules().rule_by_id("thanks.ack").is_some());
    }
}
