//! Several `xiaoer run` processes on one PostgreSQL store, with buyers writing steadily through
//! the dev gateway: a killed instance's shops move within the lease TTL plus two seconds, a
//! paused one sends nothing for the shops it lost, a restarted database connection loses
//! nothing, and through all of it every buyer message is answered exactly once (counted at the
//! gateway) and no escalation is lost or doubled.
//!
//! Each test runs in a PostgreSQL schema of its own (dropped afterwards) on the server in
//! `XIAOER_TEST_PG`; without a server the tests are skipped with a notice, unless `CI` is set.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::backends::PgSchema;
use common::rule_dirs;
use tempfile::TempDir;
use xiaoer::config::StoreLocation;
use xiaoer::devgateway::{BotMessage, DevGateway, DevGatewayConfig};
use xiaoer::model::{ConversationKey, Delivery, Direction};
use xiaoer::store::{ClusterStatus, ShopLeases, Store};

const TOKEN: &str = "secret";
const WAIT: Duration = Duration::from_secs(20);
/// The lease TTL the instances run with.
const TTL: Duration = Duration::from_secs(3);
const FAQ: &str = "什么时候发货";
const REFUND: &str = "我要退款";

/// One `xiaoer run` process.
struct Instance {
    name: String,
    child: Child,
    log: PathBuf,
    _data: TempDir,
}

impl Instance {
    fn spawn(
        name: &str,
        gateway: &DevGateway,
        store_url: &str,
        rules: &Path,
        replies: &Path,
        ttl: Duration,
    ) -> Instance {
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("xiaoer.toml");
        std::fs::write(
            &config,
            format!(
                "store = {store_url:?}\nwatch = false\n[cluster]\nlease_ttl = \"{}ms\"\ninstance = {name:?}\n",
                ttl.as_millis()
            ),
        )
        .unwrap();
        let log = data.path().join("xiaoer.log");
        let child = Command::new(env!("CARGO_BIN_EXE_xiaoer"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--gateway", &gateway.url(), "--token", TOKEN, "--data"])
            .arg(data.path())
            .arg("--rules")
            .arg(rules)
            .arg("--replies")
            .arg(replies)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start xiaoer run");
        Instance {
            name: name.to_owned(),
            child,
            log,
            _data: data,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// SIGTERM, and the exit within five seconds; the log is kept for a failure after it.
    fn stop(mut self) -> String {
        self.signal("-TERM");
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{} still runs 5 s after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {}'s log, all but INFO ---", self.name);
            for line in self.log().lines().filter(|l| !l.contains(" INFO ")) {
                eprintln!("{line}");
            }
        }
        // SIGCONT first: a stopped process cannot die until it runs again.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs of stopped instances, printed (all but INFO lines) if the test fails after the stop.
struct Logs(Vec<String>);

impl Drop for Logs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in &self.0 {
                eprintln!("--- a stopped instance's log, all but INFO ---");
                for line in log
                    .lines()
                    .filter(|l| !l.contains(" INFO ") || l.contains("lease"))
                {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// The test's world: a gateway with `shops` shop accounts, a schema, the fixture rules.
struct World {
    gateway: Arc<DevGateway>,
    schema: PgSchema,
    shops: Vec<String>,
    rules: PathBuf,
    replies: PathBuf,
    _rule_dir: TempDir,
}

impl World {
    async fn new(test: &str, shops: usize) -> Option<World> {
        let schema = PgSchema::create(test).await?;
        let shops: Vec<String> = (1..=shops).map(|n| format!("s{n:02}")).collect();
        let gateway = DevGateway::start(DevGatewayConfig {
            token: Some(TOKEN.into()),
            shops: shops.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let (rule_dir, rules, replies) = rule_dirs();
        Some(World {
            gateway: Arc::new(gateway),
            schema,
            shops,
            rules,
            replies,
            _rule_dir: rule_dir,
        })
    }

    /// The store URL the instances use: the test's schema, and an application name of its
    /// own so that terminating its connections touches no other test's.
    fn store_url(&self) -> String {
        format!(
            "{}&application_name={}",
            self.schema.url(),
            self.schema.name
        )
    }

    fn spawn(&self, name: &str) -> Instance {
        self.spawn_with(name, TTL)
    }

    fn spawn_with(&self, name: &str, ttl: Duration) -> Instance {
        Instance::spawn(
            name,
            &self.gateway,
            &self.store_url(),
            &self.rules,
            &self.replies,
            ttl,
        )
    }

    /// Two instances, once each holds half of the shops, and a view of the leases.
    async fn pair(&self, a: &str, b: &str) -> (Instance, Instance, ShopLeases) {
        let instances = (self.spawn(a), self.spawn(b));
        assert!(self.gateway.wait_for_bots(2, WAIT).await);
        let mut leases = self.leases().await;
        let half = self.shops.len() / 2;
        until(&mut leases, WAIT, "the shops are shared out", |held| {
            [a, b]
                .iter()
                .all(|name| held.get(*name).is_some_and(|s| s.len() == half))
        })
        .await;
        (instances.0, instances.1, leases)
    }

    async fn leases(&self) -> ShopLeases {
        Store::open_leases(&StoreLocation::Postgres(self.schema.url()))
            .await
            .unwrap()
            .unwrap()
    }

    async fn store(&self) -> Store {
        Store::open_existing_location(&StoreLocation::Postgres(self.schema.url()))
            .await
            .unwrap()
    }
}

/// Shops held (and not lapsed) by each instance.
fn holdings(status: &ClusterStatus) -> HashMap<String, Vec<String>> {
    let mut held: HashMap<String, Vec<String>> = HashMap::new();
    for lease in &status.leases {
        if let Some(owner) = &lease.owner
            && lease.expires_ms > status.now_ms
        {
            held.entry(owner.clone())
                .or_default()
                .push(lease.self_id.clone());
        }
    }
    held
}

/// Polls the leases until `done` holds, or fails after `wait` saying what was seen.
async fn until(
    leases: &mut ShopLeases,
    wait: Duration,
    what: &str,
    done: impl Fn(&HashMap<String, Vec<String>>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let status = leases.status().await.unwrap();
        if done(&holdings(&status)) {
            return started.elapsed();
        }
        assert!(started.elapsed() < wait, "{what}: {status:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the buyers sent, by (shop, buyer): FAQ questions, and one refund request for the
/// buyers named `r…`.
type Sent = HashMap<(String, String), Vec<&'static str>>;

/// Buyers writing steadily until stopped: one message every `pause`, going round the shops; the
/// FAQ from `b0…b{buyers-1}` in turn, and every tenth message a refund request from a new buyer.
struct Load {
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Sent>,
}

impl Load {
    fn start(world: &World, buyers_per_shop: usize, pause: Duration) -> Load {
        let running = Arc::new(AtomicBool::new(true));
        let shops = world.shops.clone();
        let gateway = Arc::clone(&world.gateway);
        let flag = Arc::clone(&running);
        let task = tokio::spawn(async move {
            let mut sent = Sent::new();
            let mut tick = tokio::time::interval(pause);
            let mut count = 0usize;
            while flag.load(Ordering::Acquire) {
                tick.tick().await;
                let shop = &shops[count % shops.len()];
                let (user, text) = if count % 10 == 9 {
                    (format!("r{count}"), REFUND)
                } else {
                    (format!("b{}", (count / shops.len()) % buyers_per_shop), FAQ)
                };
                gateway.buyer_says(shop, &user, text);
                sent.entry((shop.clone(), user)).or_default().push(text);
                count += 1;
            }
            sent
        });
        Load { running, task }
    }

    async fn stop(self) -> Sent {
        self.running.store(false, Ordering::Release);
        self.task.await.unwrap()
    }
}

/// Every reply the gateway took, gathered as they come.
struct Replies {
    got: Arc<std::sync::Mutex<Vec<BotMessage>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Replies {
    fn collect(world: &World) -> Replies {
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let gateway = Arc::clone(&world.gateway);
        let sink = Arc::clone(&got);
        let task = tokio::spawn(async move {
            loop {
                if let Some(message) = gateway.next_bot_message(Duration::from_secs(3600)).await {
                    sink.lock().unwrap().push(message);
                }
            }
        });
        Replies { got, task }
    }

    fn by_chat(&self) -> HashMap<(String, String), Vec<String>> {
        let mut chats: HashMap<(String, String), Vec<String>> = HashMap::new();
        for m in self.got.lock().unwrap().iter() {
            chats
                .entry((m.self_id.clone(), m.user_id.clone()))
                .or_default()
                .push(m.text.clone());
        }
        chats
    }

    /// Waits until every message sent has its answer (see [`answered`]), or, when some replies
    /// could not be sent, until no reply has come for five seconds.
    async fn wait_for(&self, sent: &Sent) {
        let started = Instant::now();
        let mut last = (0, Instant::now());
        loop {
            let count = self.got.lock().unwrap().len();
            if count != last.0 {
                last = (count, Instant::now());
            }
            let chats = self.by_chat();
            let missing: Vec<_> = sent
                .iter()
                .filter(|(chat, texts)| !answered(chats.get(*chat), texts).0)
                .map(|(chat, _)| chat.clone())
                .collect();
            if missing.is_empty() || last.1.elapsed() > Duration::from_secs(5) {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "{} chats still wait for an answer, e.g. {:?}",
                missing.len(),
                missing
                    .iter()
                    .take(3)
                    .map(|chat| (chat, sent[chat].len(), chats.get(chat)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Once every instance has exited: what is at the gateway is all there will be.
    async fn finish(self, world: &World) -> HashMap<(String, String), Vec<String>> {
        let Replies { got, task } = self;
        task.abort();
        let _ = task.await;
        let this = Replies {
            got,
            task: tokio::spawn(async {}),
        };
        while let Some(message) = world.gateway.next_bot_message(Duration::ZERO).await {
            this.got.lock().unwrap().push(message);
        }
        this.by_chat()
    }
}

/// Whether a chat got its answers, and whether it got nothing more: a FAQ buyer is greeted once
/// and answered once per question; a refund buyer (one message) hears the refund
/// acknowledgement once, perhaps after a greeting, and nothing twice.
fn answered(replies: Option<&Vec<String>>, sent: &[&str]) -> (bool, bool) {
    let replies = replies.map(Vec::as_slice).unwrap_or_default();
    if sent.first() == Some(&REFUND) {
        let acks = replies.iter().filter(|t| t.contains("退款专员")).count();
        let mut unique = replies.to_vec();
        unique.sort();
        unique.dedup();
        (
            acks >= 1,
            acks == 1 && unique.len() == replies.len() && replies.len() <= 2,
        )
    } else {
        let expected = sent.len() + 1;
        (replies.len() >= expected, replies.len() == expected)
    }
}

/// The replies a chat's transcript records, sent or not.
fn transcript_replies(transcript: &[xiaoer::model::TranscriptEntry]) -> Vec<String> {
    transcript
        .iter()
        .filter(|e| e.direction == Direction::Outbound)
        .map(|e| e.text.clone())
        .collect()
}

/// Every message answered exactly once, and one escalation per refund buyer; replies nobody
/// could send (their instance stopped between recording and sending them, so its successor
/// marked them "may not have reached the buyer") are counted apart, and nothing is ever sent
/// twice. Returns how many replies were marked so.
async fn assert_exactly_once(
    world: &World,
    sent: &Sent,
    replies: &HashMap<(String, String), Vec<String>>,
) -> usize {
    let store = world.store().await;
    let mut wrong = Vec::new();
    let mut unsent = 0;
    for (chat, texts) in sent {
        let key = ConversationKey::new("dev", &chat.0, &chat.1);
        let transcript = store.transcript(&key, 1000).await.unwrap();
        let outbound = transcript
            .iter()
            .filter(|e| e.direction == Direction::Outbound)
            .count();
        let uncertain = transcript
            .iter()
            .filter(|e| {
                e.direction == Direction::Outbound
                    && matches!(e.delivery, Some(Delivery::Unknown | Delivery::Pending))
            })
            .count();
        unsent += uncertain;
        let got = replies.get(chat).map_or(0, Vec::len);
        let (complete, exact) = answered(replies.get(chat), texts);
        // The gateway took what the store says was sent, plus at most the replies marked
        // uncertain (sent just before their instance died, or never), and nothing twice.
        let accounted = got <= outbound && got + uncertain >= outbound;
        let once = if uncertain == 0 {
            complete && exact
        } else {
            answered(Some(&transcript_replies(&transcript)), texts) == (true, true)
        };
        if !(accounted && once) {
            wrong.push((
                chat.clone(),
                texts.len(),
                outbound,
                uncertain,
                replies.get(chat).cloned(),
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} chats were not answered exactly once: {:?}",
        wrong.len(),
        sent.len(),
        &wrong[..wrong.len().min(5)]
    );
    let refunders: usize = sent.values().filter(|t| t.first() == Some(&REFUND)).count();
    let open = store.open_escalations().await.unwrap();
    assert_eq!(
        open.len(),
        refunders,
        "one escalation per refund request, none lost or doubled"
    );
    assert!(open.iter().all(|e| e.key.user_id.starts_with('r')));
    unsent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_s_shops_move_within_the_lease_ttl_and_every_message_is_answered_once() {
    let Some(world) = World::new("a_killed_instance_s_shops_move", 20).await else {
        return;
    };
    let mut instances: Vec<Instance> = ["i1", "i2", "i3"].iter().map(|n| world.spawn(n)).collect();
    assert!(world.gateway.wait_for_bots(3, WAIT).await);
    let mut leases = world.leases().await;
    until(&mut leases, WAIT, "the shops are shared out", |held| {
        held.values().map(Vec::len).sum::<usize>() == 20
            && ["i1", "i2", "i3"]
                .iter()
                .all(|n| held.get(*n).is_some_and(|s| s.len() >= 6))
    })
    .await;
    let replies = Replies::collect(&world);
    let load = Load::start(&world, 5, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let victim = instances.remove(0);
    let status = leases.status().await.unwrap();
    let lost = holdings(&status).remove(&victim.name).unwrap_or_default();
    let mut victim = victim;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let moved = until(
        &mut leases,
        TTL + Duration::from_secs(2),
        "the killed instance's shops move",
        |held| !held.contains_key("i1") && held.values().map(Vec::len).sum::<usize>() == 20,
    )
    .await;
    eprintln!(
        "{} shops moved {moved:?} after the kill (lease TTL {TTL:?})",
        lost.len()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = load.stop().await;
    replies.wait_for(&sent).await;
    let _logs = Logs(instances.into_iter().map(Instance::stop).collect());
    let replies = replies.finish(&world).await;
    let unsent = assert_exactly_once(&world, &sent, &replies).await;
    let messages: usize = sent.values().map(Vec::len).sum();
    eprintln!(
        "{messages} messages from {} chats, each answered once; {unsent} replies marked as maybe not delivered",
        sent.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_that_lost_its_shops_sends_and_writes_nothing_for_them() {
    let Some(world) = World::new("a_paused_instance_sends_nothing", 6).await else {
        return;
    };
    let (paused, other, mut leases) = world.pair("p1", "p2").await;
    let replies = Replies::collect(&world);
    let load = Load::start(&world, 12, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    paused.signal("-STOP");
    until(
        &mut leases,
        TTL + Duration::from_secs(2),
        "the paused instance's shops move",
        |held| held.get("p2").is_some_and(|s| s.len() == 6),
    )
    .await;
    // Past its lease, with messages for its old shops waiting in its socket.
    tokio::time::sleep(Duration::from_millis(500)).await;
    paused.signal("-CONT");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = load.stop().await;
    replies.wait_for(&sent).await;
    let log = paused.log();
    let _logs = Logs(vec![paused.stop(), other.stop()]);
    let replies = replies.finish(&world).await;
    // Anything the paused instance sent for a shop it lost would be a second answer.
    let unsent = assert_exactly_once(&world, &sent, &replies).await;
    eprintln!("{unsent} replies marked as maybe not delivered");
    assert!(
        log.contains("taken by another instance") || log.contains("shop leases lapsed"),
        "the paused instance noticed it lost its shops: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_reconnect_after_the_server_ends_their_connections_and_lose_nothing() {
    let Some(world) = World::new("instances_reconnect_after_terminate", 6).await else {
        return;
    };
    let (first, second, mut leases) = world.pair("t1", "t2").await;
    let replies = Replies::collect(&world);
    let load = Load::start(&world, 12, Duration::from_millis(10));
    let mut admin = world.leases().await;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Every connection of both instances: writers, readers and lease connections.
        let ended = admin
            .execute_for_test(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = '{}' AND pid <> pg_backend_pid()",
                world.schema.name
            ))
            .await
            .unwrap();
        assert!(
            ended >= 4,
            "both instances' connections were ended ({ended})"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = load.stop().await;
    replies.wait_for(&sent).await;
    let _logs = Logs(vec![first.stop(), second.stop()]);
    let replies = replies.finish(&world).await;
    let unsent = assert_exactly_once(&world, &sent, &replies).await;
    eprintln!("{unsent} replies marked as maybe not delivered");
    let status = leases.status().await.unwrap();
    assert!(
        status.leases.iter().all(|l| l.unhandled == 0),
        "nothing left unhandled: {status:#?}"
    );
}

/// A buyer message's turn in `shop`, planned under `fence`.
async fn fenced_turn(
    store: &Store,
    shop: &str,
    message_id: &str,
    fence: Option<xiaoer::store::Fence>,
) -> Result<xiaoer::store::TurnOutcome, xiaoer::store::StoreError> {
    use xiaoer::model::{Actor, Sender};
    use xiaoer::store::{InboundLine, Turn};
    let key = ConversationKey::new("dev", shop, "buyer");
    let now = xiaoer::store::now_ms();
    let conversation = store.conversation_or_new(&key, now).await?;
    let mut turn = Turn::new(conversation, Actor::Bot, "message handled", now);
    turn.inbound = Some(InboundLine {
        message_id: message_id.to_owned(),
        sender: Sender::Buyer,
        direction: Direction::Inbound,
        text: FAQ.to_owned(),
        parts: Vec::new(),
        at_ms: now,
        decision: None,
    });
    turn.fence = fence;
    store.commit_turn(turn).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_fences_turns_and_a_new_owner_finds_what_was_left_unhandled() {
    use xiaoer::store::{Fence, InstanceInfo, SeenMessage, StoreError, TurnOutcome};
    let Some(schema) = PgSchema::create("a_lease_fences_turns").await else {
        return;
    };
    let location = StoreLocation::Postgres(schema.url());
    let store = Store::open_location(&location).await.unwrap();
    let me = |id: &str| InstanceInfo {
        id: id.into(),
        host: "test".into(),
        pid: 1,
        started_ms: 0,
    };
    let (a, b) = (me("a"), me("b"));
    let mut leases_a = Store::open_leases(&location).await.unwrap().unwrap();
    let mut leases_b = Store::open_leases(&location).await.unwrap().unwrap();
    let shop = ("dev".to_owned(), "s1".to_owned());
    leases_a
        .add_shops(std::slice::from_ref(&shop))
        .await
        .unwrap();
    leases_a
        .add_shops(std::slice::from_ref(&shop))
        .await
        .unwrap();
    let beat = leases_a.heartbeat(&a, 60_000).await.unwrap();
    assert_eq!((beat.live, beat.shops), (1, 1));
    let taken = leases_a.take(&a, 60_000, 5).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].epoch, 1);
    assert!(
        leases_b.take(&b, 60_000, 5).await.unwrap().is_empty(),
        "held"
    );
    let fence_a = Fence {
        owner: "a".into(),
        epoch: 1,
    };
    assert!(matches!(
        fenced_turn(&store, "s1", "m1", Some(fence_a.clone())).await,
        Ok(TurnOutcome::Applied { .. })
    ));

    // The lease lapses (as if a's heartbeats stopped) and b takes the shop at the next epoch.
    leases_a
        .execute_for_test("UPDATE shop_leases SET expires_ms = 0")
        .await
        .unwrap();
    assert!(
        leases_a.renew(&a, 60_000).await.unwrap().is_empty(),
        "a lapsed lease is not renewed"
    );
    let taken = leases_b.take(&b, 60_000, 5).await.unwrap();
    assert_eq!(taken[0].epoch, 2);
    // a, waking up, can write nothing for the shop; b can.
    let refused = fenced_turn(&store, "s1", "m2", Some(fence_a)).await;
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { .. })),
        "{refused:?}"
    );
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .starts_with("shop dev/s1 is not this instance's to answer now")
    );
    let fence_b = Fence {
        owner: "b".into(),
        epoch: 2,
    };
    assert!(
        matches!(
            fenced_turn(&store, "s1", "m2", Some(fence_b.clone())).await,
            Ok(TurnOutcome::Applied { .. })
        ),
        "m2 was not written by a, so b writes it"
    );

    // The backlog: what any instance recorded and nobody handled, oldest first.
    for (id, at) in [("m2", 10), ("m4", 30), ("m3", 20)] {
        store
            .record_seen(SeenMessage {
                key: ConversationKey::new("dev", "s1", "buyer"),
                message_id: id.into(),
                text: FAQ.into(),
                parts: Vec::new(),
                received_ms: at,
                received_by: "a".into(),
            })
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    let left: Vec<String> = store
        .unhandled("dev", "s1")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(left, ["m3", "m4"], "m2 was handled");
    fenced_turn(&store, "s1", "m3", Some(fence_b))
        .await
        .unwrap();
    let status = leases_b.status().await.unwrap();
    assert_eq!(status.leases[0].owner.as_deref(), Some("b"));
    assert_eq!(status.leases[0].unhandled, 1);
    assert_eq!(status.instances.len(), 1, "only a has sent a heartbeat");

    // b leaves: the shop is free at once, and a may take it at the epoch after.
    leases_b.leave(&b).await.unwrap();
    let taken = leases_a.take(&a, 60_000, 5).await.unwrap();
    assert_eq!(taken[0].epoch, 3);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xiaoer_status_shows_the_instances_their_shops_and_the_backlog() {
    use xiaoer::store::{InstanceInfo, SeenMessage};
    let Some(schema) = PgSchema::create("xiaoer_status_shows_the_instances").await else {
        return;
    };
    let location = StoreLocation::Postgres(schema.url());
    let store = Store::open_location(&location).await.unwrap();
    let mut leases = Store::open_leases(&location).await.unwrap().unwrap();
    let me = InstanceInfo {
        id: "web-1".into(),
        host: "web-host".into(),
        pid: 4242,
        started_ms: 0,
    };
    let shops = [
        ("dev".to_owned(), "s1".to_owned()),
        ("dev".to_owned(), "s2".to_owned()),
    ];
    leases.add_shops(&shops).await.unwrap();
    leases.heartbeat(&me, 60_000).await.unwrap();
    leases.take(&me, 60_000, 1).await.unwrap();
    store
        .record_seen(SeenMessage {
            key: ConversationKey::new("dev", "s2", "buyer"),
            message_id: "m1".into(),
            text: FAQ.into(),
            parts: Vec::new(),
            received_ms: xiaoer::store::now_ms(),
            received_by: "web-1".into(),
        })
        .await
        .unwrap();
    store.flush().await.unwrap();
    let status = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_xiaoer"))
            .args(["status", "--store", &schema.url()])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let text = status(&[]);
    assert!(text.contains("web-1  live  pid 4242 on web-host"), "{text}");
    assert!(text.contains("1 shop\n"), "{text}");
    assert!(text.contains("dev/s1  web-1 (epoch 1, held"), "{text}");
    assert!(
        text.contains("dev/s2  nobody (epoch 0)  1 unhandled, oldest"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&status(&["--json"])).unwrap();
    assert_eq!(json["leases"][1]["unhandled"], 1);
    assert_eq!(json["instances"][0]["id"], "web-1");
    // A SQLite store has no leases, and says so.
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xiaoer"))
        .args(["status", "--data"])
        .arg(data.path())
        .env_remove("XIAOER_STORE")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("is a SQLite store: one daemon serves it")
    );
    store.close().await.unwrap();
}

/// The figures in docs/scaling.md, run by hand (a few minutes):
/// `cargo test --release --test cluster -- --ignored --nocapture takeover_figures`
/// (`XIAOER_BENCH_TTLS=2,5,10` and `XIAOER_BENCH_KILLS=20` choose the runs). Run it alone: the
/// database load is read from the whole database's transaction counters.
/// For each lease TTL: the database transactions per second three idle instances cost, and the
/// time from `kill -9` of the instance with the most shops to all 20 shops held again, over 20
/// kills (the killed instance is started again after each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: minutes long; its figures are in docs/scaling.md"]
async fn takeover_figures() {
    let kills: usize = std::env::var("XIAOER_BENCH_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let ttls: Vec<u64> = std::env::var("XIAOER_BENCH_TTLS")
        .ok()
        .map(|list| {
            list.split(',')
                .filter_map(|t| t.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![2, 5, 10]);
    for ttl_secs in ttls {
        let ttl = Duration::from_secs(ttl_secs);
        let Some(world) = World::new("takeover_figures", 20).await else {
            return;
        };
        let names = ["k1", "k2", "k3"];
        let mut instances: HashMap<&str, Instance> = names
            .iter()
            .map(|n| (*n, world.spawn_with(n, ttl)))
            .collect();
        assert!(world.gateway.wait_for_bots(3, WAIT).await);
        let mut leases = world.leases().await;
        let shared = |held: &HashMap<String, Vec<String>>| {
            held.values().map(Vec::len).sum::<usize>() == 20
                && names
                    .iter()
                    .all(|n| held.get(*n).is_some_and(|s| s.len() >= 6))
        };
        until(
            &mut leases,
            ttl * 3 + WAIT,
            "the shops are shared out",
            shared,
        )
        .await;
        let xacts = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()";
        let mut admin = world.leases().await;
        let before: i64 = admin.query_i64_for_test(xacts).await.unwrap();
        let idle = Duration::from_secs(10);
        tokio::time::sleep(idle).await;
        let after: i64 = admin.query_i64_for_test(xacts).await.unwrap();
        let per_second = (after - before) as f64 / idle.as_secs_f64();
        let mut times = Vec::new();
        for _ in 0..kills {
            let status = leases.status().await.unwrap();
            let held = holdings(&status);
            let victim = *names
                .iter()
                .max_by_key(|n| held.get(**n).map_or(0, Vec::len))
                .unwrap();
            let mut instance = instances.remove(victim).unwrap();
            instance.child.kill().unwrap();
            instance.child.wait().unwrap();
            let moved = until(&mut leases, ttl * 2 + WAIT, "the shops move", |held| {
                !held.contains_key(victim) && held.values().map(Vec::len).sum::<usize>() == 20
            })
            .await;
            times.push(moved);
            drop(instance);
            instances.insert(victim, world.spawn_with(victim, ttl));
            until(
                &mut leases,
                ttl * 3 + WAIT,
                "the restarted instance takes its share",
                shared,
            )
            .await;
        }
        times.sort();
        let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        eprintln!(
            "lease TTL {ttl_secs}s: idle database load {per_second:.1} transactions/s for 3 instances; \
             takeover over {} kills: min {:.2}s, median {:.2}s, p90 {:.2}s, max {:.2}s",
            times.len(),
            times[0].as_secs_f64(),
            pick(0.5).as_secs_f64(),
            pick(0.9).as_secs_f64(),
            times[times.len() - 1].as_secs_f64(),
        );
        for (_, instance) in instances.drain() {
            instance.stop();
        }
    }
}
