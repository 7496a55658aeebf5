//! `xiaoer hours` as an operator runs it: the built binary, a config file, `--at`.

use std::process::Command;

const CONFIG: &str = r#"
[[gateway]]
url = "ws://127.0.0.1:8080/"

[[shop]]
id = "shop1"
[shop.hours]
weekdays = ["09:00-12:00", "13:30-18:00"]
holidays = ["2026-10-01..2026-10-07"]
workdays = ["2026-10-10"]

[[shop]]
id = "shop2"
"#;

fn hours(args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xiaoer.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xiaoer"))
        .arg("hours")
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_remove("XIAOER_CONFIG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn says_whether_people_are_in_and_when_they_are_next() {
    let cases = [
        (
            vec!["--shop", "shop1", "--at", "2026-12-05 20:10"],
            "shop1 (Asia/Shanghai) 2026-12-05 20:10 周六: closed; people are next in 周一 9:00 (2026-12-07 09:00 +08:00)\n",
        ),
        (
            vec!["--shop", "shop1", "--at", "2026-12-02T02:30:00Z"],
            "shop1 (Asia/Shanghai) 2026-12-02 10:30 周三: open until 12:00\n",
        ),
        (
            vec!["--shop", "shop1", "--at", "2026-10-02 10:00"],
            "shop1 (Asia/Shanghai) 2026-10-02 10:00 周五: closed; people are next in 周四 9:00 (2026-10-08 09:00 +08:00)\n",
        ),
        (
            vec!["--shop", "shop1", "--at", "2026-10-10 10:00"],
            "shop1 (Asia/Shanghai) 2026-10-10 10:00 周六: open until 12:00\n",
        ),
        (
            vec!["--shop", "shop2", "--at", "2026-12-05 20:10"],
            "shop2 (Asia/Shanghai) 2026-12-05 20:10 周六: open (no [shop.hours]: people are always in)\n",
        ),
    ];
    for (args, expected) in cases {
        let (ok, stdout, stderr) = hours(&args);
        assert!(ok, "{args:?}: {stderr}");
        assert_eq!(stdout, expected, "{args:?}");
    }
}

#[test]
fn an_unknown_shop_or_time_fails_and_says_why() {
    let (ok, stdout, stderr) = hours(&["--shop", "shop9"]);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("has no shop \"shop9\": its shops are shop1, shop2"),
        "{stderr}"
    );

    let (ok, _, stderr) = hours(&["--shop", "shop1", "--at", "next friday"]);
    assert!(!ok);
    assert!(stderr.contains("\"next friday\" is not a time"), "{stderr}");
}
