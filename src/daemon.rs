//! The responder daemon: gateways in, chat workers in the middle, store and replies out.
//!
//! [`run`] is what `xiaoer run` and `xiaoer demo` call and what the end-to-end tests start on a
//! port-0 gateway. Shutdown happens in phases: stop taking messages, let every chat finish what
//! it holds (replies still go out), flush the store, then close the gateway connections — all
//! within a deadline.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::conversation::dispatch::Dispatcher;
use crate::conversation::worker::{ChatMessage, Outbox, SendFailure, Shared};
use crate::gateway::{self, GatewayEvent, GatewayHandle};
use crate::reload::{LiveRules, RuleBook, RuleBookError, RuleSources, run_reloader};
use crate::rules::Layer;
use crate::store::{ConversationKey, Store, StoreError};

/// How long shutdown may take in all before the daemon exits anyway.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(4500);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot load the rules: {0}")]
    Rules(#[from] RuleBookError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
}

/// Signals from outside: SIGHUP reloads, SIGTERM/SIGINT cancel the token given to [`run`].
#[derive(Debug, Clone)]
pub struct Controls {
    pub reload: mpsc::Sender<()>,
}

/// Sends replies through the gateway that serves the chat's shop.
struct GatewayOutbox {
    gateways: Vec<GatewayHandle>,
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
        if !known {
            if let Ok(mut routes) = self.routes.write() {
                routes.insert(key, gateway);
            }
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
        let gateway = self
            .gateway_for(key)
            .ok_or_else(|| SendFailure("no gateway configured".into()))?;
        gateway
            .send_message(&key.platform, &key.self_id, &key.user_id, text)
            .await
            .map(|sent| sent.message_id)
            .map_err(|error| SendFailure(format!("gateway {}: {error}", gateway.name())))
    }
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

/// Runs the daemon until `shutdown` is cancelled.
///
/// # Errors
///
/// Only start-up failures (rules that do not load, a store that cannot be opened); once running,
/// bad input and lost connections are logged and survived.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    reload_requests: mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    let (rules, sources) = load_rules(&config)?;
    let store = Store::open(&config.data).await?;
    info!(
        data = %config.data.display(),
        rules = rules.load().shared().rules().len(),
        gateways = config.gateways.len(),
        "xiaoer started"
    );

    let connections = CancellationToken::new();
    let (events_tx, mut events) = mpsc::channel::<(usize, GatewayEvent)>(1024);
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
    let outbox = Arc::new(GatewayOutbox {
        gateways: gateways.clone(),
        routes: RwLock::new(HashMap::new()),
    });

    let shared = Arc::new(Shared {
        store: store.clone(),
        outbox: Arc::clone(&outbox),
        rules: Arc::clone(&rules),
        policy: config.conversation.clone(),
        escalation: config.escalation.clone(),
        shop_names: config
            .shops
            .iter()
            .filter_map(|s| s.name.clone().map(|name| (s.id.clone(), name)))
            .collect(),
    });
    let workers = TaskTracker::new();
    let mut dispatcher = Dispatcher::new(shared, workers.clone(), config.worker_idle());
    let reloader_cancel = CancellationToken::new();
    let reloader = tokio::spawn(run_reloader(
        Arc::clone(&rules),
        sources,
        config.watch,
        reload_requests,
        reloader_cancel.clone(),
    ));

    let mut reap = tokio::time::interval(config.worker_idle() / 2);
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = reap.tick() => { dispatcher.reap_idle(); }
            event = events.recv() => match event {
                None => break,
                Some((index, event)) => handle_event(index, event, &outbox, &mut dispatcher),
            }
        }
    }

    info!(
        active_chats = dispatcher.active(),
        "shutting down: finishing in-flight chats"
    );
    let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
    reloader_cancel.cancel();
    drop(events);
    // Dropping the dispatcher closes every chat queue; workers finish what they hold and end.
    drop(dispatcher);
    workers.close();
    if tokio::time::timeout_at(deadline - Duration::from_millis(1000), workers.wait())
        .await
        .is_err()
    {
        warn!("some chats were still busy at the shutdown deadline");
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
    info!("xiaoer stopped");
    Ok(())
}

fn handle_event(
    gateway: usize,
    event: GatewayEvent,
    outbox: &GatewayOutbox,
    dispatcher: &mut Dispatcher<Arc<GatewayOutbox>>,
) {
    match event {
        GatewayEvent::Connected { gateway: name } => info!(gateway = %name, "gateway connected"),
        GatewayEvent::Disconnected {
            gateway: name,
            reason,
        } => warn!(gateway = %name, %reason, "gateway disconnected; reconnecting"),
        GatewayEvent::Status {
            gateway: name,
            status,
        } => {
            for bot in &status.bots {
                outbox.learn(&bot.platform, &bot.self_id, gateway);
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
            dispatcher.dispatch(ChatMessage {
                key: ConversationKey::new(message.platform, message.self_id, message.user_id),
                message_id: message.message_id,
                text: message.text,
                outgoing: message.outgoing,
            });
        }
    }
}
