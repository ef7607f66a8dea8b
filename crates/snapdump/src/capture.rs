//! Everything the writers need about a stopped process, gathered while it is stopped: its
//! threads' registers, its mappings, its `/proc` files and the loader's library list. Both the
//! ELF and the minidump writer work from a [`Capture`]; only memory contents are read later.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::error::Result;
use crate::process::link_map::{self, LinkMap};
use crate::process::memory::{PAGE_SIZE, ProcessMemory};
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
    /// The process is exiting by `exit`/`exit_group` in thread `tid` (not by a signal): recorded
    /// as a request (SIGSTOP), with that thread first, so debuggers open on it.
    Exiting { tid: i32 },
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
    /// Memory ranges the dump holds as zeros: the argument strings after argv[0] and the
    /// environment strings, when the dump is redacted (see [`Capture::collect_with_hints`]).
    pub redacted: Vec<(u64, u64)>,
}

impl Capture {
    /// Read everything but memory contents from a stopped process.
    pub fn collect(stopped: &StoppedProcess, memory: &dyn ProcessMemory) -> Result<Capture> {
        Capture::collect_with_hints(stopped, memory, None, false)
    }

    /// [`Capture::collect`], taking the mappings' `smaps` details from `smaps_hints` — the
    /// parsed `/proc/PID/smaps` read *before* the process was stopped. Reading `smaps` walks
    /// every page table (tens of milliseconds per GiB), which would lengthen the pause; `maps`
    /// is cheap. A mapping the hints do not cover (it appeared meanwhile) makes this read
    /// `smaps` after all.
    ///
    /// With `redact` (a Triage dump) the command line keeps only argv[0], `/proc/PID/environ`
    /// is not read, and [`Capture::redacted`] lists where the other argument strings and the
    /// environment strings lie in memory, for the writers to blank (see [`redaction`]).
    pub fn collect_with_hints(
        stopped: &StoppedProcess,
        memory: &dyn ProcessMemory,
        smaps_hints: Option<&[Mapping]>,
        redact: bool,
    ) -> Result<Capture> {
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
        let maps_raw = read_proc_file(pid, "maps")?;
        let mappings = match smaps_hints.and_then(|hints| with_hints(&maps_raw, hints)) {
            Some(mappings) => mappings,
            None => procfs::parse_maps(&read_proc_file(pid, "smaps")?),
        };
        // Every live process maps something (its stack, the vDSO): none means its memory is
        // already gone, and an empty dump would look like a good one.
        if mappings.is_empty() {
            return Err(crate::Error::TargetExited { pid });
        }
        let auxv = read_proc_file(pid, "auxv")?;
        let parsed_auxv = link_map::parse_auxv(&auxv);
        let status_raw = read_proc_file(pid, "status")?;
        let stat = process_stat(pid)?;
        let mut cmdline = read_proc_file(pid, "cmdline").unwrap_or_default();
        let (environ, redacted) = if redact {
            cmdline.truncate(first_string_len(&cmdline));
            (Vec::new(), redaction(pid, &stat, memory)?)
        } else {
            (
                read_proc_file(pid, "environ").unwrap_or_default(),
                Vec::new(),
            )
        };
        Ok(Capture {
            pid,
            stat,
            status: procfs::parse_status(&status_raw),
            status_raw,
            mappings,
            maps_raw,
            cmdline,
            environ,
            link_map: link_map::read_link_map(memory, &parsed_auxv),
            auxv,
            exe: std::fs::read_link(proc::memory_dir(pid).join("exe")).ok(),
            threads,
            reason: DumpReason::Requested,
            captured_at,
            redacted,
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

/// The process's `stat`. When the leader thread has exited, its own `stat` shows no memory
/// (the argument and environment addresses read 0), so those fields come from the live
/// thread [`proc::memory_dir`] picks; everything else stays the leader's (the start time
/// above all: it tells this process from a later one with the same pid).
fn process_stat(pid: i32) -> Result<Stat> {
    let leader = proc::read_stat(pid)?;
    let Some(tid) = proc::live_thread_of_exited_leader(pid) else {
        return Ok(leader);
    };
    let thread = std::fs::read(proc::proc_path(pid, &format!("task/{tid}/stat")))
        .ok()
        .and_then(|bytes| procfs::parse_stat(&bytes));
    Ok(match thread {
        Some(thread) => Stat {
            arg_start: thread.arg_start,
            arg_end: thread.arg_end,
            env_start: thread.env_start,
            env_end: thread.env_end,
            ..leader
        },
        None => leader,
    })
}

/// The length of the first NUL-terminated string of `bytes`, its NUL included (all of `bytes`
/// when there is no NUL).
fn first_string_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| b == 0)
        .map_or(bytes.len(), |nul| nul + 1)
}

/// The memory a redacted dump blanks: the argument strings after argv[0] (`arg_start` to
/// `arg_end` of `/proc/PID/stat`, argv[0] and its NUL kept so the program stays named) and the
/// environment strings (`env_start` to `env_end`). The kernel put both at the top of the main
/// thread's stack, which every mode stores. Copies the program made elsewhere (its heap,
/// another stack) are not found; a mini selection holds no heap.
pub fn redaction(pid: i32, stat: &Stat, memory: &dyn ProcessMemory) -> Result<Vec<(u64, u64)>> {
    let (args, env) = (
        (stat.arg_start, stat.arg_end),
        (stat.env_start, stat.env_end),
    );
    if args.0 == 0 || env.0 == 0 || args.0 > args.1 || env.0 > env.1 {
        // Without them nothing could be blanked: refuse rather than write the secrets.
        return Err(crate::Error::Parse {
            what: "the argument and environment addresses in /proc/PID/stat",
            pid,
        });
    }
    // argv[0] as it is in memory now, read page by page up to its NUL. Unreadable, or no NUL
    // at all (a rewritten command line): keep none of it.
    let mut keep = 0;
    let mut addr = args.0;
    while addr < args.1 {
        let end = ((addr / PAGE_SIZE + 1) * PAGE_SIZE).min(args.1);
        let Some(bytes) = memory.read_vec(addr, (end - addr) as usize) else {
            break;
        };
        if let Some(nul) = bytes.iter().position(|&b| b == 0) {
            keep = addr - args.0 + nul as u64 + 1;
            break;
        }
        addr = end;
    }
    Ok([(args.0 + keep, args.1), env]
        .into_iter()
        .filter(|(s, e)| s < e)
        .collect())
}

/// The mappings of `maps`, each with the `smaps` details of the hint that contains it (same
/// file); `None` when any mapping has no such hint.
fn with_hints(maps: &[u8], hints: &[Mapping]) -> Option<Vec<Mapping>> {
    let mut mappings = procfs::parse_maps(maps);
    for mapping in &mut mappings {
        let index = hints.partition_point(|h| h.end <= mapping.start);
        let hint = hints.get(index).filter(|h| {
            h.start <= mapping.start
                && mapping.end <= h.end
                && h.inode == mapping.inode
                && (h.dev_major, h.dev_minor) == (mapping.dev_major, mapping.dev_minor)
                && h.perms.shared == mapping.perms.shared
        })?;
        mapping.vm_flags = hint.vm_flags;
        mapping.anonymous_bytes = hint.anonymous_bytes.min(mapping.len());
        mapping.rss_bytes = hint.rss_bytes.min(mapping.len());
        mapping.swap_bytes = hint.swap_bytes.min(mapping.len());
    }
    Some(mappings)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::ByteFn;

    #[test]
    fn hints_give_flags_to_the_mappings_they_contain() {
        let smaps = b"1000-4000 rw-p 00000000 00:00 0\nAnonymous: 8 kB\nVmFlags: rd wr dd\n\
7000-8000 r--p 00000000 08:01 42 /lib/x.so\nVmFlags: rd\n";
        let hints = procfs::parse_maps(smaps);
        // Split by an mprotect meanwhile: both parts keep the flags.
        let maps = b"1000-2000 rw-p 00000000 00:00 0\n2000-4000 r--p 00000000 00:00 0\n\
7000-8000 r--p 00000000 08:01 42 /lib/x.so\n";
        let mappings = with_hints(maps, &hints).unwrap();
        assert_eq!(mappings.len(), 3);
        assert!(mappings[0].vm_flags.dont_dump && mappings[1].vm_flags.dont_dump);
        assert_eq!(mappings[0].anonymous_bytes, 4096);
        assert!(!mappings[2].vm_flags.dont_dump);
        // A mapping that appeared meanwhile, or a different file at the same place: no hint.
        assert!(with_hints(b"9000-a000 rw-p 00000000 00:00 0\n", &hints).is_none());
        assert!(with_hints(b"7000-8000 r--p 00000000 08:01 43 /lib/y.so\n", &hints).is_none());
    }

    // argv[0] straddles a page boundary.
    const ARGS: u64 = 0x7ffe_0000_0ffe;
    /// Memory laid out as the kernel leaves it: `prog\0-x\0secret\0` then `A=1\0`.
    const STRINGS: ByteFn<fn(u64) -> u8> = ByteFn(|addr| {
        let image = b"prog\0-x\0secret\0A=1\0";
        let at = addr.wrapping_sub(ARGS) as usize;
        image.get(at).copied().unwrap_or(b'?')
    });

    #[test]
    fn redaction_keeps_argv0_and_blanks_the_rest() {
        let stat = Stat {
            arg_start: ARGS,
            arg_end: ARGS + 17,
            env_start: ARGS + 17,
            env_end: ARGS + 21,
            ..Stat::default()
        };
        let ranges = redaction(1, &stat, &STRINGS).unwrap();
        assert_eq!(ranges, [(ARGS + 5, ARGS + 17), (ARGS + 17, ARGS + 21)]);
        // No NUL in the argument block (a rewritten command line): all of it goes.
        let rewritten = Stat {
            arg_end: ARGS + 4,
            ..stat.clone()
        };
        assert_eq!(
            redaction(1, &rewritten, &STRINGS).unwrap()[0],
            (ARGS, ARGS + 4)
        );
        // Without the addresses (an old kernel, or withheld) a redacted dump is refused.
        assert!(redaction(1, &Stat::default(), &STRINGS).is_err());
        assert_eq!(first_string_len(b"prog\0-x\0"), 5);
        assert_eq!(first_string_len(b"prog"), 4);
    }
}
