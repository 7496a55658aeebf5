//! When and where chats go to humans: the bot's give-up threshold, what buyers are told about
//! each queue's wait, each shop's business hours ([`hours`]) and the platform's response clock
//! ([`clock`]).
//!
//! Which messages escalate to which queue is the rule files' business; this module holds the
//! policy around it that is not about message text.

pub mod clock;
pub mod hours;

use std::collections::HashMap;

use crate::model::Queue;

/// Escalation settings, part of the daemon configuration (`[escalation]`; the file format lives
/// in `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationPolicy {
    /// After this many fallback replies in a row the chat goes to the `human` queue. Zero means
    /// never: the bot keeps answering with the fallback reply however often it misses, which a
    /// shop may want while its agents are off shift.
    pub fallback_limit: u32,
    /// What `{queue_eta}` says for each queue, e.g. `refund = "10分钟"`.
    pub queue_eta: HashMap<Queue, String>,
    /// What `{queue_eta}` says for a queue without its own entry.
    pub default_eta: String,
}

impl Default for EscalationPolicy {
    fn default() -> Self {
        EscalationPolicy {
            fallback_limit: 3,
            queue_eta: HashMap::new(),
            default_eta: "几分钟".to_string(),
        }
    }
}

impl EscalationPolicy {
    /// The expected wait for `queue`, in words for a buyer.
    pub fn eta(&self, queue: Queue) -> &str {
        self.queue_eta
            .get(&queue)
            .map(String::as_str)
            .unwrap_or(&self.default_eta)
    }

    /// Whether a streak of fallback replies means the bot should hand over; never when
    /// `fallback_limit` is zero.
    pub fn gives_up_after(&self, fallback_streak: i64) -> bool {
        self.fallback_limit > 0 && fallback_streak >= i64::from(self.fallback_limit)
    }

    /// Every setting that cannot work, as (key within `[escalation]`, what is wrong). An empty
    /// wait would leave a hole in the sentence a buyer is sent.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.default_eta.trim().is_empty() {
            problems.push(("default_eta".to_string(), "is empty".to_string()));
        }
        let mut queues: Vec<_> = self.queue_eta.iter().collect();
        queues.sort_by_key(|(queue, _)| queue.as_str());
        for (queue, eta) in queues {
            if eta.trim().is_empty() {
                problems.push((format!("queue_eta.{queue}"), "is empty".to_string()));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_falls_back_to_the_default() {
        let mut policy = EscalationPolicy::default();
        policy.queue_eta.insert(Queue::Refund, "10分钟".into());
        assert_eq!(policy.eta(Queue::Refund), "10分钟");
        assert_eq!(policy.eta(Queue::Complaint), "几分钟");
    }

    #[test]
    fn zero_limit_never_gives_up() {
        let policy = EscalationPolicy {
            fallback_limit: 0,
            ..Default::default()
        };
        assert!(!policy.gives_up_after(100));
        assert!(EscalationPolicy::default().gives_up_after(3));
        assert!(!EscalationPolicy::default().gives_up_after(2));
    }

    #[test]
    fn an_empty_wait_is_a_problem() {
        let mut policy = EscalationPolicy::default();
        assert!(policy.problems().is_empty());
        policy.queue_eta.insert(Queue::Complaint, " ".into());
        policy.default_eta.clear();
        let keys: Vec<_> = policy.problems().into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["default_eta", "queue_eta.complaint"]);
    }
}
