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
//! - [`conversation`]: the per-chat state machine (greeting, quiet while queued, takeover pause,
//!   hand-over after repeated fallbacks, reply rate limit), its worker and the dispatcher that
//!   keeps one worker per chat.
//! - [`escalation`]: the policy around human queues: when the bot gives up, what waits are quoted.
//! - [`gateway`]: the connection to the chat gateway: codecs (OneBot 12), transports (forward
//!   websocket), connection supervision (auth, heartbeat, reconnect) and `send_message`.
//! - [`devgateway`]: a development OneBot 12 gateway with a buyer chat page, for `xiaoer demo`
//!   and the end-to-end tests.
//! - [`store`]: durable storage behind one interface (SQLite now, PostgreSQL later): conversation
//!   state, transcripts, escalations, inbound-message idempotence; one batching writer task.
//! - [`config`]: daemon settings, layered defaults < file < `XIAOER_*` environment < flags.
//! - [`daemon`]: `run(config, shutdown)`: gateways, chat workers, store, reload, phased shutdown.
//! - [`reload`]: the live rule sets (shared and per-shop overlays) and their hot reload.
//! - [`cli`]: one file per command (`run`, `demo`, `check`, `route`, `explain`, `eval`, `queue`).

pub mod cli;
pub mod config;
pub mod conversation;
pub mod daemon;
pub mod devgateway;
pub mod diagnostics;
pub mod escalation;
pub mod gateway;
pub mod model;
pub mod reload;
pub mod replies;
pub mod rules;
pub mod store;
