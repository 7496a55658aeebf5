//! What the end-to-end test binaries share: a private copy of the fixture rules.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tempfile::TempDir;

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
