//! The minidump reader, over the `minidump` crate: Breakpad, Crashpad, minidump-writer and
//! snapdump minidumps (`/work/shared/formats.md` has the streams).
//!
//! Folklore:
//! - rust-minidump ignores MemoryList when a Memory64List exists; lldb merges them. Both are
//!   read here, so memory found in either counts.
//! - A requested dump has an Exception stream with code 0xFFFFFFFF (DUMP_REQUESTED) or, in
//!   snapdump's, none; a crash has the signal number as the code, si_code in the flags and the
//!   fault address. A damaged Exception stream leaves the reason unknown.
//! - The crashing thread's registers are the Exception stream's context: the ThreadList's
//!   context for that thread is the signal handler's.
//! - LinuxMaps is /proc/PID/maps verbatim: the only place a minidump names `[heap]` and
//!   `[stack]` and lists mappings without contents.

use std::ops::Deref;

use minidump::{
    Minidump, MinidumpException, MinidumpMemory64List, MinidumpMemoryInfoList, MinidumpMemoryList,
    MinidumpMiscInfo, MinidumpModuleList, MinidumpRawContext, MinidumpSystemInfo,
    MinidumpThreadList, MinidumpThreadNames, Module as _, UnifiedMemory, UnifiedMemoryList,
};

use crate::bytes::{is_fault, signal_name};
use crate::error::{Error, Result};
use crate::memory::SliceMemory;
use crate::model::{
    Hex, Module, Process, Reason, ReasonKind, Region, RegionKind, Report, Thread, Writer,
};

const LINUX_PROC_STATUS: u32 = 0x4767_0004;
const LINUX_CMD_LINE: u32 = 0x4767_0006;
const LINUX_MAPS: u32 = 0x4767_0009;
const LINUX_FIRST: u32 = 0x4767_0001;
const LINUX_LAST: u32 = 0x4767_000f;
const CRASHPAD_INFO: u32 = 0x4350_0001;
const DUMP_REQUESTED: u32 = 0xFFFF_FFFF;
/// MiniDumpWithFullMemory in the header's flags.
const WITH_FULL_MEMORY: u64 = 0x2;

/// Parses the minidump's header and stream directory.
pub fn parse<'a, T: Deref<Target = [u8]> + 'a>(data: T) -> Result<Minidump<'a, T>> {
    Minidump::read(data).map_err(|e| match e {
        minidump::Error::MissingHeader => Error::Truncated {
            what: "minidump header",
            have: 0,
            needed: 32,
        },
        other => Error::Malformed {
            what: "minidump",
            detail: other.to_string(),
        },
    })
}

/// Reads the streams into `report`; returns the memory the dump holds.
pub fn read<'a, T: Deref<Target = [u8]> + 'a>(
    dump: &'a Minidump<'a, T>,
    report: &mut Report,
) -> SliceMemory<'a> {
    let file_len = report.size;
    // Streams that point past the end of the file: the minidump crate reports them as
    // missing; say why.
    for entry in dump.all_streams() {
        let end = entry.location.rva as u64 + entry.location.data_size as u64;
        if end > file_len {
            report.errors.push(format!(
                "stream {:#x} ({}) lies past the end of the file ({end} > {file_len} bytes): \
                 truncated",
                entry.stream_type,
                stream_name(entry.stream_type)
            ));
        }
    }

    let system_info = stream::<MinidumpSystemInfo>(dump, "SystemInfo", report, true);
    report.arch = match &system_info {
        Some(info) => match info.cpu {
            minidump::system_info::Cpu::X86_64 => "x86_64".into(),
            other => other.to_string(),
        },
        None => "unknown".into(),
    };
    let misc = stream::<MinidumpMiscInfo>(dump, "MiscInfo", report, false);
    let exception = stream::<MinidumpException>(dump, "Exception", report, false);

    // Memory: both lists, and each thread's stack descriptor.
    let mut memory = SliceMemory::default();
    let memory64 = stream::<MinidumpMemory64List>(dump, "Memory64List", report, false);
    if let Some(list) = &memory64 {
        for m in list.iter() {
            memory.add(m.base_address, m.bytes);
        }
    }
    let memory32 = stream::<MinidumpMemoryList>(dump, "MemoryList", report, false);
    if let Some(list) = &memory32 {
        for m in list.iter() {
            memory.add(m.base_address, m.bytes);
        }
    }
    let unified = match (memory64, memory32) {
        (Some(list), _) => UnifiedMemoryList::Memory64(list),
        (None, Some(list)) => UnifiedMemoryList::Memory(list),
        (None, None) => UnifiedMemoryList::Memory(MinidumpMemoryList::new()),
    };

    let names = stream::<MinidumpThreadNames>(dump, "ThreadNames", report, false);
    let thread_list = stream::<MinidumpThreadList>(dump, "ThreadList", report, true);
    let crashed_tid = exception
        .as_ref()
        .filter(|e| e.raw.exception_record.exception_code != DUMP_REQUESTED)
        .map(|e| e.get_crashing_thread_id());
    if let Some(list) = &thread_list {
        for thread in &list.threads {
            let tid = thread.raw.thread_id;
            match thread.stack_memory(&unified) {
                Some(UnifiedMemory::Memory(m)) => memory.add(m.base_address, m.bytes),
                Some(UnifiedMemory::Memory64(m)) => memory.add(m.base_address, m.bytes),
                None => {}
            }
            let context = match (&system_info, crashed_tid == Some(tid), &exception) {
                (Some(info), true, Some(e)) => e
                    .context(info, misc.as_ref())
                    .or_else(|| thread.context(info, misc.as_ref())),
                (Some(info), _, _) => thread.context(info, misc.as_ref()),
                (None, _, _) => None,
            };
            let (ip, sp, bp) = match context.as_deref() {
                Some(ctx) => {
                    let bp = match &ctx.raw {
                        MinidumpRawContext::Amd64(raw) => raw.rbp,
                        _ => ctx.get_register("fp").unwrap_or(0),
                    };
                    (ctx.get_instruction_pointer(), ctx.get_stack_pointer(), bp)
                }
                None => {
                    report
                        .errors
                        .push(format!("thread {tid}: no readable register context"));
                    (0, 0, 0)
                }
            };
            report.threads.push(Thread {
                tid,
                name: names
                    .as_ref()
                    .and_then(|n| n.get_name(tid))
                    .map(|n| n.into_owned()),
                ip: Hex(ip),
                sp: Hex(sp),
                bp: Hex(bp),
                crashed: crashed_tid == Some(tid),
                signal: None,
            });
        }
    }
    memory.finish();

    if let Some(list) = stream::<MinidumpModuleList>(dump, "ModuleList", report, false) {
        for m in list.iter() {
            report.modules.push(Module {
                path: m.code_file().into_owned(),
                base: Hex(m.base_address()),
                size: m.size(),
                build_id: m
                    .code_identifier()
                    .map(|id| id.as_str().to_ascii_lowercase()),
                build_id_source: m.code_identifier().map(|_| "dump".to_string()),
                debug_id: m.debug_identifier().map(|id| id.breakpad().to_string()),
                symbol_file: None,
            });
        }
    }

    let status = raw_stream(dump, LINUX_PROC_STATUS).map(|b| String::from_utf8_lossy(b));
    let status_field = |key: &str| -> Option<String> {
        status.as_deref()?.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k == key).then(|| v.trim().to_string())
        })
    };
    let mut process = Process {
        pid: misc
            .as_ref()
            .and_then(|m| m.raw.process_id().copied())
            .or_else(|| status_field("Pid")?.parse().ok()),
        ppid: status_field("PPid").and_then(|v| v.parse().ok()),
        uid: status_field("Uid").and_then(|v| v.split_whitespace().next()?.parse().ok()),
        name: status_field("Name"),
        command_line: raw_stream(dump, LINUX_CMD_LINE).map(|b| {
            String::from_utf8_lossy(b)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        }),
        dumped_at: chrono::DateTime::from_timestamp(dump.header.time_date_stamp as i64, 0)
            .filter(|_| dump.header.time_date_stamp != 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ..Process::default()
    };
    process.executable = report.modules.first().map(|m| m.path.clone());
    if process.name.is_none() {
        process.name = process
            .executable
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .map(str::to_string);
    }
    process.reason = if exception.is_none() && dump.all_streams().any(|s| s.stream_type == 6) {
        Reason {
            kind: ReasonKind::Unknown,
            description: "unknown: the Exception stream is damaged".into(),
            ..Reason::default()
        }
    } else {
        reason(exception.as_ref(), system_info.as_ref())
    };
    report.process = process;
    if let Some(main) = report.process.pid {
        for thread in &mut report.threads {
            if thread.tid == main && thread.name.is_none() {
                thread.name = report.process.name.clone();
            }
        }
    }

    report.regions = regions(dump, &memory, &report.threads, &mut report.errors);
    report.writer = if raw_stream(dump, CRASHPAD_INFO).is_some() {
        Some(Writer::Crashpad)
    } else if dump
        .all_streams()
        .any(|s| (LINUX_FIRST..=LINUX_LAST).contains(&s.stream_type))
    {
        Some(Writer::Breakpad)
    } else {
        None
    };
    report.memory = crate::model::MemorySummary::of(&report.regions);
    report.mode = Some(crate::infer_mode(
        &report.regions,
        Some(dump.header.flags & WITH_FULL_MEMORY != 0),
    ));
    memory
}

/// Reads a stream; a missing stream is silent unless `required`, a damaged one is an error.
fn stream<'a, S: minidump::MinidumpStream<'a>>(
    dump: &'a Minidump<'a, impl Deref<Target = [u8]> + 'a>,
    name: &str,
    report: &mut Report,
    required: bool,
) -> Option<S> {
    match dump.get_stream::<S>() {
        Ok(s) => Some(s),
        Err(minidump::Error::StreamNotFound) => {
            if required {
                report.errors.push(format!("no {name} stream"));
            }
            None
        }
        Err(e) => {
            report.errors.push(format!("unreadable {name} stream: {e}"));
            None
        }
    }
}

fn raw_stream<'a, T: Deref<Target = [u8]> + 'a>(
    dump: &'a Minidump<'a, T>,
    kind: u32,
) -> Option<&'a [u8]> {
    dump.get_raw_stream(kind).ok()
}

fn reason(exception: Option<&MinidumpException<'_>>, info: Option<&MinidumpSystemInfo>) -> Reason {
    // Without an Exception stream nothing crashed: snapdump writes none for a requested
    // dump (Breakpad writes one with DUMP_REQUESTED).
    let Some(e) = exception else {
        return Reason {
            kind: ReasonKind::Requested,
            description: "requested: no exception recorded (no Exception stream)".into(),
            ..Reason::default()
        };
    };
    let record = &e.raw.exception_record;
    let tid = e.get_crashing_thread_id();
    if record.exception_code == DUMP_REQUESTED {
        return Reason {
            kind: ReasonKind::Requested,
            thread: Some(tid),
            description: format!("requested (DUMP_REQUESTED, by thread {tid})"),
            ..Reason::default()
        };
    }
    let signal = record.exception_code as i32;
    let code = record.exception_flags as i32;
    let crash = is_fault(signal);
    let address = info.map_or(record.exception_address, |i| {
        e.get_crash_address(i.os, i.cpu)
    });
    let described = info
        .map(|i| e.get_crash_reason(i.os, i.cpu).to_string())
        .unwrap_or_else(|| signal_name(signal));
    Reason {
        kind: if crash {
            ReasonKind::Crash
        } else {
            ReasonKind::Signal
        },
        signal: Some(signal),
        signal_name: Some(signal_name(signal)),
        code: Some(code),
        address: crash.then_some(Hex(address)),
        thread: Some(tid),
        sender_pid: None,
        description: if crash {
            format!("crash: {described} at {:#x} in thread {tid}", address)
        } else {
            format!("signal: {described}, taken by thread {tid}")
        },
    }
}

/// Regions from LinuxMaps (every mapping), else MemoryInfoList, else the stored ranges.
fn regions<'a, T: Deref<Target = [u8]> + 'a>(
    dump: &'a Minidump<'a, T>,
    memory: &SliceMemory<'_>,
    threads: &[Thread],
    errors: &mut Vec<String>,
) -> Vec<Region> {
    let holds_sp = |start: u64, end: u64| threads.iter().any(|t| start <= t.sp.0 && t.sp.0 < end);
    let mut regions = Vec::new();
    if let Some(maps) = raw_stream(dump, LINUX_MAPS) {
        let text = String::from_utf8_lossy(maps);
        for line in text.lines() {
            let Some(map) = parse_maps_line(line) else {
                continue;
            };
            let path = map.path.filter(|p| !p.is_empty());
            let kind = match path.as_deref() {
                Some("[heap]") => RegionKind::Heap,
                Some(p) if p.starts_with("[stack") => RegionKind::Stack,
                Some("[vdso]" | "[vvar]" | "[vsyscall]" | "[vvar_vclock]") => RegionKind::Special,
                _ if holds_sp(map.start, map.end) => RegionKind::Stack,
                Some(p) if p.starts_with('/') => RegionKind::File,
                Some(p) if p.starts_with("[anon") => RegionKind::Anonymous,
                Some(p) if !p.starts_with('[') => RegionKind::File,
                _ => RegionKind::Anonymous,
            };
            regions.push(Region {
                start: Hex(map.start),
                end: Hex(map.end),
                size: map.end - map.start,
                stored: memory.stored_within(map.start, map.end),
                perms: map.perms,
                kind,
                path,
            });
        }
        if regions.is_empty() {
            errors.push("the LinuxMaps stream holds no readable line".into());
        }
    }
    if regions.is_empty()
        && let Ok(info) = dump.get_stream::<MinidumpMemoryInfoList>()
    {
        for region in info.iter() {
            let start = region.raw.base_address;
            let end = start.saturating_add(region.raw.region_size);
            if end <= start || region.state.bits() == 0x10000 {
                continue; // MEM_FREE
            }
            let mut perms = String::new();
            perms.push(if region.is_readable() { 'r' } else { '-' });
            perms.push(if region.is_writable() { 'w' } else { '-' });
            perms.push(if region.is_executable() { 'x' } else { '-' });
            regions.push(Region {
                start: Hex(start),
                end: Hex(end),
                size: end - start,
                stored: memory.stored_within(start, end),
                perms,
                kind: if holds_sp(start, end) {
                    RegionKind::Stack
                } else {
                    RegionKind::Anonymous
                },
                path: None,
            });
        }
    }
    if regions.is_empty() {
        for (start, end) in memory.ranges() {
            regions.push(Region {
                start: Hex(start),
                end: Hex(end),
                size: end - start,
                stored: end - start,
                perms: "???".into(),
                kind: if holds_sp(start, end) {
                    RegionKind::Stack
                } else {
                    RegionKind::Anonymous
                },
                path: None,
            });
        }
    }
    regions
}

struct MapsLine {
    start: u64,
    end: u64,
    perms: String,
    path: Option<String>,
}

/// `start-end perms offset dev inode path` (the path may hold spaces).
fn parse_maps_line(line: &str) -> Option<MapsLine> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end <= start {
        return None;
    }
    let perms = fields.next()?.to_string();
    let _offset = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next().map(|p| p.trim().to_string());
    Some(MapsLine {
        start,
        end,
        perms,
        path,
    })
}

fn stream_name(kind: u32) -> &'static str {
    match kind {
        3 => "ThreadList",
        4 => "ModuleList",
        5 => "MemoryList",
        6 => "Exception",
        7 => "SystemInfo",
        9 => "Memory64List",
        15 => "MiscInfo",
        16 => "MemoryInfoList",
        24 => "ThreadNames",
        0x4767_0003 => "LinuxCpuInfo",
        LINUX_PROC_STATUS => "LinuxProcStatus",
        0x4767_0005 => "LinuxLsbRelease",
        LINUX_CMD_LINE => "LinuxCmdLine",
        0x4767_0007 => "LinuxEnviron",
        0x4767_0008 => "LinuxAuxv",
        LINUX_MAPS => "LinuxMaps",
        0x4767_000a => "LinuxDsoDebug",
        CRASHPAD_INFO => "CrashpadInfo",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let m = parse_maps_line(
            "7f0000000000-7f0000001000 r-xp 00000000 08:01 1234     /usr/lib/my lib.so",
        )
        .unwrap();
        assert_eq!(m.start, 0x7f00_0000_0000);
        assert_eq!(m.perms, "r-xp");
        assert_eq!(m.path.as_deref(), Some("/usr/lib/my lib.so"));
        let anon = parse_maps_line("1000-2000 rw-p 00000000 00:00 0").unwrap();
        assert_eq!(anon.path, None);
        assert!(parse_maps_line("2000-1000 rw-p 0 0 0").is_none());
        assert!(parse_maps_line("zz").is_none());
    }
}
