//! The per-chat worker: the only writer of a chat's state and the only sender to its buyer, for
//! the bot and for agents alike.
//!
//! It takes one [`ChatCommand`] at a time. A buyer message is planned with the state machine and
//! committed as one [`Turn`] — message id, transcript line, state, escalation, the replies about
//! to go out — before anything is sent; a commit that fails is retried, and a message that still
//! cannot be stored is left unmarked so that a redelivery handles it. Agent replies go through
//! the same outbox and transcript (as `agent:<name>`) and their echoes are recognised like the
//! bot's.

use std::collections::VecDeque;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};
use tracing::{debug, info, warn};

use super::commands::{self, ActionError, AgentAction};
use super::{ConversationPolicy, Decided, Moment, Plan, Step, plan_message, plan_outgoing};
use crate::escalation::EscalationPolicy;
use crate::escalation::clock::{ChatWith, Round, ShopClocks, TurnFacts};
use crate::escalation::hours::BusinessHours;
use crate::model::{
    Actor, ChatEvent, Conversation, ConversationKey, ConversationState, Delivery, Direction,
    Escalation, EscalationEvent, ItemRef, Part, Queue, Sender,
};
use crate::reload::LiveRules;
use crate::replies::RenderContext;
use crate::routing::{OutcomeKind, route};
use crate::rules::RuleSet;
use crate::store::{
    DecisionRecord, EscalationStep, Fence, InboundLine, OutboundLine, RoundStep, Store, StoreError,
    Turn, TurnOutcome, now_ms,
};

/// A private message as the conversation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub key: ConversationKey,
    pub message_id: String,
    pub text: String,
    /// Product and order cards, pictures, stickers.
    pub parts: Vec<Part>,
    /// Sent by the shop account (from xiaoer or from another client), not by the buyer.
    pub outgoing: bool,
}

/// What a chat worker is asked to do.
#[derive(Debug)]
pub enum ChatCommand {
    /// A message from the gateway.
    Message(ChatMessage),
    /// An agent answers the buyer; `done` learns whether the gateway took it.
    AgentReply {
        agent: String,
        text: String,
        done: oneshot::Sender<Result<SentReply, CommandError>>,
    },
    /// An agent claims, releases, resolves, hands back or transfers the chat's escalation.
    Act {
        escalation: i64,
        action: AgentAction,
        done: oneshot::Sender<Result<(), CommandError>>,
    },
}

impl ChatCommand {
    /// Tells the waiting caller, if any, that the command was not carried out.
    pub fn refuse(self, error: CommandError) {
        match self {
            ChatCommand::Message(_) => {}
            ChatCommand::AgentReply { done, .. } => {
                let _ = done.send(Err(error));
            }
            ChatCommand::Act { done, .. } => {
                let _ = done.send(Err(error));
            }
        }
    }
}

/// An agent's reply as the gateway took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentReply {
    /// The platform's message id.
    pub message_id: String,
}

/// Why an agent's command was not carried out. Messages are for the agent's screen.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("this chat has no open escalation")]
    NoEscalation,
    #[error("{agent} does not hold this chat{}; claim it first", holder.as_deref().map(|h| format!(" ({h} does)")).unwrap_or_default())]
    NotHolder {
        agent: String,
        holder: Option<String>,
    },
    #[error("{0}")]
    Refused(#[from] ActionError),
    #[error("the chat could not be saved: {0}")]
    Store(#[from] StoreError),
    #[error("the reply was not delivered: {reason}")]
    NotDelivered { reason: String },
    #[error("the reply may not have reached the buyer: {reason}")]
    MaybeDelivered { reason: String },
    #[error("the chat is busy with more messages than it can queue; try again")]
    Busy,
    #[error("xiaoer is shutting down")]
    Stopped,
    /// The instance answering the chat's shop carried the command out and it failed there;
    /// `kind` is `conflict`, `unavailable`, `not_delivered` or `failed`.
    #[error("{message}")]
    Remote { kind: String, message: String },
}

/// Why a send to the gateway failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct SendFailure {
    pub reason: String,
    /// The gateway may have delivered it (a timeout, a connection lost after the write).
    pub maybe_delivered: bool,
}

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
    ) -> impl Future<Output = Result<String, SendFailure>> + Send {
        O::send(self, key, text)
    }
}

/// How a shop is named to buyers (`{shop}`), by shop account id.
pub type ShopNames = std::collections::HashMap<String, String>;

/// Each shop's business hours, by shop account id; a shop without an entry is always open.
pub type ShopHours = std::collections::HashMap<String, BusinessHours>;

/// The off-hours form of an escalation's acknowledgement: `<key>.off_hours`.
pub const OFF_HOURS_SUFFIX: &str = ".off_hours";
/// The acknowledgement of any escalation while the shop is closed, for keys without their own
/// off-hours form.
pub const ESCALATED_OFF_HOURS: &str = "escalated_off_hours";
/// `{queue_eta}` while closed, when the schedule has no opening within its horizon.
const NO_OPENING_WORDS: &str = "下一个工作日";

/// What every worker shares.
pub struct Shared<O> {
    pub store: Store,
    pub outbox: O,
    pub rules: LiveRules,
    pub policy: ConversationPolicy,
    pub escalation: EscalationPolicy,
    pub shop_names: ShopNames,
    pub hours: ShopHours,
    /// Each shop's platform response clock.
    pub clocks: ShopClocks,
    /// Chat events, announced after their commit.
    pub events: broadcast::Sender<ChatEvent>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This instance's shop leases, when several instances share the store (`cluster`).
    pub leases: Option<Arc<crate::cluster::Leases>>,
}

/// A message the worker could not handle; the chat goes on with the next one.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "message {message_id} of chat {key} was not handled and not marked as seen, so a redelivery will handle it: {source}"
    )]
    NotStored {
        key: ConversationKey,
        message_id: String,
        source: StoreError,
    },
}

/// Replies this worker sent, to tell echoes of them from humans answering elsewhere.
const SENT_MEMORY: usize = 64;
/// An echo whose message id is unknown (the send timed out) is still recognised by its text
/// within this many milliseconds.
const ECHO_TEXT_WINDOW_MS: i64 = 120_000;
/// How often a turn is tried before the message is given up (left for a redelivery).
const COMMIT_ATTEMPTS: u32 = 5;
/// The pause before the first retry of a turn the database failed; it grows fourfold.
const COMMIT_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// A product card explains the questions that follow it for this long.
const ITEM_CONTEXT_MS: i64 = 30 * 60 * 1000;

/// A reply rendered and recorded, waiting to be sent.
struct Outgoing {
    text: String,
    sender: Sender,
}

pub struct Worker<O> {
    key: ConversationKey,
    shared: Arc<Shared<O>>,
    recent_replies: VecDeque<i64>,
    sent: VecDeque<(String, String, i64)>,
    rotation: usize,
    known: Option<Known>,
    /// The lease the last turn was committed under, which its replies are sent under.
    fence: Option<Fence>,
}

/// The chat as this worker last committed it, so the next buyer message need not read it back.
/// Kept only while the chat has no open escalation (agents act on escalated chats) and only
/// between two buyer messages: any other command forgets it. A copy made stale by another
/// process (`xiaoer queue`) does no harm: the write is conditional on the version, the
/// conflict drops the copy, and the retry reads afresh.
struct Known {
    conversation: Conversation,
    /// The open response-clock round, if any.
    round: Option<Round>,
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
            known: None,
            fence: None,
        }
    }

    /// Carries out one command.
    ///
    /// # Errors
    ///
    /// A message that could not be stored (it is then not answered either: an answer that
    /// cannot be recorded could be sent twice after a restart). Agent commands report their
    /// failures through their completion channel.
    pub async fn handle(&mut self, command: ChatCommand) -> Result<(), WorkerError> {
        if !matches!(&command, ChatCommand::Message(m) if !m.outgoing) {
            self.known = None;
        }
        match command {
            ChatCommand::Message(message) if message.outgoing => {
                self.handle_outgoing(message).await
            }
            ChatCommand::Message(message) => self.handle_message(message).await,
            ChatCommand::AgentReply { agent, text, done } => {
                let _ = done.send(self.agent_reply(&agent, &text).await);
                Ok(())
            }
            ChatCommand::Act {
                escalation,
                action,
                done,
            } => {
                let _ = done.send(self.act(escalation, &action).await);
                Ok(())
            }
        }
    }

    /// Commits a turn, under this instance's lease on the chat's shop when the store is
    /// shared: a turn for a shop this instance does not hold now is not written.
    async fn commit(&mut self, turn: &mut Turn) -> Result<TurnOutcome, StoreError> {
        if let Some(leases) = &self.shared.leases {
            let fence = leases
                .fence(&self.key)
                .ok_or_else(|| StoreError::LeaseLost {
                    shop: format!("{}/{}", self.key.platform, self.key.self_id),
                })?;
            turn.fence = Some(fence.clone());
            self.fence = Some(fence);
        }
        self.shared.store.commit_turn(turn.clone()).await
    }

    fn emit(&self, event: ChatEvent) {
        // Nobody listening is fine: the console and metrics are optional.
        let _ = self.shared.events.send(event);
    }

    async fn handle_message(&mut self, message: ChatMessage) -> Result<(), WorkerError> {
        if message.key.user_id == message.key.self_id {
            debug!(chat = %self.key, "ignoring a message from the shop account to itself");
            return Ok(());
        }
        let now = now_ms();
        let started = std::time::Instant::now();
        let rules = self.shared.rules.load().for_shop(&self.key.self_id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.try_message(&message, &rules, now).await;
            match result {
                Ok(answered) => {
                    if answered {
                        self.shared.metrics.bot_first_response(started.elapsed());
                    }
                    return Ok(());
                }
                Err(error) if retry_after(attempt, &error, &self.key).await => {}
                Err(source) => {
                    return Err(WorkerError::NotStored {
                        key: self.key.clone(),
                        message_id: message.message_id,
                        source,
                    });
                }
            }
        }
    }

    /// Plans and commits one buyer message, then sends what it promised; true when a reply
    /// reached the gateway.
    async fn try_message(
        &mut self,
        message: &ChatMessage,
        rules: &RuleSet,
        now: i64,
    ) -> Result<bool, StoreError> {
        let store = self.shared.store.clone();
        // What this worker committed last, or else read fresh: an agent may have claimed or
        // closed the chat meanwhile.
        let (mut conversation, known_round) = match self.known.take() {
            Some(known) => (known.conversation, Some(known.round)),
            None => {
                let conversation = store.conversation_or_new(&self.key, now).await?;
                // Rounds are written only by turns, and every turn stores its conversation: a
                // chat the store has never seen has no round open, so do not ask.
                let round = (conversation.version == 0).then_some(None);
                (conversation, round)
            }
        };
        let before = conversation.clone();
        let open = match conversation.open_escalation {
            Some(id) => store.escalation(id).await?,
            None => None,
        };
        let decided = self.route(rules, message, &mut conversation, now);
        let (moment, reopens) = self.moment(now);
        let mut recent = self.recent_replies.clone();
        let plan = plan_message(
            &mut conversation,
            &decided,
            moment,
            open.as_ref().map(|e| e.queue),
            &self.shared.policy,
            &self.shared.escalation,
            &mut recent,
        );
        debug!(chat = %self.key, outcome = decided.kind.as_str(), by = decided.by.as_str(), rule = ?decided.rule, confidence = ?decided.confidence, why = %decided.why, steps = ?plan.steps, "planned");
        let (actor, reason) = plan
            .state_change
            .clone()
            .unwrap_or((Actor::Bot, "message handled".into()));
        let mut turn = Turn::new(conversation, actor, reason, now);
        turn.inbound = Some(InboundLine {
            message_id: message.message_id.clone(),
            sender: Sender::Buyer,
            direction: Direction::Inbound,
            text: transcript_text(message),
            parts: message.parts.clone(),
            at_ms: now,
            decision: Some(DecisionRecord {
                action: decided.kind.as_str().to_owned(),
                topic: decided.topic_name().to_owned(),
                rule: decided.rule.clone(),
                decided_by: decided.by.as_str().to_owned(),
            }),
        });
        let outgoing = self.steps_into_turn(
            &plan,
            rules,
            &before,
            &mut turn,
            &message.text,
            now,
            reopens.as_deref(),
        );
        let round_before = self.time_turn(&mut turn, known_round).await?;
        let committed = self.commit(&mut turn).await?;
        let TurnOutcome::Applied {
            version,
            escalation,
            outbound,
        } = committed
        else {
            info!(chat = %self.key, message_id = %message.message_id, "redelivered message ignored");
            return Ok(false);
        };
        if turn.conversation.open_escalation.is_none() && turn.escalations.is_empty() {
            let mut conversation = turn.conversation.clone();
            conversation.version = version;
            self.known = Some(Known {
                conversation,
                round: round_after(round_before, &turn.clock, turn.at_ms),
            });
        }
        self.recent_replies = recent;
        self.count_breaches(&turn);
        self.shared.metrics.message_received(&self.key.self_id);
        self.shared.metrics.decision(&decided);
        self.announce(&before, &turn, escalation);
        let mut answered = false;
        for (line, reply) in outbound.into_iter().zip(outgoing) {
            answered |= self.deliver(line, &reply.text, reply.sender).await.is_ok();
        }
        for step in &plan.steps {
            if let Step::Suppressed { key } = step {
                warn!(chat = %self.key, reply = %key, "reply held back by the per-chat rate limit");
            }
        }
        Ok(answered)
    }

    /// Routes the message's text; a message without text is recorded and answered by no rule,
    /// and a question after a product card is routed with the item in view.
    fn route(
        &self,
        rules: &RuleSet,
        message: &ChatMessage,
        conversation: &mut Conversation,
        now: i64,
    ) -> Decided {
        if let Some(Part::Item { item_id, title }) = message
            .parts
            .iter()
            .rev()
            .find(|p| matches!(p, Part::Item { .. }))
        {
            conversation.last_item = Some(ItemRef {
                id: item_id.clone(),
                title: title.clone(),
            });
        }
        if message.text.trim().is_empty() {
            return Decided {
                kind: OutcomeKind::Ignore,
                why: "a message without text".into(),
                ..Default::default()
            };
        }
        let decided = route(rules, &message.text);
        let item_recent = conversation
            .last_buyer_ms
            .is_some_and(|at| now.saturating_sub(at) < ITEM_CONTEXT_MS);
        match (&conversation.last_item, decided.kind) {
            (Some(item), OutcomeKind::Fallback) if item_recent || !message.parts.is_empty() => {
                let mut with_item = route(rules, &format!("{} {}", item.title, message.text));
                with_item.why = format!("{} (with the product card {})", with_item.why, item.id);
                // The item explains a question; it must not turn one into a complaint.
                if with_item.kind == OutcomeKind::Reply {
                    with_item
                } else {
                    decided
                }
            }
            _ => decided,
        }
    }

    /// Where `now` falls in the shop's business hours: the planner's [`Moment`], and while
    /// closed, when people are back in words for the buyer (`{queue_eta}`).
    fn moment(&self, now: i64) -> (Moment, Option<String>) {
        let Some(hours) = self.shared.hours.get(&self.key.self_id) else {
            return (Moment::open(now), None);
        };
        let Ok(at) = jiff::Timestamp::from_millisecond(now) else {
            return (Moment::open(now), None);
        };
        let Some((since, opens)) = hours.closed_period(at) else {
            return (Moment::open(now), None);
        };
        let words = if opens == jiff::Timestamp::MAX {
            NO_OPENING_WORDS.to_owned()
        } else {
            hours.eta_words(at, opens)
        };
        (Moment::closed(now, since.as_millisecond()), Some(words))
    }

    /// Adds the plan's escalation steps and rendered replies to the turn; returns the replies
    /// in the order their lines are recorded. `reopens` is set while the shop is closed.
    #[allow(clippy::too_many_arguments)]
    fn steps_into_turn(
        &mut self,
        plan: &Plan,
        rules: &RuleSet,
        before: &Conversation,
        turn: &mut Turn,
        first_message: &str,
        now: i64,
        reopens: Option<&str>,
    ) -> Vec<Outgoing> {
        let mut outgoing = Vec::new();
        for step in &plan.steps {
            match step {
                Step::CloseIdle => {
                    if let Some(id) = before.open_escalation {
                        turn.escalations
                            .push(EscalationStep::Close { id, outcome: None });
                    }
                }
                Step::Escalate {
                    queue,
                    reason,
                    rule,
                } => turn.escalations.push(EscalationStep::Open {
                    queue: *queue,
                    reason: reason.clone(),
                    rule: rule.clone(),
                    first_message: first_message.to_owned(),
                }),
                Step::Raise { queue, reason } => {
                    if let Some(id) = before.open_escalation {
                        turn.escalations.push(EscalationStep::Raise {
                            id,
                            queue: *queue,
                            reason: reason.clone(),
                        });
                    }
                }
                Step::Send {
                    key,
                    queue,
                    off_hours,
                } => {
                    let key = if *off_hours {
                        off_hours_key(rules, key)
                    } else {
                        key.as_str()
                    };
                    if let Some(text) = self.render(rules, key, *queue, reopens) {
                        turn.outbound.push(OutboundLine {
                            sender: Sender::Bot,
                            text: text.clone(),
                            at_ms: now,
                        });
                        outgoing.push(Outgoing {
                            text,
                            sender: Sender::Bot,
                        });
                    }
                }
                Step::Suppressed { .. } => {}
            }
        }
        outgoing
    }

    /// Renders `key`; `reopens` (while the shop is closed) is what `{queue_eta}` says.
    fn render(
        &mut self,
        rules: &RuleSet,
        key: &str,
        queue: Option<Queue>,
        reopens: Option<&str>,
    ) -> Option<String> {
        let context = RenderContext {
            shop: self
                .shared
                .shop_names
                .get(&self.key.self_id)
                .map(String::as_str),
            buyer: None,
            queue,
            queue_eta: reopens.or_else(|| queue.map(|q| self.shared.escalation.eta(q))),
        };
        self.rotation = self.rotation.wrapping_add(1);
        let text = rules.replies().render(key, self.rotation, &context);
        if text.is_none() {
            warn!(chat = %self.key, reply = %key, "reply key missing from the rule set; nothing sent");
        }
        text
    }

    /// Announces what a committed turn changed.
    fn announce(&self, before: &Conversation, turn: &Turn, escalation: Option<i64>) {
        let key = &self.key;
        if let Some(inbound) = &turn.inbound {
            self.emit(ChatEvent::Message {
                key: key.clone(),
                direction: inbound.direction,
                sender: inbound.sender.clone(),
                text: inbound.text.clone(),
                at_ms: inbound.at_ms,
            });
        }
        let after = &turn.conversation;
        if before.state != after.state {
            self.emit(ChatEvent::StateChanged {
                key: key.clone(),
                from: before.state,
                to: after.state,
                actor: turn.actor.clone(),
                reason: turn.reason.clone(),
                at_ms: turn.at_ms,
            });
        }
        for step in &turn.escalations {
            let (id, kind, queue) = match step {
                EscalationStep::Open { queue, .. } => (escalation, EscalationEvent::Opened, *queue),
                EscalationStep::Raise { id, queue, .. } => {
                    (Some(*id), EscalationEvent::Raised, *queue)
                }
                EscalationStep::Claim { id, .. } => {
                    (Some(*id), EscalationEvent::Claimed, Queue::Human)
                }
                EscalationStep::Release { id } => {
                    (Some(*id), EscalationEvent::Released, Queue::Human)
                }
                EscalationStep::Transfer { id, queue, .. } => {
                    (Some(*id), EscalationEvent::Transferred, *queue)
                }
                EscalationStep::Close { id, .. } => {
                    (Some(*id), EscalationEvent::Closed, Queue::Human)
                }
            };
            let Some(id) = id else { continue };
            if kind == EscalationEvent::Opened {
                self.shared.metrics.escalated(queue);
                info!(chat = %key, %queue, escalation = id, reason = %turn.reason, "escalated");
            } else {
                info!(chat = %key, escalation = id, event = %kind, actor = %turn.actor, "escalation {kind}");
            }
            self.emit(ChatEvent::Escalation {
                id,
                key: key.clone(),
                kind,
                queue,
                actor: turn.actor.clone(),
                at_ms: turn.at_ms,
            });
        }
    }

    /// Adds the turn's response-clock steps: a buyer message opens a round when none is open,
    /// and the turn's first reply that counts (an agent's, the shop's, the bot's while the chat
    /// is with the bot) answers it. A reply counts once it is recorded, before its send.
    /// Adds the turn's response-clock steps, given the open round when the caller knows it
    /// (else it is read); returns the open round the steps were planned from.
    async fn time_turn(
        &self,
        turn: &mut Turn,
        known: Option<Option<Round>>,
    ) -> Result<Option<Round>, StoreError> {
        let open = match known {
            Some(round) => round,
            None => self
                .shared
                .store
                .open_round(&self.key)
                .await?
                .map(|r| Round {
                    started_ms: r.started_ms,
                    budget_ms: r.budget_ms,
                }),
        };
        let inbound = turn.inbound.as_ref();
        let replies: Vec<Sender> = inbound
            .filter(|line| line.direction == Direction::Outbound)
            .map(|line| line.sender.clone())
            .into_iter()
            .chain(turn.outbound.iter().map(|line| line.sender.clone()))
            .collect();
        let facts = TurnFacts {
            buyer_wrote: inbound.is_some_and(|line| line.sender == Sender::Buyer),
            replies: &replies,
            with: ChatWith::of(turn.conversation.state),
            at_ms: turn.at_ms,
        };
        turn.clock = self
            .shared
            .clocks
            .for_shop(&self.key.self_id)
            .steps(open, &facts);
        Ok(open)
    }

    /// Counts a round the committed turn ended late as a breach of the platform's clock.
    fn count_breaches(&self, turn: &Turn) {
        for step in &turn.clock {
            if let RoundStep::Answer {
                by,
                counted_ms,
                in_time: false,
            } = step
            {
                self.shared.metrics.clock_breach(&self.key.self_id);
                info!(chat = %self.key, answered_by = %by, counted_ms, "answered after the platform's response time");
            }
        }
    }

    /// Sends a recorded line and marks what became of it.
    async fn deliver(
        &mut self,
        line: i64,
        text: &str,
        sender: Sender,
    ) -> Result<String, SendFailure> {
        if let (Some(leases), Some(fence)) = (&self.shared.leases, &self.fence)
            && !leases.may_send(&self.key, fence)
        {
            warn!(chat = %self.key, line, "this instance's lease on the shop ran out before the reply went out, so it is not sent (another instance answers the shop now); the transcript keeps it as pending");
            return Err(SendFailure {
                reason: "this xiaoer instance no longer answers the shop".to_owned(),
                maybe_delivered: false,
            });
        }
        let now = now_ms();
        // Remember the text before sending: the echo can arrive before the send's response.
        self.sent.push_back((String::new(), text.to_owned(), now));
        if self.sent.len() > SENT_MEMORY {
            self.sent.pop_front();
        }
        let result = self.shared.outbox.send(&self.key, text).await;
        let (delivery, message_id) = match &result {
            Ok(message_id) => {
                self.shared
                    .metrics
                    .message_sent(&self.key.self_id, matches!(sender, Sender::Agent(_)));
                if let Some(last) = self.sent.back_mut() {
                    last.0 = message_id.clone();
                }
                (Delivery::Sent, Some(message_id.clone()))
            }
            Err(failure) => {
                warn!(chat = %self.key, %failure, "reply not delivered");
                let delivery = if failure.maybe_delivered {
                    Delivery::Unknown
                } else {
                    Delivery::Failed
                };
                (delivery, None)
            }
        };
        if let Err(error) = self
            .shared
            .store
            .mark_delivery(line, delivery, message_id)
            .await
        {
            warn!(chat = %self.key, %error, "cannot record whether a reply was delivered");
        } else if matches!(sender, Sender::Agent(_)) {
            // The agent's screen reloads the transcript next; it must show what became of it.
            let _ = self.shared.store.flush().await;
        }
        if delivery != Delivery::Failed {
            self.emit(ChatEvent::Message {
                key: self.key.clone(),
                direction: Direction::Outbound,
                sender,
                text: text.to_owned(),
                at_ms: now,
            });
        }
        result
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_outgoing(&message, now).await {
                Ok(()) => return Ok(()),
                Err(error) if retry_after(attempt, &error, &self.key).await => {}
                Err(source) => {
                    return Err(WorkerError::NotStored {
                        key: self.key.clone(),
                        message_id: message.message_id,
                        source,
                    });
                }
            }
        }
    }

    async fn try_outgoing(&mut self, message: &ChatMessage, now: i64) -> Result<(), StoreError> {
        let mut conversation = self
            .shared
            .store
            .conversation_or_new(&self.key, now)
            .await?;
        let before = conversation.clone();
        let plan = plan_outgoing(&mut conversation, now, &self.shared.policy);
        let (actor, reason) = plan.state_change.clone().unwrap_or((
            Actor::ShopOutgoing,
            "the shop wrote from another client".into(),
        ));
        let mut turn = Turn::new(conversation, actor, reason, now);
        turn.inbound = Some(InboundLine {
            message_id: message.message_id.clone(),
            sender: Sender::Shop,
            direction: Direction::Outbound,
            text: transcript_text(message),
            parts: message.parts.clone(),
            at_ms: now,
            decision: None,
        });
        self.time_turn(&mut turn, None).await?;
        if let TurnOutcome::Applied { .. } = self.commit(&mut turn).await? {
            self.count_breaches(&turn);
            if turn.conversation.state == ConversationState::Paused
                && before.state != ConversationState::Paused
            {
                info!(chat = %self.key, "a person answered from another client; bot paused");
            }
            self.announce(&before, &turn, None);
        }
        Ok(())
    }

    /// Reads the chat and its open escalation.
    async fn chat(&self, now: i64) -> Result<(Conversation, Option<Escalation>), StoreError> {
        let store = &self.shared.store;
        let conversation = store.conversation_or_new(&self.key, now).await?;
        let escalation = match conversation.open_escalation {
            Some(id) => store.escalation(id).await?,
            None => None,
        };
        Ok((conversation, escalation))
    }

    async fn agent_reply(&mut self, agent: &str, text: &str) -> Result<SentReply, CommandError> {
        let mut attempt = 0;
        let line = loop {
            attempt += 1;
            let now = now_ms();
            let (mut conversation, escalation) = self.chat(now).await?;
            let holder = escalation.as_ref().and_then(|e| e.claimed_by.clone());
            if conversation.state != ConversationState::Human || holder.as_deref() != Some(agent) {
                return Err(CommandError::NotHolder {
                    agent: agent.to_owned(),
                    holder,
                });
            }
            // The first person to answer since the chat was handed over ends the buyer's wait.
            let first_answer = escalation.as_ref().and_then(|e| {
                (conversation
                    .last_staff_ms
                    .is_none_or(|at| at < e.created_ms))
                .then_some(e.created_ms)
            });
            conversation.last_staff_ms = Some(now);
            let mut turn = Turn::new(
                conversation,
                Actor::Agent(agent.to_owned()),
                "agent replied",
                now,
            );
            turn.outbound.push(OutboundLine {
                sender: Sender::Agent(agent.to_owned()),
                text: text.to_owned(),
                at_ms: now,
            });
            self.time_turn(&mut turn, None).await?;
            match self.commit(&mut turn).await {
                Ok(TurnOutcome::Applied { outbound, .. }) => {
                    self.count_breaches(&turn);
                    break outbound
                        .first()
                        .copied()
                        .map(|line| (line, first_answer, now));
                }
                Ok(TurnOutcome::Duplicate) => return Err(CommandError::NoEscalation),
                Err(error) if retry_after(attempt, &error, &self.key).await => continue,
                Err(error) => return Err(error.into()),
            }
        };
        let Some((line, first_answer, now)) = line else {
            return Err(CommandError::NoEscalation);
        };
        match self
            .deliver(line, text, Sender::Agent(agent.to_owned()))
            .await
        {
            Ok(message_id) => {
                if let Some(since) = first_answer {
                    self.shared
                        .metrics
                        .human_first_response(millis_between(since, now));
                }
                Ok(SentReply { message_id })
            }
            Err(failure) if failure.maybe_delivered => Err(CommandError::MaybeDelivered {
                reason: failure.reason,
            }),
            Err(failure) => Err(CommandError::NotDelivered {
                reason: failure.reason,
            }),
        }
    }

    async fn act(&mut self, id: i64, action: &AgentAction) -> Result<(), CommandError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let now = now_ms();
            let conversation = self
                .shared
                .store
                .conversation_or_new(&self.key, now)
                .await?;
            let escalation = self
                .shared
                .store
                .escalation(id)
                .await?
                .ok_or(CommandError::NoEscalation)?;
            let before = conversation.clone();
            let mut turn = commands::plan(conversation, &escalation, action, now)?;
            let joined =
                matches!(action, AgentAction::Claim { .. }) && escalation.claimed_by.is_none();
            let rules = self.shared.rules.load().for_shop(&self.key.self_id);
            // Tell the buyer a person is here, when the shop has a line for it.
            let greeting = if joined {
                self.render_optional(&rules, "agent_joined", Some(escalation.queue))
            } else {
                None
            };
            if let Some(text) = &greeting {
                turn.outbound.push(OutboundLine {
                    sender: Sender::Bot,
                    text: text.clone(),
                    at_ms: now,
                });
            }
            self.time_turn(&mut turn, None).await?;
            match self.commit(&mut turn).await {
                Ok(TurnOutcome::Applied {
                    escalation: id,
                    outbound,
                    ..
                }) => {
                    self.count_breaches(&turn);
                    self.announce(&before, &turn, id);
                    if joined {
                        self.shared
                            .metrics
                            .claimed(escalation.queue, millis_between(escalation.created_ms, now));
                    }
                    if let (Some(text), Some(line)) = (greeting, outbound.first()) {
                        let _ = self.deliver(*line, &text, Sender::Bot).await;
                    }
                    return Ok(());
                }
                Ok(TurnOutcome::Duplicate) => return Ok(()),
                Err(error) if retry_after(attempt, &error, &self.key).await => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn render_optional(
        &mut self,
        rules: &RuleSet,
        key: &str,
        queue: Option<Queue>,
    ) -> Option<String> {
        rules.replies().get(key)?;
        self.render(rules, key, queue, None)
    }
}

/// Which reply acknowledges an escalation while the shop is closed: the key's own off-hours
/// form, else the shared one, else the key itself (whose wait then reads as a clock time).
fn off_hours_key<'a>(rules: &'a RuleSet, key: &'a str) -> &'a str {
    let replies = rules.replies();
    let own = format!("{key}{OFF_HOURS_SUFFIX}");
    if let Some(reply) = replies.get(&own) {
        return reply.key.as_str();
    }
    if let Some(reply) = replies.get(ESCALATED_OFF_HOURS) {
        return reply.key.as_str();
    }
    key
}

/// Whether to plan and commit again after the `attempt`-th try failed with `error`: a stale
/// read is planned again at once, a database failure after a pause that grows fourfold.
async fn retry_after(attempt: u32, error: &StoreError, chat: &ConversationKey) -> bool {
    if attempt >= COMMIT_ATTEMPTS || !retryable(error) {
        return false;
    }
    if error.is_database_failure() {
        let pause = COMMIT_RETRY_PAUSE * 4u32.pow(attempt - 1);
        warn!(%chat, %error, "could not store the chat; retrying in {pause:?}");
        tokio::time::sleep(pause).await;
    } else {
        debug!(%chat, %error, "chat changed meanwhile; planning again");
    }
    true
}

/// Whether a turn that failed this way may succeed when planned and tried again.
fn retryable(error: &StoreError) -> bool {
    matches!(error, StoreError::Conflict { .. }) || error.is_database_failure()
}

/// What the transcript shows for a message: its text, and what else it carried.
fn transcript_text(message: &ChatMessage) -> String {
    let mut text = message.text.clone();
    for part in &message.parts {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&part.to_string());
    }
    text
}

/// The time from `from_ms` to `to_ms`, zero if the clock went back.
fn millis_between(from_ms: i64, to_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(to_ms.saturating_sub(from_ms)).unwrap_or(0))
}

/// The chat's open round once `steps` are written: what the store's `open_round` would read.
fn round_after(open: Option<Round>, steps: &[RoundStep], at_ms: i64) -> Option<Round> {
    steps.iter().fold(open, |open, step| match step {
        RoundStep::Open { budget_ms } => open.or(Some(Round {
            started_ms: at_ms,
            budget_ms: *budget_ms,
        })),
        RoundStep::Answer { .. } => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_after_a_turn_is_what_its_steps_leave_open() {
        let open = Round {
            started_ms: 100,
            budget_ms: 180_000,
        };
        let opened = RoundStep::Open { budget_ms: 30_000 };
        let answered = RoundStep::Answer {
            by: "bot".into(),
            counted_ms: 5,
            in_time: true,
        };
        assert_eq!(round_after(None, &[], 500), None);
        assert_eq!(round_after(Some(open), &[], 500), Some(open));
        assert_eq!(
            round_after(None, std::slice::from_ref(&opened), 500),
            Some(Round {
                started_ms: 500,
                budget_ms: 30_000
            })
        );
        // A round already open is not restarted, as the store's insert is not.
        assert_eq!(
            round_after(Some(open), std::slice::from_ref(&opened), 500),
            Some(open)
        );
        assert_eq!(round_after(None, &[opened, answered.clone()], 500), None);
        assert_eq!(round_after(Some(open), &[answered], 500), None);
    }

    #[test]
    fn a_message_without_text_is_described_in_the_transcript() {
        let message = ChatMessage {
            key: ConversationKey::new("dev", "s", "b"),
            message_id: "m".into(),
            text: String::new(),
            parts: vec![
                Part::Other {
                    kind: "face".into(),
                },
                Part::Item {
                    item_id: "42".into(),
                    title: "纯棉T恤".into(),
                },
            ],
            outgoing: false,
        };
        assert_eq!(transcript_text(&message), "[表情] [商品 纯棉T恤 (42)]");
    }

    #[test]
    fn an_off_hours_acknowledgement_prefers_the_key_s_own_form() {
        use crate::rules::{Layer, load};
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
        let plain = load(&[Layer::overlay(&fixture)]).unwrap().rules;
        // Without off-hours replies the key itself is sent.
        assert_eq!(off_hours_key(&plain, "refund_ack"), "refund_ack");

        let overlay = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(overlay.path().join("rules")).unwrap();
        std::fs::create_dir_all(overlay.path().join("replies")).unwrap();
        std::fs::write(
            overlay.path().join("replies/off.toml"),
            "[[reply]]\nkey = \"escalated_off_hours\"\ntext = \"已转{queue}，{queue_eta}上班后联系您\"\n\
             [[reply]]\nkey = \"refund_ack.off_hours\"\ntext = \"退款的事{queue_eta}处理\"\n",
        )
        .unwrap();
        let rules = load(&[Layer::overlay(&fixture), Layer::overlay(overlay.path())])
            .unwrap()
            .rules;
        assert_eq!(off_hours_key(&rules, "refund_ack"), "refund_ack.off_hours");
        assert_eq!(off_hours_key(&rules, "after_sale_ack"), ESCALATED_OFF_HOURS);
    }

    #[test]
    fn only_conflicts_and_database_failures_are_retried() {
        assert!(retryable(&StoreError::Injected));
        assert!(retryable(&StoreError::Conflict {
            key: ConversationKey::new("a", "b", "c"),
            expected: 1,
            found: 2
        }));
        assert!(!retryable(&StoreError::EscalationClosed { id: 1 }));
    }
}
