//! End to end: the daemon against the development gateway over real websockets on 127.0.0.1,
//! with a real SQLite file. The process-level tests (kill -9, SIGTERM) run the `xiaoer` binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use xiaoer::config::{Config, GatewaySettings, ShopSettings};
use xiaoer::devgateway::{BotMessage, DevGateway, DevGatewayConfig};
use xiaoer::store::Store;

const TOKEN: &str = "secret";
const WAIT: Duration = Duration::from_secs(10);
/// How long to listen for a reply that must not come.
const QUIET: Duration = Duration::from_millis(800);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A rule set of our own in a temp dir (copied from the fixtures, so tests may edit it).
fn rule_dirs() -> (TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
    let (rules, replies) = (dir.path().join("rules"), dir.path().join("replies"));
    copy_dir(&root.join("rules"), &rules);
    copy_dir(&root.join("replies"), &replies);
    (dir, rules, replies)
}

async fn gateway() -> DevGateway {
    DevGateway::start(DevGatewayConfig {
        token: Some(TOKEN.into()),
        shops: vec!["shop1".into(), "shop2".into()],
        ..Default::default()
    })
    .await
    .expect("start the dev gateway")
}

struct Daemon {
    shutdown: CancellationToken,
    reload: mpsc::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    data: TempDir,
    _rules: TempDir,
    rules: PathBuf,
}

impl Daemon {
    async fn start(gateway: &DevGateway) -> Daemon {
        Daemon::start_with(&[gateway]).await
    }

    async fn start_with(gateways: &[&DevGateway]) -> Daemon {
        let (rules_dir, rules, replies) = rule_dirs();
        let data = tempfile::tempdir().unwrap();
        let config = Config {
            data: data.path().to_path_buf(),
            rules: rules.clone(),
            replies,
            gateways: gateways
                .iter()
                .map(|gateway| GatewaySettings {
                    url: gateway.url(),
                    token: Some(TOKEN.into()),
                    name: None,
                })
                .collect(),
            shops: vec![ShopSettings {
                id: "shop1".into(),
                name: Some("测试小店".into()),
                overlay: None,
            }],
            watch: true,
            ..Config::default()
        };
        let shutdown = CancellationToken::new();
        let (reload, reload_rx) = mpsc::channel(4);
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                xiaoer::daemon::run(config, shutdown, reload_rx)
                    .await
                    .expect("daemon runs");
            }
        });
        for gateway in gateways {
            assert!(
                gateway.wait_for_bots(1, WAIT).await,
                "the daemon connects to every gateway"
            );
        }
        Daemon {
            shutdown,
            reload,
            task,
            data,
            _rules: rules_dir,
            rules,
        }
    }

    async fn stop(self) -> TempDir {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the daemon stops within 5 s")
            .expect("daemon task");
        self.data
    }
}

async fn reply(gateway: &DevGateway) -> BotMessage {
    gateway
        .next_bot_message(WAIT)
        .await
        .expect("the bot answers")
}

async fn silence(gateway: &DevGateway) {
    if let Some(message) = gateway.next_bot_message(QUIET).await {
        panic!("the bot should stay quiet, but said {:?}", message.text);
    }
}

/// The fixture's greeting variants; the in-process daemon names the shop, the binary does not.
fn is_greeting(text: &str) -> bool {
    ["您好，欢迎光临测试小店！", "您好，欢迎光临本店！"].contains(&text)
        || text.starts_with("在的，")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greets_first_contact_then_answers_faq() {
    let gateway = gateway().await;
    let daemon = Daemon::start(&gateway).await;
    gateway.buyer_says("shop1", "b1", "请问什么时候发货？");
    let greeting = reply(&gateway).await;
    assert!(is_greeting(&greeting.text), "{:?}", greeting.text);
    assert_eq!(greeting.user_id, "b1");
    assert_eq!(reply(&gateway).await.text, "现货下单后48小时内发出。");
    // Greeted once per window: the next question gets the answer alone.
    gateway.buyer_says("shop1", "b1", "幾天發貨");
    assert_eq!(reply(&gateway).await.text, "现货下单后48小时内发出。");
    silence(&gateway).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_shops_share_one_connection() {
    let gateway = gateway().await;
    let daemon = Daemon::start(&gateway).await;
    gateway.buyer_says("shop2", "same-buyer", "什么时候发货");
    let greeting = reply(&gateway).await;
    assert_eq!(greeting.self_id, "shop2");
    assert_eq!(
        greeting.text, "您好，欢迎光临本店！",
        "shop2 has no name configured"
    );
    assert_eq!(reply(&gateway).await.self_id, "shop2");
    // The same buyer at another shop is another conversation: greeted again, by that shop.
    gateway.buyer_says("shop1", "same-buyer", "什么时候发货");
    let greeting = reply(&gateway).await;
    assert_eq!(greeting.self_id, "shop1");
    assert!(
        ["您好，欢迎光临测试小店！", "在的，亲请讲～"].contains(&greeting.text.as_str()),
        "{:?}",
        greeting.text
    );
    assert_eq!(reply(&gateway).await.self_id, "shop1");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_go_back_through_the_gateway_the_message_came_from() {
    let first = gateway().await;
    let second = DevGateway::start(DevGatewayConfig {
        token: Some(TOKEN.into()),
        shops: vec!["shop9".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let daemon = Daemon::start_with(&[&first, &second]).await;
    second.buyer_says("shop9", "g1", "你好");
    let greeting = reply(&second).await;
    assert_eq!(
        (greeting.self_id.as_str(), greeting.user_id.as_str()),
        ("shop9", "g1")
    );
    first.buyer_says("shop1", "g2", "你好");
    assert_eq!(reply(&first).await.user_id, "g2");
    assert!(
        second.next_bot_message(QUIET).await.is_none(),
        "nothing crossed over"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_is_escalated_persisted_listed_and_then_quiet() {
    let gateway = gateway().await;
    let daemon = Daemon::start(&gateway).await;
    gateway.buyer_says("shop1", "b2", "东西不要了，我要退款");
    let ack = reply(&gateway).await;
    assert_eq!(ack.text, "非常抱歉，已为您转接退款专员，几分钟内联系您。");
    // The escalation was committed before the acknowledgement went out.
    let reader = Store::open_existing(daemon.data.path()).await.unwrap();
    let open = reader.open_escalations().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].queue, xiaoer::model::Queue::Refund);
    assert_eq!(open[0].key.user_id, "b2");
    assert_eq!(open[0].rule.as_deref(), Some("refund.request"));

    // While queued: one notice, then silence, whatever the buyer says.
    gateway.buyer_says("shop1", "b2", "什么时候发货");
    assert_eq!(
        reply(&gateway).await.text,
        "您还在退款退货的队列里，预计几分钟内有同事接待。"
    );
    gateway.buyer_says("shop1", "b2", "在吗？");
    gateway.buyer_says("shop1", "b2", "我要退款！！");
    silence(&gateway).await;
    assert_eq!(reader.open_escalations().await.unwrap().len(), 1);

    // `xiaoer queue list` reads it while the daemon runs.
    let output = Command::new(env!("CARGO_BIN_EXE_xiaoer"))
        .args(["queue", "list", "--json", "--data"])
        .arg(daemon.data.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["queue"], "refund");
    assert_eq!(lines[0]["user_id"], "b2");
    assert_eq!(lines[0]["state"], "open");
    daemon.stop().await;
}

fn queue_command(args: &[&str], data: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_xiaoer"))
        .arg("queue")
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_claims_and_closes_an_escalation_while_the_daemon_runs() {
    let gateway = gateway().await;
    let daemon = Daemon::start(&gateway).await;
    gateway.buyer_says("shop1", "c1", "做工太差了");
    assert_eq!(
        reply(&gateway).await.text,
        "真抱歉遇到这种情况，售后同事马上处理。"
    );
    let listed = queue_command(&["list", "--json"], daemon.data.path());
    let id = serde_json::from_str::<serde_json::Value>(listed.trim()).unwrap()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    // The bot's own line is written by the batching writer just after the send; give it a moment.
    let deadline = Instant::now() + WAIT;
    let shown = loop {
        let shown = queue_command(&["show", &id], daemon.data.path());
        if shown.contains("售后同事马上处理") || Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        shown.contains("queue after_sale · open · buyer c1"),
        "{shown}"
    );
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[lines.len() - 2].contains("buyer") && lines[lines.len() - 2].ends_with("做工太差了"),
        "{shown}"
    );
    assert!(
        lines[lines.len() - 1].contains("bot")
            && lines[lines.len() - 1].ends_with("售后同事马上处理。"),
        "{shown}"
    );
    let said = queue_command(&["claim", &id, "--agent", "alice"], daemon.data.path());
    assert!(said.contains("claimed by alice"), "{said}");
    // The agent owns the chat: no queue notice, no answers.
    gateway.buyer_says("shop1", "c1", "什么时候发货");
    silence(&gateway).await;
    let said = queue_command(&["close", &id, "--agent", "alice"], daemon.data.path());
    assert!(said.contains("closed by alice"), "{said}");
    assert_eq!(
        queue_command(&["list"], daemon.data.path()).trim(),
        "no open escalations"
    );
    gateway.buyer_says("shop1", "c1", "什么时候发货");
    assert_eq!(reply(&gateway).await.text, "现货下单后48小时内发出。");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_message_is_not_answered_twice() {
    let gateway = gateway().await;
    let daemon = Daemon::start(&gateway).await;
    let id = gateway.buyer_says("shop1", "b3", "谢谢");
    assert!(is_greeting(&reply(&gateway).await.text));
    gateway.redeliver("shop1", "b3", "谢谢", &id);
    silence(&gateway).await;
    let id = gateway.buyer_says("shop1", "b3", "我要退货");
    reply(&gateway).await;
    gateway.redeliver("shop1", "b3", "我要退货", &id);
    silence(&gateway).await;
    let data = daemon.stop().await;
    let store = Store::open_existing(data.path()).await.unwrap();
    assert_eq!(store.open_escalations().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_is_not_takeover_but_a_human_reply_pauses_the_bot() {
    let gateway = gateway().await;
    let daemon = Daemon::start(&gateway).await;
    gateway.buyer_says("shop1", "b4", "你好");
    let greeting = reply(&gateway).await;
    // The platform echoes the bot's own message back as an outgoing message.
    gateway.shop_says_outgoing("shop1", "b4", &greeting.text, &greeting.message_id);
    gateway.buyer_says("shop1", "b4", "什么时候发货");
    assert_eq!(reply(&gateway).await.text, "现货下单后48小时内发出。");

    // A person answers from the shop's phone: the bot steps back.
    // (Messages of one chat are handled in order, so no wait is needed here.)
    gateway.shop_says_outgoing("shop1", "b4", "亲，我来帮您看一下", "human-1");
    gateway.buyer_says("shop1", "b4", "什么时候发货");
    silence(&gateway).await;
    // Other chats are unaffected.
    gateway.buyer_says("shop1", "b5", "什么时候发货");
    assert!(is_greeting(&reply(&gateway).await.text));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_unknown_frames_are_survived() {
    let gateway = gateway().await;
    let daemon = Daemon::start(&gateway).await;
    gateway.send_raw_frame("{not json");
    gateway.send_raw_frame("[1,2,3]");
    gateway
        .send_raw_frame(r#"{"type":"notice","detail_type":"friend_increase","id":"x","time":1}"#);
    gateway.send_raw_frame(r#"{"type":"message","detail_type":"private","message":[]}"#);
    gateway.send_raw_frame(format!(
        r#"{{"type":"message","detail_type":"private","id":"big","message_id":"big","user_id":"b6","self":{{"platform":"dev","user_id":"shop1"}},"message":[{{"type":"text","data":{{"text":"{}"}}}}]}}"#,
        "退款".repeat(40_000)
    ));
    gateway.buyer_says("shop1", "b6", "什么时候发货");
    assert!(is_greeting(&reply(&gateway).await.text));
    assert_eq!(reply(&gateway).await.text, "现货下单后48小时内发出。");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_gateway_restarts() {
    let first = gateway().await;
    let addr = first.addr();
    let daemon = Daemon::start(&first).await;
    first.shutdown().await;
    let second = DevGateway::start(DevGatewayConfig {
        addr,
        token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await
    .expect("restart the gateway on the same port");
    assert!(
        second.wait_for_bots(1, Duration::from_secs(40)).await,
        "the daemon reconnects"
    );
    second.buyer_says("shop1", "b7", "什么时候发货");
    assert!(is_greeting(&reply(&second).await.text));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_takes_good_edits_and_keeps_serving_through_bad_ones() {
    let gateway = gateway().await;
    let daemon = Daemon::start(&gateway).await;
    gateway.buyer_says("shop1", "b8", "能开发票吗");
    assert!(is_greeting(&reply(&gateway).await.text));
    assert!(reply(&gateway).await.text.starts_with("抱歉没太明白"));

    // A broken edit: the old rules keep serving.
    std::fs::write(
        daemon.rules.join("zz-broken.toml"),
        "[[rule]]\nid = \"x\"\ntopic = \"nope\"\n",
    )
    .unwrap();
    let _ = daemon.reload.send(()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    gateway.buyer_says("shop1", "b8", "什么时候发货");
    assert_eq!(reply(&gateway).await.text, "现货下单后48小时内发出。");

    // A good edit replaces the broken file; the file watcher picks it up by itself.
    std::fs::write(
        daemon.rules.join("zz-broken.toml"),
        "[[rule]]\nid = \"invoice.ask\"\ntopic = \"invoice\"\nreply = \"thanks\"\nany = [\"发票\"]\n",
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        gateway.buyer_says("shop1", "b8", "能开发票吗");
        let answer = reply(&gateway).await.text;
        if answer == "不客气，祝您购物愉快！" {
            break;
        }
        assert!(Instant::now() < deadline, "the new rule never took effect");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    daemon.stop().await;
}

// ---- process-level tests: the real binary ----

fn spawn_daemon(gateway: &str, data: &Path, rules: &Path, replies: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_xiaoer"))
        .args(["run", "--gateway", gateway, "--token", TOKEN, "--data"])
        .arg(data)
        .arg("--rules")
        .arg(rules)
        .arg("--replies")
        .arg(replies)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start xiaoer run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_no_escalation_and_does_not_re_answer() {
    let gateway = gateway().await;
    let (_dir, rules, replies) = rule_dirs();
    let data = tempfile::tempdir().unwrap();
    let mut child = spawn_daemon(&gateway.url(), data.path(), &rules, &replies);
    assert!(gateway.wait_for_bots(1, WAIT).await);
    let refund = gateway.buyer_says("shop1", "k1", "质量太差了，我要退货");
    assert!(reply(&gateway).await.text.contains("退款专员"));
    let faq = gateway.buyer_says("shop1", "k2", "什么时候发货");
    reply(&gateway).await;
    reply(&gateway).await;
    child.kill().expect("kill -9");
    child.wait().unwrap();
    // Let the gateway notice the dead connection, so the count below is the new process's.
    let deadline = Instant::now() + WAIT;
    while gateway.connected_bots() > 0 {
        assert!(
            Instant::now() < deadline,
            "the gateway never noticed the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut child = spawn_daemon(&gateway.url(), data.path(), &rules, &replies);
    assert!(gateway.wait_for_bots(1, WAIT).await);
    // The gateway redelivers what it is unsure about: nothing is answered twice.
    gateway.redeliver("shop1", "k1", "质量太差了，我要退货", &refund);
    gateway.redeliver("shop1", "k2", "什么时候发货", &faq);
    silence(&gateway).await;
    let store = Store::open_existing(data.path()).await.unwrap();
    let open = store.open_escalations().await.unwrap();
    assert_eq!(open.len(), 1, "exactly the one escalation survived");
    assert_eq!(open[0].key.user_id, "k1");
    // And the restarted daemon serves new messages.
    gateway.buyer_says("shop1", "k3", "什么时候发货");
    let greeting = reply(&gateway).await;
    assert!(is_greeting(&greeting.text), "{greeting:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_within_five_seconds() {
    let gateway = gateway().await;
    let (_dir, rules, replies) = rule_dirs();
    let data = tempfile::tempdir().unwrap();
    let mut child = spawn_daemon(&gateway.url(), data.path(), &rules, &replies);
    assert!(gateway.wait_for_bots(1, WAIT).await);
    gateway.buyer_says("shop1", "t1", "我要退款");
    reply(&gateway).await;
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit, got {status}");
    let store = Store::open_existing(data.path()).await.unwrap();
    assert_eq!(store.open_escalations().await.unwrap().len(), 1);
}
