//! From the store's rows to a [`Report`]: plain passes over the lines of each conversation, no
//! I/O. Every definition here is spelled out in `docs/report.md`.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::similar;
use super::{
    Bucket, ClockRate, Count, FirstResponse, MessageGroup, Percentiles, Period, QueueReport,
    Report, Share, UnhelpfulAnswer, UnhelpfulExample, Volume,
};
use crate::model::{
    ConversationKey, Delivery, Direction, Escalation, EscalationEvent, EscalationState, Queue,
    Sender,
};
use crate::store::{ReportLine, ReportRows};

/// An answer is counted as not helping when, within this long after it, the buyer's next
/// message found no rule or escalated, or the chat was escalated.
pub const ANSWER_DID_NOT_HELP_WITHIN_MS: i64 = 2 * 60 * 1000;

/// Upper bounds of the bot wait histogram's buckets, in ms; one more bucket takes the rest.
const BOT_WAIT_BUCKETS_MS: [i64; 6] = [100, 250, 500, 1000, 2000, 5000];

/// How many examples a group or a rule shows.
const EXAMPLES: usize = 3;

/// How many fallback groups the report keeps.
const FALLBACK_GROUPS: usize = 10;

fn is_buyer_message(line: &ReportLine) -> bool {
    line.direction == Direction::Inbound && line.sender == Sender::Buyer
}

/// An outbound line the buyer got, or may have got.
fn reached_buyer(line: &ReportLine) -> bool {
    line.direction == Direction::Outbound && line.delivery != Some(Delivery::Failed)
}

fn action(line: &ReportLine) -> &str {
    line.decision.as_ref().map_or("none", |d| d.action.as_str())
}

/// Counts of names, most frequent first, ties by name.
fn ranked(counts: HashMap<String, usize>) -> Vec<Count> {
    let mut counts: Vec<Count> = counts
        .into_iter()
        .map(|(name, count)| Count { name, count })
        .collect();
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    counts
}

/// Computes the report over `rows`; `rule_ids` are the rules in force, to find the ones that
/// never fired (`None`: not known, the list is left out).
pub fn compute(rows: &ReportRows, period: Period, rule_ids: Option<&[String]>) -> Report {
    let chats: Vec<&[ReportLine]> = rows.lines.chunk_by(|a, b| a.key == b.key).collect();
    let by_key: HashMap<&ConversationKey, &[ReportLine]> =
        chats.iter().map(|lines| (&lines[0].key, *lines)).collect();
    let mut escalations_by_key: HashMap<&ConversationKey, Vec<&Escalation>> = HashMap::new();
    for escalation in &rows.escalations {
        escalations_by_key
            .entry(&escalation.key)
            .or_default()
            .push(escalation);
    }

    let mut volume = Volume {
        escalations: rows.escalations.len(),
        ..Volume::default()
    };
    let mut actions: HashMap<String, usize> = HashMap::new();
    let mut topics: HashMap<String, usize> = HashMap::new();
    let mut rules_fired: HashMap<String, usize> = HashMap::new();
    let mut bot_waits = Vec::new();
    let mut answered = 0;
    let mut wanted_answer = 0;
    let mut fallbacks: Vec<&str> = Vec::new();
    let mut unhelpful: BTreeMap<String, Vec<UnhelpfulExample>> = BTreeMap::new();

    for lines in &chats {
        let escalations = escalations_by_key
            .get(&lines[0].key)
            .map_or(&[][..], Vec::as_slice);
        if lines.iter().any(is_buyer_message) {
            volume.chats += 1;
        }
        for (at, line) in lines.iter().enumerate() {
            if line.direction == Direction::Outbound {
                if !reached_buyer(line) {
                    volume.failed_replies += 1;
                    continue;
                }
                match line.sender {
                    Sender::Bot => volume.bot_replies += 1,
                    Sender::Agent(_) => volume.agent_replies += 1,
                    Sender::Shop => volume.shop_replies += 1,
                    Sender::Buyer => {}
                }
                continue;
            }
            if !is_buyer_message(line) {
                continue;
            }
            volume.buyer_messages += 1;
            *actions.entry(action(line).to_owned()).or_default() += 1;
            if let Some(decision) = &line.decision {
                *topics.entry(decision.topic.clone()).or_default() += 1;
                if let Some(rule) = &decision.rule {
                    *rules_fired.entry(rule.clone()).or_default() += 1;
                }
            }
            let later = &lines[at + 1..];
            let next_buyer = later.iter().position(is_buyer_message);
            let before_next = &later[..next_buyer.unwrap_or(later.len())];
            let bot_reply = before_next
                .iter()
                .find(|l| l.sender == Sender::Bot && reached_buyer(l));
            if let Some(reply) = bot_reply {
                bot_waits.push(reply.at_ms - line.at_ms);
            }
            match action(line) {
                "ignore" => {}
                "reply" => {
                    wanted_answer += 1;
                    if bot_reply.is_some() {
                        answered += 1;
                    }
                }
                "fallback" => {
                    wanted_answer += 1;
                    fallbacks.push(&line.text);
                }
                _ => wanted_answer += 1,
            }
            if action(line) == "reply" {
                let answered_at = bot_reply.map_or(line.at_ms, |r| r.at_ms);
                let next = next_buyer.map(|n| &later[n]);
                if let Some(then) = did_not_help(answered_at, next, escalations) {
                    let rule = line.decision.as_ref().map_or_else(String::new, |d| {
                        d.rule
                            .clone()
                            .unwrap_or_else(|| format!("model:{}", d.topic))
                    });
                    unhelpful.entry(rule).or_default().push(UnhelpfulExample {
                        asked: line.text.clone(),
                        then,
                    });
                }
            }
        }
    }

    let (human_waits, human_unanswered) = human_waits(&rows.escalations, &by_key);
    let rules_fired = ranked(rules_fired);
    let fired: HashSet<&str> = rules_fired.iter().map(|c| c.name.as_str()).collect();
    let rules_never_fired = rule_ids.map(|ids| {
        ids.iter()
            .filter(|id| !fired.contains(id.as_str()))
            .cloned()
            .collect()
    });
    let mut unhelpful: Vec<UnhelpfulAnswer> = unhelpful
        .into_iter()
        .map(|(rule, mut examples)| {
            let count = examples.len();
            examples.truncate(EXAMPLES);
            UnhelpfulAnswer {
                rule,
                count,
                examples,
            }
        })
        .collect();
    unhelpful.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.rule.cmp(&b.rule)));

    Report {
        period,
        volume,
        actions: ranked(actions),
        bot_share: Share {
            answered,
            of: wanted_answer,
            share: (wanted_answer > 0).then(|| answered as f64 / wanted_answer as f64),
        },
        first_response: FirstResponse {
            bot_histogram: histogram(&bot_waits),
            bot: Percentiles::of_ms(bot_waits, "ms"),
            human: Percentiles::of_ms(human_waits, "s"),
            human_unanswered,
        },
        clock: clock(rows),
        queues: queues(rows),
        outcomes: outcomes(&rows.escalations),
        topics: ranked(topics),
        fallback_groups: fallback_groups(&fallbacks),
        rules_fired,
        rules_never_fired,
        unhelpful,
    }
}

/// Why an answer given at `answered_at` did not help, if it did not: the buyer's next message
/// (within the window) found no rule or escalated, or the chat was escalated within the window.
fn did_not_help(
    answered_at: i64,
    next: Option<&ReportLine>,
    escalations: &[&Escalation],
) -> Option<String> {
    let deadline = answered_at + ANSWER_DID_NOT_HELP_WITHIN_MS;
    if let Some(next) = next.filter(|n| n.at_ms <= deadline)
        && matches!(action(next), "fallback" | "escalate")
    {
        return Some(next.text.clone());
    }
    escalations
        .iter()
        .find(|e| e.created_ms >= answered_at && e.created_ms <= deadline)
        .map(|e| format!("→ {}", e.queue))
}

/// From each escalation to the first agent line in its chat: the waits, and how many escalations
/// had none.
fn human_waits(
    escalations: &[Escalation],
    by_key: &HashMap<&ConversationKey, &[ReportLine]>,
) -> (Vec<i64>, usize) {
    let mut waits = Vec::new();
    let mut unanswered = 0;
    for escalation in escalations {
        let first_agent_line = by_key.get(&escalation.key).and_then(|lines| {
            lines.iter().find(|l| {
                matches!(l.sender, Sender::Agent(_))
                    && reached_buyer(l)
                    && l.at_ms >= escalation.created_ms
            })
        });
        match first_agent_line {
            Some(line) => waits.push(line.at_ms - escalation.created_ms),
            None => unanswered += 1,
        }
    }
    (waits, unanswered)
}

fn histogram(waits: &[i64]) -> Vec<Bucket> {
    let mut buckets: Vec<Bucket> = BOT_WAIT_BUCKETS_MS
        .iter()
        .map(|&upto| Bucket {
            upto_ms: Some(upto),
            count: 0,
        })
        .chain([Bucket {
            upto_ms: None,
            count: 0,
        }])
        .collect();
    for &wait in waits {
        let index = BOT_WAIT_BUCKETS_MS
            .iter()
            .position(|&upto| wait <= upto)
            .unwrap_or(BOT_WAIT_BUCKETS_MS.len());
        buckets[index].count += 1;
    }
    buckets
}

fn clock(rows: &ReportRows) -> Vec<ClockRate> {
    let mut platforms: BTreeMap<&str, Vec<&crate::store::ResponseRound>> = BTreeMap::new();
    for round in &rows.rounds {
        platforms
            .entry(round.key.platform.as_str())
            .or_default()
            .push(round);
    }
    platforms
        .into_iter()
        .map(|(platform, rounds)| {
            let with = |outcome: &str| {
                rounds
                    .iter()
                    .filter(|r| r.outcome.as_deref() == Some(outcome))
                    .count()
            };
            let (in_time, late) = (with("in_time"), with("late"));
            let counted = rounds
                .iter()
                .filter(|r| r.outcome.is_some())
                .filter_map(|r| r.counted_ms)
                .collect();
            ClockRate {
                platform: platform.to_owned(),
                rounds: rounds.len(),
                in_time,
                late,
                waiting: rounds.iter().filter(|r| r.outcome.is_none()).count(),
                rate: (in_time + late > 0).then(|| in_time as f64 / (in_time + late) as f64),
                counted: Percentiles::of_ms(counted, "s"),
            }
        })
        .collect()
}

fn queues(rows: &ReportRows) -> Vec<QueueReport> {
    let first = |id: i64, kind: EscalationEvent| {
        rows.escalation_events
            .iter()
            .find(|e| e.escalation_id == id && e.kind == kind)
            .map(|e| e.at_ms)
    };
    Queue::ALL
        .iter()
        .map(|&queue| {
            let mine: Vec<&Escalation> = rows
                .escalations
                .iter()
                .filter(|e| e.queue == queue)
                .collect();
            let state = |s: EscalationState| mine.iter().filter(|e| e.state == s).count();
            let claims = mine
                .iter()
                .filter_map(|e| {
                    first(e.id, EscalationEvent::Claimed)
                        .or(e.claimed_ms)
                        .map(|at| at - e.created_ms)
                })
                .collect();
            let resolutions = mine
                .iter()
                .filter(|e| e.state == EscalationState::Closed)
                .filter_map(|e| first(e.id, EscalationEvent::Closed).map(|at| at - e.created_ms))
                .collect();
            QueueReport {
                queue,
                opened: mine.len(),
                waiting: state(EscalationState::Open),
                held: state(EscalationState::Claimed),
                closed: state(EscalationState::Closed),
                time_to_claim: Percentiles::of_ms(claims, "s"),
                time_to_resolve: Percentiles::of_ms(resolutions, "s"),
            }
        })
        .collect()
}

fn outcomes(escalations: &[Escalation]) -> Vec<Count> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for escalation in escalations {
        if escalation.state == EscalationState::Closed {
            let outcome = escalation
                .outcome
                .clone()
                .filter(|o| !o.trim().is_empty())
                .unwrap_or_else(|| "unspecified".to_owned());
            *counts.entry(outcome).or_default() += 1;
        }
    }
    ranked(counts)
}

fn fallback_groups(texts: &[&str]) -> Vec<MessageGroup> {
    similar::group(texts, similar::THRESHOLD)
        .into_iter()
        .take(FALLBACK_GROUPS)
        .map(|members| {
            let mut seen = HashSet::new();
            let examples = members
                .iter()
                .map(|&i| texts[i])
                .filter(|text| seen.insert(crate::rules::normalise(text)))
                .take(EXAMPLES)
                .map(str::to_owned)
                .collect();
            MessageGroup {
                count: members.len(),
                examples,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DecisionRecord;

    fn line(action: &str, text: &str, at_ms: i64) -> ReportLine {
        ReportLine {
            id: at_ms,
            key: ConversationKey::new("qq", "shop1", "u1"),
            direction: Direction::Inbound,
            sender: Sender::Buyer,
            text: text.to_owned(),
            delivery: None,
            at_ms,
            decision: Some(DecisionRecord {
                action: action.to_owned(),
                topic: "other".to_owned(),
                rule: None,
                decided_by: "rule".to_owned(),
            }),
        }
    }

    fn escalation(created_ms: i64) -> Escalation {
        Escalation {
            id: 1,
            key: ConversationKey::new("qq", "shop1", "u1"),
            queue: Queue::Human,
            reason: String::new(),
            rule: None,
            state: EscalationState::Open,
            created_ms,
            claimed_by: None,
            claimed_ms: None,
            first_message: String::new(),
            closed_by: None,
            outcome: None,
        }
    }

    #[test]
    fn when_an_answer_did_not_help() {
        let window = ANSWER_DID_NOT_HELP_WITHIN_MS;
        let cases: &[(Option<ReportLine>, Option<i64>, Option<&str>)] = &[
            (
                Some(line("fallback", "还是不懂", 1000 + window)),
                None,
                Some("还是不懂"),
            ),
            (
                Some(line("escalate", "我要投诉", 5000)),
                None,
                Some("我要投诉"),
            ),
            (
                Some(line("fallback", "还是不懂", 1001 + window)),
                None,
                None,
            ),
            (Some(line("reply", "那几天到", 5000)), None, None),
            (Some(line("ignore", "好的", 5000)), None, None),
            (None, Some(1000 + window), Some("→ human")),
            (None, Some(1001 + window), None),
            (None, Some(999), None),
            (None, None, None),
        ];
        for (next, escalated_at, expected) in cases {
            let escalations: Vec<Escalation> =
                escalated_at.iter().map(|&at| escalation(at)).collect();
            let escalations: Vec<&Escalation> = escalations.iter().collect();
            assert_eq!(
                did_not_help(1000, next.as_ref(), &escalations).as_deref(),
                *expected,
                "next {next:?}, escalated at {escalated_at:?}"
            );
        }
    }
}
