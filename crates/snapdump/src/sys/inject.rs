//! Raw calls for borrowing a stopped thread to run one system call in the target (the snapshot's
//! `clone()`, and the `wait4()` that reaps it): resuming to the next syscall stop, ptrace
//! options, event messages, the signal mask, seccomp filters, the rseq registration and the
//! syscall-user-dispatch setting of a tracee, and `tgkill`.
//!
//! Every function wants the tracee in a ptrace stop (except [`tgkill`]) and returns the errno
//! unchanged, so callers can tell ESRCH ("gone") from the rest.

use nix::sys::ptrace::{self, Options};

use super::{Errno, Pid, Signal};

/// `PTRACE_GETSIGMASK` / `PTRACE_SETSIGMASK` (include/uapi/linux/ptrace.h).
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
/// `PTRACE_SECCOMP_GET_FILTER`: the classic BPF program of one seccomp filter.
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
/// `PTRACE_GET_RSEQ_CONFIGURATION` (Linux 5.13).
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// `PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG` (Linux 6.4).
const PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG: libc::c_uint = 0x4211;

/// Resume a stopped tracee until the next system-call entry or exit (`PTRACE_SYSCALL`),
/// delivering `signal` if it is in a signal-delivery stop.
pub fn resume_to_syscall(tid: Pid, signal: Option<Signal>) -> nix::Result<()> {
    ptrace::syscall(tid, signal)
}

/// Resume a stopped tracee (`PTRACE_CONT`), delivering `signal` if it is in a signal-delivery
/// stop.
pub fn resume(tid: Pid, signal: Option<Signal>) -> nix::Result<()> {
    ptrace::cont(tid, signal)
}

/// `PTRACE_SETOPTIONS`: replaces all of the tracee's ptrace options.
pub fn set_options(tid: Pid, options: Options) -> nix::Result<()> {
    ptrace::setoptions(tid, options)
}

/// `PTRACE_GETEVENTMSG`: for a clone/fork event, the new task's pid in the tracer's namespace.
pub fn event_message(tid: Pid) -> nix::Result<u64> {
    ptrace::getevent(tid).map(|message| message as u64)
}

/// `PTRACE_GETSIGMASK`: the tracee's blocked-signal mask (the saved mask if a syscall such as
/// `ppoll` has a temporary one installed).
pub fn get_sigmask(tid: Pid) -> nix::Result<u64> {
    let mut mask = 0u64;
    // SAFETY: the kernel writes `addr` (8) bytes, the size of the kernel's sigset_t on x86_64,
    // into `mask`, which is 8 bytes long and live for the call.
    let ret = unsafe {
        libc::ptrace(
            PTRACE_GETSIGMASK,
            tid.as_raw(),
            std::mem::size_of::<u64>(),
            &mut mask as *mut u64 as *mut libc::c_void,
        )
    };
    Errno::result(ret)?;
    Ok(mask)
}

/// `PTRACE_SETSIGMASK`: replace the tracee's blocked-signal mask. The kernel never blocks
/// SIGKILL or SIGSTOP whatever the mask says.
pub fn set_sigmask(tid: Pid, mask: u64) -> nix::Result<()> {
    // SAFETY: the kernel reads `addr` (8) bytes from `mask`, which is 8 bytes long and live for
    // the call; it does not keep the pointer.
    let ret = unsafe {
        libc::ptrace(
            PTRACE_SETSIGMASK,
            tid.as_raw(),
            std::mem::size_of::<u64>(),
            &mask as *const u64 as *mut libc::c_void,
        )
    };
    Errno::result(ret).map(drop)
}

/// One classic-BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The program of the tracee's seccomp filter number `index` (0 is the most recently installed
/// one). `ENOENT` past the last filter, `EINVAL` when the thread has no filters, `EACCES` or
/// `EPERM` without CAP_SYS_ADMIN or when the tracer itself runs under seccomp.
pub fn seccomp_filter(tid: Pid, index: u64) -> nix::Result<Vec<SockFilter>> {
    // SAFETY: with a null buffer the kernel only returns the number of instructions.
    let count = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid.as_raw(),
            index as usize as *mut libc::c_void,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    let count = Errno::result(count)? as usize;
    let mut program = vec![SockFilter::default(); count];
    // SAFETY: `program` holds `count` sock_filter entries (8 bytes each, `repr(C)` like the
    // kernel's) and is live for the call; the kernel writes at most the filter's length, which
    // it just reported as `count`, and returns the number written.
    let written = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid.as_raw(),
            index as usize as *mut libc::c_void,
            program.as_mut_ptr() as *mut libc::c_void,
        )
    };
    let written = Errno::result(written)? as usize;
    program.truncate(written.min(count));
    Ok(program)
}

/// A thread's rseq registration (`struct ptrace_rseq_configuration`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RseqConfiguration {
    /// Address of the thread's `struct rseq`; 0 when none is registered.
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

/// `PTRACE_GET_RSEQ_CONFIGURATION`; `EIO` on kernels before 5.13.
pub fn rseq_configuration(tid: Pid) -> nix::Result<RseqConfiguration> {
    let mut config = RseqConfiguration::default();
    // SAFETY: `addr` gives the size of `config`, a `repr(C)` copy of the kernel's 24-byte
    // struct, live and writable for the call; the kernel writes at most that many bytes.
    let ret = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid.as_raw(),
            std::mem::size_of::<RseqConfiguration>(),
            &mut config as *mut RseqConfiguration as *mut libc::c_void,
        )
    };
    Errno::result(ret)?;
    Ok(config)
}

/// `struct ptrace_sud_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct SudConfig {
    mode: u64,
    selector: u64,
    offset: u64,
    len: u64,
}

/// The thread's syscall-user-dispatch mode (0: off); `EIO`/`EINVAL` on kernels before 6.4.
pub fn syscall_user_dispatch_mode(tid: Pid) -> nix::Result<u64> {
    let mut config = SudConfig::default();
    // SAFETY: `addr` gives the size of `config`, a `repr(C)` copy of the kernel's 32-byte
    // struct, live and writable for the call.
    let ret = unsafe {
        libc::ptrace(
            PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG,
            tid.as_raw(),
            std::mem::size_of::<SudConfig>(),
            &mut config as *mut SudConfig as *mut libc::c_void,
        )
    };
    Errno::result(ret)?;
    Ok(config.mode)
}

/// Send `signal` to one thread of one process (`tgkill`), so it cannot reach a recycled tid.
pub fn tgkill(tgid: Pid, tid: Pid, signal: Signal) -> nix::Result<()> {
    // SAFETY: tgkill takes three integers and touches no memory of ours.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            tgid.as_raw() as libc::c_long,
            tid.as_raw() as libc::c_long,
            signal as libc::c_int as libc::c_long,
        )
    };
    Errno::result(ret).map(drop)
}

/// `PTRACE_GETSIGINFO` as the fields the injector looks at: (signal, si_code).
pub fn siginfo_code(tid: Pid) -> nix::Result<(i32, i32)> {
    let info = ptrace::getsiginfo(tid)?;
    Ok((info.si_signo, info.si_code))
}
