//! The timing and limits of a conversation (`[conversation]` in the configuration).
//!
//! The planner reads them only through the accessor methods, in the units it computes with.

use serde::Deserialize;

/// Timing and limits of a conversation (`[conversation]` in the configuration).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConversationPolicy {
    /// Greet a buyer at most once per this many seconds.
    pub greeting_window_secs: i64,
    /// How long the bot keeps quiet after a human answered from another client.
    pub pause_secs: i64,
    /// A chat an agent owns goes back to the bot after this long without buyer messages.
    pub human_idle_secs: i64,
    /// At most this many bot replies per chat per `rate_window_secs` (flood and loop guard).
    pub max_replies_per_window: usize,
    pub rate_window_secs: i64,
}

impl Default for ConversationPolicy {
    fn default() -> Self {
        ConversationPolicy {
            greeting_window_secs: 12 * 3600,
            pause_secs: 30 * 60,
            human_idle_secs: 2 * 3600,
            max_replies_per_window: 12,
            rate_window_secs: 60,
        }
    }
}

impl ConversationPolicy {
    /// Whether a buyer without a recent greeting is greeted at all.
    pub fn greeting_enabled(&self) -> bool {
        true
    }

    /// A buyer is greeted at most once per this many milliseconds.
    pub fn greeting_window_ms(&self) -> i64 {
        self.greeting_window_secs.saturating_mul(1000)
    }

    /// How long the bot keeps quiet after a human answered from another client, in ms.
    pub fn pause_ms(&self) -> i64 {
        self.pause_secs.saturating_mul(1000)
    }

    /// A chat an agent owns goes back to the bot after this many ms without messages.
    pub fn human_idle_ms(&self) -> i64 {
        self.human_idle_secs.saturating_mul(1000)
    }

    /// At most this many bot replies per chat per [`rate_window_ms`](Self::rate_window_ms).
    pub fn max_replies_per_window(&self) -> usize {
        self.max_replies_per_window
    }

    /// The window of the reply rate limit, in ms.
    pub fn rate_window_ms(&self) -> i64 {
        self.rate_window_secs.saturating_mul(1000)
    }
}
