//! The command line's .NET pieces: the `snapdump ps` column and `snapdump dump
//! --runtime-dump`, which asks a .NET runtime to write the dump itself (as dotnet-dump does)
//! under snapdump's naming, partial-file, free-space and overwrite rules.

use std::process::ExitCode;

use snapdump::DumpRequest;
use snapdump::dotnet::{self, DotnetError, DumpType, RuntimeDumpReport};
use snapdump::error::human_bytes;

/// Exit codes for the failures that are .NET's own (the README lists them); the engine's
/// errors keep the codes `snapdump dump` gives them.
mod exit {
    pub const FAILURE: u8 = 1;
    /// Not a .NET process, or its runtime has no diagnostics socket.
    pub const TARGET_NOT_FOUND: u8 = 3;
    /// Not allowed to talk to the runtime.
    pub const CANNOT_TRACE: u8 = 4;
}

/// What `snapdump ps` shows for a .NET process: `.NET 3.1.23`, with the runtime instance
/// cookie (dotnet-monitor's `uid`) when the runtime gives one; `None` for other processes.
pub fn describe(pid: i32) -> Option<String> {
    let found = dotnet::detect(pid)?;
    Some(describe_found(&found))
}

fn describe_found(found: &dotnet::DotnetProcess) -> String {
    let mut text = format!(
        ".NET {}",
        found
            .runtime_version
            .as_deref()
            .unwrap_or("(unknown version)")
    );
    if let Some(cookie) = &found.instance_cookie {
        text += &format!(" uid={cookie}");
        if found.cookie_synthesized {
            text += " (snapdump's: this runtime has no instance cookie)";
        }
    }
    text
}

/// The exit code for a failed runtime dump; `engine` maps the engine's own errors.
pub fn exit_code(error: &DotnetError, engine: impl Fn(&snapdump::Error) -> u8) -> u8 {
    match error {
        DotnetError::Engine(e) => engine(e),
        DotnetError::NotDotnet { .. }
        | DotnetError::NoSocket { .. }
        | DotnetError::SocketMissing { .. }
        | DotnetError::NotListening { .. } => exit::TARGET_NOT_FOUND,
        DotnetError::SocketPermission { .. } | DotnetError::OtherUser { .. } => exit::CANNOT_TRACE,
        _ => exit::FAILURE,
    }
}

/// `snapdump dump --runtime-dump [--type T]`: the runtime writes a dump of type `dump_type`
/// for `request`'s target into `request`'s output. Prints the path on stdout and, unless
/// `quiet`, a summary on stderr. `engine_exit_code` maps the engine's errors as `snapdump
/// dump` does.
pub fn run_runtime_dump(
    request: &DumpRequest,
    dump_type: DumpType,
    quiet: bool,
    engine_exit_code: impl Fn(&snapdump::Error) -> u8,
) -> ExitCode {
    match dotnet::runtime_dump_request(request, dump_type) {
        Ok(report) => {
            println!("{}", report.path.display());
            if !quiet {
                eprintln!("{}", summary(&report));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("snapdump: error: {error}");
            ExitCode::from(exit_code(&error, engine_exit_code))
        }
    }
}

/// The one-line summary of a runtime dump.
pub fn summary(report: &RuntimeDumpReport) -> String {
    let command = match report.command_id {
        1 => "GenerateCoreDump".to_owned(),
        n => format!("GenerateCoreDump{n}"),
    };
    let mut line = format!(
        "snapdump: {} runtime dump of {} (pid {}, {}) written by the runtime's createdump \
         ({command}): {} on disk ({} long); createdump took {} ms (it holds the target while \
         it writes); total {} ms",
        report.dump_type,
        report.name,
        report.pid,
        describe_found(&report.runtime),
        human_bytes(report.disk_bytes),
        human_bytes(report.file_len),
        millis(report.runtime_elapsed),
        millis(report.elapsed),
    );
    if report.staged {
        line += "; written in the target's temporary folder and copied here";
    }
    line
}

fn millis(d: std::time::Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let engine = |_: &snapdump::Error| 5;
        assert_eq!(exit_code(&DotnetError::NotDotnet { pid: 1 }, engine), 3);
        assert_eq!(
            exit_code(&DotnetError::Engine(snapdump::Error::Interrupted), engine),
            5
        );
        assert_eq!(
            exit_code(
                &DotnetError::SocketPermission {
                    socket: "/tmp/s".into()
                },
                engine
            ),
            4
        );
    }
}
