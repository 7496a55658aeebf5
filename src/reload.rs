//! The live rule sets and their hot reload.
//!
//! The shared set is loaded once; each shop's set is that compiled set with the shop's overlay
//! on top (see [`crate::rules::SharedRules::with_overlays`]), so shops cost what their overlays
//! cost. A reload builds the new sets aside — parse, validate, compile, run every example — and swaps
//! them in atomically only if all of them load; a bad edit keeps the old sets serving and logs
//! every error with file:line. Messages already being handled finish on the set they started
//! with, because workers hold an `Arc` of it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::diagnostics::{Diagnostic, Sources};
use crate::rules::{Layer, LoadError, RuleSet, load_shared};

/// Where every rule set comes from: the shared directories and each shop's overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSources {
    pub base: Layer,
    /// (shop account id, overlay directory)
    pub overlays: Vec<(String, PathBuf)>,
}

impl RuleSources {
    /// Directories to watch for edits.
    pub fn directories(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.base.rules.clone(), self.base.replies.clone()];
        for (_, overlay) in &self.overlays {
            dirs.push(overlay.clone());
        }
        dirs
    }
}

/// The rule set of every shop.
#[derive(Debug)]
pub struct RuleBook {
    shared: Arc<RuleSet>,
    shops: HashMap<String, Arc<RuleSet>>,
}

/// A rule book that did not load: which set, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", shop.as_deref().map(|s| format!("rules of shop {s}")).unwrap_or_else(|| "shared rules".into()))]
pub struct RuleBookError {
    pub shop: Option<String>,
    pub error: LoadError,
}

impl RuleBook {
    /// Loads the shared set once and puts every overlay on it, logging every warning: the shared
    /// set's, then each shop's own.
    ///
    /// # Errors
    ///
    /// The first set that does not load, with all of its problems.
    pub fn load(sources: &RuleSources) -> Result<RuleBook, RuleBookError> {
        let shared =
            load_shared(&sources.base).map_err(|error| RuleBookError { shop: None, error })?;
        log_warnings(None, &shared.diagnostics(), shared.sources());
        let mut shops = HashMap::new();
        for (shop, overlay) in &sources.overlays {
            let loaded = shared
                .with_overlays(&[Layer::overlay(overlay)])
                .map_err(|error| RuleBookError {
                    shop: Some(shop.clone()),
                    error,
                })?;
            log_warnings(Some(shop), &loaded.overlay_warnings, &loaded.sources);
            shops.insert(shop.clone(), Arc::new(loaded.rules));
        }
        Ok(RuleBook {
            shared: Arc::new(shared.into_rules()),
            shops,
        })
    }

    /// A book with one set for every shop.
    pub fn single(rules: RuleSet) -> RuleBook {
        RuleBook {
            shared: Arc::new(rules),
            shops: HashMap::new(),
        }
    }

    /// The set that decides messages to shop account `shop`.
    pub fn for_shop(&self, shop: &str) -> Arc<RuleSet> {
        Arc::clone(self.shops.get(shop).unwrap_or(&self.shared))
    }

    pub fn shared(&self) -> &RuleSet {
        &self.shared
    }
}

fn log_warnings(shop: Option<&str>, warnings: &[Diagnostic], sources: &Sources) {
    for warning in warnings {
        match shop {
            Some(shop) => warn!(shop, "{}", sources.one_line(warning)),
            None => warn!("{}", sources.one_line(warning)),
        }
    }
}

/// The rule book every worker reads.
pub type LiveRules = Arc<ArcSwap<RuleBook>>;

/// Rebuilds the book aside and swaps it in; on failure logs every error and keeps the old one.
/// Returns whether the swap happened.
pub fn reload(live: &LiveRules, sources: &RuleSources) -> bool {
    match RuleBook::load(sources) {
        Ok(book) => {
            let rules = book.shared().rule_count();
            live.store(Arc::new(book));
            info!(rules, "rules reloaded");
            true
        }
        Err(failure) => {
            error!(
                "rules not reloaded; the previous rules keep serving: {}",
                failure
                    .shop
                    .as_deref()
                    .map(|s| format!("shop {s}"))
                    .unwrap_or_else(|| "shared rules".into())
            );
            for problem in failure.error.errors() {
                error!("{}", failure.error.sources.one_line(problem));
            }
            false
        }
    }
}

/// How many reloads succeeded and failed since the start, for `/metrics` and for tests that
/// wait for a reload to have happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloads {
    pub succeeded: u64,
    pub failed: u64,
}

/// Reloads whenever a rule or reply file changes (if `watch`) or `trigger` fires (SIGHUP),
/// coalescing bursts of edits, and counts the outcomes in `outcomes`. Runs until `cancel`.
pub async fn run_reloader(
    live: LiveRules,
    sources: RuleSources,
    watch: bool,
    mut trigger: mpsc::Receiver<()>,
    cancel: CancellationToken,
    outcomes: tokio::sync::watch::Sender<Reloads>,
) {
    let (changed, mut changes) = mpsc::channel::<()>(16);
    // Keep the watcher alive for the life of this task.
    let _watcher = if watch {
        start_watcher(&sources, changed)
    } else {
        None
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            Some(()) = trigger.recv() => info!("reload requested"),
            Some(()) = changes.recv() => {
                // Editors write files in several steps; wait for the burst to settle.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while changes.try_recv().is_ok() {}
                info!("rule files changed");
            }
        }
        let (live, sources) = (Arc::clone(&live), sources.clone());
        let loaded = match tokio::task::spawn_blocking(move || reload(&live, &sources)).await {
            Ok(loaded) => loaded,
            Err(error) => {
                error!(%error, "rule reload task failed");
                false
            }
        };
        outcomes.send_modify(|counts| {
            if loaded {
                counts.succeeded += 1;
            } else {
                counts.failed += 1;
            }
        });
    }
}

fn start_watcher(
    sources: &RuleSources,
    changed: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if !event.kind.is_access() => {
            let _ = changed.try_send(());
        }
        Ok(_) => {}
        Err(error) => warn!(%error, "file watch error"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            warn!(%error, "cannot watch rule files; reload with SIGHUP");
            return None;
        }
    };
    for dir in sources.directories() {
        if let Err(error) = watcher.watch(&dir, RecursiveMode::Recursive) {
            warn!(dir = %dir.display(), %error, "cannot watch directory; reload with SIGHUP");
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn fixture() -> Layer {
        Layer::overlay(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good"))
    }

    fn winner(rules: &RuleSet, text: &str) -> Option<String> {
        crate::routing::route(rules, text).rule
    }

    #[test]
    fn each_shop_gets_its_overlay_and_the_others_the_shared_set() {
        let overlay = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(overlay.path().join("rules")).unwrap();
        std::fs::write(
            overlay.path().join("rules/tea.toml"),
            "disable = [\"greeting.hello\"]\n",
        )
        .unwrap();
        let sources = RuleSources {
            base: fixture(),
            overlays: vec![("tea".into(), overlay.path().to_path_buf())],
        };
        let book = RuleBook::load(&sources).unwrap();
        assert_eq!(winner(&book.for_shop("tea"), "你好"), None);
        assert_eq!(
            winner(&book.for_shop("other"), "你好").as_deref(),
            Some("greeting.hello")
        );
    }

    #[test]
    fn a_failed_reload_keeps_the_rules_that_were_serving() {
        let dir = tempfile::tempdir().unwrap();
        let good = fixture();
        let (rules, replies) = (dir.path().join("rules"), dir.path().join("replies"));
        for (from, to) in [(&good.rules, &rules), (&good.replies, &replies)] {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
        let sources = RuleSources {
            base: Layer::new(&rules, &replies),
            overlays: Vec::new(),
        };
        let live: LiveRules = Arc::new(ArcSwap::from_pointee(RuleBook::load(&sources).unwrap()));
        let serving = live.load_full();

        std::fs::write(rules.join("zz.toml"), "[[rule]]\nid = \"broken\"\n").unwrap();
        assert!(!reload(&live, &sources));
        assert!(
            Arc::ptr_eq(&serving, &live.load_full()),
            "the old book still serves"
        );

        std::fs::write(
            rules.join("zz.toml"),
            "[[rule]]\nid = \"invoice.ask\"\ntopic = \"invoice\"\nreply = \"thanks\"\nany = [\"发票\"]\n",
        )
        .unwrap();
        assert!(reload(&live, &sources));
        let now = live.load();
        assert_eq!(
            winner(&now.for_shop("any"), "开发票").as_deref(),
            Some("invoice.ask")
        );
        // A chat that took the old set before the swap still holds it.
        assert_eq!(winner(serving.shared(), "开发票"), None);
    }
}
