//! `xiaoer eval` with the `either` kind and the `handled` share, and a file that is not in the
//! eval format (which once scored 0.000 without a word).

use std::path::Path;
use std::process::{Command, Output};

fn xiaoer(args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
    Command::new(env!("CARGO_BIN_EXE_xiaoer"))
        .args(args)
        .arg("--rules")
        .arg(root.join("rules"))
        .arg("--replies")
        .arg(root.join("replies"))
        .output()
        .unwrap()
}

fn write(lines: &[&str]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labelled.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let file = file.to_string_lossy().into_owned();
    (dir, file)
}

#[test]
fn either_messages_count_as_handled_when_escalated_to_their_queue_or_answered_on_their_topic() {
    let (_dir, file) = write(&[
        // Escalated to the allowed queue: handled, and not a false escalation.
        r#"{"text": "我要退款", "expect": "either", "accept": ["refund", "order"]}"#,
        // Escalated to another queue: not handled.
        r#"{"text": "我要退款", "expect": "either", "accept": ["after_sale", "order"]}"#,
        // Answered on the allowed topic: handled.
        r#"{"text": "什么时候发货", "expect": "either", "accept": ["refund", "shipping"]}"#,
        // The fallback: not handled.
        r#"{"text": "随便说说", "expect": "either", "accept": ["refund", "order"]}"#,
        // An answer with a real reply is handled too.
        r#"{"text": "什么时候发货", "expect": "answer", "accept": ["shipping"]}"#,
        r#"{"text": "好的", "expect": "quiet"}"#,
    ]);
    let output = xiaoer(&["eval", &file, "--json"]);
    assert!(output.status.success(), "{output:?}");
    let scores: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ratio = |name: &str| {
        (
            scores[name]["hit"].as_u64().unwrap(),
            scores[name]["of"].as_u64().unwrap(),
        )
    };
    assert_eq!(scores["messages"], 6);
    assert_eq!(ratio("handled"), (3, 5));
    assert_eq!(
        ratio("false_escalation"),
        (0, 2),
        "either is never a false escalation"
    );
    assert_eq!(ratio("answered"), (1, 1));
    assert_eq!(ratio("by_model"), (0, 6), "the fixture has no model");

    let report = String::from_utf8_lossy(&xiaoer(&["eval", &file]).stdout).into_owned();
    assert!(
        report.contains("handled            0.600  (3/5"),
        "{report}"
    );
}

#[test]
fn a_file_in_another_format_is_an_error_that_shows_the_expected_shape() {
    let (_dir, file) = write(&[
        r#"{"text": "我要退款", "expect": "escalate", "queue": "refund"}"#,
        r#"{"message": "你好"}"#,
    ]);
    let output = xiaoer(&["eval", &file]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no labelled messages"), "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");
    assert!(stderr.contains("unknown field `queue`"), "{stderr}");
    assert!(stderr.contains("docs/rules.md"), "{stderr}");
}

#[test]
fn the_shipped_regression_file_is_in_the_eval_format() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(env!("CARGO_BIN_EXE_xiaoer"))
        .current_dir(root)
        .args(["eval", "tests/pack/regression.jsonl", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let scores: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(scores["skipped_lines"], 0);
    assert!(scores["messages"].as_u64().unwrap() >= 190);
    assert!(scores["escalation_recall"]["of"].as_u64().unwrap() > 0);
}
