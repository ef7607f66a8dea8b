//! Spawns the real test target and checks its READY line, commands and threads.

use std::time::Duration;

use snapdump_test_support::{
    Target, assert_running_untraced, known_global_value, proc_state, thread_states, tracer_pid,
};

const NAMES: [&str; 4] = ["sd-reader", "sd-sleeper", "sd-waiter", "sd-spinner"];

fn comm_of(threads: &[(i32, String, char)], tid: i32) -> Option<&str> {
    threads.iter().find(|t| t.0 == tid).map(|t| t.1.as_str())
}

#[test]
fn target_ready_commands_and_threads() {
    let mut t = Target::spawn(&["--seed", "12345"]);
    let r = t.ready().clone();
    assert_eq!(r.seed, 12345);
    assert_eq!(r.pid, t.pid());
    assert!(r.pid > 0);
    assert!(t.exe_path().exists());
    assert_ne!(r.global_addr, 0);
    assert_ne!(r.heap_addr, 0);
    assert_ne!(r.secret_addr, 0);
    assert_eq!(r.heap_len, 256 * 1024);
    assert_eq!(r.secret_len, 64 * 1024);
    assert_eq!(r.secret_addr % 4096, 0, "secret mapping is page aligned");
    assert_eq!(r.tids.len(), 4);
    assert!(r.tids.iter().all(|&tid| tid > 0 && tid != r.pid));
    let mut sorted = r.tids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 4, "tids are distinct");
    assert_eq!(r.sparse_addr, None);
    assert_eq!(r.sparse_len, None);

    // Threads are found in /proc by name, with the tids from READY.
    let threads = thread_states(r.pid);
    assert_eq!(threads.len(), 5, "{threads:?}");
    for (name, tid) in NAMES.iter().zip(&r.tids) {
        assert_eq!(comm_of(&threads, *tid), Some(*name), "{threads:?}");
    }
    assert_eq!(tracer_pid(r.pid), 0);
    assert!(matches!(proc_state(r.pid), 'R' | 'S'));
    assert_running_untraced(r.pid);

    assert_eq!(t.command("ping"), "pong");
    t.wake_and_check("hello");
    t.wake_and_check("second wake");

    let s = t.status();
    assert!(s.heap_ok);
    assert_eq!(s.short_sleeps, 0);
    assert!(s.spins > 0);
    assert_eq!(s.global, known_global_value(12345));
    assert_eq!(s.global, r.known_global());

    assert_eq!(t.command("spawn 3"), "spawned 3");
    let threads = thread_states(r.pid);
    assert_eq!(threads.len(), 8, "{threads:?}");
    for i in 0..3 {
        let name = format!("sd-extra-{i}");
        let th = threads.iter().find(|t| t.1 == name);
        assert!(
            th.is_some_and(|t| t.2 == 'S'),
            "{name} missing or not blocked: {threads:?}"
        );
    }

    assert_eq!(t.command("grow 2"), "grew 2");
    assert_eq!(t.command("fds 3"), "fds 3");
    assert!(t.command("nonsense").starts_with("error:"));
    assert_running_untraced(r.pid);

    assert_eq!(t.command("exit"), "bye");
    let st = t.wait_exit(Duration::from_secs(10)).expect("target exits");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn target_sparse_and_dense_and_eof() {
    let mut t = Target::spawn(&[
        "--sparse-reserve-mb",
        "8",
        "--sparse-touch-pct",
        "25",
        "--touch-mb",
        "2",
    ]);
    let r = t.ready().clone();
    assert!(r.sparse_addr.is_some_and(|a| a != 0));
    assert_eq!(r.sparse_len, Some(8 << 20));
    assert!(r.dense_addr.is_some_and(|a| a != 0));
    assert_eq!(r.dense_len, Some(2 << 20));
    assert!(t.status().heap_ok);
    t.close_stdin();
    let st = t
        .wait_exit(Duration::from_secs(10))
        .expect("target exits on EOF");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn target_seeds_differ_and_crash_aborts() {
    use std::os::unix::process::ExitStatusExt;
    let a = Target::spawn(&[]);
    let mut b = Target::spawn(&["--no-core"]);
    assert_ne!(a.ready().seed, b.ready().seed);
    assert_ne!(a.pid(), b.pid());
    assert_eq!(b.command("crash"), "crashing");
    let st = b.wait_exit(Duration::from_secs(10)).expect("target dies");
    assert_eq!(st.signal(), Some(6), "SIGABRT: {st:?}");
    drop(a);
}
