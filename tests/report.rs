//! The shift report on a store built from a scripted day of chats: real SQLite in a tempdir
//! (and, for the report itself, PostgreSQL too), turns committed through the public store API,
//! response-clock rounds written as rows. Every
//! expected number is worked out by hand in the comments next to the script.

mod common;

use common::backends::TestDb;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use xiaoer::cli::RuleDirs;
use xiaoer::config::{Config, GatewaySettings, StoreLocation};
use xiaoer::console::ConsoleSettings;
use xiaoer::devgateway::{DevGateway, DevGatewayConfig};
use xiaoer::model::{
    Actor, ConversationKey, ConversationState, Delivery, Direction, Queue, Role, Sender,
};
use xiaoer::report::{self, Bucket, Count, Period};
use xiaoer::store::{
    DecisionRecord, EscalationStep, InboundLine, OutboundLine, Store, Turn, TurnOutcome,
};

/// 2026-12-01 00:00 in Beijing (UTC+8).
const DAY: i64 = 1_796_083_200_000 - 8 * HOUR;
const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;
const SECOND: i64 = 1000;

fn at(hour: i64, minute: i64, second: i64) -> i64 {
    DAY + hour * HOUR + minute * MINUTE + second * SECOND
}

fn key(platform: &str, shop: &str, user: &str) -> ConversationKey {
    ConversationKey::new(platform, shop, user)
}

fn fixture() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
    (root.join("rules"), root.join("replies"))
}

/// A buyer message as the chat worker records it: what routing decided, the bot's line
/// `reply_after_ms` later (if it answers), and an escalation to `queue` (if it escalates).
/// Returns the ids of the bot's lines.
#[allow(clippy::too_many_arguments)]
async fn buyer(
    store: &Store,
    key: &ConversationKey,
    text: &str,
    at_ms: i64,
    (action, topic, rule): (&str, &str, Option<&str>),
    reply_after_ms: Option<i64>,
    queue: Option<Queue>,
) -> Vec<i64> {
    let mut conversation = store.conversation_or_new(key, at_ms).await.unwrap();
    if queue.is_some() {
        conversation.state = ConversationState::Queued;
        conversation.state_since_ms = at_ms;
    }
    let mut turn = Turn::new(conversation, Actor::Bot, "message handled", at_ms);
    turn.inbound = Some(InboundLine {
        message_id: format!("{}-{at_ms}", key.user_id),
        sender: Sender::Buyer,
        direction: Direction::Inbound,
        text: text.to_owned(),
        parts: Vec::new(),
        at_ms,
        decision: Some(DecisionRecord {
            action: action.to_owned(),
            topic: topic.to_owned(),
            rule: rule.map(str::to_owned),
            decided_by: if rule.is_some() { "rule" } else { "fallback" }.to_owned(),
        }),
    });
    if let Some(after) = reply_after_ms {
        turn.outbound.push(OutboundLine {
            sender: Sender::Bot,
            text: "（机器人回复）".to_owned(),
            at_ms: at_ms + after,
        });
    }
    if let Some(queue) = queue {
        turn.escalations.push(EscalationStep::Open {
            queue,
            reason: "the rule escalates".to_owned(),
            rule: rule.map(str::to_owned),
            first_message: text.to_owned(),
        });
    }
    match store.commit_turn(turn).await.unwrap() {
        TurnOutcome::Applied { outbound, .. } => outbound,
        other => panic!("turn not applied: {other:?}"),
    }
}

/// An agent step on the chat's escalation, or an agent's line when `step` is `None`.
async fn agent(
    store: &Store,
    key: &ConversationKey,
    name: &str,
    at_ms: i64,
    step: Option<EscalationStep>,
    state: ConversationState,
) {
    let mut conversation = store.conversation_or_new(key, at_ms).await.unwrap();
    conversation.state = state;
    let mut turn = Turn::new(conversation, Actor::Agent(name.to_owned()), "agent", at_ms);
    match step {
        Some(step) => turn.escalations.push(step),
        None => turn.outbound.push(OutboundLine {
            sender: Sender::Agent(name.to_owned()),
            text: "您好，我来为您处理".to_owned(),
            at_ms,
        }),
    }
    assert!(matches!(
        store.commit_turn(turn).await.unwrap(),
        TurnOutcome::Applied { .. }
    ));
}

async fn escalation_of(store: &Store, key: &ConversationKey) -> i64 {
    store.escalations_of(key).await.unwrap()[0].id
}

/// The scripted day (times are Beijing time on 2026-12-01; `+N` is the bot's reply N ms later):
///
/// | chat                | time      | buyer          | decision                        | bot   |
/// |---------------------|-----------|----------------|---------------------------------|-------|
/// | A qq/shop1/a        | 11-30 23:59 | 早           | reply greeting.hello (outside)  | +50   |
/// |                     | 09:00:00  | 你好           | reply greeting.hello            | +200  |
/// |                     | 09:00:30  | 什么时候发货   | reply shipping.when             | +400  |
/// |                     | 09:01:00  | 你们的发票怎么开 | fallback                      | +300  |
/// | B qq/shop1/b        | 10:00:00  | 我要退款       | escalate refund.request → refund | +500 |
/// |                     | 10:02:00 li claims · 10:03:00 li writes · 10:20:00 li closes "refunded" |
/// | C qq/shop1/c        | 11:00:00  | 质量太差了     | escalate after_sale.quality → after_sale | +800 |
/// |                     | 11:10:00 wang claims · 11:10:30 wang writes · 12:00:00 closes, no outcome |
/// | D qq/shop1/d        | 12:00:00  | 能开发票吗     | fallback                        | +300  |
/// |                     | 12:00:20  | 可以开发票吗   | fallback                        | +250  |
/// |                     | 12:01:00  | 谢谢           | ignore thanks.ack               | —     |
/// |                     | 12-02 00:00:01 | 还在吗    | fallback (outside)              | —     |
/// | E tb/shop1/e        | 13:00:00  | 什么时候发货   | reply shipping.when             | +1500 |
/// |                     | 13:00:50  | 我要退款       | escalate refund.request → refund, never claimed | +600 |
/// | F qq/shop2/f        | 14:00:00  | 你好           | reply greeting.hello            | +100  |
/// |                     | 14:00:05  | 有没有优惠券   | fallback                        | +6000, refused by the gateway |
async fn scripted_day_at(location: &StoreLocation) {
    let store = Store::open_location(location).await.unwrap();
    let hello = ("reply", "greeting", Some("greeting.hello"));
    let shipping = ("reply", "shipping", Some("shipping.when"));
    let fallback = ("fallback", "fallback", None);
    let refund = ("escalate", "refund", Some("refund.request"));

    let a = key("qq", "shop1", "a");
    buyer(&store, &a, "早", DAY - MINUTE, hello, Some(50), None).await;
    buyer(&store, &a, "你好", at(9, 0, 0), hello, Some(200), None).await;
    buyer(
        &store,
        &a,
        "什么时候发货",
        at(9, 0, 30),
        shipping,
        Some(400),
        None,
    )
    .await;
    buyer(
        &store,
        &a,
        "你们的发票怎么开",
        at(9, 1, 0),
        fallback,
        Some(300),
        None,
    )
    .await;

    let b = key("qq", "shop1", "b");
    buyer(
        &store,
        &b,
        "我要退款",
        at(10, 0, 0),
        refund,
        Some(500),
        Some(Queue::Refund),
    )
    .await;
    let id = escalation_of(&store, &b).await;
    let claim = |agent: &str| EscalationStep::Claim {
        id,
        agent: agent.to_owned(),
    };
    agent(
        &store,
        &b,
        "li",
        at(10, 2, 0),
        Some(claim("li")),
        ConversationState::Human,
    )
    .await;
    agent(
        &store,
        &b,
        "li",
        at(10, 3, 0),
        None,
        ConversationState::Human,
    )
    .await;
    let close = EscalationStep::Close {
        id,
        outcome: Some("refunded".to_owned()),
    };
    agent(
        &store,
        &b,
        "li",
        at(10, 20, 0),
        Some(close),
        ConversationState::Bot,
    )
    .await;

    let c = key("qq", "shop1", "c");
    let quality = ("escalate", "after_sale", Some("after_sale.quality"));
    buyer(
        &store,
        &c,
        "质量太差了",
        at(11, 0, 0),
        quality,
        Some(800),
        Some(Queue::AfterSale),
    )
    .await;
    let id = escalation_of(&store, &c).await;
    let claim = EscalationStep::Claim {
        id,
        agent: "wang".to_owned(),
    };
    agent(
        &store,
        &c,
        "wang",
        at(11, 10, 0),
        Some(claim),
        ConversationState::Human,
    )
    .await;
    agent(
        &store,
        &c,
        "wang",
        at(11, 10, 30),
        None,
        ConversationState::Human,
    )
    .await;
    let close = EscalationStep::Close { id, outcome: None };
    agent(
        &store,
        &c,
        "wang",
        at(12, 0, 0),
        Some(close),
        ConversationState::Bot,
    )
    .await;

    let d = key("qq", "shop1", "d");
    buyer(
        &store,
        &d,
        "能开发票吗",
        at(12, 0, 0),
        fallback,
        Some(300),
        None,
    )
    .await;
    buyer(
        &store,
        &d,
        "可以开发票吗",
        at(12, 0, 20),
        fallback,
        Some(250),
        None,
    )
    .await;
    let thanks = ("ignore", "thanks", Some("thanks.ack"));
    buyer(&store, &d, "谢谢", at(12, 1, 0), thanks, None, None).await;
    buyer(&store, &d, "还在吗", at(24, 0, 1), fallback, None, None).await;

    let e = key("tb", "shop1", "e");
    buyer(
        &store,
        &e,
        "什么时候发货",
        at(13, 0, 0),
        shipping,
        Some(1500),
        None,
    )
    .await;
    buyer(
        &store,
        &e,
        "我要退款",
        at(13, 0, 50),
        refund,
        Some(600),
        Some(Queue::Refund),
    )
    .await;

    let f = key("qq", "shop2", "f");
    buyer(&store, &f, "你好", at(14, 0, 0), hello, Some(100), None).await;
    let refused = buyer(
        &store,
        &f,
        "有没有优惠券",
        at(14, 0, 5),
        fallback,
        Some(6000),
        None,
    )
    .await;
    store
        .mark_delivery(refused[0], Delivery::Failed, None)
        .await
        .unwrap();
    store.close().await.unwrap();

    // The response clock (filled by the daemon elsewhere; written here as rows):
    // qq/shop1: in time 200 ms, in time 500 ms, late 200 s, one still open;
    // tb/shop1: in time 1.5 s; qq/shop2: in time 100 ms.
    let rounds: &[Round] = &[
        ("qq", "shop1", "a", at(9, 0, 0), Some(200), Some("in_time")),
        ("qq", "shop1", "b", at(10, 0, 0), Some(500), Some("in_time")),
        (
            "qq",
            "shop1",
            "c",
            at(11, 0, 0),
            Some(200_000),
            Some("late"),
        ),
        ("qq", "shop1", "d", at(12, 0, 0), None, None),
        (
            "tb",
            "shop1",
            "e",
            at(13, 0, 0),
            Some(1500),
            Some("in_time"),
        ),
        ("qq", "shop2", "f", at(14, 0, 0), Some(100), Some("in_time")),
        ("qq", "shop1", "a", DAY - HOUR, Some(100), Some("late")),
    ];
    // The same statement on either database; only the pool's type differs.
    macro_rules! insert_rounds {
        ($pool:expr) => {{
            let pool = $pool;
            for (platform, shop, user, started, counted, outcome) in rounds {
                sqlx::query(
                    "INSERT INTO response_rounds (platform, self_id, user_id, started_ms, \
                     budget_ms, answered_ms, answered_by, counted_ms, outcome) \
                     VALUES ($1, $2, $3, $4, 180000, $5, 'bot', $6, $7)",
                )
                .bind(platform)
                .bind(shop)
                .bind(user)
                .bind(started)
                .bind(counted.map(|c| started + c))
                .bind(counted)
                .bind(outcome)
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        }};
    }
    match location {
        StoreLocation::Sqlite(path) => insert_rounds!(
            sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::new().filename(path)
            )
            .await
            .unwrap()
        ),
        StoreLocation::Postgres(url) => {
            insert_rounds!(sqlx::PgPool::connect(url).await.unwrap())
        }
    }
}

/// A response-clock row: platform, shop, buyer, started, counted wait, outcome.
type Round<'a> = (&'a str, &'a str, &'a str, i64, Option<i64>, Option<&'a str>);

/// A rule, how often its answer did not help, and (asked, then) examples.
type Unhelpful<'a> = (&'a str, usize, Vec<(&'a str, &'a str)>);

fn counts(pairs: &[(&str, usize)]) -> Vec<Count> {
    pairs
        .iter()
        .map(|(name, count)| Count {
            name: (*name).to_owned(),
            count: *count,
        })
        .collect()
}

async fn the_report_of_a_scripted_day(db: TestDb) {
    scripted_day_at(&db.location()).await;
    let store = db.open_existing().await;
    let period = Period {
        since_ms: DAY,
        until_ms: DAY + 24 * HOUR,
        shop: None,
    };
    let rows = store
        .report_rows(period.since_ms, period.until_ms, None)
        .await
        .unwrap();
    let (rules, replies) = fixture();
    let loaded = RuleDirs {
        rules,
        replies,
        shop: None,
    }
    .load()
    .unwrap();
    let ids: Vec<String> = loaded.rules.rules().map(|r| r.id.clone()).collect();
    let r = report::compute(&rows, period, Some(&ids));

    // Chats A–F; buyer messages 3+1+1+3+2+2 = 12 (the two outside the day left out). Bot lines
    // that reached the buyer: A 3, B 1, C 1, D 2, E 2, F 1 = 10; F's second was refused.
    let v = &r.volume;
    assert_eq!(
        (v.chats, v.buyer_messages, v.bot_replies, v.agent_replies),
        (6, 12, 10, 2)
    );
    assert_eq!((v.failed_replies, v.shop_replies, v.escalations), (1, 0, 3));
    assert_eq!(
        r.actions,
        counts(&[
            ("fallback", 4),
            ("reply", 4),
            ("escalate", 3),
            ("ignore", 1)
        ])
    );
    // Wanting an answer: 12 minus the ignored 谢谢 = 11; answered by the bot: the 4 replies.
    assert_eq!((r.bot_share.answered, r.bot_share.of), (4, 11));
    assert!((r.bot_share.share.unwrap() - 4.0 / 11.0).abs() < 1e-9);

    // Bot waits, sorted: 100 200 250 300 300 400 500 600 800 1500 (F's refused line and D's
    // ignored message have none). Nearest rank: p50 = 5th = 300, p90 = 9th = 800.
    let f = &r.first_response;
    assert_eq!(
        (f.bot.count, f.bot.p50, f.bot.p90),
        (10, Some(300), Some(800))
    );
    let histogram: Vec<(Option<i64>, usize)> = f
        .bot_histogram
        .iter()
        .map(|b: &Bucket| (b.upto_ms, b.count))
        .collect();
    assert_eq!(
        histogram,
        [
            (Some(100), 1),
            (Some(250), 2),
            (Some(500), 4),
            (Some(1000), 2),
            (Some(2000), 1),
            (Some(5000), 0),
            (None, 0)
        ]
    );
    // Human: B 180 s, C 630 s; E never answered. p50 = 1st = 180, p90 = 2nd = 630.
    assert_eq!(
        (f.human.count, f.human.p50, f.human.p90, f.human_unanswered),
        (2, Some(180), Some(630), 1)
    );

    // Clock, rounds started in the day: qq 5 (shop1 in time, in time, late, open; shop2 in
    // time) → 3 of 4 ended in time; counted 100 200 500 200000 ms → p50 = 200 ms ≈ 0 s,
    // p90 = 200 s. tb: 1 of 1, 1.5 s ≈ 2 s.
    let clock: Vec<_> = r
        .clock
        .iter()
        .map(|c| {
            (
                c.platform.as_str(),
                c.rounds,
                c.in_time,
                c.late,
                c.waiting,
                c.rate,
            )
        })
        .collect();
    assert_eq!(
        clock,
        [
            ("qq", 5, 3, 1, 1, Some(0.75)),
            ("tb", 1, 1, 0, 0, Some(1.0))
        ]
    );
    assert_eq!(
        (r.clock[0].counted.p50, r.clock[0].counted.p90),
        (Some(0), Some(200))
    );
    assert_eq!(r.clock[1].counted.p50, Some(2));

    // Queues: refund has B (claimed after 120 s, closed after 1200 s) and E (waiting);
    // after_sale has C (600 s, 3600 s).
    let queue = |q: Queue| r.queues.iter().find(|x| x.queue == q).unwrap();
    let refund = queue(Queue::Refund);
    assert_eq!(
        (refund.opened, refund.waiting, refund.held, refund.closed),
        (2, 1, 0, 1)
    );
    assert_eq!(
        (refund.time_to_claim.p50, refund.time_to_resolve.p90),
        (Some(120), Some(1200))
    );
    let after_sale = queue(Queue::AfterSale);
    assert_eq!((after_sale.opened, after_sale.closed), (1, 1));
    assert_eq!(
        (after_sale.time_to_claim.p90, after_sale.time_to_resolve.p50),
        (Some(600), Some(3600))
    );
    assert_eq!(queue(Queue::Complaint).opened, 0);
    assert_eq!(r.outcomes, counts(&[("refunded", 1), ("unspecified", 1)]));

    // Topics: fallback 4 (A, D, D, F); greeting, refund and shipping 2 each; one each for
    // after_sale and thanks.
    assert_eq!(
        r.topics,
        counts(&[
            ("fallback", 4),
            ("greeting", 2),
            ("refund", 2),
            ("shipping", 2),
            ("after_sale", 1),
            ("thanks", 1)
        ])
    );

    // Fallbacks in chat order: 你们的发票怎么开, 能开发票吗, 可以开发票吗, 有没有优惠券.
    // 能开发票吗 shares only 发票 with the first (1 of 10 bigrams) and starts a group;
    // 可以开发票吗 shares 开发 发票 票吗 with it (3 of 6 = 0.5) and joins it.
    let groups: Vec<(usize, Vec<&str>)> = r
        .fallback_groups
        .iter()
        .map(|g| (g.count, g.examples.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        groups,
        [
            (2, vec!["能开发票吗", "可以开发票吗"]),
            (1, vec!["你们的发票怎么开"]),
            (1, vec!["有没有优惠券"])
        ]
    );

    assert_eq!(
        r.rules_fired,
        counts(&[
            ("greeting.hello", 2),
            ("refund.request", 2),
            ("shipping.when", 2),
            ("after_sale.quality", 1),
            ("thanks.ack", 1)
        ])
    );
    assert_eq!(
        r.rules_never_fired,
        Some(vec!["after_sale.order_number".to_owned()])
    );

    // Did not help: A's shipping answer (next: a fallback 30 s later), E's shipping answer
    // (next: an escalation 48.5 s later), F's greeting (next: a fallback 5 s later). A's
    // greeting was followed by a question that was answered; D asked nothing after 谢谢.
    let unhelpful: Vec<Unhelpful> = r
        .unhelpful
        .iter()
        .map(|u| {
            let examples = u
                .examples
                .iter()
                .map(|e| (e.asked.as_str(), e.then.as_str()))
                .collect();
            (u.rule.as_str(), u.count, examples)
        })
        .collect();
    assert_eq!(
        unhelpful,
        [
            (
                "shipping.when",
                2,
                vec![
                    ("什么时候发货", "你们的发票怎么开"),
                    ("什么时候发货", "我要退款")
                ]
            ),
            ("greeting.hello", 1, vec![("你好", "有没有优惠券")]),
        ]
    );

    let page = report::html::document(&r).into_string();
    assert!(page.contains("<svg") && page.contains("你们的发票怎么开"));
    let text = report::text::render(&r);
    assert!(text.contains("after_sale.order_number"), "{text}");
}

/// On SQLite the store is the one in `--data`; on PostgreSQL `--store` names it.
async fn the_command_prints_one_shops_report_as_json(db: TestDb) {
    scripted_day_at(&db.location()).await;
    let nowhere = tempfile::tempdir().unwrap();
    let store_args = |command: &mut std::process::Command| {
        command.env_remove("XIAOER_STORE").arg("--data");
        match (db.dir(), db.location()) {
            (Some(dir), _) => command.arg(dir),
            (None, location) => command
                .arg(nowhere.path())
                .arg("--store")
                .arg(match location {
                    StoreLocation::Postgres(url) => url,
                    other => other.to_string(),
                }),
        };
    };
    let (rules, replies) = fixture();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_xiaoer"));
    command.arg("report");
    store_args(&mut command);
    let output = command
        .args([
            "--since",
            "2026-12-01",
            "--until",
            "2026-12-02T00:00:00+08:00",
        ])
        .args(["--shop", "shop1", "--format", "json"])
        .arg("--rules")
        .arg(&rules)
        .arg("--replies")
        .arg(&replies)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // Without shop2's chat F: 5 chats, 10 buyer messages, no refused line; qq's clock is
    // 2 of 3 in time.
    assert_eq!(json["period"]["since_ms"], DAY);
    assert_eq!(json["period"]["shop"], "shop1");
    assert_eq!(json["volume"]["chats"], 5);
    assert_eq!(json["volume"]["buyer_messages"], 10);
    assert_eq!(json["volume"]["failed_replies"], 0);
    assert_eq!(json["clock"][0]["platform"], "qq");
    assert_eq!(json["clock"][0]["rounds"], 4);
    let rate = json["clock"][0]["rate"].as_f64().unwrap();
    assert!((rate - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(json["first_response"]["human"]["p90"], 630);
    assert_eq!(json["first_response"]["human"]["unit"], "s");
    assert_eq!(
        json["rules_never_fired"],
        serde_json::json!(["after_sale.order_number"])
    );
    assert_eq!(json["unhelpful"][0]["rule"], "shipping.when");
    assert_eq!(json["unhelpful"].as_array().unwrap().len(), 1);

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_xiaoer"));
    command.arg("report");
    store_args(&mut command);
    let output = command.args(["--since", "yesterday"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"yesterday\" is not a time"));
}

const PASSWORD: &str = "a-long-password";

/// Logs in and returns the session cookie.
async fn login(client: &reqwest::Client, base: &str, name: &str) -> String {
    let response = client
        .post(format!("{base}/login"))
        .form(&[("name", name), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_see_the_report_in_the_console_and_agents_do_not() {
    // The daemon stops when its gateways' events end, so it gets one to keep it running.
    let gateway = DevGateway::start(DevGatewayConfig {
        token: Some("secret".into()),
        shops: vec!["shop1".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let (rules_dir, rules, replies) = common::rule_dirs();
    let config = Config {
        data: data.path().to_path_buf(),
        rules,
        replies,
        gateways: vec![GatewaySettings {
            url: gateway.url(),
            token: Some("secret".into()),
            name: None,
        }],
        console: ConsoleSettings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
        watch: false,
        ..Config::default()
    };
    let running = xiaoer::daemon::start(config).await.unwrap();
    let store = running.store();
    let a = key("qq", "shop1", "a");
    buyer(
        store,
        &a,
        "<b>能开发票吗</b>",
        xiaoer::store::now_ms() - MINUTE,
        ("fallback", "fallback", None),
        Some(300),
        None,
    )
    .await;
    xiaoer::accounts::add(store, "boss", Role::Supervisor, &[], PASSWORD)
        .await
        .unwrap();
    xiaoer::accounts::add(store, "li", Role::Agent, &[], PASSWORD)
        .await
        .unwrap();
    let base = format!("http://{}", running.console_addr().unwrap());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let get = |path: &str, cookie: Option<String>| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send()
    };

    let boss = login(&client, &base, "boss").await;
    let queue = get("/", Some(boss.clone()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(queue.contains("href=\"/report\""));
    let page = get("/report?since=24h", Some(boss.clone())).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let body = page.text().await.unwrap();
    assert!(body.contains("<svg") && body.contains("/static/report.css"));
    assert!(body.contains("&lt;b&gt;能开发票吗&lt;/b&gt;"));
    assert!(body.contains("after_sale.order_number"));
    let bad = get("/report?since=yesterday", Some(boss.clone()))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let style = get("/static/report.css", None).await.unwrap();
    assert_eq!(style.status(), StatusCode::OK);

    let li = login(&client, &base, "li").await;
    let queue = get("/", Some(li.clone()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!queue.contains("href=\"/report\""));
    assert_eq!(
        get("/report", Some(li)).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let stranger = get("/report", None).await.unwrap();
    assert_eq!(stranger.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        stranger.headers().get(LOCATION).unwrap().to_str().unwrap(),
        "/login"
    );
    running.stop().await;
    drop(rules_dir);
}

crate::on_both_backends!(
    the_report_of_a_scripted_day,
    the_command_prints_one_shops_report_as_json,
);
