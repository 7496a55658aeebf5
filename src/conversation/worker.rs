//! The per-chat worker: takes one message at a time, records it, plans with the state machine and
//! carries the plan out — escalations committed to the store before the buyer hears about them.

use std::collections::VecDeque;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::{ConversationPolicy, Step, plan_message, plan_outgoing};
use crate::escalation::EscalationPolicy;
use crate::reload::LiveRules;
use crate::replies::RenderContext;
use crate::routing::route;
use crate::rules::{Queue, RuleSet};
use crate::store::{
    Actor, Conversation, ConversationKey, ConversationState, Direction, Sender, Store, StoreError,
    TranscriptEntry, now_ms,
};

/// A private message as the conversation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub key: ConversationKey,
    pub message_id: String,
    pub text: String,
    /// Sent by the shop account (from xiaoer or from another client), not by the buyer.
    pub outgoing: bool,
}

/// Why a send to the gateway failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendFailure(pub String);

/// Where replies go: the gateway connection serving the chat's shop.
pub trait Outbox: Send + Sync + 'static {
    /// Sends `text` to the buyer of `key`; returns the platform's message id.
    fn send(
        &self,
        key: &ConversationKey,
        text: &str,
    ) -> impl Future<Output = Result<String, SendFailure>> + Send;
}

/// Shared outboxes work too.
impl<O: Outbox> Outbox for Arc<O> {
    fn send(
        &self,
        key: &ConversationKey,
        text: &str,
    ) -> impl std::future::Future<Output = Result<String, SendFailure>> + Send {
        O::send(self, key, text)
    }
}

/// How a shop is named to buyers (`{shop}`), by shop account id.
pub type ShopNames = std::collections::HashMap<String, String>;

/// What every worker shares.
pub struct Shared<O> {
    pub store: Store,
    pub outbox: O,
    pub rules: LiveRules,
    pub policy: ConversationPolicy,
    pub escalation: EscalationPolicy,
    pub shop_names: ShopNames,
}

/// A message the worker could not handle; the chat goes on with the next one.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot record message {message_id} of {key}: {source}")]
    Record {
        key: ConversationKey,
        message_id: String,
        source: StoreError,
    },
    #[error("cannot read or save conversation {key}: {source}")]
    State {
        key: ConversationKey,
        source: StoreError,
    },
    #[error(
        "cannot commit the escalation of {key} to queue {queue}; no acknowledgement was sent: {source}"
    )]
    Escalate {
        key: ConversationKey,
        queue: Queue,
        source: StoreError,
    },
}

/// Replies this worker sent, to tell echoes of them from humans answering elsewhere.
const SENT_MEMORY: usize = 64;
/// An echo whose message id is unknown (the send timed out) is still recognised by its text
/// within this many milliseconds.
const ECHO_TEXT_WINDOW_MS: i64 = 120_000;

pub struct Worker<O> {
    key: ConversationKey,
    shared: Arc<Shared<O>>,
    recent_replies: VecDeque<i64>,
    sent: VecDeque<(String, String, i64)>,
    rotation: usize,
}

impl<O: Outbox> Worker<O> {
    pub fn new(key: ConversationKey, shared: Arc<Shared<O>>) -> Self {
        // Start buyers at different variants so a shop's buyers do not all read the same line.
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        Worker {
            key,
            shared,
            recent_replies: VecDeque::new(),
            sent: VecDeque::new(),
            rotation: hasher.finish() as usize,
        }
    }

    /// Handles one message of this chat.
    ///
    /// # Errors
    ///
    /// A store failure; the message is then not answered (an answer that cannot be recorded could
    /// be sent twice after a restart).
    pub async fn handle(&mut self, message: ChatMessage) -> Result<(), WorkerError> {
        if message.outgoing {
            return self.handle_outgoing(message).await;
        }
        if message.key.user_id == message.key.self_id {
            debug!(chat = %self.key, "ignoring a message from the shop account to itself");
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let store = &shared.store;
        let now = now_ms();
        let new = self.record(&message, Sender::Buyer, now).await?;
        if !new {
            info!(chat = %self.key, message_id = %message.message_id, "redelivered message ignored");
            return Ok(());
        }
        let mut conversation = self.load_conversation(now).await?;
        let before = conversation.clone();
        // In-flight messages finish on the rule set they started with.
        let rules = self.shared.rules.load().for_shop(&self.key.self_id);
        let decided = route(&rules, &message.text);
        let open_queue = match conversation.open_escalation {
            Some(id) => store.escalation(id).await.ok().flatten().map(|e| e.queue),
            None => None,
        };
        let plan = plan_message(
            &mut conversation,
            &decided,
            now,
            open_queue,
            &self.shared.policy,
            &self.shared.escalation,
            &mut self.recent_replies,
        );
        debug!(chat = %self.key, outcome = decided.kind.as_str(), rule = ?decided.rule, steps = ?plan.steps, "planned");
        if conversation != before {
            let (actor, reason) = plan
                .state_change
                .clone()
                .unwrap_or((Actor::Bot, "message handled".into()));
            self.save(&conversation, actor, &reason).await?;
        }
        if let (ConversationState::Human, ConversationState::Bot, Some(id)) =
            (before.state, conversation.state, before.open_escalation)
        {
            // The agent went idle: the escalation ends with the hand-back.
            if let Err(error) = store.close_escalation(id, "idle-timeout").await {
                warn!(chat = %self.key, escalation = id, %error, "cannot close the escalation of an idle agent");
            }
        }
        for step in plan.steps {
            match step {
                Step::Escalate {
                    queue,
                    reason,
                    rule,
                } => {
                    let id = store
                        .escalate(
                            &self.key,
                            queue.as_str(),
                            &reason,
                            rule.as_deref(),
                            &message.text,
                            now,
                        )
                        .await
                        .map_err(|source| WorkerError::Escalate {
                            key: self.key.clone(),
                            queue,
                            source,
                        })?;
                    info!(chat = %self.key, queue = %queue, escalation = id, %reason, "escalated");
                }
                Step::Send { key, queue } => self.send_reply(&rules, &key, queue).await,
                Step::Suppressed { key } => {
                    warn!(chat = %self.key, reply = %key, "reply held back by the per-chat rate limit");
                }
            }
        }
        Ok(())
    }

    /// Records an inbound message; `false` if this chat already had it (a redelivery).
    async fn record(
        &self,
        message: &ChatMessage,
        sender: Sender,
        now: i64,
    ) -> Result<bool, WorkerError> {
        self.shared
            .store
            .record_inbound(&self.key, &message.message_id, sender, &message.text, now)
            .await
            .map_err(|source| WorkerError::Record {
                key: self.key.clone(),
                message_id: message.message_id.clone(),
                source,
            })
    }

    async fn save(
        &self,
        conversation: &Conversation,
        actor: Actor,
        reason: &str,
    ) -> Result<(), WorkerError> {
        self.shared
            .store
            .save_conversation(conversation, actor, reason)
            .await
            .map_err(|source| WorkerError::State {
                key: self.key.clone(),
                source,
            })
    }

    async fn load_conversation(&self, now: i64) -> Result<Conversation, WorkerError> {
        // Read fresh every time: an agent may have claimed or closed the chat meanwhile.
        match self.shared.store.conversation(&self.key).await {
            Ok(Some(conversation)) => Ok(conversation),
            Ok(None) => Ok(Conversation::new(self.key.clone(), now)),
            Err(source) => Err(WorkerError::State {
                key: self.key.clone(),
                source,
            }),
        }
    }

    fn is_echo(&self, message: &ChatMessage, now: i64) -> bool {
        self.sent.iter().any(|(id, text, at)| {
            (!id.is_empty() && *id == message.message_id)
                || (*text == message.text && now - at < ECHO_TEXT_WINDOW_MS)
        })
    }

    async fn handle_outgoing(&mut self, message: ChatMessage) -> Result<(), WorkerError> {
        let now = now_ms();
        if self.is_echo(&message, now) {
            debug!(chat = %self.key, message_id = %message.message_id, "echo of our own reply");
            return Ok(());
        }
        let new = self.record(&message, Sender::Shop, now).await?;
        if !new {
            return Ok(());
        }
        let mut conversation = self.load_conversation(now).await?;
        let plan = plan_outgoing(&mut conversation, now, &self.shared.policy);
        if let Some((actor, reason)) = plan.state_change {
            info!(chat = %self.key, %reason, "bot paused");
            self.save(&conversation, actor, &reason).await?;
        }
        Ok(())
    }

    async fn send_reply(&mut self, rules: &RuleSet, key: &str, queue: Option<Queue>) {
        let context = RenderContext {
            shop: self
                .shared
                .shop_names
                .get(&self.key.self_id)
                .map(String::as_str),
            buyer: None,
            queue,
            queue_eta: queue.map(|q| self.shared.escalation.eta(q)),
        };
        self.rotation = self.rotation.wrapping_add(1);
        let Some(text) = rules.replies().render(key, self.rotation, &context) else {
            warn!(chat = %self.key, reply = %key, "reply key missing from the rule set; nothing sent");
            return;
        };
        let now = now_ms();
        // Remember the text before sending: the echo can arrive before the send's response.
        self.sent.push_back((String::new(), text.clone(), now));
        if self.sent.len() > SENT_MEMORY {
            self.sent.pop_front();
        }
        match self.shared.outbox.send(&self.key, &text).await {
            Ok(message_id) => {
                if let Some(last) = self.sent.back_mut() {
                    last.0 = message_id.clone();
                }
                let entry = TranscriptEntry {
                    key: self.key.clone(),
                    direction: Direction::Outbound,
                    sender: Sender::Bot,
                    message_id: Some(message_id),
                    text,
                    at_ms: now,
                };
                if let Err(error) = self.shared.store.append_transcript(entry).await {
                    warn!(chat = %self.key, %error, "cannot add a sent reply to the transcript");
                }
            }
            Err(error) => {
                warn!(chat = %self.key, reply = %key, %error, "reply not delivered");
            }
        }
    }
}
