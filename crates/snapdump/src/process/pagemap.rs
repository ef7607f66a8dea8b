//! Which pages of a range exist: present in RAM or swapped out. Pages never touched are neither,
//! and reading them would map the zero page into the target and grow its page tables, so the
//! engine never reads them and writes holes instead.
//!
//! The `PAGEMAP_SCAN` ioctl (Linux 6.7+) returns runs of pages in one call; older kernels fall
//! back to reading one 64-bit `/proc/PID/pagemap` entry per page.

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::memory::PAGE_SIZE;
use crate::error::{Error, Result};
use crate::sys::{self, page_category as cat};

/// A run of touched pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TouchedRun {
    pub start: u64,
    pub end: u64,
    /// The pages are the file's (or shmem) pages, not private anonymous copies. In a private
    /// file mapping, pages without this flag are the ones that were written to.
    pub file_backed: bool,
}

/// Lists touched pages of one process.
#[derive(Debug)]
pub struct PageScanner {
    pagemap: File,
    scan_ioctl: Cell<bool>,
}

impl PageScanner {
    pub fn open(pid: i32) -> Result<PageScanner> {
        let path = super::memory_dir(pid).join("pagemap");
        let pagemap = File::open(&path).map_err(|e| super::proc_error(pid, &path, e))?;
        Ok(PageScanner {
            pagemap,
            scan_ioctl: Cell::new(true),
        })
    }

    /// Use only the `/proc/PID/pagemap` reader (for tests of the fallback).
    pub fn without_scan_ioctl(self) -> PageScanner {
        self.scan_ioctl.set(false);
        self
    }

    /// The touched runs of `[start, end)`, in address order, adjacent runs of the same kind
    /// merged.
    pub fn touched(&self, start: u64, end: u64) -> Result<Vec<TouchedRun>> {
        if self.scan_ioctl.get() {
            match sys::pagemap_scan(
                &self.pagemap,
                start,
                end,
                cat::PRESENT | cat::SWAPPED,
                cat::PRESENT | cat::SWAPPED | cat::FILE | cat::PFNZERO,
            ) {
                Ok(runs) => {
                    let runs = runs
                        .into_iter()
                        // The shared zero page reads as zeros: a hole says the same.
                        .filter(|r| {
                            r.categories & cat::PFNZERO == 0 || r.categories & cat::SWAPPED != 0
                        })
                        .map(|r| TouchedRun {
                            start: r.start,
                            end: r.end,
                            file_backed: r.categories & cat::FILE != 0,
                        });
                    return Ok(merge(runs));
                }
                Err(errno) => {
                    tracing::debug!(%errno, "PAGEMAP_SCAN unavailable, reading pagemap");
                    self.scan_ioctl.set(false);
                }
            }
        }
        self.touched_from_pagemap(start, end)
    }

    fn touched_from_pagemap(&self, start: u64, end: u64) -> Result<Vec<TouchedRun>> {
        const PRESENT: u64 = 1 << 63;
        const SWAPPED: u64 = 1 << 62;
        const FILE_OR_SHARED: u64 = 1 << 61;
        const BATCH_PAGES: u64 = 64 * 1024;
        let mut runs = Vec::new();
        let mut buf = vec![0u8; (BATCH_PAGES * 8) as usize];
        let mut page = start / PAGE_SIZE;
        let last = end.div_ceil(PAGE_SIZE);
        while page < last {
            let count = (last - page).min(BATCH_PAGES);
            let bytes = &mut buf[..(count * 8) as usize];
            self.pagemap
                .read_exact_at(bytes, page * 8)
                .map_err(|e| Error::io("reading /proc/PID/pagemap", e))?;
            for (i, entry) in bytes.chunks_exact(8).enumerate() {
                let entry = u64::from_le_bytes(entry.try_into().expect("8-byte chunk"));
                if entry & (PRESENT | SWAPPED) != 0 {
                    let addr = (page + i as u64) * PAGE_SIZE;
                    runs.push(TouchedRun {
                        start: addr,
                        end: addr + PAGE_SIZE,
                        file_backed: entry & FILE_OR_SHARED != 0 && entry & SWAPPED == 0,
                    });
                }
            }
            page += count;
        }
        Ok(merge(runs.into_iter()))
    }
}

fn merge(runs: impl Iterator<Item = TouchedRun>) -> Vec<TouchedRun> {
    let mut out: Vec<TouchedRun> = Vec::new();
    for run in runs {
        match out.last_mut() {
            Some(prev) if prev.end == run.start && prev.file_backed == run.file_backed => {
                prev.end = run.end
            }
            _ => out.push(run),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_and_pagemap_agree_on_our_own_memory() {
        // A private anonymous mapping with every other page touched.
        let mut map = memmap2::MmapMut::map_anon(64 * PAGE_SIZE as usize).unwrap();
        for page in (0..64).step_by(2) {
            map[page * PAGE_SIZE as usize] = 1;
        }
        let start = map.as_ptr() as u64;
        let end = start + 64 * PAGE_SIZE;
        let pid = std::process::id() as i32;
        let scan = PageScanner::open(pid).unwrap().touched(start, end).unwrap();
        let fallback = PageScanner::open(pid)
            .unwrap()
            .without_scan_ioctl()
            .touched(start, end)
            .unwrap();
        assert_eq!(scan.len(), 32, "{scan:?}");
        assert_eq!(scan, fallback);
        assert!(
            scan.iter()
                .all(|r| r.end - r.start == PAGE_SIZE && !r.file_backed)
        );
    }
}
