//! What the end-to-end test binaries share: a private copy of the fixture rules.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tempfile::TempDir;

pub mod backends;

/// Copies the files of `from` into `to` (created if needed).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A rule set of the test's own in a temp dir (copied from the fixtures, so a test may edit it):
/// the dir, its `rules/` and its `replies/`.
pub fn rule_dirs() -> (TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
    let (rules, replies) = (dir.path().join("rules"), dir.path().join("replies"));
    copy_dir(&root.join("rules"), &rules);
    copy_dir(&root.join("replies"), &replies);
    (dir, rules, replies)
}

/// The token the shared test gateway wants.
pub const GATEWAY_TOKEN: &str = "t";

/// A development gateway serving the shop account `shop1`.
pub async fn shop1_gateway() -> xiaoer::devgateway::DevGateway {
    xiaoer::devgateway::DevGateway::start(xiaoer::devgateway::DevGatewayConfig {
        token: Some(GATEWAY_TOKEN.into()),
        shops: vec!["shop1".into()],
        ..Default::default()
    })
    .await
    .expect("start the dev gateway")
}

/// Settings for a daemon with the shipped rules and replies on `gateway` (named `gw1`), the shop
/// `shop1` (测试小店), its store in `data` and no file watching; tests lay their own over it.
pub fn shipped_pack_config(
    gateway: &xiaoer::devgateway::DevGateway,
    data: &Path,
) -> xiaoer::config::Config {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    xiaoer::config::Config {
        data: data.to_path_buf(),
        rules: root.join("rules"),
        replies: root.join("replies"),
        gateways: vec![xiaoer::config::GatewaySettings {
            url: gateway.url(),
            token: Some(GATEWAY_TOKEN.into()),
            name: Some("gw1".into()),
        }],
        shops: vec![xiaoer::config::ShopSettings {
            id: "shop1".into(),
            name: Some("测试小店".into()),
            ..Default::default()
        }],
        watch: false,
        ..xiaoer::config::Config::default()
    }
}
