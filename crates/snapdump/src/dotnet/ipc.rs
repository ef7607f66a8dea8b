//! The .NET diagnostics IPC protocol, client side: one request and one response per
//! connection, over the runtime's Unix socket.
//!
//! Every message starts with a 20-byte little-endian header: the magic `DOTNET_IPC_V1\0`
//! (14 bytes), the whole message's size (u16, header included), the command set (u8), the
//! command id (u8) and a reserved u16. Strings are a u32 count of UTF-16 code units (the
//! terminating NUL included; 0 for an empty string) followed by the code units.
//!
//! Responses come in the command set `0xFF` (server): id `0x00` is OK (followed by the
//! command's payload), id `0xFF` an error whose payload starts with an HRESULT.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::DotnetError;

/// The magic that opens every message.
pub const MAGIC: &[u8; 14] = b"DOTNET_IPC_V1\0";
/// Header bytes: magic, size, command set, command id, reserved.
pub const HEADER_LEN: usize = 20;

/// Command sets.
pub mod command_set {
    pub const DUMP: u8 = 0x01;
    pub const EVENT_PIPE: u8 = 0x02;
    pub const PROFILER: u8 = 0x03;
    pub const PROCESS: u8 = 0x04;
    pub const SERVER: u8 = 0xFF;
}

/// Command ids of the dump command set.
pub mod dump_command {
    pub const GENERATE_CORE_DUMP: u8 = 0x01;
    /// .NET 6: the flags word is a bit set (logging, verbose logging, crash report).
    pub const GENERATE_CORE_DUMP2: u8 = 0x02;
    /// .NET 7: failures come with createdump's error message.
    pub const GENERATE_CORE_DUMP3: u8 = 0x03;
}

/// Command ids of the process command set.
pub mod process_command {
    /// .NET 5.
    pub const PROCESS_INFO: u8 = 0x00;
    pub const RESUME_RUNTIME: u8 = 0x01;
    pub const PROCESS_ENVIRONMENT: u8 = 0x02;
    /// .NET 6: adds the managed entry point and the runtime's product version.
    pub const PROCESS_INFO2: u8 = 0x04;
}

/// Response ids in the server command set.
pub mod response {
    pub const OK: u8 = 0x00;
    pub const ERROR: u8 = 0xFF;
}

/// HRESULTs the diagnostics server answers with.
pub mod hresult {
    pub const BAD_ENCODING: u32 = 0x8013_1384;
    pub const UNKNOWN_COMMAND: u32 = 0x8013_1385;
    pub const UNKNOWN_MAGIC: u32 = 0x8013_1386;
    pub const NOT_SUPPORTED: u32 = 0x8013_1515;
    pub const FAIL: u32 = 0x8000_4005;
    pub const NOT_YET_AVAILABLE: u32 = 0x8013_135B;
    pub const RUNTIME_UNINITIALIZED: u32 = 0x8013_1371;
    pub const INVALID_ARG: u32 = 0x8007_0057;
    pub const PROFILER_ALREADY_ACTIVE: u32 = 0x8013_136A;
}

/// The name and the meaning of an HRESULT the diagnostics server sends.
pub fn describe_hresult(hr: u32) -> (&'static str, &'static str) {
    match hr {
        hresult::BAD_ENCODING => ("BadEncoding", "the runtime could not parse the request"),
        hresult::UNKNOWN_COMMAND => (
            "UnknownCommand",
            "this runtime version does not know the command",
        ),
        hresult::UNKNOWN_MAGIC => (
            "UnknownMagic",
            "the runtime does not speak this protocol version",
        ),
        hresult::NOT_SUPPORTED => ("NotSupported", "not supported by this runtime"),
        hresult::FAIL => (
            "E_FAIL",
            "the operation failed inside the runtime (for dumps: createdump failed; it prints \
             the reason on the target's standard error)",
        ),
        hresult::NOT_YET_AVAILABLE => (
            "NotYetAvailable",
            "the runtime is still starting: try again in a moment",
        ),
        hresult::RUNTIME_UNINITIALIZED => (
            "RuntimeUninitialized",
            "the runtime is suspended at startup (DOTNET_DefaultDiagnosticPortSuspend) and \
             not yet initialized",
        ),
        hresult::INVALID_ARG => ("E_INVALIDARG", "the runtime rejected an argument"),
        hresult::PROFILER_ALREADY_ACTIVE => {
            ("ProfilerAlreadyActive", "a profiler is already attached")
        }
        _ => ("HRESULT", "an error the runtime did not explain"),
    }
}

/// One message: a header and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub command_set: u8,
    pub command_id: u8,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn new(command_set: u8, command_id: u8, payload: Vec<u8>) -> Message {
        Message {
            command_set,
            command_id,
            payload,
        }
    }

    /// The bytes on the wire; `None` when the payload does not fit the u16 size.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let size = u16::try_from(HEADER_LEN + self.payload.len()).ok()?;
        let mut bytes = Vec::with_capacity(size as usize);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&size.to_le_bytes());
        bytes.push(self.command_set);
        bytes.push(self.command_id);
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(&self.payload);
        Some(bytes)
    }

    /// Parse a header: the command set, the command id and the payload's length.
    pub fn decode_header(header: &[u8; HEADER_LEN]) -> Result<(u8, u8, usize), String> {
        if &header[..14] != MAGIC {
            return Err(format!(
                "the response does not start with DOTNET_IPC_V1 (got {:02x?})",
                &header[..14]
            ));
        }
        let size = u16::from_le_bytes([header[14], header[15]]) as usize;
        if size < HEADER_LEN {
            return Err(format!(
                "the response claims {size} bytes, less than its header"
            ));
        }
        Ok((header[16], header[17], size - HEADER_LEN))
    }
}

/// Append a protocol string: u32 count of UTF-16 units including the NUL, then the units.
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    let units: Vec<u16> = text.encode_utf16().chain(std::iter::once(0)).collect();
    out.extend_from_slice(&(units.len() as u32).to_le_bytes());
    for unit in units {
        out.extend_from_slice(&unit.to_le_bytes());
    }
}

/// A cursor over a response payload.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "the response ends inside {what} ({} bytes, {} more needed at offset {})",
                    self.bytes.len(),
                    n,
                    self.at
                )
            })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    pub fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }

    /// A protocol string (trailing NULs dropped; invalid UTF-16 replaced).
    pub fn string(&mut self, what: &str) -> Result<String, String> {
        let count = self.u32(what)? as usize;
        let raw = self.take(count.saturating_mul(2), what)?;
        let mut units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        while units.last() == Some(&0) {
            units.pop();
        }
        Ok(String::from_utf16_lossy(&units))
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
}

/// The runtime's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// OK, with the command's payload.
    Ok(Vec<u8>),
    /// An error: the HRESULT, and the message GenerateCoreDump3 adds (empty when none).
    Error { hresult: u32, message: String },
}

/// Parse a response message.
pub fn parse_response(message: &Message) -> Result<Response, String> {
    if message.command_set != command_set::SERVER {
        return Err(format!(
            "the response is in command set {:#04x}, not the server's (0xff)",
            message.command_set
        ));
    }
    match message.command_id {
        response::OK => Ok(Response::Ok(message.payload.clone())),
        response::ERROR => {
            let mut reader = Reader::new(&message.payload);
            let hresult = reader.u32("the error code")?;
            let message = if reader.remaining() >= 4 {
                reader.string("the error message").unwrap_or_default()
            } else {
                String::new()
            };
            Ok(Response::Error { hresult, message })
        }
        other => Err(format!("unknown response id {other:#04x}")),
    }
}

/// How long a request may wait for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Give up after this long without the whole response; `None`: wait as long as it takes.
    pub timeout: Option<Duration>,
    /// How often the request's `on_tick` runs while it waits.
    pub tick: Duration,
}

impl Wait {
    /// Wait as long as it takes (a dump of a large process can take minutes).
    pub fn forever() -> Wait {
        Wait {
            timeout: None,
            tick: Duration::from_secs(1),
        }
    }

    pub fn timeout(timeout: Duration) -> Wait {
        Wait {
            timeout: Some(timeout),
            tick: timeout,
        }
    }
}

/// An `on_tick` that never stops the wait.
pub fn keep_waiting() -> Result<(), DotnetError> {
    Ok(())
}

/// Connect to a diagnostics socket. Paths longer than a socket address allows (108 bytes,
/// easily passed through `/proc/PID/root/...`) are reached through an `O_PATH` descriptor.
pub fn connect(socket: &Path) -> Result<UnixStream, DotnetError> {
    let connected = match UnixStream::connect(socket) {
        Err(e) if e.kind() == ErrorKind::InvalidInput && socket.as_os_str().len() >= 108 => {
            use std::os::unix::fs::OpenOptionsExt;
            use std::os::unix::io::AsRawFd;
            let handle = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(socket);
            match handle {
                Ok(handle) => UnixStream::connect(format!("/proc/self/fd/{}", handle.as_raw_fd())),
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    connected.map_err(|source| DotnetError::connect(socket, source))
}

/// Send one request and read its response (the runtime closes the connection after it).
/// `on_tick` runs about every `wait.tick` while the answer is awaited; an error from it stops
/// the wait and is returned.
pub fn request(
    socket: &Path,
    message: &Message,
    wait: Wait,
    on_tick: &mut dyn FnMut() -> Result<(), DotnetError>,
) -> Result<Response, DotnetError> {
    let bytes = message.encode().ok_or_else(|| DotnetError::Protocol {
        socket: socket.to_owned(),
        detail: format!(
            "the request's payload ({} bytes) does not fit a message",
            message.payload.len()
        ),
    })?;
    let mut stream = connect(socket)?;
    let io = |context: &'static str| {
        let socket: PathBuf = socket.to_owned();
        move |source| DotnetError::Io {
            socket,
            context,
            source,
        }
    };
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(io("setting a timeout"))?;
    stream
        .write_all(&bytes)
        .map_err(io("sending the request"))?;

    let Wait { timeout, tick } = wait;
    let started = Instant::now();
    let tick = tick.max(Duration::from_millis(10));
    stream
        .set_read_timeout(Some(tick))
        .map_err(io("setting a timeout"))?;
    let mut read_all = |buf: &mut [u8], what: &'static str| -> Result<(), DotnetError> {
        let mut filled = 0;
        while filled < buf.len() {
            match stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(DotnetError::Closed {
                        socket: socket.to_owned(),
                        what,
                    });
                }
                Ok(n) => filled += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    on_tick()?;
                    if let Some(timeout) = timeout
                        && started.elapsed() >= timeout
                    {
                        return Err(DotnetError::Timeout {
                            socket: socket.to_owned(),
                            waited: started.elapsed(),
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io("reading the response")(e)),
            }
        }
        Ok(())
    };
    let mut header = [0u8; HEADER_LEN];
    read_all(&mut header, "the response header")?;
    let (command_set, command_id, len) =
        Message::decode_header(&header).map_err(|detail| DotnetError::Protocol {
            socket: socket.to_owned(),
            detail,
        })?;
    let mut payload = vec![0u8; len];
    read_all(&mut payload, "the response payload")?;
    parse_response(&Message::new(command_set, command_id, payload)).map_err(|detail| {
        DotnetError::Protocol {
            socket: socket.to_owned(),
            detail,
        }
    })
}

/// What `ProcessInfo` (and `ProcessInfo2`) answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The pid as the runtime sees itself (inside its pid namespace).
    pub pid: u64,
    /// The runtime instance cookie: a GUID, as dotnet-monitor's `uid`.
    pub runtime_cookie: [u8; 16],
    pub command_line: String,
    pub os: String,
    pub arch: String,
    /// ProcessInfo2 only.
    pub entry_assembly: Option<String>,
    /// ProcessInfo2 only: the runtime's product version, e.g. `8.0.1`.
    pub runtime_version: Option<String>,
}

impl ProcessInfo {
    /// Parse a ProcessInfo payload, or a ProcessInfo2 one with `v2`.
    pub fn parse(payload: &[u8], v2: bool) -> Result<ProcessInfo, String> {
        let mut reader = Reader::new(payload);
        let pid = reader.u64("the pid")?;
        let runtime_cookie = reader.bytes::<16>("the runtime cookie")?;
        let command_line = reader.string("the command line")?;
        let os = reader.string("the operating system")?;
        let arch = reader.string("the architecture")?;
        let (entry_assembly, runtime_version) = if v2 {
            (
                Some(reader.string("the entry point assembly")?),
                Some(reader.string("the runtime version")?),
            )
        } else {
            (None, None)
        };
        Ok(ProcessInfo {
            pid,
            runtime_cookie,
            command_line,
            os,
            arch,
            entry_assembly,
            runtime_version: runtime_version.filter(|v| !v.is_empty()),
        })
    }

    /// The cookie as .NET prints a `Guid` (the first three fields little-endian).
    pub fn cookie_string(&self) -> String {
        format_guid(&self.runtime_cookie)
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` from a .NET `Guid`'s 16 bytes.
pub fn format_guid(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// The payload of GenerateCoreDump (all three versions): the path, the dump type, the flags.
pub fn core_dump_payload(path: &str, dump_type: u32, flags: u32) -> Vec<u8> {
    let mut payload = Vec::new();
    write_string(&mut payload, path);
    payload.extend_from_slice(&dump_type.to_le_bytes());
    payload.extend_from_slice(&flags.to_le_bytes());
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let message = Message::new(command_set::PROCESS, process_command::PROCESS_INFO, vec![]);
        let bytes = message.encode().unwrap();
        assert_eq!(bytes.len(), 20);
        assert_eq!(&bytes[..14], b"DOTNET_IPC_V1\0");
        assert_eq!(&bytes[14..], &[20, 0, 4, 0, 0, 0]);
        let header: [u8; 20] = bytes.try_into().unwrap();
        assert_eq!(Message::decode_header(&header), Ok((4, 0, 0)));
        let mut bad = header;
        bad[0] = b'X';
        assert!(Message::decode_header(&bad).is_err());
        assert!(Message::new(1, 1, vec![0; 70000]).encode().is_none());
    }

    #[test]
    fn strings_and_dump_payload() {
        let payload = core_dump_payload("/t/a.core", 2, 0);
        assert_eq!(&payload[..4], &10u32.to_le_bytes());
        assert_eq!(&payload[4..6], &[b'/', 0]);
        assert_eq!(&payload[22..24], &[0, 0]);
        assert_eq!(&payload[24..], &[2, 0, 0, 0, 0, 0, 0, 0]);
        let mut reader = Reader::new(&payload);
        assert_eq!(reader.string("path").unwrap(), "/t/a.core");
        assert_eq!(reader.u32("type").unwrap(), 2);
        let mut empty = Reader::new(&[0, 0, 0, 0]);
        assert_eq!(empty.string("s").unwrap(), "");
        assert!(Reader::new(&[5, 0, 0, 0, b'a', 0]).string("s").is_err());
    }

    #[test]
    fn process_info_and_errors() {
        let mut payload = 1234u64.to_le_bytes().to_vec();
        let cookie: [u8; 16] = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        payload.extend_from_slice(&cookie);
        for s in ["app --flag", "Linux", "x64", "app", "8.0.1"] {
            write_string(&mut payload, s);
        }
        let info = ProcessInfo::parse(&payload, true).unwrap();
        assert_eq!(info.pid, 1234);
        assert_eq!(info.cookie_string(), "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(info.command_line, "app --flag");
        assert_eq!(info.runtime_version.as_deref(), Some("8.0.1"));
        let v1 = ProcessInfo::parse(&payload, false).unwrap();
        assert_eq!(v1.runtime_version, None);
        assert!(ProcessInfo::parse(&payload[..30], false).is_err());

        let error = Message::new(0xFF, 0xFF, hresult::UNKNOWN_COMMAND.to_le_bytes().to_vec());
        assert_eq!(
            parse_response(&error),
            Ok(Response::Error {
                hresult: hresult::UNKNOWN_COMMAND,
                message: String::new()
            })
        );
        let mut with_text = hresult::FAIL.to_le_bytes().to_vec();
        write_string(&mut with_text, "Could not open output");
        assert_eq!(
            parse_response(&Message::new(0xFF, 0xFF, with_text)),
            Ok(Response::Error {
                hresult: hresult::FAIL,
                message: "Could not open output".into()
            })
        );
        assert!(parse_response(&Message::new(0x01, 0x00, vec![])).is_err());
    }
}
