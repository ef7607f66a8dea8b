//! Stopping every thread of a process with ptrace, and letting them all go again.
//!
//! PTRACE_SEIZE + PTRACE_INTERRUPT, never PTRACE_ATTACH: attach queues a SIGSTOP that can
//! outlive the dump and leave the target stopped. Threads are seized until the list in
//! `/proc/PID/task` stops changing (a thread can be created while others are being stopped).
//! A signal that arrives meanwhile is kept and handed back on detach. The [`StoppedProcess`]
//! detaches in `Drop`, so errors and panics release the target too; if the dumper is killed,
//! the kernel detaches its tracees itself.

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
    /// Stop every thread of `pid`. `options` are set on every seized thread.
    pub fn stop(pid: i32, options: Options, cancel: &Cancel) -> Result<StoppedProcess> {
        let start = Instant::now();
        let mut stopped = StoppedProcess {
            pid,
            threads: Vec::new(),
            stopped_at: start,
            options,
            stop_duration: Duration::ZERO,
        };
        // A thread list that stays the same twice running means nobody is left to create more.
        for round in 0.. {
            cancel.check()?;
            let tids = super::task_ids(pid)?;
            let new: Vec<i32> = tids
                .into_iter()
                .filter(|tid| !stopped.threads.iter().any(|t| t.tid == *tid))
                .collect();
            if new.is_empty() {
                break;
            }
            if round > 1000 {
                return Err(Error::Ptrace {
                    operation: "stopping (threads keep appearing)",
                    tid: pid,
                    errno: Errno::EAGAIN,
                });
            }
            let mut seized = Vec::with_capacity(new.len());
            for tid in new {
                match sys::seize(Pid::from_raw(tid), options) {
                    Ok(()) => seized.push(tid),
                    // Exited between the listing and the seize.
                    Err(Errno::ESRCH) => continue,
                    Err(Errno::EPERM) if stopped.threads.is_empty() => {
                        return Err(super::seize_refused(pid));
                    }
                    Err(errno) => {
                        return Err(Error::Ptrace {
                            operation: "PTRACE_SEIZE",
                            tid,
                            errno,
                        });
                    }
                }
            }
            for &tid in &seized {
                match sys::interrupt(Pid::from_raw(tid)) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(errno) => {
                        let _ = sys::detach(Pid::from_raw(tid), None);
                        return Err(Error::Ptrace {
                            operation: "PTRACE_INTERRUPT",
                            tid,
                            errno,
                        });
                    }
                }
            }
            for tid in seized {
                if let Some(thread) = wait_for_stop(tid)? {
                    stopped.threads.push(thread);
                }
            }
        }
        if !stopped.threads.iter().any(|t| t.tid == pid) {
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
        for thread in self.threads.drain(..) {
            match sys::detach(Pid::from_raw(thread.tid), thread.pending_signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => tracing::warn!(tid = thread.tid, %errno, "detach failed"),
            }
        }
    }
}

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Wait until a seized and interrupted thread reports a stop. `None` when it exited instead.
fn wait_for_stop(tid: i32) -> Result<Option<StoppedThread>> {
    let pid = Pid::from_raw(tid);
    loop {
        let status = match sys::wait_thread(pid) {
            Ok(status) => status,
            Err(Errno::ECHILD) => return Ok(None),
            Err(errno) => {
                return Err(Error::Ptrace {
                    operation: "waitpid",
                    tid,
                    errno,
                });
            }
        };
        return Ok(match status {
            WaitStatus::PtraceEvent(_, sig, event) if event == Event::PTRACE_EVENT_STOP as i32 => {
                Some(StoppedThread {
                    tid,
                    pending_signal: None,
                    group_stopped: is_stop_signal(sig),
                })
            }
            // Stopped on the way to a signal: keep it, deliver it on detach.
            WaitStatus::Stopped(_, sig) => Some(StoppedThread {
                tid,
                pending_signal: Some(sig),
                group_stopped: false,
            }),
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => None,
            // Other ptrace events were not asked for; wait on.
            WaitStatus::PtraceEvent(..) | WaitStatus::PtraceSyscall(_) => continue,
            WaitStatus::Continued(_) | WaitStatus::StillAlive => continue,
        });
    }
}
