//! Runs the `xiaoer` binary on good and broken rule directories and checks what ops people see.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const GOOD: [&str; 4] = [
    "--rules",
    "tests/fixtures/good/rules",
    "--replies",
    "tests/fixtures/good/replies",
];
const BROKEN: [&str; 4] = [
    "--rules",
    "tests/fixtures/broken/rules",
    "--replies",
    "tests/fixtures/broken/replies",
];

fn xiaoer(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xiaoer"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xiaoer");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for xiaoer")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_passes_on_good_rules() {
    let output = xiaoer(&[&["check"][..], &GOOD].concat(), "");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "ok: 6 rules, 10 replies, 22 keywords, 16 examples passed, 0 warnings\n"
    );
}

#[test]
fn check_reports_every_error_with_file_line_and_column() {
    let output = xiaoer(&[&["check"][..], &BROKEN].concat(), "");
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let expected = [
        (
            "error: unknown variable `{nickname}`",
            "tests/fixtures/broken/replies/replies.toml:38:8",
        ),
        (
            "error: unknown topic `shiping`",
            "tests/fixtures/broken/rules/a.toml:3:9",
        ),
        (
            "error: unknown queue `refunds`",
            "tests/fixtures/broken/rules/a.toml:10:12",
        ),
        (
            "error: duplicate rule id `refund.request`",
            "tests/fixtures/broken/rules/a.toml:15:6",
        ),
        (
            "error: invalid regex: unclosed group",
            "tests/fixtures/broken/rules/b.toml:5:10",
        ),
        (
            "error: example \"多谢\" is decided by no rule (fallback), not by this rule",
            "tests/fixtures/broken/rules/b.toml:12:13",
        ),
        (
            "error: counter-example \"谢谢啦\" is decided by this rule",
            "tests/fixtures/broken/rules/b.toml:13:21",
        ),
        (
            "error: rule has no action: set `reply`, `escalate` with `reply`, or `ignore = true`",
            "tests/fixtures/broken/rules/b.toml:16:6",
        ),
        (
            "error: priority 5000 is out of range 0..=1000",
            "tests/fixtures/broken/rules/b.toml:24:12",
        ),
        (
            "error: empty keyword in `any`",
            "tests/fixtures/broken/rules/b.toml:25:8",
        ),
        (
            "error: invalid basic string",
            "tests/fixtures/broken/rules/c.toml:4:16",
        ),
    ];
    let mut last = 0;
    for (message, location) in expected {
        let at = stderr[last..]
            .find(message)
            .unwrap_or_else(|| panic!("missing or out of order: {message}\n{stderr}"))
            + last;
        let next_line = stderr[at..].lines().nth(1).unwrap_or("");
        assert!(
            next_line.ends_with(&format!("┌─ {location}")),
            "{message} should point at {location}, got {next_line:?}"
        );
        last = at;
    }
    assert!(
        stderr.ends_with("check failed: 11 errors, 0 warnings\n"),
        "{stderr}"
    );
}

#[test]
fn check_on_a_missing_directory_says_which() {
    let output = xiaoer(
        &[
            "check",
            "--rules",
            "tests/fixtures/none",
            "--replies",
            "tests/fixtures/good/replies",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "error: the rules directory tests/fixtures/none does not exist (set --rules or XIAOER_RULES)\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("check failed: 1 error, 0 warnings\n"),
        "{stderr}"
    );
}

#[test]
fn a_missing_replies_directory_is_one_error_not_one_per_reply_key() {
    let output = xiaoer(
        &[
            "check",
            "--rules",
            "tests/fixtures/good/rules",
            "--replies",
            "/nonexistent",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr,
        "error: the replies directory /nonexistent does not exist (set --replies or XIAOER_REPLIES)\n\n\
         check failed: 1 error, 0 warnings\n"
    );

    // The same from the environment, and for a directory with no reply files in it.
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_string_lossy().into_owned();
    let output = Command::new(env!("CARGO_BIN_EXE_xiaoer"))
        .args(["check", "--rules", "tests/fixtures/good/rules"])
        .env("XIAOER_REPLIES", &empty)
        .env("NO_COLOR", "1")
        .output()
        .expect("run xiaoer");
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: the replies directory {empty} has no *.toml files\n"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("reply key"), "{stderr}");
    assert!(
        stderr.ends_with("check failed: 1 error, 0 warnings\n"),
        "{stderr}"
    );
}

#[test]
fn check_warns_about_shadowed_rules_and_shared_keywords() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("r.toml"),
        r#"
[[rule]]
id = "refund.any"
topic = "refund"
escalate = "refund"
reply = "refund_ack"
priority = 80
any = ["退"]

[[rule]]
id = "refund.narrow"
topic = "order"
reply = "thanks"
any = ["退货地址", "退款"]
"#,
    )
    .unwrap();
    let rules = rules.to_string_lossy().into_owned();
    let output = xiaoer(
        &[
            "check",
            "--rules",
            &rules,
            "--replies",
            "tests/fixtures/good/replies",
        ],
        "",
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "warning: rule `refund.narrow` can never win: `refund.any` (priority 80) matches every message it matches"
        ),
        "{stderr}"
    );
    assert!(text(&output.stdout).ends_with("1 warning\n"));
}

#[test]
fn route_prints_one_contract_object_per_input_line() {
    let output = xiaoer(
        &[&["route"][..], &GOOD].concat(),
        "你好\n什么时候发货\r\n不想退款了\n\n质量差\n好的\n",
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 6, "one output line per input line");
    let summary: Vec<(String, String, Option<String>)> = lines
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_string(),
                l["topic"].as_str().unwrap().to_string(),
                l.get("queue").and_then(|q| q.as_str()).map(String::from),
            )
        })
        .collect();
    let expected = [
        ("reply", "greeting", None),
        ("reply", "shipping", None),
        ("fallback", "fallback", None),
        ("fallback", "fallback", None),
        ("escalate", "after_sale", Some("after_sale")),
        ("ignore", "thanks", None),
    ];
    for (got, want) in summary.iter().zip(expected) {
        assert_eq!((got.0.as_str(), got.1.as_str(), got.2.as_deref()), want);
    }
    assert_eq!(lines[1]["rule"], "shipping.when");
    assert_eq!(lines[1]["reply"], "现货下单后48小时内发出。");
    assert_eq!(lines[2]["rule"], serde_json::Value::Null);
    assert_eq!(lines[5]["reply"], serde_json::Value::Null);
    let by: Vec<&str> = lines.iter().map(|l| l["by"].as_str().unwrap()).collect();
    assert_eq!(by, ["rule", "rule", "none", "none", "rule", "rule"]);
    let mut keys: Vec<&String> = lines[4].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["action", "by", "queue", "reply", "rule", "topic"]);
    let mut keys: Vec<&String> = lines[0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["action", "by", "reply", "rule", "topic"],
        "no queue unless escalating"
    );
}

#[test]
fn route_survives_invalid_utf8() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xiaoer"))
        .args([&["route"][..], &GOOD].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\xff\xfe\xe9\n\xe6\x88\x91\xe8\xa6\x81\xe9\x80\x80\xe6\xac\xbe\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[1].contains("\"queue\":\"refund\""), "{stdout}");
}

#[test]
fn route_refuses_broken_rules_with_a_clear_message() {
    let output = xiaoer(&[&["route"][..], &BROKEN].concat(), "你好\n");
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).is_empty());
    assert!(
        text(&output.stderr)
            .contains("error: cannot load the rules (run `xiaoer check` for details)")
    );
}

#[test]
fn explain_shows_every_match_the_winner_and_the_reply() {
    let output = xiaoer(
        &[&["explain", "你好，質量太差了我要退貨"][..], &GOOD].concat(),
        "",
    );
    assert!(output.status.success());
    let stdout = text(&output.stdout);
    for expected in [
        "normalised: 你好,质量太差了我要退货",
        "matched:    3 rules",
        "* refund.request",
        "after_sale.quality",
        "on: 质量, 差",
        "winner:     refund.request — higher priority than `after_sale.quality` (80 > 70)",
        "action:     escalate to queue `refund` (topic refund)",
        "reply:      [refund_ack] 非常抱歉，已为您转接退款专员，几分钟内联系您。",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    let output = xiaoer(&[&["explain", "不想退款了"][..], &GOOD].concat(), "");
    let stdout = text(&output.stdout);
    assert!(stdout.contains("x refund.request"), "{stdout}");
    assert!(stdout.contains("excluded by `不想退`"), "{stdout}");
    assert!(stdout.contains("winner:     (fallback)"), "{stdout}");
}

#[test]
fn eval_scores_a_labelled_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labelled.jsonl");
    std::fs::write(
        &file,
        [
            r#"{"text": "我要退款", "expect": "escalate", "accept": ["refund"], "label": "refund"}"#,
            r#"{"text": "质量太差", "expect": "escalate", "accept": ["refund", "after_sale"], "label": "quality"}"#,
            r#"{"text": "怎么还不到", "expect": "escalate", "accept": ["after_sale"], "label": "late"}"#,
            r#"{"text": "什么时候发货", "expect": "answer", "accept": ["shipping"], "label": "ship"}"#,
            r#"{"text": "你好", "expect": "answer", "accept": ["product"], "label": "hello"}"#,
            r#"{"text": "有优惠吗", "expect": "answer", "accept": ["price"], "label": "price"}"#,
            r#"{"text": "不想退款了", "expect": "quiet", "accept": [], "label": "quiet"}"#,
            r#"{"text": "好的，我要退款", "expect": "quiet", "accept": [], "label": "quiet"}"#,
            "not json",
        ]
        .join("\n"),
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    let output = xiaoer(&[&["eval", &file, "--json"][..], &GOOD].concat(), "");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let scores: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ratio = |name: &str| {
        (
            scores[name]["hit"].as_u64().unwrap(),
            scores[name]["of"].as_u64().unwrap(),
        )
    };
    assert_eq!(scores["messages"], 8);
    assert_eq!(scores["skipped_lines"], 1);
    assert_eq!(ratio("escalation_recall"), (2, 3));
    assert_eq!(ratio("right_queue"), (1, 2));
    assert_eq!(ratio("acceptable_queue"), (2, 2));
    assert_eq!(ratio("false_escalation"), (1, 5));
    assert_eq!(ratio("answered"), (2, 3));
    assert_eq!(ratio("topic_accuracy"), (1, 2));
    let output = xiaoer(&[&["eval", &file][..], &GOOD].concat(), "");
    let report = text(&output.stdout);
    assert!(
        report.contains("escalation recall  0.667  (2/3"),
        "{report}"
    );
    assert!(report.contains("worst labels"), "{report}");
}

#[test]
fn check_and_route_apply_a_shop_overlay() {
    let shop = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(shop.path().join("rules")).unwrap();
    std::fs::create_dir_all(shop.path().join("replies")).unwrap();
    std::fs::write(
        shop.path().join("rules/shop.toml"),
        r#"
disable = ["thanks.ack"]

[[rule]]
id = "shop.hello_price"
topic = "price"
reply = "ship_when"
priority = 10
any = ["你好多少钱"]
"#,
    )
    .unwrap();
    std::fs::write(
        shop.path().join("replies/shop.toml"),
        "[[reply]]\nkey = \"ship_when\"\ntext = \"今天就发。\"\n",
    )
    .unwrap();
    let shop = shop.path().to_string_lossy().into_owned();
    let with_shop = |command: &'static str| [&[command][..], &GOOD, &["--shop", &shop]].concat();

    let output = xiaoer(&with_shop("check"), "");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains(
            "warning: rule `shop.hello_price` can never win: `greeting.hello` (priority 50) matches every message it matches"
        ),
        "{}",
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("ok: 6 rules, 10 replies"), "{stdout}");
    assert!(stdout.ends_with("1 warning\n"), "{stdout}");

    let output = xiaoer(&with_shop("route"), "什么时候发货\n好的\n");
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(
        lines[0]["reply"], "今天就发。",
        "the shop's reply replaces the shared one"
    );
    assert_eq!(
        lines[1]["action"], "fallback",
        "the shop switched thanks.ack off"
    );
    assert_eq!(lines[1]["by"], "none");
}
