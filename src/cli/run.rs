//! `xiaoer run`: the daemon, with settings from file, environment and flags, and Unix signals
//! wired to reload and shutdown.
//!
//! The flags here are the top layer of the settings; `config` merges and checks them, this
//! command only hands them over and logs what came back as warnings.

use std::path::PathBuf;

use clap::Args;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
    /// Data directory (holds xiaoer.db unless --store says otherwise).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Directory of the shared rule files.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Directory of the shared reply files.
    #[arg(long)]
    pub replies: Option<PathBuf>,
    /// Store URL: sqlite://PATH (relative to the working directory; sqlite:///PATH is
    /// absolute) or postgres://…; default sqlite://DATA/xiaoer.db with DATA the data directory.
    #[arg(long)]
    pub store: Option<String>,
    /// Serve the agent console at this address, e.g. 127.0.0.1:8781 (off unless set).
    #[arg(long, value_name = "ADDR")]
    pub console: Option<String>,
    /// Serve /metrics, /healthz and /readyz on their own at this address, e.g. 127.0.0.1:9781.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// `text` for people, `json` (one object a line) for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// The settings these flags, the environment and the config file add up to, validated.
    /// Warnings about the settings (an unknown `XIAOER_*` variable) are logged here.
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
            watch: None,
            store: self.store.clone(),
            console: self.console.clone(),
            metrics: self.metrics.clone(),
        };
        // `vars_os`, not `vars`: a variable that is not UTF-8 (which `vars` panics on) cannot be
        // one of ours, so it is skipped rather than taken down with the rest.
        let env = std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        });
        let config = Config::load(self.config.as_deref(), env, &flags)?;
        for warning in &config.warnings {
            warn!("{warning}");
        }
        Ok(config)
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
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
        // Colour codes only for a person at a terminal, never in a journal or a file.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
    };
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line per event, coloured at a terminal.
    #[default]
    Text,
    /// For log shippers: one JSON object per line.
    Json,
}
