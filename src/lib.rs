//! xiaoer (店小二) is an online shop's always-on first responder.
//!
//! It holds websocket connections to a chat gateway, decides for every buyer message whether to
//! answer it, stay quiet, or hand the chat to a human queue, and keeps the evidence.
//!
//! # Layout
//!
//! - [`model`]: the leaf domain types used everywhere: conversation key, topics and queues,
//!   conversation and escalation states, actors and senders, transcript records, chat events.
//! - [`rules`]: rule files (raw serde types) → validation → compiled [`rules::RuleSet`]; text
//!   normalisation; the pure, synchronous decision.
//! - [`routing`]: `route(rules, text)`, the one call that turns a buyer message into what to do
//!   and what decided it; the chat worker and the `route`, `explain` and `eval` commands share it.
//! - [`classifier`]: the learned model behind the rules: hashed character n-grams, a linear
//!   softmax layer, SGD training on the project's own text, the model file and its thresholds.
//! - [`replies`]: reply templates with variants and variables.
//! - [`diagnostics`]: errors and warnings about rule and reply files, with file:line:col.
//! - [`conversation`]: the per-chat state machine (greeting, quiet while queued, raising a waiting
//!   chat to a more serious queue, takeover pause, hand-over after repeated fallbacks, idle
//!   agents, reply rate limit); the agent actions (claim, release, resolve, hand back,
//!   transfer); the chat worker, the only writer of a chat and the only sender to its buyer; the
//!   dispatcher that keeps one worker per chat.
//! - [`escalation`]: the policy around human queues: when the bot gives up, what waits are quoted,
//!   each shop's business hours (weekly shifts, holidays, make-up days, in the shop's zone), and
//!   the platform response clock (rounds, what counts as a reply, budgets, warnings).
//! - [`gateway`]: the connection to the chat gateway: codecs (OneBot 12), transports (forward
//!   websocket), connection supervision (auth, heartbeat, reconnect) and `send_message`.
//! - [`devgateway`]: a development OneBot 12 gateway with a buyer chat page, for `xiaoer demo`
//!   and the end-to-end tests.
//! - [`notify`]: webhook notifications (generic JSON, DingTalk, WeCom, Feishu): targets and
//!   their filters, message bodies, signatures, one delivery attempt, the retry policy, and the
//!   task that works the durable outbox (deliveries, retries, dead letters, SLA alerts).
//! - [`store`]: durable storage behind one interface: the batching writer, the atomic turn (one
//!   write per handled message, refused when its shop lease has moved on), the inbound backlog,
//!   and two backends: SQLite (embedded, the default) and PostgreSQL (with the shop-lease SQL).
//! - [`config`]: daemon settings, layered defaults < file < `XIAOER_*` environment < flags.
//! - [`daemon`]: `start(config) -> Running`: gateways, chat workers, store, reload, chat events,
//!   agents' commands; phased shutdown.
//! - [`remote`]: agents' commands across instances: handed to the shop's owner through the
//!   store, carried out there, the outcome brought back.
//! - [`reload`]: the live rule sets (shared and per-shop overlays) and their hot reload.
//! - [`load`]: the load generator behind the `xiaoer-load` binary: a loopback OneBot 12 gateway
//!   that drives a real daemon (and a bare baseline client) closed or open loop and measures
//!   throughput, latency, CPU and memory.
//! - [`metrics`]: the Prometheus registry every part records into, and the `/metrics`,
//!   `/healthz` and `/readyz` router.
//! - [`console`]: the agent console (axum, maud, htmx, server-sent events): logins and sessions,
//!   the queue, a chat, replies and actions through the chat's worker, shift handover, the
//!   supervisors' report and undelivered notifications.
//! - [`report`]: the shift and weekly report (volumes, response times, the response clock,
//!   queues, topics, unanswered messages, rules that never fire, answers that did not help),
//!   computed from one store read and rendered as text, JSON or a self-contained HTML page.
//! - [`accounts`]: console accounts: argon2id password hashes, add, passwords, disabling.
//! - [`timefmt`]: timestamps as text at the shop's clock and in RFC 3339, through jiff.
//! - [`cluster`]: several instances on one PostgreSQL store: shop leases with a fencing epoch,
//!   the keeper that renews, takes and gives back shops, and what the main loop answers.
//! - [`cli`]: one file per command (`run`, `demo`, `check`, `route`, `explain`, `eval`, `queue`,
//!   `agent`, `hours`, `report`, `status`).

pub mod accounts;
pub mod classifier;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod conversation;
pub mod daemon;
pub mod devgateway;
pub mod diagnostics;
pub mod escalation;
pub mod gateway;
pub mod load;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod reload;
pub mod remote;
pub mod replies;
pub mod report;
pub mod routing;
pub mod rules;
pub mod store;
pub mod timefmt;
