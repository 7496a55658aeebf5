//! Logins and sessions: who is asking, and whether they may.
//!
//! A login sets a random session token in an `HttpOnly; SameSite=Strict` cookie; the store keeps
//! only its SHA-256, with the session's CSRF token and when it was last used. A session ends
//! after `session_idle` without use or `session_max` after the login. Failed logins are counted
//! per account and per address; past [`MAX_FAILURES`] in [`FAILURE_WINDOW`] further attempts are
//! refused until the window has passed. Every state-changing request must carry the session's
//! CSRF token (header `X-CSRF-Token`, or form field `csrf`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use super::ConsoleState;
use super::error::AppError;
use crate::model::{Agent, Role};
use crate::store::{AccountOp, now_ms};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "xiaoer_session";
/// Failed logins allowed per account and per address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// How long failed logins are remembered.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// A session's last use is written at most this often.
const TOUCH_EVERY_MS: i64 = 60_000;

/// A random token, as hex.
pub fn random_token() -> String {
    hex(&rand::random::<[u8; 32]>())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the store keeps of a session token.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that starts a session.
pub fn session_cookie(token: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends it.
pub fn cleared_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The logged-in agent of a request.
#[derive(Debug, Clone)]
pub struct Session {
    pub agent: Agent,
    pub csrf: String,
    pub token_hash: String,
}

impl Session {
    /// Whether the agent may act on chats of shop `self_id`.
    pub fn serves(&self, self_id: &str) -> bool {
        self.agent.serves(self_id)
    }

    /// Supervisors and admins.
    pub fn supervises(&self) -> bool {
        self.agent.role >= Role::Supervisor
    }

    /// Refuses what only supervisors may do.
    ///
    /// # Errors
    ///
    /// [`AppError::Forbidden`].
    pub fn require_supervisor(&self, what: &str) -> Result<(), AppError> {
        if self.supervises() {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!("only a supervisor can {what}")))
        }
    }
}

/// Whether a request wants a page (a browser navigating) rather than a fragment or data.
fn wants_page(parts: &Parts) -> bool {
    parts.method == axum::http::Method::GET
        && !parts.headers.contains_key("hx-request")
        && parts.uri.path() != "/events"
}

impl FromRequestParts<ConsoleState> for Session {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let no_session = AppError::NoSession {
            page: wants_page(parts),
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(no_session);
        };
        state.session(token).await?.ok_or(no_session)
    }
}

impl ConsoleState {
    /// The live session with this token, if there is one; touches it.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, AppError> {
        let store = self.store();
        let hash = token_hash(token);
        let Some(stored) = store.session(&hash).await? else {
            return Ok(None);
        };
        let now = now_ms();
        let settings = &self.inner.settings;
        let idle = now.saturating_sub(stored.last_seen_ms) > millis(settings.session_idle);
        let old = now.saturating_sub(stored.created_ms) > millis(settings.session_max);
        if idle || old {
            store
                .account(AccountOp::DeleteSession { token_hash: hash })
                .await?;
            return Ok(None);
        }
        let Some((agent, _)) = store.agent(&stored.agent).await? else {
            return Ok(None);
        };
        if agent.disabled {
            return Ok(None);
        }
        if now - stored.last_seen_ms > TOUCH_EVERY_MS {
            store.touch_session(&hash, now).await?;
        }
        Ok(Some(Session {
            agent,
            csrf: stored.csrf,
            token_hash: hash,
        }))
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Failed logins, per account and per address.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: HashMap<String, VecDeque<Instant>>,
}

impl Throttle {
    fn recent(&mut self, key: &str, now: Instant) -> usize {
        let Some(times) = self.failures.get_mut(key) else {
            return 0;
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
        {
            times.pop_front();
        }
        times.len()
    }

    /// How long until another attempt for `account` from `address` is allowed, if it is not now.
    pub fn wait(&mut self, account: &str, address: &str, now: Instant) -> Option<Duration> {
        let mut wait = None;
        for key in [format!("name:{account}"), format!("addr:{address}")] {
            if self.recent(&key, now) < MAX_FAILURES {
                continue;
            }
            if let Some(first) = self.failures.get(&key).and_then(|t| t.front()) {
                let left = FAILURE_WINDOW.saturating_sub(now.duration_since(*first));
                wait = wait.max(Some(left));
            }
        }
        wait
    }

    pub fn failed(&mut self, account: &str, address: &str, now: Instant) {
        for key in [format!("name:{account}"), format!("addr:{address}")] {
            self.failures.entry(key).or_default().push_back(now);
        }
        // Keep the table from growing without bound under a spray of names.
        if self.failures.len() > 10_000 {
            self.failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < FAILURE_WINDOW)
            });
        }
    }

    pub fn succeeded(&mut self, account: &str) {
        self.failures.remove(&format!("name:{account}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_lock_the_account_and_the_address_for_the_window() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(
                throttle.wait("alice", "1.2.3.4", start),
                None,
                "attempt {i}"
            );
            throttle.failed("alice", "1.2.3.4", start);
        }
        assert!(
            throttle.wait("alice", "5.6.7.8", start).is_some(),
            "the account is locked"
        );
        assert!(
            throttle.wait("bob", "1.2.3.4", start).is_some(),
            "so is the address"
        );
        assert_eq!(throttle.wait("bob", "5.6.7.8", start), None);
        let later = start + FAILURE_WINDOW;
        assert_eq!(
            throttle.wait("alice", "1.2.3.4", later),
            None,
            "the window passed"
        );
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; xiaoer_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
        let set = session_cookie("t", Duration::from_secs(60), true);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.ends_with("Secure")
        );
        assert_ne!(token_hash("t"), "t");
        assert_eq!(random_token().len(), 64);
    }
}
