//! Dumps the runtime writes itself: `GenerateCoreDump` makes the runtime run its
//! `createdump`, which writes an ELF core with what SOS needs. snapdump chooses the name,
//! has the runtime write a partial file and renames it into place only on success, watches
//! the free space while createdump writes, and never replaces a file unasked.
//!
//! Where the runtime writes: straight into the destination folder when the target sees our
//! files as we do and runs as our user; otherwise (a container, another user, `--compress`)
//! into a partial file in the target's own temporary folder, which snapdump then copies (or
//! compresses) into the destination through the engine's [`DumpFile`] and removes.

use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::discover::{self, TargetView};
use super::ipc::{self, command_set, dump_command};
use super::{DotnetError, DotnetProcess, DumpType};
use crate::dump::{DumpRequest, Format, destination};
use crate::error::Error;
use crate::output::{DumpFile, SpaceGuard, parent_dir};
use crate::process::{self, procfs};

/// How often the wait for createdump checks the cancel flag, the free space and the target.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How long a dump being stopped waits for the runtime's createdump to appear and be killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What a finished runtime dump reports.
#[derive(Clone, Debug)]
pub struct RuntimeDumpReport {
    pub path: PathBuf,
    pub pid: i32,
    pub name: String,
    pub dump_type: DumpType,
    /// The runtime, as found before the dump.
    pub runtime: DotnetProcess,
    /// Which command the runtime took: 3 (GenerateCoreDump3), 2 or 1.
    pub command_id: u8,
    /// The file's length and the bytes it takes on disk.
    pub file_len: u64,
    pub disk_bytes: u64,
    /// The dump was written in the target's temporary folder and copied (or compressed).
    pub staged: bool,
    /// How long the runtime (its createdump) took.
    pub runtime_elapsed: Duration,
    pub elapsed: Duration,
}

/// Ask the runtime of `pid` to write a dump at `path` — a path as the target sees it, in a
/// folder its user may write — trying GenerateCoreDump3, then 2, then 1. No snapdump rules
/// apply: see [`runtime_dump_request`] for those.
pub fn runtime_dump(pid: i32, path: &Path, dump_type: DumpType) -> Result<(), DotnetError> {
    let socket = discover::find_socket(pid)?;
    generate_core_dump(
        &socket,
        path,
        dump_type,
        ipc::Wait::forever(),
        &mut ipc::keep_waiting,
    )
    .map(|_| ())
}

/// Send GenerateCoreDump to `socket` (newest version first); returns the command id the
/// runtime took. `wait` and `on_tick` apply to each attempt's answer.
pub fn generate_core_dump(
    socket: &Path,
    path: &Path,
    dump_type: DumpType,
    wait: ipc::Wait,
    on_tick: &mut dyn FnMut() -> Result<(), DotnetError>,
) -> Result<u8, DotnetError> {
    let text = path.to_str().ok_or_else(|| DotnetError::Protocol {
        socket: socket.to_owned(),
        detail: format!("the dump path {} is not valid UTF-8", path.display()),
    })?;
    let payload = ipc::core_dump_payload(text, dump_type.code(), 0);
    let attempts = [
        (dump_command::GENERATE_CORE_DUMP3, "GenerateCoreDump3"),
        (dump_command::GENERATE_CORE_DUMP2, "GenerateCoreDump2"),
        (dump_command::GENERATE_CORE_DUMP, "GenerateCoreDump"),
    ];
    let mut unsupported = None;
    for (id, name) in attempts {
        let message = ipc::Message::new(command_set::DUMP, id, payload.clone());
        match super::command(socket, name, &message, wait, on_tick) {
            Ok(_) => return Ok(id),
            Err(e @ DotnetError::UnsupportedCommand { .. }) => unsupported = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(unsupported.expect("three attempts"))
}

/// The bytes a dump of this type may need, for the free-space check before it starts:
/// createdump writes whole regions (no holes).
pub fn estimate_bytes(mappings: &[procfs::Mapping], dump_type: DumpType) -> u64 {
    let readable = mappings.iter().filter(|m| m.perms.read);
    match dump_type {
        DumpType::Full => readable.map(procfs::Mapping::len).sum(),
        DumpType::WithHeap => readable
            .filter(|m| m.file_path().is_none() || m.perms.write)
            .map(procfs::Mapping::len)
            .sum(),
        // Stacks and a few pages per module: a few MiB.
        DumpType::Mini | DumpType::Triage => {
            let stacks: u64 = mappings
                .iter()
                .filter(|m| m.backing == procfs::Backing::Stack)
                .map(procfs::Mapping::len)
                .sum();
            stacks + (16 << 20)
        }
    }
}

/// A file that is removed when dropped, unless kept.
struct Partial {
    path: PathBuf,
    keep: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Create `path` (it must not exist) for the target's user to fill: `0600`, owned by
/// that user when snapdump is root and the target is not.
fn create_partial(path: &Path, owner: Option<(u32, u32)>) -> Result<Partial, DotnetError> {
    let dir = parent_dir(path);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => Error::OutputExists {
                path: path.to_owned(),
            },
            _ => Error::OutputNotWritable {
                path: dir.clone(),
                source,
            },
        })?;
    let partial = Partial {
        path: path.to_owned(),
        keep: false,
    };
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("handing {} to uid {uid}", path.display()), e))?;
    }
    Ok(partial)
}

/// Stop the createdump the runtime of `pid` started (the runtime then answers with an
/// error). Returns whether there was one.
///
/// createdump holds the target with `PTRACE_ATTACH`, whose SIGSTOP leaves the threads
/// group-stopped when the tracer dies: once createdump is gone, a target that was running
/// before (`was_stopped` false) gets SIGCONT.
fn stop_createdump(pid: i32, was_stopped: bool) -> bool {
    let running = |child: i32| {
        process::read_stat(child)
            .is_ok_and(|s| s.ppid == pid && s.comm == b"createdump" && s.state != b'Z')
    };
    let killed: Vec<i32> = process::find::all_pids()
        .into_iter()
        .filter(|&child| running(child))
        .collect();
    for &child in &killed {
        let _ = crate::sys::kill(Pid::from_raw(child), Signal::SIGKILL);
    }
    if killed.is_empty() {
        return false;
    }
    let deadline = Instant::now() + STOP_GRACE;
    while killed.iter().any(|&c| running(c)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stopped = |tid: i32| process::read_stat(tid).is_ok_and(|s| matches!(s.state, b'T' | b't'));
    if !was_stopped && process::task_ids(pid).is_ok_and(|tids| tids.into_iter().any(stopped)) {
        let _ = crate::sys::kill(Pid::from_raw(pid), Signal::SIGCONT);
    }
    true
}

fn disk_usage(path: &Path) -> (u64, u64) {
    std::fs::metadata(path)
        .map(|m| (m.len(), m.blocks() * 512))
        .unwrap_or((0, 0))
}

/// A runtime dump under snapdump's rules: `request`'s target, output (a file or a folder for
/// a default name, `.core`), `overwrite`, `min_free`, `compress` and `cancel` apply; the mode,
/// format, snapshot and size limits do not (the runtime decides what goes in).
pub fn runtime_dump_request(
    request: &DumpRequest,
    dump_type: DumpType,
) -> Result<RuntimeDumpReport, DotnetError> {
    let started = Instant::now();
    let pid = request.target.resolve()?;
    let (stat, status) = process::check_dumpable(pid)?;
    let mappings = procfs::parse_maps(&process::read_proc_file(pid, "maps")?);
    let coreclr = discover::coreclr_path(&mappings).ok_or(DotnetError::NotDotnet { pid })?;
    let socket = discover::find_socket(pid)?;
    let runtime = super::describe_runtime(pid, socket.clone(), coreclr, super::DETECT_TIMEOUT);

    // Decide the name before the runtime is asked anything.
    let mut naming = request.clone();
    naming.format = Format::Elf;
    let path = destination(&naming, pid, &stat.comm)?;
    if !request.overwrite && path.symlink_metadata().is_ok() {
        return Err(Error::OutputExists { path }.into());
    }
    let dir =
        std::fs::canonicalize(parent_dir(&path)).map_err(|source| Error::OutputNotWritable {
            path: parent_dir(&path),
            source,
        })?;
    let path = dir.join(path.file_name().expect("a destination names a file"));
    let guard = match request.min_free {
        Some(min_free) => SpaceGuard {
            dir: dir.clone(),
            min_free,
        },
        None => SpaceGuard::with_default_reserve(&dir),
    };
    let estimate = estimate_bytes(&mappings, dump_type);
    guard.check(estimate)?;

    let our_uid = nix::unistd::geteuid().as_raw();
    let owner = (status.uid != our_uid).then_some((status.uid, status.gid));
    if owner.is_some() && our_uid != 0 {
        return Err(DotnetError::OtherUser {
            target_uid: status.uid,
            our_uid,
        });
    }
    let view = TargetView::of(pid);
    let staged = !view.is_shared() || owner.is_some() || request.compress.is_some();
    // The partial file: (as the target names it, as we reach it).
    let (target_partial, partial_here, watch_guard) = if staged {
        let temp = discover::target_temp_dirs(pid)
            .into_iter()
            .find(|d| view.here(d).is_dir())
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("snapdump-{}-{pid}-{nanos}.core.partial", std::process::id());
        let target_partial = temp.join(name);
        let here = view.here(&target_partial);
        let here_dir = parent_dir(&here);
        let watch = SpaceGuard::with_default_reserve(&here_dir);
        watch.check(estimate)?;
        (target_partial, here, watch)
    } else {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        (partial.clone(), partial, guard.clone())
    };
    let mut partial = create_partial(&partial_here, owner)?;

    // Ask; watch the cancel flag, the free space and the target while createdump writes. To
    // stop, createdump is killed (the runtime then answers E_FAIL); until one is seen (the
    // runtime may not have started it yet) the wait goes on, for STOP_GRACE at most.
    let runtime_started = Instant::now();
    let cancel = request.cancel.clone();
    let was_stopped = stat.state == b'T';
    let stopping: std::cell::RefCell<Option<(Error, Instant)>> = Default::default();
    let mut watch = || -> Result<(), DotnetError> {
        if stopping.borrow().is_none() {
            let stop = if cancel.is_cancelled() {
                Some(Error::Interrupted)
            } else if let Err(e) = watch_guard.check(0) {
                Some(e)
            } else if process::has_exited(pid) {
                Some(Error::TargetExited { pid })
            } else {
                None
            };
            *stopping.borrow_mut() = stop.map(|e| (e, Instant::now()));
        }
        match &*stopping.borrow() {
            Some((_, since))
                if stop_createdump(pid, was_stopped) || since.elapsed() > STOP_GRACE =>
            {
                Err(Error::Interrupted.into())
            }
            _ => Ok(()),
        }
    };
    let wait = ipc::Wait {
        timeout: None,
        tick: WATCH_EVERY,
    };
    let answer = generate_core_dump(&socket, &target_partial, dump_type, wait, &mut watch);
    if let Some((error, _)) = stopping.take() {
        return Err(error.into());
    }
    let command_id = answer?;
    let runtime_elapsed = runtime_started.elapsed();
    let (written, _) = disk_usage(&partial_here);
    if written == 0 {
        return Err(DotnetError::NoDumpWritten { path: partial_here });
    }
    request.cancel.check()?;

    if staged {
        guard.check(written)?;
        let file = DumpFile::create(&path, request.overwrite)?;
        let mut source = std::fs::File::open(&partial_here)
            .map_err(|e| Error::io(format!("reading {}", partial_here.display()), e))?;
        let copied = match request.compress {
            Some(level) => zstd::stream::copy_encode(&mut source, file.file(), level),
            None => std::io::copy(&mut source, &mut file.file()).map(|_| ()),
        };
        copied.map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) => Error::InsufficientSpace {
                path: dir.clone(),
                needed: written,
                available: 0,
                min_free: guard.min_free,
            },
            _ => Error::io("copying the runtime's dump", e),
        })?;
        file.commit()?;
    } else {
        let file = std::fs::File::open(&partial_here)
            .map_err(|e| Error::io(format!("opening {}", partial_here.display()), e))?;
        file.sync_all()
            .map_err(|e| Error::io("syncing the dump", e))?;
        if request.overwrite {
            std::fs::rename(&partial_here, &path)
                .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
        } else {
            crate::sys::rename_no_replace(&partial_here, &path).map_err(|e| match e {
                nix::errno::Errno::EEXIST => Error::OutputExists { path: path.clone() },
                e => Error::io(format!("renaming to {}", path.display()), e.into()),
            })?;
        }
        partial.keep = true;
        if let Ok(dir) = std::fs::File::open(&dir) {
            let _ = dir.sync_all();
        }
    }
    drop(partial);
    let (file_len, disk_bytes) = disk_usage(&path);
    Ok(RuntimeDumpReport {
        path,
        pid,
        name: String::from_utf8_lossy(&stat.comm).into_owned(),
        dump_type,
        runtime,
        command_id,
        file_len,
        disk_bytes,
        staged,
        runtime_elapsed,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_grow_with_the_type() {
        let maps = procfs::parse_maps(
            b"7f0000000000-7f0000100000 r-xp 00000000 08:01 15 /app/libcoreclr.so\n\
              7f0000100000-7f0000300000 rw-p 00000000 00:00 0 \n\
              7f0000300000-7f0000400000 ---p 00000000 00:00 0 \n\
              7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]\n",
        );
        let full = estimate_bytes(&maps, DumpType::Full);
        let heap = estimate_bytes(&maps, DumpType::WithHeap);
        assert_eq!(full, 0x100000 + 0x200000 + 0x21000);
        assert_eq!(heap, 0x200000 + 0x21000);
        assert_eq!(estimate_bytes(&maps, DumpType::Mini), 0x21000 + (16 << 20));
    }

    #[test]
    fn partial_files_are_removed_unless_kept() {
        let dir = std::env::temp_dir().join(format!("snapdump-partial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.core.partial");
        {
            let _p = create_partial(&path, None).unwrap();
            assert!(path.exists());
            assert!(matches!(
                create_partial(&path, None),
                Err(DotnetError::Engine(Error::OutputExists { .. }))
            ));
        }
        assert!(!path.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
