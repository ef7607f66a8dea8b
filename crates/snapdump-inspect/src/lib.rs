//! # snapdump-inspect
//!
//! Reads a process dump — an ELF core (snapdump's, gdb's `gcore`, the kernel's) or a minidump
//! (snapdump's, Breakpad's, Crashpad's, minidump-writer's), plain or zstd-compressed — and
//! tells what is in it: the process, its threads, modules and memory, and on request a
//! symbolized backtrace per thread. `snapdump inspect` prints it; snapdump's own tests use it
//! as an independent reader.
//!
//! ```no_run
//! let options = snapdump_inspect::Options { stacks: true, ..Default::default() };
//! let report = snapdump_inspect::inspect(std::path::Path::new("app.core"), &options)?;
//! for thread in &report.threads {
//!     println!("{} {:?} ip={}", thread.tid, thread.name, thread.ip);
//! }
//! print!("{}", snapdump_inspect::text::render(&report, &Default::default()));
//! println!("{}", serde_json::to_string_pretty(&report).unwrap());
//! # Ok::<(), snapdump_inspect::Error>(())
//! ```
//!
//! ## How it is built
//!
//! | module | job |
//! |---|---|
//! | `input` | opens the file, decompresses zstd to a temporary file, positioned reads |
//! | `elf_core` | ELF core headers and notes (`object`'s structs): threads, NT_FILE, auxv, siginfo |
//! | `mdmp` | minidump streams (the `minidump` crate) |
//! | `memory` | the dumped memory behind one `Memory` trait for both formats |
//! | `elf_image` | loaded ELF images seen through that memory: program headers, build ids |
//! | `unwind` | backtraces: framehop (CFI from `.eh_frame`/`.debug_frame`, frame pointers), then stack scanning |
//! | `symbols` | function names: DWARF (`addr2line`), else the symbol table |
//! | [`model`] | the [`Report`], which is also the JSON schema |
//! | [`text`] | the text rendering |
//!
//! ## Errors
//!
//! A file that cannot be read at all (not a dump, cut inside its headers, unreadable) is an
//! [`Error`]. Damage inside a dump that is otherwise readable (truncated segments, a broken
//! stream, a note that lies about its size) is collected in [`Report::errors`] and the rest
//! is still reported: partial information beats none. Missing module files on this machine and
//! the like go to [`Report::warnings`]. No input makes the readers panic; `fuzz/` holds the
//! cargo-fuzz targets and `tests/fuzz_lite.rs` runs mutated dumps through both readers in
//! `cargo test`.
//!
//! ## JSON schema
//!
//! `--json` prints [`Report`] with serde. `SCHEMA.md` in this crate documents every field;
//! [`model::SCHEMA_VERSION`] is bumped when a field changes meaning or goes away.

#![forbid(unsafe_code)]

mod bytes;
mod elf_core;
mod elf_image;
mod error;
mod input;
mod mdmp;
mod memory;
pub mod model;
mod symbols;
pub mod text;
mod unwind;

use std::path::{Path, PathBuf};

pub use bytes::human_bytes;
pub use error::{Error, Result};
pub use input::MAX_IN_MEMORY;
pub use model::{
    DumpFormat, Frame, Hex, Module, Process, Reason, ReasonKind, Region, RegionKind, Report, Stack,
    Thread, Writer,
};

use input::{ELF_MAGIC, MINIDUMP_MAGIC, ReadAt};

/// What to do beyond reading the dump.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Unwind and symbolize every thread's stack (reads the module files).
    pub stacks: bool,
    /// Look for module files under this folder (their recorded absolute paths appended)
    /// before their recorded paths.
    pub sysroot: Option<PathBuf>,
}

/// Reads the dump at `path`.
pub fn inspect(path: &Path, options: &Options) -> Result<Report> {
    let opened = input::open(path)?;
    let file = input::FileInput::new(opened.file.try_clone().map_err(|e| Error::io(path, &e))?)
        .map_err(|e| Error::io(path, &e))?;
    let mut report = new_report(path.display().to_string(), file.len());
    if opened.compressed {
        report.compression = Some("zstd".into());
    }
    if let Some(e) = &opened.decompress_error {
        report.errors.push(format!(
            "the zstd stream is damaged after {} decompressed bytes ({e}): the rest is missing",
            file.len()
        ));
    }
    match sniff(&file, &report)? {
        DumpFormat::ElfCore => {
            let memory = elf_core::read(&file, &mut report)?;
            finish_elf(&mut report, &memory, options);
        }
        DumpFormat::Minidump => {
            report.format = DumpFormat::Minidump;
            let dump = minidump::Minidump::read_path(&opened.path).map_err(|e| match e {
                minidump::Error::FileNotFound | minidump::Error::IoError => Error::Io {
                    path: opened.path.display().to_string(),
                    kind: std::io::ErrorKind::Other,
                    message: e.to_string(),
                },
                other => mdmp_error(other),
            })?;
            let memory = mdmp::read(&dump, &mut report);
            if options.stacks {
                unwind::stacks(&mut report, &memory, options);
            }
        }
    }
    Ok(report)
}

/// Reads a dump held in memory (zstd is decompressed to memory, at most
/// [`MAX_IN_MEMORY`] bytes). The fuzz targets use this.
pub fn inspect_bytes(bytes: &[u8], options: &Options) -> Result<Report> {
    let (data, compressed, decompress_error) = input::from_bytes(bytes);
    let data: &[u8] = &data;
    let mut report = new_report("<memory>".into(), data.len() as u64);
    if compressed {
        report.compression = Some("zstd".into());
    }
    if let Some(e) = decompress_error {
        report.errors.push(format!(
            "the zstd stream is damaged after {} decompressed bytes ({e}): the rest is missing",
            data.len()
        ));
    }
    match sniff(&data, &report)? {
        DumpFormat::ElfCore => {
            let memory = elf_core::read(&data, &mut report)?;
            finish_elf(&mut report, &memory, options);
        }
        DumpFormat::Minidump => {
            report.format = DumpFormat::Minidump;
            let dump = mdmp::parse(data).map_err(|e| match e {
                Error::Truncated { what, needed, .. } => Error::Truncated {
                    what,
                    needed,
                    have: data.len() as u64,
                },
                other => other,
            })?;
            let memory = mdmp::read(&dump, &mut report);
            if options.stacks {
                unwind::stacks(&mut report, &memory, options);
            }
        }
    }
    Ok(report)
}

fn new_report(file: String, size: u64) -> Report {
    Report {
        schema_version: model::SCHEMA_VERSION,
        file,
        size,
        arch: "unknown".into(),
        ..Report::default()
    }
}

fn mdmp_error(e: minidump::Error) -> Error {
    match e {
        minidump::Error::MissingHeader => Error::Truncated {
            what: "minidump header",
            have: 0,
            needed: 32,
        },
        other => Error::Malformed {
            what: "minidump",
            detail: other.to_string(),
        },
    }
}

fn sniff(src: &dyn ReadAt, report: &Report) -> Result<DumpFormat> {
    let magic = input::magic_of(src);
    if src.is_empty() {
        return Err(if report.compression.is_some() {
            Error::Decompress(
                report
                    .errors
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "the stream holds no data".into()),
            )
        } else {
            Error::Empty
        });
    }
    if magic.as_slice() == ELF_MAGIC {
        Ok(DumpFormat::ElfCore)
    } else if magic.as_slice() == MINIDUMP_MAGIC {
        Ok(DumpFormat::Minidump)
    } else if ELF_MAGIC.starts_with(&magic) || MINIDUMP_MAGIC.starts_with(&magic) {
        Err(Error::Truncated {
            what: "file (it ends inside the magic number)",
            have: magic.len() as u64,
            needed: 4,
        })
    } else {
        Err(Error::UnknownFormat {
            magic: magic
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        })
    }
}

fn finish_elf(report: &mut Report, memory: &memory::CoreMemory<'_>, options: &Options) {
    report.format = DumpFormat::ElfCore;
    if report.mode.is_none() {
        report.mode = Some(infer_mode(&report.regions, None));
    }
    report.memory = model::MemorySummary::of(&report.regions);
    if options.stacks {
        unwind::stacks(report, memory, options);
    }
}

/// snapdump's mode that matches what the dump holds: `full` when most executable file-backed
/// memory is stored; else `heap` when most writable anonymous memory is (ELF cores, where a
/// segment's stored size includes its never-touched holes) or the header says
/// MiniDumpWithFullMemory (minidumps: `full_memory_flag` is `Some`, and they store touched
/// pages only); else `mini`. Used for cores without snapdump's note, which names the mode:
/// snapdump's own cores leave untouched pages out of the file altogether. Inferred for any writer: a kernel core with the default
/// coredump_filter reads as `heap`, gcore's as `full`, Breakpad's as `mini`.
pub fn infer_mode(regions: &[Region], full_memory_flag: Option<bool>) -> String {
    let ratio = |pick: &dyn Fn(&Region) -> bool| {
        let (mapped, stored) =
            regions
                .iter()
                .filter(|r| pick(r))
                .fold((0u64, 0u64), |(m, s), r| {
                    (
                        m.saturating_add(r.size),
                        s.saturating_add(r.stored.min(r.size)),
                    )
                });
        (mapped > 0).then(|| stored as f64 / mapped as f64)
    };
    let code = ratio(&|r| r.kind == RegionKind::File && r.perms.contains('x'));
    let anon = ratio(&|r| {
        matches!(r.kind, RegionKind::Heap | RegionKind::Anonymous) && r.perms.contains('w')
    });
    let heap = match full_memory_flag {
        Some(flag) => flag,
        None => anon.is_some_and(|a| a >= 0.5),
    };
    let mode = if code.is_some_and(|c| c >= 0.5) {
        "full"
    } else if heap {
        "heap"
    } else {
        "mini"
    };
    mode.to_string()
}

/// Where to look for a module's file: under the sysroot first, then at its recorded path
/// (without a trailing " (deleted)").
pub(crate) fn module_file_candidates(path: &str, sysroot: Option<&Path>) -> Vec<PathBuf> {
    let clean = path.strip_suffix(" (deleted)").unwrap_or(path);
    if !clean.starts_with('/') {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(root) = sysroot {
        out.push(root.join(clean.trim_start_matches('/')));
    }
    out.push(PathBuf::from(clean));
    out
}
