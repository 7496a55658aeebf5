//! The agent console over real HTTP: the daemon with its console on a port-0 listener, the
//! development gateway, a real SQLite file. Every route's access rules, CSRF, shop isolation,
//! concurrent claims (also across two instances' consoles on PostgreSQL), leases, replies
//! through the gateway, hostile buyer text.

mod common;

use common::rule_dirs;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use tempfile::TempDir;
use xiaoer::config::{Config, GatewaySettings, ShopSettings};
use xiaoer::console::ConsoleSettings;
use xiaoer::daemon::Running;
use xiaoer::devgateway::{BotMessage, DevGateway, DevGatewayConfig};
use xiaoer::model::{ConversationKey, EscalationEvent, EscalationState, Role, Sender};

const TOKEN: &str = "secret";
const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "a-long-password";

struct Env {
    gateway: DevGateway,
    running: Running,
    base: String,
    _data: TempDir,
    _rules: TempDir,
}

async fn env() -> Env {
    env_with(Vec::new()).await
}

async fn env_with(notify: Vec<xiaoer::notify::Target>) -> Env {
    let gateway = DevGateway::start(DevGatewayConfig {
        token: Some(TOKEN.into()),
        shops: vec!["shop1".into(), "shop2".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let (rules_dir, rules, replies) = rule_dirs();
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        data: data.path().to_path_buf(),
        rules,
        replies,
        gateways: vec![GatewaySettings {
            url: gateway.url(),
            token: Some(TOKEN.into()),
            name: None,
        }],
        shops: vec![ShopSettings {
            id: "shop1".into(),
            name: Some("测试小店".into()),
            overlay: None,
            ..Default::default()
        }],
        console: ConsoleSettings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
        watch: false,
        notify,
        ..Config::default()
    };
    let running = xiaoer::daemon::start(config).await.unwrap();
    assert!(gateway.wait_for_bots(1, WAIT).await);
    let base = format!("http://{}", running.console_addr().unwrap());
    Env {
        gateway,
        running,
        base,
        _data: data,
        _rules: rules_dir,
    }
}

impl Env {
    async fn agent(&self, name: &str, role: Role, shops: &[&str]) -> Browser {
        let shops: Vec<String> = shops.iter().map(|s| s.to_string()).collect();
        xiaoer::accounts::add(self.running.store(), name, role, &shops, PASSWORD)
            .await
            .unwrap();
        let mut browser = Browser::new(&self.base);
        assert_eq!(browser.login(name, PASSWORD).await, StatusCode::SEE_OTHER);
        browser
    }

    async fn reply(&self) -> BotMessage {
        self.gateway
            .next_bot_message(WAIT)
            .await
            .expect("the bot answers")
    }

    /// A buyer of `shop` asks for a refund; returns the escalation id.
    async fn refund(&self, shop: &str, user: &str, text: &str) -> i64 {
        self.gateway.buyer_says(shop, user, text);
        assert!(self.reply().await.text.contains("退款专员"));
        self.running
            .store()
            .open_escalations()
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.key.user_id == user && e.key.self_id == shop)
            .map(|e| e.id)
            .expect("escalated")
    }
}

struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: Option<String>,
    csrf: String,
}

struct Page {
    status: StatusCode,
    body: String,
    location: Option<String>,
}

impl Browser {
    fn new(base: &str) -> Self {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookie: None,
            csrf: String::new(),
        }
    }

    async fn login(&mut self, name: &str, password: &str) -> StatusCode {
        let response = self
            .client
            .post(format!("{}/login", self.base))
            .form(&[("name", name), ("password", password)])
            .send()
            .await
            .unwrap();
        if let Some(cookie) = response.headers().get(SET_COOKIE) {
            let cookie = cookie.to_str().unwrap();
            assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
            self.cookie = cookie.split(';').next().map(str::to_owned);
        }
        let status = response.status();
        if status == StatusCode::SEE_OTHER {
            let page = self.get("/").await;
            self.csrf = page
                .body
                .split("name=\"csrf\" value=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("a csrf token on the page")
                .to_owned();
        }
        status
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(cookie) => builder.header(COOKIE, cookie),
            None => builder,
        }
    }

    async fn page(response: reqwest::Response) -> Page {
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        Page {
            status,
            location,
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        let builder = self.client.get(format!("{}{path}", self.base));
        Self::page(self.request(builder).send().await.unwrap()).await
    }

    async fn fragment(&self, path: &str) -> Page {
        let builder = self
            .client
            .get(format!("{}{path}", self.base))
            .header("HX-Request", "true");
        Self::page(self.request(builder).send().await.unwrap()).await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        form.extend_from_slice(fields);
        self.post_raw(path, &form).await
    }

    async fn post_raw(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let builder = self.client.post(format!("{}{path}", self.base)).form(form);
        Self::page(self.request(builder).send().await.unwrap()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_wants_a_session_and_every_post_its_csrf_token() {
    let env = env().await;
    let id = env.refund("shop1", "u1", "我要退款").await;
    let stranger = Browser::new(&env.base);
    let page = stranger.get("/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/login"));
    for path in [
        format!("/chat/{id}"),
        "/handover".into(),
        "/report".into(),
        "/notifications".into(),
    ] {
        assert_eq!(
            stranger.get(&path).await.status,
            StatusCode::SEE_OTHER,
            "{path}"
        );
    }
    for path in ["/queue/rows", "/events"] {
        assert_eq!(
            stranger.fragment(path).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    let page = stranger
        .post_raw(&format!("/chat/{id}/claim"), &[("csrf", "x")])
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let page = stranger
        .post_raw("/notifications/retry", &[("csrf", "x")])
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        stranger.get("/static/console.css").await.status,
        StatusCode::OK
    );
    let login = stranger.get("/login").await;
    assert!(
        login
            .body
            .contains(r#"<form method="post" action="/login">"#)
    );
    assert!(login.body.contains(r#"name="name""#) && login.body.contains(r#"name="password""#));

    let agent = env.agent("alice", Role::Agent, &[]).await;
    let missing = agent.post_raw(&format!("/chat/{id}/claim"), &[]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    let wrong = agent
        .post_raw(&format!("/chat/{id}/claim"), &[("csrf", "not-the-token")])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let escalation = env.running.store().escalation(id).await.unwrap().unwrap();
    assert_eq!(escalation.state, EscalationState::Open, "nothing happened");
    let claimed = agent.post(&format!("/chat/{id}/claim"), &[]).await;
    assert_eq!(claimed.status, StatusCode::SEE_OTHER);

    // Logging out ends the session on the server, not just in the browser.
    let cookie = agent.cookie.clone();
    assert_eq!(
        agent.post("/logout", &[]).await.status,
        StatusCode::SEE_OTHER
    );
    let mut replay = Browser::new(&env.base);
    replay.cookie = cookie;
    assert_eq!(replay.get("/").await.status, StatusCode::SEE_OTHER);
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_refused_then_throttled() {
    let env = env().await;
    xiaoer::accounts::add(env.running.store(), "bob", Role::Agent, &[], PASSWORD)
        .await
        .unwrap();
    let mut browser = Browser::new(&env.base);
    for _ in 0..5 {
        assert_eq!(
            browser.login("bob", "wrong-password").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        browser.login("bob", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits out the lock"
    );
    assert_eq!(
        browser.login("nobody", "whatever-password").await,
        StatusCode::TOO_MANY_REQUESTS,
        "the address is locked too"
    );
    xiaoer::accounts::set_disabled(env.running.store(), "bob", true)
        .await
        .unwrap();
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_one_shop_cannot_see_or_touch_another_shops_chats() {
    let env = env().await;
    let theirs = env.refund("shop1", "u1", "我要退款").await;
    let ours = env.refund("shop2", "u2", "我要退货").await;
    let agent = env.agent("carol", Role::Agent, &["shop2"]).await;
    let queue = agent.get("/").await;
    assert_eq!(queue.status, StatusCode::OK);
    assert!(
        queue
            .body
            .contains(&format!("data-escalation-id=\"{ours}\""))
    );
    assert!(
        !queue
            .body
            .contains(&format!("data-escalation-id=\"{theirs}\""))
    );
    let rows = agent.fragment("/queue/rows").await;
    assert!(
        !rows
            .body
            .contains(&format!("data-escalation-id=\"{theirs}\""))
    );
    for path in [
        format!("/chat/{theirs}"),
        format!("/chat/{theirs}/transcript"),
    ] {
        assert_eq!(
            agent.get(&path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for action in ["claim", "note", "reply", "resolve", "transfer"] {
        let page = agent
            .post(&format!("/chat/{theirs}/{action}"), &[("text", "x")])
            .await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{action}");
    }
    assert_eq!(
        agent.get("/chat/999999").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        agent.get(&format!("/chat/{ours}")).await.status,
        StatusCode::OK
    );
    let escalation = env
        .running
        .store()
        .escalation(theirs)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(escalation.state, EscalationState::Open);
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_claiming_at_once_one_wins_and_the_other_sees_who() {
    let env = env().await;
    let id = env.refund("shop1", "u1", "我要退款").await;
    let alice = env.agent("alice", Role::Agent, &[]).await;
    let bob = env.agent("bob", Role::Agent, &[]).await;
    let path = format!("/chat/{id}/claim");
    let (a, b) = tokio::join!(alice.post(&path, &[]), bob.post(&path, &[]));
    let (winner, loser) = match (a.status, b.status) {
        (StatusCode::SEE_OTHER, StatusCode::CONFLICT) => ("alice", b),
        (StatusCode::CONFLICT, StatusCode::SEE_OTHER) => ("bob", a),
        other => panic!("expected one win and one conflict, got {other:?}"),
    };
    assert!(
        loser.body.contains(&format!("already claimed by {winner}")),
        "{}",
        loser.body
    );
    let escalation = env.running.store().escalation(id).await.unwrap().unwrap();
    assert_eq!(escalation.claimed_by.as_deref(), Some(winner));
    // The buyer heard once that a person is here.
    assert_eq!(
        env.reply().await.text,
        "您好，我是客服，接下来由我为您处理。"
    );
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_lapses_after_the_lease_and_the_chat_returns_to_its_queue() {
    let env = env().await;
    let id = env.refund("shop1", "u1", "我要退款").await;
    let alice = env.agent("alice", Role::Agent, &[]).await;
    assert_eq!(
        alice.post(&format!("/chat/{id}/claim"), &[]).await.status,
        StatusCode::SEE_OTHER
    );
    env.reply().await;
    let lease = Duration::from_secs(600);
    let claimed_at = env
        .running
        .store()
        .escalation(id)
        .await
        .unwrap()
        .unwrap()
        .claimed_ms
        .unwrap();
    let minute = 60_000;
    assert_eq!(
        env.running
            .expire_leases(lease, claimed_at + 9 * minute)
            .await,
        0
    );
    assert_eq!(
        env.running
            .expire_leases(lease, claimed_at + 11 * minute)
            .await,
        1
    );
    let escalation = env.running.store().escalation(id).await.unwrap().unwrap();
    assert_eq!(escalation.state, EscalationState::Open);
    assert_eq!(escalation.claimed_by, None);
    let history = env.running.store().escalation_history(id).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.kind, EscalationEvent::Released);
    assert_eq!(last.actor.to_string(), "timeout");
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reply_reaches_the_buyer_and_a_failed_send_is_shown_with_the_reason() {
    let env = env().await;
    let id = env.refund("shop1", "u1", "我要退款").await;
    let alice = env.agent("alice", Role::Agent, &[]).await;
    let bob = env.agent("bob", Role::Agent, &[]).await;
    let page = alice
        .post(&format!("/chat/{id}/reply"), &[("text", "您好")])
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT, "claim first");
    let chat = alice.get(&format!("/chat/{id}")).await;
    assert!(
        chat.body
            .contains(r#"data-phrase="测试小店向您道歉，马上处理。""#),
        "the shop's quick phrases, rendered"
    );
    let back = id.to_string();
    let added = alice
        .post("/phrases", &[("text", "我的短语：请稍等"), ("back", &back)])
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER);
    let chat = alice.get(&format!("/chat/{id}")).await;
    assert!(
        chat.body.contains(r#"data-phrase="我的短语：请稍等""#),
        "and the agent's own"
    );
    let bobs = bob.get(&format!("/chat/{id}")).await;
    assert!(
        !bobs.body.contains("我的短语"),
        "personal phrases are personal"
    );
    alice.post(&format!("/chat/{id}/claim"), &[]).await;
    env.reply().await;
    let page = alice
        .post(
            &format!("/chat/{id}/reply"),
            &[("text", "亲，已经为您登记退款")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let delivered = env.reply().await;
    assert_eq!(delivered.text, "亲，已经为您登记退款");
    let not_mine = bob
        .post(&format!("/chat/{id}/reply"), &[("text", "我来")])
        .await;
    assert_eq!(not_mine.status, StatusCode::CONFLICT);
    assert!(not_mine.body.contains("alice does"), "{}", not_mine.body);

    env.gateway.set_retcode_for_next_sends([10003]);
    let failed = alice
        .post(&format!("/chat/{id}/reply"), &[("text", "这条发不出去")])
        .await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert!(failed.body.contains("not delivered"), "{}", failed.body);
    assert!(
        failed.body.contains("10003"),
        "the reason is shown: {}",
        failed.body
    );
    let chat = alice.get(&format!("/chat/{id}")).await;
    assert!(chat.body.contains("未送达"), "the transcript marks it");
    let key = env
        .running
        .store()
        .escalation(id)
        .await
        .unwrap()
        .unwrap()
        .key;
    let lines = env.running.store().transcript(&key, 20).await.unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.sender == Sender::Agent("alice".into()) && l.text == "亲，已经为您登记退款")
    );
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_buyer_text_renders_as_text_and_bad_forms_get_4xx() {
    let env = env().await;
    let payloads = [
        "<script>alert('x')</script>我要退款",
        "<img src=x onerror=alert(1)>",
        "<a href=\"javascript:alert(1)\">点我</a>",
        "\u{202e}款退要我",
    ];
    let id = env.refund("shop1", "h1", payloads[0]).await;
    for text in &payloads[1..] {
        env.gateway.buyer_says("shop1", "h1", text);
    }
    // 30 KB of text: the dev gateway sends it twice (message and alt_message), near the
    // 64 KiB frame cap the gateway client enforces.
    env.gateway.buyer_says("shop1", "h1", &"长".repeat(10_000));
    let alice = env.agent("alice", Role::Agent, &[]).await;
    let key = env
        .running
        .store()
        .escalation(id)
        .await
        .unwrap()
        .unwrap()
        .key;
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = env.running.store().transcript(&key, 50).await.unwrap();
        if lines.iter().filter(|l| l.sender == Sender::Buyer).count() == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the messages arrive: {:?}",
            lines
                .iter()
                .map(|l| (
                    l.sender.to_string(),
                    l.text.chars().take(20).collect::<String>()
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for page in [
        alice.get(&format!("/chat/{id}")).await,
        alice.get("/").await,
    ] {
        assert_eq!(page.status, StatusCode::OK);
        assert!(!page.body.contains("<script>alert"), "script escaped");
        assert!(!page.body.contains("<img src=x"), "img escaped");
        assert!(!page.body.contains("<a href=\"javascript:"), "link escaped");
    }
    let chat = alice.get(&format!("/chat/{id}")).await;
    assert!(chat.body.contains("&lt;script&gt;alert"));
    assert!(
        chat.body.contains("<bdi>\u{202e}"),
        "overrides are isolated in <bdi>"
    );

    let huge = "字".repeat(70 * 1024);
    // The server refuses a body over its limit as soon as it sees the length; the client may
    // get the 413, or see the connection closed while it was still sending the body.
    let form: Vec<(&str, &str)> = vec![("csrf", &alice.csrf), ("text", &huge)];
    let builder = alice
        .client
        .post(format!("{}/chat/{id}/note", alice.base))
        .form(&form);
    match alice.request(builder).send().await {
        Ok(response) => assert!(response.status().is_client_error(), "{}", response.status()),
        Err(error) => assert!(error.is_request(), "refused by closing: {error}"),
    }
    let page = alice.post(&format!("/chat/{id}/note"), &[]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let page = alice
        .post(&format!("/chat/{id}/resolve"), &[("outcome", "refunded")])
        .await;
    assert_eq!(
        page.status,
        StatusCode::FORBIDDEN,
        "only the holder resolves"
    );
    alice.post(&format!("/chat/{id}/claim"), &[]).await;
    let page = alice
        .post(&format!("/chat/{id}/resolve"), &[("outcome", "bribed")])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let page = alice.post(&format!("/chat/{id}/dance"), &[]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = alice.get("/chat/not-a-number").await;
    assert!(page.status.is_client_error());
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shift_handover_leaves_notes_and_puts_every_held_chat_back() {
    let env = env().await;
    let first = env.refund("shop1", "s1", "我要退款").await;
    let second = env.refund("shop1", "s2", "我要退货").await;
    let alice = env.agent("alice", Role::Agent, &[]).await;
    for id in [first, second] {
        alice.post(&format!("/chat/{id}/claim"), &[]).await;
        env.reply().await;
    }
    let note_key = format!("note-{first}");
    let page = alice
        .post("/handover", &[(&note_key, "已答应今天退款，等仓库确认")])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("2 个会话放回队列"), "{}", page.body);
    for id in [first, second] {
        let e = env.running.store().escalation(id).await.unwrap().unwrap();
        assert_eq!(e.state, EscalationState::Open, "#{id} back in its queue");
    }
    let next_shift = env.agent("dave", Role::Agent, &[]).await;
    let handover = next_shift.get("/handover").await;
    assert!(handover.body.contains("已答应今天退款，等仓库确认"));
    assert!(handover.body.contains("alice"));
    let chat = next_shift.get(&format!("/chat/{first}")).await;
    assert!(
        chat.body.contains("已答应今天退款"),
        "the note is on the chat's timeline"
    );
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_transfer_and_supervisor_only_actions() {
    let env = env().await;
    let id = env.refund("shop1", "t1", "我要退款").await;
    let alice = env.agent("alice", Role::Agent, &[]).await;
    let lead = env.agent("lead", Role::Supervisor, &[]).await;
    alice.post(&format!("/chat/{id}/claim"), &[]).await;
    env.reply().await;
    let page = alice
        .post(
            &format!("/chat/{id}/transfer"),
            &[("queue", "refund"), ("agent", "lead")],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::FORBIDDEN,
        "agents transfer to queues only"
    );
    let page = lead
        .post(
            &format!("/chat/{id}/transfer"),
            &[("queue", "complaint"), ("agent", "")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let e = env.running.store().escalation(id).await.unwrap().unwrap();
    assert_eq!(
        (e.queue.as_str(), e.state),
        ("complaint", EscalationState::Open)
    );
    lead.post(&format!("/chat/{id}/claim"), &[]).await;
    env.reply().await;
    let page = lead
        .post(
            &format!("/chat/{id}/resolve"),
            &[("outcome", "other"), ("note", "")],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "other needs a note");
    let page = lead
        .post(
            &format!("/chat/{id}/resolve"),
            &[("outcome", "refunded"), ("note", "原路退回")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let e = env.running.store().escalation(id).await.unwrap().unwrap();
    assert_eq!(e.state, EscalationState::Closed);
    assert_eq!(e.outcome.as_deref(), Some("refunded"));
    assert_eq!(e.closed_by.as_deref(), Some("agent:lead"));
    // The bot answers that buyer again.
    env.gateway.buyer_says("shop1", "t1", "什么时候发货");
    assert_eq!(env.reply().await.text, "现货下单后48小时内发出。");
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_carry_only_the_shops_the_agent_serves() {
    let env = env().await;
    let carol = env.agent("carol", Role::Agent, &["shop2"]).await;
    let mut response = carol
        .request(carol.client.get(format!("{}/events", env.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Something in a shop carol does not serve, then something in hers.
    env.refund("shop1", "other-shop", "我要退款").await;
    env.refund("shop2", "her-shop", "我要退款").await;
    let theirs =
        xiaoer::console::pages::chat_tag(&ConversationKey::new("dev", "shop1", "other-shop"));
    let hers = xiaoer::console::pages::chat_tag(&ConversationKey::new("dev", "shop2", "her-shop"));
    let mut seen = String::new();
    let deadline = Instant::now() + WAIT;
    while !seen.contains(&hers) {
        assert!(Instant::now() < deadline, "no event for her shop: {seen}");
        let chunk = tokio::time::timeout(WAIT, response.chunk())
            .await
            .expect("the stream goes on")
            .unwrap()
            .expect("the stream is open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Events are in commit order: had the other shop's been forwarded, it would be here first.
    assert!(
        !seen.contains(&theirs),
        "an event of another shop leaked: {seen}"
    );
    assert!(!seen.contains("退款"), "events carry no buyer text");
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_see_undelivered_notifications_and_send_them_again() {
    // A receiver that refuses once (a bad request is not retried), then takes everything.
    let refusals = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let (refusals, taken) = (refusals.clone(), taken.clone());
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let (refusals, taken) = (refusals.clone(), taken.clone());
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    if refusals
                        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        StatusCode::BAD_REQUEST
                    } else {
                        taken.fetch_add(1, SeqCst);
                        StatusCode::OK
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let entry: toml::Value = toml::from_str(&format!(
        "kind = \"generic\"\nurl = \"{url}\"\nname = \"ops-hook\""
    ))
    .unwrap();
    let env = env_with(vec![xiaoer::notify::Target::from_toml(0, &entry).unwrap()]).await;
    let id = env.refund("shop1", "n1", "我要退款，东西坏了").await;

    let lead = env.agent("lead", Role::Supervisor, &[]).await;
    let alice = env.agent("alice", Role::Agent, &[]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let page = loop {
        let page = lead.get("/notifications").await;
        assert_eq!(page.status, StatusCode::OK);
        if page.body.contains("ops-hook") || tokio::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        page.body.contains("data-dead-letters=\"1\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("400"), "the reason is shown");
    assert!(
        page.body.contains(&format!("href=\"/chat/{id}\"")),
        "a link to the chat"
    );
    assert!(lead.get("/").await.body.contains("href=\"/notifications\""));
    assert!(
        !alice
            .get("/")
            .await
            .body
            .contains("href=\"/notifications\"")
    );
    assert_eq!(
        alice.get("/notifications").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        alice.post("/notifications/retry", &[]).await.status,
        StatusCode::FORBIDDEN
    );

    let retried = lead
        .post("/notifications/retry", &[("target", "ops-hook")])
        .await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER);
    let deadline = tokio::time::Instant::now() + WAIT;
    while taken.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "not sent again");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = lead.get("/notifications").await;
        if page.body.contains("没有未送达的通知") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", page.body);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_need_no_login_and_tell_what_is_wrong() {
    let env = env().await;
    let anyone = Browser::new(&env.base);
    let alive = anyone.get("/healthz").await;
    assert_eq!(
        (alive.status, alive.body.as_str()),
        (StatusCode::OK, "ok\n")
    );
    let ready = anyone.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    env.running
        .store()
        .inject_fault(xiaoer::store::Fault::FailCommits(u32::MAX));
    env.gateway.buyer_says("shop1", "r1", "我要退款");
    let deadline = Instant::now() + WAIT;
    let not_ready = loop {
        let page = anyone.get("/readyz").await;
        if page.status != StatusCode::OK {
            break page;
        }
        assert!(Instant::now() < deadline, "readiness never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(not_ready.body.contains("store:"), "{}", not_ready.body);
    assert!(!not_ready.body.contains("退款"), "no buyer text");
    env.running
        .store()
        .inject_fault(xiaoer::store::Fault::FailCommits(0));
    env.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_on_two_instances_consoles_claim_at_once_and_one_wins() {
    let Some(db) = common::backends::TestDb::postgres("two_instances_consoles_claim").await else {
        return;
    };
    let gateway = DevGateway::start(DevGatewayConfig {
        token: Some(TOKEN.into()),
        shops: vec!["shop1".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let (_rules_dir, rules, replies) = rule_dirs();
    let data = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let config = |data: &TempDir, name: &str| Config {
        data: data.path().to_path_buf(),
        store: Some(db.location()),
        rules: rules.clone(),
        replies: replies.clone(),
        gateways: vec![GatewaySettings {
            url: gateway.url(),
            token: Some(TOKEN.into()),
            name: None,
        }],
        console: ConsoleSettings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
        cluster: xiaoer::config::ClusterSettings {
            lease_ttl: Duration::from_secs(2),
            instance: Some(name.to_owned()),
        },
        watch: false,
        ..Config::default()
    };
    let first = xiaoer::daemon::start(config(&data[0], "first"))
        .await
        .unwrap();
    let second = xiaoer::daemon::start(config(&data[1], "second"))
        .await
        .unwrap();
    assert!(gateway.wait_for_bots(2, WAIT).await);
    // Wait until one of them answers the shop, so the buyer is answered at once.
    let mut leases = xiaoer::store::Store::open_leases(&db.location())
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !leases
        .status()
        .await
        .unwrap()
        .leases
        .iter()
        .any(|l| l.owner.is_some())
    {
        assert!(Instant::now() < deadline, "nobody took the shop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.buyer_says("shop1", "u1", "我要退款");
    while !gateway
        .next_bot_message(WAIT)
        .await
        .expect("the bot answers")
        .text
        .contains("退款专员")
    {}
    let id = first.store().open_escalations().await.unwrap()[0].id;
    for name in ["alice", "bob"] {
        xiaoer::accounts::add(first.store(), name, Role::Agent, &[], PASSWORD)
            .await
            .unwrap();
    }
    let mut alice = Browser::new(&format!("http://{}", first.console_addr().unwrap()));
    let mut bob = Browser::new(&format!("http://{}", second.console_addr().unwrap()));
    assert_eq!(alice.login("alice", PASSWORD).await, StatusCode::SEE_OTHER);
    assert_eq!(bob.login("bob", PASSWORD).await, StatusCode::SEE_OTHER);
    // The chat is on both queues, whichever instance answers the shop.
    for browser in [&alice, &bob] {
        assert!(browser.get("/").await.body.contains(&format!("/chat/{id}")));
    }
    let path = format!("/chat/{id}/claim");
    let (a, b) = tokio::join!(alice.post(&path, &[]), bob.post(&path, &[]));
    let (winner, loser) = match (a.status, b.status) {
        (StatusCode::SEE_OTHER, StatusCode::CONFLICT) => ("alice", b),
        (StatusCode::CONFLICT, StatusCode::SEE_OTHER) => ("bob", a),
        other => panic!("expected one win and one conflict, got {other:?}"),
    };
    assert!(
        loser.body.contains(&format!("already claimed by {winner}")),
        "{}",
        loser.body
    );
    let escalation = first.store().escalation(id).await.unwrap().unwrap();
    assert_eq!(escalation.claimed_by.as_deref(), Some(winner));
    assert_eq!(
        gateway.next_bot_message(WAIT).await.unwrap().text,
        "您好，我是客服，接下来由我为您处理。",
        "the buyer heard once that a person is here"
    );
    first.stop().await;
    second.stop().await;
    assert_eq!(gateway.next_bot_message(Duration::ZERO).await, None);
}
