//! Watching a process and dumping it when something happens, ProcDump-style: CPU or memory
//! crossing a threshold, too many threads or file descriptors, a signal, a crash, an exit, or
//! simply every so often.
//!
//! ```no_run
//! use std::time::Duration;
//! use snapdump::watch::{Triggers, WatchEvent, WatchSpec, WatchTarget, watch};
//!
//! let mut spec = WatchSpec::new(WatchTarget::Name { name: "nginx".into(), wait: true });
//! spec.triggers = Triggers { cpu_above: Some(90.0), on_crash: true, ..Triggers::default() };
//! spec.count = 3;
//! spec.spacing = Duration::from_secs(30);
//! spec.dump = spec.dump.output("/var/tmp");
//! let end = watch(&spec, &mut |event: &WatchEvent<'_>| {
//!     if let WatchEvent::Dumped { fired, report, .. } = event {
//!         eprintln!("{fired}: {}", report.path.display());
//!     }
//! })?;
//! eprintln!("{} dumps", end.dumps);
//! # Ok::<(), snapdump::Error>(())
//! ```
//!
//! ## How it works
//! - Thresholds are sampled from `/proc` every [`WatchSpec::poll`] interval (see [`Sampler`]);
//!   the process is neither stopped nor traced for them, and the dumps they take are ordinary
//!   [`crate::dump()`]s (copy-on-write snapshots where the mode asks for them).
//! - Signals, crashes and exits need the process traced: every thread is seized with ptrace
//!   (never stopped), and the watcher answers each ptrace stop at once, passing every signal
//!   on unchanged and keeping job control working. When a watched signal is about to be
//!   delivered, the other threads are stopped, [`crate::dump_stopped`] records the signal and
//!   the thread it hit, and the signal is delivered as it came: a crashing process dies exactly
//!   as it would have, with the same exit status for its parent. While the process is traced,
//!   threshold dumps are taken through the tracer too, with the process stopped for the whole
//!   dump (no snapshot). That work runs in a thread of its own, with SIGCHLD blocked (in it and,
//!   while [`watch`] runs, in the calling thread); other threads of the program should block
//!   SIGCHLD as well, or the watcher may notice a stop only at its next 100 ms tick.
//! - `count` dumps at most, at least `spacing` apart. A crash or an exit is dumped whatever the
//!   spacing: there is no second chance. A watched signal that comes too soon after a dump is
//!   delivered without one ([`WatchEvent::Skipped`]).
//! - Dump names record the trigger: `<comm>_<pid>_<YYYYMMDD_HHMMSS>_<trigger>.core` (`.dmp`
//!   for minidumps, `.zst` appended when compressed), trigger one of `cpu`, `mem`, `threads`,
//!   `fds`, `signal`, `crash`, `exit`, `timer`.
//! - Cancelling (the request's [`crate::Cancel`]) stops watching and leaves the target as it
//!   was: untraced, running, any signal it was about to receive delivered.

mod sample;
pub mod signals;
mod trace;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub use sample::{Sample, Sampler};

use crate::capture::DumpReason;
use crate::dump::{DumpReport, DumpRequest, TargetSpec};
use crate::error::{Error, Result, human_bytes};
use crate::process::session::StoppedProcess;
use crate::process::{self, find};
use crate::{naming, sys};
use trace::{Happening, Tracer, Watched};

/// The longest the watcher sleeps before looking at its cancel flag again.
const TICK: Duration = Duration::from_millis(100);

/// Which process to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchTarget {
    Pid(i32),
    /// A name as `snapdump dump --name` takes it. With `wait`, wait for such a process to
    /// appear, and when it exits, wait for the next one (a restart) and watch that.
    Name {
        name: String,
        wait: bool,
    },
}

/// What makes a dump. Any combination; the first to fire takes the dump. None at all: a dump
/// at once, then every `spacing`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Triggers {
    /// CPU use over the polling interval at or above this percentage of one core.
    pub cpu_above: Option<f64>,
    /// CPU use below this percentage.
    pub cpu_below: Option<f64>,
    /// Resident memory at or above this many bytes.
    pub mem_above: Option<u64>,
    /// Resident memory below this many bytes.
    pub mem_below: Option<u64>,
    /// Threads at or above this many.
    pub threads: Option<u64>,
    /// Open file descriptors at or above this many.
    pub fds: Option<u64>,
    /// Signal numbers to dump on when the process is about to receive them; the signal is
    /// delivered unchanged after the dump.
    pub signals: Vec<i32>,
    /// Dump when the process is about to die of a crash signal (see
    /// [`signals::CRASH_SIGNALS`]), recording the signal and the faulting thread.
    pub on_crash: bool,
    /// Dump when the process is exiting (`exit`, `exit_group`, a fatal signal; not SIGKILL,
    /// which stops nothing).
    pub on_exit: bool,
}

impl Triggers {
    /// No trigger at all: dumps on a timer.
    pub fn is_empty(&self) -> bool {
        !self.samples() && !self.needs_tracer()
    }

    /// Whether the process must be traced (signals, crashes, exits).
    pub fn needs_tracer(&self) -> bool {
        !self.signals.is_empty() || self.on_crash || self.on_exit
    }

    /// Whether `/proc` must be sampled (thresholds).
    pub fn samples(&self) -> bool {
        self.cpu_above.is_some()
            || self.cpu_below.is_some()
            || self.mem_above.is_some()
            || self.mem_below.is_some()
            || self.threads.is_some()
            || self.fds.is_some()
    }

    /// The threshold crossed by `sample`, if any, in the order the fields are listed.
    pub fn check(&self, sample: &Sample) -> Option<Fired> {
        if let (Some(threshold), Some(percent)) = (self.cpu_above, sample.cpu_percent)
            && percent >= threshold
        {
            return Some(Fired::Cpu {
                percent,
                threshold,
                below: false,
            });
        }
        if let (Some(threshold), Some(percent)) = (self.cpu_below, sample.cpu_percent)
            && percent < threshold
        {
            return Some(Fired::Cpu {
                percent,
                threshold,
                below: true,
            });
        }
        if let Some(threshold) = self.mem_above
            && sample.rss_bytes >= threshold
        {
            return Some(Fired::Memory {
                bytes: sample.rss_bytes,
                threshold,
                below: false,
            });
        }
        if let Some(threshold) = self.mem_below
            && sample.rss_bytes < threshold
        {
            return Some(Fired::Memory {
                bytes: sample.rss_bytes,
                threshold,
                below: true,
            });
        }
        if let Some(threshold) = self.threads
            && sample.threads >= threshold
        {
            return Some(Fired::Threads {
                count: sample.threads,
                threshold,
            });
        }
        if let (Some(threshold), Some(count)) = (self.fds, sample.fds)
            && count >= threshold
        {
            return Some(Fired::Fds { count, threshold });
        }
        None
    }
}

impl fmt::Display for Triggers {
    /// `cpu >= 90%, memory >= 500 MiB, signal SIGUSR1, crash`; `a timer` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(t) = self.cpu_above {
            parts.push(format!("cpu >= {t}%"));
        }
        if let Some(t) = self.cpu_below {
            parts.push(format!("cpu < {t}%"));
        }
        if let Some(t) = self.mem_above {
            parts.push(format!("memory >= {}", mib(t)));
        }
        if let Some(t) = self.mem_below {
            parts.push(format!("memory < {}", mib(t)));
        }
        if let Some(t) = self.threads {
            parts.push(format!("threads >= {t}"));
        }
        if let Some(t) = self.fds {
            parts.push(format!("fds >= {t}"));
        }
        for &s in &self.signals {
            parts.push(format!("signal {}", signals::name(s)));
        }
        if self.on_crash {
            parts.push("crash".into());
        }
        if self.on_exit {
            parts.push("exit".into());
        }
        if parts.is_empty() {
            f.write_str("a timer")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Whole MiB for messages (`612 MiB`), finer below 10 MiB.
fn mib(bytes: u64) -> String {
    if bytes >= 10 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        human_bytes(bytes)
    }
}

/// What to watch, what for, and the dumps to take.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub target: WatchTarget,
    pub triggers: Triggers,
    /// Dumps to take before stopping (at least 1).
    pub count: u32,
    /// The least time from the end of one dump to the start of the next.
    pub spacing: Duration,
    /// How often thresholds are sampled.
    pub poll: Duration,
    /// Stop watching after this long.
    pub duration: Option<Duration>,
    /// The dumps: mode, format, compression, free-space reserve, MADV_DONTDUMP, snapshot.
    /// `output` is the folder they go to (`None`: the current folder); `target` and
    /// `overwrite` are ignored (names are chosen not to replace anything); `cancel` stops the
    /// watch as well as a dump in progress.
    pub dump: DumpRequest,
}

impl WatchSpec {
    /// One dump, 10 s spacing, sampled every second, heap-mode ELF cores into the current folder.
    pub fn new(target: WatchTarget) -> WatchSpec {
        WatchSpec {
            target,
            triggers: Triggers::default(),
            count: 1,
            spacing: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            duration: None,
            dump: DumpRequest::new(TargetSpec::Pid(0)),
        }
    }

    /// The folder dumps go to.
    pub fn output_dir(&self) -> &Path {
        self.dump.output.as_deref().unwrap_or(Path::new("."))
    }

    fn validate(&self) -> Result<()> {
        let invalid = |what: &str| Error::Io {
            context: format!("invalid watch: {what}"),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        };
        if self.count == 0 {
            return Err(invalid("the dump count must be at least 1"));
        }
        if self.poll < Duration::from_millis(10) {
            return Err(invalid("the polling interval must be at least 10 ms"));
        }
        for threshold in [self.triggers.cpu_above, self.triggers.cpu_below]
            .into_iter()
            .flatten()
        {
            if !threshold.is_finite() || threshold < 0.0 {
                return Err(invalid("a CPU threshold must be a positive percentage"));
            }
        }
        if let Some(&bad) = self
            .triggers
            .signals
            .iter()
            .find(|&&s| s == libc::SIGKILL || !(1..=libc::SIGRTMAX()).contains(&s))
        {
            return Err(invalid(&format!(
                "{} cannot be watched (it is never reported to a tracer)",
                signals::name(bad)
            )));
        }
        let dir = self.output_dir();
        if !dir.is_dir() {
            return Err(Error::OutputDirMissing {
                path: dir.to_path_buf(),
            });
        }
        Ok(())
    }
}

/// What fired, with the value measured.
#[derive(Clone, Debug, PartialEq)]
pub enum Fired {
    Cpu {
        percent: f64,
        threshold: f64,
        below: bool,
    },
    Memory {
        bytes: u64,
        threshold: u64,
        below: bool,
    },
    Threads {
        count: u64,
        threshold: u64,
    },
    Fds {
        count: u64,
        threshold: u64,
    },
    /// A watched signal, about to be delivered to thread `tid`.
    Signal {
        signal: i32,
        tid: i32,
    },
    /// A crash signal in thread `tid`; `address` is the faulting address of a fault.
    Crash {
        signal: i32,
        tid: i32,
        address: Option<u64>,
    },
    /// Thread `tid` is exiting with wait status `status`, and the process with it.
    Exit {
        tid: i32,
        status: i32,
    },
    /// No trigger: the timer.
    Timer,
}

impl Fired {
    /// The trigger's name in dump file names.
    pub fn tag(&self) -> &'static str {
        match self {
            Fired::Cpu { .. } => "cpu",
            Fired::Memory { .. } => "mem",
            Fired::Threads { .. } => "threads",
            Fired::Fds { .. } => "fds",
            Fired::Signal { .. } => "signal",
            Fired::Crash { .. } => "crash",
            Fired::Exit { .. } => "exit",
            Fired::Timer => "timer",
        }
    }
}

impl fmt::Display for Fired {
    /// `cpu 97% >= 90%`, `memory 612 MiB >= 500 MiB`, `crash: SIGSEGV at 0x0 in thread 12`...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cmp = |below: bool| if below { "<" } else { ">=" };
        match *self {
            Fired::Cpu {
                percent,
                threshold,
                below,
            } => write!(f, "cpu {percent:.0}% {} {threshold}%", cmp(below)),
            Fired::Memory {
                bytes,
                threshold,
                below,
            } => write!(f, "memory {} {} {}", mib(bytes), cmp(below), mib(threshold)),
            Fired::Threads { count, threshold } => write!(f, "threads {count} >= {threshold}"),
            Fired::Fds { count, threshold } => write!(f, "fds {count} >= {threshold}"),
            Fired::Signal { signal, tid } => {
                write!(f, "signal {} in thread {tid}", signals::name(signal))
            }
            Fired::Crash {
                signal,
                tid,
                address,
            } => {
                write!(f, "crash: {}", signals::name(signal))?;
                if let Some(address) = address {
                    write!(f, " at {address:#x}")?;
                }
                write!(f, " in thread {tid}")
            }
            Fired::Exit { tid, status } => match status & 0x7f {
                0 => write!(f, "exit: status {} in thread {tid}", (status >> 8) & 0xff),
                signal => write!(
                    f,
                    "exit: killed by {} in thread {tid}",
                    signals::name(signal)
                ),
            },
            Fired::Timer => f.write_str("timer"),
        }
    }
}

/// How a watched process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEnd {
    Exited(i32),
    Killed {
        signal: i32,
        core_dumped: bool,
    },
    /// Gone, how is unknown (it was not traced).
    Gone,
}

impl fmt::Display for ProcessEnd {
    /// `exited with status 0`, `was killed by SIGABRT`, `exited`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProcessEnd::Exited(code) => write!(f, "exited with status {code}"),
            ProcessEnd::Killed {
                signal,
                core_dumped,
            } => {
                write!(f, "was killed by {}", signals::name(signal))?;
                if core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            ProcessEnd::Gone => f.write_str("exited"),
        }
    }
}

/// What the watcher reports as it goes.
#[derive(Debug)]
pub enum WatchEvent<'a> {
    /// Waiting for a process named `name` to appear.
    Waiting { name: &'a str },
    /// Watching `pid` now; `traced`: seized with ptrace for signals, crashes or exits.
    Watching {
        pid: i32,
        name: &'a str,
        traced: bool,
    },
    /// Dump `number` of `count` is written.
    Dumped {
        pid: i32,
        fired: &'a Fired,
        number: u32,
        count: u32,
        report: &'a DumpReport,
    },
    /// Dump `number` failed. The watch ends with the error, unless the target is gone.
    DumpFailed {
        pid: i32,
        fired: &'a Fired,
        number: u32,
        count: u32,
        error: &'a Error,
    },
    /// A watched signal came less than `spacing` after the last dump: delivered, no dump.
    Skipped {
        pid: i32,
        fired: &'a Fired,
        since_last: Duration,
    },
    /// The watched process ended.
    Ended { pid: i32, how: ProcessEnd },
}

/// Why watching stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// `count` dumps were taken.
    CountReached,
    /// The process ended (and no `--wait` for the next one).
    TargetEnded { pid: i32, how: ProcessEnd },
    /// The watch's `duration` is over.
    TimeUp,
    /// Cancelled.
    Interrupted,
}

/// How a watch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchEnd {
    pub reason: EndReason,
    /// Dumps taken.
    pub dumps: u32,
    /// The process watched last, if one was found.
    pub pid: Option<i32>,
}

/// The event callback.
pub type OnEvent<'a> = dyn FnMut(&WatchEvent<'_>) + Send + 'a;

/// Watch until `count` dumps are taken, the process ends (without `wait`), the duration is
/// over or the request's cancel flag is set. Errors: the target cannot be found or traced, the
/// output folder is missing, a dump failed; the target is released first in every case.
pub fn watch(spec: &WatchSpec, on_event: &mut OnEvent<'_>) -> Result<WatchEnd> {
    spec.validate()?;
    let mut watcher = Watcher {
        spec,
        on_event,
        deadline: spec.duration.map(|d| Instant::now() + d),
        dumps: 0,
        last_dump: None,
    };
    if !spec.triggers.needs_tracer() {
        return watcher.run();
    }
    // The tracer's thread waits for SIGCHLD; blocked here, it stays pending for that thread
    // instead of being discarded by this one.
    let old_mask = sys::watch::block_sigchld().map_err(|errno| Error::Ptrace {
        operation: "blocking SIGCHLD",
        tid: sys::gettid().as_raw(),
        errno,
    })?;
    let result = std::thread::scope(|scope| {
        let tracer = std::thread::Builder::new()
            .name("snapdump-watch".into())
            .spawn_scoped(scope, || watcher.run())
            .map_err(|e| Error::io("starting the watcher thread", e))?;
        tracer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    let _ = sys::watch::restore_mask(&old_mask);
    result
}

/// How watching one process ended.
enum Outcome {
    /// Stop watching altogether.
    Finished(EndReason),
    /// The process ended (the event is sent).
    Ended(ProcessEnd),
}

struct Watcher<'s, 'e> {
    spec: &'s WatchSpec,
    on_event: &'e mut OnEvent<'e>,
    deadline: Option<Instant>,
    dumps: u32,
    /// When the last dump ended (or failed).
    last_dump: Option<Instant>,
}

impl Watcher<'_, '_> {
    fn emit(&mut self, event: WatchEvent<'_>) {
        (self.on_event)(&event);
    }

    fn cancelled(&self) -> bool {
        self.spec.dump.cancel.is_cancelled()
    }

    fn time_up(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The end to report when the watch must stop now, if it must.
    fn must_stop(&self) -> Option<EndReason> {
        if self.cancelled() {
            Some(EndReason::Interrupted)
        } else if self.time_up() {
            Some(EndReason::TimeUp)
        } else {
            None
        }
    }

    fn spacing_left(&self) -> Option<Duration> {
        let since = self.last_dump?.elapsed();
        (since < self.spec.spacing).then_some(since)
    }

    fn run(&mut self) -> Result<WatchEnd> {
        let mut last_pid = None;
        loop {
            let pid = match self.find_target(last_pid)? {
                Ok(pid) => pid,
                Err(reason) => return Ok(self.end(reason, last_pid)),
            };
            last_pid = Some(pid);
            let waits = matches!(self.spec.target, WatchTarget::Name { wait: true, .. });
            match self.watch_process(pid) {
                Ok(Outcome::Finished(reason)) => return Ok(self.end(reason, Some(pid))),
                Ok(Outcome::Ended(how)) if !waits => {
                    return Ok(self.end(EndReason::TargetEnded { pid, how }, Some(pid)));
                }
                Ok(Outcome::Ended(_)) => {}
                // Found, then gone before it could be watched: wait for the next one.
                Err(Error::NoSuchProcess { .. } | Error::Zombie { .. })
                | Err(Error::TargetExited { .. })
                    if waits =>
                {
                    self.emit(WatchEvent::Ended {
                        pid,
                        how: ProcessEnd::Gone,
                    });
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn end(&self, reason: EndReason, pid: Option<i32>) -> WatchEnd {
        WatchEnd {
            reason,
            dumps: self.dumps,
            pid,
        }
    }

    /// The process to watch next: `Err(reason)` when the watch ends while waiting.
    fn find_target(&mut self, previous: Option<i32>) -> Result<Result<i32, EndReason>> {
        let (name, wait) = match &self.spec.target {
            WatchTarget::Pid(pid) => return Ok(Ok(*pid)),
            WatchTarget::Name { name, wait } => (name.as_str(), *wait),
        };
        if !wait {
            return find::find_by_name(name).map(Ok);
        }
        self.emit(WatchEvent::Waiting { name });
        loop {
            if let Some(reason) = self.must_stop() {
                return Ok(Err(reason));
            }
            match find_live(name, previous) {
                Ok(pid) => return Ok(Ok(pid)),
                Err(Error::NoProcessNamed { .. }) => {}
                Err(error) => return Err(error),
            }
            self.sleep(self.spec.poll);
        }
    }

    /// Sleep `duration`, waking every [`TICK`] to look at the cancel flag.
    fn sleep(&self, duration: Duration) {
        let until = Instant::now() + duration;
        while !self.cancelled() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep((until - now).min(TICK));
        }
    }

    fn watch_process(&mut self, pid: i32) -> Result<Outcome> {
        let (stat, _) = process::check_dumpable(pid)?;
        let name = String::from_utf8_lossy(&stat.comm).into_owned();
        let mut sampler = Sampler::new(pid, stat.starttime, self.spec.triggers.fds.is_some());
        let triggers = &self.spec.triggers;
        let mut tracer = if triggers.needs_tracer() {
            let watched = Watched {
                signals: triggers.signals.clone(),
                on_crash: triggers.on_crash,
                on_exit: triggers.on_exit,
            };
            Some(Tracer::seize(pid, watched, &self.spec.dump.cancel)?)
        } else {
            None
        };
        self.emit(WatchEvent::Watching {
            pid,
            name: &name,
            traced: tracer.is_some(),
        });
        let result = self.watch_loop(pid, &stat.comm, &mut sampler, tracer.as_mut());
        if let Some(tracer) = tracer.as_mut() {
            tracer.detach_all();
        }
        if let Ok(Outcome::Ended(how)) = result {
            self.emit(WatchEvent::Ended { pid, how });
        }
        result
    }

    fn watch_loop(
        &mut self,
        pid: i32,
        comm: &[u8],
        sampler: &mut Sampler,
        mut tracer: Option<&mut Tracer>,
    ) -> Result<Outcome> {
        let timer = self.spec.triggers.is_empty();
        let samples = timer || self.spec.triggers.samples();
        let mut next_sample = Instant::now();
        loop {
            if let Some(reason) = self.must_stop() {
                return Ok(Outcome::Finished(reason));
            }
            if let Some(tracer) = tracer.as_deref_mut() {
                tracer.pump()?;
                while let Some(happening) = tracer.next_happening() {
                    self.on_happening(pid, comm, tracer, happening)?;
                }
                if let Some(how) = tracer.ended() {
                    if self.dumps >= self.spec.count {
                        self.emit(WatchEvent::Ended { pid, how });
                        return Ok(Outcome::Finished(EndReason::CountReached));
                    }
                    return Ok(Outcome::Ended(how));
                }
            }
            let dying = tracer.as_deref().is_some_and(|t| t.dying);
            if self.dumps >= self.spec.count && !dying {
                return Ok(Outcome::Finished(EndReason::CountReached));
            }
            let now = Instant::now();
            if samples && !dying && now >= next_sample {
                next_sample = now + self.spec.poll;
                let Some(sample) = sampler.sample() else {
                    if tracer.is_none() {
                        return Ok(Outcome::Ended(ProcessEnd::Gone));
                    }
                    // The tracer collects how it ended.
                    continue;
                };
                let fired = if self.spacing_left().is_some() {
                    None
                } else if timer {
                    Some(Fired::Timer)
                } else {
                    self.spec.triggers.check(&sample)
                };
                if let Some(fired) = fired {
                    if let Some(how) = self.dump_now(pid, comm, tracer.as_deref_mut(), fired)? {
                        return Ok(Outcome::Ended(how));
                    }
                    if timer {
                        next_sample = Instant::now() + self.spec.spacing;
                    }
                    continue;
                }
            }
            let mut wake = Instant::now() + TICK;
            if samples && !dying {
                wake = wake.min(next_sample);
            }
            if let Some(deadline) = self.deadline {
                wake = wake.min(deadline);
            }
            let wait = wake.saturating_duration_since(Instant::now());
            if tracer.is_some() {
                sys::watch::wait_sigchld(wait);
            } else {
                std::thread::sleep(wait);
            }
        }
    }

    /// The request for one dump: the spec's settings, this process, a name with the trigger.
    fn request_for(&self, pid: i32, comm: &[u8], fired: &Fired) -> DumpRequest {
        let mut request = self.spec.dump.clone();
        request.target = TargetSpec::Pid(pid);
        request.overwrite = false;
        request.output = Some(dump_path(
            self.spec.output_dir(),
            comm,
            pid,
            fired,
            &request,
        ));
        request
    }

    /// Dump for a threshold or the timer: an ordinary dump, or through the tracer when the
    /// process is traced. `Some(end)` when the process turned out to be gone.
    fn dump_now(
        &mut self,
        pid: i32,
        comm: &[u8],
        tracer: Option<&mut Tracer>,
        fired: Fired,
    ) -> Result<Option<ProcessEnd>> {
        let request = self.request_for(pid, comm, &fired);
        let result = match tracer {
            None => crate::dump(&request),
            Some(tracer) => {
                let result = dump_held(&request, pid, tracer, DumpReason::Requested);
                tracer.resume_all();
                result
            }
        };
        self.record(pid, &fired, result)
    }

    /// A thread the tracer holds: dump if that is due, then let it go.
    fn on_happening(
        &mut self,
        pid: i32,
        comm: &[u8],
        tracer: &mut Tracer,
        happening: Happening,
    ) -> Result<()> {
        let (tid, fired, reason, last_chance) = match happening {
            Happening::Signal { tid, signal, crash } => {
                // Read before anything else runs: the signal and what caused it.
                let siginfo = sys::get_siginfo(sys::Pid::from_raw(tid)).unwrap_or([0; 128]);
                let fired = if crash {
                    Fired::Crash {
                        signal,
                        tid,
                        address: signals::fault_address(signal, &siginfo),
                    }
                } else {
                    Fired::Signal { signal, tid }
                };
                let reason = DumpReason::Signal {
                    tid,
                    signal,
                    siginfo,
                };
                (tid, fired, reason, crash)
            }
            // About to die of a signal: recorded like a crash.
            Happening::Exit {
                tid,
                status,
                at_signal: true,
            } => {
                let siginfo = sys::get_siginfo(sys::Pid::from_raw(tid)).unwrap_or([0; 128]);
                let reason = DumpReason::Signal {
                    tid,
                    signal: status & 0x7f,
                    siginfo,
                };
                (tid, Fired::Exit { tid, status }, reason, true)
            }
            Happening::Exit { tid, status, .. } => (
                tid,
                Fired::Exit { tid, status },
                DumpReason::Exiting { tid },
                true,
            ),
        };
        let due = self.dumps < self.spec.count && !tracer.dying;
        let result = match self.spacing_left() {
            _ if !due => None,
            Some(since_last) if !last_chance => {
                self.emit(WatchEvent::Skipped {
                    pid,
                    fired: &fired,
                    since_last,
                });
                None
            }
            _ => {
                let request = self.request_for(pid, comm, &fired);
                Some(dump_held(&request, pid, tracer, reason))
            }
        };
        if matches!(fired, Fired::Crash { .. } | Fired::Exit { .. }) {
            // Nothing more to watch for: wait for the end, to report it.
            tracer.dying = true;
        }
        // The signal goes on as it came; the process dies of a crash exactly as it would have.
        tracer.let_go(tid);
        tracer.resume_all();
        match result {
            // A process gone mid-dump: the tracer collects how it ended.
            Some(result) => self.record(pid, &fired, result).map(drop),
            None => Ok(()),
        }
    }

    /// Count and report a dump. `Ok(Some(end))`: it failed because the process is gone.
    fn record(
        &mut self,
        pid: i32,
        fired: &Fired,
        result: Result<DumpReport>,
    ) -> Result<Option<ProcessEnd>> {
        self.last_dump = Some(Instant::now());
        let number = self.dumps + 1;
        let count = self.spec.count;
        match result {
            Ok(report) => {
                self.dumps = number;
                self.emit(WatchEvent::Dumped {
                    pid,
                    fired,
                    number,
                    count,
                    report: &report,
                });
                Ok(None)
            }
            // Cancelled mid-dump: the loop stops at its next look at the flag.
            Err(Error::Interrupted) => Ok(None),
            Err(error) => {
                self.emit(WatchEvent::DumpFailed {
                    pid,
                    fired,
                    number,
                    count,
                    error: &error,
                });
                match error {
                    Error::TargetExited { .. } | Error::NoSuchProcess { .. } => {
                        Ok(Some(ProcessEnd::Gone))
                    }
                    Error::Zombie { .. } => Ok(Some(ProcessEnd::Gone)),
                    error => Err(error),
                }
            }
        }
    }
}

/// Dump a traced process: stop every thread, dump, hand the threads back to the tracer still
/// stopped (the caller resumes them).
fn dump_held(
    request: &DumpRequest,
    pid: i32,
    tracer: &mut Tracer,
    reason: DumpReason,
) -> Result<DumpReport> {
    let threads = tracer.stop_all();
    let stopped = StoppedProcess::from_stopped_threads(pid, threads, tracer.options());
    let result = crate::dump_stopped(request, &stopped, reason);
    // The tracer resumes them, each its own way: no detach.
    let _ = stopped.release();
    result
}

/// The one live process named `name`, leaving out zombies (a restarted program's previous
/// instance may linger as one) and `previous`.
fn find_live(name: &str, previous: Option<i32>) -> Result<i32> {
    let live = |pid: i32| {
        Some(pid) != previous
            && process::read_stat(pid).is_ok_and(|s| !matches!(s.state, b'Z' | b'X' | b'x'))
    };
    match find::find_by_name(name) {
        Ok(pid) if live(pid) => Ok(pid),
        Ok(_) => Err(Error::NoProcessNamed {
            name: name.to_owned(),
        }),
        Err(Error::AmbiguousName { name, candidates }) => {
            let alive: Vec<_> = candidates.into_iter().filter(|c| live(c.pid)).collect();
            match alive.as_slice() {
                [] => Err(Error::NoProcessNamed { name }),
                [one] => Ok(one.pid),
                _ => Err(Error::AmbiguousName {
                    name,
                    candidates: alive,
                }),
            }
        }
        Err(error) => Err(error),
    }
}

/// `dir/<comm>_<pid>_<YYYYMMDD_HHMMSS>_<trigger>.<ext>`, made unique.
fn dump_path(dir: &Path, comm: &[u8], pid: i32, fired: &Fired, request: &DumpRequest) -> PathBuf {
    let stem = format!(
        "{}_{}",
        naming::default_stem(comm, pid, SystemTime::now()),
        fired.tag()
    );
    let extension = match request.compress {
        Some(_) => format!("{}.zst", request.format.extension()),
        None => request.format.extension().to_owned(),
    };
    naming::unique_path(dir, &stem, &extension)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu: Option<f64>, rss_mib: u64, threads: u64, fds: Option<u64>) -> Sample {
        Sample {
            cpu_percent: cpu,
            rss_bytes: rss_mib << 20,
            threads,
            fds,
        }
    }

    #[test]
    fn thresholds_fire_in_order_with_their_values() {
        let triggers = Triggers {
            cpu_above: Some(90.0),
            mem_above: Some(500 << 20),
            threads: Some(32),
            fds: Some(1024),
            ..Triggers::default()
        };
        assert_eq!(triggers.check(&sample(None, 10, 4, Some(10))), None);
        let fired = triggers
            .check(&sample(Some(97.2), 10, 4, Some(10)))
            .unwrap();
        assert_eq!(fired.to_string(), "cpu 97% >= 90%");
        assert_eq!(fired.tag(), "cpu");
        let fired = triggers.check(&sample(Some(5.0), 612, 4, None)).unwrap();
        assert_eq!(fired.to_string(), "memory 612 MiB >= 500 MiB");
        let fired = triggers.check(&sample(Some(5.0), 10, 40, Some(3))).unwrap();
        assert_eq!(fired.to_string(), "threads 40 >= 32");
        let fired = triggers.check(&sample(None, 10, 4, Some(1030))).unwrap();
        assert_eq!(fired.to_string(), "fds 1030 >= 1024");
        let below = Triggers {
            cpu_below: Some(10.0),
            mem_below: Some(50 << 20),
            ..Triggers::default()
        };
        assert_eq!(
            below
                .check(&sample(Some(3.0), 100, 1, None))
                .unwrap()
                .to_string(),
            "cpu 3% < 10%"
        );
        assert_eq!(
            below
                .check(&sample(Some(30.0), 12, 1, None))
                .unwrap()
                .to_string(),
            "memory 12 MiB < 50 MiB"
        );
        assert_eq!(below.check(&sample(Some(30.0), 100, 1, None)), None);
    }

    #[test]
    fn descriptions() {
        let triggers = Triggers {
            cpu_above: Some(90.0),
            mem_above: Some(500 << 20),
            signals: vec![libc::SIGUSR1],
            on_crash: true,
            ..Triggers::default()
        };
        assert_eq!(
            triggers.to_string(),
            "cpu >= 90%, memory >= 500 MiB, signal SIGUSR1, crash"
        );
        assert!(triggers.needs_tracer() && triggers.samples() && !triggers.is_empty());
        assert_eq!(Triggers::default().to_string(), "a timer");
        assert!(Triggers::default().is_empty());
        let crash = Fired::Crash {
            signal: libc::SIGSEGV,
            tid: 12,
            address: Some(0),
        };
        assert_eq!(crash.to_string(), "crash: SIGSEGV at 0x0 in thread 12");
        let exit = Fired::Exit {
            tid: 7,
            status: 3 << 8,
        };
        assert_eq!(exit.to_string(), "exit: status 3 in thread 7");
        let killed = Fired::Exit {
            tid: 7,
            status: libc::SIGTERM,
        };
        assert_eq!(killed.to_string(), "exit: killed by SIGTERM in thread 7");
        assert_eq!(
            ProcessEnd::Killed {
                signal: libc::SIGABRT,
                core_dumped: false
            }
            .to_string(),
            "was killed by SIGABRT"
        );
    }

    #[test]
    fn invalid_specs_are_refused() {
        let mut spec = WatchSpec::new(WatchTarget::Pid(1));
        spec.count = 0;
        assert!(spec.validate().is_err());
        spec.count = 1;
        spec.triggers.signals = vec![libc::SIGKILL];
        assert!(spec.validate().is_err());
        spec.triggers.signals = vec![libc::SIGUSR1];
        spec.dump.output = Some("/nonexistent/snapdump".into());
        assert!(matches!(
            spec.validate(),
            Err(Error::OutputDirMissing { .. })
        ));
        spec.dump.output = None;
        assert!(spec.validate().is_ok());
    }
}
