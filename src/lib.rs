//! xiaoer (店小二) is an online shop's always-on first responder.
//!
//! It holds websocket connections to a chat gateway, decides for every buyer message whether to
//! answer it, stay quiet, or hand the chat to a human queue, and keeps the evidence.
//!
//! # Layout
//!
//! - [`store`]: durable storage behind one interface (SQLite now, PostgreSQL later): conversation
//!   state, transcripts, escalations, inbound-message idempotence; one batching writer task.
//! - [`cli`]: one file per command (`queue`).

pub mod cli;
pub mod store;
