//! Rate limiting for log lines a gateway can repeat at will.
//!
//! A peer sending 10,000 events xiaoer does not handle must not write 10,000 warnings. Each kind
//! of line (a key such as `unhandled event notice.x`) is logged the first time; repeats within
//! the period are counted, and the count is reported once the period is over — with the next
//! repeat, or by [`LogLimiter::flush`], which the connection loop calls on a timer and when a
//! connection ends.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// How many distinct kinds are tracked; kinds come from the peer, so they are bounded too.
const MAX_KINDS: usize = 256;

/// Counts repeats of log lines per kind. See the module docs.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    period: Duration,
    kinds: HashMap<String, Window>,
    /// Repeats of kinds that found the table full, reported as one line.
    overflow: u64,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    suppressed: u64,
}

/// What [`LogLimiter::check`] says about one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it; `suppressed` repeats were not logged since the last time it was.
    Log { suppressed: u64 },
    /// Do not log it; it was counted.
    Suppress,
}

impl LogLimiter {
    /// A limiter logging each kind at most about once per `period`.
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            period,
            kinds: HashMap::new(),
            overflow: 0,
        }
    }

    /// The period, for the caller's flush timer.
    pub(crate) fn period(&self) -> Duration {
        self.period
    }

    /// One occurrence of `kind` at `now`.
    pub(crate) fn check(&mut self, kind: &str, now: Instant) -> Verdict {
        if let Some(window) = self.kinds.get_mut(kind) {
            if now.saturating_duration_since(window.started) < self.period {
                window.suppressed += 1;
                return Verdict::Suppress;
            }
            let suppressed = window.suppressed;
            *window = Window {
                started: now,
                suppressed: 0,
            };
            return Verdict::Log { suppressed };
        }
        if self.kinds.len() >= MAX_KINDS {
            self.kinds
                .retain(|_, w| now.saturating_duration_since(w.started) < self.period);
            if self.kinds.len() >= MAX_KINDS {
                self.overflow += 1;
                return Verdict::Suppress;
            }
        }
        self.kinds.insert(
            kind.to_owned(),
            Window {
                started: now,
                suppressed: 0,
            },
        );
        Verdict::Log { suppressed: 0 }
    }

    /// Ends every window older than the period (every window with `all`), returning the kinds
    /// that had repeats not logged, with their counts; an overflow count comes as `None`.
    pub(crate) fn flush(&mut self, now: Instant, all: bool) -> Vec<(Option<String>, u64)> {
        let mut report = Vec::new();
        let period = self.period;
        self.kinds.retain(|kind, window| {
            let over = all || now.saturating_duration_since(window.started) >= period;
            if over && window.suppressed > 0 {
                report.push((Some(kind.clone()), window.suppressed));
            }
            !over
        });
        report.sort();
        if self.overflow > 0 {
            report.push((None, std::mem::take(&mut self.overflow)));
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrence_logs_repeats_are_counted_per_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut limiter = LogLimiter::new(s(60));
        assert_eq!(limiter.check("a", t0), Verdict::Log { suppressed: 0 });
        for _ in 0..9 {
            assert_eq!(limiter.check("a", t0 + s(1)), Verdict::Suppress);
        }
        // Another kind is not held back by the first.
        assert_eq!(
            limiter.check("b", t0 + s(1)),
            Verdict::Log { suppressed: 0 }
        );
        // A repeat after the period logs, with the count.
        assert_eq!(
            limiter.check("a", t0 + s(61)),
            Verdict::Log { suppressed: 9 }
        );
        assert_eq!(limiter.check("a", t0 + s(62)), Verdict::Suppress);
        // Nothing to report before the period is over; then the count, once.
        assert_eq!(limiter.flush(t0 + s(100), false), vec![]);
        assert_eq!(
            limiter.flush(t0 + s(121), false),
            vec![(Some("a".to_owned()), 1)]
        );
        assert_eq!(limiter.flush(t0 + s(200), true), vec![]);
        // After a flush the kind logs again at once.
        assert_eq!(
            limiter.check("a", t0 + s(201)),
            Verdict::Log { suppressed: 0 }
        );
    }

    #[test]
    fn kinds_chosen_by_the_peer_are_bounded() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(60));
        for i in 0..MAX_KINDS {
            assert!(matches!(
                limiter.check(&i.to_string(), t0),
                Verdict::Log { .. }
            ));
        }
        for i in 0..1000 {
            assert_eq!(limiter.check(&format!("new {i}"), t0), Verdict::Suppress);
        }
        let report = limiter.flush(t0, true);
        assert_eq!(report.last(), Some(&(None, 1000)));
        assert_eq!(limiter.kinds.len(), 0);
    }
}
