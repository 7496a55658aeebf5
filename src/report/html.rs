//! The report as one HTML page that opens offline: no scripts, no fonts or pictures to fetch,
//! the style inline, charts drawn here as inline SVG (bars for topics and queues, a histogram
//! of the bot's response times). Buyer text goes in as text (maud escapes it) inside `<bdi>`,
//! as in the console.
//!
//! [`body`] is the part the console shows inside its own frame; it then links [`STYLE`] as
//! `/static/report.css`, since the console's content security policy forbids inline style.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::period::shop_time;
use super::text::{percentiles, share, value};
use super::{Bucket, Count, Report};
use crate::model::Queue;

/// The report's style sheet.
pub const STYLE: &str = "\
.report{font-family:system-ui,-apple-system,'PingFang SC','Microsoft YaHei',sans-serif;color:#1d2733;max-width:64rem;margin:0 auto;padding:1rem;line-height:1.45}
.report h1{font-size:1.4rem;margin:.2rem 0}
.report h2{font-size:1.1rem;margin:1.6rem 0 .4rem;border-bottom:1px solid #d8dee6;padding-bottom:.2rem}
.report .period{color:#5b6776;margin:0 0 1rem}
.report .figures{display:flex;flex-wrap:wrap;gap:.6rem;margin:0;padding:0;list-style:none}
.report .figures li{background:#f2f5f9;border-radius:6px;padding:.5rem .8rem;min-width:7rem}
.report .figures b{display:block;font-size:1.3rem}
.report table{border-collapse:collapse;margin:.4rem 0;font-size:.92rem}
.report th,.report td{text-align:left;padding:.25rem .7rem .25rem 0;border-bottom:1px solid #eef1f4;vertical-align:top}
.report td.n,.report th.n{text-align:right;font-variant-numeric:tabular-nums}
.report .muted{color:#7a8594}
.report svg{display:block;margin:.4rem 0;max-width:100%;height:auto}
.report svg text{font-size:12px;fill:#1d2733}
.report ul.examples{margin:0;padding-left:1.1rem}
";

const BAR_COLOUR: &str = "#3d7bd9";
const LABEL_WIDTH: i64 = 150;
const BAR_WIDTH: i64 = 320;
const ROW_HEIGHT: i64 = 22;

/// A whole page, for `--format html`.
pub fn document(report: &Report) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "店小二 · 客服报表 " (shop_time(report.period.since_ms)) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body(report)) }
        }
    }
}

/// Horizontal bars, one row per count, the largest filling the width.
fn bars(counts: &[Count], label: &str) -> Markup {
    let largest = counts.iter().map(|c| c.count).max().unwrap_or(0).max(1) as i64;
    let height = ROW_HEIGHT * counts.len().max(1) as i64;
    let width = LABEL_WIDTH + BAR_WIDTH + 60;
    html! {
        svg width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img" aria-label=(label) {
            @for (row, count) in counts.iter().enumerate() {
                @let y = row as i64 * ROW_HEIGHT;
                @let length = count.count as i64 * BAR_WIDTH / largest;
                text x=(LABEL_WIDTH - 6) y=(y + 15) text-anchor="end" { (count.name) }
                rect x=(LABEL_WIDTH) y=(y + 3) width=(length) height=(ROW_HEIGHT - 6) fill=(BAR_COLOUR) {}
                text x=(LABEL_WIDTH + length + 6) y=(y + 15) { (count.count) }
            }
        }
    }
}

fn bucket_label(buckets: &[Bucket], index: usize) -> String {
    match (
        buckets[index].upto_ms,
        index.checked_sub(1).and_then(|i| buckets[i].upto_ms),
    ) {
        (Some(upto), _) => format!("≤{upto}ms"),
        (None, Some(last)) => format!(">{last}ms"),
        (None, None) => "all".to_owned(),
    }
}

/// Vertical bars of the bot's waits.
fn histogram(buckets: &[Bucket]) -> Markup {
    let largest = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1) as i64;
    let (column, chart_height) = (64_i64, 120_i64);
    let width = column * buckets.len() as i64;
    let height = chart_height + 40;
    html! {
        svg width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="bot response times" {
            @for (index, bucket) in buckets.iter().enumerate() {
                @let x = index as i64 * column;
                @let bar = bucket.count as i64 * chart_height / largest;
                rect x=(x + 8) y=(chart_height - bar + 16) width=(column - 16) height=(bar) fill=(BAR_COLOUR) {}
                text x=(x + column / 2) y=(chart_height - bar + 12) text-anchor="middle" { (bucket.count) }
                text x=(x + column / 2) y=(chart_height + 32) text-anchor="middle" { (bucket_label(buckets, index)) }
            }
        }
    }
}

fn count_table(counts: &[Count], what: &str) -> Markup {
    html! {
        @if counts.is_empty() {
            p class="muted" { "（无）" }
        } @else {
            table {
                tr { th { (what) } th class="n" { "次数" } }
                @for count in counts {
                    tr { td { code { (count.name) } } td class="n" { (count.count) } }
                }
            }
        }
    }
}

/// The report's sections, without the page around them (the console frames it).
pub fn body(report: &Report) -> Markup {
    let r = report;
    let v = &r.volume;
    let f = &r.first_response;
    let queue_counts: Vec<Count> = r
        .queues
        .iter()
        .map(|q| Count {
            name: Queue::display_zh(q.queue).to_owned(),
            count: q.opened,
        })
        .collect();
    html! {
        article class="report" {
            h1 { "客服报表" }
            p class="period" {
                (shop_time(r.period.since_ms)) " – " (shop_time(r.period.until_ms)) "（北京时间）"
                @if let Some(shop) = &r.period.shop { " · 店铺 " bdi { (shop) } }
            }

            h2 { "接待量" }
            ul class="figures" {
                li { b { (v.chats) } "会话" }
                li { b { (v.buyer_messages) } "买家消息" }
                li { b { (v.bot_replies) } "机器人回复" }
                li { b { (v.agent_replies) } "人工回复" }
                li { b { (v.escalations) } "转人工" }
                li { b { (share(r.bot_share.share)) } "机器人独立解答（" (r.bot_share.answered) "/" (r.bot_share.of) "）" }
                @if v.failed_replies > 0 { li { b { (v.failed_replies) } "发送失败" } }
                @if v.shop_replies > 0 { li { b { (v.shop_replies) } "他处人工回复" } }
            }
            (count_table(&r.actions, "路由结果"))

            h2 { "首次响应" }
            table {
                tr { th { "" } th class="n" { "p50" } th class="n" { "p90" } th class="n" { "样本" } }
                tr { td { "机器人（消息 → 回复）" } td class="n" { (value(f.bot.p50, f.bot.unit)) } td class="n" { (value(f.bot.p90, f.bot.unit)) } td class="n" { (f.bot.count) } }
                tr { td { "人工（转人工 → 首条人工回复）" } td class="n" { (value(f.human.p50, f.human.unit)) } td class="n" { (value(f.human.p90, f.human.unit)) } td class="n" { (f.human.count) } }
            }
            p class="muted" { "百分位数按最近秩法（nearest rank）计算。" (f.human_unanswered) " 个转人工会话期间内无人工回复。" }
            (histogram(&f.bot_histogram))

            h2 { "平台响应考核" }
            @if r.clock.is_empty() {
                p class="muted" { "本期没有记录响应考核轮次。" }
            } @else {
                table {
                    tr { th { "平台" } th class="n" { "达标率" } th class="n" { "达标" } th class="n" { "超时" } th class="n" { "等待中" } th { "计时等待" } }
                    @for c in &r.clock {
                        tr { td { bdi { (c.platform) } } td class="n" { (share(c.rate)) } td class="n" { (c.in_time) } td class="n" { (c.late) } td class="n" { (c.waiting) } td { (percentiles(&c.counted)) } }
                    }
                }
            }

            h2 { "人工队列" }
            (bars(&queue_counts, "escalations per queue"))
            table {
                tr { th { "队列" } th class="n" { "转入" } th class="n" { "排队" } th class="n" { "处理中" } th class="n" { "已结束" } th { "认领用时" } th { "解决用时" } }
                @for q in &r.queues {
                    tr {
                        td { (q.queue.display_zh()) " " span class="muted" { (q.queue.as_str()) } }
                        td class="n" { (q.opened) } td class="n" { (q.waiting) } td class="n" { (q.held) } td class="n" { (q.closed) }
                        td { (percentiles(&q.time_to_claim)) } td { (percentiles(&q.time_to_resolve)) }
                    }
                }
            }
            h2 { "处理结果" }
            (count_table(&r.outcomes, "结果"))

            h2 { "热门话题" }
            @if r.topics.is_empty() { p class="muted" { "（无）" } } @else {
                (bars(&r.topics[..r.topics.len().min(10)], "top topics"))
            }

            h2 { "未能回答的消息（按相似度分组，可据此写新规则）" }
            @if r.fallback_groups.is_empty() { p class="muted" { "（无）" } } @else {
                table {
                    tr { th class="n" { "条数" } th { "例句" } }
                    @for group in &r.fallback_groups {
                        tr { td class="n" { (group.count) } td { ul class="examples" { @for e in &group.examples { li { bdi { (e) } } } } } }
                    }
                }
            }

            h2 { "触发最多的规则" }
            (count_table(&r.rules_fired[..r.rules_fired.len().min(15)], "规则"))
            h2 { "从未触发的规则" }
            @match &r.rules_never_fired {
                None => p class="muted" { "未加载规则文件。" },
                Some(ids) if ids.is_empty() => p class="muted" { "每条规则都触发过。" },
                Some(ids) => p { @for (i, id) in ids.iter().enumerate() { @if i > 0 { " · " } code { (id) } } },
            }

            h2 { "没有帮上忙的回答（回答后 2 分钟内买家再次追问未果或转人工）" }
            @if r.unhelpful.is_empty() { p class="muted" { "（无）" } } @else {
                table {
                    tr { th { "规则" } th class="n" { "次数" } th { "例子" } }
                    @for u in &r.unhelpful {
                        tr {
                            td { code { (u.rule) } } td class="n" { (u.count) }
                            td { ul class="examples" { @for e in &u.examples { li { bdi { (e.asked) } " ⇒ " bdi { (e.then) } } } } }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConversationKey, Direction, Sender};
    use crate::report::{Period, compute};
    use crate::store::{DecisionRecord, ReportLine, ReportRows};

    fn buyer(id: i64, text: &str, action: &str, at_ms: i64) -> ReportLine {
        ReportLine {
            id,
            key: ConversationKey::new("qq", "shop1", "u1"),
            direction: Direction::Inbound,
            sender: Sender::Buyer,
            text: text.to_owned(),
            delivery: None,
            at_ms,
            decision: Some(DecisionRecord {
                action: action.to_owned(),
                topic: "fallback".to_owned(),
                rule: None,
                decided_by: "fallback".to_owned(),
            }),
        }
    }

    fn page() -> String {
        let rows = ReportRows {
            lines: vec![
                buyer(1, "<script>alert(1)</script>能开发票吗", "fallback", 1_000),
                buyer(2, "<img src=x onerror=alert(2)>", "fallback", 2_000),
            ],
            ..ReportRows::default()
        };
        let period = Period {
            since_ms: 0,
            until_ms: 10_000,
            shop: None,
        };
        document(&compute(
            &rows,
            period,
            Some(&["greeting.hello".to_owned()]),
        ))
        .into_string()
    }

    #[test]
    fn the_page_is_one_self_contained_document() {
        let page = page();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<html").count(), 1);
        assert!(page.contains("<svg"));
        assert!(page.contains("<style>"));
        for outside in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "<script",
            "<link",
        ] {
            assert!(!page.contains(outside), "{outside}");
        }
        assert!(page.contains("greeting.hello"));
    }

    #[test]
    fn buyer_text_is_escaped() {
        let page = page();
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;能开发票吗"));
        assert!(page.contains("&lt;img src=x onerror=alert(2)&gt;"));
        assert!(!page.contains("<img"));
    }
}
