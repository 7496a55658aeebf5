//! The `xiaoer` commands, one file each; `main.rs` only parses arguments and calls in here.

pub mod agent;
pub mod check;
pub mod demo;
pub mod eval;
pub mod explain;
pub mod hours;
pub mod queue;
pub mod report;
pub mod route;
pub mod run;
pub mod status;
pub mod train;

use std::path::PathBuf;

use clap::Args;

use crate::rules::{Layer, LoadError, Loaded, load};

/// Where the store is, for the commands that work on it next to the daemon: the SQLite store in
/// `--data DIR`, or the one `--store URL` (or `XIAOER_STORE`) names, e.g. the daemon's
/// PostgreSQL database.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The daemon's data directory (holds xiaoer.db).
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data: PathBuf,
    /// The store URL (`sqlite://PATH` or `postgres://…`); overrides --data.
    #[arg(long, value_name = "URL", env = "XIAOER_STORE")]
    pub store: Option<crate::config::StoreLocation>,
}

impl StoreArgs {
    /// The store named: `--store`, else `xiaoer.db` in `--data`.
    pub fn location(&self) -> crate::config::StoreLocation {
        self.store.clone().unwrap_or_else(|| {
            crate::config::StoreLocation::Sqlite(self.data.join(crate::store::DB_FILE))
        })
    }
}

/// Where the rule and reply files are, shared by every command that loads rules.
#[derive(Debug, Clone, Args)]
pub struct RuleDirs {
    /// Directory of rule files (*.toml).
    #[arg(long, default_value = "rules", env = "XIAOER_RULES")]
    pub rules: PathBuf,
    /// Directory of reply files (*.toml).
    #[arg(long, default_value = "replies", env = "XIAOER_REPLIES")]
    pub replies: PathBuf,
    /// A shop overlay directory (with rules/ and replies/) applied on top.
    #[arg(long)]
    pub shop: Option<PathBuf>,
}

impl RuleDirs {
    pub fn layers(&self) -> Vec<Layer> {
        let mut layers = vec![Layer::new(&self.rules, &self.replies)];
        if let Some(shop) = &self.shop {
            layers.push(Layer::overlay(shop));
        }
        layers
    }

    pub fn load(&self) -> Result<Loaded, LoadError> {
        load(&self.layers())
    }
}

/// Why a command failed (as opposed to finding problems it reports, such as a failing check).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("cannot {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
}

impl CliError {
    pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let action = action.into();
        move |source| CliError::Io { action, source }
    }
}
