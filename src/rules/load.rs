//! Loading a rule set from directories: the shared set, then any shop overlays.
//!
//! Loading reads every file, reports every problem (parse, validation, failing examples) at once,
//! and produces a [`RuleSet`] only when there are no errors, so a bad edit can never replace a
//! working set.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::compile::{RuleCollector, compile};
use super::{RuleSet, lint};
use crate::diagnostics::{Diagnostic, Severity, Sources};
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
    pub warnings: Vec<Diagnostic>,
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

/// Reads, validates and compiles the layers, then runs every rule's examples.
///
/// # Errors
///
/// A [`LoadError`] listing every problem when any file cannot be read or parsed, a rule or reply
/// is invalid, or an example is not decided the way its rule says.
pub fn load(layers: &[Layer]) -> Result<Loaded, LoadError> {
    let started = Instant::now();
    let mut sources = Sources::default();
    let mut diagnostics = Vec::new();
    let mut collector = RuleCollector::default();
    let mut replies = RepliesBuilder::default();
    let mut first_reply_file = None;

    for (layer_index, layer) in layers.iter().enumerate() {
        let overlay = layer_index > 0;
        for (path, text) in read_toml_dir(&layer.replies, overlay, &mut sources, &mut diagnostics) {
            let file = sources.add(&path, text);
            first_reply_file.get_or_insert((file, 0..0));
            replies.add_file(file, sources.text(file), overlay, &mut diagnostics);
        }
        for (path, text) in read_toml_dir(&layer.rules, overlay, &mut sources, &mut diagnostics) {
            let file = sources.add(&path, text);
            collector.add_file(
                layer_index,
                file,
                sources.text(file),
                &sources,
                &mut diagnostics,
            );
        }
    }
    let parsed_at = Instant::now();
    let replies = replies.finish(first_reply_file, &mut diagnostics);
    let collected = collector.finish(&mut diagnostics);
    let compiled = compile(collected, replies, &sources, &mut diagnostics);

    let compiled_at = Instant::now();
    if let Some(rules) = &compiled {
        lint::check_examples(rules, &mut diagnostics);
        lint::warn_shadowed(rules, &mut diagnostics);
        lint::warn_shared_keywords(rules, &mut diagnostics);
    }
    let timings = LoadTimings {
        parse: parsed_at - started,
        compile: compiled_at - parsed_at,
        checks: compiled_at.elapsed(),
    };
    tracing::debug!(?timings, "rule set loaded");
    diagnostics.sort_by_key(|d| (d.file, d.span.start, d.severity));
    let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    match compiled {
        Some(rules) if !has_errors => Ok(Loaded {
            rules,
            warnings: diagnostics,
            sources,
            timings,
        }),
        _ => Err(LoadError {
            diagnostics,
            sources,
        }),
    }
}

/// The `*.toml` files of `dir` in name order. A missing overlay directory is fine; a missing
/// shared directory is an error.
fn read_toml_dir(
    dir: &Path,
    optional: bool,
    sources: &mut Sources,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<(PathBuf, String)> {
    let mut problem = |sources: &mut Sources, message: String| {
        let file = sources.add(dir, String::new());
        diagnostics.push(Diagnostic::error(file, 0..0, message));
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if optional && error.kind() == std::io::ErrorKind::NotFound => {
            return Vec::new();
        }
        Err(error) => {
            problem(
                sources,
                format!("cannot read directory {}: {error}", dir.display()),
            );
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() && !optional {
        problem(sources, format!("no *.toml files in {}", dir.display()));
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
    files
}
