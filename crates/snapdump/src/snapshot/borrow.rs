//! Borrowing one stopped thread of the target to run one system call, and giving it back
//! exactly as it was.
//!
//! The thread starts in a ptrace stop on the signal path (`PTRACE_EVENT_STOP` from
//! `PTRACE_INTERRUPT`, inside `get_signal()`), which is where its registers are saved. It is
//! pointed at a `syscall` instruction that already exists in the target with the call's number
//! and arguments, `orig_rax = -1` (so the kernel does not take the saved state for an
//! interrupted call and "restart" it), and every signal blocked but the unblockable and the
//! synchronous ones. `PTRACE_SYSCALL` runs it from syscall entry to syscall exit; from the exit
//! stop, `PTRACE_INTERRUPT` + `PTRACE_CONT` bring it to a `PTRACE_EVENT_STOP` on the signal path
//! again, *before* it returns to user space: there the original registers, FP/XSTATE, signal
//! mask and ptrace options are put back. When the thread is later detached, the kernel's
//! `arch_do_signal_or_restart()` runs on the original `orig_rax`/`rax`, so an interrupted
//! `read()` (ERESTARTSYS), `nanosleep()` (ERESTART_RESTARTBLOCK, `restart_block` untouched by
//! the injected call) or futex wait restarts exactly as it would have without us.
//!
//! Every path out — errors, a dead child, a signal arriving, a panic (Drop) — goes through
//! [`BorrowedThread::give_back`], which first drives the thread to that signal-path stop (an
//! injected call that has not been entered yet is cancelled with `orig_rax = -1`).
//!
//! A thread borrowed with a deadline ([`BorrowedThread::with_deadline`], the cleanup path) is
//! polled instead of waited for: a thread that never reports again (it was killed by an exec
//! of another thread and its pid went to that thread) ends in [`BorrowError::Gone`] or
//! [`BorrowError::TimedOut`], never in a wait that lasts forever.

use std::time::{Duration, Instant};

use nix::sys::ptrace::{Event, Options};

use crate::capture::reg;
use crate::sys::{self, Errno, Pid, Signal, WaitStatus, inject};

/// Where the borrowed thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// In a `PTRACE_EVENT_STOP` on the signal path: registers may be set and restored here.
    SignalStop,
    /// Stopped at the entry of the injected call (it has not run yet).
    SyscallEntry,
    /// Stopped inside the injected call at a clone/fork event.
    ForkEvent,
    /// Stopped at the exit of the injected call.
    SyscallExit,
    /// In a signal-delivery stop that arrived after the call started.
    SignalDelivery,
}

/// Why a borrowed thread could not be used or given back.
#[derive(Debug)]
pub(super) enum BorrowError {
    /// The thread (or the whole target) exited.
    Gone,
    /// A ptrace call failed.
    Ptrace {
        operation: &'static str,
        errno: Errno,
    },
    /// The thread stopped in a way the injector does not expect.
    Unexpected(String),
    /// The deadline passed before the thread reported the stop it was driven to.
    TimedOut,
}

impl std::fmt::Display for BorrowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BorrowError::Gone => write!(f, "the thread exited"),
            BorrowError::Ptrace { operation, errno } => write!(f, "{operation} failed: {errno}"),
            BorrowError::Unexpected(what) => write!(f, "{what}"),
            BorrowError::TimedOut => write!(f, "the thread did not stop in time"),
        }
    }
}

fn ptrace_err(operation: &'static str) -> impl Fn(Errno) -> BorrowError {
    move |errno| match errno {
        Errno::ESRCH => BorrowError::Gone,
        errno => BorrowError::Ptrace { operation, errno },
    }
}

/// Signals left deliverable while a thread is borrowed: SIGKILL and SIGSTOP cannot be blocked,
/// and the synchronous ones stay open because the kernel resets a *blocked* forced signal's
/// handler to SIG_DFL for the whole process (`force_sig_info_to_task`).
const SYNCHRONOUS: [Signal; 6] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGFPE,
    Signal::SIGSYS,
];

fn injection_sigmask() -> u64 {
    let mut mask = !0u64;
    for sig in SYNCHRONOUS
        .iter()
        .chain(&[Signal::SIGKILL, Signal::SIGSTOP])
    {
        mask &= !(1u64 << (*sig as i32 - 1));
    }
    mask
}

/// How many stops one injected call may go through (signals before the call, fork events)
/// before the injector gives up on it: a bound on the loop, never reached in practice.
const MAX_STOPS: usize = 256;

/// After the deadline, how long giving the thread back may still take: the registers must be
/// put back whatever the deadline said.
const RESTORE_GRACE: Duration = Duration::from_secs(1);

/// The result of one injected call.
#[derive(Clone, Copy, Debug)]
pub(super) struct CallResult {
    /// `rax` at syscall exit: the return value or `-errno`.
    pub ret: i64,
    /// From setting the registers to the syscall-exit stop.
    pub call: Duration,
}

/// A stopped thread on loan. Give it back with [`BorrowedThread::give_back`]; dropping it gives
/// it back too (best effort, for panics).
pub(super) struct BorrowedThread {
    tgid: Pid,
    tid: Pid,
    regs: Vec<u8>,
    fpregs: Option<Vec<u8>>,
    xstate: Option<Vec<u8>>,
    sigmask: u64,
    /// The ptrace options to leave on the thread.
    options: Options,
    at: At,
    /// Registers, mask or options were changed and must be restored.
    dirty: bool,
    /// Signals dequeued while the thread was borrowed, raised again after the restore.
    reraise: Vec<Signal>,
    /// A synchronous signal the injected call itself caused (it is dropped, not re-raised).
    fault: Option<Signal>,
    /// Poll instead of blocking, and give up at this instant.
    deadline: Option<Instant>,
}

impl BorrowedThread {
    /// Take a thread that is in a `PTRACE_EVENT_STOP` (from `PTRACE_INTERRUPT`) and save its
    /// state. `options` are the ptrace options to leave on it afterwards.
    pub fn new(tgid: i32, tid: i32, options: Options) -> Result<BorrowedThread, BorrowError> {
        let id = Pid::from_raw(tid);
        let regs = sys::get_regset(id, sys::NT_PRSTATUS, reg::COUNT * 8)
            .map_err(ptrace_err("PTRACE_GETREGSET NT_PRSTATUS"))?;
        if regs.len() != reg::COUNT * 8 {
            return Err(BorrowError::Unexpected(format!(
                "NT_PRSTATUS is {} bytes, not {} (a 32-bit thread?)",
                regs.len(),
                reg::COUNT * 8
            )));
        }
        let sigmask = inject::get_sigmask(id).map_err(ptrace_err("PTRACE_GETSIGMASK"))?;
        Ok(BorrowedThread {
            tgid: Pid::from_raw(tgid),
            tid: id,
            regs,
            fpregs: sys::get_regset(id, sys::NT_PRFPREG, 512).ok(),
            xstate: sys::get_regset(id, sys::NT_X86_XSTATE, 16 * 1024).ok(),
            sigmask,
            options,
            at: At::SignalStop,
            dirty: false,
            reraise: Vec::new(),
            fault: None,
            deadline: None,
        })
    }

    /// Never wait past `deadline` for the thread (the give-back gets [`RESTORE_GRACE`] more).
    pub fn with_deadline(mut self, deadline: Instant) -> BorrowedThread {
        self.deadline = Some(deadline);
        self
    }

    /// A synchronous signal the call raised (a bad address, a seccomp SIGSYS), if any.
    pub fn fault(&self) -> Option<Signal> {
        self.fault
    }

    /// Run system call `nr` with `args` at `syscall_addr` (the address of a `0f 05` in the
    /// target). `on_fork` is called at a clone/fork event with the new task's pid (in our pid
    /// namespace), while the thread is still stopped inside the call. Returns at the
    /// syscall-exit stop; the thread is then brought to the signal path but not restored.
    pub fn call(
        &mut self,
        syscall_addr: u64,
        nr: u64,
        args: [u64; 6],
        on_fork: &mut dyn FnMut(i32),
    ) -> Result<CallResult, BorrowError> {
        if self.at != At::SignalStop {
            return Err(BorrowError::Unexpected(format!(
                "thread {} is not at a signal-path stop ({:?})",
                self.tid, self.at
            )));
        }
        let mut regs = self.regs.clone();
        set_reg(&mut regs, reg::RIP, syscall_addr);
        set_reg(&mut regs, reg::RAX, nr);
        set_reg(&mut regs, reg::ORIG_RAX, u64::MAX);
        for (index, value) in [reg::RDI, reg::RSI, reg::RDX, reg::R10, reg::R8, reg::R9]
            .into_iter()
            .zip(args)
        {
            set_reg(&mut regs, index, value);
        }
        // Everything that touches the thread happens back to back from here: the window in
        // which the dumper dying would leave the thread pointing at the injected call is the
        // call itself plus a handful of ptrace round trips.
        let start = Instant::now();
        self.dirty = true;
        inject::set_sigmask(self.tid, injection_sigmask())
            .map_err(ptrace_err("PTRACE_SETSIGMASK"))?;
        inject::set_options(
            self.tid,
            Options::PTRACE_O_TRACESYSGOOD
                | Options::PTRACE_O_TRACECLONE
                | Options::PTRACE_O_TRACEFORK
                | Options::PTRACE_O_TRACEVFORK,
        )
        .map_err(ptrace_err("PTRACE_SETOPTIONS"))?;
        sys::set_regset(self.tid, sys::NT_PRSTATUS, &regs)
            .map_err(ptrace_err("PTRACE_SETREGSET NT_PRSTATUS"))?;
        inject::resume_to_syscall(self.tid, None).map_err(ptrace_err("PTRACE_SYSCALL"))?;
        let mut entered = false;
        for stops in 0.. {
            if stops == MAX_STOPS {
                return Err(BorrowError::Unexpected(format!(
                    "thread {} stopped {MAX_STOPS} times without finishing the injected call",
                    self.tid
                )));
            }
            match self.wait()? {
                WaitStatus::PtraceSyscall(_) if !entered => {
                    entered = true;
                    self.at = At::SyscallEntry;
                    inject::resume_to_syscall(self.tid, None)
                        .map_err(ptrace_err("PTRACE_SYSCALL"))?;
                }
                WaitStatus::PtraceSyscall(_) => {
                    self.at = At::SyscallExit;
                    break;
                }
                WaitStatus::PtraceEvent(_, _, event)
                    if event == Event::PTRACE_EVENT_CLONE as i32
                        || event == Event::PTRACE_EVENT_FORK as i32
                        || event == Event::PTRACE_EVENT_VFORK as i32 =>
                {
                    self.at = At::ForkEvent;
                    let child = inject::event_message(self.tid)
                        .map_err(ptrace_err("PTRACE_GETEVENTMSG"))?;
                    on_fork(child as i32);
                    inject::resume_to_syscall(self.tid, None)
                        .map_err(ptrace_err("PTRACE_SYSCALL"))?;
                }
                WaitStatus::PtraceEvent(..) => {
                    // A group-stop or other trap before the call: it is on the signal path,
                    // before user space; go on.
                    inject::resume_to_syscall(self.tid, None)
                        .map_err(ptrace_err("PTRACE_SYSCALL"))?;
                }
                WaitStatus::Stopped(_, signal) => {
                    self.note_signal(signal)?;
                    if entered || self.fault.is_some() {
                        // A signal after the call started and no exit stop, or the `syscall`
                        // instruction itself faulted (resuming would fault again, forever):
                        // never let it reach user space; go to the signal path and give up.
                        self.at = At::SignalDelivery;
                        return Err(BorrowError::Unexpected(format!(
                            "signal {signal} stopped thread {} {} the injected call",
                            self.tid,
                            if entered { "inside" } else { "before" }
                        )));
                    }
                    // Before the call: the thread is in get_signal() and goes on to the
                    // `syscall` instruction with the signal suppressed (raised again later).
                    inject::resume_to_syscall(self.tid, None)
                        .map_err(ptrace_err("PTRACE_SYSCALL"))?;
                }
                other => {
                    return Err(BorrowError::Unexpected(format!(
                        "thread {} reported {other:?} during the injected call",
                        self.tid
                    )));
                }
            }
        }
        let call = start.elapsed();
        let regs_now = sys::get_regset(self.tid, sys::NT_PRSTATUS, reg::COUNT * 8)
            .map_err(ptrace_err("PTRACE_GETREGSET NT_PRSTATUS"))?;
        let ret = get_reg(&regs_now, reg::RAX) as i64;
        self.reach_signal_stop()?;
        Ok(CallResult { ret, call })
    }

    /// Remember a signal that stopped the thread while borrowed.
    fn note_signal(&mut self, signal: Signal) -> Result<(), BorrowError> {
        let (_, code) = inject::siginfo_code(self.tid).map_err(ptrace_err("PTRACE_GETSIGINFO"))?;
        // A synchronous signal the kernel raised (si_code > 0) was caused by the injected
        // call; anything else was sent by someone and is raised again after the restore.
        if SYNCHRONOUS.contains(&signal) && code > 0 {
            self.fault = Some(signal);
        } else if !self.reraise.contains(&signal) {
            self.reraise.push(signal);
        }
        Ok(())
    }

    /// The thread's next report: blocking, or polled until the deadline if there is one.
    fn wait(&mut self) -> Result<WaitStatus, BorrowError> {
        let result = match self.deadline {
            None => sys::wait_thread(self.tid),
            Some(deadline) => {
                let mut idle = 0;
                loop {
                    match sys::poll_thread(self.tid) {
                        Ok(Some(status)) => break Ok(status),
                        Ok(None) | Err(Errno::EINTR) => {}
                        Err(errno) => break Err(errno),
                    }
                    if Instant::now() >= deadline {
                        return Err(BorrowError::TimedOut);
                    }
                    crate::process::session::back_off(idle);
                    idle += 1;
                }
            }
        };
        match result {
            // ECHILD: not our tracee any more. A leader killed by another thread's exec is
            // released by that exec, which takes over its pid.
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                Err(BorrowError::Gone)
            }
            Ok(status) => Ok(status),
            Err(errno) => Err(BorrowError::Ptrace {
                operation: "waitpid",
                errno,
            }),
        }
    }

    /// Drive the thread to a `PTRACE_EVENT_STOP` on the signal path, whatever stop it is in.
    fn reach_signal_stop(&mut self) -> Result<(), BorrowError> {
        for _ in 0..16 {
            match self.at {
                At::SignalStop => return Ok(()),
                At::SyscallEntry => {
                    // The call has not run: cancel it and go to its exit stop.
                    let mut regs = sys::get_regset(self.tid, sys::NT_PRSTATUS, reg::COUNT * 8)
                        .map_err(ptrace_err("PTRACE_GETREGSET NT_PRSTATUS"))?;
                    set_reg(&mut regs, reg::ORIG_RAX, u64::MAX);
                    sys::set_regset(self.tid, sys::NT_PRSTATUS, &regs)
                        .map_err(ptrace_err("PTRACE_SETREGSET NT_PRSTATUS"))?;
                    self.resume_until_syscall_exit()?;
                }
                At::ForkEvent => self.resume_until_syscall_exit()?,
                At::SyscallExit | At::SignalDelivery => {
                    // A pending PTRACE_INTERRUPT traps in get_signal() before any signal is
                    // dequeued and before the return to user space.
                    sys::interrupt(self.tid).map_err(ptrace_err("PTRACE_INTERRUPT"))?;
                    inject::resume(self.tid, None).map_err(ptrace_err("PTRACE_CONT"))?;
                    for stops in 0.. {
                        if stops == MAX_STOPS {
                            return Err(BorrowError::Unexpected(format!(
                                "thread {} never reached a signal-path stop",
                                self.tid
                            )));
                        }
                        match self.wait()? {
                            WaitStatus::PtraceEvent(_, _, event)
                                if event == Event::PTRACE_EVENT_STOP as i32 =>
                            {
                                self.at = At::SignalStop;
                                break;
                            }
                            WaitStatus::Stopped(_, signal) => {
                                self.note_signal(signal)?;
                                inject::resume(self.tid, None)
                                    .map_err(ptrace_err("PTRACE_CONT"))?;
                            }
                            _ => {
                                inject::resume(self.tid, None).map_err(ptrace_err("PTRACE_CONT"))?
                            }
                        }
                    }
                }
            }
        }
        Err(BorrowError::Unexpected(format!(
            "thread {} did not reach a signal-path stop",
            self.tid
        )))
    }

    fn resume_until_syscall_exit(&mut self) -> Result<(), BorrowError> {
        inject::resume_to_syscall(self.tid, None).map_err(ptrace_err("PTRACE_SYSCALL"))?;
        for _ in 0..MAX_STOPS {
            match self.wait()? {
                WaitStatus::PtraceSyscall(_) => {
                    self.at = At::SyscallExit;
                    return Ok(());
                }
                WaitStatus::Stopped(_, signal) => {
                    self.note_signal(signal)?;
                    self.at = At::SignalDelivery;
                    return Ok(());
                }
                _ => inject::resume_to_syscall(self.tid, None)
                    .map_err(ptrace_err("PTRACE_SYSCALL"))?,
            }
        }
        Err(BorrowError::Unexpected(format!(
            "thread {} never reached the injected call's exit",
            self.tid
        )))
    }

    /// Bring the thread to the signal path and put back its registers, FP/XSTATE, signal mask
    /// and ptrace options; raise again any signal that arrived meanwhile. The thread stays
    /// stopped. Returns how long it took.
    pub fn give_back(mut self) -> Result<Duration, BorrowError> {
        let start = Instant::now();
        let result = self.restore();
        self.dirty = false;
        result.map(|()| start.elapsed())
    }

    fn restore(&mut self) -> Result<(), BorrowError> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(deadline) = &mut self.deadline {
            *deadline = (*deadline).max(Instant::now() + RESTORE_GRACE);
        }
        self.reach_signal_stop()?;
        sys::set_regset(self.tid, sys::NT_PRSTATUS, &self.regs)
            .map_err(ptrace_err("PTRACE_SETREGSET NT_PRSTATUS"))?;
        // The call does not touch user FP state; write it back only if it changed.
        if let Some(saved) = &self.xstate {
            let now = sys::get_regset(self.tid, sys::NT_X86_XSTATE, 16 * 1024).ok();
            if now.as_ref() != Some(saved) {
                sys::set_regset(self.tid, sys::NT_X86_XSTATE, saved)
                    .map_err(ptrace_err("PTRACE_SETREGSET NT_X86_XSTATE"))?;
            }
        } else if let Some(saved) = &self.fpregs {
            let now = sys::get_regset(self.tid, sys::NT_PRFPREG, 512).ok();
            if now.as_ref() != Some(saved) {
                sys::set_regset(self.tid, sys::NT_PRFPREG, saved)
                    .map_err(ptrace_err("PTRACE_SETREGSET NT_PRFPREG"))?;
            }
        }
        inject::set_sigmask(self.tid, self.sigmask).map_err(ptrace_err("PTRACE_SETSIGMASK"))?;
        inject::set_options(self.tid, self.options).map_err(ptrace_err("PTRACE_SETOPTIONS"))?;
        let check = sys::get_regset(self.tid, sys::NT_PRSTATUS, reg::COUNT * 8)
            .map_err(ptrace_err("PTRACE_GETREGSET NT_PRSTATUS"))?;
        if check != self.regs {
            return Err(BorrowError::Unexpected(format!(
                "thread {} reads back different registers after the restore",
                self.tid
            )));
        }
        for signal in self.reraise.drain(..) {
            // Queued while the thread is stopped; handled normally once it is detached.
            if let Err(errno) = inject::tgkill(self.tgid, self.tid, signal) {
                tracing::warn!(tid = self.tid.as_raw(), %signal, %errno, "cannot raise again");
            }
        }
        Ok(())
    }
}

impl Drop for BorrowedThread {
    fn drop(&mut self) {
        if self.dirty {
            if let Err(e) = self.restore() {
                tracing::error!(
                    tid = self.tid.as_raw(),
                    "could not restore a borrowed thread: {e}"
                );
            }
            self.dirty = false;
        }
    }
}

pub(super) fn get_reg(regs: &[u8], index: usize) -> u64 {
    regs.get(index * 8..index * 8 + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn set_reg(regs: &mut [u8], index: usize, value: u64) {
    regs[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_mask_leaves_unblockable_and_synchronous_signals_open() {
        let mask = injection_sigmask();
        for sig in [
            Signal::SIGKILL,
            Signal::SIGSTOP,
            Signal::SIGSEGV,
            Signal::SIGSYS,
            Signal::SIGTRAP,
        ] {
            assert_eq!(mask & (1 << (sig as i32 - 1)), 0, "{sig}");
        }
        for sig in [
            Signal::SIGINT,
            Signal::SIGCHLD,
            Signal::SIGALRM,
            Signal::SIGUSR1,
        ] {
            assert_ne!(mask & (1 << (sig as i32 - 1)), 0, "{sig}");
        }
        // Real-time signals are blocked too.
        assert_ne!(mask & (1 << 40), 0);
    }
}
