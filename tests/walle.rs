//! The gateway client against walle-core 0.7.4, a OneBot 12 implementation nobody here wrote,
//! running as the forward-websocket server on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use walle_core::action::Action;
use walle_core::config::{Heartbeat, ImplConfig, WebSocketServer};
use walle_core::event::Event;
use walle_core::obc::ImplOBC;
use walle_core::prelude::{Version, async_trait};
use walle_core::resp::Resp;
use walle_core::structs::Selft;
use walle_core::{
    ActionHandler, EventHandler, GetSelfs, GetStatus, GetVersion, OneBot, WalleResult,
};
use xiaoer::gateway::{GatewayConfig, GatewayError, GatewayEvent, check_connect, spawn};

const WAIT: Duration = Duration::from_secs(10);

/// The shop side of walle: answers `send_message` and records what it was asked.
#[derive(Default)]
struct Shop {
    actions: Arc<Mutex<Vec<Value>>>,
}

#[async_trait]
impl GetSelfs for Shop {
    async fn get_selfs(&self) -> Vec<Selft> {
        vec![Selft {
            platform: "walle".into(),
            user_id: "shop9".into(),
        }]
    }
    async fn get_impl(&self, _selft: &Selft) -> String {
        "walle-test".into()
    }
}

#[async_trait]
impl GetStatus for Shop {
    async fn is_good(&self) -> bool {
        true
    }
}

impl GetVersion for Shop {
    fn get_version(&self) -> Version {
        Version {
            implt: "walle-test".into(),
            version: "0.7.4".into(),
            onebot_version: "12".into(),
        }
    }
}

#[async_trait]
impl ActionHandler<Event, Action, Resp> for Shop {
    type Config = ();
    async fn start<AH, EH>(
        &self,
        _ob: &Arc<OneBot<AH, EH>>,
        _config: (),
    ) -> WalleResult<Vec<tokio::task::JoinHandle<()>>>
    where
        AH: ActionHandler<Event, Action, Resp> + Send + Sync + 'static,
        EH: EventHandler<Event, Action, Resp> + Send + Sync + 'static,
    {
        Ok(vec![])
    }

    async fn call<AH, EH>(&self, action: Action, _ob: &Arc<OneBot<AH, EH>>) -> WalleResult<Resp>
    where
        AH: ActionHandler<Event, Action, Resp> + Send + Sync + 'static,
        EH: EventHandler<Event, Action, Resp> + Send + Sync + 'static,
    {
        let seen = serde_json::to_value(&action).unwrap_or(Value::Null);
        self.actions.lock().unwrap().push(seen);
        let resp = if action.action == "send_message" {
            json!({"status": "ok", "retcode": 0, "data": {"message_id": "walle-1", "time": 1.0}, "message": ""})
        } else {
            json!({"status": "failed", "retcode": 10002, "data": null, "message": "unsupported"})
        };
        Ok(serde_json::from_value(resp).unwrap())
    }
}

async fn next(events: &mut mpsc::Receiver<GatewayEvent>) -> GatewayEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("channel open")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_talks_to_walle_core() {
    let port = free_port();
    let actions = Arc::new(Mutex::new(Vec::new()));
    let ob = Arc::new(OneBot::new(
        Shop {
            actions: actions.clone(),
        },
        ImplOBC::<Event>::new("walle-test".into()),
    ));
    let config = ImplConfig {
        http: vec![],
        http_webhook: vec![],
        websocket: vec![WebSocketServer {
            host: [127, 0, 0, 1].into(),
            port,
            access_token: Some("walle-token".into()),
        }],
        websocket_rev: vec![],
        heartbeat: Heartbeat {
            enabled: true,
            interval: 1, // seconds: walle's unit, not the spec's
        },
    };
    ob.start((), config, true).await.unwrap();
    let url = format!("ws://127.0.0.1:{port}");

    // Bad token: walle answers 403 (the spec says 401); we take both as a rejected token.
    let bad = GatewayConfig::new(url.clone()).with_token("wrong");
    let err = check_connect(&bad).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::Rejected { status: 403 }),
        "{err:?}"
    );

    let (tx, mut events) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    // Our pings are off and the pong deadline is 2 s: only walle's heartbeats (every second)
    // can keep this connection alive.
    let handle = spawn(
        GatewayConfig {
            ping_interval: Duration::from_secs(3600),
            pong_timeout: Duration::from_secs(2),
            ..GatewayConfig::new(url)
                .with_token("walle-token")
                .with_name("walle")
        },
        tx,
        cancel.clone(),
    );
    assert!(matches!(
        next(&mut events).await,
        GatewayEvent::Connected { .. }
    ));
    // walle sends meta.connect (empty id), then meta.status_update with our bot.
    let GatewayEvent::Status { status, .. } = next(&mut events).await else {
        panic!("expected the status update")
    };
    assert_eq!(status.bots.len(), 1);
    assert_eq!(status.bots[0].self_id, "shop9");
    assert_eq!(status.bots[0].platform, "walle");

    // A private message pushed from walle's side reaches us.
    let event: Event = serde_json::from_value(json!({
        "id": "e-1", "time": 1700000000.5, "type": "message", "detail_type": "private",
        "sub_type": "", "message_id": "w-m1", "user_id": "buyer3",
        "self": {"platform": "walle", "user_id": "shop9"},
        "message": [{"type": "text", "data": {"text": "有优惠券吗"}},
                    {"type": "shop.item", "data": {"item_id": "i-42", "title": "茶具"}}],
        "alt_message": "有优惠券吗",
    }))
    .unwrap();
    ob.handle_event(event).await.unwrap();
    let message = loop {
        match next(&mut events).await {
            GatewayEvent::Message(m) => break m,
            GatewayEvent::Status { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(message.user_id, "buyer3");
    assert_eq!(message.self_id, "shop9");
    assert_eq!(message.text, "有优惠券吗");
    assert_eq!(message.cards.len(), 1);

    // Our send_message is understood by walle and its response matched by echo.
    let sent = handle
        .send_message("walle", "shop9", "buyer3", "有的，满199减20")
        .await
        .unwrap();
    assert_eq!(sent.message_id, "walle-1");
    let seen = actions.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["action"], "send_message");
    assert_eq!(seen[0]["params"]["user_id"], "buyer3");
    assert_eq!(
        seen[0]["params"]["message"][0]["data"]["text"],
        "有的，满199减20"
    );
    assert_eq!(seen[0]["self"]["user_id"], "shop9");

    // walle's heartbeats (interval given in seconds) keep the connection past several pong
    // deadlines: seven heartbeats a second apart on the first connection span three deadlines.
    // Were heartbeats not taken as signs of life, the connection would die after 2 s and the
    // count would start over on a second one.
    let mut link = handle.link_stats();
    let seen = *tokio::time::timeout(
        2 * WAIT,
        link.wait_for(|l| l.connections > 1 || l.heartbeats >= 7),
    )
    .await
    .expect("seven heartbeats in time")
    .expect("the client is running");
    assert_eq!(seen.connections, 1, "the connection dropped: {seen:?}");
    assert_eq!(seen.heartbeat_interval, Some(Duration::from_secs(1)));
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, GatewayEvent::Disconnected { .. }),
            "{event:?}"
        );
    }
    assert!(handle.is_connected());

    cancel.cancel();
    handle.join().await;
    ob.shutdown(true).await.ok();
}
