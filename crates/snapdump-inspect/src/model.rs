//! The format-neutral report: what [`crate::inspect`] returns and what `--json` prints.
//!
//! Field names and meanings are the JSON schema (see `SCHEMA.md`): rename nothing without
//! bumping [`SCHEMA_VERSION`].

use serde::Serialize;

/// Bumped when a field changes meaning or is removed (adding fields does not bump it).
pub const SCHEMA_VERSION: u32 = 1;

/// Everything read from one dump.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub schema_version: u32,
    /// The path given.
    pub file: String,
    /// `elf-core` or `minidump`.
    pub format: DumpFormat,
    /// `zstd` when the file was a zstd stream, else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// The dump's bytes (after decompression).
    pub size: u64,
    /// `x86_64` (the only architecture read).
    pub arch: String,
    /// Who most likely wrote the dump: `snapdump`, `gcore`, `kernel`, `breakpad`,
    /// `crashpad`, or absent when unknown. See [`Writer`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer: Option<Writer>,
    /// snapdump's mode (`mini`, `heap`, `full`) that matches what the dump holds, inferred
    /// for any writer (see [`crate::infer_mode`]); absent only when nothing could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// True when `mode` is the one snapdump recorded in the dump (its `SNAPDUMP` note), not
    /// inferred.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mode_recorded: bool,
    pub process: Process,
    pub threads: Vec<Thread>,
    pub modules: Vec<Module>,
    pub regions: Vec<Region>,
    pub memory: MemorySummary,
    /// One backtrace per thread, in thread order; only with `--stacks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stacks: Option<Vec<Stack>>,
    /// Damage found in the dump: what could not be read and why. Non-empty makes the CLI exit
    /// with status 3.
    pub errors: Vec<String>,
    /// Things that limit the report but are not damage (a module file missing on this
    /// machine, a build id that does not match the file on disk).
    pub warnings: Vec<String>,
}

impl Report {
    /// The report as one pretty-printed JSON document and a newline (the `--json` output).
    pub fn write_json(&self, mut out: impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut out, self).map_err(std::io::Error::other)?;
        writeln!(out)
    }

    /// Damage was found: [`Report::errors`] is not empty.
    pub fn is_damaged(&self) -> bool {
        !self.errors.is_empty()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum DumpFormat {
    #[default]
    #[serde(rename = "elf-core")]
    ElfCore,
    #[serde(rename = "minidump")]
    Minidump,
}

impl DumpFormat {
    pub fn describe(self) -> &'static str {
        match self {
            DumpFormat::ElfCore => "ELF core",
            DumpFormat::Minidump => "minidump",
        }
    }
}

/// The tool that wrote a dump, as far as the dump tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Writer {
    /// An ELF core of a live process, stopped with ptrace and recorded as SIGSTOP, laid out as
    /// the kernel does (no section headers, no gdb notes).
    Snapdump,
    /// gdb's `gcore` (or `generate-core-file`): section headers, a `GDB` note.
    Gcore,
    /// The kernel's core dump on a fatal signal.
    Kernel,
    /// A Breakpad-style Linux minidump (the Linux streams, no Crashpad stream): Breakpad,
    /// minidump-writer and snapdump write the same streams and cannot be told apart.
    Breakpad,
    /// Crashpad (its CrashpadInfo stream).
    Crashpad,
}

impl Writer {
    pub fn name(self) -> &'static str {
        match self {
            Writer::Snapdump => "snapdump",
            Writer::Gcore => "gcore",
            Writer::Kernel => "kernel",
            Writer::Breakpad => "breakpad",
            Writer::Crashpad => "crashpad",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Process {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The short name (comm, at most 15 bytes in ELF cores) or the main module's file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The executable's path, when known (NT_FILE's first entry, the minidump's main module).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// The command line, arguments separated by spaces (ELF cores keep only 80 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    /// When the dump was written (RFC 3339, UTC), if the dump records it (minidumps do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dumped_at: Option<String>,
    pub reason: Reason,
}

/// Why the dump exists.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Reason {
    pub kind: ReasonKind,
    /// The signal number, when a signal is recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Its name (`SIGSEGV`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<String>,
    /// si_code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The faulting address, for SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Hex>,
    /// The thread that took the signal or that the minidump blames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<u32>,
    /// The process that sent the signal (si_pid), when it was sent by a process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_pid: Option<i32>,
    /// One line for people.
    pub description: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasonKind {
    /// Dumped on request, the process was not crashing (SIGSTOP in an ELF core,
    /// DUMP_REQUESTED in a minidump).
    Requested,
    /// A signal sent by a process or the kernel that is not a fault (SIGABRT, SIGQUIT...).
    Signal,
    /// A fault: SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP raised by the CPU.
    Crash,
    #[default]
    Unknown,
}

/// A 64-bit value that JSON shows as a `"0x..."` string (JSON numbers lose precision past
/// 2^53).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hex(pub u64);

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{:#x}", self.0))
    }
}

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Thread {
    pub tid: u32,
    /// The thread's name: from the minidump's ThreadNames stream; in ELF cores only the main
    /// thread's (the process name), since cores do not record names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub ip: Hex,
    pub sp: Hex,
    pub bp: Hex,
    /// This thread took the signal or raised the exception that caused the dump.
    pub crashed: bool,
    /// The signal recorded for this thread (pr_cursig), ELF cores only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Module {
    /// The path recorded in the dump (`[vdso]` for the vDSO).
    pub path: String,
    pub base: Hex,
    /// Bytes from `base` to the end of the module's last mapping.
    pub size: u64,
    /// The GNU build id, lowercase hex, when the dump or the file tells it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// Where the build id came from: `dump` (the module's notes in the dump's memory or the
    /// minidump's CodeView record) or `file` (read from the file on this machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id_source: Option<String>,
    /// The minidump's debug id (Breakpad's: the first 16 bytes of the build id as a GUID, then
    /// an age).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_id: Option<String>,
    /// The file used for symbols and unwind data on this machine (after `--sysroot`), only
    /// when `--stacks` looked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol_file: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Region {
    pub start: Hex,
    pub end: Hex,
    pub size: u64,
    /// Bytes of the region whose contents are in the dump (0: listed without contents).
    pub stored: u64,
    /// `r`, `w`, `x` or `-` each, as in /proc/PID/maps (`p`/`s` appended when known).
    pub perms: String,
    pub kind: RegionKind,
    /// The mapped file, for file-backed regions; `[vdso]`, `[heap]`... when the dump names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionKind {
    /// A thread's stack (holds a thread's stack pointer, or is named `[stack]`).
    Stack,
    /// The brk heap (`[heap]`, or in ELF cores the anonymous region right after the
    /// executable).
    Heap,
    /// Other anonymous memory (malloc arenas, mmap'ed buffers, thread stacks' guards).
    #[default]
    Anonymous,
    /// Mapped from a file.
    File,
    /// `[vdso]`, `[vvar]`, `[vsyscall]`.
    Special,
}

impl RegionKind {
    pub const ALL: [RegionKind; 5] = [
        RegionKind::Stack,
        RegionKind::Heap,
        RegionKind::Anonymous,
        RegionKind::File,
        RegionKind::Special,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RegionKind::Stack => "stack",
            RegionKind::Heap => "heap",
            RegionKind::Anonymous => "anonymous",
            RegionKind::File => "file",
            RegionKind::Special => "special",
        }
    }
}

/// Totals over [`Report::regions`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemorySummary {
    pub regions: usize,
    /// Regions with at least one stored byte.
    pub regions_with_contents: usize,
    pub mapped_bytes: u64,
    pub stored_bytes: u64,
    /// One entry per kind present, in the order stack, heap, anonymous, file, special.
    pub by_kind: Vec<KindTotal>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct KindTotal {
    pub kind: RegionKind,
    pub regions: usize,
    pub mapped_bytes: u64,
    pub stored_bytes: u64,
}

impl MemorySummary {
    pub fn of(regions: &[Region]) -> MemorySummary {
        let mut summary = MemorySummary {
            regions: regions.len(),
            ..MemorySummary::default()
        };
        for kind in RegionKind::ALL {
            let mut total = KindTotal {
                kind,
                ..KindTotal::default()
            };
            for region in regions.iter().filter(|r| r.kind == kind) {
                total.regions += 1;
                total.mapped_bytes = total.mapped_bytes.saturating_add(region.size);
                total.stored_bytes = total.stored_bytes.saturating_add(region.stored);
            }
            if total.regions > 0 {
                summary.by_kind.push(total);
            }
        }
        summary.regions_with_contents = regions.iter().filter(|r| r.stored > 0).count();
        summary.mapped_bytes = regions.iter().fold(0u64, |a, r| a.saturating_add(r.size));
        summary.stored_bytes = regions.iter().fold(0u64, |a, r| a.saturating_add(r.stored));
        summary
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stack {
    pub tid: u32,
    pub frames: Vec<Frame>,
    /// Why the walk stopped early, when it did (`null` when it reached the thread's entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Frame {
    /// 0 for the thread's current instruction, then one per caller.
    pub index: usize,
    /// The instruction pointer (frame 0) or the return address.
    pub address: Hex,
    /// How the frame was found: `context` (the registers), `cfi` (call frame information
    /// or, without it, the frame pointer; framehop does not say which) or `scan` (a return
    /// address found by scanning the stack).
    pub trust: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Offset of `address` in the module (from its base).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_offset: Option<Hex>,
    /// The function the address is in (demangled): from DWARF when the module has it, else
    /// from the symbol table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Functions inlined into `function` at this address, innermost first (DWARF only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inlined: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}
