//! One dump from start to finish: check the target, choose the file, stop the process, capture
//! it, plan, check the space, write, release the process, rename the file into place.
//!
//! The order protects the target and the disk: everything that can fail without touching the
//! target (bad pid, existing file, missing folder) fails before it is stopped; the
//! [`StoppedProcess`] guard releases it on every path out; the [`DumpFile`] guard removes the
//! partial file on every failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::ptrace::Options;

use crate::Cancel;
use crate::capture::{Capture, DumpReason};
use crate::elf::{self, CoreLayout};
use crate::error::{Error, Result};
use crate::minidump;
use crate::output::{DumpFile, SpaceGuard, SparseWriter, parent_dir};
use crate::process::memory::{LiveMemory, ProcessMemory, Redacted};
use crate::process::pagemap::PageScanner;
use crate::process::session::StoppedProcess;
use crate::process::{self, find};
use crate::select::{self, Mode, SelectOptions};
use crate::snapshot::guard::Guardian;
use crate::snapshot::{self, Snapshot, SnapshotError};
use crate::{fault, naming};

/// Which process to dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    Pid(i32),
    /// A name matched against comm, the executable's file name and argv[0].
    Name(String),
}

impl TargetSpec {
    /// The pid, looking the name up if needed.
    pub fn resolve(&self) -> Result<i32> {
        match self {
            TargetSpec::Pid(pid) => Ok(*pid),
            TargetSpec::Name(name) => find::find_by_name(name),
        }
    }
}

/// The file format of a dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// An ELF core, as the kernel and gdb write them (gdb, lldb, dotnet-dump, readelf).
    #[default]
    Elf,
    /// A minidump with Breakpad/Crashpad's Linux streams (minidump-stackwalk, lldb, WinDbg).
    Minidump,
}

impl Format {
    /// The default file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Elf => "core",
            Format::Minidump => "dmp",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Elf => "elf",
            Format::Minidump => "minidump",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_lowercase().as_str() {
            "elf" | "core" => Ok(Format::Elf),
            "minidump" | "mdmp" | "dmp" => Ok(Format::Minidump),
            other => Err(format!("unknown format {other:?}: use elf or minidump")),
        }
    }
}

/// Called with (bytes done, bytes planned) while memory is written.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Everything a dump needs to know. Build it with [`DumpRequest::new`] and the setters.
#[derive(Clone)]
pub struct DumpRequest {
    pub target: TargetSpec,
    pub mode: Mode,
    pub format: Format,
    /// A file path, or an existing folder for a default-named file; `None`: the current folder.
    pub output: Option<PathBuf>,
    pub overwrite: bool,
    pub include_dont_dump: bool,
    /// Leave out what identifies the run rather than the code (dotnet-monitor's Triage): the
    /// command line keeps only argv[0] (NT_PRPSINFO, the minidump's LinuxCmdLine), the
    /// environment is not captured (LinuxEnviron stays empty), and the argument and
    /// environment strings at the top of the main thread's stack are written as zeros.
    /// Registers, stacks, modules and build ids are kept. Usually with [`Mode::Mini`]: larger
    /// modes store the heap, where the program's own copies of such strings live.
    pub redact: bool,
    /// Bytes that must stay free on the output's filesystem; `None`: 5% of it or 1 GiB.
    pub min_free: Option<u64>,
    /// Write a zstd stream at this level (`.zst` is added to default names).
    pub compress: Option<i32>,
    /// Refuse dumps expected to be larger than this many bytes (before compression)...
    pub max_size: Option<u64>,
    /// ...or, with `truncate`, leave out regions until the dump fits.
    pub truncate: bool,
    /// Clone the target copy-on-write and let it run on while the dump is written (`None`:
    /// for heap and full dumps). Falls back to stopping the world, with a warning, when the
    /// clone is refused.
    pub snapshot: Option<bool>,
    /// A guardian process that reaps a snapshot's clone inside the target if this process is
    /// killed mid-dump (see [`snapshot::guard`]). Without one such a clone's zombie would stay
    /// with the target until it exits.
    pub guardian: Option<snapshot::guard::GuardianCommand>,
    pub cancel: Cancel,
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for DumpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpRequest")
            .field("target", &self.target)
            .field("mode", &self.mode)
            .field("output", &self.output)
            .field("overwrite", &self.overwrite)
            .field("redact", &self.redact)
            .finish_non_exhaustive()
    }
}

impl DumpRequest {
    pub fn new(target: TargetSpec) -> DumpRequest {
        DumpRequest {
            target,
            mode: Mode::default(),
            format: Format::default(),
            output: None,
            overwrite: false,
            include_dont_dump: false,
            redact: false,
            min_free: None,
            compress: None,
            max_size: None,
            truncate: false,
            snapshot: None,
            guardian: None,
            cancel: Cancel::default(),
            progress: None,
        }
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    pub fn output(mut self, path: impl Into<PathBuf>) -> Self {
        self.output = Some(path.into());
        self
    }

    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    pub fn redact(mut self, redact: bool) -> Self {
        self.redact = redact;
        self
    }

    pub fn cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }
}

/// How long the target was held, part by part.
#[derive(Clone, Copy, Debug, Default)]
pub struct PauseTimes {
    /// Seizing and interrupting every thread.
    pub stop: Duration,
    /// Reading registers and `/proc` details.
    pub registers: Duration,
    /// Making the copy-on-write clone (snapshot dumps).
    pub clone: Duration,
    /// Listing pages and reading memory into the file.
    pub memory: Duration,
    /// Detaching.
    pub resume: Duration,
    /// From the first seize to the last detach.
    pub total: Duration,
    /// After a snapshot: one thread held to reap the clone inside the target.
    pub reap: Duration,
}

/// What a finished dump reports.
#[derive(Clone, Debug)]
pub struct DumpReport {
    pub path: PathBuf,
    pub pid: i32,
    pub name: String,
    pub mode: Mode,
    pub format: Format,
    /// The command line, environment and their strings in memory were left out (Triage).
    pub redacted: bool,
    pub threads: usize,
    /// Program headers of type PT_LOAD, and how many hold contents.
    pub segments: usize,
    pub stored_segments: usize,
    /// The file's apparent size and the bytes it takes on disk (holes excluded).
    pub file_len: u64,
    pub disk_bytes: u64,
    pub unreadable_bytes: u64,
    pub dont_dump_skipped: usize,
    /// Bytes left out to honour `max_size` with `truncate`.
    pub truncated_bytes: u64,
    /// The dump was read from a copy-on-write clone while the target ran on.
    pub snapshot: bool,
    /// Why a snapshot was wanted but the target was stopped for the whole dump instead.
    pub snapshot_refused: Option<String>,
    pub pause: PauseTimes,
    pub elapsed: Duration,
}

/// The file a request writes to, decided before the target is touched.
pub fn destination(request: &DumpRequest, pid: i32, comm: &[u8]) -> Result<PathBuf> {
    let stem = || naming::default_stem(comm, pid, std::time::SystemTime::now());
    let ext = match request.compress {
        Some(_) => format!("{}.zst", request.format.extension()),
        None => request.format.extension().to_owned(),
    };
    let ext = ext.as_str();
    match &request.output {
        None => Ok(naming::unique_path(Path::new("."), &stem(), ext)),
        Some(path) if path.is_dir() => Ok(naming::unique_path(path, &stem(), ext)),
        Some(path) => {
            let dir = parent_dir(path);
            if !dir.is_dir() {
                return Err(Error::OutputDirMissing { path: dir });
            }
            Ok(path.clone())
        }
    }
}

/// One line of a dry run: a piece of a mapping and what the dump would keep of it.
#[derive(Clone, Debug)]
pub struct PlannedRegion {
    pub start: u64,
    pub end: u64,
    /// Bytes that would be read and written.
    pub data_bytes: u64,
    pub stored: bool,
    /// The mapping's name: a path, `[heap]`, `[stack]`, `anonymous`...
    pub name: String,
}

/// What a dump would write, without writing it.
#[derive(Clone, Debug)]
pub struct DryRunReport {
    pub pid: i32,
    pub name: String,
    pub mode: Mode,
    pub threads: usize,
    pub regions: Vec<PlannedRegion>,
    /// The expected bytes on disk (before compression) and the file's apparent size.
    pub estimated_disk_bytes: u64,
    pub estimated_file_len: u64,
    pub pause: PauseTimes,
}

fn mapping_name(mapping: &crate::process::procfs::Mapping) -> String {
    use crate::process::procfs::Backing;
    match &mapping.backing {
        Backing::Anonymous => "anonymous".into(),
        Backing::Heap => "[heap]".into(),
        Backing::Stack => "[stack]".into(),
        Backing::Vdso => "[vdso]".into(),
        Backing::Vvar => "[vvar]".into(),
        Backing::Vsyscall => "[vsyscall]".into(),
        Backing::File { path, deleted } => {
            format!(
                "{}{}",
                path.display(),
                if *deleted { " (deleted)" } else { "" }
            )
        }
        Backing::Other(name) => name.to_string_lossy().into_owned(),
    }
}

/// A captured and planned target: still stopped, or running on while its snapshot is read.
struct Prepared {
    /// `Some` while the target is stopped (stop-the-world); `None` once resumed.
    stopped: Option<StoppedProcess>,
    snapshot: Option<Snapshot>,
    memory: Box<dyn ProcessMemory>,
    capture: Capture,
    plan: select::Plan,
    pause: PauseTimes,
    /// Why a snapshot was wanted but not taken.
    snapshot_refused: Option<String>,
    /// Looks after the snapshot should this process die (dropped after `snapshot`).
    guardian: Option<Guardian>,
}

impl Prepared {
    /// Let the target go if it is still stopped; the pause ends here.
    fn resume(&mut self) {
        if let Some(stopped) = self.stopped.take() {
            let stopped_at = stopped.stopped_at();
            self.pause.resume = stopped.resume();
            self.pause.total = stopped_at.elapsed();
            tracing::debug!(
                micros = self.pause.total.as_micros() as u64,
                "target resumed"
            );
        }
    }
}

/// Whether this request clones the target: by default for heap and full dumps (mini dumps are
/// small enough that the clone would not shorten the pause).
fn wants_snapshot(request: &DumpRequest) -> bool {
    request.snapshot.unwrap_or(request.mode != Mode::Mini)
}

fn stop_capture_plan(request: &DumpRequest, pid: i32, state_before: u8) -> Result<Prepared> {
    // Started before the pause, so it costs the target nothing.
    let mut guardian = match (&request.guardian, wants_snapshot(request)) {
        (Some(command), true) => Guardian::spawn(command)
            .map_err(|e| tracing::warn!("no snapshot guardian: {e}"))
            .ok(),
        _ => None,
    };
    // smaps walks every page table: read it while the target still runs (see
    // Capture::collect_with_hints).
    let smaps_hints = process::read_proc_file(pid, "smaps")
        .map(|bytes| crate::process::procfs::parse_maps(&bytes))
        .ok();
    let mut stopped = StoppedProcess::stop(pid, Options::empty(), &request.cancel)?;
    let mut pause = PauseTimes {
        stop: stopped.stop_duration,
        ..PauseTimes::default()
    };
    fault::stall_point("stopped", &request.cancel)?;
    let t = Instant::now();
    let target_memory = LiveMemory::new(pid);
    let mut capture = Capture::collect_with_hints(
        &stopped,
        &target_memory,
        smaps_hints.as_deref(),
        request.redact,
    )?;
    // While traced every thread reads as 't'; record the state it was in before.
    capture.stat.state = state_before;
    pause.registers = t.elapsed();
    tracing::debug!(
        threads = capture.threads.len(),
        mappings = capture.mappings.len(),
        libraries = capture.link_map.entries.len(),
        "captured registers and /proc"
    );
    fault::stall_point("captured", &request.cancel)?;

    let mut snapshot_refused = None;
    let mut snapshot = None;
    if wants_snapshot(request) {
        match snapshot::take(&mut stopped, &capture) {
            Ok((taken, times)) => {
                pause.clone = times.total;
                if let Some(g) = &mut guardian
                    && let Err(e) = g.watch(&taken)
                {
                    tracing::warn!("the snapshot guardian is gone: {e}");
                }
                snapshot = Some(taken);
            }
            Err(SnapshotError::Refused(why)) => {
                tracing::warn!("no snapshot, stopping the target for the whole dump: {why}");
                snapshot_refused = Some(why.to_string());
            }
            Err(SnapshotError::Target(error)) => return Err(error),
            Err(error @ SnapshotError::RestoreFailed { .. }) => {
                return Err(Error::Snapshot {
                    detail: error.to_string(),
                });
            }
        }
    }
    let mut prepared = Prepared {
        stopped: Some(stopped),
        snapshot: None,
        memory: Box::new(target_memory),
        capture,
        plan: select::Plan::default(),
        pause,
        snapshot_refused,
        guardian,
    };
    let options = SelectOptions {
        mode: request.mode,
        include_dont_dump: request.include_dont_dump,
        // On a .NET process, heap dumps keep the managed images SOS needs to name types.
        keep_managed_images: true,
    };
    let t = Instant::now();
    let target_pages = PageScanner::open(pid)?;
    if let Some(snapshot) = snapshot {
        // The target runs on from here; the dump is read from the frozen clone.
        prepared.resume();
        fault::stall_point("resumed", &request.cancel)?;
        let clone_pages = PageScanner::open(snapshot.pid())?;
        let live_only = snapshot.live_only_runs();
        let pages = select::SnapshotPages {
            clone: &clone_pages,
            target: &target_pages,
            live_only: &live_only,
        };
        let memory = snapshot.memory();
        prepared.plan = select::plan(&prepared.capture, &memory, &pages, &options)?;
        prepared.memory = Box::new(memory);
        prepared.snapshot = Some(snapshot);
    } else {
        prepared.plan = select::plan(
            &prepared.capture,
            &*prepared.memory,
            &target_pages,
            &options,
        )?;
        prepared.pause.memory = t.elapsed();
    }
    Ok(prepared)
}

/// The expected bytes on disk and the apparent length of a dump of `plan`.
fn estimate(format: Format, capture: &Capture, plan: &select::Plan) -> (u64, u64) {
    match format {
        Format::Elf => {
            let layout = CoreLayout::new(capture, plan);
            (layout.estimated_disk_bytes(plan), layout.total_len)
        }
        Format::Minidump => {
            let bytes = minidump::estimate_disk_bytes(capture, plan);
            (bytes, bytes)
        }
    }
}

/// Stop the target just long enough to plan a dump, and report what it would write.
pub fn dry_run(request: &DumpRequest) -> Result<DryRunReport> {
    let pid = request.target.resolve()?;
    let (stat, _status) = process::check_dumpable(pid)?;
    // A dry run holds the target only to plan: no clone needed.
    let mut request = request.clone();
    request.snapshot = Some(false);
    let request = &request;
    let mut prepared = stop_capture_plan(request, pid, stat.state)?;
    prepared.resume();
    let Prepared {
        capture,
        plan,
        pause,
        ..
    } = prepared;
    let (estimated_disk_bytes, estimated_file_len) = estimate(request.format, &capture, &plan);
    Ok(DryRunReport {
        pid,
        name: capture.name(),
        mode: request.mode,
        threads: capture.threads.len(),
        regions: plan
            .segments
            .iter()
            .map(|s| PlannedRegion {
                start: s.start,
                end: s.end,
                data_bytes: s.data_bytes(),
                stored: s.stored,
                name: mapping_name(&capture.mappings[s.mapping]),
            })
            .collect(),
        estimated_disk_bytes,
        estimated_file_len,
        pause,
    })
}

/// Where [`write_dump`] puts the bytes.
enum Destination<'a> {
    File {
        file: &'a DumpFile,
        guard: SpaceGuard,
    },
    Stream(Box<dyn std::io::Write + Send + 'a>),
}

/// What [`write_dump`] did, for the report.
struct Written {
    capture: Capture,
    plan: select::Plan,
    stats: elf::WriteStats,
    truncated_bytes: u64,
    pause: PauseTimes,
    snapshot: bool,
    snapshot_refused: Option<String>,
}

/// Stop, capture, plan, write, release: the part of a dump that holds the target.
fn write_dump(
    request: &DumpRequest,
    pid: i32,
    state_before: u8,
    destination: Destination<'_>,
) -> Result<Written> {
    let prepared = stop_capture_plan(request, pid, state_before)?;
    write_prepared(request, pid, prepared, destination)
}

/// Capture and plan a process whose threads the caller holds stopped.
fn prepare_held(
    request: &DumpRequest,
    stopped: &StoppedProcess,
    reason: DumpReason,
) -> Result<Prepared> {
    let pid = stopped.pid();
    let t = Instant::now();
    let memory = LiveMemory::new(pid);
    let mut capture = Capture::collect_with_hints(stopped, &memory, None, request.redact)?;
    capture.reason = reason;
    let registers = t.elapsed();
    let t = Instant::now();
    let options = SelectOptions {
        mode: request.mode,
        include_dont_dump: request.include_dont_dump,
        // On a .NET process, heap dumps keep the managed images SOS needs to name types.
        keep_managed_images: true,
    };
    let plan = select::plan(&capture, &memory, &PageScanner::open(pid)?, &options)?;
    Ok(Prepared {
        stopped: None,
        snapshot: None,
        memory: Box::new(memory),
        capture,
        plan,
        pause: PauseTimes {
            registers,
            memory: t.elapsed(),
            ..PauseTimes::default()
        },
        snapshot_refused: None,
        guardian: None,
    })
}

/// Write a planned dump; release the target if this dump stopped it.
fn write_prepared(
    request: &DumpRequest,
    pid: i32,
    mut prepared: Prepared,
    destination: Destination<'_>,
) -> Result<Written> {
    let held_by_caller = prepared.stopped.is_none() && prepared.snapshot.is_none();
    let t = Instant::now();
    let capture = &prepared.capture;
    let mut plan = std::mem::take(&mut prepared.plan);
    let (mut estimate, _) = estimate(request.format, capture, &plan);
    let mut truncated_bytes = 0;
    if let Some(limit) = request.max_size
        && estimate > limit
    {
        if !request.truncate {
            return Err(Error::TooLarge {
                size: estimate,
                limit,
            });
        }
        let overhead = estimate - plan.data_bytes();
        let essential = select::extra_ranges(capture);
        truncated_bytes = plan.truncate_to(limit.saturating_sub(overhead), &essential);
        estimate = self::estimate(request.format, capture, &plan).0;
    }
    tracing::debug!(
        segments = plan.segments.len(),
        estimate,
        "planned {} of {} mappings",
        plan.stored_segments().count(),
        capture.mappings.len()
    );
    let writer = match destination {
        Destination::File { file, guard } => {
            guard.check(estimate)?;
            match request.compress {
                Some(level) => SparseWriter::compressed(file.file(), level, Some(guard), estimate)?,
                // Paced by the disk even while the target is stopped: letting dirty pages pile
                // up only gets the writer throttled harder later (4 GiB stopped: 9.6 s
                // unpaced, paced snapshots wrote the same in 3.7 s).
                None => SparseWriter::new(file.file(), Some(guard), estimate).write_behind(),
            }
        }
        Destination::Stream(stream) => SparseWriter::stream(stream),
    };
    let planned = plan.data_bytes();
    let progress = request.progress.clone();
    let cancel = request.cancel.clone();
    let mut report_progress = |done: u64| {
        if let Some(progress) = &progress {
            progress(done.min(planned), planned);
        }
        // The writer checks the cancel flag before its next chunk.
        let _ = fault::stall_point("writing", &cancel);
    };
    // A redacted dump reads its argument and environment strings as zeros.
    let redacted = Redacted::new(&*prepared.memory, &capture.redacted);
    let memory: &dyn ProcessMemory = &redacted;
    let stats = match request.format {
        Format::Elf => elf::write_core(
            capture,
            &plan,
            &CoreLayout::new(capture, &plan),
            memory,
            writer,
            &mut report_progress,
            &request.cancel,
        )?,
        Format::Minidump => minidump::write_minidump(
            capture,
            &plan,
            memory,
            writer,
            &mut report_progress,
            &request.cancel,
        )?,
    };
    match &prepared.snapshot {
        // A clone killed mid-dump (memory pressure) reads as zeros from then on.
        Some(snapshot) if process::has_exited(snapshot.pid()) => {
            return Err(Error::Snapshot {
                detail: "the snapshot was killed while it was read (out of memory?)".into(),
            });
        }
        // A target killed mid-dump likewise: that dump is not a dump of it.
        None if process::has_exited(pid) => return Err(Error::TargetExited { pid }),
        _ => {}
    }
    if prepared.stopped.is_some() || held_by_caller {
        prepared.pause.memory += t.elapsed();
    }
    fault::stall_point("written", &request.cancel)?;
    prepared.resume();
    if let Some(snapshot) = prepared.snapshot.take() {
        match snapshot.finish() {
            Ok(finish) => prepared.pause.reap = finish.reaper_pause,
            Err(e) => tracing::warn!("cleaning up the snapshot: {e}"),
        }
    }
    if let Some(guardian) = prepared.guardian.take() {
        guardian.release();
    }
    tracing::debug!(
        bytes = stats.disk_bytes,
        unreadable = stats.unreadable_bytes,
        reap_micros = prepared.pause.reap.as_micros() as u64,
        "dump written"
    );
    Ok(Written {
        capture: prepared.capture,
        plan,
        stats,
        truncated_bytes,
        pause: prepared.pause,
        snapshot: !held_by_caller && wants_snapshot(request),
        snapshot_refused: prepared.snapshot_refused,
    })
}

fn report(
    request: &DumpRequest,
    pid: i32,
    path: PathBuf,
    disk_bytes: u64,
    written: Written,
    started: Instant,
) -> DumpReport {
    let Written {
        capture,
        plan,
        stats,
        truncated_bytes,
        pause,
        snapshot,
        snapshot_refused,
    } = written;
    DumpReport {
        path,
        pid,
        name: capture.name(),
        mode: request.mode,
        format: request.format,
        redacted: request.redact,
        threads: capture.threads.len(),
        segments: plan.segments.len(),
        stored_segments: plan.stored_segments().count(),
        file_len: stats.file_len,
        disk_bytes,
        unreadable_bytes: stats.unreadable_bytes,
        dont_dump_skipped: plan.dont_dump_skipped,
        truncated_bytes,
        snapshot: snapshot && snapshot_refused.is_none(),
        snapshot_refused,
        pause,
        elapsed: started.elapsed(),
    }
}

/// A dump that failed because its target died says so, whatever step noticed first.
fn explain_failure(error: Error, pid: i32) -> Error {
    match error {
        Error::Interrupted | Error::TargetExited { .. } => error,
        _ if process::has_exited(pid) => Error::TargetExited { pid },
        _ => error,
    }
}

/// Write a dump into a file named by the request: the file is created (unnamed) before the
/// target is touched, `write` fills it, and it gets its name only when complete.
fn dump_into_file(
    request: &DumpRequest,
    pid: i32,
    comm: &[u8],
    write: impl FnOnce(Destination<'_>) -> Result<Written>,
) -> Result<DumpReport> {
    let started = Instant::now();
    let path = destination(request, pid, comm)?;
    let file = DumpFile::create(&path, request.overwrite)?;
    let dir = parent_dir(&path);
    let guard = match request.min_free {
        Some(min_free) => SpaceGuard { dir, min_free },
        None => SpaceGuard::with_default_reserve(&dir),
    };
    request.cancel.check()?;
    let written = write(Destination::File { file: &file, guard })?;
    let path = file.commit()?;
    let disk_bytes = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap_or(written.stats.disk_bytes);
    Ok(report(request, pid, path, disk_bytes, written, started))
}

/// Take one dump into a file.
pub fn dump(request: &DumpRequest) -> Result<DumpReport> {
    let pid = request.target.resolve()?;
    let (stat, _status) = process::check_dumpable(pid)?;
    dump_into_file(request, pid, &stat.comm, |destination| {
        write_dump(request, pid, stat.state, destination).map_err(|e| explain_failure(e, pid))
    })
}

/// Dump a process whose threads the caller already holds stopped — a watcher that caught a
/// crash or a signal — recording `reason` (the signal and its siginfo go into the dump). The
/// target is neither resumed nor detached: the caller decides what happens next (deliver the
/// fatal signal, carry on watching). No snapshot is taken.
pub fn dump_stopped(
    request: &DumpRequest,
    stopped: &StoppedProcess,
    reason: DumpReason,
) -> Result<DumpReport> {
    let pid = stopped.pid();
    let stat = process::read_stat(pid)?;
    dump_into_file(request, pid, &stat.comm, |destination| {
        let prepared = prepare_held(request, stopped, reason)?;
        write_prepared(request, pid, prepared, destination)
    })
}

/// Take one dump into a byte stream (an HTTP body, a pipe). The stream gets the dump in file
/// order, holes written as zeros; `output`, `overwrite`, `compress` and `min_free` do not apply.
/// The report's `path` is empty and `disk_bytes` counts the bytes sent.
pub fn dump_to_stream(
    request: &DumpRequest,
    stream: Box<dyn std::io::Write + Send + '_>,
) -> Result<DumpReport> {
    let started = Instant::now();
    let pid = request.target.resolve()?;
    let (stat, _status) = process::check_dumpable(pid)?;
    request.cancel.check()?;
    let written = write_dump(request, pid, stat.state, Destination::Stream(stream))
        .map_err(|e| explain_failure(e, pid))?;
    let sent = written.stats.file_len;
    Ok(report(request, pid, PathBuf::new(), sent, written, started))
}
