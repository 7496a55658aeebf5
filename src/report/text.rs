//! The report for a terminal: one section per heading, aligned columns, plain text.

use std::fmt::Write;

use super::period::shop_time;
use super::{Count, Percentiles, Report};

/// `12 ms`, `4 s`, `-` when nothing was measured.
pub fn value(value: Option<i64>, unit: &str) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v} {unit}"))
}

/// `p50 120 ms, p90 900 ms (n=14)`.
pub fn percentiles(p: &Percentiles) -> String {
    format!(
        "p50 {}, p90 {} (n={})",
        value(p.p50, p.unit),
        value(p.p90, p.unit),
        p.count
    )
}

/// `87.5%`, `-` when there was nothing to divide.
pub fn share(share: Option<f64>) -> String {
    share.map_or_else(|| "-".to_owned(), |s| format!("{:.1}%", s * 100.0))
}

fn counts(out: &mut String, title: &str, counts: &[Count], limit: usize) {
    let _ = writeln!(out, "\n{title}");
    if counts.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for count in counts.iter().take(limit) {
        let _ = writeln!(out, "  {:>6}  {}", count.count, count.name);
    }
    if counts.len() > limit {
        let _ = writeln!(out, "  … and {} more", counts.len() - limit);
    }
}

/// The report as text.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let r = report;
    let _ = writeln!(
        out,
        "xiaoer report {} – {} (UTC+8){}",
        shop_time(r.period.since_ms),
        shop_time(r.period.until_ms),
        r.period
            .shop
            .as_ref()
            .map_or_else(String::new, |s| format!(", shop {s}"))
    );
    let v = &r.volume;
    let _ = writeln!(
        out,
        "\nVolume\n  chats {}, buyer messages {}, bot replies {}, agent replies {}, shop replies {}, failed sends {}, escalations {}",
        v.chats,
        v.buyer_messages,
        v.bot_replies,
        v.agent_replies,
        v.shop_replies,
        v.failed_replies,
        v.escalations
    );
    let _ = writeln!(
        out,
        "  answered by the bot: {} ({} of {})",
        share(r.bot_share.share),
        r.bot_share.answered,
        r.bot_share.of
    );
    counts(&mut out, "Decisions", &r.actions, usize::MAX);
    let f = &r.first_response;
    let _ = writeln!(
        out,
        "\nFirst response (nearest-rank percentiles)\n  bot:   {}\n  human: {}, {} escalations without an agent reply",
        percentiles(&f.bot),
        percentiles(&f.human),
        f.human_unanswered
    );
    let _ = writeln!(out, "\nResponse clock");
    if r.clock.is_empty() {
        let _ = writeln!(out, "  (no rounds recorded)");
    }
    for c in &r.clock {
        let _ = writeln!(
            out,
            "  {}: {} in time ({} in time, {} late, {} waiting); counted wait {}",
            c.platform,
            share(c.rate),
            c.in_time,
            c.late,
            c.waiting,
            percentiles(&c.counted)
        );
    }
    let _ = writeln!(out, "\nQueues");
    for q in &r.queues {
        let _ = writeln!(
            out,
            "  {:<11} opened {}, waiting {}, held {}, closed {}; claim {}; resolve {}",
            q.queue.as_str(),
            q.opened,
            q.waiting,
            q.held,
            q.closed,
            percentiles(&q.time_to_claim),
            percentiles(&q.time_to_resolve)
        );
    }
    counts(&mut out, "Outcomes", &r.outcomes, usize::MAX);
    counts(&mut out, "Top topics", &r.topics, 10);
    let _ = writeln!(out, "\nUnanswered messages (grouped by similarity)");
    if r.fallback_groups.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for group in &r.fallback_groups {
        let _ = writeln!(out, "  {:>6}  {}", group.count, group.examples.join(" | "));
    }
    counts(&mut out, "Rules that fired most", &r.rules_fired, 15);
    match &r.rules_never_fired {
        None => {
            let _ = writeln!(out, "\nRules that never fired\n  (rule files not loaded)");
        }
        Some(ids) => {
            let _ = writeln!(out, "\nRules that never fired ({})", ids.len());
            for id in ids {
                let _ = writeln!(out, "  {id}");
            }
        }
    }
    let _ = writeln!(
        out,
        "\nAnswers that did not help (buyer came back within 2 min)"
    );
    if r.unhelpful.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for u in &r.unhelpful {
        let _ = writeln!(out, "  {:>6}  {}", u.count, u.rule);
        for example in &u.examples {
            let _ = writeln!(out, "          {} ⇒ {}", example.asked, example.then);
        }
    }
    out
}
