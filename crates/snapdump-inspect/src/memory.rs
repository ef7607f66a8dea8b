//! The dumped process's memory, as both readers expose it: one trait, so the module, build id
//! and unwinding code does not care which format it reads.

use crate::input::ReadAt;

/// Memory of the dumped process: only bytes the dump stores can be read.
pub trait Memory {
    /// Fills `buf` from `addr`; false when any byte of the range is not in the dump.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;

    fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }

    fn read_vec(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read(addr, &mut buf).then_some(buf)
    }
}

/// A PT_LOAD segment of an ELF core: `[vaddr, vaddr + memsz)` with its first `filesz` bytes
/// at `offset` in the file.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.vaddr.saturating_add(self.memsz)
    }
}

/// An ELF core's memory: the segments, sorted by address, over the file.
pub struct CoreMemory<'a> {
    src: &'a dyn ReadAt,
    /// Sorted by `vaddr`; `filesz` already clamped to what the file holds.
    segments: Vec<Segment>,
}

impl<'a> CoreMemory<'a> {
    pub fn new(src: &'a dyn ReadAt, segments: &[Segment]) -> CoreMemory<'a> {
        let len = src.len();
        let mut segments: Vec<Segment> = segments
            .iter()
            .map(|s| Segment {
                filesz: s.filesz.min(s.memsz).min(len.saturating_sub(s.offset)),
                ..*s
            })
            .collect();
        segments.sort_by_key(|s| s.vaddr);
        CoreMemory { src, segments }
    }

    fn segment_at(&self, addr: u64) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.vaddr <= addr);
        // Overlapping segments are possible in hostile files: look back over a few.
        self.segments[..i]
            .iter()
            .rev()
            .take(4)
            .find(|s| addr < s.end())
    }
}

impl Memory for CoreMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let mut done = 0usize;
        while done < buf.len() {
            let Some(at) = addr.checked_add(done as u64) else {
                return false;
            };
            let Some(segment) = self.segment_at(at) else {
                return false;
            };
            let within = at - segment.vaddr;
            if within >= segment.filesz {
                return false;
            }
            let n = ((segment.filesz - within) as usize).min(buf.len() - done);
            let Some(offset) = segment.offset.checked_add(within) else {
                return false;
            };
            if self.src.read_at(offset, &mut buf[done..done + n]) != n {
                return false;
            }
            done += n;
        }
        true
    }
}

/// Memory held as slices (a minidump's memory lists), sorted by base address.
#[derive(Default)]
pub struct SliceMemory<'a> {
    ranges: Vec<(u64, &'a [u8])>,
}

impl<'a> SliceMemory<'a> {
    pub fn add(&mut self, base: u64, bytes: &'a [u8]) {
        if !bytes.is_empty() {
            self.ranges.push((base, bytes));
        }
    }

    pub fn finish(&mut self) {
        self.ranges.sort_by_key(|r| r.0);
    }

    /// Bytes of `[start, end)` that some range stores (overlapping ranges counted once).
    pub fn stored_within(&self, start: u64, end: u64) -> u64 {
        let mut covered = start;
        let mut total = 0;
        for &(base, bytes) in &self.ranges {
            let r_end = base.saturating_add(bytes.len() as u64).min(end);
            let r_start = base.max(covered);
            if r_start < r_end {
                total += r_end - r_start;
                covered = r_end;
            }
        }
        total
    }

    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges
            .iter()
            .map(|&(base, bytes)| (base, base.saturating_add(bytes.len() as u64)))
    }

    fn range_at(&self, addr: u64) -> Option<(u64, &'a [u8])> {
        let i = self.ranges.partition_point(|r| r.0 <= addr);
        self.ranges[..i]
            .iter()
            .rev()
            .take(4)
            .find(|r| addr - r.0 < r.1.len() as u64)
            .copied()
    }
}

impl Memory for SliceMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let mut done = 0usize;
        while done < buf.len() {
            let Some(at) = addr.checked_add(done as u64) else {
                return false;
            };
            let Some((base, bytes)) = self.range_at(at) else {
                return false;
            };
            let within = (at - base) as usize;
            let n = (bytes.len() - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&bytes[within..within + n]);
            done += n;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_memory_reads_across_segments_and_refuses_holes() {
        let file: Vec<u8> = (0..=255u8).cycle().take(0x3000).collect();
        let segments = [
            Segment {
                vaddr: 0x1000,
                memsz: 0x1000,
                offset: 0,
                filesz: 0x1000,
                flags: 0,
            },
            Segment {
                vaddr: 0x2000,
                memsz: 0x2000,
                offset: 0x1000,
                filesz: 0x800,
                flags: 0,
            },
        ];
        let file = file.as_slice();
        let memory = CoreMemory::new(&file, &segments);
        let mut buf = [0u8; 16];
        assert!(memory.read(0x1ff8, &mut buf));
        assert_eq!(buf[..8], file[0xff8..0x1000]);
        assert_eq!(buf[8..], file[0x1000..0x1008]);
        assert!(!memory.read(0x27f8, &mut buf), "past filesz");
        assert!(!memory.read(0xff8, &mut buf), "before the first segment");
        assert!(!memory.read(u64::MAX - 4, &mut buf), "wraps");
    }

    #[test]
    fn slice_memory() {
        let a = [1u8, 2, 3, 4];
        let b = [5u8, 6];
        let mut memory = SliceMemory::default();
        memory.add(0x104, &b);
        memory.add(0x100, &a);
        memory.finish();
        let mut buf = [0u8; 6];
        assert!(memory.read(0x100, &mut buf));
        assert_eq!(buf, [1, 2, 3, 4, 5, 6]);
        assert!(!memory.read(0x101, &mut buf));
        assert_eq!(memory.stored_within(0x102, 0x200), 4);
        memory.add(0x100, &a[..2]);
        memory.finish();
        assert_eq!(memory.stored_within(0, 0x200), 6, "overlaps count once");
    }
}
