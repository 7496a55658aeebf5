//! The PostgreSQL backend's own checks that need no server; the store's behaviour on a real
//! server is tested in `tests/store.rs`, against both backends.

use super::*;

#[test]
fn the_postgres_migrations_mirror_the_sqlite_ones_one_for_one() {
    let listed = |migrator: &sqlx::migrate::Migrator| {
        migrator
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(&MIGRATOR), listed(&crate::store::sqlite::MIGRATOR));
    assert_eq!(schema_version(), crate::store::sqlite::schema_version());
}

#[test]
fn the_target_names_the_server_and_database_and_never_the_password() {
    let target = Target::parse("postgres://xiaoer:s3cret@db.example:6543/shop", "shown").unwrap();
    assert_eq!(target.name, "db.example:6543/shop");
    assert_eq!(format!("{target:?}"), "db.example:6543/shop");
    // Without a database the server uses the user's name.
    let target = Target::parse("postgres://xiaoer@db", "shown").unwrap();
    assert_eq!(target.name, "db:5432/xiaoer");
}

#[test]
fn connections_get_a_statement_timeout_unless_the_url_sets_one() {
    let ours = Target::parse("postgres://u@db/x", "shown").unwrap();
    let options = ours.writer_options();
    let set = options.get_options().unwrap_or_default();
    assert!(set.contains("statement_timeout=30000ms"), "{set}");
    assert!(set.contains("synchronous_commit=on"), "{set}");
    let theirs = Target::parse(
        "postgres://u@db/x?options=-c%20statement_timeout%3D5s",
        "shown",
    )
    .unwrap();
    let set = theirs
        .reader_options(true)
        .get_options()
        .unwrap_or_default()
        .to_owned();
    assert!(set.contains("statement_timeout=5s"), "{set}");
    assert!(!set.contains("30000ms"), "{set}");
    assert!(set.contains("default_transaction_read_only=on"), "{set}");
}

#[tokio::test]
async fn an_unreachable_server_is_told_in_words_without_the_password() {
    // Port 1 on the loopback: nothing listens there, so the refusal is immediate.
    let target = Target::parse("postgres://u:hunter2@127.0.0.1:1/x", "shown").unwrap();
    let error = open_writer(&target).await.err().expect("refused");
    let message = error.to_string();
    assert!(
        message.starts_with("cannot reach the PostgreSQL store at 127.0.0.1:1/x: "),
        "{message}"
    );
    assert!(message.contains("nothing answers there"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

// ---- the writer on a real server (skipped with a notice when none answers, unless CI) ----

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use crate::model::{Actor, Conversation, ConversationKey, Direction, Queue, Sender};
use crate::store::ops::{EscalationStep, InboundLine, Op, Reply, Turn, TurnOutcome};
use crate::store::writer::{Counters, Faults, Request, commit_batch};

/// A schema of the test's own on the `XIAOER_TEST_PG` server, dropped on drop.
struct Schema {
    admin: String,
    name: String,
}

impl Schema {
    async fn create(test: &str) -> Option<Schema> {
        let admin = std::env::var("XIAOER_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let target = Target::parse(&admin, "the test server").unwrap();
        let mut conn = match target.connect(&target.base()).await {
            Ok(conn) => conn,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped {test} on PostgreSQL: {e}; set XIAOER_TEST_PG to run it");
                return None;
            }
            Err(e) => panic!("{test}: {e}, and CI is set"),
        };
        let name = format!("xiaoer_u_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = sqlx::Connection::close(conn).await;
        Some(Schema { admin, name })
    }

    fn target(&self) -> Target {
        let joiner = if self.admin.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{joiner}options=-c%20search_path%3D{}",
            self.admin, self.name
        );
        Target::parse(&url, "the test schema").unwrap()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Not on the test's runtime, which cannot block on a future of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let target = Target::parse(&admin, "the test server").unwrap();
                if let Ok(mut conn) = target.connect(&target.base()).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut conn)
                        .await;
                    let _ = sqlx::Connection::close(conn).await;
                }
            });
        })
        .join();
    }
}

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

async fn count(writer: &mut PgWriter, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(writer.connection_for_test())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_writer_connection_commits_durably_under_a_statement_timeout() {
    let Some(schema) = Schema::create("the_writer_connection_commits_durably").await else {
        return;
    };
    let mut writer = open_writer(&schema.target()).await.unwrap();
    let conn = writer.connection_for_test();
    let show = |name: &'static str| format!("SHOW {name}");
    let timeout: String = sqlx::query_scalar(&show("statement_timeout"))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(timeout, "30s");
    let sync: String = sqlx::query_scalar(&show("synchronous_commit"))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(sync, "on");
    crate::store::writer::Backend::close(writer).await;
}

#[tokio::test]
async fn a_failing_request_fails_alone_and_the_rest_of_its_batch_commits() {
    let Some(schema) = Schema::create("a_failing_request_fails_alone").await else {
        return;
    };
    let mut backend = open_writer(&schema.target()).await.unwrap();
    let counters = Counters::default();
    let (a, a_rx) = request(inbound("u1", "m1"));
    let (bad, bad_rx) = request(Op::FailForTest);
    let (b, b_rx) = request(inbound("u2", "m2"));
    let mut batch = vec![a, bad, b];
    commit_batch(&mut backend, &mut batch, &counters, &Faults::default()).await;
    assert!(matches!(
        a_rx.await.unwrap(),
        Ok(Reply::Turn(TurnOutcome::Applied { version: 1, .. }))
    ));
    let err = bad_rx.await.unwrap().unwrap_err();
    assert!(
        err.to_string().starts_with("cannot fail on purpose: "),
        "{err}"
    );
    assert!(
        !err.to_string().contains("42P01"),
        "no bare SQLSTATE: {err}"
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
    let Some(schema) = Schema::create("a_good_batch_is_one_commit").await else {
        return;
    };
    let mut backend = open_writer(&schema.target()).await.unwrap();
    let counters = Counters::default();
    let mut receivers = Vec::new();
    let mut batch = Vec::new();
    for i in 0..100 {
        let (r, rx) = request(inbound(&format!("u{}", i % 10), &format!("m{i}")));
        batch.push(r);
        receivers.push(rx);
    }
    commit_batch(&mut backend, &mut batch, &counters, &Faults::default()).await;
    let mut applied = 0;
    for rx in receivers {
        match rx.await.unwrap() {
            Ok(Reply::Turn(TurnOutcome::Applied { .. })) => applied += 1,
            // Ten turns per chat, each planned from version 0: the first of each wins.
            Err(StoreError::Conflict { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(applied, 10);
    assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
    assert_eq!(counters.requests.load(Ordering::Relaxed), 100);
}

#[tokio::test]
async fn an_injected_commit_failure_writes_nothing_of_the_turn() {
    let Some(schema) = Schema::create("an_injected_commit_failure_writes_nothing").await else {
        return;
    };
    let mut backend = open_writer(&schema.target()).await.unwrap();
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
        assert_eq!(count(&mut backend, table).await, 0, "{table}");
    }
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
        "outbox",
    ] {
        assert_eq!(count(&mut backend, table).await, 1, "{table}");
    }
}

#[tokio::test]
async fn a_stale_turn_is_refused_whole_and_a_redelivery_writes_nothing() {
    let Some(schema) = Schema::create("a_stale_turn_is_refused_whole").await else {
        return;
    };
    let mut backend = open_writer(&schema.target()).await.unwrap();
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
    let Op::Turn(mut again) = inbound("u", "m1") else {
        unreachable!()
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
    assert_eq!(count(&mut backend, "inbound_messages").await, 1);
    assert_eq!(count(&mut backend, "transcript").await, 1);
    let version: i64 = sqlx::query_scalar("SELECT version FROM conversations")
        .fetch_one(backend.connection_for_test())
        .await
        .unwrap();
    assert_eq!(version, 1, "neither touched the conversation");
}

#[tokio::test]
async fn a_connection_the_server_ended_while_idle_costs_no_batch() {
    let Some(schema) = Schema::create("a_lost_connection_reconnects").await else {
        return;
    };
    let target = schema.target();
    let mut backend = open_writer(&target).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(backend.connection_for_test())
        .await
        .unwrap();
    let mut admin = target.connect(&target.base()).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .unwrap();
    let counters = Counters::default();
    let (r, rx) = request(inbound("u", "m1"));
    commit_batch(&mut backend, &mut vec![r], &counters, &Faults::default()).await;
    // BEGIN finds the connection gone; nothing was sent, so the batch goes again on a new one.
    assert!(
        matches!(
            rx.await.unwrap(),
            Ok(Reply::Turn(TurnOutcome::Applied { .. }))
        ),
        "the batch was applied on a new connection"
    );
    let new_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(backend.connection_for_test())
        .await
        .unwrap();
    assert_ne!(new_pid, pid);
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM inbound_messages")
        .fetch_one(backend.connection_for_test())
        .await
        .unwrap();
    assert_eq!(written, 1, "written once");
    let _ = sqlx::Connection::close(admin).await;
}

#[tokio::test]
async fn a_read_only_server_is_refused_at_open_in_words() {
    let Some(schema) = Schema::create("a_read_only_database_is_refused_at_open").await else {
        return;
    };
    // A client whose transactions are all read-only, as on a standby.
    let mut target = schema.target();
    target.options = target
        .options
        .clone()
        .options([("default_transaction_read_only", "on")]);
    let error = open_writer(&target).await.err().expect("refused");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot migrate the PostgreSQL store at {}: the database is read-only",
            target.name
        )),
        "{message}"
    );
}

#[tokio::test]
async fn a_url_that_requires_tls_is_refused_in_words() {
    // TLS to the server is not compiled in (sqlx without a TLS feature); such a URL must fail
    // at once and say why, not fall back to plain text.
    let Some(schema) = Schema::create("a_url_that_requires_tls_is_refused").await else {
        return;
    };
    let joiner = if schema.admin.contains('?') { '&' } else { '?' };
    let url = format!("{}{joiner}sslmode=require", schema.admin);
    let target = Target::parse(&url, "shown").unwrap();
    let message = open_writer(&target)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        message.starts_with(&format!(
            "cannot reach the PostgreSQL store at {}: ",
            target.name
        )),
        "{message}"
    );
    assert!(message.contains("without TLS support"), "{message}");
}
