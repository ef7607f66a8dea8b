//! Which memory ranges the minidump describes, and where their bytes go.
//!
//! The plan's runs are exactly the bytes to read. Each run becomes one memory descriptor,
//! except around thread stacks: a thread's stack descriptor must point at one contiguous piece
//! of the file, so the runs a stack range touches are merged with it into one region whose
//! untouched pages are written as holes (zeros) without being read. Stack regions come first.

use crate::capture::{Capture, Thread};
use crate::process::memory::PAGE_SIZE;
use crate::select::Plan;

/// The red zone below the stack pointer that leaf functions may use (x86_64 SysV ABI).
pub const RED_ZONE: u64 = 128;

/// One memory descriptor: `[start, end)` as the reader sees it. The bytes of `runs` are read
/// from the process; everything else in the region is zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub runs: Vec<(u64, u64)>,
    pub holds_stack: bool,
}

impl Region {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Where a thread's stack is: region index and the stack's `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackRef {
    pub region: usize,
    pub start: u64,
    pub end: u64,
}

/// The descriptors of the memory list, in file order, and each thread's stack among them.
#[derive(Clone, Debug, Default)]
pub struct MemoryLayout {
    pub regions: Vec<Region>,
    /// One entry per thread of the capture.
    pub stacks: Vec<Option<StackRef>>,
}

impl MemoryLayout {
    pub fn new(capture: &Capture, plan: &Plan) -> MemoryLayout {
        let mut runs: Vec<(u64, u64)> = plan
            .stored_segments()
            .flat_map(|segment| segment.runs.iter().copied())
            .filter(|(start, end)| start < end)
            .collect();
        runs.sort_unstable();
        let stored: Vec<(u64, u64)> = plan
            .stored_segments()
            .map(|segment| (segment.start, segment.end))
            .collect();
        let thread_stacks: Vec<Option<(u64, u64)>> = capture
            .threads
            .iter()
            .map(|thread| stack_range(capture, thread, &stored))
            .collect();
        let regions = group(&runs, &thread_stacks);
        let stacks = thread_stacks
            .iter()
            .map(|range| {
                let (start, end) = (*range)?;
                let region = regions
                    .iter()
                    .position(|r| r.start <= start && end <= r.end)?;
                Some(StackRef { region, start, end })
            })
            .collect();
        MemoryLayout { regions, stacks }
    }

    /// Bytes the regions span (holes included): the size of the memory data in the file.
    pub fn span_bytes(&self) -> u64 {
        self.regions.iter().map(Region::len).sum()
    }
}

/// A thread's stack as select.rs keeps it: from the page holding SP−128 (not below its
/// mapping) to the top of its mapping, cut to the stored segment that holds it. `None` when
/// the stack pointer is in no mapping or its bytes are not stored.
pub fn stack_range(
    capture: &Capture,
    thread: &Thread,
    stored: &[(u64, u64)],
) -> Option<(u64, u64)> {
    let sp = thread.stack_pointer();
    let low = sp.saturating_sub(RED_ZONE);
    let mapping = capture.mapping_at(low).or_else(|| capture.mapping_at(sp))?;
    let start = (low.max(mapping.start) & !(PAGE_SIZE - 1)).max(mapping.start);
    let index = stored.partition_point(|&(_, end)| end <= start);
    let &(seg_start, seg_end) = stored.get(index)?;
    if seg_start > start {
        return None;
    }
    let end = mapping.end.min(seg_end);
    (start < end).then_some((start, end))
}

/// Runs and stack ranges → regions: a run that overlaps a stack range joins its region; other
/// runs stay regions of their own. Stack regions first, each group in address order.
fn group(runs: &[(u64, u64)], stacks: &[Option<(u64, u64)>]) -> Vec<Region> {
    #[derive(Clone, Copy)]
    enum Item {
        Run(u64, u64),
        Stack(u64, u64),
    }
    let mut items: Vec<Item> = runs.iter().map(|&(s, e)| Item::Run(s, e)).collect();
    items.extend(stacks.iter().flatten().map(|&(s, e)| Item::Stack(s, e)));
    items.sort_by_key(|item| match *item {
        Item::Run(s, e) | Item::Stack(s, e) => (s, e),
    });
    let mut regions: Vec<Region> = Vec::new();
    for item in items {
        let (start, end, is_stack) = match item {
            Item::Run(s, e) => (s, e, false),
            Item::Stack(s, e) => (s, e, true),
        };
        if let Some(last) = regions.last_mut()
            && start < last.end
            && (last.holds_stack || is_stack)
        {
            last.end = last.end.max(end);
            last.holds_stack = true;
            if !is_stack {
                push_run(&mut last.runs, (start, end));
            }
            continue;
        }
        regions.push(Region {
            start,
            end,
            runs: if is_stack {
                Vec::new()
            } else {
                vec![(start, end)]
            },
            holds_stack: is_stack,
        });
    }
    let (mut first, rest): (Vec<Region>, Vec<Region>) =
        regions.into_iter().partition(|r| r.holds_stack);
    first.extend(rest);
    first
}

fn push_run(runs: &mut Vec<(u64, u64)>, run: (u64, u64)) {
    match runs.last_mut() {
        Some(last) if run.0 <= last.1 => last.1 = last.1.max(run.1),
        _ => runs.push(run),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_touching_a_stack_join_its_region_and_stacks_come_first() {
        let runs = [
            (0x1000, 0x2000),
            (0x10000, 0x11000),
            (0x13000, 0x15000),
            (0x20000, 0x21000),
        ];
        let stacks = [Some((0x10000, 0x16000)), None];
        let regions = group(&runs, &stacks);
        assert_eq!(
            regions,
            vec![
                Region {
                    start: 0x10000,
                    end: 0x16000,
                    runs: vec![(0x10000, 0x11000), (0x13000, 0x15000)],
                    holds_stack: true,
                },
                Region {
                    start: 0x1000,
                    end: 0x2000,
                    runs: vec![(0x1000, 0x2000)],
                    holds_stack: false,
                },
                Region {
                    start: 0x20000,
                    end: 0x21000,
                    runs: vec![(0x20000, 0x21000)],
                    holds_stack: false,
                },
            ]
        );
    }

    #[test]
    fn a_run_reaching_below_the_stack_widens_the_region() {
        let runs = [(0x8000, 0x12000)];
        let stacks = [Some((0x10000, 0x12000))];
        let regions = group(&runs, &stacks);
        assert_eq!(regions.len(), 1);
        assert_eq!((regions[0].start, regions[0].end), (0x8000, 0x12000));
        assert_eq!(regions[0].runs, vec![(0x8000, 0x12000)]);
    }

    #[test]
    fn adjacent_runs_stay_separate_descriptors() {
        let runs = [(0x1000, 0x2000), (0x2000, 0x3000)];
        let regions = group(&runs, &[]);
        assert_eq!(regions.len(), 2);
    }
}
