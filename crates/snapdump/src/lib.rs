//! # snapdump: dumps of live Linux processes
//!
//! The engine behind the `snapdump` command, usable on its own. It stops a running process
//! with ptrace (never with a signal it could see), captures every thread's registers and the
//! memory a chosen [`Mode`] asks for, writes an ELF core that gdb and lldb open, and lets the
//! process run on exactly as before.
//!
//! ```no_run
//! use snapdump::{DumpRequest, Mode, TargetSpec};
//!
//! let report = snapdump::dump(
//!     &DumpRequest::new(TargetSpec::Name("nginx".into()))
//!         .mode(Mode::Heap)
//!         .output("/var/tmp"),
//! )?;
//! eprintln!(
//!     "{}: {} bytes, target paused {:?}",
//!     report.path.display(),
//!     report.disk_bytes,
//!     report.pause.total
//! );
//! # Ok::<(), snapdump::Error>(())
//! ```
//!
//! ## How it is built
//! - [`sys`]: the raw syscalls (ptrace, `process_vm_readv`, `PAGEMAP_SCAN`), the only `unsafe`.
//! - [`process`]: `/proc` parsers, the ptrace session that stops and releases the target,
//!   memory reading, page listing, the loader's library list.
//! - [`capture`]: what the writers need, gathered while the target is stopped.
//! - [`select`]: modes → which bytes of which mapping go in.
//! - [`elf`]: the ELF core writer; [`minidump`]: the minidump writer.
//! - [`snapshot`]: the copy-on-write clone; [`watch`]: triggers; [`dotnet`]: the .NET
//!   runtime's diagnostics IPC and runtime-written dumps.
//! - [`output`]: partial files, sparse writing, the free-space guard; [`naming`]: file names.
//! - [`dump()`]: the whole sequence, with its guarantees: the target is released on every
//!   path, a failed dump leaves no file, an existing file is never replaced unasked.

pub mod capture;
pub mod dotnet;
pub mod dump;
pub mod elf;
pub mod error;
pub mod fault;
pub mod minidump;
pub mod naming;
pub mod output;
pub mod process;
pub mod select;
pub mod snapshot;
pub mod sys;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use dump::{
    DryRunReport, DumpReport, DumpRequest, Format, PauseTimes, PlannedRegion, TargetSpec, dry_run,
    dump, dump_stopped, dump_to_stream,
};
pub use error::{Error, Result};
pub use select::Mode;

/// A flag that stops a dump in progress (set it from a signal handler or another thread). The
/// engine checks it between steps and between memory chunks, releases the target and removes
/// the partial file.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// A cancel flag sharing `flag` (e.g. one registered with `signal_hook::flag`).
    pub fn from_flag(flag: Arc<AtomicBool>) -> Cancel {
        Cancel(flag)
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Error::Interrupted)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }
}
