//! Notifications end to end: the daemon on the development gateway escalates chats, and a real
//! webhook receiver on 127.0.0.1 — one that fails its first deliveries, one that refuses for
//! good — gets them through the durable outbox, including across a `kill -9` between the
//! escalation's commit and the delivery. Each runs on a SQLite store and on PostgreSQL (see
//! `common/backends.rs`).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::backends::TestDb;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use xiaoer::config::{Config, GatewaySettings, ShopSettings, StoreLocation};
use xiaoer::devgateway::{DevGateway, DevGatewayConfig};
use xiaoer::notify::{RetryPolicy, Target};
use xiaoer::store::{OutboxOp, Store, now_ms};

const TOKEN: &str = "t";
const SECRET: &str = "receiver-secret";
const WAIT: Duration = Duration::from_secs(15);

/// What the receiver saw: each request's key, signature, body and the status it answered.
#[derive(Clone, Debug)]
struct Seen {
    key: String,
    signature: String,
    body: Vec<u8>,
    status: u16,
}

#[derive(Default)]
struct Receiver {
    /// Requests to answer with `failing_status` before answering 200.
    fail_first: AtomicUsize,
    /// 0: fail with 503.
    failing_status: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl Receiver {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn delivered(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.status == 200)
            .collect()
    }
}

async fn hook(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let failing = receiver
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        match receiver.failing_status.load(Ordering::SeqCst) {
            0 => StatusCode::SERVICE_UNAVAILABLE,
            code => StatusCode::from_u16(code as u16).unwrap(),
        }
    } else {
        StatusCode::OK
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    receiver.seen.lock().unwrap().push(Seen {
        key: header("x-xiaoer-key"),
        signature: header("x-xiaoer-signature"),
        body: body.to_vec(),
        status: status.as_u16(),
    });
    status
}

/// A receiver on 127.0.0.1 and its URL.
async fn receiver() -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(Arc::clone(&receiver));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, url)
}

async fn gateway() -> DevGateway {
    DevGateway::start(DevGatewayConfig {
        token: Some(TOKEN.into()),
        shops: vec!["shop1".into()],
        ..Default::default()
    })
    .await
    .unwrap()
}

fn target(url: &str) -> Target {
    let entry: toml::Value = toml::from_str(&format!(
        "kind = \"generic\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nname = \"hook\"\ntimeout = \"2s\""
    ))
    .unwrap();
    Target::from_toml(0, &entry).unwrap()
}

/// Short waits, so that the test sees several retries in a second or two.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        first: Duration::from_millis(100),
        cap: Duration::from_millis(300),
        give_up_after: Duration::from_secs(3600),
    }
}

fn config(gateway: &DevGateway, data: &Path, rules: &Path, replies: &Path, url: &str) -> Config {
    Config {
        data: data.to_path_buf(),
        rules: rules.to_path_buf(),
        replies: replies.to_path_buf(),
        gateways: vec![GatewaySettings {
            url: gateway.url(),
            token: Some(TOKEN.into()),
            name: None,
        }],
        shops: vec![ShopSettings {
            id: "shop1".into(),
            name: Some("测试小店".into()),
            ..Default::default()
        }],
        watch: false,
        notify: vec![target(url)],
        notify_retry: quick_retries(),
        ..Config::default()
    }
}

/// Waits until `check` holds, or fails the test after [`WAIT`].
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn signature_of(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn a_receiver_that_fails_at_first_gets_the_escalation_once_signed_with_one_key(db: TestDb) {
    let gateway = gateway().await;
    let (receiver, url) = receiver().await;
    receiver.fail_first.store(3, Ordering::SeqCst);
    let (_dir, rules, replies) = common::rule_dirs();
    let data = tempfile::tempdir().unwrap();
    let running = xiaoer::daemon::start(Config {
        store: db.daemon_store(),
        ..config(&gateway, data.path(), &rules, &replies, &url)
    })
    .await
    .unwrap();
    assert!(gateway.wait_for_bots(1, WAIT).await);

    gateway.buyer_says("shop1", "buyer-1", "我要退款");
    eventually("the delivery after three failures", async || {
        !receiver.delivered().is_empty()
    })
    .await;

    let seen = receiver.seen();
    assert_eq!(
        seen.iter().map(|s| s.status).collect::<Vec<_>>(),
        [503, 503, 503, 200],
        "three failures, then one delivery and no more"
    );
    assert!(
        seen.iter().all(|s| s.key == seen[0].key),
        "the same key on every attempt"
    );
    let delivered = &seen[3];
    assert_eq!(delivered.signature, signature_of(&delivered.body));
    let body: serde_json::Value = serde_json::from_slice(&delivered.body).unwrap();
    let open = running.store().open_escalations().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(body["event"], "escalation.created");
    assert_eq!(body["key"], delivered.key.as_str());
    assert_eq!(body["shop"], "shop1");
    assert_eq!(body["platform"], "dev");
    assert_eq!(body["user_id"], "buyer-1");
    assert_eq!(body["queue"], "refund");
    assert_eq!(body["escalation_id"], open[0].id);
    assert_eq!(body["first_message"], "我要退款");
    assert!(body["at"].as_str().unwrap().ends_with('Z'), "{body}");
    assert!(body.get("console_url").is_none(), "no console, no link");

    // What the store says matches: one delivered, nothing owed, nothing given up.
    eventually("the delivery recorded", async || {
        running.store().outbox_counts().await.unwrap().delivered == 1
    })
    .await;
    let counts = running.store().outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead, counts.unplanned), (0, 0, 0));
    tokio::time::timeout(Duration::from_secs(5), running.stop())
        .await
        .unwrap();
}

async fn a_refused_notification_is_dead_lettered_and_delivered_once_revived(db: TestDb) {
    let gateway = gateway().await;
    let (receiver, url) = receiver().await;
    // 400: sending the same again cannot help, so it is given up at once.
    receiver.fail_first.store(1, Ordering::SeqCst);
    receiver.failing_status.store(400, Ordering::SeqCst);
    let (_dir, rules, replies) = common::rule_dirs();
    let data = tempfile::tempdir().unwrap();
    let running = xiaoer::daemon::start(Config {
        store: db.daemon_store(),
        ..config(&gateway, data.path(), &rules, &replies, &url)
    })
    .await
    .unwrap();
    assert!(gateway.wait_for_bots(1, WAIT).await);
    gateway.buyer_says("shop1", "buyer-2", "我要退款");

    let store = running.store().clone();
    eventually("a dead letter", async || {
        !store.dead_letters(10).await.unwrap().is_empty()
    })
    .await;
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].target, "hook");
    assert_eq!(dead[0].attempts, 1);
    let error = dead[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("400"),
        "the reason names the status: {error}"
    );
    assert_eq!(receiver.seen().len(), 1, "a refusal is not retried");

    // Retried from the console (the receiver is fixed now): delivered, once, same key.
    store
        .outbox(OutboxOp::Revive {
            target: None,
            at_ms: now_ms(),
        })
        .await
        .unwrap();
    eventually("the revived delivery", async || {
        receiver.delivered().len() == 1
    })
    .await;
    let seen = receiver.seen();
    assert_eq!(seen[0].key, seen[1].key);
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    tokio::time::timeout(Duration::from_secs(5), running.stop())
        .await
        .unwrap();
}

fn spawn_daemon(config_file: &Path, data: &Path, fault: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xiaoer"));
    command
        .args(["run", "--config"])
        .arg(config_file)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(data.join(if fault.is_some() {
                "first.log"
            } else {
                "second.log"
            }))
            .unwrap(),
        );
    if let Some(fault) = fault {
        command.env("XIAOER_TEST_FAULT", fault);
    }
    command.spawn().expect("start xiaoer run")
}

async fn kill_9_between_the_escalation_commit_and_the_delivery_delivers_after_restart_once(
    db: TestDb,
) {
    let gateway = gateway().await;
    let (receiver, url) = receiver().await;
    let (dir, rules, replies) = common::rule_dirs();
    let data = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("xiaoer.toml");
    std::fs::write(
        &config_file,
        format!(
            r#"rules = "{rules}"
replies = "{replies}"
watch = false
{store}

[[gateway]]
url = "{gateway}"
token = "{TOKEN}"

[[shop]]
id = "shop1"

[[notify]]
kind = "generic"
url = "{url}"
secret = "{SECRET}"

[notifications]
retry_first = "100ms"
retry_cap = "300ms"
"#,
            rules = rules.display(),
            replies = replies.display(),
            gateway = gateway.url(),
            store = match db.daemon_store() {
                Some(StoreLocation::Postgres(url)) => format!("store = \"{url}\""),
                _ => String::new(),
            },
        ),
    )
    .unwrap();

    // The process dies right after the escalation (and its notification) is committed.
    let mut child = spawn_daemon(
        &config_file,
        data.path(),
        Some("abort-after-escalation-commit"),
    );
    assert!(gateway.wait_for_bots(1, WAIT).await);
    gateway.buyer_says("shop1", "buyer-3", "我要退款");
    eventually("the fault to end the process", async || {
        child.try_wait().unwrap().is_some()
    })
    .await;
    let store = match db.daemon_store() {
        Some(_) => db.open_existing().await,
        None => Store::open_existing(data.path()).await.unwrap(),
    };
    assert_eq!(store.open_escalations().await.unwrap().len(), 1);
    assert_eq!(
        store.outbox_counts().await.unwrap().unplanned,
        1,
        "the notification was committed with the escalation"
    );

    // Started again without the fault: the outbox delivers what it owes, once.
    eventually("the gateway to see the connection gone", async || {
        gateway.connected_bots() == 0
    })
    .await;
    let mut child = spawn_daemon(&config_file, data.path(), None);
    eventually("the delivery after the restart", async || {
        !receiver.delivered().is_empty()
    })
    .await;
    eventually("the delivery recorded", async || {
        store.outbox_counts().await.unwrap().delivered == 1
    })
    .await;
    let seen = receiver.seen();
    let keys: std::collections::BTreeSet<_> = seen.iter().map(|s| s.key.clone()).collect();
    assert_eq!(
        keys.len(),
        1,
        "one notification as the receiver can tell: {seen:?}"
    );
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["event"], "escalation.created");
    assert_eq!(body["user_id"], "buyer-3");
    child.kill().unwrap();
    child.wait().unwrap();
}

crate::on_both_backends!(
    multi_thread: a_receiver_that_fails_at_first_gets_the_escalation_once_signed_with_one_key,
    a_refused_notification_is_dead_lettered_and_delivered_once_revived,
    kill_9_between_the_escalation_commit_and_the_delivery_delivers_after_restart_once,
);
