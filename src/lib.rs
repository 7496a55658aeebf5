//! xiaoer (店小二) is an online shop's always-on first responder.
//!
//! It holds websocket connections to a chat gateway, decides for every buyer message whether to
//! answer it, stay quiet, or hand the chat to a human queue, and keeps the evidence.
//!
//! # Layout
//!
//! - [`rules`]: rule files (raw serde types) → validation → compiled [`rules::RuleSet`]; text
//!   normalisation; the pure, synchronous decision.
//! - [`replies`]: reply templates with variants and variables.
//! - [`diagnostics`]: errors and warnings about rule and reply files, with file:line:col.
//! - [`gateway`]: the OneBot 12 codec, the forward-websocket client connection (auth, heartbeat,
//!   reconnect) and the development gateway used by the demo and the end-to-end tests.
//! - [`store`]: durable storage behind one interface (SQLite now, PostgreSQL later): conversation
//!   state, transcripts, escalations, inbound-message idempotence; one batching writer task.
//! - [`cli`]: one file per command (`check`, `route`, `explain`, `eval`, `queue`).

pub mod cli;
pub mod diagnostics;
pub mod gateway;
pub mod replies;
pub mod rules;
pub mod store;
