//! `xiaoer run`: the daemon, with settings from file, environment and flags, and Unix signals
//! wired to reload and shutdown.

use std::path::PathBuf;

use clap::Args;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, ConfigError, Overrides};

/// Flags of `xiaoer run`; each overrides the config file and the `XIAOER_*` variables.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Config file (TOML); see deploy/xiaoer.toml.
    #[arg(long, env = "XIAOER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Gateway websocket URL (replaces the config file's gateways).
    #[arg(long)]
    pub gateway: Option<String>,
    /// Gateway access token, sent as `Authorization: Bearer`.
    #[arg(long)]
    pub token: Option<String>,
    /// Data directory (holds xiaoer.db).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub rules: Option<PathBuf>,
    #[arg(long)]
    pub replies: Option<PathBuf>,
}

impl RunArgs {
    /// The settings these flags, the environment and the config file add up to.
    ///
    /// # Errors
    ///
    /// See [`Config::load`].
    pub fn settings(&self) -> Result<Config, ConfigError> {
        let flags = Overrides {
            gateway: self.gateway.clone(),
            token: self.token.clone(),
            data: self.data.clone(),
            rules: self.rules.clone(),
            replies: self.replies.clone(),
        };
        Config::load(self.config.as_deref(), std::env::vars(), &flags)
    }
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C and asks for a reload on SIGHUP.
pub fn handle_signals(shutdown: CancellationToken, reload: mpsc::Sender<()>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                tracing::warn!("cannot listen for signals; stop with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
                shutdown.cancel();
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => { info!("SIGTERM received"); break; }
                    _ = tokio::signal::ctrl_c() => { info!("interrupt received"); break; }
                    _ = hup.recv() => { let _ = reload.try_send(()); }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = reload;
            let _ = tokio::signal::ctrl_c().await;
        }
        shutdown.cancel();
    });
}

/// Installs the log subscriber: `RUST_LOG` (default `info`) to stderr.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
