//! The snapshot guardian: a small separate process that outlives a SIGKILLed dumper.
//!
//! When the dumper dies while a snapshot exists, the kernel kills the clone (EXITKILL), but the
//! clone's zombie belongs to the target and only a `wait4(__WALL)` inside the target can reap
//! it. The guardian is told which clone to look after; if its input closes without a `done`
//! line (the dumper is gone), it waits for the clone to die and reaps the zombie through one of
//! the target's threads, as [`Snapshot::finish`](super::Snapshot::finish) would have.
//!
//! It also takes over when the dumper is alive but could not clean up within its time (the
//! target exec'd again and again while it tried): [`Guardian::release`] then closes its input
//! without `done`, and the guardian, on its own, goes on trying for longer.
//!
//! The embedding program provides the guardian as a command (the `snapdump` binary runs
//! itself with a hidden subcommand that calls [`serve`]); a library user without one simply
//! has no guardian.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::ptrace::Options;

/// How to start a guardian: a program that calls [`serve`] on its standard input.
#[derive(Clone, Debug)]
pub struct GuardianCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// A running guardian. Dropping it tells it that all is well.
#[derive(Debug)]
pub struct Guardian {
    child: Option<Child>,
    input: Option<ChildStdin>,
    /// The clone it was last told to look after.
    watched: Option<Watched>,
}

impl Guardian {
    /// Start the guardian in its own process group (a Ctrl-C meant for the dumper must not
    /// reach it).
    pub fn spawn(command: &GuardianCommand) -> std::io::Result<Guardian> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        let input = child.stdin.take();
        Ok(Guardian {
            child: Some(child),
            input,
            watched: None,
        })
    }

    /// Look after this snapshot's clone.
    pub fn watch(&mut self, snapshot: &super::Snapshot) -> std::io::Result<()> {
        let watched = Watched {
            target: snapshot.target,
            child: snapshot.child,
            child_in_target: snapshot.child_in_target,
            start_time: snapshot.child_start_time,
            tid: snapshot.borrowed_tid,
            target_start_time: snapshot.target_start_time,
        };
        self.watched = Some(watched);
        let line = format!(
            "watch {} {} {} {} {} {}\n",
            watched.target,
            watched.child,
            watched.child_in_target,
            watched.start_time.unwrap_or(0),
            watched.tid,
            watched.target_start_time.unwrap_or(0),
        );
        self.send(&line)
    }

    fn send(&mut self, line: &str) -> std::io::Result<()> {
        match &mut self.input {
            Some(input) => {
                input.write_all(line.as_bytes())?;
                input.flush()
            }
            None => Ok(()),
        }
    }

    /// The snapshot was cleaned up: the guardian exits. If its clone is still there (the
    /// dumper could not reap it in time), the guardian is left to it instead: its input is
    /// closed without `done` and it is not waited for.
    pub fn release(mut self) {
        if let Some(w) = self.watched
            && self.input.is_some()
            && super::clone_remains(w.child, w.target, w.start_time)
        {
            tracing::warn!(
                target = w.target,
                clone = w.child,
                guardian = self.child.as_ref().map(Child::id),
                "the snapshot's clone is still a child of the target; the snapshot guardian \
                 goes on trying to reap it"
            );
            self.input = None;
            if let Some(mut child) = self.child.take() {
                // Collected in the background, so a long-lived dumper keeps no zombie.
                let _ = std::thread::Builder::new()
                    .name("snapdump-guardian-wait".into())
                    .spawn(move || child.wait());
            }
            return;
        }
        self.finish();
    }

    fn finish(&mut self) {
        let _ = self.send("done\n");
        self.input = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        if self.input.is_some() {
            self.finish();
        }
    }
}

/// How long the guardian tries to reap the clone's zombie.
const GUARDIAN_REAP_TIME: Duration = Duration::from_secs(30);

/// What a `watch` line names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Watched {
    target: i32,
    child: i32,
    child_in_target: i32,
    start_time: Option<u64>,
    tid: i32,
    target_start_time: Option<u64>,
}

fn parse_watch(line: &str) -> Option<Watched> {
    let mut words = line.strip_prefix("watch ")?.split_ascii_whitespace();
    let mut next = || words.next()?.parse::<i64>().ok();
    let target = next()? as i32;
    let child = next()? as i32;
    let child_in_target = next()? as i32;
    let start_time = next()? as u64;
    let tid = next()? as i32;
    let target_start_time = next().unwrap_or(0) as u64;
    Some(Watched {
        target,
        child,
        child_in_target,
        start_time: (start_time != 0).then_some(start_time),
        tid,
        target_start_time: (target_start_time != 0).then_some(target_start_time),
    })
}

/// The guardian's main loop: read `watch …` and `done` lines; at end of input without `done`,
/// reap the watched clone's zombie in the target. Returns what it did, for its exit message.
pub fn serve(input: impl Read) -> String {
    let mut watched = None;
    for line in BufReader::new(input).lines() {
        let Ok(line) = line else { break };
        if line == "done" {
            return "released".into();
        }
        if let Some(w) = parse_watch(&line) {
            watched = Some(w);
        }
    }
    let Some(w) = watched else {
        return "nothing to look after".into();
    };
    // EXITKILL's SIGKILL reaches the clone as its tracer dies; let it become a zombie.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !super::is_zombie_child(w.child, w.target, w.start_time) {
        if Instant::now() > deadline || crate::process::read_stat(w.child).is_err() {
            return format!("clone {} is gone or not a zombie of {}", w.child, w.target);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Longer than the dumper tries: nobody waits for the guardian.
    match super::reap_zombie(
        w.target,
        w.target_start_time,
        w.child,
        w.child_in_target,
        w.start_time,
        w.tid,
        Options::empty(),
        Instant::now() + GUARDIAN_REAP_TIME,
    ) {
        Ok(held) => format!(
            "reaped the clone {} inside pid {} ({} µs)",
            w.child,
            w.target,
            held.as_micros()
        ),
        Err(e) => format!("could not reap the clone {}: {e}", w.child),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_round_trip() {
        assert_eq!(
            parse_watch("watch 10 20 3 12345 11"),
            Some(Watched {
                target: 10,
                child: 20,
                child_in_target: 3,
                start_time: Some(12345),
                tid: 11,
                target_start_time: None,
            })
        );
        assert_eq!(
            parse_watch("watch 10 20 3 12345 11 999").and_then(|w| w.target_start_time),
            Some(999)
        );
        assert_eq!(parse_watch("watch 1 2"), None);
        assert_eq!(parse_watch("nonsense"), None);
        assert_eq!(serve(&b"done\n"[..]), "released");
        assert_eq!(serve(&b""[..]), "nothing to look after");
    }
}
