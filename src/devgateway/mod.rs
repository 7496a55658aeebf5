//! The development gateway: a small OneBot 12 implementation for `xiaoer demo` and the
//! end-to-end tests. Not for production: it keeps nothing and trusts its buyer page.
//!
//! It is the websocket SERVER of the forward-websocket mode (xiaoer connects to it): it checks
//! the bearer token (401 when wrong), sends `meta.connect`, `meta.status_update` and periodic
//! `meta.heartbeat`, relays buyers' messages as private `message` events for its shop accounts,
//! and answers `send_message` with `{status: "ok", retcode: 0, data: {message_id, time}}`.
//! Tests push text ([`DevGateway::buyer_says`]) or any OneBot 12 segments — product cards,
//! images, stickers — ([`DevGateway::buyer_sends`]), inject failures and raw frames, and read
//! what the bot sent.
//!
//! It also serves a buyer chat page at `/` (`buyer.html`, embedded; no assets): three buyers
//! side by side, each able to write as the buyer (text, or a product card, image or sticker) or
//! "as the shop from another client" (an `outgoing` event); the bot's replies appear in the
//! buyer's pane. The page talks to the gateway over its own websocket at `/page/ws` (no token:
//! the dev gateway listens on 127.0.0.1 by default).
//!
//! Paths: the OneBot 12 spec says a forward-websocket server accepts `/`; `/` serves the page to
//! plain GETs and the bot websocket to upgrade requests. `/onebot/v12/ws` is accepted too.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::gateway::onebot;
use crate::gateway::{BotStatus, PrivateMessage};

/// Settings for [`DevGateway::start`].
#[derive(Debug, Clone)]
pub struct DevGatewayConfig {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub addr: SocketAddr,
    /// The token bots must present (`Authorization: Bearer …` or `?access_token=…`).
    pub token: Option<String>,
    /// The shop accounts (`self.user_id`) this gateway serves.
    pub shops: Vec<String>,
    /// `self.platform` of the shops.
    pub platform: String,
    /// Interval of `meta.heartbeat`.
    pub heartbeat_interval: Duration,
}

impl Default for DevGatewayConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            shops: vec!["shop1".to_owned()],
            platform: "dev".to_owned(),
            heartbeat_interval: Duration::from_secs(5),
        }
    }
}

/// A message the bot sent to a buyer through `send_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotMessage {
    /// The shop account it was sent as.
    pub self_id: String,
    /// The buyer.
    pub user_id: String,
    /// The text.
    pub text: String,
    /// The id the gateway gave it.
    pub message_id: String,
}

/// Why the development gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevGatewayError {
    /// The address could not be bound.
    #[error("binding the dev gateway to {addr} failed: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct Inner {
    config: DevGatewayConfig,
    to_bots: broadcast::Sender<String>,
    to_pages: broadcast::Sender<String>,
    bot_messages: mpsc::Sender<BotMessage>,
    bot_messages_rx: Mutex<mpsc::Receiver<BotMessage>>,
    connected: watch::Sender<usize>,
    rejected: watch::Sender<usize>,
    seq: AtomicU64,
    retcodes: StdMutex<VecDeque<i64>>,
    /// What the pages were shown, so a reloaded page gets each buyer's history back.
    history: StdMutex<VecDeque<String>>,
    cancel: CancellationToken,
}

/// How many shown messages a page gets back when it (re)connects.
const PAGE_HISTORY: usize = 1000;

/// A running development gateway. Dropping it without [`DevGateway::shutdown`] also stops it.
pub struct DevGateway {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: Option<JoinHandle<()>>,
}

impl DevGateway {
    /// Binds `config.addr` and starts serving.
    ///
    /// # Errors
    ///
    /// [`DevGatewayError::Bind`] when the address cannot be bound.
    pub async fn start(config: DevGatewayConfig) -> Result<DevGateway, DevGatewayError> {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| DevGatewayError::Bind {
                addr: config.addr,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DevGatewayError::Bind {
                addr: config.addr,
                source,
            })?;
        let (to_bots, _) = broadcast::channel(1024);
        let (to_pages, _) = broadcast::channel(1024);
        let (bot_messages, bot_messages_rx) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let inner = Arc::new(Inner {
            config,
            to_bots,
            to_pages,
            bot_messages,
            bot_messages_rx: Mutex::new(bot_messages_rx),
            connected: watch::Sender::new(0),
            rejected: watch::Sender::new(0),
            seq: AtomicU64::new(0),
            retcodes: StdMutex::new(VecDeque::new()),
            history: StdMutex::new(VecDeque::new()),
            cancel: cancel.clone(),
        });
        let app = Router::new()
            .route("/", get(root))
            .route("/onebot/v12/ws", get(bot_ws))
            .route("/page/ws", get(page_ws))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            let shutdown = cancel.clone();
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                warn!("dev gateway server failed: {e}");
            }
        });
        info!(%addr, "dev gateway listening");
        Ok(DevGateway {
            addr,
            inner,
            server: Some(server),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The forward-websocket url for xiaoer (`ws://addr/`, the spec's path).
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The buyer chat page.
    pub fn page_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// A buyer writes to shop `self_id`; returns the new message's id.
    pub fn buyer_says(&self, self_id: &str, user_id: &str, text: &str) -> String {
        self.inner.buyer_says(self_id, user_id, text)
    }

    /// A buyer sends a message made of OneBot 12 `segments` (a JSON array such as
    /// `[{"type": "shop.item", "data": {"item_id": "i1", "title": "保温杯"}}]`) to shop `self_id`;
    /// returns the new message's id. The segments are sent as given, valid or not, so tests
    /// can send what real platforms send.
    pub fn buyer_sends(&self, self_id: &str, user_id: &str, segments: Value) -> String {
        let message_id = format!("buyer-{}", self.inner.next());
        self.inner
            .relay_segments(self_id, user_id, segments, &message_id, false);
        message_id
    }

    /// Sends a buyer message event with a given `message_id` again (a gateway redelivery).
    pub fn redeliver(&self, self_id: &str, user_id: &str, text: &str, message_id: &str) {
        self.inner.relay(self_id, user_id, text, message_id, false);
    }

    /// Shows on the buyer page who is answering a buyer now (`bot`, `queued`, `human`,
    /// `paused`); the demo feeds it from the daemon's chat events.
    pub fn show_chat_state(&self, self_id: &str, user_id: &str, state: &str) {
        self.inner
            .show_on_pages("state", self_id, user_id, state, "");
    }

    /// The shop account wrote to the buyer from another client (an `outgoing` event).
    pub fn shop_says_outgoing(&self, self_id: &str, user_id: &str, text: &str, message_id: &str) {
        self.inner.relay(self_id, user_id, text, message_id, true);
    }

    /// Sends `frame` as is to every connected bot (for malformed, oversized or unknown frames).
    pub fn send_raw_frame(&self, frame: impl Into<String>) {
        if self.inner.to_bots.send(frame.into()).is_err() {
            debug!("raw frame dropped: no bot connected");
        }
    }

    /// The next message a bot sent, waiting up to `wait`.
    pub async fn next_bot_message(&self, wait: Duration) -> Option<BotMessage> {
        let mut rx = self.inner.bot_messages_rx.lock().await;
        tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
    }

    /// How many bot connections are open.
    pub fn connected_bots(&self) -> usize {
        *self.inner.connected.borrow()
    }

    /// How many handshakes were refused for a wrong or missing token.
    pub fn rejected_handshakes(&self) -> usize {
        *self.inner.rejected.borrow()
    }

    /// Waits up to `wait` until at least `n` bots are connected.
    pub async fn wait_for_bots(&self, n: usize, wait: Duration) -> bool {
        wait_until(&self.inner.connected, wait, |bots| bots >= n).await
    }

    /// Waits up to `wait` until no bot is connected.
    pub async fn wait_for_no_bots(&self, wait: Duration) -> bool {
        wait_until(&self.inner.connected, wait, |bots| bots == 0).await
    }

    /// Waits up to `wait` until at least `n` handshakes were refused for their token.
    pub async fn wait_for_rejections(&self, n: usize, wait: Duration) -> bool {
        wait_until(&self.inner.rejected, wait, |refused| refused >= n).await
    }

    /// The next `send_message` actions get these retcodes, in order (0: succeed as usual);
    /// e.g. `[34001, 34001]` fails two sends with a retryable platform error.
    pub fn set_retcode_for_next_sends(&self, retcodes: impl IntoIterator<Item = i64>) {
        if let Ok(mut queue) = self.inner.retcodes.lock() {
            queue.clear();
            queue.extend(retcodes);
        }
    }

    /// Closes every connection and stops listening; the port is free afterwards.
    pub async fn shutdown(mut self) {
        self.inner.cancel.cancel();
        if let Some(server) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
        {
            warn!("dev gateway did not stop within 5 s");
        }
    }
}

async fn wait_until(
    count: &watch::Sender<usize>,
    wait: Duration,
    done: impl Fn(usize) -> bool,
) -> bool {
    let mut rx = count.subscribe();
    let reached = rx.wait_for(|n| done(*n));
    matches!(tokio::time::timeout(wait, reached).await, Ok(Ok(_)))
}

impl Drop for DevGateway {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

impl Inner {
    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn bots(&self) -> Vec<BotStatus> {
        self.config
            .shops
            .iter()
            .map(|shop| BotStatus {
                platform: self.config.platform.clone(),
                self_id: shop.clone(),
                online: true,
            })
            .collect()
    }

    fn buyer_says(&self, self_id: &str, user_id: &str, text: &str) -> String {
        let message_id = format!("buyer-{}", self.next());
        self.relay(self_id, user_id, text, &message_id, false);
        message_id
    }

    fn relay(&self, self_id: &str, user_id: &str, text: &str, message_id: &str, outgoing: bool) {
        let segments = json!([{"type": "text", "data": {"text": text}}]);
        self.relay_segments(self_id, user_id, segments, message_id, outgoing);
    }

    /// Sends a private message event with `segments` as they are to every bot, and shows it
    /// on the buyer pages.
    fn relay_segments(
        &self,
        self_id: &str,
        user_id: &str,
        segments: Value,
        message_id: &str,
        outgoing: bool,
    ) {
        // What the page and `alt_message` show; segments that do not decode show as nothing.
        let (text, cards) = segments
            .as_array()
            .and_then(|s| onebot::decode_segments(s).ok())
            .unwrap_or_default();
        let message = PrivateMessage {
            platform: self.config.platform.clone(),
            self_id: self_id.to_owned(),
            user_id: user_id.to_owned(),
            message_id: message_id.to_owned(),
            text,
            cards,
            outgoing,
            time: onebot::now_seconds(),
        };
        let id = format!("event-{}", self.next());
        let event = onebot::encode_private_message_with_segments(&id, &message, segments);
        if self.to_bots.send(event).is_err() {
            warn!(%user_id, "no bot connected; the message reaches nobody");
        }
        let kind = if outgoing { "outgoing" } else { "buyer" };
        let shown = message.transcript_text();
        self.show_on_pages(kind, self_id, user_id, &shown, message_id);
    }

    fn show_on_pages(&self, kind: &str, self_id: &str, user_id: &str, text: &str, id: &str) {
        let shown = json!({"kind": kind, "self_id": self_id, "user_id": user_id, "text": text, "message_id": id, "at": onebot::now_seconds()}).to_string();
        if let Ok(mut history) = self.history.lock() {
            history.push_back(shown.clone());
            if history.len() > PAGE_HISTORY {
                history.pop_front();
            }
        }
        let _ = self.to_pages.send(shown);
    }

    /// Answers one action frame from a bot.
    fn handle_action(&self, frame: &str) -> String {
        let action = match onebot::decode_action(frame) {
            Ok(action) => action,
            Err(e) => {
                warn!("bad action from bot: {e}");
                return onebot::encode_response(
                    "failed",
                    10001,
                    Value::Null,
                    &e.to_string(),
                    &Value::Null,
                );
            }
        };
        let ok = |data: Value| onebot::encode_response("ok", 0, data, "", &action.echo);
        let failed = |retcode: i64, message: &str| {
            onebot::encode_response("failed", retcode, Value::Null, message, &action.echo)
        };
        match action.action.as_str() {
            "send_message" => {
                let params = match action.send_message_params() {
                    Ok(p) => p,
                    Err(e) => return failed(10003, &e.to_string()),
                };
                let self_id = match &action.self_ {
                    Some((_, self_id)) => self_id.clone(),
                    None => match self.config.shops.as_slice() {
                        [only] => only.clone(),
                        _ => return failed(10101, "send_message without self and several shops"),
                    },
                };
                if !self.config.shops.contains(&self_id) {
                    return failed(10102, &format!("unknown shop {self_id:?}"));
                }
                let injected = self.retcodes.lock().ok().and_then(|mut q| q.pop_front());
                if let Some(retcode) = injected.filter(|r| *r != 0) {
                    return failed(retcode, "injected failure");
                }
                let message_id = format!("bot-{}", self.next());
                let sent = BotMessage {
                    self_id: self_id.clone(),
                    user_id: params.user_id.clone(),
                    text: params.text.clone(),
                    message_id: message_id.clone(),
                };
                if self.bot_messages.try_send(sent).is_err() {
                    debug!("bot message log full; not recorded for next_bot_message");
                }
                self.show_on_pages("bot", &self_id, &params.user_id, &params.text, &message_id);
                ok(json!({"message_id": message_id, "time": onebot::now_seconds()}))
            }
            "get_status" => {
                let bots: Vec<Value> = self
                    .bots()
                    .iter()
                    .map(|b| json!({"self": {"platform": b.platform, "user_id": b.self_id}, "online": true}))
                    .collect();
                ok(json!({"good": true, "bots": bots}))
            }
            "get_version" => ok(json!({
                "impl": "xiaoer-dev", "version": env!("CARGO_PKG_VERSION"), "onebot_version": "12",
            })),
            "get_supported_actions" => ok(json!([
                "send_message",
                "get_status",
                "get_version",
                "get_supported_actions"
            ])),
            other => failed(10002, &format!("unsupported action {other:?}")),
        }
    }
}

fn token_ok(inner: &Inner, headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(token) = &inner.config.token else {
        return true;
    };
    let from_header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let from_query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
    });
    from_header.or(from_query) == Some(token.as_str())
}

async fn root(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => upgrade_bot(inner, &parts.headers, &parts.uri, ws),
        Err(_) => Html(PAGE).into_response(),
    }
}

async fn bot_ws(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade_bot(inner, &headers, &uri, ws)
}

fn upgrade_bot(
    inner: Arc<Inner>,
    headers: &HeaderMap,
    uri: &Uri,
    ws: WebSocketUpgrade,
) -> Response {
    if !token_ok(&inner, headers, uri) {
        inner.rejected.send_modify(|n| *n += 1);
        warn!("dev gateway refused a bot: missing or wrong token");
        return (StatusCode::UNAUTHORIZED, "missing or wrong access token").into_response();
    }
    ws.max_message_size(1 << 20)
        .max_frame_size(1 << 20)
        .on_upgrade(move |socket| bot_session(inner, socket))
}

/// Counts an open bot connection until dropped.
struct Connected<'a>(&'a watch::Sender<usize>);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

async fn bot_session(inner: Arc<Inner>, socket: WebSocket) {
    let mut frames = inner.to_bots.subscribe();
    let (mut tx, mut rx) = socket.split();
    let hello = [
        onebot::encode_connect(
            &format!("event-{}", inner.next()),
            "xiaoer-dev",
            env!("CARGO_PKG_VERSION"),
        ),
        onebot::encode_status_update(&format!("event-{}", inner.next()), true, &inner.bots()),
    ];
    for frame in hello {
        if tx.send(Message::Text(frame.into())).await.is_err() {
            return;
        }
    }
    inner.connected.send_modify(|n| *n += 1);
    let _connected = Connected(&inner.connected);
    info!("bot connected to the dev gateway");
    let period = inner
        .config
        .heartbeat_interval
        .max(Duration::from_millis(100));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let out = tokio::select! {
            _ = inner.cancel.cancelled() => {
                let close = CloseFrame { code: 1001, reason: "dev gateway shutting down".into() };
                let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Message::Close(Some(close)))).await;
                break;
            }
            frame = frames.recv() => match frame {
                Ok(frame) => frame,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!("bot connection lagged; {n} events dropped");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = heartbeat.tick() => onebot::encode_heartbeat(
                &format!("event-{}", inner.next()), period, true, &inner.bots()),
            message = rx.next() => match message {
                None => break,
                Some(Err(e)) => {
                    debug!("bot connection failed: {e}");
                    break;
                }
                Some(Ok(Message::Text(text))) => inner.handle_action(text.as_str()),
                Some(Ok(Message::Binary(_))) => onebot::encode_response(
                    "failed", 10001, Value::Null, "msgpack actions are not supported", &Value::Null),
                Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => continue,
            },
        };
        let sent =
            tokio::time::timeout(Duration::from_secs(10), tx.send(Message::Text(out.into()))).await;
        if !matches!(sent, Ok(Ok(()))) {
            debug!("writing to the bot failed; closing");
            break;
        }
    }
    info!("bot disconnected from the dev gateway");
}

async fn page_ws(State(inner): State<Arc<Inner>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(64 * 1024)
        .on_upgrade(move |socket| page_session(inner, socket))
}

async fn page_session(inner: Arc<Inner>, socket: WebSocket) {
    let mut shown = inner.to_pages.subscribe();
    let (mut tx, mut rx) = socket.split();
    let hello =
        json!({"kind": "hello", "shops": inner.config.shops, "platform": inner.config.platform});
    let history: Vec<String> = inner
        .history
        .lock()
        .map(|h| h.iter().cloned().collect())
        .unwrap_or_default();
    for frame in std::iter::once(hello.to_string()).chain(history) {
        if tx.send(Message::Text(frame.into())).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => break,
            item = shown.recv() => match item {
                Ok(item) => {
                    if tx.send(Message::Text(item.into())).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            message = rx.next() => match message {
                Some(Ok(Message::Text(text))) => page_says(&inner, text.as_str()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// `{"kind": "buyer" | "outgoing", "self_id", "user_id", "text"}` from the page; a buyer's
/// message may carry `"segments"` (a OneBot 12 segment array) instead of `text`.
fn page_says(inner: &Inner, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        warn!("page sent something that is not json");
        return;
    };
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let (kind, self_id, user_id, said) = (
        field("kind"),
        field("self_id"),
        field("user_id"),
        field("text"),
    );
    let segments = v
        .get("segments")
        .filter(|s| s.as_array().is_some_and(|s| !s.is_empty()));
    if user_id.is_empty()
        || (said.is_empty() && segments.is_none())
        || !inner.config.shops.iter().any(|s| s == self_id)
    {
        warn!("page message without buyer, content or a known shop");
        return;
    }
    match (kind, segments) {
        ("buyer", Some(segments)) => {
            let id = format!("buyer-{}", inner.next());
            inner.relay_segments(self_id, user_id, segments.clone(), &id, false);
        }
        ("buyer", None) => {
            inner.buyer_says(self_id, user_id, said);
        }
        ("outgoing", _) if !said.is_empty() => {
            let id = format!("shop-{}", inner.next());
            inner.relay(self_id, user_id, said, &id, true);
        }
        _ => warn!("page message of unknown kind {kind:?}"),
    }
}

/// The buyer chat page: one file of HTML, CSS and JS, no assets to serve.
const PAGE: &str = include_str!("buyer.html");
