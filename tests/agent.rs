//! `xiaoer agent`: console accounts from the shell, against a real SQLite store (and one
//! PostgreSQL store named with `--store` / `XIAOER_STORE`).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::backends::TestDb;
use xiaoer::accounts::verify_password;
use xiaoer::config::StoreLocation;
use xiaoer::model::Role;
use xiaoer::store::Store;

fn agent(args: &[&str], data: &Path, stdin: &str) -> Output {
    agent_on(args, data, stdin, |command| {
        command.env_remove("XIAOER_STORE");
    })
}

/// `xiaoer agent ARGS --data DIR`, with `store` naming the store (a flag or the environment).
fn agent_on(args: &[&str], data: &Path, stdin: &str, store: impl FnOnce(&mut Command)) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xiaoer"));
    command.arg("agent").args(args).arg("--data").arg(data);
    store(&mut command);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn accounts_are_added_listed_changed_and_disabled_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let added = agent(
        &[
            "add",
            "xiaowang",
            "--role",
            "agent",
            "--shop",
            "shop1",
            "--password-stdin",
        ],
        data,
        "first-password\n",
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert_eq!(text(&added.stdout), "added xiaowang (agent, shops shop1)\n");

    let again = agent(&["add", "xiaowang"], data, "another-password\n");
    assert!(!again.status.success());
    assert_eq!(
        text(&again.stderr),
        "error: an agent named xiaowang already exists\n"
    );
    let short = agent(&["add", "lisi"], data, "short\n");
    assert_eq!(
        text(&short.stderr),
        "error: the password must have at least 8 characters\n"
    );
    let none = agent(&["add", "lisi"], data, "");
    assert_eq!(
        text(&none.stderr),
        "error: no password given on standard input\n"
    );

    {
        let store = Store::open_existing(data).await.unwrap();
        let (account, hash) = store.agent("xiaowang").await.unwrap().unwrap();
        assert_eq!(account.role, Role::Agent);
        assert_eq!(account.shops, ["shop1"]);
        assert!(account.serves("shop1") && !account.serves("shop2"));
        assert!(verify_password("first-password", &hash));
        assert!(!hash.contains("first-password"), "only a hash is stored");
        store.close().await.unwrap();
    }

    let changed = agent(&["passwd", "xiaowang"], data, "second-password\n");
    assert!(changed.status.success(), "{}", text(&changed.stderr));
    let disabled = agent(&["disable", "xiaowang"], data, "");
    assert!(disabled.status.success(), "{}", text(&disabled.stderr));
    let listed = agent(&["list"], data, "");
    let listing = text(&listed.stdout);
    assert!(
        listing.starts_with("xiaowang")
            && listing.contains("disabled")
            && listing.contains("shop1"),
        "{listing}"
    );
    let store = Store::open_existing(data).await.unwrap();
    let (account, hash) = store.agent("xiaowang").await.unwrap().unwrap();
    assert!(account.disabled);
    assert!(
        !account.serves("shop1"),
        "a disabled account serves nothing"
    );
    assert!(verify_password("second-password", &hash));
    store.close().await.unwrap();

    let missing = agent(&["passwd", "nobody"], data, "whatever-password\n");
    assert_eq!(text(&missing.stderr), "error: no agent named nobody\n");
}

#[tokio::test]
async fn accounts_go_to_the_store_that_store_or_xiaoer_store_names() {
    let Some(db) = TestDb::postgres("accounts_go_to_the_store_that_store_names").await else {
        return;
    };
    let url = db.location().to_string();
    let StoreLocation::Postgres(url_with_password) = db.location() else {
        unreachable!()
    };
    let nowhere = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env_store: bool, stdin: &str| {
        agent_on(args, nowhere.path(), stdin, |command| {
            if env_store {
                command.env("XIAOER_STORE", &url_with_password);
            } else {
                command
                    .env_remove("XIAOER_STORE")
                    .arg("--store")
                    .arg(&url_with_password);
            }
        })
    };
    let added = run(
        &["add", "xiaoli", "--role", "supervisor"],
        false,
        "long-enough-1\n",
    );
    assert!(added.status.success(), "{url}: {}", text(&added.stderr));
    let listed = run(&["list"], true, "");
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        text(&listed.stdout).starts_with("xiaoli"),
        "{}",
        text(&listed.stdout)
    );
    assert!(
        !nowhere.path().join(xiaoer::store::DB_FILE).exists(),
        "--store wins over --data"
    );
    let store = db.open_existing().await;
    let (agent, hash) = store.agent("xiaoli").await.unwrap().unwrap();
    assert_eq!(agent.role, Role::Supervisor);
    assert!(verify_password("long-enough-1", &hash));
    store.close().await.unwrap();
}
