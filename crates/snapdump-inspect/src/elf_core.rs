//! The ELF core reader: kernel cores, gdb's gcore and snapdump's (`/work/shared/formats.md`
//! has the layout). Headers and notes are read with `object`'s structs; each PT_LOAD becomes a
//! [`Segment`] of [`CoreMemory`].
//!
//! Folklore:
//! - Threads are the NT_PRSTATUS notes, in note order; the kernel puts the thread that took
//!   the signal first. gcore puts NT_PRPSINFO before the first NT_PRSTATUS, snapdump and the
//!   kernel after it: order carries no meaning beyond "first PRSTATUS = the signalled thread".
//! - Cores do not record thread names; only the main thread gets one (the process's comm).
//! - A core of a live process (gcore, snapdump) records SIGSTOP; the kernel never dumps on
//!   SIGSTOP, so SIGSTOP means "requested".
//! - gcore leaves section headers (`note0`, `load`) and a `GDB` note (the target
//!   description); the kernel and snapdump leave no section headers (one SHT_NULL header
//!   when there are ≥ 0xffff segments, PN_XNUM).

use object::elf::{
    EM_X86_64, ET_CORE, ET_DYN, ET_EXEC, ET_REL, FileHeader64, PF_R, PF_W, PF_X, PN_XNUM, PT_LOAD,
    PT_NOTE, ProgramHeader64, SectionHeader64,
};
use object::endian::LittleEndian as LE;
use object::read::elf::NoteIterator;

use crate::bytes::{c_string, human_bytes, i16_at, i32_at, is_fault, signal_name, u32_at, u64_at};
use crate::elf_image::build_id_in_memory;
use crate::error::{Error, Result};
use crate::input::ReadAt;
use crate::memory::{CoreMemory, Memory, Segment};
use crate::model::{
    Hex, Module, Process, Reason, ReasonKind, Region, RegionKind, Report, Thread, Writer,
};

const NT_PRSTATUS: u32 = 1;
const NT_PRPSINFO: u32 = 3;
const NT_AUXV: u32 = 6;
const NT_SIGINFO: u32 = 0x5349_4749;
const NT_FILE: u32 = 0x4649_4c45;

const AT_PHDR: u64 = 3;
const AT_ENTRY: u64 = 9;
const AT_SYSINFO_EHDR: u64 = 33;

/// pr_reg offsets (in u64s) of the registers inspect needs.
const REG_RBP: usize = 4;
const REG_RIP: usize = 16;
const REG_RSP: usize = 19;
const PR_REG: usize = 112;

/// Notes larger than this are not read (the kernel's own limit for a core's notes is far
/// below; a bigger p_filesz is damage).
const MAX_NOTES: u64 = 256 << 20;
const VSYSCALL: u64 = 0xffff_ffff_ff60_0000;

/// One entry of NT_FILE.
#[derive(Clone, Debug)]
struct FileMapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

#[derive(Default)]
struct Notes {
    threads: Vec<Thread>,
    prpsinfo: Option<Vec<u8>>,
    siginfo: Option<Vec<u8>>,
    auxv: Vec<(u64, u64)>,
    files: Vec<FileMapping>,
    gdb_note: bool,
    /// snapdump's own note: the mode it was written in.
    snapdump_mode: Option<String>,
}

/// Reads the core's headers and notes into `report`; returns its memory.
pub fn read<'a>(src: &'a dyn ReadAt, report: &mut Report) -> Result<CoreMemory<'a>> {
    let file_len = src.len();
    let header_bytes = src.read_vec(0, 64);
    if header_bytes.len() < 64 {
        return Err(Error::Truncated {
            what: "ELF header",
            have: file_len,
            needed: 64,
        });
    }
    let header: &FileHeader64<LE> = object::pod::from_bytes(&header_bytes)
        .map_err(|()| Error::Malformed {
            what: "ELF header",
            detail: "unreadable".into(),
        })?
        .0;
    let ident = &header.e_ident;
    if ident.class != object::elf::ELFCLASS64 {
        return Err(Error::Unsupported(format!(
            "ELF class {} (inspect reads 64-bit cores)",
            ident.class
        )));
    }
    if ident.data != object::elf::ELFDATA2LSB {
        return Err(Error::Unsupported(
            "a big-endian ELF file (inspect reads x86_64 cores)".into(),
        ));
    }
    let e_type = header.e_type.get(LE);
    if e_type != ET_CORE {
        let what = match e_type {
            ET_EXEC => "an executable",
            ET_DYN => "a shared library or PIE executable",
            ET_REL => "an object file",
            _ => "unknown type",
        };
        return Err(Error::NotACore { e_type, what });
    }
    let machine = header.e_machine.get(LE);
    if machine != EM_X86_64 {
        return Err(Error::Unsupported(format!(
            "ELF machine {machine} (inspect reads x86_64 cores, machine {EM_X86_64})"
        )));
    }
    report.arch = "x86_64".into();

    // Program headers (PN_XNUM: the real count is in section 0's sh_info).
    let phoff = header.e_phoff.get(LE);
    let phentsize = header.e_phentsize.get(LE) as u64;
    let shoff = header.e_shoff.get(LE);
    let shnum = header.e_shnum.get(LE);
    let mut phnum = header.e_phnum.get(LE) as u64;
    if phnum == PN_XNUM as u64 {
        let section0 = src.read_vec(shoff, 64);
        match object::pod::from_bytes::<SectionHeader64<LE>>(&section0) {
            Ok((s, _)) => phnum = s.sh_info.get(LE) as u64,
            Err(()) => {
                return Err(Error::Truncated {
                    what: "section header 0 (it holds the segment count, PN_XNUM)",
                    have: file_len,
                    needed: shoff.saturating_add(64),
                });
            }
        }
    }
    if phentsize != 56 && phnum > 0 {
        return Err(Error::Malformed {
            what: "ELF header",
            detail: format!("e_phentsize is {phentsize}, not 56"),
        });
    }
    let table_len = phnum.saturating_mul(56);
    let readable = file_len.saturating_sub(phoff).min(table_len) / 56;
    if readable < phnum {
        let needed = phoff.saturating_add(table_len);
        if readable == 0 {
            return Err(Error::Truncated {
                what: "program headers",
                have: file_len,
                needed,
            });
        }
        report.errors.push(format!(
            "truncated program headers: only {readable} of {phnum} fit in the file ({file_len} \
             bytes, {needed} needed); the rest of the memory map is unknown"
        ));
    }
    let table = src.read_vec(phoff, (readable * 56) as usize);
    let phdrs: &[ProgramHeader64<LE>] = object::pod::slice_from_bytes(&table, readable as usize)
        .map_err(|()| Error::Malformed {
            what: "program headers",
            detail: "unreadable".into(),
        })?
        .0;

    let mut segments = Vec::new();
    let mut notes = Notes::default();
    let mut missing_segments = 0u64;
    let mut missing_bytes = 0u64;
    let mut needed_len = 0u64;
    for ph in phdrs {
        match ph.p_type.get(LE) {
            PT_LOAD => {
                let s = Segment {
                    vaddr: ph.p_vaddr.get(LE),
                    memsz: ph.p_memsz.get(LE),
                    offset: ph.p_offset.get(LE),
                    filesz: ph.p_filesz.get(LE),
                    flags: ph.p_flags.get(LE),
                };
                if s.memsz == 0 {
                    continue;
                }
                let end = s.offset.saturating_add(s.filesz);
                if s.filesz > 0 && end > file_len {
                    missing_segments += 1;
                    missing_bytes = missing_bytes.saturating_add(end - file_len.max(s.offset));
                    needed_len = needed_len.max(end);
                }
                segments.push(s);
            }
            PT_NOTE => read_notes(src, ph, &mut notes, report),
            _ => {}
        }
    }
    if missing_segments > 0 {
        report.errors.push(format!(
            "the file is truncated: {missing_segments} segments lose {} of their contents \
             (the file has {file_len} bytes, the segments need {needed_len}); that memory reads \
             as missing",
            human_bytes(missing_bytes)
        ));
    }
    if notes.threads.is_empty() {
        report
            .errors
            .push("no thread (NT_PRSTATUS) notes: registers and stacks are unknown".into());
    }
    let memory = CoreMemory::new(src, &segments);

    report.writer = writer(&notes, shoff != 0 && shnum > 1);
    report.mode = notes
        .snapdump_mode
        .clone()
        .filter(|m| ["mini", "heap", "full"].contains(&m.as_str()));
    report.mode_recorded = report.mode.is_some();
    fill_process(&notes, report);
    report.threads = notes.threads.clone();
    let reason = &report.process.reason;
    for thread in &mut report.threads {
        thread.crashed = matches!(reason.kind, ReasonKind::Crash | ReasonKind::Signal)
            && reason.thread == Some(thread.tid);
        if Some(thread.tid) == report.process.pid {
            thread.name = report.process.name.clone();
        }
    }
    report.modules = modules(&notes, &memory, &segments);
    report.regions = regions(&notes, &segments, &report.threads, file_len);
    Ok(memory)
}

fn read_notes(src: &dyn ReadAt, ph: &ProgramHeader64<LE>, notes: &mut Notes, report: &mut Report) {
    let offset = ph.p_offset.get(LE);
    let size = ph.p_filesz.get(LE);
    if size > MAX_NOTES {
        report.errors.push(format!(
            "a note segment claims {size} bytes (more than {MAX_NOTES}): not read"
        ));
        return;
    }
    let data = src.read_vec(offset, size as usize);
    if (data.len() as u64) < size {
        report.errors.push(format!(
            "truncated notes: {} of {size} bytes at offset {offset} are in the file",
            data.len()
        ));
    }
    let align = match ph.p_align.get(LE) {
        8 => 8,
        _ => 4,
    };
    let mut iter = match NoteIterator::<FileHeader64<LE>>::new(LE, align, &data) {
        Ok(iter) => iter,
        Err(e) => {
            report.errors.push(format!("unreadable notes: {e}"));
            return;
        }
    };
    loop {
        let note = match iter.next() {
            Ok(Some(note)) => note,
            Ok(None) => break,
            Err(e) => {
                report.errors.push(format!(
                    "damaged notes after {} threads: {e}; later notes are lost",
                    notes.threads.len()
                ));
                break;
            }
        };
        let name = note.name();
        let desc = note.desc();
        if name == b"GDB" {
            notes.gdb_note = true;
            continue;
        }
        if name == b"SNAPDUMP" {
            // `key=value` lines; `mode` is one of snapdump's modes.
            let text = String::from_utf8_lossy(desc);
            let mode = text.lines().find_map(|l| l.strip_prefix("mode="));
            notes.snapdump_mode = Some(mode.unwrap_or("").to_string());
            continue;
        }
        if name != b"CORE" {
            continue;
        }
        match note.n_type(LE) {
            NT_PRSTATUS => match prstatus(desc) {
                Some(thread) => notes.threads.push(thread),
                None => report.errors.push(format!(
                    "an NT_PRSTATUS note of {} bytes (336 expected): thread left out",
                    desc.len()
                )),
            },
            NT_PRPSINFO if notes.prpsinfo.is_none() => notes.prpsinfo = Some(desc.to_vec()),
            NT_SIGINFO if notes.siginfo.is_none() => notes.siginfo = Some(desc.to_vec()),
            NT_AUXV => {
                notes.auxv = desc
                    .chunks_exact(16)
                    .filter_map(|p| Some((u64_at(p, 0)?, u64_at(p, 8)?)))
                    .take_while(|&(key, _)| key != 0)
                    .collect();
            }
            NT_FILE => match file_note(desc) {
                Some(files) => notes.files = files,
                None => report
                    .errors
                    .push("a damaged NT_FILE note: mapped file names are unknown".into()),
            },
            _ => {}
        }
    }
}

fn prstatus(desc: &[u8]) -> Option<Thread> {
    let reg = |i: usize| u64_at(desc, PR_REG + i * 8);
    let cursig = i16_at(desc, 12)? as i32;
    Some(Thread {
        tid: u32_at(desc, 32)?,
        name: None,
        ip: Hex(reg(REG_RIP)?),
        sp: Hex(reg(REG_RSP)?),
        bp: Hex(reg(REG_RBP)?),
        crashed: false,
        signal: (cursig != 0).then_some(cursig),
    })
}

/// NT_FILE: count, page size, count × {start, end, page offset}, then the paths.
fn file_note(desc: &[u8]) -> Option<Vec<FileMapping>> {
    let count = u64_at(desc, 0)?;
    let page = u64_at(desc, 8)?;
    if count > (desc.len() as u64).saturating_sub(16) / 24 {
        return None;
    }
    let count = count as usize;
    let names_at = 16 + count * 24;
    let mut names = desc.get(names_at..)?.split(|&b| b == 0);
    let mut files = Vec::with_capacity(count);
    for i in 0..count {
        let at = 16 + i * 24;
        files.push(FileMapping {
            start: u64_at(desc, at)?,
            end: u64_at(desc, at + 8)?,
            offset: u64_at(desc, at + 16)?.wrapping_mul(page),
            path: String::from_utf8_lossy(names.next()?).into_owned(),
        });
    }
    Some(files)
}

fn writer(notes: &Notes, has_sections: bool) -> Option<Writer> {
    if notes.snapdump_mode.is_some() {
        return Some(Writer::Snapdump);
    }
    if notes.gdb_note || has_sections {
        return Some(Writer::Gcore);
    }
    let signal = notes
        .siginfo
        .as_deref()
        .and_then(|s| i32_at(s, 0))
        .or_else(|| notes.threads.first().and_then(|t| t.signal))?;
    match signal {
        crate::bytes::SIGSTOP => Some(Writer::Snapdump),
        0 => None,
        _ => Some(Writer::Kernel),
    }
}

fn fill_process(notes: &Notes, report: &mut Report) {
    let mut process = Process::default();
    if let Some(info) = &notes.prpsinfo {
        process.pid = u32_at(info, 24);
        process.ppid = u32_at(info, 28);
        process.uid = u32_at(info, 16);
        process.name = info.get(40..56).map(c_string).filter(|s| !s.is_empty());
        process.command_line = info
            .get(56..136)
            .map(|b| c_string(b).trim_end().to_string())
            .filter(|s| !s.is_empty());
    }
    if process.pid.is_none() {
        process.pid = notes.threads.first().map(|t| t.tid);
    }
    process.executable = executable(notes).map(|f| f.path.clone());
    if process.name.is_none() {
        process.name = process
            .executable
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .map(str::to_string);
    }

    let siginfo = notes.siginfo.as_deref();
    let signal = siginfo
        .and_then(|s| i32_at(s, 0))
        .or_else(|| notes.threads.first().and_then(|t| t.signal));
    let code = siginfo.and_then(|s| i32_at(s, 8));
    let first_tid = notes.threads.first().map(|t| t.tid);
    let mut reason = Reason {
        signal,
        signal_name: signal.map(signal_name),
        code,
        ..Reason::default()
    };
    match signal {
        None | Some(0) => {
            reason.kind = ReasonKind::Unknown;
            reason.description = "unknown (no signal recorded)".into();
        }
        Some(crate::bytes::SIGSTOP) => {
            reason.kind = ReasonKind::Requested;
            reason.sender_pid = sender(siginfo, code);
            reason.description = match reason.sender_pid {
                Some(pid) => format!("requested: a live dump (SIGSTOP recorded, by pid {pid})"),
                None => "requested: a live dump (SIGSTOP recorded)".into(),
            };
        }
        Some(sig) if is_fault(sig) && code.is_some_and(|c| c > 0) => {
            reason.kind = ReasonKind::Crash;
            reason.address = siginfo.and_then(|s| u64_at(s, 16)).map(Hex);
            reason.thread = first_tid;
            reason.description = format!(
                "crash: {} ({}) at {} in thread {}",
                signal_name(sig),
                fault_code(sig, code.unwrap_or(0)),
                reason.address.unwrap_or_default(),
                first_tid.unwrap_or(0)
            );
        }
        Some(sig) => {
            reason.kind = ReasonKind::Signal;
            reason.thread = first_tid;
            reason.sender_pid = sender(siginfo, code);
            let from = match (reason.sender_pid, process.pid) {
                (Some(s), Some(p)) if s as u32 == p => " raised by the process itself".into(),
                (Some(s), _) => format!(" sent by pid {s}"),
                _ => String::new(),
            };
            reason.description = format!(
                "signal: {}{from}, taken by thread {}",
                signal_name(sig),
                first_tid.unwrap_or(0)
            );
        }
    }
    process.reason = reason;
    report.process = process;
}

/// si_pid, for signals sent by a process (si_code ≤ 0: SI_USER, SI_QUEUE, SI_TKILL...).
fn sender(siginfo: Option<&[u8]>, code: Option<i32>) -> Option<i32> {
    if code? > 0 {
        return None;
    }
    i32_at(siginfo?, 16).filter(|&pid| pid > 0)
}

fn fault_code(signal: i32, code: i32) -> String {
    let name = match (signal, code) {
        (crate::bytes::SIGSEGV, 1) => "SEGV_MAPERR",
        (crate::bytes::SIGSEGV, 2) => "SEGV_ACCERR",
        (crate::bytes::SIGBUS, 1) => "BUS_ADRALN",
        (crate::bytes::SIGBUS, 2) => "BUS_ADRERR",
        (crate::bytes::SIGBUS, 3) => "BUS_OBJERR",
        (crate::bytes::SIGILL, 1) => "ILL_ILLOPC",
        (crate::bytes::SIGILL, 4) => "ILL_ILLOPN",
        (crate::bytes::SIGFPE, 1) => "FPE_INTDIV",
        (crate::bytes::SIGTRAP, 1) => "TRAP_BRKPT",
        _ => return format!("code {code}"),
    };
    name.to_string()
}

fn auxv(notes: &Notes, key: u64) -> Option<u64> {
    notes.auxv.iter().find(|p| p.0 == key).map(|p| p.1)
}

/// The executable's NT_FILE entry: the one holding AT_PHDR (or AT_ENTRY), else entry 0.
fn executable(notes: &Notes) -> Option<&FileMapping> {
    for key in [AT_PHDR, AT_ENTRY] {
        if let Some(addr) = auxv(notes, key)
            && let Some(f) = notes.files.iter().find(|f| f.start <= addr && addr < f.end)
        {
            return Some(f);
        }
    }
    notes.files.first()
}

/// Modules: NT_FILE entries grouped by path, starting at the mapping of file offset 0, kept
/// when they are ELF images (magic in the dump or on disk) or mapped executable; plus the
/// vDSO from AT_SYSINFO_EHDR.
fn modules(notes: &Notes, memory: &CoreMemory<'_>, segments: &[Segment]) -> Vec<Module> {
    let mut files = notes.files.clone();
    files.sort_by_key(|f| f.start);
    let executable_at = |start: u64, end: u64| {
        segments
            .iter()
            .any(|s| s.flags & PF_X != 0 && s.vaddr < end && start < s.end())
    };
    let mut modules: Vec<(Module, bool)> = Vec::new();
    for file in &files {
        let executable = executable_at(file.start, file.end);
        if let Some((last, exec)) = modules.last_mut()
            && last.path == file.path
            && file.offset != 0
            && file.start >= last.base.0
        {
            last.size = last.size.max(file.end.saturating_sub(last.base.0));
            *exec |= executable;
            continue;
        }
        if file.offset != 0 && modules.iter().any(|(m, _)| m.path == file.path) {
            continue;
        }
        modules.push((
            Module {
                path: file.path.clone(),
                base: Hex(file.start),
                size: file.end.saturating_sub(file.start),
                ..Module::default()
            },
            executable,
        ));
    }
    let mut out = Vec::new();
    for (mut module, executable) in modules {
        let mut magic = [0u8; 4];
        let in_memory = memory.read(module.base.0, &mut magic);
        let is_elf = if in_memory {
            magic == crate::input::ELF_MAGIC
        } else {
            executable || looks_like_library(&module.path)
        };
        if !is_elf {
            continue;
        }
        if let Some(id) = build_id_in_memory(memory, module.base.0) {
            module.build_id = Some(crate::bytes::hex(&id));
            module.build_id_source = Some("dump".into());
        }
        out.push(module);
    }
    if let Some(vdso) = auxv(notes, AT_SYSINFO_EHDR) {
        let size = segments
            .iter()
            .find(|s| s.vaddr <= vdso && vdso < s.end())
            .map_or(0x2000, |s| s.end() - vdso);
        let mut module = Module {
            path: "[vdso]".into(),
            base: Hex(vdso),
            size,
            ..Module::default()
        };
        if let Some(id) = build_id_in_memory(memory, vdso) {
            module.build_id = Some(crate::bytes::hex(&id));
            module.build_id_source = Some("dump".into());
        }
        out.push(module);
    }
    out
}

fn looks_like_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.contains(".so")
}

/// Regions: the PT_LOAD segments, adjacent pieces of one mapping merged (snapdump splits a
/// mapping where its stored part ends), each given a kind.
fn regions(notes: &Notes, segments: &[Segment], threads: &[Thread], file_len: u64) -> Vec<Region> {
    let mut sorted: Vec<Segment> = segments.to_vec();
    sorted.sort_by_key(|s| s.vaddr);
    let vdso = auxv(notes, AT_SYSINFO_EHDR);
    let file_at =
        |start: u64, end: u64| notes.files.iter().find(|f| f.start < end && start < f.end);
    // The executable's end, for the brk heap.
    let exe_end = executable(notes).map(|exe| {
        notes
            .files
            .iter()
            .filter(|f| f.path == exe.path)
            .map(|f| f.end)
            .max()
            .unwrap_or(exe.end)
    });
    let mut regions: Vec<Region> = Vec::new();
    let mut file_of: Vec<Option<usize>> = Vec::new();
    for s in &sorted {
        let file = file_at(s.vaddr, s.end()).map(|f| {
            notes
                .files
                .iter()
                .position(|g| std::ptr::eq(f, g))
                .unwrap_or(0)
        });
        // What the file really holds (a truncated file holds less than p_filesz says).
        let stored = s.filesz.min(s.memsz).min(file_len.saturating_sub(s.offset));
        if let (Some(last), Some(last_file)) = (regions.last_mut(), file_of.last())
            && last.end.0 == s.vaddr
            && last.perms == perms(s.flags)
            && *last_file == file
        {
            last.end = Hex(s.end());
            last.size = last.size.saturating_add(s.memsz);
            last.stored = last.stored.saturating_add(stored);
            continue;
        }
        regions.push(Region {
            start: Hex(s.vaddr),
            end: Hex(s.end()),
            size: s.memsz,
            stored,
            perms: perms(s.flags),
            kind: RegionKind::Anonymous,
            path: file.map(|i| notes.files[i].path.clone()),
        });
        file_of.push(file);
    }
    let mut heap_found = false;
    for region in &mut regions {
        let (start, end) = (region.start.0, region.end.0);
        region.kind = if vdso.is_some_and(|v| start <= v && v < end) {
            region.path = Some("[vdso]".into());
            RegionKind::Special
        } else if vdso.is_some_and(|v| end == v)
            && region.path.is_none()
            && !region.perms.contains('w')
        {
            // The kernel's data pages for the vDSO sit right below it.
            region.path = Some("[vvar]".into());
            RegionKind::Special
        } else if start >= VSYSCALL {
            region.path = Some("[vsyscall]".into());
            RegionKind::Special
        } else if region.path.is_some() {
            RegionKind::File
        } else if threads.iter().any(|t| start <= t.sp.0 && t.sp.0 < end) {
            RegionKind::Stack
        } else if !heap_found
            && region.perms.starts_with("rw")
            && exe_end.is_some_and(|e| start > e && start - e <= (1 << 30) + 0x2000)
        {
            heap_found = true;
            region.path = Some("[heap]".into());
            RegionKind::Heap
        } else {
            RegionKind::Anonymous
        };
    }
    regions
}

fn perms(flags: u32) -> String {
    let mut s = String::with_capacity(3);
    s.push(if flags & PF_R != 0 { 'r' } else { '-' });
    s.push(if flags & PF_W != 0 { 'w' } else { '-' });
    s.push(if flags & PF_X != 0 { 'x' } else { '-' });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nt_file_parses_and_rejects_lies() {
        let mut d = Vec::new();
        d.extend_from_slice(&2u64.to_le_bytes());
        d.extend_from_slice(&4096u64.to_le_bytes());
        for (s, e, o) in [(0x1000u64, 0x2000u64, 0u64), (0x2000, 0x3000, 1)] {
            d.extend_from_slice(&s.to_le_bytes());
            d.extend_from_slice(&e.to_le_bytes());
            d.extend_from_slice(&o.to_le_bytes());
        }
        d.extend_from_slice(b"/bin/a\0/lib/b.so\0");
        let files = file_note(&d).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].path, "/lib/b.so");
        assert_eq!(files[1].offset, 4096);
        let mut lie = d.clone();
        lie[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(file_note(&lie).is_none());
        assert!(file_note(&d[..d.len() - 12]).is_none());
    }
}
