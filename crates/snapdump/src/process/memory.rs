//! Reading a target's memory.
//!
//! The writers read through the [`ProcessMemory`] trait, so the same writer works on a stopped
//! process, on a copy-on-write clone of it, or on a test double.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::{self, Pid};

pub const PAGE_SIZE: u64 = 4096;

/// Source of a process's memory.
pub trait ProcessMemory: Sync {
    /// Fill `buf` from `addr`. Bytes that cannot be read are set to zero (`buf` may hold
    /// anything on entry: the copier reuses its buffers unzeroed); returns how many bytes could
    /// not be read.
    fn read_into(&self, addr: u64, buf: &mut [u8]) -> u64;

    /// Read a small range, or `None` when any of it cannot be read.
    fn read_vec(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        (self.read_into(addr, &mut buf) == 0).then_some(buf)
    }

    fn read_u64(&self, addr: u64) -> Option<u64> {
        let bytes = self.read_vec(addr, 8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

/// The memory of a live (stopped) process: `/proc/PID/mem` in large runs, page by page where a
/// run fails part-way (guard pages); `process_vm_readv` only when `mem` cannot be opened.
/// `process_vm_readv` pins the pages it reads, and the first pin of freshly written anonymous
/// memory is slow: 1.4 s against 0.42 s through `mem` for 1 GiB here (a stopped target waits
/// for every millisecond of it).
#[derive(Debug)]
pub struct LiveMemory {
    pid: i32,
    mem: Option<File>,
    /// `process_vm_readv` is used only without `mem`, and off once it failed outright.
    use_vm_readv: AtomicBool,
}

impl LiveMemory {
    pub fn new(pid: i32) -> LiveMemory {
        let mem = File::open(super::memory_dir(pid).join("mem")).ok();
        LiveMemory {
            pid,
            use_vm_readv: AtomicBool::new(mem.is_none()),
            mem,
        }
    }

    /// Read only through `/proc/PID/mem` (for a frozen clone: `process_vm_readv` pins pages,
    /// which copies shared anonymous pages of the clone since Linux 5.19).
    pub fn through_mem_file(pid: i32) -> LiveMemory {
        let memory = LiveMemory::new(pid);
        memory.use_vm_readv.store(false, Ordering::Relaxed);
        memory
    }

    fn read_mem_file(&self, addr: u64, buf: &mut [u8]) -> u64 {
        let Some(mem) = &self.mem else {
            buf.fill(0);
            return buf.len() as u64;
        };
        // Whole run first; page by page only when that fails part-way.
        let mut done = 0usize;
        while done < buf.len() {
            match sys::read_mem_file(mem, addr + done as u64, &mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if done == buf.len() {
            return 0;
        }
        let mut missing = 0u64;
        let mut offset = done;
        while offset < buf.len() {
            let page_end = ((addr + offset as u64) / PAGE_SIZE + 1) * PAGE_SIZE;
            let end = ((page_end - addr) as usize).min(buf.len());
            match sys::read_mem_file(mem, addr + offset as u64, &mut buf[offset..end]) {
                Ok(n) if n == end - offset => {}
                _ => {
                    buf[offset..end].fill(0);
                    missing += (end - offset) as u64;
                }
            }
            offset = end;
        }
        missing
    }
}

impl ProcessMemory for LiveMemory {
    fn read_into(&self, addr: u64, buf: &mut [u8]) -> u64 {
        if buf.is_empty() {
            return 0;
        }
        let mut done = 0usize;
        if self.use_vm_readv.load(Ordering::Relaxed) {
            match sys::read_process_memory(Pid::from_raw(self.pid), addr, buf) {
                Ok(n) => done = n,
                Err(sys::Errno::ENOSYS) | Err(sys::Errno::EPERM) => {
                    self.use_vm_readv.store(false, Ordering::Relaxed)
                }
                Err(_) => {}
            }
        }
        if done == buf.len() {
            return 0;
        }
        self.read_mem_file(addr + done as u64, &mut buf[done..])
    }
}

/// Test memory: every byte readable, the byte at `addr` being `f(addr)`.
#[cfg(test)]
pub(crate) struct ByteFn<F>(pub F);

#[cfg(test)]
impl<F: Fn(u64) -> u8 + Sync> ProcessMemory for ByteFn<F> {
    fn read_into(&self, addr: u64, buf: &mut [u8]) -> u64 {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (self.0)(addr + i as u64);
        }
        0
    }
}

/// Another source's memory with some ranges blanked: bytes inside them read as zeros (a
/// redacted dump's argument and environment strings). Both writers read through it, so the
/// blanked bytes reach neither the ELF segments nor the minidump's memory lists.
pub struct Redacted<'a> {
    inner: &'a dyn ProcessMemory,
    ranges: Vec<(u64, u64)>,
}

impl<'a> Redacted<'a> {
    /// `ranges` are `[start, end)` pairs, in any order.
    pub fn new(inner: &'a dyn ProcessMemory, ranges: &[(u64, u64)]) -> Redacted<'a> {
        Redacted {
            inner,
            ranges: ranges.iter().copied().filter(|(s, e)| s < e).collect(),
        }
    }
}

impl ProcessMemory for Redacted<'_> {
    fn read_into(&self, addr: u64, buf: &mut [u8]) -> u64 {
        let missing = self.inner.read_into(addr, buf);
        let end = addr.saturating_add(buf.len() as u64);
        for &(start, stop) in &self.ranges {
            let (start, stop) = (start.max(addr), stop.min(end));
            if start < stop {
                buf[(start - addr) as usize..(stop - addr) as usize].fill(0);
            }
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte reads as the low byte of its address, never zero.
    const ONES: ByteFn<fn(u64) -> u8> = ByteFn(|addr| addr as u8 | 1);

    #[test]
    fn redacted_ranges_read_as_zeros() {
        let memory = Redacted::new(&ONES, &[(110, 120), (95, 102), (130, 130)]);
        let bytes = memory.read_vec(100, 40).unwrap();
        let zeros: Vec<usize> = (0..40).filter(|&i| bytes[i] == 0).collect();
        let expected: Vec<usize> = (0..2).chain(10..20).collect();
        assert_eq!(zeros, expected);
        // Reads that miss every range are untouched; reads inside one are all zeros.
        assert!(memory.read_vec(200, 8).unwrap().iter().all(|&b| b != 0));
        assert_eq!(memory.read_vec(112, 4).unwrap(), [0; 4]);
        // A read straddling a range's end: zeros up to it, memory after.
        assert_eq!(memory.read_vec(98, 6).unwrap(), [0, 0, 0, 0, 103, 103]);
    }
}
