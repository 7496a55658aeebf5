//! The one task that writes, for any backend.
//!
//! Requests arrive over a bounded channel. The writer takes everything that is waiting (up to
//! [`BATCH_CAP`]), has the backend apply it in one transaction and commit, and answers each
//! request only once the batch is durable. A burst of a thousand chats therefore costs a handful
//! of commits, and a caller that awaits its answer (a turn with an escalation) knows its write is
//! on disk.
//!
//! A backend may return from a commit before the disk has it and hand back a [`Durable`] that
//! resolves once it does (SQLite: see `sqlite/write.rs`). The writer then commits the next batch
//! while the disk works on the last one, and a second task answers the held batches in order as
//! each becomes durable; at most [`HELD_BATCHES`] wait at a time.
//!
//! If a batch fails at the database, nothing of it was committed; it is replayed one request per
//! transaction, so one bad row fails only its own request. Refusals (a stale conversation
//! version, claiming a closed escalation, …) are decided before anything of that request is
//! written and do not fail the batch.
//!
//! The SQL lives in the backends (`sqlite/`, `postgres/`); this file knows only batches and
//! answers.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;
use super::ops::{Op, Reply};

/// The most requests committed in one transaction.
pub(crate) const BATCH_CAP: usize = 1024;

/// How many committed batches may wait for the disk while the writer commits more.
const HELD_BATCHES: usize = 4;

/// Resolves once a committed batch is durable, or says why it cannot be.
pub(crate) type Durable = oneshot::Receiver<Result<(), NotDurable>>;

/// Why committed writes could not be made durable: the file and the failure's words (an
/// `io::Error` cannot be cloned, and every request of the batch gets its own error).
#[derive(Debug, Clone)]
pub(crate) struct NotDurable {
    pub(crate) path: std::path::PathBuf,
    pub(crate) kind: std::io::ErrorKind,
    pub(crate) message: String,
}

impl NotDurable {
    /// The failure when the thread that makes writes to `path` durable is gone.
    pub(crate) fn thread_stopped(path: std::path::PathBuf) -> NotDurable {
        NotDurable {
            path,
            kind: std::io::ErrorKind::Other,
            message: "the thread that makes writes durable stopped".to_owned(),
        }
    }

    pub(crate) fn to_error(&self) -> StoreError {
        StoreError::NotDurable {
            path: self.path.clone(),
            cause: std::io::Error::new(self.kind, self.message.clone()),
        }
    }
}

/// A database the writer can commit batches to.
pub(crate) trait Backend: Send + 'static {
    /// Applies `ops` in order in one transaction and commits it. `Ok` holds one result per op
    /// (refusals among them); `Err` means nothing was committed and the transaction is gone.
    fn apply_batch(
        &mut self,
        ops: &[&Op],
    ) -> impl Future<Output = Result<Vec<Result<Reply, StoreError>>, StoreError>> + Send;

    /// Caps the database's size in pages (an injected full disk); a large value lifts it.
    fn limit_pages(&mut self, pages: u32) -> impl Future<Output = ()> + Send;

    /// Closes the connection.
    fn close(self) -> impl Future<Output = ()> + Send;

    /// What makes the last committed batch durable, for a backend whose commit returns before
    /// the disk has it; `None` when it is durable already.
    fn take_durable(&mut self) -> Option<Durable> {
        None
    }
}

/// A request and where to send its answer (`None`: nobody waits; failures are logged).
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) reply: Option<oneshot::Sender<Result<Reply, StoreError>>>,
}

/// Counters the writer keeps, readable from any handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) retried_batches: AtomicU64,
    pub(crate) failed_requests: AtomicU64,
    /// Why the last commit failed, while commits keep failing; `None` once one succeeds.
    pub(crate) failing: std::sync::Mutex<Option<String>>,
    /// Where commit times and batch sizes go, once the daemon has its metrics.
    pub(crate) metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

impl Counters {
    /// Records the outcome of a commit, saying loudly when the store stops and starts taking
    /// writes again.
    fn commit_outcome(&self, failure: Option<&StoreError>) {
        let mut failing = self
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (failure, failing.is_some()) {
            (Some(error), false) => {
                tracing::error!(%error, "the store cannot write; nothing is acknowledged to buyers until it can");
                *failing = Some(error.to_string());
            }
            (Some(error), true) => *failing = Some(error.to_string()),
            (None, true) => {
                tracing::info!("the store writes again");
                *failing = None;
            }
            (None, false) => {}
        }
    }
}

/// A failure to inject at the writer's commit points, for tests of what a crash or a failing
/// disk does. Set with [`Store::inject_fault`](super::Store::inject_fault), or for a daemon
/// process with `XIAOER_TEST_FAULT` (`fail-commits:N`, `abort-before-escalation-commit`,
/// `abort-after-escalation-commit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next `n` commits fail as a full disk would (nothing of them is written).
    FailCommits(u32),
    /// The process aborts just before it commits a batch that opens an escalation.
    AbortBeforeEscalationCommit,
    /// The process aborts just after it committed a batch that opens an escalation.
    AbortAfterEscalationCommit,
    /// The database may grow to at most this many pages, as if the disk were full; a large
    /// value gives the room back.
    PageLimit(u32),
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("fail-commits", n)) => n
                .parse()
                .map(Fault::FailCommits)
                .map_err(|_| format!("fail-commits needs a count, not {n:?}")),
            Some(("page-limit", n)) => n
                .parse()
                .map(Fault::PageLimit)
                .map_err(|_| format!("page-limit needs a count, not {n:?}")),
            None if s == "abort-before-escalation-commit" => Ok(Fault::AbortBeforeEscalationCommit),
            None if s == "abort-after-escalation-commit" => Ok(Fault::AbortAfterEscalationCommit),
            _ => Err(format!("unknown fault {s:?}")),
        }
    }
}

/// The faults armed on a writer.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// A page limit waiting to be applied by the writer (0: none).
    page_limit: AtomicU32,
    fail_commits: AtomicU32,
    abort_before_escalation: AtomicBool,
    abort_after_escalation: AtomicBool,
}

impl Faults {
    pub(crate) fn arm(&self, fault: Fault) {
        match fault {
            Fault::FailCommits(n) => self.fail_commits.store(n, Ordering::SeqCst),
            Fault::PageLimit(n) => self.page_limit.store(n.max(1), Ordering::SeqCst),
            Fault::AbortBeforeEscalationCommit => {
                self.abort_before_escalation.store(true, Ordering::SeqCst)
            }
            Fault::AbortAfterEscalationCommit => {
                self.abort_after_escalation.store(true, Ordering::SeqCst)
            }
        }
    }

    /// Takes one injected commit failure, if any is armed.
    fn take_failure(&self) -> bool {
        self.fail_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn abort_if(&self, flag: &AtomicBool, ops: &[&Op], when: &str) {
        if flag.load(Ordering::SeqCst) && ops.iter().any(|op| op.opens_escalation()) {
            tracing::error!("injected fault: aborting {when} an escalation's commit");
            std::process::abort();
        }
    }
}

/// Runs until the store is closed (an [`Op::Shutdown`]) or every sender is gone.
pub(crate) async fn run<B: Backend>(
    mut backend: B,
    mut rx: mpsc::Receiver<Request>,
    counters: Arc<Counters>,
    faults: Arc<Faults>,
) {
    let (held_tx, mut held_rx) = mpsc::channel::<Held>(HELD_BATCHES);
    let answering = {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            while let Some(held) = held_rx.recv().await {
                held.answer(&counters).await;
            }
        })
    };
    let mut batch = Vec::with_capacity(BATCH_CAP);
    loop {
        if rx.recv_many(&mut batch, BATCH_CAP).await == 0 {
            break;
        }
        if batch.iter().any(|r| matches!(r.op, Op::Shutdown)) {
            // Refuse new requests but still drain (and commit) what is already queued.
            rx.close();
        }
        let held = hold_batch(&mut backend, &mut batch, &counters, &faults).await;
        if let Err(mpsc::error::SendError(held)) = held_tx.send(held).await {
            held.answer(&counters).await;
        }
    }
    drop(held_tx);
    if answering.await.is_err() {
        tracing::error!("the store's answering task panicked");
    }
    backend.close().await;
    tracing::debug!("store writer stopped");
}

/// Where a request's answer goes (`None`: nobody waits), and the answer.
type Answer = (
    Option<oneshot::Sender<Result<Reply, StoreError>>>,
    Result<Reply, StoreError>,
);

/// A committed batch whose requests are answered once it is durable.
pub(crate) struct Held {
    answers: Vec<Answer>,
    durable: Option<Durable>,
}

impl Held {
    /// Waits until the batch is durable, then answers every request; if the disk cannot store
    /// it, every request that was written is answered with that failure instead.
    pub(crate) async fn answer(self, counters: &Counters) {
        let Held {
            mut answers,
            durable,
        } = self;
        if let Some(durable) = durable {
            let failure = match durable.await {
                Ok(Ok(())) => None,
                Ok(Err(failure)) => Some(failure),
                Err(_) => Some(NotDurable::thread_stopped("(the store)".into())),
            };
            if let Some(failure) = failure {
                counters.commit_outcome(Some(&failure.to_error()));
                for (_, result) in &mut answers {
                    if result.is_ok() {
                        *result = Err(failure.to_error());
                    }
                }
            }
        }
        let failed = answers
            .iter()
            .filter(|(_, r)| matches!(r, Err(e) if e.is_database_failure()))
            .count();
        counters
            .failed_requests
            .fetch_add(failed as u64, Ordering::Relaxed);
        for (reply, result) in answers {
            match reply {
                Some(reply) => {
                    // The caller may have given up waiting; that is not the writer's problem.
                    let _ = reply.send(result);
                }
                None => {
                    if let Err(e) = result {
                        tracing::error!(error = %e, "store write lost");
                    }
                }
            }
        }
    }
}

async fn commit<B: Backend>(
    backend: &mut B,
    ops: &[&Op],
    faults: &Faults,
    counters: &Counters,
) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
    let limit = faults.page_limit.swap(0, Ordering::SeqCst);
    if limit > 0 {
        backend.limit_pages(limit).await;
    }
    if faults.take_failure() {
        return Err(StoreError::Injected);
    }
    faults.abort_if(&faults.abort_before_escalation, ops, "before");
    let started = std::time::Instant::now();
    let results = backend.apply_batch(ops).await;
    if results.is_ok() {
        faults.abort_if(&faults.abort_after_escalation, ops, "after");
        if let Some(metrics) = counters.metrics.get() {
            metrics.committed(ops.len(), started.elapsed());
        }
    }
    results
}

/// Commits `batch` (emptying it) and answers every request once it is durable.
#[cfg(test)]
pub(crate) async fn commit_batch<B: Backend>(
    backend: &mut B,
    batch: &mut Vec<Request>,
    counters: &Counters,
    faults: &Faults,
) {
    hold_batch(backend, batch, counters, faults)
        .await
        .answer(counters)
        .await;
}

/// Commits `batch` (emptying it), retrying its requests one by one if it fails, and returns
/// the answers to give once it is durable.
pub(crate) async fn hold_batch<B: Backend>(
    backend: &mut B,
    batch: &mut Vec<Request>,
    counters: &Counters,
    faults: &Faults,
) -> Held {
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters
        .requests
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let ops: Vec<&Op> = batch.iter().map(|r| &r.op).collect();
    let mut durable = None;
    let results = match commit(backend, &ops, faults, counters).await {
        Ok(results) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.commit_outcome(None);
            durable = backend.take_durable();
            results
        }
        Err(e) if ops.len() == 1 => {
            counters.commit_outcome(Some(&e));
            vec![Err(e)]
        }
        Err(e) => {
            counters.retried_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = %e,
                requests = ops.len(),
                "store batch failed; retrying its requests one by one"
            );
            let mut results = Vec::with_capacity(ops.len());
            for op in &ops {
                let result = match commit(backend, std::slice::from_ref(op), faults, counters).await
                {
                    Ok(mut one) => {
                        counters.commits.fetch_add(1, Ordering::Relaxed);
                        counters.commit_outcome(None);
                        // The log is one file written in order: making the last commit
                        // durable makes every earlier one durable too.
                        if let Some(later) = backend.take_durable() {
                            durable = Some(later);
                        }
                        one.pop().unwrap_or(Ok(Reply::Done))
                    }
                    Err(e) => {
                        counters.commit_outcome(Some(&e));
                        Err(e)
                    }
                };
                results.push(result);
            }
            results
        }
    };
    drop(ops);
    Held {
        answers: batch
            .drain(..)
            .map(|request| request.reply)
            .zip(results)
            .collect(),
        durable,
    }
}
