//! The gateway side of the load: a OneBot 12 forward-websocket server on loopback that the
//! daemon (or the bare client) connects to, one connection per `/c<N>` path. It pushes buyers'
//! messages as private `message` events, answers every `send_message`, and matches each reply to
//! the oldest unanswered message of that buyer to time it.
//!
//! Writes are batched: a connection's writer feeds every frame that is waiting and flushes once,
//! so a burst costs one system call, for xiaoer and the bare client alike.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::gateway::onebot;
use crate::gateway::{BotStatus, PrivateMessage};

pub(super) const PLATFORM: &str = "load";

/// What one measuring window saw.
#[derive(Debug)]
pub(super) struct Window {
    /// Reply latency in microseconds, from the message's push (or its scheduled arrival) to the
    /// `send_message`.
    pub latency_us: Histogram<u64>,
    /// Messages pushed inside the window.
    pub sent: u64,
    /// Of those, answered.
    pub answered: u64,
    /// Replies with no unanswered message of that buyer to match.
    pub duplicates: u64,
    /// Replies to messages of an earlier window that had given up waiting for them.
    pub late: u64,
}

impl Window {
    fn new() -> Window {
        Window {
            // 1 µs to 10 min at 3 significant figures: fixed bounds, so recording cannot fail
            // for values clamped into them.
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3)
                .unwrap_or_else(|_| unreachable!("constant bounds are valid")),
            sent: 0,
            answered: 0,
            duplicates: 0,
            late: 0,
        }
    }
}

struct Pending {
    at: Instant,
    /// Counted in the current window (false during warm-up).
    measured: bool,
    /// Its window ended without a reply; a reply now is late, not a duplicate.
    expired: bool,
    /// Wakes a closed-loop buyer.
    done: Option<oneshot::Sender<()>>,
}

/// The load gateway. Dropping it closes every connection.
pub(super) struct LoadGateway {
    addr: SocketAddr,
    token: String,
    /// Shop `i` lives on connection `i % connections`.
    connections: usize,
    writers: Mutex<Vec<Option<mpsc::UnboundedSender<Message>>>>,
    connected: watch::Sender<usize>,
    pending: Mutex<HashMap<String, VecDeque<Pending>>>,
    window: Mutex<Window>,
    seq: AtomicU64,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for LoadGateway {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

pub(super) fn shop_id(shop: usize) -> String {
    format!("shop{shop}")
}

fn key(shop: &str, user: &str) -> String {
    format!("{shop}/{user}")
}

impl LoadGateway {
    /// Listens on a free loopback port.
    pub async fn start(
        connections: usize,
        shops: usize,
        token: &str,
    ) -> std::io::Result<std::sync::Arc<LoadGateway>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let gateway = std::sync::Arc::new(LoadGateway {
            addr: listener.local_addr()?,
            token: token.to_owned(),
            connections,
            writers: Mutex::new(vec![None; connections]),
            connected: watch::channel(0).0,
            pending: Mutex::new(HashMap::new()),
            window: Mutex::new(Window::new()),
            seq: AtomicU64::new(0),
            task: Mutex::new(None),
        });
        let accepting = std::sync::Arc::downgrade(&gateway);
        let shops_of = move |connection: usize| -> Vec<String> {
            (0..shops)
                .filter(|s| s % connections == connection)
                .map(shop_id)
                .collect()
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Some(gateway) = accepting.upgrade() else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move { gateway.serve(stream, shops_of).await });
            }
        });
        if let Ok(mut slot) = gateway.task.lock() {
            *slot = Some(task);
        }
        Ok(gateway)
    }

    /// The url of connection `n`.
    pub fn url(&self, n: usize) -> String {
        format!("ws://{}/c{n}", self.addr)
    }

    /// Waits until every connection is up, or `wait` has passed.
    pub async fn wait_connected(&self, wait: Duration) -> bool {
        let mut seen = self.connected.subscribe();
        let want = self.connections;
        tokio::time::timeout(wait, seen.wait_for(|n| *n >= want))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Pushes one buyer message. `at` is when it counts as sent.
    pub fn push(
        &self,
        shop: usize,
        user: &str,
        text: &str,
        at: Instant,
        measured: bool,
        done: Option<oneshot::Sender<()>>,
    ) {
        let self_id = shop_id(shop);
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let message = PrivateMessage {
            platform: PLATFORM.to_owned(),
            self_id: self_id.clone(),
            user_id: user.to_owned(),
            message_id: format!("m{n}"),
            text: text.to_owned(),
            cards: Vec::new(),
            outgoing: false,
            time: onebot::now_seconds(),
        };
        let frame = onebot::encode_private_message(&format!("e{n}"), &message);
        if let Ok(mut pending) = self.pending.lock() {
            pending
                .entry(key(&self_id, user))
                .or_default()
                .push_back(Pending {
                    at,
                    measured,
                    expired: false,
                    done,
                });
        }
        if measured && let Ok(mut window) = self.window.lock() {
            window.sent += 1;
        }
        let writer = self
            .writers
            .lock()
            .ok()
            .and_then(|w| w.get(shop % self.connections).cloned().flatten());
        if let Some(writer) = writer {
            let _ = writer.send(Message::Text(frame.into()));
        }
    }

    /// Ends the current window and starts a new one.
    pub fn take_window(&self) -> Window {
        self.window
            .lock()
            .map(|mut w| std::mem::replace(&mut *w, Window::new()))
            .unwrap_or_else(|_| Window::new())
    }

    /// Gives up waiting for the unanswered messages (their window is over): a reply to one
    /// later counts as late, not as a duplicate or in the next window's latency.
    pub fn expire_unanswered(&self) {
        if let Ok(mut pending) = self.pending.lock() {
            for queue in pending.values_mut() {
                for p in queue.iter_mut() {
                    p.expired = true;
                    p.measured = false;
                    p.done = None;
                }
            }
        }
    }

    /// Messages still waiting for a reply in the current window.
    pub fn waiting(&self) -> usize {
        self.pending
            .lock()
            .map(|p| p.values().flatten().filter(|p| !p.expired).count())
            .unwrap_or(0)
    }

    fn replied(&self, self_id: &str, user: &str) {
        let now = Instant::now();
        let first = self.pending.lock().ok().and_then(|mut p| {
            let key = key(self_id, user);
            let queue = p.get_mut(&key)?;
            // A message given up on long ago was set aside or lost, not slow: this reply is to a
            // later one. (OneBot replies name no message, so they are matched in order.)
            while queue.front().is_some_and(|p| {
                p.expired && now.saturating_duration_since(p.at) > super::REPLY_WAIT
            }) {
                queue.pop_front();
            }
            let first = queue.pop_front();
            if queue.is_empty() {
                p.remove(&key);
            }
            first
        });
        let Ok(mut window) = self.window.lock() else {
            return;
        };
        match first {
            Some(pending) => {
                if pending.expired {
                    window.late += 1;
                }
                if pending.measured {
                    window.answered += 1;
                    let us = now.saturating_duration_since(pending.at).as_micros();
                    let us = u64::try_from(us).unwrap_or(u64::MAX).clamp(1, 600_000_000);
                    let _ = window.latency_us.record(us);
                }
                if let Some(done) = pending.done {
                    let _ = done.send(());
                }
            }
            None => window.duplicates += 1,
        }
    }

    fn answer(&self, frame: &str) -> Option<String> {
        let action = onebot::decode_action(frame).ok()?;
        let ok = |data: Value| Some(onebot::encode_response("ok", 0, data, "", &action.echo));
        match action.action.as_str() {
            "send_message" => {
                let params = action.send_message_params().ok()?;
                let self_id = action.self_.as_ref().map(|(_, s)| s.as_str())?;
                self.replied(self_id, &params.user_id);
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                ok(json!({"message_id": format!("r{n}"), "time": onebot::now_seconds()}))
            }
            "get_version" => ok(
                json!({"impl": "xiaoer-load", "version": env!("CARGO_PKG_VERSION"), "onebot_version": "12"}),
            ),
            _ => ok(Value::Null),
        }
    }

    async fn serve(&self, stream: tokio::net::TcpStream, shops_of: impl Fn(usize) -> Vec<String>) {
        let mut path = String::new();
        let want = format!("Bearer {}", self.token);
        // The handshake callback's signature is tungstenite's.
        #[allow(clippy::result_large_err)]
        let check = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            path = request.uri().path().to_owned();
            let token = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if token == Some(want.as_str()) {
                Ok(response)
            } else {
                let mut refused = ErrorResponse::new(Some("bad token".into()));
                *refused.status_mut() = StatusCode::UNAUTHORIZED;
                Err(refused)
            }
        };
        let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
            return;
        };
        let Some(connection) = path
            .strip_prefix("/c")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < self.connections)
        else {
            return;
        };
        let bots: Vec<BotStatus> = shops_of(connection)
            .into_iter()
            .map(|self_id| BotStatus {
                platform: PLATFORM.to_owned(),
                self_id,
                online: true,
            })
            .collect();
        let (tx, mut rx) = socket.split();
        let (writer, mut outgoing) = mpsc::unbounded_channel::<Message>();
        let n = self.seq.fetch_add(2, Ordering::Relaxed);
        let _ = writer.send(Message::Text(
            onebot::encode_connect(&format!("e{n}"), "xiaoer-load", env!("CARGO_PKG_VERSION"))
                .into(),
        ));
        let _ = writer.send(Message::Text(
            onebot::encode_status_update(&format!("e{}", n + 1), true, &bots).into(),
        ));
        let heartbeat = Duration::from_secs(10);
        let write = tokio::spawn(async move {
            let mut tx = tx;
            let mut beat =
                tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
            let mut n: u64 = 0;
            loop {
                let first = tokio::select! {
                    m = outgoing.recv() => match m { Some(m) => m, None => break },
                    _ = beat.tick() => {
                        n += 1;
                        Message::Text(onebot::encode_heartbeat(&format!("hb{n}"), heartbeat, true, &bots).into())
                    }
                };
                if tx.feed(first).await.is_err() {
                    break;
                }
                while let Ok(more) = outgoing.try_recv() {
                    if tx.feed(more).await.is_err() {
                        return;
                    }
                }
                if tx.flush().await.is_err() {
                    break;
                }
            }
        });
        if let Ok(mut writers) = self.writers.lock() {
            writers[connection] = Some(writer.clone());
        }
        self.connected.send_modify(|n| *n += 1);
        while let Some(Ok(frame)) = rx.next().await {
            if let Message::Text(text) = frame
                && let Some(response) = self.answer(text.as_str())
            {
                let _ = writer.send(Message::Text(response.into()));
            }
        }
        self.connected.send_modify(|n| *n = n.saturating_sub(1));
        if let Ok(mut writers) = self.writers.lock() {
            writers[connection] = None;
        }
        write.abort();
    }
}
