//! Everything the writers need about a stopped process, gathered while it is stopped: its
//! threads' registers, its mappings, its `/proc` files and the loader's library list. Both the
//! ELF and the minidump writer work from a [`Capture`]; only memory contents are read later.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::error::Result;
use crate::process::link_map::{self, LinkMap};
use crate::process::memory::ProcessMemory;
use crate::process::procfs::{self, Mapping, Stat, Status};
use crate::process::session::StoppedProcess;
use crate::process::{self as proc, read_proc_file};
use crate::sys::{self, Errno, Pid};

/// Indexes into `user_regs_struct` (the NT_PRSTATUS register block) on x86_64.
pub mod reg {
    pub const R15: usize = 0;
    pub const R14: usize = 1;
    pub const R13: usize = 2;
    pub const R12: usize = 3;
    pub const RBP: usize = 4;
    pub const RBX: usize = 5;
    pub const R11: usize = 6;
    pub const R10: usize = 7;
    pub const R9: usize = 8;
    pub const R8: usize = 9;
    pub const RAX: usize = 10;
    pub const RCX: usize = 11;
    pub const RDX: usize = 12;
    pub const RSI: usize = 13;
    pub const RDI: usize = 14;
    pub const ORIG_RAX: usize = 15;
    pub const RIP: usize = 16;
    pub const CS: usize = 17;
    pub const EFLAGS: usize = 18;
    pub const RSP: usize = 19;
    pub const SS: usize = 20;
    pub const FS_BASE: usize = 21;
    pub const GS_BASE: usize = 22;
    pub const DS: usize = 23;
    pub const ES: usize = 24;
    pub const FS: usize = 25;
    pub const GS: usize = 26;
    /// Number of registers, 27 × 8 = 216 bytes.
    pub const COUNT: usize = 27;
}

/// Why the dump was taken; decides the signal recorded in the dump.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DumpReason {
    /// Asked for by a user; recorded as SIGSTOP, as gcore does.
    #[default]
    Requested,
    /// The process was about to die of `signal` in thread `tid`; `siginfo` is its raw siginfo.
    Signal {
        tid: i32,
        signal: i32,
        siginfo: [u8; 128],
    },
}

/// One stopped thread's state.
#[derive(Clone, Debug)]
pub struct Thread {
    pub tid: i32,
    pub name: Vec<u8>,
    /// `user_regs_struct` as PTRACE_GETREGSET NT_PRSTATUS returns it (216 bytes).
    pub regs: Vec<u8>,
    /// FXSAVE area (NT_PRFPREG, 512 bytes).
    pub fpregs: Option<Vec<u8>>,
    /// XSAVE area (NT_X86_XSTATE), as long as the kernel returned.
    pub xstate: Option<Vec<u8>>,
    /// A signal the thread was stopped on its way to.
    pub pending_signal: Option<i32>,
    pub stat: Option<Stat>,
    pub status: Option<Status>,
}

impl Thread {
    /// One register by its `reg::` index.
    pub fn reg(&self, index: usize) -> u64 {
        self.regs
            .get(index * 8..index * 8 + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    pub fn stack_pointer(&self) -> u64 {
        self.reg(reg::RSP)
    }

    pub fn instruction_pointer(&self) -> u64 {
        self.reg(reg::RIP)
    }
}

/// A stopped process, described.
#[derive(Clone, Debug)]
pub struct Capture {
    pub pid: i32,
    pub stat: Stat,
    pub status: Status,
    /// Raw `/proc/PID/status`, `maps`, `cmdline`, `environ`, `auxv` (for minidump streams).
    pub status_raw: Vec<u8>,
    pub maps_raw: Vec<u8>,
    pub cmdline: Vec<u8>,
    pub environ: Vec<u8>,
    pub auxv: Vec<u8>,
    /// The executable's path (`/proc/PID/exe`).
    pub exe: Option<PathBuf>,
    pub mappings: Vec<Mapping>,
    /// Threads, the leader first.
    pub threads: Vec<Thread>,
    pub link_map: LinkMap,
    pub reason: DumpReason,
    pub captured_at: SystemTime,
}

impl Capture {
    /// Read everything but memory contents from a stopped process.
    pub fn collect(stopped: &StoppedProcess, memory: &dyn ProcessMemory) -> Result<Capture> {
        let pid = stopped.pid();
        let captured_at = SystemTime::now();
        let mut threads = Vec::with_capacity(stopped.threads().len());
        for thread in stopped.threads() {
            if let Some(state) = read_thread(pid, thread.tid, thread.pending_signal)? {
                threads.push(state);
            }
        }
        if threads.is_empty() {
            return Err(crate::Error::TargetExited { pid });
        }
        let smaps = read_proc_file(pid, "smaps")?;
        let maps_raw = read_proc_file(pid, "maps")?;
        let auxv = read_proc_file(pid, "auxv")?;
        let parsed_auxv = link_map::parse_auxv(&auxv);
        let status_raw = read_proc_file(pid, "status")?;
        let stat = proc::read_stat(pid)?;
        Ok(Capture {
            pid,
            stat,
            status: procfs::parse_status(&status_raw),
            status_raw,
            mappings: procfs::parse_maps(&smaps),
            maps_raw,
            cmdline: read_proc_file(pid, "cmdline").unwrap_or_default(),
            environ: read_proc_file(pid, "environ").unwrap_or_default(),
            link_map: link_map::read_link_map(memory, &parsed_auxv),
            auxv,
            exe: std::fs::read_link(proc::proc_path(pid, "exe")).ok(),
            threads,
            reason: DumpReason::Requested,
            captured_at,
        })
    }

    /// The process name (`comm`), lossily decoded.
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.stat.comm).into_owned()
    }

    /// The auxiliary vector as (type, value) pairs.
    pub fn auxv_pairs(&self) -> Vec<(u64, u64)> {
        link_map::parse_auxv(&self.auxv)
    }

    /// The mapping containing `addr`.
    pub fn mapping_at(&self, addr: u64) -> Option<&Mapping> {
        let index = self.mappings.partition_point(|m| m.end <= addr);
        self.mappings.get(index).filter(|m| m.contains(addr))
    }
}

/// Read one stopped thread's registers and details; `None` if it exited meanwhile.
fn read_thread(pid: i32, tid: i32, pending: Option<sys::Signal>) -> Result<Option<Thread>> {
    let id = Pid::from_raw(tid);
    let regs = match sys::get_regset(id, sys::NT_PRSTATUS, reg::COUNT * 8) {
        Ok(regs) => regs,
        Err(Errno::ESRCH) => return Ok(None),
        Err(errno) => {
            return Err(crate::Error::Ptrace {
                operation: "PTRACE_GETREGSET NT_PRSTATUS",
                tid,
                errno,
            });
        }
    };
    let task = |file: &str| std::fs::read(proc::proc_path(pid, &format!("task/{tid}/{file}")));
    Ok(Some(Thread {
        tid,
        name: proc::thread_name(pid, tid),
        regs,
        fpregs: sys::get_regset(id, sys::NT_PRFPREG, 512).ok(),
        // Large enough for AVX-512 and AMX tile state; the kernel returns the real length.
        xstate: sys::get_regset(id, sys::NT_X86_XSTATE, 16 * 1024).ok(),
        pending_signal: pending.map(|s| s as i32),
        stat: task("stat").ok().and_then(|b| procfs::parse_stat(&b)),
        status: task("status").ok().map(|b| procfs::parse_status(&b)),
    }))
}
