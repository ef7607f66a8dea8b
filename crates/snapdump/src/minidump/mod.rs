//! The minidump writer: Breakpad/Crashpad's Linux conventions, so minidump-stackwalk, lldb,
//! WinDbg and Sentry open the files.
//!
//! Two phases, like the ELF writer. [`MinidumpLayout::new`] builds every stream but memory
//! contents in one buffer whose offsets are the file's (header, directory, threads and their
//! contexts, modules, memory descriptors, system and `/proc` streams) and decides where each
//! memory region's bytes go; [`write_minidump`] then writes that buffer and streams the memory
//! after it, chunk by chunk, holes for untouched pages.
//!
//! Memory: mini dumps carry a `MemoryList`; heap and full dumps one `Memory64List` whose data
//! comes last, thread stacks first, so every 32-bit offset in the file stays under 4 GiB. Each
//! thread's stack descriptor points into that data.

pub mod context;
pub mod format;
pub mod memory;
pub mod modules;
pub mod system;

use minidump_common::format::{CONTEXT_AMD64, CvSignature, DSO_DEBUG_64, LINK_MAP_64};
use minidump_common::format::{
    MINIDUMP_DIRECTORY, MINIDUMP_EXCEPTION, MINIDUMP_EXCEPTION_STREAM, MINIDUMP_HEADER,
    MINIDUMP_LOCATION_DESCRIPTOR, MINIDUMP_MEMORY_DESCRIPTOR, MINIDUMP_MEMORY_DESCRIPTOR64,
    MINIDUMP_MEMORY_INFO, MINIDUMP_MEMORY_INFO_LIST, MINIDUMP_MODULE, MINIDUMP_SIGNATURE,
    MINIDUMP_STREAM_TYPE as Stream, MINIDUMP_THREAD, MINIDUMP_THREAD_NAME, MINIDUMP_VERSION,
    MemoryProtection, MemoryState, MemoryType,
};

use crate::Cancel;
use crate::capture::{Capture, DumpReason};
use crate::elf::WriteStats;
use crate::error::Result;
use crate::output::{SparseWriter, copy_memory};
use crate::process::memory::{PAGE_SIZE, ProcessMemory};
use crate::process::procfs::Mapping;
use crate::select::{Mode, Plan, is_shared_anonymous};

use format::{Blob, location, lossy, rva, size_of, too_large};
use memory::MemoryLayout;
use modules::Module;

/// MiniDumpWithFullMemory: the dump holds all of the process's (chosen) memory.
const FLAG_WITH_FULL_MEMORY: u64 = 0x2;
/// Streams are 8-aligned, memory data page-aligned (so untouched pages become file holes).
const STREAM_ALIGN: usize = 8;
/// Breakpad's `MDRawDebug64` and `MDRawLinkMap64` as a C compiler lays them out on x86_64
/// (natural alignment: 40 and 24 bytes). `minidump-common` declares them packed.
const RAW_DEBUG_SIZE: usize = 40;
const RAW_LINK_MAP_SIZE: usize = 24;
/// At most this much of the executable's dynamic section is copied after `MDRawDebug`.
const MAX_DYNAMIC: u64 = 64 * 1024;

/// Where everything goes in the file.
#[derive(Debug)]
pub struct MinidumpLayout {
    /// Header, directory and every stream but memory contents, from offset 0.
    pub metadata: Vec<u8>,
    pub memory: MemoryLayout,
    /// File offset of each memory region's bytes (contiguous, from `data_offset`).
    pub region_offsets: Vec<u64>,
    pub data_offset: u64,
    pub total_len: u64,
    /// Memory64List (heap and full) rather than MemoryList (mini).
    pub memory64: bool,
}

/// What the streams are made of, gathered once.
struct Inputs {
    modules: Vec<Module>,
    cpuinfo: Vec<u8>,
    lsb_release: Option<Vec<u8>>,
    dso_debug: Option<DsoDebug>,
}

/// The loader's `r_debug` and the executable's dynamic section.
struct DsoDebug {
    version: u32,
    brk: u64,
    ldbase: u64,
    dynamic: u64,
    dynamic_bytes: Vec<u8>,
}

impl MinidumpLayout {
    pub fn new(
        capture: &Capture,
        plan: &Plan,
        memory: &dyn ProcessMemory,
    ) -> Result<MinidumpLayout> {
        let inputs = Inputs {
            modules: modules::find_modules(capture, memory),
            cpuinfo: std::fs::read("/proc/cpuinfo").unwrap_or_default(),
            lsb_release: lsb_release(capture.pid),
            dso_debug: dso_debug(capture, memory),
        };
        let regions = MemoryLayout::new(capture, plan);
        let full = plan.mode != Mode::Mini;
        match build(capture, &inputs, regions.clone(), full, full)? {
            Some(layout) => Ok(layout),
            // A mini dump whose memory outgrew 32-bit offsets: a Memory64List holds it.
            None => build(capture, &inputs, regions, true, full)?
                .ok_or_else(|| too_large("the thread stacks")),
        }
    }

    /// Bytes on disk (holes excluded) the dump is expected to take.
    pub fn estimated_disk_bytes(&self, plan: &Plan) -> u64 {
        self.metadata.len() as u64 + plan.data_bytes()
    }
}

/// Which streams, in directory order.
fn stream_kinds(capture: &Capture, inputs: &Inputs, memory64: bool) -> Vec<Stream> {
    let mut kinds = vec![
        Stream::ThreadListStream,
        Stream::ThreadNamesStream,
        Stream::ModuleListStream,
        if memory64 {
            Stream::Memory64ListStream
        } else {
            Stream::MemoryListStream
        },
        Stream::MemoryInfoListStream,
    ];
    if matches!(capture.reason, DumpReason::Signal { .. }) {
        kinds.push(Stream::ExceptionStream);
    }
    kinds.extend([
        Stream::SystemInfoStream,
        Stream::MiscInfoStream,
        Stream::LinuxCpuInfo,
        Stream::LinuxProcStatus,
    ]);
    if inputs.lsb_release.is_some() {
        kinds.push(Stream::LinuxLsbRelease);
    }
    kinds.extend([
        Stream::LinuxCmdLine,
        Stream::LinuxEnviron,
        Stream::LinuxAuxv,
        Stream::LinuxMaps,
    ]);
    if inputs.dso_debug.is_some() {
        kinds.push(Stream::LinuxDsoDebug);
    }
    kinds
}

/// Offsets a stream leaves to fill once the memory data's place is known.
#[derive(Default)]
struct Pending {
    /// Each thread's MINIDUMP_THREAD slot and its context's location.
    threads: Vec<(u64, MINIDUMP_LOCATION_DESCRIPTOR)>,
    /// MemoryList: each descriptor's slot. Memory64List: the BaseRva slot.
    descriptors: Vec<u64>,
    base_rva: Option<u64>,
}

/// Lay the file out; `None` when a MemoryList would need offsets past 4 GiB.
fn build(
    capture: &Capture,
    inputs: &Inputs,
    regions: MemoryLayout,
    memory64: bool,
    full_memory: bool,
) -> Result<Option<MinidumpLayout>> {
    let kinds = stream_kinds(capture, inputs, memory64);
    let mut blob = Blob::new();
    let header_at = blob.reserve(size_of::<MINIDUMP_HEADER>());
    let directory_at = blob.reserve(kinds.len() * size_of::<MINIDUMP_DIRECTORY>());
    let mut pending = Pending::default();
    for (index, &kind) in kinds.iter().enumerate() {
        blob.align(STREAM_ALIGN);
        let loc = write_stream(&mut blob, kind, capture, inputs, &regions, &mut pending);
        blob.put_at(
            directory_at + (index * size_of::<MINIDUMP_DIRECTORY>()) as u64,
            MINIDUMP_DIRECTORY {
                stream_type: kind as u32,
                location: loc,
            },
        );
    }
    blob.put_at(
        header_at,
        MINIDUMP_HEADER {
            signature: MINIDUMP_SIGNATURE,
            version: MINIDUMP_VERSION,
            stream_count: kinds.len() as u32,
            stream_directory_rva: rva(directory_at),
            checksum: 0,
            time_date_stamp: capture
                .captured_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32),
            flags: if full_memory {
                FLAG_WITH_FULL_MEMORY
            } else {
                0
            },
        },
    );

    // The memory data: page-aligned, after everything else.
    let data_offset = (blob.pos()).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut region_offsets = Vec::with_capacity(regions.regions.len());
    let mut cursor = data_offset;
    for region in &regions.regions {
        region_offsets.push(cursor);
        cursor += region.len();
    }
    let total_len = cursor;
    if !memory64 {
        let fits = total_len <= u64::from(u32::MAX)
            && regions
                .regions
                .iter()
                .all(|r| r.len() <= u64::from(u32::MAX));
        if !fits {
            return Ok(None);
        }
        for ((slot, region), &offset) in pending
            .descriptors
            .iter()
            .zip(&regions.regions)
            .zip(&region_offsets)
        {
            blob.put_at(
                *slot,
                MINIDUMP_MEMORY_DESCRIPTOR {
                    start_of_memory_range: region.start,
                    memory: location(offset, region.len()),
                },
            );
        }
    }
    if let Some(slot) = pending.base_rva {
        blob.put_at(slot, data_offset);
    }
    for (index, ((slot, context), thread)) in
        pending.threads.iter().zip(&capture.threads).enumerate()
    {
        let stack = match regions.stacks.get(index).copied().flatten() {
            Some(stack) => {
                let offset = region_offsets[stack.region]
                    + (stack.start - regions.regions[stack.region].start);
                let size = stack.end - stack.start;
                MINIDUMP_MEMORY_DESCRIPTOR {
                    start_of_memory_range: stack.start,
                    memory: if offset + size <= u64::from(u32::MAX) {
                        location(offset, size)
                    } else {
                        MINIDUMP_LOCATION_DESCRIPTOR::default()
                    },
                }
            }
            None => MINIDUMP_MEMORY_DESCRIPTOR {
                start_of_memory_range: thread.stack_pointer(),
                memory: MINIDUMP_LOCATION_DESCRIPTOR::default(),
            },
        };
        blob.put_at(
            *slot,
            MINIDUMP_THREAD {
                thread_id: thread.tid as u32,
                suspend_count: 0,
                priority_class: 0,
                priority: 0,
                // As Crashpad does: the thread's TLS base (there is no slot for it in the
                // context).
                teb: thread.reg(crate::capture::reg::FS_BASE),
                stack,
                thread_context: *context,
            },
        );
    }
    Ok(Some(MinidumpLayout {
        metadata: blob.finish()?,
        memory: regions,
        region_offsets,
        data_offset,
        total_len,
        memory64,
    }))
}

fn write_stream(
    blob: &mut Blob,
    kind: Stream,
    capture: &Capture,
    inputs: &Inputs,
    regions: &MemoryLayout,
    pending: &mut Pending,
) -> MINIDUMP_LOCATION_DESCRIPTOR {
    let start = blob.pos();
    let since = |blob: &Blob| location(start, blob.pos() - start);
    match kind {
        Stream::ThreadListStream => {
            blob.put(capture.threads.len() as u32);
            let slots = blob.reserve(capture.threads.len() * size_of::<MINIDUMP_THREAD>());
            let loc = since(blob);
            for (index, thread) in capture.threads.iter().enumerate() {
                blob.align(16);
                let at = blob.put(context::amd64_context(thread));
                pending.threads.push((
                    slots + (index * size_of::<MINIDUMP_THREAD>()) as u64,
                    location(at, size_of::<CONTEXT_AMD64>() as u64),
                ));
            }
            loc
        }
        Stream::ThreadNamesStream => {
            blob.put(capture.threads.len() as u32);
            let slots = blob.reserve(capture.threads.len() * size_of::<MINIDUMP_THREAD_NAME>());
            let loc = since(blob);
            for (index, thread) in capture.threads.iter().enumerate() {
                let name = blob.put_string(&lossy(&thread.name));
                blob.put_at(
                    slots + (index * size_of::<MINIDUMP_THREAD_NAME>()) as u64,
                    MINIDUMP_THREAD_NAME {
                        thread_id: thread.tid as u32,
                        thread_name_rva: name,
                    },
                );
            }
            loc
        }
        Stream::ModuleListStream => {
            let modules = &inputs.modules;
            blob.put(modules.len() as u32);
            let slots = blob.reserve(modules.len() * size_of::<MINIDUMP_MODULE>());
            let loc = since(blob);
            for (index, module) in modules.iter().enumerate() {
                let name = blob.put_string(&module.name);
                let cv_record = match &module.identifier {
                    Some(id) => {
                        blob.align(4);
                        let mut record = (CvSignature::Elf as u32).to_le_bytes().to_vec();
                        record.extend_from_slice(id);
                        blob.put_bytes(&record)
                    }
                    None => MINIDUMP_LOCATION_DESCRIPTOR::default(),
                };
                blob.put_at(
                    slots + (index * size_of::<MINIDUMP_MODULE>()) as u64,
                    MINIDUMP_MODULE {
                        base_of_image: module.base,
                        size_of_image: module.size().min(u64::from(u32::MAX)) as u32,
                        module_name_rva: rva(name),
                        cv_record,
                        ..MINIDUMP_MODULE::default()
                    },
                );
            }
            loc
        }
        Stream::MemoryListStream => {
            blob.put(regions.regions.len() as u32);
            for _ in &regions.regions {
                pending
                    .descriptors
                    .push(blob.reserve(size_of::<MINIDUMP_MEMORY_DESCRIPTOR>()));
            }
            since(blob)
        }
        Stream::Memory64ListStream => {
            blob.put(regions.regions.len() as u64);
            pending.base_rva = Some(blob.put(0u64));
            for region in &regions.regions {
                blob.put(MINIDUMP_MEMORY_DESCRIPTOR64 {
                    start_of_memory_range: region.start,
                    data_size: region.len(),
                });
            }
            since(blob)
        }
        Stream::MemoryInfoListStream => {
            blob.put(MINIDUMP_MEMORY_INFO_LIST {
                size_of_header: size_of::<MINIDUMP_MEMORY_INFO_LIST>() as u32,
                size_of_entry: size_of::<MINIDUMP_MEMORY_INFO>() as u32,
                number_of_entries: capture.mappings.len() as u64,
            });
            for mapping in &capture.mappings {
                blob.put(memory_info(mapping, &inputs.modules));
            }
            since(blob)
        }
        Stream::ExceptionStream => {
            let DumpReason::Signal {
                tid,
                signal,
                siginfo,
            } = &capture.reason
            else {
                return since(blob);
            };
            let word = |at: usize| {
                siginfo
                    .get(at..at + 8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            };
            let si_code = siginfo
                .get(8..12)
                .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
            let context = capture
                .threads
                .iter()
                .position(|t| t.tid == *tid)
                .and_then(|i| pending.threads.get(i))
                .map(|&(_, context)| context)
                .unwrap_or_default();
            blob.put(MINIDUMP_EXCEPTION_STREAM {
                thread_id: *tid as u32,
                __align: 0,
                exception_record: MINIDUMP_EXCEPTION {
                    exception_code: *signal as u32,
                    exception_flags: si_code,
                    exception_address: word(16),
                    ..MINIDUMP_EXCEPTION::default()
                },
                thread_context: context,
            });
            since(blob)
        }
        Stream::SystemInfoStream => {
            let os = system::os_version();
            let csd = blob.put_string(&os.description);
            blob.align(STREAM_ALIGN);
            let at = blob.pos();
            let cpu = system::parse_cpuinfo(&inputs.cpuinfo);
            blob.put(system::system_info(&cpu, &os, rva(csd)));
            location(at, blob.pos() - at)
        }
        Stream::MiscInfoStream => {
            blob.put(system::misc_info(capture));
            since(blob)
        }
        Stream::LinuxCpuInfo => blob.put_bytes(&inputs.cpuinfo),
        Stream::LinuxProcStatus => blob.put_bytes(&capture.status_raw),
        Stream::LinuxLsbRelease => blob.put_bytes(inputs.lsb_release.as_deref().unwrap_or(&[])),
        Stream::LinuxCmdLine => blob.put_bytes(&capture.cmdline),
        Stream::LinuxEnviron => blob.put_bytes(&capture.environ),
        Stream::LinuxAuxv => blob.put_bytes(&capture.auxv),
        Stream::LinuxMaps => blob.put_bytes(&capture.maps_raw),
        Stream::LinuxDsoDebug => match &inputs.dso_debug {
            Some(debug) => write_dso_debug(blob, capture, debug),
            None => since(blob),
        },
        _ => since(blob),
    }
}

/// Breakpad's DSO debug stream: the link map entries (`MDRawLinkMap64`) and their names
/// first, then the stream itself: `MDRawDebug64` followed by the executable's dynamic section.
fn write_dso_debug(
    blob: &mut Blob,
    capture: &Capture,
    debug: &DsoDebug,
) -> MINIDUMP_LOCATION_DESCRIPTOR {
    let entries = &capture.link_map.entries;
    let names: Vec<u64> = entries
        .iter()
        .map(|entry| blob.put_string(&lossy(&entry.name)))
        .collect();
    blob.align(STREAM_ALIGN);
    let map_at = blob.reserve(entries.len() * RAW_LINK_MAP_SIZE);
    for (index, (entry, &name)) in entries.iter().zip(&names).enumerate() {
        let raw = LINK_MAP_64 {
            addr: entry.load_bias,
            name: rva(name),
            ld: entry.dynamic,
        };
        let at = map_at + (index * RAW_LINK_MAP_SIZE) as u64;
        blob.put_at(at, raw.addr);
        blob.put_at(at + 8, raw.name);
        blob.put_at(at + 16, raw.ld);
    }
    blob.align(STREAM_ALIGN);
    let at = blob.reserve(RAW_DEBUG_SIZE);
    let raw = DSO_DEBUG_64 {
        version: debug.version,
        map: rva(map_at),
        dso_count: entries.len() as u32,
        brk: debug.brk,
        ldbase: debug.ldbase,
        dynamic: debug.dynamic,
    };
    blob.put_at(at, raw.version);
    blob.put_at(at + 4, raw.map);
    blob.put_at(at + 8, raw.dso_count);
    blob.put_at(at + 16, raw.brk);
    blob.put_at(at + 24, raw.ldbase);
    blob.put_at(at + 32, raw.dynamic);
    blob.put_bytes(&debug.dynamic_bytes);
    location(at, blob.pos() - at)
}

/// One MemoryInfoList entry: protections, state and type of a mapping.
fn memory_info(mapping: &Mapping, modules: &[Module]) -> MINIDUMP_MEMORY_INFO {
    let p = mapping.perms;
    let protection = match (p.read, p.write, p.exec) {
        (_, true, true) => MemoryProtection::PAGE_EXECUTE_READWRITE,
        (true, false, true) => MemoryProtection::PAGE_EXECUTE_READ,
        (false, false, true) => MemoryProtection::PAGE_EXECUTE,
        (_, true, false) => MemoryProtection::PAGE_READWRITE,
        (true, false, false) => MemoryProtection::PAGE_READONLY,
        (false, false, false) => MemoryProtection::PAGE_NOACCESS,
    };
    let module = modules
        .iter()
        .find(|m| m.base <= mapping.start && mapping.end <= m.end);
    let kind = match (mapping.file_path(), module) {
        (Some(_), Some(_)) => MemoryType::MEM_IMAGE,
        (Some(_), None) => MemoryType::MEM_MAPPED,
        (None, _) if is_shared_anonymous(mapping) => MemoryType::MEM_MAPPED,
        (None, Some(_)) => MemoryType::MEM_IMAGE, // the vDSO
        (None, None) => MemoryType::MEM_PRIVATE,
    };
    MINIDUMP_MEMORY_INFO {
        base_address: mapping.start,
        allocation_base: module.map_or(mapping.start, |m| m.base),
        allocation_protection: protection.bits(),
        __alignment1: 0,
        region_size: mapping.len(),
        state: MemoryState::MEM_COMMIT.bits(),
        protection: protection.bits(),
        _type: kind.bits(),
        __alignment2: 0,
    }
}

/// `/etc/lsb-release`, else `os-release`, as the target sees them.
fn lsb_release(pid: i32) -> Option<Vec<u8>> {
    ["etc/lsb-release", "etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|path| {
            std::fs::read(crate::process::memory_dir(pid).join("root").join(path)).ok()
        })
}

fn dso_debug(capture: &Capture, memory: &dyn ProcessMemory) -> Option<DsoDebug> {
    let r_debug = capture.link_map.r_debug?;
    // struct r_debug: int r_version; link_map *r_map; ElfW(Addr) r_brk; enum r_state;
    // ElfW(Addr) r_ldbase.
    let raw = memory.read_vec(r_debug, 40)?;
    let word = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
    let (dynamic, size) = capture.link_map.exe_dynamic.unwrap_or((0, 0));
    Some(DsoDebug {
        version: u32::from_le_bytes(raw[..4].try_into().expect("4 bytes")),
        brk: word(16),
        ldbase: word(32),
        dynamic,
        dynamic_bytes: memory
            .read_vec(dynamic, size.min(MAX_DYNAMIC) as usize)
            .unwrap_or_default(),
    })
}

/// Bytes the minidump is expected to take, on disk and in length: the memory the plan reads
/// plus a generous estimate of the streams (nothing is read from the process for it).
pub fn estimate_disk_bytes(capture: &Capture, plan: &Plan) -> u64 {
    let threads = capture.threads.len() as u64;
    let mappings = capture.mappings.len() as u64;
    let runs: u64 = plan.stored_segments().map(|s| s.runs.len() as u64).sum();
    let raw = capture.status_raw.len()
        + capture.maps_raw.len()
        + capture.cmdline.len()
        + capture.environ.len()
        + capture.auxv.len();
    let link_map: u64 = capture
        .link_map
        .entries
        .iter()
        .map(|e| RAW_LINK_MAP_SIZE as u64 + 8 + 2 * e.name.len() as u64)
        .sum();
    let streams = 64 * 1024 // header, directory, system info, cpuinfo's share
        + threads * (48 + 1232 + 16 + 12 + 40)
        + mappings * (48 + 108 + 64 + 2 * 256)
        + runs * 16
        + raw as u64
        + link_map
        + MAX_DYNAMIC
        + 256 * 1024; // /proc/cpuinfo of a large machine
    // Memory: what is read, plus the untouched stack pages written as holes (which count in
    // the file's length, not on disk).
    streams + PAGE_SIZE + MemoryLayout::new(capture, plan).span_bytes()
}

/// Stream a minidump in file order. `progress` is called with the memory bytes done so far.
pub fn write_minidump(
    capture: &Capture,
    plan: &Plan,
    memory: &dyn ProcessMemory,
    mut out: SparseWriter<'_>,
    progress: &mut dyn FnMut(u64),
    cancel: &Cancel,
) -> Result<WriteStats> {
    let layout = MinidumpLayout::new(capture, plan, memory)?;
    cancel.check()?;
    let mut stats = WriteStats::default();
    out.write(&layout.metadata)?;
    let regions = &layout.memory.regions;
    let mut current = 0;
    let mut locate = |addr: u64| {
        // Pieces come in file order, region by region.
        while !(regions[current].start <= addr && addr < regions[current].end) {
            current += 1;
        }
        layout.region_offsets[current] + (addr - regions[current].start)
    };
    let runs = regions
        .iter()
        .flat_map(|region| region.runs.iter().copied());
    let copied = copy_memory(memory, runs, &mut locate, &mut out, progress, cancel)?;
    out.skip_to(layout.total_len)?;
    stats.unreadable_bytes = copied.unreadable;
    stats.disk_bytes = out.written();
    stats.file_len = layout.total_len;
    out.finish()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Thread, reg};
    use crate::process::link_map::LinkMap;
    use crate::process::memory::ByteFn;
    use crate::process::procfs::Backing;
    use crate::process::procfs::{Stat, Status};
    use crate::select::Segment;
    use minidump::{
        Minidump, MinidumpException, MinidumpMemory64List, MinidumpMemoryList, MinidumpModuleList,
        MinidumpSystemInfo, MinidumpThreadList,
    };

    fn byte(addr: u64) -> u8 {
        (addr ^ (addr >> 8)) as u8 | 1
    }

    /// Every byte readable, none zero.
    const PATTERN: ByteFn<fn(u64) -> u8> = ByteFn(byte);

    fn mapping(start: u64, end: u64, backing: Backing) -> Mapping {
        Mapping::private_rw(start, end, backing)
    }

    fn thread(tid: i32, regs: Vec<u8>) -> Thread {
        Thread {
            tid,
            name: format!("t{tid}").into_bytes(),
            regs,
            fpregs: None,
            xstate: None,
            pending_signal: None,
            stat: None,
            status: None,
        }
    }

    fn regs(sp: u64, ip: u64) -> Vec<u8> {
        let mut regs = vec![0u8; reg::COUNT * 8];
        regs[reg::RSP * 8..][..8].copy_from_slice(&sp.to_le_bytes());
        regs[reg::RIP * 8..][..8].copy_from_slice(&ip.to_le_bytes());
        regs
    }

    const HEAP: (u64, u64) = (0x10000, 0x20000);
    const STACK: (u64, u64) = (0x7000_0000, 0x7001_0000);
    const SP: u64 = 0x7000_e010;

    /// A crashed process: thread 1 faulted at 0xdead; thread 2 has a short register block.
    fn capture() -> Capture {
        let mut siginfo = [0u8; 128];
        siginfo[..4].copy_from_slice(&11u32.to_le_bytes());
        siginfo[8..12].copy_from_slice(&1u32.to_le_bytes());
        siginfo[16..24].copy_from_slice(&0xdeadu64.to_le_bytes());
        Capture {
            pid: 1,
            stat: Stat::default(),
            status: Status::default(),
            status_raw: b"Name:\tx\nPid:\t1\n".to_vec(),
            maps_raw: Vec::new(),
            cmdline: b"x\0".to_vec(),
            environ: Vec::new(),
            auxv: Vec::new(),
            exe: None,
            mappings: vec![
                mapping(HEAP.0, HEAP.1, Backing::Heap),
                mapping(STACK.0, STACK.1, Backing::Stack),
            ],
            threads: vec![thread(1, regs(SP, 0x1234)), thread(2, vec![1, 2, 3])],
            link_map: LinkMap::default(),
            reason: DumpReason::Signal {
                tid: 1,
                signal: 11,
                siginfo,
            },
            captured_at: std::time::SystemTime::now(),
            redacted: Vec::new(),
        }
    }

    /// Heap plans: both mappings whole, heap runs with a hole, stack runs with a hole inside
    /// the thread's stack range. Mini plans: part of the heap (as if the loader's list lived
    /// there) and the stack from the page below SP−128 up.
    fn plan(heap: bool) -> Plan {
        let unstored = |start, end, mapping| Segment {
            start,
            end,
            mapping,
            stored: false,
            runs: Vec::new(),
        };
        let heap_end = if heap { HEAP.1 } else { 0x16000 };
        let mut segments = vec![Segment {
            start: HEAP.0,
            end: heap_end,
            mapping: 0,
            stored: true,
            runs: vec![(0x10000, 0x11000), (0x14000, 0x16000)],
        }];
        if heap {
            segments.push(Segment {
                start: STACK.0,
                end: STACK.1,
                mapping: 1,
                stored: true,
                runs: vec![
                    (0x7000_0000, 0x7000_1000),
                    (0x7000_c000, 0x7000_d000),
                    (0x7000_e000, 0x7001_0000),
                ],
            });
        } else {
            segments.push(unstored(heap_end, HEAP.1, 0));
            segments.push(unstored(STACK.0, 0x7000_d000, 1));
            segments.push(Segment {
                start: 0x7000_d000,
                end: STACK.1,
                mapping: 1,
                stored: true,
                runs: vec![(0x7000_e000, 0x7001_0000)],
            });
        }
        Plan {
            segments,
            mode: if heap { Mode::Heap } else { Mode::Mini },
            ..Plan::default()
        }
    }

    fn write(capture: &Capture, plan: &Plan, name: &str) -> (Vec<u8>, WriteStats) {
        let path = std::env::temp_dir().join(format!("snapdump-md-{name}-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let out = SparseWriter::new(&file, None, 0);
        let mut last = 0;
        let stats = write_minidump(
            capture,
            plan,
            &PATTERN,
            out,
            &mut |done| last = done,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(last, plan.data_bytes());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes.len() as u64, stats.file_len);
        (bytes, stats)
    }

    fn expect_pattern(bytes: &[u8], base: u64, holes: &[(u64, u64)]) {
        for (i, &b) in bytes.iter().enumerate() {
            let addr = base + i as u64;
            let hole = holes.iter().any(|&(s, e)| s <= addr && addr < e);
            assert_eq!(b, if hole { 0 } else { byte(addr) }, "byte at {addr:#x}");
        }
    }

    #[test]
    fn heap_plans_give_one_memory64_list_with_stacks_first_and_an_exception() {
        let capture = capture();
        let plan = plan(true);
        let (bytes, stats) = write(&capture, &plan, "heap");
        assert_eq!(stats.unreadable_bytes, 0);
        assert_eq!(u64::from_le_bytes(bytes[24..32].try_into().unwrap()), 2);
        let dump = Minidump::read(bytes).unwrap();
        assert!(dump.get_stream::<MinidumpMemoryList>().is_err());
        let list: MinidumpMemory64List = dump.get_stream().unwrap();
        let regions: Vec<(u64, u64)> = list.iter().map(|r| (r.base_address, r.size)).collect();
        assert_eq!(
            regions,
            [
                (0x7000_d000, 0x3000),
                (0x10000, 0x1000),
                (0x14000, 0x2000),
                (0x7000_0000, 0x1000),
                (0x7000_c000, 0x1000),
            ],
            "stacks first, one descriptor per run"
        );
        let stack_region = list.memory_at_address(SP).unwrap();
        expect_pattern(
            stack_region.bytes,
            0x7000_d000,
            &[(0x7000_d000, 0x7000_e000)],
        );
        assert!(list.memory_at_address(0x12000).is_none());

        let system: MinidumpSystemInfo = dump.get_stream().unwrap();
        let threads: MinidumpThreadList = dump.get_stream().unwrap();
        assert_eq!(threads.threads.len(), 2);
        let memory = dump.get_memory().unwrap();
        let first = &threads.threads[0];
        let stack = first.stack_memory(&memory).unwrap();
        assert_eq!(
            (stack.base_address(), stack.bytes().len()),
            (0x7000_d000, 0x3000)
        );
        expect_pattern(stack.bytes(), 0x7000_d000, &[(0x7000_d000, 0x7000_e000)]);
        let context = first.context(&system, None).unwrap();
        assert_eq!(context.get_instruction_pointer(), 0x1234);
        // The short register block: zeros, no panic, no stack.
        let second = &threads.threads[1];
        assert_eq!(
            second.context(&system, None).unwrap().get_stack_pointer(),
            0
        );

        let exception: MinidumpException = dump.get_stream().unwrap();
        assert_eq!(exception.raw.thread_id, 1);
        assert_eq!(exception.raw.exception_record.exception_code, 11);
        assert_eq!(exception.raw.exception_record.exception_address, 0xdead);
        let crash_context = exception.context(&system, None).unwrap();
        assert_eq!(crash_context.get_instruction_pointer(), 0x1234);
        let modules: MinidumpModuleList = dump.get_stream().unwrap();
        assert_eq!(modules.iter().count(), 0);
    }

    #[test]
    fn mini_plans_give_a_memory_list() {
        let mut capture = capture();
        capture.reason = DumpReason::Requested;
        let plan = plan(false);
        let (bytes, _) = write(&capture, &plan, "mini");
        assert_eq!(u64::from_le_bytes(bytes[24..32].try_into().unwrap()), 0);
        let dump = Minidump::read(bytes).unwrap();
        assert!(dump.get_stream::<MinidumpMemory64List>().is_err());
        assert!(dump.get_stream::<MinidumpException>().is_err());
        let list: MinidumpMemoryList = dump.get_stream().unwrap();
        assert_eq!(list.iter().count(), 3);
        let threads: MinidumpThreadList = dump.get_stream().unwrap();
        let memory = dump.get_memory().unwrap();
        let stack = threads.threads[0].stack_memory(&memory).unwrap();
        assert_eq!(
            (stack.base_address(), stack.bytes().len()),
            (0x7000_d000, 0x3000)
        );
        expect_pattern(stack.bytes(), 0x7000_d000, &[(0x7000_d000, 0x7000_e000)]);
    }

    #[test]
    fn the_estimate_covers_the_file() {
        let capture = capture();
        let plan = plan(true);
        let (_, stats) = write(&capture, &plan, "estimate");
        let estimate = estimate_disk_bytes(&capture, &plan);
        assert!(estimate >= stats.disk_bytes && estimate >= stats.file_len);
    }
}
