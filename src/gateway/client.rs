//! The client side of a gateway connection: supervision, the connection loop, and sending.
//!
//! [`spawn`] starts one task per gateway: it gets connections from a [`Transport`] (the forward
//! websocket by default), runs each in the connection loop (`drive`), and reconnects with
//! exponential backoff and full jitter. The loop decodes frames with a [`Codec`] (OneBot 12 by
//! default), caps message sizes, sends its own pings and gives up on a connection that has sent
//! nothing (not even a pong or a heartbeat) for `pong_timeout`. Decoded buyer messages and
//! status updates go to an `mpsc` channel as [`GatewayEvent`]s. Replies go out through
//! [`GatewayHandle::send_message`], which matches the response by `echo` and retries retryable
//! platform errors — never a message the gateway accepted, and never one that may have been
//! delivered ([`SendError::may_have_been_delivered`]).
//!
//! Backoff grows only with failed connects: a connection that completed the handshake and
//! carried events (or was failed for invalid UTF-8, which the peer will likely repeat but
//! which says nothing about reachability) lets the next attempt come quickly. Errors retrying
//! cannot fix — an invalid url or token — stop the client with one error log.
//!
//! The loop is generic over `Sink`/`Stream`, so it is tested with channels and paused time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::codec::{ActionResponse, Codec, Incoming, PrivateMessage, ResponseClass, StatusUpdate};
use super::error::{GatewayError, SendError};
use super::log_limit::{LogLimiter, Verdict};
use super::onebot::OneBot12;
use super::transport::{ForwardWs, Transport};

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
    /// How often a `send_message` failing with a retryable platform error is retried.
    pub max_retries: u32,
    /// First pause before retrying a retryable failure; doubles each retry.
    pub retry_backoff: Duration,
    /// Reconnect backoff after failed connects: the sleep is
    /// random(0, min(backoff_max, backoff_base * 2^failures)).
    pub backoff_base: Duration,
    /// The cap of the reconnect backoff.
    pub backoff_max: Duration,
    /// A connection that stayed up this long resets the backoff even if it carried no events.
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
    /// Log lines the gateway can cause over and over (unhandled events, bad frames) are logged
    /// once per kind in this period, then counted.
    pub repeat_log_period: Duration,
}

impl GatewayConfig {
    /// Defaults for a gateway at `url`: ping every 5 s, dead after 15 s of silence (so a dead
    /// gateway is noticed within 20 s), 10 s send timeout, 3 retries, backoff 500 ms … 30 s,
    /// 64 KiB messages, repeated warnings once a minute.
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
            repeat_log_period: Duration::from_secs(60),
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

/// What the client has seen of its connections, for tests, metrics and health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// Connections made so far (1 while the first is up).
    pub connections: u64,
    /// Heartbeats received on the latest connection.
    pub heartbeats: u64,
    /// The interval the latest heartbeat announced.
    pub heartbeat_interval: Option<Duration>,
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
    reply: Reply,
}

/// How an action ended, as its sender learns it.
enum Outcome {
    Answered(ActionResponse),
    /// The connection ended first; `written` says whether the action had gone out.
    Lost {
        written: bool,
    },
}

/// The connection's end of an action's reply channel. Dropped unanswered — still queued, or
/// pending when the connection died — it tells the sender whether the action had been written.
struct Reply {
    tx: Option<oneshot::Sender<Outcome>>,
    written: bool,
}

impl Reply {
    fn new() -> (Reply, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        (
            Reply {
                tx: Some(tx),
                written: false,
            },
            rx,
        )
    }

    /// The sender gave up waiting.
    fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    fn answer(mut self, response: ActionResponse) {
        if let Some(tx) = self.tx.take() {
            // The sender may have timed out meanwhile; nothing to do then.
            let _ = tx.send(Outcome::Answered(response));
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Outcome::Lost {
                written: self.written,
            });
        }
    }
}

#[derive(Clone)]
enum ConnState {
    Down,
    Up(mpsc::Sender<Outgoing>),
    Stopped,
    /// Stopped on an error retrying cannot fix.
    Failed(String),
}

struct Shared {
    config: GatewayConfig,
    codec: Arc<dyn Codec>,
    state: watch::Sender<ConnState>,
    stats: watch::Sender<LinkStats>,
    echo_prefix: String,
    echo_seq: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Picks the reconnect sleep under a ceiling; full jitter in production, fixed in tests.
type Jitter = fn(Duration) -> Duration;

/// A handle on a running gateway client. Cheap to clone.
#[derive(Clone)]
pub struct GatewayHandle {
    shared: Arc<Shared>,
}

/// Starts the client for one gateway: OneBot 12 over the forward websocket to `config.url`.
/// It runs until `cancel` is cancelled, then closes the socket cleanly; or until an error
/// retrying cannot fix (see [`GatewayError::is_permanent`]), which it logs once.
pub fn spawn(
    config: GatewayConfig,
    events: mpsc::Sender<GatewayEvent>,
    cancel: CancellationToken,
) -> GatewayHandle {
    let transport = ForwardWs::new(&config);
    spawn_with(config, OneBot12, transport, events, cancel)
}

/// Starts the client for one gateway speaking `codec` over connections from `transport`.
/// Where and how to connect (`config.url`, `token`, `connect_timeout`) is the transport's
/// business; the rest of `config` governs supervision, the connection loop and sending.
pub fn spawn_with<C: Codec, T: Transport>(
    config: GatewayConfig,
    codec: C,
    transport: T,
    events: mpsc::Sender<GatewayEvent>,
    cancel: CancellationToken,
) -> GatewayHandle {
    start(
        config,
        Arc::new(codec),
        transport,
        full_jitter,
        events,
        cancel,
    )
}

fn start<T: Transport>(
    config: GatewayConfig,
    codec: Arc<dyn Codec>,
    transport: T,
    jitter: Jitter,
    events: mpsc::Sender<GatewayEvent>,
    cancel: CancellationToken,
) -> GatewayHandle {
    let (state, _) = watch::channel(ConnState::Down);
    let (stats, _) = watch::channel(LinkStats::default());
    let shared = Arc::new(Shared {
        config,
        codec,
        state,
        stats,
        echo_prefix: format!("xiaoer-{:08x}", rand::random::<u32>()),
        echo_seq: AtomicU64::new(0),
        task: Mutex::new(None),
    });
    let task = tokio::spawn(supervise(shared.clone(), transport, jitter, events, cancel));
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

    /// What the client has seen of its connections; changes as connections and heartbeats
    /// come.
    pub fn link_stats(&self) -> watch::Receiver<LinkStats> {
        self.shared.stats.subscribe()
    }

    /// Waits for the client task to end (after its cancellation token was cancelled, or on an
    /// error retrying cannot fix).
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
                ConnState::Failed(reason) => Err(SendError::Stopped {
                    reason: reason.clone(),
                }),
                ConnState::Down | ConnState::Stopped => Err(SendError::Shutdown),
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
    /// Waits up to `send_timeout` for the gateway's response. Retryable platform errors are
    /// retried up to `max_retries` times with a short backoff; a message the gateway accepted,
    /// or one that may have reached it, is never sent again. A message still queued when a
    /// connection drops goes out on the next one.
    ///
    /// # Errors
    ///
    /// See [`SendError`]; [`SendError::may_have_been_delivered`] tells "failed" from "unknown".
    pub async fn send_message(
        &self,
        platform: &str,
        self_id: &str,
        user_id: &str,
        text: &str,
    ) -> Result<SentMessage, SendError> {
        const MAX_LOST_BEFORE_WRITE: u32 = 3;
        let config = &self.shared.config;
        let codec = &self.shared.codec;
        let mut retries = 0u32;
        let mut lost_before_write = 0u32;
        loop {
            let conn = self.connection(config.reconnect_wait).await?;
            let echo = self.next_echo();
            let (reply, response) = Reply::new();
            let out = Outgoing {
                frame: codec.encode_send_message(platform, self_id, user_id, text, &echo),
                echo: echo.clone(),
                reply,
            };
            let lost_unwritten = match timeout(config.send_timeout, conn.send(out)).await {
                Err(_) => {
                    return Err(SendError::QueueFull {
                        waited: config.send_timeout,
                    });
                }
                // The connection ended before it took the message.
                Ok(Err(_)) => true,
                Ok(Ok(())) => match timeout(config.send_timeout, response).await {
                    Err(_) => {
                        return Err(SendError::Timeout {
                            echo,
                            after: config.send_timeout,
                        });
                    }
                    Ok(Ok(Outcome::Lost { written: false })) => true,
                    // A reply channel dropped without a word cannot say; assume the worst.
                    Ok(Ok(Outcome::Lost { written: true })) | Ok(Err(_)) => {
                        return Err(SendError::ConnectionLost);
                    }
                    Ok(Ok(Outcome::Answered(resp))) => {
                        match self.judge(resp, &echo, &mut retries).await {
                            Some(result) => return result,
                            None => continue,
                        }
                    }
                },
            };
            if lost_unwritten {
                // Nothing was written, so waiting for the next connection is safe.
                lost_before_write += 1;
                if lost_before_write > MAX_LOST_BEFORE_WRITE {
                    return Err(SendError::LostBeforeWrite {
                        attempts: lost_before_write,
                    });
                }
            }
        }
    }

    /// What a response means for `send_message`: a result, or `None` to retry (after the
    /// pause, already slept).
    async fn judge(
        &self,
        resp: ActionResponse,
        echo: &str,
        retries: &mut u32,
    ) -> Option<Result<SentMessage, SendError>> {
        let config = &self.shared.config;
        let class = self.shared.codec.classify(&resp);
        match class {
            ResponseClass::Ok => {
                if resp.retcode != 0 {
                    warn!(gateway = %config.name, retcode = resp.retcode, "send_message ok with a non-zero retcode; taking it as sent");
                }
                let message_id = resp.message_id().unwrap_or_else(|| {
                    warn!(gateway = %config.name, %echo, "send_message response without data.message_id");
                    String::new()
                });
                Some(Ok(SentMessage { message_id }))
            }
            ResponseClass::Retryable if *retries < config.max_retries => {
                let pause = config.retry_backoff.saturating_mul(1 << (*retries).min(16));
                *retries += 1;
                warn!(gateway = %config.name, retcode = resp.retcode, message = %resp.message, "send_message failed with a platform error; retry {retries} in {pause:?}");
                sleep(pause).await;
                None
            }
            ResponseClass::OurMistake => Some(Err(SendError::Rejected {
                retcode: resp.retcode,
                message: resp.message,
            })),
            ResponseClass::Retryable | ResponseClass::Failed => Some(Err(SendError::Failed {
                retcode: resp.retcode,
                message: resp.message,
                attempts: *retries + 1,
            })),
        }
    }
}

/// The ceiling of the reconnect sleep after `failures` failed connects in a row:
/// min(max, base * 2^failures).
fn backoff_ceiling(failures: u32, base: Duration, max: Duration) -> Duration {
    base.saturating_mul(1u32 << failures.min(20)).min(max)
}

/// Full jitter: random(0, ceiling).
fn full_jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::random_range(0..=nanos))
}

/// The reconnect delay before attempt `attempt + 1`: full jitter,
/// random(0, min(max, base * 2^attempt)).
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    full_jitter(backoff_ceiling(attempt, base, max))
}

/// Connects once over the forward websocket and closes again: a start-up check that the url
/// and token work.
///
/// # Errors
///
/// The [`GatewayError`] of the attempt, e.g. [`GatewayError::InvalidUrl`] for a url without
/// `ws://`, [`GatewayError::Rejected`] for a bad token.
pub async fn check_connect(config: &GatewayConfig) -> Result<(), GatewayError> {
    let (mut sink, _stream) = ForwardWs::new(config).connect().await?;
    let _ = timeout(Duration::from_secs(1), sink.close()).await;
    Ok(())
}

/// Gets connections from `transport`, drives each, reconnects with backoff; until cancelled
/// or an error retrying cannot fix.
async fn supervise<T: Transport>(
    shared: Arc<Shared>,
    mut transport: T,
    jitter: Jitter,
    events: mpsc::Sender<GatewayEvent>,
    cancel: CancellationToken,
) {
    let config = &shared.config;
    let name = config.name.clone();
    let mut limiter = LogLimiter::new(config.repeat_log_period);
    let mut failures = 0u32;
    loop {
        let connected = tokio::select! {
            r = transport.connect() => r,
            _ = cancel.cancelled() => break,
        };
        match connected {
            Ok((sink, stream)) => {
                let (tx, mut rx) = mpsc::channel(config.outgoing_queue.max(1));
                shared.stats.send_modify(|s| {
                    s.connections += 1;
                    s.heartbeats = 0;
                    s.heartbeat_interval = None;
                });
                shared.state.send_replace(ConnState::Up(tx));
                info!(gateway = %name, from = %transport.describe(), codec = shared.codec.name(), "connected to the gateway");
                emit(
                    &events,
                    GatewayEvent::Connected {
                        gateway: name.clone(),
                    },
                    &cancel,
                )
                .await;
                let started = Instant::now();
                let mut link = Link {
                    config,
                    codec: shared.codec.as_ref(),
                    events: &events,
                    stats: &shared.stats,
                    limiter: &mut limiter,
                    cancel: &cancel,
                };
                let ended = drive(sink, stream, &mut link, &mut rx).await;
                shared.state.send_replace(ConnState::Down);
                // Actions still queued are dropped unwritten: their senders try the next
                // connection.
                drop(rx);
                let reason = match &ended.result {
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
                if ended.exchanged || started.elapsed() >= config.healthy_after {
                    failures = 0;
                }
            }
            Err(e) if e.is_permanent() => {
                error!(gateway = %name, "{e}; not retrying: correct the gateway settings and restart xiaoer");
                shared.state.send_replace(ConnState::Failed(e.to_string()));
                return;
            }
            Err(GatewayError::Rejected { status }) => {
                warn!(gateway = %name, from = %transport.describe(), "gateway rejected the token (http {status}); retrying");
            }
            Err(e) => warn!(gateway = %name, "{e}"),
        }
        let delay = jitter(backoff_ceiling(
            failures,
            config.backoff_base,
            config.backoff_max,
        ));
        failures = failures.saturating_add(1);
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

/// What one connection works with.
struct Link<'a> {
    config: &'a GatewayConfig,
    codec: &'a dyn Codec,
    events: &'a mpsc::Sender<GatewayEvent>,
    stats: &'a watch::Sender<LinkStats>,
    limiter: &'a mut LogLimiter,
    cancel: &'a CancellationToken,
}

impl Link<'_> {
    /// Logs a warning the gateway can cause at will, at most once per kind and period.
    fn warn_limited(&mut self, kind: &str, message: std::fmt::Arguments<'_>) {
        let name = self.config.name.as_str();
        match self.limiter.check(kind, Instant::now()) {
            Verdict::Log { suppressed: 0 } => warn!(gateway = %name, "{message}"),
            Verdict::Log { suppressed } => warn!(
                gateway = %name,
                suppressed,
                "{message} (and {suppressed} more like it in the last {:?}, not logged)",
                self.limiter.period()
            ),
            Verdict::Suppress => {}
        }
    }

    /// Reports the counts of lines not logged: windows that are over, or all of them.
    fn flush_logs(&mut self, all: bool) {
        let name = self.config.name.as_str();
        let period = self.limiter.period();
        for (kind, count) in self.limiter.flush(Instant::now(), all) {
            match kind {
                Some(kind) => {
                    warn!(gateway = %name, count, "{count} more \"{kind}\" warnings in the last {period:?}, not logged")
                }
                None => {
                    warn!(gateway = %name, count, "{count} more warnings of other kinds in the last {period:?}, not logged")
                }
            }
        }
    }
}

/// How a connection ended.
struct Ended {
    /// `Ok(())` for a clean shutdown.
    result: Result<(), GatewayError>,
    /// Whether the gateway got as far as talking: some frame decoded, or a text frame that was
    /// not UTF-8 (the peer spoke, badly). Such a connection does not count as a failed connect.
    exchanged: bool,
}

/// Runs one connection until it fails or `cancel` fires.
async fn drive<Si, St>(
    sink: Si,
    stream: St,
    link: &mut Link<'_>,
    outgoing: &mut mpsc::Receiver<Outgoing>,
) -> Ended
where
    Si: Sink<Message, Error = WsError> + Unpin,
    St: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut exchanged = false;
    let result = run_connection(sink, stream, link, outgoing, &mut exchanged).await;
    link.flush_logs(true);
    Ended { result, exchanged }
}

async fn run_connection<Si, St>(
    mut sink: Si,
    mut stream: St,
    link: &mut Link<'_>,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    exchanged: &mut bool,
) -> Result<(), GatewayError>
where
    Si: Sink<Message, Error = WsError> + Unpin,
    St: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let config = link.config;
    let cancel = link.cancel;
    let mut pending: HashMap<String, Reply> = HashMap::new();
    let mut last_frame = Instant::now();
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let log_period = link.limiter.period().max(Duration::from_millis(1));
    let mut log_flush = tokio::time::interval_at(Instant::now() + log_period, log_period);
    log_flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut close_reason: Option<String> = None;
    let mut outgoing_open = true;

    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                close(&mut sink, CloseCode::Normal, "xiaoer is shutting down").await;
                return Ok(());
            }
            frame = stream.next() => {
                let message = match frame {
                    None => return Err(GatewayError::Closed { reason: close_reason }),
                    Some(Err(WsError::Utf8(reason))) => {
                        // RFC 6455 §8.1: invalid UTF-8 in a text frame fails the connection.
                        *exchanged = true;
                        close(&mut sink, CloseCode::Invalid, "invalid utf-8 in a text frame").await;
                        return Err(GatewayError::InvalidText { reason });
                    }
                    Some(Err(e)) => return Err(GatewayError::Io { op: "read", reason: e.to_string() }),
                    Some(Ok(message)) => message,
                };
                last_frame = Instant::now();
                match message {
                    Message::Text(text) => {
                        if text.len() > config.max_message_size {
                            link.warn_limited("oversized frame", format_args!(
                                "skipping a {} byte frame, over the {} byte limit",
                                text.len(), config.max_message_size));
                            continue;
                        }
                        match link.codec.decode(text.as_str()) {
                            Ok(incoming) => {
                                *exchanged = true;
                                handle_incoming(incoming, link, &mut pending).await;
                            }
                            Err(e) => link.warn_limited("undecodable frame", format_args!("skipping undecodable frame: {e}")),
                        }
                    }
                    Message::Binary(data) => {
                        link.warn_limited("binary frame", format_args!(
                            "skipping a {} byte binary frame (msgpack is not supported)", data.len()));
                    }
                    Message::Close(frame) => {
                        close_reason = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason));
                    }
                    // Pings are answered by the websocket layer; pongs only prove liveness.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            out = outgoing.recv(), if outgoing_open => {
                let Some(out) = out else {
                    outgoing_open = false;
                    continue;
                };
                if out.reply.is_closed() {
                    // The caller gave up (timeout) before we got to it: do not send.
                    continue;
                }
                if pending.len() >= 1024 {
                    pending.retain(|_, reply| !reply.is_closed());
                }
                let Outgoing { echo, frame, mut reply } = out;
                // From the first byte on, the gateway may act on it.
                reply.written = true;
                pending.insert(echo, reply);
                write(&mut sink, Message::Text(frame.into()), config.send_timeout).await?;
            }
            _ = ping.tick() => {
                write(&mut sink, Message::Ping(Default::default()), config.send_timeout).await?;
            }
            _ = log_flush.tick() => link.flush_logs(false),
            _ = sleep_until(last_frame + config.pong_timeout) => {
                return Err(GatewayError::Dead(config.pong_timeout));
            }
        }
    }
}

/// Sends a close frame, giving up after a second: the connection is ending either way.
async fn close<Si>(sink: &mut Si, code: CloseCode, reason: &'static str)
where
    Si: Sink<Message, Error = WsError> + Unpin,
{
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = timeout(Duration::from_secs(1), async {
        let _ = sink.send(frame).await;
        let _ = sink.close().await;
    })
    .await;
}

async fn write<Si>(sink: &mut Si, message: Message, limit: Duration) -> Result<(), GatewayError>
where
    Si: Sink<Message, Error = WsError> + Unpin,
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

/// Handles one decoded frame.
async fn handle_incoming(
    incoming: Incoming,
    link: &mut Link<'_>,
    pending: &mut HashMap<String, Reply>,
) {
    let name = link.config.name.as_str();
    let event = match incoming {
        Incoming::Connect(info) => {
            info!(gateway = %name, implementation = %info.implementation, version = %info.version, "gateway said meta.connect");
            return;
        }
        Incoming::Heartbeat(hb) => {
            debug!(gateway = %name, interval = ?hb.interval, "heartbeat");
            link.stats.send_modify(|s| {
                s.heartbeats += 1;
                s.heartbeat_interval = Some(hb.interval);
            });
            return;
        }
        Incoming::Response(resp) => {
            match resp.echo.as_ref().and_then(|echo| pending.remove(echo)) {
                Some(reply) => reply.answer(resp),
                None => {
                    debug!(gateway = %name, echo = ?resp.echo, "response to no pending action")
                }
            }
            return;
        }
        Incoming::Other(other) => {
            let kind = format!("unhandled event {}", other.kind);
            link.warn_limited(
                &kind,
                format_args!("skipping unhandled event {}", other.kind),
            );
            return;
        }
        Incoming::StatusUpdate(status) => GatewayEvent::Status {
            gateway: name.to_owned(),
            status,
        },
        Incoming::Message(message) => GatewayEvent::Message(message),
    };
    tokio::select! {
        r = link.events.send(event) => {
            if r.is_err() {
                debug!(gateway = %name, "event receiver is gone; dropping event");
            }
        }
        _ = link.cancel.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex as StdMutex;

    use serde_json::Value;
    use tokio_util::sync::{PollSendError, PollSender};

    use crate::gateway::onebot;

    type TestSink =
        futures_util::sink::SinkMapErr<PollSender<Message>, fn(PollSendError<Message>) -> WsError>;
    type TestStream = futures_util::stream::BoxStream<'static, Result<Message, WsError>>;

    /// The far end of a channel "socket": what the client wrote, and a way to feed it frames.
    struct Far {
        written: mpsc::Receiver<Message>,
        feed: mpsc::Sender<Result<Message, WsError>>,
    }

    fn closed(_: PollSendError<Message>) -> WsError {
        WsError::ConnectionClosed
    }

    fn socket() -> ((TestSink, TestStream), Far) {
        let (wtx, wrx) = mpsc::channel(64);
        let (ftx, frx) = mpsc::channel(64);
        let sink: TestSink = PollSender::new(wtx).sink_map_err(closed as fn(_) -> WsError);
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

    /// A socket that yields `frames` and then ends, as a connection the gateway closes.
    fn socket_then_end(frames: Vec<Result<Message, WsError>>) -> (TestSink, TestStream) {
        let (sock, far) = socket();
        for frame in frames {
            far.feed.try_send(frame).unwrap();
        }
        sock
    }

    fn reset() -> WsError {
        WsError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset by peer",
        ))
    }

    fn text(frame: &str) -> Result<Message, WsError> {
        Ok(Message::Text(frame.to_owned().into()))
    }

    fn test_config() -> GatewayConfig {
        GatewayConfig::new("ws://test.invalid/").with_name("test")
    }

    /// A config whose own pings and pong deadline stay out of a test's way.
    fn quiet_config() -> GatewayConfig {
        GatewayConfig {
            pong_timeout: Duration::from_secs(3600),
            ping_interval: Duration::from_secs(3600),
            ..test_config()
        }
    }

    const MESSAGE: &str = r#"{"type":"message","detail_type":"private","message_id":"m","user_id":"u","self":{"platform":"p","user_id":"s"},"message":[{"type":"text","data":{"text":"hi"}}]}"#;
    const CONNECT: &str = r#"{"id":"","type":"meta","detail_type":"connect","version":{"impl":"t","version":"1","onebot_version":"12"}}"#;

    /// What `drive` needs besides the socket, owned by the test.
    struct Harness {
        config: GatewayConfig,
        events: mpsc::Sender<GatewayEvent>,
        stats: watch::Sender<LinkStats>,
        limiter: LogLimiter,
        cancel: CancellationToken,
    }

    impl Harness {
        fn new(config: GatewayConfig) -> (Harness, mpsc::Receiver<GatewayEvent>) {
            let (events, rx) = mpsc::channel(8);
            let limiter = LogLimiter::new(config.repeat_log_period);
            let harness = Harness {
                config,
                events,
                stats: watch::channel(LinkStats::default()).0,
                limiter,
                cancel: CancellationToken::new(),
            };
            (harness, rx)
        }

        async fn drive(
            &mut self,
            (sink, stream): (TestSink, TestStream),
            outgoing: &mut mpsc::Receiver<Outgoing>,
        ) -> Ended {
            let mut link = Link {
                config: &self.config,
                codec: &OneBot12,
                events: &self.events,
                stats: &self.stats,
                limiter: &mut self.limiter,
                cancel: &self.cancel,
            };
            drive(sink, stream, &mut link, outgoing).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_gateway_is_dead_within_twenty_seconds() {
        let (sock, mut far) = socket();
        let (mut h, _rx) = Harness::new(test_config());
        let (_tx, mut out) = mpsc::channel(8);
        let start = Instant::now();
        let ended = h.drive(sock, &mut out).await;
        assert!(
            matches!(ended.result, Err(GatewayError::Dead(_))),
            "{:?}",
            ended.result
        );
        assert!(!ended.exchanged);
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
        let (sock, mut far) = socket();
        let (mut h, _rx) = Harness::new(test_config());
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
        let ended = h.drive(sock, &mut out).await;
        assert!(
            matches!(ended.result, Err(GatewayError::Dead(_))),
            "{:?}",
            ended.result
        );
        let took = start.elapsed();
        // Last pong at 60 s; dead 15 s later.
        assert!(
            took >= Duration::from_secs(75) && took <= Duration::from_secs(80),
            "{took:?}"
        );
        drop(answerer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_the_connection_alive_without_pings() {
        let (sock, far) = socket();
        let config = GatewayConfig {
            ping_interval: Duration::from_secs(3600),
            pong_timeout: Duration::from_secs(2),
            ..test_config()
        };
        let (mut h, _rx) = Harness::new(config);
        let mut stats = h.stats.subscribe();
        let (_tx, mut out) = mpsc::channel(8);
        let gateway = tokio::spawn(async move {
            // A heartbeat a second (in seconds, as walle sends it) for 10 s, then silence.
            for _ in 0..10 {
                sleep(Duration::from_secs(1)).await;
                far.feed
                    .send(text(
                        r#"{"type":"meta","detail_type":"heartbeat","interval":1}"#,
                    ))
                    .await
                    .unwrap();
            }
            far
        });
        let start = Instant::now();
        let ended = h.drive(sock, &mut out).await;
        assert!(
            matches!(ended.result, Err(GatewayError::Dead(_))),
            "{:?}",
            ended.result
        );
        // Five pong deadlines survived; dead 2 s after the last heartbeat at 10 s.
        assert_eq!(start.elapsed(), Duration::from_secs(12));
        let seen = *stats.borrow_and_update();
        assert_eq!(seen.heartbeats, 10);
        assert_eq!(seen.heartbeat_interval, Some(Duration::from_secs(1)));
        drop(gateway.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn bad_frames_are_skipped_and_messages_delivered() {
        let (sock, far) = socket();
        let config = GatewayConfig {
            max_message_size: 200,
            ..test_config()
        };
        let (mut h, mut rx) = Harness::new(config);
        let cancel = h.cancel.clone();
        let (_tx, mut out) = mpsc::channel(8);
        let big = format!("{{\"type\":\"meta\",\"pad\":\"{}\"}}", "x".repeat(300));
        for frame in [
            "garbage",
            &big,
            r#"{"type":"notice","detail_type":"x"}"#,
            MESSAGE,
        ] {
            far.feed.send(text(frame)).await.unwrap();
        }
        far.feed
            .send(Ok(Message::Binary(vec![1u8, 2].into())))
            .await
            .unwrap();
        let driver = tokio::spawn(async move { h.drive(sock, &mut out).await.result });
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
        let (sock, mut far) = socket();
        let (mut h, _rx) = Harness::new(test_config());
        let (_tx, mut out) = mpsc::channel(8);
        h.cancel.cancel();
        let ended = h.drive(sock, &mut out).await;
        assert!(ended.result.is_ok());
        assert!(matches!(
            far.written.recv().await,
            Some(Message::Close(Some(_)))
        ));
    }

    /// A captured log: everything written at info level and above.
    #[derive(Clone, Default)]
    struct Captured(Arc<StdMutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_unknown_events_log_a_few_lines_not_a_megabyte() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let captured = captured.clone();
                move || captured.clone()
            })
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _log = tracing::subscriber::set_default(subscriber);

        let (sock, far) = socket();
        let (mut h, mut rx) = Harness::new(quiet_config());
        let cancel = h.cancel.clone();
        let (_tx, mut out) = mpsc::channel(8);
        let gateway = tokio::spawn(async move {
            let unknown =
                r#"{"type":"notice","detail_type":"group_member_increase","sub_type":"invite"}"#;
            for _ in 0..10_000 {
                far.feed.send(text(unknown)).await.unwrap();
            }
            for _ in 0..10_000 {
                far.feed.send(text("not json")).await.unwrap();
            }
            far.feed.send(text(MESSAGE)).await.unwrap();
            far
        });
        let driver = tokio::spawn(async move { h.drive(sock, &mut out).await.result });
        assert!(matches!(rx.recv().await, Some(GatewayEvent::Message(_))));
        cancel.cancel();
        assert!(driver.await.unwrap().is_ok());
        drop(gateway.await.unwrap());

        let log = captured.text();
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines.len() <= 4, "{} lines:\n{log}", lines.len());
        assert!(log.len() < 2048, "{} bytes:\n{log}", log.len());
        assert!(
            log.contains("skipping unhandled event notice.group_member_increase.invite"),
            "{log}"
        );
        assert!(
            log.contains(
                "9999 more \"unhandled event notice.group_member_increase.invite\" warnings"
            ),
            "{log}"
        );
        assert!(
            log.contains("9999 more \"undecodable frame\" warnings"),
            "{log}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_action_still_queued_when_the_connection_drops_is_known_unsent() {
        let (sock, far) = socket();
        let (mut h, _rx) = Harness::new(quiet_config());
        let (tx, mut out) = mpsc::channel(8);
        let (reply, outcome) = Reply::new();
        tx.send(Outgoing {
            echo: "e".into(),
            frame: "{}".into(),
            reply,
        })
        .await
        .unwrap();
        // The read error is there first: the loop ends before it takes the action.
        far.feed.send(Err(reset())).await.unwrap();
        let ended = h.drive(sock, &mut out).await;
        assert!(matches!(ended.result, Err(GatewayError::Io { .. })));
        drop(out);
        assert!(matches!(
            outcome.await,
            Ok(Outcome::Lost { written: false })
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

    /// A transport handing out prepared sockets (or errors), reporting when it was called;
    /// refused connections once the plan is used up.
    struct Plan {
        sockets: VecDeque<Result<(TestSink, TestStream), GatewayError>>,
        calls: mpsc::UnboundedSender<Instant>,
    }

    impl Transport for Plan {
        type Sink = TestSink;
        type Stream = TestStream;

        fn describe(&self) -> String {
            "test plan".into()
        }

        async fn connect(&mut self) -> Result<(TestSink, TestStream), GatewayError> {
            let _ = self.calls.send(Instant::now());
            self.sockets
                .pop_front()
                .unwrap_or(Err(GatewayError::Connect {
                    url: "test".into(),
                    reason: "refused".into(),
                }))
        }
    }

    struct Started {
        handle: GatewayHandle,
        events: mpsc::Receiver<GatewayEvent>,
        calls: mpsc::UnboundedReceiver<Instant>,
        cancel: CancellationToken,
    }

    impl Started {
        /// The gaps between the first `n + 1` connect attempts.
        async fn gaps(&mut self, n: usize) -> Vec<Duration> {
            let mut at = Vec::new();
            while at.len() < n + 1 {
                at.push(self.calls.recv().await.expect("the client keeps trying"));
            }
            at.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    fn start_plan(
        config: GatewayConfig,
        sockets: Vec<Result<(TestSink, TestStream), GatewayError>>,
        jitter: Jitter,
    ) -> Started {
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let handle = start(
            config,
            Arc::new(OneBot12),
            Plan {
                sockets: sockets.into(),
                calls: calls_tx,
            },
            jitter,
            events_tx,
            cancel.clone(),
        );
        Started {
            handle,
            events,
            calls,
            cancel,
        }
    }

    /// No jitter: the sleep is the ceiling, so the test sees the backoff itself.
    fn ceiling(c: Duration) -> Duration {
        c
    }

    fn assert_gaps(gaps: &[Duration], want_ms: &[u64]) {
        let want: Vec<Duration> = want_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect();
        // Paused time wakes sleepers at the deadline, give or take a timer tick.
        let close = gaps.len() == want.len()
            && gaps
                .iter()
                .zip(&want)
                .all(|(got, want)| *got >= *want && *got <= *want + Duration::from_millis(2));
        assert!(close, "gaps {gaps:?}, want {want:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn reconnects_with_growing_jittered_backoff() {
        let rejected = || {
            (0..10)
                .map(|_| Err(GatewayError::Rejected { status: 401 }))
                .collect()
        };
        // Without jitter the sleeps are the ceilings: 0.5 s doubling up to the 30 s cap.
        let mut s = start_plan(test_config(), rejected(), ceiling);
        assert_gaps(
            &s.gaps(9).await,
            &[500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000],
        );
        assert!(!s.handle.is_connected());
        s.cancel.cancel();
        s.handle.join().await;

        // With full jitter every sleep stays under its ceiling.
        let mut s = start_plan(test_config(), rejected(), full_jitter);
        for (i, gap) in s.gaps(9).await.into_iter().enumerate() {
            let ceiling = backoff_ceiling(
                i as u32,
                Duration::from_millis(500),
                Duration::from_secs(30),
            );
            assert!(
                gap <= ceiling + Duration::from_millis(2),
                "gap {i} {gap:?} > {ceiling:?}"
            );
        }
        s.cancel.cancel();
        s.handle.join().await;
    }

    #[tokio::test(start_paused = true)]
    async fn short_lived_connections_do_not_push_the_backoff_up() {
        // Four connections that each said meta.connect and were closed by the gateway, then
        // refused connects.
        let sockets = (0..4)
            .map(|_| Ok(socket_then_end(vec![text(CONNECT)])))
            .collect();
        let mut s = start_plan(test_config(), sockets, ceiling);
        assert_gaps(&s.gaps(7).await, &[500, 500, 500, 500, 1000, 2000, 4000]);
        s.cancel.cancel();
        s.handle.join().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_carried_no_events_still_backs_off() {
        let sockets = (0..4).map(|_| Ok(socket_then_end(vec![]))).collect();
        let mut s = start_plan(test_config(), sockets, ceiling);
        assert_gaps(&s.gaps(4).await, &[500, 1000, 2000, 4000]);
        s.cancel.cancel();
        s.handle.join().await;
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_utf8_closes_with_1007_and_does_not_push_the_backoff_up() {
        let mut fars = Vec::new();
        let mut sockets = Vec::new();
        for _ in 0..3 {
            let (sock, far) = socket();
            far.feed
                .try_send(Err(WsError::Utf8("invalid utf-8 sequence".into())))
                .unwrap();
            sockets.push(Ok(sock));
            fars.push(far);
        }
        let mut s = start_plan(test_config(), sockets, ceiling);
        assert_gaps(&s.gaps(3).await, &[500, 500, 500]);
        for mut far in fars {
            let Some(Message::Close(Some(frame))) = far.written.recv().await else {
                panic!("expected a close frame")
            };
            assert_eq!(frame.code, CloseCode::Invalid);
        }
        let reason = loop {
            match s.events.recv().await {
                Some(GatewayEvent::Disconnected { reason, .. }) => break reason,
                Some(_) => continue,
                None => panic!("no disconnect"),
            }
        };
        assert!(reason.contains("not valid utf-8"), "{reason}");
        s.cancel.cancel();
        s.handle.join().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_stops_the_client_instead_of_retrying() {
        let invalid = GatewayError::InvalidUrl {
            url: "localhost:6700".into(),
            reason: "a gateway url starts with ws:// or wss://".into(),
        };
        let mut s = start_plan(test_config(), vec![Err(invalid)], ceiling);
        assert!(s.calls.recv().await.is_some());
        // The supervisor returned and dropped its transport: no second attempt, ever.
        assert_eq!(s.calls.recv().await, None);
        s.handle.join().await;
        let sent = s.handle.send_message("dev", "shop1", "b", "hi").await;
        let Err(SendError::Stopped { reason }) = sent else {
            panic!("expected Stopped, got {sent:?}")
        };
        assert!(reason.contains("ws://"), "{reason}");
    }

    /// A fake gateway on the far end answering send_message actions with the given retcodes
    /// (negative: never answer).
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
                    continue;
                } else {
                    onebot::encode_response("failed", code, Value::Null, "nope", &action.echo)
                };
                far.feed.send(text(&frame)).await.unwrap();
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
        let mut s = start_plan(quiet_config(), vec![Ok(sock)], ceiling);
        assert!(matches!(
            s.events.recv().await,
            Some(GatewayEvent::Connected { .. })
        ));
        let mut events = s.events;
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        (s.handle, s.cancel, answer(far, retcodes))
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
    async fn timeout_is_not_resent_and_may_have_been_delivered() {
        let (handle, cancel, far) = connected_client(vec![-1, 0]).await;
        let start = Instant::now();
        let sent = handle.send_message("dev", "shop1", "b", "hi").await;
        let Err(error) = sent else {
            panic!("expected a timeout, got {sent:?}")
        };
        assert!(matches!(error, SendError::Timeout { .. }), "{error:?}");
        assert!(error.may_have_been_delivered());
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        cancel.cancel();
        handle.join().await;
        let (_, actions) = far.await.unwrap();
        assert_eq!(actions, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn pending_send_may_have_been_delivered_when_the_connection_dies() {
        let (sock, mut far) = socket();
        let s = start_plan(test_config(), vec![Ok(sock)], ceiling);
        let killer = tokio::spawn(async move {
            // Wait for the action, then drop the connection without answering.
            while let Some(m) = far.written.recv().await {
                if matches!(m, Message::Text(_)) {
                    break;
                }
            }
            far.feed.send(Err(reset())).await.unwrap();
        });
        let sent = s.handle.send_message("dev", "shop1", "b", "hi").await;
        assert_eq!(sent, Err(SendError::ConnectionLost));
        assert!(sent.unwrap_err().may_have_been_delivered());
        killer.await.unwrap();
        s.cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn not_connected_after_a_bounded_wait() {
        let s = start_plan(test_config(), vec![], ceiling);
        let sent = s.handle.send_message("dev", "shop1", "b", "hi").await;
        assert_eq!(
            sent,
            Err(SendError::NotConnected {
                waited: Duration::from_secs(5)
            })
        );
        s.cancel.cancel();
        s.handle.join().await;
        assert_eq!(
            s.handle.send_message("dev", "shop1", "b", "hi").await,
            Err(SendError::Shutdown)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn link_stats_count_connections_and_heartbeats() {
        let hb = r#"{"type":"meta","detail_type":"heartbeat","interval":5000}"#;
        let sockets = vec![
            Ok(socket_then_end(vec![text(hb), text(hb)])),
            Ok(socket_then_end(vec![text(hb)])),
        ];
        let mut s = start_plan(quiet_config(), sockets, ceiling);
        let mut stats = s.handle.link_stats();
        let seen = *stats
            .wait_for(|l| l.connections == 2 && l.heartbeats == 1)
            .await
            .unwrap();
        assert_eq!(seen.heartbeat_interval, Some(Duration::from_secs(5)));
        s.cancel.cancel();
        s.handle.join().await;
        drop(s.events.try_recv());
    }
}
