//! `snapdump watch` against the test target: each trigger fires with the value it measured,
//! the right number of times and spacing; crashes are dumped with the signal and the faulting
//! thread and the target then dies of that signal exactly as without snapdump; signals are
//! dumped then delivered; job control and unwatched signals pass through; a target that never
//! crosses a threshold gets no dump; Ctrl-C leaves the target running untraced.
//!
//! Readiness is never slept on: each test waits for the watcher's `watching pid` line.

mod common;

use common::temp_dir;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use snapdump_test_support::{Target, assert_running_untraced, tools, tracer_pid};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Every test holds this: each target keeps a core busy, and the CPU test needs one to itself.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[derive(Debug)]
enum Line {
    Out(String),
    Err(String),
}

/// A running `snapdump watch`, its output read line by line as it comes.
struct Watcher {
    child: Child,
    lines: Receiver<(Line, Instant)>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

struct Finished {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Finished {
    fn stderr_text(&self) -> String {
        self.stderr.join("\n")
    }
}

impl Watcher {
    fn start(args: &[&str]) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_snapdump"))
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run snapdump watch");
        let (tx, lines) = channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        let err = BufReader::new(child.stderr.take().unwrap());
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send((Line::Out(line), Instant::now()));
            }
        });
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = tx2.send((Line::Err(line), Instant::now()));
            }
        });
        Watcher {
            child,
            lines,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Read until a stderr line contains `text`; returns it and when it came.
    fn expect(&mut self, text: &str) -> (String, Instant) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((Line::Out(line), _)) => self.stdout.push(line),
                Ok((Line::Err(line), at)) => {
                    self.stderr.push(line.clone());
                    if line.contains(text) {
                        return (line, at);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {text:?} from the watcher; stderr: {:#?}", self.stderr)
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the watcher ended without {text:?} ({:?}); stderr: {:#?}",
                    self.child.try_wait(),
                    self.stderr
                ),
            }
        }
    }

    /// Wait for `watching pid <pid>`: from then on, the target is watched.
    fn expect_watching(&mut self, pid: i32) {
        let (line, _) = self.expect("watching pid");
        assert!(line.contains(&format!("watching pid {pid} ")), "{line}");
    }

    /// Whether any stderr line read so far contains `text`; reads what has come meanwhile.
    fn said(&mut self, text: &str) -> bool {
        while let Ok((line, _)) = self.lines.try_recv() {
            match line {
                Line::Out(line) => self.stdout.push(line),
                Line::Err(line) => self.stderr.push(line),
            }
        }
        self.stderr.iter().any(|l| l.contains(text))
    }

    fn finish(mut self) -> Finished {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the watcher did not exit; stderr: {:#?}", self.stderr);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The readers end with the pipes.
        for (line, _) in self.lines.iter() {
            match line {
                Line::Out(line) => self.stdout.push(line),
                Line::Err(line) => self.stderr.push(line),
            }
        }
        Finished {
            status,
            stdout: std::mem::take(&mut self.stdout),
            stderr: std::mem::take(&mut self.stderr),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The dump paths printed on stdout, each checked to exist, be named for `trigger` and the
/// target, and be an ELF core.
fn dumps(finished: &Finished, dir: &Path, pid: i32, trigger: &str) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = finished.stdout.iter().map(PathBuf::from).collect();
    for path in &paths {
        assert_eq!(path.parent(), Some(dir), "{}", path.display());
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(&format!("snapdump-test-t_{pid}_"))
                && name.ends_with(&format!("_{trigger}.core")),
            "{name}"
        );
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF", "{name}");
    }
    assert_eq!(files_in(dir), paths, "the files are the ones printed");
    paths
}

fn vm_rss_mib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Still running, untraced, and still doing its work (the spinner may wait a while for a CPU
/// on a busy machine).
fn assert_alive_and_well(target: &mut Target) {
    assert_running_untraced(target.pid());
    let before = target.status().spins;
    target.wake_and_check("still here");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let after = target.status();
        assert!(after.heap_ok, "{after:?}");
        if after.spins > before {
            return;
        }
        assert!(Instant::now() < deadline, "the spinner stopped: {after:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn crash_and_wait(target: &mut Target) -> ExitStatus {
    target.send("crash");
    target.expect_line("crashing");
    target.wait_exit(TIMEOUT).expect("the crashed target exits")
}

#[test]
fn a_crash_is_dumped_and_the_target_dies_of_its_signal_as_without_snapdump() {
    let _serial = serial();
    // Without snapdump: abort() ends it with SIGABRT.
    let mut alone = Target::spawn(&["--no-core"]);
    let unwatched = crash_and_wait(&mut alone);
    assert_eq!(
        unwatched.signal(),
        Some(Signal::SIGABRT as i32),
        "{unwatched:?}"
    );

    let dir = temp_dir("crash");
    let mut target = Target::spawn(&["--no-core"]);
    let pid = target.pid();
    let mut watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "--on-crash",
        "--mini",
        "-o",
        dir.to_str().unwrap(),
    ]);
    watcher.expect_watching(pid);
    // Traced, yet running and answering.
    assert_ne!(tracer_pid(pid), 0);
    target.wake_and_check("watched");

    let watched = crash_and_wait(&mut target);
    assert_eq!(watched.signal(), unwatched.signal(), "{watched:?}");
    assert_eq!(watched.core_dumped(), unwatched.core_dumped());

    let finished = watcher.finish();
    let stderr = finished.stderr_text();
    assert!(finished.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "crash: SIGABRT in thread {pid} (pid {pid}): dump 1 of 1 -> {}",
            dir.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {pid} was killed by SIGABRT")),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 1 dump taken; done"), "{stderr}");
    let core = &dumps(&finished, &dir, pid, "crash")[0];

    let gdb = tools::gdb(&target.exe_path(), core, &["bt", "info threads"]);
    assert!(
        gdb.contains("Program terminated with signal SIGABRT"),
        "{gdb}"
    );
    assert!(gdb.contains("abort"), "{gdb}");
    assert!(gdb.contains("snapdump_test_target::command"), "{gdb}");
    assert!(gdb.contains("snapdump_test_target::main"), "{gdb}");
    for tid in &target.ready().tids {
        assert!(gdb.contains(&format!("LWP {tid}")), "thread {tid}: {gdb}");
    }
    // The crashing thread is thread 1, the current one.
    assert!(gdb.contains(&format!("* 1    LWP {pid}")), "{gdb}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_crash_minidump_has_the_exception() {
    use minidump::{Minidump, MinidumpException};
    let _serial = serial();
    let dir = temp_dir("crash-mdmp");
    let mut target = Target::spawn(&["--no-core"]);
    let pid = target.pid();
    let mut watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "--on-crash",
        "--format",
        "minidump",
        "-o",
        dir.to_str().unwrap(),
    ]);
    watcher.expect_watching(pid);
    let status = crash_and_wait(&mut target);
    assert_eq!(status.signal(), Some(Signal::SIGABRT as i32));
    let finished = watcher.finish();
    assert!(finished.status.success(), "{}", finished.stderr_text());
    let path = PathBuf::from(&finished.stdout[0]);
    assert!(path.to_str().unwrap().ends_with("_crash.dmp"), "{path:?}");
    let dump = Minidump::read_path(&path).expect("the minidump crate opens it");
    let exception: MinidumpException = dump.get_stream().expect("an exception stream");
    assert_eq!(exception.raw.thread_id, pid as u32);
    assert_eq!(
        exception.raw.exception_record.exception_code,
        Signal::SIGABRT as u32
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cpu_fires_count_times_at_least_spacing_apart() {
    let _serial = serial();
    let dir = temp_dir("cpu");
    let mut target = Target::spawn(&[]);
    let pid = target.pid();
    let mut watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "--cpu",
        "50",
        "-n",
        "2",
        "-s",
        "1",
        "--poll",
        "300",
        "--mini",
        "-o",
        dir.to_str().unwrap(),
    ]);
    watcher.expect_watching(pid);
    let (first, first_at) = watcher.expect("dump 1 of 2 -> ");
    let (second, second_at) = watcher.expect("dump 2 of 2 -> ");
    for line in [&first, &second] {
        // `snapdump: cpu 97% >= 50% (pid N): dump ...`, the value measured at or above 50.
        let percent: f64 = line
            .strip_prefix("snapdump: cpu ")
            .and_then(|rest| rest.split('%').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(percent >= 50.0, "{line}");
        assert!(
            line.contains(&format!("% >= 50% (pid {pid}): dump ")),
            "{line}"
        );
    }
    assert!(second_at - first_at >= Duration::from_secs(1));
    let finished = watcher.finish();
    let stderr = finished.stderr_text();
    assert!(finished.status.success(), "{stderr}");
    assert!(stderr.contains("2 of 2 dumps taken; done"), "{stderr}");
    let paths = dumps(&finished, &dir, pid, "cpu");
    assert_eq!(paths.len(), 2);
    // The second started at least 1 s after the first was finished.
    let gap = mtime(&paths[1]).duration_since(mtime(&paths[0])).unwrap();
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
    assert_alive_and_well(&mut target);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn memory_fires_after_the_target_grows() {
    let _serial = serial();
    let dir = temp_dir("mem");
    let mut target = Target::spawn(&[]);
    let pid = target.pid();
    let threshold = vm_rss_mib(pid) + 64;
    let mut watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "--mem",
        &threshold.to_string(),
        "--poll",
        "100",
        "--mini",
        "-o",
        dir.to_str().unwrap(),
    ]);
    watcher.expect_watching(pid);
    target.ping();
    assert!(!watcher.said("dump 1"), "{:?}", watcher.stderr);
    target.command_expect("grow 128", "grew 128");
    let (line, _) = watcher.expect("dump 1 of 1 -> ");
    let measured: u64 = line
        .strip_prefix("snapdump: memory ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(measured >= threshold, "{line}");
    assert!(
        line.contains(&format!(
            " MiB >= {threshold} MiB (pid {pid}): dump 1 of 1 -> "
        )),
        "{line}"
    );
    let finished = watcher.finish();
    assert!(finished.status.success(), "{}", finished.stderr_text());
    assert_eq!(dumps(&finished, &dir, pid, "mem").len(), 1);
    assert_alive_and_well(&mut target);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fds_and_threads_fire_when_reached() {
    let _serial = serial();
    let dir = temp_dir("fds");
    let mut target = Target::spawn(&[]);
    let pid = target.pid();
    let threshold = fd_count(pid) + 20;
    let mut watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "--fds",
        &threshold.to_string(),
        "--poll",
        "100",
        "--mini",
        "-o",
        dir.to_str().unwrap(),
    ]);
    watcher.expect_watching(pid);
    target.command_expect("fds 30", "fds 30");
    let (line, _) = watcher.expect("dump 1 of 1 -> ");
    let want = format!(
        "snapdump: fds {} >= {threshold} (pid {pid}): ",
        threshold + 10
    );
    assert!(line.starts_with(&want), "{line}");
    let finished = watcher.finish();
    assert!(finished.status.success(), "{}", finished.stderr_text());
    assert_eq!(dumps(&finished, &dir, pid, "fds").len(), 1);

    // Five threads now; three more make eight.
    let dir = temp_dir("threads");
    let mut watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "--threads",
        "8",
        "--poll",
        "100",
        "--mini",
        "-o",
        dir.to_str().unwrap(),
    ]);
    watcher.expect_watching(pid);
    target.command_expect("spawn 3", "spawned 3");
    let (line, _) = watcher.expect("dump 1 of 1 -> ");
    assert!(
        line.starts_with(&format!("snapdump: threads 8 >= 8 (pid {pid}): ")),
        "{line}"
    );
    let finished = watcher.finish();
    assert!(finished.status.success(), "{}", finished.stderr_text());
    assert_eq!(dumps(&finished, &dir, pid, "threads").len(), 1);
    assert_alive_and_well(&mut target);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Poll the target's SIGUSR1 count until it is `want` (the handler thread counts it a moment
/// after delivery).
fn wait_usr1(target: &mut Target, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = target.command("usr1");
        if line == format!("usr1 {want}") {
            return;
        }
        assert!(Instant::now() < deadline, "{line}, want {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_watched_signal_is_dumped_then_delivered() {
    let _serial = serial();
    let dir = temp_dir("signal");
    let mut target = Target::spawn(&[]);
    let pid = target.pid();
    target.command_expect("handle-usr1", "handling usr1");
    let mut watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "--signal",
        "SIGUSR1",
        "--mini",
        "-o",
        dir.to_str().unwrap(),
    ]);
    watcher.expect_watching(pid);
    assert_eq!(target.command("usr1"), "usr1 0");
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    let (line, _) = watcher.expect("dump 1 of 1 -> ");
    assert!(
        line.starts_with("snapdump: signal SIGUSR1 in thread "),
        "{line}"
    );
    assert!(
        line.contains(&format!("(pid {pid}): dump 1 of 1")),
        "{line}"
    );
    let finished = watcher.finish();
    assert!(finished.status.success(), "{}", finished.stderr_text());
    // Delivered once, after the dump; the target goes on as before.
    wait_usr1(&mut target, 1);
    assert_alive_and_well(&mut target);
    assert_eq!(target.command("usr1"), "usr1 1");
    let core = &dumps(&finished, &dir, pid, "signal")[0];
    let gdb = tools::gdb(&target.exe_path(), core, &["info threads"]);
    assert!(
        gdb.contains("Program terminated with signal SIGUSR1"),
        "{gdb}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn while_traced_signals_pass_through_job_control_works_and_ctrl_c_lets_go() {
    let _serial = serial();
    let dir = temp_dir("passthrough");
    let mut target = Target::spawn(&[]);
    let pid = target.pid();
    let target_pid = Pid::from_raw(pid);
    target.command_expect("handle-usr1", "handling usr1");
    let mut watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "--on-crash",
        "--signal",
        "SIGUSR2",
        "-o",
        dir.to_str().unwrap(),
    ]);
    watcher.expect_watching(pid);
    assert_ne!(tracer_pid(pid), 0);

    // An unwatched signal is delivered as it came, without a dump.
    kill(target_pid, Signal::SIGUSR1).unwrap();
    wait_usr1(&mut target, 1);

    // SIGSTOP stops it as it would untraced; SIGCONT lets it go on.
    kill(target_pid, Signal::SIGSTOP).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while !snapdump_test_support::thread_states(pid)
        .iter()
        .all(|t| matches!(t.2, 't' | 'T'))
    {
        assert!(
            Instant::now() < deadline,
            "SIGSTOP did not stop every thread"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    target.send("ping");
    assert_eq!(target.next_line_timeout(Duration::from_millis(500)), None);
    kill(target_pid, Signal::SIGCONT).unwrap();
    target.expect_line("pong");
    target.wake_and_check("after SIGCONT");

    // Ctrl-C: the watcher lets go and says so.
    kill(watcher.pid(), Signal::SIGINT).unwrap();
    let finished = watcher.finish();
    let stderr = finished.stderr_text();
    assert_eq!(finished.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "interrupted: stopped watching, 0 of 1 dump taken; pid {pid} left running, untraced"
        )),
        "{stderr}"
    );
    assert!(finished.stdout.is_empty() && files_in(&dir).is_empty());
    assert_alive_and_well(&mut target);
    assert_eq!(target.command("usr1"), "usr1 1");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_target_that_never_crosses_a_threshold_gets_no_dump() {
    let _serial = serial();
    let dir = temp_dir("never");
    let mut target = Target::spawn(&[]);
    let pid = target.pid();
    let started = Instant::now();
    let mut watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "--cpu",
        "1000",
        "--mem",
        "1000000",
        "--threads",
        "10000",
        "--fds",
        "100000",
        "--on-crash",
        "--for",
        "2",
        "--poll",
        "100",
        "-o",
        dir.to_str().unwrap(),
    ]);
    watcher.expect_watching(pid);
    target.wake_and_check("not a trigger");
    let finished = watcher.finish();
    let stderr = finished.stderr_text();
    assert!(finished.status.success(), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(stderr.contains("no trigger fired in 2 s; done"), "{stderr}");
    assert!(finished.stdout.is_empty() && files_in(&dir).is_empty());
    assert_alive_and_well(&mut target);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn without_a_trigger_it_dumps_now_and_every_spacing() {
    let _serial = serial();
    let dir = temp_dir("timer");
    let mut target = Target::spawn(&[]);
    let pid = target.pid();
    let watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "-n",
        "2",
        "-s",
        "1",
        "--mini",
        "-o",
        dir.to_str().unwrap(),
    ]);
    let finished = watcher.finish();
    let stderr = finished.stderr_text();
    assert!(finished.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("timer (pid {pid}): dump 2 of 2 -> ")),
        "{stderr}"
    );
    let paths = dumps(&finished, &dir, pid, "timer");
    assert_eq!(paths.len(), 2);
    let gap = mtime(&paths[1]).duration_since(mtime(&paths[0])).unwrap();
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
    assert_alive_and_well(&mut target);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_exiting_target_ends_the_watch_or_is_dumped_with_on_exit() {
    let _serial = serial();
    // A threshold watch ends when the target exits, saying so.
    let dir = temp_dir("exit");
    let mut target = Target::spawn(&[]);
    let pid = target.pid();
    let mut watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "--mem",
        "1000000",
        "--poll",
        "100",
        "-o",
        dir.to_str().unwrap(),
    ]);
    watcher.expect_watching(pid);
    target.command_expect("exit", "bye");
    assert!(target.wait_exit(TIMEOUT).unwrap().success());
    let finished = watcher.finish();
    let stderr = finished.stderr_text();
    assert!(finished.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "stopped watching: pid {pid} ended; 0 of 1 dump taken"
        )),
        "{stderr}"
    );

    // --on-exit dumps it on its way out; its exit status is untouched.
    let (target, status, finished, stderr) = watch_its_exit(&dir, "--mini", |target| {
        target.command_expect("exit", "bye");
    });
    let pid = target.pid();
    assert!(status.success(), "{status:?}");
    assert!(
        stderr.contains(&format!(
            "exit: status 0 in thread {pid} (pid {pid}): dump 1 of 1 -> "
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {pid} exited with status 0")),
        "{stderr}"
    );
    let core = &dumps(&finished, &dir, pid, "exit")[0];
    let gdb = tools::gdb(&target.exe_path(), core, &["bt"]);
    assert!(gdb.contains("snapdump_test_target::main"), "{gdb}");
    std::fs::remove_file(core).unwrap();

    // exit_group from a thread that is not the main one: dumped too, that thread named, the
    // status untouched. The leader has exited by then, so its memory (and, for Triage, where
    // the arguments lie) is found through the live thread.
    let (target, status, finished, stderr) = watch_its_exit(&dir, "--triage", |target| {
        target.command_expect("exit thread", "bye from sd-exiter");
    });
    let pid = target.pid();
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert!(
        stderr.contains("exit: status 3 in thread ")
            && !stderr.contains(&format!("thread {pid} (")),
        "the exit is the sd-exiter thread's, not main's: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {pid} exited with status 3")),
        "{stderr}"
    );
    let core = &dumps(&finished, &dir, pid, "exit")[0];
    // The exiting thread comes first: gdb opens on it.
    let gdb = tools::gdb(&target.exe_path(), core, &["bt"]);
    assert!(gdb.contains("std::process::exit"), "{gdb}");
    std::fs::remove_file(core).unwrap();

    // A death by signal is dumped before it starts, every thread there, the signal recorded;
    // the target still dies of it.
    let (target, status, finished, stderr) = watch_its_exit(&dir, "--mini", |target| {
        kill(Pid::from_raw(target.pid()), Signal::SIGTERM).unwrap();
    });
    let pid = target.pid();
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
    assert!(
        stderr.contains("exit: killed by SIGTERM in thread "),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {pid} was killed by SIGTERM")),
        "{stderr}"
    );
    let core = &dumps(&finished, &dir, pid, "exit")[0];
    let gdb = tools::gdb(&target.exe_path(), core, &["info threads"]);
    assert!(
        gdb.contains("Program terminated with signal SIGTERM"),
        "{gdb}"
    );
    for tid in &target.ready().tids {
        assert!(gdb.contains(&format!("LWP {tid}")), "thread {tid}: {gdb}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Watch a fresh target with `--on-exit` and `mode` into `dir`, let `end` make it exit, and
/// return it with its exit status, the watcher's output and stderr (the watch must succeed).
fn watch_its_exit(
    dir: &Path,
    mode: &str,
    end: impl FnOnce(&mut Target),
) -> (Target, ExitStatus, Finished, String) {
    let mut target = Target::spawn(&[]);
    let pid = target.pid();
    let mut watcher = Watcher::start(&[
        "--pid",
        &pid.to_string(),
        "--on-exit",
        mode,
        "-o",
        dir.to_str().unwrap(),
    ]);
    watcher.expect_watching(pid);
    end(&mut target);
    let status = target.wait_exit(TIMEOUT).unwrap();
    let finished = watcher.finish();
    let stderr = finished.stderr_text();
    assert!(finished.status.success(), "{stderr}");
    (target, status, finished, stderr)
}

/// A copy of the test target under a name no other test uses, started by hand.
struct NamedTarget {
    child: Child,
    lines: Receiver<String>,
}

impl NamedTarget {
    fn spawn(exe: &Path) -> (NamedTarget, i32) {
        let mut child = Command::new(exe)
            .arg("--no-core")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let ready = lines.recv_timeout(TIMEOUT).expect("READY");
        assert!(ready.starts_with("READY "), "{ready}");
        let pid = child.id() as i32;
        (NamedTarget { child, lines }, pid)
    }

    fn crash(&mut self) -> ExitStatus {
        use std::io::Write;
        writeln!(self.child.stdin.as_mut().unwrap(), "crash").unwrap();
        assert_eq!(self.lines.recv_timeout(TIMEOUT).unwrap(), "crashing");
        self.child.wait().unwrap()
    }
}

impl Drop for NamedTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn wait_follows_the_next_process_of_that_name() {
    let _serial = serial();
    let dir = temp_dir("wait");
    let name = format!("sdw{}", std::process::id());
    let exe = dir.join(&name);
    std::fs::copy(snapdump_test_support::target_exe(), &exe).unwrap();
    let out = temp_dir("wait-out");
    let mut watcher = Watcher::start(&[
        "--name",
        &name,
        "--wait",
        "--on-crash",
        "-n",
        "2",
        "--poll",
        "100",
        "--mini",
        "-o",
        out.to_str().unwrap(),
    ]);
    watcher.expect(&format!("waiting for a process named {name}"));
    let mut pids = Vec::new();
    for round in 1..=2 {
        let (mut target, pid) = NamedTarget::spawn(&exe);
        watcher.expect_watching(pid);
        assert_eq!(target.crash().signal(), Some(Signal::SIGABRT as i32));
        watcher.expect(&format!("dump {round} of 2 -> "));
        watcher.expect(&format!("pid {pid} was killed by SIGABRT"));
        if round == 1 {
            watcher.expect(&format!("waiting for a process named {name}"));
        }
        pids.push(pid);
    }
    let finished = watcher.finish();
    assert!(finished.status.success(), "{}", finished.stderr_text());
    assert_eq!(finished.stdout.len(), 2);
    for (path, pid) in finished.stdout.iter().zip(&pids) {
        let file = Path::new(path).file_name().unwrap().to_str().unwrap();
        assert!(
            file.starts_with(&format!("{}_{pid}_", &name[..name.len().min(15)]))
                && file.ends_with("_crash.core"),
            "{file}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(out).unwrap();
}
