//! One delivery attempt: render the body for the target's kind, sign it, `POST` it with a
//! deadline, and read the answer — including the robots' habit of answering HTTP 200 with an
//! error code in the body — into either [`Delivered`] or a [`DeliveryError`] that says whether
//! trying again could help.
//!
//! Errors never carry the target's URL (the chat robots' URLs hold their tokens), its secret,
//! or the buyer's text: they end up in logs and in the console's dead-letter view.

use std::error::Error as _;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use thiserror::Error;

use super::Notification;
use super::message::{self, cap};
use super::sign;
use super::target::{Kind, Target};

/// The header carrying the idempotency key on generic deliveries.
pub const KEY_HEADER: &str = "X-Xiaoer-Key";
/// The header carrying the generic body's signature.
pub const SIGNATURE_HEADER: &str = "X-Xiaoer-Signature";

/// Connecting takes at most this long, whatever the target's own (longer) timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A robot's answer is a few dozen bytes; more than this is not a robot's answer.
const ANSWER_LIMIT: usize = 64 * 1024;
/// Most characters of a receiver's own error text kept in a [`DeliveryError`].
const REMOTE_TEXT_LIMIT: usize = 120;

/// Sends notifications; one per daemon, shared by every target (one connection pool).
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
}

/// The HTTPS client could not be built (its TLS setup failed).
#[derive(Debug, Error)]
#[error("could not set up the https client for notifications: {0}")]
pub struct SenderError(String);

/// A receiver took the notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The HTTP status it answered.
    pub status: u16,
}

/// Why one attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection: refused, unreachable, no such host, TLS handshake failed.
    Connect,
    /// No complete answer within the target's timeout.
    Timeout,
    /// The connection broke while sending or reading.
    Transport,
    /// An HTTP status other than 2xx and 3xx.
    Status,
    /// A 3xx: webhooks are not followed across redirects.
    Redirect,
    /// A chat robot answered 200 with an error code.
    Rejected,
    /// A chat robot answered 200 with something that is not a robot's answer.
    Unrecognised,
    /// The request could not be built (a key that is not a valid header value).
    Request,
}

/// One failed attempt. The message is short, lowercase, and safe to log.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct DeliveryError {
    failure: Failure,
    retryable: bool,
    status: Option<u16>,
    code: Option<i64>,
    retry_after: Option<Duration>,
    message: String,
}

impl DeliveryError {
    /// Whether the same notification may succeed later (the receiver was down, slow, busy or
    /// rate-limiting), as opposed to a failure sending it again cannot fix.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The robot's error code (`errcode` or `code`), when it answered with one.
    pub fn code(&self) -> Option<i64> {
        self.code
    }

    /// The wait the receiver asked for (`Retry-After` in seconds), when it asked; the outbox
    /// should not retry sooner.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    fn new(failure: Failure, retryable: bool, message: String) -> DeliveryError {
        DeliveryError {
            failure,
            retryable,
            status: None,
            code: None,
            retry_after: None,
            message,
        }
    }
}

impl Sender {
    /// # Errors
    ///
    /// The TLS backend could not be initialised.
    pub fn new() -> Result<Sender, SenderError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirected webhook would be re-sent to wherever the receiver points, secret
            // headers included; refuse and tell the operator instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("xiaoer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| SenderError(root_cause(&error)))?;
        Ok(Sender { client })
    }

    /// Makes one attempt to deliver `n` to `target`, signing with `now_ms` (Unix milliseconds)
    /// where the kind signs with a timestamp.
    ///
    /// # Errors
    ///
    /// Any failure of the attempt; [`DeliveryError::is_retryable`] says whether to try again.
    pub async fn deliver(
        &self,
        target: &Target,
        n: &Notification,
        now_ms: i64,
    ) -> Result<Delivered, DeliveryError> {
        let secret = target.secret.as_deref();
        let (url, body) = match target.kind {
            Kind::Generic => (target.url.clone(), message::generic(n)),
            Kind::DingTalk => (
                match secret {
                    Some(secret) => sign::dingtalk_url(&target.url, secret, now_ms),
                    None => target.url.clone(),
                },
                message::dingtalk(n),
            ),
            Kind::WeCom => (target.url.clone(), message::wecom(n)),
            Kind::Feishu => {
                let timestamp_s = now_ms.div_euclid(1000);
                let signature =
                    secret.map(|secret| (timestamp_s, sign::feishu(secret, timestamp_s)));
                (target.url.clone(), message::feishu(n, signature))
            }
        };
        // Serialising a `Value` built from strings and numbers cannot fail; an empty body
        // would be refused by the receiver and reported like any other refusal.
        let body = serde_json::to_vec(&body).unwrap_or_default();

        let mut request = self
            .client
            .post(url)
            .timeout(target.timeout)
            .header(CONTENT_TYPE, "application/json; charset=utf-8");
        if target.kind == Kind::Generic {
            let key = HeaderValue::from_str(&n.key).map_err(|_| {
                DeliveryError::new(
                    Failure::Request,
                    false,
                    format!(
                        "the notification key {:?} cannot be sent as a header",
                        cap(&n.key, 64)
                    ),
                )
            })?;
            request = request.header(KEY_HEADER, key);
            if let Some(secret) = secret {
                request = request.header(SIGNATURE_HEADER, sign::generic(secret, &body));
            }
        }

        let mut response = request
            .body(body)
            .send()
            .await
            .map_err(|error| transport_error(&error, target.timeout))?;

        let status = response.status();
        if !status.is_success() {
            return Err(status_error(status, &response));
        }
        if target.kind == Kind::Generic {
            return Ok(Delivered {
                status: status.as_u16(),
            });
        }

        let mut answer = Vec::new();
        while answer.len() < ANSWER_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(error) => return Err(transport_error(&error, target.timeout)),
            }
        }
        robot_verdict(target.kind, &answer).map_err(|mut error| {
            error.status = Some(status.as_u16());
            error
        })?;
        Ok(Delivered {
            status: status.as_u16(),
        })
    }
}

fn transport_error(error: &reqwest::Error, timeout: Duration) -> DeliveryError {
    if error.is_timeout() {
        DeliveryError::new(
            Failure::Timeout,
            true,
            format!("no answer within {}", humantime::format_duration(timeout)),
        )
    } else if error.is_connect() {
        DeliveryError::new(
            Failure::Connect,
            true,
            format!("could not connect to the receiver: {}", root_cause(error)),
        )
    } else if error.is_builder() {
        DeliveryError::new(
            Failure::Request,
            false,
            format!("could not build the request: {}", root_cause(error)),
        )
    } else {
        DeliveryError::new(
            Failure::Transport,
            true,
            format!("the connection failed: {}", root_cause(error)),
        )
    }
}

/// The innermost cause, which names what went wrong without the URL reqwest's own text adds.
fn root_cause(error: &reqwest::Error) -> String {
    let Some(mut cause) = error.source() else {
        return "the request could not be made".to_owned();
    };
    while let Some(source) = cause.source() {
        cause = source;
    }
    cap(&cause.to_string(), REMOTE_TEXT_LIMIT).to_lowercase()
}

fn status_error(status: StatusCode, response: &reqwest::Response) -> DeliveryError {
    let code = status.as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let (failure, retryable, message) = if status.is_redirection() {
        (
            Failure::Redirect,
            false,
            format!("the receiver redirected (http {code}); set url to the final address"),
        )
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        (
            Failure::Status,
            true,
            format!("the receiver answered http {code}"),
        )
    } else {
        (
            Failure::Status,
            false,
            format!("the receiver refused the notification: http {code}"),
        )
    };
    DeliveryError {
        failure,
        retryable,
        status: Some(code),
        code: None,
        retry_after,
        message,
    }
}

/// Reads a chat robot's answer: `{"errcode": 0, …}` (DingTalk, WeCom) or `{"code": 0, …}` /
/// `{"StatusCode": 0, …}` (Feishu, new and old) is success, any other code a refusal.
fn robot_verdict(kind: Kind, answer: &[u8]) -> Result<(), DeliveryError> {
    let robot = match kind {
        Kind::DingTalk => "dingtalk",
        Kind::WeCom => "wecom",
        Kind::Feishu => "feishu",
        Kind::Generic => return Ok(()),
    };
    let unrecognised = || {
        DeliveryError::new(
            Failure::Unrecognised,
            false,
            format!(
                "the receiver answered, but not like a {robot} robot; is url the robot's webhook address?"
            ),
        )
    };
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(answer) else {
        return Err(unrecognised());
    };
    let Some(code) = ["errcode", "code", "StatusCode"]
        .iter()
        .find_map(|key| fields.get(*key).and_then(serde_json::Value::as_i64))
    else {
        return Err(unrecognised());
    };
    if code == 0 {
        return Ok(());
    }
    let remote_text = ["errmsg", "msg", "StatusMessage"]
        .iter()
        .find_map(|key| fields.get(*key).and_then(serde_json::Value::as_str))
        .map(|text| cap(text, REMOTE_TEXT_LIMIT))
        .unwrap_or_default();
    let retryable = robot_code_is_retryable(kind, code);
    let mut error = DeliveryError::new(
        Failure::Rejected,
        retryable,
        if remote_text.is_empty() {
            format!("{robot} refused the message: code {code}")
        } else {
            format!("{robot} refused the message: code {code} ({remote_text})")
        },
    );
    error.code = Some(code);
    Err(error)
}

/// The robots' codes for "busy" and "too fast": the same message goes through later. Every
/// other code (bad signature, keyword missing, robot removed, malformed message) needs an
/// operator, not a retry.
fn robot_code_is_retryable(kind: Kind, code: i64) -> bool {
    match kind {
        // -1 system busy; 130101 sending too fast (20 a minute); 410100 rate limited.
        Kind::DingTalk => matches!(code, -1 | 130_101 | 410_100),
        // -1 system busy; 45009 api frequency limit.
        Kind::WeCom => matches!(code, -1 | 45_009),
        // 11232 frequency limited.
        Kind::Feishu => code == 11_232,
        Kind::Generic => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{RawQuery, State};
    use axum::http::{HeaderMap, StatusCode as AxumStatus};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;
    use crate::notify::tests::sample;

    /// What a test receiver saw: headers, query and body of each request.
    type Seen = Arc<Mutex<Vec<(HeaderMap, Option<String>, Bytes)>>>;

    /// Serves `answer` (status, body) for every POST on 127.0.0.1, recording the requests.
    async fn receiver(answer: (u16, &'static str)) -> (SocketAddr, Seen) {
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route(
                "/hook",
                post(
                    move |State(seen): State<Seen>,
                          RawQuery(query): RawQuery,
                          headers: HeaderMap,
                          body: Bytes| async move {
                        seen.lock().unwrap().push((headers, query, body));
                        let status = AxumStatus::from_u16(answer.0).unwrap();
                        let mut response = (status, answer.1).into_response();
                        if answer.0 == 429 {
                            response
                                .headers_mut()
                                .insert("retry-after", HeaderValue::from_static("7"));
                        }
                        response
                    },
                ),
            )
            .with_state(seen.clone());
        (serve(app).await, seen)
    }

    async fn serve(app: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn target(kind: &str, url: String, secret: Option<&str>) -> Target {
        let mut entry = toml::Table::new();
        entry.insert("kind".into(), kind.into());
        entry.insert("url".into(), url.into());
        entry.insert("timeout".into(), "5s".into());
        if let Some(secret) = secret {
            entry.insert("secret".into(), secret.into());
        }
        Target::from_toml(0, &toml::Value::Table(entry)).unwrap()
    }

    const NOW_MS: i64 = 1_796_200_230_000;

    #[tokio::test]
    async fn generic_delivery_is_signed_keyed_and_carries_the_schema() {
        let (addr, seen) = receiver((204, "")).await;
        let target = target("generic", format!("http://{addr}/hook"), Some("s3cret"));
        let sender = Sender::new().unwrap();
        let delivered = sender.deliver(&target, &sample(), NOW_MS).await.unwrap();
        assert_eq!(delivered, Delivered { status: 204 });

        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (headers, _, body) = &seen[0];
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
        assert_eq!(headers["x-xiaoer-key"], "esc-42-created");
        // The receiver's check, done the way docs/notifications.md tells receivers to.
        let signature = hex_decode(headers["x-xiaoer-signature"].to_str().unwrap());
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        mac.verify_slice(&signature)
            .expect("the signature verifies");

        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        let fields = [
            ("event", serde_json::json!("escalation.created")),
            ("key", "esc-42-created".into()),
            ("shop", "shop1".into()),
            ("shop_name", "小二旗舰店".into()),
            ("platform", "taobao".into()),
            ("user_id", "u1".into()),
            ("queue", "refund".into()),
            ("escalation_id", 42.into()),
            ("first_message", "我要退款，东西坏了".into()),
            ("at", "2026-12-02T08:30:15.250Z".into()),
            ("console_url", "https://console.example.com/chats/42".into()),
        ];
        for (name, value) in &fields {
            assert_eq!(&json[name], value, "field {name}");
        }
        assert_eq!(json.as_object().unwrap().len(), fields.len());
    }

    #[tokio::test]
    async fn generic_delivery_without_a_secret_is_unsigned() {
        let (addr, seen) = receiver((200, "ok")).await;
        let target = target("generic", format!("http://{addr}/hook"), None);
        Sender::new()
            .unwrap()
            .deliver(&target, &sample(), NOW_MS)
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        assert!(seen[0].0.get("x-xiaoer-signature").is_none());
        assert_eq!(seen[0].0["x-xiaoer-key"], "esc-42-created");
    }

    #[tokio::test]
    async fn http_statuses_say_whether_to_retry() {
        let table = [
            (500, true, "the receiver answered http 500"),
            (503, true, "the receiver answered http 503"),
            (429, true, "the receiver answered http 429"),
            (408, true, "the receiver answered http 408"),
            (
                400,
                false,
                "the receiver refused the notification: http 400",
            ),
            (
                401,
                false,
                "the receiver refused the notification: http 401",
            ),
            (
                404,
                false,
                "the receiver refused the notification: http 404",
            ),
            (302, false, "the receiver redirected (http 302)"),
        ];
        let sender = Sender::new().unwrap();
        for (status, retryable, message) in table {
            let (addr, seen) = receiver((status, "nope")).await;
            let target = target("generic", format!("http://{addr}/hook"), Some("s3cret"));
            let error = sender
                .deliver(&target, &sample(), NOW_MS)
                .await
                .unwrap_err();
            assert_eq!(error.is_retryable(), retryable, "http {status}");
            assert_eq!(error.status(), Some(status));
            assert!(
                error.to_string().starts_with(message),
                "http {status}: {error}"
            );
            assert_eq!(
                error.retry_after(),
                (status == 429).then_some(Duration::from_secs(7))
            );
            assert_eq!(
                seen.lock().unwrap().len(),
                1,
                "one attempt, no redirect followed"
            );
        }
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_times_out() {
        let app = Router::new().route("/hook", post(std::future::pending::<&'static str>));
        let addr = serve(app).await;
        let mut target = target("generic", format!("http://{addr}/hook"), None);
        target.timeout = Duration::from_millis(200);
        let sender = Sender::new().unwrap();
        let n = sample();
        let attempt = sender.deliver(&target, &n, NOW_MS);
        // The outer limit only keeps a broken timeout from hanging the test run.
        let error = tokio::time::timeout(Duration::from_secs(30), attempt)
            .await
            .expect("the target's timeout fires first")
            .unwrap_err();
        assert_eq!(error.failure(), Failure::Timeout);
        assert!(error.is_retryable());
        assert_eq!(error.to_string(), "no answer within 200ms");
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable_and_names_no_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let target = target(
            "wecom",
            format!("http://{addr}/cgi-bin/webhook/send?key=robot-key-value"),
            None,
        );
        let error = Sender::new()
            .unwrap()
            .deliver(&target, &sample(), NOW_MS)
            .await
            .unwrap_err();
        assert_eq!(error.failure(), Failure::Connect);
        assert!(error.is_retryable());
        let message = error.to_string();
        assert!(
            message.starts_with("could not connect to the receiver"),
            "{message}"
        );
        assert!(
            !message.contains("robot-key-value") && !message.contains("127.0.0.1"),
            "{message}"
        );
        assert_eq!(message, message.to_lowercase());
    }

    #[tokio::test]
    async fn dingtalk_delivery_is_signed_in_the_url_and_its_error_codes_count() {
        let secret = "SECtest-secret";
        let table = [
            (r#"{"errcode":0,"errmsg":"ok"}"#, None),
            (
                r#"{"errcode":310000,"errmsg":"sign not match"}"#,
                Some((
                    false,
                    "dingtalk refused the message: code 310000 (sign not match)",
                )),
            ),
            (
                r#"{"errcode":130101,"errmsg":"send too fast"}"#,
                Some((
                    true,
                    "dingtalk refused the message: code 130101 (send too fast)",
                )),
            ),
            (
                "<html>gateway login</html>",
                Some((
                    false,
                    "the receiver answered, but not like a dingtalk robot",
                )),
            ),
        ];
        let sender = Sender::new().unwrap();
        for (answer, expected) in table {
            let (addr, seen) = receiver((200, answer)).await;
            let target = target(
                "dingtalk",
                format!("http://{addr}/hook?access_token=t0k"),
                Some(secret),
            );
            let result = sender.deliver(&target, &sample(), NOW_MS).await;
            match (result, expected) {
                (Ok(delivered), None) => assert_eq!(delivered.status, 200),
                (Err(error), Some((retryable, message))) => {
                    assert_eq!(error.is_retryable(), retryable, "{answer}");
                    assert!(error.to_string().starts_with(message), "{error}");
                    assert_eq!(error.status(), Some(200));
                }
                (result, expected) => panic!("{answer}: {result:?}, expected {expected:?}"),
            }

            let seen = seen.lock().unwrap();
            let (_, query, body) = &seen[0];
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(query.as_deref().unwrap()).unwrap();
            assert_eq!(
                pairs,
                [
                    ("access_token".to_owned(), "t0k".to_owned()),
                    ("timestamp".to_owned(), NOW_MS.to_string()),
                    ("sign".to_owned(), sign::dingtalk(secret, NOW_MS)),
                ]
            );
            let json: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(json["msgtype"], "markdown");
            assert!(
                json["markdown"]["text"]
                    .as_str()
                    .unwrap()
                    .contains("首条消息：我要退款")
            );
        }
    }

    #[tokio::test]
    async fn feishu_delivery_is_signed_in_the_body() {
        let (addr, seen) = receiver((200, r#"{"code":0,"msg":"success","data":{}}"#)).await;
        let target = target("feishu", format!("http://{addr}/hook"), Some("fs-secret"));
        Sender::new()
            .unwrap()
            .deliver(&target, &sample(), NOW_MS)
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&seen[0].2).unwrap();
        assert_eq!(json["timestamp"], "1796200230");
        assert_eq!(json["sign"], sign::feishu("fs-secret", 1_796_200_230));
        assert_eq!(json["msg_type"], "text");
    }

    #[test]
    fn robot_answers_are_read_per_kind() {
        let table = [
            (Kind::WeCom, r#"{"errcode":0,"errmsg":"ok"}"#, None),
            (
                Kind::WeCom,
                r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#,
                Some(true),
            ),
            (
                Kind::WeCom,
                r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#,
                Some(false),
            ),
            (
                Kind::WeCom,
                r#"{"errcode":-1,"errmsg":"system busy"}"#,
                Some(true),
            ),
            (Kind::Feishu, r#"{"code":0,"msg":"success"}"#, None),
            (
                Kind::Feishu,
                r#"{"StatusCode":0,"StatusMessage":"success"}"#,
                None,
            ),
            (
                Kind::Feishu,
                r#"{"code":19021,"msg":"sign match fail"}"#,
                Some(false),
            ),
            (
                Kind::Feishu,
                r#"{"code":11232,"msg":"frequency limited"}"#,
                Some(true),
            ),
            (Kind::Feishu, r#"{"msg":"success"}"#, Some(false)),
            (
                Kind::DingTalk,
                r#"{"errcode":410100,"errmsg":"limited"}"#,
                Some(true),
            ),
            (
                Kind::DingTalk,
                r#"{"errcode":300001,"errmsg":"token is not exist"}"#,
                Some(false),
            ),
            (Kind::DingTalk, "[]", Some(false)),
            (Kind::DingTalk, "", Some(false)),
        ];
        for (kind, answer, expected) in table {
            let verdict = robot_verdict(kind, answer.as_bytes());
            assert_eq!(
                verdict.as_ref().err().map(DeliveryError::is_retryable),
                expected,
                "{kind} {answer}: {verdict:?}"
            );
        }
    }

    fn hex_decode(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }
}
