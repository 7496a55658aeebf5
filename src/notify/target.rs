//! Where notifications go: one [`Target`] per `[[notify]]` entry, checked as a whole when the
//! settings are read, and the filter that says which notifications it wants.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use toml::Value;

use super::{Family, Notification};
use crate::model::Queue;

/// How long one delivery attempt may take, connection and answer included, unless the entry
/// says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// An attempt that takes longer holds up the notifications behind it for nothing.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

const KEYS: &[&str] = &[
    "name", "kind", "url", "secret", "events", "queues", "shops", "timeout",
];

/// The receiver's kind: what the body looks like and how it is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Generic,
    DingTalk,
    WeCom,
    Feishu,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[Kind::Generic, Kind::DingTalk, Kind::WeCom, Kind::Feishu];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Generic => "generic",
            Kind::DingTalk => "dingtalk",
            Kind::WeCom => "wecom",
            Kind::Feishu => "feishu",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One receiver of notifications.
///
/// `Debug` leaves out the secret and the URL's query, which for the chat robots holds the
/// robot's token.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// What logs and metrics call it; `"<kind>#<n>"` (n counting entries from 1) unless named.
    pub name: String,
    pub kind: Kind,
    pub url: Url,
    pub secret: Option<String>,
    /// The event families it wants; every family unless the entry lists some.
    pub events: Vec<Family>,
    /// Only these queues; every queue when empty.
    pub queues: Vec<Queue>,
    /// Only these shop accounts (`self.user_id`); every shop when empty.
    pub shops: Vec<String>,
    /// The whole of one attempt: connecting, sending, and the answer.
    pub timeout: Duration,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if shown.query().is_some() {
            shown.set_query(Some("…"));
        }
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &shown.as_str())
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("events", &self.events)
            .field("queues", &self.queues)
            .field("shops", &self.shops)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Target {
    /// Whether `notification` is for this target: its event's family, its queue and its shop all
    /// pass the target's filters.
    pub fn wants(&self, notification: &Notification) -> bool {
        self.events.contains(&notification.event.family())
            && (self.queues.is_empty() || self.queues.contains(&notification.queue))
            && (self.shops.is_empty() || self.shops.contains(&notification.shop))
    }

    /// Reads the `index`-th `[[notify]]` entry (counting from 0).
    ///
    /// # Errors
    ///
    /// Every problem in the entry, not just the first, as (key within the entry, lowercase
    /// message); the key is empty when the entry itself is wrong (not a table). Unknown keys,
    /// a missing or unknown `kind`, a missing or non-http(s) `url`, an empty `secret` or a
    /// DingTalk secret that is not a `SEC…` string, unknown event families or queues, empty
    /// filter lists, and a timeout that is zero or over a minute are all problems.
    pub fn from_toml(index: usize, value: &Value) -> Result<Target, Vec<(String, String)>> {
        let Some(table) = value.as_table() else {
            return Err(vec![(
                String::new(),
                format!(
                    "each [[notify]] entry is a table with kind and url, found {}",
                    value.type_str()
                ),
            )]);
        };
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| problems.push((key.to_owned(), message));

        for key in table.keys() {
            if !KEYS.contains(&key.as_str()) {
                problem(
                    key,
                    format!("unknown key; a [[notify]] entry takes {}", KEYS.join(", ")),
                );
            }
        }

        let kind = match table.get("kind") {
            None => {
                problem("kind", format!("missing; one of {}", kind_names()));
                None
            }
            Some(value) => match value.as_str() {
                Some(text) => {
                    let kind = Kind::parse(text);
                    if kind.is_none() {
                        problem(
                            "kind",
                            format!("unknown kind {text:?}; one of {}", kind_names()),
                        );
                    }
                    kind
                }
                None => {
                    problem("kind", expected("a string", value));
                    None
                }
            },
        };

        let url = match table.get("url") {
            None => {
                problem("url", "missing; the receiver's webhook address".to_owned());
                None
            }
            Some(value) => match value.as_str() {
                Some(text) => match webhook_url(text) {
                    Ok(url) => Some(url),
                    Err(message) => {
                        problem("url", message);
                        None
                    }
                },
                None => {
                    problem("url", expected("a string", value));
                    None
                }
            },
        };

        let secret = match table.get("secret") {
            None => None,
            Some(value) => match value.as_str() {
                Some("") => {
                    problem(
                        "secret",
                        "is empty; leave it out if the receiver checks no signature".to_owned(),
                    );
                    None
                }
                Some(text) => {
                    if kind == Some(Kind::DingTalk) && !text.starts_with("SEC") {
                        problem(
                            "secret",
                            "a dingtalk secret is the SEC… string shown under 加签 in the \
                             robot's security settings (the access token belongs in url)"
                                .to_owned(),
                        );
                    }
                    if kind == Some(Kind::WeCom) {
                        problem(
                            "secret",
                            "wecom group robots have no signing; leave secret out (the key \
                             in url is the robot's credential)"
                                .to_owned(),
                        );
                    }
                    Some(text.to_owned())
                }
                None => {
                    problem("secret", expected("a string", value));
                    None
                }
            },
        };

        let events = match table.get("events") {
            None => Family::ALL.to_vec(),
            Some(value) => names(value, "events", &mut problem, |text| {
                Family::parse(text).ok_or_else(|| {
                    format!(
                        "unknown event family {text:?}; one of {}",
                        Family::ALL
                            .iter()
                            .map(|f| f.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            }),
        };
        let queues = match table.get("queues") {
            None => Vec::new(),
            Some(value) => names(value, "queues", &mut problem, |text| {
                text.parse::<Queue>()
                    .map_err(|_| format!("unknown queue {text:?}; one of {}", Queue::names()))
            }),
        };
        let shops = match table.get("shops") {
            None => Vec::new(),
            Some(value) => names(value, "shops", &mut problem, |text| {
                if text.trim().is_empty() {
                    Err("a shop is named by its account id, not an empty string".to_owned())
                } else {
                    Ok(text.to_owned())
                }
            }),
        };

        let timeout = match table.get("timeout") {
            None => DEFAULT_TIMEOUT,
            Some(value) => match timeout(value) {
                Ok(timeout) => timeout,
                Err(message) => {
                    problem("timeout", message);
                    DEFAULT_TIMEOUT
                }
            },
        };

        let name = match table.get("name") {
            None => None,
            Some(value) => match value.as_str() {
                Some(text) if text.trim().is_empty() => {
                    problem(
                        "name",
                        "is empty; leave it out to be called <kind>#<n>".to_owned(),
                    );
                    None
                }
                Some(text) => Some(text.trim().to_owned()),
                None => {
                    problem("name", expected("a string", value));
                    None
                }
            },
        };

        match (kind, url) {
            (Some(kind), Some(url)) if problems.is_empty() => Ok(Target {
                name: name.unwrap_or_else(|| format!("{kind}#{}", index + 1)),
                kind,
                url,
                secret,
                events,
                queues,
                shops,
                timeout,
            }),
            _ => Err(problems),
        }
    }
}

fn kind_names() -> String {
    Kind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn expected(what: &str, found: &Value) -> String {
    format!("expected {what}, found {}", found.type_str())
}

fn webhook_url(text: &str) -> Result<Url, String> {
    let url: Url = text
        .trim()
        .parse()
        .map_err(|error| format!("{text:?} is not a url ({error})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "a webhook url starts with https:// or http://, not {}:",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} names no host"));
    }
    Ok(url)
}

/// A filter list (`events`, `queues`, `shops`): a non-empty array of strings, each parsed by
/// `parse`; every bad item is its own problem.
fn names<T: PartialEq>(
    value: &Value,
    key: &str,
    problem: &mut impl FnMut(&str, String),
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    let Some(items) = value.as_array() else {
        problem(key, expected("a list of strings", value));
        return Vec::new();
    };
    if items.is_empty() {
        problem(
            key,
            format!("is empty, which would match nothing; leave {key} out to match every one"),
        );
    }
    let mut parsed = Vec::new();
    for item in items {
        match item.as_str() {
            Some(text) => match parse(text) {
                Ok(one) if !parsed.contains(&one) => parsed.push(one),
                Ok(_) => {}
                Err(message) => problem(key, message),
            },
            None => problem(key, expected("a list of strings", item)),
        }
    }
    parsed
}

fn timeout(value: &Value) -> Result<Duration, String> {
    let Some(text) = value.as_str() else {
        return Err(match value.as_integer() {
            Some(n) => format!("a timeout needs a unit and quotes: write \"{n}s\""),
            None => expected("a duration like \"5s\"", value),
        });
    };
    let timeout = humantime::parse_duration(text)
        .map_err(|error| format!("{text:?} is not a duration ({error}); write it like \"5s\""))?;
    if timeout.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    if timeout > MAX_TIMEOUT {
        return Err(format!(
            "{text} is too long for one attempt; at most {}",
            humantime::format_duration(MAX_TIMEOUT)
        ));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Event;
    use crate::notify::tests::sample;

    fn entry(text: &str) -> Value {
        Value::Table(text.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn good_entries_read_with_their_defaults() {
        let target = Target::from_toml(
            0,
            &entry(
                r#"kind = "generic"
                      url = "https://hooks.example.com/xiaoer""#,
            ),
        )
        .unwrap();
        assert_eq!(target.name, "generic#1");
        assert_eq!(target.kind, Kind::Generic);
        assert_eq!(target.url.as_str(), "https://hooks.example.com/xiaoer");
        assert_eq!(target.secret, None);
        assert_eq!(target.events, Family::ALL);
        assert!(target.queues.is_empty() && target.shops.is_empty());
        assert_eq!(target.timeout, DEFAULT_TIMEOUT);

        let target = Target::from_toml(
            2,
            &entry(
                r#"name = "退款群"
                   kind = "dingtalk"
                   url = "https://oapi.dingtalk.com/robot/send?access_token=t0k"
                   secret = "SECabc"
                   events = ["sla", "escalation", "sla"]
                   queues = ["refund", "after_sale"]
                   shops = ["shop1"]
                   timeout = "2s 500ms""#,
            ),
        )
        .unwrap();
        assert_eq!(target.name, "退款群");
        assert_eq!(target.kind, Kind::DingTalk);
        assert_eq!(target.secret.as_deref(), Some("SECabc"));
        assert_eq!(target.events, [Family::Sla, Family::Escalation]);
        assert_eq!(target.queues, [Queue::Refund, Queue::AfterSale]);
        assert_eq!(target.shops, ["shop1"]);
        assert_eq!(target.timeout, Duration::from_millis(2500));

        for (kind, url) in [
            (
                "wecom",
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k",
            ),
            ("feishu", "https://open.feishu.cn/open-apis/bot/v2/hook/abc"),
            ("generic", "http://127.0.0.1:9000/hook"),
        ] {
            let text = format!("kind = {kind:?}\nurl = {url:?}");
            let target = Target::from_toml(4, &entry(&text)).unwrap();
            assert_eq!(target.name, format!("{kind}#5"));
        }
    }

    #[test]
    fn every_problem_in_an_entry_is_reported_against_its_key() {
        let table: &[(&str, &[(&str, &str)])] = &[
            ("url = \"https://a.example\"", &[("kind", "missing")]),
            ("kind = \"generic\"", &[("url", "missing")]),
            (
                "kind = \"slack\"\nurl = \"https://a.example\"",
                &[("kind", "unknown kind \"slack\"")],
            ),
            (
                "kind = \"generic\"\nurl = \"ftp://a.example/x\"",
                &[("url", "https:// or http://")],
            ),
            (
                "kind = \"generic\"\nurl = \"not a url\"",
                &[("url", "is not a url")],
            ),
            (
                "kind = \"generic\"\nurl = \"https://a.example\"\nsecret = \"\"",
                &[("secret", "is empty")],
            ),
            (
                "kind = \"dingtalk\"\nurl = \"https://a.example\"\nsecret = \"t0k\"",
                &[("secret", "SEC… string")],
            ),
            (
                "kind = \"wecom\"\nurl = \"https://a.example\"\nsecret = \"x\"",
                &[("secret", "no signing")],
            ),
            (
                "kind = \"generic\"\nurl = \"https://a.example\"\nevents = [\"sla.breach\", \"clock\"]",
                &[("events", "unknown event family \"sla.breach\"")],
            ),
            (
                "kind = \"generic\"\nurl = \"https://a.example\"\nevents = []",
                &[("events", "is empty")],
            ),
            (
                "kind = \"generic\"\nurl = \"https://a.example\"\nqueues = [\"refunds\", 3]",
                &[
                    ("queues", "unknown queue \"refunds\""),
                    ("queues", "expected a list of strings, found integer"),
                ],
            ),
            (
                "kind = \"generic\"\nurl = \"https://a.example\"\nshops = \"shop1\"",
                &[("shops", "expected a list of strings")],
            ),
            (
                "kind = \"generic\"\nurl = \"https://a.example\"\ntimeout = 5",
                &[("timeout", "write \"5s\"")],
            ),
            (
                "kind = \"generic\"\nurl = \"https://a.example\"\ntimeout = \"0s\"",
                &[("timeout", "more than zero")],
            ),
            (
                "kind = \"generic\"\nurl = \"https://a.example\"\ntimeout = \"5min\"",
                &[("timeout", "too long")],
            ),
            (
                "kind = \"generic\"\nurl = \"https://a.example\"\nname = \" \"",
                &[("name", "is empty")],
            ),
            (
                "kind = \"generic\"\nurl = \"https://a.example\"\nevent = [\"sla\"]",
                &[("event", "unknown key")],
            ),
            // Everything wrong at once: each problem, none hiding another.
            (
                "kind = \"sms\"\nurl = 3\nqueue = \"refund\"\ntimeout = \"soon\"",
                &[
                    ("queue", "unknown key"),
                    ("kind", "unknown kind"),
                    ("url", "expected a string, found integer"),
                    ("timeout", "is not a duration"),
                ],
            ),
        ];
        for (text, expected) in table {
            let problems = Target::from_toml(0, &entry(text)).unwrap_err();
            assert_eq!(problems.len(), expected.len(), "{text:?} gave {problems:?}");
            for ((key, message), (want_key, want_part)) in problems.iter().zip(expected.iter()) {
                assert_eq!(key, want_key, "{text:?} gave {problems:?}");
                assert!(
                    message.contains(want_part),
                    "{text:?}: {message:?} lacks {want_part:?}"
                );
                assert_eq!(
                    message
                        .chars()
                        .next()
                        .map(|c| c.is_lowercase() || !c.is_alphabetic()),
                    Some(true),
                    "{message:?} starts lowercase"
                );
            }
        }

        let problems =
            Target::from_toml(0, &Value::String("https://a.example".into())).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "");
        assert!(problems[0].1.contains("is a table"), "{problems:?}");
    }

    #[test]
    fn wants_filters_by_family_queue_and_shop() {
        let target = Target::from_toml(
            0,
            &entry(
                r#"kind = "generic"
                   url = "https://a.example"
                   events = ["escalation", "clock"]
                   queues = ["refund", "complaint"]
                   shops = ["shop1", "shop2"]"#,
            ),
        )
        .unwrap();
        let everything =
            Target::from_toml(0, &entry("kind = \"generic\"\nurl = \"https://a.example\""))
                .unwrap();

        let table = [
            (Event::EscalationCreated, Queue::Refund, "shop1", true),
            (Event::EscalationRaised, Queue::Complaint, "shop2", true),
            (Event::ClockWarning, Queue::Refund, "shop1", true),
            (Event::SlaWarning, Queue::Refund, "shop1", false),
            (Event::SlaBreach, Queue::Refund, "shop1", false),
            (Event::EscalationCreated, Queue::AfterSale, "shop1", false),
            (Event::EscalationCreated, Queue::Refund, "shop3", false),
            (Event::EscalationCreated, Queue::Refund, "SHOP1", false),
        ];
        for (event, queue, shop, wanted) in table {
            let mut n = sample();
            n.event = event;
            n.queue = queue;
            n.shop = shop.to_owned();
            assert_eq!(target.wants(&n), wanted, "{event} {queue} {shop}");
            assert!(everything.wants(&n), "no filters: {event} {queue} {shop}");
        }
    }

    #[test]
    fn debug_shows_neither_the_secret_nor_the_robot_token() {
        let target = Target::from_toml(
            0,
            &entry(
                r#"kind = "dingtalk"
                   url = "https://oapi.dingtalk.com/robot/send?access_token=t0ken-value"
                   secret = "SECsecret-value""#,
            ),
        )
        .unwrap();
        let shown = format!("{target:?}");
        assert!(!shown.contains("t0ken-value"), "{shown}");
        assert!(!shown.contains("secret-value"), "{shown}");
        assert!(shown.contains("oapi.dingtalk.com/robot/send"), "{shown}");
    }
}
