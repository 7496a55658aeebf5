//! Durable storage behind one interface: conversation state, transcripts, human-queue
//! escalations and inbound-message idempotence.
//!
//! SQLite now (`xiaoer.db` under the data directory, WAL, `synchronous=FULL`), PostgreSQL later:
//! the SQL is kept portable (`$n` placeholders, `ON CONFLICT`, `RETURNING`, integer unix-ms
//! timestamps) and the schema lives in `migrations/sqlite`, embedded in the binary.
//!
//! # Writes and reads
//!
//! One writer task owns every write (see `writer.rs`): requests go through a bounded channel and
//! are committed in batches, so a burst of chats costs a handful of commits. Calls that must be
//! durable before the caller acts — [`Store::record_inbound`], [`Store::escalate`],
//! [`Store::save_conversation`], claiming and closing — wait for their own commit;
//! [`Store::append_transcript`] only waits for room in the channel. Reads go straight to a pool
//! of read-only connections and see everything committed.
//!
//! [`Store::open_existing`] gives a read-only handle (no writer, no migrations) that works next
//! to a running daemon, e.g. for `xiaoer queue list`.

mod error;
mod rows;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use crate::model::{
    Actor, Conversation, ConversationKey, ConversationState, Direction, Escalation,
    EscalationState, ParseEnumError, Sender, TranscriptEntry,
};
pub use error::StoreError;

use writer::{Op, Reply, Request};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "xiaoer.db";

/// How many write requests may wait for the writer before callers wait for room.
const CHANNEL_CAPACITY: usize = 4096;

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A handle on the store. Cheap to clone; all clones share one writer and one read pool.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    pool: SqlitePool,
    /// `None` for read-only handles.
    writer: Option<WriterHandle>,
}

#[derive(Debug)]
struct WriterHandle {
    tx: mpsc::Sender<Request>,
    counters: Arc<writer::Counters>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn base_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(BUSY_TIMEOUT)
}

/// The writer's connection: creates the file, WAL, and every commit synced to disk.
fn writer_options(path: &Path) -> SqliteConnectOptions {
    base_options(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Escalations are acknowledged to the buyer only after their commit: every commit must
        // survive a power cut, not just a crash (NORMAL in WAL mode may lose the last commits).
        .synchronous(SqliteSynchronous::Full)
}

async fn read_pool(path: &Path) -> Result<SqlitePool, StoreError> {
    SqlitePoolOptions::new()
        .max_connections(4)
        .min_connections(0)
        .connect_with(base_options(path).read_only(true))
        .await
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })
}

impl Store {
    /// Opens the store in `data_dir` for reading and writing, creating the directory and the
    /// database if needed, applying migrations, and starting the writer task.
    ///
    /// Must be called inside a tokio runtime. Only one process should open a store this way.
    ///
    /// # Errors
    ///
    /// If the directory cannot be created, the database cannot be opened, or migrations fail.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = writer_options(&path).connect().await.map_err(open_err)?;
        // `run_direct` takes the connection itself; `run` goes through `Acquire`, whose
        // higher-ranked bound makes every caller's future fail to be `Send`.
        MIGRATOR
            .run_direct(&mut conn)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.clone(),
                source,
            })?;
        let pool = read_pool(&path).await?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let counters = Arc::new(writer::Counters::default());
        let task = tokio::spawn(writer::run(conn, rx, Arc::clone(&counters)));
        tracing::info!(path = %path.display(), "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                pool,
                writer: Some(WriterHandle {
                    tx,
                    counters,
                    task: Mutex::new(Some(task)),
                }),
            }),
        })
    }

    /// Opens an existing store read-only: no migrations, no writer. Safe to use while the daemon
    /// has the store open and is writing.
    ///
    /// # Errors
    ///
    /// [`StoreError::Missing`] if there is no database in `data_dir`;
    /// [`StoreError::SchemaTooOld`] if it has not been migrated to this program's schema.
    pub async fn open_existing(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::Missing {
                dir: data_dir.to_owned(),
            });
        }
        let pool = read_pool(&path).await?;
        let needed = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let found: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&pool)
                .await
                .map_err(|e| {
                    StoreError::query(format!("read schema version of {}", path.display()), e)
                })?;
        let found = found.unwrap_or(0);
        if found < needed {
            pool.close().await;
            return Err(StoreError::SchemaTooOld {
                path,
                found,
                needed,
            });
        }
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                pool,
                writer: None,
            }),
        })
    }

    /// The database file.
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

    /// Whether this handle can write (opened with [`Store::open`]).
    pub fn is_writable(&self) -> bool {
        self.inner.writer.is_some()
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

    /// Records an inbound message and its transcript line, durably, unless this conversation
    /// already has a message with this id.
    ///
    /// Returns `true` if the message is new, `false` if it was recorded before (a redelivery;
    /// also across restarts). Returns only after the commit.
    ///
    /// # Errors
    ///
    /// If the write fails or the store is closed or read-only.
    pub async fn record_inbound(
        &self,
        key: &ConversationKey,
        message_id: &str,
        sender: Sender,
        text: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let op = Op::RecordInbound {
            key: key.clone(),
            message_id: message_id.to_owned(),
            sender,
            text: text.to_owned(),
            at_ms,
        };
        match self.submit(op).await? {
            Reply::Inbound { new } => Ok(new),
            other => Err(unexpected("record an inbound message", &other)),
        }
    }

    /// Queues a transcript line for the writer. Waits only for room in the writer's queue, not
    /// for the commit; use [`Store::flush`] to wait until it is durable. A failed write is logged.
    ///
    /// # Errors
    ///
    /// If the store is closed or read-only.
    pub async fn append_transcript(&self, entry: TranscriptEntry) -> Result<(), StoreError> {
        let op = Op::Append(entry);
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

    /// Hands a conversation to a human queue: creates an open escalation and sets the
    /// conversation to [`ConversationState::Queued`] (recording the change, actor
    /// [`Actor::Bot`]) in one transaction. Returns the escalation id only after the commit, so
    /// the buyer may be told once this returns.
    ///
    /// A conversation has at most one escalation that is not closed: if it already has one, that
    /// escalation's id is returned and nothing changes.
    ///
    /// # Errors
    ///
    /// If the write fails or the store is closed or read-only.
    pub async fn escalate(
        &self,
        key: &ConversationKey,
        queue: &str,
        reason: &str,
        rule: Option<&str>,
        first_message: &str,
        at_ms: i64,
    ) -> Result<i64, StoreError> {
        let op = Op::Escalate {
            key: key.clone(),
            queue: queue.to_owned(),
            reason: reason.to_owned(),
            rule: rule.map(str::to_owned),
            first_message: first_message.to_owned(),
            at_ms,
        };
        match self.submit(op).await? {
            Reply::Escalated { id } => Ok(id),
            other => Err(unexpected("escalate", &other)),
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
        let row = sqlx::query(&format!(
            "SELECT {} FROM conversations WHERE platform = $1 AND self_id = $2 AND user_id = $3",
            rows::CONVERSATION_COLUMNS
        ))
        .bind(&key.platform)
        .bind(&key.self_id)
        .bind(&key.user_id)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(|e| StoreError::query(format!("read conversation {key}"), e))?;
        row.as_ref().map(rows::conversation).transpose()
    }

    /// Saves a conversation's state, durably. If its state differs from the stored one (or it is
    /// new), a history row records the change, `actor` and `reason`, stamped with
    /// `conversation.state_since_ms`.
    ///
    /// # Errors
    ///
    /// If the write fails or the store is closed or read-only.
    pub async fn save_conversation(
        &self,
        conversation: &Conversation,
        actor: Actor,
        reason: &str,
    ) -> Result<(), StoreError> {
        let op = Op::SaveConversation {
            conversation: conversation.clone(),
            actor,
            reason: reason.to_owned(),
        };
        self.submit(op).await.map(|_| ())
    }

    /// Escalations that are open or claimed, oldest first.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn open_escalations(&self) -> Result<Vec<Escalation>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM escalations WHERE state <> 'closed' ORDER BY created_ms, id",
            rows::ESCALATION_COLUMNS
        ))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| StoreError::query("list open escalations", e))?;
        rows.iter().map(rows::escalation).collect()
    }

    /// One escalation by id, in any state.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub async fn escalation(&self, id: i64) -> Result<Option<Escalation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM escalations WHERE id = $1",
            rows::ESCALATION_COLUMNS
        ))
        .bind(id)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(|e| StoreError::query(format!("read escalation {id}"), e))?;
        row.as_ref().map(rows::escalation).transpose()
    }

    /// An agent takes an open escalation; its conversation becomes
    /// [`ConversationState::Human`] (actor `agent:<name>`). Claiming again by the same agent is
    /// a no-op. Returns the escalation as it now is.
    ///
    /// # Errors
    ///
    /// [`StoreError::EscalationNotFound`], [`StoreError::EscalationClosed`],
    /// [`StoreError::AlreadyClaimed`] (by another agent), or a failed write.
    pub async fn claim_escalation(&self, id: i64, agent: &str) -> Result<Escalation, StoreError> {
        let op = Op::Claim {
            id,
            agent: agent.to_owned(),
            at_ms: now_ms(),
        };
        match self.submit(op).await? {
            Reply::Escalation(e) => Ok(*e),
            other => Err(unexpected("claim an escalation", &other)),
        }
    }

    /// Closes an open or claimed escalation and hands its conversation back to the bot
    /// ([`ConversationState::Bot`], actor `agent:<name>`; the fallback streak, queue notice and
    /// pause are reset). Returns the escalation as it now is.
    ///
    /// # Errors
    ///
    /// [`StoreError::EscalationNotFound`], [`StoreError::EscalationClosed`], or a failed write.
    pub async fn close_escalation(&self, id: i64, agent: &str) -> Result<Escalation, StoreError> {
        let op = Op::Close {
            id,
            agent: agent.to_owned(),
            at_ms: now_ms(),
        };
        match self.submit(op).await? {
            Reply::Escalation(e) => Ok(*e),
            other => Err(unexpected("close an escalation", &other)),
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
        let rows = sqlx::query(&format!(
            "SELECT {} FROM transcript WHERE platform = $1 AND self_id = $2 AND user_id = $3 \
             ORDER BY at_ms DESC, id DESC LIMIT $4",
            rows::TRANSCRIPT_COLUMNS
        ))
        .bind(&key.platform)
        .bind(&key.self_id)
        .bind(&key.user_id)
        .bind(i64::from(limit))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| StoreError::query(format!("read transcript of {key}"), e))?;
        let mut entries = rows
            .iter()
            .map(rows::transcript_entry)
            .collect::<Result<Vec<_>, _>>()?;
        entries.reverse();
        Ok(entries)
    }

    /// The recorded state changes of a conversation, oldest first, as
    /// `(from, to, actor, reason, at_ms)`; `from` is `None` for the first recorded state.
    ///
    /// # Errors
    ///
    /// If the read fails or a stored value is not understood.
    pub async fn state_history(
        &self,
        key: &ConversationKey,
    ) -> Result<Vec<StateChange>, StoreError> {
        let context = || format!("read state history of {key}");
        let rows = sqlx::query(
            "SELECT from_state, to_state, actor, reason, at_ms FROM state_changes \
             WHERE platform = $1 AND self_id = $2 AND user_id = $3 ORDER BY at_ms, id",
        )
        .bind(&key.platform)
        .bind(&key.self_id)
        .bind(&key.user_id)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| StoreError::query(context(), e))?;
        let corrupt = |detail: String| StoreError::Corrupt {
            context: context(),
            detail,
        };
        rows.iter()
            .map(|row| {
                let get_err = |e| StoreError::query(context(), e);
                let from: Option<String> = row.try_get("from_state").map_err(get_err)?;
                let to: String = row.try_get("to_state").map_err(get_err)?;
                let actor: String = row.try_get("actor").map_err(get_err)?;
                Ok(StateChange {
                    from: from
                        .map(|s| s.parse())
                        .transpose()
                        .map_err(|e: ParseEnumError| corrupt(e.to_string()))?,
                    to: to
                        .parse()
                        .map_err(|e: ParseEnumError| corrupt(e.to_string()))?,
                    actor: actor
                        .parse()
                        .map_err(|e: ParseEnumError| corrupt(e.to_string()))?,
                    reason: row.try_get("reason").map_err(get_err)?,
                    at_ms: row.try_get("at_ms").map_err(get_err)?,
                })
            })
            .collect()
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
            if let Some(task) = task {
                if let Err(e) = task.await {
                    tracing::error!(error = %e, "store writer task failed");
                }
            }
        }
        self.inner.pool.close().await;
        result
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

fn unexpected(context: &str, reply: &Reply) -> StoreError {
    StoreError::Corrupt {
        context: context.to_owned(),
        detail: format!("writer gave an unexpected answer {reply:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_writer_connection_is_wal_and_fully_synchronous() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = writer_options(&dir.path().join(DB_FILE))
            .connect()
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        // 2 = FULL, 3 = EXTRA; 1 (NORMAL) would not make each escalation's commit durable.
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(sync >= 2, "synchronous = {sync}");
    }
}
