//! .NET processes: finding them, asking their runtime about itself, and asking it to write a
//! dump (what dotnet-dump and dotnet-monitor do).
//!
//! A process is .NET when it maps `libcoreclr.so` and its runtime listens on a diagnostics
//! socket, `dotnet-diagnostic-{pid}-{key}-socket` in its `$TMPDIR` or `/tmp` (the pid as the
//! process sees itself, the key its start time). A container's files are reached through
//! `/proc/PID/root`. The runtime speaks the diagnostics IPC protocol ([`ipc`]):
//! - `ProcessInfo2`/`ProcessInfo` (.NET 6/.NET 5 and later) give the runtime instance cookie
//!   (dotnet-monitor's `uid`), the version, the command line, the OS and the architecture.
//!   Older runtimes (.NET Core 3.1) answer `UnknownCommand`: [`detect`] then fills in what
//!   `/proc` tells. Those runtimes have no cookie; as dotnet-monitor proposed for them
//!   (dotnet/dotnet-monitor#49), snapdump makes a stable one from the pid and the socket's key
//!   (the process's start time): [`synthesized_cookie`].
//! - `GenerateCoreDump3`, `2` or `1` make the runtime run its `createdump`, which writes the
//!   file itself: what SOS expects. [`runtime_dump_request`] wraps that in snapdump's rules:
//!   default names, a partial file renamed into place only on success, the free-space
//!   reserve (watched while createdump writes; createdump is stopped when the reserve is
//!   reached), never replacing a file unasked, and cancellation.
//!
//! snapdump's own heap mode keeps the managed assembly images of a .NET process when
//! [`crate::select::SelectOptions::keep_managed_images`] is set ([`is_managed_image`]).

pub mod discover;
pub mod ipc;
pub mod runtime_dump;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use discover::{find_socket, maps_coreclr};
pub use runtime_dump::{RuntimeDumpReport, runtime_dump, runtime_dump_request};

use crate::process::procfs::Mapping;

/// What `GenerateCoreDump` asks createdump for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DumpType {
    /// Threads, stacks and the modules list (`Normal`: createdump's minidump).
    Mini = 1,
    /// Mini plus the GC heaps and what SOS needs to walk them: dotnet-dump's default.
    #[default]
    WithHeap = 2,
    /// Mini with personal data left out.
    Triage = 3,
    /// Every mapping.
    Full = 4,
}

impl DumpType {
    pub fn as_str(self) -> &'static str {
        match self {
            DumpType::Mini => "Mini",
            DumpType::WithHeap => "WithHeap",
            DumpType::Triage => "Triage",
            DumpType::Full => "Full",
        }
    }

    /// The protocol's number for this type.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The mode snapdump's own writer uses for this type: Triage is a redacted Mini (see
    /// [`DumpType::redacts`]).
    pub fn mode(self) -> crate::select::Mode {
        use crate::select::Mode;
        match self {
            DumpType::Mini | DumpType::Triage => Mode::Mini,
            DumpType::WithHeap => Mode::Heap,
            DumpType::Full => Mode::Full,
        }
    }

    /// Whether snapdump's own writer leaves out the command line and environment for this
    /// type ([`crate::DumpRequest::redact`]).
    pub fn redacts(self) -> bool {
        self == DumpType::Triage
    }
}

impl std::fmt::Display for DumpType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DumpType {
    type Err = String;
    fn from_str(s: &str) -> Result<DumpType, String> {
        match s.to_ascii_lowercase().as_str() {
            "mini" | "normal" | "1" => Ok(DumpType::Mini),
            "withheap" | "heap" | "2" => Ok(DumpType::WithHeap),
            "triage" | "3" => Ok(DumpType::Triage),
            "full" | "4" => Ok(DumpType::Full),
            _ => Err(format!(
                "unknown dump type {s:?}: use Mini, WithHeap, Triage or Full"
            )),
        }
    }
}

/// Where [`DotnetProcess`]'s details came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoSource {
    /// The runtime answered ProcessInfo2 (.NET 6 and later).
    ProcessInfo2,
    /// The runtime answered ProcessInfo (.NET 5).
    ProcessInfo,
    /// The runtime knows neither (.NET Core 3.x) or did not answer: `/proc` and the runtime's
    /// install path.
    Proc,
}

/// A .NET process, as [`detect`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DotnetProcess {
    pub pid: i32,
    /// The diagnostics socket, as this process reaches it (through `/proc/PID/root` for a
    /// process in another mount namespace).
    pub socket: PathBuf,
    /// The runtime's product version (`8.0.1`), or for runtimes that do not say, the
    /// version folder libcoreclr.so was loaded from (`3.1.23`).
    pub runtime_version: Option<String>,
    /// The runtime instance cookie, a GUID: dotnet-monitor's `uid`. From the runtime for .NET
    /// 5 and later; for older runtimes, made by snapdump ([`synthesized_cookie`]).
    pub instance_cookie: Option<String>,
    /// Whether `instance_cookie` was made by snapdump rather than told by the runtime.
    pub cookie_synthesized: bool,
    pub command_line: String,
    /// As the runtime names it: `Linux`.
    pub os: String,
    /// As the runtime names it: `x64`, `arm64`, `x86`, `arm`...
    pub arch: String,
    /// The managed entry point's assembly name (.NET 6 and later).
    pub entry_assembly: Option<String>,
    /// The libcoreclr.so the process maps.
    pub coreclr: PathBuf,
    pub source: InfoSource,
}

/// How long [`detect`] waits for the runtime to answer.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The .NET process `pid`, or `None` when it is not one (no libcoreclr.so mapped, or no
/// diagnostics socket: the runtime runs with `DOTNET_EnableDiagnostics=0`), or cannot be
/// looked at. Asks the runtime (ProcessInfo2, then ProcessInfo) and fills in from `/proc`
/// what it does not answer.
pub fn detect(pid: i32) -> Option<DotnetProcess> {
    detect_with_timeout(pid, DETECT_TIMEOUT).ok()
}

/// [`detect`], saying why a process is not taken for .NET.
pub fn detect_with_timeout(pid: i32, timeout: Duration) -> Result<DotnetProcess, DotnetError> {
    let maps = crate::process::read_proc_file(pid, "maps")?;
    let coreclr = discover::coreclr_path(&crate::process::procfs::parse_maps(&maps))
        .ok_or(DotnetError::NotDotnet { pid })?;
    let socket = find_socket(pid)?;
    Ok(describe_runtime(pid, socket, coreclr, timeout))
}

/// Ask the runtime behind `socket` about itself; fill in from `/proc` what it does not say.
fn describe_runtime(
    pid: i32,
    socket: PathBuf,
    coreclr: PathBuf,
    timeout: Duration,
) -> DotnetProcess {
    let info = process_info(&socket, timeout);
    let version_from_path = discover::version_from_coreclr_path(&coreclr);
    match info {
        Ok((info, source)) => DotnetProcess {
            pid,
            socket,
            runtime_version: info.runtime_version.clone().or(version_from_path),
            instance_cookie: Some(info.cookie_string()),
            cookie_synthesized: false,
            command_line: info.command_line,
            os: info.os,
            arch: info.arch,
            entry_assembly: info.entry_assembly.filter(|a| !a.is_empty()),
            coreclr,
            source,
        },
        Err(error) => {
            if !matches!(error, DotnetError::UnsupportedCommand { .. }) {
                tracing::debug!("pid {pid}: ProcessInfo failed: {error}");
            }
            let cookie = synthesized_cookie(&socket);
            DotnetProcess {
                pid,
                cookie_synthesized: cookie.is_some(),
                instance_cookie: cookie,
                socket,
                runtime_version: version_from_path,
                command_line: crate::process::find::command_line(pid),
                os: "Linux".into(),
                arch: discover::exe_arch(pid).unwrap_or("unknown").into(),
                entry_assembly: None,
                coreclr,
                source: InfoSource::Proc,
            }
        }
    }
}

/// A stable instance id for a runtime that has no cookie (.NET Core 3.1), from its
/// diagnostics socket's name `dotnet-diagnostic-{pid}-{key}-socket`: the same for the life of
/// the process, different for a later process that reuses the pid (the key is the start time).
/// An RFC 9562 version 8 (custom) GUID: the pid in bytes 0–3, `sd` in 4–5, the key's low 48
/// bits in 10–15.
pub fn synthesized_cookie(socket: &Path) -> Option<String> {
    let name = socket.file_name()?.to_str()?;
    let (pid, key) = name
        .strip_prefix("dotnet-diagnostic-")?
        .strip_suffix("-socket")?
        .split_once('-')?;
    let (pid, key) = (pid.parse::<u32>().ok()?, key.parse::<u64>().ok()?);
    let mut bytes = [0u8; 16];
    bytes[0..4].copy_from_slice(&pid.to_be_bytes());
    bytes[4..6].copy_from_slice(b"sd");
    bytes[6] = 0x80; // version 8
    bytes[8] = 0x80; // RFC 9562 variant
    bytes[10..16].copy_from_slice(&key.to_be_bytes()[2..]);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// ProcessInfo2, falling back to ProcessInfo when the runtime does not know it.
pub fn process_info(
    socket: &Path,
    timeout: Duration,
) -> Result<(ipc::ProcessInfo, InfoSource), DotnetError> {
    use ipc::{command_set, process_command};
    let attempts = [
        (process_command::PROCESS_INFO2, InfoSource::ProcessInfo2),
        (process_command::PROCESS_INFO, InfoSource::ProcessInfo),
    ];
    let mut last = None;
    for (id, source) in attempts {
        let message = ipc::Message::new(command_set::PROCESS, id, Vec::new());
        let name = if id == process_command::PROCESS_INFO2 {
            "ProcessInfo2"
        } else {
            "ProcessInfo"
        };
        match command(
            socket,
            name,
            &message,
            ipc::Wait::timeout(timeout),
            &mut ipc::keep_waiting,
        ) {
            Ok(payload) => {
                let info = ipc::ProcessInfo::parse(&payload, source == InfoSource::ProcessInfo2)
                    .map_err(|detail| DotnetError::Protocol {
                        socket: socket.to_owned(),
                        detail: format!("{name}: {detail}"),
                    })?;
                return Ok((info, source));
            }
            Err(e @ DotnetError::UnsupportedCommand { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("two attempts"))
}

/// Send one command and return its OK payload; errors become [`DotnetError`]s that name the
/// command.
pub fn command(
    socket: &Path,
    name: &str,
    message: &ipc::Message,
    wait: ipc::Wait,
    on_tick: &mut dyn FnMut() -> Result<(), DotnetError>,
) -> Result<Vec<u8>, DotnetError> {
    match ipc::request(socket, message, wait, on_tick)? {
        ipc::Response::Ok(payload) => Ok(payload),
        ipc::Response::Error { hresult, .. } if hresult == ipc::hresult::UNKNOWN_COMMAND => {
            Err(DotnetError::UnsupportedCommand {
                command: name.to_owned(),
                command_set: message.command_set,
                command_id: message.command_id,
            })
        }
        ipc::Response::Error { hresult, message } => Err(DotnetError::Runtime {
            command: name.to_owned(),
            hresult,
            message,
        }),
    }
}

/// Whether a mapping is a managed assembly image SOS reads type names from: a mapped file
/// whose name ends in `.dll` (`.ni.dll` included) or `.r2r`.
pub fn is_managed_image(mapping: &Mapping) -> bool {
    let Some(path) = mapping.file_path() else {
        return false;
    };
    let name = path.as_os_str().as_encoded_bytes();
    let name = name.strip_suffix(b" (deleted)").unwrap_or(name);
    let lower = name.to_ascii_lowercase();
    lower.ends_with(b".dll") || lower.ends_with(b".r2r")
}

/// Everything that can go wrong with a .NET process.
#[derive(Debug, thiserror::Error)]
pub enum DotnetError {
    #[error("pid {pid} is not a .NET process: it does not map libcoreclr.so")]
    NotDotnet { pid: i32 },

    #[error(
        "pid {pid} maps libcoreclr.so but has no diagnostics socket (looked for \
         dotnet-diagnostic-{ns_pid}-*-socket in {}): the runtime may run with \
         DOTNET_EnableDiagnostics=0, or its temporary folder was cleaned",
        list_paths(searched)
    )]
    NoSocket {
        pid: i32,
        ns_pid: i32,
        searched: Vec<PathBuf>,
    },

    #[error("no diagnostics socket at {}: check the path (see `snapdump ps`)", socket.display())]
    SocketMissing { socket: PathBuf },

    #[error(
        "nobody listens on the diagnostics socket {}: the runtime that created it is gone \
         or its diagnostics server stopped (a stale socket)",
        socket.display()
    )]
    NotListening { socket: PathBuf },

    #[error(
        "not allowed to connect to {}: run as the process's user or as root",
        socket.display()
    )]
    SocketPermission { socket: PathBuf },

    #[error("{} is not a socket", socket.display())]
    NotASocket { socket: PathBuf },

    #[error("connecting to {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },

    #[error("{context} on {}: {source}", socket.display())]
    Io {
        socket: PathBuf,
        context: &'static str,
        source: std::io::Error,
    },

    #[error(
        "the runtime closed {} before sending {what}: it may have exited or crashed",
        socket.display()
    )]
    Closed { socket: PathBuf, what: &'static str },

    #[error("the runtime did not answer on {} within {waited:?}", socket.display())]
    Timeout { socket: PathBuf, waited: Duration },

    #[error("unexpected answer on {}: {detail}", socket.display())]
    Protocol { socket: PathBuf, detail: String },

    #[error(
        "the runtime does not support {command} (command set {command_set:#04x}, id \
         {command_id:#04x}): it answered UnknownCommand; this command needs a newer .NET"
    )]
    UnsupportedCommand {
        command: String,
        command_set: u8,
        command_id: u8,
    },

    #[error(
        "{command} failed in the runtime: {} {hresult:#010x}, {}{}",
        ipc::describe_hresult(*hresult).0,
        ipc::describe_hresult(*hresult).1,
        if message.is_empty() { String::new() } else { format!(": {message}") }
    )]
    Runtime {
        command: String,
        hresult: u32,
        message: String,
    },

    #[error("the runtime reported success but wrote no dump at {}", path.display())]
    NoDumpWritten { path: PathBuf },

    #[error(
        "the target runs as uid {target_uid} and snapdump as uid {our_uid}: the runtime \
         could not write a file snapdump may hand over; run as root or as uid {target_uid}"
    )]
    OtherUser { target_uid: u32, our_uid: u32 },

    #[error(transparent)]
    Engine(#[from] crate::Error),
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

impl DotnetError {
    pub(crate) fn connect(socket: &Path, source: std::io::Error) -> DotnetError {
        let socket = socket.to_owned();
        match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => DotnetError::SocketMissing { socket },
            Some(libc::ECONNREFUSED) => DotnetError::NotListening { socket },
            Some(libc::EACCES) | Some(libc::EPERM) => DotnetError::SocketPermission { socket },
            Some(libc::ENOTSOCK) => DotnetError::NotASocket { socket },
            _ => DotnetError::Connect { socket, source },
        }
    }

    /// A short stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            DotnetError::NotDotnet { .. } => "not_dotnet",
            DotnetError::NoSocket { .. } => "no_diagnostics_socket",
            DotnetError::SocketMissing { .. } => "socket_missing",
            DotnetError::NotListening { .. } => "runtime_not_listening",
            DotnetError::SocketPermission { .. } => "socket_permission",
            DotnetError::NotASocket { .. } => "not_a_socket",
            DotnetError::Connect { .. } => "connect",
            DotnetError::Io { .. } => "ipc_io",
            DotnetError::Closed { .. } => "runtime_closed",
            DotnetError::Timeout { .. } => "runtime_timeout",
            DotnetError::Protocol { .. } => "protocol",
            DotnetError::UnsupportedCommand { .. } => "unsupported_command",
            DotnetError::Runtime { .. } => "runtime_error",
            DotnetError::NoDumpWritten { .. } => "no_dump_written",
            DotnetError::OtherUser { .. } => "other_user",
            DotnetError::Engine(e) => e.name(),
        }
    }
}

/// The engine's error for a .NET failure (the engine's own errors come back as they were).
impl From<DotnetError> for crate::Error {
    fn from(error: DotnetError) -> crate::Error {
        match error {
            DotnetError::Engine(e) => e,
            other => crate::Error::Io {
                context: "the .NET runtime".into(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::procfs::parse_maps;

    #[test]
    fn synthesized_cookies_are_stable_guids_per_process() {
        let cookie = |name: &str| synthesized_cookie(Path::new(&format!("/tmp/{name}")));
        let a = cookie("dotnet-diagnostic-4242-123456789-socket").unwrap();
        assert_eq!(a, "00001092-7364-8000-8000-0000075bcd15");
        assert_eq!(
            cookie("dotnet-diagnostic-4242-123456789-socket").as_ref(),
            Some(&a)
        );
        // The same pid, a later process: another id.
        assert_ne!(
            cookie("dotnet-diagnostic-4242-123456790-socket").unwrap(),
            a
        );
        assert_eq!(cookie("dotnet-diagnostic-x-1-socket"), None);
        assert_eq!(cookie("something-else"), None);
    }

    #[test]
    fn dump_type_names() {
        for t in [
            DumpType::Mini,
            DumpType::WithHeap,
            DumpType::Triage,
            DumpType::Full,
        ] {
            assert_eq!(t.as_str().parse::<DumpType>().unwrap(), t);
        }
        assert_eq!("normal".parse::<DumpType>().unwrap().code(), 1);
        assert_eq!(DumpType::Full.code(), 4);
        assert!("huge".parse::<DumpType>().is_err());
    }

    #[test]
    fn managed_images() {
        let maps = parse_maps(
            b"7f0000000000-7f0000001000 r--p 00000000 08:01 12 /app/System.Private.CoreLib.dll\n\
              7f0000001000-7f0000002000 r--s 00000000 08:01 13 /app/Python.Runtime.DLL\n\
              7f0000002000-7f0000003000 r--p 00000000 08:01 14 /app/app.r2r (deleted)\n\
              7f0000003000-7f0000004000 r-xp 00000000 08:01 15 /app/libcoreclr.so\n\
              7f0000004000-7f0000005000 rw-p 00000000 00:00 0 \n",
        );
        let kept: Vec<bool> = maps.iter().map(is_managed_image).collect();
        assert_eq!(kept, [true, true, true, false, false]);
        assert!(maps_coreclr(&maps));
        assert!(!maps_coreclr(&maps[..3]));
    }

    #[test]
    fn errors_read_well() {
        let e = DotnetError::connect(
            Path::new("/tmp/x"),
            std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
        );
        assert!(e.to_string().contains("nobody listens"), "{e}");
        let e = DotnetError::Runtime {
            command: "GenerateCoreDump".into(),
            hresult: ipc::hresult::FAIL,
            message: String::new(),
        };
        assert!(e.to_string().contains("E_FAIL 0x80004005"), "{e}");
        let engine: crate::Error = e.into();
        assert!(engine.to_string().contains("createdump"), "{engine}");
    }
}
