//! `snapdump-test-target`: a process with known threads, functions, globals and memory, for
//! snapdump's tests to dump and read back with gdb/lldb.
//!
//! All pattern bytes are derived at run time from the seed (see `snapdump-test-support`); only
//! the seed is printed. After start-up it prints one READY line, then answers commands read
//! from stdin, one line per command. Run with `--help` for the list.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memmap2::{Advice, MmapMut};
use snapdump_test_support as support;

/// `known_global_value(seed)`, set at start.
#[unsafe(no_mangle)]
pub static SNAPDUMP_KNOWN_GLOBAL: AtomicU64 = AtomicU64::new(0);

/// Address of the heap buffer holding `heap_pattern(seed, HEAP_LEN)`.
#[unsafe(no_mangle)]
pub static SNAPDUMP_HEAP_PTR: AtomicUsize = AtomicUsize::new(0);

/// Iterations of the spinner thread.
#[unsafe(no_mangle)]
pub static SNAPDUMP_SPIN_COUNT: AtomicU64 = AtomicU64::new(0);

/// Completed 100 ms sleeps of the sleeper thread.
#[unsafe(no_mangle)]
pub static SNAPDUMP_SLEEP_COUNT: AtomicU64 = AtomicU64::new(0);

/// Sleeps of the sleeper thread that lasted less than 100 ms (should stay 0).
#[unsafe(no_mangle)]
pub static SNAPDUMP_SHORT_SLEEP_COUNT: AtomicU64 = AtomicU64::new(0);

/// Longest gap between two consecutive ticks of the `sd-heartbeat` thread, in microseconds,
/// since start or since the last `maxgap` command (which reads and resets it).
#[unsafe(no_mangle)]
pub static SNAPDUMP_HEARTBEAT_MAX_GAP_US: AtomicU64 = AtomicU64::new(0);

/// SIGUSR1s received since `handle-usr1` installed a handler for them.
#[unsafe(no_mangle)]
pub static SNAPDUMP_USR1_COUNT: AtomicU64 = AtomicU64::new(0);

const HEAP_LEN: usize = 256 * 1024;
const SECRET_LEN: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;
const SLEEP: Duration = Duration::from_millis(100);
const HEARTBEAT_TICK: Duration = Duration::from_millis(1);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
const READY_TIMEOUT: Duration = Duration::from_secs(20);

const USAGE: &str =
    "usage: snapdump-test-target [--seed N] [--sparse-reserve-mb R --sparse-touch-pct P] \
[--touch-mb M] [--no-core] [--heartbeat] [--exec-every-ms N] [--label TEXT]
commands on stdin: ping | wake <text> | status | spawn N | grow MB | fds N | maxgap | crash
  | exit [thread] | handle-usr1 | usr1 | exec [main]
exit thread: thread sd-exiter answers `bye from sd-exiter` and ends the process with status 3
exec: answers `execing from <thread>`, then a new thread (or, with `main`, the main thread) calls
execve on /proc/self/exe with the same arguments and seed; the new image prints
`EXECED execs=<n>` and a fresh READY line (same pid, same stdin and stdout)
--exec-every-ms N: thread sd-execer execs the program again N ms after each READY, forever
handle-usr1: count SIGUSR1s instead of dying of them (thread sd-signals); `usr1` answers
`usr1 <count>`
--heartbeat: thread sd-heartbeat ticks every 1 ms; `maxgap` answers `maxgap <us>` (the longest
gap between ticks since the previous maxgap) and resets it
--label TEXT: ignored (tests put recognisable strings in the command line)";

/// Prints one line to stdout and flushes; errors (closed stdout) are ignored.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn page_size() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as usize,
        _ => 4096,
    }
}

// ---------------------------------------------------------------------------------------------
// Thread bodies: each blocks from inside a plainly named, never-inlined function.
// ---------------------------------------------------------------------------------------------

/// Thread `sd-reader`: blocks in read(2) on a pipe; reports each chunk, and its size on `ack`.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn target_blocked_in_read(mut pipe: File, ack: Sender<usize>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => {
                say("reader eof");
                return;
            }
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                say(&format!("reader got {n} bytes: {text}"));
                let _ = ack.send(n);
            }
            Err(e) => {
                say(&format!("reader error: {e}"));
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return;
                }
            }
        }
    }
}

/// Thread `sd-sleeper`: sleeps 100 ms at a time forever, counting sleeps and short sleeps.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn target_sleeping() {
    loop {
        let start = Instant::now();
        std::thread::sleep(SLEEP);
        if start.elapsed() < SLEEP {
            SNAPDUMP_SHORT_SLEEP_COUNT.fetch_add(1, Ordering::Relaxed);
        }
        SNAPDUMP_SLEEP_COUNT.fetch_add(1, Ordering::Relaxed);
    }
}

/// Wake-up generation counter shared by the main thread and the waiter.
pub struct Wakeup {
    generation: Mutex<u64>,
    cond: Condvar,
}

/// Thread `sd-waiter`: waits on a condvar (futex) for a new generation; prints `waiter woke`.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn target_waiting_on_futex(wakeup: &Wakeup, ack: Sender<()>) {
    let mut seen = 0u64;
    loop {
        let mut generation = lock(&wakeup.generation);
        while *generation == seen {
            generation = wakeup
                .cond
                .wait(generation)
                .unwrap_or_else(|e| e.into_inner());
        }
        seen = *generation;
        drop(generation);
        say("waiter woke");
        let _ = ack.send(());
    }
}

/// Thread `sd-spinner`: busy loop incrementing `SNAPDUMP_SPIN_COUNT`.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn target_spinning() {
    loop {
        std::hint::black_box(&SNAPDUMP_SPIN_COUNT).fetch_add(1, Ordering::Relaxed);
    }
}

/// Thread `sd-heartbeat` (only with `--heartbeat`): sleeps 1 ms at a time forever and records
/// the longest gap between consecutive ticks in `SNAPDUMP_HEARTBEAT_MAX_GAP_US`. A process
/// paused for a dump sees that pause as one long gap.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn target_heartbeat() {
    let mut last = Instant::now();
    loop {
        std::thread::sleep(HEARTBEAT_TICK);
        let now = Instant::now();
        let gap = u64::try_from(now.duration_since(last).as_micros()).unwrap_or(u64::MAX);
        SNAPDUMP_HEARTBEAT_MAX_GAP_US.fetch_max(gap, Ordering::Relaxed);
        last = now;
    }
}

/// Threads `sd-extra-<i>`: park forever on a condvar.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn target_extra_thread(park: &(Mutex<bool>, Condvar)) {
    let mut released = lock(&park.0);
    while !*released {
        released = park.1.wait(released).unwrap_or_else(|e| e.into_inner());
    }
}

// ---------------------------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Opts {
    seed: Option<u64>,
    sparse_reserve_mb: Option<usize>,
    sparse_touch_pct: Option<u32>,
    touch_mb: Option<usize>,
    no_core: bool,
    heartbeat: bool,
    exec_every_ms: Option<u64>,
    /// How many times this process has exec'd itself to get here (`--execs`, internal).
    execs: u64,
}

fn usage_error(msg: &str) -> ! {
    eprintln!("snapdump-test-target: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Opts {
    fn value<T: std::str::FromStr>(name: &str, v: Option<String>) -> T {
        let v = v.unwrap_or_else(|| usage_error(&format!("{name} needs a value")));
        v.parse()
            .unwrap_or_else(|_| usage_error(&format!("bad value for {name}: {v}")))
    }
    let mut o = Opts::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seed" => o.seed = Some(value(&a, args.next())),
            "--sparse-reserve-mb" => o.sparse_reserve_mb = Some(value(&a, args.next())),
            "--sparse-touch-pct" => o.sparse_touch_pct = Some(value(&a, args.next())),
            "--touch-mb" => o.touch_mb = Some(value(&a, args.next())),
            "--no-core" => o.no_core = true,
            "--heartbeat" => o.heartbeat = true,
            "--label" => {
                args.next();
            }
            "--exec-every-ms" => o.exec_every_ms = Some(value(&a, args.next())),
            "--execs" => o.execs = value(&a, args.next()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => usage_error(&format!("unknown argument {other}")),
        }
    }
    if o.sparse_touch_pct.is_some_and(|p| p > 100) {
        usage_error("--sparse-touch-pct must be 0..=100");
    }
    o
}

fn default_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id())
}

/// Waits until every thread whose comm is in `names` is in state `S`, and until `extra()`
/// holds. Polls /proc/self/task every 2 ms; exits the process after READY_TIMEOUT.
fn wait_until_blocked(names: &[&str], mut extra: impl FnMut() -> bool) {
    let pid = std::process::id() as i32;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let threads = support::thread_states(pid);
        let all_blocked = names
            .iter()
            .all(|n| threads.iter().any(|(_, comm, st)| comm == n && *st == 'S'));
        if all_blocked && extra() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("snapdump-test-target: threads did not block in time: {threads:?}");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn spawn_named<F: FnOnce() + Send + 'static>(name: &str, tids: &Sender<i32>, body: F) {
    let tids = tids.clone();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _ = tids.send(gettid());
            drop(tids);
            body();
        })
        .unwrap_or_else(|e| {
            eprintln!("snapdump-test-target: cannot spawn thread {name}: {e}");
            std::process::exit(1)
        });
}

fn recv_tid(rx: &Receiver<i32>) -> i32 {
    rx.recv_timeout(READY_TIMEOUT).unwrap_or_else(|_| {
        eprintln!("snapdump-test-target: a thread did not report its tid");
        std::process::exit(1)
    })
}

fn disable_core_dumps() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let hard = getrlimit(Resource::RLIMIT_CORE).map(|l| l.1).unwrap_or(0);
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, hard) {
        eprintln!("snapdump-test-target: setrlimit(RLIMIT_CORE): {e}");
    }
}

/// Everything the main thread keeps alive and uses to answer commands.
struct State {
    seed: u64,
    heap: Vec<u8>,
    pipe_w: File,
    reader_ack: Receiver<usize>,
    wakeup: Arc<Wakeup>,
    waiter_ack: Receiver<()>,
    extra_park: Arc<(Mutex<bool>, Condvar)>,
    extra_count: usize,
    grown: Vec<Vec<u8>>,
    fds: Vec<File>,
    heartbeat: bool,
    execs: u64,
}

fn main() {
    let opts = parse_args();
    if opts.execs > 0 {
        say(&format!("EXECED execs={}", opts.execs));
    }
    if opts.no_core {
        disable_core_dumps();
    }
    let seed = opts.seed.unwrap_or_else(default_seed);
    let page = page_size();

    SNAPDUMP_KNOWN_GLOBAL.store(support::known_global_value(seed), Ordering::SeqCst);

    // Heap buffer, filled in place.
    let mut heap = vec![0u8; HEAP_LEN];
    support::fill_heap_pattern(seed, &mut heap);
    let heap_addr = heap.as_ptr() as usize;
    SNAPDUMP_HEAP_PTR.store(heap_addr, Ordering::SeqCst);

    // Secret mapping: excluded from dumps with MADV_DONTDUMP before it is filled.
    let mut secret = MmapMut::map_anon(SECRET_LEN).unwrap_or_else(|e| {
        eprintln!("snapdump-test-target: mmap secret: {e}");
        std::process::exit(1)
    });
    if let Err(e) = secret.advise(Advice::DontDump) {
        eprintln!("snapdump-test-target: madvise(MADV_DONTDUMP): {e}");
        std::process::exit(1);
    }
    support::fill_secret_pattern(seed, &mut secret[..]);
    let secret_addr = secret.as_ptr() as usize;

    // Optional sparse reservation: touch P% of its pages, evenly spread.
    let mut extra_fields = String::new();
    let sparse = opts.sparse_reserve_mb.map(|mb| {
        let len = mb * MIB;
        let mut m = MmapMut::map_anon(len.max(1)).unwrap_or_else(|e| {
            eprintln!("snapdump-test-target: mmap sparse ({mb} MiB): {e}");
            std::process::exit(1)
        });
        let pct = opts.sparse_touch_pct.unwrap_or(0) as usize;
        let pages = len / page;
        for i in 0..pages {
            if i * pct / 100 != (i + 1) * pct / 100 {
                m[i * page] = (i as u8) | 1;
            }
        }
        extra_fields.push_str(&format!(
            " sparse_addr={:#x} sparse_len={len}",
            m.as_ptr() as usize
        ));
        m
    });

    // Optional dense buffer: every byte written with the dense pattern.
    let dense = opts.touch_mb.map(|mb| {
        let mut v = vec![0u8; mb * MIB];
        support::fill_dense_pattern(seed, &mut v);
        extra_fields.push_str(&format!(
            " dense_addr={:#x} dense_len={}",
            v.as_ptr() as usize,
            v.len()
        ));
        v
    });

    // Threads.
    let (tid_tx, tid_rx) = channel::<i32>();

    // Close-on-exec, so an image that execs itself does not pass the old pipe on.
    let (pipe_r, pipe_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap_or_else(|e| {
        eprintln!("snapdump-test-target: pipe: {e}");
        std::process::exit(1)
    });
    let (reader_ack_tx, reader_ack) = channel();
    let pipe_r = File::from(pipe_r);
    spawn_named("sd-reader", &tid_tx, move || {
        target_blocked_in_read(pipe_r, reader_ack_tx)
    });
    let reader_tid = recv_tid(&tid_rx);

    spawn_named("sd-sleeper", &tid_tx, target_sleeping);
    let sleeper_tid = recv_tid(&tid_rx);

    let wakeup = Arc::new(Wakeup {
        generation: Mutex::new(0),
        cond: Condvar::new(),
    });
    let (waiter_ack_tx, waiter_ack) = channel();
    let w = Arc::clone(&wakeup);
    spawn_named("sd-waiter", &tid_tx, move || {
        target_waiting_on_futex(&w, waiter_ack_tx)
    });
    let waiter_tid = recv_tid(&tid_rx);

    let spins_before = SNAPDUMP_SPIN_COUNT.load(Ordering::Relaxed);
    spawn_named("sd-spinner", &tid_tx, target_spinning);
    let spinner_tid = recv_tid(&tid_rx);

    // The heartbeat is not one of the threads READY waits for, and its tid is not listed.
    if opts.heartbeat {
        spawn_named("sd-heartbeat", &tid_tx, target_heartbeat);
        recv_tid(&tid_rx);
    }

    wait_until_blocked(&["sd-reader", "sd-sleeper", "sd-waiter"], || {
        SNAPDUMP_SPIN_COUNT.load(Ordering::Relaxed) != spins_before
    });

    // Started after the threads above blocked, so it execs a fully started image; it prints
    // nothing before READY is out (it sleeps first).
    if let Some(ms) = opts.exec_every_ms {
        let execs = opts.execs;
        spawn_named("sd-execer", &tid_tx, move || {
            std::thread::sleep(Duration::from_millis(ms));
            say(&exec_self(seed, execs));
        });
        recv_tid(&tid_rx);
    }

    say(&format!(
        "READY pid={} seed={seed} global_addr={:#x} heap_addr={heap_addr:#x} heap_len={HEAP_LEN} \
         secret_addr={secret_addr:#x} secret_len={SECRET_LEN} tids={reader_tid},{sleeper_tid},\
         {waiter_tid},{spinner_tid}{extra_fields}",
        std::process::id(),
        &SNAPDUMP_KNOWN_GLOBAL as *const AtomicU64 as usize,
    ));

    let mut state = State {
        seed,
        heap,
        pipe_w: File::from(pipe_w),
        reader_ack,
        wakeup,
        waiter_ack,
        extra_park: Arc::new((Mutex::new(false), Condvar::new())),
        extra_count: 0,
        grown: Vec::new(),
        fds: Vec::new(),
        heartbeat: opts.heartbeat,
        execs: opts.execs,
    };

    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(answer) = command(&mut state, &tid_tx, &tid_rx, line) {
            say(&answer);
        }
    }
    // EOF on stdin. The mappings stay alive until here.
    drop((secret, sparse, dense, state));
    std::process::exit(0);
}

fn parse_count(arg: &str) -> Result<usize, String> {
    arg.trim()
        .parse()
        .map_err(|_| format!("error: bad number {:?}", arg.trim()))
}

/// Runs one command; returns the answer line (None when the command prints its own).
fn command(
    st: &mut State,
    tid_tx: &Sender<i32>,
    tid_rx: &Receiver<i32>,
    line: &str,
) -> Option<String> {
    let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
    let answer = match cmd {
        "ping" => "pong".to_string(),
        "wake" => wake(st, arg),
        "status" => {
            let heap_ok = support::heap_pattern_matches(st.seed, &st.heap)
                && SNAPDUMP_HEAP_PTR.load(Ordering::Relaxed) == st.heap.as_ptr() as usize;
            format!(
                "status spins={} sleeps={} short_sleeps={} global={:#x} heap_ok={heap_ok}",
                SNAPDUMP_SPIN_COUNT.load(Ordering::Relaxed),
                SNAPDUMP_SLEEP_COUNT.load(Ordering::Relaxed),
                SNAPDUMP_SHORT_SLEEP_COUNT.load(Ordering::Relaxed),
                SNAPDUMP_KNOWN_GLOBAL.load(Ordering::Relaxed),
            )
        }
        "spawn" => match parse_count(arg) {
            Ok(n) => spawn_extra(st, tid_tx, tid_rx, n),
            Err(e) => e,
        },
        "grow" => match parse_count(arg) {
            Ok(mb) => {
                let mut v = vec![0u8; mb * MIB];
                let page = page_size();
                for (i, b) in v.iter_mut().step_by(page).enumerate() {
                    *b = (i as u8) | 1;
                }
                st.grown.push(v);
                format!("grew {mb}")
            }
            Err(e) => e,
        },
        "fds" => match parse_count(arg) {
            Ok(n) => {
                let mut err = None;
                for _ in 0..n {
                    match File::open("/dev/null") {
                        Ok(f) => st.fds.push(f),
                        Err(e) => {
                            err = Some(format!("error: open /dev/null: {e}"));
                            break;
                        }
                    }
                }
                err.unwrap_or_else(|| format!("fds {n}"))
            }
            Err(e) => e,
        },
        "maxgap" if st.heartbeat => format!(
            "maxgap {}",
            SNAPDUMP_HEARTBEAT_MAX_GAP_US.swap(0, Ordering::Relaxed)
        ),
        "maxgap" => "error: maxgap needs --heartbeat".to_string(),
        "handle-usr1" => handle_usr1(),
        "usr1" => format!("usr1 {}", SNAPDUMP_USR1_COUNT.load(Ordering::SeqCst)),
        "exec" if arg.is_empty() => {
            let (seed, execs) = (st.seed, st.execs);
            let spawned = std::thread::Builder::new()
                .name("sd-execer".to_string())
                .spawn(move || {
                    say("execing from sd-execer");
                    say(&exec_self(seed, execs));
                });
            match spawned {
                // The new image answers (EXECED, READY).
                Ok(_) => return None,
                Err(e) => format!("error: cannot spawn sd-execer: {e}"),
            }
        }
        "exec" if arg == "main" => {
            say("execing from main");
            exec_self(st.seed, st.execs)
        }
        "exec" => format!("error: exec takes no argument or `main`, not {arg:?}"),
        "crash" => {
            say("crashing");
            std::process::abort();
        }
        "segv" => "error: segv is not supported (it would need unsafe code)".to_string(),
        "exit" if arg.is_empty() => {
            say("bye");
            std::process::exit(0);
        }
        // exit_group from a thread that is not the main one, with status 3.
        "exit" if arg == "thread" => {
            let spawned = std::thread::Builder::new()
                .name("sd-exiter".to_string())
                .spawn(|| {
                    say("bye from sd-exiter");
                    std::process::exit(3);
                });
            match spawned {
                Ok(_) => return None,
                Err(e) => format!("error: cannot spawn sd-exiter: {e}"),
            }
        }
        "exit" => format!("error: exit takes no argument or `thread`, not {arg:?}"),
        other => format!("error: unknown command {other:?}"),
    };
    Some(answer)
}

/// Replace this process with a new image of the same program (`/proc/self/exe`), with the same
/// arguments and seed and one more exec counted. It returns only if execve failed: the error.
/// Whatever was read from stdin and not yet handled is lost; the test waits for the new READY
/// before it sends more.
fn exec_self(seed: u64, execs: u64) -> String {
    use std::ffi::CString;
    let mut argv = Vec::new();
    let mut args = std::env::args();
    argv.extend(args.next());
    while let Some(a) = args.next() {
        if a == "--seed" || a == "--execs" {
            args.next();
        } else {
            argv.push(a);
        }
    }
    argv.extend([
        "--seed".to_string(),
        seed.to_string(),
        "--execs".to_string(),
        (execs + 1).to_string(),
    ]);
    let argv: Vec<CString> = match argv.into_iter().map(CString::new).collect() {
        Ok(argv) => argv,
        Err(e) => return format!("error: argument with a NUL byte: {e}"),
    };
    match nix::unistd::execv(c"/proc/self/exe", &argv) {
        Err(e) => format!("error: execv /proc/self/exe: {e}"),
        Ok(never) => match never {},
    }
}

/// `handle-usr1`: SIGUSR1 no longer kills the process; thread `sd-signals` counts them in
/// `SNAPDUMP_USR1_COUNT`.
fn handle_usr1() -> String {
    let mut signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1]) {
        Ok(signals) => signals,
        Err(e) => return format!("error: cannot handle SIGUSR1: {e}"),
    };
    let spawned = std::thread::Builder::new()
        .name("sd-signals".to_string())
        .spawn(move || {
            for _ in signals.forever() {
                SNAPDUMP_USR1_COUNT.fetch_add(1, Ordering::SeqCst);
            }
        });
    match spawned {
        Ok(_) => "handling usr1".to_string(),
        Err(e) => format!("error: cannot spawn sd-signals: {e}"),
    }
}

/// `wake <text>`: feeds the reader, then wakes the waiter, in that order.
fn wake(st: &mut State, text: &str) -> String {
    if text.is_empty() {
        return "error: wake needs a text".to_string();
    }
    if let Err(e) = st.pipe_w.write_all(text.as_bytes()) {
        return format!("error: write to reader pipe: {e}");
    }
    let mut got = 0;
    while got < text.len() {
        match st.reader_ack.recv_timeout(ANSWER_TIMEOUT) {
            Ok(n) => got += n,
            Err(RecvTimeoutError::Timeout) => return "error: reader did not answer".to_string(),
            Err(RecvTimeoutError::Disconnected) => return "error: reader is gone".to_string(),
        }
    }
    *lock(&st.wakeup.generation) += 1;
    st.wakeup.cond.notify_all();
    match st.waiter_ack.recv_timeout(ANSWER_TIMEOUT) {
        Ok(()) => "woke".to_string(),
        Err(RecvTimeoutError::Timeout) => "error: waiter did not answer".to_string(),
        Err(RecvTimeoutError::Disconnected) => "error: waiter is gone".to_string(),
    }
}

/// `spawn N`: N more threads `sd-extra-<i>`, answered once all are blocked.
fn spawn_extra(st: &mut State, tid_tx: &Sender<i32>, tid_rx: &Receiver<i32>, n: usize) -> String {
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let name = format!("sd-extra-{}", st.extra_count);
        st.extra_count += 1;
        let park = Arc::clone(&st.extra_park);
        spawn_named(&name, tid_tx, move || target_extra_thread(&park));
        recv_tid(tid_rx);
        names.push(name);
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_until_blocked(&names, || true);
    format!("spawned {n}")
}
