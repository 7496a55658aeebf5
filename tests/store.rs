//! The store against real databases: every test that is about the store's behaviour runs
//! twice, on a SQLite file in a temporary directory (`<test>::sqlite`) and on PostgreSQL in a
//! schema of its own (`<test>::postgres`; see `common/backends.rs` for the server it uses and
//! when it is skipped). The tests of SQLite's files and data directories (a missing or unusable
//! `--data`, the `queue list` table read from one) run on SQLite only.

mod common;

use common::backends::TestDb;

use std::collections::HashSet;

use xiaoer::cli::queue;
use xiaoer::conversation::commands::AgentAction;
use xiaoer::model::{
    Actor, Conversation, ConversationKey, ConversationState, Direction, Escalation,
    EscalationState, Queue, Sender, TranscriptEntry,
};
use xiaoer::store::{EscalationStep, InboundLine, Store, StoreError, Turn, TurnOutcome};

/// A buyer message the bot handled without changing anything else; `true` if it was new.
async fn record_inbound(
    store: &Store,
    k: &ConversationKey,
    message_id: &str,
    sender: Sender,
    text: &str,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let conversation = store.conversation_or_new(k, at_ms).await?;
    let mut turn = Turn::new(conversation, Actor::Bot, "message handled", at_ms);
    turn.inbound = Some(InboundLine {
        message_id: message_id.to_owned(),
        sender,
        direction: Direction::Inbound,
        text: text.to_owned(),
        parts: Vec::new(),
        at_ms,
        decision: None,
    });
    Ok(matches!(
        store.commit_turn(turn).await?,
        TurnOutcome::Applied { .. }
    ))
}

/// Hands the chat to `queue` as the bot does; returns the escalation's id.
async fn escalate(
    store: &Store,
    k: &ConversationKey,
    queue: &str,
    reason: &str,
    rule: Option<&str>,
    first_message: &str,
    at_ms: i64,
) -> Result<i64, StoreError> {
    let mut conversation = store.conversation_or_new(k, at_ms).await?;
    if conversation.state != ConversationState::Queued {
        conversation.state = ConversationState::Queued;
        conversation.state_since_ms = at_ms;
    }
    let mut turn = Turn::new(
        conversation,
        Actor::Bot,
        format!("escalated: {reason}"),
        at_ms,
    );
    turn.escalations.push(EscalationStep::Open {
        queue: queue.parse().expect("a queue"),
        reason: reason.to_owned(),
        rule: rule.map(str::to_owned),
        first_message: first_message.to_owned(),
    });
    match store.commit_turn(turn).await? {
        TurnOutcome::Applied {
            escalation: Some(id),
            ..
        } => Ok(id),
        other => panic!("escalation not applied: {other:?}"),
    }
}

/// Saves `conversation` over whatever is stored, recording `actor` for a state change.
async fn save_conversation(
    store: &Store,
    conversation: &mut Conversation,
    actor: Actor,
    reason: &str,
) -> Result<(), StoreError> {
    conversation.version = store
        .conversation(&conversation.key)
        .await?
        .map_or(0, |c| c.version);
    let turn = Turn::new(
        conversation.clone(),
        actor,
        reason,
        conversation.state_since_ms,
    );
    if let TurnOutcome::Applied { version, .. } = store.commit_turn(turn).await? {
        conversation.version = version;
    }
    Ok(())
}

async fn claim_escalation(store: &Store, id: i64, agent: &str) -> Result<Escalation, StoreError> {
    let action = AgentAction::Claim {
        agent: agent.to_owned(),
    };
    queue::act(store, id, &action).await
}

async fn close_escalation(store: &Store, id: i64, agent: &str) -> Result<Escalation, StoreError> {
    let action = AgentAction::HandBack {
        agent: agent.to_owned(),
    };
    queue::act(store, id, &action).await
}

fn key(user: &str) -> ConversationKey {
    ConversationKey::new("qq", "shop1", user)
}

fn line(user: &str, i: usize) -> TranscriptEntry {
    TranscriptEntry {
        key: key(user),
        direction: Direction::Outbound,
        sender: Sender::Bot,
        message_id: None,
        text: format!("reply {i}"),
        parts: Vec::new(),
        delivery: None,
        at_ms: 1_000 + i as i64,
    }
}

async fn record_inbound_is_idempotent_across_restart(db: TestDb) {
    let store = db.open().await;
    let k = key("buyer1");
    assert!(
        record_inbound(&store, &k, "m1", Sender::Buyer, "在吗", 1)
            .await
            .unwrap()
    );
    assert!(
        !record_inbound(&store, &k, "m1", Sender::Buyer, "在吗", 2)
            .await
            .unwrap()
    );
    // The same id in another conversation is a different message.
    assert!(
        record_inbound(&store, &key("buyer2"), "m1", Sender::Buyer, "hi", 3)
            .await
            .unwrap()
    );
    store.close().await.unwrap();

    // Restart.
    let store = db.open().await;
    assert!(
        !record_inbound(&store, &k, "m1", Sender::Buyer, "在吗", 4)
            .await
            .unwrap()
    );
    assert!(
        record_inbound(&store, &k, "m2", Sender::Buyer, "退款", 5)
            .await
            .unwrap()
    );
    let transcript = store.transcript(&k, 10).await.unwrap();
    let texts: Vec<_> = transcript.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        texts,
        ["在吗", "退款"],
        "a redelivery adds no transcript line"
    );
    assert_eq!(transcript[0].direction, Direction::Inbound);
    assert_eq!(transcript[0].sender, Sender::Buyer);
    assert_eq!(transcript[0].message_id.as_deref(), Some("m1"));
    store.close().await.unwrap();
}

async fn duplicate_ids_in_one_batch_count_once(db: TestDb) {
    let store = db.open().await;
    let k = key("burst");
    // Fifty copies of one message, each planned from the empty chat, all in flight at once.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let k = k.clone();
            tokio::spawn(
                async move { record_inbound(&store, &k, "same", Sender::Buyer, "x", 1).await },
            )
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(true) => new += 1,
            Ok(false) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(new, 1);
    assert_eq!(store.transcript(&k, 100).await.unwrap().len(), 1);
    store.close().await.unwrap();
}

async fn escalation_is_visible_to_a_second_handle_as_soon_as_escalate_returns(db: TestDb) {
    let store = db.open().await;
    let reader = db.open_existing().await;
    assert!(reader.open_escalations().await.unwrap().is_empty());

    let k = key("angry");
    let id = escalate(
        &store,
        &k,
        "refund",
        "asked for a refund",
        Some("refund-keywords"),
        "我要退款",
        1_000,
    )
    .await
    .unwrap();

    // No flush: escalate itself waited for the commit.
    let open = reader.open_escalations().await.unwrap();
    assert_eq!(open.len(), 1);
    let e = &open[0];
    assert_eq!(e.id, id);
    assert_eq!(e.key, k);
    assert_eq!(e.queue, Queue::Refund);
    assert_eq!(e.state, EscalationState::Open);
    assert_eq!(e.rule.as_deref(), Some("refund-keywords"));
    assert_eq!(e.first_message, "我要退款");
    assert_eq!(e.created_ms, 1_000);

    let conv = reader.conversation(&k).await.unwrap().unwrap();
    assert_eq!(conv.state, ConversationState::Queued);
    assert_eq!(conv.open_escalation, Some(id));
    assert_eq!(conv.state_since_ms, 1_000);

    // A second escalation while one is live returns the same id.
    let again = escalate(&store, &k, "complaint", "again", None, "投诉", 2_000)
        .await
        .unwrap();
    assert_eq!(again, id);
    assert_eq!(reader.open_escalations().await.unwrap().len(), 1);

    // The read-only handle refuses writes.
    let err = escalate(&reader, &k, "refund", "x", None, "x", 3)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");

    reader.close().await.unwrap();
    store.close().await.unwrap();
}

async fn escalation_survives_restart(db: TestDb) {
    let k = key("b");
    let id = {
        let store = db.open().await;
        let id = escalate(&store, &k, "after_sale", "damaged", None, "坏了", 5)
            .await
            .unwrap();
        // Dropped without close: the commit already happened.
        drop(store);
        id
    };
    let store = db.open().await;
    let open = store.open_escalations().await.unwrap();
    assert_eq!(open.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);
    assert_eq!(
        store.conversation(&k).await.unwrap().unwrap().state,
        ConversationState::Queued
    );
    store.close().await.unwrap();
}

async fn concurrent_appends_are_all_present_after_flush(db: TestDb) {
    let store = db.open().await;
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append_transcript(line(&format!("u{}", i % 7), i))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    store.flush().await.unwrap();

    let reader = db.open_existing().await;
    let mut seen = HashSet::new();
    for u in 0..7 {
        for e in reader
            .transcript(&key(&format!("u{u}")), 1_000)
            .await
            .unwrap()
        {
            assert!(seen.insert(e.text.clone()), "duplicate {}", e.text);
        }
    }
    assert_eq!(seen.len(), 500);
    reader.close().await.unwrap();
    store.close().await.unwrap();
}

async fn transcript_limit_returns_the_latest_oldest_first(db: TestDb) {
    let store = db.open().await;
    for i in 0..10 {
        store.append_transcript(line("t", i)).await.unwrap();
    }
    store.flush().await.unwrap();
    let last = store.transcript(&key("t"), 3).await.unwrap();
    let texts: Vec<_> = last.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["reply 7", "reply 8", "reply 9"]);
    store.close().await.unwrap();
}

async fn state_changes_record_the_actor(db: TestDb) {
    let store = db.open().await;
    let k = key("p");
    let mut conv = Conversation::new(k.clone(), 100);
    conv.greeted_at_ms = Some(100);
    save_conversation(&store, &mut conv, Actor::Buyer, "first message")
        .await
        .unwrap();

    // Same state: no history row, but the other fields are saved.
    conv.fallback_streak = 2;
    save_conversation(&store, &mut conv, Actor::Bot, "fallback")
        .await
        .unwrap();

    conv.state = ConversationState::Paused;
    conv.state_since_ms = 200;
    conv.paused_until_ms = Some(900);
    save_conversation(
        &store,
        &mut conv,
        Actor::ShopOutgoing,
        "shop answered from another client",
    )
    .await
    .unwrap();

    conv.state = ConversationState::Bot;
    conv.state_since_ms = 900;
    conv.paused_until_ms = None;
    save_conversation(&store, &mut conv, Actor::Timeout, "pause expired")
        .await
        .unwrap();

    let stored = store.conversation(&k).await.unwrap().unwrap();
    assert_eq!(stored, conv);

    let history = store.state_history(&k).await.unwrap();
    let summary: Vec<_> = history
        .iter()
        .map(|c| (c.from, c.to, c.actor.clone(), c.at_ms))
        .collect();
    assert_eq!(
        summary,
        [
            (None, ConversationState::Bot, Actor::Buyer, 100),
            (
                Some(ConversationState::Bot),
                ConversationState::Paused,
                Actor::ShopOutgoing,
                200
            ),
            (
                Some(ConversationState::Paused),
                ConversationState::Bot,
                Actor::Timeout,
                900
            ),
        ]
    );
    assert_eq!(history[1].reason, "shop answered from another client");
    store.close().await.unwrap();
}

async fn claim_then_close_returns_the_conversation_to_the_bot(db: TestDb) {
    let store = db.open().await;
    let k = key("c");
    let mut conv = Conversation::new(k.clone(), 10);
    conv.fallback_streak = 3;
    save_conversation(&store, &mut conv, Actor::Buyer, "new")
        .await
        .unwrap();
    let id = escalate(&store, &k, "human", "bot failed 3 times", None, "???", 20)
        .await
        .unwrap();

    let claimed = claim_escalation(&store, id, "alice").await.unwrap();
    assert_eq!(claimed.state, EscalationState::Claimed);
    assert_eq!(claimed.claimed_by.as_deref(), Some("alice"));
    assert_eq!(
        store.conversation(&k).await.unwrap().unwrap().state,
        ConversationState::Human
    );
    // Claimed escalations are still listed.
    assert_eq!(
        store.open_escalations().await.unwrap()[0].state,
        EscalationState::Claimed
    );
    // Same agent again: fine. Another agent: refused.
    claim_escalation(&store, id, "alice").await.unwrap();
    let err = claim_escalation(&store, id, "bob").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyClaimed { agent, .. } if agent == "alice"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("escalation {id} is already claimed by alice")
    );

    let closed = close_escalation(&store, id, "alice").await.unwrap();
    assert_eq!(closed.state, EscalationState::Closed);
    let conv = store.conversation(&k).await.unwrap().unwrap();
    assert_eq!(conv.state, ConversationState::Bot);
    assert_eq!(conv.open_escalation, None);
    assert_eq!(conv.fallback_streak, 0);
    assert!(!conv.queued_notice_sent);
    assert!(store.open_escalations().await.unwrap().is_empty());

    let history = store.state_history(&k).await.unwrap();
    let moves: Vec<_> = history
        .iter()
        .map(|c| (c.to, c.actor.to_string()))
        .collect();
    assert_eq!(
        moves,
        [
            (ConversationState::Bot, "buyer".to_owned()),
            (ConversationState::Queued, "bot".to_owned()),
            (ConversationState::Human, "agent:alice".to_owned()),
            (ConversationState::Bot, "agent:alice".to_owned()),
        ]
    );

    // Closed is final; unknown ids are reported as such.
    assert!(matches!(
        close_escalation(&store, id, "alice").await,
        Err(StoreError::EscalationClosed { .. })
    ));
    assert!(matches!(
        claim_escalation(&store, id, "bob").await,
        Err(StoreError::EscalationClosed { .. })
    ));
    assert!(matches!(
        claim_escalation(&store, 9_999, "bob").await,
        Err(StoreError::EscalationNotFound { id: 9_999 })
    ));

    // After closing, the conversation can be escalated again.
    let second = escalate(&store, &k, "refund", "refund", None, "退款", 30)
        .await
        .unwrap();
    assert_ne!(second, id);
    store.close().await.unwrap();
}

async fn a_refused_request_does_not_fail_its_batch(db: TestDb) {
    let store = db.open().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let k = key(&format!("mix{i}"));
            if i % 5 == 0 {
                // Closing an escalation that does not exist is refused by the writer itself.
                let mut turn = Turn::new(Conversation::new(k, i), Actor::System, "close", i);
                turn.escalations.push(EscalationStep::Close {
                    id: 424_242,
                    outcome: None,
                });
                store.commit_turn(turn).await.map(|_| false)
            } else {
                record_inbound(&store, &k, &format!("m{i}"), Sender::Buyer, "hi", i).await
            }
        }));
    }
    let mut refused = 0;
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(true) => new += 1,
            Ok(false) => panic!("unexpected duplicate"),
            Err(StoreError::EscalationNotFound { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((new, refused), (16, 4));
    for i in 0..20 {
        let lines = store
            .transcript(&key(&format!("mix{i}")), 100)
            .await
            .unwrap();
        assert_eq!(lines.len(), usize::from(i % 5 != 0), "chat mix{i}");
    }
    store.close().await.unwrap();
}

async fn writes_after_close_fail_cleanly(db: TestDb) {
    let store = db.open().await;
    let other = store.clone();
    store.append_transcript(line("z", 1)).await.unwrap();
    store.close().await.unwrap();
    let err = other.append_transcript(line("z", 2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Closed { .. }), "{err}");
    let err = other.flush().await.unwrap_err();
    assert!(err.to_string().contains("store is closed"), "{err}");

    // What was queued before close was committed.
    let reader = db.open_existing().await;
    assert_eq!(reader.transcript(&key("z"), 10).await.unwrap().len(), 1);
    reader.close().await.unwrap();
}

#[tokio::test]
async fn open_existing_on_a_missing_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Store::open_existing(&missing).await.unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(
        !missing.exists(),
        "a read-only open must not create anything"
    );
}

#[tokio::test]
async fn open_reports_an_unusable_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file.join("data")).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("cannot create data directory"), "{msg}");
    assert!(msg.contains("a-file"), "{msg}");
}

// ---- xiaoer queue list ----

async fn queue_list_json_has_the_contract_fields(db: TestDb) {
    let store = db.open().await;
    let a = escalate(
        &store,
        &key("u1"),
        "refund",
        "退款",
        Some("r1"),
        "我要退款",
        1_714_552_200_000,
    )
    .await
    .unwrap();
    let b = escalate(
        &store,
        &key("u2"),
        "complaint",
        "12315",
        None,
        "我要投诉",
        1_714_552_300_000,
    )
    .await
    .unwrap();
    claim_escalation(&store, b, "alice").await.unwrap();

    // The daemon's handle stays open (and keeps writing) while the CLI reads.
    store.append_transcript(line("u1", 1)).await.unwrap();
    let mut out = Vec::new();
    queue::list_at(&db.location(), true, false, &mut out)
        .await
        .unwrap();
    store.append_transcript(line("u1", 2)).await.unwrap();

    let text = String::from_utf8(out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for field in [
        "id",
        "queue",
        "user_id",
        "state",
        "reason",
        "platform",
        "self_id",
        "rule",
        "created",
        "claimed_by",
    ] {
        assert!(
            lines[0].get(field).is_some(),
            "missing {field} in {}",
            lines[0]
        );
    }
    assert_eq!(lines[0]["id"], a);
    assert_eq!(lines[0]["queue"], "refund");
    assert_eq!(lines[0]["user_id"], "u1");
    assert_eq!(lines[0]["state"], "open");
    assert_eq!(lines[0]["reason"], "退款");
    assert_eq!(lines[0]["rule"], "r1");
    assert_eq!(lines[0]["created"], "2024-05-01T08:30:00.000Z");
    assert_eq!(lines[0]["claimed_by"], serde_json::Value::Null);
    assert_eq!(lines[1]["id"], b);
    assert_eq!(lines[1]["state"], "claimed");
    assert_eq!(lines[1]["claimed_by"], "alice");
    store.close().await.unwrap();
}

#[tokio::test]
async fn queue_list_table_is_aligned_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();

    let mut out = Vec::new();
    queue::list(dir.path(), false, false, &mut out)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "no open escalations\n");

    escalate(&store, &key("u1"), "refund", "退款", None, "m", 0)
        .await
        .unwrap();
    escalate(
        &store,
        &key("a-much-longer-user-id"),
        "after_sale",
        "broken\nitem",
        None,
        "m",
        1,
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    queue::list(dir.path(), false, false, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("ID"), "{text}");
    assert_eq!(lines[3], "2 open escalations");
    // Columns line up: REASON starts at the same place on every row.
    let col = lines[0].find("REASON").unwrap();
    assert_eq!(&lines[1][col..], "退款");
    assert_eq!(&lines[2][col..], "broken\\nitem");
    store.close().await.unwrap();
}

#[tokio::test]
async fn queue_list_on_a_missing_dir_errors_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("data");
    let mut out = Vec::new();
    let err = queue::list(&missing, true, false, &mut out)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no xiaoer store at {} (run the daemon first or pass --data)",
            missing.display()
        )
    );
    assert!(out.is_empty());
}

#[tokio::test]
async fn queue_list_works_after_the_daemon_has_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    escalate(&store, &key("u1"), "refund", "r", None, "m", 0)
        .await
        .unwrap();
    store.close().await.unwrap();
    let mut out = Vec::new();
    queue::list(dir.path(), true, false, &mut out)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
}

async fn a_burst_of_inbound_messages_costs_few_commits(db: TestDb) {
    let store = db.open().await;
    let tasks: Vec<_> = (0..1_000)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                record_inbound(
                    &store,
                    &key(&format!("u{i}")),
                    "m1",
                    Sender::Buyer,
                    "在吗",
                    i,
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap());
    }
    let stats = store.write_stats();
    assert_eq!(stats.requests, 1_000);
    assert!(
        stats.commits <= 50,
        "1000 concurrent writes took {} commits",
        stats.commits
    );
    assert_eq!(stats.retried_batches, 0);
    store.close().await.unwrap();
}

async fn opening_and_raising_an_escalation_put_their_notifications_in_the_outbox_once(db: TestDb) {
    let store = db.open().await;
    let k = ConversationKey::new("qq", "shop1", "buyer");
    let id = escalate(&store, &k, "after_sale", "坏了", None, "收到的杯子碎了", 10)
        .await
        .unwrap();
    // The chat already waits: a second open keeps its place and tells nobody again.
    let again = escalate(&store, &k, "after_sale", "还是坏的", None, "还是碎的", 20)
        .await
        .unwrap();
    assert_eq!(again, id);
    let conversation = store.conversation_or_new(&k, 30).await.unwrap();
    let mut turn = Turn::new(conversation, Actor::Bot, "threatens a bad review", 30);
    turn.escalations.push(EscalationStep::Raise {
        id,
        queue: Queue::BadReview,
        reason: "threatens a bad review".into(),
    });
    store.commit_turn(turn).await.unwrap();

    let planned = store.unplanned_notifications(10).await.unwrap();
    let events: Vec<_> = planned
        .iter()
        .map(|n| (n.event.as_str(), n.queue, n.escalation_id, n.at_ms))
        .collect();
    assert_eq!(
        events,
        [
            ("escalation.created", Queue::AfterSale, Some(id), 10),
            ("escalation.raised", Queue::BadReview, Some(id), 30),
        ]
    );
    assert!(
        planned.iter().all(|n| n.first_message == "收到的杯子碎了"),
        "the first message of the chat, whatever came later"
    );
    assert_ne!(planned[0].key, planned[1].key);
    // A time-driven alert with a key already in the outbox is stored once.
    let mut written = Vec::new();
    for _ in 0..2 {
        let fresh = store
            .outbox(xiaoer::store::OutboxOp::Enqueue {
                key: format!("sla.breach:{id}:bad_review"),
                event: "sla.breach".into(),
                escalation_id: id,
                detail: String::new(),
                at_ms: 40,
            })
            .await
            .unwrap();
        written.push(fresh);
    }
    assert_eq!(written, [true, false]);
    assert_eq!(store.unplanned_notifications(10).await.unwrap().len(), 3);
}

crate::on_both_backends!(
    record_inbound_is_idempotent_across_restart,
    duplicate_ids_in_one_batch_count_once,
    escalation_is_visible_to_a_second_handle_as_soon_as_escalate_returns,
    escalation_survives_restart,
    concurrent_appends_are_all_present_after_flush,
    transcript_limit_returns_the_latest_oldest_first,
    state_changes_record_the_actor,
    claim_then_close_returns_the_conversation_to_the_bot,
    a_refused_request_does_not_fail_its_batch,
    writes_after_close_fail_cleanly,
    opening_and_raising_an_escalation_put_their_notifications_in_the_outbox_once,
    accounts_sessions_notes_and_phrases_round_trip,
    the_outbox_plans_delivers_retries_and_dead_letters,
    the_response_clock_and_the_report_read_what_turns_wrote,
    two_writers_on_one_chat_lose_no_update,
    queue_list_json_has_the_contract_fields,
    the_queue_commands_work_on_the_store_that_store_names;
    alone: a_burst_of_inbound_messages_costs_few_commits,
);

async fn accounts_sessions_notes_and_phrases_round_trip(db: TestDb) {
    use xiaoer::model::{Agent, Note, NoteKind, Role};
    use xiaoer::store::AccountOp;
    let store = db.open().await;
    let alice = Agent {
        name: "alice".into(),
        role: Role::Supervisor,
        shops: vec!["shop1".into(), "shop2".into()],
        disabled: false,
        created_ms: 5,
    };
    let add = |agent: Agent| AccountOp::AddAgent {
        agent,
        password_hash: "$argon2id$x".into(),
    };
    store.account(add(alice.clone())).await.unwrap();
    let again = store.account(add(alice.clone())).await.unwrap_err();
    assert!(matches!(again, StoreError::AgentExists { .. }), "{again}");
    let (stored, hash) = store.agent("alice").await.unwrap().unwrap();
    assert_eq!((stored, hash.as_str()), (alice.clone(), "$argon2id$x"));
    assert_eq!(store.agents().await.unwrap(), std::slice::from_ref(&alice));
    let missing = store
        .account(AccountOp::SetPassword {
            name: "nobody".into(),
            password_hash: "h".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(missing, StoreError::AgentNotFound { .. }),
        "{missing}"
    );

    let session = |token: &str, at_ms| AccountOp::CreateSession {
        token_hash: token.into(),
        agent: "alice".into(),
        csrf: format!("csrf-{token}"),
        at_ms,
    };
    store.account(session("t1", 100)).await.unwrap();
    store.account(session("t2", 100)).await.unwrap();
    store.touch_session("t1", 500).await.unwrap();
    // An older touch arriving late does not move the session back.
    store.touch_session("t1", 300).await.unwrap();
    store.flush().await.unwrap();
    let t1 = store.session("t1").await.unwrap().unwrap();
    assert_eq!((t1.agent.as_str(), t1.csrf.as_str()), ("alice", "csrf-t1"));
    assert_eq!((t1.created_ms, t1.last_seen_ms), (100, 500));
    store
        .account(AccountOp::ExpireSessions { before_ms: 200 })
        .await
        .unwrap();
    assert!(store.session("t2").await.unwrap().is_none());
    assert!(store.session("t1").await.unwrap().is_some());
    store
        .account(AccountOp::SetDisabled {
            name: "alice".into(),
            disabled: true,
        })
        .await
        .unwrap();
    assert!(
        store.session("t1").await.unwrap().is_none(),
        "disabling ends sessions"
    );
    assert!(store.agent("alice").await.unwrap().unwrap().0.disabled);

    let k = key("noted");
    let note = |body: &str, at_ms| Note {
        key: k.clone(),
        escalation: None,
        author: "alice".into(),
        kind: NoteKind::Handover,
        body: body.into(),
        at_ms,
    };
    let first = store
        .account(AccountOp::AddNote(note("checked the order", 10)))
        .await
        .unwrap()
        .unwrap();
    let second = store
        .account(AccountOp::AddNote(note("promised a call", 20)))
        .await
        .unwrap()
        .unwrap();
    assert!(second > first);
    assert_eq!(
        store.notes(&k).await.unwrap(),
        [note("checked the order", 10), note("promised a call", 20)]
    );

    let phrase = |text: &str| AccountOp::AddPhrase {
        agent: "alice".into(),
        text: text.into(),
        at_ms: 1,
    };
    let a = store.account(phrase("亲，稍等")).await.unwrap().unwrap();
    store.account(phrase("已为您登记")).await.unwrap();
    store
        .account(AccountOp::DeletePhrase {
            agent: "bob".into(),
            id: a,
        })
        .await
        .unwrap();
    assert_eq!(
        store.quick_phrases("alice").await.unwrap().len(),
        2,
        "only the owner deletes"
    );
    store
        .account(AccountOp::DeletePhrase {
            agent: "alice".into(),
            id: a,
        })
        .await
        .unwrap();
    let left: Vec<_> = store
        .quick_phrases("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.text)
        .collect();
    assert_eq!(left, ["已为您登记"]);
    store.close().await.unwrap();
}

async fn the_outbox_plans_delivers_retries_and_dead_letters(db: TestDb) {
    use xiaoer::store::OutboxOp;
    let store = db.open().await;
    let id = escalate(
        &store,
        &key("o"),
        "complaint",
        "12315",
        None,
        "我要投诉",
        10,
    )
    .await
    .unwrap();
    let planned = store.unplanned_notifications(10).await.unwrap();
    assert_eq!(planned.len(), 1);
    let outbox_id = planned[0].id;
    assert_eq!(planned[0].chat, key("o"));
    assert_eq!(planned[0].queue, Queue::Complaint);
    store
        .outbox(OutboxOp::FanOut {
            outbox_id,
            targets: vec!["ding".into(), "hook".into()],
            due_ms: 100,
        })
        .await
        .unwrap();
    assert!(store.unplanned_notifications(10).await.unwrap().is_empty());
    assert!(store.due_deliveries(99, 10).await.unwrap().is_empty());
    let due = store.due_deliveries(100, 10).await.unwrap();
    let targets: Vec<_> = due.iter().map(|d| d.target.as_str()).collect();
    assert_eq!(targets.len(), 2);
    assert!(targets.contains(&"ding") && targets.contains(&"hook"));
    assert_eq!(due[0].entry.escalation_id, Some(id));

    store
        .outbox(OutboxOp::Delivered {
            outbox_id,
            target: "ding".into(),
            at_ms: 110,
        })
        .await
        .unwrap();
    store
        .outbox(OutboxOp::Failed {
            outbox_id,
            target: "hook".into(),
            error: "503".into(),
            retry_at_ms: Some(200),
            at_ms: 110,
        })
        .await
        .unwrap();
    assert!(store.due_deliveries(150, 10).await.unwrap().is_empty());
    let retry = store.due_deliveries(200, 10).await.unwrap();
    assert_eq!((retry.len(), retry[0].attempts), (1, 1));
    store
        .outbox(OutboxOp::Failed {
            outbox_id,
            target: "hook".into(),
            error: "still 503".into(),
            retry_at_ms: None,
            at_ms: 210,
        })
        .await
        .unwrap();
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].target.as_str(),
            dead[0].attempts,
            dead[0].last_error.as_deref(),
            dead[0].given_up_ms
        ),
        ("hook", 2, Some("still 503"), 210)
    );
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!(
        (
            counts.pending,
            counts.delivered,
            counts.dead,
            counts.unplanned
        ),
        (0, 1, 1, 0)
    );
    store
        .outbox(OutboxOp::Revive {
            target: Some("other".into()),
            at_ms: 300,
        })
        .await
        .unwrap();
    assert_eq!(
        store.dead_letters(10).await.unwrap().len(),
        1,
        "another target's"
    );
    store
        .outbox(OutboxOp::Revive {
            target: None,
            at_ms: 300,
        })
        .await
        .unwrap();
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(store.due_deliveries(300, 10).await.unwrap().len(), 1);
    store.close().await.unwrap();
}

async fn the_response_clock_and_the_report_read_what_turns_wrote(db: TestDb) {
    use xiaoer::model::Delivery;
    use xiaoer::store::{ClockWarning, DecisionRecord, OutboundLine, RoundStep};
    let store = db.open().await;
    let k = ConversationKey::new("qq", "shop1", "clocked");
    let mut turn = Turn::new(
        Conversation::new(k.clone(), 1_000),
        Actor::Bot,
        "handled",
        1_000,
    );
    turn.inbound = Some(InboundLine {
        message_id: "m1".into(),
        sender: Sender::Buyer,
        direction: Direction::Inbound,
        text: "发货了吗".into(),
        parts: Vec::new(),
        at_ms: 1_000,
        decision: Some(DecisionRecord {
            action: "escalate".into(),
            topic: "shipping".into(),
            rule: Some("ship-late".into()),
            decided_by: "rule".into(),
        }),
    });
    turn.conversation.state = ConversationState::Queued;
    turn.escalations.push(EscalationStep::Open {
        queue: Queue::Human,
        reason: "late parcel".into(),
        rule: Some("ship-late".into()),
        first_message: "发货了吗".into(),
    });
    turn.clock.push(RoundStep::Open { budget_ms: 180_000 });
    turn.outbound.push(OutboundLine {
        sender: Sender::Bot,
        text: "已为您转人工".into(),
        at_ms: 1_001,
    });
    let TurnOutcome::Applied {
        escalation: Some(escalation),
        outbound,
        ..
    } = store.commit_turn(turn).await.unwrap()
    else {
        panic!("not applied")
    };
    store
        .mark_delivery(outbound[0], Delivery::Sent, Some("platform-7".into()))
        .await
        .unwrap();
    store.flush().await.unwrap();

    let round = store.open_round(&k).await.unwrap().unwrap();
    assert_eq!(
        (round.started_ms, round.budget_ms, round.warned_pct),
        (1_000, 180_000, 0)
    );
    assert_eq!(round.state, ConversationState::Queued);
    assert_eq!(round.escalation, Some(escalation));
    assert_eq!(
        store.open_rounds().await.unwrap(),
        std::slice::from_ref(&round)
    );
    let warning = |pct| ClockWarning {
        round_id: round.id,
        pct,
        escalation_id: escalation,
        detail: format!("{pct}% of the wait"),
        at_ms: 2_000,
    };
    assert!(store.clock_warning(warning(80)).await.unwrap());
    assert!(
        !store.clock_warning(warning(80)).await.unwrap(),
        "once per key"
    );
    assert!(store.clock_warning(warning(50)).await.unwrap());
    assert_eq!(
        store.open_round(&k).await.unwrap().unwrap().warned_pct,
        80,
        "never lowered"
    );

    let rows = store.report_rows(0, 10_000, Some("shop1")).await.unwrap();
    assert_eq!(rows.lines.len(), 2);
    let decision = rows.lines[0].decision.as_ref().unwrap();
    assert_eq!(
        (decision.topic.as_str(), decision.rule.as_deref()),
        ("shipping", Some("ship-late"))
    );
    assert_eq!(rows.lines[1].delivery, Some(Delivery::Sent));
    assert_eq!(rows.escalations.len(), 1);
    assert_eq!(rows.escalation_events.len(), 1);
    assert_eq!(rows.rounds.len(), 1);
    assert_eq!(rows.rounds[0].outcome, None);
    let other = store.report_rows(0, 10_000, Some("shop2")).await.unwrap();
    assert!(other.lines.is_empty() && other.escalations.is_empty() && other.rounds.is_empty());
    let all = store.report_rows(0, 10_000, None).await.unwrap();
    assert_eq!(all.lines.len(), 2);
    let history = store.escalation_history(escalation).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].detail, "handled");
    assert_eq!(store.escalations_of(&k).await.unwrap().len(), 1);
    assert_eq!(store.all_escalations().await.unwrap().len(), 1);
    let sent = store.transcript(&k, 10).await.unwrap();
    assert_eq!(sent[1].message_id.as_deref(), Some("platform-7"));
    store.close().await.unwrap();
}

/// `xiaoer queue claim|list|close --store URL`, as an operator runs them next to the daemon.
async fn the_queue_commands_work_on_the_store_that_store_names(db: TestDb) {
    let store = db.open().await;
    let id = escalate(&store, &key("cli"), "refund", "退款", None, "我要退款", 1)
        .await
        .unwrap();
    let url = match db.location() {
        xiaoer::config::StoreLocation::Postgres(url) => url,
        sqlite => sqlite.to_string(),
    };
    let nowhere = tempfile::tempdir().unwrap();
    let xiaoer = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_xiaoer"))
            .arg("queue")
            .args(args)
            .arg("--data")
            .arg(nowhere.path())
            .env("XIAOER_STORE", &url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let claimed = xiaoer(&["claim", &id.to_string(), "--agent", "alice"]);
    assert!(claimed.contains("claimed by alice"), "{claimed}");
    // The daemon's handle sees what the command wrote.
    assert_eq!(
        store
            .escalation(id)
            .await
            .unwrap()
            .unwrap()
            .claimed_by
            .as_deref(),
        Some("alice")
    );
    let listed = xiaoer(&["list", "--json"]);
    let line: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(
        (line["id"].as_i64(), &line["state"]),
        (Some(id), &serde_json::json!("claimed"))
    );
    let shown = xiaoer(&["show", &id.to_string()]);
    assert!(
        shown.starts_with(&format!("escalation {id} · queue refund · claimed")),
        "{shown}"
    );
    let closed = xiaoer(&["close", &id.to_string(), "--agent", "alice"]);
    assert!(closed.contains("closed by alice"), "{closed}");
    assert!(store.open_escalations().await.unwrap().is_empty());
    assert!(
        !nowhere.path().join(xiaoer::store::DB_FILE).exists(),
        "the store named wins over --data"
    );
    store.close().await.unwrap();
}

/// Two processes writing one chat (the daemon and `xiaoer queue claim`, or two instances on
/// PostgreSQL): every write is planned from a read and refused if the chat changed since, so
/// none is lost however they interleave.
async fn two_writers_on_one_chat_lose_no_update(db: TestDb) {
    let (a, b) = (db.open().await, db.open().await);
    let k = key("contended");
    let bump = |store: Store, k: ConversationKey| async move {
        for i in 0..25 {
            loop {
                let mut conversation = store.conversation_or_new(&k, i).await.unwrap();
                conversation.fallback_streak += 1;
                let turn = Turn::new(conversation, Actor::Bot, "bump", i);
                match store.commit_turn(turn).await {
                    Ok(_) => break,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(bump(a.clone(), k.clone())),
        tokio::spawn(bump(b.clone(), k.clone()))
    );
    x.unwrap();
    y.unwrap();
    let stored = a.conversation(&k).await.unwrap().unwrap();
    assert_eq!((stored.fallback_streak, stored.version), (50, 50));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// (table, column, not null) of every column, and (table, index) of every index that is not a
/// primary or unique key's own, in a migrated SQLite store.
async fn sqlite_schema(
    path: &std::path::Path,
) -> (Vec<(String, String, bool)>, Vec<(String, String)>) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let columns: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT m.name, p.name, (p.\"notnull\" OR p.pk > 0) FROM sqlite_master m \
         JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations' \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT tbl_name, name FROM sqlite_master \
         WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%' ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let columns = columns
        .into_iter()
        .map(|(t, c, n)| (t, c, n != 0))
        .collect();
    (columns, indexes)
}

/// The same for the PostgreSQL schema `url` searches.
async fn postgres_schema(url: &str) -> (Vec<(String, String, bool)>, Vec<(String, String)>) {
    use sqlx::ConnectOptions;
    let mut conn = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .unwrap();
    let columns: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT, is_nullable = 'NO' \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.tablename::TEXT, i.indexname::TEXT FROM pg_indexes i \
         WHERE i.schemaname = current_schema() AND i.tablename <> '_sqlx_migrations' \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
             WHERE c.conname = i.indexname AND c.contype IN ('p', 'u')) \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    (columns, indexes)
}

#[tokio::test]
async fn the_sqlite_and_postgres_schemas_have_the_same_tables_columns_and_indexes() {
    let Some(pg) = TestDb::postgres("the_sqlite_and_postgres_schemas_have_the_same_tables").await
    else {
        return;
    };
    let sqlite = TestDb::sqlite();
    sqlite.open().await.close().await.unwrap();
    pg.open().await.close().await.unwrap();
    let (sqlite_columns, sqlite_indexes) =
        sqlite_schema(&sqlite.dir().unwrap().join(xiaoer::store::DB_FILE)).await;
    let xiaoer::config::StoreLocation::Postgres(url) = pg.location() else {
        unreachable!()
    };
    let (pg_columns, pg_indexes) = postgres_schema(&url).await;
    assert!(sqlite_columns.len() > 50, "{sqlite_columns:?}");
    assert_eq!(
        sqlite_columns, pg_columns,
        "columns (table, column, not null)"
    );
    assert_eq!(sqlite_indexes, pg_indexes, "indexes (table, index)");
}
