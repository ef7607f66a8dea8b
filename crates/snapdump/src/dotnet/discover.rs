//! Finding a .NET runtime: libcoreclr.so in the maps, the diagnostics socket in the target's
//! temporary folder (through `/proc/PID/root` when the target lives in another mount
//! namespace, as in a container).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::DotnetError;
use crate::process::procfs::Mapping;
use crate::process::{proc_path, read_stat, read_status};

/// The libcoreclr.so a process maps, if any.
pub fn coreclr_path(mappings: &[Mapping]) -> Option<PathBuf> {
    mappings.iter().find_map(|m| {
        let path = m.file_path()?;
        (path.file_name() == Some(OsStr::new("libcoreclr.so"))).then(|| path.to_owned())
    })
}

/// Whether these mappings are a .NET (CoreCLR) process's.
pub fn maps_coreclr(mappings: &[Mapping]) -> bool {
    coreclr_path(mappings).is_some()
}

/// `3.1.23` from `.../Microsoft.NETCore.App/3.1.23/libcoreclr.so`: the shared framework's
/// folder is named after its version (self-contained apps have no such folder).
pub fn version_from_coreclr_path(coreclr: &Path) -> Option<String> {
    let folder = coreclr.parent()?.file_name()?.to_str()?;
    let mut parts = folder.split(['.', '-', '+']);
    let numeric =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (numeric(parts.next()) && numeric(parts.next())).then(|| folder.to_owned())
}

/// The target's architecture in .NET's words, from its executable's ELF header.
pub fn exe_arch(pid: i32) -> Option<&'static str> {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(proc_path(pid, "exe"))
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    if &header[..4] != b"\x7fELF" {
        return None;
    }
    let is_64 = header[4] == 2;
    Some(match u16::from_le_bytes([header[18], header[19]]) {
        0x3E => "x64",
        0x03 => "x86",
        0xB7 => "arm64",
        0x28 => "arm",
        0xF3 if is_64 => "riscv64",
        0x102 => "loongarch64",
        0x16 => "s390x",
        0x15 => "ppc64le",
        _ => return None,
    })
}

/// How this process sees the target's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetView {
    /// Prefix for the target's absolute paths: `/` when it shares our mount namespace and
    /// root, `/proc/PID/root` otherwise.
    pub root: PathBuf,
}

impl TargetView {
    pub fn of(pid: i32) -> TargetView {
        let link = |path: PathBuf| std::fs::read_link(path).ok();
        let same_ns = link(proc_path(pid, "ns/mnt"))
            .is_some_and(|theirs| link(PathBuf::from("/proc/self/ns/mnt")) == Some(theirs));
        let same_root = link(proc_path(pid, "root")).is_some_and(|r| r == Path::new("/"));
        TargetView {
            root: if same_ns && same_root {
                PathBuf::from("/")
            } else {
                proc_path(pid, "root")
            },
        }
    }

    /// Whether a path the target names is the same path here.
    pub fn is_shared(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Where a path the target names (absolute) is, seen from here.
    pub fn here(&self, target_path: &Path) -> PathBuf {
        if self.is_shared() {
            return target_path.to_owned();
        }
        self.root
            .join(target_path.strip_prefix("/").unwrap_or(target_path))
    }
}

/// The target's temporary folders where the runtime may put its socket, as the target names
/// them: `$TMPDIR` from its environment (when absolute), then `/tmp`.
pub fn target_temp_dirs(pid: i32) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(environ) = std::fs::read(proc_path(pid, "environ")) {
        for var in environ.split(|&b| b == 0) {
            if let Some(value) = var.strip_prefix(b"TMPDIR=")
                && value.first() == Some(&b'/')
            {
                use std::os::unix::ffi::OsStrExt;
                dirs.push(PathBuf::from(OsStr::from_bytes(value)));
            }
        }
    }
    let tmp = PathBuf::from("/tmp");
    if !dirs.iter().any(|d| d.components().eq(tmp.components())) {
        dirs.push(tmp);
    }
    dirs
}

/// The pid the target sees for itself (its innermost pid namespace), which names its socket.
pub fn own_pid(pid: i32) -> i32 {
    read_status(pid)
        .ok()
        .and_then(|s| s.ns_pids.last().copied())
        .unwrap_or(pid)
}

/// The diagnostics socket of `pid`, as this process reaches it. Of several sockets for the
/// pid (a recycled pid leaves stale ones behind), the one whose key is the process's start
/// time, else the newest.
pub fn find_socket(pid: i32) -> Result<PathBuf, DotnetError> {
    let view = TargetView::of(pid);
    let ns_pid = own_pid(pid);
    let start_time = read_stat(pid)?.starttime;
    let prefix = format!("dotnet-diagnostic-{ns_pid}-");
    let mut searched = Vec::new();
    let mut best: Option<(bool, std::time::SystemTime, PathBuf)> = None;
    for dir in target_temp_dirs(pid) {
        let here = view.here(&dir);
        searched.push(here.clone());
        let Ok(entries) = std::fs::read_dir(&here) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(key) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.strip_suffix("-socket"))
            else {
                continue;
            };
            let exact = key.parse::<u64>().is_ok_and(|k| k == start_time);
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            let candidate = (exact, modified, entry.path());
            if best.as_ref().is_none_or(|b| (b.0, b.1) < (exact, modified)) {
                best = Some(candidate);
            }
        }
    }
    best.map(|(_, _, path)| path).ok_or(DotnetError::NoSocket {
        pid,
        ns_pid,
        searched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_paths() {
        let v = |p: &str| version_from_coreclr_path(Path::new(p));
        assert_eq!(
            v("/usr/share/dotnet/shared/Microsoft.NETCore.App/3.1.23/libcoreclr.so").as_deref(),
            Some("3.1.23")
        );
        assert_eq!(
            v("/x/Microsoft.NETCore.App/9.0.0-rc.1.24431.7/libcoreclr.so").as_deref(),
            Some("9.0.0-rc.1.24431.7")
        );
        assert_eq!(v("/app/libcoreclr.so"), None);
    }

    #[test]
    fn views() {
        let me = std::process::id() as i32;
        let view = TargetView::of(me);
        assert!(view.is_shared());
        assert_eq!(view.here(Path::new("/tmp/x")), Path::new("/tmp/x"));
        let other = TargetView {
            root: PathBuf::from("/proc/7/root"),
        };
        assert_eq!(
            other.here(Path::new("/tmp/x")),
            Path::new("/proc/7/root/tmp/x")
        );
        assert!(target_temp_dirs(me).contains(&PathBuf::from("/tmp")));
        assert_eq!(own_pid(me), me);
        assert!(exe_arch(me).is_some());
    }
}
