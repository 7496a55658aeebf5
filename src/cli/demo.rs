//! `xiaoer demo`: the development gateway with its buyer chat page, the daemon connected to it,
//! and SQLite under `./data` — everything on one machine, nothing to install.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, GatewaySettings, ShopSettings};
use crate::devgateway::{DevGateway, DevGatewayConfig, DevGatewayError};

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where the development gateway and buyer page listen.
    #[arg(long, default_value = "127.0.0.1:8780")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    #[arg(long, default_value = "replies")]
    pub replies: PathBuf,
    /// Where the agent console listens.
    #[arg(long, default_value = "127.0.0.1:8781")]
    pub console: SocketAddr,
}

/// The demo's console account (created in the demo's own data directory only).
pub const DEMO_AGENT: &str = "demo";
/// Its password, printed at start: the demo listens on loopback only.
pub const DEMO_PASSWORD: &str = "xiaoer-demo";

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "cannot start the development gateway on {addr}: {source} (pick another with --listen)"
    )]
    Gateway {
        addr: SocketAddr,
        source: DevGatewayError,
    },
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error("cannot create the demo agent: {0}")]
    Agent(#[from] crate::accounts::AccountError),
}

/// Creates the demo agent unless it exists.
async fn ensure_demo_agent(data: &std::path::Path) -> Result<(), DemoError> {
    let store = crate::store::Store::open(data)
        .await
        .map_err(crate::accounts::AccountError::from)?;
    let added = crate::accounts::add(
        &store,
        DEMO_AGENT,
        crate::model::Role::Supervisor,
        &[],
        DEMO_PASSWORD,
    )
    .await;
    let closed = store.close().await;
    match added {
        Ok(_)
        | Err(crate::accounts::AccountError::Store(crate::store::StoreError::AgentExists {
            ..
        })) => {}
        Err(error) => return Err(error.into()),
    }
    closed.map_err(crate::accounts::AccountError::from)?;
    Ok(())
}

const DEMO_TOKEN: &str = "demo-token";

/// Runs the demo until `shutdown`.
///
/// # Errors
///
/// The gateway port is taken, or the rules do not load.
pub async fn run(
    args: DemoArgs,
    shutdown: CancellationToken,
    reload: mpsc::Receiver<()>,
) -> Result<(), DemoError> {
    let gateway = DevGateway::start(DevGatewayConfig {
        addr: args.listen,
        token: Some(DEMO_TOKEN.to_string()),
        ..Default::default()
    })
    .await
    .map_err(|source| DemoError::Gateway {
        addr: args.listen,
        source,
    })?;
    let config = Config {
        data: args.data.clone(),
        rules: args.rules.clone(),
        replies: args.replies.clone(),
        gateways: vec![GatewaySettings {
            url: gateway.url(),
            token: Some(DEMO_TOKEN.to_string()),
            name: Some("dev".into()),
        }],
        shops: vec![ShopSettings {
            id: "shop1".into(),
            name: Some("小二演示店".into()),
            overlay: None,
            ..Default::default()
        }],
        console: crate::console::ConsoleSettings {
            listen: Some(args.console),
            ..Default::default()
        },
        ..Config::default()
    };
    ensure_demo_agent(&args.data).await?;
    println!();
    println!("  xiaoer demo is running");
    println!("  buyer chat page:    {}", gateway.page_url());
    println!(
        "  gateway (OneBot 12): {}  (token {DEMO_TOKEN})",
        gateway.url()
    );
    println!(
        "  agent console:      http://{}/  (log in as {DEMO_AGENT} / {DEMO_PASSWORD})",
        args.console
    );
    println!("  data:               {}/xiaoer.db", args.data.display());
    println!(
        "  open escalations:   cargo run --release -- queue list --data {}",
        args.data.display()
    );
    println!("  edit rules/ or replies/ and the daemon reloads them; Ctrl-C stops.");
    println!();
    let running = crate::daemon::start(config).await?;
    let gateway = std::sync::Arc::new(gateway);
    let feed = tokio::spawn(show_chat_states(running.subscribe(), gateway.clone()));
    let mut reload = reload;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            request = reload.recv() => match request {
                Some(()) => running.reload(),
                None => { shutdown.cancelled().await; break; }
            },
        }
    }
    running.stop().await;
    feed.abort();
    let _ = feed.await;
    if let Ok(gateway) = std::sync::Arc::try_unwrap(gateway) {
        gateway.shutdown().await;
    }
    Ok(())
}

/// Shows on the buyer page who is answering each buyer, as the daemon changes it.
async fn show_chat_states(
    mut events: tokio::sync::broadcast::Receiver<crate::model::ChatEvent>,
    gateway: std::sync::Arc<DevGateway>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(crate::model::ChatEvent::StateChanged { key, to, .. }) => {
                gateway.show_chat_state(&key.self_id, &key.user_id, to.as_str());
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}
