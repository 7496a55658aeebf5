//! Storage faults: a full disk, a deleted data directory, a damaged write-ahead log or database
//! file, two daemons on one store. Nothing is acknowledged that is not stored, the failure is
//! loud, and the daemon recovers by itself where it can.

mod common;

use common::rule_dirs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use xiaoer::config::{Config, GatewaySettings};
use xiaoer::daemon::{DaemonError, Running};
use xiaoer::devgateway::{BotMessage, DevGateway, DevGatewayConfig};
use xiaoer::model::ConversationKey;
use xiaoer::store::{DB_FILE, Fault, Store, StoreError};

const TOKEN: &str = "secret";
const WAIT: Duration = Duration::from_secs(10);

async fn gateway() -> DevGateway {
    DevGateway::start(DevGatewayConfig {
        token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn config(gateway: &DevGateway, data: &Path, rules: &(TempDir, PathBuf, PathBuf)) -> Config {
    Config {
        data: data.to_path_buf(),
        rules: rules.1.clone(),
        replies: rules.2.clone(),
        gateways: vec![GatewaySettings {
            url: gateway.url(),
            token: Some(TOKEN.into()),
            name: None,
        }],
        watch: false,
        ..Config::default()
    }
}

async fn reply(gateway: &DevGateway) -> BotMessage {
    gateway
        .next_bot_message(WAIT)
        .await
        .expect("the bot answers")
}

async fn until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn escalated_users(data: &Path) -> Vec<String> {
    let reader = Store::open_existing(data).await.unwrap();
    let users = reader
        .open_escalations()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key.user_id)
        .collect();
    reader.close().await.unwrap();
    users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_store_refuses_to_start_and_names_the_first() {
    let gateway = gateway().await;
    let rules = rule_dirs();
    let data = tempfile::tempdir().unwrap();
    let first = xiaoer::daemon::start(config(&gateway, data.path(), &rules))
        .await
        .unwrap();
    let second = xiaoer::daemon::start(config(&gateway, data.path(), &rules)).await;
    let Err(error) = second else {
        panic!("a second daemon started on the same store");
    };
    assert!(
        matches!(error, DaemonError::AlreadyRunning { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    first.stop().await;
    // Once the first has stopped the store is free again.
    let again = xiaoer::daemon::start(config(&gateway, data.path(), &rules))
        .await
        .unwrap();
    again.stop().await;
}

/// A refund request big enough that storing it needs new database pages.
fn big_refund(n: usize) -> String {
    format!("我要退款，{}", "订单详情".repeat(2_000 + n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_acknowledges_nothing_it_did_not_store_and_recovers_by_itself() {
    let gateway = gateway().await;
    let rules = rule_dirs();
    let data = tempfile::tempdir().unwrap();
    let running: Running = xiaoer::daemon::start(config(&gateway, data.path(), &rules))
        .await
        .unwrap();
    assert!(gateway.wait_for_bots(1, WAIT).await);
    gateway.buyer_says("shop1", "ok-before", "我要退款");
    assert!(reply(&gateway).await.text.contains("退款专员"));

    // The database may not grow any more.
    running.store().inject_fault(Fault::PageLimit(1));
    let lost = gateway.buyer_says("shop1", "during", &big_refund(0));
    until("the store reports that it cannot write", async || {
        running.store().write_failure().is_some()
    })
    .await;
    let failure = running.store().write_failure().unwrap();
    assert!(failure.contains("the disk is full"), "{failure}");
    // The worker gives up on the message after its retries: nothing acknowledged.
    until("the worker gives the message up", async || {
        running.store().write_stats().failed_requests >= 5
    })
    .await;
    assert!(
        gateway.next_bot_message(Duration::ZERO).await.is_none(),
        "nothing acknowledged that is not stored"
    );
    assert_eq!(escalated_users(data.path()).await, ["ok-before"]);

    // Space comes back: the daemon takes writes again by itself; the gateway's redelivery is
    // handled in full.
    running.store().inject_fault(Fault::PageLimit(1 << 30));
    gateway.redeliver("shop1", "during", &big_refund(0), &lost);
    assert!(reply(&gateway).await.text.contains("退款专员"));
    assert_eq!(running.store().write_failure(), None);
    gateway.buyer_says("shop1", "after", &big_refund(1));
    assert!(reply(&gateway).await.text.contains("退款专员"));
    running.stop().await;
    let mut users = escalated_users(data.path()).await;
    users.sort();
    assert_eq!(
        users,
        ["after", "during", "ok-before"],
        "everything acknowledged is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_deleted_while_running_stops_the_acknowledgements_loudly() {
    let gateway = gateway().await;
    let rules = rule_dirs();
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let running = xiaoer::daemon::start(config(&gateway, &data, &rules))
        .await
        .unwrap();
    assert!(gateway.wait_for_bots(1, WAIT).await);
    gateway.buyer_says("shop1", "v1", "我要退款");
    assert!(reply(&gateway).await.text.contains("退款专员"));
    std::fs::remove_dir_all(&data).unwrap();
    gateway.buyer_says("shop1", "v2", "我要退款");
    until("the store says it was deleted", async || {
        running
            .store()
            .write_failure()
            .is_some_and(|f| f.contains("deleted or replaced"))
    })
    .await;
    until("the worker gives the message up", async || {
        running.store().write_stats().failed_requests >= 5
    })
    .await;
    assert!(
        gateway.next_bot_message(Duration::ZERO).await.is_none(),
        "no acknowledgement for a message that has nowhere to go"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_damaged_database_is_refused_at_start_with_what_was_found() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path()).await.unwrap();
    for i in 0..200 {
        store
            .append_transcript(xiaoer::model::TranscriptEntry {
                key: ConversationKey::new("dev", "shop1", format!("u{i}")),
                direction: xiaoer::model::Direction::Inbound,
                sender: xiaoer::model::Sender::Buyer,
                message_id: None,
                text: "一句话".repeat(50),
                parts: Vec::new(),
                delivery: None,
                at_ms: i,
            })
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    let path = data.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 16 * 4096, "a database of several pages");
    // Scribble over the middle pages, as a failing disk might.
    for byte in &mut bytes[8 * 4096..12 * 4096] {
        *byte = 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    let error = Store::open(data.path()).await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, StoreError::Damaged { .. }) || message.contains("damaged"),
        "{message}"
    );
    assert!(message.contains("restore it from a backup"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_write_ahead_log_is_set_aside_and_reported() {
    let gateway = gateway().await;
    let (_dir, rules, replies) = rule_dirs();
    let data = tempfile::tempdir().unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_xiaoer"))
            .args([
                "run",
                "--gateway",
                &gateway.url(),
                "--token",
                TOKEN,
                "--data",
            ])
            .arg(data.path())
            .arg("--rules")
            .arg(&rules)
            .arg("--replies")
            .arg(&replies)
            .env("RUST_LOG", "error")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    assert!(gateway.wait_for_bots(1, WAIT).await);
    gateway.buyer_says("shop1", "w1", "我要退款");
    assert!(reply(&gateway).await.text.contains("退款专员"));
    child.kill().unwrap();
    child.wait().unwrap();
    let wal = data.path().join(format!("{DB_FILE}-wal"));
    assert!(
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) > 0,
        "the killed daemon left its write-ahead log"
    );
    std::fs::write(&wal, vec![0x42u8; 64 * 1024]).unwrap();
    until("the gateway notices the killed daemon", async || {
        gateway.connected_bots() == 0
    })
    .await;

    let mut child = spawn();
    assert!(
        gateway.wait_for_bots(1, WAIT).await,
        "it still starts and serves"
    );
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("write-ahead log is damaged"), "{log}");
    let kept: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("-wal.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged log is kept for inspection");
}

/// How this machine can make a directory read-only for a daemon: a read-only bind mount in a
/// private mount namespace (root, where `unshare` is allowed), or file modes (any other user).
enum ReadOnly {
    Mount,
    Modes,
}

fn read_only_method() -> Option<ReadOnly> {
    use std::os::unix::fs::MetadataExt;
    // A file this process creates is owned by its effective user.
    let probe_file = tempfile::NamedTempFile::new().unwrap();
    let root = probe_file.as_file().metadata().unwrap().uid() == 0;
    if !root {
        return Some(ReadOnly::Modes);
    }
    let probe = Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount --bind / /mnt 2>/dev/null || mount --bind /tmp /tmp",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    matches!(probe, Ok(status) if status.success()).then_some(ReadOnly::Mount)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_a_read_only_file_system_is_refused_at_start_with_why() {
    let Some(method) = read_only_method() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but this machine can neither mount read-only (unshare) nor drop write permission"
        );
        eprintln!("skipped: running as root without unshare, so nothing here is read-only to us");
        return;
    };
    let (_dir, rules, replies) = rule_dirs();
    let data = tempfile::tempdir().unwrap();
    // An existing store with an escalation in it, as a shop's would be.
    let store = Store::open(data.path()).await.unwrap();
    store.close().await.unwrap();
    let before: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let daemon = format!(
        "exec {} run --gateway ws://127.0.0.1:9/ --data {} --rules {} --replies {}",
        env!("CARGO_BIN_EXE_xiaoer"),
        data.path().display(),
        rules.display(),
        replies.display()
    );
    let dir = data.path().display().to_string();
    let mut command = match method {
        ReadOnly::Mount => {
            let mut c = Command::new("unshare");
            c.args([
                "-m",
                "sh",
                "-c",
                &format!(
                    "mount --bind {dir} {dir} && mount -o remount,bind,ro {dir} {dir} && {daemon}"
                ),
            ]);
            c
        }
        ReadOnly::Modes => {
            use std::os::unix::fs::PermissionsExt;
            for entry in std::fs::read_dir(data.path()).unwrap() {
                let path = entry.unwrap().path();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
            }
            std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
            let mut c = Command::new("sh");
            c.args(["-c", &daemon]);
            c
        }
    };
    let mut child = command
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the daemon kept running on a store it cannot write to");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "it refuses to start: {log}");
    assert!(
        log.contains(&dir),
        "the message names the data directory: {log}"
    );
    match method {
        ReadOnly::Mount => assert!(log.contains("mounted read-only"), "{log}"),
        ReadOnly::Modes => assert!(log.contains("not writable by"), "{log}"),
    }
    assert!(!log.contains("os error"), "said in words: {log}");
    if let ReadOnly::Modes = method {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let after: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "nothing was written beside the store");
}
