//! The raw calls behind the watcher's tracer (`crate::watch`): waiting for any tracee, and
//! resuming one with a signal number kept as a plain integer.
//!
//! nix's `WaitStatus` and `ptrace::cont` take a `Signal`, which cannot hold real-time signals
//! (glibc's SIGRTMIN and SIGRTMIN+1, timers, applications' own): a watcher that used them would
//! fail on the first such signal, after waitpid had already consumed the stop, leaving the
//! thread stopped for good. Everything here keeps signals as `i32`.

use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use super::{Errno, Pid};

/// A state change of a traced thread, decoded from a raw waitpid status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceStatus {
    /// The thread exited with this code.
    Exited(i32),
    /// The thread was killed by `signal`.
    Killed { signal: i32, core_dumped: bool },
    /// Signal-delivery-stop: the thread is about to receive `signal`.
    Signal(i32),
    /// A `PTRACE_EVENT_*` stop; `signal` is SIGTRAP, or the stop signal of a group-stop
    /// (reported as `PTRACE_EVENT_STOP` to a seizing tracer).
    Event { event: i32, signal: i32 },
    /// A syscall-stop (never asked for by the watcher).
    Syscall,
    /// Resumed by SIGCONT (only with `WCONTINUED`, which the watcher does not ask for).
    Continued,
}

/// Decode a raw waitpid status.
pub fn decode_status(status: i32) -> TraceStatus {
    if libc::WIFEXITED(status) {
        TraceStatus::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        TraceStatus::Killed {
            signal: libc::WTERMSIG(status),
            core_dumped: libc::WCOREDUMP(status),
        }
    } else if libc::WIFSTOPPED(status) {
        let signal = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        if event != 0 {
            TraceStatus::Event { event, signal }
        } else if signal == (libc::SIGTRAP | 0x80) {
            TraceStatus::Syscall
        } else {
            TraceStatus::Signal(signal)
        }
    } else {
        TraceStatus::Continued
    }
}

/// Collect one state change of any tracee of the calling thread, without blocking:
/// `waitpid(-1, __WALL | __WNOTHREAD | WNOHANG)`. `Ok(None)`: nothing happened yet;
/// `Err(ECHILD)`: the calling thread has no tracees (nor children) left.
///
/// `__WNOTHREAD` keeps other threads' children out of it: a watcher running in its own thread
/// never reaps a child process someone else in the program is waiting for.
pub fn poll_any_tracee() -> nix::Result<Option<(i32, TraceStatus)>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live, writable c_int for the duration of the call; waitpid
        // writes only there.
        let ret = unsafe {
            libc::waitpid(
                -1,
                &mut status,
                libc::__WALL | libc::__WNOTHREAD | libc::WNOHANG,
            )
        };
        match Errno::result(ret) {
            Ok(0) => return Ok(None),
            Ok(tid) => return Ok(Some((tid, decode_status(status)))),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
}

fn ptrace_raw(request: libc::c_uint, tid: Pid, data: usize) -> nix::Result<()> {
    // SAFETY: CONT, LISTEN and DETACH take no pointer: `addr` is ignored and `data` is a plain
    // signal number passed in the pointer-sized argument, as ptrace(2) specifies.
    let ret = unsafe {
        libc::ptrace(
            request,
            tid.as_raw(),
            std::ptr::null_mut::<libc::c_void>(),
            data as *mut libc::c_void,
        )
    };
    Errno::result(ret).map(drop)
}

/// `PTRACE_CONT`: resume a stopped tracee, delivering `signal` (0: none).
pub fn cont(tid: Pid, signal: i32) -> nix::Result<()> {
    ptrace_raw(libc::PTRACE_CONT, tid, signal.max(0) as usize)
}

/// `PTRACE_LISTEN`: let a tracee in group-stop wait for SIGCONT as an untraced one would, while
/// still reporting to the tracer. Job control keeps working.
pub fn listen(tid: Pid) -> nix::Result<()> {
    ptrace_raw(libc::PTRACE_LISTEN, tid, 0)
}

/// `PTRACE_DETACH`, delivering `signal` (0: none). A thread in group-stop stays stopped.
pub fn detach(tid: Pid, signal: i32) -> nix::Result<()> {
    ptrace_raw(libc::PTRACE_DETACH, tid, signal.max(0) as usize)
}

/// `PTRACE_GETEVENTMSG`: the new thread's id after a clone event, the exit status at an exit
/// event, the former thread id after an exec event.
pub fn event_message(tid: Pid) -> nix::Result<u64> {
    nix::sys::ptrace::getevent(tid).map(|m| m as u64)
}

/// Block SIGCHLD in the calling thread; returns the previous mask for [`restore_mask`].
/// Threads created afterwards inherit the blocked mask.
pub fn block_sigchld() -> nix::Result<SigSet> {
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&SigSet::from(Signal::SIGCHLD)),
        Some(&mut old),
    )?;
    Ok(old)
}

/// Put back a mask saved by [`block_sigchld`].
pub fn restore_mask(old: &SigSet) -> nix::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old), None)
}

/// Wait at most `timeout` for a SIGCHLD (a tracee stopped or exited), consuming it. Returns
/// whether one came. SIGCHLD must be blocked in the calling thread ([`block_sigchld`]); if it
/// is not blocked in the process's other threads, one of them may take it instead and this
/// simply waits for the timeout. Interrupted by any handled signal (Ctrl-C), returns `false`.
pub fn wait_sigchld(timeout: Duration) -> bool {
    let set = SigSet::from(Signal::SIGCHLD);
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid sigset_t (SigSet is a transparent wrapper and `as_ref` borrows
    // it), `timeout` a valid timespec, both live for the call; a null siginfo pointer is allowed.
    let ret = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &timeout) };
    ret == libc::SIGCHLD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decode_with_any_signal_number() {
        // exit(3), killed by SIGABRT with core, stopped for SIGRTMIN+2, PTRACE_EVENT_STOP with
        // SIGSTOP (group-stop), PTRACE_EVENT_CLONE, syscall-stop.
        assert_eq!(decode_status(3 << 8), TraceStatus::Exited(3));
        assert_eq!(
            decode_status(libc::SIGABRT | 0x80),
            TraceStatus::Killed {
                signal: libc::SIGABRT,
                core_dumped: true
            }
        );
        assert_eq!(decode_status((36 << 8) | 0x7f), TraceStatus::Signal(36));
        assert_eq!(
            decode_status((libc::PTRACE_EVENT_STOP << 16) | (libc::SIGSTOP << 8) | 0x7f),
            TraceStatus::Event {
                event: libc::PTRACE_EVENT_STOP,
                signal: libc::SIGSTOP
            }
        );
        assert_eq!(
            decode_status((libc::PTRACE_EVENT_CLONE << 16) | (libc::SIGTRAP << 8) | 0x7f),
            TraceStatus::Event {
                event: libc::PTRACE_EVENT_CLONE,
                signal: libc::SIGTRAP
            }
        );
        assert_eq!(
            decode_status(((libc::SIGTRAP | 0x80) << 8) | 0x7f),
            TraceStatus::Syscall
        );
    }
}
