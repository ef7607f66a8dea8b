//! Helpers shared by the CLI's integration tests (each test binary uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `snapdump` binary under test.
pub fn snapdump_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_snapdump"))
}

/// Run `snapdump ARGS…` to completion.
pub fn snapdump(args: &[&str]) -> Output {
    Command::new(snapdump_bin())
        .args(args)
        .output()
        .expect("run snapdump")
}

/// A fresh, empty folder for one test, named after it and this test process.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("snapdump-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
