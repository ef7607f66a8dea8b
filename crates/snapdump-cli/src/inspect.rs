//! `snapdump inspect`: what is in a dump (ELF core or minidump, plain or .zst), as text or one
//! JSON document. The reading lives in the `snapdump-inspect` crate; this is flags and output.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use snapdump_inspect::text::Sections;
use snapdump_inspect::{Options, Report};

/// Exit statuses of `snapdump inspect` (0: read completely).
pub mod exit {
    /// The file could not be read at all: missing, not a dump, cut inside its headers.
    pub const UNREADABLE: u8 = 1;
    /// The dump was read in part: what could be read is printed, the damage is listed.
    pub const DAMAGED: u8 = 7;
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The dump: an ELF core (snapdump, gcore, the kernel) or a minidump (snapdump, Breakpad,
    /// Crashpad), plain or zstd-compressed.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Print one JSON document (every section; stacks with --stacks) instead of text. The
    /// schema is crates/snapdump-inspect/SCHEMA.md.
    #[arg(long)]
    pub json: bool,

    /// Unwind and symbolize every thread's stack, with the module files found at their
    /// recorded paths (or under --sysroot).
    #[arg(long)]
    pub stacks: bool,

    /// Show the threads (any of --threads, --modules, --memory shows only those sections).
    #[arg(long)]
    pub threads: bool,

    /// Show the modules.
    #[arg(long)]
    pub modules: bool,

    /// Show the memory totals and every region.
    #[arg(long)]
    pub memory: bool,

    /// Look for module files under DIR first (DIR joined with each recorded path), e.g. a
    /// copy of the crashed machine's root.
    #[arg(long, value_name = "DIR")]
    pub sysroot: Option<PathBuf>,
}

pub fn run(args: InspectArgs) -> ExitCode {
    ExitCode::from(status(&args))
}

/// Reads, prints, and gives the exit status.
fn status(args: &InspectArgs) -> u8 {
    let options = Options {
        stacks: args.stacks,
        sysroot: args.sysroot.clone(),
    };
    let report = match snapdump_inspect::inspect(&args.file, &options) {
        Ok(report) => report,
        Err(error @ snapdump_inspect::Error::Io { .. }) => {
            eprintln!("snapdump: error: {error}");
            return exit::UNREADABLE;
        }
        Err(error) => {
            eprintln!("snapdump: error: {}: {error}", args.file.display());
            return exit::UNREADABLE;
        }
    };
    let sections = Sections {
        threads: args.threads,
        modules: args.modules,
        memory: args.memory,
    };
    if let Err(error) = print(&report, args.json, &sections) {
        if error.kind() == io::ErrorKind::BrokenPipe {
            return 0;
        }
        eprintln!("snapdump: error: writing the report: {error}");
        return exit::UNREADABLE;
    }
    let status = exit_status(&report);
    if status == exit::DAMAGED {
        eprintln!(
            "snapdump: {} is damaged: {} problem{} (listed in the report); the rest was read",
            args.file.display(),
            report.errors.len(),
            if report.errors.len() == 1 { "" } else { "s" }
        );
    }
    status
}

fn print(report: &Report, json: bool, sections: &Sections) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        report.write_json(&mut out)?;
    } else {
        out.write_all(snapdump_inspect::text::render(report, sections).as_bytes())?;
    }
    out.flush()
}

/// 0 for a dump read completely, [`exit::DAMAGED`] when the report lists damage.
pub fn exit_status(report: &Report) -> u8 {
    if report.errors.is_empty() {
        0
    } else {
        exit::DAMAGED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Wrapper {
        #[command(flatten)]
        args: InspectArgs,
    }

    #[test]
    fn flags_parse() {
        use clap::CommandFactory;
        Wrapper::command().debug_assert();
        let w = Wrapper::try_parse_from([
            "inspect",
            "x.core",
            "--json",
            "--stacks",
            "--memory",
            "--sysroot",
            "/srv/root",
        ])
        .unwrap();
        assert!(w.args.json && w.args.stacks && w.args.memory);
        assert!(!w.args.threads && !w.args.modules);
        assert_eq!(w.args.sysroot, Some(PathBuf::from("/srv/root")));
        assert!(
            Wrapper::try_parse_from(["inspect"]).is_err(),
            "FILE is required"
        );
    }

    #[test]
    fn unreadable_and_damaged_exit_non_zero() {
        let dir = std::env::temp_dir().join(format!("snapdump-inspect-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let random = dir.join("random.bin");
        std::fs::write(&random, b"this is not a dump at all").unwrap();
        let args = |file: &std::path::Path| InspectArgs {
            file: file.to_path_buf(),
            json: true,
            stacks: false,
            threads: false,
            modules: false,
            memory: false,
            sysroot: None,
        };
        assert_eq!(status(&args(&random)), exit::UNREADABLE);
        assert_eq!(status(&args(&dir.join("missing.core"))), exit::UNREADABLE);
        let elf_header_only = dir.join("cut.core");
        std::fs::write(&elf_header_only, b"\x7fELF\x02\x01\x01").unwrap();
        assert_eq!(status(&args(&elf_header_only)), exit::UNREADABLE);
        let damaged = Report {
            errors: vec!["truncated".into()],
            ..Report::default()
        };
        assert_eq!(exit_status(&damaged), exit::DAMAGED);
        assert_eq!(exit_status(&Report::default()), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
