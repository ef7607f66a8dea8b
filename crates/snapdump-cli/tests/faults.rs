//! The fault matrix: the dumper is killed, terminated or interrupted at each phase of a dump,
//! and each time the target runs on (not stopped, not traced, its blocked calls complete
//! correctly), no child or zombie is left, and no file — partial or not — remains.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use snapdump_test_support::{Target, assert_running_untraced, children_of};

const PHASES: [&str; 4] = ["stopped", "captured", "writing", "written"];

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("snapdump-fault-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Start a dump that stalls at `phase`, wait until it is there, deliver `signal`, and check
/// that the dumper ended as it should and the target took no harm.
fn signal_at_phase(target: &mut Target, phase: &str, signal: Signal) {
    let dir = temp_dir(&format!("{phase}-{signal}"));
    let mut dumper = Command::new(env!("CARGO_BIN_EXE_snapdump"))
        .args(["dump", "--pid", &target.pid().to_string(), "--heap", "-o"])
        .arg(dir.join("x.core"))
        .env("SNAPDUMP_STALL_AT", phase)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stderr = BufReader::new(dumper.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let wanted = format!("snapdump: stalled at {phase}");
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the dumper never reached {phase}"));
        if line == wanted {
            break;
        }
    }
    kill(Pid::from_raw(dumper.id() as i32), signal).unwrap();
    let status = dumper.wait().unwrap();
    match signal {
        Signal::SIGKILL => {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(libc_sigkill()), "{phase}: {status}");
        }
        _ => {
            assert_eq!(status.code(), Some(130), "{phase} {signal}: {status}");
            // Everything up to EOF: the reader thread ends when the dumper has exited.
            let said: Vec<String> = lines.iter().collect();
            assert!(
                said.iter().any(|l| l.contains("interrupted")),
                "{phase} {signal}: {said:?}"
            );
        }
    }
    assert_running_untraced(target.pid());
    assert!(children_of(target.pid()).is_empty());
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "{phase} {signal}: files left: {left:?}");
    target.wake_and_check(&format!("after {signal} at {phase}"));
    std::fs::remove_dir_all(dir).unwrap();
}

fn libc_sigkill() -> i32 {
    Signal::SIGKILL as i32
}

#[test]
fn dumper_killed_at_each_phase() {
    let mut target = Target::spawn(&[]);
    for phase in PHASES {
        signal_at_phase(&mut target, phase, Signal::SIGKILL);
    }
    assert_eq!(target.status().short_sleeps, 0);
}

#[test]
fn dumper_terminated_at_each_phase() {
    let mut target = Target::spawn(&[]);
    for phase in PHASES {
        signal_at_phase(&mut target, phase, Signal::SIGTERM);
    }
    assert_eq!(target.status().short_sleeps, 0);
}

#[test]
fn dumper_interrupted_at_each_phase() {
    let mut target = Target::spawn(&[]);
    for phase in PHASES {
        signal_at_phase(&mut target, phase, Signal::SIGINT);
    }
    assert_eq!(target.status().short_sleeps, 0);
}

#[test]
fn two_dumps_of_one_target_at_once() {
    let mut target = Target::spawn(&[]);
    let dir = temp_dir("twice");
    let pid = target.pid().to_string();
    let run = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_snapdump"))
            .args(["dump", "--pid", &pid, "--heap", "-q", "-o"])
            .arg(dir.join(name))
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run("a.core"));
        let b = s.spawn(|| run("b.core"));
        (a.join().unwrap(), b.join().unwrap())
    });
    // Only one tracer can attach: either both succeed one after the other, or the loser is
    // refused as "already traced" — never a broken file or a stuck target.
    for out in [&a, &b] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || (out.status.code() == Some(4) && stderr.contains("traced")),
            "{stderr}"
        );
    }
    assert!(a.status.success() || b.status.success());
    assert_running_untraced(target.pid());
    target.wake_and_check("after two dumps");
    std::fs::remove_dir_all(dir).unwrap();
}
