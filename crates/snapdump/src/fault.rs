//! Stall points for the fault-matrix tests.
//!
//! With `SNAPDUMP_STALL_AT=<phase>` in its environment the engine stops at that phase, prints
//! `snapdump: stalled at <phase>` on stderr and waits there until the dump is cancelled (or the
//! dumper is killed), so a test can deliver a signal at an exact moment of a dump. Without the
//! variable a stall point costs one environment lookup.
//!
//! Phases, in order: `stopped` (every thread stopped), `captured` (registers and `/proc` read),
//! `writing` (the first chunk of memory written), `written` (the file is complete, not yet
//! named).

use std::time::Duration;

use crate::Cancel;
use crate::error::Result;

/// The environment variable naming the phase to stall at.
pub const STALL_AT: &str = "SNAPDUMP_STALL_AT";

/// Stall here if asked to; returns `Err(Interrupted)` once cancelled while stalled.
pub fn stall_point(phase: &str, cancel: &Cancel) -> Result<()> {
    if std::env::var_os(STALL_AT).is_none_or(|p| p != phase) {
        return Ok(());
    }
    eprintln!("snapdump: stalled at {phase}");
    loop {
        cancel.check()?;
        std::thread::sleep(Duration::from_millis(5));
    }
}
