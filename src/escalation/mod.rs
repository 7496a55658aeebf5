//! When and where chats go to humans: the bot's give-up threshold and what buyers are told about
//! each queue's wait.
//!
//! Which messages escalate to which queue is the rule files' business; this module holds the
//! policy around it that is not about message text.

use std::collections::HashMap;

use serde::Deserialize;

use crate::model::Queue;

/// Escalation settings, part of the daemon configuration (`[escalation]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationPolicy {
    /// After this many fallback replies in a row the chat goes to the `human` queue.
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

    /// Whether a streak of fallback replies means the bot should hand over.
    pub fn gives_up_after(&self, fallback_streak: i64) -> bool {
        self.fallback_limit > 0 && fallback_streak >= i64::from(self.fallback_limit)
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
}
