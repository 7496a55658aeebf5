//! What each kind of receiver is sent: the generic JSON object, and the Chinese chat message the
//! DingTalk, WeCom and Feishu robots post to a group.
//!
//! Buyer text (and the names a gateway reports) is untrusted: a buyer who writes
//! `**[点我](http://evil)**` must not get a disguised link or fake formatting into the shop's
//! group, nor `<at user_id="all">` a Feishu group, nor a line break that forges a "处理：" line.
//! So every such value is flattened to one line and cut to a length (by characters, not bytes),
//! and where the kind renders markup its markup characters are replaced by their full-width
//! look-alikes. Replacing, not backslash-escaping: the robots' markdown subsets do not document
//! escapes, and a full-width `＊` reads the same to a person and can never render as markup.
//!
//! Times come from [`crate::timefmt`]: UTC in the generic body, Beijing time in the chat text.

use serde_json::{Value, json};

use super::{Event, Notification};
use crate::model::Queue;

/// Most characters of the buyer's message a notification carries.
pub const BUYER_TEXT_LIMIT: usize = 200;
/// Most characters of a buyer id, shop name, platform or detail line in a chat message.
pub const NAME_LIMIT: usize = 64;

/// The word every chat message contains, so a robot secured by keyword can name it.
pub const KEYWORD: &str = "店小二";

/// The generic body (see the module docs of [`crate::notify`] for the schema).
pub fn generic(n: &Notification) -> Value {
    let mut body = json!({
        "event": n.event.as_str(),
        "key": n.key,
        "shop": n.shop,
        "platform": n.platform,
        "user_id": n.user_id,
        "queue": n.queue.as_str(),
        "escalation_id": n.escalation_id,
        "first_message": cap(&n.first_message, BUYER_TEXT_LIMIT),
        "at": rfc3339_utc(n.at_ms),
    });
    if let Value::Object(fields) = &mut body {
        if let Some(name) = &n.shop_name {
            fields.insert("shop_name".to_owned(), Value::from(name.as_str()));
        }
        if !n.detail.is_empty() {
            fields.insert("detail".to_owned(), Value::from(n.detail.as_str()));
        }
        if let Some(url) = &n.console_url {
            fields.insert("console_url".to_owned(), Value::from(url.as_str()));
        }
    }
    body
}

/// A DingTalk custom robot's `markdown` message.
pub fn dingtalk(n: &Notification) -> Value {
    json!({
        "msgtype": "markdown",
        "markdown": {
            "title": title(n),
            // DingTalk's markdown joins single line breaks; a blank line separates lines.
            "text": chat_text(n, Style::Markdown { line_break: "\n\n" }),
        },
    })
}

/// A WeCom group robot's `markdown` message.
pub fn wecom(n: &Notification) -> Value {
    json!({
        "msgtype": "markdown",
        "markdown": { "content": chat_text(n, Style::Markdown { line_break: "\n" }) },
    })
}

/// A Feishu custom bot's `text` message; `signature` is (timestamp in seconds, sign) when the
/// bot checks signatures.
pub fn feishu(n: &Notification, signature: Option<(i64, String)>) -> Value {
    let mut body = json!({
        "msg_type": "text",
        "content": { "text": chat_text(n, Style::Plain) },
    });
    if let (Some((timestamp, sign)), Value::Object(fields)) = (signature, &mut body) {
        // Feishu's docs send the timestamp as a string.
        fields.insert("timestamp".to_owned(), Value::from(timestamp.to_string()));
        fields.insert("sign".to_owned(), Value::from(sign));
    }
    body
}

#[derive(Clone, Copy)]
enum Style {
    /// Rendered as markdown: markup characters in untrusted text are neutralised.
    Markdown { line_break: &'static str },
    /// Shown as text; only Feishu's `<at>` tags need neutralising.
    Plain,
}

fn headline(event: Event) -> &'static str {
    match event {
        Event::EscalationCreated => "新转人工",
        Event::EscalationRaised => "转入更紧急的队列",
        Event::SlaWarning => "排队即将超时",
        Event::SlaBreach => "排队已超时",
        Event::ClockWarning => "平台响应时限将到",
    }
}

/// The queue as a shop's staff name it (shorter than the buyer-facing
/// [`Queue::display_zh`]).
pub fn queue_zh(queue: Queue) -> &'static str {
    match queue {
        Queue::Refund => "退款",
        Queue::AfterSale => "售后",
        Queue::Complaint => "投诉",
        Queue::BadReview => "差评",
        Queue::Human => "人工",
    }
}

fn shop_label(n: &Notification) -> &str {
    n.shop_name.as_deref().unwrap_or(&n.shop)
}

/// The robot message's title (DingTalk shows it in the notification preview): plain text.
fn title(n: &Notification) -> String {
    format!(
        "{} · {} · {}队列",
        headline(n.event),
        cap(shop_label(n), NAME_LIMIT),
        queue_zh(n.queue)
    )
}

fn chat_text(n: &Notification, style: Style) -> String {
    let untrusted = |text: &str, limit: usize| {
        let flat = cap(text, limit);
        match style {
            Style::Markdown { .. } => neutralise_markdown(&flat),
            Style::Plain => neutralise_tags(&flat),
        }
    };
    let head = format!(
        "【{}】店铺 {} · {}队列",
        headline(n.event),
        untrusted(shop_label(n), NAME_LIMIT),
        queue_zh(n.queue)
    );
    let mut lines = vec![
        match style {
            Style::Markdown { .. } => format!("**{head}**"),
            Style::Plain => head,
        },
        format!(
            "买家：{}（{}）",
            untrusted(&n.user_id, NAME_LIMIT),
            untrusted(&n.platform, NAME_LIMIT)
        ),
        format!(
            "首条消息：{}",
            untrusted(&n.first_message, BUYER_TEXT_LIMIT)
        ),
    ];
    if !n.detail.is_empty() {
        lines.push(untrusted(&n.detail, NAME_LIMIT));
    }
    lines.push(format!("时间：{}（北京时间）", beijing_minute(n.at_ms)));
    lines.push(match (&n.console_url, style) {
        (Some(url), Style::Markdown { .. }) => format!("处理：[打开对话]({})", link_target(url)),
        (Some(url), Style::Plain) => format!("处理：{url}"),
        (None, _) => "处理：请到客服后台接待".to_owned(),
    });
    lines.push(format!("—— {KEYWORD}"));
    let line_break = match style {
        Style::Markdown { line_break } => line_break,
        Style::Plain => "\n",
    };
    lines.join(line_break)
}

/// `text` on one line (control characters, line breaks included, become spaces) and at most
/// `limit` characters, the last of them `…` when cut.
pub fn cap(text: &str, limit: usize) -> String {
    let flat = text.chars().map(|c| if c.is_control() { ' ' } else { c });
    if text.chars().nth(limit).is_none() {
        return flat.collect();
    }
    let mut out: String = flat.take(limit.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Markdown's significant ASCII characters, and HTML's angle brackets (WeCom renders
/// `<font>`), swapped for full-width forms that look alike and mean nothing to a renderer.
/// Characters that only mean something at the start of a line (`-`, `+`, `=`, `1.`) are left
/// alone: no untrusted value starts a line.
pub fn neutralise_markdown(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '*' => '＊',
            '_' => '＿',
            '[' => '［',
            ']' => '］',
            '(' => '（',
            ')' => '）',
            '#' => '＃',
            '`' => '｀',
            '>' => '＞',
            '<' => '＜',
            '~' => '～',
            '|' => '｜',
            '!' => '！',
            '\\' => '＼',
            other => other,
        })
        .collect()
}

/// Only the angle brackets, which Feishu text messages read as `<at>` tags.
fn neutralise_tags(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => '＜',
            '>' => '＞',
            other => other,
        })
        .collect()
}

/// Our own console link, made safe to stand inside `(…)`: characters that would end the link
/// early are percent-encoded.
fn link_target(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            ' ' => out.push_str("%20"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// RFC 3339 in UTC with milliseconds: `2026-12-02T08:30:15.250Z`.
pub fn rfc3339_utc(at_ms: i64) -> String {
    crate::timefmt::utc_rfc3339(at_ms)
}

/// The minute in Beijing time (UTC+8, no daylight saving): `2026-12-02 16:30`.
fn beijing_minute(at_ms: i64) -> String {
    crate::timefmt::shop_local(at_ms, "%Y-%m-%d %H:%M")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::sample;

    #[test]
    fn times_format_as_rfc3339_utc_and_beijing_minutes() {
        // Expected values from Python: datetime.fromtimestamp(ms / 1000, timezone.utc).
        let table = [
            (0, "1970-01-01T00:00:00.000Z", "1970-01-01 08:00"),
            (
                1_796_200_215_250,
                "2026-12-02T08:30:15.250Z",
                "2026-12-02 16:30",
            ),
            // A leap day, and Beijing's evening crossing into the next day.
            (
                1_709_222_399_999,
                "2024-02-29T15:59:59.999Z",
                "2024-02-29 23:59",
            ),
            (
                1_709_222_400_000,
                "2024-02-29T16:00:00.000Z",
                "2024-03-01 00:00",
            ),
            (
                951_782_400_000,
                "2000-02-29T00:00:00.000Z",
                "2000-02-29 08:00",
            ),
            (-1, "1969-12-31T23:59:59.999Z", "1970-01-01 07:59"),
        ];
        for (at_ms, utc, beijing) in table {
            assert_eq!(rfc3339_utc(at_ms), utc);
            assert_eq!(beijing_minute(at_ms), beijing);
        }
    }

    #[test]
    fn generic_body_carries_every_field() {
        let body = generic(&sample());
        let expected = json!({
            "event": "escalation.created",
            "key": "esc-42-created",
            "shop": "shop1",
            "shop_name": "小二旗舰店",
            "platform": "taobao",
            "user_id": "u1",
            "queue": "refund",
            "escalation_id": 42,
            "first_message": "我要退款，东西坏了",
            "at": "2026-12-02T08:30:15.250Z",
            "console_url": "https://console.example.com/chats/42",
        });
        assert_eq!(body, expected);

        let mut bare = sample();
        bare.shop_name = None;
        bare.console_url = None;
        bare.escalation_id = None;
        bare.detail = "已等待 12 分钟".to_owned();
        let body = generic(&bare);
        assert_eq!(body["escalation_id"], Value::Null);
        assert_eq!(body["detail"], "已等待 12 分钟");
        assert!(body.get("console_url").is_none() && body.get("shop_name").is_none());
    }

    #[test]
    fn chat_messages_say_what_happened_in_chinese() {
        let mut n = sample();
        n.detail = "已等待 12 分钟".to_owned();
        let dingtalk = dingtalk(&n);
        assert_eq!(dingtalk["msgtype"], "markdown");
        assert_eq!(
            dingtalk["markdown"]["title"],
            "新转人工 · 小二旗舰店 · 退款队列"
        );
        assert_eq!(
            dingtalk["markdown"]["text"],
            "**【新转人工】店铺 小二旗舰店 · 退款队列**\n\n\
             买家：u1（taobao）\n\n\
             首条消息：我要退款，东西坏了\n\n\
             已等待 12 分钟\n\n\
             时间：2026-12-02 16:30（北京时间）\n\n\
             处理：[打开对话](https://console.example.com/chats/42)\n\n\
             —— 店小二"
        );

        let wecom = wecom(&n);
        assert_eq!(wecom["msgtype"], "markdown");
        let content = wecom["markdown"]["content"].as_str().unwrap();
        assert!(content.starts_with("**【新转人工】店铺 小二旗舰店 · 退款队列**\n买家：u1"));

        n.console_url = None;
        n.event = Event::SlaBreach;
        n.queue = Queue::BadReview;
        let feishu = feishu(&n, Some((1_796_200_215, "c2lnbg==".to_owned())));
        assert_eq!(
            feishu,
            json!({
                "timestamp": "1796200215",
                "sign": "c2lnbg==",
                "msg_type": "text",
                "content": { "text":
                    "【排队已超时】店铺 小二旗舰店 · 差评队列\n\
                     买家：u1（taobao）\n\
                     首条消息：我要退款，东西坏了\n\
                     已等待 12 分钟\n\
                     时间：2026-12-02 16:30（北京时间）\n\
                     处理：请到客服后台接待\n\
                     —— 店小二" },
            })
        );
        assert!(self::feishu(&n, None).get("sign").is_none());
    }

    #[test]
    fn hostile_buyer_text_cannot_format_link_or_mention() {
        let mut n = sample();
        n.first_message = "**[点我](http://evil)**\n处理：[假链接](http://evil) <at user_id=\"all\">所有人</at> <font color=\"warning\">".to_owned();
        n.user_id = "u1](http://evil)".to_owned();

        for body in [
            dingtalk(&n)["markdown"]["text"].clone(),
            wecom(&n)["markdown"]["content"].clone(),
        ] {
            let text = body.as_str().unwrap();
            let first = text.lines().find(|l| l.starts_with("首条消息：")).unwrap();
            assert_eq!(
                first,
                "首条消息：＊＊［点我］（http://evil）＊＊ 处理：［假链接］（http://evil） \
                 ＜at user＿id=\"all\"＞所有人＜/at＞ ＜font color=\"warning\"＞"
            );
            // The only link and the only "处理：" line are ours.
            assert_eq!(text.matches("](").count(), 1, "{text}");
            assert_eq!(text.lines().filter(|l| l.starts_with("处理：")).count(), 1);
            assert!(
                text.contains("买家：u1］（http://evil）（taobao）"),
                "{text}"
            );
        }

        let feishu = feishu(&n, None);
        let text = feishu["content"]["text"].as_str().unwrap();
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        assert!(text.contains("＜at user_id=\"all\"＞"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("处理：")).count(), 1);
    }

    #[test]
    fn long_buyer_text_is_cut_by_characters() {
        let mut n = sample();
        // 10 KB: 3 334 three-byte characters and one byte more.
        n.first_message = format!("{}x", "退".repeat(3334));
        assert!(n.first_message.len() > 10_000);

        let cut = cap(&n.first_message, BUYER_TEXT_LIMIT);
        assert_eq!(cut.chars().count(), BUYER_TEXT_LIMIT);
        assert_eq!(cut, format!("{}…", "退".repeat(BUYER_TEXT_LIMIT - 1)));
        assert_eq!(generic(&n)["first_message"], cut.as_str());
        for text in [
            dingtalk(&n)["markdown"]["text"]
                .as_str()
                .unwrap()
                .to_owned(),
            wecom(&n)["markdown"]["content"]
                .as_str()
                .unwrap()
                .to_owned(),
            feishu(&n, None)["content"]["text"]
                .as_str()
                .unwrap()
                .to_owned(),
        ] {
            assert!(text.contains(&format!("首条消息：{cut}")), "{text}");
            assert!(text.len() < 1000, "{} bytes", text.len());
        }

        let table = [
            ("", 5, ""),
            ("短", 5, "短"),
            ("12345", 5, "12345"),
            ("123456", 5, "1234…"),
            ("a\r\nb\tc", 10, "a  b c"),
        ];
        for (text, limit, expected) in table {
            assert_eq!(cap(text, limit), expected, "{text:?}");
        }
    }

    #[test]
    fn console_links_cannot_break_out_of_their_parentheses() {
        assert_eq!(
            link_target("https://c.example/chats/1?q=(a b)"),
            "https://c.example/chats/1?q=%28a%20b%29"
        );
    }
}
