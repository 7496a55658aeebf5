//! The platform response clock end to end: a daemon on the development gateway, a buyer whose
//! refund goes to a person, the bot's acknowledgement that does not stop the clock, a warning
//! that reaches a generic webhook on 127.0.0.1, and the agent's late reply that ends the round.

mod common;

use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use tokio::sync::mpsc;
use xiaoer::config::{Config, ShopSettings};
use xiaoer::conversation::commands::AgentAction;
use xiaoer::escalation::clock::ClockRules;
use xiaoer::model::ConversationKey;

const WAIT: Duration = Duration::from_secs(15);

/// A generic webhook receiver: every body it is sent, in order.
async fn receiver() -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State(tx): State<mpsc::UnboundedSender<serde_json::Value>>,
                 axum::Json(body): axum::Json<serde_json::Value>| async move {
                    let _ = tx.send(body);
                    "ok"
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

fn generic_target(url: &str) -> xiaoer::notify::Target {
    let entry: toml::Value = toml::from_str(&format!(
        "kind = \"generic\"\nurl = \"{url}\"\nevents = [\"clock\"]\n"
    ))
    .unwrap();
    xiaoer::notify::Target::from_toml(0, &entry).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_waiting_on_a_person_is_warned_about_and_the_late_answer_recorded() {
    let gateway = common::shop1_gateway().await;
    let (hook, mut bodies) = receiver().await;
    let data = tempfile::tempdir().unwrap();
    let budget = Duration::from_secs(1);
    let base = common::shipped_pack_config(&gateway, data.path());
    let config = Config {
        shops: vec![ShopSettings {
            clock: ClockRules {
                budget,
                warn_at: vec![50],
                ..ClockRules::default()
            },
            ..base.shops[0].clone()
        }],
        notify: vec![generic_target(&hook)],
        ..base
    };
    config.validate().unwrap();
    let running = xiaoer::daemon::start(config).await.unwrap();
    assert!(gateway.wait_for_bots(1, WAIT).await);
    let key = ConversationKey::new("dev", "shop1", "buyer-r");

    gateway.buyer_says("shop1", "buyer-r", "我要退款，订单号4471");
    let ack = gateway
        .next_bot_message(WAIT)
        .await
        .expect("an acknowledgement");
    assert!(ack.text.contains("退款"), "{}", ack.text);
    let store = running.store();
    let escalation = store.open_escalations().await.unwrap()[0].id;
    let round = store
        .open_round(&key)
        .await
        .unwrap()
        .expect("the bot's acknowledgement does not end the buyer's wait");

    let warning = tokio::time::timeout(WAIT, bodies.recv())
        .await
        .expect("a clock warning within the wait")
        .unwrap();
    assert_eq!(warning["event"], "clock.warning");
    assert_eq!(warning["key"], format!("clock.warning:{}:50", round.id));
    assert_eq!(warning["escalation_id"], escalation);
    let detail = warning["detail"].as_str().unwrap();
    assert!(detail.contains("平台限时 1 秒"), "{detail}");
    assert_eq!(
        store.open_round(&key).await.unwrap().unwrap().warned_pct,
        50
    );

    // Let the budget run out for certain before the agent answers.
    let due = round.started_ms + i64::try_from(budget.as_millis()).unwrap();
    while xiaoer::store::now_ms() <= due {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running
        .act(
            escalation,
            AgentAction::Claim {
                agent: "alice".into(),
            },
        )
        .await
        .unwrap();
    assert!(
        store.open_round(&key).await.unwrap().is_some(),
        "the bot's \"an agent has joined\" line does not count either"
    );
    running
        .agent_reply(key.clone(), "alice", "亲，退款已经帮您申请了")
        .await
        .unwrap();

    assert_eq!(store.open_round(&key).await.unwrap(), None);
    let rounds = store.report_rows(0, i64::MAX, None).await.unwrap().rounds;
    assert_eq!(rounds.len(), 1, "{rounds:?}");
    let recorded = &rounds[0];
    assert_eq!(recorded.answered_by.as_deref(), Some("agent:alice"));
    assert_eq!(recorded.outcome.as_deref(), Some("late"));
    assert!(recorded.counted_ms.unwrap() > recorded.budget_ms);
    running.stop().await;
}
