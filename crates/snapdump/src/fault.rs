//! Stall points for the fault-matrix tests.
//!
//! With `SNAPDUMP_STALL_AT=<phase>` in its environment the engine stops at that phase, prints
//! `snapdump: stalled at <phase>` on stderr and waits there until the dump is cancelled (or the
//! dumper is killed), so a test can deliver a signal at an exact moment of a dump. With
//! `SNAPDUMP_STALL_RELEASE=<path>` as well, the dump goes on once that file exists, so a test
//! can change the world (fill the disk, remove the folder) in the middle of a dump. Without
//! the variables a stall point costs one environment lookup.
//!
//! Phases, in order: `stopped` (every thread stopped), `captured` (registers and `/proc` read),
//! `writing` (the first chunk of memory written), `written` (the file is complete, not yet
//! named).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::Cancel;
use crate::error::Result;

/// The environment variable naming the phase to stall at.
pub const STALL_AT: &str = "SNAPDUMP_STALL_AT";
/// The environment variable naming a file whose creation ends the stall.
pub const STALL_RELEASE: &str = "SNAPDUMP_STALL_RELEASE";

/// Stall here if asked to; returns `Err(Interrupted)` once cancelled while stalled.
pub fn stall_point(phase: &str, cancel: &Cancel) -> Result<()> {
    static RELEASED: AtomicBool = AtomicBool::new(false);
    if RELEASED.load(Ordering::Relaxed) || std::env::var_os(STALL_AT).is_none_or(|p| p != phase) {
        return Ok(());
    }
    eprintln!("snapdump: stalled at {phase}");
    let release = std::env::var_os(STALL_RELEASE).map(std::path::PathBuf::from);
    loop {
        cancel.check()?;
        if release.as_deref().is_some_and(|p| p.exists()) {
            // Only the first pass through a phase stalls.
            RELEASED.store(true, Ordering::Relaxed);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
