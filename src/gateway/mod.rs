//! The chat gateway: xiaoer's side of the OneBot 12 protocol.
//!
//! - [`onebot`]: the codec (frames ↔ typed events, actions and responses).
//! - [`client`]: the forward-websocket client connection: auth, heartbeat, pong deadline,
//!   reconnect with backoff, `send_message` with retries.
//! - [`dev`]: a development gateway (OneBot 12 server plus a buyer chat page) for `xiaoer demo`
//!   and the end-to-end tests.

pub mod client;
pub mod dev;
pub mod onebot;

pub use client::{
    GatewayConfig, GatewayError, GatewayEvent, GatewayHandle, SendError, SentMessage,
    check_connect, spawn,
};
pub use dev::{BotMessage, DevGateway, DevGatewayConfig, DevGatewayError};
pub use onebot::{BotStatus, Card, DecodeError, PrivateMessage, StatusUpdate};
