use std::sync::atomic::Ordering;

use sqlx::ConnectOptions;
use tokio::sync::oneshot;

use super::*;
use crate::model::{
    Actor, Conversation, ConversationKey, Direction, Queue, Sender, TranscriptEntry,
};
use crate::store::ops::{EscalationStep, InboundLine, Op, Reply, RoundStep, Turn, TurnOutcome};
use crate::store::writer::{Counters, Faults, Request, commit_batch};

fn request(op: Op) -> (Request, oneshot::Receiver<Result<Reply, StoreError>>) {
    let (tx, rx) = oneshot::channel();
    (
        Request {
            op,
            reply: Some(tx),
        },
        rx,
    )
}

fn key(user: &str) -> ConversationKey {
    ConversationKey::new("qq", "s", user)
}

/// A buyer's first message in a chat of its own.
fn inbound(user: &str, id: &str) -> Op {
    let mut turn = Turn::new(
        Conversation::new(key(user), 1),
        Actor::Bot,
        "message handled",
        1,
    );
    turn.inbound = Some(InboundLine {
        message_id: id.to_owned(),
        sender: Sender::Buyer,
        direction: Direction::Inbound,
        text: format!("text of {id}"),
        parts: Vec::new(),
        at_ms: 1,
        decision: None,
    });
    Op::Turn(Box::new(turn))
}

async fn writer(dir: &tempfile::TempDir) -> SqliteWriter {
    open_writer(&dir.path().join("t.db")).await.unwrap()
}

async fn count(writer: &mut SqliteWriter, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    writer
        .with_connection(move |conn| conn.query_row(&sql, [], |row| row.get(0)).unwrap())
        .await
}

#[tokio::test]
async fn the_writer_connection_is_wal_and_fully_synchronous() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = writer_options(&dir.path().join("t.db"))
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

#[tokio::test]
async fn the_writer_thread_connection_is_wal_fully_synchronous_and_checks_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let backend = writer(&dir).await;
    let (mode, sync, foreign_keys, timeout) = backend
        .with_connection(|conn| {
            let pragma = |name: &str| {
                conn.query_row(&format!("PRAGMA {name}"), [], |row| {
                    row.get::<_, rusqlite::types::Value>(0)
                })
                .unwrap()
            };
            (
                pragma("journal_mode"),
                pragma("synchronous"),
                pragma("foreign_keys"),
                pragma("busy_timeout"),
            )
        })
        .await;
    use rusqlite::types::Value;
    assert_eq!(mode, Value::Text("wal".to_owned()));
    // NORMAL: the commit writes the log and the sync thread makes it durable before anything
    // in the batch is answered (below).
    assert_eq!(sync, Value::Integer(1), "NORMAL");
    assert_eq!(foreign_keys, Value::Integer(1));
    assert_eq!(timeout, Value::Integer(5000));
}

#[tokio::test]
async fn every_commit_hands_back_a_sync_of_the_log_that_succeeds() {
    use crate::store::writer::Backend;
    let dir = tempfile::tempdir().unwrap();
    let mut backend = writer(&dir).await;
    for user in ["u1", "u2"] {
        let op = inbound(user, "m1");
        let results = backend.apply_batch(&[&op]).await.unwrap();
        assert!(matches!(
            results[0],
            Ok(Reply::Turn(TurnOutcome::Applied { .. }))
        ));
        let durable = backend.take_durable().expect("the commit waits for a sync");
        durable.await.unwrap().expect("the log is synced");
        assert!(backend.take_durable().is_none(), "one sync per commit");
    }
    assert_eq!(count(&mut backend, "inbound_messages").await, 2);
}

#[tokio::test]
async fn after_a_failed_sync_nothing_more_is_written() {
    use crate::store::writer::{Backend, NotDurable};
    let dir = tempfile::tempdir().unwrap();
    let mut backend = writer(&dir).await;
    let first = inbound("u1", "m1");
    backend.apply_batch(&[&first]).await.unwrap();
    backend
        .take_durable()
        .expect("a sync")
        .await
        .unwrap()
        .unwrap();
    backend
        .fail_sync_for_test(NotDurable {
            path: "t.db-wal".into(),
            kind: std::io::ErrorKind::Other,
            message: "Input/output error".to_owned(),
        })
        .await;
    let second = inbound("u2", "m1");
    let error = backend
        .apply_batch(&[&second])
        .await
        .expect_err("refused before it is written");
    assert!(matches!(error, StoreError::NotDurable { .. }), "{error}");
    assert_eq!(count(&mut backend, "inbound_messages").await, 1);
}

/// A backend that commits every request at once and leaves the test to say when the disk has
/// it.
struct SlowDisk {
    disk: std::sync::mpsc::Sender<oneshot::Sender<Result<(), crate::store::writer::NotDurable>>>,
    durable: Option<crate::store::writer::Durable>,
}

impl crate::store::writer::Backend for SlowDisk {
    async fn apply_batch(
        &mut self,
        ops: &[&Op],
    ) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.disk.send(tx).unwrap();
        self.durable = Some(rx);
        Ok(ops.iter().map(|_| Ok(Reply::Done)).collect())
    }

    async fn limit_pages(&mut self, _: u32) {}

    async fn close(self) {}

    fn take_durable(&mut self) -> Option<crate::store::writer::Durable> {
        self.durable.take()
    }
}

#[tokio::test]
async fn a_batch_is_answered_only_once_the_disk_has_it() {
    use crate::store::writer::{NotDurable, hold_batch};
    let (disk, synced) = std::sync::mpsc::channel();
    let mut backend = SlowDisk {
        disk,
        durable: None,
    };
    let counters = Counters::default();

    let (a, mut a_rx) = request(inbound("u1", "m1"));
    let held = hold_batch(&mut backend, &mut vec![a], &counters, &Faults::default()).await;
    assert!(
        matches!(a_rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
        "committed but not yet durable: not answered"
    );
    synced.try_recv().unwrap().send(Ok(())).unwrap();
    held.answer(&counters).await;
    assert!(matches!(a_rx.await.unwrap(), Ok(Reply::Done)));

    let (b, b_rx) = request(inbound("u2", "m1"));
    let held = hold_batch(&mut backend, &mut vec![b], &counters, &Faults::default()).await;
    synced
        .try_recv()
        .unwrap()
        .send(Err(NotDurable {
            path: "t.db-wal".into(),
            kind: std::io::ErrorKind::Other,
            message: "Input/output error".to_owned(),
        }))
        .unwrap();
    held.answer(&counters).await;
    let error = b_rx
        .await
        .unwrap()
        .expect_err("not durable, not acknowledged");
    assert!(matches!(error, StoreError::NotDurable { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("did not confirm writes to the store t.db-wal"),
        "{error}"
    );
    assert_eq!(counters.failed_requests.load(Ordering::Relaxed), 1);
    assert!(counters.failing.lock().unwrap().is_some(), "said loudly");
}

#[tokio::test]
async fn a_failing_request_fails_alone_and_the_rest_of_its_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = writer(&dir).await;
    let counters = Counters::default();

    let (a, a_rx) = request(inbound("u1", "m1"));
    let (bad, bad_rx) = request(Op::FailForTest);
    let (b, b_rx) = request(inbound("u2", "m2"));
    let mut batch = vec![a, bad, b];
    commit_batch(&mut backend, &mut batch, &counters, &Faults::default()).await;
    assert!(batch.is_empty());

    assert!(matches!(
        a_rx.await.unwrap(),
        Ok(Reply::Turn(TurnOutcome::Applied { version: 1, .. }))
    ));
    let err = bad_rx.await.unwrap().unwrap_err();
    assert!(
        err.to_string().starts_with("cannot fail on purpose: "),
        "{err}"
    );
    assert!(matches!(
        b_rx.await.unwrap(),
        Ok(Reply::Turn(TurnOutcome::Applied { .. }))
    ));
    assert_eq!(count(&mut backend, "transcript").await, 2);
    assert_eq!(count(&mut backend, "conversations").await, 2);
    assert_eq!(counters.retried_batches.load(Ordering::Relaxed), 1);
    assert_eq!(counters.failed_requests.load(Ordering::Relaxed), 1);
    assert_eq!(counters.commits.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_good_batch_is_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = writer(&dir).await;
    let counters = Counters::default();
    let mut receivers = Vec::new();
    let mut batch = Vec::new();
    for i in 0..100 {
        let (r, rx) = request(inbound(&format!("u{i}"), &format!("m{i}")));
        batch.push(r);
        receivers.push(rx);
    }
    commit_batch(&mut backend, &mut batch, &counters, &Faults::default()).await;
    for rx in receivers {
        assert!(matches!(
            rx.await.unwrap(),
            Ok(Reply::Turn(TurnOutcome::Applied { .. }))
        ));
    }
    assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
    assert_eq!(counters.requests.load(Ordering::Relaxed), 100);
}

#[tokio::test]
async fn an_injected_commit_failure_writes_nothing_of_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = writer(&dir).await;
    let faults = Faults::default();
    faults.arm(crate::store::Fault::FailCommits(1));
    let mut turn = Turn::new(Conversation::new(key("u"), 1), Actor::Bot, "refund", 1);
    turn.conversation.state = crate::model::ConversationState::Queued;
    turn.inbound = match inbound("u", "m1") {
        Op::Turn(t) => t.inbound,
        _ => None,
    };
    turn.escalations.push(EscalationStep::Open {
        queue: Queue::Refund,
        reason: "rule refund".into(),
        rule: Some("refund".into()),
        first_message: "我要退款".into(),
    });
    let (r, rx) = request(Op::Turn(Box::new(turn.clone())));
    commit_batch(&mut backend, &mut vec![r], &Counters::default(), &faults).await;
    assert!(matches!(rx.await.unwrap(), Err(StoreError::Injected)));
    for table in [
        "inbound_messages",
        "transcript",
        "conversations",
        "escalations",
    ] {
        assert_eq!(
            count(&mut backend, table).await,
            0,
            "{table} after a failed commit"
        );
    }
    // The same turn, handled again (a redelivery), commits whole.
    let (r, rx) = request(Op::Turn(Box::new(turn)));
    commit_batch(&mut backend, &mut vec![r], &Counters::default(), &faults).await;
    assert!(matches!(
        rx.await.unwrap(),
        Ok(Reply::Turn(TurnOutcome::Applied {
            escalation: Some(_),
            ..
        }))
    ));
    for table in [
        "inbound_messages",
        "conversations",
        "escalations",
        "escalation_events",
    ] {
        assert_eq!(count(&mut backend, table).await, 1, "{table}");
    }
}

#[tokio::test]
async fn a_turn_planned_from_an_old_version_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = writer(&dir).await;
    let faults = Faults::default();
    let (first, rx) = request(inbound("u", "m1"));
    commit_batch(
        &mut backend,
        &mut vec![first],
        &Counters::default(),
        &faults,
    )
    .await;
    assert!(rx.await.unwrap().is_ok());
    // Planned from version 0 although version 1 is stored now.
    let (stale, rx) = request(inbound("u", "m2"));
    commit_batch(
        &mut backend,
        &mut vec![stale],
        &Counters::default(),
        &faults,
    )
    .await;
    assert!(matches!(
        rx.await.unwrap(),
        Err(StoreError::Conflict {
            expected: 0,
            found: 1,
            ..
        })
    ));
    assert_eq!(count(&mut backend, "inbound_messages").await, 1);
    assert_eq!(count(&mut backend, "transcript").await, 1);
}

#[tokio::test]
async fn a_redelivered_message_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = writer(&dir).await;
    let faults = Faults::default();
    let (first, rx) = request(inbound("u", "m1"));
    commit_batch(
        &mut backend,
        &mut vec![first],
        &Counters::default(),
        &faults,
    )
    .await;
    assert!(rx.await.unwrap().is_ok());
    let mut again = match inbound("u", "m1") {
        Op::Turn(t) => t,
        _ => unreachable!(),
    };
    again.conversation.version = 1;
    let (again, rx) = request(Op::Turn(again));
    commit_batch(
        &mut backend,
        &mut vec![again],
        &Counters::default(),
        &faults,
    )
    .await;
    assert!(matches!(
        rx.await.unwrap(),
        Ok(Reply::Turn(TurnOutcome::Duplicate))
    ));
    let version: i64 = backend
        .with_connection(|conn| {
            conn.query_row("SELECT version FROM conversations", [], |row| row.get(0))
                .unwrap()
        })
        .await;
    assert_eq!(version, 1, "a duplicate does not touch the conversation");
    let _unused: Option<TranscriptEntry> = None;
}

#[tokio::test]
async fn committed_pages_reach_the_database_file_without_the_writer_checkpointing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut backend = writer(&dir).await;
    let before = std::fs::metadata(&path).unwrap().len();
    let counters = Counters::default();
    let mut batch = Vec::new();
    // About 300 pages: far below the log size at which the writer checkpoints by itself.
    for i in 0..1000 {
        batch.push(request(inbound(&format!("u{i}"), &format!("m{i}"))).0);
    }
    commit_batch(&mut backend, &mut batch, &counters, &Faults::default()).await;
    assert!(
        std::fs::metadata(dir.path().join("t.db-wal"))
            .unwrap()
            .len()
            > 0
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&path).unwrap().len() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was checkpointed into the database file within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(count(&mut backend, "inbound_messages").await, 1000);
}

/// A buyer message (version `version` → next) that opens a round and answers it at once.
fn answered_at_once(user: &str, id: &str, version: i64) -> Op {
    let Op::Turn(mut turn) = inbound(user, id) else {
        unreachable!()
    };
    turn.conversation.version = version;
    turn.clock = vec![
        RoundStep::Open { budget_ms: 30_000 },
        RoundStep::Answer {
            by: "bot".to_owned(),
            counted_ms: 0,
            in_time: true,
        },
    ];
    Op::Turn(turn)
}

async fn rounds(writer: &mut SqliteWriter) -> Vec<(i64, Option<String>)> {
    writer
        .with_connection(|conn| {
            let mut select = conn
                .prepare("SELECT started_ms, outcome FROM response_rounds ORDER BY id")
                .unwrap();
            select
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        })
        .await
}

#[tokio::test]
async fn a_round_opened_and_answered_in_one_turn_is_one_answered_row_unless_one_was_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = writer(&dir).await;
    let commit = |op: Op| {
        let (r, rx) = request(op);
        (vec![r], rx)
    };
    let (mut batch, rx) = commit(answered_at_once("u", "m1", 0));
    commit_batch(
        &mut backend,
        &mut batch,
        &Counters::default(),
        &Faults::default(),
    )
    .await;
    assert!(rx.await.unwrap().is_ok());
    assert_eq!(
        rounds(&mut backend).await,
        vec![(1, Some("in_time".to_owned()))]
    );

    // A round left open (the buyer wrote while an agent had the chat, say) is the one the next
    // reply answers, even when the turn was planned as if none were open.
    backend
        .with_connection(|conn| {
            conn.execute(
                "INSERT INTO response_rounds (platform, self_id, user_id, started_ms, budget_ms) \
                 VALUES ('qq', 's', 'u', -5, 30000)",
                [],
            )
            .unwrap()
        })
        .await;
    let (mut batch, rx) = commit(answered_at_once("u", "m2", 1));
    commit_batch(
        &mut backend,
        &mut batch,
        &Counters::default(),
        &Faults::default(),
    )
    .await;
    assert!(rx.await.unwrap().is_ok());
    assert_eq!(
        rounds(&mut backend).await,
        vec![
            (1, Some("in_time".to_owned())),
            (-5, Some("in_time".to_owned()))
        ]
    );
}
