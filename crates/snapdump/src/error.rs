//! The engine's one error type. Every message says what happened and, where there is one, what
//! to do about it.

use std::path::PathBuf;

/// A process that matched a name, listed when a name is ambiguous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub pid: i32,
    pub name: String,
    pub command_line: String,
}

fn list_candidates(candidates: &[Candidate]) -> String {
    candidates
        .iter()
        .map(|c| format!("\n  {:>7}  {:<16} {}", c.pid, c.name, c.command_line))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no process with pid {pid}")]
    NoSuchProcess { pid: i32 },

    #[error("no process named {name:?} (see `snapdump ps`)")]
    NoProcessNamed { name: String },

    #[error(
        "{} processes are named {name:?}; pick one with --pid:{}",
        candidates.len(),
        list_candidates(candidates)
    )]
    AmbiguousName {
        name: String,
        candidates: Vec<Candidate>,
    },

    #[error(
        "not allowed to trace pid {pid}: {detail}. Run as the process's user or as root, or \
         grant CAP_SYS_PTRACE; check /proc/sys/kernel/yama/ptrace_scope (0 or 1 allows it); \
         in a container, allow ptrace in the seccomp profile (e.g. --cap-add=SYS_PTRACE)"
    )]
    PermissionDenied { pid: i32, detail: String },

    #[error(
        "pid {pid} is already being traced by pid {tracer_pid} ({tracer_name}); only one tracer \
         can attach at a time: detach that debugger or tracer and try again"
    )]
    AlreadyTraced {
        pid: i32,
        tracer_pid: i32,
        tracer_name: String,
    },

    #[error("pid {pid} is a zombie: it has exited and has no memory left to dump")]
    Zombie { pid: i32 },

    #[error("pid {pid} is a kernel thread: it has no user-space memory to dump")]
    KernelThread { pid: i32 },

    #[error("pid {pid} is snapdump itself: a process cannot trace itself")]
    SelfDump { pid: i32 },

    #[error("pid {pid} exited while it was being dumped; no dump was written")]
    TargetExited { pid: i32 },

    #[error("output folder {path} does not exist: create it or choose another with -o")]
    OutputDirMissing { path: PathBuf },

    #[error("cannot write in {path}: {source}; choose another folder with -o")]
    OutputNotWritable {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} already exists: pass --overwrite to replace it, or choose another name")]
    OutputExists { path: PathBuf },

    #[error(
        "not enough free space in {path}: the dump needs about {} but only {} is free and \
         {} must stay free (--min-free); free some space, choose another folder with -o, or \
         take a smaller dump (--mini)",
        human_bytes(*needed), human_bytes(*available), human_bytes(*min_free)
    )]
    InsufficientSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
        min_free: u64,
    },

    #[error(
        "the dump would be {} but --max-size allows {}; pass --truncate to keep the first \
         part, or take a smaller dump (--mini)",
        human_bytes(*size), human_bytes(*limit)
    )]
    TooLarge { size: u64, limit: u64 },

    #[error("interrupted by a signal: the target was released and no dump was written")]
    Interrupted,

    #[error("{operation} of thread {tid} failed: {errno}")]
    Ptrace {
        operation: &'static str,
        tid: i32,
        errno: nix::errno::Errno,
    },

    #[error("snapshot failed: {detail}")]
    Snapshot { detail: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    #[error("cannot parse {what} of pid {pid}")]
    Parse { what: &'static str, pid: i32 },
}

impl Error {
    /// A short stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Error::NoSuchProcess { .. } => "no_such_process",
            Error::NoProcessNamed { .. } => "no_process_named",
            Error::AmbiguousName { .. } => "ambiguous_name",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::AlreadyTraced { .. } => "already_traced",
            Error::Zombie { .. } => "zombie",
            Error::KernelThread { .. } => "kernel_thread",
            Error::SelfDump { .. } => "self_dump",
            Error::TargetExited { .. } => "target_exited",
            Error::OutputDirMissing { .. } => "output_dir_missing",
            Error::OutputNotWritable { .. } => "output_not_writable",
            Error::OutputExists { .. } => "output_exists",
            Error::InsufficientSpace { .. } => "insufficient_space",
            Error::TooLarge { .. } => "too_large",
            Error::Interrupted => "interrupted",
            Error::Ptrace { .. } => "ptrace",
            Error::Snapshot { .. } => "snapshot",
            Error::Io { .. } => "io",
            Error::Parse { .. } => "parse",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `1.5 GiB`-style sizes for messages and summaries.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
