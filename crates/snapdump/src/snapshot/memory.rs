//! Reading a snapshot: the frozen child through `/proc/CHILD/mem`, except the regions a fork
//! child cannot see (MADV_DONTFORK: not mapped in the child; MADV_WIPEONFORK: zeros in the
//! child), which were copied from the target during the pause.

use std::sync::Arc;

use crate::capture::Capture;
use crate::error::Result;
use crate::process::memory::{LiveMemory, ProcessMemory};
use crate::process::pagemap::PageScanner;
use crate::process::procfs::{Backing, Mapping};

/// Ranges `[start, end)` of the target whose contents a fork child does not have: mappings
/// marked MADV_DONTFORK (`dc`) or MADV_WIPEONFORK (`wf`) in smaps. A snapshot dump must take
/// them from the target while it is stopped; [`crate::snapshot::take`] does so.
pub fn live_only_ranges(capture: &Capture) -> Vec<(u64, u64)> {
    capture
        .mappings
        .iter()
        .filter(|m| is_live_only(m))
        .map(|m| (m.start, m.end))
        .collect()
}

pub(super) fn is_live_only(mapping: &Mapping) -> bool {
    !mapping.is_empty() && (mapping.vm_flags.dont_fork || mapping.vm_flags.wipe_on_fork)
}

/// Whether a live-only mapping's contents can be read at all (the rest reads as unavailable).
fn readable(mapping: &Mapping) -> bool {
    mapping.perms.read
        && !mapping.vm_flags.io
        && !mapping.vm_flags.pfn_map
        && !matches!(mapping.backing, Backing::Vvar | Backing::Vsyscall)
}

/// One live-only mapping and the copies of its touched pages.
#[derive(Debug)]
struct Region {
    start: u64,
    end: u64,
    /// Read during the pause; otherwise its bytes are reported unavailable.
    copied: bool,
    /// Touched runs `(start, bytes)`, in address order; pages between them were never touched
    /// and read as zeros.
    runs: Vec<(u64, Vec<u8>)>,
}

/// The live-only regions of one snapshot, copied during the pause.
#[derive(Debug, Default)]
pub(super) struct LiveOnly {
    regions: Vec<Region>,
    /// Bytes of touched pages that could not be read from the target.
    pub unreadable: u64,
}

/// The plan for copying live-only regions: which touched runs, and how many bytes in all.
/// One live-only region: start, end, whether it is MADV_WIPEONFORK, and its touched runs.
type LiveOnlyRegion = (u64, u64, bool, Vec<(u64, u64)>);

pub(super) struct LiveOnlyPlan {
    regions: Vec<LiveOnlyRegion>,
    pub bytes: u64,
}

impl LiveOnlyPlan {
    /// List the touched pages of every live-only mapping (cheap: pagemap only). Mappings marked
    /// MADV_DONTDUMP are listed but not copied unless `include_dont_dump`.
    pub fn new(
        capture: &Capture,
        scanner: &PageScanner,
        include_dont_dump: bool,
    ) -> Result<LiveOnlyPlan> {
        let mut regions = Vec::new();
        let mut bytes = 0;
        for mapping in capture.mappings.iter().filter(|m| is_live_only(m)) {
            let copy = readable(mapping) && (include_dont_dump || !mapping.vm_flags.dont_dump);
            let mut runs = Vec::new();
            if copy {
                for run in scanner.touched(mapping.start, mapping.end)? {
                    bytes += run.end - run.start;
                    runs.push((run.start, run.end));
                }
            }
            regions.push((mapping.start, mapping.end, copy, runs));
        }
        Ok(LiveOnlyPlan { regions, bytes })
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Copy the planned runs from the (stopped) target.
    pub fn copy(self, target: &dyn ProcessMemory) -> LiveOnly {
        let mut live = LiveOnly::default();
        for (start, end, copied, runs) in self.regions {
            let runs = runs
                .into_iter()
                .map(|(run_start, run_end)| {
                    let mut bytes = vec![0u8; (run_end - run_start) as usize];
                    live.unreadable += target.read_into(run_start, &mut bytes);
                    (run_start, bytes)
                })
                .collect();
            live.regions.push(Region {
                start,
                end,
                copied,
                runs,
            });
        }
        live
    }
}

impl LiveOnly {
    /// The copied runs `[start, end)`: the touched pages of the live-only regions.
    pub fn copied_runs(&self) -> Vec<(u64, u64)> {
        self.regions
            .iter()
            .flat_map(|r| r.runs.iter().map(|(s, b)| (*s, *s + b.len() as u64)))
            .collect()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.regions
            .iter()
            .flat_map(|r| &r.runs)
            .map(|(_, b)| b.len() as u64)
            .sum()
    }

    /// Fill `buf` (which lies inside `region`) from the copies; returns the unavailable bytes.
    fn read_region(region: &Region, addr: u64, buf: &mut [u8]) -> u64 {
        buf.fill(0);
        if !region.copied {
            return buf.len() as u64;
        }
        let end = addr + buf.len() as u64;
        let first = region
            .runs
            .partition_point(|(start, bytes)| start + bytes.len() as u64 <= addr);
        for (start, bytes) in &region.runs[first..] {
            if *start >= end {
                break;
            }
            let from = addr.max(*start);
            let to = end.min(start + bytes.len() as u64);
            buf[(from - addr) as usize..(to - addr) as usize]
                .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
        }
        0
    }
}

/// The memory of a snapshot: the frozen child, with the live-only regions served from the
/// copies made during the pause. Implements [`ProcessMemory`] for the writers.
#[derive(Debug)]
pub struct SnapshotMemory {
    child: LiveMemory,
    live_only: Arc<LiveOnly>,
}

impl SnapshotMemory {
    pub(super) fn new(child: i32, live_only: Arc<LiveOnly>) -> SnapshotMemory {
        SnapshotMemory {
            child: LiveMemory::through_mem_file(child),
            live_only,
        }
    }
}

impl ProcessMemory for SnapshotMemory {
    fn read_into(&self, addr: u64, buf: &mut [u8]) -> u64 {
        let regions = &self.live_only.regions;
        let end = addr.saturating_add(buf.len() as u64);
        let mut missing = 0;
        let mut cursor = addr;
        let mut index = regions.partition_point(|r| r.end <= addr);
        while cursor < end {
            let offset = (cursor - addr) as usize;
            match regions.get(index) {
                Some(region) if region.start <= cursor => {
                    let to = end.min(region.end);
                    let part = &mut buf[offset..(to - addr) as usize];
                    missing += LiveOnly::read_region(region, cursor, part);
                    cursor = to;
                    index += 1;
                }
                next => {
                    let to = next.map_or(end, |r| end.min(r.start));
                    let part = &mut buf[offset..(to - addr) as usize];
                    missing += self.child.read_into(cursor, part);
                    cursor = to;
                }
            }
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: u64, end: u64, runs: &[(u64, u8, usize)]) -> Region {
        Region {
            start,
            end,
            copied: true,
            runs: runs
                .iter()
                .map(|&(s, byte, len)| (s, vec![byte; len]))
                .collect(),
        }
    }

    #[test]
    fn reads_split_between_copies_and_the_child() {
        // Our own pid stands in for the child: the bytes outside the regions come from it.
        let outside = [7u8; 64];
        let base = outside.as_ptr() as u64;
        // A fake live-only region right after our vector's first 16 bytes.
        let live = LiveOnly {
            regions: vec![region(
                base + 16,
                base + 48,
                &[(base + 16, 1, 8), (base + 32, 2, 8)],
            )],
            unreadable: 0,
        };
        let memory = SnapshotMemory::new(std::process::id() as i32, Arc::new(live));
        let mut buf = vec![0xffu8; 64];
        assert_eq!(memory.read_into(base, &mut buf), 0);
        assert_eq!(&buf[..16], &[7; 16]);
        assert_eq!(&buf[16..24], &[1; 8]);
        assert_eq!(
            &buf[24..32],
            &[0; 8],
            "untouched pages of a region read as zeros"
        );
        assert_eq!(&buf[32..40], &[2; 8]);
        assert_eq!(&buf[40..48], &[0; 8]);
        assert_eq!(&buf[48..], &[7; 16]);
        // A read inside one run.
        let mut small = [0u8; 4];
        assert_eq!(memory.read_into(base + 34, &mut small), 0);
        assert_eq!(small, [2; 4]);
    }

    #[test]
    fn uncopied_regions_are_unavailable() {
        let live = LiveOnly {
            regions: vec![Region {
                start: 0x1000,
                end: 0x3000,
                copied: false,
                runs: Vec::new(),
            }],
            unreadable: 0,
        };
        let memory = SnapshotMemory::new(std::process::id() as i32, Arc::new(live));
        let mut buf = vec![0u8; 0x1000];
        assert_eq!(memory.read_into(0x1800, &mut buf), 0x1000);
    }
}
