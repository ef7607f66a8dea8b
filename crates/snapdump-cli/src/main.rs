//! `snapdump`: the command line over the engine. Flags → a [`snapdump::DumpRequest`] → one
//! summary line. Everything else lives in the library.

mod dotnet;
mod inspect;
mod serve;
mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use snapdump::error::human_bytes;
use snapdump::{Cancel, DumpReport, DumpRequest, Error, Format, Mode, TargetSpec};

/// Dumps of live Linux processes that gdb, lldb and minidump tools open.
#[derive(Parser, Debug)]
#[command(name = "snapdump", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Dump a running process to a file, and let it run on.
    Dump(DumpArgs),
    /// List the processes that can be dumped.
    Ps(PsArgs),
    /// Show what a dump holds: process, threads, modules, memory and stacks.
    Inspect(inspect::InspectArgs),
    /// Watch a process and dump it when a trigger fires (CPU, memory, threads, fds, a
    /// signal, a crash, an exit).
    Watch(watch::WatchArgs),
    /// Serve dumps over an authenticated HTTP API shaped like dotnet-monitor's.
    Serve(serve::ServeArgs),
    /// Print a new API key and the config line that stores only its hash.
    Generatekey,
    /// Internal: the guardian a snapshot dump starts (reads its instructions on stdin).
    #[command(name = "__snapshot-guard", hide = true)]
    SnapshotGuard,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["pid", "name"])))]
#[command(group(clap::ArgGroup::new("modes").args(["mini", "triage", "heap", "full", "mode"])))]
struct DumpArgs {
    /// The process id to dump.
    #[arg(long, short = 'p')]
    pid: Option<i32>,

    /// The process to dump by name: its comm, its executable's file name or argv[0].
    #[arg(long, short = 'n', visible_alias = "pn")]
    name: Option<String>,

    /// Threads, registers and stacks only: enough for backtraces (≤ 1 MiB usually).
    #[arg(long)]
    mini: bool,

    /// Mini without what identifies the run: command-line arguments after argv[0] and the
    /// environment are left out, and blanked in memory (dotnet-monitor's Triage).
    #[arg(long, conflicts_with_all = ["runtime_dump", "dump_type"])]
    triage: bool,

    /// Mini plus all heap and anonymous memory and written data; no code (the default).
    #[arg(long)]
    heap: bool,

    /// Every readable mapping, code included.
    #[arg(long)]
    full: bool,

    /// The mode by name: mini, heap or full.
    #[arg(long, value_name = "MODE")]
    mode: Option<Mode>,

    /// The file format: elf (an ELF core, the default) or minidump.
    #[arg(long, value_name = "FORMAT", default_value = "elf")]
    format: Format,

    /// The output file, or an existing folder for a default-named file
    /// (<comm>_<pid>_<YYYYMMDD_HHMMSS>.core, or .dmp). Default: the current folder.
    #[arg(long, short = 'o', visible_short_alias = 'f', value_name = "PATH")]
    output: Option<PathBuf>,

    /// Replace the output file if it exists.
    #[arg(long)]
    overwrite: bool,

    /// Keep regions the process marked MADV_DONTDUMP (left out by default: they often hold
    /// secrets or huge caches).
    #[arg(long)]
    include_dontdump: bool,

    /// Space that must stay free on the output's filesystem, e.g. 500M or 2G.
    /// Default: 5% of the filesystem or 1 GiB, whichever is smaller.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    min_free: Option<u64>,

    /// Write a zstd stream (.zst), optionally at a level (1 fast, the default; up to 19).
    #[arg(long, value_name = "LEVEL", num_args = 0..=1, default_missing_value = "1",
          value_parser = clap::value_parser!(i32).range(1..=19))]
    compress: Option<i32>,

    /// Refuse a dump expected to be larger than SIZE (before compression), e.g. 2G.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,

    /// With --max-size: leave regions out until the dump fits (stacks and what backtraces
    /// need are kept first).
    #[arg(long, requires = "max_size")]
    truncate: bool,

    /// Clone the target copy-on-write and let it run on while the dump is written: the pause
    /// is the clone, not the dump (the default for --heap and --full).
    #[arg(long, overrides_with = "no_snapshot")]
    snapshot: bool,

    /// Keep the target stopped for the whole dump (the default for --mini).
    #[arg(long)]
    no_snapshot: bool,

    /// Stop the target just long enough to plan, print the regions and the estimated size,
    /// and write nothing.
    #[arg(long)]
    dry_run: bool,

    /// Log each phase.
    #[arg(long, short = 'v')]
    verbose: bool,

    /// Print only the path of the dump.
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    quiet: bool,

    /// Ask the target's .NET runtime to write the dump itself (its createdump, as dotnet-dump
    /// does). Naming, -o, --overwrite, --min-free and --compress apply; mode/format flags do not.
    #[arg(long, conflicts_with = "dry_run")]
    runtime_dump: bool,

    /// The runtime dump's type: Mini, WithHeap (the default), Triage or Full (implies
    /// --runtime-dump).
    #[arg(long = "type", value_name = "TYPE", conflicts_with = "dry_run")]
    dump_type: Option<snapdump::dotnet::DumpType>,
}

#[derive(Args, Debug)]
struct PsArgs {
    /// Also list processes that cannot be dumped.
    #[arg(long, short = 'a')]
    all: bool,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512M or 2G"))?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().trim_end_matches("IB") {
        "" | "B" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("unknown unit in {text:?}: use K, M, G or T")),
    };
    Ok((number * factor as f64) as u64)
}

/// Exit codes; the README lists them.
mod exit {
    pub const FAILURE: u8 = 1;
    pub const TARGET_NOT_FOUND: u8 = 3;
    pub const CANNOT_TRACE: u8 = 4;
    pub const OUTPUT: u8 = 5;
    pub const TARGET_EXITED: u8 = 6;
    pub const INTERRUPTED: u8 = 130;
}

fn exit_code(error: &Error) -> u8 {
    match error {
        Error::NoSuchProcess { .. }
        | Error::NoProcessNamed { .. }
        | Error::AmbiguousName { .. } => exit::TARGET_NOT_FOUND,
        Error::PermissionDenied { .. }
        | Error::AlreadyTraced { .. }
        | Error::Zombie { .. }
        | Error::KernelThread { .. }
        | Error::SelfDump { .. } => exit::CANNOT_TRACE,
        Error::OutputDirMissing { .. }
        | Error::OutputNotWritable { .. }
        | Error::OutputExists { .. }
        | Error::InsufficientSpace { .. }
        | Error::TooLarge { .. } => exit::OUTPUT,
        Error::TargetExited { .. } => exit::TARGET_EXITED,
        Error::Interrupted => exit::INTERRUPTED,
        Error::Ptrace { .. } | Error::Snapshot { .. } | Error::Io { .. } | Error::Parse { .. } => {
            exit::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Dump(args) => run_dump(args),
        Command::Ps(args) => run_ps(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Watch(args) => watch::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Generatekey => serve::generate_key(),
        Command::SnapshotGuard => {
            let outcome = snapdump::snapshot::guard::serve(std::io::stdin());
            if outcome.starts_with("reaped") || outcome.starts_with("could not") {
                eprintln!("snapdump guardian: {outcome}");
            }
            ExitCode::SUCCESS
        }
    }
}

fn init_logging(verbose: bool, quiet: bool) {
    let level = if verbose {
        tracing::Level::DEBUG
    } else if quiet {
        tracing::Level::ERROR
    } else {
        tracing::Level::WARN
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// SIGINT and SIGTERM set the cancel flag: the dump stops, the target is released and the
/// partial file removed. A second SIGINT or SIGTERM exits at once (the kernel still releases
/// the target).
fn cancel_on_signals() -> Cancel {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone());
        let _ = signal_hook::flag::register(signal, flag.clone());
    }
    Cancel::from_flag(flag)
}

fn run_dump(args: DumpArgs) -> ExitCode {
    init_logging(args.verbose, args.quiet);
    let mode = match (args.mini || args.triage, args.full, args.mode) {
        (true, _, _) => Mode::Mini,
        (_, true, _) => Mode::Full,
        (_, _, Some(mode)) => mode,
        _ => Mode::Heap,
    };
    let target = match (args.pid, args.name) {
        (Some(pid), _) => TargetSpec::Pid(pid),
        (None, Some(name)) => TargetSpec::Name(name),
        (None, None) => unreachable!("clap requires --pid or --name"),
    };
    let mut request = DumpRequest::new(target)
        .mode(mode)
        .format(args.format)
        .overwrite(args.overwrite)
        .redact(args.triage)
        .cancel(cancel_on_signals());
    request.output = args.output;
    request.include_dont_dump = args.include_dontdump;
    request.min_free = args.min_free;
    request.compress = args.compress;
    request.max_size = args.max_size;
    request.truncate = args.truncate;
    request.guardian =
        std::env::current_exe()
            .ok()
            .map(|program| snapdump::snapshot::guard::GuardianCommand {
                program,
                args: vec!["__snapshot-guard".into()],
            });
    request.snapshot = match (args.snapshot, args.no_snapshot) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    if args.runtime_dump || args.dump_type.is_some() {
        let dump_type = args.dump_type.unwrap_or_default();
        return dotnet::run_runtime_dump(&request, dump_type, args.quiet, exit_code);
    }
    if args.dry_run {
        return match snapdump::dry_run(&request) {
            Ok(report) => {
                print_dry_run(&report, args.quiet);
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("snapdump: error: {error}");
                ExitCode::from(exit_code(&error))
            }
        };
    }
    let bar = (!args.quiet && std::io::stderr().is_terminal()).then(progress_bar);
    if let Some(bar) = &bar {
        let bar = bar.clone();
        let shown_after = Instant::now() + Duration::from_secs(1);
        request.progress = Some(Arc::new(move |done, total| {
            if Instant::now() >= shown_after && bar.is_hidden() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            bar.set_length(total);
            bar.set_position(done);
        }));
    }
    let result = snapdump::dump(&request);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(report) => {
            println!("{}", report.path.display());
            if !args.quiet {
                eprintln!("{}", summary(&report));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("snapdump: error: {error}");
            ExitCode::from(exit_code(&error))
        }
    }
}

fn print_dry_run(report: &snapdump::DryRunReport, quiet: bool) {
    if !quiet {
        println!(
            "{:>18} {:>18} {:>12}  {:<6} MAPPING",
            "START", "END", "DATA", "STORED"
        );
        for region in &report.regions {
            println!(
                "{:#018x} {:#018x} {:>12}  {:<6} {}",
                region.start,
                region.end,
                human_bytes(region.data_bytes),
                if region.stored { "yes" } else { "no" },
                region.name
            );
        }
    }
    let stored = report.regions.iter().filter(|r| r.stored).count();
    println!(
        "estimate: {} bytes on disk ({}), {} apparent; {} of {} regions stored",
        report.estimated_disk_bytes,
        human_bytes(report.estimated_disk_bytes),
        human_bytes(report.estimated_file_len),
        stored,
        report.regions.len()
    );
    eprintln!(
        "snapdump: dry run, {} mode, {} (pid {}), {} threads: nothing written; target stopped {} ms",
        report.mode,
        report.name,
        report.pid,
        report.threads,
        millis(report.pause.total)
    );
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::hidden());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} dumping {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

fn millis(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn summary(report: &DumpReport) -> String {
    let pause = &report.pause;
    let parts = if report.snapshot {
        format!(
            "stop {}, registers {}, clone {}, resume {}",
            millis(pause.stop),
            millis(pause.registers),
            millis(pause.clone),
            millis(pause.resume)
        )
    } else {
        format!(
            "stop {}, registers {}, memory {}, resume {}",
            millis(pause.stop),
            millis(pause.registers),
            millis(pause.memory),
            millis(pause.resume)
        )
    };
    let mut line = format!(
        "snapdump: {} {} of {} (pid {}): {} threads, {} of {} regions stored, {} on disk \
         ({} apparent); target {} {} ms ({parts}); total {} ms",
        if report.redacted {
            format!("{} redacted", report.mode)
        } else {
            report.mode.to_string()
        },
        match report.format {
            Format::Elf => "core",
            Format::Minidump => "minidump",
        },
        report.name,
        report.pid,
        report.threads,
        report.stored_segments,
        report.segments,
        human_bytes(report.disk_bytes),
        human_bytes(report.file_len),
        if report.snapshot {
            "paused for a snapshot"
        } else {
            "stopped"
        },
        millis(pause.total),
        millis(report.elapsed),
    );
    if let Some(why) = &report.snapshot_refused {
        line += &format!("; no snapshot ({why})");
    }
    if report.dont_dump_skipped > 0 {
        line += &format!(
            "; {} MADV_DONTDUMP regions left out",
            report.dont_dump_skipped
        );
    }
    if report.truncated_bytes > 0 {
        line += &format!(
            "; {} left out to fit --max-size",
            human_bytes(report.truncated_bytes)
        );
    }
    if report.unreadable_bytes > 0 {
        line += &format!(
            "; {} could not be read (zeros in the dump)",
            human_bytes(report.unreadable_bytes)
        );
    }
    line
}

fn run_ps(args: PsArgs) -> ExitCode {
    println!(
        "{:>7}  {:<16} {:>10} {:>7}  {:<20} {:<12} COMMAND",
        "PID", "NAME", "RSS", "THREADS", "DUMPABLE", "RUNTIME"
    );
    for process in snapdump::process::find::list_processes() {
        if !args.all && process.not_dumpable.is_some() {
            continue;
        }
        let mut command = process.command_line.clone();
        if command.len() > 80 {
            command.truncate(command.floor_char_boundary(77));
            command.push_str("...");
        }
        println!(
            "{:>7}  {:<16} {:>10} {:>7}  {:<20} {:<12} {}",
            process.pid,
            process.name,
            human_bytes(process.rss_bytes),
            process.threads,
            process.not_dumpable.as_deref().unwrap_or("yes"),
            dotnet::describe(process.pid).unwrap_or_else(|| "-".into()),
            command
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3X").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
