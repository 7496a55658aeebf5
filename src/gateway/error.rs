//! The gateway's two error types: [`GatewayError`] for connecting and connections,
//! [`SendError`] for one `send_message`.

use std::time::Duration;

/// Why a connection attempt or a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The url cannot be used for a websocket connection; retrying cannot help.
    #[error("invalid gateway url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The token cannot be put in a header; retrying cannot help.
    #[error(
        "the gateway token is not a valid header value (it has a line break or another control character)"
    )]
    InvalidToken,
    /// The gateway answered the handshake with 401 or 403.
    #[error("gateway rejected the token (http {status})")]
    Rejected { status: u16 },
    /// The handshake failed otherwise (connection refused, other http status, ...).
    #[error("connecting to {url} failed: {reason}")]
    Connect { url: String, reason: String },
    /// TCP connect plus handshake took too long.
    #[error("connecting to {url} timed out after {after:?}")]
    ConnectTimeout { url: String, after: Duration },
    /// Nothing arrived for the pong deadline.
    #[error("no frame from the gateway for {0:?}: pong missing, connection presumed dead")]
    Dead(Duration),
    /// The gateway closed the connection.
    #[error("gateway closed the connection{}", .reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed { reason: Option<String> },
    /// A text frame was not valid UTF-8; the websocket is failed with close code 1007, as
    /// RFC 6455 requires.
    #[error("the gateway sent a text frame that is not valid utf-8 ({reason}); connection closed")]
    InvalidText { reason: String },
    /// Reading or writing the websocket failed.
    #[error("websocket {op} failed: {reason}")]
    Io { op: &'static str, reason: String },
    /// A websocket write did not finish in time (the gateway stopped reading).
    #[error("writing to the gateway timed out after {0:?}")]
    WriteTimeout(Duration),
}

impl GatewayError {
    /// True for errors that retrying cannot fix (an invalid url or token): the client stops
    /// instead of reconnecting.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::InvalidUrl { .. } | Self::InvalidToken)
    }
}

/// Why `send_message` did not deliver.
///
/// [`SendError::may_have_been_delivered`] tells a failure (nothing reached the buyer) from an
/// unknown outcome (the message was written and may have reached the buyer), so the caller can
/// record the send as "unknown" rather than "failed" and not resend blindly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No connection to the gateway, and none came within the wait.
    #[error("not connected to the gateway (waited {waited:?})")]
    NotConnected { waited: Duration },
    /// The outgoing queue stayed full; nothing was sent.
    #[error("outgoing queue full for {waited:?}; message not sent")]
    QueueFull { waited: Duration },
    /// No response in time. The message may have been delivered: do not resend blindly.
    #[error(
        "no response to send_message (echo {echo}) within {after:?}; it may have been delivered"
    )]
    Timeout { echo: String, after: Duration },
    /// The connection died after the message was written; it may have been delivered.
    #[error("connection lost after sending; the message may have been delivered")]
    ConnectionLost,
    /// Connections kept dropping before the message was written; nothing was sent.
    #[error(
        "the connection dropped {attempts} times before the message could be written; not sent"
    )]
    LostBeforeWrite { attempts: u32 },
    /// Retcode 1xxxx: the request was wrong (our mistake); not retried.
    #[error("gateway rejected send_message: retcode {retcode}: {message}")]
    Rejected { retcode: i64, message: String },
    /// Any other failure, including 34xxx after the last retry.
    #[error("send_message failed after {attempts} attempt(s): retcode {retcode}: {message}")]
    Failed {
        retcode: i64,
        message: String,
        attempts: u32,
    },
    /// The client stopped for good on an error retrying cannot fix (invalid url or token).
    #[error("the gateway client stopped: {reason}")]
    Stopped { reason: String },
    /// The client was shut down.
    #[error("the gateway client is shut down")]
    Shutdown,
}

impl SendError {
    /// True when the message was written to the gateway and may have reached the buyer
    /// ([`SendError::Timeout`], [`SendError::ConnectionLost`]); false when it certainly did
    /// not.
    pub fn may_have_been_delivered(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::ConnectionLost)
    }

    /// The retcode, or what happened instead, for the `send_failures` metric.
    pub fn metric_label(&self) -> String {
        match self {
            Self::Rejected { retcode, .. } | Self::Failed { retcode, .. } => retcode.to_string(),
            Self::NotConnected { .. } => "not_connected".to_owned(),
            Self::QueueFull { .. } => "queue_full".to_owned(),
            Self::Timeout { .. } => "timeout".to_owned(),
            Self::ConnectionLost => "connection_lost".to_owned(),
            Self::LostBeforeWrite { .. } => "lost_before_write".to_owned(),
            Self::Stopped { .. } => "stopped".to_owned(),
            Self::Shutdown => "shutdown".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_errors_say_whether_the_message_may_have_been_delivered() {
        let wait = Duration::from_secs(1);
        let cases = [
            (SendError::NotConnected { waited: wait }, false),
            (SendError::QueueFull { waited: wait }, false),
            (
                SendError::Timeout {
                    echo: "e".into(),
                    after: wait,
                },
                true,
            ),
            (SendError::ConnectionLost, true),
            (SendError::LostBeforeWrite { attempts: 4 }, false),
            (
                SendError::Rejected {
                    retcode: 10003,
                    message: "bad".into(),
                },
                false,
            ),
            (
                SendError::Failed {
                    retcode: 34001,
                    message: "busy".into(),
                    attempts: 4,
                },
                false,
            ),
            (
                SendError::Stopped {
                    reason: "invalid".into(),
                },
                false,
            ),
            (SendError::Shutdown, false),
        ];
        for (error, want) in cases {
            assert_eq!(error.may_have_been_delivered(), want, "{error:?}");
            let text = error.to_string();
            assert_eq!(text, text.to_lowercase(), "lowercase: {text}");
        }
    }
}
