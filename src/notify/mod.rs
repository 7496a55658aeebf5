//! Webhook notifications: telling a shop's people, where they already are, that a chat needs a
//! human — a new escalation, a chat raised to a more serious queue, a queue wait about to pass or
//! past its target, a platform response clock about to run out.
//!
//! This module is everything about one delivery attempt and the targets it goes to, and
//! ([`outbox`]) the task that works the durable outbox the store keeps: what is owed survives a
//! crash because it is written in the same transaction as the escalation that causes it.
//!
//! # Kinds
//!
//! A `[[notify]]` entry in the settings is one [`Target`] of one [`Kind`]:
//!
//! - `generic`: one JSON object per event (schema below), `POST`ed as `application/json`, with
//!   the headers `X-Xiaoer-Key` (the idempotency key) and, when a secret is set,
//!   `X-Xiaoer-Signature` (lowercase hex HMAC-SHA256 of the exact body bytes, keyed by the secret).
//! - `dingtalk`: a DingTalk custom robot (自定义机器人), `msgtype: markdown`. With a secret (the
//!   `SEC…` string of its 加签 setting) the URL gets `&timestamp=<ms>&sign=<s>`, `s` being base64
//!   of HMAC-SHA256 keyed by the secret over `"<ms>\n<secret>"`.
//! - `wecom`: a WeCom group robot (企业微信群机器人), `msgtype: markdown`. WeCom robots have no
//!   signing: the key in the URL is the only credential.
//! - `feishu`: a Feishu custom bot (自定义机器人), `msg_type: text`. With a secret (its 签名校验
//!   setting) the body carries `timestamp` (seconds) and `sign` (base64 HMAC-SHA256 of nothing,
//!   keyed by `"<seconds>\n<secret>"`).
//!
//! A secret is optional for every kind: DingTalk robots may be secured by keyword or IP list
//! instead of 加签, Feishu bots by keyword or IP list instead of 签名校验, and a generic receiver
//! on a trusted network may not check. Every chat message contains the word 店小二, so a robot
//! secured by that keyword accepts it.
//!
//! # The generic body
//!
//! `event` (one of [`Event::as_str`]), `key`, `shop`, `shop_name` (when known), `platform`,
//! `user_id`, `queue`, `escalation_id` (or null), `first_message` (at most
//! [`message::BUYER_TEXT_LIMIT`] characters), `detail` (when there is one), `at` (RFC 3339, UTC)
//! and `console_url` (when the console is on). `docs/notifications.md` has an example and a
//! receiver's signature check.
//!
//! # Retries
//!
//! [`Sender::deliver`] makes one attempt and says whether a failure is worth retrying
//! ([`DeliveryError::is_retryable`]): refused or broken connections, timeouts, HTTP 5xx, 408 and
//! 429, and the robots' rate-limit and busy codes are; other 4xx, redirects and the robots' other
//! error codes (bad signature, unknown robot, keyword missing) are not, since sending the same
//! thing again cannot fix them. [`RetryPolicy`] spaces the retries (exponential, full jitter,
//! capped at a minute) and gives up after a day. The key stays the same across retries, so a
//! receiver that saw an attempt whose answer was lost can drop the repeat.

pub mod backoff;
pub mod message;
pub mod outbox;
pub mod send;
pub mod sign;
pub mod target;

use std::fmt;

use crate::model::Queue;

pub use backoff::RetryPolicy;
pub use send::{Delivered, DeliveryError, Sender, SenderError};
pub use target::{Kind, Target};

/// What happened that someone should hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A chat was handed to a human queue.
    EscalationCreated,
    /// A waiting chat was moved to a more serious queue (a refund that turned into a complaint).
    EscalationRaised,
    /// A chat has waited in its queue close to the queue's target.
    SlaWarning,
    /// A chat has waited in its queue past the queue's target.
    SlaBreach,
    /// The platform's own response clock for a buyer is about to run out.
    ClockWarning,
}

impl Event {
    pub const ALL: &'static [Event] = &[
        Event::EscalationCreated,
        Event::EscalationRaised,
        Event::SlaWarning,
        Event::SlaBreach,
        Event::ClockWarning,
    ];

    /// The name receivers see in the generic body's `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::EscalationCreated => "escalation.created",
            Event::EscalationRaised => "escalation.raised",
            Event::SlaWarning => "sla.warning",
            Event::SlaBreach => "sla.breach",
            Event::ClockWarning => "clock.warning",
        }
    }

    /// The family a target's `events` filter names.
    /// The event named `text` ([`Event::as_str`]).
    pub fn parse(text: &str) -> Option<Event> {
        Event::ALL.iter().copied().find(|e| e.as_str() == text)
    }

    pub fn family(self) -> Family {
        match self {
            Event::EscalationCreated | Event::EscalationRaised => Family::Escalation,
            Event::SlaWarning | Event::SlaBreach => Family::Sla,
            Event::ClockWarning => Family::Clock,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group of events a target subscribes to as one (`events = ["escalation", "sla"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Escalation,
    Sla,
    Clock,
}

impl Family {
    pub const ALL: &'static [Family] = &[Family::Escalation, Family::Sla, Family::Clock];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Escalation => "escalation",
            Family::Sla => "sla",
            Family::Clock => "clock",
        }
    }

    pub fn parse(text: &str) -> Option<Family> {
        Family::ALL.iter().copied().find(|f| f.as_str() == text)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing to tell the targets, as the outbox stores it. Rendering and signing happen per
/// attempt, so a retry signs with a fresh timestamp but carries the same `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub event: Event,
    /// The idempotency key: the same for every attempt and every target of this notification.
    pub key: String,
    /// The shop account (`self.user_id`).
    pub shop: String,
    /// The shop's display name, when the settings give one.
    pub shop_name: Option<String>,
    pub platform: String,
    /// The buyer.
    pub user_id: String,
    pub queue: Queue,
    pub escalation_id: Option<i64>,
    /// The buyer's message that started it, as the buyer wrote it (untrusted).
    pub first_message: String,
    /// A short line about the state of things, e.g. "已等待 12 分钟"; empty when there is none.
    pub detail: String,
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
    /// A link to the chat in the console, when the console is on.
    pub console_url: Option<String>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A notification with every field set, for the submodules' tests.
    pub(crate) fn sample() -> Notification {
        Notification {
            event: Event::EscalationCreated,
            key: "esc-42-created".to_owned(),
            shop: "shop1".to_owned(),
            shop_name: Some("小二旗舰店".to_owned()),
            platform: "taobao".to_owned(),
            user_id: "u1".to_owned(),
            queue: Queue::Refund,
            escalation_id: Some(42),
            first_message: "我要退款，东西坏了".to_owned(),
            detail: String::new(),
            // 2026-12-02T08:30:15.250Z
            at_ms: 1_796_200_215_250,
            console_url: Some("https://console.example.com/chats/42".to_owned()),
        }
    }

    #[test]
    fn events_name_themselves_and_their_family() {
        let table = [
            (Event::EscalationCreated, "escalation.created", "escalation"),
            (Event::EscalationRaised, "escalation.raised", "escalation"),
            (Event::SlaWarning, "sla.warning", "sla"),
            (Event::SlaBreach, "sla.breach", "sla"),
            (Event::ClockWarning, "clock.warning", "clock"),
        ];
        assert_eq!(table.len(), Event::ALL.len());
        for (event, name, family) in table {
            assert_eq!(event.as_str(), name);
            assert_eq!(event.family().as_str(), family);
            // The event's name starts with its family, which is what receivers filter on.
            assert!(name.starts_with(&format!("{family}.")));
            assert_eq!(Family::parse(family), Some(event.family()));
        }
        assert_eq!(Family::parse("escalations"), None);
    }
}
