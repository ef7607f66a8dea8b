//! Shared test helpers for snapdump.
//!
//! * Seeded generators for the bytes the test target puts in memory
//!   ([`known_global_value`], [`heap_pattern`], [`secret_pattern`], ...). The target and the
//!   tests compute the same bytes from the seed printed in the READY line, so the bytes never
//!   appear in the target binary or in its output.
//! * [`Target`]: spawns `snapdump-test-target`, waits for its READY line and drives it over
//!   stdin/stdout; killed and reaped on drop.
//! * `/proc` helpers: [`proc_state`], [`tracer_pid`], [`thread_states`], [`children_of`],
//!   [`zombies_of`], [`assert_running_untraced`], [`parse_stat`].
//! * [`find_subsequence`]: fast byte search for dump files.
//! * [`tools`]: gdb, lldb and minidump-stackwalk in batch mode.

#![forbid(unsafe_code)]

pub mod tools;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// One step of the SplitMix64 generator.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// Stream selectors: each generator starts from `seed ^ STREAM_x` so the streams are distinct.
const STREAM_GLOBAL: u64 = 0x0000_0000_0000_0000;
const STREAM_HEAP: u64 = 0x4845_4150_0000_0001;
const STREAM_SECRET: u64 = 0x5345_4352_0000_0002;
const STREAM_DENSE: u64 = 0x4445_4E53_0000_0003;

/// The value the target stores in `SNAPDUMP_KNOWN_GLOBAL`: never 0 (it is odd).
pub fn known_global_value(seed: u64) -> u64 {
    let mut s = seed ^ STREAM_GLOBAL;
    splitmix64(&mut s) | 1
}

fn fill_stream(mut state: u64, buf: &mut [u8]) {
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let v = splitmix64(&mut state).to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&v[..n]);
    }
}

fn stream_matches(mut state: u64, buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(8);
    for c in &mut chunks {
        if c != splitmix64(&mut state).to_le_bytes() {
            return false;
        }
    }
    let rest = chunks.remainder();
    rest.is_empty() || rest == &splitmix64(&mut state).to_le_bytes()[..rest.len()]
}

/// Fills `buf` with the heap pattern for `seed` (in place: no other copy is made).
pub fn fill_heap_pattern(seed: u64, buf: &mut [u8]) {
    fill_stream(seed ^ STREAM_HEAP, buf)
}

/// The heap pattern: `len` random-looking bytes derived from `seed`.
pub fn heap_pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_heap_pattern(seed, &mut v);
    v
}

/// Whether `buf` equals `heap_pattern(seed, buf.len())`, without allocating a copy.
pub fn heap_pattern_matches(seed: u64, buf: &[u8]) -> bool {
    stream_matches(seed ^ STREAM_HEAP, buf)
}

/// Fills `buf` with the secret pattern for `seed` (in place: no other copy is made).
pub fn fill_secret_pattern(seed: u64, buf: &mut [u8]) {
    fill_stream(seed ^ STREAM_SECRET, buf)
}

/// The secret pattern (the bytes of the MADV_DONTDUMP mapping): distinct from the heap stream.
pub fn secret_pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_secret_pattern(seed, &mut v);
    v
}

/// Fills `buf` with the dense pattern (used by `--touch-mb`): a third stream.
pub fn fill_dense_pattern(seed: u64, buf: &mut [u8]) {
    fill_stream(seed ^ STREAM_DENSE, buf)
}

/// The dense pattern (the bytes of the `--touch-mb` buffer).
pub fn dense_pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_dense_pattern(seed, &mut v);
    v
}

/// First index of `needle` in `haystack` (memchr's memmem; fine for 100 MiB+ inputs).
pub fn find_subsequence(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// Number of (possibly overlapping) occurrences of `needle` in `haystack`.
pub fn count_subsequence(haystack: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(haystack, needle).count()
}

// ---------------------------------------------------------------------------------------------
// /proc helpers
// ---------------------------------------------------------------------------------------------

/// Parses the start of a `/proc/PID/stat` or `/proc/PID/task/TID/stat` line into
/// `(pid, comm, state)`. The comm may contain anything (spaces, parentheses), so it is taken
/// between the first `(` and the LAST `)`.
pub fn parse_stat(content: &str) -> Option<(i32, String, char)> {
    let open = content.find('(')?;
    let close = content.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = content[..open].trim().parse().ok()?;
    let comm = content[open + 1..close].to_string();
    let state = content[close + 1..].trim_start().chars().next()?;
    Some((pid, comm, state))
}

fn read_stat(path: &Path) -> Option<(i32, String, char)> {
    parse_stat(&fs::read_to_string(path).ok()?)
}

/// State letter (`R`, `S`, `D`, `t`, `T`, `Z`, ...) of a process, from `/proc/PID/stat`.
/// Panics if the process does not exist.
pub fn proc_state(pid: i32) -> char {
    let path = format!("/proc/{pid}/stat");
    match read_stat(Path::new(&path)) {
        Some((_, _, s)) => s,
        None => panic!("cannot read or parse {path}"),
    }
}

/// `TracerPid` from `/proc/PID/status` (0 when not traced). Panics if unreadable.
pub fn tracer_pid(pid: i32) -> i32 {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no TracerPid in {path}"))
}

/// All threads of `pid` as `(tid, comm, state)`, sorted by tid. Threads that exit while the
/// table is read are left out. Empty if the process does not exist.
pub fn thread_states(pid: i32) -> Vec<(i32, String, char)> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        if let Some(t) = read_stat(&entry.path().join("stat")) {
            out.push(t);
        }
    }
    out.sort_by_key(|t| t.0);
    out
}

/// Child processes of `pid`, from `/proc/PID/task/*/children`, sorted and deduplicated.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            if let Ok(text) = fs::read_to_string(entry.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|s| s.parse::<i32>().ok()),
                );
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Zombie processes whose parent is `parent` (state `Z`, ppid `parent` in `/proc/*/stat`),
/// sorted. [`children_of`] covers live children; this also catches a zombie of a thread that
/// has since exited or exec'd.
pub fn zombies_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(text) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = text.rfind(')') else {
            continue;
        };
        let mut fields = text[close + 1..].split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
        if state == Some("Z") && ppid == Some(parent) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

fn format_thread_table(threads: &[(i32, String, char)]) -> String {
    let mut s = String::new();
    for (tid, comm, state) in threads {
        s.push_str(&format!("  {tid:>8} {state} {comm}\n"));
    }
    s
}

/// The first non-zero `TracerPid` among `pid`'s threads (0 when none is traced). A thread's
/// own status file tells: the leader's says nothing of the others (a leader that called
/// `pthread_exit` is never traced).
pub fn any_thread_tracer(pid: i32) -> i32 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|entry| fs::read_to_string(entry.path().join("status")).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse::<i32>().ok())
        })
        .find(|&tracer| tracer != 0)
        .unwrap_or(0)
}

/// Asserts that no thread of `pid` is ptrace-attached (TracerPid 0) and that none is stopped
/// (`t`/`T`). A thread may be caught mid-transition, so this re-checks every 10 ms for at most
/// 2 s before panicking with the thread table.
pub fn assert_running_untraced(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let tracer = tracer_pid(pid).max(any_thread_tracer(pid));
        let threads = thread_states(pid);
        let stopped = threads.iter().any(|t| t.2 == 't' || t.2 == 'T');
        if tracer == 0 && !stopped && !threads.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "process {pid} is not running untraced: TracerPid={tracer}, threads:\n{}",
                format_thread_table(&threads)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// The target process
// ---------------------------------------------------------------------------------------------

/// Default timeout for READY and for command answers.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The parsed READY line of the test target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub pid: i32,
    pub seed: u64,
    /// Address of `SNAPDUMP_KNOWN_GLOBAL`.
    pub global_addr: u64,
    /// Heap buffer holding `heap_pattern(seed, heap_len)`.
    pub heap_addr: u64,
    pub heap_len: usize,
    /// MADV_DONTDUMP mapping holding `secret_pattern(seed, secret_len)`.
    pub secret_addr: u64,
    pub secret_len: usize,
    /// Thread ids of sd-reader, sd-sleeper, sd-waiter, sd-spinner (in that order).
    pub tids: Vec<i32>,
    /// `--sparse-reserve-mb` mapping, when given.
    pub sparse_addr: Option<u64>,
    pub sparse_len: Option<u64>,
    /// `--touch-mb` buffer (holding `dense_pattern(seed, dense_len)`), when given.
    pub dense_addr: Option<u64>,
    pub dense_len: Option<u64>,
    /// The READY line as printed.
    pub line: String,
}

fn parse_num(v: &str) -> Option<u64> {
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

impl Ready {
    /// Parses `READY pid=.. seed=.. ...`. Unknown fields are ignored.
    pub fn parse(line: &str) -> Option<Ready> {
        let rest = line.trim().strip_prefix("READY ")?;
        let mut r = Ready {
            pid: 0,
            seed: 0,
            global_addr: 0,
            heap_addr: 0,
            heap_len: 0,
            secret_addr: 0,
            secret_len: 0,
            tids: Vec::new(),
            sparse_addr: None,
            sparse_len: None,
            dense_addr: None,
            dense_len: None,
            line: line.trim().to_string(),
        };
        let mut have_pid = false;
        let mut have_seed = false;
        for field in rest.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            match k {
                "pid" => {
                    r.pid = v.parse().ok()?;
                    have_pid = true;
                }
                "seed" => {
                    r.seed = v.parse().ok()?;
                    have_seed = true;
                }
                "global_addr" => r.global_addr = parse_num(v)?,
                "heap_addr" => r.heap_addr = parse_num(v)?,
                "heap_len" => r.heap_len = parse_num(v)? as usize,
                "secret_addr" => r.secret_addr = parse_num(v)?,
                "secret_len" => r.secret_len = parse_num(v)? as usize,
                "tids" => {
                    r.tids = v
                        .split(',')
                        .map(|t| t.parse().ok())
                        .collect::<Option<Vec<i32>>>()?
                }
                "sparse_addr" => r.sparse_addr = Some(parse_num(v)?),
                "sparse_len" => r.sparse_len = Some(parse_num(v)?),
                "dense_addr" => r.dense_addr = Some(parse_num(v)?),
                "dense_len" => r.dense_len = Some(parse_num(v)?),
                _ => {}
            }
        }
        (have_pid && have_seed).then_some(r)
    }

    /// `known_global_value(seed)`.
    pub fn known_global(&self) -> u64 {
        known_global_value(self.seed)
    }

    /// `heap_pattern(seed, heap_len)`.
    pub fn heap_bytes(&self) -> Vec<u8> {
        heap_pattern(self.seed, self.heap_len)
    }

    /// `secret_pattern(seed, secret_len)`.
    pub fn secret_bytes(&self) -> Vec<u8> {
        secret_pattern(self.seed, self.secret_len)
    }
}

/// The parsed answer to `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub spins: u64,
    pub sleeps: u64,
    pub short_sleeps: u64,
    pub global: u64,
    pub heap_ok: bool,
}

impl Status {
    /// Parses `status spins=.. sleeps=.. short_sleeps=.. global=0x.. heap_ok=..`.
    pub fn parse(line: &str) -> Option<Status> {
        let rest = line.trim().strip_prefix("status ")?;
        let (mut spins, mut sleeps, mut short, mut global, mut heap_ok) =
            (None, None, None, None, None);
        for field in rest.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            match k {
                "spins" => spins = parse_num(v),
                "sleeps" => sleeps = parse_num(v),
                "short_sleeps" => short = parse_num(v),
                "global" => global = parse_num(v),
                "heap_ok" => heap_ok = v.parse().ok(),
                _ => {}
            }
        }
        Some(Status {
            spins: spins?,
            sleeps: sleeps?,
            short_sleeps: short?,
            global: global?,
            heap_ok: heap_ok?,
        })
    }
}

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => workspace_dir().join(d), // join keeps absolute paths as they are
        None => workspace_dir().join("target"),
    }
}

/// Path of the target binary: `$SNAPDUMP_TEST_TARGET` if set; else `<target dir>/debug/
/// snapdump-test-target` after running `cargo build -q -p snapdump-test-target` once per test
/// process (a no-op when up to date; it keeps the binary from being stale). If cargo cannot be
/// run but the binary exists, the existing binary is used.
pub fn target_exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        if let Some(p) = std::env::var_os("SNAPDUMP_TEST_TARGET") {
            return PathBuf::from(p);
        }
        let exe = target_dir().join("debug/snapdump-test-target");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        match Command::new(cargo)
            .args(["build", "-q", "-p", "snapdump-test-target"])
            .current_dir(workspace_dir())
            .status()
        {
            Ok(status) => assert!(
                status.success(),
                "cargo build -p snapdump-test-target failed: {status}"
            ),
            Err(e) => assert!(
                exe.exists(),
                "cannot run cargo build -p snapdump-test-target ({e}) and {} is missing",
                exe.display()
            ),
        }
        assert!(exe.exists(), "{} missing after build", exe.display());
        exe.canonicalize().unwrap_or(exe)
    })
    .clone()
}

/// A running `snapdump-test-target`, SIGKILLed and reaped on drop.
pub struct Target {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    ready: Ready,
    exe: PathBuf,
}

impl Target {
    /// Spawns the target with `args` and waits (at most 30 s) for its READY line.
    pub fn spawn(args: &[&str]) -> Target {
        Target::spawn_with_env(args, &[])
    }

    /// [`Target::spawn`] with `env` added to the inherited environment.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Target {
        let exe = target_exe();
        let mut child = Command::new(&exe)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", exe.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("target-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn stdout reader thread");
        let mut t = Target {
            child,
            stdin,
            lines: rx,
            ready: Ready::parse("READY pid=0 seed=0").expect("placeholder"),
            exe,
        };
        let deadline = Instant::now() + TIMEOUT;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match t.lines.recv_timeout(left) {
                Ok(line) => {
                    if line.starts_with("READY ") {
                        let ready = Ready::parse(&line)
                            .unwrap_or_else(|| panic!("cannot parse READY line: {line}"));
                        assert_eq!(
                            ready.pid,
                            t.child.id() as i32,
                            "READY pid differs from the spawned child's pid"
                        );
                        t.ready = ready;
                        return t;
                    }
                    before.push(line);
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("target {args:?}: no READY line within {TIMEOUT:?}; output: {before:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let st = t.child.try_wait().ok().flatten();
                    panic!(
                        "target {args:?} closed stdout before READY (exit: {st:?}); output: {before:?}"
                    )
                }
            }
        }
    }

    /// The parsed READY line.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    pub fn pid(&self) -> i32 {
        self.ready.pid
    }

    /// The target binary that was run.
    pub fn exe_path(&self) -> PathBuf {
        self.exe.clone()
    }

    /// Sends one command line without waiting for an answer.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("target stdin already closed");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("cannot send {line:?} to target: {e}"));
    }

    /// Closes the target's stdin (the target exits 0 on EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Next stdout line, waiting at most `timeout`; `None` on timeout or when stdout closed.
    pub fn next_line_timeout(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Next stdout line (30 s timeout); panics on timeout or EOF.
    pub fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => panic!(
                "target {}: no output line within {TIMEOUT:?} (state {:?})",
                self.pid(),
                self.state_or_gone()
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "target {}: stdout closed (exit: {:?})",
                self.pid(),
                self.child.try_wait().ok().flatten()
            ),
        }
    }

    fn state_or_gone(&self) -> String {
        match read_stat(Path::new(&format!("/proc/{}/stat", self.pid()))) {
            Some((_, _, s)) => s.to_string(),
            None => "gone".into(),
        }
    }

    /// Sends `line` and returns the next stdout line (30 s timeout, panics on timeout).
    pub fn command(&mut self, line: &str) -> String {
        self.send(line);
        self.next_line()
    }

    /// Reads the next line and asserts it starts with `prefix`; returns it.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let l = self.next_line();
        assert!(
            l.starts_with(prefix),
            "target {}: expected a line starting with {prefix:?}, got {l:?}",
            self.pid()
        );
        l
    }

    /// Sends `command` and asserts the answer starts with `prefix`; returns it.
    pub fn command_expect(&mut self, command: &str, prefix: &str) -> String {
        self.send(command);
        self.expect_line(prefix)
    }

    /// `ping` → `pong`.
    pub fn ping(&mut self) {
        self.command_expect("ping", "pong");
    }

    /// Sends `wake <text>` and asserts the sequence `reader got N bytes: <text>`,
    /// `waiter woke`, `woke`. `text` must be non-empty, one line, at most 4096 bytes.
    pub fn wake_and_check(&mut self, text: &str) {
        assert!(!text.is_empty() && text.len() <= 4096 && !text.contains('\n'));
        self.send(&format!("wake {text}"));
        let want = format!("reader got {} bytes: {text}", text.len());
        let got = self.next_line();
        assert_eq!(got, want, "wake: reader line");
        let got = self.next_line();
        assert_eq!(got, "waiter woke", "wake: waiter line");
        let got = self.next_line();
        assert_eq!(got, "woke", "wake: final answer");
    }

    /// `status`, parsed.
    pub fn status(&mut self) -> Status {
        let l = self.command("status");
        Status::parse(&l).unwrap_or_else(|| panic!("cannot parse status line: {l:?}"))
    }

    /// Waits at most `timeout` for the target to exit (reaping it); `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The underlying child process.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_deterministic() {
        assert_eq!(heap_pattern(42, 1000), heap_pattern(42, 1000));
        assert_eq!(secret_pattern(42, 1000), secret_pattern(42, 1000));
        assert_eq!(dense_pattern(42, 1000), dense_pattern(42, 1000));
        assert_eq!(known_global_value(42), known_global_value(42));
        let mut a = 7;
        let mut b = 7;
        assert_eq!(splitmix64(&mut a), splitmix64(&mut b));
        assert_eq!(a, b);
    }

    #[test]
    fn generators_depend_on_seed_and_are_distinct_streams() {
        assert_ne!(heap_pattern(1, 64), heap_pattern(2, 64));
        assert_ne!(heap_pattern(1, 64), secret_pattern(1, 64));
        assert_ne!(heap_pattern(1, 64), dense_pattern(1, 64));
        assert_ne!(secret_pattern(1, 64), dense_pattern(1, 64));
        assert_ne!(known_global_value(1), known_global_value(2));
        let heap = heap_pattern(1, 1 << 16);
        let secret = secret_pattern(1, 1 << 16);
        assert_eq!(find_subsequence(&heap, &secret[..16]), None);
        assert_eq!(find_subsequence(&secret, &heap[..16]), None);
        let g = known_global_value(1).to_le_bytes();
        assert_eq!(find_subsequence(&heap, &g), None);
    }

    #[test]
    fn generators_properties() {
        for seed in [0, 1, u64::MAX, 0xdead_beef] {
            let g = known_global_value(seed);
            assert_ne!(g, 0);
            assert_eq!(g & 1, 1);
            let h = heap_pattern(seed, 4096);
            let zeros = h.iter().filter(|&&b| b == 0).count();
            assert!(zeros < 64, "too many zero bytes: {zeros}");
            // Prefix property: shorter patterns are prefixes of longer ones.
            assert_eq!(&heap_pattern(seed, 4101)[..4096], &h[..]);
            assert_eq!(heap_pattern(seed, 13), h[..13].to_vec());
            assert!(heap_pattern_matches(seed, &h));
            assert!(heap_pattern_matches(seed, &h[..13]));
            let mut bad = h.clone();
            bad[4000] ^= 1;
            assert!(!heap_pattern_matches(seed, &bad));
            assert!(!heap_pattern_matches(seed ^ 1, &h));
        }
    }

    #[test]
    fn find_subsequence_works() {
        assert_eq!(find_subsequence(b"hello world", b"world"), Some(6));
        assert_eq!(find_subsequence(b"hello world", b"xyz"), None);
        assert_eq!(count_subsequence(b"aaaa", b"aa"), 2);
    }

    #[test]
    fn parse_stat_plain_and_hostile() {
        assert_eq!(
            parse_stat("1234 (sd-reader) S 1 2 3 4"),
            Some((1234, "sd-reader".to_string(), 'S'))
        );
        assert_eq!(
            parse_stat("77 (a) b (c) t 1 2 3 4\n"),
            Some((77, "a) b (c".to_string(), 't'))
        );
        assert_eq!(parse_stat("5 ()) R 0"), Some((5, ")".to_string(), 'R')));
        assert_eq!(
            parse_stat("5 ( spaced  name ) D 0").unwrap().1,
            " spaced  name "
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("x (a) S"), None);
        assert_eq!(parse_stat("1 (a)"), None);
    }

    #[test]
    fn parse_ready_and_status() {
        let r = Ready::parse(
            "READY pid=10 seed=99 global_addr=0x1000 heap_addr=0x2000 heap_len=262144 \
             secret_addr=0x3000 secret_len=65536 tids=11,12,13,14 sparse_addr=0x4000 sparse_len=1048576",
        )
        .unwrap();
        assert_eq!(r.pid, 10);
        assert_eq!(r.seed, 99);
        assert_eq!(r.global_addr, 0x1000);
        assert_eq!(r.heap_addr, 0x2000);
        assert_eq!(r.heap_len, 262144);
        assert_eq!(r.secret_addr, 0x3000);
        assert_eq!(r.secret_len, 65536);
        assert_eq!(r.tids, vec![11, 12, 13, 14]);
        assert_eq!(r.sparse_addr, Some(0x4000));
        assert_eq!(r.sparse_len, Some(1048576));
        assert_eq!(r.dense_addr, None);
        assert!(Ready::parse("pong").is_none());
        let s = Status::parse("status spins=5 sleeps=3 short_sleeps=0 global=0xff heap_ok=true")
            .unwrap();
        assert_eq!(
            s,
            Status {
                spins: 5,
                sleeps: 3,
                short_sleeps: 0,
                global: 0xff,
                heap_ok: true
            }
        );
    }

    #[test]
    fn proc_helpers_on_self() {
        let me = std::process::id() as i32;
        assert!(matches!(proc_state(me), 'R' | 'S' | 'D'));
        let threads = thread_states(me);
        assert!(threads.iter().any(|t| t.0 == me));
        let _ = tracer_pid(me);
        let child = Command::new("sleep").arg("10").spawn().unwrap();
        let cpid = child.id() as i32;
        let mut child = child;
        let found = children_of(me).contains(&cpid);
        child.kill().unwrap();
        child.wait().unwrap();
        let has_children_file = Path::new(&format!("/proc/{me}/task/{me}/children")).exists();
        assert!(found || !has_children_file, "child {cpid} not listed");
    }
}
