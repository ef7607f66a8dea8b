//! Modes → regions: which bytes of which mapping go into the dump.
//!
//! Every mapping appears in the plan, split into segments that are either *stored* (with the
//! byte runs to read; the rest of a stored segment is a hole that reads as zeros) or not (the
//! reader gets nothing, or the file's bytes for a file-backed mapping). Untouched pages are
//! never read: they are found with the page scanner first.

use crate::capture::Capture;
use crate::error::Result;
use crate::process::memory::{PAGE_SIZE, ProcessMemory};
use crate::process::pagemap::{PageScanner, TouchedRun};
use crate::process::procfs::{Backing, Mapping};

/// How much of the process goes into the dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Registers, stacks, the loader's library list and a page around each instruction
    /// pointer: enough for backtraces of every thread.
    Mini,
    /// Mini plus all private and shared anonymous memory and the written pages of private file
    /// mappings; no code or read-only file data (debuggers read those from the files).
    #[default]
    Heap,
    /// Every readable mapping, code included.
    Full,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Mini => "mini",
            Mode::Heap => "heap",
            Mode::Full => "full",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s.to_ascii_lowercase().as_str() {
            "mini" | "minimal" => Ok(Mode::Mini),
            "heap" | "withheap" => Ok(Mode::Heap),
            "full" => Ok(Mode::Full),
            other => Err(format!("unknown mode {other:?}: use mini, heap or full")),
        }
    }
}

/// Choices that change the selection.
#[derive(Clone, Copy, Debug, Default)]
pub struct SelectOptions {
    pub mode: Mode,
    /// Keep regions marked MADV_DONTDUMP (left out by default).
    pub include_dont_dump: bool,
    /// In heap mode, on a .NET process (one that maps libcoreclr.so), also keep the mapped
    /// managed assembly images (`*.dll`, `*.r2r`): SOS reads type names from them.
    pub keep_managed_images: bool,
}

/// A piece of one mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    /// Index of the mapping in [`Capture::mappings`].
    pub mapping: usize,
    /// Whether the dump holds this segment's bytes.
    pub stored: bool,
    /// The byte runs to read, sorted, inside `[start, end)`; the rest is a hole.
    pub runs: Vec<(u64, u64)>,
}

impl Segment {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Bytes that will actually be read and written.
    pub fn data_bytes(&self) -> u64 {
        self.runs.iter().map(|(s, e)| e - s).sum()
    }
}

/// The whole selection.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub segments: Vec<Segment>,
    /// Mappings left out because of MADV_DONTDUMP.
    pub dont_dump_skipped: usize,
    /// The mode the plan was made for.
    pub mode: Mode,
}

impl Plan {
    /// Bytes the stored segments span (their size in an ELF core, holes included).
    pub fn stored_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.stored)
            .map(Segment::len)
            .sum()
    }

    /// Bytes that will be read and written (the disk space a sparse dump needs).
    pub fn data_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::data_bytes).sum()
    }

    pub fn stored_segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.stored)
    }

    /// Keep at most `budget` bytes of data: segments holding `essential` ranges (stacks, the
    /// loader's list: what a backtrace needs) first, then the others in address order; a
    /// segment that does not fit is left out whole (its memory reads as unavailable, never as
    /// wrong zeros). Returns the bytes left out.
    pub fn truncate_to(&mut self, budget: u64, essential: &[(u64, u64)]) -> u64 {
        let is_essential = |s: &Segment| {
            essential
                .iter()
                .any(|&(start, end)| start < s.end && s.start < end)
        };
        let mut order: Vec<usize> = (0..self.segments.len())
            .filter(|&i| self.segments[i].stored)
            .collect();
        order.sort_by_key(|&i| (!is_essential(&self.segments[i]), self.segments[i].start));
        let mut used = 0u64;
        let mut dropped = 0u64;
        for i in order {
            let segment = &mut self.segments[i];
            let bytes = segment.data_bytes();
            if used + bytes <= budget {
                used += bytes;
            } else {
                segment.stored = false;
                segment.runs.clear();
                dropped += bytes;
            }
        }
        dropped
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// Read every page (file pages: reading them does not allocate memory in the target).
    All,
    /// Read only the pages that exist.
    Touched,
    /// Store only the private copies (written pages) of a private file mapping.
    Written,
}

fn page_down(addr: u64) -> u64 {
    addr & !(PAGE_SIZE - 1)
}

fn page_up(addr: u64) -> u64 {
    addr.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

fn never_read(mapping: &Mapping, options: &SelectOptions) -> bool {
    !mapping.perms.read
        || mapping.vm_flags.io
        || mapping.vm_flags.pfn_map
        || matches!(mapping.backing, Backing::Vvar | Backing::Vsyscall)
        || (mapping.vm_flags.dont_dump && !options.include_dont_dump)
}

/// Shared anonymous memory (shmem): MAP_SHARED|MAP_ANONYMOUS shows as `/dev/zero (deleted)`,
/// SysV segments as `/SYSV…`, memfds as `/memfd:…`.
pub fn is_shared_anonymous(mapping: &Mapping) -> bool {
    if !mapping.perms.shared {
        return false;
    }
    match &mapping.backing {
        Backing::File { path, .. } => {
            let path = path.as_os_str().as_encoded_bytes();
            path == b"/dev/zero" || path.starts_with(b"/SYSV") || path.starts_with(b"/memfd:")
        }
        Backing::Anonymous | Backing::Other(_) => true,
        _ => false,
    }
}

fn is_file_backed(mapping: &Mapping) -> bool {
    matches!(mapping.backing, Backing::File { .. }) && !is_shared_anonymous(mapping)
}

/// What a mode keeps of a whole mapping.
fn mode_rule(mapping: &Mapping, mode: Mode) -> Option<Read> {
    let file = is_file_backed(mapping);
    if mapping.backing == Backing::Vdso {
        return Some(Read::All);
    }
    match mode {
        Mode::Full if file => Some(Read::All),
        Mode::Full => Some(Read::Touched),
        Mode::Heap if !file => Some(Read::Touched),
        Mode::Heap | Mode::Mini if file && !mapping.perms.shared => Some(Read::Written),
        _ => None,
    }
}

/// Where the planner learns which pages of a mapping exist.
pub trait PageSource {
    /// The touched runs of `[start, end)`, a range inside `mapping`.
    fn touched(&self, mapping: &Mapping, start: u64, end: u64) -> Result<Vec<TouchedRun>>;
}

/// A stopped process's own page tables.
impl PageSource for PageScanner {
    fn touched(&self, _mapping: &Mapping, start: u64, end: u64) -> Result<Vec<TouchedRun>> {
        PageScanner::touched(self, start, end)
    }
}

/// The pages of a snapshot: private memory as the frozen clone has it, plus the live-only
/// runs copied during the pause; shared memory as the running target has it (a clone gets no
/// page-table entries for shared mappings, and their contents are live anyway).
pub struct SnapshotPages<'a> {
    pub clone: &'a PageScanner,
    pub target: &'a PageScanner,
    pub live_only: &'a [(u64, u64)],
}

impl PageSource for SnapshotPages<'_> {
    fn touched(&self, mapping: &Mapping, start: u64, end: u64) -> Result<Vec<TouchedRun>> {
        if mapping.perms.shared {
            return self.target.touched(start, end);
        }
        let mut runs = self.clone.touched(start, end)?;
        for &(s, e) in self.live_only {
            let (s, e) = (s.max(start), e.min(end));
            if s < e {
                runs.push(TouchedRun {
                    start: s,
                    end: e,
                    file_backed: false,
                });
            }
        }
        runs.sort_unstable_by_key(|r| r.start);
        Ok(runs)
    }
}

/// Choose what to dump.
pub fn plan(
    capture: &Capture,
    memory: &dyn ProcessMemory,
    pages: &dyn PageSource,
    options: &SelectOptions,
) -> Result<Plan> {
    let extras = extra_ranges(capture);
    let managed = options.keep_managed_images
        && options.mode == Mode::Heap
        && crate::dotnet::maps_coreclr(&capture.mappings);
    let mut plan = Plan {
        mode: options.mode,
        ..Plan::default()
    };
    for (index, mapping) in capture.mappings.iter().enumerate() {
        if mapping.is_empty() {
            continue;
        }
        if never_read(mapping, options) {
            // Count only what MADV_DONTDUMP alone kept out ([vvar] carries the flag too).
            let without_dont_dump = SelectOptions {
                include_dont_dump: true,
                ..*options
            };
            if !never_read(mapping, &without_dont_dump) {
                plan.dont_dump_skipped += 1;
            }
            plan.segments.push(Segment {
                start: mapping.start,
                end: mapping.end,
                mapping: index,
                stored: false,
                runs: Vec::new(),
            });
            continue;
        }
        let mut wants: Vec<(u64, u64, Read)> = Vec::new();
        let rule = if managed && crate::dotnet::is_managed_image(mapping) {
            Some(Read::All)
        } else {
            mode_rule(mapping, options.mode)
        };
        if let Some(rule) = rule {
            wants.push((mapping.start, mapping.end, rule));
        }
        let file = is_file_backed(mapping);
        for &(start, end) in &extras {
            let (start, end) = (page_down(start), page_up(end));
            let (start, end) = (start.max(mapping.start), end.min(mapping.end));
            if start < end {
                wants.push((start, end, if file { Read::All } else { Read::Touched }));
            }
        }
        // The first page of each mapped ELF file carries its headers and build id.
        if file && mapping.offset == 0 {
            let first = (mapping.start, mapping.start + PAGE_SIZE);
            // File pages: reading them allocates nothing in the target.
            if memory.read_vec(mapping.start, 4).as_deref() == Some(b"\x7fELF") {
                wants.push((first.0, first.1, Read::All));
            }
        }

        let mut stored = Vec::new();
        let mut reads = Vec::new();
        for (start, end, read) in wants {
            match read {
                Read::All => {
                    stored.push((start, end));
                    reads.push((start, end));
                }
                Read::Touched => {
                    stored.push((start, end));
                    for run in pages.touched(mapping, start, end)? {
                        reads.push((run.start.max(start), run.end.min(end)));
                    }
                }
                Read::Written => {
                    for run in pages.touched(mapping, start, end)? {
                        if !run.file_backed {
                            stored.push((run.start, run.end));
                            reads.push((run.start, run.end));
                        }
                    }
                }
            }
        }
        let stored = merge_ranges(stored);
        let reads = merge_ranges(reads);
        let mut cursor = mapping.start;
        for (start, end) in stored {
            if cursor < start {
                plan.segments.push(Segment {
                    start: cursor,
                    end: start,
                    mapping: index,
                    stored: false,
                    runs: Vec::new(),
                });
            }
            let runs = reads
                .iter()
                .map(|&(s, e)| (s.max(start), e.min(end)))
                .filter(|(s, e)| s < e)
                .collect();
            plan.segments.push(Segment {
                start,
                end,
                mapping: index,
                stored: true,
                runs,
            });
            cursor = end;
        }
        if cursor < mapping.end {
            plan.segments.push(Segment {
                start: cursor,
                end: mapping.end,
                mapping: index,
                stored: false,
                runs: Vec::new(),
            });
        }
    }
    Ok(plan)
}

/// Ranges every mode keeps: each thread's stack from below its stack pointer (the red zone
/// included) to the top of its mapping, the page around each instruction pointer, and what
/// the loader's library list is made of.
pub fn extra_ranges(capture: &Capture) -> Vec<(u64, u64)> {
    const RED_ZONE: u64 = 128;
    let mut ranges = Vec::new();
    for thread in &capture.threads {
        let sp = thread.stack_pointer().saturating_sub(RED_ZONE);
        if let Some(stack) = capture
            .mapping_at(sp)
            .or_else(|| capture.mapping_at(thread.stack_pointer()))
        {
            ranges.push((sp.max(stack.start), stack.end));
        }
        let ip = thread.instruction_pointer();
        if capture.mapping_at(ip).is_some() {
            ranges.push((page_down(ip), page_down(ip) + PAGE_SIZE));
        }
    }
    ranges.extend(capture.link_map.ranges());
    ranges
}

/// Sort and merge overlapping or touching ranges, page-aligned.
fn merge_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|(s, e)| s < e);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_ranges() {
        assert_eq!(
            merge_ranges(vec![(10, 20), (0, 5), (5, 8), (15, 30), (40, 40)]),
            vec![(0, 8), (10, 30)]
        );
    }

    #[test]
    fn truncation_keeps_essential_segments_first() {
        let segment = |start: u64, end: u64| Segment {
            start,
            end,
            mapping: 0,
            stored: true,
            runs: vec![(start, end)],
        };
        let mut plan = Plan {
            segments: vec![segment(0, 100), segment(100, 200), segment(1000, 1050)],
            ..Plan::default()
        };
        let dropped = plan.truncate_to(160, &[(1010, 1020)]);
        assert_eq!(dropped, 100);
        let stored: Vec<bool> = plan.segments.iter().map(|s| s.stored).collect();
        assert_eq!(stored, [true, false, true]);
        assert_eq!(plan.data_bytes(), 150);
    }

    #[test]
    fn mode_names_round_trip() {
        for mode in [Mode::Mini, Mode::Heap, Mode::Full] {
            assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
        }
        assert_eq!("WithHeap".parse::<Mode>().unwrap(), Mode::Heap);
        assert!("huge".parse::<Mode>().is_err());
    }
}
