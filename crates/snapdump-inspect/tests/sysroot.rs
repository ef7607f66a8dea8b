//! Module files that are not where the dump says: without them inspect still walks the stacks
//! (frame pointers and stack scanning through the missing module, CFI elsewhere) and says
//! which files are missing; `--sysroot` finds them again.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{THREADS, TempDir, snapdump_dump};
use snapdump_inspect::{Options, inspect};
use snapdump_test_support::{Ready, target_exe};

#[test]
fn missing_executable_then_sysroot() {
    let dir = TempDir::new("sysroot");
    // Run a copy of the target from a folder of ours, so the dump records that path.
    let bin = dir.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("copied-target");
    std::fs::copy(target_exe(), &exe).unwrap();
    let mut child = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = loop {
        let line = lines.next().expect("READY").unwrap();
        if let Some(ready) = Ready::parse(&line) {
            break ready;
        }
    };
    let core = dir.path("mini.core");
    let dumped = snapdump_dump(ready.pid, &["--mini"], &core);
    child.kill().unwrap();
    child.wait().unwrap();
    dumped.expect("snapdump --mini");

    // The executable moves into a sysroot: its recorded path is gone.
    let sysroot = dir.path("sysroot");
    let moved = sysroot.join(exe.strip_prefix("/").unwrap());
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&exe, &moved).unwrap();

    let options = Options {
        stacks: true,
        sysroot: None,
    };
    let report = inspect(&core, &options).unwrap();
    let exe_text = exe.display().to_string();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("not on this machine") && w.contains(&exe_text)),
        "{:?}",
        report.warnings
    );
    let stacks = report.stacks.as_ref().unwrap();
    for &tid in &ready.tids {
        let stack = stacks.iter().find(|s| s.tid == tid as u32).unwrap();
        // Through the nameless executable frames down to libc's thread start.
        assert!(
            stack.frames.iter().any(|f| f
                .function
                .as_deref()
                .is_some_and(|n| n.contains("start_thread"))),
            "thread {tid} does not reach start_thread without the executable:\n{}",
            frames(stack)
        );
        assert!(
            stack
                .frames
                .iter()
                .any(|f| f.module.as_deref() == Some(exe_text.as_str()) && f.function.is_none()),
            "thread {tid}: the executable's frames are named without its file:\n{}",
            frames(stack)
        );
    }

    // --sysroot: the file is found under it, names come back.
    let options = Options {
        stacks: true,
        sysroot: Some(sysroot.clone()),
    };
    let report = inspect(&core, &options).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let module = report.modules.iter().find(|m| m.path == exe_text).unwrap();
    assert_eq!(module.symbol_file.as_deref(), Some(moved.to_str().unwrap()));
    let stacks = report.stacks.as_ref().unwrap();
    for (i, (name, function)) in THREADS.iter().enumerate() {
        let stack = stacks
            .iter()
            .find(|s| s.tid == ready.tids[i] as u32)
            .unwrap();
        assert!(
            stack
                .frames
                .iter()
                .any(|f| f.function.as_deref().is_some_and(|n| n.contains(function))),
            "{name}: no {function} with --sysroot:\n{}",
            frames(stack)
        );
    }
}

fn frames(stack: &snapdump_inspect::Stack) -> String {
    stack
        .frames
        .iter()
        .map(snapdump_inspect::text::frame_line)
        .collect::<Vec<_>>()
        .join("\n")
}
