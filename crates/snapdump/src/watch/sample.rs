//! Sampling a process from `/proc` without touching it: CPU use over the polling interval,
//! resident memory, threads, open file descriptors.

use std::path::Path;
use std::time::Instant;

use crate::process;

/// Clock ticks per second of `utime`/`stime` in `/proc/PID/stat` (USER_HZ, 100 on every Linux
/// architecture snapdump runs on).
const USER_HZ: f64 = 100.0;

/// One look at the process.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// CPU use since the previous sample, as a percentage of one core (like top: a process
    /// keeping two cores busy reads 200). `None` for the first sample.
    pub cpu_percent: Option<f64>,
    /// Resident memory (`VmRSS`).
    pub rss_bytes: u64,
    pub threads: u64,
    /// Open file descriptors; `None` when they were not asked for or not readable.
    pub fds: Option<u64>,
}

/// Samples one process, remembering the previous CPU reading.
#[derive(Debug)]
pub struct Sampler {
    pid: i32,
    /// `starttime` of the process watched: a pid reused by another process is not it.
    starttime: u64,
    count_fds: bool,
    previous: Option<(Instant, u64)>,
}

impl Sampler {
    pub fn new(pid: i32, starttime: u64, count_fds: bool) -> Sampler {
        Sampler {
            pid,
            starttime,
            count_fds,
            previous: None,
        }
    }

    /// Sample now. `None` once the process has exited (gone, a zombie, or its pid reused).
    pub fn sample(&mut self) -> Option<Sample> {
        let now = Instant::now();
        let stat = process::read_stat(self.pid).ok()?;
        if stat.starttime != self.starttime || matches!(stat.state, b'X' | b'x') {
            return None;
        }
        // A zombie leader with a live thread called pthread_exit: the process runs on, and
        // that thread's folder shows its memory. (The leader's stat still counts the whole
        // process's CPU time and threads.)
        let dir = process::process_dir(self.pid, stat.state)?;
        let ticks = stat.utime + stat.stime;
        let cpu_percent = self.previous.and_then(|(at, before)| {
            let wall = now.duration_since(at).as_secs_f64();
            (wall > 0.0).then(|| ticks.saturating_sub(before) as f64 / USER_HZ / wall * 100.0)
        });
        self.previous = Some((now, ticks));
        // A process that exited between the two reads has no VmRSS line: gone too.
        let rss_bytes = read_rss(&dir)?;
        let fds = if self.count_fds {
            count_fds(&dir)
        } else {
            None
        };
        Some(Sample {
            cpu_percent,
            rss_bytes,
            threads: stat.num_threads.max(0) as u64,
            fds,
        })
    }
}

/// `VmRSS` of `status` in a `/proc` folder, in bytes.
fn read_rss(dir: &Path) -> Option<u64> {
    let status = std::fs::read(dir.join("status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &[u8]) -> Option<u64> {
    status.split(|&b| b == b'\n').find_map(|line| {
        let value = std::str::from_utf8(line.strip_prefix(b"VmRSS:")?).ok()?;
        let kib: u64 = value.split_ascii_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    })
}

/// The number of entries in `fd` of a `/proc` folder.
fn count_fds(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir.join("fd")).ok()?;
    Some(entries.filter(|e| e.is_ok()).count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_line() {
        let status = b"Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss(b"Name:\tzombie\nState:\tZ\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let me = std::process::id() as i32;
        let stat = process::read_stat(me).unwrap();
        let mut sampler = Sampler::new(me, stat.starttime, true);
        let first = sampler.sample().unwrap();
        assert_eq!(first.cpu_percent, None);
        assert!(first.rss_bytes > 0 && first.threads >= 1);
        assert!(first.fds.unwrap() >= 3);
        let spin_until = Instant::now() + std::time::Duration::from_millis(300);
        while Instant::now() < spin_until {
            std::hint::black_box(0u64);
        }
        let second = sampler.sample().unwrap();
        let cpu = second.cpu_percent.unwrap();
        assert!(cpu > 20.0, "{cpu}");
        // Someone else's start time: not the process being watched.
        assert_eq!(Sampler::new(me, stat.starttime + 1, false).sample(), None);
    }
}
