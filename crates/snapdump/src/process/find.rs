//! Finding processes by name and listing the ones that can be dumped.

use std::path::Path;

use super::procfs::PF_KTHREAD;
use super::{proc_path, read_stat};
use crate::error::{Candidate, Error, Result};

/// One process as `snapdump ps` shows it.
#[derive(Clone, Debug)]
pub struct ProcessSummary {
    pub pid: i32,
    pub name: String,
    pub exe_name: Option<String>,
    pub command_line: String,
    pub rss_bytes: u64,
    pub threads: i64,
    pub uid: u32,
    /// Why it cannot be dumped, or `None` when it can.
    pub not_dumpable: Option<String>,
}

/// All pids in `/proc`, sorted.
pub fn all_pids() -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// The command line with NULs as spaces, for display.
pub fn command_line(pid: i32) -> String {
    command_line_in(&proc_path(pid, ""))
}

/// [`command_line`] from a `/proc` folder: the process's, or a live thread's.
fn command_line_in(dir: &Path) -> String {
    let raw = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let text: Vec<u8> = raw
        .strip_suffix(b"\0")
        .unwrap_or(&raw)
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    String::from_utf8_lossy(&text).into_owned()
}

fn exe_file_name(dir: &Path) -> Option<String> {
    let exe = std::fs::read_link(dir.join("exe")).ok()?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    Some(name.strip_suffix(" (deleted)").unwrap_or(&name).to_owned())
}

/// Describe one process, or `None` when it vanished or is a kernel thread.
pub fn summarize(pid: i32) -> Option<ProcessSummary> {
    let stat = read_stat(pid).ok()?;
    if stat.flags & PF_KTHREAD != 0 {
        return None;
    }
    // A zombie leader with a live thread (it called pthread_exit): the process is that
    // thread's folder, tracer included.
    let live_dir = super::process_dir(pid, stat.state);
    let exited = live_dir.is_none();
    let dir = live_dir.unwrap_or_else(|| proc_path(pid, ""));
    let status = super::procfs::parse_status(&std::fs::read(dir.join("status")).ok()?);
    let statm = std::fs::read_to_string(dir.join("statm")).unwrap_or_default();
    let rss_pages: u64 = statm
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let me = std::process::id() as i32;
    let not_dumpable = if pid == me {
        Some("snapdump itself".to_owned())
    } else if exited {
        Some("zombie".to_owned())
    } else if status.tracer_pid != 0 {
        let (tracer, name) = super::tracer_process(status.tracer_pid);
        Some(format!("traced by {tracer} ({name})"))
    } else if std::fs::File::open(dir.join("mem")).is_err() {
        Some("permission denied".to_owned())
    } else {
        None
    };
    Some(ProcessSummary {
        pid,
        name: String::from_utf8_lossy(&stat.comm).into_owned(),
        exe_name: exe_file_name(&dir),
        command_line: command_line_in(&dir),
        rss_bytes: rss_pages * 4096,
        threads: stat.num_threads,
        uid: status.uid,
        not_dumpable,
    })
}

/// Every user-space process, for `snapdump ps`.
pub fn list_processes() -> Vec<ProcessSummary> {
    all_pids().into_iter().filter_map(summarize).collect()
}

fn name_matches(pid: i32, name: &str) -> bool {
    let Ok(stat) = read_stat(pid) else {
        return false;
    };
    if stat.flags & PF_KTHREAD != 0 {
        return false;
    }
    if stat.comm == name.as_bytes() {
        return true;
    }
    // comm is cut to 15 bytes; the executable's file name is not. A leader that called
    // pthread_exit has neither: a live thread's folder does (only zombies pay to look).
    let dir = super::process_dir(pid, stat.state).unwrap_or_else(|| proc_path(pid, ""));
    exe_file_name(&dir).is_some_and(|exe| exe == name)
        || Path::new(&command_line_in(&dir).split(' ').next().unwrap_or_default())
            .file_name()
            .is_some_and(|argv0| argv0 == name)
}

/// The one process whose name (comm), executable file name or argv[0] file name is `name`,
/// leaving out snapdump itself. None or several are errors; several list the candidates.
pub fn find_by_name(name: &str) -> Result<i32> {
    let me = std::process::id() as i32;
    let matches: Vec<i32> = all_pids()
        .into_iter()
        .filter(|&pid| pid != me && name_matches(pid, name))
        .collect();
    match matches.as_slice() {
        [] => Err(Error::NoProcessNamed {
            name: name.to_owned(),
        }),
        [pid] => Ok(*pid),
        many => Err(Error::AmbiguousName {
            name: name.to_owned(),
            candidates: many
                .iter()
                .map(|&pid| Candidate {
                    pid,
                    name: super::process_name(pid),
                    command_line: command_line(pid),
                })
                .collect(),
        }),
    }
}
