//! Several instances sharing one PostgreSQL store: each shop account is answered by one
//! instance at a time, the holder of its lease.
//!
//! Every instance connects to the gateways and records every buyer message it receives in the
//! store's inbound backlog, whether or not it answers that shop. The [`keeper`] task renews
//! this instance's leases, takes its share of the shops (the shops known to the store divided
//! by the live instances, rounded up), gives back what is over its share, and takes the leases
//! of an instance that stopped renewing once they lapse. Every turn a chat worker commits
//! carries the [`Fence`] it was planned under, and the store refuses it if the lease has moved
//! on, so a paused instance that lost a shop writes nothing for it; a worker also sends only
//! while [`Leases::may_send`] says the lease is surely still held.
//!
//! When this instance takes a shop, the daemon's main loop first handles what the backlog
//! holds for it that was never handled (oldest first), then the shop's new messages. A
//! message is handled once its id is in the store's inbound ids, written in the same
//! transaction as its turn, so a message is answered once however many instances saw it.
//!
//! Times that decide a lease are the database server's; this instance keeps its own
//! conservative deadline (`valid_until`: when the renewal was sent, plus the TTL, minus a
//! margin) because it must stop sending before the server lets another instance in.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::model::ConversationKey;
use crate::store::{Fence, HeldLease, InstanceInfo, ShopLeases, Store, now_ms};

/// A shop account: (platform, `self_id`).
pub type Shop = (String, String);

/// How long backlog rows (handled or not) and silent instances are kept.
const BACKLOG_KEEP: Duration = Duration::from_secs(2 * 24 * 3600);
/// How often old backlog rows are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(3600);

/// What this instance holds, as the chat workers and the main loop ask it.
pub struct Leases {
    me: InstanceInfo,
    ttl: Duration,
    held: Mutex<HashMap<Shop, Held>>,
    /// True while this instance works the notification outbox.
    outbox: Arc<AtomicBool>,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    epoch: i64,
    /// Sends stop here: the server keeps the lease at least this long.
    valid_until: Instant,
    /// Given back: no new turns; turns committed before still send until `valid_until`.
    released: bool,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("instance", &self.me.id)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Leases {
    /// This instance, named `name` or else after its host and process.
    pub fn new(name: Option<&str>, ttl: Duration) -> Leases {
        let host = hostname();
        let pid = std::process::id();
        let id = match name {
            Some(name) => name.to_owned(),
            None => format!("{host}-{pid}-{:04x}", rand::random::<u16>()),
        };
        Leases {
            me: InstanceInfo {
                id: id.into(),
                host,
                pid: i64::from(pid),
                started_ms: now_ms(),
            },
            ttl,
            held: Mutex::new(HashMap::new()),
            outbox: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True while this instance is the one working the notification outbox.
    pub fn works_outbox(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.outbox)
    }

    /// This instance's id, as other instances and `xiaoer status` see it.
    pub fn instance(&self) -> &str {
        &self.me.id
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<Shop, Held>> {
        // A poisoned map is still the best knowledge there is; a panic elsewhere must not stop
        // every chat.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fence for a new turn in `key`'s chat, if this instance may start one.
    pub fn fence(&self, key: &ConversationKey) -> Option<Fence> {
        let held = self.held();
        let lease = held.get(&(key.platform.clone(), key.self_id.clone()))?;
        (!lease.released && Instant::now() < lease.valid_until).then(|| Fence {
            owner: Arc::clone(&self.me.id),
            epoch: lease.epoch,
        })
    }

    /// Whether a reply committed under `fence` may still be sent.
    pub fn may_send(&self, key: &ConversationKey, fence: &Fence) -> bool {
        let held = self.held();
        held.get(&(key.platform.clone(), key.self_id.clone()))
            .is_some_and(|lease| lease.epoch == fence.epoch && Instant::now() < lease.valid_until)
    }

    /// The shops this instance answers now, with their epochs.
    pub fn owned(&self) -> Vec<(Shop, i64)> {
        let mut owned: Vec<(Shop, i64)> = self
            .held()
            .iter()
            .filter(|(_, lease)| !lease.released && Instant::now() < lease.valid_until)
            .map(|(shop, lease)| (shop.clone(), lease.epoch))
            .collect();
        owned.sort();
        owned
    }

    /// Holds (`Some(epoch)`) or forgets (`None`) a shop's lease, for tests of what uses leases.
    #[cfg(test)]
    pub(crate) fn set_for_test(&self, platform: &str, self_id: &str, epoch: Option<i64>) {
        let shop = (platform.to_owned(), self_id.to_owned());
        let mut held = self.held();
        match epoch {
            Some(epoch) => {
                held.insert(
                    shop,
                    Held {
                        epoch,
                        valid_until: Instant::now() + self.ttl,
                        released: false,
                    },
                );
            }
            None => {
                held.remove(&shop);
            }
        }
    }

    /// How much earlier than the server this instance gives a lease up: a fifth of the TTL.
    fn margin(&self) -> Duration {
        self.ttl / 5
    }
}

/// A change in what this instance answers, for the daemon's main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// Taken: handle the shop's backlog, then its new messages.
    Taken(Vec<Shop>),
    /// Given back or lost: record its messages, answer none.
    Lost(Vec<Shop>),
}

/// Where a shop's messages go in this instance's main loop: answered here, or only recorded.
#[derive(Debug, Default)]
pub struct Answering {
    shops: HashSet<Shop>,
    known: HashSet<Shop>,
}

impl Answering {
    pub fn answers(&self, platform: &str, self_id: &str) -> bool {
        self.shops
            .contains(&(platform.to_owned(), self_id.to_owned()))
    }

    /// Applies a change; returns the shops just taken.
    pub fn apply(&mut self, change: LeaseChange) -> Vec<Shop> {
        match change {
            LeaseChange::Taken(shops) => {
                for shop in &shops {
                    self.shops.insert(shop.clone());
                }
                shops
            }
            LeaseChange::Lost(shops) => {
                for shop in &shops {
                    self.shops.remove(shop);
                }
                Vec::new()
            }
        }
    }

    /// True the first time a shop is seen, so the keeper hears of it once.
    pub fn first_sight(&mut self, platform: &str, self_id: &str) -> bool {
        self.known.insert((platform.to_owned(), self_id.to_owned()))
    }
}

/// The keeper's inputs and outputs.
pub struct Keeper {
    pub leases: Arc<Leases>,
    pub db: ShopLeases,
    /// Shop accounts the gateways showed, as they appear.
    pub shops: mpsc::UnboundedReceiver<Shop>,
    pub changes: mpsc::UnboundedSender<LeaseChange>,
    /// The writer's queue must be flushed before a shop is given back (see [`keeper`]).
    pub store: Store,
}

/// How often the heartbeat runs and shares are looked at: a quarter of the TTL, at most a second,
/// so that a dead instance's shops move within a second of their lapse.
fn tick_every(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Keeps this instance's leases until `stop`, then gives every one back and says it stopped.
/// Call it after the chat workers have finished, since a shop given back may be taken at once.
pub async fn keeper(mut parts: Keeper, stop: CancellationToken, leave: CancellationToken) {
    let mut tick = tokio::time::interval(tick_every(parts.leases.ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut new_shops: Vec<Shop> = Vec::new();
    let mut last_forget = Instant::now();
    let mut failing = false;
    let mut shops_open = true;
    let mut last_renewal: Option<Instant> = None;
    info!(instance = %parts.leases.instance(), ttl = ?parts.leases.ttl, "sharing the store's shops with other instances");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            shop = parts.shops.recv(), if shops_open => match shop {
                Some(shop) => {
                    new_shops.push(shop);
                    while let Ok(more) = parts.shops.try_recv() {
                        new_shops.push(more);
                    }
                }
                None => {
                    shops_open = false;
                    continue;
                }
            },
            _ = tick.tick() => {}
        }
        match keep_once(&mut parts, &mut new_shops, &mut last_renewal).await {
            Ok(()) => {
                if failing {
                    info!("shop leases are renewed again");
                }
                failing = false;
            }
            Err(error) => {
                if !failing {
                    warn!(%error, "cannot renew shop leases; the shops stop being answered here when the leases lapse");
                }
                failing = true;
            }
        }
        let leading = parts.db.lead_outbox().await.unwrap_or(false);
        if leading != parts.leases.outbox.swap(leading, Ordering::AcqRel) {
            info!(
                leading,
                "this instance works the notification outbox: {leading}"
            );
        }
        // Leases that ran out here while the store could not be reached.
        let lapsed = lapse(&parts.leases);
        if !lapsed.is_empty() {
            warn!(shops = ?lapsed, "shop leases lapsed; their messages are only recorded here now");
            let _ = parts.changes.send(LeaseChange::Lost(lapsed));
        }
        if last_forget.elapsed() > FORGET_EVERY {
            last_forget = Instant::now();
            let keep = i64::try_from(BACKLOG_KEEP.as_millis()).unwrap_or(i64::MAX);
            if let Err(error) = parts.db.forget_before(keep).await {
                warn!(%error, "cannot forget old inbound backlog rows");
            }
        }
    }
    // Stopping: wait until the daemon's workers are done before giving the shops back.
    leave.cancelled().await;
    let me = parts.leases.me.clone();
    parts.leases.held().clear();
    parts.leases.outbox.store(false, Ordering::Release);
    match parts.db.leave(&me).await {
        Ok(()) => info!(instance = %me.id, "shop leases given back"),
        Err(error) => {
            warn!(%error, "cannot give the shop leases back; other instances take them when they lapse");
        }
    }
    parts.db.close().await;
}

/// Drops leases past their local deadline; returns the shops that were still answered.
fn lapse(leases: &Leases) -> Vec<Shop> {
    let now = Instant::now();
    let mut held = leases.held();
    let mut lapsed = Vec::new();
    held.retain(|shop, lease| {
        if now < lease.valid_until {
            return true;
        }
        if !lease.released {
            lapsed.push(shop.clone());
        }
        false
    });
    lapsed.sort();
    lapsed
}

/// One heartbeat: new shops, renewals, then taking or giving back to reach this instance's
/// share.
async fn keep_once(
    parts: &mut Keeper,
    new_shops: &mut Vec<Shop>,
    last_renewal: &mut Option<Instant>,
) -> Result<(), crate::store::StoreError> {
    let leases = Arc::clone(&parts.leases);
    let me = &leases.me;
    let ttl_ms = i64::try_from(leases.ttl.as_millis()).unwrap_or(i64::MAX);
    if !new_shops.is_empty() {
        parts.db.add_shops(new_shops).await?;
        new_shops.clear();
    }
    let beat = parts.db.heartbeat(me, ttl_ms).await?;
    // Renewing is the costly statement (a row per shop held), so it runs every quarter of the
    // TTL (a long TTL is renewed less often); the heartbeat, and taking lapsed shops, run every
    // tick.
    let sent = Instant::now();
    let valid_until = sent + leases.ttl - leases.margin();
    if last_renewal.is_none_or(|at| at.elapsed() >= leases.ttl / 4) {
        let renewed = parts.db.renew(me, ttl_ms).await?;
        *last_renewal = Some(sent);
        let Renewal { lost, adopted } = apply_renewal(&leases, &renewed, valid_until);
        if !lost.is_empty() {
            warn!(shops = ?lost, "shop leases were taken by another instance");
            let _ = parts.changes.send(LeaseChange::Lost(lost));
        }
        if !adopted.is_empty() {
            info!(shops = ?adopted, "shop leases held again after the store came back");
            let _ = parts.changes.send(LeaseChange::Taken(adopted));
        }
    }
    let mine: Vec<Shop> = leases.owned().into_iter().map(|(shop, _)| shop).collect();
    let holding = mine.len() as i64;
    let share = fair_share(beat.shops, beat.live);
    if holding < share {
        let taken = parts.db.take(me, ttl_ms, share - holding).await?;
        if !taken.is_empty() {
            let shops: Vec<Shop> = taken.iter().map(HeldLease::shop).collect();
            {
                let mut held = leases.held();
                for lease in &taken {
                    held.insert(
                        lease.shop(),
                        Held {
                            epoch: lease.epoch,
                            valid_until,
                            released: false,
                        },
                    );
                }
            }
            info!(shops = ?shops, live_instances = beat.live, share, "took shop leases");
            let _ = parts.changes.send(LeaseChange::Taken(shops));
        }
    } else if holding > share {
        let mut mine = mine;
        let give: Vec<Shop> = mine.split_off(usize::try_from(share).unwrap_or(0));
        {
            let mut held = leases.held();
            for shop in &give {
                if let Some(lease) = held.get_mut(shop) {
                    lease.released = true;
                }
            }
        }
        // The main loop stops handing these shops' messages to workers first; what the
        // workers have committed by the release is theirs to send.
        let _ = parts.changes.send(LeaseChange::Lost(give.clone()));
        parts.store.flush().await?;
        parts.db.release(me, &give).await?;
        info!(shops = ?give, live_instances = beat.live, share, "gave shop leases back for other instances to take");
    }
    Ok(())
}

/// What a renewal changed here.
#[derive(Debug, Default, PartialEq, Eq)]
struct Renewal {
    /// Answered here and no longer held.
    lost: Vec<Shop>,
    /// Held in the store but no longer answered here (the local deadline passed while the
    /// store could not be reached and the lease outlived it, or a release failed): answered
    /// again, backlog first.
    adopted: Vec<Shop>,
}

/// Records a renewal.
fn apply_renewal(leases: &Leases, renewed: &[HeldLease], valid_until: Instant) -> Renewal {
    let now = Instant::now();
    let mut held = leases.held();
    let kept: HashMap<Shop, i64> = renewed.iter().map(|t| (t.shop(), t.epoch)).collect();
    let mut change = Renewal::default();
    held.retain(|shop, lease| match kept.get(shop) {
        Some(&epoch) if epoch == lease.epoch => {
            // Given back here, yet still this instance's in the store: the release did not go
            // through (the store was unreachable), so the shop is answered here again. And a
            // lease whose local deadline passed before this renewal turned messages away
            // meanwhile: they wait in the backlog, which taking the shop on again handles.
            if lease.released || now >= lease.valid_until {
                lease.released = false;
                change.adopted.push(shop.clone());
            }
            lease.valid_until = valid_until;
            true
        }
        _ if lease.released => true,
        _ => {
            change.lost.push(shop.clone());
            false
        }
    });
    for (shop, &epoch) in &kept {
        if !held.contains_key(shop) {
            held.insert(
                shop.clone(),
                Held {
                    epoch,
                    valid_until,
                    released: false,
                },
            );
            change.adopted.push(shop.clone());
        }
    }
    change.lost.retain(|shop| !change.adopted.contains(shop));
    change.lost.sort();
    change.adopted.sort();
    change
}

/// Each live instance's share of the shops, rounded up so that every shop has room.
pub fn fair_share(shops: i64, live: i64) -> i64 {
    if shops <= 0 {
        return 0;
    }
    let live = live.max(1);
    (shops + live - 1) / live
}

/// This machine's name, for telling instances apart in `xiaoer status`.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(shop: &str) -> ConversationKey {
        ConversationKey::new("dev", shop, "buyer")
    }

    fn holding(leases: &Leases, shop: &str, epoch: i64, valid_for: Duration) {
        leases.held().insert(
            ("dev".to_owned(), shop.to_owned()),
            Held {
                epoch,
                valid_until: Instant::now() + valid_for,
                released: false,
            },
        );
    }

    #[test]
    fn every_shop_has_room_in_the_shares() {
        assert_eq!(fair_share(20, 3), 7);
        assert_eq!(fair_share(20, 2), 10);
        assert_eq!(fair_share(20, 1), 20);
        assert_eq!(
            fair_share(20, 0),
            20,
            "this instance counts even before its heartbeat"
        );
        assert_eq!(fair_share(0, 3), 0);
        assert_eq!(fair_share(3, 5), 1);
    }

    #[test]
    fn a_fence_is_given_only_for_a_held_live_lease_and_sends_follow_the_epoch() {
        let leases = Leases::new(Some("a"), Duration::from_secs(10));
        assert_eq!(leases.fence(&key("s1")), None, "not held");
        holding(&leases, "s1", 3, Duration::from_secs(5));
        let fence = leases.fence(&key("s1")).unwrap();
        assert_eq!((&*fence.owner, fence.epoch), ("a", 3));
        assert!(leases.may_send(&key("s1"), &fence));
        // Taken again later at a new epoch: a reply planned under the old one is not sent.
        holding(&leases, "s1", 4, Duration::from_secs(5));
        assert!(!leases.may_send(&key("s1"), &fence));
        // Past the local deadline: no new turns and no sends.
        holding(&leases, "s2", 1, Duration::ZERO);
        assert_eq!(leases.fence(&key("s2")), None);
        let stale = Fence {
            owner: "a".into(),
            epoch: 1,
        };
        assert!(!leases.may_send(&key("s2"), &stale));
        assert_eq!(lapse(&leases), vec![("dev".to_owned(), "s2".to_owned())]);
        assert_eq!(
            leases.owned(),
            vec![(("dev".to_owned(), "s1".to_owned()), 4)]
        );
    }

    #[test]
    fn a_released_shop_takes_no_new_turns_but_sends_what_was_committed() {
        let leases = Leases::new(Some("a"), Duration::from_secs(10));
        holding(&leases, "s1", 2, Duration::from_secs(5));
        let fence = leases.fence(&key("s1")).unwrap();
        leases
            .held()
            .get_mut(&("dev".to_owned(), "s1".to_owned()))
            .unwrap()
            .released = true;
        assert_eq!(leases.fence(&key("s1")), None);
        assert!(leases.may_send(&key("s1"), &fence));
        // A renewal that still returns it means the release failed: it is answered again.
        let renewed = [HeldLease {
            platform: "dev".into(),
            self_id: "s1".into(),
            epoch: 2,
        }];
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            apply_renewal(&leases, &renewed, later).adopted,
            vec![("dev".to_owned(), "s1".to_owned())]
        );
        assert!(leases.fence(&key("s1")).is_some());
        leases
            .held()
            .get_mut(&("dev".to_owned(), "s1".to_owned()))
            .unwrap()
            .released = true;
        // A renewal that no longer returns it keeps it until its deadline, and reports nothing
        // lost: it was given back on purpose.
        assert_eq!(
            apply_renewal(&leases, &[], Instant::now()),
            Renewal::default()
        );
    }

    #[test]
    fn a_renewal_without_a_lease_reports_it_lost() {
        let leases = Leases::new(Some("a"), Duration::from_secs(10));
        holding(&leases, "s1", 2, Duration::from_secs(5));
        holding(&leases, "s2", 7, Duration::from_secs(5));
        let renewed = [HeldLease {
            platform: "dev".into(),
            self_id: "s2".into(),
            epoch: 7,
        }];
        let later = Instant::now() + Duration::from_secs(8);
        assert_eq!(
            apply_renewal(&leases, &renewed, later).lost,
            vec![("dev".to_owned(), "s1".to_owned())]
        );
        assert_eq!(
            leases.held()[&("dev".to_owned(), "s2".to_owned())].valid_until,
            later
        );
    }

    #[test]
    fn a_lease_the_store_still_gives_after_a_local_lapse_is_answered_again() {
        let leases = Leases::new(Some("a"), Duration::from_secs(10));
        holding(&leases, "s1", 2, Duration::ZERO);
        assert_eq!(lapse(&leases), vec![("dev".to_owned(), "s1".to_owned())]);
        let renewed = [HeldLease {
            platform: "dev".into(),
            self_id: "s1".into(),
            epoch: 2,
        }];
        let later = Instant::now() + Duration::from_secs(8);
        let change = apply_renewal(&leases, &renewed, later);
        assert_eq!(change.adopted, vec![("dev".to_owned(), "s1".to_owned())]);
        assert!(change.lost.is_empty());
        assert_eq!(leases.fence(&key("s1")).map(|f| f.epoch), Some(2));
    }

    #[test]
    fn a_lease_renewed_after_its_local_deadline_is_taken_on_again() {
        let leases = Leases::new(Some("a"), Duration::from_secs(10));
        holding(&leases, "s1", 2, Duration::ZERO);
        holding(&leases, "s2", 2, Duration::from_secs(5));
        let renewed = [("s1", 2), ("s2", 2)].map(|(shop, epoch)| HeldLease {
            platform: "dev".into(),
            self_id: shop.into(),
            epoch,
        });
        let change = apply_renewal(&leases, &renewed, Instant::now() + Duration::from_secs(8));
        assert_eq!(change.adopted, vec![("dev".to_owned(), "s1".to_owned())]);
        assert!(change.lost.is_empty());
    }

    #[test]
    fn the_main_loop_answers_only_what_it_was_told_it_holds() {
        let mut answering = Answering::default();
        let shop = ("dev".to_owned(), "s1".to_owned());
        assert!(!answering.answers("dev", "s1"));
        assert_eq!(
            answering.apply(LeaseChange::Taken(vec![shop.clone()])),
            vec![shop.clone()]
        );
        assert!(answering.answers("dev", "s1"));
        assert!(answering.apply(LeaseChange::Lost(vec![shop])).is_empty());
        assert!(!answering.answers("dev", "s1"));
        assert!(answering.first_sight("dev", "s1"));
        assert!(!answering.first_sight("dev", "s1"));
    }
}
