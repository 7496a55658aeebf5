//! The shipped rule pack: it loads cleanly (every rule's examples pass, the model is trained on
//! the training text as it is) and routes the tricky messages in `tests/pack/regression.jsonl`
//! — an eval file in the project's own words — the way the pack promises.

use std::path::Path;

use serde::Deserialize;
use xiaoer::routing::{OutcomeKind, route};
use xiaoer::rules::{Layer, RuleSet, load};

/// One line of the eval format (docs/rules.md).
#[derive(Deserialize)]
struct Case {
    text: String,
    expect: String,
    #[serde(default)]
    accept: Vec<String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped() -> RuleSet {
    match load(&[Layer::new(root().join("rules"), root().join("replies"))]) {
        Ok(loaded) => {
            let stale: Vec<String> = loaded
                .warnings
                .iter()
                .filter(|w| w.message.contains("xiaoer train"))
                .map(|w| w.message.clone())
                .collect();
            assert!(stale.is_empty(), "{stale:?}");
            loaded.rules
        }
        Err(error) => panic!("the shipped pack does not load: {error}"),
    }
}

#[test]
fn shipped_pack_routes_every_regression_case() {
    let rules = shipped();
    assert!(rules.model().is_some(), "the shipped pack has a model");
    let path = root().join("tests/pack/regression.jsonl");
    let text = std::fs::read_to_string(&path).expect("read regression.jsonl");
    let mut failures = Vec::new();
    let mut count = 0;
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("regression.jsonl:{}: {e}", number + 1));
        count += 1;
        let outcome = route(&rules, &case.text);
        let got = format!(
            "{} topic={} queue={} by={} ({})",
            outcome.kind.as_str(),
            outcome.topic_name(),
            outcome.queue.map(|q| q.as_str()).unwrap_or("-"),
            outcome.by.as_str(),
            outcome.why
        );
        let first = case.accept.first().map(String::as_str);
        let ok = match case.expect.as_str() {
            "escalate" => {
                outcome.kind == OutcomeKind::Escalate
                    && first.is_none_or(|q| outcome.queue.map(|o| o.as_str()) == Some(q))
            }
            "answer" => {
                outcome.kind == OutcomeKind::Reply
                    && first.is_none_or(|t| outcome.topic_name() == t)
            }
            "either" => match outcome.kind {
                OutcomeKind::Escalate => outcome.queue.map(|q| q.as_str()) == first,
                OutcomeKind::Reply => {
                    Some(outcome.topic_name()) == case.accept.get(1).map(String::as_str)
                }
                _ => false,
            },
            // Stricter than `eval`: a quiet message must not fall back either, since every
            // fallback counts towards handing the chat to a person.
            "quiet" => !matches!(outcome.kind, OutcomeKind::Escalate | OutcomeKind::Fallback),
            other => panic!("regression.jsonl:{}: unknown expect {other:?}", number + 1),
        };
        if !ok {
            failures.push(format!(
                "line {}: {:?} expected {} {:?}, got {got}",
                number + 1,
                case.text,
                case.expect,
                case.accept,
            ));
        }
    }
    assert!(
        count >= 60,
        "the regression file should hold the tricky cases ({count})"
    );
    assert!(
        failures.is_empty(),
        "{} of {count} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn shipped_pack_covers_every_queue_and_the_daemon_replies() {
    let rules = shipped();
    for queue in xiaoer::model::Queue::ALL {
        assert!(
            rules.rules().any(|r| r.action.queue() == Some(*queue)),
            "no rule escalates to {queue}"
        );
    }
    for key in xiaoer::replies::REQUIRED_KEYS {
        assert!(rules.replies().contains(key), "missing reply {key}");
    }
    assert!(
        rules.rules().all(|r| !r.examples.is_empty()),
        "every rule has examples"
    );
}

#[test]
fn the_shipped_model_is_what_training_the_shipped_text_gives_byte_for_byte() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("retrained.model");
    let dirs = xiaoer::cli::RuleDirs {
        rules: root().join("rules"),
        replies: root().join("replies"),
        shop: None,
    };
    xiaoer::cli::train::run(&dirs, Some(path.clone()), &mut Vec::new()).expect("train");
    let shipped = std::fs::read(root().join("rules/model/xiaoer.model")).unwrap();
    assert!(
        std::fs::read(&path).unwrap() == shipped,
        "rules/model/xiaoer.model is not what `xiaoer train` makes of rules/training now: run it"
    );
}
