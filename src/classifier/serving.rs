//! The model as the rules carry it: the classifier, the thresholds routing uses, and whether it
//! was trained on the training text as it is now.
//!
//! A rules directory with `model/model.toml` has a model; one without decides by rules alone.
//! Everything wrong with the model — the settings file, the model file, a reply the model would
//! need — is an error of the rule set, with file:line where there is a line, so a reload with a
//! broken model keeps the old set (and its model) serving, exactly as a broken rule does.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::train::Corpus;
use super::{Classifier, ModelSettings, Thresholds, file};
use crate::diagnostics::{Diagnostic, FileId, Sources};
use crate::replies::Replies;

/// The directory of the model, inside a rules directory.
pub const MODEL_DIR: &str = "model";
/// The settings file, inside [`MODEL_DIR`].
pub const SETTINGS_FILE: &str = "model.toml";
/// The training text, inside a rules directory.
pub const TRAINING_DIR: &str = "training";

/// A loaded, checked model and when to trust it.
#[derive(Debug, Clone)]
pub struct ServingModel {
    pub classifier: Classifier,
    pub settings: ModelSettings,
    pub path: PathBuf,
    /// The settings file, for warnings about the model.
    pub settings_file: FileId,
}

impl ServingModel {
    pub fn thresholds(&self) -> &Thresholds {
        &self.settings.thresholds
    }
}

/// Where a rules directory keeps its model settings.
pub fn settings_path(rules_dir: &Path) -> PathBuf {
    rules_dir.join(MODEL_DIR).join(SETTINGS_FILE)
}

/// Reads `rules_dir/model/model.toml` into `sources` and parses it; `None` when there is none.
/// Problems are pushed to `diagnostics`.
pub fn read_settings(
    rules_dir: &Path,
    sources: &mut Sources,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(FileId, ModelSettings)> {
    let path = settings_path(rules_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            let file = sources.add(&path, String::new());
            diagnostics.push(Diagnostic::error(
                file,
                0..0,
                format!("cannot read the model settings: {error}"),
            ));
            return None;
        }
    };
    let file = sources.add(&path, text);
    match toml::from_str::<ModelSettings>(sources.text(file)) {
        Ok(settings) => {
            let bits = settings.training.buckets_log2;
            let allowed = super::MIN_BUCKETS_LOG2..=super::MAX_BUCKETS_LOG2;
            if !allowed.contains(&bits) {
                diagnostics.push(Diagnostic::error(
                    file,
                    key_span(sources.text(file), "buckets_log2"),
                    format!(
                        "buckets_log2 = {bits} is outside {}..={} (2^{} buckets take {} MiB \
                         in memory at 14 decisions)",
                        allowed.start(),
                        allowed.end(),
                        allowed.end(),
                        (16usize << allowed.end()) >> 20
                    ),
                ));
                return None;
            }
            Some((file, settings))
        }
        Err(error) => {
            let span = error.span().unwrap_or(0..0);
            diagnostics.push(Diagnostic::error(file, span, error.message().to_string()));
            None
        }
    }
}

/// Loads the model of a rules directory, checking it against the replies it needs. Pushes every
/// problem to `diagnostics`; returns the model only when there was none.
pub fn load(
    rules_dir: &Path,
    replies: &Replies,
    sources: &mut Sources,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<ServingModel> {
    let (settings_file, settings) = read_settings(rules_dir, sources, diagnostics)?;
    let text = sources.text(settings_file).to_string();
    let span_of = |key: &str| key_span(&text, key);
    let mut problems = 0;
    for (name, value) in settings.thresholds.named() {
        if !(0.0..=1.0).contains(&value) {
            diagnostics.push(Diagnostic::error(
                settings_file,
                span_of(name),
                format!("threshold {name} = {value} must be a probability between 0 and 1"),
            ));
            problems += 1;
        }
    }
    let path = rules_dir.join(MODEL_DIR).join(&settings.file);
    let classifier = match file::load(&path) {
        Ok(classifier) => classifier,
        Err(error) => {
            diagnostics.push(Diagnostic::error(
                settings_file,
                span_of("file"),
                error.to_string(),
            ));
            return None;
        }
    };
    for label in classifier.labels() {
        let Some(key) = label.reply_key() else {
            continue;
        };
        if !replies.contains(&key) {
            diagnostics.push(
                Diagnostic::error(
                    settings_file,
                    span_of("file"),
                    format!("the model can decide {label}, but there is no reply {key:?}"),
                )
                .note(format!(
                    "add [[reply]] key = \"{key}\" to a replies file: the model's answer for {label}"
                )),
            );
            problems += 1;
        }
    }
    (problems == 0).then_some(ServingModel {
        classifier,
        settings,
        path,
        settings_file,
    })
}

/// Whether the model was trained on the training text and rule examples as they are now; a
/// warning naming the fix when not. Run after the rule set is built (its examples count).
pub fn staleness(
    rules_dir: &Path,
    model: &ServingModel,
    rules: &crate::rules::RuleSet,
) -> Option<String> {
    let settings = &model.settings;
    let mut corpus = Corpus::read_dir(&rules_dir.join(TRAINING_DIR)).ok()?;
    corpus.add_rule_examples(rules, settings.training.rule_example_weight);
    let now = corpus.fingerprint(&settings.training);
    (now != model.classifier.meta.trained_on).then(|| {
        format!(
            "the model {} was trained on other text than {} and the rules' examples hold now; \
             run `xiaoer train` to bring it up to date (it keeps serving as it is)",
            model.path.display(),
            rules_dir.join(TRAINING_DIR).display()
        )
    })
}

/// The span of `key = ...` in a small TOML text, for pointing at a setting.
fn key_span(text: &str, key: &str) -> Range<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            let start = offset + (line.len() - trimmed.len());
            return start..start + key.len();
        }
        offset += line.len();
    }
    0..0
}

/// What the model makes of the rules' own examples, for `xiaoer check`.
#[derive(Debug, Default)]
pub struct ExamplesReport {
    /// Examples checked against the model.
    pub checked: usize,
    /// Examples the model alone decides differently from their rule (the rule still decides
    /// them), one line each.
    pub wrong_alone: Vec<String>,
    /// Examples routing hands to the model instead of their rule (a weak escalation or an
    /// answer overruled), one line each: what the daemon will really do with them.
    pub overruled: Vec<String>,
}

/// Runs the model over every rule example.
pub fn check_examples(rules: &crate::rules::RuleSet) -> ExamplesReport {
    let Some(model) = rules.model() else {
        return ExamplesReport::default();
    };
    let (checked, wrong_alone) = wrong_alone(rules, &model.classifier);
    let mut overruled = Vec::new();
    for rule in rules.rules() {
        for (example, _) in &rule.examples {
            let routed = crate::routing::route(rules, example);
            if routed.by == crate::routing::DecidedBy::Model {
                overruled.push(format!(
                    "{} ({}): {example:?} — {}",
                    rule.id, rule.location, routed.why
                ));
            }
        }
    }
    ExamplesReport {
        checked,
        wrong_alone,
        overruled,
    }
}

/// The rule examples `classifier` alone decides differently from their rule, one line each,
/// and how many it was checked on (examples whose decision it has): for `check` and `train`.
pub fn wrong_alone(rules: &crate::rules::RuleSet, classifier: &Classifier) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for rule in rules.rules() {
        let want = super::train::rule_label(&rule.action, rule.topic);
        if !classifier.labels().contains(&want) {
            continue;
        }
        for (example, _) in &rule.examples {
            checked += 1;
            let (got, p) = classifier.predict(&crate::rules::normalise(example)).best();
            if got != want {
                wrong.push(format!(
                    "{} ({}): {example:?} is {want}; the model alone says {got} {p:.2}",
                    rule.id, rule.location
                ));
            }
        }
    }
    (checked, wrong)
}
