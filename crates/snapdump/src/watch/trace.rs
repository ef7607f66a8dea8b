//! The crash and signal watcher: every thread of the target seized with ptrace, never stopped
//! for nothing.
//!
//! Threads are seized (PTRACE_SEIZE: no SIGSTOP, no stop) with `PTRACE_O_TRACECLONE`, so threads
//! created later are traced from their first instruction, `PTRACE_O_TRACEEXEC` (without it an
//! exec would queue a SIGTRAP the process never sent itself) and, for `--on-exit`,
//! `PTRACE_O_TRACEEXIT`. Never `PTRACE_O_EXITKILL`: if the watcher dies, the kernel detaches and
//! the target runs on. Then every state change is answered at once:
//! - a signal-delivery-stop of a watched signal (a crash, or `--signal`) is held and handed to
//!   the watcher as a [`Happening`], which dumps and lets the thread go with the *same* signal;
//!   any other signal is passed on unchanged;
//! - a group-stop (`PTRACE_EVENT_STOP` with SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU) gets
//!   `PTRACE_LISTEN`, so the process stays stopped until SIGCONT exactly as it would untraced;
//! - a new thread's first stop, clone, exec and exit events are continued.
//!
//! All of it — waiting, resuming, reading registers for a dump — runs in the one thread that
//! seized the target: ptrace requests are only accepted from the tracing thread.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use nix::sys::ptrace::Options;

use super::ProcessEnd;
use super::signals;
use crate::Cancel;
use crate::capture::reg;
use crate::error::{Error, Result};
use crate::process::{self, session::StoppedThread};
use crate::sys::watch::{self as raw, TraceStatus};
use crate::sys::{self, Errno, Pid, Signal};

/// How long stopping every thread may take before the watcher goes on with the threads that
/// did stop (a thread in uninterruptible sleep stops only when it wakes up).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest single wait for a SIGCHLD while stopping threads.
const STOP_POLL: Duration = Duration::from_millis(20);

/// What the tracer watches for.
#[derive(Clone, Debug, Default)]
pub(crate) struct Watched {
    pub signals: Vec<i32>,
    pub on_crash: bool,
    pub on_exit: bool,
}

/// A thread held stopped until the watcher has decided (dumped or not) and let it go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Happening {
    /// About to receive `signal`; `crash`: a crash signal whose default action will kill the
    /// process.
    Signal { tid: i32, signal: i32, crash: bool },
    /// Taking the whole process with it: about to die of signal `status` (`at_signal`, a
    /// signal-delivery-stop: every thread still there), or exiting (`PTRACE_EVENT_EXIT`) with
    /// wait status `status`.
    Exit {
        tid: i32,
        status: i32,
        at_signal: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// `PTRACE_EVENT_STOP` with SIGTRAP: an interrupt, or a new thread's first stop.
    Trap,
    /// `PTRACE_EVENT_STOP` with a stop signal: in a group-stop.
    Group,
    /// Signal-delivery-stop.
    Signal(i32),
    /// Another event stop (clone, exec, exit, syscall).
    Event,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    /// In a group-stop, resumed with PTRACE_LISTEN: waiting for SIGCONT.
    Listening,
    /// In a ptrace stop; `held` until the watcher lets it go.
    Stopped {
        stop: Stop,
        held: bool,
    },
}

/// Every thread of one process, seized.
#[derive(Debug)]
pub(crate) struct Tracer {
    pid: i32,
    options: Options,
    watched: Watched,
    threads: BTreeMap<i32, State>,
    /// Processes (not threads) created by a clone with an unusual exit signal, which
    /// PTRACE_O_TRACECLONE traces too: let go at their first stop.
    foreign: BTreeSet<i32>,
    happenings: VecDeque<Happening>,
    ended: Option<ProcessEnd>,
    /// A fatal signal was let through: the process is dying, nothing more to watch for.
    pub dying: bool,
    exit_seen: bool,
}

impl Tracer {
    /// Seize every thread of `pid`, without stopping any.
    pub fn seize(pid: i32, watched: Watched, cancel: &Cancel) -> Result<Tracer> {
        let mut options = Options::PTRACE_O_TRACECLONE | Options::PTRACE_O_TRACEEXEC;
        if watched.on_exit {
            options |= Options::PTRACE_O_TRACEEXIT;
        }
        let mut tracer = Tracer {
            pid,
            options,
            watched,
            threads: BTreeMap::new(),
            foreign: BTreeSet::new(),
            happenings: VecDeque::new(),
            ended: None,
            dying: false,
            exit_seen: false,
        };
        let me = sys::gettid().as_raw();
        // Until a listing of /proc/PID/task holds no thread not seized yet: a thread may be
        // created by one not seized yet (later ones are traced from birth).
        for round in 0.. {
            cancel.check()?;
            let mut new: Vec<i32> = process::task_ids(pid)?
                .into_iter()
                .filter(|tid| !tracer.threads.contains_key(tid))
                .collect();
            // A leader that called pthread_exit is a zombie for good: nothing to seize. The
            // process's end is then the last traced thread's (seen as no tracee left).
            if new.contains(&pid) && process::session::leader_exited_alone(pid) {
                new.retain(|&tid| tid != pid);
            }
            if new.is_empty() {
                break;
            }
            if round > 1000 {
                return Err(Error::Ptrace {
                    operation: "seizing (threads keep appearing)",
                    tid: pid,
                    errno: Errno::EAGAIN,
                });
            }
            for tid in new {
                match sys::seize(Pid::from_raw(tid), options) {
                    Ok(()) => {}
                    Err(Errno::ESRCH) => continue,
                    // Created by a seized thread: already traced, by this thread.
                    Err(Errno::EPERM) if tracer_of(pid, tid) == Some(me) => {}
                    Err(Errno::EPERM) if tracer.threads.is_empty() => {
                        return Err(process::seize_refused(pid));
                    }
                    Err(errno) => {
                        return Err(Error::Ptrace {
                            operation: "PTRACE_SEIZE",
                            tid,
                            errno,
                        });
                    }
                }
                tracer.threads.insert(tid, State::Running);
            }
        }
        if !tracer.threads.contains_key(&pid)
            && (tracer.threads.is_empty() || !process::session::leader_exited_alone(pid))
        {
            return Err(Error::TargetExited { pid });
        }
        if !tracer.threads.contains_key(&pid) {
            // A signal sent to the pid is handed to the leader, and when the leader is not
            // traced the kernel kills the process at once on a fatal one that dumps no core,
            // with no signal stop in any thread (complete_signal's shortcut).
            let unseen: Vec<String> = tracer
                .watched
                .signals
                .iter()
                .filter(|&&s| {
                    signals::kills_by_default(s)
                        && !signals::dumps_core_by_default(s)
                        && signals::has_default_action(pid, s) != Some(false)
                })
                .map(|&s| signals::name(s))
                .collect();
            if !unseen.is_empty() {
                tracing::warn!(
                    "pid {pid}'s main thread has exited, so {} sent to pid {pid} kills it \
                     before it can be caught; sent to one of its threads' ids, it is caught",
                    unseen.join(", ")
                );
            }
        }
        tracing::debug!(pid, threads = tracer.threads.len(), "seized");
        Ok(tracer)
    }

    pub fn options(&self) -> Options {
        self.options
    }

    /// How the process ended, once its leader's end was collected.
    pub fn ended(&self) -> Option<ProcessEnd> {
        self.ended
    }

    /// The next stop the watcher must decide on.
    pub fn next_happening(&mut self) -> Option<Happening> {
        self.happenings.pop_front()
    }

    /// Handle every state change that has happened, without blocking. Watched signals and
    /// exits are queued for [`Tracer::next_happening`], their thread held; everything else is
    /// passed on at once.
    pub fn pump(&mut self) -> Result<()> {
        loop {
            match raw::poll_any_tracee() {
                Ok(Some((tid, status))) => self.on_status(tid, status, false),
                Ok(None) => return Ok(()),
                Err(Errno::ECHILD) => {
                    self.all_gone();
                    return Ok(());
                }
                Err(errno) => {
                    return Err(Error::Ptrace {
                        operation: "waitpid",
                        tid: self.pid,
                        errno,
                    });
                }
            }
        }
    }

    fn all_gone(&mut self) {
        self.threads.clear();
        self.ended.get_or_insert(ProcessEnd::Gone);
    }

    fn on_status(&mut self, tid: i32, status: TraceStatus, stopping: bool) {
        tracing::trace!(tid, ?status, stopping, "tracee");
        // A thread not met yet (its first stop can come before its creator's clone event),
        // or not one of ours.
        if !self.threads.contains_key(&tid) && (self.foreign.contains(&tid) || !self.owns(tid)) {
            self.on_foreign(tid, status);
            return;
        }
        match status {
            TraceStatus::Exited(code) => self.thread_ended(tid, ProcessEnd::Exited(code)),
            TraceStatus::Killed {
                signal,
                core_dumped,
            } => self.thread_ended(
                tid,
                ProcessEnd::Killed {
                    signal,
                    core_dumped,
                },
            ),
            TraceStatus::Continued => {}
            TraceStatus::Signal(signal) => {
                let crash = !self.dying && self.is_crash(signal);
                let watched = crash || (!self.dying && self.watched.signals.contains(&signal));
                // --on-exit: dump a death by signal before it starts, while every thread and
                // the process's /proc files are still there.
                let exit = !watched
                    && self.watched.on_exit
                    && !self.dying
                    && !self.exit_seen
                    && signals::kills_by_default(signal)
                    && signals::has_default_action(self.pid, signal) == Some(true);
                if watched {
                    self.happenings
                        .push_back(Happening::Signal { tid, signal, crash });
                } else if exit {
                    self.exit_seen = true;
                    self.happenings.push_back(Happening::Exit {
                        tid,
                        status: signal,
                        at_signal: true,
                    });
                }
                self.stopped(tid, Stop::Signal(signal), watched || exit, stopping);
            }
            TraceStatus::Event { event, signal } => match event {
                libc::PTRACE_EVENT_STOP => {
                    let stop = if signals::is_stop_signal(signal) {
                        Stop::Group
                    } else {
                        Stop::Trap
                    };
                    self.stopped(tid, stop, false, stopping);
                }
                libc::PTRACE_EVENT_CLONE => {
                    if let Ok(child) = raw::event_message(Pid::from_raw(tid)) {
                        let child = child as i32;
                        if self.owns(child) {
                            // Its first stop may have been collected already.
                            self.threads.entry(child).or_insert(State::Running);
                        } else if !self.threads.contains_key(&child) {
                            self.foreign.insert(child);
                        }
                    }
                    self.stopped(tid, Stop::Event, false, stopping);
                }
                libc::PTRACE_EVENT_EXEC => {
                    // Every other thread is gone; the one that exec'd now has the leader's id.
                    self.threads.retain(|&t, _| t == tid);
                    self.stopped(tid, Stop::Event, false, stopping);
                }
                libc::PTRACE_EVENT_EXIT => {
                    let status = raw::event_message(Pid::from_raw(tid)).unwrap_or(0) as i32;
                    let watched = self.watched.on_exit
                        && !self.dying
                        && !self.exit_seen
                        && self.is_process_exit(tid, status);
                    if watched {
                        self.exit_seen = true;
                        self.happenings.push_back(Happening::Exit {
                            tid,
                            status,
                            at_signal: false,
                        });
                    }
                    self.stopped(tid, Stop::Event, watched, stopping);
                }
                _ => self.stopped(tid, Stop::Event, false, stopping),
            },
            TraceStatus::Syscall => self.stopped(tid, Stop::Event, false, stopping),
        }
    }

    /// Whether a thread has exited (a zombie, or gone).
    fn is_dead(&self, tid: i32) -> bool {
        let stat = std::fs::read(process::proc_path(self.pid, &format!("task/{tid}/stat")));
        match stat.ok().as_deref().and_then(process::procfs::parse_stat) {
            Some(stat) => matches!(stat.state, b'Z' | b'X' | b'x'),
            None => true,
        }
    }

    /// Whether `tid` is a thread of the watched process.
    fn owns(&self, tid: i32) -> bool {
        process::proc_path(self.pid, &format!("task/{tid}")).exists()
    }

    /// A traced process that is not the watched one: detach at its first stop.
    fn on_foreign(&mut self, tid: i32, status: TraceStatus) {
        let signal = match status {
            TraceStatus::Exited(_) | TraceStatus::Killed { .. } => {
                self.foreign.remove(&tid);
                return;
            }
            TraceStatus::Continued => return,
            TraceStatus::Signal(signal) => signal,
            TraceStatus::Event { .. } | TraceStatus::Syscall => 0,
        };
        match raw::detach(Pid::from_raw(tid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(errno) => tracing::warn!(tid, %errno, "detaching a process traced by accident"),
        }
        self.foreign.remove(&tid);
    }

    fn thread_ended(&mut self, tid: i32, how: ProcessEnd) {
        self.threads.remove(&tid);
        // The leader's end is reported last, once every other thread is gone.
        if tid == self.pid {
            self.ended = Some(how);
            self.threads.clear();
        }
    }

    /// A crash signal whose default action is about to run.
    fn is_crash(&self, signal: i32) -> bool {
        self.watched.on_crash
            && signals::CRASH_SIGNALS.contains(&signal)
            && signals::has_default_action(self.pid, signal) == Some(true)
    }

    /// Whether a thread at its exit event takes the process with it: killed by a signal
    /// (which kills every thread), in `exit_group`, or the last thread.
    fn is_process_exit(&self, tid: i32, status: i32) -> bool {
        if status & 0x7f != 0 {
            return true;
        }
        let in_exit_group = sys::get_regset(Pid::from_raw(tid), sys::NT_PRSTATUS, reg::COUNT * 8)
            .ok()
            .and_then(|regs| {
                let at = reg::ORIG_RAX * 8;
                Some(u64::from_le_bytes(regs.get(at..at + 8)?.try_into().ok()?))
            })
            .is_some_and(|nr| nr == libc::SYS_exit_group as u64);
        in_exit_group || !process::read_stat(self.pid).is_ok_and(|s| s.num_threads > 1)
    }

    fn stopped(&mut self, tid: i32, stop: Stop, held: bool, stopping: bool) {
        self.threads.insert(tid, State::Stopped { stop, held });
        if !held && !stopping {
            self.resume(tid);
        }
    }

    /// Let one stopped thread go the way its stop asks for.
    fn resume(&mut self, tid: i32) {
        let Some(State::Stopped { stop, .. }) = self.threads.get(&tid).copied() else {
            return;
        };
        let id = Pid::from_raw(tid);
        let (result, state) = match stop {
            Stop::Group => match raw::listen(id) {
                // Not a group-stop after all.
                Err(Errno::EIO) => (raw::cont(id, 0), State::Running),
                other => (other, State::Listening),
            },
            Stop::Signal(signal) => (raw::cont(id, signal), State::Running),
            Stop::Trap | Stop::Event => (raw::cont(id, 0), State::Running),
        };
        match result {
            // Killed meanwhile: its end is collected later.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(errno) => tracing::warn!(tid, %errno, "resuming a traced thread failed"),
        }
        self.threads.insert(tid, state);
    }

    /// Let a held thread go: a signal it stopped for is delivered as it came.
    pub fn let_go(&mut self, tid: i32) {
        if let Some(State::Stopped { stop, .. }) = self.threads.get(&tid).copied() {
            self.threads
                .insert(tid, State::Stopped { stop, held: false });
            self.resume(tid);
        }
    }

    /// Resume every stopped thread that is not held.
    pub fn resume_all(&mut self) {
        let tids: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, state)| matches!(state, State::Stopped { held: false, .. }))
            .map(|(&tid, _)| tid)
            .collect();
        for tid in tids {
            self.resume(tid);
        }
    }

    /// Interrupt every running thread and wait until each has stopped (or [`STOP_TIMEOUT`]),
    /// then describe the stopped ones for a `StoppedProcess`. Stops that come instead of the
    /// interrupt keep what they carry: a signal is delivered when the thread is resumed, a
    /// watched one is queued as a [`Happening`].
    pub fn stop_all(&mut self) -> Vec<StoppedThread> {
        let running: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, state)| matches!(state, State::Running | State::Listening))
            .map(|(&tid, _)| tid)
            .collect();
        for tid in running {
            match sys::interrupt(Pid::from_raw(tid)) {
                // ESRCH: it died; its end is collected below.
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => tracing::warn!(tid, %errno, "PTRACE_INTERRUPT failed"),
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        // Threads that exited but cannot be collected yet (a leader waits for the others to
        // be gone) never stop: not waited for.
        let mut dead = BTreeSet::new();
        while self
            .threads
            .iter()
            .any(|(tid, s)| matches!(s, State::Running | State::Listening) && !dead.contains(tid))
        {
            match raw::poll_any_tracee() {
                Ok(Some((tid, status))) => self.on_status(tid, status, true),
                Ok(None) => {
                    let now = Instant::now();
                    for (&tid, state) in &self.threads {
                        if matches!(state, State::Running | State::Listening) && self.is_dead(tid) {
                            dead.insert(tid);
                        }
                    }
                    if now >= deadline {
                        tracing::warn!(
                            pid = self.pid,
                            "some threads did not stop within {STOP_TIMEOUT:?}; going on without them"
                        );
                        break;
                    }
                    raw::wait_sigchld((deadline - now).min(STOP_POLL));
                }
                Err(Errno::ECHILD) => self.all_gone(),
                Err(errno) => {
                    tracing::warn!(%errno, "waitpid failed while stopping threads");
                    break;
                }
            }
        }
        self.threads
            .iter()
            .filter_map(|(&tid, state)| match state {
                State::Stopped { stop, .. } => Some(StoppedThread {
                    tid,
                    pending_signal: match stop {
                        Stop::Signal(signal) => Signal::try_from(*signal).ok(),
                        _ => None,
                    },
                    group_stopped: *stop == Stop::Group,
                }),
                _ => None,
            })
            .collect()
    }

    /// Stop every thread and detach from it, each with the signal it was stopped for (a
    /// thread in a group-stop stays stopped, as job control left it). The process runs on
    /// untraced, exactly as before.
    pub fn detach_all(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.stop_all();
        for (tid, state) in std::mem::take(&mut self.threads) {
            let signal = match state {
                State::Stopped {
                    stop: Stop::Signal(signal),
                    ..
                } => signal,
                _ => 0,
            };
            match raw::detach(Pid::from_raw(tid), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => tracing::warn!(tid, %errno, "detach failed"),
            }
        }
        self.happenings.clear();
        tracing::debug!(pid = self.pid, "detached");
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// The thread tracing `tid`, from its `TracerPid`.
fn tracer_of(pid: i32, tid: i32) -> Option<i32> {
    let status = std::fs::read(process::proc_path(pid, &format!("task/{tid}/status"))).ok()?;
    Some(process::procfs::parse_status(&status).tracer_pid)
}
