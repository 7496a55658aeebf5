//! Crash soak: the `xiaoer` binary under steady load through the development gateway, killed
//! with SIGKILL at random moments and started with injected store failures, then checked:
//! no escalation lost, none duplicated, no message answered twice.
//!
//! The short form runs with every `cargo test`. The long form runs on demand:
//! `XIAOER_SOAK_KILLS=200 cargo test --release --test soak -- --nocapture`
//! (`XIAOER_SOAK_SEED` repeats a run).

mod common;

use common::rule_dirs;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use xiaoer::devgateway::{DevGateway, DevGatewayConfig};
use xiaoer::model::{ConversationKey, Direction, Sender};
use xiaoer::store::Store;

const TOKEN: &str = "soak";
const WAIT: Duration = Duration::from_secs(15);
const REFUND: &str = "东西不要了，我要退款";
const QUESTION: &str = "什么时候发货";

fn spawn(gateway: &str, data: &Path, rules: &Path, replies: &Path, fault: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xiaoer"));
    command
        .args(["run", "--gateway", gateway, "--token", TOKEN, "--data"])
        .arg(data)
        .arg("--rules")
        .arg(rules)
        .arg("--replies")
        .arg(replies)
        .env("RUST_LOG", "error")
        .env("XIAOER_WATCH", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(fault) = fault {
        command.env("XIAOER_TEST_FAULT", fault);
    }
    command.spawn().expect("start xiaoer run")
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One buyer, one message.
struct Buyer {
    user: String,
    text: &'static str,
    message_id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_soak_loses_no_escalation_and_answers_nothing_twice() {
    let kills: usize = std::env::var("XIAOER_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("XIAOER_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("soak: {kills} kills, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let gateway = DevGateway::start(DevGatewayConfig {
        token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_rules_dir, rules, replies) = rule_dirs();
    let data = tempfile::tempdir().unwrap();
    let mut buyers: Vec<Buyer> = Vec::new();
    let started = Instant::now();
    let mut last_life = None;
    // The dev gateway keeps at most 1,024 sent messages; count them as they come.
    let mut replies_to: HashMap<String, usize> = HashMap::new();

    for cycle in 0..=kills {
        let last = cycle == kills;
        // Some lives of the daemon start on a failing disk; it must retry, not drop.
        let fault = (!last && rng.random_bool(0.3))
            .then(|| format!("fail-commits:{}", rng.random_range(1..4)));
        let mut child = spawn(
            &gateway.url(),
            data.path(),
            &rules,
            &replies,
            fault.as_deref(),
        );
        assert!(
            gateway.wait_for_bots(1, WAIT).await,
            "cycle {cycle}: daemon connects"
        );
        // The gateway is unsure what the dead process took: it redelivers everything.
        for buyer in &buyers {
            gateway.redeliver("shop1", &buyer.user, buyer.text, &buyer.message_id);
        }
        let new = if last { 20 } else { rng.random_range(5..25) };
        for i in 0..new {
            let user = format!("c{cycle}-b{i}");
            let text = if rng.random_bool(0.5) {
                REFUND
            } else {
                QUESTION
            };
            let message_id = gateway.buyer_says("shop1", &user, text);
            buyers.push(Buyer {
                user,
                text,
                message_id,
            });
            if !last && rng.random_bool(0.2) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
            }
        }
        if last {
            last_life = Some(child);
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
        child.kill().expect("kill -9");
        child.wait().unwrap();
        until("the gateway notices the dead connection", || {
            gateway.connected_bots() == 0
        })
        .await;
        while let Some(message) = gateway.next_bot_message(Duration::ZERO).await {
            *replies_to.entry(message.user_id).or_default() += 1;
        }
    }

    // The last life handles everything; every message is in the store once it has been handled.
    let store = Store::open_existing(data.path()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut missing = 0;
        for buyer in &buyers {
            let key = ConversationKey::new("dev", "shop1", &buyer.user);
            let lines = store.transcript(&key, 20).await.unwrap();
            let recorded = lines.iter().any(|l| {
                l.direction == Direction::Inbound
                    && l.message_id.as_deref() == Some(buyer.message_id.as_str())
            });
            if !recorded {
                missing += 1;
            }
        }
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} buyer messages were never handled (seed {seed})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A graceful stop lets the last life finish every send; then all of them have arrived.
    if let Some(mut child) = last_life.take() {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + WAIT;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the last daemon did not stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    while let Some(message) = gateway.next_bot_message(Duration::ZERO).await {
        *replies_to.entry(message.user_id).or_default() += 1;
    }
    let open = store.open_escalations().await.unwrap();
    let mut escalations: HashMap<&str, usize> = HashMap::new();
    for e in &open {
        *escalations.entry(e.key.user_id.as_str()).or_default() += 1;
    }
    let mut unanswered = 0;
    for buyer in &buyers {
        let got = replies_to.get(&buyer.user).copied().unwrap_or(0);
        let key = ConversationKey::new("dev", "shop1", &buyer.user);
        let lines = store.transcript(&key, 20).await.unwrap();
        let planned = lines.iter().filter(|l| l.sender == Sender::Bot).count();
        let inbound = lines
            .iter()
            .filter(|l| l.direction == Direction::Inbound)
            .count();
        assert_eq!(
            inbound, 1,
            "{}: the message is recorded once (seed {seed})",
            buyer.user
        );
        // Every reply that reached the buyer was planned once and recorded before it was sent.
        assert!(
            got <= planned,
            "{}: {got} replies reached the buyer, {planned} planned (seed {seed})",
            buyer.user
        );
        if buyer.text == REFUND {
            assert_eq!(
                escalations.get(buyer.user.as_str()).copied(),
                Some(1),
                "{}: exactly one escalation (seed {seed})",
                buyer.user
            );
            assert!(got <= 1, "{}: acknowledged twice (seed {seed})", buyer.user);
        } else {
            assert!(
                !escalations.contains_key(buyer.user.as_str()),
                "{}: a question was escalated (seed {seed})",
                buyer.user
            );
            assert!(got <= 2, "{}: answered twice (seed {seed})", buyer.user);
        }
        if got < planned {
            unanswered += 1;
        }
    }
    let refunds = buyers.iter().filter(|b| b.text == REFUND).count();
    println!(
        "soak: {} buyers ({refunds} refunds), {kills} kills, {:.1} s: {} escalations, none lost or doubled; \
         {unanswered} buyers whose replies were committed but not sent when the process died",
        buyers.len(),
        started.elapsed().as_secs_f64(),
        open.len()
    );
    assert_eq!(open.len(), refunds);
}
