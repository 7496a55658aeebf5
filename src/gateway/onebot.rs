//! The OneBot 12 codec ([`OneBot12`]): websocket text frames from the gateway to typed
//! [`Incoming`] values, and the `send_message` action xiaoer sends.
//!
//! Only what xiaoer needs is typed: the meta events (`connect`, `heartbeat`, `status_update`),
//! private `message` events (including the shop extensions: `sub_type: "outgoing"` and the
//! `shop.item` / `shop.order` segments) and action responses. Every other well-formed event is
//! [`Incoming::Other`], which callers log and skip; it is never an error. Every segment of a
//! message other than text and mentions becomes a [`Card`], so a sticker or an image is not an
//! empty message.
//!
//! Frames are read leniently where real gateways are sloppy (see the private `json` module): lone
//! surrogate escapes become U+FFFD, ids beyond 64 bits keep their digits.
//!
//! The gateway side of the protocol (events out, actions in) is here too, for the development
//! gateway in [`crate::devgateway`].

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::codec::{
    ActionResponse, BotStatus, Card, Codec, ConnectInfo, DecodeError, Heartbeat, Incoming,
    OtherEvent, PrivateMessage, ResponseClass, StatusUpdate,
};
use super::json;

/// The OneBot 12 protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct OneBot12;

impl Codec for OneBot12 {
    fn name(&self) -> &'static str {
        "onebot12"
    }

    fn decode(&self, frame: &str) -> Result<Incoming, DecodeError> {
        decode(frame)
    }

    fn encode_send_message(
        &self,
        platform: &str,
        self_id: &str,
        user_id: &str,
        text: &str,
        echo: &str,
    ) -> String {
        encode_send_message(platform, self_id, user_id, text, echo)
    }

    /// `status: "ok"` is success whatever the retcode; 34xxx are platform errors worth a
    /// retry, 1xxxx request errors (ours); everything else (2xxxx handler errors, other 3xxxx
    /// execution errors, 6xxxx–9xxxx implementation-defined) is a failure.
    fn classify(&self, response: &ActionResponse) -> ResponseClass {
        if response.status == "ok" {
            ResponseClass::Ok
        } else if (34000..35000).contains(&response.retcode) {
            ResponseClass::Retryable
        } else if (10000..20000).contains(&response.retcode) {
            ResponseClass::OurMistake
        } else {
            ResponseClass::Failed
        }
    }
}

/// Decodes one text frame sent by the gateway.
///
/// # Errors
///
/// A [`DecodeError`] when the frame is not JSON, not an object, or lacks a field xiaoer needs
/// (e.g. "message event without user_id"). Unknown but well-formed events are not errors.
pub fn decode(frame: &str) -> Result<Incoming, DecodeError> {
    let (mut value, text) = json::parse_lenient(frame)
        .map_err(|e| DecodeError::new(format!("frame is not valid json: {e}")))?;
    json::exact_ids(&mut value, &text)?;
    let Value::Object(obj) = value else {
        return Err(DecodeError::new("frame is not a json object"));
    };
    if obj.contains_key("type") {
        decode_event(&obj)
    } else if obj.contains_key("status") || obj.contains_key("retcode") {
        decode_response(&obj).map(Incoming::Response)
    } else {
        Err(DecodeError::new(
            "frame is neither an event (no type) nor an action response (no status)",
        ))
    }
}

fn decode_event(obj: &Map<String, Value>) -> Result<Incoming, DecodeError> {
    let ty =
        str_field(obj, "type").ok_or_else(|| DecodeError::new("event type is not a string"))?;
    let detail = str_field(obj, "detail_type").unwrap_or_default();
    let sub = str_field(obj, "sub_type").unwrap_or_default();
    match (ty, detail) {
        ("meta", "connect") => Ok(Incoming::Connect(decode_connect(obj))),
        ("meta", "heartbeat") => decode_heartbeat(obj).map(Incoming::Heartbeat),
        ("meta", "status_update") => {
            let status = obj
                .get("status")
                .ok_or_else(|| DecodeError::new("status_update event without status"))?;
            decode_status(status).map(Incoming::StatusUpdate)
        }
        ("message", "private") => decode_private(obj).map(Incoming::Message),
        _ => {
            let mut kind = format!("{}.{}", bounded(ty), bounded(detail));
            if !sub.is_empty() {
                kind.push('.');
                kind.push_str(bounded(sub));
            }
            Ok(Incoming::Other(OtherEvent { kind }))
        }
    }
}

/// At most 64 bytes of a name the peer chose, for logs and transcripts: a name is a name, not
/// a place to put a 60 KiB string.
fn bounded(s: &str) -> &str {
    if s.len() <= 64 {
        return s;
    }
    let mut end = 64;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn decode_connect(obj: &Map<String, Value>) -> ConnectInfo {
    let version = obj.get("version").and_then(Value::as_object);
    let get = |key: &str| {
        version
            .and_then(|v| str_field(v, key))
            .unwrap_or_default()
            .to_owned()
    };
    ConnectInfo {
        implementation: get("impl"),
        version: get("version"),
        onebot_version: get("onebot_version"),
    }
}

fn decode_heartbeat(obj: &Map<String, Value>) -> Result<Heartbeat, DecodeError> {
    let raw = obj
        .get("interval")
        .ok_or_else(|| DecodeError::new("heartbeat event without interval"))?;
    let n = raw
        .as_f64()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| {
            DecodeError::new(format!(
                "heartbeat interval is not a non-negative number: {raw}"
            ))
        })?;
    // The spec says milliseconds; a value under 1000 is an implementation sending seconds.
    let millis = if n < 1000.0 { n * 1000.0 } else { n };
    // Cap at a day so a silly value cannot overflow anything downstream.
    let millis = millis.min(86_400_000.0);
    Ok(Heartbeat {
        interval: Duration::from_millis(millis as u64),
    })
}

fn decode_status(status: &Value) -> Result<StatusUpdate, DecodeError> {
    let Value::Object(status) = status else {
        return Err(DecodeError::new("status is not an object"));
    };
    let good = status.get("good").and_then(Value::as_bool).unwrap_or(true);
    let mut bots = Vec::new();
    if let Some(list) = status.get("bots") {
        let list = list
            .as_array()
            .ok_or_else(|| DecodeError::new("status bots is not a list"))?;
        for bot in list {
            let bot = bot
                .as_object()
                .ok_or_else(|| DecodeError::new("status bot is not an object"))?;
            let (platform, self_id) = decode_self(bot.get("self"))
                .ok_or_else(|| DecodeError::new("status bot without self"))?;
            bots.push(BotStatus {
                platform,
                self_id,
                online: bot.get("online").and_then(Value::as_bool).unwrap_or(false),
            });
        }
    }
    Ok(StatusUpdate { good, bots })
}

fn decode_self(value: Option<&Value>) -> Option<(String, String)> {
    let obj = value?.as_object()?;
    let platform = id_field(obj, "platform")?;
    let user_id = id_field(obj, "user_id")?;
    Some((platform, user_id))
}

fn decode_private(obj: &Map<String, Value>) -> Result<PrivateMessage, DecodeError> {
    // OneBot 12 puts the bot in `self`; early drafts used top-level `platform` and `self_id`.
    let (platform, self_id) = decode_self(obj.get("self"))
        .or_else(|| Some((id_field(obj, "platform")?, id_field(obj, "self_id")?)))
        .ok_or_else(|| DecodeError::new("message event without self"))?;
    let user_id = id_field(obj, "user_id")
        .ok_or_else(|| DecodeError::new("message event without user_id"))?;
    let message_id = id_field(obj, "message_id")
        .ok_or_else(|| DecodeError::new("message event without message_id"))?;
    let (text, cards) = match obj.get("message") {
        Some(Value::Array(segments)) => decode_segments(segments)?,
        Some(Value::String(s)) => (s.clone(), Vec::new()),
        Some(Value::Null) | None => match obj.get("alt_message") {
            Some(Value::String(alt)) => (alt.clone(), Vec::new()),
            _ => return Err(DecodeError::new("message event without message")),
        },
        Some(_) => {
            return Err(DecodeError::new(
                "message event whose message is not a list of segments",
            ));
        }
    };
    Ok(PrivateMessage {
        platform,
        self_id,
        user_id,
        message_id,
        text,
        cards,
        outgoing: str_field(obj, "sub_type") == Some("outgoing"),
        time: obj.get("time").and_then(Value::as_f64).unwrap_or(0.0),
    })
}

/// The joined text of the `text` segments and every other segment (but mentions) as a card.
///
/// # Errors
///
/// A segment that is not an object or has no `type`, and a `text` segment without its text.
pub fn decode_segments(segments: &[Value]) -> Result<(String, Vec<Card>), DecodeError> {
    let mut text = String::new();
    let mut cards = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let seg = segment
            .as_object()
            .ok_or_else(|| DecodeError::new(format!("message segment {i} is not an object")))?;
        let ty = str_field(seg, "type")
            .ok_or_else(|| DecodeError::new(format!("message segment {i} without type")))?;
        let empty = Map::new();
        let data = seg.get("data").and_then(Value::as_object).unwrap_or(&empty);
        let id = |key: &str| id_field(data, key).unwrap_or_default();
        let string = |key: &str| str_field(data, key).unwrap_or_default().to_owned();
        let card = match ty {
            "text" => match str_field(data, "text") {
                Some(t) => {
                    text.push_str(t);
                    continue;
                }
                None => {
                    return Err(DecodeError::new(format!(
                        "text segment {i} without data.text"
                    )));
                }
            },
            // In a private chat a mention can only name the shop: nothing to record.
            "mention" | "mention_all" => continue,
            "shop.item" => Card::Item {
                item_id: id("item_id"),
                title: string("title"),
            },
            "shop.order" => Card::Order {
                order_id: id("order_id"),
                status: string("status"),
            },
            "image" => Card::Image {
                file_id: id("file_id"),
            },
            "voice" => Card::Voice {
                file_id: id("file_id"),
            },
            "audio" => Card::Audio {
                file_id: id("file_id"),
            },
            "video" => Card::Video {
                file_id: id("file_id"),
            },
            "file" => Card::File {
                file_id: id("file_id"),
                name: str_field(data, "name")
                    .or_else(|| str_field(data, "file_name"))
                    .filter(|n| !n.is_empty())
                    .map(|n| bounded(n).to_owned()),
            },
            "location" => Card::Location {
                latitude: data.get("latitude").and_then(Value::as_f64),
                longitude: data.get("longitude").and_then(Value::as_f64),
                title: string("title"),
                content: string("content"),
            },
            "reply" => Card::Reply {
                message_id: id("message_id"),
            },
            other => Card::Other {
                kind: bounded(other).to_owned(),
            },
        };
        cards.push(card);
    }
    Ok((text, cards))
}

fn decode_response(obj: &Map<String, Value>) -> Result<ActionResponse, DecodeError> {
    let status = str_field(obj, "status")
        .ok_or_else(|| DecodeError::new("action response without status"))?
        .to_owned();
    let retcode = obj
        .get("retcode")
        .and_then(Value::as_i64)
        .ok_or_else(|| DecodeError::new("action response without integer retcode"))?;
    let echo = match obj.get("echo") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    Ok(ActionResponse {
        status,
        retcode,
        data: obj.get("data").cloned().unwrap_or(Value::Null),
        message: str_field(obj, "message").unwrap_or_default().to_owned(),
        echo,
    })
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// An id that peers send as a string or (OneBot 11 habit) as a number. Integers beyond 64 bits
/// are strings by now (see [`json::exact_ids`]), so the number case is exact.
fn id_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Builds the `send_message` action for a private text message.
pub fn encode_send_message(
    platform: &str,
    self_id: &str,
    user_id: &str,
    text: &str,
    echo: &str,
) -> String {
    json!({
        "action": "send_message",
        "params": {
            "detail_type": "private",
            "user_id": user_id,
            "message": [{"type": "text", "data": {"text": text}}],
        },
        "self": {"platform": platform, "user_id": self_id},
        "echo": echo,
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// The gateway side, for the development gateway and tests.

/// An action request as the gateway sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRequest {
    /// `action`, e.g. `send_message`.
    pub action: String,
    /// `params` (an empty object when absent).
    pub params: Map<String, Value>,
    /// `self`: which bot should act, when given.
    pub self_: Option<(String, String)>,
    /// `echo`, returned as is in the response.
    pub echo: Value,
}

/// Decodes an action request (what a bot application sends to the gateway).
///
/// # Errors
///
/// A [`DecodeError`] when the frame is not a JSON object with a string `action`.
pub fn decode_action(frame: &str) -> Result<ActionRequest, DecodeError> {
    let value: Value = serde_json::from_str(frame)
        .map_err(|e| DecodeError::new(format!("action is not valid json: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(DecodeError::new("action is not a json object"));
    };
    let action = str_field(&obj, "action")
        .ok_or_else(|| DecodeError::new("action request without action"))?
        .to_owned();
    let params = match obj.remove("params") {
        Some(Value::Object(p)) => p,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(DecodeError::new("action params is not an object")),
    };
    Ok(ActionRequest {
        action,
        self_: decode_self(obj.get("self")),
        params,
        echo: obj.remove("echo").unwrap_or(Value::Null),
    })
}

/// What a text-only `send_message` action asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMessageParams {
    /// `params.user_id`.
    pub user_id: String,
    /// The text segments concatenated.
    pub text: String,
}

impl ActionRequest {
    /// Reads a private `send_message` action's target and text.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the missing or wrong parameter.
    pub fn send_message_params(&self) -> Result<SendMessageParams, DecodeError> {
        match str_field(&self.params, "detail_type") {
            Some("private") => {}
            Some(other) => {
                return Err(DecodeError::new(format!(
                    "send_message detail_type {other:?} is not supported, only private"
                )));
            }
            None => return Err(DecodeError::new("send_message without detail_type")),
        }
        let user_id = id_field(&self.params, "user_id")
            .ok_or_else(|| DecodeError::new("send_message without user_id"))?;
        let (text, _) = match self.params.get("message") {
            Some(Value::Array(segments)) => decode_segments(segments)?,
            Some(Value::String(s)) => (s.clone(), Vec::new()),
            _ => return Err(DecodeError::new("send_message without message segments")),
        };
        Ok(SendMessageParams { user_id, text })
    }
}

/// Current time as OneBot event time (seconds, fractional).
pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Builds a `meta.connect` event.
pub fn encode_connect(id: &str, implementation: &str, version: &str) -> String {
    json!({
        "id": id, "time": now_seconds(), "type": "meta", "detail_type": "connect", "sub_type": "",
        "version": {"impl": implementation, "version": version, "onebot_version": "12"},
    })
    .to_string()
}

/// Builds a status object (for `meta.status_update` and heartbeats).
fn status_value(good: bool, bots: &[BotStatus]) -> Value {
    let bots: Vec<Value> = bots
        .iter()
        .map(
            |b| json!({"self": {"platform": b.platform, "user_id": b.self_id}, "online": b.online}),
        )
        .collect();
    json!({"good": good, "bots": bots})
}

/// Builds a `meta.status_update` event.
pub fn encode_status_update(id: &str, good: bool, bots: &[BotStatus]) -> String {
    json!({
        "id": id, "time": now_seconds(), "type": "meta", "detail_type": "status_update",
        "sub_type": "", "status": status_value(good, bots),
    })
    .to_string()
}

/// Builds a `meta.heartbeat` event (interval in milliseconds, as the spec says).
pub fn encode_heartbeat(id: &str, interval: Duration, good: bool, bots: &[BotStatus]) -> String {
    json!({
        "id": id, "time": now_seconds(), "type": "meta", "detail_type": "heartbeat",
        "sub_type": "", "interval": interval.as_millis() as u64,
        "status": status_value(good, bots),
    })
    .to_string()
}

/// The OneBot 12 segment of a card.
pub fn encode_card(card: &Card) -> Value {
    match card {
        Card::Item { item_id, title } => {
            json!({"type": "shop.item", "data": {"item_id": item_id, "title": title}})
        }
        Card::Order { order_id, status } => {
            json!({"type": "shop.order", "data": {"order_id": order_id, "status": status}})
        }
        Card::Image { file_id } => json!({"type": "image", "data": {"file_id": file_id}}),
        Card::Voice { file_id } => json!({"type": "voice", "data": {"file_id": file_id}}),
        Card::Audio { file_id } => json!({"type": "audio", "data": {"file_id": file_id}}),
        Card::Video { file_id } => json!({"type": "video", "data": {"file_id": file_id}}),
        Card::File { file_id, name } => {
            json!({"type": "file", "data": {"file_id": file_id, "name": name}})
        }
        Card::Location {
            latitude,
            longitude,
            title,
            content,
        } => json!({"type": "location", "data": {
            "latitude": latitude, "longitude": longitude, "title": title, "content": content,
        }}),
        Card::Reply { message_id } => json!({"type": "reply", "data": {"message_id": message_id}}),
        Card::Other { kind } => json!({"type": kind, "data": {}}),
    }
}

/// Builds a private `message` event from a message's text and cards (and `alt_message`).
pub fn encode_private_message(id: &str, msg: &PrivateMessage) -> String {
    let mut segments = Vec::new();
    if !msg.text.is_empty() {
        segments.push(json!({"type": "text", "data": {"text": msg.text}}));
    }
    segments.extend(msg.cards.iter().map(encode_card));
    encode_private_message_with_segments(id, msg, Value::Array(segments))
}

/// Builds a private `message` event carrying `segments` as they are (they need not be valid);
/// `msg` gives the ids, the time and `outgoing`, and its [`PrivateMessage::transcript_text`]
/// becomes `alt_message`. Its text and cards are not looked at otherwise.
pub fn encode_private_message_with_segments(
    id: &str,
    msg: &PrivateMessage,
    segments: Value,
) -> String {
    json!({
        "id": id, "time": msg.time, "type": "message", "detail_type": "private",
        "sub_type": if msg.outgoing { "outgoing" } else { "" },
        "message_id": msg.message_id, "message": segments, "alt_message": msg.transcript_text(),
        "user_id": msg.user_id,
        "self": {"platform": msg.platform, "user_id": msg.self_id},
    })
    .to_string()
}

/// Builds an action response.
pub fn encode_response(
    status: &str,
    retcode: i64,
    data: Value,
    message: &str,
    echo: &Value,
) -> String {
    json!({"status": status, "retcode": retcode, "data": data, "message": message, "echo": echo})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(platform: &str, self_id: &str, user_id: &str, id: &str, text: &str) -> PrivateMessage {
        PrivateMessage {
            platform: platform.into(),
            self_id: self_id.into(),
            user_id: user_id.into(),
            message_id: id.into(),
            text: text.into(),
            cards: vec![],
            outgoing: false,
            time: 0.0,
        }
    }

    #[test]
    fn decodes_every_kind_of_frame() {
        let cases: Vec<(&str, &str, Incoming)> = vec![
            (
                "connect",
                r#"{"id":"","time":1.5,"type":"meta","detail_type":"connect","sub_type":"",
                   "version":{"impl":"walle-core","version":"0.7.4","onebot_version":"12"}}"#,
                Incoming::Connect(ConnectInfo {
                    implementation: "walle-core".into(),
                    version: "0.7.4".into(),
                    onebot_version: "12".into(),
                }),
            ),
            (
                "connect without version",
                r#"{"type":"meta","detail_type":"connect"}"#,
                Incoming::Connect(ConnectInfo::default()),
            ),
            (
                "heartbeat in milliseconds",
                r#"{"type":"meta","detail_type":"heartbeat","sub_type":"","interval":5000}"#,
                Incoming::Heartbeat(Heartbeat {
                    interval: Duration::from_secs(5),
                }),
            ),
            (
                "heartbeat in seconds",
                r#"{"type":"meta","detail_type":"heartbeat","sub_type":"","interval":4}"#,
                Incoming::Heartbeat(Heartbeat {
                    interval: Duration::from_secs(4),
                }),
            ),
            (
                "heartbeat at the boundary is milliseconds",
                r#"{"type":"meta","detail_type":"heartbeat","interval":1000}"#,
                Incoming::Heartbeat(Heartbeat {
                    interval: Duration::from_secs(1),
                }),
            ),
            (
                "status update",
                r#"{"type":"meta","detail_type":"status_update","sub_type":"",
                   "status":{"good":true,"bots":[{"self":{"platform":"dev","user_id":"shop1"},"online":true},
                                                  {"self":{"platform":"dev","user_id":"shop2"},"online":false}]}}"#,
                Incoming::StatusUpdate(StatusUpdate {
                    good: true,
                    bots: vec![
                        BotStatus {
                            platform: "dev".into(),
                            self_id: "shop1".into(),
                            online: true,
                        },
                        BotStatus {
                            platform: "dev".into(),
                            self_id: "shop2".into(),
                            online: false,
                        },
                    ],
                }),
            ),
            (
                "private text with mention",
                r#"{"id":"e1","time":1700000000.25,"type":"message","detail_type":"private","sub_type":"",
                   "message_id":"m1","user_id":"buyer1","self":{"platform":"dev","user_id":"shop1"},
                   "message":[{"type":"text","data":{"text":"在吗"}},
                              {"type":"mention","data":{"user_id":"shop1"}},
                              {"type":"text","data":{"text":"，发货了吗"}}],
                   "alt_message":"在吗@shop1，发货了吗"}"#,
                Incoming::Message(PrivateMessage {
                    time: 1_700_000_000.25,
                    ..msg("dev", "shop1", "buyer1", "m1", "在吗，发货了吗")
                }),
            ),
            (
                "private with shop cards",
                r#"{"type":"message","detail_type":"private","sub_type":"","message_id":"m2",
                   "user_id":"b","self":{"platform":"dev","user_id":"s"},
                   "message":[{"type":"shop.item","data":{"item_id":"i9","title":"保温杯"}},
                              {"type":"text","data":{"text":"这个有货吗"}},
                              {"type":"shop.order","data":{"order_id":"o1","status":"shipped"}},
                              {"type":"shop.item","data":{"title":"no id: kept"}}]}"#,
                Incoming::Message(PrivateMessage {
                    cards: vec![
                        Card::Item {
                            item_id: "i9".into(),
                            title: "保温杯".into(),
                        },
                        Card::Order {
                            order_id: "o1".into(),
                            status: "shipped".into(),
                        },
                        Card::Item {
                            item_id: String::new(),
                            title: "no id: kept".into(),
                        },
                    ],
                    ..msg("dev", "s", "b", "m2", "这个有货吗")
                }),
            ),
            (
                "outgoing sub_type",
                r#"{"type":"message","detail_type":"private","sub_type":"outgoing","message_id":"m3",
                   "user_id":"b","self":{"platform":"dev","user_id":"s"},
                   "message":[{"type":"text","data":{"text":"亲，已经发货啦"}}]}"#,
                Incoming::Message(PrivateMessage {
                    outgoing: true,
                    ..msg("dev", "s", "b", "m3", "亲，已经发货啦")
                }),
            ),
            (
                "numeric ids and alt_message only",
                r#"{"type":"message","detail_type":"private","message_id":42,"user_id":10001,
                   "self":{"platform":"qq","user_id":"s"},"alt_message":"hi"}"#,
                Incoming::Message(msg("qq", "s", "10001", "42", "hi")),
            ),
            (
                "draft-style self_id and platform",
                r#"{"type":"message","detail_type":"private","message_id":"m","user_id":"u",
                   "platform":"qq","self_id":"s","message":[]}"#,
                Incoming::Message(msg("qq", "s", "u", "m", "")),
            ),
            (
                "response with echo",
                r#"{"status":"ok","retcode":0,"data":{"message_id":"b1","time":1.0},"message":"","echo":"x-1"}"#,
                Incoming::Response(ActionResponse {
                    status: "ok".into(),
                    retcode: 0,
                    data: json!({"message_id":"b1","time":1.0}),
                    message: String::new(),
                    echo: Some("x-1".into()),
                }),
            ),
            (
                "failed response with numeric echo",
                r#"{"status":"failed","retcode":34001,"data":null,"message":"busy","echo":7}"#,
                Incoming::Response(ActionResponse {
                    status: "failed".into(),
                    retcode: 34001,
                    data: Value::Null,
                    message: "busy".into(),
                    echo: Some("7".into()),
                }),
            ),
            (
                "group message is other",
                r#"{"type":"message","detail_type":"group","sub_type":"","group_id":"g"}"#,
                Incoming::Other(OtherEvent {
                    kind: "message.group".into(),
                }),
            ),
            (
                "unknown notice is other",
                r#"{"type":"notice","detail_type":"friend_increase","sub_type":"x"}"#,
                Incoming::Other(OtherEvent {
                    kind: "notice.friend_increase.x".into(),
                }),
            ),
        ];
        for (name, frame, want) in cases {
            assert_eq!(decode(frame), Ok(want), "case {name}");
        }
    }

    #[test]
    fn malformed_frames_say_what_was_wrong() {
        let cases = [
            ("not json", "frame is not valid json"),
            ("[1,2]", "frame is not a json object"),
            ("{}", "frame is neither an event"),
            (r#"{"type":5}"#, "event type is not a string"),
            (
                r#"{"type":"message","detail_type":"private","message_id":"m","self":{"platform":"p","user_id":"s"},"message":[]}"#,
                "message event without user_id",
            ),
            (
                r#"{"type":"message","detail_type":"private","user_id":"u","self":{"platform":"p","user_id":"s"},"message":[]}"#,
                "message event without message_id",
            ),
            (
                r#"{"type":"message","detail_type":"private","user_id":"u","message_id":"m","message":[]}"#,
                "message event without self",
            ),
            (
                r#"{"type":"message","detail_type":"private","user_id":"u","message_id":"m","self":{"platform":"p","user_id":"s"}}"#,
                "message event without message",
            ),
            (
                r#"{"type":"message","detail_type":"private","user_id":"u","message_id":"m","self":{"platform":"p","user_id":"s"},"message":[{"type":"text","data":{}}]}"#,
                "text segment 0 without data.text",
            ),
            (
                r#"{"type":"meta","detail_type":"heartbeat"}"#,
                "heartbeat event without interval",
            ),
            (
                r#"{"type":"meta","detail_type":"heartbeat","interval":-3}"#,
                "heartbeat interval is not a non-negative number",
            ),
            (
                r#"{"status":"ok","echo":"x"}"#,
                "action response without integer retcode",
            ),
            (r#"{"retcode":0}"#, "action response without status"),
        ];
        for (frame, want) in cases {
            let err = decode(frame).expect_err(frame).to_string();
            assert!(err.starts_with(want), "{frame}: got {err:?}, want {want:?}");
            assert_eq!(err, err.to_lowercase(), "messages are lowercase: {err}");
        }
    }

    #[test]
    fn send_message_round_trips_through_the_gateway_side() {
        let frame = encode_send_message("dev", "shop1", "buyer1", "您好，在的", "e-1");
        let action = decode_action(&frame).unwrap();
        assert_eq!(action.action, "send_message");
        assert_eq!(action.self_, Some(("dev".into(), "shop1".into())));
        assert_eq!(action.echo, json!("e-1"));
        let params = action.send_message_params().unwrap();
        assert_eq!(params.user_id, "buyer1");
        assert_eq!(params.text, "您好，在的");
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["params"]["detail_type"], "private");
        assert_eq!(v["params"]["message"][0]["type"], "text");
    }

    #[test]
    fn gateway_side_events_decode() {
        let m = PrivateMessage {
            outgoing: true,
            cards: vec![Card::Order {
                order_id: "o".into(),
                status: "paid".into(),
            }],
            ..msg("dev", "shop1", "b", "m9", "hello")
        };
        assert_eq!(
            decode(&encode_private_message("e", &m)),
            Ok(Incoming::Message(m))
        );
        let hb = encode_heartbeat("h", Duration::from_secs(5), true, &[]);
        assert_eq!(
            decode(&hb),
            Ok(Incoming::Heartbeat(Heartbeat {
                interval: Duration::from_secs(5)
            }))
        );
        assert!(matches!(
            decode(&encode_connect("c", "xiaoer-dev", "0.1.0")),
            Ok(Incoming::Connect(_))
        ));
    }

    /// A private message event around `segments`, as a gateway would send it.
    fn with_segments(segments: &str) -> String {
        format!(
            r#"{{"type":"message","detail_type":"private","sub_type":"","message_id":"m","user_id":"b",
                "self":{{"platform":"dev","user_id":"s"}},"message":{segments}}}"#
        )
    }

    fn decoded(frame: &str) -> PrivateMessage {
        match decode(frame) {
            Ok(Incoming::Message(m)) => m,
            other => panic!("{frame}: {other:?}"),
        }
    }

    #[test]
    fn a_sticker_is_decoded_as_a_segment_not_an_empty_text() {
        let m = decoded(&with_segments(
            r#"[{"type":"qq.face","data":{"id":"178"}}]"#,
        ));
        assert_eq!(m.text, "");
        assert_eq!(
            m.cards,
            vec![Card::Other {
                kind: "qq.face".into()
            }]
        );
        assert_eq!(m.transcript_text(), "[表情]");
    }

    #[test]
    fn every_standard_segment_is_decoded_in_order() {
        let m = decoded(&with_segments(
            r#"[{"type":"reply","data":{"message_id":"m0","user_id":"b"}},
                {"type":"text","data":{"text":"看下"}},
                {"type":"image","data":{"file_id":"img1"}},
                {"type":"voice","data":{"file_id":"v1"}},
                {"type":"audio","data":{"file_id":"a1"}},
                {"type":"video","data":{"file_id":"vid1"}},
                {"type":"file","data":{"file_id":"f1","name":"发票.pdf"}},
                {"type":"file","data":{"file_id":"f2","file_name":"单号.xlsx"}},
                {"type":"file","data":{"file_id":3}},
                {"type":"location","data":{"latitude":31.23,"longitude":121.47,"title":"上海","content":"仓库"}},
                {"type":"mention","data":{"user_id":"s"}},
                {"type":"mention_all","data":{}},
                {"type":"shop.item","data":{"item_id":42,"title":"茶具"}},
                {"type":"image"},
                {"type":"douyin.sticker","data":{"url":"x"}},
                {"type":"text","data":{"text":"这个"}}]"#,
        ));
        assert_eq!(m.text, "看下这个");
        let s = |v: &str| v.to_owned();
        assert_eq!(
            m.cards,
            vec![
                Card::Reply {
                    message_id: s("m0")
                },
                Card::Image { file_id: s("img1") },
                Card::Voice { file_id: s("v1") },
                Card::Audio { file_id: s("a1") },
                Card::Video { file_id: s("vid1") },
                Card::File {
                    file_id: s("f1"),
                    name: Some(s("发票.pdf"))
                },
                Card::File {
                    file_id: s("f2"),
                    name: Some(s("单号.xlsx"))
                },
                Card::File {
                    file_id: s("3"),
                    name: None
                },
                Card::Location {
                    latitude: Some(31.23),
                    longitude: Some(121.47),
                    title: s("上海"),
                    content: s("仓库")
                },
                Card::Item {
                    item_id: s("42"),
                    title: s("茶具")
                },
                Card::Image {
                    file_id: String::new()
                },
                Card::Other {
                    kind: s("douyin.sticker")
                },
            ]
        );
    }

    #[test]
    fn cards_round_trip_through_the_gateway_side() {
        let cards = vec![
            Card::Item {
                item_id: "i".into(),
                title: "t".into(),
            },
            Card::Image {
                file_id: "f".into(),
            },
            Card::File {
                file_id: "f".into(),
                name: None,
            },
            Card::Location {
                latitude: Some(1.5),
                longitude: None,
                title: String::new(),
                content: "c".into(),
            },
            Card::Reply {
                message_id: "r".into(),
            },
            Card::Other {
                kind: "face".into(),
            },
        ];
        let m = PrivateMessage {
            cards,
            ..msg("dev", "s", "b", "m", "")
        };
        assert_eq!(
            decode(&encode_private_message("e", &m)),
            Ok(Incoming::Message(m))
        );
    }

    #[test]
    fn a_text_ending_in_a_lone_surrogate_is_decoded_not_dropped() {
        // What a JavaScript gateway sends after cutting "我要退款😭" in the middle of the emoji.
        let m = decoded(&with_segments(
            r#"[{"type":"text","data":{"text":"我要退款\ud83d"}}]"#,
        ));
        assert_eq!(m.text, "我要退款\u{FFFD}");
    }

    #[test]
    fn a_huge_integer_user_id_keeps_its_digits() {
        let m = decoded(
            r#"{"type":"message","detail_type":"private","message_id":184467440737095516161,
                "user_id":184467440737095516160,"self":{"platform":"qq","user_id":99999999999999999999999},
                "message":[{"type":"text","data":{"text":"在吗"}}]}"#,
        );
        assert_eq!(m.user_id, "184467440737095516160");
        assert_eq!(m.message_id, "184467440737095516161");
        assert_eq!(m.self_id, "99999999999999999999999");
        // Ids that fit 64 bits were always exact; still are.
        let m = decoded(
            r#"{"type":"message","detail_type":"private","message_id":-5,"user_id":18446744073709551615,
                "self":{"platform":"qq","user_id":"s"},"message":[]}"#,
        );
        assert_eq!(
            (m.user_id.as_str(), m.message_id.as_str()),
            ("18446744073709551615", "-5")
        );
    }

    #[test]
    fn a_fractional_user_id_is_a_decode_error() {
        let err = decode(
            r#"{"type":"message","detail_type":"private","message_id":"m","user_id":10001.5,
                "self":{"platform":"qq","user_id":"s"},"message":[]}"#,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "user_id is not an integer: 10001.5");
    }

    #[test]
    fn retcodes_are_classified() {
        let resp = |status: &str, retcode: i64| ActionResponse {
            status: status.into(),
            retcode,
            data: Value::Null,
            message: String::new(),
            echo: None,
        };
        let cases = [
            ("ok", 0, ResponseClass::Ok),
            ("ok", 1, ResponseClass::Ok),
            ("failed", 34000, ResponseClass::Retryable),
            ("failed", 34999, ResponseClass::Retryable),
            ("failed", 10003, ResponseClass::OurMistake),
            ("failed", 19999, ResponseClass::OurMistake),
            ("failed", 20001, ResponseClass::Failed),
            ("failed", 35000, ResponseClass::Failed),
            ("failed", 0, ResponseClass::Failed),
        ];
        for (status, retcode, want) in cases {
            assert_eq!(
                OneBot12.classify(&resp(status, retcode)),
                want,
                "{status} {retcode}"
            );
        }
    }

    #[test]
    fn long_kinds_are_cut_to_a_name() {
        let kind = "x".repeat(1000);
        let m = decoded(&with_segments(&format!(r#"[{{"type":"{kind}"}}]"#)));
        assert_eq!(
            m.cards,
            vec![Card::Other {
                kind: "x".repeat(64)
            }]
        );
    }
}
