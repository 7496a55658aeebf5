//! What `/metrics` shows: one [`Metrics`] per daemon, a Prometheus registry (the
//! `prometheus-client` crate, the Prometheus project's own Rust client) with the counters,
//! gauges and histograms the parts of xiaoer record into, and the small HTTP router that serves
//! it with `/healthz` and `/readyz` — on the console's listener and, with `[metrics] listen`, on
//! its own.
//!
//! No metric carries buyer text or buyer ids: labels are shops, queues, topics, rule ids,
//! gateways, targets and retcodes, all of them bounded by the configuration and the rule files.
//! Gauges about the store (queue depth, oldest wait, dead letters) are read from it when scraped,
//! so they are right after a restart and across processes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::daemon::Handle;
use crate::model::{EscalationState, Queue};
use crate::reload::Reloads;
use crate::routing::Decided;
use crate::store::now_ms;

/// The content type of the text the registry writes (OpenMetrics text, which Prometheus reads).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShopLabel {
    shop: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SentLabels {
    shop: String,
    /// `bot` or `agent`.
    sender: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    action: String,
    topic: String,
    /// Empty when no rule decided.
    rule: String,
    /// `rule`, `model` or `none`.
    by: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponderLabel {
    /// `bot` or `human`.
    responder: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayLabel {
    gateway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetcodeLabel {
    /// The gateway's retcode, or what happened instead (`timeout`, `not_connected`, …).
    retcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    target: String,
    /// `delivered`, `retry` or `dead`.
    result: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … about 9 hours: bot answers take milliseconds, people minutes.
    Histogram::new(exponential_buckets(0.001, 2.0, 25))
}

fn wait_histogram() -> Histogram {
    // 1 s … about 9 hours.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// Every metric of one daemon.
pub struct Metrics {
    registry: Registry,
    received: Family<ShopLabel, Counter>,
    sent: Family<SentLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    first_response: Histograms<ResponderLabel>,
    escalations: Family<QueueLabel, Counter>,
    time_to_claim: Histograms<QueueLabel>,
    queue_depth: Family<QueueLabel, Gauge>,
    oldest_wait: Family<QueueLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    sla_breaches: Family<QueueLabel, Counter>,
    clock_breaches: Family<ShopLabel, Counter>,
    set_aside: Family<ShopLabel, Counter>,
    gateway_connected: Family<GatewayLabel, Gauge>,
    reconnects: Family<GatewayLabel, Counter>,
    send_failures: Family<RetcodeLabel, Counter>,
    commit_seconds: Histogram,
    batch_size: Histogram,
    store_writable: Gauge,
    reloads: Family<ResultLabel, Counter>,
    /// The reloader's counts at the last scrape.
    reloads_seen: std::sync::Mutex<Reloads>,
    notifications: Family<DeliveryLabels, Counter>,
    dead_letters: Gauge,
    notifications_pending: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("xiaoer");
        let received = Family::default();
        registry.register(
            "messages_received",
            "Buyer messages received, by shop account",
            received.clone(),
        );
        let sent = Family::default();
        registry.register(
            "messages_sent",
            "Messages sent to buyers, by shop account and sender (bot or agent)",
            sent.clone(),
        );
        let decisions = Family::default();
        registry.register(
            "decisions",
            "Routing decisions, by action, topic, rule and what decided (rule, model, none)",
            decisions.clone(),
        );
        let first_response: Histograms<ResponderLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "first_response_seconds",
            "Time to the first reply: the bot's after a buyer message, a person's after an escalation",
            first_response.clone(),
        );
        let escalations = Family::default();
        registry.register(
            "escalations",
            "Chats handed to a human queue, by queue",
            escalations.clone(),
        );
        let time_to_claim: Histograms<QueueLabel> = Family::new_with_constructor(wait_histogram);
        registry.register(
            "time_to_claim_seconds",
            "Time from an escalation to an agent claiming it, by queue",
            time_to_claim.clone(),
        );
        let queue_depth = Family::default();
        registry.register(
            "queue_depth",
            "Escalations waiting for an agent (not claimed), by queue",
            queue_depth.clone(),
        );
        let oldest_wait = Family::default();
        registry.register(
            "queue_oldest_wait_seconds",
            "How long the longest-waiting unclaimed escalation has waited, by queue",
            oldest_wait.clone(),
        );
        let sla_breaches = Family::default();
        registry.register(
            "sla_breaches",
            "Escalations that waited past their queue's target without being claimed",
            sla_breaches.clone(),
        );
        let set_aside = Family::default();
        registry.register(
            "messages_set_aside",
            "Buyer messages recorded but not answered because their chat had too many waiting (a flood, or the daemon falling behind), by shop account",
            set_aside.clone(),
        );
        let clock_breaches = Family::default();
        registry.register(
            "response_clock_breaches",
            "Buyer waits that went past the platform's response budget, by shop account",
            clock_breaches.clone(),
        );
        let gateway_connected = Family::default();
        registry.register(
            "gateway_connected",
            "1 while the gateway connection is up",
            gateway_connected.clone(),
        );
        let reconnects = Family::default();
        registry.register(
            "gateway_reconnects",
            "Gateway connections lost (each is followed by a reconnect)",
            reconnects.clone(),
        );
        let send_failures = Family::default();
        registry.register(
            "send_failures",
            "Messages the gateway did not take, by retcode",
            send_failures.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "store_commit_seconds",
            "Time to commit one batch of writes",
            commit_seconds.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "store_batch_size",
            "Writes committed together in one transaction",
            batch_size.clone(),
        );
        let store_writable = Gauge::default();
        registry.register(
            "store_writable",
            "1 while the store takes writes",
            store_writable.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "reloads",
            "Rule and reply reloads, by result (ok or failed)",
            reloads.clone(),
        );
        let notifications = Family::default();
        registry.register(
            "notification_deliveries",
            "Notification delivery attempts, by target and result (delivered, retry, dead)",
            notifications.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "notification_dead_letters",
            "Notifications given up on and not retried since",
            dead_letters.clone(),
        );
        let notifications_pending = Gauge::default();
        registry.register(
            "notifications_pending",
            "Notifications waiting for delivery",
            notifications_pending.clone(),
        );
        Metrics {
            registry,
            received,
            sent,
            decisions,
            first_response,
            escalations,
            time_to_claim,
            queue_depth,
            oldest_wait,
            sla_breaches,
            clock_breaches,
            set_aside,
            gateway_connected,
            reconnects,
            send_failures,
            commit_seconds,
            batch_size,
            store_writable,
            reloads,
            reloads_seen: std::sync::Mutex::new(Reloads::default()),
            notifications,
            dead_letters,
            notifications_pending,
        }
    }

    /// A buyer message recorded but not answered: its chat's queue was full.
    pub fn message_set_aside(&self, shop: &str) {
        self.set_aside
            .get_or_create(&ShopLabel {
                shop: shop.to_owned(),
            })
            .inc();
    }

    pub fn message_received(&self, shop: &str) {
        self.received
            .get_or_create(&ShopLabel {
                shop: shop.to_owned(),
            })
            .inc();
    }

    /// A message the gateway took; `agent` when a person wrote it.
    pub fn message_sent(&self, shop: &str, agent: bool) {
        self.sent
            .get_or_create(&SentLabels {
                shop: shop.to_owned(),
                sender: if agent { "agent" } else { "bot" }.to_owned(),
            })
            .inc();
    }

    pub fn decision(&self, decided: &Decided) {
        self.decisions
            .get_or_create(&DecisionLabels {
                action: decided.kind.as_str().to_owned(),
                topic: decided.topic_name().to_owned(),
                rule: decided.rule.clone().unwrap_or_default(),
                by: decided.by.as_str().to_owned(),
            })
            .inc();
    }

    pub fn bot_first_response(&self, took: Duration) {
        self.first_response
            .get_or_create(&ResponderLabel {
                responder: "bot".to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn human_first_response(&self, took: Duration) {
        self.first_response
            .get_or_create(&ResponderLabel {
                responder: "human".to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn escalated(&self, queue: Queue) {
        self.escalations.get_or_create(&queue_label(queue)).inc();
    }

    pub fn claimed(&self, queue: Queue, waited: Duration) {
        self.time_to_claim
            .get_or_create(&queue_label(queue))
            .observe(waited.as_secs_f64());
    }

    pub fn sla_breach(&self, queue: Queue) {
        self.sla_breaches.get_or_create(&queue_label(queue)).inc();
    }

    pub fn clock_breach(&self, shop: &str) {
        self.clock_breaches
            .get_or_create(&ShopLabel {
                shop: shop.to_owned(),
            })
            .inc();
    }

    pub fn gateway_up(&self, gateway: &str, up: bool) {
        let label = GatewayLabel {
            gateway: gateway.to_owned(),
        };
        self.gateway_connected
            .get_or_create(&label)
            .set(i64::from(up));
        if !up {
            self.reconnects.get_or_create(&label).inc();
        }
    }

    /// A send the gateway refused or that got no answer: its retcode, or what happened
    /// instead (`timeout`, `not_connected`, …).
    pub fn send_failed(&self, retcode: String) {
        self.send_failures
            .get_or_create(&RetcodeLabel { retcode })
            .inc();
    }

    /// A committed batch of `writes` that took `took`.
    pub fn committed(&self, writes: usize, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.batch_size.observe(writes as f64);
    }

    /// Brings the reload counters up to the reloader's own counts.
    fn catch_up_reloads(&self, now: Reloads) {
        let mut seen = self
            .reloads_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (result, count, before) in [
            ("ok", now.succeeded, seen.succeeded),
            ("failed", now.failed, seen.failed),
        ] {
            self.reloads
                .get_or_create(&ResultLabel {
                    result: result.to_owned(),
                })
                .inc_by(count.saturating_sub(before));
        }
        *seen = now;
    }

    /// One delivery attempt of a notification to `target`: `delivered`, `retry` or `dead`.
    pub fn notification(&self, target: &str, result: &str) {
        self.notifications
            .get_or_create(&DeliveryLabels {
                target: target.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// The registry as OpenMetrics text, after reading the gauges that live in the store.
    pub async fn render(&self, handle: &Handle) -> String {
        self.catch_up_reloads(*handle.reloads().borrow());
        let store = handle.store();
        self.store_writable
            .set(i64::from(store.write_failure().is_none()));
        match store.open_escalations().await {
            Ok(open) => {
                let now = now_ms();
                for &queue in Queue::ALL {
                    let waiting: Vec<i64> = open
                        .iter()
                        .filter(|e| e.queue == queue && e.state == EscalationState::Open)
                        .map(|e| now.saturating_sub(e.created_ms))
                        .collect();
                    self.queue_depth
                        .get_or_create(&queue_label(queue))
                        .set(waiting.len() as i64);
                    let oldest = waiting.iter().copied().max().unwrap_or(0);
                    self.oldest_wait
                        .get_or_create(&queue_label(queue))
                        .set(oldest as f64 / 1000.0);
                }
            }
            Err(error) => tracing::warn!(%error, "metrics: cannot read the queues"),
        }
        match store.outbox_counts().await {
            Ok(counts) => {
                self.dead_letters.set(counts.dead);
                self.notifications_pending
                    .set(counts.pending + counts.unplanned);
            }
            Err(error) => tracing::warn!(%error, "metrics: cannot read the notification outbox"),
        }
        self.text()
    }

    /// The registry as OpenMetrics text, as it stands (no store gauges read).
    pub(crate) fn text(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "metrics could not be written");
            let _ = writeln!(text, "# EOF");
        }
        text
    }
}

fn queue_label(queue: Queue) -> QueueLabel {
    QueueLabel {
        queue: queue.as_str().to_owned(),
    }
}

/// `/metrics`, `/healthz` and `/readyz`, without login: nothing they show is about a buyer.
pub fn router(handle: Handle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(handle))
}

async fn metrics(State(handle): State<Arc<Handle>>) -> Response {
    let text = handle.metrics().render(&handle).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready to take messages: the store can write and at least one gateway is connected.
async fn readyz(State(handle): State<Arc<Handle>>) -> Response {
    let mut problems = Vec::new();
    if let Some(failure) = handle.store().write_failure() {
        problems.push(format!("store: {failure}"));
    }
    if handle.gateways_connected() == 0 {
        problems.push("no gateway connected".to_owned());
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}
