//! The task that empties the notification outbox: it plans one delivery per target that wants
//! each new notification, delivers what is due (each target in order, the targets side by
//! side), records every outcome in the store, retries failures on the [`RetryPolicy`], and
//! dead-letters what cannot be delivered. It also notices escalations that have waited too long
//! and writes their SLA warnings and breaches into the outbox.
//!
//! Everything it owes lives in the store, not in memory: after a crash, or a receiver down for
//! hours, it picks up where the store says. A delivery that reached the receiver but whose
//! success was not recorded (a crash in between) is sent again with the same key, which is how a
//! receiver tells it is a repeat.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Event, Notification, RetryPolicy, Sender, Target};
use crate::console::ConsoleSettings;
use crate::metrics::Metrics;
use crate::model::{ChatEvent, EscalationState};
use crate::store::{DueDelivery, OutboxEntry, OutboxOp, Store, StoreError, now_ms};

/// How often the outbox is looked at when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);
/// The shortest time between two passes woken by escalations.
const EVENT_GAP: Duration = Duration::from_millis(100);
/// How many notifications are planned, and deliveries attempted, per pass.
const BATCH: i64 = 200;

/// What the deliverer needs besides the store.
#[derive(Debug, Clone)]
pub struct DelivererSettings {
    pub targets: Vec<Target>,
    pub retry: RetryPolicy,
    /// Shop display names, by shop account id.
    pub shop_names: HashMap<String, String>,
    /// The console's address as agents open it (`console.public_url`, or its listen address),
    /// for links; `None` when there is no console.
    pub console_url: Option<String>,
    /// The console's settings, for how long an unclaimed escalation may wait in each queue
    /// ([`ConsoleSettings::sla`]): the warning goes out at half of it, the breach at all of it.
    pub console: ConsoleSettings,
    /// Each shop's platform response clock, for `clock.warning`s.
    pub clocks: crate::escalation::clock::ShopClocks,
    /// When several instances share the store, true while this one works the outbox (one at
    /// a time, so that no notification goes out twice); `None`: always.
    pub works_here: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Waits for an escalation event on `events` (or for events missed while the outbox was busy,
/// which may have held one). Buyer messages and state changes do not wake the outbox: it would
/// otherwise read every open escalation for every message the daemon answers. Pending forever
/// once nobody announces any more; the tick alone keeps the outbox going then.
async fn next_escalation(events: &mut broadcast::Receiver<ChatEvent>) {
    loop {
        match events.recv().await {
            Ok(ChatEvent::Escalation { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                return;
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Runs until `cancel`, waking at escalations announced on `events` (at most every
/// [`EVENT_GAP`]) and at least every second.
pub async fn run(
    store: Store,
    settings: DelivererSettings,
    metrics: Arc<Metrics>,
    mut events: broadcast::Receiver<ChatEvent>,
    cancel: CancellationToken,
) {
    let sender = match Sender::new() {
        Ok(sender) => sender,
        Err(error) => {
            error!(%error, "notifications cannot be sent; they stay in the outbox");
            return;
        }
    };
    let mut deliverer = Deliverer {
        store,
        targets: settings
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect(),
        settings,
        sender,
        metrics,
        alerted: HashSet::new(),
    };
    info!(
        targets = deliverer.targets.len(),
        "notification outbox started"
    );
    loop {
        let here = deliverer
            .settings
            .works_here
            .as_ref()
            .is_none_or(|flag| flag.load(std::sync::atomic::Ordering::Acquire));
        if here && let Err(error) = deliverer.pass(now_ms()).await {
            warn!(%error, "the notification outbox could not be worked; trying again shortly");
        }
        let passed = tokio::time::Instant::now();
        let woken = tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(TICK) => false,
            () = next_escalation(&mut events) => true,
        };
        if woken {
            // A storm of escalations is worked in passes at most EVENT_GAP apart, not one
            // pass (a read of every open escalation) per escalation.
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(passed + EVENT_GAP) => {}
            }
            while !matches!(
                events.try_recv(),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
            ) {}
        }
    }
    debug!("notification outbox stopped");
}

struct Deliverer {
    store: Store,
    settings: DelivererSettings,
    /// By name.
    targets: BTreeMap<String, Target>,
    sender: Sender,
    metrics: Arc<Metrics>,
    /// SLA alerts this process has already written (the store's unique key catches the rest).
    alerted: HashSet<String>,
}

impl Deliverer {
    async fn pass(&mut self, now: i64) -> Result<(), StoreError> {
        self.watch_slas(now).await?;
        self.watch_clocks(now).await?;
        self.plan(now).await?;
        self.deliver_due(now).await
    }

    /// Writes an SLA warning for every unclaimed escalation past half its queue's target, and a
    /// breach past all of it.
    async fn watch_slas(&mut self, now: i64) -> Result<(), StoreError> {
        for escalation in self.store.open_escalations().await? {
            if escalation.state != EscalationState::Open {
                continue;
            }
            let target = millis(self.settings.console.sla(escalation.queue));
            let waited = now.saturating_sub(escalation.created_ms);
            for (event, due) in [(Event::SlaWarning, target / 2), (Event::SlaBreach, target)] {
                if waited < due {
                    continue;
                }
                // The queue is part of the key: raised to a more serious queue, the chat is
                // timed again against that queue's target.
                let key = format!("{}:{}:{}", event.as_str(), escalation.id, escalation.queue);
                if self.alerted.contains(&key) {
                    continue;
                }
                let written = self
                    .store
                    .outbox(OutboxOp::Enqueue {
                        key: key.clone(),
                        event: event.as_str().to_owned(),
                        escalation_id: escalation.id,
                        detail: format!("已等待 {} 分钟", waited / 60_000),
                        at_ms: now,
                    })
                    .await?;
                if written && event == Event::SlaBreach {
                    self.metrics.sla_breach(escalation.queue);
                    warn!(escalation = escalation.id, queue = %escalation.queue, "escalation waited past its queue's target");
                }
                self.alerted.insert(key);
            }
        }
        Ok(())
    }

    /// Writes a `clock.warning` for every buyer waiting on a person whose round has reached a
    /// warning share of the platform's budget. Chats with the bot are not warned about: the bot
    /// answers them. Nor are paused chats without an escalation: no queue holds them.
    async fn watch_clocks(&mut self, now: i64) -> Result<(), StoreError> {
        use crate::escalation::clock::{ChatWith, Round, warning_detail};
        for round in self.store.open_rounds().await? {
            let Some(escalation_id) = round.escalation else {
                continue;
            };
            if ChatWith::of(round.state) != ChatWith::Person {
                continue;
            }
            let clock = self.settings.clocks.for_shop(&round.key.self_id);
            let timed = Round {
                started_ms: round.started_ms,
                budget_ms: round.budget_ms,
            };
            let Some(pct) = clock.warning_due(timed, round.warned_pct, now) else {
                continue;
            };
            let counted = clock.standing(timed, now).counted_ms;
            let written = self
                .store
                .clock_warning(crate::store::ClockWarning {
                    round_id: round.id,
                    pct,
                    escalation_id,
                    detail: warning_detail(counted, round.budget_ms),
                    at_ms: now,
                })
                .await?;
            if written {
                info!(chat = %round.key, round = round.id, pct, "buyer waiting past {pct}% of the platform's response time");
            }
        }
        Ok(())
    }

    /// One pending delivery per target that wants each new notification. A notification older
    /// than the retry deadline (written while no target was configured) is not sent at all.
    async fn plan(&mut self, now: i64) -> Result<(), StoreError> {
        for entry in self.store.unplanned_notifications(BATCH).await? {
            let targets = match self.notification(&entry) {
                Some(n) if !self.settings.retry.gives_up(entry.at_ms, now) => self
                    .targets
                    .values()
                    .filter(|t| t.wants(&n))
                    .map(|t| t.name.clone())
                    .collect(),
                _ => Vec::new(),
            };
            self.store
                .outbox(OutboxOp::FanOut {
                    outbox_id: entry.id,
                    targets,
                    due_ms: now,
                })
                .await?;
        }
        Ok(())
    }

    /// Attempts every due delivery: in order within a target, the targets at the same time, so
    /// one slow receiver does not hold up the others.
    async fn deliver_due(&mut self, now: i64) -> Result<(), StoreError> {
        let mut by_target: BTreeMap<String, Vec<DueDelivery>> = BTreeMap::new();
        for due in self.store.due_deliveries(now, BATCH).await? {
            by_target.entry(due.target.clone()).or_default().push(due);
        }
        let this = &*self;
        let outcomes = futures_util::future::join_all(
            by_target
                .into_values()
                .map(|deliveries| this.deliver_all(deliveries)),
        )
        .await;
        outcomes.into_iter().collect()
    }

    async fn deliver_all(&self, deliveries: Vec<DueDelivery>) -> Result<(), StoreError> {
        for due in deliveries {
            self.deliver(due).await?;
        }
        Ok(())
    }

    async fn deliver(&self, due: DueDelivery) -> Result<(), StoreError> {
        let entry = &due.entry;
        let (Some(target), Some(notification)) =
            (self.targets.get(&due.target), self.notification(entry))
        else {
            let error = if self.targets.contains_key(&due.target) {
                format!("unknown event {:?}", entry.event)
            } else {
                format!("target {} is no longer configured", due.target)
            };
            return self.give_up(&due, error).await;
        };
        let now = now_ms();
        match self.sender.deliver(target, &notification, now).await {
            Ok(delivered) => {
                debug!(target = %target.name, key = %entry.key, status = delivered.status, "notification delivered");
                self.metrics.notification(&target.name, "delivered");
                self.store
                    .outbox(OutboxOp::Delivered {
                        outbox_id: entry.id,
                        target: due.target.clone(),
                        at_ms: now_ms(),
                    })
                    .await
                    .map(|_| ())
            }
            Err(failure)
                if failure.is_retryable() && !self.settings.retry.gives_up(entry.at_ms, now) =>
            {
                let attempt = u32::try_from(due.attempts + 1).unwrap_or(u32::MAX);
                let wait = self
                    .settings
                    .retry
                    .delay(attempt, rand::random::<f64>())
                    .max(failure.retry_after().unwrap_or_default());
                warn!(target = %target.name, key = %entry.key, attempt, error = %failure, "notification not delivered; retrying in {wait:?}");
                self.metrics.notification(&target.name, "retry");
                self.store
                    .outbox(OutboxOp::Failed {
                        outbox_id: entry.id,
                        target: due.target.clone(),
                        error: failure.to_string(),
                        retry_at_ms: Some(now.saturating_add(millis(wait))),
                        at_ms: now,
                    })
                    .await
                    .map(|_| ())
            }
            Err(failure) => self.give_up(&due, failure.to_string()).await,
        }
    }

    async fn give_up(&self, due: &DueDelivery, error: String) -> Result<(), StoreError> {
        error!(target = %due.target, key = %due.entry.key, %error, "notification given up (dead letter; retry it from the console)");
        self.metrics.notification(&due.target, "dead");
        self.store
            .outbox(OutboxOp::Failed {
                outbox_id: due.entry.id,
                target: due.target.clone(),
                error,
                retry_at_ms: None,
                at_ms: now_ms(),
            })
            .await
            .map(|_| ())
    }

    /// The notification as targets see it; `None` for an event this version does not know.
    fn notification(&self, entry: &OutboxEntry) -> Option<Notification> {
        let event = Event::parse(&entry.event)?;
        Some(Notification {
            event,
            key: entry.key.clone(),
            shop: entry.chat.self_id.clone(),
            shop_name: self.settings.shop_names.get(&entry.chat.self_id).cloned(),
            platform: entry.chat.platform.clone(),
            user_id: entry.chat.user_id.clone(),
            queue: entry.queue,
            escalation_id: entry.escalation_id,
            first_message: entry.first_message.clone(),
            detail: entry.detail.clone(),
            at_ms: entry.at_ms,
            console_url: match (&self.settings.console_url, entry.escalation_id) {
                (Some(base), Some(id)) => Some(format!("{base}/chat/{id}")),
                (Some(base), None) => Some(base.clone()),
                (None, _) => None,
            },
        })
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;
    use crate::model::{Actor, ConversationKey, Direction, EscalationEvent, Queue};

    fn message() -> ChatEvent {
        ChatEvent::Message {
            key: ConversationKey::new("qq", "s", "u"),
            direction: Direction::Inbound,
            sender: crate::model::Sender::Buyer,
            text: "在吗".to_owned(),
            at_ms: 1,
        }
    }

    fn opened() -> ChatEvent {
        ChatEvent::Escalation {
            id: 1,
            key: ConversationKey::new("qq", "s", "u"),
            kind: EscalationEvent::Opened,
            queue: Queue::Refund,
            actor: Actor::Bot,
            at_ms: 1,
        }
    }

    #[test]
    fn only_escalations_and_missed_events_wake_the_outbox() {
        let (tx, mut events) = broadcast::channel(4);
        tx.send(message()).unwrap();
        tx.send(message()).unwrap();
        assert!(
            next_escalation(&mut events).now_or_never().is_none(),
            "buyer messages alone do not wake it"
        );
        tx.send(message()).unwrap();
        tx.send(opened()).unwrap();
        tx.send(message()).unwrap();
        assert!(next_escalation(&mut events).now_or_never().is_some());
        assert!(
            matches!(events.try_recv(), Ok(ChatEvent::Message { .. })),
            "it stops at the escalation"
        );
        for _ in 0..6 {
            tx.send(message()).unwrap();
        }
        assert!(
            next_escalation(&mut events).now_or_never().is_some(),
            "events it missed may have held an escalation"
        );
    }
}
