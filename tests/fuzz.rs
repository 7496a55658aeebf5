//! Property-based fuzzing of everything that reads input from outside: gateway frames, rule and
//! reply files, buyer text, reply templates, the config file, the model file. Each target feeds
//! mutated seeds and random input and requires an answer — a value or an error with a message —
//! and never a panic. (cargo-fuzz needs a nightly toolchain, which this project's machines do not
//! have; proptest runs on stable and shrinks what it finds.)
//!
//! The seeds are committed: `tests/fuzz-seeds/` (frames as real and hostile gateways send them,
//! buyer texts that have tripped routing), the fixture rule and reply files, `deploy/xiaoer.toml`.
//!
//! Every `cargo test` runs 128 cases a target. `XIAOER_FUZZ_SECONDS=N` runs each target for N
//! seconds instead, in rounds of fresh seeds, and prints how many cases it ran; `.ci/run` does a
//! short one, and the long one is in docs/reliability.md.

mod common;

use common::copy_dir;
use std::fmt::Debug;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use xiaoer::gateway::onebot;
use xiaoer::rules::{Layer, RuleSet, load};

/// 128 cases per target, or `PROPTEST_CASES`.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

/// How long each target runs when a timed run is asked for.
fn budget() -> Option<Duration> {
    std::env::var("XIAOER_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
}

/// Runs `test` on inputs from `strategy`: one round of [`cases`], or rounds of 100 cases with
/// fresh seeds until [`budget`] has passed. A failure panics with the shrunk input and the seed
/// that found it (`XIAOER_FUZZ_SEED` replays a run).
fn fuzz<S>(target: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let budget = budget();
    let seed: u64 = std::env::var("XIAOER_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let started = Instant::now();
    let mut total: u64 = 0;
    for round in 0u64.. {
        let cases = if budget.is_some() { 100 } else { cases() };
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&round.to_le_bytes());
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
        match runner.run(&strategy, &test) {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => panic!(
                "fuzz target {target} failed (XIAOER_FUZZ_SEED={seed}, round {round}): {why}\nminimal input: {input:#?}"
            ),
            Err(TestError::Abort(why)) => {
                panic!(
                    "fuzz target {target} gave up (XIAOER_FUZZ_SEED={seed}, round {round}): {why}"
                )
            }
        }
        total += u64::from(cases);
        match budget {
            Some(budget) if started.elapsed() < budget => {}
            _ => break,
        }
    }
    if budget.is_some() {
        eprintln!(
            "fuzz target {target}: {total} cases in {:.0} s, all passed (XIAOER_FUZZ_SEED={seed})",
            started.elapsed().as_secs_f64()
        );
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One seed file's lines.
fn seeds(name: &str) -> Vec<String> {
    let path = root().join("tests/fuzz-seeds").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn any_text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(".{{0,{max}}}")).expect("a valid pattern")
}

/// Characters that matter to the formats under test, plus CJK, combining marks and controls.
fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(vec![
            '"', '\'', '[', ']', '{', '}', '=', ',', ':', '\n', '\\', '#', '.', '-', '0', '9', ' ',
            '\t', '\r', '\0', '退', '款', '货', '\u{0300}', '\u{200b}', '\u{202e}', '\u{fffd}',
            'é', '💥',
        ]),
        any::<char>(),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, char),
    Delete(usize),
    DuplicateLine(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), interesting_char()).prop_map(|(at, c)| Edit::Insert(at, c)),
            any::<usize>().prop_map(Edit::Delete),
            any::<usize>().prop_map(Edit::DuplicateLine),
        ],
        1..12,
    )
}

/// `text` with the edits applied at positions taken modulo its length.
fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let len = chars.len().max(1);
        match *edit {
            Edit::Insert(at, c) => chars.insert(at % (chars.len() + 1), c),
            Edit::Delete(at) => {
                if !chars.is_empty() {
                    chars.remove(at % len);
                }
            }
            Edit::DuplicateLine(at) => {
                let s: String = chars.iter().collect();
                let lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let i = at % lines.len();
                    let mut out: Vec<&str> = lines.clone();
                    out.insert(i, lines[i]);
                    chars = out.join("\n").chars().collect();
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// The shipped pack, compiled once.
fn pack() -> &'static RuleSet {
    static PACK: OnceLock<RuleSet> = OnceLock::new();
    PACK.get_or_init(|| {
        load(&[Layer::new(root().join("rules"), root().join("replies"))])
            .unwrap_or_else(|e| panic!("the shipped pack loads: {e}"))
            .rules
    })
}

/// A small trained model's file bytes (the shipped one is too large to mutate quickly in a
/// debug build; the format is the same).
fn model_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        use xiaoer::classifier::{Corpus, Label, TrainingExample, TrainingSettings, file, train};
        use xiaoer::model::{Queue, Topic};
        let mut corpus = Corpus::default();
        let lines = [
            (Label::Escalate(Queue::AfterSale), "收到的杯子碎了"),
            (Label::Escalate(Queue::AfterSale), "少发了一个"),
            (Label::Answer(Topic::Price), "能便宜点吗"),
            (Label::Answer(Topic::Price), "有券吗"),
            (Label::Quiet, "好的谢谢"),
        ];
        for (label, text) in lines {
            corpus.examples.push(TrainingExample {
                label,
                text: text.into(),
                origin: "fuzz".into(),
                weight: 1,
            });
        }
        corpus.labels = vec![
            Label::Escalate(Queue::AfterSale),
            Label::Answer(Topic::Price),
            Label::Quiet,
        ];
        let settings = TrainingSettings {
            buckets_log2: 10,
            epochs: 20,
            ..TrainingSettings::default()
        };
        file::to_bytes(&train::train(&corpus, &settings))
    })
}

#[test]
fn damaged_model_files_are_refused_not_panicked_on() {
    let strategy = (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    fuzz("model file", strategy, |(flips, cut, reseal)| {
        use sha2::{Digest, Sha256};
        let original = model_bytes();
        prop_assume!(original.len() > 64);
        let mut bytes = original.to_vec();
        for (at, value) in &flips {
            let at = at.index(bytes.len());
            bytes[at] = *value;
        }
        if reseal {
            // A fresh checksum gets the damage past the first check, into the parser.
            let body = bytes.len() - 32;
            let sum = Sha256::digest(&bytes[..body]);
            bytes[body..].copy_from_slice(&sum);
        } else {
            bytes.truncate(cut.index(bytes.len()));
        }
        let path = Path::new("fuzzed.model");
        if let Ok(model) = xiaoer::classifier::file::from_bytes(&bytes, path) {
            // Whatever loads must predict without panicking.
            let _ = model.predict(&xiaoer::rules::normalise("收到的杯子碎了"));
        }
        Ok(())
    });
}

#[test]
fn gateway_frames_never_panic_the_decoder() {
    let strategy = (
        prop::sample::select(seeds("frames.txt")),
        edits(),
        any_text(200),
    );
    fuzz("gateway frames", strategy, |(frame, edits, noise)| {
        let _ = onebot::decode(&mutate(&frame, &edits));
        let _ = onebot::decode(&noise);
        Ok(())
    });
}

#[test]
fn any_buyer_text_is_decided_the_same_way_twice() {
    let strategy = prop_oneof![
        any_text(300),
        (prop::sample::select(seeds("texts.txt")), edits()).prop_map(|(t, e)| mutate(&t, &e)),
    ];
    fuzz("normalise and route", strategy, |text| {
        let rules = pack();
        let first = xiaoer::routing::route(rules, &text);
        let second = xiaoer::routing::route(rules, &text);
        prop_assert_eq!(first, second);
        let normalised = xiaoer::rules::normalise(&text);
        prop_assert_eq!(
            xiaoer::rules::normalise(&normalised),
            normalised,
            "normalising is idempotent"
        );
        Ok(())
    });
}

#[test]
fn broken_rule_and_reply_files_get_errors_not_panics() {
    let fixture = root().join("tests/fixtures/good");
    let rule_text = std::fs::read_to_string(fixture.join("rules/rules.toml")).unwrap();
    let reply_text = std::fs::read_to_string(fixture.join("replies/replies.toml")).unwrap();
    fuzz(
        "rule and reply files",
        (edits(), edits()),
        |(rules_edits, replies_edits)| {
            let dir = tempfile::tempdir().unwrap();
            let (rules, replies) = (dir.path().join("rules"), dir.path().join("replies"));
            std::fs::create_dir_all(&rules).unwrap();
            std::fs::create_dir_all(&replies).unwrap();
            std::fs::write(rules.join("rules.toml"), mutate(&rule_text, &rules_edits)).unwrap();
            std::fs::write(
                replies.join("replies.toml"),
                mutate(&reply_text, &replies_edits),
            )
            .unwrap();
            match load(&[Layer::new(&rules, &replies)]) {
                Ok(loaded) => {
                    // Whatever loaded also answers.
                    let _ = xiaoer::routing::route(&loaded.rules, "我要退款，什么时候发货");
                }
                Err(error) => {
                    let text = error.to_string();
                    prop_assert!(!text.is_empty());
                    for problem in error.errors() {
                        let line = error.sources.one_line(problem);
                        prop_assert!(!line.is_empty());
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn reply_templates_render_or_are_refused() {
    let templates = proptest::string::string_regex("[^\"\\\\\n]{0,80}").expect("a valid pattern");
    let keys = proptest::string::string_regex("[a-z_]{1,10}").expect("a valid pattern");
    fuzz("reply templates", (templates, keys), |(template, key)| {
        let dir = tempfile::tempdir().unwrap();
        let (rules, replies) = (dir.path().join("rules"), dir.path().join("replies"));
        copy_dir(&root().join("tests/fixtures/good/rules"), &rules);
        copy_dir(&root().join("tests/fixtures/good/replies"), &replies);
        std::fs::write(
            replies.join("zz-fuzz.toml"),
            format!("[[reply]]\nkey = \"fuzz_{key}\"\ntext = \"{template}\"\n"),
        )
        .unwrap();
        if let Ok(loaded) = load(&[Layer::new(&rules, &replies)]) {
            let context = xiaoer::replies::RenderContext {
                shop: Some("店"),
                buyer: None,
                queue: Some(xiaoer::model::Queue::Refund),
                queue_eta: Some("5分钟"),
            };
            for rotation in 0..3 {
                let _ = loaded
                    .rules
                    .replies()
                    .render(&format!("fuzz_{key}"), rotation, &context);
            }
        }
        Ok(())
    });
}

#[test]
fn broken_config_files_get_errors_not_panics() {
    let text = std::fs::read_to_string(root().join("deploy/xiaoer.toml")).unwrap();
    fuzz("config file", edits(), |edits| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xiaoer.toml");
        std::fs::write(&path, mutate(&text, &edits)).unwrap();
        let no_env: Vec<(String, String)> = Vec::new();
        if let Err(error) = xiaoer::config::Config::load(Some(&path), no_env, &Default::default()) {
            prop_assert!(!error.to_string().is_empty());
        }
        Ok(())
    });
}
