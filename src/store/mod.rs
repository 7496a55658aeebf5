//! Durable storage behind one interface: conversation state, transcripts, human-queue
//! escalations and inbound-message idempotence.
//!
//! # Layout
//!
//! - this file: the [`Store`] facade every caller uses;
//! - `ops.rs`: the writes, independent of the database — above all the [`Turn`], everything one
//!   handled message changes, committed atomically;
//! - `writer.rs`: the one task that writes, batching requests into group commits (no SQL);
//! - `sqlite/`: the SQLite backend (the embedded default): connections, migrations, the SQL;
//! - `postgres/`: the PostgreSQL backend (`store = "postgres://…"`): the same schema and SQL on a
//!   writer connection and a read pool, and `lease.rs`, the SQL of shop leases and the inbound
//!   backlog for instances sharing the store (see `cluster`).
//!
//! Each backend implements the writer's `Backend` and a reader; [`Store`] dispatches every read
//! to the reader it was opened with ([`Store::open_location`] picks the backend).
//!
//! # Writes and reads
//!
//! Requests go through a bounded channel to the writer and are committed in batches, so a burst
//! of chats costs a handful of commits. [`Store::commit_turn`] waits for its own commit: once it
//! returns, what the turn promises (an escalation, a recorded message id) is durable and may be
//! acknowledged. Delivery marks and set-aside lines only wait for room in the channel. Reads go
//! straight to a pool of read-only connections and see everything committed.
//!
//! [`Store::open_existing`] (and [`Store::open_existing_location`]) give a read-only handle (no
//! writer, no migrations) that works next to a running daemon, e.g. for `xiaoer queue list`.

mod error;
mod ops;
mod postgres;
mod report;
mod sqlite;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use error::{StoreError, explain_io};
pub use ops::{
    AccountOp, ClockWarning, DecisionRecord, EscalationStep, Fence, InboundLine, OutboundLine,
    OutboxOp, RoundStep, SeenMessage, Turn, TurnOutcome,
};
pub use postgres::commands::{CommandOutcome, RemoteAction, RemoteCommand};
pub use postgres::lease::{
    ClusterStatus, Heartbeat, HeldLease, InstanceInfo, InstanceRow, LeaseRow, ShopLeases,
};
pub use report::{ReportEscalationEvent, ReportLine, ReportRows, ResponseRound};
pub use writer::Fault;

use crate::config::StoreLocation;
use crate::model::{
    Actor, Agent, Conversation, ConversationKey, ConversationState, Delivery, Escalation,
    EscalationEvent, Note, Queue, TranscriptEntry,
};
use ops::{Op, Reply};
use writer::{Counters, Faults, Request};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "xiaoer.db";

/// How many write requests may wait for the writer before callers wait for room.
const CHANNEL_CAPACITY: usize = 4096;

/// The environment variable that arms a [`Fault`] in a daemon process (crash tests only).
pub const FAULT_VARIABLE: &str = "XIAOER_TEST_FAULT";

/// A handle on the store. Cheap to clone; all clones share one writer and one read pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.inner.location)
            .field("writable", &self.is_writable())
            .finish()
    }
}

struct Inner {
    /// The database file; empty for PostgreSQL.
    path: PathBuf,
    /// Where the store is, as it may be logged (no password).
    location: String,
    reader: Reader,
    /// `None` for read-only handles.
    writer: Option<WriterHandle>,
}

/// The read side of whichever backend the store uses.
enum Reader {
    Sqlite(sqlite::SqliteReader),
    Postgres(postgres::PgReader),
}

struct WriterHandle {
    tx: mpsc::Sender<Request>,
    counters: Arc<Counters>,
    faults: Arc<Faults>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One step in an escalation's history.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EscalationRecord {
    pub kind: EscalationEvent,
    /// The queue after the step.
    pub queue: Queue,
    pub actor: Actor,
    /// Why, in words.
    pub detail: String,
    pub at_ms: i64,
}

/// A console session, found by the hash of its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub agent: String,
    /// The token every state-changing request of this session must carry.
    pub csrf: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
}

/// A notification waiting in the outbox, as it was when its event happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    /// The idempotency key receivers see, the same on every attempt.
    pub key: String,
    /// `escalation.created`, `escalation.raised`, `sla.warning`, `sla.breach`, `clock.warning`.
    pub event: String,
    pub chat: ConversationKey,
    pub queue: Queue,
    pub escalation_id: Option<i64>,
    pub first_message: String,
    pub detail: String,
    pub at_ms: i64,
}

/// A delivery of a notification to one target that is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueDelivery {
    pub entry: OutboxEntry,
    pub target: String,
    /// Attempts made so far.
    pub attempts: i64,
}

/// A delivery given up on, shown in the console until it is retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub entry: OutboxEntry,
    pub target: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub given_up_ms: i64,
}

/// How many deliveries are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
    /// Notifications whose deliveries are not planned yet.
    pub unplanned: i64,
}

/// A response-clock round still open: a buyer waiting for a valid reply, with where the chat
/// stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRound {
    pub id: i64,
    pub key: ConversationKey,
    pub started_ms: i64,
    pub budget_ms: i64,
    /// The highest share of the budget already warned about (0: none).
    pub warned_pct: u32,
    /// Who answers the chat now.
    pub state: ConversationState,
    /// The chat's open or claimed escalation, which warnings are about.
    pub escalation: Option<i64>,
}

/// One of an agent's own quick phrases.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QuickPhrase {
    pub id: i64,
    pub text: String,
}

impl Store {
    /// Opens the store in `data_dir` for reading and writing, creating the directory and the
    /// database if needed, applying migrations, and starting the writer task.
    ///
    /// Must be called inside a tokio runtime. Only one process should open a store this way.
    /// A fault named in `XIAOER_TEST_FAULT` is armed (for crash tests).
    ///
    /// # Errors
    ///
    /// If the directory cannot be created, the database cannot be opened, or migrations fail.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_file(&data_dir.join(DB_FILE)).await
    }

    /// Like [`Store::open`], for a database file given by its own path (`store =
    /// "sqlite://…"`); its directory is created if needed.
    ///
    /// # Errors
    ///
    /// See [`Store::open`].
    pub async fn open_file(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|cause| StoreError::CreateDir {
                path: dir.to_owned(),
                cause,
            })?;
        }
        let path = path.to_owned();
        let backend = sqlite::open_writer(&path).await?;
        let reader = sqlite::open_reader(&path).await?;
        tracing::info!(path = %path.display(), "store opened");
        let location = format!("sqlite://{}", path.display());
        Ok(Store::start(
            path,
            location,
            backend,
            Reader::Sqlite(reader),
        ))
    }

    /// Opens the store `location` names for reading and writing: a SQLite file as
    /// [`Store::open_file`] does, or a PostgreSQL database, whose schema is brought up to date.
    ///
    /// # Errors
    ///
    /// See [`Store::open`]; for PostgreSQL, [`StoreError::Unreachable`] when the server cannot
    /// be reached or refuses the user, and [`StoreError::MigrateDatabase`].
    pub async fn open_location(location: &StoreLocation) -> Result<Store, StoreError> {
        Store::open_shared(location, None).await
    }

    /// [`Store::open_location`] for an instance that shares a PostgreSQL store with others under
    /// shop leases of `lease_ttl`: the server ends a write transaction of this instance that
    /// sits idle that long (a paused instance holds its shops' lease rows while a batch is
    /// open), so that a paused instance cannot keep its shops from moving.
    ///
    /// # Errors
    ///
    /// As [`Store::open_location`].
    pub async fn open_shared(
        location: &StoreLocation,
        lease_ttl: Option<std::time::Duration>,
    ) -> Result<Store, StoreError> {
        match location {
            StoreLocation::Sqlite(path) => Store::open_file(path).await,
            StoreLocation::Postgres(url) => {
                let shown = location.to_string();
                let mut target = postgres::Target::parse(url, &shown)?;
                if let Some(ttl) = lease_ttl {
                    target = target.idle_in_transaction(ttl);
                }
                let backend = postgres::open_writer(&target).await?;
                let reader = postgres::open_reader(&target, false).await?;
                tracing::info!(store = %target.name, "store opened");
                Ok(Store::start(
                    PathBuf::new(),
                    shown,
                    backend,
                    Reader::Postgres(reader),
                ))
            }
        }
    }

    /// The shop-lease statements on a connection of their own, for a daemon sharing the
    /// PostgreSQL store at `location` with other instances; `None` for SQLite, which one daemon
    /// holds alone (by its lock file).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unreachable`].
    pub async fn open_leases(location: &StoreLocation) -> Result<Option<ShopLeases>, StoreError> {
        match location {
            StoreLocation::Sqlite(_) => Ok(None),
            StoreLocation::Postgres(url) => {
                let target = postgres::Target::parse(url, &location.to_string())?;
                ShopLeases::open(target).await.map(Some)
            }
        }
    }

    /// The PostgreSQL read pool, for what only a shared store does.
    fn shared_pool(&self, what: &str) -> Result<&sqlx::PgPool, StoreError> {
        match &self.inner.reader {
            Reader::Postgres(reader) => Ok(&reader.pool),
            Reader::Sqlite(_) => Err(StoreError::Closed {
                context: format!("{what} (only a PostgreSQL store is shared by instances)"),
            }),
        }
    }

    /// Hands an agent's command on chat `key` to the instance answering its shop, and wakes it.
    ///
    /// # Errors
    ///
    /// On SQLite, or if the write fails.
    pub async fn submit_command(
        &self,
        key: &ConversationKey,
        agent: &str,
        escalation_id: Option<i64>,
        action: &RemoteAction,
        requested_by: &str,
    ) -> Result<i64, StoreError> {
        let pool = self.shared_pool("hand a command to another instance")?;
        postgres::commands::submit(
            pool,
            key,
            agent,
            escalation_id,
            action,
            requested_by,
            now_ms(),
        )
        .await
    }

    /// How command `id` ended, once its owner says.
    ///
    /// # Errors
    ///
    /// On SQLite, or if the read fails.
    pub async fn command_outcome(&self, id: i64) -> Result<Option<CommandOutcome>, StoreError> {
        postgres::commands::outcome(self.shared_pool("read a command's outcome")?, id).await
    }

    /// Takes the commands waiting for the shops `owner` holds.
    ///
    /// # Errors
    ///
    /// On SQLite, or if the write fails.
    pub async fn take_commands(&self, owner: &str) -> Result<Vec<RemoteCommand>, StoreError> {
        postgres::commands::take(self.shared_pool("take agents' commands")?, owner).await
    }

    /// Records how command `id` ended.
    ///
    /// # Errors
    ///
    /// On SQLite, or if the write fails.
    pub async fn finish_command(
        &self,
        id: i64,
        outcome: &CommandOutcome,
    ) -> Result<(), StoreError> {
        postgres::commands::finish(
            self.shared_pool("record a command's outcome")?,
            id,
            outcome,
            now_ms(),
        )
        .await
    }

    /// A listener woken when a command is handed over; `None` on SQLite.
    ///
    /// # Errors
    ///
    /// If the listening connection cannot be opened.
    pub async fn command_listener(&self) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        self.listener(postgres::commands::CHANNEL).await
    }

    /// A listener on PostgreSQL notification channel `channel`, on a connection of its own;
    /// `None` on SQLite.
    ///
    /// # Errors
    ///
    /// If the listening connection cannot be opened.
    pub async fn listener(
        &self,
        channel: &str,
    ) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        let Reader::Postgres(reader) = &self.inner.reader else {
            return Ok(None);
        };
        let cx = |e| StoreError::query(format!("listen on {channel}"), e);
        let mut listener = sqlx::postgres::PgListener::connect_with(&reader.pool)
            .await
            .map_err(cx)?;
        listener.listen(channel).await.map_err(cx)?;
        Ok(Some(listener))
    }

    /// Sends `payload` to every listener on channel `channel`.
    ///
    /// # Errors
    ///
    /// On SQLite, or if the server refuses it.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        let pool = self.shared_pool("notify other instances")?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(pool)
            .await
            .map_err(|e| StoreError::query(format!("notify {channel}"), e))?;
        Ok(())
    }

    /// Marks the replies to shop `self_id`'s buyers that were recorded before `before_ms` and
    /// never marked sent or failed as [`Delivery::Unknown`], and says how many: a new owner of
    /// the shop cannot tell whether its last owner sent them (it may have died between the send
    /// and the mark), so they are shown as "may not have reached the buyer" rather than sent
    /// again.
    ///
    /// # Errors
    ///
    /// If the write fails.
    pub async fn mark_left_unsent(
        &self,
        platform: &str,
        self_id: &str,
        before_ms: i64,
    ) -> Result<i64, StoreError> {
        match self
            .submit(Op::LeftUnsent {
                platform: platform.to_owned(),
                self_id: self_id.to_owned(),
                before_ms,
            })
            .await?
        {
            Reply::Created(count) => Ok(count),
            _ => Ok(0),
        }
    }

    /// Queues a buyer message for the inbound backlog. Waits only for room in the writer's
    /// queue; [`Store::flush`] waits until it is durable.
    ///
    /// # Errors
    ///
    /// If the store is closed or read-only.
    pub async fn record_seen(&self, seen: SeenMessage) -> Result<(), StoreError> {
        self.submit_unawaited(Op::Seen(seen)).await
    }

    /// Starts the writer task over `backend`, arming a fault named in `XIAOER_TEST_FAULT`.
    fn start<B: writer::Backend>(
        path: PathBuf,
        location: String,
        backend: B,
        reader: Reader,
    ) -> Store {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let counters = Arc::new(Counters::default());
        let faults = Arc::new(Faults::default());
        if let Ok(text) = std::env::var(FAULT_VARIABLE) {
            match text.parse::<Fault>() {
                Ok(fault) => {
                    tracing::warn!(?fault, "store fault injection armed ({FAULT_VARIABLE})");
                    faults.arm(fault);
                }
                Err(e) => tracing::warn!("{FAULT_VARIABLE} ignored: {e}"),
            }
        }
        let task = tokio::spawn(writer::run(
            backend,
            rx,
            Arc::clone(&counters),
            Arc::clone(&faults),
        ));
        Store {
            inner: Arc::new(Inner {
                path,
                location,
                reader,
                writer: Some(WriterHandle {
                    tx,
                    counters,
                    faults,
                    task: Mutex::new(Some(task)),
                }),
            }),
        }
    }

    /// Opens an existing store read-only: no migrations, no writer. Safe to use while the daemon
    /// has the store open and is writing.
    ///
    /// # Errors
    ///
    /// [`StoreError::Missing`] if there is no database in `data_dir`;
    /// [`StoreError::SchemaTooOld`] if it has not been migrated to this program's schema.
    pub async fn open_existing(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_existing_file(&data_dir.join(DB_FILE), data_dir).await
    }

    /// [`Store::open_existing`] for the database file `path`; `dir` is named when it is missing.
    async fn open_existing_file(path: &Path, dir: &Path) -> Result<Store, StoreError> {
        let path = path.to_owned();
        if !path.is_file() {
            return Err(StoreError::Missing {
                dir: dir.to_owned(),
            });
        }
        let reader = sqlite::open_reader(&path).await?;
        let found = reader.schema_version().await?;
        let needed = sqlite::schema_version();
        if found < needed {
            reader.close().await;
            return Err(StoreError::SchemaTooOld {
                path,
                found,
                needed,
            });
        }
        let location = format!("sqlite://{}", path.display());
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                location,
                reader: Reader::Sqlite(reader),
                writer: None,
            }),
        })
    }

    /// Like [`Store::open_existing`], for the store `location` names. Every transaction of a
    /// PostgreSQL handle opened this way is read-only.
    ///
    /// # Errors
    ///
    /// [`StoreError::Missing`] if a SQLite file is not there; [`StoreError::Unreachable`] for a
    /// PostgreSQL server that cannot be reached; [`StoreError::SchemaTooOld`] or
    /// [`StoreError::DatabaseSchemaTooOld`] if the schema is older than this program's.
    pub async fn open_existing_location(location: &StoreLocation) -> Result<Store, StoreError> {
        let url = match location {
            StoreLocation::Sqlite(path) => {
                let dir = path.parent().unwrap_or(Path::new(""));
                return Store::open_existing_file(path, dir).await;
            }
            StoreLocation::Postgres(url) => url,
        };
        let shown = location.to_string();
        let target = postgres::Target::parse(url, &shown)?;
        let reader = postgres::open_reader(&target, true).await?;
        let found = reader.schema_version().await?;
        let needed = postgres::schema_version();
        if found < needed {
            reader.close().await;
            return Err(StoreError::DatabaseSchemaTooOld {
                target: target.name,
                found,
                needed,
            });
        }
        Ok(Store {
            inner: Arc::new(Inner {
                path: PathBuf::new(),
                location: shown,
                reader: Reader::Postgres(reader),
                writer: None,
            }),
        })
    }

    /// Where the store is, as it may be logged: `sqlite://PATH` or the PostgreSQL URL with its
    /// password hidden.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// The database file (empty for a PostgreSQL store).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the writer has done since the store was opened (all zero for read-only handles).
    pub fn write_stats(&self) -> WriteStats {
        let Some(writer) = &self.inner.writer else {
            return WriteStats::default();
        };
        let c = &writer.counters;
        WriteStats {
            batches: c.batches.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            retried_batches: c.retried_batches.load(Ordering::Relaxed),
            failed_requests: c.failed_requests.load(Ordering::Relaxed),
        }
    }

    /// Why the store cannot write right now (its last commits failed), or `None` when it can.
    /// `/readyz` reports it.
    pub fn write_failure(&self) -> Option<String> {
        let writer = self.inner.writer.as_ref()?;
        writer
            .counters
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether this handle can write (opened with [`Store::open`]).
    pub fn is_writable(&self) -> bool {
        self.inner.writer.is_some()
    }

    /// Arms a fault at the writer's commit points. For tests of crashes and failing disks.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Fault) {
        if let Some(writer) = &self.inner.writer {
            writer.faults.arm(fault);
        }
    }

    async fn submit(&self, op: Op) -> Result<Reply, StoreError> {
        let context = op.describe();
        let Some(writer) = &self.inner.writer else {
            return Err(StoreError::ReadOnly { context });
        };
        let (reply, answer) = oneshot::channel();
        let request = Request {
            op,
            reply: Some(reply),
        };
        if writer.tx.send(request).await.is_err() {
            return Err(StoreError::Closed { context });
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Closed { context }),
        }
    }

    /// Queues a write nobody waits for; a failure is logged by the writer.
    async fn submit_unawaited(&self, op: Op) -> Result<(), StoreError> {
        let Some(writer) = &self.inner.writer else {
            return Err(StoreError::ReadOnly {
                context: op.describe(),
            });
        };
        writer
            .tx
            .send(Request { op, reply: None })
            .await
            .map_err(|e| StoreError::Closed {
                context: e.0.op.describe(),
            })
    }

    /// Commits everything one message or command changes in a chat, atomically, and returns
    /// only after the commit (see [`Turn`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when the conversation changed since it was read (plan again);
    /// refusals of the escalation step ([`StoreError::EscalationClosed`],
    /// [`StoreError::AlreadyClaimed`], …); a failed write, after which nothing of the turn is
    /// stored; a closed or read-only store.
    pub async fn commit_turn(&self, turn: Turn) -> Result<TurnOutcome, StoreError> {
        match self.submit(Op::Turn(Box::new(turn))).await? {
            Reply::Turn(outcome) => Ok(outcome),
            Reply::Done | Reply::Created(_) => Err(StoreError::Corrupt {
                context: "commit a turn".to_owned(),
                detail: "the writer gave no outcome".to_owned(),
            }),
        }
    }

    /// Changes accounts, sessions, notes or quick phrases, and waits for the commit. Returns the
    /// id of the row created, for notes and quick phrases.
    ///
    /// # Errors
    ///
    /// [`StoreError::AgentExists`], [`StoreError::AgentNotFound`], a failed write, a closed or
    /// read-only store.
    pub async fn account(&self, op: AccountOp) -> Result<Option<i64>, StoreError> {
        match self.submit(Op::Account(op)).await? {
            Reply::Created(id) => Ok(Some(id)),
            _ => Ok(None),
        }
    }

    /// Notes that a session was used; waits only for room in the writer's queue.
    ///
    /// # Errors
    ///
    /// If the store is closed or read-only.
    pub async fn touch_session(&self, token_hash: &str, at_ms: i64) -> Result<(), StoreError> {
        self.submit_unawaited(Op::Account(AccountOp::TouchSession {
            token_hash: token_hash.to_owned(),
            at_ms,
        }))
        .await
    }

    /// An account and its password hash.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn agent(&self, name: &str) -> Result<Option<(Agent, String)>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.agent(name).await,
            Reader::Postgres(r) => r.agent(name).await,
        }
    }

    /// Every account, by name.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.agents().await,
            Reader::Postgres(r) => r.agents().await,
        }
    }

    /// The session whose token hashes to `token_hash`.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn session(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.session(token_hash).await,
            Reader::Postgres(r) => r.session(token_hash).await,
        }
    }

    /// The notes on a chat, oldest first.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn notes(&self, key: &ConversationKey) -> Result<Vec<Note>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.notes(key).await,
            Reader::Postgres(r) => r.notes(key).await,
        }
    }

    /// An agent's own quick phrases, oldest first.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn quick_phrases(&self, agent: &str) -> Result<Vec<QuickPhrase>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.phrases(agent).await,
            Reader::Postgres(r) => r.phrases(agent).await,
        }
    }

    /// Records what became of an outbound line after its send. Waits only for room in the
    /// writer's queue.
    ///
    /// # Errors
    ///
    /// If the store is closed or read-only.
    pub async fn mark_delivery(
        &self,
        line: i64,
        delivery: Delivery,
        message_id: Option<String>,
    ) -> Result<(), StoreError> {
        self.submit_unawaited(Op::MarkDelivery {
            line,
            delivery,
            message_id,
        })
        .await
    }

    /// Queues a transcript line for the writer. Waits only for room in the writer's queue, not
    /// for the commit; use [`Store::flush`] to wait until it is durable. A failed write is logged.
    ///
    /// # Errors
    ///
    /// If the store is closed or read-only.
    pub async fn append_transcript(&self, entry: TranscriptEntry) -> Result<(), StoreError> {
        self.submit_unawaited(Op::Append(entry)).await
    }

    /// The buyer messages of shop `self_id` on `platform` that some instance recorded and none
    /// handled, oldest first: what a new owner of the shop handles before its new messages.
    /// Empty on SQLite, which one daemon holds alone.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn unhandled(
        &self,
        platform: &str,
        self_id: &str,
    ) -> Result<Vec<SeenMessage>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(_) => Ok(Vec::new()),
            Reader::Postgres(reader) => {
                postgres::lease::unhandled(&reader.pool, platform, self_id).await
            }
        }
    }

    /// The stored state of a conversation, if it has one.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn conversation(
        &self,
        key: &ConversationKey,
    ) -> Result<Option<Conversation>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.conversation(key).await,
            Reader::Postgres(r) => r.conversation(key).await,
        }
    }

    /// The stored state of a conversation, or a fresh one (version 0) answered by the bot.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn conversation_or_new(
        &self,
        key: &ConversationKey,
        now_ms: i64,
    ) -> Result<Conversation, StoreError> {
        Ok(self
            .conversation(key)
            .await?
            .unwrap_or_else(|| Conversation::new(key.clone(), now_ms)))
    }

    /// Sends commit times and batch sizes to `metrics` from now on (the first call wins).
    pub fn record_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        if let Some(writer) = &self.inner.writer {
            let _ = writer.counters.metrics.set(metrics);
        }
    }

    /// Changes the notification outbox and waits for the commit. False when an
    /// [`OutboxOp::Enqueue`]d key was in the outbox already (nothing was written).
    ///
    /// # Errors
    ///
    /// A failed write, a closed or read-only store.
    pub async fn outbox(&self, op: OutboxOp) -> Result<bool, StoreError> {
        Ok(!matches!(
            self.submit(Op::Outbox(op)).await?,
            Reply::Created(0)
        ))
    }

    /// Writes a response-clock warning (see [`ClockWarning`]) and waits for the commit. False
    /// when its key was in the outbox already.
    ///
    /// # Errors
    ///
    /// A failed write, a closed or read-only store.
    pub async fn clock_warning(&self, warning: ClockWarning) -> Result<bool, StoreError> {
        Ok(!matches!(
            self.submit(Op::ClockWarning(warning)).await?,
            Reply::Created(0)
        ))
    }

    /// The chat's open response-clock round, if its buyer waits.
    ///
    /// # Errors
    ///
    /// If the read fails or a stored value is not understood.
    pub async fn open_round(&self, key: &ConversationKey) -> Result<Option<OpenRound>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => sqlite::clock::open_round(&r.pool, key).await,
            Reader::Postgres(r) => postgres::clock::open_round(&r.pool, key).await,
        }
    }

    /// Every open response-clock round, oldest first.
    ///
    /// # Errors
    ///
    /// If the read fails or a stored value is not understood.
    pub async fn open_rounds(&self) -> Result<Vec<OpenRound>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => sqlite::clock::open_rounds(&r.pool).await,
            Reader::Postgres(r) => postgres::clock::open_rounds(&r.pool).await,
        }
    }

    /// Up to `limit` notifications whose deliveries are not planned yet, oldest first.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn unplanned_notifications(
        &self,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => sqlite::outbox::unfanned(&r.pool, limit).await,
            Reader::Postgres(r) => postgres::outbox::unfanned(&r.pool, limit).await,
        }
    }

    /// Up to `limit` deliveries due at `now_ms`, oldest notification first.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => sqlite::outbox::due(&r.pool, now_ms, limit).await,
            Reader::Postgres(r) => postgres::outbox::due(&r.pool, now_ms, limit).await,
        }
    }

    /// Up to `limit` dead-lettered deliveries, newest first.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => sqlite::outbox::dead(&r.pool, limit).await,
            Reader::Postgres(r) => postgres::outbox::dead(&r.pool, limit).await,
        }
    }

    /// Deliveries by state.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => sqlite::outbox::counts(&r.pool).await,
            Reader::Postgres(r) => postgres::outbox::counts(&r.pool).await,
        }
    }

    /// Escalations that are open or claimed, oldest first.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn open_escalations(&self) -> Result<Vec<Escalation>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.escalations(false).await,
            Reader::Postgres(r) => r.escalations(false).await,
        }
    }

    /// Every escalation, closed ones too, oldest first.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn all_escalations(&self) -> Result<Vec<Escalation>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.escalations(true).await,
            Reader::Postgres(r) => r.escalations(true).await,
        }
    }

    /// Every escalation of one chat, oldest first.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn escalations_of(
        &self,
        key: &ConversationKey,
    ) -> Result<Vec<Escalation>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.escalations_of(key).await,
            Reader::Postgres(r) => r.escalations_of(key).await,
        }
    }

    /// One escalation by id, in any state.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn escalation(&self, id: i64) -> Result<Option<Escalation>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.escalation(id).await,
            Reader::Postgres(r) => r.escalation(id).await,
        }
    }

    /// What happened to an escalation, in order.
    ///
    /// # Errors
    ///
    /// If the read fails or a stored value is not understood.
    pub async fn escalation_history(&self, id: i64) -> Result<Vec<EscalationRecord>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.escalation_history(id).await,
            Reader::Postgres(r) => r.escalation_history(id).await,
        }
    }

    /// The last `limit` transcript lines of a conversation, oldest first.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn transcript(
        &self,
        key: &ConversationKey,
        limit: u32,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.transcript(key, limit).await,
            Reader::Postgres(r) => r.transcript(key, limit).await,
        }
    }

    /// The recorded state changes of a conversation, oldest first.
    ///
    /// # Errors
    ///
    /// If the read fails or a stored value is not understood.
    pub async fn state_history(
        &self,
        key: &ConversationKey,
    ) -> Result<Vec<StateChange>, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.state_history(key).await,
            Reader::Postgres(r) => r.state_history(key).await,
        }
    }

    /// Waits until every write queued before this call is committed (or has failed).
    ///
    /// # Errors
    ///
    /// If the store is closed or read-only.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.submit(Op::Flush).await.map(|_| ())
    }

    /// Graceful shutdown: commits everything queued, stops the writer and closes the pool.
    /// Other clones of this handle get [`StoreError::Closed`] afterwards.
    ///
    /// # Errors
    ///
    /// If the final commit fails. The store is closed either way.
    pub async fn close(self) -> Result<(), StoreError> {
        let mut result = Ok(());
        if let Some(writer) = &self.inner.writer {
            result = self.submit(Op::Shutdown).await.map(|_| ());
            let task = writer.task.lock().ok().and_then(|mut t| t.take());
            if let Some(task) = task
                && let Err(e) = task.await
            {
                tracing::error!(error = %e, "store writer task failed");
            }
        }
        match &self.inner.reader {
            Reader::Sqlite(r) => r.close().await,
            Reader::Postgres(r) => r.close().await,
        }
        result
    }

    /// Everything the shift report over `[since_ms, until_ms)` reads, for one shop account or
    /// all: transcript lines with what routing decided, the escalations opened with their
    /// history, and the response-clock rounds started (see [`ReportRows`]).
    ///
    /// # Errors
    ///
    /// If the read fails or a stored value is not understood.
    pub async fn report_rows(
        &self,
        since_ms: i64,
        until_ms: i64,
        shop: Option<&str>,
    ) -> Result<ReportRows, StoreError> {
        match &self.inner.reader {
            Reader::Sqlite(r) => r.report_rows(since_ms, until_ms, shop).await,
            Reader::Postgres(r) => r.report_rows(since_ms, until_ms, shop).await,
        }
    }
}

/// Counters of the writer task, e.g. for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteStats {
    /// Batches taken from the queue.
    pub batches: u64,
    /// Requests handled (including flush barriers).
    pub requests: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Batches that failed and were replayed one request per transaction.
    pub retried_batches: u64,
    /// Requests that failed at the database even on their own.
    pub failed_requests: u64,
}

/// One recorded change of a conversation's state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StateChange {
    /// The state before (`None`: the conversation had no stored state).
    pub from: Option<ConversationState>,
    /// The state after.
    pub to: ConversationState,
    /// Who caused it.
    pub actor: Actor,
    /// Why.
    pub reason: String,
    /// When (unix ms).
    pub at_ms: i64,
}
