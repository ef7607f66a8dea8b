//! Stopping every thread of a process with ptrace, and letting them all go again.
//!
//! PTRACE_SEIZE + PTRACE_INTERRUPT, never PTRACE_ATTACH: attach queues a SIGSTOP that can
//! outlive the dump and leave the target stopped. Threads are seized until the list in
//! `/proc/PID/task` stops changing (a thread can be created while others are being stopped).
//! A signal that arrives meanwhile is kept and handed back on detach. The [`StoppedProcess`]
//! detaches in `Drop`, so errors and panics release the target too; if the dumper is killed,
//! the kernel detaches its tracees itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::ptrace::{Event, Options};

use crate::Cancel;
use crate::error::{Error, Result};
use crate::sys::{self, Errno, Pid, Signal, WaitStatus};

/// One stopped thread.
#[derive(Clone, Debug)]
pub struct StoppedThread {
    pub tid: i32,
    /// A signal the thread was about to receive when it stopped; delivered on detach.
    pub pending_signal: Option<Signal>,
    /// The thread was in a group stop (SIGSTOP and friends) already; it stays stopped.
    pub group_stopped: bool,
}

/// A process whose threads are all in a ptrace stop. Dropping it detaches them all.
#[derive(Debug)]
pub struct StoppedProcess {
    pid: i32,
    threads: Vec<StoppedThread>,
    stopped_at: Instant,
    /// The ptrace options every thread was seized with.
    options: Options,
    /// Time spent seizing and interrupting until every thread was stopped.
    pub stop_duration: Duration,
}

fn is_stop_signal(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
    )
}

impl StoppedProcess {
    /// Stop every thread of `pid`. `options` are set on every seized thread, with
    /// `PTRACE_O_TRACEEXEC` added.
    ///
    /// # A target that calls execve meanwhile
    /// An exec kills every other thread and then waits in the kernel until they are gone, and
    /// a traced thread is gone only once its tracer (this thread) has reaped it. So the seized
    /// threads are polled together, and the ones already stopped are polled for their death
    /// too; a blocking wait for one thread — the exec'ing one, or the leader it replaces —
    /// would wait for the exec, and the exec for us. A seized thread that execs reports
    /// `PTRACE_EVENT_EXEC` under the process id (it takes over the leader's): the old image is
    /// gone, so that thread is let go and the stop starts over on the new image. An exec by a
    /// thread not seized yet shows as the leader ceasing to be our tracee; the new image is
    /// seized in the next round. Either way the dump is of the new image.
    pub fn stop(pid: i32, options: Options, cancel: &Cancel) -> Result<StoppedProcess> {
        let watch = SeizeWatch::new(pid);
        std::thread::scope(|scope| {
            let _stop_watching = watch.run(scope);
            StoppedProcess::stop_watched(pid, options, cancel, &watch)
        })
    }

    fn stop_watched(
        pid: i32,
        options: Options,
        cancel: &Cancel,
        watch: &SeizeWatch,
    ) -> Result<StoppedProcess> {
        let start = Instant::now();
        let options = options | Options::PTRACE_O_TRACEEXEC;
        let mut stopped = StoppedProcess {
            pid,
            threads: Vec::new(),
            stopped_at: start,
            options,
            stop_duration: Duration::ZERO,
        };
        // Seized and interrupted, not yet stopped.
        let mut pending: Vec<i32> = Vec::new();
        // An error to return once the threads seized so far are stopped (so they can be
        // detached: a running tracee cannot be).
        let mut failure: Option<Error> = None;
        let mut rounds = 0;
        let mut idle = 0u32;
        let mut leader_retries = 0;
        loop {
            let mut changed = false;
            let mut exec_pending = false;
            if pending.is_empty() {
                if let Some(error) = failure.take() {
                    return Err(error);
                }
                cancel.check()?;
                // A thread list that stays the same twice running means nobody is left to
                // create more.
                let tids = super::task_ids(pid)?;
                let mut new: Vec<i32> = tids
                    .into_iter()
                    .filter(|tid| !stopped.threads.iter().any(|t| t.tid == *tid))
                    .collect();
                // A leader that called pthread_exit is a zombie for good: nothing to seize.
                if new.contains(&pid) && leader_exited_alone(pid) {
                    new.retain(|&tid| tid != pid);
                }
                // The leader is a zombie while other threads die: an exec by one of them is
                // under way (it cannot be seized, EPERM). Look again once it is done.
                exec_pending = new.contains(&pid) && idle <= 200 && exec_under_way(pid);
                if !new.is_empty() && !exec_pending {
                    changed = true;
                    rounds += 1;
                    if rounds > 1000 {
                        return Err(Error::Ptrace {
                            operation: "stopping (threads keep appearing)",
                            tid: pid,
                            errno: Errno::EAGAIN,
                        });
                    }
                    for tid in new {
                        match watch.seize(tid, options) {
                            Ok(()) => pending.push(tid),
                            // Exited between the listing and the seize.
                            Err(Errno::ESRCH) => continue,
                            // Ours already: a thread seized under another tid that exec'd and
                            // took over the pid (its exec stop is still to be polled).
                            Err(Errno::EPERM) if watch.traces(tid) => pending.push(tid),
                            // A zombie cannot be seized: a thread that exited (an exec by
                            // another thread kills them all) but is still listed, or a leader
                            // killed by such an exec. The next listing tells.
                            Err(Errno::EPERM) if tid != pid && thread_exited(pid, tid) => continue,
                            // Or the exec completed just now: try again, a few times.
                            Err(Errno::EPERM) if tid == pid && exec_under_way(pid) => break,
                            Err(Errno::EPERM) if tid == pid && leader_retries < 3 => {
                                leader_retries += 1;
                                std::thread::sleep(Duration::from_millis(1));
                                break;
                            }
                            Err(Errno::EPERM) if stopped.threads.is_empty() => {
                                failure = Some(super::seize_refused(pid));
                                break;
                            }
                            Err(errno) => {
                                failure = Some(Error::Ptrace {
                                    operation: "PTRACE_SEIZE",
                                    tid,
                                    errno,
                                });
                                break;
                            }
                        }
                    }
                    if rounds == 1 && failure.is_none() {
                        failure = crate::fault::stall_point("seized", cancel).err();
                    }
                    pending.retain(|&tid| match sys::interrupt(Pid::from_raw(tid)) {
                        Ok(()) | Err(Errno::ESRCH) => true,
                        Err(errno) => {
                            let _ = sys::detach(Pid::from_raw(tid), None);
                            failure.get_or_insert(Error::Ptrace {
                                operation: "PTRACE_INTERRUPT",
                                tid,
                                errno,
                            });
                            false
                        }
                    });
                }
            }
            match poll_all(&mut stopped.threads, &mut pending)? {
                Polled::Nothing => {}
                Polled::Changed => changed = true,
                Polled::Execed => {
                    // Every thread of the old image is gone; the one that exec'd (now `pid`)
                    // sits in its exec stop. Let it go and start over.
                    tracing::debug!(pid, "the target called execve while being stopped");
                    match sys::detach(Pid::from_raw(pid), None) {
                        Ok(()) | Err(Errno::ESRCH) => {}
                        Err(errno) => tracing::warn!(pid, %errno, "detach after exec failed"),
                    }
                    stopped.threads.clear();
                    pending.clear();
                    changed = true;
                }
            }
            if changed {
                idle = 0;
                continue;
            }
            if pending.is_empty() && failure.is_none() && !exec_pending {
                match leader_state(pid) {
                    // The held leader was killed by an exec under way (it reports nothing
                    // until the exec releases it): not stopped any more. Look again.
                    Some(b't') | None if drop_dead_leader(pid, &mut stopped.threads) => {}
                    // Stopped by us (or gone: the checks below tell).
                    Some(b't') | None => break,
                    // The leader exited (pthread_exit) and the other threads live on: it will
                    // never report a stop. (During an exec it is a zombie only until the other
                    // threads are reaped, which counts as a change.)
                    Some(b'Z') if !stopped.threads.is_empty() && leader_exited_alone(pid) => {
                        stopped.forget_thread(pid);
                        break;
                    }
                    Some(b'Z') if idle > 200 => {
                        stopped.forget_thread(pid);
                        break;
                    }
                    // Mid-exec: the exec'ing thread took over the pid and stops soon.
                    Some(_) if idle <= 200 && stopped.threads.iter().any(|t| t.tid == pid) => {}
                    Some(_) => break,
                }
            }
            cancel.check()?;
            idle += 1;
            back_off(idle);
        }
        let leader_held = stopped.threads.iter().any(|t| t.tid == pid);
        if !leader_held && (stopped.threads.is_empty() || !leader_exited_alone(pid)) {
            return Err(Error::TargetExited { pid });
        }
        stopped
            .threads
            .sort_unstable_by_key(|t| (t.tid != pid, t.tid));
        stopped.stop_duration = start.elapsed();
        tracing::debug!(
            threads = stopped.threads.len(),
            micros = stopped.stop_duration.as_micros() as u64,
            "all threads stopped"
        );
        Ok(stopped)
    }

    /// A process whose threads the caller has already seized and holds in ptrace stops (a
    /// watcher that caught a signal: see `crate::watch`). Nothing is seized, interrupted or
    /// waited for here; the threads are put leader first. Like any `StoppedProcess` it
    /// detaches them all when dropped — call [`StoppedProcess::release`] to get them back still
    /// stopped and traced instead.
    pub fn from_stopped_threads(
        pid: i32,
        mut threads: Vec<StoppedThread>,
        options: Options,
    ) -> StoppedProcess {
        threads.sort_unstable_by_key(|t| (t.tid != pid, t.tid));
        StoppedProcess {
            pid,
            threads,
            stopped_at: Instant::now(),
            options,
            stop_duration: Duration::ZERO,
        }
    }

    /// Hand the threads back to the caller, still stopped and still traced: nothing is
    /// detached, now or on drop. For a caller that goes on tracing them (resuming each its own
    /// way) after a [`crate::dump_stopped`].
    pub fn release(mut self) -> Vec<StoppedThread> {
        std::mem::take(&mut self.threads)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn threads(&self) -> &[StoppedThread] {
        &self.threads
    }

    /// The ptrace options the threads were seized with (a borrowed thread gets them back).
    pub fn options(&self) -> Options {
        self.options
    }

    /// When the first thread was seized.
    pub fn stopped_at(&self) -> Instant {
        self.stopped_at
    }

    /// Forget a thread that exited while stopped (it was reaped by [`wait_for_stop`]).
    pub fn forget_thread(&mut self, tid: i32) {
        self.threads.retain(|t| t.tid != tid);
    }

    /// Detach from every thread, letting the process run on. Returns how long that took.
    pub fn resume(mut self) -> Duration {
        let start = Instant::now();
        self.detach_all();
        start.elapsed()
    }

    fn detach_all(&mut self) {
        let mut killed = Vec::new();
        for thread in self.threads.drain(..) {
            match sys::detach(Pid::from_raw(thread.tid), thread.pending_signal) {
                Ok(()) => {}
                // Killed while held: a thread let go before it exec'd, and the exec killed the
                // others. A traced thread that dies stays a zombie until its tracer reaps it,
                // and the exec waits for that (and a later seize of the target for the exec).
                Err(Errno::ESRCH) if thread.tid != self.pid => killed.push(thread.tid),
                Err(Errno::ESRCH) => {}
                Err(errno) => tracing::warn!(tid = thread.tid, %errno, "detach failed"),
            }
        }
        reap_killed(self.pid, &killed);
    }
}

/// Reap threads of `pid` that died while this process held them, waiting at most
/// [`REAP_KILLED_TIME`] (a thread killed in a ptrace stop is a zombie within microseconds).
fn reap_killed(pid: i32, tids: &[i32]) {
    let deadline = Instant::now() + REAP_KILLED_TIME;
    let mut left = tids.to_vec();
    let mut idle = 0;
    while !left.is_empty() {
        // Nothing yet: still dying. Anything else (its end, or not ours any more): done.
        left.retain(|&tid| matches!(sys::poll_thread(Pid::from_raw(tid)), Ok(None)));
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        idle += 1;
        back_off(idle);
    }
    if !left.is_empty() {
        tracing::warn!(pid, threads = ?left, "threads killed while stopped were not reaped in time");
    }
}

/// How long [`reap_killed`] waits.
const REAP_KILLED_TIME: Duration = Duration::from_millis(500);

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// A PTRACE_SEIZE can deadlock with an exec. The exec'ing thread holds the target's
/// `cred_guard_mutex` from the start of execve, and PTRACE_SEIZE of any thread of the target
/// waits for that mutex (interruptibly, but restarted); the exec meanwhile kills the other
/// threads and waits until they are released, and a thread seized already is released only
/// when its tracer reaps it — which the tracer, waiting in PTRACE_SEIZE, cannot do. Any thread
/// of the tracer's process may reap its tracees, though: while one seize takes more than a
/// couple of milliseconds, a helper thread reaps the target's dead threads that this stop
/// traces (the polls then find them gone), the exec completes, and the seize returns.
struct SeizeWatch {
    pid: i32,
    /// The tracer thread (`TracerPid` names a thread).
    tracer: i32,
    /// Odd while a seize is in progress; bumped at every start and end.
    seizing: AtomicU64,
    done: AtomicBool,
}

/// Ends the helper thread when dropped (also on a panic), before the scope joins it.
struct StopWatching<'a> {
    watch: &'a SeizeWatch,
    helper: Option<std::thread::Thread>,
}

impl Drop for StopWatching<'_> {
    fn drop(&mut self) {
        self.watch.done.store(true, Ordering::Release);
        if let Some(helper) = &self.helper {
            helper.unpark();
        }
    }
}

impl SeizeWatch {
    /// How often the helper looks; a seize seen in progress twice in a row is stuck.
    const TICK: Duration = Duration::from_millis(2);

    fn new(pid: i32) -> SeizeWatch {
        SeizeWatch {
            pid,
            tracer: sys::gettid().as_raw(),
            seizing: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }

    fn run<'scope, 'env>(
        &'env self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
    ) -> StopWatching<'env> {
        let helper = std::thread::Builder::new()
            .name("snapdump-seize-watch".into())
            .spawn_scoped(scope, move || self.watch())
            .map_err(|e| tracing::debug!("no seize watch thread: {e}"))
            .ok()
            .map(|handle| handle.thread().clone());
        StopWatching {
            watch: self,
            helper,
        }
    }

    fn seize(&self, tid: i32, options: Options) -> nix::Result<()> {
        self.seizing.fetch_add(1, Ordering::AcqRel);
        let result = sys::seize(Pid::from_raw(tid), options);
        self.seizing.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Whether the stopping thread traces thread `tid` of the target.
    fn traces(&self, tid: i32) -> bool {
        std::fs::read(super::proc_path(self.pid, &format!("task/{tid}/status")))
            .is_ok_and(|status| super::procfs::parse_status(&status).tracer_pid == self.tracer)
    }

    fn watch(&self) {
        let mut last = 0;
        while !self.done.load(Ordering::Acquire) {
            std::thread::park_timeout(Self::TICK);
            let now = self.seizing.load(Ordering::Acquire);
            if now % 2 == 1 && now == last {
                self.reap_dead_tracees();
            }
            last = now;
        }
    }

    /// Reap the target's threads that are zombies traced by the stopping thread (not the
    /// leader: a leader is reaped with its process, and the exec needs only its death).
    fn reap_dead_tracees(&self) {
        for tid in super::task_ids(self.pid).unwrap_or_default() {
            if tid == self.pid {
                continue;
            }
            if self.traces(tid)
                && thread_exited(self.pid, tid)
                && let Ok(Some(WaitStatus::Exited(..) | WaitStatus::Signaled(..))) =
                    sys::poll_thread(Pid::from_raw(tid))
            {
                tracing::debug!(
                    pid = self.pid,
                    tid,
                    "reaped a thread killed by an exec while a seize waited for it"
                );
            }
        }
    }
}

/// What polling the traced threads found.
enum Polled {
    Nothing,
    /// A thread stopped or was found gone.
    Changed,
    /// A seized thread called execve: the process is a new image.
    Execed,
}

/// What one poll of one traced thread found.
enum Seen {
    Running,
    Stopped(StoppedThread),
    Gone,
    Execed,
}

/// Poll every pending thread (moving those that stopped into `held`) and every held one
/// (dropping those that died). Never blocks.
fn poll_all(held: &mut Vec<StoppedThread>, pending: &mut Vec<i32>) -> Result<Polled> {
    let mut polled = Polled::Nothing;
    let mut still = Vec::with_capacity(pending.len());
    for &tid in pending.iter() {
        match poll(tid)? {
            Seen::Running => still.push(tid),
            Seen::Stopped(thread) => {
                held.push(thread);
                polled = Polled::Changed;
            }
            Seen::Gone => polled = Polled::Changed,
            Seen::Execed => return Ok(Polled::Execed),
        }
    }
    *pending = still;
    // A held thread reports nothing more unless it dies (killed, or by an exec that waits for
    // us to reap it) or the process exec'd.
    let mut index = 0;
    while index < held.len() {
        match poll(held[index].tid)? {
            Seen::Gone => {
                held.swap_remove(index);
                polled = Polled::Changed;
                continue;
            }
            Seen::Execed => return Ok(Polled::Execed),
            Seen::Running | Seen::Stopped(_) => index += 1,
        }
    }
    Ok(polled)
}

/// Poll one seized thread, without blocking.
fn poll(tid: i32) -> Result<Seen> {
    let status = match sys::poll_thread(Pid::from_raw(tid)) {
        Ok(Some(status)) => status,
        Ok(None) | Err(Errno::EINTR) => return Ok(Seen::Running),
        // Not our tracee any more: reaped, or its tid went to the thread that exec'd.
        Err(Errno::ECHILD) => return Ok(Seen::Gone),
        Err(errno) => {
            return Err(Error::Ptrace {
                operation: "waitpid",
                tid,
                errno,
            });
        }
    };
    Ok(match status {
        WaitStatus::PtraceEvent(_, sig, event) if event == Event::PTRACE_EVENT_STOP as i32 => {
            Seen::Stopped(StoppedThread {
                tid,
                pending_signal: None,
                group_stopped: is_stop_signal(sig),
            })
        }
        WaitStatus::PtraceEvent(_, _, event) if event == Event::PTRACE_EVENT_EXEC as i32 => {
            Seen::Execed
        }
        // Stopped on the way to a signal: keep it, deliver it on detach.
        WaitStatus::Stopped(_, sig) => Seen::Stopped(StoppedThread {
            tid,
            pending_signal: Some(sig),
            group_stopped: false,
        }),
        WaitStatus::Exited(..) | WaitStatus::Signaled(..) => Seen::Gone,
        // Other ptrace events were not asked for; wait on.
        WaitStatus::PtraceEvent(..)
        | WaitStatus::PtraceSyscall(_)
        | WaitStatus::Continued(_)
        | WaitStatus::StillAlive => Seen::Running,
    })
}

/// Drop the held leader if it no longer answers ptrace: killed by an exec of another thread.
/// (Another thread's death is reported; a leader's is not while other threads remain, and
/// then its pid goes to the thread that exec'd.) True if it was dropped.
fn drop_dead_leader(pid: i32, held: &mut Vec<StoppedThread>) -> bool {
    let dead = held.iter().any(|t| t.tid == pid)
        && sys::get_siginfo(Pid::from_raw(pid)) == Err(Errno::ESRCH);
    if dead {
        tracing::debug!(pid, "the held leader died while stopping (an exec)");
        held.retain(|t| t.tid != pid);
    }
    dead
}

/// The leader's state letter; `None` if it cannot be read.
fn leader_state(pid: i32) -> Option<u8> {
    super::thread_state(pid, pid)
}

/// Whether thread `tid` is a zombie or gone.
fn thread_exited(pid: i32, tid: i32) -> bool {
    matches!(super::thread_state(pid, tid), Some(b'Z' | b'X') | None)
}

/// Whether the leader is a zombie while other threads remain and some of them are dying: an
/// exec by another thread, which killed the others (SIGKILL) and has not taken over the
/// leader's pid yet, or an `exit` from another thread.
pub(crate) fn exec_under_way(pid: i32) -> bool {
    leader_state(pid) == Some(b'Z') && others_dying(pid).unwrap_or(false)
}

/// Whether the leader exited on its own (`pthread_exit`) and the other threads live on: the
/// leader is a zombie, another thread lives and none is dying. Such a process runs on for as
/// long as it likes; it is dumped without the leader.
pub(crate) fn leader_exited_alone(pid: i32) -> bool {
    leader_state(pid) == Some(b'Z') && others_dying(pid) == Some(false)
}

/// Of the threads other than the leader: `Some(true)` if one is exiting, `Some(false)` if at
/// least one lives and none is exiting, `None` if there are none.
pub(crate) fn others_dying(pid: i32) -> Option<bool> {
    let others: Vec<i32> = super::task_ids(pid)
        .ok()?
        .into_iter()
        .filter(|&tid| tid != pid)
        .collect();
    if others.is_empty() {
        return None;
    }
    Some(others.iter().any(|&tid| thread_dying(pid, tid)))
}

/// Whether thread `tid` is exiting: a zombie or gone, in `do_exit` (`PF_EXITING`), or with
/// SIGKILL pending, which an exec or an `exit_group` sends every other thread (in the
/// thread's own pending set, until it takes the signal and starts to exit).
fn thread_dying(pid: i32, tid: i32) -> bool {
    let Some(stat) = super::thread_stat(pid, tid) else {
        return true;
    };
    if matches!(stat.state, b'Z' | b'X' | b'x') || stat.flags & super::procfs::PF_EXITING != 0 {
        return true;
    }
    let sigkill = 1u64 << (libc::SIGKILL - 1);
    std::fs::read(super::proc_path(pid, &format!("task/{tid}/status"))).map_or(true, |bytes| {
        super::procfs::parse_status(&bytes).sig_pending & sigkill != 0
    })
}

/// Between polls that found nothing: yield at first (a stop takes microseconds), then sleep,
/// up to 1 ms.
pub(crate) fn back_off(idle: u32) {
    if idle < 16 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50 << (idle - 16).min(4)));
    }
}
