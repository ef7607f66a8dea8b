//! Reading a target's memory.
//!
//! The writers read through the [`ProcessMemory`] trait, so the same writer works on a stopped
//! process, on a copy-on-write clone of it, or on a test double.

use std::cell::Cell;
use std::fs::File;

use crate::sys::{self, Pid};

pub const PAGE_SIZE: u64 = 4096;

/// Source of a process's memory.
pub trait ProcessMemory {
    /// Fill `buf` from `addr`. Bytes that cannot be read are left zero; returns how many bytes
    /// could not be read.
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

/// The memory of a live (stopped) process: `process_vm_readv` in large runs, falling back to
/// `/proc/PID/mem` page by page where that fails (pages it cannot pin, guard pages).
#[derive(Debug)]
pub struct LiveMemory {
    pid: i32,
    mem: Option<File>,
    /// `process_vm_readv` is off once it failed outright (seccomp, old kernels), or by choice.
    use_vm_readv: Cell<bool>,
}

impl LiveMemory {
    pub fn new(pid: i32) -> LiveMemory {
        LiveMemory {
            pid,
            mem: File::open(super::proc_path(pid, "mem")).ok(),
            use_vm_readv: Cell::new(true),
        }
    }

    /// Read only through `/proc/PID/mem` (for a frozen clone: `process_vm_readv` pins pages,
    /// which copies shared anonymous pages of the clone since Linux 5.19).
    pub fn through_mem_file(pid: i32) -> LiveMemory {
        let memory = LiveMemory::new(pid);
        memory.use_vm_readv.set(false);
        memory
    }

    fn read_mem_file(&self, addr: u64, buf: &mut [u8]) -> u64 {
        let Some(mem) = &self.mem else {
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
        if self.use_vm_readv.get() {
            match sys::read_process_memory(Pid::from_raw(self.pid), addr, buf) {
                Ok(n) => done = n,
                Err(sys::Errno::ENOSYS) | Err(sys::Errno::EPERM) => self.use_vm_readv.set(false),
                Err(_) => {}
            }
        }
        if done == buf.len() {
            return 0;
        }
        self.read_mem_file(addr + done as u64, &mut buf[done..])
    }
}
