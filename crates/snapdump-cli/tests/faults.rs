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
use snapdump_test_support::{
    Ready, Target, assert_running_untraced, children_of, thread_states, zombies_of,
};

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

/// Poll `condition` every 5 ms until it holds; false after `limit`.
fn within(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// After an exec: the announcement, then the new image's EXECED and READY lines (same pid).
fn expect_new_image(target: &mut Target, execs: u64) -> Ready {
    target.expect_line("execing from");
    target.expect_line(&format!("EXECED execs={execs}"));
    let line = target.expect_line("READY");
    let ready = Ready::parse(&line).unwrap_or_else(|| panic!("bad READY line {line:?}"));
    assert_eq!(ready.pid, target.pid(), "exec keeps the pid");
    ready
}

/// The target is the new image, running and untraced, with no child and no zombie left from
/// a snapshot of the old one, and its blocked calls work.
fn assert_new_image_healthy(target: &mut Target, what: &str) {
    let pid = target.pid();
    assert_running_untraced(pid);
    let threads = thread_states(pid);
    assert!(
        !threads.iter().any(|t| t.1 == "sd-execer"),
        "{what}: the new image has a thread of the old one: {threads:?}"
    );
    assert!(
        children_of(pid).is_empty() && zombies_of(pid).is_empty(),
        "{what}: children {:?}, zombies {:?}",
        children_of(pid),
        zombies_of(pid)
    );
    target.wake_and_check(&format!("after {what}"));
}

/// An ELF core file: the magic and `e_type == ET_CORE`.
fn assert_elf_core(path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() > 64 && bytes.starts_with(b"\x7fELF") && bytes[16..18] == [4, 0],
        "{} is not an ELF core ({} bytes)",
        path.display(),
        bytes.len()
    );
}

/// One dump of a fresh target, `flags` added, stalled at `phase` while `during` makes the
/// target exec; the target, its pid before the exec, where the core went and what the dumper
/// said.
fn dump_across_an_exec(
    dir: &std::path::Path,
    round: usize,
    flags: &[&str],
    phase: &str,
    during: impl FnOnce(&mut Target, i32),
) -> (Target, i32, std::path::PathBuf, std::process::Output) {
    let mut target = Target::spawn(&[]);
    let pid = target.pid();
    let core = dir.join(format!("{round}.core"));
    let pid_arg = pid.to_string();
    let mut args = vec!["dump", "--pid", &pid_arg];
    args.extend_from_slice(flags);
    args.extend(["-o", core.to_str().unwrap()]);
    let out = snapdump_test_support::tools::run_stalled(snapdump_bin(), &args, phase, || {
        during(&mut target, pid)
    });
    (target, pid, core, out)
}

#[test]
fn target_execs_while_snapshot_is_written() {
    let dir = temp_dir("exec-snapshot");
    // From a new thread (it takes over the pid, every other thread dies), then from the main
    // thread itself.
    for (round, command) in ["exec", "exec main"].into_iter().enumerate() {
        let (mut target, pid, core, out) =
            dump_across_an_exec(&dir, round, &[], "writing", |target, _| {
                // The target was resumed and runs on; the dump reads the clone. The target now
                // becomes a new program.
                target.send(command);
                expect_new_image(target, 1);
            });
        let exe = target.exe_path();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The clone is a process of its own: the dump of the old image completes.
        assert!(out.status.success(), "{command}: {stderr}");
        assert!(!stderr.contains("no snapshot"), "{command}: {stderr}");
        let info = snapdump_test_support::tools::gdb(
            &exe,
            &core,
            &["info threads", "thread apply all bt"],
        );
        // The old image's five threads, blocked where they were when the snapshot was taken.
        for wanted in [
            format!("LWP {pid}"),
            "target_blocked_in_read".to_string(),
            "target_sleeping".to_string(),
            "target_waiting_on_futex".to_string(),
        ] {
            assert!(info.contains(&wanted), "{command}: no {wanted} in {info}");
        }
        assert!(!info.contains("sd-execer"), "{command}: {info}");
        assert_new_image_healthy(&mut target, &format!("{command} during a snapshot dump"));
        assert_eq!(target.status().short_sleeps, 0);
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn target_execs_during_stop_the_world_dump() {
    let dir = temp_dir("exec-stw");
    for (round, command) in ["exec", "exec main"].into_iter().enumerate() {
        // Every thread is seized (traced) but none is stopped yet: the target runs.
        let (mut target, pid, core, out) =
            dump_across_an_exec(&dir, round, &["--no-snapshot"], "seized", |target, pid| {
                target.send(command);
                target.expect_line("execing from");
                // The exec kills every other thread, and those were traced: the kernel holds
                // the exec until the dumper has reaped them. Wait until it is there.
                assert!(
                    within(Duration::from_secs(10), || thread_states(pid)
                        .iter()
                        .any(|t| t.2 == 'Z')),
                    "{command}: the exec never waited for the dumper: {:?}",
                    thread_states(pid)
                );
            });
        let exe = target.exe_path();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The stop starts over on the new image, and that is what is dumped.
        assert!(out.status.success(), "{command}: {stderr}");
        target.expect_line("EXECED execs=1");
        target.expect_line("READY");
        let info = snapdump_test_support::tools::gdb(&exe, &core, &["info threads"]);
        assert!(info.contains(&format!("LWP {pid}")), "{command}: {info}");
        assert_new_image_healthy(&mut target, &format!("{command} during a stop"));
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A thread of the target execs the program again 10 ms after each READY, while `DUMPS`
/// dumps run one after the other: they race with the exec and with the new image starting
/// its threads. Every dump must succeed (the target never exits; an exec during the stop makes
/// the dumper start over on the new image) and leave the target running and untraced.
fn dumps_of_a_target_execing_in_a_loop(snapshot: &str) {
    const DUMPS: usize = 20;
    let started = std::time::Instant::now();
    let mut target = Target::spawn(&["--exec-every-ms", "10"]);
    let pid = target.pid();
    let dir = temp_dir(&format!("exec-loop{snapshot}"));
    let mut execs = 0;
    for round in 0..DUMPS {
        let core = dir.join(format!("{round}.core"));
        let (out, text) = snapdump_test_support::tools::run_with_timeout(
            Command::new(snapdump_bin())
                .args(["dump", "--pid", &pid.to_string(), snapshot, "-q", "-o"])
                .arg(&core),
            Duration::from_secs(15),
        );
        assert!(
            out.status.success(),
            "dump {round} ({snapshot}): {:?}: {text}",
            out.status
        );
        assert_elf_core(&core);
        assert_running_untraced(pid);
        assert!(zombies_of(pid).is_empty(), "{:?}", zombies_of(pid));
        while let Some(line) = target.next_line_timeout(Duration::ZERO) {
            execs += usize::from(line.starts_with("EXECED"));
        }
    }
    let left = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(left, DUMPS, "files left in {}", dir.display());
    // Without execs during the dumps this test proves nothing.
    assert!(
        execs >= DUMPS / 2,
        "only {execs} execs during {DUMPS} dumps"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn target_execing_in_a_loop_while_dumped_again_and_again() {
    dumps_of_a_target_execing_in_a_loop("--no-snapshot");
}

/// The same with snapshots: the clone's zombie is reaped inside the target after the dump,
/// while the target execs — through a thread of whichever image runs then, with the `syscall`
/// instruction of that image (injecting the old image's address into the new one made the
/// thread fault forever and the dumper loop on it).
#[test]
fn target_execing_in_a_loop_while_snapshot_dumps_run() {
    dumps_of_a_target_execing_in_a_loop("--snapshot");
}

/// `tests/fixtures/leader_exits.c`, built with the system's C compiler and running: its main
/// thread has called `pthread_exit` (the leader is a zombie) and its worker thread answers
/// lines on stdin.
struct LeaderExited {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<String>,
    exe: std::path::PathBuf,
    pid: i32,
    worker: i32,
}

impl LeaderExited {
    fn start(dir: &std::path::Path) -> LeaderExited {
        let source =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/leader_exits.c");
        let exe = dir.join("leader_exits");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let built = Command::new(&cc)
            .args(["-g", "-O0", "-pthread", "-o"])
            .arg(&exe)
            .arg(&source)
            .output()
            .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
        assert!(
            built.status.success(),
            "building {}: {}",
            source.display(),
            String::from_utf8_lossy(&built.stderr)
        );
        let mut child = Command::new(&exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("no READY line from leader_exits");
        let fields: Vec<i32> = ready
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("bad READY line {ready:?}"))
            .split(' ')
            .map(|f| f.parse().unwrap())
            .collect();
        let (pid, worker) = (fields[0], fields[1]);
        assert_eq!(pid, child.id() as i32);
        let leader_is_zombie = || {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat"))
                .ok()
                .and_then(|s| snapdump_test_support::parse_stat(&s))
                .is_some_and(|(_, _, state)| state == 'Z')
        };
        assert!(
            within(Duration::from_secs(10), leader_is_zombie),
            "the main thread of {pid} did not exit"
        );
        LeaderExited {
            child,
            stdin,
            lines,
            exe,
            pid,
            worker,
        }
    }

    /// The worker answers a line: the process runs on, its blocked read intact.
    fn assert_answers(&mut self, what: &str) {
        use std::io::Write;
        self.stdin.write_all(b"ping\n").unwrap();
        let answer = self.lines.recv_timeout(Duration::from_secs(10));
        assert!(
            answer.as_deref().is_ok_and(|l| l.starts_with("ALIVE ")),
            "{what}: the worker did not answer: {answer:?}"
        );
    }
}

impl Drop for LeaderExited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// gcore refuses a process whose main thread called `pthread_exit` ("not being run"), and so
/// did snapdump ("a zombie"). The process lives on in its other threads: each is dumped, the
/// zombie leader left out, by snapshot and stopped alike, and the process runs on unharmed.
#[test]
fn a_process_whose_main_thread_exited_is_dumped_from_its_other_threads() {
    let dir = temp_dir("leader-exits");
    let mut target = LeaderExited::start(&dir);
    let (pid, worker) = (target.pid, target.worker);
    // Listed as dumpable, with the command line the leader's folder no longer shows.
    let ps = Command::new(snapdump_bin()).arg("ps").output().unwrap();
    let listing = String::from_utf8_lossy(&ps.stdout);
    let row = listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
        .unwrap_or_else(|| panic!("pid {pid} not in snapdump ps:\n{listing}"));
    assert!(
        row.contains(" yes ") && row.contains("/leader_exits"),
        "{row}"
    );
    let runs: [(&str, &[&str]); 3] = [
        ("snapshot.core", &[]),
        ("stopped.core", &["--no-snapshot"]),
        ("snapshot.dmp", &["--format", "minidump"]),
    ];
    for (name, flags) in runs {
        let out = Command::new(snapdump_bin())
            .args(["dump", "--pid", &pid.to_string(), "--full", "-o"])
            .arg(dir.join(name))
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: snapdump failed: {stderr}");
        assert!(stderr.contains("): 1 threads,"), "{name}: {stderr}");
        if flags.is_empty() {
            assert!(stderr.contains("paused for a snapshot"), "{name}: {stderr}");
        }
        assert_running_untraced(pid);
        assert!(
            children_of(pid).is_empty() && zombies_of(pid).is_empty(),
            "{name}: children {:?}, zombies {:?}; snapdump said: {stderr}",
            children_of(pid),
            zombies_of(pid)
        );
        target.assert_answers(name);
    }
    for core in ["snapshot.core", "stopped.core"] {
        let out = snapdump_test_support::tools::gdb(
            &target.exe,
            &dir.join(core),
            &["info threads", "bt", "print/x leader_exits_marker"],
        );
        assert!(out.contains(&format!("LWP {worker}")), "{core}: {out}");
        // The core holds one thread's registers, the worker's (gdb's libthread_db still lists
        // the leader, from the thread list in memory, as exiting).
        let notes = Command::new("readelf")
            .args(["-n", "-W"])
            .arg(dir.join(core))
            .output()
            .expect("run readelf (binutils)");
        let notes = String::from_utf8_lossy(&notes.stdout);
        let prstatus = notes
            .lines()
            .filter(|l| l.trim_start().starts_with("CORE ") && l.contains("NT_PRSTATUS"))
            .count();
        assert_eq!(prstatus, 1, "{core}: {notes}");
        assert!(out.contains("worker_loop"), "{core}: {out}");
        assert!(out.contains("0x5eedfacecafe1234"), "{core}: {out}");
    }
    let (walk, _) = snapdump_test_support::tools::run_with_timeout(
        Command::new(snapdump_test_support::tools::minidump_stackwalk())
            .arg(dir.join("snapshot.dmp")),
        Duration::from_secs(120),
    );
    let stack = String::from_utf8_lossy(&walk.stdout);
    assert!(walk.status.success(), "{stack}");
    assert!(stack.contains(&format!("tid: {worker}")), "{stack}");
    assert!(!stack.contains("Thread 1 "), "one thread only: {stack}");
    drop(target);
    std::fs::remove_dir_all(dir).unwrap();
}

/// `watch` of a process whose main thread called `pthread_exit` samples it through a live
/// thread and traces its other threads: a memory threshold fires, and a crash sent to the pid
/// is caught and dumped, then the process dies of it as it would have.
/// A fatal signal that dumps no core would kill it unseen (the kernel's shortcut for a leader
/// nobody traces): the watcher says so when it starts.
#[test]
fn a_process_whose_main_thread_exited_is_watched_through_its_other_threads() {
    use std::os::unix::process::ExitStatusExt;
    let dir = temp_dir("leader-exits-watch");
    let mut target = LeaderExited::start(&dir);
    let (pid, worker) = (target.pid, target.worker);
    // Sampled: its memory is a live thread's to read, not "exited".
    let sampled_dir = dir.join("sampled");
    std::fs::create_dir(&sampled_dir).unwrap();
    let sampled = Command::new(snapdump_bin())
        .args([
            "watch",
            "--pid",
            &pid.to_string(),
            "--mem",
            "1",
            "--poll",
            "50",
        ])
        .args(["--for", "30", "--mini", "-o"])
        .arg(&sampled_dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&sampled.stderr);
    assert!(
        sampled.status.success() && said.contains("dump 1 of 1"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_dir(&sampled_dir).unwrap().count(),
        1,
        "{said}"
    );
    target.assert_answers("after the sampled watch");
    let out_dir = dir.join("dumps");
    std::fs::create_dir(&out_dir).unwrap();
    let mut watcher = Command::new(snapdump_bin())
        .args([
            "watch",
            "--pid",
            &pid.to_string(),
            "--on-crash",
            "--signal",
            "USR1",
        ])
        .args(["--mini", "-o"])
        .arg(&out_dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, said) = mpsc::channel();
    let stderr = watcher.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("watching pid")) {
        match said.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("the watcher never said it was watching: {lines:?}"),
        }
    }
    kill(Pid::from_raw(pid), Signal::SIGSEGV).unwrap();
    let finished = within(Duration::from_secs(30), || {
        watcher.try_wait().unwrap().is_some()
    });
    if !finished {
        let _ = watcher.kill();
    }
    let status = watcher.wait().unwrap();
    // Everything it wrote: the reader thread ends at EOF.
    while let Ok(line) = said.recv_timeout(Duration::from_secs(10)) {
        lines.push(line);
    }
    let said = lines.join("\n");
    assert!(finished && status.success(), "{status:?}: {said}");
    assert!(
        said.contains(&format!(
            "main thread has exited, so SIGUSR1 sent to pid {pid}"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("SIGSEGV in thread {worker} (pid {pid})")),
        "{said}"
    );
    let died = target.child.wait().unwrap();
    assert_eq!(died.signal(), Some(Signal::SIGSEGV as i32), "{died:?}");
    let cores: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cores.len(), 1, "{cores:?}");
    let gdb = snapdump_test_support::tools::gdb(&target.exe, &cores[0], &["info threads", "bt"]);
    assert!(gdb.contains(&format!("LWP {worker}")), "{gdb}");
    assert!(gdb.contains("worker_loop"), "{gdb}");
    assert!(gdb.contains("SIGSEGV"), "{gdb}");
    drop(target);
    std::fs::remove_dir_all(dir).unwrap();
}
