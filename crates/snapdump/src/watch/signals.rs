//! Signal numbers for the watcher: names, parsing, which ones are crashes, and whether a
//! signal about to be delivered will kill the process.
//!
//! Signals stay plain `i32` here: a target may receive real-time signals, which nix's `Signal`
//! cannot represent.

use std::path::Path;

use nix::sys::signal::Signal;

/// The signals `--on-crash` treats as a crash when their default action is about to run: the
/// faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE), SIGABRT (abort(), failed assertions, Rust's
/// `process::abort`), SIGSYS (a seccomp kill or a bad system call) and SIGTRAP. SIGTRAP is a
/// crash too: the watcher is the target's only tracer, so no debugger is there to take a
/// breakpoint trap, and one that reaches delivery with its default action kills the process
/// with a core, as `int3`/`__builtin_debugtrap` left in a release build do. SIGQUIT, SIGXCPU
/// and SIGXFSZ also dump core by default but are requests or limits, not crashes: watch them
/// with `--signal` (or `--on-exit`).
pub const CRASH_SIGNALS: [i32; 7] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGSYS,
    libc::SIGTRAP,
];

/// The signals that start a group-stop (job control).
pub fn is_stop_signal(signal: i32) -> bool {
    matches!(
        signal,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

/// Whether the default action of `signal` ends the process (terminate, or dump core): all
/// but the ignored (SIGCHLD, SIGCONT, SIGURG, SIGWINCH) and the stopping ones.
pub fn kills_by_default(signal: i32) -> bool {
    !is_stop_signal(signal)
        && !matches!(
            signal,
            libc::SIGCHLD | libc::SIGCONT | libc::SIGURG | libc::SIGWINCH
        )
}

/// Whether the default action of `signal` dumps core (the kernel's `SIG_KERNEL_COREDUMP_MASK`).
pub fn dumps_core_by_default(signal: i32) -> bool {
    CRASH_SIGNALS.contains(&signal)
        || matches!(signal, libc::SIGQUIT | libc::SIGXCPU | libc::SIGXFSZ)
}

/// `SIGSEGV`, `SIGRTMIN+3`, or `signal 70` for numbers out of range.
pub fn name(signal: i32) -> String {
    if let Ok(known) = Signal::try_from(signal) {
        return known.as_str().to_owned();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    match signal {
        s if s == min => "SIGRTMIN".to_owned(),
        s if s > min && s <= max => format!("SIGRTMIN+{}", s - min),
        // glibc's reserved real-time signals, below SIGRTMIN.
        s if (32..min).contains(&s) => format!("SIG{s}"),
        s => format!("signal {s}"),
    }
}

/// Parse `SIGUSR1`, `USR1`, `usr1`, `10`, `SIGRTMIN+2` or `RTMIN`.
pub fn parse(text: &str) -> Result<i32, String> {
    let trimmed = text.trim();
    if let Ok(number) = trimmed.parse::<i32>() {
        return if (1..=libc::SIGRTMAX()).contains(&number) {
            Ok(number)
        } else {
            Err(format!(
                "{number} is not a signal number (1 to {})",
                libc::SIGRTMAX()
            ))
        };
    }
    let upper = trimmed.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        let offset: i32 = match rest.strip_prefix('+') {
            None if rest.is_empty() => 0,
            Some(n) => n.parse().map_err(|_| format!("bad signal {text:?}"))?,
            None => return Err(format!("bad signal {text:?}")),
        };
        let signal = libc::SIGRTMIN() + offset;
        return if signal <= libc::SIGRTMAX() {
            Ok(signal)
        } else {
            Err(format!("{text:?} is beyond SIGRTMAX"))
        };
    }
    format!("SIG{bare}")
        .parse::<Signal>()
        .map(|s| s as i32)
        .map_err(|_| format!("unknown signal {text:?} (e.g. SIGUSR1, USR2, 10, SIGRTMIN+1)"))
}

/// The process's caught and ignored signal masks (`SigCgt`, `SigIgn` of `/proc/PID/status`).
fn dispositions(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let mut caught = None;
    let mut ignored = None;
    for line in status.split(|&b| b == b'\n') {
        let hex = |prefix: &[u8]| {
            let value = line.strip_prefix(prefix)?;
            u64::from_str_radix(std::str::from_utf8(value).ok()?.trim(), 16).ok()
        };
        if let Some(mask) = hex(b"SigCgt:") {
            caught = Some(mask);
        } else if let Some(mask) = hex(b"SigIgn:") {
            ignored = Some(mask);
        }
    }
    Some((caught?, ignored?))
}

/// Whether `signal` will run its default action in `pid` (neither caught by a handler nor
/// ignored). At a signal-delivery-stop of a synchronous fault the kernel has already reset a
/// blocked or ignored handler to the default, so this says whether the process is about to die
/// of it. `None` when `/proc` could not be read (the process is gone).
pub fn has_default_action(pid: i32, signal: i32) -> Option<bool> {
    if !(1..=64).contains(&signal) {
        return Some(false);
    }
    let bit = 1u64 << (signal - 1);
    let (caught, ignored) = dispositions(pid)?;
    Some(caught & bit == 0 && ignored & bit == 0)
}

/// The `si_code` of a raw 128-byte siginfo.
pub fn siginfo_code(siginfo: &[u8; 128]) -> i32 {
    i32::from_ne_bytes(siginfo[8..12].try_into().expect("4 bytes"))
}

/// The faulting address of a kernel-generated SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGTRAP
/// (`si_addr`), `None` for any other signal or for one sent by a process (`si_code <= 0`).
pub fn fault_address(signal: i32, siginfo: &[u8; 128]) -> Option<u64> {
    let fault = matches!(
        signal,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP
    );
    (fault && siginfo_code(siginfo) > 0)
        .then(|| u64::from_ne_bytes(siginfo[16..24].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parsing_round_trip() {
        assert_eq!(parse("SIGUSR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse("usr2"), Ok(libc::SIGUSR2));
        assert_eq!(parse(" 15 "), Ok(libc::SIGTERM));
        assert_eq!(parse("SIGRTMIN+2"), Ok(libc::SIGRTMIN() + 2));
        assert_eq!(parse("rtmin"), Ok(libc::SIGRTMIN()));
        assert!(parse("SIGNOPE").is_err());
        assert!(parse("0").is_err());
        assert!(parse("RTMIN+99").is_err());
        assert_eq!(name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
        assert_eq!(name(99), "signal 99");
        assert!(kills_by_default(libc::SIGTERM) && kills_by_default(libc::SIGRTMIN()));
        assert!(!kills_by_default(libc::SIGCHLD) && !kills_by_default(libc::SIGTSTP));
        for signal in 1..=libc::SIGRTMAX() {
            if signal == 32 || signal == 33 {
                continue; // glibc's own, not nameable
            }
            assert_eq!(parse(&name(signal)), Ok(signal), "{}", name(signal));
        }
    }

    #[test]
    fn own_dispositions() {
        // The test harness leaves SIGUSR2 at its default and SIGPIPE ignored (Rust's runtime).
        let me = std::process::id() as i32;
        assert_eq!(has_default_action(me, libc::SIGUSR2), Some(true));
        assert_eq!(has_default_action(me, libc::SIGPIPE), Some(false));
        assert_eq!(has_default_action(-5, libc::SIGSEGV), None);
    }

    #[test]
    fn fault_addresses() {
        let mut info = [0u8; 128];
        info[0..4].copy_from_slice(&libc::SIGSEGV.to_ne_bytes());
        info[8..12].copy_from_slice(&1i32.to_ne_bytes()); // SEGV_MAPERR
        info[16..24].copy_from_slice(&0xdead_beefu64.to_ne_bytes());
        assert_eq!(fault_address(libc::SIGSEGV, &info), Some(0xdead_beef));
        assert_eq!(fault_address(libc::SIGABRT, &info), None);
        info[8..12].copy_from_slice(&(-6i32).to_ne_bytes()); // SI_TKILL
        assert_eq!(fault_address(libc::SIGSEGV, &info), None);
    }
}
