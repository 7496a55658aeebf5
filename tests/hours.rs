//! Business hours as operators and buyers meet them: `xiaoer hours` (the built binary, a config file, `--at`), and a daemon whose shop is closed.

mod common;

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

/// A shop whose people come in six hours from now, for half an hour every day: closed now,
/// whenever the test runs.
fn closed_now() -> xiaoer::escalation::hours::BusinessHours {
    use xiaoer::escalation::hours::{BusinessHours, Shift};
    let zone = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let opens = (jiff::Timestamp::now()
        .to_zoned_datetime(zone.clone())
        .hour()
        + 6)
        % 24;
    let shift = format!("{opens:02}:00-{opens:02}:30");
    let day = Shift::parse_day(&[shift]).unwrap();
    BusinessHours::weekly(zone, "Asia/Shanghai", std::array::from_fn(|_| day.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_hours_the_bot_answers_says_once_when_people_are_in_and_queues_the_refund() {
    use std::time::Duration;
    use xiaoer::config::{Config, ShopSettings};
    const WAIT: Duration = Duration::from_secs(10);

    let hours = closed_now();
    let now = jiff::Timestamp::now();
    let eta = hours.eta_words(now, hours.next_open(now).expect("opens within a day"));
    let gateway = common::shop1_gateway().await;
    let data = tempfile::tempdir().unwrap();
    let base = common::shipped_pack_config(&gateway, data.path());
    let shop = ShopSettings {
        hours,
        ..base.shops[0].clone()
    };
    let running = xiaoer::daemon::start(Config {
        shops: vec![shop],
        ..base
    })
    .await
    .unwrap();
    assert!(gateway.wait_for_bots(1, WAIT).await);

    // The first question of the closed period: greeting, the one off-hours notice, the answer.
    gateway.buyer_says("shop1", "night-owl", "发什么快递");
    let mut first = Vec::new();
    while !first.iter().any(|t: &String| t.contains("快递")) {
        first.push(gateway.next_bot_message(WAIT).await.expect("a reply").text);
    }
    let notices: Vec<_> = first.iter().filter(|t| t.contains(&eta)).collect();
    assert_eq!(notices.len(), 1, "one notice naming {eta:?}: {first:?}");

    // Another question in the same closed period: answered, and no second notice.
    gateway.buyer_says("shop1", "night-owl", "可以开发票吗");
    let answer = gateway
        .next_bot_message(WAIT)
        .await
        .expect("an answer")
        .text;
    assert!(answer.contains("发票"), "{answer:?}");
    assert!(!answer.contains(&eta), "no second notice: {answer:?}");

    // The refund is queued, and its acknowledgement says when a person will be in.
    gateway.buyer_says("shop1", "night-owl", "我要退款");
    let ack = gateway
        .next_bot_message(WAIT)
        .await
        .expect("an acknowledgement")
        .text;
    assert!(ack.contains(&eta), "the wait is the opening time: {ack:?}");
    assert!(!ack.contains("分钟内"), "not a wait in minutes: {ack:?}");
    let open = running.store().open_escalations().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].queue, xiaoer::model::Queue::Refund);
    tokio::time::timeout(Duration::from_secs(5), running.stop())
        .await
        .unwrap();
}
