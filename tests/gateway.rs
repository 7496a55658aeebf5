//! The gateway client against the development gateway over real websockets on 127.0.0.1.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use xiaoer::devgateway::{DevGateway, DevGatewayConfig};
use xiaoer::gateway::{
    Card, GatewayConfig, GatewayError, GatewayEvent, GatewayHandle, PrivateMessage, SendError,
    check_connect, spawn,
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
    // A wrong token may be corrected on the gateway's side: the client keeps trying.
    assert!(
        gw.wait_for_rejections(4, WAIT).await,
        "{} attempts",
        gw.rejected_handshakes()
    );
    assert!(!client.handle.is_connected());
    assert_eq!(gw.connected_bots(), 0);
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
    assert!(gw.wait_for_no_bots(WAIT).await);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_url_without_ws_scheme_is_rejected_not_retried() {
    let gw = DevGateway::start(dev_config("t")).await.unwrap();
    // What an operator types after copying the gateway's address.
    let url = gw.addr().to_string();
    let err = check_connect(&client_config(url.clone(), "t"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::InvalidUrl { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "invalid gateway url {url:?}: a gateway url starts with ws:// or wss://, e.g. ws://127.0.0.1:6700/"
        )
    );

    // The client stops by itself, without being cancelled, instead of retrying forever.
    let mut client = Client::start(client_config(url, "t"));
    tokio::time::timeout(WAIT, client.handle.join())
        .await
        .expect("the client stops on an invalid url");
    let sent = client.handle.send_message("dev", "shop1", "b", "x").await;
    let Err(SendError::Stopped { reason }) = sent else {
        panic!("expected Stopped, got {sent:?}")
    };
    assert!(reason.contains("ws://"), "{reason}");
    assert!(client.events.try_recv().is_err(), "no events at all");
    assert_eq!(gw.connected_bots() + gw.rejected_handshakes(), 0);
    client.stop().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_url_without_a_host_is_rejected_not_retried() {
    let client = Client::start(client_config("ws:///onebot/v12/ws".into(), "t"));
    tokio::time::timeout(WAIT, client.handle.join())
        .await
        .expect("the client stops on an invalid url");
    let err = check_connect(&client_config("ws://:6700/".into(), "t"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("names a host"), "{err}");
    client.stop().await;
}

#[tokio::test]
async fn a_token_that_is_not_a_header_value_stops_the_client() {
    let gw = DevGateway::start(dev_config("t")).await.unwrap();
    let client = Client::start(client_config(gw.url(), "pasted\nwith a line break"));
    tokio::time::timeout(WAIT, client.handle.join())
        .await
        .expect("the client stops on an invalid token");
    let sent = client.handle.send_message("dev", "shop1", "b", "x").await;
    assert!(matches!(sent, Err(SendError::Stopped { .. })), "{sent:?}");
    assert_eq!(gw.connected_bots() + gw.rejected_handshakes(), 0);
    client.stop().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn cards_images_and_stickers_arrive_as_segments() {
    let gw = DevGateway::start(dev_config("t")).await.unwrap();
    let mut client = connected(&gw, "t").await;
    let id = gw.buyer_sends(
        "shop1",
        "b",
        json!([
            {"type": "shop.item", "data": {"item_id": "i-42", "title": "保温杯"}},
            {"type": "text", "data": {"text": "这个还有吗"}},
            {"type": "image", "data": {"file_id": "photo-1"}},
        ]),
    );
    let m = client.next_message().await;
    assert_eq!(m.message_id, id);
    assert_eq!(m.text, "这个还有吗");
    assert_eq!(
        m.cards,
        vec![
            Card::Item {
                item_id: "i-42".into(),
                title: "保温杯".into()
            },
            Card::Image {
                file_id: "photo-1".into()
            },
        ]
    );
    assert_eq!(
        m.transcript_text(),
        "这个还有吗 [商品 保温杯 (i-42)] [图片]"
    );

    gw.buyer_sends(
        "shop1",
        "b",
        json!([{"type": "face", "data": {"id": "14"}}]),
    );
    let m = client.next_message().await;
    assert_eq!(
        (m.text.as_str(), m.transcript_text().as_str()),
        ("", "[表情]")
    );
    client.stop().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_refund_request_cut_mid_emoji_by_the_gateway_still_arrives() {
    let gw = DevGateway::start(dev_config("t")).await.unwrap();
    let mut client = connected(&gw, "t").await;
    gw.send_raw_frame(
        r#"{"id":"e","type":"message","detail_type":"private","sub_type":"","message_id":"m-cut",
            "user_id":"b","self":{"platform":"dev","user_id":"shop1"},
            "message":[{"type":"text","data":{"text":"我要退款\ud83d"}}],"alt_message":"我要退款\ud83d"}"#,
    );
    let m = client.next_message().await;
    assert_eq!(
        (m.message_id.as_str(), m.text.as_str()),
        ("m-cut", "我要退款\u{FFFD}")
    );
    client.stop().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_huge_integer_user_id_gets_the_reply_at_its_exact_id() {
    let gw = DevGateway::start(dev_config("t")).await.unwrap();
    let mut client = connected(&gw, "t").await;
    gw.send_raw_frame(
        r#"{"id":"e","type":"message","detail_type":"private","sub_type":"","message_id":184467440737095516161,
            "user_id":184467440737095516160,"self":{"platform":"dev","user_id":"shop1"},
            "message":[{"type":"text","data":{"text":"在吗"}}]}"#,
    );
    let m = client.next_message().await;
    assert_eq!(m.user_id, "184467440737095516160");
    assert_eq!(m.message_id, "184467440737095516161");
    client
        .handle
        .send_message("dev", "shop1", &m.user_id, "在的")
        .await
        .unwrap();
    let bot = gw.next_bot_message(WAIT).await.unwrap();
    assert_eq!(bot.user_id, "184467440737095516160");
    client.stop().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_from_the_gateway_is_closed_with_1007_and_reconnected() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let mut client = Client::start(client_config(url, "t"));
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    assert!(matches!(
        client.next().await,
        GatewayEvent::Connected { .. }
    ));
    // A text frame whose payload is not UTF-8: "退" cut after its first byte.
    let bad = Frame::message(vec![b'{', 0xe9, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(bad)).await.unwrap();
    let closed = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the client answers in time");
    let Some(Ok(Message::Close(Some(frame)))) = closed else {
        panic!("expected a close frame, got {closed:?}")
    };
    assert_eq!(frame.code, CloseCode::Invalid);
    let GatewayEvent::Disconnected { reason, .. } = client.next().await else {
        panic!("expected a disconnect")
    };
    assert!(reason.contains("not valid utf-8"), "{reason}");
    // And it comes back.
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("a reconnect in time")
        .unwrap();
    let _ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    assert!(matches!(
        client.next().await,
        GatewayEvent::Connected { .. }
    ));
    client.stop().await;
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
    async fn a_reloaded_buyer_page_gets_the_history_and_the_chat_state_back() {
        let gw = DevGateway::start(dev_config("t")).await.unwrap();
        let mut client = connected(&gw, "t").await;
        gw.buyer_says("shop1", "buyer1", "在吗");
        client.next_message().await;
        client
            .handle
            .send_message("dev", "shop1", "buyer1", "在的")
            .await
            .unwrap();
        gw.show_chat_state("shop1", "buyer1", "queued");
        // A page opened (or reloaded) afterwards sees what happened before it.
        let page_url = format!("ws://{}/page/ws", gw.addr());
        let (mut page, _) = tokio_tungstenite::connect_async(page_url).await.unwrap();
        assert_eq!(next_json(&mut page).await["kind"], "hello");
        let replayed: Vec<(String, String)> = [
            next_json(&mut page).await,
            next_json(&mut page).await,
            next_json(&mut page).await,
        ]
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap_or_default().to_owned(),
                m["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
        assert_eq!(
            replayed,
            [
                ("buyer".to_owned(), "在吗".to_owned()),
                ("bot".to_owned(), "在的".to_owned()),
                ("state".to_owned(), "queued".to_owned()),
            ]
        );
        client.stop().await;
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
        // The page's quick buttons send segments: a product card here.
        let card = json!({"kind": "buyer", "self_id": "shop1", "user_id": "buyer1",
            "segments": [{"type": "shop.item", "data": {"item_id": "demo-1001", "title": "保温杯"}}]});
        page.send(Message::Text(card.to_string().into()))
            .await
            .unwrap();
        let m = client.next_message().await;
        assert_eq!(m.transcript_text(), "[商品 保温杯 (demo-1001)]");
        loop {
            let shown = next_json(&mut page).await;
            if shown["kind"] == "buyer" && shown["message_id"] == m.message_id.as_str() {
                assert_eq!(shown["text"], "[商品 保温杯 (demo-1001)]");
                break;
            }
        }
        // Junk from a page is ignored.
        page.send(Message::Text("junk".into())).await.unwrap();
        client.stop().await;
        gw.shutdown().await;
    }
}
