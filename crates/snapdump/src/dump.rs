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
use crate::capture::Capture;
use crate::elf::{self, CoreLayout};
use crate::error::{Error, Result};
use crate::minidump;
use crate::output::{DumpFile, SpaceGuard, SparseWriter, parent_dir};
use crate::process::memory::LiveMemory;
use crate::process::pagemap::PageScanner;
use crate::process::session::StoppedProcess;
use crate::process::{self, find};
use crate::select::{self, Mode, SelectOptions};
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
    /// Bytes that must stay free on the output's filesystem; `None`: 5% of it or 1 GiB.
    pub min_free: Option<u64>,
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
            min_free: None,
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
    /// Listing pages and reading memory into the file.
    pub memory: Duration,
    /// Detaching.
    pub resume: Duration,
    /// From the first seize to the last detach.
    pub total: Duration,
}

/// What a finished dump reports.
#[derive(Clone, Debug)]
pub struct DumpReport {
    pub path: PathBuf,
    pub pid: i32,
    pub name: String,
    pub mode: Mode,
    pub format: Format,
    pub threads: usize,
    /// Program headers of type PT_LOAD, and how many hold contents.
    pub segments: usize,
    pub stored_segments: usize,
    /// The file's apparent size and the bytes it takes on disk (holes excluded).
    pub file_len: u64,
    pub disk_bytes: u64,
    pub unreadable_bytes: u64,
    pub dont_dump_skipped: usize,
    pub pause: PauseTimes,
    pub elapsed: Duration,
}

/// The file a request writes to, decided before the target is touched.
pub fn destination(request: &DumpRequest, pid: i32, comm: &[u8]) -> Result<PathBuf> {
    let stem = || naming::default_stem(comm, pid, std::time::SystemTime::now());
    let ext = request.format.extension();
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

/// Take one dump.
pub fn dump(request: &DumpRequest) -> Result<DumpReport> {
    let started = Instant::now();
    let pid = request.target.resolve()?;
    let (stat, _status) = process::check_dumpable(pid)?;
    let path = destination(request, pid, &stat.comm)?;
    let file = DumpFile::create(&path, request.overwrite)?;
    let dir = parent_dir(&path);
    let guard = match request.min_free {
        Some(min_free) => SpaceGuard { dir, min_free },
        None => SpaceGuard::with_default_reserve(&dir),
    };
    request.cancel.check()?;

    let stopped = StoppedProcess::stop(pid, Options::empty(), &request.cancel)?;
    let mut pause = PauseTimes {
        stop: stopped.stop_duration,
        ..PauseTimes::default()
    };
    fault::stall_point("stopped", &request.cancel)?;
    let t = Instant::now();
    let memory = LiveMemory::new(pid);
    let mut capture = Capture::collect(&stopped, &memory)?;
    // While traced every thread reads as 't'; record the state it was in before.
    capture.stat.state = stat.state;
    pause.registers = t.elapsed();
    fault::stall_point("captured", &request.cancel)?;

    let t = Instant::now();
    let scanner = PageScanner::open(pid)?;
    let options = SelectOptions {
        mode: request.mode,
        include_dont_dump: request.include_dont_dump,
    };
    let plan = select::plan(&capture, &memory, &scanner, &options)?;
    let layout = match request.format {
        Format::Elf => Some(CoreLayout::new(&capture, &plan)),
        Format::Minidump => None,
    };
    let estimate = match &layout {
        Some(layout) => layout.estimated_disk_bytes(&plan),
        None => minidump::estimate_disk_bytes(&capture, &plan),
    };
    guard.check(estimate)?;
    tracing::debug!(
        segments = plan.segments.len(),
        estimate,
        "planned {} of {} mappings",
        plan.stored_segments().count(),
        capture.mappings.len()
    );
    let writer = SparseWriter::new(file.file(), Some(guard), estimate);
    let planned = plan.data_bytes();
    let progress = request.progress.clone();
    let cancel = request.cancel.clone();
    let mut report_progress = |done: u64| {
        if let Some(progress) = &progress {
            progress(done, planned);
        }
        // The writer checks the cancel flag before its next chunk.
        let _ = fault::stall_point("writing", &cancel);
    };
    let stats = match &layout {
        Some(layout) => elf::write_core(
            &capture,
            &plan,
            layout,
            &memory,
            writer,
            &mut report_progress,
            &request.cancel,
        )?,
        None => minidump::write_minidump(
            &capture,
            &plan,
            &memory,
            writer,
            &mut report_progress,
            &request.cancel,
        )?,
    };
    pause.memory = t.elapsed();
    fault::stall_point("written", &request.cancel)?;
    let stopped_at = stopped.stopped_at();
    pause.resume = stopped.resume();
    pause.total = stopped_at.elapsed();

    let path = file.commit()?;
    Ok(DumpReport {
        path,
        pid,
        name: capture.name(),
        mode: request.mode,
        format: request.format,
        threads: capture.threads.len(),
        segments: plan.segments.len(),
        stored_segments: plan.stored_segments().count(),
        file_len: stats.file_len,
        disk_bytes: stats.disk_bytes,
        unreadable_bytes: stats.unreadable_bytes,
        dont_dump_skipped: plan.dont_dump_skipped,
        pause,
        elapsed: started.elapsed(),
    })
}
