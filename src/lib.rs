//! xiaoer (店小二) is an online shop's always-on first responder.
//!
//! It holds websocket connections to a chat gateway, decides for every buyer message whether to
//! answer it, stay quiet, or hand the chat to a human queue, and keeps the evidence.
//!
//! # Layout
//!
//! - [`gateway`]: the OneBot 12 codec, the forward-websocket client connection (auth, heartbeat,
//!   reconnect) and the development gateway used by the demo and the end-to-end tests.

pub mod gateway;
