//! The agent console: where people pick up escalated chats, answer the buyer and hand back.
//!
//! Served by the daemon on `[console] listen` (`--console ADDR`): server-rendered HTML
//! ([`views`], maud), htmx for partial updates and server-sent events for live ones, every asset
//! embedded in the binary. Everything an agent does goes to the chat's worker through the
//! daemon [`Handle`], the same path the bot's own replies take.
//!
//! - [`auth`]: logins, sessions, CSRF, failed-login throttling;
//! - [`pages`]: the routes and their handlers;
//! - [`views`]: the markup;
//! - [`error`]: the one error type every handler returns.

pub mod auth;
pub mod error;
pub mod pages;
mod settings;
pub mod views;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use settings::ConsoleSettings;

use crate::daemon::Handle;
use crate::store::Store;

/// What every console request shares. Cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    inner: Arc<Inner>,
}

struct Inner {
    daemon: Handle,
    settings: ConsoleSettings,
    throttle: Mutex<auth::Throttle>,
    /// How each shop account is named (`[[shop]] name`).
    shop_names: HashMap<String, String>,
    /// Ends the live-update streams, which would otherwise hold the server open at shutdown.
    shutdown: CancellationToken,
}

impl ConsoleState {
    pub fn new(
        daemon: Handle,
        settings: ConsoleSettings,
        shop_names: HashMap<String, String>,
        shutdown: CancellationToken,
    ) -> Self {
        ConsoleState {
            inner: Arc::new(Inner {
                daemon,
                settings,
                throttle: Mutex::new(auth::Throttle::default()),
                shop_names,
                shutdown,
            }),
        }
    }

    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub fn throttle(&self) -> std::sync::MutexGuard<'_, auth::Throttle> {
        // A panic while holding the lock leaves counts that are still right.
        self.inner
            .throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn store(&self) -> &Store {
        self.inner.daemon.store()
    }

    pub fn daemon(&self) -> &Handle {
        &self.inner.daemon
    }

    pub fn settings(&self) -> &ConsoleSettings {
        &self.inner.settings
    }

    /// How a shop account is shown: its configured name, else its id.
    pub fn shop_name(&self, self_id: &str) -> String {
        self.inner
            .shop_names
            .get(self_id)
            .cloned()
            .unwrap_or_else(|| self_id.to_owned())
    }
}

/// A running console server.
pub struct Console {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Console {
    /// Serves the console on `listener` until `shutdown` is cancelled.
    pub fn serve(listener: TcpListener, state: ConsoleState, shutdown: CancellationToken) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let app = pages::app(state).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the console stopped serving");
            }
        });
        tracing::info!(%addr, "console listening");
        Console { addr, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the server to end (after its shutdown token was cancelled).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}
