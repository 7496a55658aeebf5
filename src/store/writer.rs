//! The one task that writes, for any backend.
//!
//! Requests arrive over a bounded channel. The writer takes everything that is waiting (up to
//! [`BATCH_CAP`]), has the backend apply it in one transaction and commit, and only then answers
//! each request. A burst of a thousand chats therefore costs a handful of commits, and a caller
//! that awaits its answer (a turn with an escalation) knows its write is durable.
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
    let mut batch = Vec::with_capacity(BATCH_CAP);
    loop {
        if rx.recv_many(&mut batch, BATCH_CAP).await == 0 {
            break;
        }
        if batch.iter().any(|r| matches!(r.op, Op::Shutdown)) {
            // Refuse new requests but still drain (and commit) what is already queued.
            rx.close();
        }
        commit_batch(&mut backend, &mut batch, &counters, &faults).await;
    }
    backend.close().await;
    tracing::debug!("store writer stopped");
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

pub(crate) async fn commit_batch<B: Backend>(
    backend: &mut B,
    batch: &mut Vec<Request>,
    counters: &Counters,
    faults: &Faults,
) {
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters
        .requests
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let ops: Vec<&Op> = batch.iter().map(|r| &r.op).collect();
    let results = match commit(backend, &ops, faults, counters).await {
        Ok(results) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.commit_outcome(None);
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
    let failed = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.is_database_failure()))
        .count();
    counters
        .failed_requests
        .fetch_add(failed as u64, Ordering::Relaxed);
    for (request, result) in batch.drain(..).zip(results) {
        match request.reply {
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
