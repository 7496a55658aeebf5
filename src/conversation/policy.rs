//! The timing and limits of a conversation (`[conversation]` in the configuration).
//!
//! The fields are typed the way an operator thinks of them (durations, a non-zero count); the
//! planner reads them only through the accessor methods, in the units it computes with
//! (milliseconds as `i64`). [`ConversationPolicy::problems`] holds the bounds that keep that
//! arithmetic safe; `Config::validate` reports them with where each value came from.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::config::{MAX_DURATION, duration_out_of_bounds};

/// The most bot replies the rate limit may allow per window: the worker remembers one timestamp
/// per reply in the window, so this also bounds that memory.
pub const MAX_REPLIES: u32 = 1000;

const DEFAULT_MAX_REPLIES: NonZeroU32 = match NonZeroU32::new(12) {
    Some(n) => n,
    None => panic!("the default reply limit is not zero"),
};

/// Timing and limits of a conversation (`[conversation]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationPolicy {
    /// Greet a buyer on first contact at all (`greeting`).
    pub greeting: bool,
    /// Greet a buyer at most once per this long (`greeting_window`).
    pub greeting_window: Duration,
    /// How long the bot keeps quiet after a human answered from another client (`pause`); zero
    /// means it does not keep quiet.
    pub pause: Duration,
    /// A chat an agent owns goes back to the bot after this long without buyer messages
    /// (`human_idle`).
    pub human_idle: Duration,
    /// At most this many bot replies per chat per `reply_window` (flood and loop guard;
    /// `max_replies`). Zero would silence the bot, so the type rules it out.
    pub max_replies: NonZeroU32,
    /// The window of the reply rate limit (`reply_window`).
    pub reply_window: Duration,
}

impl Default for ConversationPolicy {
    fn default() -> Self {
        ConversationPolicy {
            greeting: true,
            greeting_window: Duration::from_secs(12 * 3600),
            pause: Duration::from_secs(30 * 60),
            human_idle: Duration::from_secs(2 * 3600),
            max_replies: DEFAULT_MAX_REPLIES,
            reply_window: Duration::from_secs(60),
        }
    }
}

impl ConversationPolicy {
    /// Whether a buyer without a recent greeting is greeted at all.
    pub fn greeting_enabled(&self) -> bool {
        self.greeting
    }

    /// A buyer is greeted at most once per this many milliseconds.
    pub fn greeting_window_ms(&self) -> i64 {
        millis(self.greeting_window)
    }

    /// How long the bot keeps quiet after a human answered from another client, in ms.
    pub fn pause_ms(&self) -> i64 {
        millis(self.pause)
    }

    /// A chat an agent owns goes back to the bot after this many ms without messages.
    pub fn human_idle_ms(&self) -> i64 {
        millis(self.human_idle)
    }

    /// At most this many bot replies per chat per [`rate_window_ms`](Self::rate_window_ms).
    pub fn max_replies_per_window(&self) -> usize {
        usize::try_from(self.max_replies.get()).unwrap_or(usize::MAX)
    }

    /// The window of the reply rate limit, in ms.
    pub fn rate_window_ms(&self) -> i64 {
        millis(self.reply_window)
    }

    /// Every setting outside its bounds, as (key within `[conversation]`, what is wrong).
    ///
    /// The lower bounds are where a smaller value stops meaning anything useful (a greeting
    /// window under a minute greets every message); the upper bound keeps timestamp arithmetic
    /// far from overflow.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let minute = Duration::from_secs(60);
        let checks = [
            ("greeting_window", self.greeting_window, minute),
            ("pause", self.pause, Duration::ZERO),
            ("human_idle", self.human_idle, minute),
            ("reply_window", self.reply_window, Duration::from_secs(1)),
        ];
        for (key, value, min) in checks {
            if let Some(message) = duration_out_of_bounds(value, min, MAX_DURATION) {
                problems.push((key, message));
            }
        }
        if self.max_replies.get() > MAX_REPLIES {
            problems.push((
                "max_replies",
                format!(
                    "{} is more than the limit of {MAX_REPLIES} replies per window",
                    self.max_replies
                ),
            ));
        }
        problems
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_are_in_milliseconds() {
        let policy = ConversationPolicy::default();
        assert!(policy.greeting_enabled());
        assert_eq!(policy.greeting_window_ms(), 12 * 3600 * 1000);
        assert_eq!(policy.pause_ms(), 30 * 60 * 1000);
        assert_eq!(policy.human_idle_ms(), 2 * 3600 * 1000);
        assert_eq!(policy.max_replies_per_window(), 12);
        assert_eq!(policy.rate_window_ms(), 60_000);
        assert!(policy.problems().is_empty());
    }

    #[test]
    fn a_huge_duration_saturates_instead_of_wrapping() {
        let policy = ConversationPolicy {
            pause: Duration::MAX,
            ..Default::default()
        };
        assert_eq!(policy.pause_ms(), i64::MAX);
        assert_eq!(policy.problems().len(), 1);
    }

    #[test]
    fn bounds() {
        let policy = ConversationPolicy {
            greeting_window: Duration::from_secs(59),
            pause: Duration::ZERO,
            human_idle: Duration::from_secs(31 * 24 * 3600),
            max_replies: NonZeroU32::new(MAX_REPLIES + 1).unwrap_or(NonZeroU32::MAX),
            reply_window: Duration::from_millis(500),
            greeting: false,
        };
        let keys: Vec<_> = policy.problems().into_iter().map(|(key, _)| key).collect();
        assert_eq!(
            keys,
            [
                "greeting_window",
                "human_idle",
                "reply_window",
                "max_replies"
            ]
        );
        assert_eq!(
            duration_out_of_bounds(
                Duration::from_secs(59),
                Duration::from_secs(60),
                MAX_DURATION
            ),
            Some("59s is too short: it must be at least 1min".to_string())
        );
    }
}
