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
//! The target may exec between the snapshot and its cleanup. It is the same process (same pid,
//! same start time) and the zombie is still its child, so the zombie is reaped through a
//! thread of the new image, at a `syscall` instruction found in the maps of the image that
//! thread runs, read while it is stopped (the old image's address would make it fault, forever).
//! The kernel turns exit signal 0 into SIGCHLD for a parent that exec'd (`do_notify_parent`
//! compares `parent_exec_id`), so such a target gets one SIGCHLD; if it ignores SIGCHLD the
//! zombie is auto-reaped. Every wait here is polled against a deadline ([`REAP_TIME`]): a
//! thread that dies, execs (it takes over the leader's pid) or stops belonging to the target
//! is let go and another tried; when none will do in time the zombie is left, with a warning,
//! to the guardian ([`guard`]), never waited for without end. Threads seized for the reap are
//! detached on every path.
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
use crate::process::session::{StoppedProcess, back_off};
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
    /// The target's start time (`/proc/PID/stat` field 22): the same process, whatever it
    /// execs, as long as this does not change.
    target_start_time: Option<u64>,
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
        target_start_time: Some(capture.stat.starttime),
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
        BorrowError::TimedOut => SnapshotRefused::NoThread {
            detail: error.to_string(),
        }
        .into(),
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
    if !kill_and_reap(child) {
        return;
    }
    let Some(child_in_target) = child_in_target else {
        tracing::warn!(
            target,
            child,
            "the failed snapshot's pid in the target is unknown"
        );
        return;
    };
    if is_zombie_child(child, target, start_time)
        && let Err(e) = reap_zombie(
            target,
            process::read_stat(target).ok().map(|s| s.starttime),
            child,
            child_in_target,
            start_time,
            tid,
            options,
            Instant::now() + REAP_TIME,
        )
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

/// How long [`Snapshot::finish`] (and a failed [`take`]) tries to reap the clone's zombie inside
/// the target before it gives up and leaves it, with a warning, to the guardian if there is
/// one. Each attempt holds one thread for tens of microseconds; the time is for retrying while
/// the target execs (its threads die, its leader is a zombie, its pid changes hands).
pub(crate) const REAP_TIME: Duration = Duration::from_secs(3);
/// How long the SIGKILLed clone is given to die.
const KILL_TIME: Duration = Duration::from_secs(5);

/// SIGKILL a traced child and reap it as its tracer. False if it did not die in time.
fn kill_and_reap(child: i32) -> bool {
    let id = Pid::from_raw(child);
    match sys::kill(id, Signal::SIGKILL) {
        Ok(()) => {}
        Err(Errno::ESRCH) => return true,
        Err(errno) => tracing::warn!(child, %errno, "cannot kill the snapshot"),
    }
    let deadline = Instant::now() + KILL_TIME;
    let mut idle = 0;
    loop {
        match sys::poll_thread(id) {
            Ok(Some(WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return true,
            // A stop reported before the kill: the kill follows it.
            Ok(Some(_)) => continue,
            Ok(None) | Err(Errno::EINTR) => {}
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                child,
                "the snapshot did not die within {KILL_TIME:?} of SIGKILL"
            );
            return false;
        }
        back_off(idle);
        idle += 1;
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
        if !kill_and_reap(self.child) {
            return Err(self.left_behind(format!("it did not die within {KILL_TIME:?} of SIGKILL")));
        }
        let mut report = FinishReport::default();
        if self.is_zombie_of_target() {
            report.reaper_pause = reap_zombie(
                self.target,
                self.target_start_time,
                self.child,
                self.child_in_target,
                self.child_start_time,
                self.borrowed_tid,
                self.options,
                start + REAP_TIME,
            )
            .map_err(|e| match e {
                SnapshotError::Target(e) => self.left_behind(e.to_string()),
                e => e,
            })?;
            report.zombie_reaped = true;
        }
        report.total = start.elapsed();
        Ok(report)
    }

    /// The error for a clone that could not be cleaned up: it stays a child of the target.
    fn left_behind(&self, why: String) -> SnapshotError {
        SnapshotError::Target(Error::Io {
            context: format!(
                "the snapshot's clone {} is left as a zombie child of pid {} (the snapshot \
                 guardian, if there is one, goes on trying to reap it; otherwise it stays until \
                 pid {} exits)",
                self.child, self.target, self.target
            ),
            source: std::io::Error::other(why),
        })
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

/// Whether the snapshot's clone still exists (alive or a zombie) as a child of `parent`.
pub(crate) fn clone_remains(child: i32, parent: i32, start_time: Option<u64>) -> bool {
    process::read_stat(child)
        .is_ok_and(|stat| stat.ppid == parent && start_time.is_none_or(|t| t == stat.starttime))
}

/// One zombie to reap inside the target.
struct Reap {
    target: i32,
    /// The target's start time when the snapshot was taken, if known.
    target_start_time: Option<u64>,
    child: i32,
    child_in_target: i32,
    start_time: Option<u64>,
    /// The ptrace options to leave on a thread held by a [`StoppedProcess`].
    options: Options,
    /// The calling thread: a tracer is a thread, and `TracerPid` names it.
    me: i32,
    deadline: Instant,
}

/// Reap the snapshot's zombie inside the target: borrow one of its threads and run
/// `wait4(child, NULL, __WALL | WNOHANG, NULL)`. Threads already stopped by us (a failed
/// [`take`], or a snapshot finished before the target was resumed) are used as they are;
/// others are seized, interrupted and detached again. Returns how long the thread was held.
///
/// The target may have exec'd since the snapshot: the zombie is still its child (an exec
/// keeps the process, its pid and its children), so it is reaped through a thread of the new
/// image, with a `syscall` instruction found in the image that thread runs, read while it is
/// stopped. A thread that dies, execs or changes its pid while it is being seized or borrowed
/// is given up and the next one tried, until `deadline`: nothing here waits without a bound,
/// and every thread seized here is detached again on every path.
#[allow(clippy::too_many_arguments)] // the zombie, its target, and the time allowed
fn reap_zombie(
    target: i32,
    target_start_time: Option<u64>,
    child: i32,
    child_in_target: i32,
    start_time: Option<u64>,
    preferred_tid: i32,
    options: Options,
    deadline: Instant,
) -> Result<Duration, SnapshotError> {
    let reap = Reap {
        target,
        target_start_time,
        child,
        child_in_target,
        start_time,
        options,
        me: sys::gettid().as_raw(),
        deadline,
    };
    let mut preferred = Some(preferred_tid);
    let mut last_problem = String::from("no thread of the target could be borrowed");
    let mut attempts = 0usize;
    'rounds: loop {
        let mut candidates: Vec<i32> = preferred.take().into_iter().collect();
        for tid in std::iter::once(target).chain(process::task_ids(target).unwrap_or_default()) {
            if !candidates.contains(&tid) {
                candidates.push(tid);
            }
        }
        for tid in candidates {
            // Reaped meanwhile (the target waits with __WALL itself, or ignores SIGCHLD after
            // an exec), or the target is gone.
            if !reap.zombie_remains() {
                return Ok(Duration::ZERO);
            }
            if Instant::now() >= deadline {
                break 'rounds;
            }
            attempts += 1;
            match reap.through(tid) {
                Ok(held) => return Ok(held),
                Err(ReapProblem::Fatal(e)) => return Err(e),
                Err(ReapProblem::TryAnother(problem)) => {
                    tracing::debug!(target, tid, "cannot reap the snapshot's zombie: {problem}");
                    last_problem = problem;
                }
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        // No thread would do: an exec is probably under way (the other threads dying, the
        // leader a zombie until the new image takes over its pid). Let it finish.
        std::thread::sleep(Duration::from_millis(2));
    }
    if !reap.zombie_remains() {
        return Ok(Duration::ZERO);
    }
    Err(SnapshotError::Target(Error::Io {
        context: format!(
            "reaping the snapshot's zombie {child} inside pid {target} ({attempts} attempts)"
        ),
        source: std::io::Error::other(last_problem),
    }))
}

enum ReapProblem {
    TryAnother(String),
    Fatal(SnapshotError),
}

impl Reap {
    fn zombie_remains(&self) -> bool {
        is_zombie_child(self.child, self.target, self.start_time)
    }

    /// One attempt through thread `tid`; returns how long a thread was held.
    fn through(&self, tid: i32) -> Result<Duration, ReapProblem> {
        // A tid from an earlier list (the thread that ran clone(), before an exec) may be dead,
        // and its number taken by another process: never seize it then.
        if !is_thread_of(self.target, tid) {
            return Err(ReapProblem::TryAnother(format!(
                "{tid} is not a thread of pid {} any more",
                self.target
            )));
        }
        let ours = thread_tracer(self.target, tid) == Some(self.me);
        let held_at = Instant::now();
        let tid = if ours {
            match held_by_us(tid) {
                Ok(true) => tid,
                Ok(false) => {
                    return Err(ReapProblem::TryAnother(format!(
                        "thread {tid} is held by this process in another kind of stop"
                    )));
                }
                Err(problem) => return Err(ReapProblem::TryAnother(problem)),
            }
        } else {
            match seize_one(self.target, tid, self.me, self.deadline) {
                Ok(Some(now)) => now,
                Ok(None) => {
                    return Err(ReapProblem::TryAnother(format!("thread {tid} exited")));
                }
                Err(problem) => return Err(ReapProblem::TryAnother(problem)),
            }
        };
        let result = self.borrow(tid, ours);
        if !ours {
            let_go(tid);
        }
        result.map(|()| held_at.elapsed())
    }

    /// Run the `wait4` through thread `tid`, stopped on the signal path.
    fn borrow(&self, tid: i32, ours: bool) -> Result<(), ReapProblem> {
        // Stopped, the thread stays in this process and in the image it runs until it is let
        // go: an exec by another thread kills it first (and every ptrace request below then
        // fails), and the new image replaces the memory only once it is dead.
        if !is_thread_of(self.target, tid) {
            return Err(ReapProblem::TryAnother(format!(
                "{tid} is not a thread of pid {} any more",
                self.target
            )));
        }
        if self.target_start_time.is_some()
            && process::read_stat(self.target).ok().map(|s| s.starttime) != self.target_start_time
        {
            return Err(ReapProblem::TryAnother(format!(
                "pid {} is not the process the snapshot was taken of",
                self.target
            )));
        }
        if !self.zombie_remains() {
            return Ok(());
        }
        // The image this thread runs, read now: after an exec the vDSO is elsewhere.
        let maps = std::fs::read(proc_path(self.target, &format!("task/{tid}/maps")))
            .map_err(|e| ReapProblem::TryAnother(format!("maps of thread {tid}: {e}")))?;
        let mappings = procfs::parse_maps(&maps);
        let memory = LiveMemory::through_mem_file(tid);
        let syscall_addr = find_syscall_instruction(&mappings, &memory).ok_or_else(|| {
            ReapProblem::TryAnother(format!("no `syscall` instruction found for thread {tid}"))
        })?;
        let args = [self.child_in_target as u64, 0, WALL | WNOHANG, 0, 0, 0];
        let regs = sys::get_regset(Pid::from_raw(tid), sys::NT_PRSTATUS, reg::COUNT * 8)
            .map_err(|errno| ReapProblem::TryAnother(format!("thread {tid}: {errno}")))?;
        check_thread(
            self.target,
            tid,
            &regs,
            &memory,
            syscall_addr,
            SYS_WAIT4,
            args,
        )
        .map_err(|unsuitable| ReapProblem::TryAnother(unsuitable.to_string()))?;
        // A thread seized here has no options; one of a StoppedProcess gets its own back.
        let options = if ours { self.options } else { Options::empty() };
        let mut thread = BorrowedThread::new(self.target, tid, options)
            .map_err(|e| ReapProblem::TryAnother(format!("thread {tid}: {e}")))?
            .with_deadline(self.deadline);
        let call = thread.call(syscall_addr, SYS_WAIT4, args, &mut |_| {});
        match thread.give_back() {
            // A thread that died (killed by an exec) has nothing left to restore.
            Ok(_) | Err(BorrowError::Gone) => {}
            Err(e) => {
                return Err(ReapProblem::Fatal(SnapshotError::RestoreFailed {
                    pid: self.target,
                    tid,
                    detail: e.to_string(),
                }));
            }
        }
        match call {
            Ok(call) if call.ret == i64::from(self.child_in_target) => Ok(()),
            // Reaped by the target itself meanwhile.
            Ok(call) if call.ret == -(Errno::ECHILD as i64) => Ok(()),
            Ok(call) => Err(ReapProblem::TryAnother(format!(
                "wait4 in thread {tid} returned {}",
                call.ret
            ))),
            Err(e) => Err(ReapProblem::TryAnother(format!("thread {tid}: {e}"))),
        }
    }
}

/// Whether `tid` is a thread of process `pid` (`/proc/PID/task/TID` exists and its `Tgid` is
/// `pid`).
fn is_thread_of(pid: i32, tid: i32) -> bool {
    std::fs::read(proc_path(pid, &format!("task/{tid}/status")))
        .is_ok_and(|status| procfs::parse_status(&status).tgid == pid)
}

/// The tracer (a thread id) of one thread, from `/proc/PID/task/TID/status`.
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
            "thread {tid} is traced by this process but not stopped for this thread ({errno})"
        )),
    }
}

/// Seize and interrupt one running thread of `target`, polling until `deadline`. Returns the
/// thread's id once it is in a signal-path `PTRACE_EVENT_STOP` — the target's pid if it exec'd
/// meanwhile (an exec by a thread other than the leader gives it the leader's pid) — or `None`
/// if it exited. On an error the thread is detached again.
fn seize_one(target: i32, tid: i32, me: i32, deadline: Instant) -> Result<Option<i32>, String> {
    // After the seize, the target's pid can only become our tracee by this thread's exec.
    let may_become_leader = tid != target && thread_tracer(target, target) != Some(me);
    let id = Pid::from_raw(tid);
    match sys::seize(id, Options::PTRACE_O_TRACEEXEC) {
        Ok(()) => {}
        Err(Errno::ESRCH) => return Ok(None),
        Err(errno) => return Err(format!("PTRACE_SEIZE of thread {tid}: {errno}")),
    }
    if let Err(errno) = sys::interrupt(id) {
        let_go(tid);
        return Err(format!("PTRACE_INTERRUPT of thread {tid}: {errno}"));
    }
    let mut current = tid;
    let mut idle = 0;
    loop {
        let id = Pid::from_raw(current);
        let status = match sys::poll_thread(id) {
            Ok(status) => status,
            Err(Errno::EINTR) => None,
            Err(Errno::ECHILD)
                if current != target
                    && may_become_leader
                    && thread_tracer(target, target) == Some(me) =>
            {
                tracing::debug!(target, tid, "the seized thread exec'd and took the pid");
                current = target;
                continue;
            }
            Err(Errno::ECHILD) => return Ok(None),
            Err(errno) => {
                let_go(current);
                return Err(format!("waitpid on thread {current}: {errno}"));
            }
        };
        match status {
            Some(WaitStatus::PtraceEvent(_, _, event))
                if event == Event::PTRACE_EVENT_STOP as i32 =>
            {
                return Ok(Some(current));
            }
            Some(WaitStatus::PtraceEvent(pid, _, event))
                if event == Event::PTRACE_EVENT_EXEC as i32 =>
            {
                // The thread is the new image's leader now; the pending interrupt stops it
                // on the signal path once it goes on.
                tracing::debug!(target, tid, "the seized thread exec'd");
                current = pid.as_raw();
                if let Err(errno) = inject::resume(pid, None) {
                    let_go(current);
                    return Err(format!("PTRACE_CONT of thread {current}: {errno}"));
                }
            }
            // On its way to a signal: deliver it (the pending interrupt then traps on the
            // signal path, after the handler's frame is set up).
            Some(WaitStatus::Stopped(_, signal)) => {
                let _ = sys::interrupt(id);
                if let Err(errno) = inject::resume(id, Some(signal)) {
                    let _ = sys::detach(id, Some(signal));
                    return Err(format!("PTRACE_CONT of thread {current}: {errno}"));
                }
            }
            Some(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => return Ok(None),
            Some(_) => {
                let _ = inject::resume(id, None);
            }
            None => {}
        }
        if Instant::now() >= deadline {
            let_go(current);
            return Err(format!("thread {tid} did not stop in time"));
        }
        back_off(idle);
        idle += 1;
    }
}

/// Detach a thread seized by [`seize_one`] wherever it is. A thread that is not in a ptrace
/// stop cannot be detached: it is interrupted, and detached at its stop. Bounded; the target
/// is never left traced unless the thread does not stop within a second (then it stays traced
/// until the dumper exits, and says so).
fn let_go(tid: i32) {
    let id = Pid::from_raw(tid);
    match sys::detach(id, None) {
        Ok(()) => return,
        // Gone, or running.
        Err(Errno::ESRCH) => {}
        Err(errno) => tracing::warn!(tid, %errno, "PTRACE_DETACH failed"),
    }
    let _ = sys::interrupt(id);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut idle = 0;
    loop {
        match sys::poll_thread(id) {
            Ok(Some(WaitStatus::Exited(..) | WaitStatus::Signaled(..))) | Err(Errno::ECHILD) => {
                return;
            }
            Ok(Some(WaitStatus::Stopped(_, signal))) => {
                if sys::detach(id, Some(signal)).is_ok() {
                    return;
                }
            }
            Ok(Some(_)) => {
                if sys::detach(id, None).is_ok() {
                    return;
                }
            }
            Ok(None) | Err(_) => {}
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                tid,
                "a thread of the target does not stop to be detached; it stays traced until \
                 the dumper exits"
            );
            return;
        }
        back_off(idle);
        idle += 1;
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
/// (`unshare(CLONE_NEWPID)`). Asked of a live thread when the leader has exited: a zombie's
/// namespace links read as gone.
fn unshared_pid_namespace(pid: i32) -> bool {
    let dir = crate::process::memory_dir(pid);
    let own = std::fs::read_link(dir.join("ns/pid"));
    let children = std::fs::read_link(dir.join("ns/pid_for_children"));
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
