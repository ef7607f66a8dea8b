//! The notes of an ELF core, laid out as the kernel's `elf_core_dump` writes them.
//!
//! Order matters to readers: lldb starts a new thread at every NT_PRSTATUS (and at
//! NT_PRPSINFO), so each thread's FP notes follow its own PRSTATUS and the process notes sit
//! between the first thread's PRSTATUS and its FP notes, exactly where the kernel puts them.

mod xsave;

use std::os::unix::ffi::OsStrExt;

use crate::capture::{Capture, DumpReason, Thread, reg};
use crate::process::procfs::Backing;
use crate::sys;

pub const NT_PRSTATUS: u32 = 1;
pub const NT_PRFPREG: u32 = 2;
pub const NT_PRPSINFO: u32 = 3;
pub const NT_AUXV: u32 = 6;
pub const NT_X86_XSTATE: u32 = 0x202;
pub const NT_SIGINFO: u32 = 0x5349_4749;
pub const NT_FILE: u32 = 0x4649_4c45;

/// `sizeof(struct elf_prstatus)` on x86_64.
pub const PRSTATUS_SIZE: usize = 336;
/// `sizeof(struct elf_prpsinfo)` on x86_64.
pub const PRPSINFO_SIZE: usize = 136;

const SIGSTOP: i32 = 19;

/// Little-endian field writer over a fixed-size record.
struct Record(Vec<u8>);

impl Record {
    fn new(size: usize) -> Record {
        Record(vec![0; size])
    }
    fn put(&mut self, offset: usize, bytes: &[u8]) {
        self.0[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    fn i32(&mut self, offset: usize, value: i32) {
        self.put(offset, &value.to_le_bytes());
    }
    fn u64(&mut self, offset: usize, value: u64) {
        self.put(offset, &value.to_le_bytes());
    }
}

/// Appends notes: header, padded name, padded payload.
#[derive(Default)]
pub struct NoteWriter {
    pub bytes: Vec<u8>,
}

impl NoteWriter {
    pub fn note(&mut self, owner: &[u8], note_type: u32, payload: &[u8]) {
        let namesz = owner.len() as u32 + 1;
        self.bytes.extend_from_slice(&namesz.to_le_bytes());
        self.bytes
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(&note_type.to_le_bytes());
        self.bytes.extend_from_slice(owner);
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(payload);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

/// The signal the dump records for each thread.
fn dump_signal(capture: &Capture) -> i32 {
    match &capture.reason {
        DumpReason::Requested | DumpReason::Exiting { .. } => SIGSTOP,
        DumpReason::Signal { signal, .. } => *signal,
    }
}

/// Threads in note order: the one that took the signal (or is exiting) first, else the
/// leader.
pub fn thread_order(capture: &Capture) -> Vec<&Thread> {
    let first = match &capture.reason {
        DumpReason::Signal { tid, .. } | DumpReason::Exiting { tid } => *tid,
        DumpReason::Requested => capture.pid,
    };
    let mut threads: Vec<&Thread> = capture.threads.iter().collect();
    threads.sort_by_key(|t| t.tid != first);
    threads
}

fn ticks_to_timeval(ticks: u64) -> (u64, u64) {
    // USER_HZ is 100 on every Linux ABI.
    (ticks / 100, (ticks % 100) * 10_000)
}

pub fn prstatus(capture: &Capture, thread: &Thread) -> Vec<u8> {
    let mut r = Record::new(PRSTATUS_SIZE);
    let signal = dump_signal(capture);
    r.i32(0, signal);
    r.put(12, &(signal as i16).to_le_bytes());
    if let Some(status) = &thread.status {
        r.u64(16, status.sig_pending);
        r.u64(24, status.sig_blocked);
    }
    r.i32(32, thread.tid);
    r.i32(36, capture.stat.ppid);
    r.i32(40, capture.stat.pgrp);
    r.i32(44, capture.stat.session);
    if let Some(stat) = &thread.stat {
        for (i, ticks) in [stat.utime, stat.stime, stat.cutime, stat.cstime]
            .into_iter()
            .enumerate()
        {
            let (sec, usec) = ticks_to_timeval(ticks);
            r.u64(48 + i * 16, sec);
            r.u64(56 + i * 16, usec);
        }
    }
    let regs = &thread.regs[..thread.regs.len().min(reg::COUNT * 8)];
    r.put(112, regs);
    r.i32(328, thread.fpregs.is_some() as i32);
    r.0
}

pub fn prpsinfo(capture: &Capture) -> Vec<u8> {
    let mut r = Record::new(PRPSINFO_SIZE);
    const STATES: &[u8] = b"RSDTZW";
    let sname = capture.stat.state;
    let state = STATES.iter().position(|&s| s == sname).unwrap_or(0);
    r.0[0] = state as u8;
    r.0[1] = sname;
    r.0[2] = (sname == b'Z') as u8;
    r.0[3] = capture.stat.nice as i8 as u8;
    r.u64(8, capture.stat.flags);
    r.put(16, &capture.status.uid.to_le_bytes());
    r.put(20, &capture.status.gid.to_le_bytes());
    r.i32(24, capture.pid);
    r.i32(28, capture.stat.ppid);
    r.i32(32, capture.stat.pgrp);
    r.i32(36, capture.stat.session);
    let comm = &capture.stat.comm[..capture.stat.comm.len().min(15)];
    r.put(40, comm);
    let args: Vec<u8> = capture
        .cmdline
        .iter()
        .take(79)
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    let args = args.trim_ascii_end();
    r.put(56, args);
    r.0
}

pub fn siginfo(capture: &Capture) -> Vec<u8> {
    match &capture.reason {
        DumpReason::Signal { siginfo, .. } => siginfo.to_vec(),
        DumpReason::Requested | DumpReason::Exiting { .. } => {
            let mut r = Record::new(128);
            r.i32(0, SIGSTOP);
            // si_code SI_USER, sent by us.
            r.i32(16, std::process::id() as i32);
            r.put(20, &nix::unistd::Uid::current().as_raw().to_le_bytes());
            r.0
        }
    }
}

/// NT_FILE: the file-backed mappings, the executable's first (lldb takes entry 0 as the main
/// executable when none is given).
pub fn file_note(capture: &Capture) -> Vec<u8> {
    const PAGE: u64 = 4096;
    let mut files: Vec<(u64, u64, u64, Vec<u8>)> = Vec::new();
    for mapping in &capture.mappings {
        if let Backing::File { path, deleted } = &mapping.backing {
            let mut name = path.as_os_str().as_bytes().to_vec();
            if *deleted {
                name.extend_from_slice(b" (deleted)");
            }
            files.push((mapping.start, mapping.end, mapping.offset / PAGE, name));
        }
    }
    if let Some(exe) = &capture.exe {
        let exe = exe.as_os_str().as_bytes();
        files.sort_by_key(|f| f.3.as_slice() != exe);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(files.len() as u64).to_le_bytes());
    out.extend_from_slice(&PAGE.to_le_bytes());
    for (start, end, page_offset, _) in &files {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
        out.extend_from_slice(&page_offset.to_le_bytes());
    }
    for (.., name) in &files {
        out.extend_from_slice(name);
        out.push(0);
    }
    out
}

/// All notes of the core, in the kernel's order.
pub fn build_notes(capture: &Capture) -> Vec<u8> {
    let mut notes = NoteWriter::default();
    for (i, thread) in thread_order(capture).into_iter().enumerate() {
        notes.note(b"CORE", NT_PRSTATUS, &prstatus(capture, thread));
        if i == 0 {
            notes.note(b"CORE", NT_PRPSINFO, &prpsinfo(capture));
            notes.note(b"CORE", NT_SIGINFO, &siginfo(capture));
            notes.note(b"CORE", NT_AUXV, &capture.auxv);
            notes.note(b"CORE", NT_FILE, &file_note(capture));
        }
        if let Some(fp) = &thread.fpregs {
            notes.note(b"CORE", NT_PRFPREG, fp);
        }
        if let Some(xstate) = &thread.xstate {
            // The kernel's bytes, each component moved to where gdb looks for it.
            let xstate = xsave::for_gdb(xstate, sys::xsave_components());
            notes.note(b"LINUX", NT_X86_XSTATE, &xstate);
        }
    }
    notes.bytes
}

/// Owner and type of snapdump's own note, after the kernel's: what wrote the core and in which
/// mode. Readers skip notes of owners they do not know; `snapdump inspect` uses it to name
/// the mode, which the contents alone no longer tell once untouched pages are left out.
pub const SNAPDUMP_OWNER: &[u8] = b"SNAPDUMP";
pub const NT_SNAPDUMP_INFO: u32 = 1;

/// The note's payload: `key=value` lines (`writer=snapdump VERSION`, `mode=MODE`, and
/// `redacted=args,environ` for a triage dump).
pub fn snapdump_note(mode: crate::select::Mode, redacted: bool) -> Vec<u8> {
    let mut notes = NoteWriter::default();
    let mut payload = format!(
        "writer=snapdump {}\nmode={}\n",
        env!("CARGO_PKG_VERSION"),
        mode.as_str()
    );
    if redacted {
        payload.push_str("redacted=args,environ\n");
    }
    notes.note(SNAPDUMP_OWNER, NT_SNAPDUMP_INFO, payload.as_bytes());
    notes.bytes
}
