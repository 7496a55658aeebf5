//! The floor of the transport: a bare OneBot 12 client that answers every buyer message with a
//! fixed text and does nothing else (no rules, no store, no state). `xiaoer-load` drives it
//! exactly as it drives xiaoer, so xiaoer's cost is reported as a ratio to this.
//!
//! It uses the same frame decoder and the same websocket library as xiaoer, so the ratio is
//! what xiaoer adds on top of reading and writing frames.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::gateway::Incoming;
use crate::gateway::onebot;

/// The one reply the bare client sends.
pub const BARE_REPLY: &str = "您好，在的";

/// Why the bare client stopped.
#[derive(Debug, thiserror::Error)]
pub enum BareError {
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("{url} is not a websocket url: {source}")]
    Url {
        url: String,
        source: tokio_tungstenite::tungstenite::Error,
    },
}

/// Connects to every url and answers until every connection has closed.
///
/// # Errors
///
/// The first connection that cannot be made.
pub async fn run(urls: &[String], token: Option<&str>) -> Result<(), BareError> {
    let mut tasks = Vec::new();
    for url in urls {
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|source| BareError::Url {
                url: url.clone(),
                source,
            })?;
        if let Some(token) = token
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            request.headers_mut().insert("authorization", value);
        }
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .map_err(|source| BareError::Connect {
                url: url.clone(),
                source,
            })?;
        tasks.push(tokio::spawn(answer(socket)));
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

async fn answer<S>(socket: tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = socket.split();
    let mut echo: u64 = 0;
    while let Some(Ok(frame)) = rx.next().await {
        let Message::Text(text) = frame else {
            continue;
        };
        if let Ok(Incoming::Message(message)) = onebot::decode(text.as_str())
            && !message.outgoing
        {
            echo += 1;
            let reply = onebot::encode_send_message(
                &message.platform,
                &message.self_id,
                &message.user_id,
                BARE_REPLY,
                &echo.to_string(),
            );
            if tx.send(Message::Text(reply.into())).await.is_err() {
                break;
            }
        }
    }
}
