//! The load generator end to end: `xiaoer-load` drives the real daemon and the bare client
//! through its loopback gateway, and its report adds up (every message answered once — which
//! also proves `[conversation] greeting = false` leaves one reply per message).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn load(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(env!("CARGO_BIN_EXE_xiaoer-load"))
        .arg("run")
        .args(args)
        .arg("--xiaoer")
        .arg(env!("CARGO_BIN_EXE_xiaoer"))
        .arg("--rules")
        .arg(root.join("rules"))
        .arg("--replies")
        .arg(root.join("replies"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "xiaoer-load failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn window(report: &Value, target: &str) -> Value {
    report[target]["windows"][0].clone()
}

#[test]
fn closed_loop_against_both_targets_answers_every_message_once() {
    let report = load(&[
        "--target",
        "both",
        "--mode",
        "closed",
        "--buyers",
        "8",
        "--shops",
        "3",
        "--connections",
        "2",
        "--duration",
        "2s",
        "--warmup",
        "300ms",
        "--escalate",
        "0.2",
    ]);
    for target in ["bare", "xiaoer"] {
        let w = window(&report, target);
        let answered = w["answered"].as_u64().unwrap();
        assert!(answered > 10, "{target}: {w}");
        assert_eq!(w["sent"].as_u64().unwrap(), answered, "{target}: {w}");
        assert_eq!(w["unanswered"], 0, "{target}: {w}");
        assert_eq!(
            w["duplicates"], 0,
            "{target}: no greeting, no second reply: {w}"
        );
        assert!(w["latency"]["p50_us"].as_u64().unwrap() > 0, "{w}");
        assert!(
            w["cpu_s_per_1k"].as_f64().is_some(),
            "cpu read from /proc: {w}"
        );
    }
    assert!(
        report["xiaoer"]["rules"].as_u64().unwrap() > 100,
        "the shipped pack ran"
    );
    assert!(report["xiaoer"]["peak_rss_kib"].as_u64().unwrap() > 0);
    let ratio = &report["ratio"];
    assert!(ratio["p50"].as_f64().unwrap() > 0.0, "{ratio}");
    assert!(ratio["throughput"].as_f64().unwrap() > 0.0, "{ratio}");
}

#[test]
fn open_loop_offers_the_rate_asked_for_and_extra_rules_load() {
    let report = load(&[
        "--target",
        "xiaoer",
        "--mode",
        "open",
        "--rate",
        "200",
        "--buyers",
        "50",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--escalate",
        "0.1",
        "--extra-rules",
        "500",
    ]);
    let w = window(&report, "xiaoer");
    let sent = w["sent"].as_u64().unwrap();
    // Poisson arrivals at 200/s for 2 s: 400 expected; far outside 300..500 is a broken clock.
    assert!((300..=500).contains(&sent), "{w}");
    assert_eq!(w["unanswered"], 0, "{w}");
    assert_eq!(w["duplicates"], 0, "{w}");
    assert!(report["bare"].is_null());
    let rules = report["xiaoer"]["rules"].as_u64().unwrap();
    assert!(rules > 600, "500 rules on top of the shipped pack: {rules}");
}
