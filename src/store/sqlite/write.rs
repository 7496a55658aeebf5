//! The SQL of every write, on the writer's one connection.
//!
//! # Why rusqlite on a thread of its own
//!
//! Reads go through sqlx's pool, which runs each SQLite connection on a worker thread and makes
//! every statement a round trip between the calling task and that thread. A turn is seven or
//! eight statements, so under load the writer spent about half of the daemon's CPU waking
//! threads instead of writing. Here the writer's connection is a `rusqlite` connection owned by
//! one OS thread, and the writer task hands it a whole batch at once: one hop there, one answer
//! back, however many statements the batch runs. SQLite calls are cheap in-process function
//! calls on that thread, and every statement is prepared once and cached.
//!
//! The connection is opened only after [`open_writer`](super::open_writer) has migrated and
//! checked the database with sqlx, with the same settings (WAL, `synchronous=FULL`, the busy
//! timeout, foreign keys). Its errors are carried as `sqlx::Error` (see
//! [`from_rusqlite`](crate::store::error::from_rusqlite)), so the store has one error type and
//! one set of words for SQLite's result codes.
//!
//! # Checkpoints on a thread of their own
//!
//! Copying the write-ahead log back into the database (a checkpoint) is SQLite's job after a
//! commit, on the committing connection: under load it was a fifth of the writer thread's time,
//! spent while every waiting chat waited too. Here a second thread with its own connection runs
//! a passive checkpoint every [`CHECKPOINT_EVERY`], copying pages without taking the write lock.
//! It cannot make the log start over, though: SQLite rewinds the log only when a transaction
//! begins with every frame copied, and under steady load the writer has always committed more
//! since. So the writer still checkpoints itself once the log holds [`REWIND_PAGES`]; by then
//! the checkpointer has copied nearly all of it, the writer copies the rest, and the log starts
//! over ([`WAL_LIMIT_BYTES`] caps what its file keeps on disk afterwards).
//!
//! # Commits made durable on a thread of their own
//!
//! With `synchronous=FULL` every commit waits for its `fdatasync` of the log, about 2 ms on this
//! kind of disk, and the writer thread can do nothing else meanwhile: under load it spent two
//! fifths of its time waiting there. Here the writer's connection commits with
//! `synchronous=NORMAL` (the log is written but not synced; SQLite's own crash safety is
//! unchanged) and hands the [`Syncer`] thread a request; that thread `fdatasync`s the log
//! file, answering every request that arrived before it started at once, while the writer
//! commits the next batch. Nothing in a batch is answered before its sync returns (see
//! [`crate::store::writer`]), so what a buyer is told has been stored is on disk exactly as
//! before. The log is one file written in order, so syncing it covers every commit before.
//! A failed sync is final: the kernel may have dropped the pages it could not write, so every
//! later batch is refused before anything of it is written ([`StoreError::NotDurable`]), and
//! the daemon says so loudly.
//! Should the thread not start, the connection stays at `synchronous=FULL`.
//!
//! # Refusals
//!
//! A turn first checks everything that can refuse it (a stale conversation version, an
//! escalation in the wrong state, a message id the chat already has) and only then writes, so a
//! refused turn leaves nothing behind even inside a batch that commits.
//!
//! Placeholders are SQLite's numbered `?n` (the same numbers as PostgreSQL's `$n`): SQLite
//! reads `$n` as a *named* parameter, numbered by first appearance, which positional binding
//! would silently mismatch.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use super::rows;
use crate::model::{
    ConversationKey, ConversationState, Delivery, Direction, Escalation, EscalationEvent,
    EscalationState, Queue, TranscriptEntry,
};
use crate::store::StoreError;
use crate::store::error::from_rusqlite;
use crate::store::ops::{
    AccountOp, DecisionRecord, EscalationStep, InboundLine, Op, Reply, Turn, TurnOutcome,
};
use crate::store::writer::{Durable, NotDurable};

/// A statement's failure, as the store's errors carry it.
pub(crate) fn db(error: rusqlite::Error) -> sqlx::Error {
    from_rusqlite(error)
}

/// Work for the writer thread, run with its connection.
type Job = Box<dyn FnOnce(&mut Native) + Send>;

/// How many prepared statements the connection keeps (every write statement fits).
const STATEMENT_CACHE: usize = 128;

/// The writer connection's page cache, in KiB (SQLite's default is 2 MiB): a busy store's
/// indexes stay in memory instead of being read back for every batch.
const CACHE_KIB: i64 = 16 * 1024;

/// How often the checkpointer copies the write-ahead log into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The log size, in pages, at which the writer checkpoints itself after a commit so the log
/// starts over (SQLite's default is 1,000; 16,000 pages are 62.5 MiB). At 4,000 the writer's
/// own checkpoints were a sixth of its time under load; at 16,000 the closed loop of
/// docs/performance.md answers about 7 % more.
const REWIND_PAGES: i64 = 16_000;

/// What the log's file may keep on disk once it has started over.
const WAL_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// The writer's side of a SQLite store: a handle on the thread that owns the connection.
pub(crate) struct SqliteWriter {
    jobs: mpsc::Sender<Job>,
    /// What makes the last committed batch durable, until the writer task takes it.
    durable: Option<Durable>,
    /// Answered by the thread once it has closed the connection.
    closed: oneshot::Receiver<()>,
}

/// The writer thread's connection and what it checks before each batch.
pub(crate) struct Native {
    conn: Connection,
    /// Makes commits durable; `None` when it could not start (then commits sync themselves).
    syncer: Option<Syncer>,
    path: PathBuf,
    /// The database file's inode at open; `None` where it cannot be read.
    inode: Option<u64>,
}

impl SqliteWriter {
    /// Starts the writer thread and opens its connection on `path` (migrated and checked
    /// already); `inode` is the file's identity at open.
    pub(crate) async fn start(path: &Path, inode: Option<u64>) -> Result<Self, StoreError> {
        let open_error = |cause| StoreError::Open {
            path: path.to_owned(),
            cause,
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened_tx, opened) = oneshot::channel();
        let (closed_tx, closed) = oneshot::channel();
        let thread_path = path.to_owned();
        std::thread::Builder::new()
            .name("xiaoer-store-writer".to_owned())
            .spawn(move || {
                let conn = match connect(&thread_path) {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                let syncer = Syncer::start(&thread_path).and_then(|syncer| {
                    match conn.pragma_update(None, "synchronous", "NORMAL") {
                        Ok(()) => Some(syncer),
                        Err(e) => {
                            tracing::warn!(error = %db(e), "the store's commits sync themselves");
                            None
                        }
                    }
                });
                let _ = opened_tx.send(Ok(()));
                let checkpointer = Checkpointer::start(&thread_path);
                let mut native = Native {
                    conn,
                    syncer,
                    path: thread_path,
                    inode,
                };
                // Ends when the handle is dropped or closed.
                while let Ok(job) = queue.recv() {
                    job(&mut native);
                }
                if let Some(checkpointer) = checkpointer {
                    checkpointer.stop();
                }
                if let Err((_, e)) = native.conn.close() {
                    tracing::warn!(error = %e, "closing the store's writer connection failed");
                }
                let _ = closed_tx.send(());
            })
            .map_err(|e| open_error(sqlx::Error::Io(e)))?;
        match opened.await {
            Ok(Ok(())) => Ok(SqliteWriter {
                jobs,
                durable: None,
                closed,
            }),
            Ok(Err(e)) => Err(open_error(db(e))),
            Err(_) => Err(open_error(sqlx::Error::Protocol(
                "the writer thread stopped while opening the database".to_owned(),
            ))),
        }
    }

    /// Runs `f` on the writer thread; `None` if the thread is gone.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Native) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move |native| {
                let _ = tx.send(f(native));
            }))
            .ok()?;
        rx.await.ok()
    }

    /// Makes the sync thread behave as if a sync had failed, for tests of what follows.
    #[cfg(test)]
    pub(crate) async fn fail_sync_for_test(&self, failure: NotDurable) {
        self.call(move |native| {
            let syncer = native.syncer.as_ref().expect("the sync thread runs");
            *lock(&syncer.failed) = Some(failure);
        })
        .await
        .expect("the writer thread is running");
    }

    /// Runs `f` with the writer's connection, for tests that look at what it wrote.
    #[cfg(test)]
    pub(crate) async fn with_connection<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> T {
        self.call(move |native| f(&native.conn))
            .await
            .expect("the writer thread is running")
    }
}

/// Opens the writer's connection with the settings of [`super::writer_options`].
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    // No CREATE: sqlx made and migrated the file; if it is gone now, that is an error.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_PRIVATE_CACHE,
    )?;
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%mode, "the store's writer connection is not in WAL mode");
    }
    // Every commit survives a power cut (see `writer_options`).
    conn.pragma_update(None, "synchronous", "FULL")?;
    // As sqlx sets it on every connection it opens.
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", REWIND_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)?;
    Ok(conn)
}

/// The thread that checkpoints the write-ahead log beside the writer.
struct Checkpointer {
    /// Dropped to stop the thread.
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Opens a connection of its own and starts checkpointing; `None` (with a warning) if it
    /// cannot, and then the writer's own checkpoints alone keep the log bounded.
    fn start(path: &Path) -> Option<Checkpointer> {
        let conn = match Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| {
            conn.busy_timeout(super::BUSY_TIMEOUT)?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            // This connection never commits, so it never checkpoints on its own account.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            Ok(conn)
        }) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %db(e), "cannot open the store's checkpoint connection; the writer checkpoints by itself");
                return None;
            }
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("xiaoer-store-checkpoint".to_owned())
            .spawn(move || {
                let mut failing = false;
                loop {
                    let ended = match stopped.recv_timeout(CHECKPOINT_EVERY) {
                        Err(mpsc::RecvTimeoutError::Timeout) => false,
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
                    };
                    match checkpoint(&conn) {
                        Ok(()) if failing => {
                            tracing::info!("the store's checkpoints work again");
                            failing = false;
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            tracing::warn!(error = %db(e), "the store's write-ahead log cannot be copied into the database; it grows until this works again");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                    if ended {
                        break;
                    }
                }
                if let Err((_, e)) = conn.close() {
                    tracing::warn!(error = %db(e), "closing the store's checkpoint connection failed");
                }
            });
        match thread {
            Ok(thread) => Some(Checkpointer { stop, thread }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the store's checkpoint thread; the writer checkpoints by itself");
                None
            }
        }
    }

    /// Runs a last checkpoint and waits for the thread to end.
    fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::warn!("the store's checkpoint thread panicked");
        }
    }
}

/// One passive checkpoint: copies what it can without waiting for the writer or readers.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    // A busy result (another checkpoint running) is a row, not an error; try again next time.
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

impl crate::store::writer::Backend for SqliteWriter {
    async fn apply_batch(
        &mut self,
        ops: &[&Op],
    ) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
        let owned: Vec<Op> = ops.iter().map(|op| (*op).clone()).collect();
        let n = owned.len();
        // The batch comes back to be dropped here: freeing a thousand turns is work the
        // writer thread, which every commit waits for, need not do.
        let (results, durable) = self
            .call(move |native| {
                let applied = native.apply_batch(&owned);
                (applied, owned)
            })
            .await
            .map_or_else(
                || {
                    Err(StoreError::Closed {
                        context: format!("commit a batch of {n} writes"),
                    })
                },
                |(applied, _batch)| applied,
            )?;
        self.durable = durable;
        Ok(results)
    }

    fn take_durable(&mut self) -> Option<Durable> {
        self.durable.take()
    }

    async fn limit_pages(&mut self, pages: u32) {
        self.call(move |native| {
            let _ = native
                .conn
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |row| {
                    row.get::<_, i64>(0)
                });
        })
        .await;
    }

    async fn close(self) {
        let SqliteWriter { jobs, closed, .. } = self;
        drop(jobs);
        let _ = closed.await;
    }
}

/// A committed batch's results, and what makes it durable (`None`: it already is).
type Applied = (Vec<Result<Reply, StoreError>>, Option<Durable>);

impl Native {
    fn apply_batch(&mut self, ops: &[Op]) -> Result<Applied, StoreError> {
        if self.inode.is_some() && super::inode_of(&self.path) != self.inode {
            // The connection would go on writing to a file nobody can open again.
            return Err(StoreError::Vanished {
                path: self.path.clone(),
            });
        }
        if let Some(failure) = self.syncer.as_ref().and_then(Syncer::failure) {
            // Pages the kernel could not write may be gone: nothing more is committed on top
            // of them.
            return Err(failure.to_error());
        }
        let result = apply_all(&self.conn, ops);
        if result.is_err() {
            // A failed COMMIT (a full disk) can leave the transaction open; a connection stuck
            // in it would report later batches as committed while writing nothing.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let results = result?;
        let durable = match &self.syncer {
            Some(syncer) => Some(syncer.request()?),
            None => None,
        };
        Ok((results, durable))
    }
}

/// The thread that `fdatasync`s the write-ahead log for the writer (see the module docs).
struct Syncer {
    requests: mpsc::Sender<tokio::sync::oneshot::Sender<Result<(), NotDurable>>>,
    log: PathBuf,
    /// The sync that failed, once one has: every later batch is refused.
    failed: std::sync::Arc<std::sync::Mutex<Option<NotDurable>>>,
}

impl Syncer {
    /// Starts the thread for the store at `path`; `None` (with a warning) if it cannot start.
    fn start(path: &Path) -> Option<Syncer> {
        let mut log = path.as_os_str().to_owned();
        log.push("-wal");
        let log = PathBuf::from(log);
        let (requests, waiting) =
            mpsc::channel::<tokio::sync::oneshot::Sender<Result<(), NotDurable>>>();
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let syncer = Syncer {
            requests,
            log: log.clone(),
            failed: std::sync::Arc::clone(&failed),
        };
        let started = std::thread::Builder::new()
            .name("xiaoer-store-sync".to_owned())
            .spawn(move || {
                let mut file: Option<(std::fs::File, Option<u64>)> = None;
                while let Ok(first) = waiting.recv() {
                    // Every commit whose request is here was written before this sync starts.
                    let mut answer = vec![first];
                    answer.extend(waiting.try_iter());
                    let earlier = lock(&failed).clone();
                    let outcome = match earlier {
                        Some(failure) => Err(failure),
                        None => sync_log(&log, &mut file),
                    };
                    if let Err(failure) = &outcome
                        && failure.kind != std::io::ErrorKind::NotFound
                    {
                        *lock(&failed) = Some(failure.clone());
                    }
                    for waiter in answer {
                        let _ = waiter.send(outcome.clone());
                    }
                }
            });
        match started {
            Ok(_) => Some(syncer),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the store's sync thread; commits sync themselves");
                None
            }
        }
    }

    /// The sync that failed, if one has.
    fn failure(&self) -> Option<NotDurable> {
        lock(&self.failed).clone()
    }

    /// Asks for everything committed so far to be made durable.
    fn request(&self) -> Result<Durable, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.requests
            .send(tx)
            .map_err(|_| NotDurable::thread_stopped(self.log.clone()).to_error())?;
        Ok(rx)
    }
}

/// The failed sync, even if a panic poisoned its lock: it is the best knowledge there is.
fn lock(
    failed: &std::sync::Mutex<Option<NotDurable>>,
) -> std::sync::MutexGuard<'_, Option<NotDurable>> {
    failed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `fdatasync`s the log at `path`, through `file` while it is still the file at that path.
fn sync_log(
    path: &Path,
    file: &mut Option<(std::fs::File, Option<u64>)>,
) -> Result<(), NotDurable> {
    let failure = |e: std::io::Error| NotDurable {
        path: path.to_owned(),
        kind: e.kind(),
        message: e.to_string(),
    };
    let inode = super::inode_of(path);
    let current = match file.take() {
        Some((open, at)) if inode.is_some() && at == inode => open,
        _ => std::fs::File::open(path).map_err(failure)?,
    };
    let synced = current.sync_data().map_err(failure);
    *file = Some((current, inode));
    synced
}

fn apply_all(conn: &Connection, ops: &[Op]) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
    // IMMEDIATE takes the write lock up front, so the version checks below read what the
    // transaction's writes will be based on, even with another process writing.
    conn.prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut begin| begin.execute([]))
        .map_err(|e| StoreError::query("begin a write transaction", db(e)))?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        match apply(conn, op) {
            Err(e) if e.is_database_failure() => return Err(e),
            result => results.push(result),
        }
    }
    conn.prepare_cached("COMMIT")
        .and_then(|mut commit| commit.execute([]))
        .map_err(|e| StoreError::query(format!("commit a batch of {} writes", ops.len()), db(e)))?;
    Ok(results)
}

fn apply(conn: &Connection, op: &Op) -> Result<Reply, StoreError> {
    let cx = |e| StoreError::query(op.describe(), db(e));
    match op {
        Op::Turn(turn) => apply_turn(conn, turn, op).map(Reply::Turn),
        Op::Account(account) => apply_account(conn, account, op),
        Op::Outbox(change) => super::outbox::apply(conn, change)
            .map(|written| Reply::Created(i64::from(written)))
            .map_err(cx),
        Op::ClockWarning(warning) => super::clock::warn(conn, warning)
            .map(|written| Reply::Created(i64::from(written)))
            .map_err(cx),
        Op::MarkDelivery {
            line,
            delivery,
            message_id,
        } => conn
            .prepare_cached(
                "UPDATE transcript SET delivery = ?2, message_id = COALESCE(?3, message_id) \
                 WHERE id = ?1",
            )
            .and_then(|mut update| update.execute(params![line, delivery.as_str(), message_id]))
            .map(|_| Reply::Done)
            .map_err(cx),
        Op::Append(entry) => insert_transcript(conn, entry, None)
            .map(|_| Reply::Done)
            .map_err(cx),
        Op::LeftUnsent {
            platform,
            self_id,
            before_ms,
        } => conn
            .prepare_cached(
                "UPDATE transcript SET delivery = 'unknown' WHERE platform = ?1 AND self_id = ?2 \
                 AND direction = 'outbound' AND delivery = 'pending' AND at_ms < ?3",
            )
            .and_then(|mut update| update.execute(params![platform, self_id, before_ms]))
            .map(|changed| Reply::Created(i64::try_from(changed).unwrap_or(i64::MAX)))
            .map_err(cx),
        // Kept for parity with PostgreSQL: one daemon holds a SQLite store, so nothing else
        // reads this backlog, and a turn's fence is not checked here.
        Op::Seen(seen) => conn
            .prepare_cached(
                "INSERT INTO inbound_backlog (seq, platform, self_id, user_id, message_id, body, \
                 parts, received_ms, received_by) \
                 VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM inbound_backlog), \
                 ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    seen.key.platform,
                    seen.key.self_id,
                    seen.key.user_id,
                    seen.message_id,
                    seen.text,
                    rows::parts_json(&seen.parts),
                    seen.received_ms,
                    &*seen.received_by,
                ])
            })
            .map(|_| Reply::Done)
            .map_err(cx),
        Op::Flush | Op::Shutdown => Ok(Reply::Done),
        #[cfg(test)]
        Op::FailForTest => conn
            .execute("SELECT * FROM no_such_table", [])
            .map(|_| Reply::Done)
            .map_err(cx),
    }
}

fn apply_turn(conn: &Connection, turn: &Turn, op: &Op) -> Result<TurnOutcome, StoreError> {
    let db = |e| StoreError::query(op.describe(), db(e));
    let key = turn.key();
    let stored: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT state, version FROM conversations \
             WHERE platform = ?1 AND self_id = ?2 AND user_id = ?3",
        )
        .and_then(|mut select| {
            select
                .query_row(params![key.platform, key.self_id, key.user_id], |row| {
                    Ok((row.get("state")?, row.get("version")?))
                })
                .optional()
        })
        .map_err(db)?;
    let (before, stored_version) = match &stored {
        Some((state, version)) => (
            Some(rows::parse::<ConversationState>(
                state,
                "reading a conversation",
            )?),
            *version,
        ),
        None => (None, 0),
    };
    if stored_version != turn.conversation.version {
        return Err(StoreError::Conflict {
            key: key.clone(),
            expected: turn.conversation.version,
            found: stored_version,
        });
    }
    let mut found = Vec::with_capacity(turn.escalations.len());
    for step in &turn.escalations {
        found.push(match step.id() {
            Some(id) => Some(check_step(conn, id, turn, step, op)?),
            None => None,
        });
    }
    if let Some(inbound) = &turn.inbound {
        if !insert_inbound_id(conn, key, inbound).map_err(db)? {
            return Ok(TurnOutcome::Duplicate);
        }
        insert_transcript(
            conn,
            &inbound_entry(key, inbound),
            inbound.decision.as_ref(),
        )
        .map_err(db)?;
    }
    let version = stored_version + 1;
    upsert_conversation(conn, turn, version).map_err(db)?;
    let after = turn.conversation.state;
    if before != Some(after) {
        record_change(conn, turn, before, after).map_err(db)?;
    }
    let mut escalation_id = None;
    for (step, found) in turn.escalations.iter().zip(found) {
        escalation_id = Some(apply_step(conn, turn, step, found).map_err(db)?);
    }
    super::clock::apply_steps(conn, key, &turn.clock, turn.at_ms).map_err(db)?;
    let mut outbound = Vec::with_capacity(turn.outbound.len());
    for line in &turn.outbound {
        let entry = TranscriptEntry {
            key: key.clone(),
            direction: Direction::Outbound,
            sender: line.sender.clone(),
            message_id: None,
            text: line.text.clone(),
            parts: Vec::new(),
            delivery: Some(Delivery::Pending),
            at_ms: line.at_ms,
        };
        outbound.push(insert_transcript(conn, &entry, None).map_err(db)?);
    }
    Ok(TurnOutcome::Applied {
        version,
        escalation: escalation_id,
        outbound,
    })
}

/// Refuses a step on an escalation that is not in a state it applies to.
fn check_step(
    conn: &Connection,
    id: i64,
    turn: &Turn,
    step: &EscalationStep,
    op: &Op,
) -> Result<Escalation, StoreError> {
    let escalation = find_escalation(conn, id, op)?;
    if &escalation.key != turn.key() {
        return Err(StoreError::EscalationNotFound { id });
    }
    if escalation.state == EscalationState::Closed {
        return Err(StoreError::EscalationClosed { id });
    }
    match (step, escalation.claimed_by.as_deref()) {
        (EscalationStep::Claim { agent, .. }, Some(holder))
            if escalation.state == EscalationState::Claimed && holder != agent =>
        {
            Err(StoreError::AlreadyClaimed {
                id,
                agent: holder.to_owned(),
            })
        }
        (EscalationStep::Release { .. }, _) if escalation.state != EscalationState::Claimed => {
            Err(StoreError::NotClaimed { id })
        }
        _ => Ok(escalation),
    }
}

fn apply_step(
    conn: &Connection,
    turn: &Turn,
    step: &EscalationStep,
    found: Option<Escalation>,
) -> rusqlite::Result<i64> {
    let key = turn.key();
    let at = turn.at_ms;
    let actor = turn.actor.to_string();
    // The notification this step causes, written with it so that a crash cannot separate them.
    let mut notify = None;
    let (id, kind, queue) = match step {
        EscalationStep::Open {
            queue,
            reason,
            rule,
            first_message,
        } => {
            let inserted: Option<i64> = conn
                .prepare_cached(
                    "INSERT INTO escalations \
                     (platform, self_id, user_id, queue, reason, rule, state, created_ms, \
                     first_message) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7, ?8) \
                     ON CONFLICT (platform, self_id, user_id) WHERE state <> 'closed' DO NOTHING \
                     RETURNING id",
                )?
                .query_row(
                    params![
                        key.platform,
                        key.self_id,
                        key.user_id,
                        queue.as_str(),
                        reason,
                        rule,
                        at,
                        first_message
                    ],
                    |row| row.get(0),
                )
                .optional()?;
            notify = inserted.is_some().then_some("escalation.created");
            let id = match inserted {
                Some(id) => id,
                // The chat already waits (written by another process): it keeps its place.
                None => conn
                    .prepare_cached(
                        "SELECT id FROM escalations WHERE platform = ?1 AND self_id = ?2 \
                         AND user_id = ?3 AND state <> 'closed'",
                    )?
                    .query_row(params![key.platform, key.self_id, key.user_id], |row| {
                        row.get(0)
                    })?,
            };
            conn.prepare_cached(
                "UPDATE conversations SET open_escalation = ?4 \
                 WHERE platform = ?1 AND self_id = ?2 AND user_id = ?3",
            )?
            .execute(params![key.platform, key.self_id, key.user_id, id])?;
            (id, EscalationEvent::Opened, *queue)
        }
        EscalationStep::Raise { id, queue, reason } => {
            conn.prepare_cached("UPDATE escalations SET queue = ?2, reason = ?3 WHERE id = ?1")?
                .execute(params![id, queue.as_str(), reason])?;
            notify = Some("escalation.raised");
            (*id, EscalationEvent::Raised, *queue)
        }
        EscalationStep::Claim { id, agent } => {
            conn.prepare_cached(
                "UPDATE escalations SET state = 'claimed', claimed_by = ?2, claimed_ms = ?3 \
                 WHERE id = ?1",
            )?
            .execute(params![id, agent, at])?;
            (*id, EscalationEvent::Claimed, queue_of(found.as_ref()))
        }
        EscalationStep::Release { id } => {
            conn.prepare_cached(
                "UPDATE escalations SET state = 'open', claimed_by = NULL, claimed_ms = NULL \
                 WHERE id = ?1",
            )?
            .execute(params![id])?;
            (*id, EscalationEvent::Released, queue_of(found.as_ref()))
        }
        EscalationStep::Transfer { id, queue, agent } => {
            let state = if agent.is_some() { "claimed" } else { "open" };
            conn.prepare_cached(
                "UPDATE escalations SET queue = ?2, state = ?3, claimed_by = ?4, \
                 claimed_ms = CASE WHEN ?4 IS NULL THEN NULL ELSE ?5 END WHERE id = ?1",
            )?
            .execute(params![id, queue.as_str(), state, agent, at])?;
            (*id, EscalationEvent::Transferred, *queue)
        }
        EscalationStep::Close { id, outcome } => {
            conn.prepare_cached(
                "UPDATE escalations SET state = 'closed', closed_by = ?2, closed_ms = ?3, \
                 outcome = ?4 WHERE id = ?1",
            )?
            .execute(params![id, actor, at, outcome])?;
            (*id, EscalationEvent::Closed, queue_of(found.as_ref()))
        }
    };
    conn.prepare_cached(
        "INSERT INTO escalation_events (escalation_id, kind, queue, actor, detail, at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        id,
        kind.as_str(),
        queue.as_str(),
        actor,
        turn.reason,
        at
    ])?;
    let event = conn.last_insert_rowid();
    if let Some(notify) = notify {
        enqueue_notification(
            conn,
            &format!("{notify}:{id}:{event}"),
            notify,
            id,
            &turn.reason,
            at,
        )?;
    }
    Ok(id)
}

/// Puts a notification about escalation `id` in the outbox, as the escalation stands now; a key
/// already there is left alone, so an event noticed twice is delivered once.
pub(crate) fn enqueue_notification(
    conn: &Connection,
    key: &str,
    event: &str,
    id: i64,
    detail: &str,
    at_ms: i64,
) -> rusqlite::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO outbox \
             (key, event, platform, self_id, user_id, queue, escalation_id, first_message, \
             detail, at_ms) \
             SELECT ?1, ?2, platform, self_id, user_id, queue, id, first_message, ?4, ?5 \
             FROM escalations WHERE id = ?3 \
             ON CONFLICT (key) DO NOTHING",
        )?
        .execute(params![key, event, id, detail, at_ms])?;
    Ok(inserted > 0)
}

fn queue_of(escalation: Option<&Escalation>) -> Queue {
    escalation.map_or(Queue::Human, |e| e.queue)
}

/// Records a message id unless the chat already has it; `true` if new.
fn insert_inbound_id(
    conn: &Connection,
    key: &ConversationKey,
    inbound: &InboundLine,
) -> rusqlite::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO inbound_messages (platform, self_id, user_id, message_id, at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            key.platform,
            key.self_id,
            key.user_id,
            inbound.message_id,
            inbound.at_ms
        ])?;
    Ok(inserted > 0)
}

fn inbound_entry(key: &ConversationKey, inbound: &InboundLine) -> TranscriptEntry {
    TranscriptEntry {
        key: key.clone(),
        direction: inbound.direction,
        sender: inbound.sender.clone(),
        message_id: Some(inbound.message_id.clone()),
        text: inbound.text.clone(),
        parts: inbound.parts.clone(),
        delivery: None,
        at_ms: inbound.at_ms,
    }
}

fn upsert_conversation(conn: &Connection, turn: &Turn, version: i64) -> rusqlite::Result<()> {
    let c = &turn.conversation;
    conn.prepare_cached(
        "INSERT INTO conversations (platform, self_id, user_id, state, state_since_ms, \
         paused_until_ms, greeted_at_ms, fallback_streak, queued_notice_sent, open_escalation, \
         last_buyer_ms, last_staff_ms, last_item_id, last_item_title, off_hours_notice_ms, \
         version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
         ON CONFLICT (platform, self_id, user_id) DO UPDATE SET \
         state = excluded.state, state_since_ms = excluded.state_since_ms, \
         paused_until_ms = excluded.paused_until_ms, greeted_at_ms = excluded.greeted_at_ms, \
         fallback_streak = excluded.fallback_streak, \
         queued_notice_sent = excluded.queued_notice_sent, \
         open_escalation = excluded.open_escalation, last_buyer_ms = excluded.last_buyer_ms, \
         last_staff_ms = excluded.last_staff_ms, last_item_id = excluded.last_item_id, \
         last_item_title = excluded.last_item_title, \
         off_hours_notice_ms = excluded.off_hours_notice_ms, version = excluded.version",
    )?
    .execute(params![
        c.key.platform,
        c.key.self_id,
        c.key.user_id,
        c.state.as_str(),
        c.state_since_ms,
        c.paused_until_ms,
        c.greeted_at_ms,
        c.fallback_streak,
        i64::from(c.queued_notice_sent),
        c.open_escalation,
        c.last_buyer_ms,
        c.last_staff_ms,
        c.last_item.as_ref().map(|i| i.id.as_str()),
        c.last_item.as_ref().map(|i| i.title.as_str()),
        c.off_hours_notice_ms,
        version
    ])?;
    Ok(())
}

/// Inserts a transcript line, with what routing decided when it is a buyer message; returns
/// its id. (The id is read back with `last_insert_rowid`, not `RETURNING`: SQLite answers
/// `RETURNING` through a temporary table, which cost a fifth of every transcript insert.)
pub(crate) fn insert_transcript(
    conn: &Connection,
    entry: &TranscriptEntry,
    decision: Option<&DecisionRecord>,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO transcript \
         (platform, self_id, user_id, direction, sender, message_id, body, parts, delivery, at_ms, \
         action, topic, rule, decided_by) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        entry.key.platform,
        entry.key.self_id,
        entry.key.user_id,
        entry.direction.as_str(),
        entry.sender.to_string(),
        entry.message_id,
        entry.text,
        rows::parts_json(&entry.parts),
        entry.delivery.map(Delivery::as_str),
        entry.at_ms,
        decision.map(|d| d.action.as_str()),
        decision.map(|d| d.topic.as_str()),
        decision.and_then(|d| d.rule.as_deref()),
        decision.map(|d| d.decided_by.as_str()),
    ])?;
    Ok(conn.last_insert_rowid())
}

fn find_escalation(conn: &Connection, id: i64, op: &Op) -> Result<Escalation, StoreError> {
    const CX: &str = "reading an escalation";
    let failed = |e| StoreError::query(op.describe(), db(e));
    let mut select = conn
        .prepare_cached(&format!(
            "SELECT {} FROM escalations WHERE id = ?1",
            rows::ESCALATION_COLUMNS
        ))
        .map_err(failed)?;
    let mut found = select.query(params![id]).map_err(failed)?;
    let Some(row) = found.next().map_err(failed)? else {
        return Err(StoreError::EscalationNotFound { id });
    };
    fn get<T: rusqlite::types::FromSql>(
        row: &rusqlite::Row<'_>,
        column: &str,
    ) -> Result<T, StoreError> {
        row.get(column)
            .map_err(|e| StoreError::query(format!("read column {column} while {CX}"), db(e)))
    }
    Ok(Escalation {
        id: get(row, "id")?,
        key: ConversationKey {
            platform: get(row, "platform")?,
            self_id: get(row, "self_id")?,
            user_id: get(row, "user_id")?,
        },
        queue: rows::parse(&get::<String>(row, "queue")?, CX)?,
        reason: get(row, "reason")?,
        rule: get(row, "rule")?,
        state: rows::parse(&get::<String>(row, "state")?, CX)?,
        created_ms: get(row, "created_ms")?,
        claimed_by: get(row, "claimed_by")?,
        claimed_ms: get(row, "claimed_ms")?,
        first_message: get(row, "first_message")?,
        closed_by: get(row, "closed_by")?,
        outcome: get(row, "outcome")?,
    })
}

fn record_change(
    conn: &Connection,
    turn: &Turn,
    from: Option<ConversationState>,
    to: ConversationState,
) -> rusqlite::Result<()> {
    let key = turn.key();
    conn.prepare_cached(
        "INSERT INTO state_changes \
         (platform, self_id, user_id, from_state, to_state, actor, reason, at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        key.platform,
        key.self_id,
        key.user_id,
        from.map(ConversationState::as_str),
        to.as_str(),
        turn.actor.to_string(),
        turn.reason,
        turn.conversation.state_since_ms
    ])?;
    Ok(())
}

fn apply_account(conn: &Connection, account: &AccountOp, op: &Op) -> Result<Reply, StoreError> {
    let db = |e| StoreError::query(op.describe(), db(e));
    let run = |sql: &str, params: &[&dyn rusqlite::ToSql]| {
        conn.prepare_cached(sql)
            .and_then(|mut statement| statement.execute(params))
            .map_err(db)
    };
    let returning = |sql: &str, params: &[&dyn rusqlite::ToSql]| {
        conn.prepare_cached(sql)
            .and_then(|mut statement| statement.query_row(params, |row| row.get::<_, i64>(0)))
            .map_err(db)
    };
    match account {
        AccountOp::AddAgent {
            agent,
            password_hash,
        } => {
            let inserted = run(
                "INSERT INTO agents (name, password_hash, role, shops, disabled, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![
                    agent.name,
                    password_hash,
                    agent.role.as_str(),
                    agent.shops.join(" "),
                    i64::from(agent.disabled),
                    agent.created_ms
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::AgentExists {
                    name: agent.name.clone(),
                });
            }
        }
        AccountOp::SetPassword {
            name,
            password_hash,
        } => {
            let updated = run(
                "UPDATE agents SET password_hash = ?2 WHERE name = ?1",
                params![name, password_hash],
            )?;
            if updated == 0 {
                return Err(StoreError::AgentNotFound { name: name.clone() });
            }
            end_sessions(conn, name).map_err(db)?;
        }
        AccountOp::SetDisabled { name, disabled } => {
            let updated = run(
                "UPDATE agents SET disabled = ?2 WHERE name = ?1",
                params![name, i64::from(*disabled)],
            )?;
            if updated == 0 {
                return Err(StoreError::AgentNotFound { name: name.clone() });
            }
            if *disabled {
                end_sessions(conn, name).map_err(db)?;
            }
        }
        AccountOp::CreateSession {
            token_hash,
            agent,
            csrf,
            at_ms,
        } => {
            run(
                "INSERT INTO sessions (token_hash, agent, csrf, created_ms, last_seen_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![token_hash, agent, csrf, at_ms],
            )?;
        }
        AccountOp::TouchSession { token_hash, at_ms } => {
            run(
                "UPDATE sessions SET last_seen_ms = MAX(last_seen_ms, ?2) WHERE token_hash = ?1",
                params![token_hash, at_ms],
            )?;
        }
        AccountOp::DeleteSession { token_hash } => {
            run(
                "DELETE FROM sessions WHERE token_hash = ?1",
                params![token_hash],
            )?;
        }
        AccountOp::ExpireSessions { before_ms } => {
            run(
                "DELETE FROM sessions WHERE last_seen_ms < ?1",
                params![before_ms],
            )?;
        }
        AccountOp::AddNote(note) => {
            let id = returning(
                "INSERT INTO notes \
                 (platform, self_id, user_id, escalation_id, author, kind, body, at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                params![
                    note.key.platform,
                    note.key.self_id,
                    note.key.user_id,
                    note.escalation,
                    note.author,
                    note.kind.as_str(),
                    note.body,
                    note.at_ms
                ],
            )?;
            return Ok(Reply::Created(id));
        }
        AccountOp::AddPhrase { agent, text, at_ms } => {
            let id = returning(
                "INSERT INTO quick_phrases (agent, text, created_ms) VALUES (?1, ?2, ?3) \
                 RETURNING id",
                params![agent, text, at_ms],
            )?;
            return Ok(Reply::Created(id));
        }
        AccountOp::DeletePhrase { agent, id } => {
            run(
                "DELETE FROM quick_phrases WHERE id = ?1 AND agent = ?2",
                params![id, agent],
            )?;
        }
    }
    Ok(Reply::Done)
}

fn end_sessions(conn: &Connection, agent: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM sessions WHERE agent = ?1")?
        .execute(params![agent])?;
    Ok(())
}
