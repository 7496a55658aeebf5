//! The chat gateway: xiaoer's side of the connection to a OneBot chat gateway.
//!
//! Three parts, kept apart so that each can grow without the others:
//!
//! - a **codec** ([`Codec`]) turns frames into typed events ([`Incoming`], [`PrivateMessage`]
//!   with its [`Card`]s) and builds the `send_message` action; [`onebot::OneBot12`] is the
//!   first implementation;
//! - a **transport** ([`Transport`]) yields one websocket connection at a time as a
//!   `Sink`/`Stream` pair; [`ForwardWs`] dials the gateway (xiaoer is the client), and a
//!   reverse websocket (xiaoer is the server) fits the same trait;
//! - the **client** ([`client`]) supervises connections (backoff, stopping on errors retrying
//!   cannot fix), runs the connection loop (heartbeats, pong deadline, size caps, rate-limited
//!   warnings) and sends replies ([`GatewayHandle::send_message`]).
//!
//! The daemon calls [`spawn`] per configured gateway and reads [`GatewayEvent`]s. The
//! development gateway used by `xiaoer demo` and the tests is [`crate::devgateway`].

pub mod client;
pub mod codec;
mod error;
mod json;
pub(crate) mod log_limit;
pub mod onebot;
pub mod transport;

pub use client::{
    GatewayConfig, GatewayEvent, GatewayHandle, LinkStats, SentMessage, check_connect, spawn,
    spawn_with,
};
pub use codec::{
    ActionResponse, BotStatus, Card, Codec, DecodeError, Incoming, PrivateMessage, ResponseClass,
    StatusUpdate,
};
pub use error::{GatewayError, SendError};
pub use onebot::OneBot12;
pub use transport::{ForwardWs, Transport, validate_url};
