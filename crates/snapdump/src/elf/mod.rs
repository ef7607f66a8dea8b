//! The ELF core writer: ET_CORE, one PT_NOTE, then one PT_LOAD per planned segment in address
//! order, as the kernel and gdb write them.
//!
//! Two phases, as in `object`'s writer: [`CoreLayout::new`] decides every offset from the
//! capture and the plan (so the size is known before a byte is written), then
//! [`write_core`] streams the header, the notes and the memory in file order.

pub mod notes;

use object::elf::{
    ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, ET_CORE, EV_CURRENT, FileHeader64, PF_R, PF_W,
    PF_X, PN_XNUM, PT_LOAD, PT_NOTE, ProgramHeader64, SectionHeader64,
};
use object::endian::{LittleEndian as LE, U16, U32, U64};
use object::pod::bytes_of;

use crate::Cancel;
use crate::capture::Capture;
use crate::error::Result;
use crate::output::{SparseWriter, copy_memory};
use crate::process::memory::ProcessMemory;
use crate::select::Plan;

const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
const SHDR_SIZE: u64 = 64;
const PAGE: u64 = 4096;
/// Memory is read in runs of this size.
pub const READ_CHUNK: usize = 4 << 20;

/// One PT_LOAD: a stretch of a planned segment. A touched run's bytes are in the file
/// (`filesz`), and the never-touched pages after it, up to the next run, are folded into its
/// `memsz`: readers take memory past `p_filesz` as zeros, and scattered pages need one program
/// header each instead of two. `filesz == 0`: the untouched pages before a segment's first
/// run, or a segment the plan leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    /// Index of the segment in the plan.
    pub segment: usize,
}

/// Where everything goes in the file.
///
/// The file is dense: a stored segment is split at its untouched gaps, the touched runs get
/// PT_LOADs with contents laid end to end, and each gap a PT_LOAD with `filesz` 0 (gdb reads
/// those as zeros, which is what never-touched memory holds). Mirroring the address space with
/// holes in the file, as the kernel does, costs one file extent per scattered page (seconds
/// for a sparse heap on ext4), and every copy or upload of the dump moves the holes as zeros.
///
/// The PT_LOADs are computed as they are written ([`CoreLayout::loads`]), never held all at
/// once: a sparse heap can have millions of them.
#[derive(Debug)]
pub struct CoreLayout {
    pub notes: Vec<u8>,
    pub notes_offset: u64,
    pub data_offset: u64,
    pub total_len: u64,
    pub phnum: u64,
}

impl CoreLayout {
    pub fn new(capture: &Capture, plan: &Plan) -> CoreLayout {
        let mut notes = notes::build_notes(capture);
        notes.extend(notes::snapdump_note(
            plan.mode,
            !capture.redacted.is_empty(),
        ));
        let phnum = 1 + loads(plan, 0).count() as u64;
        let mut offset = EHDR_SIZE + phnum * PHDR_SIZE;
        if phnum >= PN_XNUM as u64 {
            offset += SHDR_SIZE;
        }
        let notes_offset = offset;
        offset += notes.len() as u64;
        let data_offset = offset.div_ceil(PAGE) * PAGE;
        let total_len = loads(plan, data_offset)
            .last()
            .map_or(data_offset, |l| l.offset + l.filesz);
        CoreLayout {
            notes,
            notes_offset,
            data_offset,
            total_len,
            phnum,
        }
    }

    /// Every PT_LOAD, in address order.
    pub fn loads<'p>(&self, plan: &'p Plan) -> impl Iterator<Item = Load> + 'p {
        loads(plan, self.data_offset)
    }

    /// Bytes on disk the dump is expected to take.
    pub fn estimated_disk_bytes(&self, plan: &Plan) -> u64 {
        self.data_offset + plan.data_bytes()
    }
}

/// The PT_LOADs of `plan` with the file's data starting at `data_offset`.
fn loads(plan: &Plan, data_offset: u64) -> impl Iterator<Item = Load> + '_ {
    let mut cursor = data_offset;
    plan.segments
        .iter()
        .enumerate()
        .flat_map(|(index, segment)| {
            // (start, end, bytes stored) pieces: the untouched pages before the first run, then
            // each run with the untouched pages after it.
            let pieces: Box<dyn Iterator<Item = (u64, u64, u64)> + Send> =
                match (segment.stored, segment.runs.first()) {
                    (true, Some(&(first, _))) => {
                        let next_starts = segment.runs[1..].iter().map(|r| r.0);
                        let ends = next_starts.chain([segment.end]);
                        let runs = segment
                            .runs
                            .iter()
                            .zip(ends)
                            .map(|(&(start, end), next)| (start, next, end - start));
                        Box::new([(segment.start, first, 0)].into_iter().chain(runs))
                    }
                    _ => Box::new([(segment.start, segment.end, 0)].into_iter()),
                };
            pieces
                .filter(|&(start, end, _)| end > start)
                .map(move |(start, end, filesz)| (index, start, end, filesz))
        })
        .map(move |(segment, vaddr, end, filesz)| {
            if filesz > 0 {
                // Keep p_offset congruent to p_vaddr modulo the page size, as ELF asks.
                cursor += vaddr.wrapping_sub(cursor) % PAGE;
            }
            let load = Load {
                vaddr,
                memsz: end - vaddr,
                offset: cursor,
                filesz,
                segment,
            };
            cursor += filesz;
            load
        })
}

/// The ELF header, the program headers and, past 65535 of them, the PN_XNUM section header.
fn write_headers(
    capture: &Capture,
    plan: &Plan,
    layout: &CoreLayout,
    out: &mut SparseWriter<'_>,
) -> Result<()> {
    let xnum = layout.phnum >= PN_XNUM as u64;
    let header = FileHeader64::<LE> {
        e_ident: object::elf::Ident {
            magic: ELFMAG,
            class: ELFCLASS64,
            data: ELFDATA2LSB,
            version: EV_CURRENT,
            os_abi: 0,
            abi_version: 0,
            padding: [0; 7],
        },
        e_type: U16::new(LE, ET_CORE),
        e_machine: U16::new(LE, EM_X86_64),
        e_version: U32::new(LE, EV_CURRENT.into()),
        e_entry: U64::new(LE, 0),
        e_phoff: U64::new(LE, EHDR_SIZE),
        e_shoff: U64::new(
            LE,
            if xnum {
                EHDR_SIZE + layout.phnum * PHDR_SIZE
            } else {
                0
            },
        ),
        e_flags: U32::new(LE, 0),
        e_ehsize: U16::new(LE, EHDR_SIZE as u16),
        e_phentsize: U16::new(LE, PHDR_SIZE as u16),
        e_phnum: U16::new(LE, if xnum { PN_XNUM } else { layout.phnum as u16 }),
        e_shentsize: U16::new(LE, if xnum { SHDR_SIZE as u16 } else { 0 }),
        e_shnum: U16::new(LE, xnum as u16),
        e_shstrndx: U16::new(LE, 0),
    };
    out.write(bytes_of(&header))?;
    let note = ProgramHeader64::<LE> {
        p_type: U32::new(LE, PT_NOTE),
        p_flags: U32::new(LE, 0),
        p_offset: U64::new(LE, layout.notes_offset),
        p_vaddr: U64::new(LE, 0),
        p_paddr: U64::new(LE, 0),
        p_filesz: U64::new(LE, layout.notes.len() as u64),
        p_memsz: U64::new(LE, 0),
        p_align: U64::new(LE, 4),
    };
    out.write(bytes_of(&note))?;
    for load in layout.loads(plan) {
        let perms = capture.mappings[plan.segments[load.segment].mapping].perms;
        let flags = (if perms.read { PF_R } else { 0 })
            | (if perms.write { PF_W } else { 0 })
            | (if perms.exec { PF_X } else { 0 });
        let header = ProgramHeader64::<LE> {
            p_type: U32::new(LE, PT_LOAD),
            p_flags: U32::new(LE, flags),
            p_offset: U64::new(LE, load.offset),
            p_vaddr: U64::new(LE, load.vaddr),
            p_paddr: U64::new(LE, 0),
            p_filesz: U64::new(LE, load.filesz),
            p_memsz: U64::new(LE, load.memsz),
            p_align: U64::new(LE, PAGE),
        };
        out.write(bytes_of(&header))?;
    }
    if xnum {
        // PN_XNUM: the real program header count lives in section 0's sh_info.
        let section = SectionHeader64::<LE> {
            sh_name: U32::new(LE, 0),
            sh_type: U32::new(LE, 0),
            sh_flags: U64::new(LE, 0),
            sh_addr: U64::new(LE, 0),
            sh_offset: U64::new(LE, 0),
            sh_size: U64::new(LE, 1),
            sh_link: U32::new(LE, 0),
            sh_info: U32::new(LE, layout.phnum as u32),
            sh_addralign: U64::new(LE, 0),
            sh_entsize: U64::new(LE, 0),
        };
        out.write(bytes_of(&section))?;
    }
    Ok(())
}

/// What writing a core found.
#[derive(Clone, Debug, Default)]
pub struct WriteStats {
    /// Bytes of memory that were planned but could not be read (left as zeros).
    pub unreadable_bytes: u64,
    /// Bytes written to disk (holes excluded).
    pub disk_bytes: u64,
    /// The file's apparent length.
    pub file_len: u64,
}

/// Stream a core in file order. `progress` is called with the memory bytes done so far.
pub fn write_core(
    capture: &Capture,
    plan: &Plan,
    layout: &CoreLayout,
    memory: &dyn ProcessMemory,
    mut out: SparseWriter<'_>,
    progress: &mut dyn FnMut(u64),
    cancel: &Cancel,
) -> Result<WriteStats> {
    let mut stats = WriteStats::default();
    write_headers(capture, plan, layout, &mut out)?;
    debug_assert_eq!(out.position(), layout.notes_offset);
    out.write(&layout.notes)?;
    let mut stored = layout.loads(plan).filter(|l| l.filesz > 0).peekable();
    let mut locate = |addr: u64| {
        // Pieces come in file order: the load holding `addr` is the current one or a later one.
        while let Some(load) = stored.peek()
            && addr >= load.vaddr + load.filesz
        {
            stored.next();
        }
        let load = stored.peek().expect("every piece has its PT_LOAD");
        load.offset + (addr - load.vaddr)
    };
    let runs = layout
        .loads(plan)
        .filter(|l| l.filesz > 0)
        .map(|l| (l.vaddr, l.vaddr + l.filesz));
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
    use crate::capture::{DumpReason, Thread};
    use crate::process::link_map::LinkMap;
    use crate::process::memory::ByteFn;
    use crate::process::procfs::{Backing, Mapping, Stat, Status};
    use crate::select::Segment;
    use object::read::elf::{FileHeader as _, ProgramHeader as _};

    /// Every byte readable, none zero.
    const PATTERN: ByteFn<fn(u64) -> u8> = ByteFn(|addr| (addr % 251) as u8 | 1);

    fn mapping(start: u64, end: u64) -> Mapping {
        Mapping::private_rw(start, end, Backing::Anonymous)
    }

    /// A process of `count` one-page mappings, every tenth stored.
    fn many_mappings(count: u64) -> (Capture, Plan) {
        let base = 0x1000_0000u64;
        let mappings: Vec<Mapping> = (0..count)
            .map(|i| mapping(base + i * 2 * PAGE, base + i * 2 * PAGE + PAGE))
            .collect();
        let segments = mappings
            .iter()
            .enumerate()
            .map(|(i, m)| Segment {
                start: m.start,
                end: m.end,
                mapping: i,
                stored: i % 10 == 0,
                runs: if i % 10 == 0 {
                    vec![(m.start, m.end)]
                } else {
                    Vec::new()
                },
            })
            .collect();
        let capture = Capture {
            pid: 1,
            stat: Stat::default(),
            status: Status::default(),
            status_raw: Vec::new(),
            maps_raw: Vec::new(),
            cmdline: b"many\0".to_vec(),
            environ: Vec::new(),
            auxv: Vec::new(),
            exe: None,
            mappings,
            threads: vec![Thread {
                tid: 1,
                name: b"many".to_vec(),
                regs: vec![0; 216],
                fpregs: Some(vec![0; 512]),
                xstate: None,
                pending_signal: None,
                stat: None,
                status: None,
            }],
            link_map: LinkMap::default(),
            reason: DumpReason::Requested,
            captured_at: std::time::SystemTime::now(),
            redacted: Vec::new(),
        };
        let plan = Plan {
            segments,
            ..Plan::default()
        };
        (capture, plan)
    }

    fn write(capture: &Capture, plan: &Plan, name: &str) -> Vec<u8> {
        let path = std::env::temp_dir().join(format!("snapdump-elf-{name}-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let layout = CoreLayout::new(capture, plan);
        let stats = write_core(
            capture,
            plan,
            &layout,
            &PATTERN,
            SparseWriter::new(&file, None, 0),
            &mut |_| {},
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(stats.file_len, layout.total_len);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(path).unwrap();
        bytes
    }

    #[test]
    fn more_than_65535_segments_use_pn_xnum() {
        let (capture, plan) = many_mappings(70_000);
        let core = write(&capture, &plan, "xnum");
        // e_phnum holds PN_XNUM; the real count is in section 0's sh_info.
        assert_eq!(u16::from_le_bytes([core[56], core[57]]), PN_XNUM);
        // As the kernel does, section 0 has no name table (e_shstrndx 0): read the headers
        // directly rather than through object's section-aware ElfFile.
        let header = FileHeader64::<object::Endianness>::parse(&*core).unwrap();
        let endian = header.endian().unwrap();
        let headers = header.program_headers(endian, &*core).unwrap();
        assert_eq!(headers.len(), 70_001);
        // Every tenth mapping has its page; the bytes are the memory's.
        let stored = &headers[1 + 10];
        assert_eq!(stored.p_vaddr(endian), 0x1000_0000 + 10 * 2 * PAGE);
        assert_eq!(stored.p_filesz(endian), PAGE);
        let offset = stored.p_offset(endian) as usize;
        let mut expected = vec![0u8; 16];
        PATTERN.read_into(stored.p_vaddr(endian), &mut expected);
        assert_eq!(&core[offset..offset + 16], &expected[..]);
        assert_eq!(headers[1 + 11].p_filesz(endian), 0);
    }

    #[test]
    fn untouched_gaps_take_no_file_space() {
        let (capture, mut plan) = many_mappings(1);
        // One 8-page mapping with pages 1 and 5..7 touched.
        let start = capture.mappings[0].start;
        plan.segments[0].end = start + 8 * PAGE;
        plan.segments[0].runs = vec![
            (start + PAGE, start + 2 * PAGE),
            (start + 5 * PAGE, start + 7 * PAGE),
        ];
        let layout = CoreLayout::new(&capture, &plan);
        let loads: Vec<Load> = layout.loads(&plan).collect();
        let shape: Vec<(u64, u64, u64)> = loads
            .iter()
            .map(|l| ((l.vaddr - start) / PAGE, l.memsz / PAGE, l.filesz / PAGE))
            .collect();
        // The untouched pages after a run are folded into its memsz.
        assert_eq!(shape, vec![(0, 1, 0), (1, 4, 1), (5, 3, 2)]);
        let stored: Vec<&Load> = loads.iter().filter(|l| l.filesz > 0).collect();
        assert_eq!(stored[0].offset, layout.data_offset);
        assert_eq!(stored[1].offset, layout.data_offset + PAGE);
        assert_eq!(layout.total_len, layout.data_offset + 3 * PAGE);
        let core = write(&capture, &plan, "gaps");
        assert_eq!(core.len() as u64, layout.total_len);
        for load in stored {
            let mut expected = vec![0u8; load.filesz as usize];
            PATTERN.read_into(load.vaddr, &mut expected);
            let at = load.offset as usize;
            assert_eq!(&core[at..at + expected.len()], &expected[..]);
        }
    }

    #[test]
    fn few_segments_need_no_section_header() {
        let (capture, plan) = many_mappings(30);
        let core = write(&capture, &plan, "small");
        assert_eq!(u16::from_le_bytes([core[56], core[57]]), 31);
        assert_eq!(u64::from_le_bytes(core[40..48].try_into().unwrap()), 0);
    }
}
