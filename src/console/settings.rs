//! The console's settings (`[console]` in the configuration).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::model::Queue;

/// Where and how the agent console is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// Where to listen (`--console ADDR`); `None`: no console.
    pub listen: Option<SocketAddr>,
    /// The address agents open it at (behind a reverse proxy), for links in notifications.
    pub public_url: Option<String>,
    /// Mark the session cookie `Secure` (set when the console is served over TLS).
    pub secure_cookie: bool,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after the login, used or not.
    pub session_max: Duration,
    /// A claimed chat the agent does nothing in for this long goes back to its queue.
    pub lease: Duration,
    /// How long a chat may wait in each queue before it turns amber (half) and red (all).
    pub sla: HashMap<Queue, Duration>,
    /// Each shop's platform response clock, for the queue's highlight of buyers about to be
    /// answered late. Not a `[console]` key: the daemon fills it from `[shop.clock]`.
    pub clocks: crate::escalation::clock::ShopClocks,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            listen: None,
            public_url: None,
            secure_cookie: false,
            session_idle: Duration::from_secs(3600),
            session_max: Duration::from_secs(12 * 3600),
            lease: Duration::from_secs(10 * 60),
            sla: HashMap::new(),
            clocks: Default::default(),
        }
    }
}

impl ConsoleSettings {
    /// The target wait for `queue`: the configured one, or one that follows how serious the
    /// queue is (complaints and bad-review threats first).
    pub fn sla(&self, queue: Queue) -> Duration {
        self.sla.get(&queue).copied().unwrap_or(match queue {
            Queue::Complaint | Queue::BadReview => Duration::from_secs(5 * 60),
            Queue::AfterSale | Queue::Refund => Duration::from_secs(15 * 60),
            Queue::Human => Duration::from_secs(10 * 60),
        })
    }
}
