//! The console's pages and fragments, as compile-time checked `maud` markup.
//!
//! Everything a buyer, an agent or a shop wrote is inserted as text (maud escapes it) inside
//! `<bdi>`, so markup stays text and right-to-left overrides cannot reorder the page around it.
//! The stable hooks browser tests rely on: queue rows carry `data-escalation-id`; the chat page
//! has `form[data-action=reply]` with `textarea[name=text]`; buttons carry `data-action`
//! (`claim`, `resolve`, `handback`, `transfer`, `note`, `release`); the login form is
//! `form[action="/login"]` with fields `name` and `password`.

use maud::{DOCTYPE, Markup, html};

use super::auth::Session;
use crate::model::{
    ConversationState, Escalation, EscalationState, Note, NoteKind, Part, Queue, Sender,
    TranscriptEntry,
};
use crate::store::{EscalationRecord, QuickPhrase};

/// `HH:MM:SS` at the shop's clock.
pub fn clock(ms: i64) -> String {
    crate::timefmt::shop_local(ms, "%H:%M:%S")
}

/// `MM-DD HH:MM` at the shop's clock.
pub fn day_and_time(ms: i64) -> String {
    crate::timefmt::shop_local(ms, "%m-%d %H:%M")
}

/// A wait in words: `45秒`, `12分`, `2小时5分`.
pub fn waited(ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    match seconds {
        0..60 => format!("{seconds}秒"),
        60..3600 => format!("{}分{}秒", seconds / 60, seconds % 60),
        _ => format!("{}小时{}分", seconds / 3600, seconds / 60 % 60),
    }
}

pub fn queue_name(queue: Queue) -> &'static str {
    queue.display_zh()
}

fn state_name(state: EscalationState) -> &'static str {
    match state {
        EscalationState::Open => "排队中",
        EscalationState::Claimed => "处理中",
        EscalationState::Closed => "已结束",
    }
}

pub fn chat_state_name(state: ConversationState) -> &'static str {
    match state {
        ConversationState::Bot => "机器人接待",
        ConversationState::Queued => "排队等人工",
        ConversationState::Human => "人工接待中",
        ConversationState::Paused => "他处人工回复，机器人暂停",
    }
}

/// The first `limit` characters of `text`, with an ellipsis when cut.
pub fn shorten(text: &str, limit: usize) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(limit).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// The page frame: head, navigation, the CSRF token for htmx requests.
pub fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    let csrf_header = session
        .map(|s| format!("{{\"X-CSRF-Token\": \"{}\"}}", s.csrf))
        .unwrap_or_else(|| "{}".to_owned());
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles": false, "allowEval": false, "allowScriptTags": false}"#;
                title { (title) " · 店小二" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/htmx.min.js" defer {}
                script src="/static/htmx-sse.min.js" defer {}
                script src="/static/console.js" defer {}
            }
            body hx-headers=(csrf_header) {
                @if let Some(session) = session {
                    header class="top" {
                        a class="brand" href="/" { "店小二 · 接待台" }
                        nav {
                            a href="/" { "队列" }
                            a href="/handover" { "交接班" }
                            @if session.supervises() {
                                a href="/report" { "报表" }
                                a href="/notifications" { "通知" }
                            }
                        }
                        span class="who" { bdi { (session.agent.name) } " · " (session.agent.role.as_str()) }
                        form method="post" action="/logout" class="inline" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" { "退出" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn login_page(error: Option<&str>, name: &str) -> Markup {
    layout(
        "登录",
        None,
        html! {
            section class="login" {
                h1 { "店小二 · 客服登录" }
                @if let Some(error) = error {
                    p class="notice bad" { (error) }
                }
                form method="post" action="/login" {
                    label { "账号" input type="text" name="name" value=(name) autocomplete="username" required autofocus; }
                    label { "密码" input type="password" name="password" autocomplete="current-password" required; }
                    button type="submit" { "登录" }
                }
            }
        },
    )
}

/// One row of the queue.
pub struct QueueRow {
    pub escalation: Escalation,
    pub shop: String,
    pub waiting_ms: i64,
    pub sla_ms: i64,
    /// The platform's response clock, once the buyer's wait has reached a warning share.
    pub clock: Option<ClockAlert>,
}

/// A buyer close to, or past, the platform's response time.
pub struct ClockAlert {
    /// Budget left as the platform counts it; zero or less when late.
    pub remaining_ms: i64,
}

impl ClockAlert {
    fn class(&self) -> &'static str {
        if self.remaining_ms <= 0 {
            "clock-late"
        } else {
            "clock-warn"
        }
    }
}

impl QueueRow {
    fn classes(&self) -> String {
        match &self.clock {
            Some(clock) => format!("{} {}", self.sla_class(), clock.class()),
            None => self.sla_class().to_owned(),
        }
    }

    fn sla_class(&self) -> &'static str {
        if self.escalation.state == EscalationState::Claimed {
            "held"
        } else if self.waiting_ms >= self.sla_ms {
            "sla-late"
        } else if self.waiting_ms * 2 >= self.sla_ms {
            "sla-warn"
        } else {
            "sla-ok"
        }
    }
}

/// The filters of the queue page.
#[derive(Debug, Default, Clone, serde::Deserialize, serde::Serialize)]
pub struct QueueFilter {
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub shop: String,
    #[serde(default)]
    pub state: String,
}

impl QueueFilter {
    pub fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }
}

pub fn queue_page(
    session: &Session,
    rows: &[QueueRow],
    counts: &[(Queue, usize)],
    shops: &[String],
    filter: &QueueFilter,
) -> Markup {
    layout(
        "队列",
        Some(session),
        html! {
            section class="counts" {
                @for (queue, count) in counts {
                    a class={ "count q-" (queue.as_str()) } href={ "/?queue=" (queue.as_str()) } {
                        span class="n" { (count) } " " (queue_name(*queue))
                    }
                }
            }
            form class="filters" method="get" action="/" {
                select name="queue" {
                    option value="" { "全部队列" }
                    @for queue in Queue::ALL {
                        option value=(queue.as_str()) selected[filter.queue == queue.as_str()] { (queue_name(*queue)) }
                    }
                }
                select name="shop" {
                    option value="" { "全部店铺" }
                    @for shop in shops {
                        option value=(shop) selected[&filter.shop == shop] { (shop) }
                    }
                }
                select name="state" {
                    option value="" { "排队中和处理中" }
                    option value="open" selected[filter.state == "open"] { "排队中" }
                    option value="claimed" selected[filter.state == "claimed"] { "处理中" }
                }
                button type="submit" { "筛选" }
            }
            div hx-ext="sse" sse-connect="/events" {
                table class="queue" {
                    thead { tr {
                        th { "等待" } th { "队列" } th { "店铺" } th { "买家" } th { "原因" }
                        th { "首条消息" } th { "目标" } th { "处理人" } th {}
                    } }
                    tbody id="queue-rows" hx-get={ "/queue/rows?" (filter.query()) }
                        hx-trigger="sse:queue, every 15s" hx-swap="innerHTML" {
                        (queue_rows(session, rows))
                    }
                }
            }
        },
    )
}

pub fn queue_rows(session: &Session, rows: &[QueueRow]) -> Markup {
    html! {
        @if rows.is_empty() {
            tr class="empty" { td colspan="9" { "没有等待处理的会话" } }
        }
        @for row in rows {
            @let e = &row.escalation;
            tr data-escalation-id=(e.id) class=(row.classes()) {
                td class="wait" {
                    (waited(row.waiting_ms))
                    @if let Some(clock) = &row.clock {
                        br;
                        small class="clock" {
                            @if clock.remaining_ms > 0 { "平台时限剩 " (waited(clock.remaining_ms)) } @else { "已超平台时限" }
                        }
                    }
                }
                td { span class={ "tag q-" (e.queue.as_str()) } { (queue_name(e.queue)) } }
                td { bdi { (row.shop) } }
                td { a href={ "/chat/" (e.id) } { bdi { (e.key.user_id) } } }
                td { (e.reason) @if let Some(rule) = &e.rule { br; small { (rule) } } }
                td class="first" { a href={ "/chat/" (e.id) } { bdi { (shorten(&e.first_message, 60)) } } }
                td { (waited(row.sla_ms)) }
                td {
                    @if let Some(holder) = &e.claimed_by { bdi { (holder) } } @else { "—" }
                }
                td {
                    @if e.state == EscalationState::Open {
                        form method="post" action={ "/chat/" (e.id) "/claim" } class="inline" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" data-action="claim" { "接手" }
                        }
                    }
                }
            }
        }
    }
}

/// Everything the chat page shows.
pub struct ChatView {
    pub escalation: Escalation,
    pub chat_state: ConversationState,
    pub shop: String,
    pub transcript: Vec<TranscriptEntry>,
    pub notes: Vec<Note>,
    pub history: Vec<EscalationRecord>,
    pub earlier: Vec<Escalation>,
    pub shop_phrases: Vec<(String, String)>,
    pub my_phrases: Vec<QuickPhrase>,
    pub tag: String,
    pub waiting_ms: i64,
}

/// A message for the agent at the top of the chat page.
pub enum Notice {
    Good(String),
    Bad(String),
}

fn sender_label(sender: &Sender) -> (String, &'static str) {
    match sender {
        Sender::Buyer => ("买家".to_owned(), "buyer"),
        Sender::Bot => ("店小二".to_owned(), "bot"),
        Sender::Agent(name) => (format!("客服 {name}"), "agent"),
        Sender::Shop => ("店铺(其他客户端)".to_owned(), "shop"),
    }
}

pub fn transcript(lines: &[TranscriptEntry]) -> Markup {
    html! {
        @for line in lines {
            @let (who, class) = sender_label(&line.sender);
            div class={ "line " (class) } {
                div class="meta" {
                    span class="who" { bdi { (who) } }
                    " " span class="at" { (day_and_time(line.at_ms)) }
                    @match line.delivery {
                        Some(crate::model::Delivery::Failed) => { " " span class="delivery bad" { "未送达" } }
                        Some(crate::model::Delivery::Unknown) => { " " span class="delivery warn" { "可能未送达" } }
                        Some(crate::model::Delivery::Pending) => { " " span class="delivery warn" { "发送中" } }
                        _ => {}
                    }
                }
                div class="text" { bdi { (line.text) } }
            }
        }
    }
}

pub fn chat_page(session: &Session, view: &ChatView, notice: Option<&Notice>) -> Markup {
    let e = &view.escalation;
    let csrf = &session.csrf;
    let mine = e.claimed_by.as_deref() == Some(session.agent.name.as_str());
    let open = e.state != EscalationState::Closed;
    let cards: Vec<&Part> = view
        .transcript
        .iter()
        .flat_map(|l| l.parts.iter())
        .collect();
    layout(
        "会话",
        Some(session),
        html! {
            section class="chat-head" {
                h1 {
                    span class={ "tag q-" (e.queue.as_str()) } { (queue_name(e.queue)) }
                    " 买家 " bdi { (e.key.user_id) } " · " bdi { (view.shop) }
                }
                p class="status" {
                    (state_name(e.state)) " · " (chat_state_name(view.chat_state))
                    @if let Some(holder) = &e.claimed_by { " · 处理人 " bdi { (holder) } }
                    @if e.state == EscalationState::Open { " · 已等待 " (waited(view.waiting_ms)) }
                }
                @if let Some(notice) = notice {
                    @match notice {
                        Notice::Good(text) => p class="notice good" { (text) },
                        Notice::Bad(text) => p class="notice bad" role="alert" { (text) },
                    }
                }
                div class="actions" {
                    @if e.state == EscalationState::Open {
                        (action_form(e.id, "claim", "接手", csrf, html! {}))
                    }
                    @if open && (mine || session.supervises()) && e.state == EscalationState::Claimed {
                        (action_form(e.id, "release", "放回队列", csrf, html! {}))
                    }
                    @if open && (mine || session.supervises()) {
                        (action_form(e.id, "handback", "交还机器人", csrf, html! {}))
                        (action_form(e.id, "resolve", "结案", csrf, html! {
                            select name="outcome" aria-label="结果" {
                                option value="refunded" { "已退款" }
                                option value="resent" { "已补发/换货" }
                                option value="explained" { "已解释" }
                                option value="no_action" { "无需处理" }
                                option value="other" { "其他" }
                            }
                            input type="text" name="note" placeholder="备注（选“其他”时必填）" maxlength="500";
                        }))
                        (action_form(e.id, "transfer", "转交", csrf, html! {
                            select name="queue" aria-label="转到队列" {
                                @for queue in Queue::ALL {
                                    option value=(queue.as_str()) selected[*queue == e.queue] { (queue_name(*queue)) }
                                }
                            }
                            @if session.supervises() {
                                input type="text" name="agent" placeholder="或转给客服(账号)" maxlength="32";
                            }
                        }))
                    }
                }
            }
            div class="chat-body" {
                section class="conversation" hx-ext="sse" sse-connect="/events" {
                    div id="transcript" class="transcript" hx-get={ "/chat/" (e.id) "/transcript" }
                        hx-trigger={ "sse:chat-" (view.tag) ", every 20s" } hx-swap="innerHTML" {
                        (transcript(&view.transcript))
                    }
                    @if open {
                        form class="reply" method="post" action={ "/chat/" (e.id) "/reply" } data-action="reply" {
                            input type="hidden" name="csrf" value=(csrf);
                            textarea name="text" rows="3" maxlength="2000" placeholder=(if mine { "回复买家（Ctrl+Enter 发送，Alt+数字 插入快捷短语）" } else { "接手后才能回复买家" }) disabled[!mine] {}
                            button type="submit" data-action="send" disabled[!mine] { "发送" }
                        }
                        @if !view.shop_phrases.is_empty() || !view.my_phrases.is_empty() {
                            div class="phrases" {
                                span { "快捷短语：" }
                                @for (i, (_, text)) in view.shop_phrases.iter().enumerate() {
                                    button type="button" class="phrase" data-phrase=(text) title={ "Alt+" (i + 1) } { (shorten(text, 18)) }
                                }
                                @for phrase in &view.my_phrases {
                                    button type="button" class="phrase mine" data-phrase=(phrase.text) { (shorten(&phrase.text, 18)) }
                                }
                            }
                        }
                        form class="inline add-phrase" method="post" action="/phrases" {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="back" value=(e.id);
                            input type="text" name="text" placeholder="添加我的快捷短语" maxlength="500" required;
                            button type="submit" { "添加" }
                        }
                    }
                }
                aside class="evidence" {
                    h2 { "证据" }
                    dl {
                        dt { "原因" } dd { (e.reason) }
                        @if let Some(rule) = &e.rule { dt { "规则" } dd { code { (rule) } } }
                        dt { "首条消息" } dd { bdi { (e.first_message) } }
                        dt { "转人工时间" } dd { (day_and_time(e.created_ms)) }
                    }
                    @if !cards.is_empty() {
                        h3 { "买家发来的商品和订单" }
                        ul { @for card in &cards { li { bdi { (card.to_string()) } } } }
                    }
                    @if !view.earlier.is_empty() {
                        h3 { "这位买家之前的转人工" }
                        ul { @for old in &view.earlier {
                            li { a href={ "/chat/" (old.id) } { (day_and_time(old.created_ms)) " " (queue_name(old.queue)) }
                                 " " (old.outcome.as_deref().unwrap_or("")) }
                        } }
                    }
                    h3 { "备注与交接" }
                    ul class="notes" {
                        @for note in &view.notes {
                            li class={ "note " (note.kind.as_str()) } {
                                span class="meta" { @if note.kind == NoteKind::Handover { "交接 · " } bdi { (note.author) } " · " (day_and_time(note.at_ms)) }
                                div { bdi { (note.body) } }
                            }
                        }
                    }
                    form method="post" action={ "/chat/" (e.id) "/note" } {
                        input type="hidden" name="csrf" value=(csrf);
                        textarea name="text" rows="2" maxlength="2000" placeholder="内部备注（买家看不到）" required {}
                        button type="submit" data-action="note" { "记备注" }
                    }
                    h3 { "经过" }
                    ol class="history" {
                        @for step in &view.history {
                            li { (day_and_time(step.at_ms)) " " (step.kind.as_str()) " · " bdi { (step.actor.to_string()) } " · " (step.detail) }
                        }
                    }
                }
            }
        },
    )
}

fn action_form(id: i64, action: &str, label: &str, csrf: &str, fields: Markup) -> Markup {
    html! {
        form method="post" action={ "/chat/" (id) "/" (action) } class="inline action" {
            input type="hidden" name="csrf" value=(csrf);
            (fields)
            button type="submit" data-action=(action) { (label) }
        }
    }
}

/// One chat on the handover page.
pub struct HandoverItem {
    pub escalation: Escalation,
    pub shop: String,
    pub notes: Vec<Note>,
}

pub fn handover_page(session: &Session, items: &[HandoverItem], notice: Option<&Notice>) -> Markup {
    let mine: Vec<&HandoverItem> = items
        .iter()
        .filter(|i| i.escalation.claimed_by.as_deref() == Some(session.agent.name.as_str()))
        .collect();
    layout(
        "交接班",
        Some(session),
        html! {
            h1 { "交接班" }
            @if let Some(Notice::Good(text)) = notice { p class="notice good" { (text) } }
            @if let Some(Notice::Bad(text)) = notice { p class="notice bad" { (text) } }
            @if !mine.is_empty() {
                section class="my-shift" {
                    h2 { "我手上的会话（" (mine.len()) "）" }
                    p { "写下每个会话答应了买家什么、下一步做什么，然后一键交班：这些会话回到队列，备注留给下一班。" }
                    form method="post" action="/handover" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        @for item in &mine {
                            @let e = &item.escalation;
                            label class="handover-note" {
                                span { a href={ "/chat/" (e.id) } { (queue_name(e.queue)) " · 买家 " bdi { (e.key.user_id) } } " · " bdi { (shorten(&e.first_message, 40)) } }
                                textarea name={ "note-" (e.id) } rows="2" maxlength="2000" placeholder="已承诺 / 下一步" {}
                            }
                        }
                        button type="submit" data-action="release" { "交班并放回队列" }
                    }
                }
            }
            section {
                h2 { "所有未结束的会话" }
                table class="handover" {
                    thead { tr { th { "队列" } th { "店铺" } th { "买家" } th { "状态" } th { "交接备注" } } }
                    tbody {
                        @for item in items {
                            @let e = &item.escalation;
                            tr data-escalation-id=(e.id) {
                                td { (queue_name(e.queue)) }
                                td { bdi { (item.shop) } }
                                td { a href={ "/chat/" (e.id) } { bdi { (e.key.user_id) } } }
                                td { (state_name(e.state)) @if let Some(h) = &e.claimed_by { " · " bdi { (h) } } }
                                td {
                                    @for note in &item.notes {
                                        div class="note handover" {
                                            span class="meta" { bdi { (note.author) } " · " (day_and_time(note.at_ms)) }
                                            " " bdi { (note.body) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// What the report page was asked for, kept in its form.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ReportQuery {
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub shop: String,
}

/// The shift report for supervisors: a period form above the same sections `xiaoer report
/// --format html` prints.
pub fn report_page(
    session: &Session,
    query: &ReportQuery,
    report: &crate::report::Report,
) -> Markup {
    layout(
        "报表",
        Some(session),
        html! {
            link rel="stylesheet" href="/static/report.css";
            form method="get" action="/report" class="filters" {
                label { "从 " input type="text" name="since" value=(query.since) placeholder="24h · 7d · 2026-12-01"; }
                label { " 到 " input type="text" name="until" value=(query.until) placeholder="现在"; }
                label { " 店铺 " input type="text" name="shop" value=(query.shop) placeholder="全部"; }
                button type="submit" { "查看" }
            }
            (crate::report::html::body(report))
        },
    )
}

/// The notification outbox: counts, and the deliveries given up on with a way to send them again.
pub fn notifications_page(
    session: &Session,
    counts: &crate::store::OutboxCounts,
    dead: &[crate::store::DeadLetter],
) -> Markup {
    layout(
        "通知",
        Some(session),
        html! {
            h1 { "通知" }
            p class="counts" {
                "待发送 " strong { (counts.pending + counts.unplanned) }
                " · 已送达 " strong { (counts.delivered) }
                " · 未送达（已放弃）" strong data-dead-letters=(counts.dead) { (counts.dead) }
            }
            @if dead.is_empty() {
                p { "没有未送达的通知。" }
            } @else {
                form method="post" action="/notifications/retry" class="inline" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" data-action="retry" { "全部重发" }
                }
                table class="dead-letters" {
                    thead { tr { th { "放弃于" } th { "接收方" } th { "事件" } th { "队列" } th { "会话" } th { "尝试" } th { "原因" } th {} } }
                    tbody {
                        @for d in dead {
                            tr data-outbox-id=(d.entry.id) {
                                td { (day_and_time(d.given_up_ms)) }
                                td { bdi { (d.target) } }
                                td { (d.entry.event) }
                                td { (queue_name(d.entry.queue)) }
                                td {
                                    @if let Some(id) = d.entry.escalation_id {
                                        a href={ "/chat/" (id) } { bdi { (shorten(&d.entry.first_message, 40)) } }
                                    }
                                }
                                td { (d.attempts) }
                                td { (d.last_error.as_deref().unwrap_or("—")) }
                                td {
                                    form method="post" action="/notifications/retry" class="inline" {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="target" value=(d.target);
                                        button type="submit" data-action="retry" { "重发此接收方" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_the_shop_reads_them() {
        // 2026-12-01 00:00:00 UTC is 08:00 in Shanghai.
        let ms = 1_796_083_200_000;
        assert_eq!(clock(ms), "08:00:00");
        assert_eq!(day_and_time(ms), "12-01 08:00");
        assert_eq!(waited(59_999), "59秒");
        assert_eq!(waited(125_000), "2分5秒");
        assert_eq!(waited(7_500_000), "2小时5分");
        assert_eq!(shorten("一二三四", 2), "一二…");
        assert_eq!(shorten("一二", 2), "一二");
    }
}
