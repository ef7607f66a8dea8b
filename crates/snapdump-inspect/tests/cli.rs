//! `snapdump inspect` as users run it: the built binary on real dumps, its exit statuses
//! (0 read, 1 unreadable, 7 damaged) and its outputs. Skipped, with a note, while the binary
//! has no `inspect` subcommand yet.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{TempDir, snapdump_bin, snapdump_dump};
use snapdump_test_support::Target;

/// The binary to run `inspect` with: `$SNAPDUMP_INSPECT_BIN`, else the workspace's snapdump.
fn bin() -> PathBuf {
    std::env::var_os("SNAPDUMP_INSPECT_BIN").map_or_else(snapdump_bin, PathBuf::from)
}

fn inspect(args: &[&str], file: &Path) -> Output {
    Command::new(bin())
        .arg("inspect")
        .arg(file)
        .args(args)
        .output()
        .expect("run snapdump inspect")
}

fn wired() -> bool {
    let help = Command::new(bin())
        .args(["inspect", "--help"])
        .output()
        .unwrap();
    if !help.status.success() {
        eprintln!(
            "SKIPPED: {} has no inspect subcommand yet: {}",
            bin().display(),
            String::from_utf8_lossy(&help.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    help.status.success()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn inspect_command() {
    if !wired() {
        return;
    }
    let target = Target::spawn(&[]);
    let dir = TempDir::new("cli");
    let core = dir.path("mini.core");
    snapdump_dump(target.pid(), &["--mini"], &core).expect("snapdump --mini");

    // The summary.
    let out = inspect(&[], &core);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    for expected in [
        "ELF core",
        "written by snapdump",
        "threads (5)",
        "modules (",
        "memory:",
    ] {
        assert!(summary.contains(expected), "no {expected:?} in:\n{summary}");
    }
    assert!(summary.contains(&target.exe_path().display().to_string()));

    // One section only.
    let out = inspect(&["--modules"], &core);
    let modules = text(&out.stdout);
    assert!(
        modules.contains("modules (") && !modules.contains("threads ("),
        "{modules}"
    );

    // Stacks name each thread's function.
    let out = inspect(&["--stacks"], &core);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stacks = text(&out.stdout);
    for (_, function) in common::THREADS {
        assert!(stacks.contains(function), "no {function} in:\n{stacks}");
    }

    // JSON: one document with the documented top level.
    let out = inspect(&["--json", "--stacks", "--memory"], &core);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    for key in [
        "format", "process", "threads", "modules", "regions", "memory", "stacks",
    ] {
        assert!(json.get(key).is_some(), "no {key}");
    }
    assert_eq!(json["format"], "elf-core");
    assert_eq!(json["threads"].as_array().unwrap().len(), 5);

    // Damaged: what could be read, the damage listed, exit 7.
    let bytes = std::fs::read(&core).unwrap();
    let cut = dir.path("cut.core");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = inspect(&[], &cut);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("threads (5)"));
    assert!(text(&out.stdout).contains("the file is truncated"));
    assert!(
        text(&out.stderr).contains("damaged"),
        "{}",
        text(&out.stderr)
    );

    // Unreadable: a clear error, exit 1, nothing on stdout.
    std::fs::write(&cut, &bytes[..40]).unwrap();
    let out = inspect(&[], &cut);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("truncated ELF header"),
        "{}",
        text(&out.stderr)
    );
    let random = dir.path("random.bin");
    std::fs::write(&random, [0x42u8; 100]).unwrap();
    let out = inspect(&["--stacks", "--json"], &random);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not an ELF core or a minidump"));
    let out = inspect(&[], &dir.path("missing"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("No such file"),
        "{}",
        text(&out.stderr)
    );
}
