//! When to try a failed delivery again, and when to stop: exponential backoff with full jitter,
//! capped, and a deadline after which the notification is dead-lettered.
//!
//! Pure arithmetic (the caller passes the random number and the clock), so the outbox task and
//! its tests decide where randomness and time come from.

use std::time::Duration;

/// How retries of one notification to one target are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The longest wait after the first failure; each further failure doubles it.
    pub first: Duration,
    /// No wait is longer than this, so a receiver that comes back is caught up within about
    /// `cap`.
    pub cap: Duration,
    /// Counted from the first attempt; after this the notification is given up on.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    /// 2 s, doubling, at most 60 s apart: a receiver down for ten minutes gets everything within
    /// about a minute of coming back. Given up after a day: by then nobody acts on the alert.
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_secs(2),
            cap: Duration::from_secs(60),
            give_up_after: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl RetryPolicy {
    /// How long to wait after the `attempt`-th failed attempt (1 for the first failure) before
    /// the next: a uniformly random share (`random` in `[0, 1)`) of `min(cap, first · 2^(attempt-1))`.
    ///
    /// Full jitter spreads the retries of many notifications that failed together (a receiver
    /// that went down) instead of sending them back in one burst. A `random` outside `[0, 1]`
    /// is clamped; NaN counts as 1, the longest wait.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let ceiling = self
            .first
            .checked_mul(1u32 << doublings)
            .map_or(self.cap, |d| d.min(self.cap));
        let share = if random.is_nan() {
            1.0
        } else {
            random.clamp(0.0, 1.0)
        };
        ceiling.mul_f64(share)
    }

    /// Whether a notification first attempted at `first_attempt_ms` is given up on at `now_ms`
    /// (both Unix milliseconds).
    pub fn gives_up(&self, first_attempt_ms: i64, now_ms: i64) -> bool {
        let elapsed_ms = now_ms.saturating_sub(first_attempt_ms);
        let limit_ms = i64::try_from(self.give_up_after.as_millis()).unwrap_or(i64::MAX);
        elapsed_ms >= limit_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.first, Duration::from_secs(2));
        assert_eq!(policy.cap, Duration::from_secs(60));
        assert_eq!(policy.give_up_after, Duration::from_secs(86_400));
    }

    #[test]
    fn the_longest_wait_doubles_then_stops_at_the_cap() {
        let policy = RetryPolicy::default();
        // random = 1 is the ceiling itself.
        let table = [
            (0, 2),
            (1, 2),
            (2, 4),
            (3, 8),
            (4, 16),
            (5, 32),
            (6, 60),
            (7, 60),
            (40, 60),
            (u32::MAX, 60),
        ];
        for (attempt, seconds) in table {
            assert_eq!(
                policy.delay(attempt, 1.0),
                Duration::from_secs(seconds),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn jitter_scales_the_wait_between_zero_and_the_ceiling() {
        let policy = RetryPolicy::default();
        let table = [
            (0.0, Duration::ZERO),
            (0.25, Duration::from_secs(2)),
            (0.5, Duration::from_secs(4)),
            (0.75, Duration::from_secs(6)),
            (-3.0, Duration::ZERO),
            (7.0, Duration::from_secs(8)),
            (f64::NAN, Duration::from_secs(8)),
        ];
        for (random, expected) in table {
            assert_eq!(policy.delay(3, random), expected, "random {random}");
        }
    }

    #[test]
    fn a_huge_first_wait_is_still_capped() {
        let policy = RetryPolicy {
            first: Duration::from_secs(u64::MAX / 2),
            cap: Duration::from_secs(90),
            give_up_after: Duration::from_secs(1),
        };
        assert_eq!(policy.delay(10, 1.0), Duration::from_secs(90));
    }

    #[test]
    fn gives_up_exactly_at_the_deadline() {
        let policy = RetryPolicy::default();
        let first = 1_796_200_215_250;
        let day_ms = 86_400_000;
        let table = [
            (first, false),
            (first + day_ms - 1, false),
            (first + day_ms, true),
            (first + 2 * day_ms, true),
            // A clock that went backwards does not give up early.
            (first - day_ms, false),
            (i64::MAX, true),
        ];
        for (now, expected) in table {
            assert_eq!(policy.gives_up(first, now), expected, "now {now}");
        }
        assert!(!policy.gives_up(i64::MAX, i64::MIN));
    }
}
