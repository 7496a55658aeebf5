//! The console's routes: login, the queue, a chat, agent actions, the shift handover, quick
//! phrases, live updates and the embedded assets.
//!
//! Every route but `/login` and `/static/…` needs a session; every POST but `/login` carries
//! the session's CSRF token; chats of a shop the agent does not serve are answered with 404 in
//! lists, pages, live updates and actions alike.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use maud::Markup;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ConsoleState;
use super::auth::{self, Session};
use super::error::AppError;
use super::views::{self, ChatView, HandoverItem, Notice, QueueFilter, QueueRow};
use crate::accounts;
use crate::conversation::commands::AgentAction;
use crate::model::{
    ChatEvent, ConversationKey, Escalation, EscalationState, Note, NoteKind, Queue,
};
use crate::replies::RenderContext;
use crate::store::{AccountOp, now_ms};

/// The largest form the console accepts.
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// The longest reply or note, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Reply keys starting with this are the shop's quick phrases.
pub const PHRASE_PREFIX: &str = "phrase.";

const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; \
     base-uri 'none'; object-src 'none'";

/// The console's router.
pub fn app(state: ConsoleState) -> Router {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/", get(queue_page))
        .route("/queue/rows", get(queue_rows))
        .route("/chat/{id}", get(chat_page))
        .route("/chat/{id}/transcript", get(chat_transcript))
        .route("/chat/{id}/reply", post(reply))
        .route("/chat/{id}/{action}", post(act))
        .route("/handover", get(handover_page).post(hand_over))
        .route("/phrases", post(add_phrase))
        .route("/phrases/{id}/delete", post(delete_phrase))
        .route("/events", get(events))
        .route("/report", get(report_page))
        .route("/notifications", get(notifications_page))
        .route("/notifications/retry", post(retry_notifications))
        .route("/static/{file}", get(asset))
        .layer(middleware::from_fn_with_state(state.clone(), csrf_guard))
        .layer(middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(state.clone())
        .merge(crate::metrics::router(state.daemon().clone()))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Refuses a state-changing request without its session's CSRF token, and hands the session it
/// found to the handler.
async fn csrf_guard(State(state): State<ConsoleState>, request: Request, next: Next) -> Response {
    if request.method() != axum::http::Method::POST || request.uri().path() == "/login" {
        return next.run(request).await;
    }
    let session = match auth::cookie(request.headers(), auth::SESSION_COOKIE) {
        Some(token) => match state.session(token).await {
            Ok(session) => session,
            Err(error) => return error.into_response(),
        },
        None => None,
    };
    let Some(session) = session else {
        return AppError::NoSession { page: false }.into_response();
    };
    let header_token = request
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return AppError::BadRequest(format!(
                "the form is larger than {} KiB",
                MAX_FORM_BYTES / 1024
            ))
            .into_response();
        }
    };
    let form_token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v));
    let given = header_token.or(form_token);
    if given.as_deref() != Some(session.csrf.as_str()) {
        return AppError::Csrf.into_response();
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(session);
    next.run(request).await
}

// ---- login ----------------------------------------------------------------------------------

async fn login_form() -> Markup {
    views::login_page(None, "")
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

async fn login(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let address = peer.ip().to_string();
    let name = form.name.trim().to_owned();
    let wait = state.throttle().wait(&name, &address, Instant::now());
    if let Some(wait) = wait {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let page = views::login_page(
            Some(&format!("登录失败次数太多，请 {minutes} 分钟后再试。")),
            &name,
        );
        return Ok((StatusCode::TOO_MANY_REQUESTS, page).into_response());
    }
    let found = state.store().agent(&name).await?;
    let password = form.password;
    let stored_hash = found
        .as_ref()
        .map(|(_, hash)| hash.clone())
        .unwrap_or_else(|| accounts::decoy_hash().to_owned());
    // Hashing takes tens of milliseconds of CPU: keep it off the request threads.
    let matches =
        tokio::task::spawn_blocking(move || accounts::verify_password(&password, &stored_hash))
            .await
            .unwrap_or(false);
    let agent = match found {
        Some((agent, _)) if matches && !agent.disabled => agent,
        _ => {
            state.throttle().failed(&name, &address, Instant::now());
            tracing::warn!(account = %name, %address, "console login failed");
            let page = views::login_page(Some("账号或密码不对，或账号已停用。"), &name);
            return Ok((StatusCode::UNAUTHORIZED, page).into_response());
        }
    };
    state.throttle().succeeded(&agent.name);
    let token = auth::random_token();
    state
        .store()
        .account(AccountOp::CreateSession {
            token_hash: auth::token_hash(&token),
            agent: agent.name.clone(),
            csrf: auth::random_token(),
            at_ms: now_ms(),
        })
        .await?;
    tracing::info!(agent = %agent.name, %address, "console login");
    let settings = state.settings();
    let cookie = auth::session_cookie(&token, settings.session_max, settings.secure_cookie);
    Ok(see_other_with_cookie("/", &cookie))
}

fn see_other_with_cookie(to: &str, cookie: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(
    State(state): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
) -> Result<Response, AppError> {
    state
        .store()
        .account(AccountOp::DeleteSession {
            token_hash: session.token_hash,
        })
        .await?;
    Ok(see_other_with_cookie(
        "/login",
        &auth::cleared_cookie(state.settings().secure_cookie),
    ))
}

// ---- the queue ------------------------------------------------------------------------------

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The open escalations this agent may see, most urgent first.
async fn visible_escalations(
    state: &ConsoleState,
    session: &Session,
) -> Result<Vec<Escalation>, AppError> {
    let mut escalations: Vec<Escalation> = state
        .store()
        .open_escalations()
        .await?
        .into_iter()
        .filter(|e| session.serves(&e.key.self_id))
        .collect();
    escalations.sort_by_key(|e| (std::cmp::Reverse(e.queue.severity()), e.created_ms, e.id));
    Ok(escalations)
}

async fn queue_data(
    state: &ConsoleState,
    session: &Session,
    filter: &QueueFilter,
) -> Result<(Vec<QueueRow>, Vec<(Queue, usize)>, Vec<String>), AppError> {
    let escalations = visible_escalations(state, session).await?;
    let now = now_ms();
    let mut counts: Vec<(Queue, usize)> = Queue::ALL.iter().map(|q| (*q, 0)).collect();
    let mut shops: Vec<String> = Vec::new();
    for e in &escalations {
        if let Some(count) = counts.iter_mut().find(|(q, _)| *q == e.queue) {
            count.1 += 1;
        }
        if !shops.contains(&e.key.self_id) {
            shops.push(e.key.self_id.clone());
        }
    }
    counts.sort_by_key(|(q, _)| std::cmp::Reverse(q.severity()));
    let alerts = clock_alerts(state, now).await?;
    let rows = escalations
        .into_iter()
        .filter(|e| filter.queue.is_empty() || e.queue.as_str() == filter.queue)
        .filter(|e| filter.shop.is_empty() || e.key.self_id == filter.shop)
        .filter(|e| filter.state.is_empty() || e.state.as_str() == filter.state)
        .map(|e| QueueRow {
            shop: state.shop_name(&e.key.self_id),
            waiting_ms: now.saturating_sub(e.created_ms),
            sla_ms: millis(state.settings().sla(e.queue)),
            clock: alerts
                .get(&e.id)
                .map(|&remaining_ms| views::ClockAlert { remaining_ms }),
            escalation: e,
        })
        .collect();
    Ok((rows, counts, shops))
}

/// The budget left of each escalation whose buyer's response-clock round has reached a warning
/// share, by escalation id.
async fn clock_alerts(
    state: &ConsoleState,
    now: i64,
) -> Result<std::collections::HashMap<i64, i64>, AppError> {
    use crate::escalation::clock::Round;
    let mut alerts = std::collections::HashMap::new();
    for round in state.store().open_rounds().await? {
        let Some(escalation) = round.escalation else {
            continue;
        };
        let clock = state.settings().clocks.for_shop(&round.key.self_id);
        let timed = Round {
            started_ms: round.started_ms,
            budget_ms: round.budget_ms,
        };
        if clock.is_warning(timed, now) {
            alerts.insert(escalation, clock.standing(timed, now).remaining_ms);
        }
    }
    Ok(alerts)
}

async fn queue_page(
    State(state): State<ConsoleState>,
    session: Session,
    Query(filter): Query<QueueFilter>,
) -> Result<Markup, AppError> {
    let (rows, counts, shops) = queue_data(&state, &session, &filter).await?;
    Ok(views::queue_page(&session, &rows, &counts, &shops, &filter))
}

async fn queue_rows(
    State(state): State<ConsoleState>,
    session: Session,
    Query(filter): Query<QueueFilter>,
) -> Result<Markup, AppError> {
    let (rows, _, _) = queue_data(&state, &session, &filter).await?;
    Ok(views::queue_rows(&session, &rows))
}

// ---- a chat ---------------------------------------------------------------------------------

/// A short, stable name for a chat, for its live-update event.
pub fn chat_tag(key: &ConversationKey) -> String {
    let digest = Sha256::digest(key.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Escalation `id`, if this agent may see it (404 otherwise, whichever the reason).
async fn visible_escalation(
    state: &ConsoleState,
    session: &Session,
    id: i64,
) -> Result<Escalation, AppError> {
    match state.store().escalation(id).await? {
        Some(e) if session.serves(&e.key.self_id) => Ok(e),
        _ => Err(AppError::NotFound),
    }
}

async fn chat_view(
    state: &ConsoleState,
    session: &Session,
    escalation: Escalation,
) -> Result<ChatView, AppError> {
    let store = state.store();
    let key = escalation.key.clone();
    let chat_state = store
        .conversation(&key)
        .await?
        .map_or(crate::model::ConversationState::Bot, |c| c.state);
    let rules = state.daemon().rules().load().for_shop(&key.self_id);
    let shop = state.shop_name(&key.self_id);
    let context = RenderContext {
        shop: Some(shop.as_str()),
        buyer: None,
        queue: Some(escalation.queue),
        queue_eta: None,
    };
    let mut shop_phrases: Vec<(String, String)> = rules
        .replies()
        .keys()
        .filter(|k| k.starts_with(PHRASE_PREFIX))
        .filter_map(|k| {
            rules
                .replies()
                .render(k, 0, &context)
                .map(|text| (k.to_owned(), text))
        })
        .collect();
    shop_phrases.sort();
    let earlier = store
        .escalations_of(&key)
        .await?
        .into_iter()
        .filter(|e| e.id != escalation.id)
        .collect();
    Ok(ChatView {
        chat_state,
        shop,
        transcript: store.transcript(&key, 200).await?,
        notes: store.notes(&key).await?,
        history: store.escalation_history(escalation.id).await?,
        earlier,
        shop_phrases,
        my_phrases: store.quick_phrases(&session.agent.name).await?,
        tag: chat_tag(&key),
        waiting_ms: now_ms().saturating_sub(escalation.created_ms),
        escalation,
    })
}

async fn chat_page(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Markup, AppError> {
    let escalation = visible_escalation(&state, &session, id).await?;
    let view = chat_view(&state, &session, escalation).await?;
    Ok(views::chat_page(&session, &view, None))
}

/// The chat page again, with what happened to the agent's last request.
async fn chat_with_notice(
    state: &ConsoleState,
    session: &Session,
    id: i64,
    notice: Notice,
    status: StatusCode,
) -> Result<Response, AppError> {
    let escalation = visible_escalation(state, session, id).await?;
    let view = chat_view(state, session, escalation).await?;
    Ok((status, views::chat_page(session, &view, Some(&notice))).into_response())
}

async fn chat_transcript(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Markup, AppError> {
    let escalation = visible_escalation(&state, &session, id).await?;
    let lines = state.store().transcript(&escalation.key, 200).await?;
    Ok(views::transcript(&lines))
}

/// A text field of a form, trimmed, checked for length.
fn text_field(form: &HashMap<String, String>, name: &str, what: &str) -> Result<String, AppError> {
    let text = form.get(name).map(|t| t.trim()).unwrap_or("");
    if text.is_empty() {
        return Err(AppError::BadRequest(format!("{what} is empty")));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(AppError::BadRequest(format!(
            "{what} is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(text.to_owned())
}

async fn reply(
    State(state): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<i64>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let escalation = visible_escalation(&state, &session, id).await?;
    let text = text_field(&form, "text", "the reply")?;
    match state
        .daemon()
        .agent_reply(escalation.key.clone(), &session.agent.name, &text)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/chat/{id}")).into_response()),
        Err(error) => {
            let error = AppError::from(error);
            let status = error.status();
            chat_with_notice(&state, &session, id, Notice::Bad(error.to_string()), status).await
        }
    }
}

/// The outcomes an agent picks from when resolving a chat.
const OUTCOMES: &[&str] = &["refunded", "resent", "explained", "no_action", "other"];

async fn act(
    State(state): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let escalation = visible_escalation(&state, &session, id).await?;
    let me = session.agent.name.clone();
    let holds = escalation.claimed_by.as_deref() == Some(me.as_str());
    let may_manage = || {
        if holds || session.supervises() {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "only the agent holding this chat or a supervisor can do that".into(),
            ))
        }
    };
    let action = match action.as_str() {
        "claim" => AgentAction::Claim { agent: me.clone() },
        "release" => {
            may_manage()?;
            AgentAction::Release { agent: me.clone() }
        }
        "handback" => {
            may_manage()?;
            AgentAction::HandBack { agent: me.clone() }
        }
        "resolve" => {
            may_manage()?;
            let outcome = form.get("outcome").map(String::as_str).unwrap_or("");
            if !OUTCOMES.contains(&outcome) {
                return Err(AppError::BadRequest(format!(
                    "pick an outcome ({})",
                    OUTCOMES.join(", ")
                )));
            }
            let note = form.get("note").map(|n| n.trim()).unwrap_or("");
            if outcome == "other" && note.is_empty() {
                return Err(AppError::BadRequest(
                    "say in the note what was done when the outcome is other".into(),
                ));
            }
            if note.chars().count() > MAX_TEXT_CHARS {
                return Err(AppError::BadRequest("the note is too long".into()));
            }
            if !note.is_empty() {
                add_note(&state, &escalation, &me, NoteKind::Note, note).await?;
            }
            AgentAction::Resolve {
                agent: me.clone(),
                outcome: Some(outcome.to_owned()),
            }
        }
        "transfer" => {
            may_manage()?;
            let queue: Queue = form
                .get("queue")
                .and_then(|q| q.parse().ok())
                .ok_or_else(|| AppError::BadRequest("pick a queue to transfer to".into()))?;
            let to = form
                .get("agent")
                .map(|a| a.trim())
                .filter(|a| !a.is_empty())
                .map(str::to_owned);
            if let Some(to) = &to {
                session.require_supervisor("transfer a chat to a named agent")?;
                match state.store().agent(to).await? {
                    Some((agent, _)) if agent.serves(&escalation.key.self_id) => {}
                    _ => {
                        return Err(AppError::BadRequest(format!(
                            "no active agent {to} serves this shop"
                        )));
                    }
                }
            }
            AgentAction::Transfer {
                by: me.clone(),
                queue,
                agent: to,
            }
        }
        "note" => {
            let text = text_field(&form, "text", "the note")?;
            add_note(&state, &escalation, &me, NoteKind::Note, &text).await?;
            return Ok(Redirect::to(&format!("/chat/{id}")).into_response());
        }
        _ => return Err(AppError::NotFound),
    };
    match state.daemon().act(id, action).await {
        Ok(()) => Ok(Redirect::to(&format!("/chat/{id}")).into_response()),
        Err(error) => {
            let error = AppError::from(error);
            let status = error.status();
            chat_with_notice(&state, &session, id, Notice::Bad(error.to_string()), status).await
        }
    }
}

async fn add_note(
    state: &ConsoleState,
    escalation: &Escalation,
    author: &str,
    kind: NoteKind,
    body: &str,
) -> Result<(), AppError> {
    state
        .store()
        .account(AccountOp::AddNote(Note {
            key: escalation.key.clone(),
            escalation: Some(escalation.id),
            author: author.to_owned(),
            kind,
            body: body.to_owned(),
            at_ms: now_ms(),
        }))
        .await?;
    Ok(())
}

// ---- shift handover -------------------------------------------------------------------------

async fn handover_items(
    state: &ConsoleState,
    session: &Session,
) -> Result<Vec<HandoverItem>, AppError> {
    let mut items = Vec::new();
    for escalation in visible_escalations(state, session).await? {
        let notes = state
            .store()
            .notes(&escalation.key)
            .await?
            .into_iter()
            .filter(|n| n.kind == NoteKind::Handover && n.escalation == Some(escalation.id))
            .collect();
        items.push(HandoverItem {
            shop: state.shop_name(&escalation.key.self_id),
            escalation,
            notes,
        });
    }
    Ok(items)
}

async fn handover_page(
    State(state): State<ConsoleState>,
    session: Session,
) -> Result<Markup, AppError> {
    let items = handover_items(&state, &session).await?;
    Ok(views::handover_page(&session, &items, None))
}

/// Ends the agent's shift: a handover note on each chat they hold, and the chats back in their
/// queues.
async fn hand_over(
    State(state): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let me = session.agent.name.clone();
    let held: Vec<Escalation> = visible_escalations(&state, &session)
        .await?
        .into_iter()
        .filter(|e| e.state == EscalationState::Claimed && e.claimed_by.as_deref() == Some(&me))
        .collect();
    let mut released = 0;
    let mut failures = Vec::new();
    for escalation in &held {
        let note = form
            .get(&format!("note-{}", escalation.id))
            .map(|n| n.trim())
            .unwrap_or("");
        if note.chars().count() > MAX_TEXT_CHARS {
            return Err(AppError::BadRequest("a handover note is too long".into()));
        }
        if !note.is_empty() {
            add_note(&state, escalation, &me, NoteKind::Handover, note).await?;
        }
        match state
            .daemon()
            .act(escalation.id, AgentAction::Release { agent: me.clone() })
            .await
        {
            Ok(()) => released += 1,
            Err(error) => failures.push(format!("#{}: {error}", escalation.id)),
        }
    }
    let items = handover_items(&state, &session).await?;
    let notice = if failures.is_empty() {
        Notice::Good(format!(
            "已交班：{released} 个会话放回队列，交接备注已保存。"
        ))
    } else {
        Notice::Bad(format!(
            "{released} 个会话已放回队列；未能放回：{}",
            failures.join("；")
        ))
    };
    Ok(views::handover_page(&session, &items, Some(&notice)).into_response())
}

// ---- quick phrases --------------------------------------------------------------------------

async fn add_phrase(
    State(state): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let text = text_field(&form, "text", "the quick phrase")?;
    state
        .store()
        .account(AccountOp::AddPhrase {
            agent: session.agent.name.clone(),
            text,
            at_ms: now_ms(),
        })
        .await?;
    let back = form
        .get("back")
        .and_then(|b| b.parse::<i64>().ok())
        .map_or_else(|| "/".to_owned(), |id| format!("/chat/{id}"));
    Ok(Redirect::to(&back).into_response())
}

async fn delete_phrase(
    State(state): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    state
        .store()
        .account(AccountOp::DeletePhrase {
            agent: session.agent.name.clone(),
            id,
        })
        .await?;
    Ok(Redirect::to("/").into_response())
}

// ---- live updates ---------------------------------------------------------------------------

/// Server-sent events: `queue` when an escalation of a served shop changes, `chat-<tag>` when
/// something happens in one of their chats. The events carry no buyer text; pages fetch what
/// changed with their own session.
async fn events(
    State(state): State<ConsoleState>,
    session: Session,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.daemon().subscribe();
    let shutdown = state.shutdown().clone();
    let token_hash = session.token_hash.clone();
    struct Feed {
        receiver: tokio::sync::broadcast::Receiver<ChatEvent>,
        session: Session,
        state: ConsoleState,
        shutdown: tokio_util::sync::CancellationToken,
        token_hash: String,
        check: tokio::time::Interval,
    }
    let feed = Feed {
        receiver,
        session,
        state,
        shutdown,
        token_hash,
        check: tokio::time::interval(Duration::from_secs(30)),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            tokio::select! {
                _ = feed.shutdown.cancelled() => return None,
                _ = feed.check.tick() => {
                    // A session that ended (logout, expiry, a disabled account) ends the feed.
                    match feed.state.store().session(&feed.token_hash).await {
                        Ok(Some(_)) => {}
                        _ => return None,
                    }
                }
                received = feed.receiver.recv() => match received {
                    Ok(event) => {
                        let (key, queue_changed) = match &event {
                            ChatEvent::Message { key, .. } => (key, false),
                            ChatEvent::StateChanged { key, .. } => (key, true),
                            ChatEvent::Escalation { key, .. } => (key, true),
                        };
                        if !feed.session.serves(&key.self_id) {
                            continue;
                        }
                        let name = if queue_changed {
                            "queue".to_owned()
                        } else {
                            format!("chat-{}", chat_tag(key))
                        };
                        let tag = chat_tag(key);
                        let event = Event::default().event(name).data(tag);
                        return Some((Ok(event), feed));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Missed some: tell the pages to refresh everything.
                        return Some((Ok(Event::default().event("queue").data("lagged")), feed));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

// ---- shift report -------------------------------------------------------------------------

/// The shift report over `?since=` (default 24h), `?until=` and `?shop=`, for supervisors; an
/// account limited to some shops sees only those.
async fn report_page(
    State(state): State<ConsoleState>,
    session: Session,
    Query(mut query): Query<views::ReportQuery>,
) -> Result<Markup, AppError> {
    session.require_supervisor("see the shift report")?;
    if query.since.trim().is_empty() {
        query.since = "24h".to_owned();
    }
    let until = Some(query.until.trim()).filter(|u| !u.is_empty());
    let shop = Some(query.shop.trim()).filter(|s| !s.is_empty());
    let period =
        crate::report::Period::parse(&query.since, until, shop.map(str::to_owned), now_ms())
            .map_err(|e| AppError::BadRequest(e.to_string()))?;
    let mut rows = state
        .store()
        .report_rows(period.since_ms, period.until_ms, shop)
        .await?;
    rows.keep_shops(|self_id| session.serves(self_id));
    let book = state.daemon().rules().load();
    let ids = |rules: &crate::rules::RuleSet| -> Vec<String> {
        rules.rules().map(|r| r.id.clone()).collect()
    };
    let rule_ids = match shop {
        Some(shop) => ids(&book.for_shop(shop)),
        None => ids(book.shared()),
    };
    let report = crate::report::compute(&rows, period, Some(&rule_ids));
    Ok(views::report_page(&session, &query, &report))
}

// ---- notifications --------------------------------------------------------------------------

/// How many dead letters the page lists.
const DEAD_LETTERS_SHOWN: i64 = 200;

/// What the outbox owes and what it gave up on, for supervisors.
async fn notifications_page(
    State(state): State<ConsoleState>,
    session: Session,
) -> Result<Markup, AppError> {
    session.require_supervisor("see undelivered notifications")?;
    let counts = state.store().outbox_counts().await?;
    let mut dead = state.store().dead_letters(DEAD_LETTERS_SHOWN).await?;
    dead.retain(|d| session.serves(&d.entry.chat.self_id));
    Ok(views::notifications_page(&session, &counts, &dead))
}

/// Sends dead-lettered notifications again (to one target, or all), at once.
async fn retry_notifications(
    State(state): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, AppError> {
    session.require_supervisor("retry notifications")?;
    let target = form
        .get("target")
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    tracing::info!(agent = %session.agent.name, target = ?target, "dead-lettered notifications retried from the console");
    state
        .store()
        .outbox(crate::store::OutboxOp::Revive {
            target,
            at_ms: now_ms(),
        })
        .await?;
    Ok(Redirect::to("/notifications").into_response())
}

// ---- embedded assets ------------------------------------------------------------------------

async fn asset(Path(file): Path<String>) -> Response {
    let (bytes, kind): (&'static [u8], &str) = match file.as_str() {
        "htmx.min.js" => (
            include_bytes!("static/htmx.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "htmx-sse.min.js" => (
            include_bytes!("static/htmx-sse.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "console.js" => (
            include_bytes!("static/console.js"),
            "text/javascript; charset=utf-8",
        ),
        "console.css" => (
            include_bytes!("static/console.css"),
            "text/css; charset=utf-8",
        ),
        "report.css" => (
            crate::report::html::STYLE.as_bytes(),
            "text/css; charset=utf-8",
        ),
        _ => return AppError::NotFound.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        bytes,
    )
        .into_response()
}
