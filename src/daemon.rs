//! The responder daemon: gateways in, chat workers in the middle, store and replies out.
//!
//! [`start`] returns a [`Running`] handle that owns the store, the gateways, the chat workers,
//! the live rules and the broadcast of chat events; the console, `/metrics` and the tests mount
//! on it, and agents' commands reach a chat's worker through it. [`run`] (what `xiaoer run` and
//! `xiaoer demo` call) is `start` plus waiting for the shutdown signal. Shutdown happens in
//! phases: stop taking messages, let every chat finish what it holds (replies still go out),
//! flush the store, then close the gateway connections — all within a deadline.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::cluster::{Answering, Keeper, LeaseChange, Leases};
use crate::config::{Config, StoreLocation};
use crate::console::{Console, ConsoleSettings, ConsoleState};
use crate::conversation::commands::AgentAction;
use crate::conversation::dispatch::Dispatcher;
use crate::conversation::worker::{
    ChatCommand, ChatMessage, CommandError, Outbox, SendFailure, SentReply, Shared,
};
use crate::gateway::Card;
use crate::gateway::{self, GatewayEvent, GatewayHandle};
use crate::metrics::Metrics;
use crate::model::{ChatEvent, ConversationKey, Part};
use crate::reload::{LiveRules, Reloads, RuleBook, RuleBookError, RuleSources, run_reloader};
use crate::rules::Layer;
use crate::store::{SeenMessage, Store, StoreError};

/// How long shutdown may take in all before the daemon exits anyway.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(4500);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot load the rules: {0}")]
    Rules(#[from] RuleBookError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(
        "another xiaoer (pid {pid}) is already running on the store {} (two would answer the same buyers); stop it first",
        path.display()
    )]
    AlreadyRunning {
        path: std::path::PathBuf,
        pid: String,
    },
    #[error("cannot take the store's lock file {}: {}", path.display(), crate::store::explain_io(cause))]
    Lock {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot serve the console on {addr}: {source} (pick another with --console)")]
    Console {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve /metrics on {addr}: {source} (pick another with --metrics)")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Sends replies through the gateway that serves the chat's shop.
struct GatewayOutbox {
    gateways: Vec<GatewayHandle>,
    metrics: Arc<Metrics>,
    /// Which gateway (index) last delivered a message for a shop account.
    routes: RwLock<HashMap<(String, String), usize>>,
}

impl GatewayOutbox {
    fn learn(&self, platform: &str, self_id: &str, gateway: usize) {
        let key = (platform.to_string(), self_id.to_string());
        let known = self
            .routes
            .read()
            .map(|routes| routes.get(&key) == Some(&gateway))
            .unwrap_or(false);
        if !known && let Ok(mut routes) = self.routes.write() {
            routes.insert(key, gateway);
        }
    }

    fn gateway_for(&self, key: &ConversationKey) -> Option<&GatewayHandle> {
        let index = self
            .routes
            .read()
            .ok()
            .and_then(|routes| {
                routes
                    .get(&(key.platform.clone(), key.self_id.clone()))
                    .copied()
            })
            .unwrap_or(0);
        self.gateways.get(index)
    }
}

impl Outbox for GatewayOutbox {
    async fn send(&self, key: &ConversationKey, text: &str) -> Result<String, SendFailure> {
        let gateway = self.gateway_for(key).ok_or_else(|| SendFailure {
            reason: "no gateway configured".into(),
            maybe_delivered: false,
        })?;
        gateway
            .send_message(&key.platform, &key.self_id, &key.user_id, text)
            .await
            .map(|sent| sent.message_id)
            .map_err(|error| {
                self.metrics.send_failed(error.metric_label());
                SendFailure {
                    reason: format!("gateway {}: {error}", gateway.name()),
                    maybe_delivered: error.may_have_been_delivered(),
                }
            })
    }
}

/// Takes the store's lock file, so that a second daemon on the same data refuses to start
/// instead of answering the same buyers twice. The lock lasts as long as the returned file.
fn lock_store(db: &std::path::Path) -> Result<std::fs::File, DaemonError> {
    use std::io::{Read, Seek, Write};
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| {
            DaemonError::Store(StoreError::CreateDir {
                path: dir.to_owned(),
                cause: source,
            })
        })?;
    }
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let cannot = |cause: std::io::Error| DaemonError::Lock {
        path: lock_path.clone(),
        cause,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(cannot)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(DaemonError::AlreadyRunning {
                path: db.to_owned(),
                pid: holder.trim().to_owned(),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => return Err(cannot(source)),
    }
    file.set_len(0).map_err(cannot)?;
    file.rewind().map_err(cannot)?;
    write!(file, "{}", std::process::id()).map_err(cannot)?;
    Ok(file)
}

/// Loads the rules named by `config`.
///
/// # Errors
///
/// The first rule set (shared or a shop's) that does not load.
pub fn load_rules(config: &Config) -> Result<(LiveRules, RuleSources), DaemonError> {
    let sources = RuleSources {
        base: Layer::new(&config.rules, &config.replies),
        overlays: config
            .shops
            .iter()
            .filter_map(|shop| shop.overlay.clone().map(|dir| (shop.id.clone(), dir)))
            .collect(),
    };
    let book = RuleBook::load(&sources)?;
    Ok((Arc::new(ArcSwap::from_pointee(book)), sources))
}

/// A started daemon: owns the store, the gateways, the chat workers, the live rules and the
/// broadcast of chat events. The console, `/metrics` and the tests mount on it.
pub struct Running {
    handle: Handle,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    console_addr: Option<std::net::SocketAddr>,
    metrics_addr: Option<std::net::SocketAddr>,
}

/// What the console and other parts running beside the daemon use: the store, the chat events,
/// commands to chats, the rules. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    store: Store,
    events: broadcast::Sender<ChatEvent>,
    /// What the console shows: this instance's chat events and, when the store is shared,
    /// every other instance's too.
    feed: broadcast::Sender<ChatEvent>,
    commands: mpsc::Sender<(ConversationKey, ChatCommand)>,
    rules: LiveRules,
    reload: mpsc::Sender<()>,
    reloads: tokio::sync::watch::Receiver<Reloads>,
    gateways: Vec<GatewayHandle>,
    metrics: Arc<Metrics>,
}

impl std::ops::Deref for Running {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

/// How many chat events may wait for a slow listener before it misses some.
const EVENT_BUFFER: usize = 1024;

/// Starts the daemon: loads the rules, opens the store, connects to the gateways and starts
/// handling messages. Stop it with [`Running::stop`].
///
/// # Errors
///
/// Only start-up failures (rules that do not load, a store that cannot be opened); once running,
/// bad input and lost connections are logged and survived.
pub async fn start(config: Config) -> Result<Running, DaemonError> {
    let (rules, sources) = load_rules(&config)?;
    let location = config.store_location();
    let (store, store_lock, lease_db) = match &location {
        StoreLocation::Sqlite(path) => {
            let lock = lock_store(path)?;
            (Store::open_file(path).await?, Some(StoreLock(lock)), None)
        }
        // Several instances may share a PostgreSQL store; each answers the shops it leases.
        StoreLocation::Postgres(_) => {
            let store = Store::open_shared(&location, Some(config.cluster.lease_ttl)).await?;
            (store, None, Store::open_leases(&location).await?)
        }
    };
    info!(
        store = %location,
        rules = rules.load().shared().rules().len(),
        gateways = config.gateways.len(),
        "xiaoer started"
    );

    let connections = CancellationToken::new();
    let (events_tx, gateway_events) = mpsc::channel::<(usize, GatewayEvent)>(1024);
    let mut gateways = Vec::new();
    let forwarders = TaskTracker::new();
    for (index, settings) in config.gateways.iter().enumerate() {
        let (tx, mut rx) = mpsc::channel(256);
        gateways.push(gateway::spawn(
            settings.client_config(),
            tx,
            connections.clone(),
        ));
        let events_tx = events_tx.clone();
        forwarders.spawn(async move {
            while let Some(event) = rx.recv().await {
                if events_tx.send((index, event)).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(events_tx);
    let metrics = Arc::new(Metrics::new());
    store.record_metrics(Arc::clone(&metrics));
    let outbox = Arc::new(GatewayOutbox {
        gateways: gateways.clone(),
        metrics: Arc::clone(&metrics),
        routes: RwLock::new(HashMap::new()),
    });
    let (chat_events, _) = broadcast::channel(EVENT_BUFFER);
    let cluster_stop = CancellationToken::new();
    let cluster = lease_db.map(|db| {
        let leases = Arc::new(Leases::new(
            config.cluster.instance.as_deref(),
            config.cluster.lease_ttl,
        ));
        let (shops_tx, shops) = mpsc::unbounded_channel();
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let leave = CancellationToken::new();
        let keeper = tokio::spawn(crate::cluster::keeper(
            Keeper {
                leases: Arc::clone(&leases),
                db,
                shops,
                changes: changes_tx,
                store: store.clone(),
            },
            cluster_stop.clone(),
            leave.clone(),
        ));
        ClusterLoop {
            leases,
            answering: Answering::default(),
            shops: shops_tx,
            changes,
            leave,
            keeper,
        }
    });
    let outbox_turn = cluster.as_ref().map(|c| c.leases.works_outbox());
    let leases = cluster.as_ref().map(|c| Arc::clone(&c.leases));
    let shared = Arc::new(Shared {
        store: store.clone(),
        outbox: Arc::clone(&outbox),
        rules: Arc::clone(&rules),
        policy: config.conversation.clone(),
        escalation: config.escalation.clone(),
        shop_names: config.shop_names(),
        hours: config.shop_hours(),
        clocks: config.shop_clocks(),
        events: chat_events.clone(),
        metrics: Arc::clone(&metrics),
        leases: leases.clone(),
    });
    let workers = TaskTracker::new();
    let dispatcher = Dispatcher::new(shared, workers.clone(), config.worker_idle());
    let (reload, reload_requests) = mpsc::channel(4);
    let reloader_cancel = CancellationToken::new();
    let (reload_outcomes, reloads) = tokio::sync::watch::channel(Reloads::default());
    let reloader = tokio::spawn(run_reloader(
        Arc::clone(&rules),
        sources,
        config.watch,
        reload_requests,
        reloader_cancel.clone(),
        reload_outcomes,
    ));
    let (commands, command_rx) = mpsc::channel(1024);
    let shutdown = CancellationToken::new();
    let parts = Serving {
        store: store.clone(),
        outbox,
        dispatcher,
        workers,
        gateway_events,
        commands: command_rx,
        gateways: gateways.clone(),
        connections,
        forwarders,
        reloader,
        reloader_cancel,
        reap_every: config.worker_idle() / 2,
        console: None,
        store_lock,
        cluster,
        cluster_stop,
    };
    let feed = match &leases {
        None => chat_events.clone(),
        Some(leases) => {
            let (feed, _) = broadcast::channel(EVENT_BUFFER);
            tokio::spawn(crate::remote::share_events(
                store.clone(),
                Arc::clone(leases),
                chat_events.subscribe(),
                feed.clone(),
                shutdown.child_token(),
            ));
            feed
        }
    };
    let handle = Handle {
        store,
        events: chat_events,
        feed,
        commands,
        rules,
        reload,
        reloads,
        gateways,
        metrics,
    };
    let console = match config.console.listen {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Console { addr, source })?;
            let stop = CancellationToken::new();
            let state = ConsoleState::new(
                handle.clone(),
                ConsoleSettings {
                    clocks: config.shop_clocks(),
                    ..config.console.clone()
                },
                config.shop_names(),
                stop.clone(),
            );
            let server = Console::serve(listener, state, stop.clone());
            let console_addr = server.addr();
            let timers = tokio::spawn(console_timers(
                handle.clone(),
                config.console.clone(),
                stop.clone(),
            ));
            Some((server, stop, timers, console_addr))
        }
    };
    let console_addr = console.as_ref().map(|(_, _, _, addr)| *addr);
    let console_url = config
        .console
        .public_url
        .clone()
        .or_else(|| console_addr.map(|addr| format!("http://{addr}")));
    tokio::spawn(crate::notify::outbox::run(
        handle.store.clone(),
        crate::notify::outbox::DelivererSettings {
            targets: config.notify.clone(),
            retry: config.notify_retry,
            shop_names: config.shop_names(),
            console_url,
            console: config.console.clone(),
            clocks: config.shop_clocks(),
            works_here: outbox_turn,
        },
        Arc::clone(&handle.metrics),
        handle.events.subscribe(),
        shutdown.child_token(),
    ));
    if let Some(leases) = &leases {
        tokio::spawn(crate::remote::run(
            handle.clone(),
            Arc::clone(leases),
            shutdown.child_token(),
        ));
    }
    let metrics_addr = match config.metrics_listen {
        None => None,
        Some(addr) => Some(serve_metrics(addr, handle.clone(), shutdown.clone()).await?),
    };
    let parts = Serving {
        console: console.map(|(server, stop, timers, _)| (server, stop, timers)),
        ..parts
    };
    let task = tokio::spawn(serve(parts, shutdown.clone()));
    Ok(Running {
        handle,
        shutdown,
        task,
        console_addr,
        metrics_addr,
    })
}

/// Serves `/metrics`, `/healthz` and `/readyz` on a listener of their own until `shutdown`.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    handle: Handle,
    shutdown: CancellationToken,
) -> Result<std::net::SocketAddr, DaemonError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Metrics { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tokio::spawn(async move {
        let served = axum::serve(listener, crate::metrics::router(handle))
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "/metrics stopped serving");
        }
    });
    info!(addr = %bound, "metrics listening");
    Ok(bound)
}

/// How often claimed chats are checked for lapsed leases and sessions for expiry.
const CONSOLE_TICK: Duration = Duration::from_secs(30);

/// The console's clocks: leases that lapse and sessions that expire.
async fn console_timers(handle: Handle, settings: ConsoleSettings, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CONSOLE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = crate::store::now_ms();
        handle.expire_leases(settings.lease, now).await;
        let oldest = now
            .saturating_sub(i64::try_from(settings.session_idle.as_millis()).unwrap_or(i64::MAX));
        if let Err(error) = handle
            .store()
            .account(crate::store::AccountOp::ExpireSessions { before_ms: oldest })
            .await
        {
            warn!(%error, "cannot end expired console sessions");
        }
    }
}

impl Running {
    /// Where the console listens, when it is on.
    pub fn console_addr(&self) -> Option<std::net::SocketAddr> {
        self.console_addr
    }

    /// Where `/metrics` is served on its own, when `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// A handle for parts that run beside the daemon.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// A token that stops the daemon when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops taking messages, lets every chat finish what it holds, flushes the store and closes
    /// the gateway connections, within [`SHUTDOWN_DEADLINE`].
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the daemon has stopped (after its shutdown token was cancelled).
    pub async fn wait(self) {
        if let Err(error) = self.task.await {
            warn!(%error, "the daemon's main task failed");
        }
    }
}

impl Handle {
    /// Puts back in their queues the claimed chats whose holder did nothing in them for
    /// `lease` (measured from the claim or the agent's last message, whichever is later), as of
    /// `now_ms`. Returns how many went back.
    pub async fn expire_leases(&self, lease: Duration, now_ms: i64) -> usize {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let escalations = match self.store.open_escalations().await {
            Ok(escalations) => escalations,
            Err(error) => {
                warn!(%error, "cannot look for lapsed leases");
                return 0;
            }
        };
        let mut expired = 0;
        for escalation in escalations {
            if escalation.state != crate::model::EscalationState::Claimed {
                continue;
            }
            let last_staff = match self.store.conversation(&escalation.key).await {
                Ok(conversation) => conversation.and_then(|c| c.last_staff_ms),
                Err(_) => None,
            };
            let active = [escalation.claimed_ms, last_staff]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(escalation.created_ms);
            if now_ms.saturating_sub(active) < lease_ms {
                continue;
            }
            match self.act(escalation.id, AgentAction::LeaseExpired).await {
                Ok(()) => expired += 1,
                Err(error) => {
                    debug!(escalation = escalation.id, %error, "lease not expired")
                }
            }
        }
        expired
    }

    /// The store the daemon writes to (reads see everything committed).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Chat events from now on, each announced after its commit: this instance's and, when
    /// several instances share the store, theirs too (a moment later).
    pub fn subscribe(&self) -> broadcast::Receiver<ChatEvent> {
        self.feed.subscribe()
    }

    /// The live rule book.
    pub fn rules(&self) -> &LiveRules {
        &self.rules
    }

    /// Asks for a reload of the rule and reply files (as SIGHUP does).
    pub fn reload(&self) {
        let _ = self.reload.try_send(());
    }

    /// How many reloads succeeded and failed so far; changes after each attempt.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<Reloads> {
        self.reloads.clone()
    }

    /// The daemon's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// How many gateways are connected right now.
    pub fn gateways_connected(&self) -> usize {
        self.gateways.iter().filter(|g| g.is_connected()).count()
    }

    /// Hands `command` to the worker of chat `key`.
    ///
    /// # Errors
    ///
    /// [`CommandError::Stopped`] when the daemon is shutting down.
    pub async fn command(
        &self,
        key: ConversationKey,
        command: ChatCommand,
    ) -> Result<(), CommandError> {
        self.commands
            .send((key, command))
            .await
            .map_err(|_| CommandError::Stopped)
    }

    /// An agent's reply to the buyer of chat `key`, through the chat's worker and gateway.
    ///
    /// # Errors
    ///
    /// See [`CommandError`]: the agent does not hold the chat, the store failed, the gateway did
    /// not (or may not have) delivered it.
    pub async fn agent_reply(
        &self,
        key: ConversationKey,
        agent: &str,
        text: &str,
    ) -> Result<SentReply, CommandError> {
        let (done, answer) = oneshot::channel();
        let command = ChatCommand::AgentReply {
            agent: agent.to_owned(),
            text: text.to_owned(),
            done,
        };
        self.command(key, command).await?;
        answer.await.map_err(|_| CommandError::Stopped)?
    }

    /// An agent's action on escalation `id`, carried out by its chat's worker.
    ///
    /// # Errors
    ///
    /// See [`CommandError`].
    pub async fn act(&self, id: i64, action: AgentAction) -> Result<(), CommandError> {
        let escalation = self
            .store
            .escalation(id)
            .await?
            .ok_or(CommandError::NoEscalation)?;
        let (done, answer) = oneshot::channel();
        let command = ChatCommand::Act {
            escalation: id,
            action,
            done,
        };
        self.command(escalation.key, command).await?;
        answer.await.map_err(|_| CommandError::Stopped)?
    }
}

/// Runs the daemon until `shutdown` is cancelled: [`start`], then [`Running::stop`].
///
/// # Errors
///
/// See [`start`].
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    mut reload_requests: mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    let running = start(config).await?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            request = reload_requests.recv() => match request {
                Some(()) => running.reload(),
                None => {
                    shutdown.cancelled().await;
                    break;
                }
            },
        }
    }
    running.stop().await;
    Ok(())
}

/// What the main loop owns.
struct Serving {
    store: Store,
    outbox: Arc<GatewayOutbox>,
    dispatcher: Dispatcher<Arc<GatewayOutbox>>,
    workers: TaskTracker,
    gateway_events: mpsc::Receiver<(usize, GatewayEvent)>,
    commands: mpsc::Receiver<(ConversationKey, ChatCommand)>,
    gateways: Vec<GatewayHandle>,
    connections: CancellationToken,
    forwarders: TaskTracker,
    reloader: JoinHandle<()>,
    reloader_cancel: CancellationToken,
    reap_every: Duration,
    /// The console server, its stop token and its timers.
    console: Option<(Console, CancellationToken, JoinHandle<()>)>,
    /// Held until the store is closed.
    store_lock: Option<StoreLock>,
    /// The shop leases, when the store is shared with other instances.
    cluster: Option<ClusterLoop>,
    /// Stops the lease keeper from taking or renewing (shutdown).
    cluster_stop: CancellationToken,
}

/// The lock file beside a SQLite database, which keeps a second daemon off the store while
/// this one runs.
struct StoreLock(
    #[allow(
        dead_code,
        reason = "held, never read: the lock lasts while the file is open"
    )]
    std::fs::File,
);

/// What the main loop keeps of the shop leases.
struct ClusterLoop {
    leases: Arc<Leases>,
    /// The shops whose messages go to chat workers here; the others are only recorded.
    answering: Answering,
    /// New shop accounts, for the keeper.
    shops: mpsc::UnboundedSender<crate::cluster::Shop>,
    changes: mpsc::UnboundedReceiver<LeaseChange>,
    /// Lets the keeper give the leases back, once the workers are done.
    leave: CancellationToken,
    keeper: JoinHandle<()>,
}

impl ClusterLoop {
    /// Notes a shop account the gateway showed; the keeper hears of each once.
    fn saw_shop(&mut self, platform: &str, self_id: &str) {
        if self.answering.first_sight(platform, self_id) {
            let _ = self.shops.send((platform.to_owned(), self_id.to_owned()));
        }
    }
}

/// Takes on the shops just leased: first what the backlog holds for them that nobody handled,
/// oldest first, then (as the main loop goes on) their new messages. Everything this instance
/// recorded before is flushed first, so the backlog read sees it.
async fn take_on(
    shops: Vec<crate::cluster::Shop>,
    store: &Store,
    dispatcher: &mut Dispatcher<Arc<GatewayOutbox>>,
) {
    if shops.is_empty() {
        return;
    }
    if let Err(error) = store.flush().await {
        warn!(%error, "cannot flush the store before reading the backlog of newly taken shops");
    }
    let taken_ms = crate::store::now_ms();
    for (platform, self_id) in shops {
        match store.mark_left_unsent(&platform, &self_id, taken_ms).await {
            Ok(0) => {}
            Ok(count) => {
                warn!(platform = %platform, shop = %self_id, replies = count, "the shop's last owner recorded replies it may not have sent (it stopped between recording and sending); they are marked \"may not have reached the buyer\" in the transcript, not sent again");
            }
            Err(error) => {
                warn!(%error, platform = %platform, shop = %self_id, "cannot mark the replies the shop's last owner left unsent");
            }
        }
        match store.unhandled(&platform, &self_id).await {
            Ok(backlog) => {
                if !backlog.is_empty() {
                    info!(platform = %platform, shop = %self_id, messages = backlog.len(), "handling what the shop's last owner left unhandled");
                }
                for seen in backlog {
                    dispatcher.dispatch(ChatMessage {
                        key: seen.key,
                        message_id: seen.message_id,
                        text: seen.text,
                        parts: seen.parts,
                        outgoing: false,
                    });
                }
            }
            Err(error) => {
                warn!(%error, platform = %platform, shop = %self_id, "cannot read the shop's unhandled backlog; its messages from before the takeover wait for a redelivery");
            }
        }
    }
}

async fn serve(parts: Serving, shutdown: CancellationToken) {
    let Serving {
        store,
        outbox,
        mut dispatcher,
        workers,
        mut gateway_events,
        mut commands,
        gateways,
        connections,
        forwarders,
        reloader,
        reloader_cancel,
        reap_every,
        console,
        store_lock,
        mut cluster,
        cluster_stop,
    } = parts;
    let mut reap = tokio::time::interval(reap_every);
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = reap.tick() => { dispatcher.reap_idle(); }
            change = async {
                match cluster.as_mut() {
                    Some(cluster) => cluster.changes.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let (Some(change), Some(cluster)) = (change, cluster.as_mut()) {
                    let taken = cluster.answering.apply(change);
                    take_on(taken, &store, &mut dispatcher).await;
                }
            }
            command = commands.recv() => {
                if let Some((key, command)) = command {
                    match &cluster {
                        // Another instance answers the shop: it carries the command out.
                        Some(cluster) if !cluster.answering.answers(&key.platform, &key.self_id) => {
                            tokio::spawn(crate::remote::forward(
                                store.clone(),
                                Arc::clone(&cluster.leases),
                                key,
                                command,
                            ));
                        }
                        _ => dispatcher.send(key, command),
                    }
                }
            }
            event = gateway_events.recv() => match event {
                None => break,
                Some((index, event)) => {
                    handle_event(index, event, &outbox, &mut dispatcher, &store, cluster.as_mut()).await;
                }
            }
        }
    }
    cluster_stop.cancel();

    info!(
        active_chats = dispatcher.active(),
        "shutting down: finishing in-flight chats"
    );
    let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
    if let Some((server, stop, timers)) = console {
        // Agents' requests stop first; what they started still finishes below.
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            server.join().await;
            let _ = timers.await;
        })
        .await;
    }
    reloader_cancel.cancel();
    drop(gateway_events);
    commands.close();
    while let Ok((_, command)) = commands.try_recv() {
        command.refuse(CommandError::Stopped);
    }
    // Dropping the dispatcher closes every chat queue; workers finish what they hold and end.
    drop(dispatcher);
    workers.close();
    if tokio::time::timeout_at(deadline - Duration::from_millis(1000), workers.wait())
        .await
        .is_err()
    {
        warn!("some chats were still busy at the shutdown deadline");
    }
    if let Some(cluster) = cluster {
        // The workers are done: what they committed is sent, so the shops may go.
        cluster.leave.cancel();
        if tokio::time::timeout_at(deadline - Duration::from_millis(500), cluster.keeper)
            .await
            .is_err()
        {
            warn!(
                "the shop leases were not given back in time; other instances take them when they lapse"
            );
        }
    }
    if let Err(error) = store.close().await {
        warn!(%error, "store did not close cleanly");
    }
    connections.cancel();
    let _ = tokio::time::timeout_at(deadline, async {
        for gateway in &gateways {
            gateway.join().await;
        }
        forwarders.close();
        forwarders.wait().await;
        let _ = reloader.await;
    })
    .await;
    drop(store_lock);
    info!("xiaoer stopped");
}

async fn handle_event(
    gateway: usize,
    event: GatewayEvent,
    outbox: &GatewayOutbox,
    dispatcher: &mut Dispatcher<Arc<GatewayOutbox>>,
    store: &Store,
    mut cluster: Option<&mut ClusterLoop>,
) {
    match event {
        GatewayEvent::Connected { gateway: name } => {
            outbox.metrics.gateway_up(&name, true);
            info!(gateway = %name, "gateway connected");
        }
        GatewayEvent::Disconnected {
            gateway: name,
            reason,
        } => {
            outbox.metrics.gateway_up(&name, false);
            warn!(gateway = %name, %reason, "gateway disconnected; reconnecting");
        }
        GatewayEvent::Status {
            gateway: name,
            status,
        } => {
            for bot in &status.bots {
                outbox.learn(&bot.platform, &bot.self_id, gateway);
                if let Some(cluster) = cluster.as_deref_mut() {
                    cluster.saw_shop(&bot.platform, &bot.self_id);
                }
                info!(gateway = %name, platform = %bot.platform, shop = %bot.self_id, online = bot.online, "shop account status");
            }
        }
        GatewayEvent::Message(message) => {
            outbox.learn(&message.platform, &message.self_id, gateway);
            if message.message_id.is_empty() {
                warn!(user = %message.user_id, "message without message_id skipped");
                return;
            }
            debug!(user = %message.user_id, outgoing = message.outgoing, "message");
            let chat = ChatMessage {
                key: ConversationKey::new(message.platform, message.self_id, message.user_id),
                message_id: message.message_id,
                text: message.text,
                parts: message.cards.iter().map(part_of).collect(),
                outgoing: message.outgoing,
            };
            if let Some(cluster) = cluster {
                let key = &chat.key;
                cluster.saw_shop(&key.platform, &key.self_id);
                // Every buyer message goes into the backlog, answered here or not, so that the
                // next owner of the shop finds what this one could not finish. The shop's own
                // messages are not replayed: a takeover must not mistake them for a person.
                if !chat.outgoing
                    && let Err(error) = store
                        .record_seen(SeenMessage {
                            key: key.clone(),
                            message_id: chat.message_id.clone(),
                            text: chat.text.clone(),
                            parts: chat.parts.clone(),
                            received_ms: crate::store::now_ms(),
                            received_by: cluster.leases.instance().into(),
                        })
                        .await
                {
                    warn!(%error, chat = %key, "cannot record a message in the inbound backlog");
                }
                if !cluster.answering.answers(&key.platform, &key.self_id) {
                    debug!(chat = %key, "another instance answers this shop; message recorded only");
                    return;
                }
            }
            dispatcher.dispatch(chat);
        }
    }
}

/// A gateway card as the conversation records it.
fn part_of(card: &Card) -> Part {
    match card {
        Card::Item { item_id, title } => Part::Item {
            item_id: item_id.clone(),
            title: title.clone(),
        },
        Card::Order { order_id, status } => Part::Order {
            order_id: order_id.clone(),
            status: status.clone(),
        },
        Card::Image { file_id } => Part::Image {
            file_id: file_id.clone(),
        },
        Card::Voice { file_id } => Part::Media {
            kind: "voice".into(),
            file_id: file_id.clone(),
        },
        Card::Audio { file_id } => Part::Media {
            kind: "audio".into(),
            file_id: file_id.clone(),
        },
        Card::Video { file_id } => Part::Media {
            kind: "video".into(),
            file_id: file_id.clone(),
        },
        Card::File { file_id, name } => Part::File {
            file_id: file_id.clone(),
            name: name.clone().unwrap_or_default(),
        },
        Card::Location { .. } => Part::Other {
            kind: "location".into(),
        },
        Card::Reply { message_id } => Part::Other {
            kind: format!("reply {message_id}"),
        },
        Card::Other { kind } => Part::Other { kind: kind.clone() },
    }
}
