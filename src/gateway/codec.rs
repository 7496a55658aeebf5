//! The codec boundary: what a gateway protocol decodes to and encodes from.
//!
//! A [`Codec`] turns one text frame from the gateway into an [`Incoming`] value, builds the
//! `send_message` action, and says what an action response's retcode means
//! ([`ResponseClass`]). The connection loop in [`super::client`] only talks to this trait, so a
//! second protocol (OneBot 11) can sit beside OneBot 12 ([`super::onebot::OneBot12`]) without
//! touching it. The types here are protocol-neutral: a OneBot 11 codec decodes into the same
//! [`PrivateMessage`] and [`Card`]s.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// One gateway protocol: frames in, typed values out, and the one action xiaoer sends.
///
/// Implementations are pure (no I/O, no clock): they are called from the connection task for
/// every frame and from [`super::GatewayHandle::send_message`] for every reply.
pub trait Codec: Send + Sync + 'static {
    /// A short name for logs, e.g. `onebot12`.
    fn name(&self) -> &'static str;

    /// Decodes one text frame sent by the gateway.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] when the frame is malformed or lacks a field xiaoer needs. Unknown but
    /// well-formed events are [`Incoming::Other`], not errors.
    fn decode(&self, frame: &str) -> Result<Incoming, DecodeError>;

    /// Builds the action that sends private `text` to buyer `user_id` as shop account
    /// (`platform`, `self_id`); the gateway's response carries `echo` back.
    fn encode_send_message(
        &self,
        platform: &str,
        self_id: &str,
        user_id: &str,
        text: &str,
        echo: &str,
    ) -> String;

    /// What an action response means for the action it answers.
    fn classify(&self, response: &ActionResponse) -> ResponseClass;
}

/// What an action response means, as far as sending is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass {
    /// The gateway accepted the action.
    Ok,
    /// A platform error that may go away when the action is sent again (OneBot 12: 34xxx).
    Retryable,
    /// The request itself was wrong: our mistake, sending it again cannot help (OneBot 12:
    /// 1xxxx).
    OurMistake,
    /// Any other failure.
    Failed,
}

/// A frame the gateway sent, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `meta.connect`: the first event on a connection.
    Connect(ConnectInfo),
    /// `meta.heartbeat`.
    Heartbeat(Heartbeat),
    /// `meta.status_update`: which bots (shop accounts) the gateway serves and whether they are
    /// online.
    StatusUpdate(StatusUpdate),
    /// A private message event: a buyer's message, or with `outgoing` one the shop sent.
    Message(PrivateMessage),
    /// The response to an action we sent, matched by `echo`.
    Response(ActionResponse),
    /// Any other well-formed event (group messages, notices, requests, unknown meta events).
    Other(OtherEvent),
}

/// What `meta.connect` says about the implementation on the other end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectInfo {
    /// `version.impl`, e.g. `walle-core`; empty when absent.
    pub implementation: String,
    /// `version.version`; empty when absent.
    pub version: String,
    /// `version.onebot_version`; empty when absent.
    pub onebot_version: String,
}

/// `meta.heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Time to the next heartbeat.
    pub interval: Duration,
}

/// `meta.status_update` (also the `status` of a heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusUpdate {
    /// `status.good`; `true` when absent.
    pub good: bool,
    /// The bots the gateway serves.
    pub bots: Vec<BotStatus>,
}

/// One bot (shop account) in a status update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotStatus {
    /// `self.platform`.
    pub platform: String,
    /// `self.user_id`: the shop account.
    pub self_id: String,
    /// Whether the account is online.
    pub online: bool,
}

/// A private chat message between a buyer and a shop account.
///
/// The conversation key is (`platform`, `self_id`, `user_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrivateMessage {
    /// `self.platform`.
    pub platform: String,
    /// `self.user_id`: the shop account.
    pub self_id: String,
    /// The buyer.
    pub user_id: String,
    /// The platform's id of this message.
    pub message_id: String,
    /// The `text` segments concatenated (or `alt_message` when there is no `message` field);
    /// empty when the message has no text, e.g. a lone sticker or image.
    pub text: String,
    /// Every other segment (cards, media, replies, unknown kinds such as stickers), in message
    /// order. Mentions are left out: in a private chat they only name the shop itself.
    pub cards: Vec<Card>,
    /// `sub_type: "outgoing"`: the shop account sent this to the buyer from some client.
    pub outgoing: bool,
    /// Event time in seconds since the Unix epoch (0 when absent).
    pub time: f64,
}

impl PrivateMessage {
    /// What a transcript shows for this message: the text, then each card's short description
    /// (`[图片]`, `[商品 保温杯 (i9)]`, ...), separated by spaces.
    pub fn transcript_text(&self) -> String {
        let mut shown = self.text.clone();
        for card in &self.cards {
            if !shown.is_empty() {
                shown.push(' ');
            }
            shown.push_str(&card.to_string());
        }
        shown
    }
}

/// A non-text segment of a message.
///
/// Ids a segment lacks are empty strings: the kind of segment is what the transcript needs, and
/// a card without its id is still something the buyer sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Card {
    /// `shop.item`: a product card.
    Item { item_id: String, title: String },
    /// `shop.order`: an order card.
    Order { order_id: String, status: String },
    /// `image`.
    Image { file_id: String },
    /// `voice`: a voice message.
    Voice { file_id: String },
    /// `audio`: an audio file.
    Audio { file_id: String },
    /// `video`.
    Video { file_id: String },
    /// `file`, with its name when the gateway gives one (`name` or `file_name`).
    File {
        file_id: String,
        name: Option<String>,
    },
    /// `location`.
    Location {
        latitude: Option<f64>,
        longitude: Option<f64>,
        title: String,
        content: String,
    },
    /// `reply`: the message quotes an earlier one.
    Reply { message_id: String },
    /// A segment type xiaoer does not know, e.g. a platform's sticker (`qq.face`,
    /// `douyin.sticker`); `kind` is its `type`.
    Other { kind: String },
}

impl Card {
    /// True for segment kinds that are stickers or emoticons on the platforms xiaoer has met.
    pub fn is_sticker(&self) -> bool {
        let Card::Other { kind } = self else {
            return false;
        };
        let last = kind.rsplit('.').next().unwrap_or(kind);
        matches!(
            last,
            "face" | "sticker" | "emoji" | "emoticon" | "mface" | "market_face" | "bface" | "sface"
        )
    }
}

/// Writes `s` with line breaks and other control characters as spaces, so a card stays on one
/// transcript line whatever a title contains.
fn one_line(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            f.write_str(" ")?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Card::Item { item_id, title } => {
                f.write_str("[商品")?;
                if !title.is_empty() {
                    f.write_str(" ")?;
                    one_line(f, title)?;
                }
                if !item_id.is_empty() {
                    if title.is_empty() {
                        f.write_str(" ")?;
                        one_line(f, item_id)?;
                    } else {
                        f.write_str(" (")?;
                        one_line(f, item_id)?;
                        f.write_str(")")?;
                    }
                }
                f.write_str("]")
            }
            Card::Order { order_id, status } => {
                f.write_str("[订单")?;
                for part in [order_id, status] {
                    if !part.is_empty() {
                        f.write_str(" ")?;
                        one_line(f, part)?;
                    }
                }
                f.write_str("]")
            }
            Card::Image { .. } => f.write_str("[图片]"),
            Card::Voice { .. } => f.write_str("[语音]"),
            Card::Audio { .. } => f.write_str("[音频]"),
            Card::Video { .. } => f.write_str("[视频]"),
            Card::File { name, .. } => match name.as_deref().filter(|n| !n.is_empty()) {
                Some(name) => {
                    f.write_str("[文件 ")?;
                    one_line(f, name)?;
                    f.write_str("]")
                }
                None => f.write_str("[文件]"),
            },
            Card::Location {
                latitude,
                longitude,
                title,
                ..
            } => {
                if !title.is_empty() {
                    f.write_str("[位置 ")?;
                    one_line(f, title)?;
                    f.write_str("]")
                } else if let (Some(lat), Some(lon)) = (latitude, longitude) {
                    write!(f, "[位置 {lat}, {lon}]")
                } else {
                    f.write_str("[位置]")
                }
            }
            Card::Reply { message_id } if message_id.is_empty() => f.write_str("[回复]"),
            Card::Reply { message_id } => {
                f.write_str("[回复 ")?;
                one_line(f, message_id)?;
                f.write_str("]")
            }
            Card::Other { .. } if self.is_sticker() => f.write_str("[表情]"),
            Card::Other { kind } => {
                f.write_str("[消息类型 ")?;
                one_line(f, kind)?;
                f.write_str("]")
            }
        }
    }
}

/// The response to an action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionResponse {
    /// `ok` or `failed`.
    pub status: String,
    /// 0 on success; what other values mean is the codec's to say ([`Codec::classify`]).
    pub retcode: i64,
    /// Response data (`null` when absent).
    pub data: Value,
    /// Human-readable error message (empty on success).
    pub message: String,
    /// The `echo` of the action this answers; non-string echoes are given as their JSON text.
    pub echo: Option<String>,
}

impl ActionResponse {
    /// `data.message_id` as text, when the response has one.
    pub fn message_id(&self) -> Option<String> {
        match self.data.get("message_id")? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// A well-formed event xiaoer does not handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherEvent {
    /// `type.detail_type[.sub_type]`, for the log.
    pub kind: String,
}

/// Why a frame could not be decoded. The message is lowercase and says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    message: String,
}

impl DecodeError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_describe_themselves_in_a_short_bracketed_line() {
        let s = |v: &str| v.to_owned();
        let cases = [
            (
                Card::Item {
                    item_id: s("i9"),
                    title: s("保温杯"),
                },
                "[商品 保温杯 (i9)]",
            ),
            (
                Card::Item {
                    item_id: s("i9"),
                    title: s(""),
                },
                "[商品 i9]",
            ),
            (
                Card::Item {
                    item_id: s(""),
                    title: s("两行\n标题"),
                },
                "[商品 两行 标题]",
            ),
            (
                Card::Order {
                    order_id: s("o1"),
                    status: s("已发货"),
                },
                "[订单 o1 已发货]",
            ),
            (
                Card::Order {
                    order_id: s("o1"),
                    status: s(""),
                },
                "[订单 o1]",
            ),
            (Card::Image { file_id: s("f") }, "[图片]"),
            (Card::Voice { file_id: s("f") }, "[语音]"),
            (Card::Audio { file_id: s("f") }, "[音频]"),
            (Card::Video { file_id: s("f") }, "[视频]"),
            (
                Card::File {
                    file_id: s("f"),
                    name: Some(s("发票.pdf")),
                },
                "[文件 发票.pdf]",
            ),
            (
                Card::File {
                    file_id: s("f"),
                    name: None,
                },
                "[文件]",
            ),
            (
                Card::Location {
                    latitude: Some(31.2),
                    longitude: Some(121.5),
                    title: s("上海仓"),
                    content: s(""),
                },
                "[位置 上海仓]",
            ),
            (
                Card::Location {
                    latitude: Some(31.2),
                    longitude: Some(121.5),
                    title: s(""),
                    content: s(""),
                },
                "[位置 31.2, 121.5]",
            ),
            (
                Card::Reply {
                    message_id: s("m7"),
                },
                "[回复 m7]",
            ),
            (Card::Other { kind: s("qq.face") }, "[表情]"),
            (Card::Other { kind: s("sticker") }, "[表情]"),
            (Card::Other { kind: s("dice") }, "[消息类型 dice]"),
        ];
        for (card, want) in cases {
            assert_eq!(card.to_string(), want, "{card:?}");
        }
    }

    #[test]
    fn transcript_text_is_the_text_then_the_cards() {
        let m = PrivateMessage {
            platform: "dev".into(),
            self_id: "s".into(),
            user_id: "b".into(),
            message_id: "m".into(),
            text: "这个有货吗".into(),
            cards: vec![
                Card::Item {
                    item_id: "i9".into(),
                    title: "保温杯".into(),
                },
                Card::Image {
                    file_id: "f".into(),
                },
            ],
            outgoing: false,
            time: 0.0,
        };
        assert_eq!(m.transcript_text(), "这个有货吗 [商品 保温杯 (i9)] [图片]");
        let sticker_only = PrivateMessage {
            text: String::new(),
            cards: vec![Card::Other {
                kind: "face".into(),
            }],
            ..m
        };
        assert_eq!(sticker_only.transcript_text(), "[表情]");
    }
}
