//! Agents across instances sharing a PostgreSQL store: the console of any instance may act on
//! any chat and shows every instance's chats live.
//!
//! Commands: the console of any instance may act on any chat. A reply or action on a chat of a shop another instance answers is written to
//! the store as a durable command ([`forward`]); the shop's owner, woken by `NOTIFY` (or its
//! one-second poll), carries it out through the chat's worker like one of its own agents'
//! commands ([`run`]) and writes the outcome back, which the first instance waits for and shows.
//!
//! Live updates: every instance sends its chat events to the others (`NOTIFY xiaoer_events`, a
//! JSON payload with the sender's id, long message texts cut short to fit PostgreSQL's 8,000-byte
//! limit) and lays theirs into its console's feed ([`share_events`]). An event missed while the
//! listening connection was away costs the console a stale line until its next reload, nothing
//! more: the store is the record.
//!
//! The owner's worker does what it always does (claims are atomic, replies are recorded before
//! they are sent, and a reply goes out under the owner's lease), so two agents on two instances
//! claiming one chat get one winner, whichever consoles they use.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cluster::Leases;
use crate::conversation::commands::AgentAction;
use crate::conversation::worker::{ChatCommand, CommandError, SentReply};
use crate::daemon::Handle;
use crate::model::{ChatEvent, ConversationKey};
use crate::store::{CommandOutcome, RemoteAction, RemoteCommand, Store, StoreError};

/// How long an agent waits for the owning instance before being told it did not answer.
const WAIT: Duration = Duration::from_secs(20);
/// How often the waiting instance looks for the outcome.
const LOOK_EVERY: Duration = Duration::from_millis(50);
/// How often an owner looks for commands when no `NOTIFY` woke it.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// The command as the store keeps it: (agent, escalation, action); `None` for a buyer message.
fn stored(command: &ChatCommand) -> Option<(String, Option<i64>, RemoteAction)> {
    match command {
        ChatCommand::Message(_) => None,
        ChatCommand::AgentReply { agent, text, .. } => Some((
            agent.clone(),
            None,
            RemoteAction::Reply { text: text.clone() },
        )),
        ChatCommand::Act {
            escalation, action, ..
        } => {
            let (agent, action) = match action {
                AgentAction::Claim { agent } => (agent.clone(), RemoteAction::Claim),
                AgentAction::Release { agent } => (agent.clone(), RemoteAction::Release),
                AgentAction::Resolve { agent, outcome } => (
                    agent.clone(),
                    RemoteAction::Resolve {
                        outcome: outcome.clone(),
                    },
                ),
                AgentAction::HandBack { agent } => (agent.clone(), RemoteAction::HandBack),
                AgentAction::Transfer { by, queue, agent } => (
                    by.clone(),
                    RemoteAction::Transfer {
                        queue: *queue,
                        agent: agent.clone(),
                    },
                ),
                AgentAction::LeaseExpired => ("system".to_owned(), RemoteAction::LeaseExpired),
            };
            Some((agent, Some(*escalation), action))
        }
    }
}

/// Hands `command` (from this instance's console) to the instance answering `key`'s shop and
/// completes it with that instance's outcome. Runs as a task of its own.
pub async fn forward(
    store: Store,
    leases: Arc<Leases>,
    key: ConversationKey,
    command: ChatCommand,
) {
    let Some((agent, escalation, action)) = stored(&command) else {
        return;
    };
    let result = async {
        let id = store
            .submit_command(&key, &agent, escalation, &action, leases.instance())
            .await?;
        debug!(chat = %key, command = id, "agent's command handed to the shop's instance");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(outcome) = store.command_outcome(id).await? {
                return Ok(outcome);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(CommandOutcome {
                    outcome: "unavailable".to_owned(),
                    result: Some(format!(
                        "the xiaoer instance answering this shop has not carried it out within {} seconds; it will when it can, so look at the chat before trying again",
                        WAIT.as_secs()
                    )),
                });
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }
    .await;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            warn!(%error, chat = %key, "cannot hand an agent's command to the shop's instance");
            return command.refuse(CommandError::Store(error));
        }
    };
    match command {
        ChatCommand::AgentReply { done, .. } => {
            let _ = done.send(match outcome.outcome.as_str() {
                "ok" => Ok(SentReply {
                    message_id: outcome.result.unwrap_or_default(),
                }),
                _ => Err(remote_error(outcome)),
            });
        }
        ChatCommand::Act { done, .. } => {
            let _ = done.send(match outcome.outcome.as_str() {
                "ok" => Ok(()),
                _ => Err(remote_error(outcome)),
            });
        }
        ChatCommand::Message(_) => {}
    }
}

fn remote_error(outcome: CommandOutcome) -> CommandError {
    CommandError::Remote {
        kind: outcome.outcome,
        message: outcome
            .result
            .unwrap_or_else(|| "the instance answering this shop refused it".to_owned()),
    }
}

/// How a command ended, in the store's words.
fn outcome_of<T>(
    result: Result<T, CommandError>,
    ok: impl FnOnce(T) -> Option<String>,
) -> CommandOutcome {
    let (outcome, result) = match result {
        Ok(value) => ("ok".to_owned(), ok(value)),
        Err(error) => {
            let kind = match &error {
                CommandError::NoEscalation
                | CommandError::NotHolder { .. }
                | CommandError::Refused(_)
                | CommandError::Store(
                    StoreError::AlreadyClaimed { .. }
                    | StoreError::EscalationClosed { .. }
                    | StoreError::NotClaimed { .. },
                ) => "conflict",
                CommandError::NotDelivered { .. } | CommandError::MaybeDelivered { .. } => {
                    "not_delivered"
                }
                CommandError::Busy | CommandError::Stopped => "unavailable",
                CommandError::Remote { kind, .. } => kind.as_str(),
                CommandError::Store(_) => "failed",
            }
            .to_owned();
            // A refusal reads as the console would say it for a chat of its own.
            let message = match error {
                CommandError::Store(StoreError::AlreadyClaimed { id, agent }) => {
                    format!("escalation {id} is already claimed by {agent}")
                }
                CommandError::Store(
                    refusal @ (StoreError::EscalationClosed { .. } | StoreError::NotClaimed { .. }),
                ) => refusal.to_string(),
                other => other.to_string(),
            };
            (kind, Some(message))
        }
    };
    CommandOutcome { outcome, result }
}

/// The agent's action a stored command asks for; `None` for a reply, which is no action.
fn agent_action(action: RemoteAction, agent: String) -> Option<AgentAction> {
    Some(match action {
        RemoteAction::Reply { .. } => return None,
        RemoteAction::Claim => AgentAction::Claim { agent },
        RemoteAction::Release => AgentAction::Release { agent },
        RemoteAction::Resolve { outcome } => AgentAction::Resolve { agent, outcome },
        RemoteAction::HandBack => AgentAction::HandBack { agent },
        RemoteAction::Transfer { queue, agent: to } => AgentAction::Transfer {
            by: agent,
            queue,
            agent: to,
        },
        RemoteAction::LeaseExpired => AgentAction::LeaseExpired,
    })
}

/// Carries out one handed-over command as this instance's own console would, through
/// `handle`.
async fn carry_out(handle: Handle, command: RemoteCommand) {
    let RemoteCommand {
        id,
        key,
        agent,
        escalation_id,
        action,
    } = command;
    let outcome = match action {
        RemoteAction::Reply { text } => outcome_of(
            handle.agent_reply(key.clone(), &agent, &text).await,
            |reply| Some(reply.message_id),
        ),
        action => {
            let result = match (escalation_id, agent_action(action, agent)) {
                (Some(escalation), Some(action)) => handle.act(escalation, action).await,
                _ => Err(CommandError::NoEscalation),
            };
            outcome_of(result, |()| None)
        }
    };
    info!(chat = %key, command = id, outcome = %outcome.outcome, "carried out an agent's command from another instance");
    if let Err(error) = handle.store().finish_command(id, &outcome).await {
        warn!(%error, command = id, "cannot record the outcome of an agent's command");
    }
}

/// Takes and carries out the commands other instances hand to the shops this one answers,
/// until `stop`.
pub async fn run(handle: Handle, leases: Arc<Leases>, stop: CancellationToken) {
    let store = handle.store().clone();
    let mut listener = match store.command_listener().await {
        Ok(listener) => listener,
        Err(error) => {
            warn!(%error, "cannot listen for agents' commands; looking for them every second instead");
            None
        }
    };
    loop {
        match store.take_commands(leases.instance()).await {
            Ok(taken) => {
                for command in taken {
                    tokio::spawn(carry_out(handle.clone(), command));
                }
            }
            Err(error) => debug!(%error, "cannot look for agents' commands"),
        }
        let woken = async {
            match listener.as_mut() {
                Some(listener) => {
                    if listener.recv().await.is_err() {
                        // The listener reconnects on its next recv; until then the poll serves.
                        tokio::time::sleep(POLL_EVERY).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = woken => {}
            () = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

/// The channel chat events cross instances on.
const EVENTS: &str = "xiaoer_events";
/// Message texts longer than this many characters are cut short in the events sent across.
const EVENT_TEXT_CHARS: usize = 1000;

#[derive(serde::Serialize, serde::Deserialize)]
struct SharedEvent {
    from: String,
    event: ChatEvent,
}

/// Lays this instance's chat events (`local`) and, through the store, every other instance's
/// into `feed`, the console's view, and sends this instance's to the others; until `stop`.
pub async fn share_events(
    store: Store,
    leases: Arc<Leases>,
    mut local: broadcast::Receiver<ChatEvent>,
    feed: broadcast::Sender<ChatEvent>,
    stop: CancellationToken,
) {
    let me = leases.instance().to_owned();
    let mut listener = match store.listener(EVENTS).await {
        Ok(listener) => listener,
        Err(error) => {
            warn!(%error, "cannot listen for other instances' chat events; the console shows this instance's only");
            None
        }
    };
    loop {
        let foreign = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            event = local.recv() => match event {
                Ok(event) => {
                    let _ = feed.send(event.clone());
                    let mut event = event;
                    if let ChatEvent::Message { text, .. } = &mut event
                        && text.chars().count() > EVENT_TEXT_CHARS
                    {
                        *text = text.chars().take(EVENT_TEXT_CHARS).chain(std::iter::once('…')).collect();
                    }
                    let payload = SharedEvent { from: me.clone(), event };
                    if let Ok(json) = serde_json::to_string(&payload)
                        && let Err(error) = store.notify(EVENTS, &json).await
                    {
                        debug!(%error, "cannot send a chat event to the other instances");
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    debug!(missed, "chat events were too many to share them all");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            notification = foreign => match notification {
                Some(notification) => {
                    match serde_json::from_str::<SharedEvent>(notification.payload()) {
                        Ok(shared) if shared.from != me => {
                            let _ = feed.send(shared.event);
                        }
                        Ok(_) => {}
                        Err(error) => debug!(%error, "an event from another instance was not understood"),
                    }
                }
                // The listener reconnects on its next receive.
                None => tokio::time::sleep(POLL_EVERY).await,
            },
        }
    }
}
