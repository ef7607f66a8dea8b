//! Snapshots: a copy-on-write clone of the stopped target, so the target pauses for the clone
//! (≈ milliseconds per GiB: the page tables are copied, not the memory) instead of for the
//! whole dump. The Linux analogue of Windows' `PssCaptureSnapshot`.
//!
//! # How
//! With every thread stopped ([`StoppedProcess`]) and its registers captured ([`Capture`]):
//! 1. One thread is chosen: not on its way to a signal, not in a group stop, a 64-bit thread,
//!    not inside an rseq critical section; preferably not in a system call at all, and
//!    preferably not in one that restarts through `restart_block` (nanosleep).
//! 2. A `syscall` instruction that already exists is found (the vDSO has one); nothing is
//!    written into the target.
//! 3. The thread's seccomp filters are read and run on the exact call (a filter could kill the
//!    process on an unexpected `clone()`), and it must not use syscall user dispatch; no
//!    mapping may be registered with a userfaultfd (a fork may wait for its monitor, which is
//!    stopped).
//! 4. The thread runs `clone(CLONE_FILES | exit signal 0)` through that instruction (see
//!    [`borrow`] for the register and signal discipline). No `CLONE_VM`: the child is a
//!    copy-on-write image of the whole address space. `CLONE_FILES` shares the descriptor table
//!    instead of duplicating every reference: the copy is cheaper, and a file the target
//!    closes while the snapshot lives is really closed (a peer sees EOF). Exit signal 0: the
//!    target gets no SIGCHLD. With `PTRACE_O_TRACECLONE` the child is attached to us and stops
//!    before it executes a single instruction; `PTRACE_O_EXITKILL` is set on the child alone,
//!    and its `oom_score_adj` is 1000 so memory pressure kills it, not the target.
//! 5. The thread is restored from a signal-path stop, so whatever system call it was in
//!    restarts as it should when the target is resumed.
//! 6. Regions a fork child cannot see (MADV_DONTFORK `dc`, MADV_WIPEONFORK `wf`) are copied
//!    from the target now, touched pages only ([`live_only_ranges`]).
//!
//! The caller then resumes the target and reads the child through [`Snapshot::memory`]
//! (`pread` on `/proc/CHILD/mem`: `process_vm_readv` pins pages, which since Linux 5.19 copies
//! the child's shared anonymous pages). Shared mappings are not frozen: the child maps the same
//! objects, so their contents are live.
//!
//! # The zombie
//! The child's real parent is the target. With exit signal 0 the kernel neither signals nor
//! auto-reaps it: once we (its tracer) reap it, it stays a zombie child of the target, which
//! only `wait*(…, __WALL or __WCLONE)` can reap — most programs never do, so it would stay until
//! the target exits. (`CLONE_PARENT` only moves the zombie, and a SIGCHLD, to the target's
//! parent.) [`Snapshot::finish`] therefore seizes one thread of the target for a moment and
//! runs `wait4(child, NULL, __WALL | WNOHANG, NULL)` through the same kind of injection (tens of
//! microseconds, one thread). The target is left with no zombie, no SIGCHLD and the same
//! registers.
//!
//! # If the dumper dies
//! The kernel detaches every tracee. Before the clone and after it, that is harmless: the
//! target's threads run on and the child, with EXITKILL, is killed (its zombie then stays with
//! the target until it exits — nothing can reap it without the dumper). The dangerous window
//! is while the borrowed thread points at the injected call: if the dumper dies then, the
//! thread runs `clone()` for real and returns into the vDSO with the wrong registers, and a
//! child created before EXITKILL is set would run free. The window is kept as short as it can
//! be: the registers are set immediately before `PTRACE_SYSCALL`, EXITKILL is set at the clone
//! event (before the parent's syscall returns) and the registers are put back at the first
//! signal-path stop after the exit. It lasts the `clone()` itself (the page-table copy: tens of
//! milliseconds per GiB) plus a handful of ptrace round trips (≈ 50 µs); the dumper checks no
//! cancellation inside it. Only SIGKILL or a crash of the dumper can hit it.
//!
//! # Threads
//! The tracer of a ptraced task is a *thread*: a [`Snapshot`] must be used and finished on the
//! thread that stopped the target (it is `!Send`), and if that thread exits the child dies
//! (EXITKILL). Its [`SnapshotMemory`] may be read from any thread.

mod borrow;
pub mod guard;
pub mod memory;
mod seccomp;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::ptrace::{Event, Options};

use crate::capture::{Capture, reg};
use crate::error::Error;
use crate::process::memory::{LiveMemory, ProcessMemory};
use crate::process::pagemap::PageScanner;
use crate::process::procfs::{self, Backing, Mapping};
use crate::process::session::StoppedProcess;
use crate::process::{self, proc_path};
use crate::sys::{self, Errno, Pid, Signal, WaitStatus, inject};

use borrow::{BorrowError, BorrowedThread};
use memory::{LiveOnly, LiveOnlyPlan};
pub use memory::{SnapshotMemory, live_only_ranges};
use seccomp::{SeccompData, Verdict};

/// x86_64 system call numbers.
const SYS_CLONE: u64 = 56;
const SYS_WAIT4: u64 = 61;
const CLONE_FILES: u64 = 0x400;
/// The flags of the snapshot's `clone()`; the low byte (the exit signal) is 0.
const SNAPSHOT_CLONE_FLAGS: u64 = CLONE_FILES;
const WNOHANG: u64 = 1;
const WALL: u64 = 0x4000_0000;
/// `-ERESTART_RESTARTBLOCK`: the call restarts through `restart_block` (nanosleep).
const ERESTART_RESTARTBLOCK: i64 = -516;
/// The 64-bit user code segment selector.
const USER_CS_64: u64 = 0x33;

/// What [`take_with`] may do.
#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    /// Borrow this thread (a tid of the target) instead of choosing one.
    pub thread: Option<i32>,
    /// Also copy live-only regions marked MADV_DONTDUMP.
    pub include_dont_dump: bool,
    /// Refuse when more than this many bytes of live-only memory would have to be copied
    /// during the pause (stop-the-world is then no slower).
    pub max_live_copy: u64,
}

impl Default for SnapshotOptions {
    fn default() -> SnapshotOptions {
        SnapshotOptions {
            thread: None,
            include_dont_dump: false,
            max_live_copy: 256 << 20,
        }
    }
}

/// How long each part of [`take`] held the target.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotTimes {
    /// Choosing the thread and the checks (seccomp, rseq, live-only pages).
    pub prepare: Duration,
    /// From setting the borrowed thread's registers to the `clone()` exit stop.
    pub clone: Duration,
    /// Putting the borrowed thread back.
    pub restore: Duration,
    /// Copying the live-only regions.
    pub live_copy: Duration,
    /// All of [`take`].
    pub total: Duration,
}

/// Why no snapshot was made. The target is intact and still stopped: fall back to stopping
/// the world for the whole dump, with a warning that says why.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotRefused {
    #[error(
        "the process is stopped (SIGSTOP or similar), so a snapshot would not shorten any pause"
    )]
    ProcessStopped,
    #[error("no thread can be borrowed to run clone(): {detail}")]
    NoThread { detail: String },
    #[error("{detail}")]
    Seccomp { detail: String },
    #[error(
        "thread {tid} uses syscall user dispatch, which could turn an injected clone() into SIGSYS"
    )]
    SyscallUserDispatch { tid: i32 },
    #[error(
        "mappings are registered with a userfaultfd, whose monitor would have to answer a fork \
         while the process is stopped"
    )]
    Userfaultfd,
    #[error(
        "the process has unshared its pid namespace: the snapshot's child could become that \
         namespace's init, and killing it would end the namespace"
    )]
    PidNamespace,
    #[error("no `syscall` instruction found in the vDSO or the executable mappings")]
    NoSyscallInstruction,
    #[error(
        "{} of MADV_DONTFORK/MADV_WIPEONFORK memory would have to be copied during the pause \
         (limit {})",
        crate::error::human_bytes(*bytes),
        crate::error::human_bytes(*limit)
    )]
    LiveOnlyTooLarge { bytes: u64, limit: u64 },
    #[error("{}", clone_failure(*errno))]
    CloneFailed { errno: Errno },
    #[error("the injected clone() did not complete ({detail}); the thread was restored")]
    Injection { detail: String },
    #[error("snapshots are only implemented for x86_64 processes: {detail}")]
    Unsupported { detail: String },
}

fn clone_failure(errno: Errno) -> String {
    match errno {
        Errno::EAGAIN => "clone() failed with EAGAIN: the process limit was reached (the \
                          cgroup's pids.max or RLIMIT_NPROC)"
            .into(),
        Errno::ENOMEM => "clone() failed with ENOMEM: not enough memory to copy the page tables \
                          (overcommit limit or memory cgroup)"
            .into(),
        Errno::EPERM | Errno::EACCES => {
            format!("clone() was denied ({errno}) by a seccomp filter or a security module")
        }
        errno => format!("clone() failed: {errno}"),
    }
}

/// A failed [`take`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No snapshot; the target is intact and stopped. Fall back to stop-the-world.
    #[error("no snapshot: {0}")]
    Refused(#[from] SnapshotRefused),
    /// The target is in trouble (it exited, a thread vanished, ptrace failed): do not go on.
    #[error(transparent)]
    Target(#[from] Error),
    /// A borrowed thread could not be put back: that thread of the target may misbehave.
    #[error(
        "thread {tid} of pid {pid} could not be restored after the snapshot's clone(): {detail}; \
         the process may misbehave"
    )]
    RestoreFailed { pid: i32, tid: i32, detail: String },
}

impl SnapshotError {
    /// Whether this is a refusal (the target is intact: fall back to stop-the-world).
    pub fn is_refused(&self) -> bool {
        matches!(self, SnapshotError::Refused(_))
    }
}

/// What [`Snapshot::finish`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct FinishReport {
    /// The child's zombie was reaped inside the target.
    pub zombie_reaped: bool,
    /// How long one thread of the target was held to reap it.
    pub reaper_pause: Duration,
    /// All of `finish`.
    pub total: Duration,
}

/// A frozen copy-on-write clone of the target, ptrace-stopped and never run. Dropping it kills
/// and reaps the child like [`Snapshot::finish`], logging what fails.
#[derive(Debug)]
pub struct Snapshot {
    target: i32,
    /// The child's pid in our pid namespace.
    child: i32,
    /// The child's pid in the target's pid namespace (what `wait4` in the target needs).
    child_in_target: i32,
    /// The child's start time (`/proc/PID/stat` field 22), to recognise it later.
    child_start_time: Option<u64>,
    borrowed_tid: i32,
    /// The target's ptrace options while stopped (for a thread borrowed before it resumes).
    options: Options,
    live_only: Arc<LiveOnly>,
    finished: bool,
    /// Ptrace ties the child to the thread that took the snapshot.
    _not_send: PhantomData<*const ()>,
}

/// Take a snapshot, choosing the thread to borrow. See [`take_with`].
pub fn take(
    stopped: &mut StoppedProcess,
    capture: &Capture,
) -> Result<(Snapshot, SnapshotTimes), SnapshotError> {
    take_with(stopped, capture, &SnapshotOptions::default())
}

/// Take a snapshot by borrowing thread `tid`.
pub fn take_with_thread(
    stopped: &mut StoppedProcess,
    capture: &Capture,
    tid: i32,
) -> Result<(Snapshot, SnapshotTimes), SnapshotError> {
    let options = SnapshotOptions {
        thread: Some(tid),
        ..SnapshotOptions::default()
    };
    take_with(stopped, capture, &options)
}

/// Clone the stopped target copy-on-write. Every thread must be in the ptrace stop
/// [`StoppedProcess::stop`] left it in, and `capture` must have been collected from it. On
/// success and on every error all threads are still stopped, with their registers as
/// captured; the caller resumes the target, reads the snapshot, then calls
/// [`Snapshot::finish`].
pub fn take_with(
    stopped: &mut StoppedProcess,
    capture: &Capture,
    options: &SnapshotOptions,
) -> Result<(Snapshot, SnapshotTimes), SnapshotError> {
    let start = Instant::now();
    let pid = stopped.pid();
    if !cfg!(target_arch = "x86_64") {
        return Err(SnapshotRefused::Unsupported {
            detail: "this build is not for x86_64".into(),
        }
        .into());
    }
    if !stopped.threads().is_empty() && stopped.threads().iter().all(|t| t.group_stopped) {
        return Err(SnapshotRefused::ProcessStopped.into());
    }
    if unshared_pid_namespace(pid) {
        return Err(SnapshotRefused::PidNamespace.into());
    }
    if capture.mappings.iter().any(|m| m.vm_flags.userfaultfd) {
        return Err(SnapshotRefused::Userfaultfd.into());
    }
    let target_memory = LiveMemory::new(pid);
    let syscall_addr = find_syscall_instruction(&capture.mappings, &target_memory)
        .ok_or(SnapshotRefused::NoSyscallInstruction)?;
    let scanner = PageScanner::open(pid)?;
    let live_plan = LiveOnlyPlan::new(capture, &scanner, options.include_dont_dump)?;
    if live_plan.bytes > options.max_live_copy {
        return Err(SnapshotRefused::LiveOnlyTooLarge {
            bytes: live_plan.bytes,
            limit: options.max_live_copy,
        }
        .into());
    }
    let clone_args = [SNAPSHOT_CLONE_FLAGS, 0, 0, 0, 0, 0];
    let tid = choose_thread(
        stopped,
        capture,
        options.thread,
        &target_memory,
        syscall_addr,
        SYS_CLONE,
        clone_args,
    )?;
    let prepare = start.elapsed();

    let stopped_options = stopped.options();
    let mut thread =
        BorrowedThread::new(pid, tid, stopped_options).map_err(|e| borrow_error(pid, tid, e))?;
    let mut child: Option<i32> = None;
    let mut child_problem: Option<String> = None;
    let call = thread.call(syscall_addr, SYS_CLONE, clone_args, &mut |new| {
        child = Some(new);
        if let Err(problem) = hold_child(new) {
            child_problem = Some(problem);
        }
    });
    let fault = thread.fault();
    let restore = thread.give_back();
    let ret = call.as_ref().map(|c| c.ret).ok();
    // From here the borrowed thread is back as it was (or could not be put back).
    let fail = |error: SnapshotError, child: Option<i32>| -> SnapshotError {
        if let Some(child) = child {
            discard_child(
                pid,
                child,
                ret.filter(|&r| r > 0).map(|r| r as i32),
                tid,
                stopped_options,
            );
        }
        error
    };
    let restore = match restore {
        Ok(duration) => duration,
        Err(BorrowError::Gone) => {
            return Err(fail(gone(pid, tid).into(), child));
        }
        Err(e) => {
            return Err(fail(
                SnapshotError::RestoreFailed {
                    pid,
                    tid,
                    detail: e.to_string(),
                },
                child,
            ));
        }
    };
    let call = match call {
        Ok(call) => call,
        Err(BorrowError::Gone) => return Err(fail(gone(pid, tid).into(), child)),
        Err(e) => {
            let detail = match fault {
                Some(signal) => format!("it raised {signal}"),
                None => e.to_string(),
            };
            return Err(fail(SnapshotRefused::Injection { detail }.into(), child));
        }
    };
    if call.ret < 0 {
        let errno = Errno::from_raw((-call.ret) as i32);
        return Err(fail(SnapshotRefused::CloneFailed { errno }.into(), child));
    }
    let Some(child_pid) = child else {
        // Without the clone event the child was not attached to us and may be running: the
        // ptrace options were not in effect. Nothing safe can be done about it from here.
        return Err(SnapshotError::Target(Error::Ptrace {
            operation: "clone() without PTRACE_EVENT_CLONE",
            tid,
            errno: Errno::EINVAL,
        }));
    };
    if let Some(problem) = child_problem {
        return Err(fail(
            SnapshotRefused::Injection {
                detail: format!("the child {child_pid}: {problem}"),
            }
            .into(),
            Some(child_pid),
        ));
    }
    let mut snapshot = Snapshot {
        target: pid,
        child: child_pid,
        child_in_target: call.ret as i32,
        child_start_time: process::read_stat(child_pid).ok().map(|s| s.starttime),
        borrowed_tid: tid,
        options: stopped_options,
        live_only: Arc::new(LiveOnly::default()),
        finished: false,
        _not_send: PhantomData,
    };
    // Let memory pressure take the snapshot rather than the target.
    let _ = std::fs::write(proc_path(child_pid, "oom_score_adj"), "1000");

    let t = Instant::now();
    if !live_plan.is_empty() {
        snapshot.live_only = Arc::new(live_plan.copy(&target_memory));
    }
    let live_copy = t.elapsed();
    tracing::debug!(
        child = child_pid,
        tid,
        clone_us = call.call.as_micros() as u64,
        restore_us = restore.as_micros() as u64,
        "snapshot taken"
    );
    Ok((
        snapshot,
        SnapshotTimes {
            prepare,
            clone: call.call,
            restore,
            live_copy,
            total: start.elapsed(),
        },
    ))
}

/// Wait for a new child's first stop and set EXITKILL on it alone.
fn hold_child(child: i32) -> Result<(), String> {
    let id = Pid::from_raw(child);
    match sys::wait_thread(id) {
        Ok(WaitStatus::PtraceEvent(_, _, event)) if event == Event::PTRACE_EVENT_STOP as i32 => {}
        Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => {}
        Ok(other) => return Err(format!("first stop was {other:?}")),
        Err(errno) => return Err(format!("waitpid: {errno}")),
    }
    inject::set_options(id, Options::PTRACE_O_EXITKILL)
        .map_err(|errno| format!("PTRACE_SETOPTIONS EXITKILL: {errno}"))
}

fn gone(pid: i32, tid: i32) -> Error {
    if process::has_exited(pid) {
        Error::TargetExited { pid }
    } else {
        Error::Ptrace {
            operation: "borrowing a thread",
            tid,
            errno: Errno::ESRCH,
        }
    }
}

fn borrow_error(pid: i32, tid: i32, error: BorrowError) -> SnapshotError {
    match error {
        BorrowError::Gone => gone(pid, tid).into(),
        BorrowError::Ptrace { operation, errno } => Error::Ptrace {
            operation,
            tid,
            errno,
        }
        .into(),
        BorrowError::Unexpected(detail) => SnapshotRefused::NoThread { detail }.into(),
    }
}

/// Kill a child made by a failed attempt, reap it, and reap its zombie through thread `tid`
/// (still stopped by us).
fn discard_child(
    target: i32,
    child: i32,
    child_in_target: Option<i32>,
    tid: i32,
    options: Options,
) {
    let child_in_target = child_in_target.or_else(|| pid_in_namespace_of(child, target));
    let start_time = process::read_stat(child).ok().map(|s| s.starttime);
    kill_and_reap(child);
    let Some(child_in_target) = child_in_target else {
        tracing::warn!(
            target,
            child,
            "the failed snapshot's pid in the target is unknown"
        );
        return;
    };
    if is_zombie_child(child, target, start_time)
        && let Err(e) = reap_zombie(target, child, child_in_target, start_time, tid, options)
    {
        tracing::warn!(target, child, "the failed snapshot's zombie remains: {e}");
    }
}

/// `pid` as the process `other` sees it (from `NSpid`, outermost namespace first).
fn pid_in_namespace_of(pid: i32, other: i32) -> Option<i32> {
    let depth = process::read_status(other).ok()?.ns_pids.len();
    process::read_status(pid)
        .ok()?
        .ns_pids
        .get(depth.checked_sub(1)?)
        .copied()
}

/// SIGKILL a traced child and reap it as its tracer.
fn kill_and_reap(child: i32) {
    let id = Pid::from_raw(child);
    match sys::kill(id, Signal::SIGKILL) {
        Ok(()) => {}
        Err(Errno::ESRCH) => return,
        Err(errno) => tracing::warn!(child, %errno, "cannot kill the snapshot"),
    }
    loop {
        match sys::wait_thread(id) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

impl Snapshot {
    /// The child's pid (in the dumper's pid namespace).
    pub fn pid(&self) -> i32 {
        self.child
    }

    /// The target's pid.
    pub fn target_pid(&self) -> i32 {
        self.target
    }

    /// The thread that ran `clone()`.
    pub fn borrowed_tid(&self) -> i32 {
        self.borrowed_tid
    }

    /// The snapshot's memory: the frozen child, with the live-only regions from the copies
    /// made during the pause.
    pub fn memory(&self) -> SnapshotMemory {
        SnapshotMemory::new(self.child, Arc::clone(&self.live_only))
    }

    /// The child alone, through `/proc/CHILD/mem` (live-only regions are missing or zero).
    pub fn child_memory(&self) -> LiveMemory {
        LiveMemory::through_mem_file(self.child)
    }

    /// The live-only runs `[start, end)` copied during the pause. A plan made from the child's
    /// pagemap does not list them (the child does not have them), so add them to it.
    pub fn live_only_runs(&self) -> Vec<(u64, u64)> {
        self.live_only.copied_runs()
    }

    /// Bytes of live-only memory held, and bytes of it that could not be read.
    pub fn live_only_bytes(&self) -> (u64, u64) {
        (self.live_only.bytes(), self.live_only.unreadable)
    }

    /// Kill the child, reap it, and reap its zombie inside the target (one target thread is
    /// held for tens of microseconds). Call it after the target was resumed.
    pub fn finish(mut self) -> Result<FinishReport, SnapshotError> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<FinishReport, SnapshotError> {
        let start = Instant::now();
        if self.finished {
            return Ok(FinishReport::default());
        }
        self.finished = true;
        kill_and_reap(self.child);
        let mut report = FinishReport::default();
        if self.is_zombie_of_target() {
            report.reaper_pause = reap_zombie(
                self.target,
                self.child,
                self.child_in_target,
                self.child_start_time,
                self.borrowed_tid,
                self.options,
            )?;
            report.zombie_reaped = true;
        }
        report.total = start.elapsed();
        Ok(report)
    }

    fn is_zombie_of_target(&self) -> bool {
        is_zombie_child(self.child, self.target, self.child_start_time)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            tracing::warn!(
                target = self.target,
                child = self.child,
                "cleaning up the snapshot: {e}"
            );
        }
    }
}

fn is_zombie_child(child: i32, parent: i32, start_time: Option<u64>) -> bool {
    match process::read_stat(child) {
        Ok(stat) => {
            stat.state == b'Z'
                && stat.ppid == parent
                && start_time.is_none_or(|t| t == stat.starttime)
        }
        Err(_) => false,
    }
}

/// Reap the snapshot's zombie inside the target: borrow one of its threads and run
/// `wait4(child, NULL, __WALL | WNOHANG, NULL)`. Threads already stopped by us (a failed
/// [`take`], or a snapshot finished before the target was resumed) are used as they are;
/// others are seized, interrupted and detached again. Returns how long the thread was held.
fn reap_zombie(
    target: i32,
    child: i32,
    child_in_target: i32,
    start_time: Option<u64>,
    preferred_tid: i32,
    options: Options,
) -> Result<Duration, SnapshotError> {
    let maps = process::read_proc_file(target, "maps")?;
    let mappings = procfs::parse_maps(&maps);
    let memory = LiveMemory::through_mem_file(target);
    let syscall_addr = find_syscall_instruction(&mappings, &memory).ok_or(
        SnapshotError::Refused(SnapshotRefused::NoSyscallInstruction),
    )?;
    let args = [child_in_target as u64, 0, WALL | WNOHANG, 0, 0, 0];
    let mut candidates = vec![preferred_tid, target];
    for tid in process::task_ids(target).unwrap_or_default() {
        if !candidates.contains(&tid) {
            candidates.push(tid);
        }
    }
    let me = std::process::id() as i32;
    let mut last_problem = String::from("no thread of the target could be borrowed");
    for tid in candidates.into_iter().take(8) {
        if !is_zombie_child(child, target, start_time) {
            // Reaped meanwhile (the target waits with __WALL itself).
            return Ok(Duration::ZERO);
        }
        let ours = thread_tracer(target, tid) == Some(me);
        let held_at = Instant::now();
        let stop = if ours {
            held_by_us(tid)
        } else {
            seize_one(tid)
        };
        match stop {
            Ok(true) => {}
            Ok(false) => continue,
            Err(problem) => {
                last_problem = problem;
                continue;
            }
        }
        let result = reap_through(
            target,
            tid,
            syscall_addr,
            args,
            &memory,
            child_in_target,
            ours,
            options,
        );
        if !ours {
            match sys::detach(Pid::from_raw(tid), None) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => tracing::warn!(tid, %errno, "detach after reaping failed"),
            }
        }
        let held = held_at.elapsed();
        match result {
            Ok(()) => return Ok(held),
            Err(ReapProblem::Fatal(e)) => return Err(e),
            Err(ReapProblem::TryAnother(problem)) => last_problem = problem,
        }
    }
    Err(SnapshotError::Target(Error::Io {
        context: format!("reaping the snapshot's zombie {child} inside pid {target}"),
        source: std::io::Error::other(last_problem),
    }))
}

enum ReapProblem {
    TryAnother(String),
    Fatal(SnapshotError),
}

#[allow(clippy::too_many_arguments)] // one injected call: the thread, the call, its context
fn reap_through(
    target: i32,
    tid: i32,
    syscall_addr: u64,
    args: [u64; 6],
    memory: &dyn ProcessMemory,
    child_in_target: i32,
    ours: bool,
    options: Options,
) -> Result<(), ReapProblem> {
    let regs = sys::get_regset(Pid::from_raw(tid), sys::NT_PRSTATUS, reg::COUNT * 8)
        .map_err(|errno| ReapProblem::TryAnother(format!("thread {tid}: {errno}")))?;
    check_thread(target, tid, &regs, memory, syscall_addr, SYS_WAIT4, args)
        .map_err(|unsuitable| ReapProblem::TryAnother(unsuitable.to_string()))?;
    // A thread seized here has no options; one of a StoppedProcess gets its own back.
    let options = if ours { options } else { Options::empty() };
    let mut thread = BorrowedThread::new(target, tid, options)
        .map_err(|e| ReapProblem::TryAnother(format!("thread {tid}: {e}")))?;
    let call = thread.call(syscall_addr, SYS_WAIT4, args, &mut |_| {});
    let restore = thread.give_back();
    if let Err(e) = restore {
        return Err(ReapProblem::Fatal(SnapshotError::RestoreFailed {
            pid: target,
            tid,
            detail: e.to_string(),
        }));
    }
    match call {
        Ok(call) if call.ret == i64::from(child_in_target) => Ok(()),
        // Reaped by the target itself meanwhile.
        Ok(call) if call.ret == -(Errno::ECHILD as i64) => Ok(()),
        Ok(call) => Err(ReapProblem::TryAnother(format!(
            "wait4 in thread {tid} returned {}",
            call.ret
        ))),
        Err(e) => Err(ReapProblem::TryAnother(format!("thread {tid}: {e}"))),
    }
}

/// The tracer (a process id) of one thread, from `/proc/PID/task/TID/status`.
fn thread_tracer(pid: i32, tid: i32) -> Option<i32> {
    let status = std::fs::read(proc_path(pid, &format!("task/{tid}/status"))).ok()?;
    Some(procfs::parse_status(&status).tracer_pid)
}

/// A thread already traced by us: usable if the calling thread is its tracer and it sits in a
/// `PTRACE_EVENT_STOP` from PTRACE_INTERRUPT (not a signal-delivery or group stop).
fn held_by_us(tid: i32) -> Result<bool, String> {
    match inject::siginfo_code(Pid::from_raw(tid)) {
        Ok((signo, code))
            if signo == Signal::SIGTRAP as i32 && code >> 8 == Event::PTRACE_EVENT_STOP as i32 =>
        {
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(errno) => Err(format!(
            "thread {tid} is traced by this process but not from this thread ({errno})"
        )),
    }
}

/// Seize and interrupt one running thread; `Ok(true)` once it is in a signal-path
/// `PTRACE_EVENT_STOP`, `Ok(false)` if it exited.
fn seize_one(tid: i32) -> Result<bool, String> {
    let id = Pid::from_raw(tid);
    match sys::seize(id, Options::empty()) {
        Ok(()) => {}
        Err(Errno::ESRCH) => return Ok(false),
        Err(errno) => return Err(format!("PTRACE_SEIZE of thread {tid}: {errno}")),
    }
    if let Err(errno) = sys::interrupt(id) {
        let _ = sys::detach(id, None);
        return Err(format!("PTRACE_INTERRUPT of thread {tid}: {errno}"));
    }
    loop {
        match sys::wait_thread(id) {
            Ok(WaitStatus::PtraceEvent(_, _, event))
                if event == Event::PTRACE_EVENT_STOP as i32 =>
            {
                return Ok(true);
            }
            // On its way to a signal: deliver it (the pending interrupt then traps on the
            // signal path, after the handler's frame is set up).
            Ok(WaitStatus::Stopped(_, signal)) => {
                let _ = sys::interrupt(id);
                if let Err(errno) = inject::resume(id, Some(signal)) {
                    let _ = sys::detach(id, Some(signal));
                    return Err(format!("PTRACE_CONT of thread {tid}: {errno}"));
                }
            }
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                return Ok(false);
            }
            Ok(_) => {
                let _ = inject::resume(id, None);
            }
            Err(errno) => {
                let _ = sys::detach(id, None);
                return Err(format!("waitpid on thread {tid}: {errno}"));
            }
        }
    }
}

/// Why a thread cannot be borrowed.
#[derive(Debug)]
enum Unsuitable {
    Other(String),
    Seccomp(String),
    UserDispatch,
}

impl std::fmt::Display for Unsuitable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsuitable::Other(why) | Unsuitable::Seccomp(why) => write!(f, "{why}"),
            Unsuitable::UserDispatch => write!(f, "syscall user dispatch is on"),
        }
    }
}

/// Pick the thread to borrow and check it; a refusal when none will do.
fn choose_thread(
    stopped: &StoppedProcess,
    capture: &Capture,
    wanted: Option<i32>,
    memory: &dyn ProcessMemory,
    syscall_addr: u64,
    nr: u64,
    args: [u64; 6],
) -> Result<i32, SnapshotError> {
    let pid = stopped.pid();
    let mut candidates: Vec<(u8, i32, &[u8])> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for thread in stopped.threads() {
        if wanted.is_some_and(|w| w != thread.tid) {
            continue;
        }
        let Some(captured) = capture.threads.iter().find(|t| t.tid == thread.tid) else {
            reasons.push(format!("{}: no registers captured", thread.tid));
            continue;
        };
        if thread.pending_signal.is_some() {
            reasons.push(format!("{}: stopped on its way to a signal", thread.tid));
            continue;
        }
        if thread.group_stopped {
            reasons.push(format!("{}: in a group stop", thread.tid));
            continue;
        }
        if captured.regs.len() != reg::COUNT * 8 || captured.reg(reg::CS) != USER_CS_64 {
            reasons.push(format!("{}: not running 64-bit code", thread.tid));
            continue;
        }
        let orig_rax = captured.reg(reg::ORIG_RAX) as i64;
        let rax = captured.reg(reg::RAX) as i64;
        let rank = if orig_rax < 0 {
            0
        } else if rax != ERESTART_RESTARTBLOCK {
            1
        } else {
            2
        };
        candidates.push((rank, thread.tid, &captured.regs));
    }
    if let Some(wanted) = wanted
        && candidates.is_empty()
        && reasons.is_empty()
    {
        reasons.push(format!("{wanted}: not a stopped thread of pid {pid}"));
    }
    candidates.sort_by_key(|(rank, tid, _)| (*rank, *tid != pid, *tid));
    let mut first_problem: Option<Unsuitable> = None;
    for (_, tid, regs) in candidates {
        match check_thread(pid, tid, regs, memory, syscall_addr, nr, args) {
            Ok(()) => return Ok(tid),
            Err(problem) => {
                reasons.push(format!("{tid}: {problem}"));
                first_problem.get_or_insert(problem);
            }
        }
    }
    Err(match first_problem {
        Some(Unsuitable::Seccomp(detail)) => SnapshotRefused::Seccomp { detail },
        Some(Unsuitable::UserDispatch) => SnapshotRefused::SyscallUserDispatch {
            tid: wanted.unwrap_or(pid),
        },
        _ => SnapshotRefused::NoThread {
            detail: reasons.join("; "),
        },
    }
    .into())
}

/// Whether thread `tid` (stopped, with registers `regs`) can run system call `nr` with `args`
/// at `syscall_addr` without surprises: its seccomp filters allow it, it does not use syscall
/// user dispatch, and it is not inside an rseq critical section (the kernel clears the
/// section's pointer when a thread returns to user space outside it, so it would not be
/// aborted when it should be).
fn check_thread(
    pid: i32,
    tid: i32,
    regs: &[u8],
    memory: &dyn ProcessMemory,
    syscall_addr: u64,
    nr: u64,
    args: [u64; 6],
) -> Result<(), Unsuitable> {
    let id = Pid::from_raw(tid);
    match thread_seccomp_mode(pid, tid) {
        Some(0) | None => {}
        Some(1) => {
            return Err(Unsuitable::Seccomp(
                "the thread runs in strict seccomp mode, which kills on clone()".into(),
            ));
        }
        Some(_) => {
            let mut filters = Vec::new();
            for index in 0.. {
                match inject::seccomp_filter(id, index) {
                    Ok(program) => filters.push(program),
                    Err(Errno::ENOENT) => break,
                    Err(errno) => {
                        return Err(Unsuitable::Seccomp(format!(
                            "the thread has seccomp filters that cannot be inspected \
                             (PTRACE_SECCOMP_GET_FILTER: {errno}; it needs CAP_SYS_ADMIN), and \
                             one might kill the process on clone()"
                        )));
                    }
                }
            }
            let data = SeccompData {
                nr: nr as i32,
                arch: seccomp::AUDIT_ARCH_X86_64,
                instruction_pointer: syscall_addr + 2,
                args,
            };
            match seccomp::evaluate(&filters, &data) {
                Some(Verdict::Allow | Verdict::Log) => {}
                Some(Verdict::Errno(errno)) => {
                    return Err(Unsuitable::Seccomp(format!(
                        "a seccomp filter fails the call with {}",
                        Errno::from_raw(i32::from(errno))
                    )));
                }
                Some(verdict) => {
                    return Err(Unsuitable::Seccomp(format!(
                        "a seccomp filter would answer the call with {verdict:?}"
                    )));
                }
                None => {
                    return Err(Unsuitable::Seccomp(
                        "a seccomp filter uses instructions snapdump cannot evaluate".into(),
                    ));
                }
            }
        }
    }
    match inject::syscall_user_dispatch_mode(id) {
        Ok(0) => {}
        Ok(_) => return Err(Unsuitable::UserDispatch),
        // Kernels before 6.4 cannot tell; dispatch is rare (Wine).
        Err(_) => {}
    }
    if let Ok(config) = inject::rseq_configuration(id)
        && config.rseq_abi_pointer != 0
    {
        let rip = borrow::get_reg(regs, reg::RIP);
        // struct rseq { u32 cpu_id_start; u32 cpu_id; u64 rseq_cs; ... }
        let cs = memory.read_u64(config.rseq_abi_pointer + 8).unwrap_or(0);
        if cs != 0 {
            // struct rseq_cs { u32 version; u32 flags; u64 start_ip; u64
            // post_commit_offset; u64 abort_ip; }
            let start = memory.read_u64(cs + 8);
            let len = memory.read_u64(cs + 16);
            match (start, len) {
                (Some(start), Some(len)) if rip >= start && rip - start < len => {
                    return Err(Unsuitable::Other("inside an rseq critical section".into()));
                }
                (Some(_), Some(_)) => {}
                _ => {
                    return Err(Unsuitable::Other(
                        "its rseq critical-section descriptor cannot be read".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether the process's children would go into another pid namespace than its own
/// (`unshare(CLONE_NEWPID)`).
fn unshared_pid_namespace(pid: i32) -> bool {
    let own = std::fs::read_link(proc_path(pid, "ns/pid"));
    let children = std::fs::read_link(proc_path(pid, "ns/pid_for_children"));
    match (own, children) {
        (Ok(own), Ok(children)) => own != children,
        // Kernels without pid_for_children cannot unshare a pending namespace either... but
        // an unreadable link next to a readable one means a namespace without its init yet.
        (Ok(_), Err(_)) => true,
        _ => false,
    }
}

/// `Seccomp:` of `/proc/PID/task/TID/status`: 0 off, 1 strict, 2 filter.
fn thread_seccomp_mode(pid: i32, tid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(proc_path(pid, &format!("task/{tid}/status"))).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:"))
        .and_then(|value| value.trim().parse().ok())
}

/// The address of a `syscall` instruction (`0f 05`) in the target: in the vDSO, or failing
/// that in the first 64 KiB of an executable file mapping. Only its two bytes matter: the
/// borrowed thread executes that one instruction and is stopped at the call's exit.
fn find_syscall_instruction(mappings: &[Mapping], memory: &dyn ProcessMemory) -> Option<u64> {
    let vdso = mappings
        .iter()
        .filter(|m| m.backing == Backing::Vdso && m.perms.exec);
    let files = mappings
        .iter()
        .filter(|m| m.perms.exec && m.perms.read && matches!(m.backing, Backing::File { .. }));
    for mapping in vdso.chain(files) {
        let len = mapping.len().min(64 * 1024) as usize;
        let mut bytes = vec![0u8; len];
        if memory.read_into(mapping.start, &mut bytes) == len as u64 {
            continue;
        }
        if let Some(offset) = bytes.windows(2).position(|w| w == [0x0f, 0x05]) {
            return Some(mapping.start + offset as u64);
        }
    }
    None
}
