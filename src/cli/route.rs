//! `xiaoer route`: one buyer message per stdin line in, one JSON decision per stdout line out,
//! for replaying past traffic before a change.

use std::io::{BufRead, Write};

use serde::Serialize;

use super::CliError;
use crate::replies::RenderContext;
use crate::routing::route;
use crate::rules::RuleSet;

/// One line of `route` output; the field set is a contract other tools rely on.
#[derive(Debug, Serialize)]
pub struct RouteLine {
    pub action: &'static str,
    pub topic: &'static str,
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<&'static str>,
    pub reply: Option<String>,
    /// What decided: `rule`, `model`, or `none` for the fallback.
    pub by: &'static str,
    /// The model's probability for its top decision, when the model was asked (rounded to
    /// three places).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// Routes `text` and describes it the way `route` prints it. Replies use their first variant
/// so replays diff cleanly.
pub fn route_line(rules: &RuleSet, text: &str) -> RouteLine {
    let decided = route(rules, text);
    RouteLine {
        action: decided.kind.as_str(),
        topic: decided.topic_name(),
        queue: decided.queue.map(|q| q.as_str()),
        reply: decided
            .reply_key
            .as_deref()
            .and_then(|key| rules.replies().render(key, 0, &RenderContext::default())),
        by: decided.by.as_str(),
        confidence: decided
            .confidence
            .map(|p| (f64::from(p) * 1000.0).round() / 1000.0),
        rule: decided.rule,
    }
}

/// Routes every line of `input`. Invalid UTF-8 is replaced, not fatal; every input line gets
/// exactly one output line so outputs line up with inputs.
pub fn run(rules: &RuleSet, input: impl BufRead, out: &mut impl Write) -> Result<u64, CliError> {
    let mut input = input;
    let mut line = Vec::new();
    let mut count = 0;
    loop {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(CliError::io("read standard input"))?;
        if read == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        let routed = route_line(rules, text);
        serde_json::to_writer(&mut *out, &routed)
            .map_err(|e| CliError::io("write standard output")(e.into()))?;
        out.write_all(b"\n")
            .map_err(CliError::io("write standard output"))?;
        count += 1;
    }
    out.flush().map_err(CliError::io("write standard output"))?;
    Ok(count)
}
