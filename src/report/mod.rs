//! The shift and weekly report: what the handbooks ask a supervisor to review at each shift
//! change — how many chats and messages, how fast the bot and the people answered, how the
//! platform's response clock went, what the human queues did, what buyers asked about, which
//! messages nobody answered (the next rules to write), which rules fired and which never did,
//! and which answers did not help.
//!
//! The report is computed purely from [`ReportRows`] (one read from the store, see
//! [`crate::store::Store::report_rows`]), so it holds no SQL and is tested on plain rows.
//! [`Report`] serialises as the `--format json` output; [`text`] and [`html`] render it for a
//! terminal and for a browser (one self-contained page, charts drawn as inline SVG). How each
//! figure is defined is in `docs/report.md`.
//!
//! - [`period`]: `--since` / `--until` (`24h`, `7d`, `2026-12-01`, RFC 3339);
//! - `compute`: rows → [`Report`];
//! - [`similar`]: grouping unanswered messages that say nearly the same thing;
//! - [`text`], [`html`]: the renderings.

mod compute;
pub mod html;
pub mod period;
pub mod similar;
pub mod text;

use serde::Serialize;

pub use compute::{ANSWER_DID_NOT_HELP_WITHIN_MS, compute};
pub use period::{Period, PeriodError};

use crate::model::Queue;

/// The whole report: the `--format json` output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub period: Period,
    pub volume: Volume,
    /// Buyer messages by what routing decided (`reply`, `escalate`, `fallback`, `ignore`, and
    /// `none` for messages taken while a human had the chat).
    pub actions: Vec<Count>,
    pub bot_share: Share,
    pub first_response: FirstResponse,
    /// The platform response clock, one entry per platform; empty when no rounds were recorded.
    pub clock: Vec<ClockRate>,
    /// One entry per human queue, in the order of [`Queue::ALL`].
    pub queues: Vec<QueueReport>,
    /// Closed escalations by how they ended; `unspecified` when the closer did not say.
    pub outcomes: Vec<Count>,
    /// Buyer messages by topic, most frequent first (`fallback`: no rule matched).
    pub topics: Vec<Count>,
    /// Unanswered (fallback) messages grouped by similarity, largest group first.
    pub fallback_groups: Vec<MessageGroup>,
    /// Rules by how many buyer messages they decided, most first.
    pub rules_fired: Vec<Count>,
    /// Rules in force that decided no message in the period, in rule-file order; `None` when
    /// the report was made without the rule files.
    pub rules_never_fired: Option<Vec<String>>,
    /// Answers after which the buyer came back unhappy, by rule, most first.
    pub unhelpful: Vec<UnhelpfulAnswer>,
}

/// How much happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// Conversations in which the buyer wrote at least once.
    pub chats: usize,
    pub buyer_messages: usize,
    /// Replies that reached (or may have reached) the buyer: every outbound line but the ones
    /// the gateway refused.
    pub bot_replies: usize,
    pub agent_replies: usize,
    /// Lines the shop account wrote from another client.
    pub shop_replies: usize,
    /// Outbound lines the gateway refused.
    pub failed_replies: usize,
    /// Escalations opened.
    pub escalations: usize,
}

/// A name and how often it occurred.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Count {
    pub name: String,
    pub count: usize,
}

/// The share of buyer messages the bot answered itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Share {
    /// Messages routed to a reply and followed by the bot's reply.
    pub answered: usize,
    /// Buyer messages that wanted an answer (all but the ones routed to `ignore`).
    pub of: usize,
    /// `answered / of`, `None` when there was nothing to answer.
    pub share: Option<f64>,
}

/// The 50th and 90th percentile of a set of durations, by nearest rank (see [`percentile`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// How many durations were measured.
    pub count: usize,
    pub p50: Option<i64>,
    pub p90: Option<i64>,
    /// `ms` or `s`.
    pub unit: &'static str,
}

/// How long buyers waited for the first answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FirstResponse {
    /// From a buyer message to the bot's next line, in milliseconds.
    pub bot: Percentiles,
    /// The bot's waits by size, for the chart.
    pub bot_histogram: Vec<Bucket>,
    /// From an escalation to the first agent line in that chat, in seconds.
    pub human: Percentiles,
    /// Escalations no agent wrote in during the period.
    pub human_unanswered: usize,
}

/// One bar of a histogram: waits up to `upto_ms` (and above the previous bucket's bound);
/// `None` is the open-ended last bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub upto_ms: Option<i64>,
    pub count: usize,
}

/// The platform response clock on one platform.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClockRate {
    pub platform: String,
    pub rounds: usize,
    pub in_time: usize,
    pub late: usize,
    /// Rounds still open (the buyer is waiting).
    pub waiting: usize,
    /// `in_time / (in_time + late)`; `None` before any round has ended.
    pub rate: Option<f64>,
    /// The counted waits of ended rounds, in seconds.
    pub counted: Percentiles,
}

/// What one human queue did with the escalations opened in the period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueReport {
    /// The queue the escalation is in now (after raises and transfers).
    pub queue: Queue,
    pub opened: usize,
    /// Not claimed yet.
    pub waiting: usize,
    /// Held by an agent, not closed.
    pub held: usize,
    pub closed: usize,
    /// From opening to the first claim, in seconds.
    pub time_to_claim: Percentiles,
    /// From opening to closing, in seconds.
    pub time_to_resolve: Percentiles,
}

/// Unanswered messages that say nearly the same thing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageGroup {
    pub count: usize,
    /// Up to three different messages of the group, as the buyers wrote them.
    pub examples: Vec<String>,
}

/// A rule whose answers were followed by the buyer coming back unhappy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnhelpfulAnswer {
    /// The rule id (`model:<topic>` for answers the model chose).
    pub rule: String,
    pub count: usize,
    /// Up to three cases.
    pub examples: Vec<UnhelpfulExample>,
}

/// One answer that did not help.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnhelpfulExample {
    /// The buyer's message the rule answered.
    pub asked: String,
    /// What the buyer wrote next, or which queue the chat went to.
    pub then: String,
}

/// The `p`-th percentile of `sorted` (ascending) by nearest rank: the smallest value with at
/// least `p` percent of the values at or below it, i.e. the value at 1-based rank
/// `ceil(p / 100 × n)`. Always one of the values; `None` for no values.
///
/// # Examples
///
/// ```
/// use xiaoer::report::percentile;
/// assert_eq!(percentile(&[10, 20, 30, 40], 50), Some(20));
/// assert_eq!(percentile(&[10, 20, 30, 40], 90), Some(40));
/// assert_eq!(percentile(&[], 50), None);
/// ```
pub fn percentile(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (usize::try_from(p.min(100)).unwrap_or(100) * n)
        .div_ceil(100)
        .max(1);
    sorted.get(rank - 1).copied()
}

impl Percentiles {
    /// p50 and p90 of durations in milliseconds, reported in `unit` (`ms`, or `s` rounded to
    /// the nearest second).
    pub fn of_ms(mut values: Vec<i64>, unit: &'static str) -> Percentiles {
        values.sort_unstable();
        let scale = |ms: i64| {
            if unit == "s" {
                (ms + 500).div_euclid(1000)
            } else {
                ms
            }
        };
        Percentiles {
            count: values.len(),
            p50: percentile(&values, 50).map(scale),
            p90: percentile(&values, 90).map(scale),
            unit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ten: Vec<i64> = (1..=10).collect();
        let cases: &[(&[i64], u32, Option<i64>)] = &[
            (&[], 50, None),
            (&[7], 50, Some(7)),
            (&[7], 90, Some(7)),
            (&[1, 2], 50, Some(1)),
            (&[1, 2], 90, Some(2)),
            (&[1, 2, 3], 50, Some(2)),
            (&[1, 2, 3, 4], 50, Some(2)),
            (&ten, 50, Some(5)),
            (&ten, 90, Some(9)),
            (&ten, 91, Some(10)),
            (&ten, 100, Some(10)),
            (&ten, 0, Some(1)),
        ];
        for (values, p, expected) in cases {
            assert_eq!(percentile(values, *p), *expected, "p{p} of {values:?}");
        }
    }

    #[test]
    fn seconds_are_rounded_after_ranking() {
        let p = Percentiles::of_ms(vec![61_600, 1_400, 30_000], "s");
        assert_eq!((p.count, p.p50, p.p90), (3, Some(30), Some(62)));
        let p = Percentiles::of_ms(vec![900, 120], "ms");
        assert_eq!((p.p50, p.p90), (Some(120), Some(900)));
    }
}
