//! Everything about the live target: finding it, reading its `/proc` files, stopping it with
//! ptrace, reading its memory and listing which of its pages exist.

pub mod find;
pub mod link_map;
pub mod memory;
pub mod pagemap;
pub mod procfs;
pub mod session;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use procfs::{PF_KTHREAD, Stat, Status};

/// `/proc/PID/<file>`.
pub fn proc_path(pid: i32, file: &str) -> PathBuf {
    Path::new("/proc").join(pid.to_string()).join(file)
}

/// The `/proc` folder that shows `pid`'s memory and files: `/proc/PID`, or when the leader
/// thread has exited while others run on, a live thread's `/proc/PID/task/TID`.
///
/// Such a leader is a zombie with no memory map, no root and no executable: the process
/// called `exit` from another thread and is held at that thread's exit event (`watch
/// --on-exit`), or its main thread called `pthread_exit`. `/proc/PID/mem`, `auxv`, `exe` and
/// `root` then fail with ESRCH and `maps` reads empty, while a live thread's copies show the
/// process. Costs a read of the leader's `stat`: for dumps, not for scans of every process
/// (those have the stat already: [`process_dir`]).
pub fn memory_dir(pid: i32) -> PathBuf {
    thread_state(pid, pid)
        .and_then(|state| process_dir(pid, state))
        .unwrap_or_else(|| proc_path(pid, ""))
}

/// [`memory_dir`] for a caller that has read the leader's state already: `/proc/PID`, or a live
/// thread's folder when the leader is a zombie; `None` for a zombie with no thread left (the
/// process has exited). Only a zombie costs a look at the threads.
pub(crate) fn process_dir(pid: i32, leader_state: u8) -> Option<PathBuf> {
    match leader_state {
        b'Z' => live_thread_of_exited_leader(pid).map(|tid| proc_path(pid, &format!("task/{tid}"))),
        _ => Some(proc_path(pid, "")),
    }
}

/// Files [`read_proc_file`] reads from [`memory_dir`] when the leader's copy fails or is empty.
const MEMORY_FILES: &[&str] = &["auxv", "cmdline", "environ", "maps", "smaps", "statm"];

/// A thread of `pid` that has not exited, when the leader has (a zombie); `None` when the
/// leader is alive, or when no thread is. A thread in a ptrace stop comes first: threads
/// killed by an `exit_group` may still run for a moment after dropping the memory map, while
/// the one a tracer holds at its exit event still has it.
pub(crate) fn live_thread_of_exited_leader(pid: i32) -> Option<i32> {
    if thread_state(pid, pid) != Some(b'Z') {
        return None;
    }
    // A thread in do_exit (`PF_EXITING`: killed with the rest, say) does not count.
    let live: Vec<(i32, u8)> = task_ids(pid)
        .ok()?
        .into_iter()
        .filter(|&tid| tid != pid)
        .filter_map(|tid| Some((tid, thread_stat(pid, tid)?)))
        .filter(|(_, stat)| {
            !matches!(stat.state, b'Z' | b'X' | b'x') && stat.flags & procfs::PF_EXITING == 0
        })
        .map(|(tid, stat)| (tid, stat.state))
        .collect();
    live.iter()
        .find(|(_, state)| matches!(state, b't' | b'T'))
        .or(live.first())
        .map(|&(tid, _)| tid)
}

/// Read one `/proc/PID` file, turning "gone" and "not allowed" into the engine's errors. The
/// memory files come from a live thread when the leader has exited ([`memory_dir`]).
pub fn read_proc_file(pid: i32, file: &str) -> Result<Vec<u8>> {
    let path = proc_path(pid, file);
    let read = std::fs::read(&path);
    let leader_has_none = match &read {
        Ok(bytes) => bytes.is_empty(),
        Err(e) => e.raw_os_error() == Some(libc::ESRCH),
    };
    if leader_has_none
        && MEMORY_FILES.contains(&file)
        && let Some(tid) = live_thread_of_exited_leader(pid)
    {
        let path = proc_path(pid, &format!("task/{tid}/{file}"));
        return std::fs::read(&path).map_err(|e| proc_error(pid, &path, e));
    }
    read.map_err(|e| proc_error(pid, &path, e))
}

pub(crate) fn proc_error(pid: i32, path: &Path, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => Error::NoSuchProcess { pid },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
            pid,
            detail: format!("cannot read {}", path.display()),
        },
        _ => Error::io(format!("reading {}", path.display()), e),
    }
}

/// Read and parse `/proc/PID/stat`.
pub fn read_stat(pid: i32) -> Result<Stat> {
    let bytes = read_proc_file(pid, "stat")?;
    procfs::parse_stat(&bytes).ok_or(Error::Parse {
        what: "/proc/PID/stat",
        pid,
    })
}

/// Read and parse `/proc/PID/status`.
pub fn read_status(pid: i32) -> Result<Status> {
    Ok(procfs::parse_status(&read_proc_file(pid, "status")?))
}

/// The ids of the process's threads, from `/proc/PID/task`, sorted (the leader first).
pub fn task_ids(pid: i32) -> Result<Vec<i32>> {
    let path = proc_path(pid, "task");
    let entries = std::fs::read_dir(&path).map_err(|e| proc_error(pid, &path, e))?;
    let mut tids: Vec<i32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable_by_key(|&tid| (tid != pid, tid));
    Ok(tids)
}

/// Thread `tid`'s state letter from `/proc/PID/task/TID/stat`; `None` when it cannot be read
/// (the thread is gone).
pub(crate) fn thread_state(pid: i32, tid: i32) -> Option<u8> {
    Some(thread_stat(pid, tid)?.state)
}

/// Thread `tid`'s `/proc/PID/task/TID/stat`; `None` when it cannot be read (the thread is
/// gone).
pub(crate) fn thread_stat(pid: i32, tid: i32) -> Option<Stat> {
    let stat = std::fs::read(proc_path(pid, &format!("task/{tid}/stat"))).ok()?;
    procfs::parse_stat(&stat)
}

/// A thread's name (`comm`), empty when it is gone.
pub fn thread_name(pid: i32, tid: i32) -> Vec<u8> {
    let mut name = std::fs::read(proc_path(pid, &format!("task/{tid}/comm"))).unwrap_or_default();
    if name.last() == Some(&b'\n') {
        name.pop();
    }
    name
}

/// A process's name for messages: its `comm`, lossily decoded.
pub fn process_name(pid: i32) -> String {
    read_stat(pid)
        .map(|s| String::from_utf8_lossy(&s.comm).into_owned())
        .unwrap_or_else(|_| "?".into())
}

/// The process a tracer thread belongs to, as (pid, name): `TracerPid` names a thread.
pub fn tracer_process(tracer_tid: i32) -> (i32, String) {
    let pid = read_status(tracer_tid)
        .map(|s| s.tgid)
        .ok()
        .filter(|&tgid| tgid > 0)
        .unwrap_or(tracer_tid);
    (pid, process_name(pid))
}

/// Whether the process has died (gone, or a zombie waiting to be reaped, no thread left).
pub fn has_exited(pid: i32) -> bool {
    let dead = |stat: &Stat| matches!(stat.state, b'Z' | b'X' | b'x');
    match read_stat(pid) {
        // A zombie leader with threads still running is a process still there. So is one
        // whose pid an exec'ing thread took over while we looked (its old id then reads
        // gone): the second read of the pid tells.
        Ok(stat) => {
            dead(&stat)
                && live_thread_of_exited_leader(pid).is_none()
                && read_stat(pid).map_or(true, |again| dead(&again))
        }
        Err(_) => true,
    }
}

/// `status` of the process: the leader's, or a live thread's when the leader has exited
/// ([`memory_dir`]), whose tracer is the one that matters.
fn read_live_status(pid: i32) -> Result<Status> {
    let path = memory_dir(pid).join("status");
    let bytes = std::fs::read(&path).map_err(|e| proc_error(pid, &path, e))?;
    Ok(procfs::parse_status(&bytes))
}

/// Why PTRACE_SEIZE of `pid`'s first thread returned EPERM: another tracer (named), or no
/// permission.
pub fn seize_refused(pid: i32) -> Error {
    match read_live_status(pid) {
        Ok(status) if status.tracer_pid != 0 => {
            let (tracer_pid, tracer_name) = tracer_process(status.tracer_pid);
            Error::AlreadyTraced {
                pid,
                tracer_pid,
                tracer_name,
            }
        }
        Ok(_) => Error::PermissionDenied {
            pid,
            detail: "PTRACE_SEIZE returned EPERM".into(),
        },
        Err(error) => error,
    }
}

/// Check that `pid` is a process snapdump can dump, returning its stat and status. Each
/// refusal is a specific error with advice.
pub fn check_dumpable(pid: i32) -> Result<(Stat, Status)> {
    if pid <= 0 {
        return Err(Error::NoSuchProcess { pid });
    }
    if pid == std::process::id() as i32 {
        return Err(Error::SelfDump { pid });
    }
    // A leader that is a zombie while other threads remain is an exec under way (another
    // thread killed it and is about to take over its pid: give that a moment), an exit under
    // way, or a leader that called pthread_exit and left the process to its other threads.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut leader_exited_alone = false;
    let mut stat = loop {
        let stat = read_stat(pid)?;
        if stat.state != b'Z' || std::time::Instant::now() >= deadline {
            break stat;
        }
        // One look at the other threads per round: two looks could see an exec's dying
        // threads, then none of them.
        match session::others_dying(pid) {
            // The last moment of an exec looks the same (the leader dead, the exec'ing
            // thread alive, no other left) until that thread runs again; a pthread_exit
            // lasts. Taking one for the other costs little: the stop follows execs.
            Some(false) => {
                std::thread::sleep(std::time::Duration::from_millis(2));
                if session::leader_exited_alone(pid) {
                    leader_exited_alone = true;
                    break stat;
                }
            }
            // An exec or an exit under way.
            Some(true) => std::thread::sleep(std::time::Duration::from_millis(1)),
            // No thread left: a zombie. (Unless an exec completed since the first read:
            // then the loop reads the new image.)
            None if read_stat(pid)?.state == b'Z' => break stat,
            None => {}
        }
    };
    if stat.flags & PF_KTHREAD != 0 {
        return Err(Error::KernelThread { pid });
    }
    if (stat.state == b'Z' && !leader_exited_alone) || stat.state == b'X' {
        return Err(Error::Zombie { pid });
    }
    // The process's state and tracer are then its live threads': the leader reads "zombie"
    // and untraced whatever the others do.
    let status = if leader_exited_alone {
        let tid = live_thread_of_exited_leader(pid).ok_or(Error::TargetExited { pid })?;
        stat.state = thread_state(pid, tid).ok_or(Error::TargetExited { pid })?;
        read_live_status(pid)?
    } else {
        read_status(pid)?
    };
    if status.tracer_pid != 0 {
        let (tracer_pid, tracer_name) = tracer_process(status.tracer_pid);
        return Err(Error::AlreadyTraced {
            pid,
            tracer_pid,
            tracer_name,
        });
    }
    Ok((stat, status))
}
