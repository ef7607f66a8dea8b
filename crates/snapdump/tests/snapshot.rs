//! Snapshots through the library: every kind of blocked thread can be the one borrowed for the
//! clone and carries on correctly; the snapshot's memory is frozen while the target runs on;
//! nothing is left behind.

use nix::sys::ptrace::Options;
use object::{Object, ObjectSymbol};
use snapdump::Cancel;
use snapdump::capture::Capture;
use snapdump::process::memory::{LiveMemory, ProcessMemory};
use snapdump::process::session::StoppedProcess;
use snapdump::snapshot;
use snapdump_test_support::{Target, assert_running_untraced, children_of, heap_pattern};

/// The runtime address of a global of the test target, from its symbol table and the known
/// address of `SNAPDUMP_KNOWN_GLOBAL`.
fn global_address(target: &Target, name: &str) -> u64 {
    let exe = std::fs::read(target.exe_path()).unwrap();
    let file = object::File::parse(&*exe).unwrap();
    let symbol = |wanted: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(wanted))
            .unwrap_or_else(|| panic!("no symbol {wanted}"))
            .address()
    };
    let bias = target.ready().global_addr - symbol("SNAPDUMP_KNOWN_GLOBAL");
    bias + symbol(name)
}

/// No process anywhere has the target as its parent (zombies included).
fn assert_no_children(pid: i32) {
    assert!(
        children_of(pid).is_empty(),
        "children: {:?}",
        children_of(pid)
    );
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(|v| v.trim().parse::<i32>().unwrap_or(0));
        assert_ne!(
            ppid,
            Some(pid),
            "{:?} is a child of the target",
            entry.path()
        );
    }
}

#[test]
fn each_kind_of_thread_can_be_borrowed_and_carries_on() {
    let mut target = Target::spawn(&[]);
    let ready = target.ready().clone();
    let expected_heap = heap_pattern(ready.seed, ready.heap_len);
    // The main thread (blocked in read on stdin) and the four named threads.
    let mut tids = vec![ready.pid];
    tids.extend(&ready.tids);
    for (round, &tid) in tids.iter().enumerate() {
        let mut stopped =
            StoppedProcess::stop(ready.pid, Options::empty(), &Cancel::new()).unwrap();
        let capture = Capture::collect(&stopped, &LiveMemory::new(ready.pid)).unwrap();
        let (snap, times) = snapshot::take_with_thread(&mut stopped, &capture, tid)
            .unwrap_or_else(|e| panic!("borrowing {tid}: {e}"));
        assert_eq!(snap.borrowed_tid(), tid);
        stopped.resume();
        assert!(times.clone.as_secs() < 5);

        // The target runs on while the snapshot is read.
        target.wake_and_check(&format!("round {round}"));
        let memory = snap.memory();
        let mut heap = vec![0u8; ready.heap_len];
        assert_eq!(memory.read_into(ready.heap_addr, &mut heap), 0);
        assert!(heap == expected_heap, "the snapshot's heap differs");
        let report = snap.finish().unwrap();
        assert!(report.zombie_reaped, "the clone's zombie was not reaped");
        assert_no_children(ready.pid);
        assert_running_untraced(ready.pid);
    }
    let status = target.status();
    assert_eq!(status.short_sleeps, 0, "a nanosleep was cut short");
    assert!(status.heap_ok);
}

#[test]
fn the_snapshot_is_frozen_while_the_target_runs() {
    let mut target = Target::spawn(&[]);
    let spins = global_address(&target, "SNAPDUMP_SPIN_COUNT");
    let pid = target.pid();
    let mut stopped = StoppedProcess::stop(pid, Options::empty(), &Cancel::new()).unwrap();
    let live = LiveMemory::new(pid);
    let capture = Capture::collect(&stopped, &live).unwrap();
    let (snap, _) = snapshot::take(&mut stopped, &capture).unwrap();
    let at_snapshot = live.read_u64(spins).unwrap();
    stopped.resume();
    // Let the spinner move on, observably.
    target.wake_and_check("moving on");
    while live.read_u64(spins).unwrap() == at_snapshot {
        std::thread::yield_now();
    }
    let frozen = snap.memory();
    assert_eq!(frozen.read_u64(spins), Some(at_snapshot));
    assert!(live.read_u64(spins).unwrap() > at_snapshot);
    snap.finish().unwrap();
    assert_no_children(pid);
    assert_running_untraced(pid);
}
