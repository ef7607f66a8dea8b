//! The fault matrix: the dumper is killed, terminated or interrupted at each phase of a dump,
//! and each time the target runs on (not stopped, not traced, its blocked calls complete
//! correctly), no child or zombie is left, and no file — partial or not — remains.

mod common;

use common::{snapdump_bin, temp_dir};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use snapdump_test_support::{Target, assert_running_untraced, children_of};

const PHASES: [&str; 4] = ["stopped", "captured", "writing", "written"];

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
    // Killed while a snapshot existed, the clone died with its tracer (EXITKILL) and the
    // snapshot guardian reaped its zombie inside the target; give the guardian a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !children_of(target.pid()).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        children_of(target.pid()).is_empty(),
        "{phase} {signal}: children {:?}",
        children_of(target.pid())
    );
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

#[test]
fn target_killed_in_the_middle_of_a_dump() {
    let mut target = Target::spawn(&[]);
    let dir = temp_dir("target-dies");
    let pid = target.pid().to_string();
    let out_path = dir.join("x.core");
    let out = snapdump_test_support::tools::run_stalled(
        snapdump_bin(),
        &["dump", "--pid", &pid, "-o", out_path.to_str().unwrap()],
        "captured",
        || target.child_mut().kill().unwrap(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("exited while it was being dumped"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn target_spawning_threads_while_being_stopped() {
    let mut target = Target::spawn(&[]);
    let dir = temp_dir("spawning");
    let pid = target.pid().to_string();
    for round in 0..5 {
        // The target creates threads while the dumper seizes the ones it sees.
        target.send("spawn 20");
        let path = dir.join(format!("{round}.core"));
        let out = Command::new(snapdump_bin())
            .args(["dump", "--pid", &pid, "--mini", "-q", "-o"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.expect_line("spawned 20");
        let info = snapdump_test_support::tools::gdb(&target.exe_path(), &path, &["info threads"]);
        assert!(info.contains(&format!("LWP {pid}")), "{info}");
        assert_running_untraced(target.pid());
    }
    target.wake_and_check("after dumps during thread creation");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The target as another user (nobody), and in its own pid namespace.
fn spawn_wrapped(wrapper: &[&str]) -> (std::process::Child, i32) {
    let exe = snapdump_test_support::target_exe();
    let mut child = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("READY"), "{line}");
    // The pid as this namespace sees it: the wrapper's descendant running the target.
    let wrapper_pid = child.id() as i32;
    let mut pid = wrapper_pid;
    for _ in 0..3 {
        if std::fs::read_link(format!("/proc/{pid}/exe")).ok() == Some(exe.clone()) {
            break;
        }
        pid = children_of(pid)[0];
    }
    (child, pid)
}

#[test]
fn targets_of_other_users_and_pid_namespaces_are_dumped_by_root() {
    let exe = snapdump_test_support::target_exe();
    let dir = temp_dir("elsewhere");
    for (name, wrapper) in [
        (
            "nobody",
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ][..],
        ),
        ("pidns", &["unshare", "--pid", "--fork", "--mount-proc"][..]),
    ] {
        let (mut child, pid) = spawn_wrapped(wrapper);
        let core = dir.join(format!("{name}.core"));
        let out = Command::new(snapdump_bin())
            .args(["dump", "--pid", &pid.to_string(), "-o"])
            .arg(&core)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bt = snapdump_test_support::tools::gdb(&exe, &core, &["thread apply all bt"]);
        assert!(bt.contains("target_sleeping"), "{name}: {bt}");
        assert_running_untraced(pid);
        child.kill().unwrap();
        child.wait().unwrap();
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_dumper_without_privileges_is_refused_clearly() {
    let target = Target::spawn(&[]);
    let dir = temp_dir("unprivileged");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(snapdump_bin())
        .args(["dump", "--pid", &target.pid().to_string(), "-o"])
        .arg(dir.join("x.core"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("not allowed to trace") && stderr.contains("CAP_SYS_PTRACE"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert_running_untraced(target.pid());
    std::fs::remove_dir_all(dir).unwrap();
}
