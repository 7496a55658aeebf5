//! The domain's leaf types, used everywhere and depending on nothing else in the crate: which
//! conversation ([`ConversationKey`]), the fixed [`Topic`]s and human [`Queue`]s, the states of a
//! conversation and of an escalation, who acts ([`Actor`]) and who speaks ([`Sender`]), and the
//! records built from them. Each enum's text form is what the store, the CLI and the console show.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, ParseEnumError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError::new(stringify!($name), s)),
                }
            }
        }
    };
}

named_enum! {
    /// What a buyer message is about. Every rule has one.
    Topic {
        Greeting => "greeting",
        Product => "product",
        Price => "price",
        Order => "order",
        Payment => "payment",
        Shipping => "shipping",
        Logistics => "logistics",
        Invoice => "invoice",
        Refund => "refund",
        AfterSale => "after_sale",
        Complaint => "complaint",
        BadReview => "bad_review",
        Human => "human",
        Thanks => "thanks",
        Other => "other",
    }
}

named_enum! {
    /// The human queues escalated chats wait in.
    Queue {
        Refund => "refund",
        AfterSale => "after_sale",
        Complaint => "complaint",
        BadReview => "bad_review",
        Human => "human",
    }
}

impl Queue {
    /// How urgent the queue is: a chat already waiting is moved to a queue that ranks higher
    /// (a refund request that turns into a complaint), never to one that ranks lower.
    pub fn severity(self) -> u8 {
        match self {
            Queue::Complaint => 4,
            Queue::BadReview => 4,
            Queue::AfterSale => 3,
            Queue::Refund => 2,
            Queue::Human => 1,
        }
    }
}

impl Topic {
    pub fn names() -> String {
        Topic::ALL
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Queue {
    pub fn names() -> String {
        Queue::ALL
            .iter()
            .map(|q| q.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// How the queue is named to a buyer.
    pub fn display_zh(self) -> &'static str {
        match self {
            Queue::Refund => "退款退货",
            Queue::AfterSale => "售后",
            Queue::Complaint => "投诉处理",
            Queue::BadReview => "评价处理",
            Queue::Human => "人工客服",
        }
    }
}

/// Identifies one conversation: a buyer talking to one shop account on one platform.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationKey {
    /// The OneBot `platform` (e.g. `qq`, `taobao`).
    pub platform: String,
    /// The shop account (`self.user_id` in OneBot 12).
    pub self_id: String,
    /// The buyer.
    pub user_id: String,
}

impl ConversationKey {
    /// Builds a key from its three parts.
    pub fn new(
        platform: impl Into<String>,
        self_id: impl Into<String>,
        user_id: impl Into<String>,
    ) -> Self {
        ConversationKey {
            platform: platform.into(),
            self_id: self_id.into(),
            user_id: user_id.into(),
        }
    }
}

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.platform, self.self_id, self.user_id)
    }
}

/// The error returned when a stored enum's text is not one this version knows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct ParseEnumError {
    what: &'static str,
    value: String,
}

impl ParseEnumError {
    fn new(what: &'static str, value: &str) -> Self {
        ParseEnumError {
            what,
            value: value.to_owned(),
        }
    }
}

/// Who is answering a conversation. Stored as lowercase text: `bot`, `queued`, `human`, `paused`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationState {
    /// The responder answers.
    Bot,
    /// Escalated and waiting for a human; the bot stays quiet (apart from one queue notice).
    Queued,
    /// An agent owns the conversation.
    Human,
    /// A human answered from another client; the bot is quiet until the pause expires.
    Paused,
}

impl ConversationState {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationState::Bot => "bot",
            ConversationState::Queued => "queued",
            ConversationState::Human => "human",
            ConversationState::Paused => "paused",
        }
    }
}

impl fmt::Display for ConversationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConversationState {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bot" => Ok(ConversationState::Bot),
            "queued" => Ok(ConversationState::Queued),
            "human" => Ok(ConversationState::Human),
            "paused" => Ok(ConversationState::Paused),
            _ => Err(ParseEnumError::new("conversation state", s)),
        }
    }
}

/// Where an escalation is. Stored as lowercase text: `open`, `claimed`, `closed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EscalationState {
    /// Waiting in its queue for an agent.
    Open,
    /// An agent holds it.
    Claimed,
    /// Done: resolved, handed back, or timed out.
    Closed,
}

impl EscalationState {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationState::Open => "open",
            EscalationState::Claimed => "claimed",
            EscalationState::Closed => "closed",
        }
    }
}

impl fmt::Display for EscalationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EscalationState {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(EscalationState::Open),
            "claimed" => Ok(EscalationState::Claimed),
            "closed" => Ok(EscalationState::Closed),
            _ => Err(ParseEnumError::new("escalation state", s)),
        }
    }
}

/// Who caused a state change. Stored as text: `bot`, `buyer`, `agent:<name>`, `shop`, `timeout`,
/// `system`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Actor {
    /// The responder itself (e.g. it escalated).
    Bot,
    /// The buyer (e.g. asked for a person).
    Buyer,
    /// A named human agent (console).
    Agent(String),
    /// The shop account sent a message from another client.
    ShopOutgoing,
    /// An idle or pause timer ran out.
    Timeout,
    /// The daemon itself (startup recovery, administration).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Bot => f.write_str("bot"),
            Actor::Buyer => f.write_str("buyer"),
            Actor::Agent(name) => write!(f, "agent:{name}"),
            Actor::ShopOutgoing => f.write_str("shop"),
            Actor::Timeout => f.write_str("timeout"),
            Actor::System => f.write_str("system"),
        }
    }
}

impl FromStr for Actor {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bot" => Ok(Actor::Bot),
            "buyer" => Ok(Actor::Buyer),
            "shop" => Ok(Actor::ShopOutgoing),
            "timeout" => Ok(Actor::Timeout),
            "system" => Ok(Actor::System),
            _ => match s.strip_prefix("agent:") {
                Some(name) => Ok(Actor::Agent(name.to_owned())),
                None => Err(ParseEnumError::new("actor", s)),
            },
        }
    }
}

impl From<Actor> for String {
    fn from(actor: Actor) -> String {
        actor.to_string()
    }
}

impl TryFrom<String> for Actor {
    type Error = ParseEnumError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Who wrote a transcript line. Stored as text: `buyer`, `bot`, `agent:<name>`, `shop`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Sender {
    /// The buyer.
    Buyer,
    /// The responder.
    Bot,
    /// A named human agent answering through the console.
    Agent(String),
    /// The shop account, from a client other than xiaoer.
    Shop,
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sender::Buyer => f.write_str("buyer"),
            Sender::Bot => f.write_str("bot"),
            Sender::Agent(name) => write!(f, "agent:{name}"),
            Sender::Shop => f.write_str("shop"),
        }
    }
}

impl FromStr for Sender {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "buyer" => Ok(Sender::Buyer),
            "bot" => Ok(Sender::Bot),
            "shop" => Ok(Sender::Shop),
            _ => match s.strip_prefix("agent:") {
                Some(name) => Ok(Sender::Agent(name.to_owned())),
                None => Err(ParseEnumError::new("sender", s)),
            },
        }
    }
}

impl From<Sender> for String {
    fn from(sender: Sender) -> String {
        sender.to_string()
    }
}

impl TryFrom<String> for Sender {
    type Error = ParseEnumError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Which way a transcript line went. Stored as `inbound` / `outbound`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To the shop (from the buyer).
    Inbound,
    /// From the shop (bot, agent or shop account).
    Outbound,
}

impl Direction {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl FromStr for Direction {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inbound" => Ok(Direction::Inbound),
            "outbound" => Ok(Direction::Outbound),
            _ => Err(ParseEnumError::new("direction", s)),
        }
    }
}

/// A conversation's durable state, as the per-chat worker needs it after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// Which conversation.
    pub key: ConversationKey,
    /// Who answers it now.
    pub state: ConversationState,
    /// When `state` was entered (unix ms). A recorded state change is stamped with this time.
    pub state_since_ms: i64,
    /// While `paused`: when the pause ends (unix ms).
    pub paused_until_ms: Option<i64>,
    /// When the buyer was last greeted (unix ms), if ever.
    pub greeted_at_ms: Option<i64>,
    /// How many fallback answers in a row the bot has given.
    pub fallback_streak: i64,
    /// Whether the one "still in the queue" notice has gone out for the current escalation.
    pub queued_notice_sent: bool,
    /// The escalation that is open or claimed for this conversation, if any.
    pub open_escalation: Option<i64>,
    /// When the buyer last wrote (unix ms).
    pub last_buyer_ms: Option<i64>,
    /// When an agent or the shop account last wrote to the buyer (unix ms).
    pub last_staff_ms: Option<i64>,
    /// The product card the buyer sent last, so that a question after it is about that item.
    pub last_item: Option<ItemRef>,
    /// The closed period (named by its start, unix ms) this chat was last told of: the
    /// off-hours notice goes out once per closed period.
    pub off_hours_notice_ms: Option<i64>,
    /// How many times this conversation has been written; every write is conditional on it, so
    /// a write planned from an outdated state is refused instead of overwriting a newer one.
    /// 0 for a conversation that has never been stored.
    pub version: i64,
}

/// A product a buyer pointed at with a card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRef {
    /// The platform's item id.
    pub id: String,
    /// The item's title as the card showed it.
    pub title: String,
}

impl Conversation {
    /// A fresh conversation answered by the bot since `at_ms`.
    pub fn new(key: ConversationKey, at_ms: i64) -> Self {
        Conversation {
            key,
            state: ConversationState::Bot,
            state_since_ms: at_ms,
            paused_until_ms: None,
            greeted_at_ms: None,
            fallback_streak: 0,
            queued_notice_sent: false,
            open_escalation: None,
            last_buyer_ms: None,
            last_staff_ms: None,
            last_item: None,
            off_hours_notice_ms: None,
            version: 0,
        }
    }
}

/// A chat handed to a human queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// Generated id.
    pub id: i64,
    /// Which conversation.
    pub key: ConversationKey,
    /// The human queue it waits in.
    pub queue: Queue,
    /// Why (human-readable).
    pub reason: String,
    /// The rule that escalated, if a rule did.
    pub rule: Option<String>,
    /// Waiting, held by an agent, or done.
    pub state: EscalationState,
    /// When it was created (unix ms).
    pub created_ms: i64,
    /// The agent who claimed it, if claimed.
    pub claimed_by: Option<String>,
    /// When it was claimed (unix ms), if claimed.
    pub claimed_ms: Option<i64>,
    /// The buyer message that caused the escalation.
    pub first_message: String,
    /// Who closed it (`agent:<name>`, `timeout`, …), once closed.
    pub closed_by: Option<String>,
    /// How it ended (`refunded`, `explained`, …), when the closer said.
    pub outcome: Option<String>,
}

/// One line of a conversation's transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    /// Which conversation.
    pub key: ConversationKey,
    /// Which way it went.
    pub direction: Direction,
    /// Who wrote it.
    pub sender: Sender,
    /// The platform's message id, when known.
    pub message_id: Option<String>,
    /// The text (for a message without text, a short description of what it carried).
    pub text: String,
    /// Product and order cards, pictures, stickers and other non-text parts.
    pub parts: Vec<Part>,
    /// For outbound lines: whether the gateway delivered it. `None` for inbound lines.
    pub delivery: Option<Delivery>,
    /// When (unix ms).
    pub at_ms: i64,
}

/// A non-text part of a chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// A product card.
    Item { item_id: String, title: String },
    /// An order card.
    Order { order_id: String, status: String },
    /// A picture.
    Image { file_id: String },
    /// A file.
    File { file_id: String, name: String },
    /// A voice message, audio or video.
    Media { kind: String, file_id: String },
    /// Anything else (stickers, locations, platform extensions), by segment type.
    Other { kind: String },
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Item { item_id, title } => write!(f, "[商品 {title} ({item_id})]"),
            Part::Order { order_id, status } => write!(f, "[订单 {order_id} {status}]"),
            Part::Image { .. } => f.write_str("[图片]"),
            Part::File { name, .. } => write!(f, "[文件 {name}]"),
            Part::Media { kind, .. } => match kind.as_str() {
                "voice" | "audio" => f.write_str("[语音]"),
                "video" => f.write_str("[视频]"),
                other => write!(f, "[{other}]"),
            },
            Part::Other { kind } => match kind.as_str() {
                "face" | "sticker" | "mface" => f.write_str("[表情]"),
                "location" => f.write_str("[位置]"),
                reply if reply.starts_with("reply") => f.write_str("[引用回复]"),
                other => write!(f, "[消息类型 {other}]"),
            },
        }
    }
}

/// What became of an outbound message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Recorded, not yet answered by the gateway (or the process stopped before it was).
    Pending,
    /// The gateway accepted it.
    Sent,
    /// The gateway refused it: the buyer did not get it.
    Failed,
    /// No answer in time, or the connection dropped after the write: it may have arrived.
    Unknown,
}

impl Delivery {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Pending => "pending",
            Delivery::Sent => "sent",
            Delivery::Failed => "failed",
            Delivery::Unknown => "unknown",
        }
    }
}

impl FromStr for Delivery {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Delivery::Pending),
            "sent" => Ok(Delivery::Sent),
            "failed" => Ok(Delivery::Failed),
            "unknown" => Ok(Delivery::Unknown),
            _ => Err(ParseEnumError::new("delivery", s)),
        }
    }
}

/// What happened to an escalation. Stored as lowercase text in its timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EscalationEvent {
    /// The chat was handed to a queue.
    Opened,
    /// A later message moved it to a more serious queue.
    Raised,
    /// An agent took it.
    Claimed,
    /// The agent put it back in its queue.
    Released,
    /// Moved to another queue or agent.
    Transferred,
    /// Done; the chat is the bot's again.
    Closed,
}

impl EscalationEvent {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationEvent::Opened => "opened",
            EscalationEvent::Raised => "raised",
            EscalationEvent::Claimed => "claimed",
            EscalationEvent::Released => "released",
            EscalationEvent::Transferred => "transferred",
            EscalationEvent::Closed => "closed",
        }
    }
}

impl fmt::Display for EscalationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a console account may do. Stored as lowercase text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Works the queues of the shops it serves.
    Agent,
    /// Also reassigns chats, sees every agent's work and the reports.
    Supervisor,
    /// Also manages accounts.
    Admin,
}

impl Role {
    /// The text stored in the database and given on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Role::Agent),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            _ => Err(ParseEnumError::new("role", s)),
        }
    }
}

/// A console account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Agent {
    pub name: String,
    pub role: Role,
    /// The shop accounts this agent serves; empty means every shop.
    pub shops: Vec<String>,
    pub disabled: bool,
    pub created_ms: i64,
}

impl Agent {
    /// Whether the agent may see and act on chats of shop account `self_id`.
    pub fn serves(&self, self_id: &str) -> bool {
        !self.disabled && (self.shops.is_empty() || self.shops.iter().any(|s| s == self_id))
    }
}

/// A note people write on a chat; never sent to the buyer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Note {
    pub key: ConversationKey,
    pub escalation: Option<i64>,
    pub author: String,
    pub kind: NoteKind,
    pub body: String,
    pub at_ms: i64,
}

/// Why a note was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoteKind {
    /// For colleagues: what was checked, what was promised.
    Note,
    /// At the end of a shift, for the next one: the state of the chat and the next step.
    Handover,
}

impl NoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::Note => "note",
            NoteKind::Handover => "handover",
        }
    }
}

impl FromStr for NoteKind {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "note" => Ok(NoteKind::Note),
            "handover" => Ok(NoteKind::Handover),
            _ => Err(ParseEnumError::new("note kind", s)),
        }
    }
}

/// Something that happened in a chat, announced once it is durable (the console's live updates
/// and the metrics listen to these).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChatEvent {
    /// A line was added to the transcript (either way).
    Message {
        key: ConversationKey,
        direction: Direction,
        sender: Sender,
        text: String,
        at_ms: i64,
    },
    /// The conversation changed hands.
    StateChanged {
        key: ConversationKey,
        from: ConversationState,
        to: ConversationState,
        actor: Actor,
        reason: String,
        at_ms: i64,
    },
    /// An escalation was opened, raised, claimed, released, transferred or closed.
    Escalation {
        id: i64,
        key: ConversationKey,
        kind: EscalationEvent,
        queue: Queue,
        actor: Actor,
        at_ms: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_text() {
        for state in [
            ConversationState::Bot,
            ConversationState::Queued,
            ConversationState::Human,
            ConversationState::Paused,
        ] {
            assert_eq!(state.as_str().parse::<ConversationState>(), Ok(state));
        }
        for actor in [
            Actor::Bot,
            Actor::Buyer,
            Actor::Agent("alice".into()),
            Actor::Agent("a:b".into()),
            Actor::ShopOutgoing,
            Actor::Timeout,
            Actor::System,
        ] {
            assert_eq!(actor.to_string().parse::<Actor>(), Ok(actor));
        }
        for sender in [
            Sender::Buyer,
            Sender::Bot,
            Sender::Agent("bob".into()),
            Sender::Shop,
        ] {
            assert_eq!(sender.to_string().parse::<Sender>(), Ok(sender));
        }
        assert_eq!(Actor::Agent("alice".into()).to_string(), "agent:alice");
        assert!("robot".parse::<Actor>().is_err());
        assert!("Bot".parse::<ConversationState>().is_err());
    }

    #[test]
    fn actor_serializes_as_text() {
        let json = serde_json::to_string(&Actor::Agent("alice".into())).unwrap();
        assert_eq!(json, "\"agent:alice\"");
        let back: Actor = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Actor::Agent("alice".into()));
    }
}
