//! The gateway client against the development gateway over real websockets on 127.0.0.1.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use xiaoer::gateway::{
    DevGateway, DevGatewayConfig, GatewayConfig, GatewayError, GatewayEvent, GatewayHandle,
    PrivateMessage, SendError, check_connect, spawn,
};

const WAIT: Duration = Duration::from_secs(10);

fn dev_config(token: &str) -> DevGatewayConfig {
    DevGatewayConfig {
        token: Some(token.to_owned()),
        shops: vec!["shop1".to_owned(), "shop2".to_owned()],
        ..DevGatewayConfig::default()
    }
}

fn client_config(url: String, token: &str) -> GatewayConfig {
    GatewayConfig {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        retry_backoff: Duration::from_millis(10),
        ..GatewayConfig::new(url).with_token(token).with_name("dev")
    }
}

struct Client {
    handle: GatewayHandle,
    events: mpsc::Receiver<GatewayEvent>,
    cancel: CancellationToken,
}

impl Client {
    fn start(config: GatewayConfig) -> Client {
        let (tx, events) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let handle = spawn(config, tx, cancel.clone());
        Client {
            handle,
            events,
            cancel,
        }
    }

    /// The next event that is not a status update.
    async fn next(&mut self) -> GatewayEvent {
        loop {
            let event = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .expect("an event within the wait")
                .expect("the event channel is open");
            if !matches!(event, GatewayEvent::Status { .. }) {
                return event;
            }
        }
    }

    async fn next_message(&mut self) -> PrivateMessage {
        match self.next().await {
            GatewayEvent::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.handle.join().await;
    }
}

async fn connected(gw: &DevGateway, token: &str) -> Client {
    let mut client = Client::start(client_config(gw.url(), token));
    assert!(matches!(
        client.next().await,
        GatewayEvent::Connected { .. }
    ));
    assert!(gw.wait_for_bots(1, WAIT).await);
    client
}

#[tokio::test]
async fn buyer_message_arrives_and_reply_gets_a_message_id() {
    let gw = DevGateway::start(dev_config("s3cret")).await.unwrap();
    let (tx, mut events) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let handle = spawn(client_config(gw.url(), "s3cret"), tx, cancel.clone());
    assert!(matches!(
        events.recv().await,
        Some(GatewayEvent::Connected { .. })
    ));
    // meta.status_update names both shops.
    let Some(GatewayEvent::Status { status, .. }) = events.recv().await else {
        panic!("expected the status update")
    };
    let shops: Vec<_> = status.bots.iter().map(|b| b.self_id.as_str()).collect();
    assert_eq!(shops, ["shop1", "shop2"]);
    let mut client = Client {
        handle,
        events,
        cancel,
    };

    let id = gw.buyer_says("shop2", "buyer7", "在吗？什么时候发货");
    let m = client.next_message().await;
    assert_eq!(
        (m.platform.as_str(), m.self_id.as_str(), m.user_id.as_str()),
        ("dev", "shop2", "buyer7")
    );
    assert_eq!(m.text, "在吗？什么时候发货");
    assert_eq!(m.message_id, id);
    assert!(!m.outgoing);

    let sent = client
        .handle
        .send_message("dev", "shop2", "buyer7", "亲，今天下午发货")
        .await
        .unwrap();
    let bot = gw.next_bot_message(WAIT).await.unwrap();
    assert_eq!(bot.message_id, sent.message_id);
    assert_eq!(
        (
            bot.self_id.as_str(),
            bot.user_id.as_str(),
            bot.text.as_str()
        ),
        ("shop2", "buyer7", "亲，今天下午发货")
    );

    // The shop answering from another client, and a redelivered buyer message.
    gw.shop_says_outgoing("shop2", "buyer7", "我来处理", "phone-1");
    let m = client.next_message().await;
    assert!(m.outgoing);
    assert_eq!(m.message_id, "phone-1");
    gw.redeliver("shop2", "buyer7", "在吗？什么时候发货", &id);
    assert_eq!(client.next_message().await.message_id, id);

    client.stop().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn retryable_failures_are_retried_then_delivered_once() {
    let gw = DevGateway::start(dev_config("t")).await.unwrap();
    let client = connected(&gw, "t").await;
    gw.set_retcode_for_next_sends([34001, 34002]);
    let sent = client
        .handle
        .send_message("dev", "shop1", "b", "您好")
        .await
        .unwrap();
    let bot = gw.next_bot_message(WAIT).await.unwrap();
    assert_eq!(bot.message_id, sent.message_id);
    assert_eq!(gw.next_bot_message(Duration::from_millis(200)).await, None);

    // Our own mistakes are not retried.
    gw.set_retcode_for_next_sends([10003, 0]);
    let err = client
        .handle
        .send_message("dev", "shop1", "b", "again")
        .await
        .unwrap_err();
    assert!(
        matches!(err, SendError::Rejected { retcode: 10003, .. }),
        "{err:?}"
    );
    // Unknown shop: the gateway says it is our mistake.
    let err = client
        .handle
        .send_message("dev", "nope", "b", "x")
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Rejected { .. }), "{err:?}");
    client.stop().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_frames_are_skipped_and_the_connection_keeps_working() {
    let gw = DevGateway::start(dev_config("t")).await.unwrap();
    let mut client = connected(&gw, "t").await;
    gw.send_raw_frame("this is not json");
    gw.send_raw_frame("[1, 2, 3]");
    gw.send_raw_frame(r#"{"type":"notice","detail_type":"friend_increase","sub_type":""}"#);
    gw.send_raw_frame(r#"{"type":"message","detail_type":"private","message_id":"x"}"#);
    // Over the 64 KiB message limit but under the websocket hard cap: skipped.
    gw.send_raw_frame(format!(
        r#"{{"type":"meta","detail_type":"heartbeat","interval":5000,"pad":"{}"}}"#,
        "x".repeat(100 * 1024)
    ));
    let id = gw.buyer_says("shop1", "b", "还在吗");
    let m = client.next_message().await;
    assert_eq!(m.message_id, id);
    assert!(client.handle.is_connected());
    client
        .handle
        .send_message("dev", "shop1", "b", "在的")
        .await
        .unwrap();
    client.stop().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn frames_beyond_the_hard_cap_drop_the_connection_which_comes_back() {
    let gw = DevGateway::start(dev_config("t")).await.unwrap();
    let mut client = connected(&gw, "t").await;
    gw.send_raw_frame("y".repeat(2 * 1024 * 1024));
    let GatewayEvent::Disconnected { reason, .. } = client.next().await else {
        panic!("expected a disconnect")
    };
    assert!(reason.contains("read failed"), "{reason}");
    assert!(matches!(
        client.next().await,
        GatewayEvent::Connected { .. }
    ));
    client.stop().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn client_reconnects_after_a_gateway_restart() {
    let gw = DevGateway::start(dev_config("t")).await.unwrap();
    let addr = gw.addr();
    let mut client = connected(&gw, "t").await;
    gw.shutdown().await;
    assert!(matches!(
        client.next().await,
        GatewayEvent::Disconnected { .. }
    ));
    let err = client
        .handle
        .send_message("dev", "shop1", "b", "nobody there")
        .await;
    assert!(
        matches!(err, Err(SendError::NotConnected { .. })),
        "{err:?}"
    );

    let gw = DevGateway::start(DevGatewayConfig {
        addr,
        ..dev_config("t")
    })
    .await
    .unwrap();
    assert!(matches!(
        client.next().await,
        GatewayEvent::Connected { .. }
    ));
    assert!(gw.wait_for_bots(1, WAIT).await);
    let id = gw.buyer_says("shop1", "b", "我又来了");
    assert_eq!(client.next_message().await.message_id, id);
    client.stop().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn wrong_token_is_refused_and_retried() {
    let gw = DevGateway::start(dev_config("right")).await.unwrap();
    let config = client_config(gw.url(), "wrong");
    let err = check_connect(&config).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::Rejected { status: 401 }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "gateway rejected the token (http 401)");

    let mut client = Client::start(config);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!client.handle.is_connected());
    assert_eq!(gw.connected_bots(), 0);
    assert!(
        gw.rejected_handshakes() >= 3,
        "{} attempts",
        gw.rejected_handshakes()
    );
    assert!(client.events.try_recv().is_err(), "no events at all");
    client.stop().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn the_long_path_works_and_the_page_is_served() {
    let gw = DevGateway::start(dev_config("t")).await.unwrap();
    let url = format!("ws://{}/onebot/v12/ws", gw.addr());
    check_connect(&client_config(url.clone(), "t"))
        .await
        .unwrap();
    // Token in the query, as the spec allows for clients that cannot set headers.
    check_connect(&GatewayConfig::new(format!("{url}?access_token=t")))
        .await
        .unwrap();

    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    tcp.read_to_string(&mut page).await.unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("/page/ws"));
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_cleanly_and_pending_sends_fail() {
    let gw = DevGateway::start(dev_config("t")).await.unwrap();
    let mut client = connected(&gw, "t").await;
    client.cancel.cancel();
    let GatewayEvent::Disconnected { reason, .. } = client.next().await else {
        panic!("expected a disconnect")
    };
    assert_eq!(reason, "shutting down");
    client.handle.join().await;
    assert_eq!(
        client.handle.send_message("dev", "shop1", "b", "x").await,
        Err(SendError::Shutdown)
    );
    assert!(
        tokio::time::timeout(WAIT, async {
            while gw.connected_bots() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok()
    );
    gw.shutdown().await;
}

mod raw {
    //! The dev gateway driven by hand-written websocket clients: the buyer page's socket, and a
    //! bot that sends garbage.

    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn next_json(ws: &mut Ws) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("no error");
            if let Message::Text(t) = frame {
                return serde_json::from_str(t.as_str()).unwrap();
            }
        }
    }

    async fn bot(gw: &DevGateway, token: &str) -> Ws {
        let mut request = gw.url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        tokio_tungstenite::connect_async(request).await.unwrap().0
    }

    #[tokio::test]
    async fn a_bot_sending_garbage_gets_errors_and_keeps_its_connection() {
        let gw = DevGateway::start(dev_config("t")).await.unwrap();
        let mut ws = bot(&gw, "t").await;
        assert_eq!(next_json(&mut ws).await["detail_type"], "connect");
        assert_eq!(next_json(&mut ws).await["detail_type"], "status_update");
        for garbage in [
            "not json",
            "[]",
            r#"{"action":"send_message","params":{"detail_type":"group"},"echo":"g"}"#,
            r#"{"action":"fly","params":{},"echo":"f"}"#,
        ] {
            ws.send(Message::Text(garbage.into())).await.unwrap();
            let resp = next_json(&mut ws).await;
            assert_eq!(resp["status"], "failed", "{garbage}: {resp}");
            assert!(resp["retcode"].as_i64().unwrap() >= 10000);
        }
        ws.send(Message::Binary(vec![0xff, 0x00].into()))
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws).await["retcode"], 10001);
        let action = json!({"action": "send_message", "echo": 5,
            "params": {"detail_type": "private", "user_id": "b",
                       "message": [{"type": "text", "data": {"text": "ok"}}]},
            "self": {"platform": "dev", "user_id": "shop1"}});
        ws.send(Message::Text(action.to_string().into()))
            .await
            .unwrap();
        let resp = next_json(&mut ws).await;
        assert_eq!(
            (resp["status"].as_str(), resp["echo"].as_i64()),
            (Some("ok"), Some(5))
        );
        assert!(resp["data"]["message_id"].is_string());
        gw.shutdown().await;
    }

    #[tokio::test]
    async fn the_buyer_page_socket_relays_both_ways() {
        let gw = DevGateway::start(dev_config("t")).await.unwrap();
        let mut client = connected(&gw, "t").await;
        let page_url = format!("ws://{}/page/ws", gw.addr());
        let (mut page, _) = tokio_tungstenite::connect_async(page_url).await.unwrap();
        let hello = next_json(&mut page).await;
        assert_eq!(hello["kind"], "hello");
        assert_eq!(hello["shops"], json!(["shop1", "shop2"]));

        let say =
            json!({"kind": "buyer", "self_id": "shop1", "user_id": "buyer1", "text": "有货吗"});
        page.send(Message::Text(say.to_string().into()))
            .await
            .unwrap();
        let m = client.next_message().await;
        assert_eq!((m.user_id.as_str(), m.text.as_str()), ("buyer1", "有货吗"));
        assert_eq!(next_json(&mut page).await["kind"], "buyer");

        client
            .handle
            .send_message("dev", "shop1", "buyer1", "有的")
            .await
            .unwrap();
        let shown = next_json(&mut page).await;
        assert_eq!(
            (
                shown["kind"].as_str(),
                shown["user_id"].as_str(),
                shown["text"].as_str()
            ),
            (Some("bot"), Some("buyer1"), Some("有的"))
        );

        let outgoing = json!({"kind": "outgoing", "self_id": "shop1", "user_id": "buyer1", "text": "我是客服小王"});
        page.send(Message::Text(outgoing.to_string().into()))
            .await
            .unwrap();
        let m = client.next_message().await;
        assert!(m.outgoing);
        assert_eq!(m.text, "我是客服小王");
        // Junk from a page is ignored.
        page.send(Message::Text("junk".into())).await.unwrap();
        client.stop().await;
        gw.shutdown().await;
    }
}
