//! Routes commands to one worker per chat: in order within a chat, in parallel across chats, and
//! idle workers reaped so a shop with many buyers holds only the chats that are active.
//!
//! The dispatcher alone starts and stops workers, so there is never a second worker for a chat:
//! a worker is reaped only when nothing is queued for it and it is not handling anything (a
//! count of commands in flight, raised here before a command is queued and lowered by the worker
//! after it is done).
//!
//! Two limits keep an overloaded daemon's memory bounded and its recovery quick: a chat may have
//! [`CHAT_QUEUE`] commands waiting, and all chats together [`MAX_QUEUED`] buyer messages (about
//! a second of work). A message past either is set aside: recorded, counted in
//! `xiaoer_messages_set_aside_total`, logged (rate-limited), and not answered. Without the
//! shared limit, 1,000 chats could bank 64,000 messages, answered half a minute late and
//! crowding out everything sent after the load dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::worker::{ChatCommand, ChatMessage, CommandError, Outbox, Shared, Worker, WorkerError};
use crate::gateway::log_limit::{LogLimiter, Verdict};
use crate::model::{ConversationKey, Direction, Sender, TranscriptEntry};
use crate::store::{StoreError, now_ms};

/// Commands one chat may have waiting before more are set aside (a flooding chat must not
/// hold up the others).
pub const CHAT_QUEUE: usize = 64;

/// Which limit a set-aside message ran into.
#[derive(Clone, Copy)]
enum Overflow {
    /// Its chat's queue ([`CHAT_QUEUE`]).
    Chat,
    /// All chats' queues together ([`MAX_QUEUED`]).
    Daemon,
}

/// Commands queued for a chat or being handled, counted for the chat (its worker is reaped only
/// at zero) and for the daemon (the shared limit) in one step, so the two never disagree.
#[derive(Clone)]
struct InFlight {
    chat: Arc<AtomicUsize>,
    all: Arc<AtomicUsize>,
}

impl InFlight {
    fn raise(&self) {
        self.chat.fetch_add(1, Ordering::SeqCst);
        self.all.fetch_add(1, Ordering::SeqCst);
    }

    fn lower(&self) {
        self.chat.fetch_sub(1, Ordering::SeqCst);
        self.all.fetch_sub(1, Ordering::SeqCst);
    }

    fn idle(&self) -> bool {
        self.chat.load(Ordering::SeqCst) == 0
    }
}

struct WorkerHandle {
    /// Boxed: a channel allocates room for 32 commands up front, and a chat message is large;
    /// thousands of quiet chats would each hold kilobytes of empty slots.
    queue: mpsc::Sender<Box<ChatCommand>>,
    in_flight: InFlight,
    last_used: Instant,
}

/// Buyer messages all chats together may have queued or in hand before more are set aside.
pub const MAX_QUEUED: usize = 8192;

pub struct Dispatcher<O> {
    shared: Arc<Shared<O>>,
    workers: HashMap<ConversationKey, WorkerHandle>,
    /// Commands queued or being handled, over all chats.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    tracker: TaskTracker,
    idle_after: Duration,
    /// A flood sets aside one message after another: one warning per chat per minute, with
    /// the count of the ones not logged.
    flood_log: LogLimiter,
}

impl<O: Outbox> Dispatcher<O> {
    pub fn new(shared: Arc<Shared<O>>, tracker: TaskTracker, idle_after: Duration) -> Self {
        Dispatcher {
            shared,
            workers: HashMap::new(),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued: MAX_QUEUED,
            tracker,
            idle_after,
            flood_log: LogLimiter::new(Duration::from_secs(60)),
        }
    }

    /// The same dispatcher with a different shared limit on queued messages (tests).
    #[cfg(test)]
    fn with_max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = max_queued;
        self
    }

    /// How many chats have a live worker.
    pub fn active(&self) -> usize {
        self.workers.len()
    }

    /// Hands a gateway message to its chat's worker.
    pub fn dispatch(&mut self, message: ChatMessage) {
        let key = message.key.clone();
        self.send(key, ChatCommand::Message(message));
    }

    /// Hands `command` to the worker of chat `key`, starting one if needed. A chat whose queue
    /// is full has its message set aside (recorded, not answered) and its agent commands
    /// refused as busy.
    pub fn send(&mut self, key: ConversationKey, command: ChatCommand) {
        let now = Instant::now();
        // Agents' commands are few and a person waits on each; only buyers' messages are shed.
        if matches!(command, ChatCommand::Message(_))
            && self.queued.load(Ordering::SeqCst) >= self.max_queued
        {
            self.set_aside(command, Overflow::Daemon);
            return;
        }
        let mut command = Some(command);
        if let Some(handle) = self.workers.get_mut(&key) {
            handle.last_used = now;
            if let Some(pending) = command.take() {
                handle.in_flight.raise();
                match handle.queue.try_send(Box::new(pending)) {
                    Ok(()) => return,
                    Err(mpsc::error::TrySendError::Full(pending)) => {
                        handle.in_flight.lower();
                        self.set_aside(*pending, Overflow::Chat);
                        return;
                    }
                    // The worker ended (it panicked); start a new one below.
                    Err(mpsc::error::TrySendError::Closed(pending)) => {
                        handle.in_flight.lower();
                        command = Some(*pending);
                    }
                }
            }
        }
        let Some(command) = command else { return };
        let (queue, mut inbox) = mpsc::channel::<Box<ChatCommand>>(CHAT_QUEUE);
        let in_flight = InFlight {
            chat: Arc::new(AtomicUsize::new(0)),
            all: Arc::clone(&self.queued),
        };
        in_flight.raise();
        let mut worker = Worker::new(key.clone(), Arc::clone(&self.shared));
        let done = in_flight.clone();
        self.tracker.spawn(async move {
            while let Some(command) = inbox.recv().await {
                // Boxed, so a waiting worker's task holds the worker and not also the space
                // handling a message needs (kilobytes, in a task that lives as long as its chat).
                match Box::pin(worker.handle(*command)).await {
                    Ok(()) => {}
                    // The shop moved to another instance, which handles the message.
                    Err(
                        error @ WorkerError::NotStored {
                            source: StoreError::LeaseLost { .. },
                            ..
                        },
                    ) => info!(%error, "message left for the shop's new owner"),
                    Err(error) => warn!(%error, "message not handled"),
                }
                done.lower();
            }
        });
        if let Err(refused) = queue.try_send(Box::new(command)) {
            warn!(chat = %key, "new chat worker refused its first command");
            in_flight.lower();
            match refused {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => {
                    c.refuse(CommandError::Busy)
                }
            }
        }
        self.workers.insert(
            key,
            WorkerHandle {
                queue,
                in_flight,
                last_used: now,
            },
        );
    }

    /// More than a chat or the daemon can take: keep the message as evidence (not marked as
    /// seen, so a redelivery is still handled), refuse agent commands as busy.
    fn set_aside(&mut self, command: ChatCommand, overflow: Overflow) {
        let ChatCommand::Message(message) = command else {
            command.refuse(CommandError::Busy);
            return;
        };
        self.shared.metrics.message_set_aside(&message.key.self_id);
        let now = Instant::now();
        match overflow {
            Overflow::Chat => {
                let kind = format!("flooding {}", message.key);
                if let Verdict::Log { suppressed } = self.flood_log.check(&kind, now) {
                    warn!(chat = %message.key, message_id = %message.message_id, not_logged_since = suppressed, "chat is flooding; message recorded but not answered");
                }
            }
            Overflow::Daemon => {
                if let Verdict::Log { suppressed } = self.flood_log.check("overloaded", now) {
                    warn!(chat = %message.key, message_id = %message.message_id, queued = self.max_queued, not_logged_since = suppressed, "more buyer messages are waiting than xiaoer can answer soon; message recorded but not answered");
                }
            }
        }
        // A shop this instance no longer holds gets no line from it: the message waits in the
        // inbound backlog for the shop's owner.
        if let Some(leases) = &self.shared.leases
            && leases.fence(&message.key).is_none()
        {
            debug!(chat = %message.key, "set-aside message of a shop this instance does not hold; left to its owner");
            return;
        }
        let store = self.shared.store.clone();
        self.tracker.spawn(async move {
            let entry = TranscriptEntry {
                key: message.key,
                direction: if message.outgoing {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                },
                sender: if message.outgoing {
                    Sender::Shop
                } else {
                    Sender::Buyer
                },
                message_id: Some(message.message_id),
                text: message.text,
                parts: message.parts,
                delivery: None,
                at_ms: now_ms(),
            };
            if let Err(error) = store.append_transcript(entry).await {
                warn!(%error, "cannot record a set-aside message");
            }
        });
    }

    /// Stops the workers of chats idle for longer than the idle period that hold no work.
    pub fn reap_idle(&mut self) -> usize {
        let now = Instant::now();
        let before = self.workers.len();
        self.workers.retain(|_, handle| {
            now.duration_since(handle.last_used) < self.idle_after || !handle.in_flight.idle()
        });
        let reaped = before - self.workers.len();
        // A map keeps the room of its busiest hour; after a rush of 100,000 chats that room is
        // megabytes holding nothing.
        if self.workers.capacity() > 4 * self.workers.len() + 1024 {
            self.workers.shrink_to(2 * self.workers.len());
        }
        if reaped > 0 {
            debug!(
                reaped,
                active = self.workers.len(),
                "idle chat workers reaped"
            );
        }
        reaped
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use arc_swap::ArcSwap;

    use super::*;
    use crate::conversation::ConversationPolicy;
    use crate::conversation::worker::SendFailure;
    use crate::escalation::EscalationPolicy;
    use crate::reload::RuleBook;
    use crate::rules::{Layer, load};
    use crate::store::Store;

    struct NoOutbox;

    impl Outbox for NoOutbox {
        async fn send(&self, _: &ConversationKey, _: &str) -> Result<String, SendFailure> {
            Err(SendFailure {
                reason: "no gateway in this test".into(),
                maybe_delivered: false,
            })
        }
    }

    fn message(user: &str) -> ChatMessage {
        // A message from the shop account to itself: the worker drops it without I/O, so only the
        // dispatcher's bookkeeping is under test.
        ChatMessage {
            key: ConversationKey::new("dev", user, user),
            message_id: format!("m-{user}"),
            text: "你好".into(),
            parts: Vec::new(),
            outgoing: false,
        }
    }

    #[tokio::test]
    async fn idle_chat_workers_are_reaped_on_time() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path()).await.unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
        let rules = load(&[Layer::overlay(&root)]).unwrap().rules;
        let shared = Arc::new(Shared {
            store,
            outbox: NoOutbox,
            rules: Arc::new(ArcSwap::from_pointee(RuleBook::single(rules))),
            policy: ConversationPolicy::default(),
            escalation: EscalationPolicy::default(),
            shop_names: Default::default(),
            hours: Default::default(),
            clocks: Default::default(),
            events: tokio::sync::broadcast::channel(16).0,
            metrics: Default::default(),
            leases: None,
        });
        // Real I/O above; from here on, time only moves when the test says so.
        tokio::time::pause();
        let idle = Duration::from_secs(300);
        let mut dispatcher = Dispatcher::new(shared, TaskTracker::new(), idle);
        dispatcher.dispatch(message("a"));
        dispatcher.dispatch(message("b"));
        dispatcher.dispatch(message("a"));
        assert_eq!(dispatcher.active(), 2, "one worker per chat");

        tokio::time::advance(Duration::from_secs(200)).await;
        dispatcher.dispatch(message("b"));
        assert_eq!(dispatcher.reap_idle(), 0);

        tokio::time::advance(Duration::from_secs(101)).await;
        assert_eq!(
            dispatcher.reap_idle(),
            1,
            "only the chat idle for 301 s goes"
        );
        assert_eq!(dispatcher.active(), 1);

        tokio::time::advance(Duration::from_secs(200)).await;
        assert_eq!(dispatcher.reap_idle(), 1);
        assert_eq!(dispatcher.active(), 0);
        dispatcher.dispatch(message("a"));
        assert_eq!(
            dispatcher.active(),
            1,
            "a reaped chat starts again on its next message"
        );
    }
}

#[cfg(test)]
mod reaping {
    use std::path::Path;

    use arc_swap::ArcSwap;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::conversation::ConversationPolicy;
    use crate::conversation::worker::SendFailure;
    use crate::escalation::EscalationPolicy;
    use crate::reload::RuleBook;
    use crate::rules::{Layer, load};
    use crate::store::Store;

    /// A gateway that takes each send only when the test lets it.
    struct GatedOutbox {
        entered: Semaphore,
        release: Semaphore,
    }

    impl Outbox for Arc<GatedOutbox> {
        async fn send(&self, _: &ConversationKey, _: &str) -> Result<String, SendFailure> {
            self.entered.add_permits(1);
            match self.release.acquire().await {
                Ok(permit) => {
                    permit.forget();
                    Ok("sent".into())
                }
                Err(_) => Err(SendFailure {
                    reason: "closed".into(),
                    maybe_delivered: false,
                }),
            }
        }
    }

    /// A store in `data`, the fixture rules, and a gated gateway, shared by the workers.
    async fn gated(data: &Path) -> (Store, Arc<GatedOutbox>, Arc<Shared<Arc<GatedOutbox>>>) {
        gated_with(data, None).await
    }

    async fn gated_with(
        data: &Path,
        leases: Option<Arc<crate::cluster::Leases>>,
    ) -> (Store, Arc<GatedOutbox>, Arc<Shared<Arc<GatedOutbox>>>) {
        let store = Store::open(data).await.unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
        let rules = load(&[Layer::overlay(&root)]).unwrap().rules;
        let outbox = Arc::new(GatedOutbox {
            entered: Semaphore::new(0),
            release: Semaphore::new(0),
        });
        let shared = Arc::new(Shared {
            store: store.clone(),
            outbox: Arc::clone(&outbox),
            rules: Arc::new(ArcSwap::from_pointee(RuleBook::single(rules))),
            policy: ConversationPolicy::default(),
            escalation: EscalationPolicy::default(),
            shop_names: Default::default(),
            hours: Default::default(),
            clocks: Default::default(),
            events: tokio::sync::broadcast::channel(16).0,
            metrics: Default::default(),
            leases,
        });
        (store, outbox, shared)
    }

    #[tokio::test]
    async fn a_worker_busy_past_the_idle_period_is_not_reaped_and_never_doubled() {
        let data = tempfile::tempdir().unwrap();
        let (store, outbox, shared) = gated(data.path()).await;
        let idle = Duration::from_millis(20);
        let mut dispatcher = Dispatcher::new(shared, TaskTracker::new(), idle);
        let key = ConversationKey::new("dev", "shop1", "b1");
        dispatcher.dispatch(ChatMessage {
            key: key.clone(),
            message_id: "m1".into(),
            text: "什么时候发货".into(),
            parts: Vec::new(),
            outgoing: false,
        });
        // The worker is inside its first send (the greeting) and stays there.
        outbox.entered.acquire().await.unwrap().forget();
        tokio::time::sleep(idle * 3).await;
        assert_eq!(dispatcher.reap_idle(), 0, "a worker holding work stays");
        // A message for the chat goes to the same worker, behind the first.
        dispatcher.dispatch(ChatMessage {
            key: key.clone(),
            message_id: "m2".into(),
            text: "什么时候发货".into(),
            parts: Vec::new(),
            outgoing: false,
        });
        assert_eq!(dispatcher.active(), 1);
        // Greeting and answer of m1, answer of m2.
        outbox.release.add_permits(3);
        let lines = || async {
            store
                .transcript(&key, 10)
                .await
                .unwrap()
                .iter()
                .filter(|l| l.sender == crate::model::Sender::Bot)
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while lines().await < 3 || dispatcher.reap_idle() == 0 {
            assert!(Instant::now() < deadline, "the worker never finished");
            tokio::time::sleep(idle).await;
        }
        assert_eq!(dispatcher.active(), 0, "reaped once it held nothing");
        store.close().await.unwrap();
    }
    #[tokio::test]
    async fn a_flooding_chat_has_its_extra_messages_recorded_counted_and_not_answered() {
        let data = tempfile::tempdir().unwrap();
        let (store, outbox, shared) = gated(data.path()).await;
        let metrics = Arc::clone(&shared.metrics);
        let mut dispatcher = Dispatcher::new(shared, TaskTracker::new(), Duration::from_secs(300));
        let key = ConversationKey::new("dev", "shop1", "flood");
        let say = |n: usize| ChatMessage {
            key: key.clone(),
            message_id: format!("m{n}"),
            text: "什么时候发货".into(),
            parts: Vec::new(),
            outgoing: false,
        };
        dispatcher.dispatch(say(0));
        // The worker is stuck inside its first send; its queue takes CHAT_QUEUE more.
        outbox.entered.acquire().await.unwrap().forget();
        let extra = 10;
        for n in 1..=CHAT_QUEUE + extra {
            dispatcher.dispatch(say(n));
        }
        let line = "xiaoer_messages_set_aside_total{shop=\"shop1\"} 10";
        assert!(metrics.text().contains(line), "{}", metrics.text());
        // The ones set aside are kept as evidence.
        let kept = || async {
            store
                .transcript(&key, 500)
                .await
                .unwrap()
                .iter()
                .filter(|l| l.sender == crate::model::Sender::Buyer)
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while kept().await < 1 + extra {
            assert!(
                Instant::now() < deadline,
                "the set-aside messages were not recorded"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        outbox.release.close();
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_shop_this_instance_lost_gets_no_set_aside_lines_from_it() {
        let data = tempfile::tempdir().unwrap();
        let leases = Arc::new(crate::cluster::Leases::new(
            Some("a"),
            Duration::from_secs(30),
        ));
        leases.set_for_test("dev", "shop1", Some(1));
        let (store, outbox, shared) = gated_with(data.path(), Some(Arc::clone(&leases))).await;
        let metrics = Arc::clone(&shared.metrics);
        let tracker = TaskTracker::new();
        let mut dispatcher = Dispatcher::new(shared, tracker.clone(), Duration::from_secs(300));
        let key = ConversationKey::new("dev", "shop1", "flood");
        let say = |n: usize| ChatMessage {
            key: key.clone(),
            message_id: format!("m{n}"),
            text: "什么时候发货".into(),
            parts: Vec::new(),
            outgoing: false,
        };
        dispatcher.dispatch(say(0));
        outbox.entered.acquire().await.unwrap().forget();
        // The lease moves on while the chat floods.
        leases.set_for_test("dev", "shop1", None);
        for n in 1..=CHAT_QUEUE + 10 {
            dispatcher.dispatch(say(n));
        }
        let line = "xiaoer_messages_set_aside_total{shop=\"shop1\"} 10";
        assert!(metrics.text().contains(line), "{}", metrics.text());
        outbox.release.close();
        drop(dispatcher);
        tracker.close();
        tracker.wait().await;
        store.flush().await.unwrap();
        let buyer_lines = store
            .transcript(&key, 500)
            .await
            .unwrap()
            .iter()
            .filter(|l| l.sender == crate::model::Sender::Buyer)
            .count();
        assert_eq!(
            buyer_lines, 1,
            "only the message handled while the lease was held"
        );
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn past_the_daemon_wide_limit_messages_are_set_aside_until_the_backlog_drains() {
        let data = tempfile::tempdir().unwrap();
        let (store, outbox, shared) = gated(data.path()).await;
        let metrics = Arc::clone(&shared.metrics);
        let mut dispatcher = Dispatcher::new(shared, TaskTracker::new(), Duration::from_secs(300))
            .with_max_queued(3);
        let say = |user: &str| ChatMessage {
            key: ConversationKey::new("dev", "shop1", user),
            message_id: format!("m-{user}"),
            text: "什么时候发货".into(),
            parts: Vec::new(),
            outgoing: false,
        };
        // Three chats, each stuck sending its reply: the daemon holds as much as it may.
        for user in ["a", "b", "c"] {
            dispatcher.dispatch(say(user));
        }
        outbox.entered.acquire_many(3).await.unwrap().forget();
        dispatcher.dispatch(say("d"));
        dispatcher.dispatch(say("e"));
        let shed = "xiaoer_messages_set_aside_total{shop=\"shop1\"} 2";
        assert!(metrics.text().contains(shed), "{}", metrics.text());
        assert_eq!(dispatcher.active(), 3, "no worker for a message set aside");

        // Once the replies (a greeting and an answer each) go out, the backlog is gone and the
        // next chat is answered.
        outbox.release.add_permits(100);
        let deadline = Instant::now() + Duration::from_secs(10);
        while dispatcher.queued.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "the backlog never drained");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        dispatcher.dispatch(say("f"));
        outbox.entered.acquire().await.unwrap().forget();
        assert!(metrics.text().contains(shed), "{}", metrics.text());
        outbox.release.close();
        store.close().await.unwrap();
    }
}
