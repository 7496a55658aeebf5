//! `xiaoer train`: build the model file from the training text and every rule's examples.
//!
//! Reads `rules/training/*.tsv` and the rule set (without its old model), trains with the
//! settings in `rules/model/model.toml`, checks the result on the rules' own examples, and writes
//! the model through a temporary file. The same inputs give the same file byte for byte.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use super::{CliError, RuleDirs};
use crate::classifier::serving::{self, MODEL_DIR, TRAINING_DIR};
use crate::classifier::{Corpus, ModelSettings, file, train};
use crate::diagnostics::Sources;
use crate::rules::{Layer, load_without_model, normalise};

/// What training did, for the report and for tests.
#[derive(Debug)]
pub struct Trained {
    pub path: PathBuf,
    pub examples: usize,
    pub labels: usize,
    pub rows: usize,
    pub bytes: usize,
    /// Training examples the model itself decides differently from their label.
    pub training_errors: usize,
    /// Rule examples whose decision the model gets wrong on its own (rules still decide them).
    pub rule_example_errors: Vec<String>,
    pub seconds: f64,
}

/// Trains and writes the model; `out` overrides where it is written.
///
/// # Errors
///
/// The rules do not load, the training text cannot be read, or the file cannot be written.
pub fn run(
    dirs: &RuleDirs,
    out: Option<PathBuf>,
    report: &mut impl Write,
) -> Result<Trained, CliError> {
    let started = Instant::now();
    let layer = Layer::new(&dirs.rules, &dirs.replies);
    let loaded = load_without_model(&layer)?;
    let rules = loaded.rules;
    let mut sources = Sources::default();
    let mut problems = Vec::new();
    let settings = match serving::read_settings(&dirs.rules, &mut sources, &mut problems) {
        Some((_, settings)) => settings,
        None if problems.is_empty() => ModelSettings::default(),
        None => {
            return Err(CliError::Input(sources.render(&problems, false)));
        }
    };
    let training_dir = dirs.rules.join(TRAINING_DIR);
    let mut corpus = Corpus::read_dir(&training_dir).map_err(|e| CliError::Input(e.to_string()))?;
    corpus.add_rule_examples(&rules, settings.training.rule_example_weight);
    let model = train::train(&corpus, &settings.training);

    let training_errors = corpus
        .examples
        .iter()
        .filter(|e| model.predict(&normalise(&e.text)).best().0 != e.label)
        .count();
    let (_, rule_example_errors) = serving::wrong_alone(&rules, &model);

    let path = out.unwrap_or_else(|| dirs.rules.join(MODEL_DIR).join(&settings.file));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(CliError::io(format!(
            "create the model directory {}",
            parent.display()
        )))?;
    }
    let bytes = file::to_bytes(&model).len();
    file::save(&model, &path).map_err(|e| CliError::Input(e.to_string()))?;
    let trained = Trained {
        path,
        examples: corpus.examples.len(),
        labels: corpus.labels.len(),
        rows: model.row_count(),
        bytes,
        training_errors,
        rule_example_errors,
        seconds: started.elapsed().as_secs_f64(),
    };
    let io = CliError::io("write the report");
    writeln!(report, "training text: {}", training_dir.display()).map_err(io)?;
    for (label, count) in corpus.counts() {
        writeln!(report, "  {label:<22} {count:>6}").map_err(CliError::io("write the report"))?;
    }
    if !corpus.conflicts.is_empty() {
        writeln!(
            report,
            "  {} messages are written under two decisions and were left out; settle them:",
            corpus.conflicts.len()
        )
        .map_err(CliError::io("write the report"))?;
        for (text, one, other) in corpus.conflicts.iter().take(20) {
            writeln!(report, "    {text:?}: {one} and {other}")
                .map_err(CliError::io("write the report"))?;
        }
    }
    if corpus.skipped_rule_examples > 0 {
        writeln!(
            report,
            "  ({} rule examples left out: no training file has their decision)",
            corpus.skipped_rule_examples
        )
        .map_err(CliError::io("write the report"))?;
    }
    writeln!(
        report,
        "trained on {} examples, {} decisions: {} n-gram rows, {:.1} MB, in {:.1} s",
        trained.examples,
        trained.labels,
        trained.rows,
        trained.bytes as f64 / 1e6,
        trained.seconds
    )
    .map_err(CliError::io("write the report"))?;
    writeln!(
        report,
        "the model alone gets {} of its {} training examples wrong",
        trained.training_errors, trained.examples
    )
    .map_err(CliError::io("write the report"))?;
    for error in &trained.rule_example_errors {
        writeln!(report, "  {error}").map_err(CliError::io("write the report"))?;
    }
    writeln!(report, "wrote {}", trained.path.display())
        .map_err(CliError::io("write the report"))?;
    Ok(trained)
}
