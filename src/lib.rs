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
//! - [`cli`]: one file per command (`check`, `route`, `explain`, `eval`).

pub mod cli;
pub mod diagnostics;
pub mod replies;
pub mod rules;
