//! Store benchmark: the SQLite writer alone, fed the turns a daemon writes for buyers asking
//! questions the bot answers (the inbound line with its decision, the reply, the conversation,
//! the response round opened and answered, then the reply's delivery mark), from many chats
//! at once, on a real file with durability as shipped.
//!
//! It prints turns per second and the CPU time of the store's threads per turn. The CPU figure
//! is the one to compare builds by: on a shared machine wall-clock throughput moves by a third
//! between runs, the writer thread's own CPU per turn much less.
//!
//! Run with `cargo bench --bench store` (`-- --quick` for a small run; `-- --chats N --turns N`
//! to change the shape). Figures go in `docs/performance.md`.

use std::collections::HashMap;
use std::time::Instant;

use xiaoer::model::{Actor, Conversation, ConversationKey, Delivery, Direction, Sender};
use xiaoer::store::{
    DecisionRecord, InboundLine, OutboundLine, RoundStep, Store, Turn, TurnOutcome,
};

struct Shape {
    chats: usize,
    turns_per_chat: usize,
}

fn shape() -> Shape {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let quick = args.iter().any(|a| a == "--quick");
    Shape {
        chats: value("--chats").unwrap_or(1000),
        turns_per_chat: value("--turns").unwrap_or(if quick { 5 } else { 40 }),
    }
}

/// CPU seconds used so far by each of this process's threads, by thread name.
fn thread_cpu() -> HashMap<String, f64> {
    let mut by_name = HashMap::new();
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is the 1st, utime the 12th, stime the 13th.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let cpu = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        *by_name.entry(name.trim().to_owned()).or_insert(0.0) += (cpu(11) + cpu(12)) / ticks;
    }
    by_name
}

/// One chat asking `turns` questions in a row, each answered by the bot.
async fn chat(store: Store, user: usize, turns: usize, start_ms: i64) {
    let key = ConversationKey::new("qq", format!("shop{}", user % 10), format!("buyer-{user}"));
    let mut conversation = Conversation::new(key.clone(), start_ms);
    conversation.greeted_at_ms = Some(start_ms);
    for turn_index in 0..turns {
        let at_ms = start_ms + turn_index as i64 * 1000;
        let mut turn = Turn::new(conversation.clone(), Actor::Bot, "message handled", at_ms);
        turn.conversation.last_buyer_ms = Some(at_ms);
        turn.inbound = Some(InboundLine {
            message_id: format!("m-{user}-{turn_index}"),
            sender: Sender::Buyer,
            direction: Direction::Inbound,
            text: "请问发什么快递，多久能到".to_owned(),
            parts: Vec::new(),
            at_ms,
            decision: Some(DecisionRecord {
                action: "answer".to_owned(),
                topic: "shipping".to_owned(),
                rule: Some("shipping.courier".to_owned()),
                decided_by: "rule".to_owned(),
            }),
        });
        turn.outbound.push(OutboundLine {
            sender: Sender::Bot,
            text: "亲，默认发中通快递，江浙沪一般次日达，其他地区两到三天".to_owned(),
            at_ms,
        });
        turn.clock = vec![
            RoundStep::Open { budget_ms: 180_000 },
            RoundStep::Answer {
                by: "bot".to_owned(),
                counted_ms: 0,
                in_time: true,
            },
        ];
        let applied = store.commit_turn(turn.clone()).await;
        let Ok(TurnOutcome::Applied {
            version, outbound, ..
        }) = applied
        else {
            panic!("turn {turn_index} of {key} not applied: {applied:?}");
        };
        conversation = turn.conversation;
        conversation.version = version;
        for line in outbound {
            store
                .mark_delivery(line, Delivery::Sent, Some(format!("sent-{line}")))
                .await
                .expect("delivery mark queued");
        }
    }
}

fn main() {
    let shape = shape();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    runtime.block_on(async {
        let store = Store::open(dir.path()).await.expect("the store opens");
        let before = thread_cpu();
        let started = Instant::now();
        let start_ms = 1_700_000_000_000;
        let chats: Vec<_> = (0..shape.chats)
            .map(|user| tokio::spawn(chat(store.clone(), user, shape.turns_per_chat, start_ms)))
            .collect();
        for chat in chats {
            chat.await.expect("a chat task");
        }
        store.flush().await.expect("the last marks are written");
        let took = started.elapsed().as_secs_f64();
        let after = thread_cpu();
        let turns = (shape.chats * shape.turns_per_chat) as f64;
        println!(
            "{} chats × {} turns: {:.0} turns/s ({:.2} s)",
            shape.chats,
            shape.turns_per_chat,
            turns / took,
            took
        );
        let mut names: Vec<_> = after
            .keys()
            .filter(|n| n.starts_with("xiaoer-store"))
            .collect();
        names.sort();
        for name in names {
            let used = after[name] - before.get(name).copied().unwrap_or(0.0);
            println!("  {name:<16} {:6.1} µs CPU per turn", used / turns * 1e6);
        }
        let workers: f64 = after
            .iter()
            .filter(|(n, _)| n.starts_with("tokio"))
            .map(|(n, v)| v - before.get(n).copied().unwrap_or(0.0))
            .sum();
        println!(
            "  {:<16} {:6.1} µs CPU per turn",
            "tokio workers",
            workers / turns * 1e6
        );
        store.close().await.expect("the store closes");
    });
}
