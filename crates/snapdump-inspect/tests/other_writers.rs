//! Dumps of the test target written by others: gdb's gcore, the kernel (a real crash) and
//! minidump-writer (Breakpad's Linux writer, ported). inspect must read them like ours.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Expect, TempDir, check_target, gcore, inspect, minidump_writer_dump};
use snapdump_inspect::{DumpFormat, ReasonKind, Writer};
use snapdump_test_support::{Ready, Target, target_exe};

#[test]
fn gcore_core() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("gcore");
    let Some(core) = gcore(target.pid(), &dir.0) else {
        return;
    };
    let report = inspect(&core, true);
    assert_eq!(report.format, DumpFormat::ElfCore);
    assert_eq!(report.writer, Some(Writer::Gcore));
    assert_eq!(report.process.reason.kind, ReasonKind::Requested);
    check_target(
        &report,
        target.ready(),
        &target.exe_path(),
        Expect {
            names: false,
            stacks: true,
        },
    );
}

#[test]
fn minidump_writer_minidump() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("mdw");
    let path = dir.path("breakpad.dmp");
    minidump_writer_dump(target.pid(), &path);
    let report = inspect(&path, true);
    assert_eq!(report.format, DumpFormat::Minidump);
    assert_eq!(report.writer, Some(Writer::Breakpad));
    assert_eq!(report.mode.as_deref(), Some("mini"));
    assert_eq!(report.process.reason.kind, ReasonKind::Requested);
    assert!(
        report.process.dumped_at.is_some(),
        "minidumps carry their time"
    );
    check_target(
        &report,
        target.ready(),
        &target.exe_path(),
        Expect {
            names: true,
            stacks: true,
        },
    );
}

/// Whether the kernel writes cores into the crashing process's folder (`core`, `core.PID`...);
/// a pipe to a crash collector or another folder is skipped.
fn core_pattern_is_local() -> bool {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let pattern = pattern.trim();
    let local = !(pattern.starts_with('|') || pattern.contains('/') || pattern.is_empty());
    if !local {
        eprintln!("SKIPPED: core_pattern {pattern:?} does not write into the process's folder");
    }
    local
}

/// The core file the kernel left in `dir`, if any.
fn core_in(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let core = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("core"))
        });
    if core.is_none() {
        eprintln!("SKIPPED: no core file written (limits or a container)");
    }
    core
}

/// The kernel's core of the target aborting (`crash`).
#[test]
fn kernel_core_of_a_crash() {
    if !core_pattern_is_local() {
        return;
    }
    let dir = TempDir::new("kernel");
    let exe = target_exe();
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -c unlimited && exec \"$0\""])
        .arg(&exe)
        .current_dir(&dir.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the target");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("READY ") => break Ready::parse(&line).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("no READY line: {other:?}"),
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "crash").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the target did not die");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let Some(core) = core_in(&dir.0) else {
        return;
    };
    let report = inspect(&core, true);
    assert_eq!(report.writer, Some(Writer::Kernel));
    let reason = &report.process.reason;
    assert_eq!(reason.kind, ReasonKind::Signal, "{}", reason.description);
    assert_eq!(reason.signal_name.as_deref(), Some("SIGABRT"));
    assert_eq!(reason.thread, Some(ready.pid as u32), "main thread aborted");
    let crashed: Vec<u32> = report
        .threads
        .iter()
        .filter(|t| t.crashed)
        .map(|t| t.tid)
        .collect();
    assert_eq!(crashed, [ready.pid as u32]);
    check_target(
        &report,
        &ready,
        &exe,
        Expect {
            names: false,
            stacks: true,
        },
    );
    let stacks = report.stacks.as_ref().unwrap();
    let main = stacks.iter().find(|s| s.tid == ready.pid as u32).unwrap();
    assert!(
        main.frames
            .iter()
            .any(|f| f.function.as_deref().is_some_and(|n| n.contains("abort"))),
        "the crashed thread's stack shows abort: {:#?}",
        main.frames
    );
}

/// A real fault: python reads address 0 (SIGSEGV, SEGV_MAPERR) and the kernel dumps it. The
/// reason is a crash at 0x0 in the main thread.
#[test]
fn kernel_core_of_a_segfault() {
    if !core_pattern_is_local() {
        return;
    }
    let dir = TempDir::new("segv");
    let status = Command::new("sh")
        .args([
            "-c",
            "ulimit -c unlimited && exec python3 -c 'import ctypes; ctypes.string_at(0)'",
        ])
        .current_dir(&dir.0)
        .status();
    let Ok(status) = status else {
        eprintln!("SKIPPED: no sh");
        return;
    };
    if status.code() == Some(127) {
        eprintln!("SKIPPED: no python3");
        return;
    }
    assert!(!status.success());
    let Some(core) = core_in(&dir.0) else {
        return;
    };
    let report = inspect(&core, true);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.writer, Some(Writer::Kernel));
    let reason = &report.process.reason;
    assert_eq!(reason.kind, ReasonKind::Crash, "{}", reason.description);
    assert_eq!(reason.signal_name.as_deref(), Some("SIGSEGV"));
    assert_eq!(reason.address, Some(snapdump_inspect::Hex(0)));
    assert!(
        reason.description.contains("SEGV_MAPERR"),
        "{}",
        reason.description
    );
    let pid = report.process.pid.unwrap();
    assert_eq!(reason.thread, Some(pid));
    assert!(report.threads.iter().any(|t| t.tid == pid && t.crashed));
    assert!(
        report
            .modules
            .iter()
            .any(|m| m.path.contains("python3") && m.build_id.is_some()),
        "{:#?}",
        report.modules
    );
    let stacks = report.stacks.as_ref().unwrap();
    let main = stacks.iter().find(|s| s.tid == pid).unwrap();
    assert!(
        main.frames.len() > 3 && main.frames.iter().any(|f| f.function.is_some()),
        "{:#?}",
        main.frames
    );
}
