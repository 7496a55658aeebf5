//! The console's one error type: every handler returns it, and it becomes a status code with a
//! short page in words an agent understands.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::conversation::commands::ActionError;
use crate::conversation::worker::CommandError;
use crate::store::StoreError;

/// Why a console request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No valid session: pages redirect to the login, everything else gets 401.
    #[error("please log in")]
    NoSession { page: bool },
    /// A state-changing request without the session's CSRF token.
    #[error("this form has expired; reload the page and try again")]
    Csrf,
    /// Not allowed for this account (wrong role).
    #[error("{0}")]
    Forbidden(String),
    /// No such thing — or one in a shop the agent does not serve, which must look the same.
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    /// Someone else got there first (a claim), or the chat is in a state that refuses it.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooManyAttempts(String),
    /// The gateway did not take an agent's reply.
    #[error("{0}")]
    NotDelivered(String),
    #[error("the console cannot reach the store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unavailable(String),
}

impl From<CommandError> for AppError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::NoEscalation => AppError::Conflict(error.to_string()),
            CommandError::NotHolder { .. } => AppError::Conflict(error.to_string()),
            CommandError::Refused(refusal) => match refusal {
                ActionError::OtherChat { .. } => AppError::NotFound,
                other => AppError::Conflict(other.to_string()),
            },
            CommandError::Store(StoreError::AlreadyClaimed { id, agent }) => {
                AppError::Conflict(format!("escalation {id} is already claimed by {agent}"))
            }
            CommandError::Store(
                e @ (StoreError::EscalationClosed { .. } | StoreError::NotClaimed { .. }),
            ) => AppError::Conflict(e.to_string()),
            CommandError::Store(e) => AppError::Store(e),
            CommandError::NotDelivered { .. } | CommandError::MaybeDelivered { .. } => {
                AppError::NotDelivered(error.to_string())
            }
            CommandError::Busy | CommandError::Stopped => AppError::Unavailable(error.to_string()),
            CommandError::Remote { kind, message } => match kind.as_str() {
                "conflict" => AppError::Conflict(message),
                "not_delivered" => AppError::NotDelivered(message),
                _ => AppError::Unavailable(message),
            },
        }
    }
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::NoSession { .. } => StatusCode::UNAUTHORIZED,
            AppError::Csrf | AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::NotDelivered(_) => StatusCode::BAD_GATEWAY,
            AppError::Store(_) | AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::NoSession { page: true } = self {
            let mut response = StatusCode::SEE_OTHER.into_response();
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/login"));
            return response;
        }
        if let AppError::Store(error) = &self {
            tracing::error!(%error, "console request failed at the store");
        }
        let status = self.status();
        let body = html! {
            (maud::DOCTYPE)
            html lang="zh-CN" {
                head { meta charset="utf-8"; title { "店小二 · " (status.as_u16()) } link rel="stylesheet" href="/static/console.css"; }
                body {
                    main class="error" {
                        h1 { (status.as_u16()) }
                        p class="notice bad" { (self.to_string()) }
                        p { a href="/" { "回到队列" } }
                    }
                }
            }
        };
        (status, body).into_response()
    }
}
