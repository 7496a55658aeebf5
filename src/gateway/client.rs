//! The forward-websocket client connection to a OneBot 12 gateway.
//!
//! [`spawn`] starts one task per gateway. It connects with `Authorization: Bearer <token>`,
//! caps message and frame sizes, sends its own pings and gives up on a connection that has sent
//! nothing (not even a pong) for `pong_timeout`, and reconnects with exponential backoff and full
//! jitter. Decoded buyer messages and status updates go to an `mpsc` channel as
//! [`GatewayEvent`]s. Replies go out through [`GatewayHandle::send_message`], which matches the
//! response by `echo` and retries retryable platform errors (retcode 34xxx) — never a message the
//! gateway accepted.
//!
//! The connection loop ([`drive`]) is generic over `Sink`/`Stream` so it is tested with channels
//! and paused time; the supervisor ([`supervise`]) is generic over the connect function.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http::HeaderValue;
use http::header::AUTHORIZATION;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::onebot::{self, ActionResponse, Incoming, PrivateMessage, StatusUpdate};

/// Settings for one gateway connection.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `ws://host:port/path` of the gateway's forward websocket.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// A name for logs and events.
    pub name: String,
    /// How often we ping the gateway.
    pub ping_interval: Duration,
    /// A connection with no frame at all (pong, heartbeat, event) for this long is dead.
    pub pong_timeout: Duration,
    /// How long `send_message` waits for the response (and for room in the outgoing queue);
    /// also the limit for one websocket write.
    pub send_timeout: Duration,
    /// How often a `send_message` failing with retcode 34xxx is retried.
    pub max_retries: u32,
    /// First pause before retrying a 34xxx failure; doubles each retry.
    pub retry_backoff: Duration,
    /// Reconnect backoff: the sleep is random(0, min(backoff_max, backoff_base * 2^attempt)).
    pub backoff_base: Duration,
    /// The cap of the reconnect backoff.
    pub backoff_max: Duration,
    /// A connection that stayed up this long resets the backoff.
    pub healthy_after: Duration,
    /// Limit for the TCP connect plus websocket handshake.
    pub connect_timeout: Duration,
    /// How long `send_message` waits for a (re)connection before giving up.
    pub reconnect_wait: Duration,
    /// Text frames larger than this are logged and skipped; the connection stays.
    pub max_message_size: usize,
    /// Messages or frames larger than this fail the connection (the websocket layer's cap,
    /// which protects memory). At least `max_message_size`.
    pub hard_message_limit: usize,
    /// Capacity of the outgoing action queue.
    pub outgoing_queue: usize,
}

impl GatewayConfig {
    /// Defaults for a gateway at `url`: ping every 5 s, dead after 15 s of silence (so a dead
    /// gateway is noticed within 20 s), 10 s send timeout, 3 retries, backoff 500 ms … 30 s,
    /// 64 KiB messages.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            name: "gateway".to_owned(),
            ping_interval: Duration::from_secs(5),
            pong_timeout: Duration::from_secs(15),
            send_timeout: Duration::from_secs(10),
            max_retries: 3,
            retry_backoff: Duration::from_millis(200),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            reconnect_wait: Duration::from_secs(5),
            max_message_size: 64 * 1024,
            hard_message_limit: 1024 * 1024,
            outgoing_queue: 256,
        }
    }

    /// Sets the bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the name used in logs and events.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// What the connection tells the rest of xiaoer.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayEvent {
    /// The websocket handshake succeeded.
    Connected { gateway: String },
    /// The connection ended; xiaoer reconnects unless it is shutting down.
    Disconnected { gateway: String, reason: String },
    /// A private message (from a buyer, or `outgoing` from the shop).
    Message(PrivateMessage),
    /// Which shop accounts the gateway serves and whether they are online.
    Status {
        gateway: String,
        status: StatusUpdate,
    },
}

/// Why a connection attempt or a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The url cannot be used for a websocket request.
    #[error("invalid gateway url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The token cannot be put in a header.
    #[error("the gateway token is not a valid header value")]
    InvalidToken,
    /// The gateway answered the handshake with 401 or 403.
    #[error("gateway rejected the token (http {status})")]
    Rejected { status: u16 },
    /// The handshake failed otherwise (connection refused, other http status, ...).
    #[error("connecting to {url} failed: {reason}")]
    Connect { url: String, reason: String },
    /// TCP connect plus handshake took too long.
    #[error("connecting to {url} timed out after {after:?}")]
    ConnectTimeout { url: String, after: Duration },
    /// Nothing arrived for the pong deadline.
    #[error("no frame from the gateway for {0:?}: pong missing, connection presumed dead")]
    Dead(Duration),
    /// The gateway closed the connection.
    #[error("gateway closed the connection{}", .reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed { reason: Option<String> },
    /// Reading or writing the websocket failed.
    #[error("websocket {op} failed: {reason}")]
    Io { op: &'static str, reason: String },
    /// A websocket write did not finish in time (the gateway stopped reading).
    #[error("writing to the gateway timed out after {0:?}")]
    WriteTimeout(Duration),
}

/// Why `send_message` did not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No connection to the gateway, and none came within the wait.
    #[error("not connected to the gateway (waited {waited:?})")]
    NotConnected { waited: Duration },
    /// The outgoing queue stayed full; nothing was sent.
    #[error("outgoing queue full for {waited:?}; message not sent")]
    QueueFull { waited: Duration },
    /// No response in time. The message may have been delivered: do not resend blindly.
    #[error(
        "no response to send_message (echo {echo}) within {after:?}; it may have been delivered"
    )]
    Timeout { echo: String, after: Duration },
    /// The connection died while the message was in flight; it may have been delivered.
    #[error("connection lost while sending; the message may have been delivered")]
    ConnectionLost,
    /// Retcode 1xxxx: the request was wrong (our mistake); not retried.
    #[error("gateway rejected send_message: retcode {retcode}: {message}")]
    Rejected { retcode: i64, message: String },
    /// Any other failure, including 34xxx after the last retry.
    #[error("send_message failed after {attempts} attempt(s): retcode {retcode}: {message}")]
    Failed {
        retcode: i64,
        message: String,
        attempts: u32,
    },
    /// The client was shut down.
    #[error("the gateway client is shut down")]
    Shutdown,
}

/// A message the gateway accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// `data.message_id` of the response (empty if the gateway did not give one).
    pub message_id: String,
}

/// An action waiting to be written, with the place its response goes.
struct Outgoing {
    echo: String,
    frame: String,
    reply: oneshot::Sender<ActionResponse>,
}

#[derive(Clone)]
enum ConnState {
    Down,
    Up(mpsc::Sender<Outgoing>),
    Stopped,
}

struct Shared {
    config: GatewayConfig,
    state: watch::Sender<ConnState>,
    echo_prefix: String,
    echo_seq: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A handle on a running gateway client. Cheap to clone.
#[derive(Clone)]
pub struct GatewayHandle {
    shared: Arc<Shared>,
}

/// Starts the client for one gateway. It runs until `cancel` is cancelled, then closes the
/// socket cleanly.
pub fn spawn(
    config: GatewayConfig,
    events: mpsc::Sender<GatewayEvent>,
    cancel: CancellationToken,
) -> GatewayHandle {
    let connect_config = config.clone();
    spawn_with(
        config,
        move || {
            let config = connect_config.clone();
            async move { connect_websocket(&config).await }
        },
        events,
        cancel,
    )
}

fn spawn_with<C, Fut, Si, St, E1, E2>(
    config: GatewayConfig,
    connect: C,
    events: mpsc::Sender<GatewayEvent>,
    cancel: CancellationToken,
) -> GatewayHandle
where
    C: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(Si, St), GatewayError>> + Send + 'static,
    Si: Sink<Message, Error = E1> + Unpin + Send + 'static,
    St: Stream<Item = Result<Message, E2>> + Unpin + Send + 'static,
    E1: Display + Send + 'static,
    E2: Display + Send + 'static,
{
    let (state, _) = watch::channel(ConnState::Down);
    let shared = Arc::new(Shared {
        config,
        state,
        echo_prefix: format!("xiaoer-{:08x}", rand::random::<u32>()),
        echo_seq: AtomicU64::new(0),
        task: Mutex::new(None),
    });
    let task = tokio::spawn(supervise(shared.clone(), connect, events, cancel));
    if let Ok(mut slot) = shared.task.try_lock() {
        *slot = Some(task);
    }
    GatewayHandle { shared }
}

impl GatewayHandle {
    /// The gateway's name from the config.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        matches!(*self.shared.state.borrow(), ConnState::Up(_))
    }

    /// Waits up to `wait` for a connection; true when connected.
    pub async fn wait_connected(&self, wait: Duration) -> bool {
        self.connection(wait).await.is_ok()
    }

    /// Waits for the client task to end (after its cancellation token was cancelled).
    pub async fn join(&self) {
        let task = self.shared.task.lock().await.take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            warn!(gateway = %self.name(), "gateway client task failed: {e}");
        }
    }

    async fn connection(&self, wait: Duration) -> Result<mpsc::Sender<Outgoing>, SendError> {
        let mut rx = self.shared.state.subscribe();
        let found = timeout(wait, rx.wait_for(|s| !matches!(s, ConnState::Down))).await;
        match found {
            Ok(Ok(state)) => match &*state {
                ConnState::Up(tx) => Ok(tx.clone()),
                _ => Err(SendError::Shutdown),
            },
            Ok(Err(_)) => Err(SendError::Shutdown),
            Err(_) => Err(SendError::NotConnected { waited: wait }),
        }
    }

    fn next_echo(&self) -> String {
        let n = self.shared.echo_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.shared.echo_prefix)
    }

    /// Sends a private text message to buyer `user_id` as shop account (`platform`, `self_id`).
    ///
    /// Waits up to `send_timeout` for the gateway's response. Retcode 34xxx is retried up to
    /// `max_retries` times with a short backoff; a message the gateway accepted is never sent
    /// again.
    ///
    /// # Errors
    ///
    /// See [`SendError`]: `NotConnected` when no connection came within `reconnect_wait`,
    /// `Timeout` and `ConnectionLost` when the message may or may not have been delivered,
    /// `Rejected` for retcode 1xxxx, `Failed` for other failures.
    pub async fn send_message(
        &self,
        platform: &str,
        self_id: &str,
        user_id: &str,
        text: &str,
    ) -> Result<SentMessage, SendError> {
        let config = &self.shared.config;
        let mut retries = 0u32;
        let mut lost_before_write = 0u32;
        loop {
            let conn = self.connection(config.reconnect_wait).await?;
            let echo = self.next_echo();
            let (reply, response) = oneshot::channel();
            let out = Outgoing {
                frame: onebot::encode_send_message(platform, self_id, user_id, text, &echo),
                echo: echo.clone(),
                reply,
            };
            match timeout(config.send_timeout, conn.send(out)).await {
                Err(_) => {
                    return Err(SendError::QueueFull {
                        waited: config.send_timeout,
                    });
                }
                Ok(Err(_)) => {
                    // The connection ended before it took the message: nothing was written, so
                    // waiting for the next connection is safe.
                    lost_before_write += 1;
                    if lost_before_write > 3 {
                        return Err(SendError::ConnectionLost);
                    }
                    continue;
                }
                Ok(Ok(())) => {}
            }
            let resp = match timeout(config.send_timeout, response).await {
                Err(_) => {
                    return Err(SendError::Timeout {
                        echo,
                        after: config.send_timeout,
                    });
                }
                Ok(Err(_)) => return Err(SendError::ConnectionLost),
                Ok(Ok(resp)) => resp,
            };
            if resp.is_ok() {
                if resp.retcode != 0 {
                    warn!(gateway = %config.name, retcode = resp.retcode, "send_message ok with a non-zero retcode; taking it as sent");
                }
                return Ok(SentMessage {
                    message_id: message_id_of(&resp.data).unwrap_or_else(|| {
                        warn!(gateway = %config.name, %echo, "send_message response without data.message_id");
                        String::new()
                    }),
                });
            }
            if resp.is_retryable() && retries < config.max_retries {
                let pause = config.retry_backoff.saturating_mul(1 << retries.min(16));
                retries += 1;
                warn!(gateway = %config.name, retcode = resp.retcode, message = %resp.message, "send_message failed with a platform error; retry {retries} in {pause:?}");
                sleep(pause).await;
                continue;
            }
            if resp.is_request_error() {
                return Err(SendError::Rejected {
                    retcode: resp.retcode,
                    message: resp.message,
                });
            }
            return Err(SendError::Failed {
                retcode: resp.retcode,
                message: resp.message,
                attempts: retries + 1,
            });
        }
    }
}

fn message_id_of(data: &Value) -> Option<String> {
    match data.get("message_id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The reconnect delay before attempt `attempt + 1`: full jitter,
/// random(0, min(max, base * 2^attempt)).
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(20)).min(max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::random_range(0..=nanos))
}

/// Connects once and closes again: a start-up check that the url and token work.
///
/// # Errors
///
/// The [`GatewayError`] of the attempt, e.g. [`GatewayError::Rejected`] for a bad token.
pub async fn check_connect(config: &GatewayConfig) -> Result<(), GatewayError> {
    let attempt = timeout(config.connect_timeout, connect_websocket(config)).await;
    let (mut sink, _stream) = attempt.map_err(|_| GatewayError::ConnectTimeout {
        url: config.url.clone(),
        after: config.connect_timeout,
    })??;
    let _ = timeout(Duration::from_secs(1), sink.close()).await;
    Ok(())
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_websocket(
    config: &GatewayConfig,
) -> Result<
    (
        futures_util::stream::SplitSink<WsStream, Message>,
        futures_util::stream::SplitStream<WsStream>,
    ),
    GatewayError,
> {
    let mut request =
        config
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| GatewayError::InvalidUrl {
                url: config.url.clone(),
                reason: e.to_string(),
            })?;
    if let Some(token) = &config.token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| GatewayError::InvalidToken)?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let limit = config.hard_message_limit.max(config.max_message_size);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .max_write_buffer_size(4 * 1024 * 1024);
    match tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true).await {
        Ok((ws, _response)) => Ok(ws.split()),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            if status == 401 || status == 403 {
                Err(GatewayError::Rejected { status })
            } else {
                Err(GatewayError::Connect {
                    url: config.url.clone(),
                    reason: format!("http {status} at handshake"),
                })
            }
        }
        Err(e) => Err(GatewayError::Connect {
            url: config.url.clone(),
            reason: e.to_string(),
        }),
    }
}

/// Connects, drives the connection, reconnects with backoff; until cancelled.
async fn supervise<C, Fut, Si, St, E1, E2>(
    shared: Arc<Shared>,
    mut connect: C,
    events: mpsc::Sender<GatewayEvent>,
    cancel: CancellationToken,
) where
    C: FnMut() -> Fut,
    Fut: Future<Output = Result<(Si, St), GatewayError>>,
    Si: Sink<Message, Error = E1> + Unpin,
    St: Stream<Item = Result<Message, E2>> + Unpin,
    E1: Display,
    E2: Display,
{
    let config = &shared.config;
    let name = config.name.clone();
    let mut attempt = 0u32;
    loop {
        let connected = tokio::select! {
            r = timeout(config.connect_timeout, connect()) => r,
            _ = cancel.cancelled() => break,
        };
        match connected {
            Ok(Ok((sink, stream))) => {
                let (tx, mut rx) = mpsc::channel(config.outgoing_queue.max(1));
                shared.state.send_replace(ConnState::Up(tx));
                info!(gateway = %name, url = %config.url, "connected to the gateway");
                emit(
                    &events,
                    GatewayEvent::Connected {
                        gateway: name.clone(),
                    },
                    &cancel,
                )
                .await;
                let started = Instant::now();
                let ended = drive(sink, stream, config, &events, &mut rx, &cancel).await;
                shared.state.send_replace(ConnState::Down);
                // Actions still queued are dropped with their reply senders: ConnectionLost.
                drop(rx);
                let reason = match &ended {
                    Ok(()) => "shutting down".to_owned(),
                    Err(e) => e.to_string(),
                };
                if cancel.is_cancelled() {
                    info!(gateway = %name, "disconnected from the gateway: {reason}");
                } else {
                    warn!(gateway = %name, "disconnected from the gateway: {reason}");
                }
                emit(
                    &events,
                    GatewayEvent::Disconnected {
                        gateway: name.clone(),
                        reason,
                    },
                    &cancel,
                )
                .await;
                if cancel.is_cancelled() {
                    break;
                }
                if started.elapsed() >= config.healthy_after {
                    attempt = 0;
                }
            }
            Ok(Err(GatewayError::Rejected { status })) => {
                warn!(gateway = %name, url = %config.url, "gateway rejected the token (http {status}); retrying");
            }
            Ok(Err(e)) => warn!(gateway = %name, "{e}"),
            Err(_) => {
                let e = GatewayError::ConnectTimeout {
                    url: config.url.clone(),
                    after: config.connect_timeout,
                };
                warn!(gateway = %name, "{e}");
            }
        }
        let delay = backoff_delay(attempt, config.backoff_base, config.backoff_max);
        attempt = attempt.saturating_add(1);
        debug!(gateway = %name, "reconnecting in {delay:?}");
        tokio::select! {
            _ = sleep(delay) => {}
            _ = cancel.cancelled() => break,
        }
    }
    shared.state.send_replace(ConnState::Stopped);
}

/// Hands an event to the application; while shutting down, only if there is room.
async fn emit(
    events: &mpsc::Sender<GatewayEvent>,
    event: GatewayEvent,
    cancel: &CancellationToken,
) {
    if cancel.is_cancelled() {
        let _ = events.try_send(event);
        return;
    }
    tokio::select! {
        _ = events.send(event) => {}
        _ = cancel.cancelled() => {}
    }
}

/// Runs one connection until it fails or `cancel` fires. `Ok(())` means a clean shutdown.
async fn drive<Si, St, E1, E2>(
    mut sink: Si,
    mut stream: St,
    config: &GatewayConfig,
    events: &mpsc::Sender<GatewayEvent>,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    cancel: &CancellationToken,
) -> Result<(), GatewayError>
where
    Si: Sink<Message, Error = E1> + Unpin,
    St: Stream<Item = Result<Message, E2>> + Unpin,
    E1: Display,
    E2: Display,
{
    let name = config.name.as_str();
    let mut pending: HashMap<String, oneshot::Sender<ActionResponse>> = HashMap::new();
    let mut last_frame = Instant::now();
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut close_reason: Option<String> = None;

    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                let close = Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "xiaoer is shutting down".into(),
                }));
                let _ = timeout(Duration::from_secs(1), async {
                    let _ = sink.send(close).await;
                    let _ = sink.close().await;
                }).await;
                return Ok(());
            }
            frame = stream.next() => {
                let message = match frame {
                    None => return Err(GatewayError::Closed { reason: close_reason }),
                    Some(Err(e)) => return Err(GatewayError::Io { op: "read", reason: e.to_string() }),
                    Some(Ok(message)) => message,
                };
                last_frame = Instant::now();
                match message {
                    Message::Text(text) => {
                        if text.len() > config.max_message_size {
                            warn!(gateway = %name, size = text.len(), limit = config.max_message_size, "skipping oversized frame");
                            continue;
                        }
                        match onebot::decode(text.as_str()) {
                            Ok(incoming) => {
                                if !handle_incoming(incoming, name, events, &mut pending, cancel).await {
                                    continue;
                                }
                            }
                            Err(e) => warn!(gateway = %name, "skipping undecodable frame: {e}"),
                        }
                    }
                    Message::Binary(data) => {
                        warn!(gateway = %name, size = data.len(), "skipping binary frame (msgpack is not supported)");
                    }
                    Message::Close(frame) => {
                        close_reason = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason));
                    }
                    // Pings are answered by the websocket layer; pongs only prove liveness.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            out = outgoing.recv() => {
                let Some(out) = out else { continue };
                if out.reply.is_closed() {
                    // The caller gave up (timeout) before we got to it: do not send.
                    continue;
                }
                if pending.len() >= 1024 {
                    pending.retain(|_, reply| !reply.is_closed());
                }
                pending.insert(out.echo, out.reply);
                write(&mut sink, Message::Text(out.frame.into()), config.send_timeout).await?;
            }
            _ = ping.tick() => {
                write(&mut sink, Message::Ping(Default::default()), config.send_timeout).await?;
            }
            _ = sleep_until(last_frame + config.pong_timeout) => {
                return Err(GatewayError::Dead(config.pong_timeout));
            }
        }
    }
}

async fn write<Si, E>(sink: &mut Si, message: Message, limit: Duration) -> Result<(), GatewayError>
where
    Si: Sink<Message, Error = E> + Unpin,
    E: Display,
{
    match timeout(limit, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(GatewayError::Io {
            op: "write",
            reason: e.to_string(),
        }),
        Err(_) => Err(GatewayError::WriteTimeout(limit)),
    }
}

/// Handles one decoded frame. Returns false when the frame was skipped.
async fn handle_incoming(
    incoming: Incoming,
    name: &str,
    events: &mpsc::Sender<GatewayEvent>,
    pending: &mut HashMap<String, oneshot::Sender<ActionResponse>>,
    cancel: &CancellationToken,
) -> bool {
    let event = match incoming {
        Incoming::Connect(info) => {
            info!(gateway = %name, implementation = %info.implementation, version = %info.version, "gateway said meta.connect");
            return true;
        }
        Incoming::Heartbeat(hb) => {
            debug!(gateway = %name, interval = ?hb.interval, "heartbeat");
            return true;
        }
        Incoming::Response(resp) => {
            let reply = resp.echo.as_ref().and_then(|echo| pending.remove(echo));
            match reply {
                Some(reply) => {
                    // The caller may have timed out meanwhile; nothing to do then.
                    let _ = reply.send(resp);
                }
                None => {
                    debug!(gateway = %name, echo = ?resp.echo, "response to no pending action")
                }
            }
            return true;
        }
        Incoming::Other(other) => {
            warn!(gateway = %name, kind = %other.kind, "skipping unhandled event");
            return false;
        }
        Incoming::StatusUpdate(status) => GatewayEvent::Status {
            gateway: name.to_owned(),
            status,
        },
        Incoming::Message(message) => GatewayEvent::Message(message),
    };
    tokio::select! {
        r = events.send(event) => {
            if r.is_err() {
                debug!(gateway = %name, "event receiver is gone; dropping event");
            }
        }
        _ = cancel.cancelled() => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex as StdMutex;
    use tokio_util::sync::PollSender;

    type TestSink = futures_util::sink::SinkMapErr<
        PollSender<Message>,
        fn(tokio_util::sync::PollSendError<Message>) -> String,
    >;
    type TestStream = futures_util::stream::BoxStream<'static, Result<Message, String>>;

    /// The far end of a channel "socket": what the client wrote, and a way to feed it frames.
    struct Far {
        written: mpsc::Receiver<Message>,
        feed: mpsc::Sender<Result<Message, String>>,
    }

    fn socket() -> ((TestSink, TestStream), Far) {
        let (wtx, wrx) = mpsc::channel(64);
        let (ftx, frx) = mpsc::channel(64);
        let sink: TestSink = PollSender::new(wtx).sink_map_err(|e| e.to_string());
        let stream: TestStream =
            futures_util::stream::unfold(
                frx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            )
            .boxed();
        (
            (sink, stream),
            Far {
                written: wrx,
                feed: ftx,
            },
        )
    }

    fn test_config() -> GatewayConfig {
        GatewayConfig::new("ws://test.invalid/").with_name("test")
    }

    #[tokio::test(start_paused = true)]
    async fn silent_gateway_is_dead_within_twenty_seconds() {
        let ((sink, stream), mut far) = socket();
        let (events, _rx) = mpsc::channel(8);
        let (_tx, mut out) = mpsc::channel(8);
        let start = Instant::now();
        let ended = drive(
            sink,
            stream,
            &test_config(),
            &events,
            &mut out,
            &CancellationToken::new(),
        )
        .await;
        assert!(matches!(ended, Err(GatewayError::Dead(_))), "{ended:?}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(15) && took <= Duration::from_secs(20),
            "{took:?}"
        );
        let mut pings = 0;
        while let Ok(m) = far.written.try_recv() {
            assert!(matches!(m, Message::Ping(_)));
            pings += 1;
        }
        assert_eq!(pings, 3, "pings at 5, 10 and 15 s");
    }

    #[tokio::test(start_paused = true)]
    async fn pongs_keep_the_connection_alive() {
        let ((sink, stream), mut far) = socket();
        let (events, _rx) = mpsc::channel(8);
        let (_tx, mut out) = mpsc::channel(8);
        let answerer = tokio::spawn(async move {
            // Answer 12 pings (60 s), then go silent.
            for _ in 0..12 {
                let Some(Message::Ping(p)) = far.written.recv().await else {
                    panic!("expected a ping")
                };
                far.feed.send(Ok(Message::Pong(p))).await.unwrap();
            }
            far
        });
        let start = Instant::now();
        let ended = drive(
            sink,
            stream,
            &test_config(),
            &events,
            &mut out,
            &CancellationToken::new(),
        )
        .await;
        assert!(matches!(ended, Err(GatewayError::Dead(_))), "{ended:?}");
        let took = start.elapsed();
        // Last pong at 60 s; dead 15 s later.
        assert!(
            took >= Duration::from_secs(75) && took <= Duration::from_secs(80),
            "{took:?}"
        );
        drop(answerer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn bad_frames_are_skipped_and_messages_delivered() {
        let ((sink, stream), far) = socket();
        let (events, mut rx) = mpsc::channel(8);
        let (_tx, mut out) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let config = GatewayConfig {
            max_message_size: 200,
            ..test_config()
        };
        let big = format!("{{\"type\":\"meta\",\"pad\":\"{}\"}}", "x".repeat(300));
        for frame in [
            "garbage".to_owned(),
            big,
            r#"{"type":"notice","detail_type":"x"}"#.to_owned(),
            r#"{"type":"message","detail_type":"private","message_id":"m","user_id":"u","self":{"platform":"p","user_id":"s"},"message":[{"type":"text","data":{"text":"hi"}}]}"#.to_owned(),
        ] {
            far.feed.send(Ok(Message::Text(frame.into()))).await.unwrap();
        }
        far.feed
            .send(Ok(Message::Binary(vec![1u8, 2].into())))
            .await
            .unwrap();
        let driver = tokio::spawn({
            let cancel = cancel.clone();
            async move { drive(sink, stream, &config, &events, &mut out, &cancel).await }
        });
        let got = rx.recv().await;
        let Some(GatewayEvent::Message(m)) = got else {
            panic!("expected the message, got {got:?}: {:?}", driver.await)
        };
        assert_eq!(m.text, "hi");
        cancel.cancel();
        assert!(driver.await.unwrap().is_ok());
        drop(far);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_closes_the_socket_cleanly() {
        let ((sink, stream), mut far) = socket();
        let (events, _rx) = mpsc::channel(8);
        let (_tx, mut out) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let ended = drive(sink, stream, &test_config(), &events, &mut out, &cancel).await;
        assert!(ended.is_ok());
        assert!(matches!(
            far.written.recv().await,
            Some(Message::Close(Some(_)))
        ));
    }

    #[test]
    fn backoff_is_full_jitter_under_the_cap() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        for attempt in 0..40 {
            let ceiling = base.saturating_mul(1 << attempt.min(20)).min(max);
            for _ in 0..50 {
                assert!(backoff_delay(attempt, base, max) <= ceiling);
            }
        }
        // Full jitter: some delays are well below the ceiling.
        let small = (0..200)
            .filter(|_| backoff_delay(6, base, max) < Duration::from_secs(15))
            .count();
        assert!(small > 20, "{small}");
    }

    /// A connector handing out prepared sockets (or errors), recording when it was called.
    fn connector(
        plan: Vec<Result<(TestSink, TestStream), GatewayError>>,
        calls: Arc<StdMutex<Vec<Instant>>>,
    ) -> impl FnMut() -> futures_util::future::Ready<Result<(TestSink, TestStream), GatewayError>>
    + Send
    + 'static {
        let plan = Arc::new(StdMutex::new(VecDeque::from(plan)));
        move || {
            calls.lock().unwrap().push(Instant::now());
            let next = plan.lock().unwrap().pop_front();
            futures_util::future::ready(next.unwrap_or(Err(GatewayError::Connect {
                url: "test".into(),
                reason: "refused".into(),
            })))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reconnects_with_growing_jittered_backoff() {
        let calls = Arc::new(StdMutex::new(Vec::new()));
        let (events, _rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let handle = spawn_with(
            test_config(),
            connector(
                (0..8)
                    .map(|_| Err(GatewayError::Rejected { status: 401 }))
                    .collect(),
                calls.clone(),
            ),
            events,
            cancel.clone(),
        );
        sleep(Duration::from_secs(120)).await;
        cancel.cancel();
        handle.join().await;
        let calls = calls.lock().unwrap().clone();
        assert!(calls.len() >= 8, "{} attempts", calls.len());
        for (i, pair) in calls.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let ceiling = Duration::from_millis(500)
                .saturating_mul(1 << i.min(20))
                .min(Duration::from_secs(30));
            assert!(gap <= ceiling, "gap {i} {gap:?} > {ceiling:?}");
        }
        assert!(!handle.is_connected());
    }

    /// A fake gateway on the far end answering send_message actions with the given retcodes.
    fn answer(mut far: Far, retcodes: Vec<i64>) -> tokio::task::JoinHandle<(Far, usize)> {
        tokio::spawn(async move {
            let mut actions = 0;
            let mut codes = retcodes.into_iter();
            while let Some(m) = far.written.recv().await {
                let Message::Text(t) = m else { continue };
                let action = onebot::decode_action(t.as_str()).unwrap();
                actions += 1;
                let Some(code) = codes.next() else { break };
                let frame = if code == 0 {
                    onebot::encode_response(
                        "ok",
                        0,
                        serde_json::json!({"message_id": format!("sent-{actions}")}),
                        "",
                        &action.echo,
                    )
                } else if code < 0 {
                    continue; // never answer
                } else {
                    onebot::encode_response("failed", code, Value::Null, "nope", &action.echo)
                };
                far.feed
                    .send(Ok(Message::Text(frame.into())))
                    .await
                    .unwrap();
            }
            (far, actions)
        })
    }

    async fn connected_client(
        retcodes: Vec<i64>,
    ) -> (
        GatewayHandle,
        CancellationToken,
        tokio::task::JoinHandle<(Far, usize)>,
    ) {
        let (sock, far) = socket();
        let (events, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let config = GatewayConfig {
            // Keep the channel socket alive without pongs for the test's length.
            pong_timeout: Duration::from_secs(3600),
            ping_interval: Duration::from_secs(3600),
            ..test_config()
        };
        let handle = spawn_with(
            config,
            connector(vec![Ok(sock)], Arc::new(StdMutex::new(Vec::new()))),
            events,
            cancel.clone(),
        );
        assert!(matches!(
            rx.recv().await,
            Some(GatewayEvent::Connected { .. })
        ));
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        (handle, cancel, answer(far, retcodes))
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_then_ok() {
        let (handle, cancel, far) = connected_client(vec![34001, 34002, 0]).await;
        let sent = handle.send_message("dev", "shop1", "b", "hi").await;
        assert_eq!(
            sent,
            Ok(SentMessage {
                message_id: "sent-3".into()
            })
        );
        cancel.cancel();
        handle.join().await;
        let (_, actions) = far.await.unwrap();
        assert_eq!(actions, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded() {
        let (handle, cancel, _far) = connected_client(vec![34001; 10]).await;
        let sent = handle.send_message("dev", "shop1", "b", "hi").await;
        assert!(
            matches!(
                sent,
                Err(SendError::Failed {
                    retcode: 34001,
                    attempts: 4,
                    ..
                })
            ),
            "{sent:?}"
        );
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn request_errors_are_not_retried() {
        let (handle, cancel, far) = connected_client(vec![10003, 0]).await;
        let sent = handle.send_message("dev", "shop1", "b", "hi").await;
        assert!(
            matches!(sent, Err(SendError::Rejected { retcode: 10003, .. })),
            "{sent:?}"
        );
        cancel.cancel();
        handle.join().await;
        let (_, actions) = far.await.unwrap();
        assert_eq!(actions, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_is_not_resent() {
        let (handle, cancel, far) = connected_client(vec![-1, 0]).await;
        let start = Instant::now();
        let sent = handle.send_message("dev", "shop1", "b", "hi").await;
        assert!(matches!(sent, Err(SendError::Timeout { .. })), "{sent:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        cancel.cancel();
        handle.join().await;
        let (_, actions) = far.await.unwrap();
        assert_eq!(actions, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn pending_send_fails_when_the_connection_dies() {
        let (sock, mut far) = socket();
        let (events, _rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let handle = spawn_with(
            test_config(),
            connector(vec![Ok(sock)], Arc::new(StdMutex::new(Vec::new()))),
            events,
            cancel.clone(),
        );
        let killer = tokio::spawn(async move {
            // Wait for the action, then drop the connection without answering.
            while let Some(m) = far.written.recv().await {
                if matches!(m, Message::Text(_)) {
                    break;
                }
            }
            far.feed.send(Err("reset".into())).await.unwrap();
        });
        let sent = handle.send_message("dev", "shop1", "b", "hi").await;
        assert_eq!(sent, Err(SendError::ConnectionLost));
        killer.await.unwrap();
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn not_connected_after_a_bounded_wait() {
        let (events, _rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let handle = spawn_with(
            test_config(),
            connector(vec![], Arc::new(StdMutex::new(Vec::new()))),
            events,
            cancel.clone(),
        );
        let sent = handle.send_message("dev", "shop1", "b", "hi").await;
        assert_eq!(
            sent,
            Err(SendError::NotConnected {
                waited: Duration::from_secs(5)
            })
        );
        cancel.cancel();
        handle.join().await;
        assert_eq!(
            handle.send_message("dev", "shop1", "b", "hi").await,
            Err(SendError::Shutdown)
        );
    }
}
