//! `snapdump watch`: ProcDump-style triggers over the engine's watcher
//! ([`snapdump::watch`]). Flags → a [`WatchSpec`] → one line per thing that happens.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args};
use snapdump::watch::{EndReason, Triggers, WatchEnd, WatchEvent, WatchSpec, WatchTarget};
use snapdump::{DumpRequest, Format, Mode, TargetSpec};

/// Watch a process and dump it when a trigger fires: CPU, memory, threads, fds, a signal, a
/// crash, an exit — or, with no trigger, now and then every -s seconds.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["pid", "name"])))]
#[command(group(ArgGroup::new("modes").args(["mini", "triage", "heap", "full", "mode"])))]
pub struct WatchArgs {
    /// The process id to watch.
    #[arg(long, short = 'p')]
    pid: Option<i32>,

    /// The process to watch by name: its comm, its executable's file name or argv[0].
    #[arg(long, visible_alias = "pn")]
    name: Option<String>,

    /// With --name: wait for such a process to appear, and when it exits, for the next one.
    #[arg(long, requires = "name")]
    wait: bool,

    /// Dump when CPU use over the polling interval reaches PCT percent of one core (like top:
    /// 200 is two cores busy).
    #[arg(long, value_name = "PCT", help_heading = "Triggers")]
    cpu: Option<f64>,

    /// Dump when CPU use drops below PCT percent.
    #[arg(long, value_name = "PCT", help_heading = "Triggers")]
    cpu_below: Option<f64>,

    /// Dump when resident memory reaches MB MiB.
    #[arg(long, value_name = "MB", help_heading = "Triggers")]
    mem: Option<u64>,

    /// Dump when resident memory drops below MB MiB.
    #[arg(long, value_name = "MB", help_heading = "Triggers")]
    mem_below: Option<u64>,

    /// Dump when the process has N threads or more.
    #[arg(long, value_name = "N", help_heading = "Triggers")]
    threads: Option<u64>,

    /// Dump when the process has N open file descriptors or more.
    #[arg(long, value_name = "N", help_heading = "Triggers")]
    fds: Option<u64>,

    /// Dump when the process is about to receive SIG (SIGUSR1, USR1, 10, SIGRTMIN+1...), then
    /// deliver it unchanged. Repeat for several. Traces the process.
    #[arg(long, value_name = "SIG", value_parser = parse_signal, help_heading = "Triggers")]
    signal: Vec<i32>,

    /// Dump when the process is about to die of SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT,
    /// SIGSYS or SIGTRAP (not handled by the program), with the faulting thread and the signal
    /// recorded, then let it die as it would have. Traces the process.
    #[arg(long, help_heading = "Triggers")]
    on_crash: bool,

    /// Dump when the process is exiting (exit, or a fatal signal; not SIGKILL). Traces the
    /// process.
    #[arg(long, help_heading = "Triggers")]
    on_exit: bool,

    /// Dumps to take before stopping.
    #[arg(short = 'n', long = "count", value_name = "COUNT", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,

    /// The least time between two dumps, in seconds (crashes and exits are dumped whatever it
    /// says).
    #[arg(short = 's', long = "spacing", value_name = "SECONDS", default_value = "10",
          value_parser = parse_seconds)]
    spacing: Duration,

    /// How often to sample CPU, memory, threads and fds, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..))]
    poll: u64,

    /// Stop watching after SECONDS (exit 0, saying no trigger fired if none did).
    #[arg(long = "for", value_name = "SECONDS", value_parser = parse_seconds)]
    duration: Option<Duration>,

    /// The folder for the dumps (<comm>_<pid>_<YYYYMMDD_HHMMSS>_<trigger>.core, or .dmp).
    /// Default: the current folder.
    #[arg(long, short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,

    /// Threads, registers and stacks only: enough for backtraces.
    #[arg(long, help_heading = "Dumps")]
    mini: bool,

    /// Mini without what identifies the run: command-line arguments after argv[0] and the
    /// environment are left out, and blanked in memory (dotnet-monitor's Triage).
    #[arg(long, help_heading = "Dumps")]
    triage: bool,

    /// Mini plus all heap and anonymous memory and written data; no code (the default).
    #[arg(long, help_heading = "Dumps")]
    heap: bool,

    /// Every readable mapping, code included.
    #[arg(long, help_heading = "Dumps")]
    full: bool,

    /// The mode by name: mini, heap or full.
    #[arg(long, value_name = "MODE", help_heading = "Dumps")]
    mode: Option<Mode>,

    /// The file format: elf (an ELF core, the default) or minidump.
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "elf",
        help_heading = "Dumps"
    )]
    format: Format,

    /// Write zstd streams (.zst), optionally at a level (1 fast, the default; up to 19).
    #[arg(long, value_name = "LEVEL", num_args = 0..=1, default_missing_value = "1",
          value_parser = clap::value_parser!(i32).range(1..=19), help_heading = "Dumps")]
    compress: Option<i32>,

    /// Space that must stay free on the output's filesystem, e.g. 500M or 2G.
    #[arg(long, value_name = "SIZE", value_parser = crate::parse_size, help_heading = "Dumps")]
    min_free: Option<u64>,

    /// Keep regions the process marked MADV_DONTDUMP.
    #[arg(long, help_heading = "Dumps")]
    include_dontdump: bool,

    /// Keep the target stopped for the whole of each threshold or timer dump instead of
    /// dumping a copy-on-write snapshot (heap and full dumps snapshot by default).
    #[arg(long, help_heading = "Dumps")]
    no_snapshot: bool,

    /// Log each phase.
    #[arg(long, short = 'v')]
    verbose: bool,

    /// Print only the dumps' paths (and errors).
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    quiet: bool,
}

fn parse_signal(text: &str) -> Result<i32, String> {
    let signal = snapdump::watch::signals::parse(text)?;
    if signal == SIGKILL {
        return Err("SIGKILL cannot be watched: it is never reported to a tracer".into());
    }
    Ok(signal)
}

/// SIGKILL's number on every Linux architecture.
const SIGKILL: i32 = 9;

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a duration"))
}

/// `10 s`, `0.5 s`.
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

impl WatchArgs {
    fn spec(&self, cancel: snapdump::Cancel) -> WatchSpec {
        let target = match (&self.pid, &self.name) {
            (Some(pid), _) => WatchTarget::Pid(*pid),
            (None, Some(name)) => WatchTarget::Name {
                name: name.clone(),
                wait: self.wait,
            },
            (None, None) => unreachable!("clap requires --pid or --name"),
        };
        let mode = match (self.mini || self.triage, self.full, self.mode) {
            (true, _, _) => Mode::Mini,
            (_, true, _) => Mode::Full,
            (_, _, Some(mode)) => mode,
            _ => Mode::Heap,
        };
        let mut dump = DumpRequest::new(TargetSpec::Pid(0))
            .mode(mode)
            .format(self.format)
            .redact(self.triage)
            .cancel(cancel);
        dump.output = self.output.clone();
        dump.compress = self.compress;
        dump.min_free = self.min_free;
        dump.include_dont_dump = self.include_dontdump;
        if self.no_snapshot {
            dump.snapshot = Some(false);
        }
        let mut spec = WatchSpec::new(target);
        spec.triggers = Triggers {
            cpu_above: self.cpu,
            cpu_below: self.cpu_below,
            mem_above: self.mem.map(|mb| mb << 20),
            mem_below: self.mem_below.map(|mb| mb << 20),
            threads: self.threads,
            fds: self.fds,
            signals: self.signal.clone(),
            on_crash: self.on_crash,
            on_exit: self.on_exit,
        };
        spec.count = self.count;
        spec.spacing = self.spacing;
        spec.poll = Duration::from_millis(self.poll);
        spec.duration = self.duration;
        spec.dump = dump;
        spec
    }
}

fn plural(count: u32, word: &str) -> String {
    if count == 1 {
        format!("{count} {word}")
    } else {
        format!("{count} {word}s")
    }
}

/// One stderr line per event; each dump's path on stdout.
fn print_event(spec: &WatchSpec, event: &WatchEvent<'_>, quiet: bool) {
    if let WatchEvent::Dumped { report, .. } = event {
        println!("{}", report.path.display());
    }
    if quiet {
        return;
    }
    let line = match event {
        WatchEvent::Waiting { name } => format!("waiting for a process named {name}"),
        WatchEvent::Watching { pid, name, traced } => {
            let what = if spec.triggers.is_empty() {
                format!(
                    "a dump now and one every {}, {} in all",
                    seconds(spec.spacing),
                    spec.count
                )
            } else if spec.count == 1 {
                format!("for {}: 1 dump", spec.triggers)
            } else {
                format!(
                    "for {}: {} dumps at least {} apart",
                    spec.triggers,
                    spec.count,
                    seconds(spec.spacing)
                )
            };
            format!(
                "watching pid {pid} ({name}){}{what}, into {}{}",
                if spec.triggers.is_empty() { ": " } else { " " },
                spec.output_dir().display(),
                if *traced { " (traced)" } else { "" }
            )
        }
        WatchEvent::Dumped {
            pid,
            fired,
            number,
            count,
            report,
        } => format!(
            "{fired} (pid {pid}): dump {number} of {count} -> {}",
            report.path.display()
        ),
        WatchEvent::DumpFailed {
            pid,
            fired,
            number,
            count,
            error,
        } => format!("{fired} (pid {pid}): dump {number} of {count} failed: {error}"),
        WatchEvent::Skipped {
            pid,
            fired,
            since_last,
        } => format!(
            "{fired} (pid {pid}): no dump, the last one was {:.1} s ago (-s {})",
            since_last.as_secs_f64(),
            seconds(spec.spacing)
        ),
        WatchEvent::Ended { pid, how } => format!("pid {pid} {how}"),
    };
    eprintln!("snapdump: {line}");
}

fn end_message(spec: &WatchSpec, end: &WatchEnd) -> String {
    let taken = format!("{} of {} taken", end.dumps, plural(spec.count, "dump"));
    match end.reason {
        EndReason::CountReached => format!("{taken}; done"),
        EndReason::TargetEnded { pid, .. } => {
            format!("stopped watching: pid {pid} ended; {taken}")
        }
        EndReason::TimeUp if end.dumps == 0 => format!(
            "no trigger fired in {}; done",
            seconds(spec.duration.unwrap_or_default())
        ),
        EndReason::TimeUp => format!(
            "watched for {}; {taken}; done",
            seconds(spec.duration.unwrap_or_default())
        ),
        EndReason::Interrupted => match end.pid {
            Some(pid) => {
                format!("interrupted: stopped watching, {taken}; pid {pid} left running, untraced")
            }
            None => format!("interrupted: stopped watching, {taken}"),
        },
    }
}

/// `snapdump watch`.
pub fn run(args: WatchArgs) -> ExitCode {
    crate::init_logging(args.verbose, args.quiet);
    let spec = args.spec(crate::cancel_on_signals());
    let quiet = args.quiet;
    let mut on_event = |event: &WatchEvent<'_>| print_event(&spec, event, quiet);
    match snapdump::watch::watch(&spec, &mut on_event) {
        Ok(end) => {
            if !quiet {
                eprintln!("snapdump: {}", end_message(&spec, &end));
            }
            if end.reason == EndReason::Interrupted {
                ExitCode::from(crate::exit::INTERRUPTED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("snapdump: error: {error}");
            ExitCode::from(crate::exit_code(&error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
        assert_eq!(parse_signal("USR1").unwrap(), 10);
        assert!(parse_signal("KILL").is_err());
        assert_eq!(seconds(Duration::from_secs(10)), "10 s");
    }
}
