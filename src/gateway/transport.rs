//! Transports: where the connection loop's websocket comes from.
//!
//! A [`Transport`] hands the supervisor one connection at a time as a `Sink`/`Stream` pair of
//! websocket [`Message`]s; the connection loop (`drive` in [`super::client`]) runs on that pair
//! and does not know how it was made. [`ForwardWs`] dials the gateway (OneBot 12's forward
//! websocket: xiaoer is the client). A reverse websocket (the gateway dials xiaoer) is a second
//! implementation whose `connect` waits for the gateway's next accepted upgrade, checks its
//! token and returns the same kind of pair — nothing else changes.

use std::future::Future;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, Stream, StreamExt};
use http::HeaderValue;
use http::header::AUTHORIZATION;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::client::GatewayConfig;
use super::error::GatewayError;

/// A source of websocket connections to a gateway.
pub trait Transport: Send + 'static {
    /// The writing half of a connection.
    type Sink: Sink<Message, Error = WsError> + Unpin + Send + 'static;
    /// The reading half of a connection.
    type Stream: Stream<Item = Result<Message, WsError>> + Unpin + Send + 'static;

    /// Where connections come from, for logs: a url, or the address a server listens on.
    fn describe(&self) -> String;

    /// The next connection, handshake done.
    ///
    /// # Errors
    ///
    /// Why no connection came about. The supervisor backs off and calls again, unless the
    /// error [`GatewayError::is_permanent`]: then it stops. A transport that waits for the
    /// gateway to dial in deals with bad peers itself and returns only errors of its own.
    fn connect(
        &mut self,
    ) -> impl Future<Output = Result<(Self::Sink, Self::Stream), GatewayError>> + Send;
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The forward websocket: xiaoer dials the gateway's url with `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct ForwardWs {
    url: String,
    token: Option<String>,
    connect_timeout: Duration,
    message_limit: usize,
}

impl ForwardWs {
    /// A transport dialing `config.url` with `config.token`, giving up on one attempt after
    /// `config.connect_timeout`; messages and frames beyond `config.hard_message_limit` (at
    /// least `max_message_size`) fail the connection.
    pub fn new(config: &GatewayConfig) -> Self {
        Self {
            url: config.url.clone(),
            token: config.token.clone(),
            connect_timeout: config.connect_timeout,
            message_limit: config.hard_message_limit.max(config.max_message_size),
        }
    }

    async fn dial(
        &self,
    ) -> Result<(SplitSink<WsStream, Message>, SplitStream<WsStream>), GatewayError> {
        validate_url(&self.url)?;
        let mut request =
            self.url
                .as_str()
                .into_client_request()
                .map_err(|e| GatewayError::InvalidUrl {
                    url: self.url.clone(),
                    reason: e.to_string(),
                })?;
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| GatewayError::InvalidToken)?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(self.message_limit))
            .max_frame_size(Some(self.message_limit))
            .max_write_buffer_size(4 * 1024 * 1024);
        match tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true).await {
            Ok((ws, _response)) => Ok(ws.split()),
            Err(WsError::Http(response)) => {
                let status = response.status().as_u16();
                if status == 401 || status == 403 {
                    Err(GatewayError::Rejected { status })
                } else {
                    Err(GatewayError::Connect {
                        url: self.url.clone(),
                        reason: format!("http {status} at handshake"),
                    })
                }
            }
            // The url passed `validate_url` but the websocket library cannot use it (wss://
            // without TLS support compiled in): just as permanent.
            Err(WsError::Url(e)) => Err(GatewayError::InvalidUrl {
                url: self.url.clone(),
                reason: e.to_string(),
            }),
            Err(e) => Err(GatewayError::Connect {
                url: self.url.clone(),
                reason: e.to_string(),
            }),
        }
    }
}

impl Transport for ForwardWs {
    type Sink = SplitSink<WsStream, Message>;
    type Stream = SplitStream<WsStream>;

    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn connect(&mut self) -> Result<(Self::Sink, Self::Stream), GatewayError> {
        match timeout(self.connect_timeout, self.dial()).await {
            Ok(result) => result,
            Err(_) => Err(GatewayError::ConnectTimeout {
                url: self.url.clone(),
                after: self.connect_timeout,
            }),
        }
    }
}

/// Checks that `url` can be a gateway's websocket url: `ws://` or `wss://`, a host, a valid
/// port. Call it when settings are read, so a typo is reported at start-up rather than as
/// connection failures.
///
/// # Errors
///
/// [`GatewayError::InvalidUrl`] with a reason an operator can act on.
///
/// # Examples
///
/// ```
/// use xiaoer::gateway::validate_url;
///
/// assert!(validate_url("ws://127.0.0.1:6700/").is_ok());
/// let err = validate_url("127.0.0.1:6700").unwrap_err();
/// assert!(err.to_string().contains("a gateway url starts with ws:// or wss://"));
/// ```
pub fn validate_url(url: &str) -> Result<(), GatewayError> {
    let invalid = |reason: String| GatewayError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    if url.trim() != url {
        return Err(invalid(
            "a gateway url has no spaces around it; check the quoting".into(),
        ));
    }
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("ws://")
        .or_else(|| lower.strip_prefix("wss://"))
    else {
        let reason = if lower.starts_with("http://") || lower.starts_with("https://") {
            "a gateway url starts with ws:// or wss://, not http:// or https:// \
             (the gateway's websocket is at ws://host:port/)"
        } else {
            "a gateway url starts with ws:// or wss://, e.g. ws://127.0.0.1:6700/"
        };
        return Err(invalid(reason.into()));
    };
    if rest.is_empty() || rest.starts_with(['/', '?', '#', ':']) {
        return Err(invalid(
            "a gateway url names a host after ws://, e.g. ws://127.0.0.1:6700/".into(),
        ));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| invalid(format!("it is not a valid url: {e}")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(
            "a gateway url names a host after ws://, e.g. ws://127.0.0.1:6700/".into(),
        ));
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let port = match host_port.rfind(']') {
        Some(end) => host_port[end + 1..].strip_prefix(':'),
        None => host_port.split_once(':').map(|(_, port)| port),
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(invalid(format!(
            "the port {port:?} is not a number from 1 to 65535, e.g. ws://127.0.0.1:6700/"
        )));
    }
    url.into_client_request()
        .map_err(|e| invalid(format!("it is not a valid websocket url: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_checked_with_reasons_an_operator_understands() {
        for good in [
            "ws://127.0.0.1:6700/",
            "ws://localhost:6700",
            "WS://gateway.shop.example/onebot/v12/ws?access_token=t",
            "wss://gateway.shop.example/",
            "ws://[::1]:6700/",
        ] {
            assert!(
                validate_url(good).is_ok(),
                "{good}: {:?}",
                validate_url(good)
            );
        }
        let cases = [
            (
                "127.0.0.1:6700",
                "a gateway url starts with ws:// or wss://",
            ),
            ("localhost", "a gateway url starts with ws:// or wss://"),
            ("http://127.0.0.1:6700/", "not http:// or https://"),
            ("", "a gateway url starts with ws:// or wss://"),
            ("ws://", "a gateway url names a host"),
            ("ws:///path", "a gateway url names a host"),
            ("ws://:6700/", "a gateway url names a host"),
            ("ws://host:port/", "the port \"port\" is not a number"),
            ("ws://host:/", "the port \"\" is not a number"),
            ("ws://[::1]:70000/", "the port \"70000\" is not a number"),
            ("ws://u:p@host:0/", "the port \"0\" is not a number"),
            (" ws://127.0.0.1/", "no spaces around it"),
            ("ws://bad host/", "it is not a valid url"),
        ];
        for (url, want) in cases {
            let err = validate_url(url).expect_err(url);
            let text = err.to_string();
            assert!(text.contains(want), "{url:?}: {text}");
            assert!(err.is_permanent());
            assert!(
                text.starts_with(&format!("invalid gateway url {url:?}")),
                "{text}"
            );
        }
    }
}
