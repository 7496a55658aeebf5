//! Property-based fuzzing of everything that reads input from outside: gateway frames, rule and
//! reply files, buyer text, reply templates, the config file, the model file. Each target feeds mutated and
//! random input and requires an answer — a value or an error with a message — and never a
//! panic. (cargo-fuzz needs a nightly toolchain, which this project's machines do not have;
//! proptest runs on stable and shrinks what it finds.)
//!
//! Short runs go with every `cargo test`. A long run of every target:
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz` (see docs/reliability.md).

mod common;

use common::copy_dir;
use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use xiaoer::gateway::onebot;
use xiaoer::rules::{Layer, RuleSet, load};

/// 128 cases per target, or `PROPTEST_CASES` for a long run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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

fn sample_frames() -> Vec<String> {
    vec![
        r#"{"id":"1","time":1.5,"type":"message","detail_type":"private","sub_type":"","message_id":"m1","user_id":"u1","self":{"platform":"qq","user_id":"s1"},"message":[{"type":"text","data":{"text":"我要退款"}},{"type":"shop.item","data":{"item_id":"9","title":"T恤"}}],"alt_message":"我要退款"}"#.to_owned(),
        r#"{"id":"2","time":1,"type":"meta","detail_type":"heartbeat","sub_type":"","interval":5000,"status":{"good":true,"bots":[]}}"#.to_owned(),
        r#"{"status":"ok","retcode":0,"data":{"message_id":"x"},"message":"","echo":"e1"}"#.to_owned(),
        r#"{"id":"3","time":1,"type":"meta","detail_type":"connect","sub_type":"","version":{"impl":"walle","version":"0.7","onebot_version":"12"}}"#.to_owned(),
    ]
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

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn damaged_model_files_are_refused_not_panicked_on(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        reseal in any::<bool>(),
    ) {
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
    }

    #[test]
    fn gateway_frames_never_panic_the_decoder(
        frame in prop::sample::select(sample_frames()),
        edits in edits(),
        noise in ".{0,200}",
    ) {
        let _ = onebot::decode(&mutate(&frame, &edits));
        let _ = onebot::decode(&noise);
    }

    #[test]
    fn any_buyer_text_is_decided_the_same_way_twice(text in ".{0,300}") {
        let rules = pack();
        let first = xiaoer::routing::route(rules, &text);
        let second = xiaoer::routing::route(rules, &text);
        prop_assert_eq!(first, second);
        let normalised = xiaoer::rules::normalise(&text);
        prop_assert_eq!(xiaoer::rules::normalise(&normalised), normalised, "normalising is idempotent");
    }

    #[test]
    fn broken_rule_and_reply_files_get_errors_not_panics(
        rules_edits in edits(),
        replies_edits in edits(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (rules, replies) = (dir.path().join("rules"), dir.path().join("replies"));
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::create_dir_all(&replies).unwrap();
        let fixture = root().join("tests/fixtures/good");
        let rule_text = std::fs::read_to_string(fixture.join("rules/rules.toml")).unwrap();
        let reply_text = std::fs::read_to_string(fixture.join("replies/replies.toml")).unwrap();
        std::fs::write(rules.join("rules.toml"), mutate(&rule_text, &rules_edits)).unwrap();
        std::fs::write(replies.join("replies.toml"), mutate(&reply_text, &replies_edits)).unwrap();
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
    }

    #[test]
    fn reply_templates_render_or_are_refused(template in "[^\"\\\\\n]{0,80}", key in "[a-z_]{1,10}") {
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
                let _ = loaded.rules.replies().render(&format!("fuzz_{key}"), rotation, &context);
            }
        }
    }

    #[test]
    fn broken_config_files_get_errors_not_panics(edits in edits()) {
        let text = std::fs::read_to_string(root().join("deploy/xiaoer.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xiaoer.toml");
        std::fs::write(&path, mutate(&text, &edits)).unwrap();
        let no_env: Vec<(String, String)> = Vec::new();
        if let Err(error) = xiaoer::config::Config::load(Some(&path), no_env, &Default::default()) {
            prop_assert!(!error.to_string().is_empty());
        }
    }
}
