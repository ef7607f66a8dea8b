//! The minidump writer (placeholder until the writer lands: it refuses with a clear error).

use crate::Cancel;
use crate::capture::Capture;
use crate::elf::WriteStats;
use crate::error::{Error, Result};
use crate::output::SparseWriter;
use crate::process::memory::ProcessMemory;
use crate::select::Plan;

/// Bytes on disk (holes excluded) the minidump is expected to take.
pub fn estimate_disk_bytes(_capture: &Capture, plan: &Plan) -> u64 {
    plan.data_bytes()
}

/// Stream a minidump in file order.
pub fn write_minidump(
    _capture: &Capture,
    _plan: &Plan,
    _memory: &dyn ProcessMemory,
    _out: SparseWriter<'_>,
    _progress: &mut dyn FnMut(u64),
    _cancel: &Cancel,
) -> Result<WriteStats> {
    Err(Error::Io {
        context: "writing a minidump".into(),
        source: std::io::Error::new(std::io::ErrorKind::Unsupported, "not built yet"),
    })
}
