//! `xiaoer check`: parse, validate and compile the rule and reply files, run every example, and
//! report every problem at once.

use std::io::Write;

use super::{CliError, RuleDirs};
use crate::diagnostics::Severity;

/// Runs the check; diagnostics go to `errors`, the summary to `out`. Returns whether the files
/// are fit to load (warnings allowed).
pub fn run(
    dirs: &RuleDirs,
    colour: bool,
    out: &mut impl Write,
    errors: &mut impl Write,
) -> Result<bool, CliError> {
    let write_failed = CliError::io("write the report");
    match dirs.load() {
        Ok(loaded) => {
            let report = loaded.sources.render(&loaded.warnings, colour);
            let examples: usize = loaded
                .rules
                .rules()
                .map(|r| r.examples.len() + r.counter_examples.len())
                .sum();
            (|| {
                errors.write_all(report.as_bytes())?;
                writeln!(
                    out,
                    "ok: {} rules, {} replies, {} keywords, {} examples passed, {} warning{}",
                    loaded.rules.rule_count(),
                    loaded.rules.replies().keys().count(),
                    loaded.rules.keyword_count(),
                    examples,
                    loaded.warnings.len(),
                    if loaded.warnings.len() == 1 { "" } else { "s" }
                )
            })()
            .map_err(write_failed)?;
            report_model(&loaded.rules, out)?;
            Ok(true)
        }
        Err(failure) => {
            let report = failure.sources.render(&failure.diagnostics, colour);
            let count = |severity| {
                failure
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == severity)
                    .count()
            };
            (|| {
                errors.write_all(report.as_bytes())?;
                writeln!(
                    errors,
                    "check failed: {} error{}, {} warning{}",
                    count(Severity::Error),
                    if count(Severity::Error) == 1 { "" } else { "s" },
                    count(Severity::Warning),
                    if count(Severity::Warning) == 1 {
                        ""
                    } else {
                        "s"
                    },
                )
            })()
            .map_err(write_failed)?;
            Ok(false)
        }
    }
}

/// What the model makes of the rules' examples: informational, never a failure (rules decide
/// their examples), but an overruled example is what the daemon will really do.
fn report_model(rules: &crate::rules::RuleSet, out: &mut impl Write) -> Result<(), CliError> {
    let Some(model) = rules.model() else {
        return Ok(());
    };
    let report = crate::classifier::serving::check_examples(rules);
    let write = |out: &mut dyn Write, line: &str| {
        writeln!(out, "{line}").map_err(CliError::io("write the report"))
    };
    write(
        out,
        &format!(
            "model {}: {} decisions, trained on {} examples; alone it gets {} of the {} rule examples wrong",
            model.path.display(),
            model.classifier.labels().len(),
            model.classifier.meta.examples,
            report.wrong_alone.len(),
            report.checked
        ),
    )?;
    for line in &report.wrong_alone {
        write(out, &format!("  {line}"))?;
    }
    if !report.overruled.is_empty() {
        write(
            out,
            &format!(
                "{} rule examples are decided by the model, not their rule (weak escalations and answers it overrules):",
                report.overruled.len()
            ),
        )?;
        for line in &report.overruled {
            write(out, &format!("  {line}"))?;
        }
    }
    Ok(())
}
