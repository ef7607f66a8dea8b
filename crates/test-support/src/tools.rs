//! The real readers the tests prove dumps with: gdb, lldb, minidump-stackwalk. Each helper
//! runs the tool in batch mode with a time limit and returns everything it printed; a missing
//! tool is a test failure (CI installs them), never a silent skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a reader may take on one dump.
pub const READER_TIMEOUT: Duration = Duration::from_secs(120);

/// Run a command to completion with a time limit; stdout and stderr together.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> (Output, String) {
    let program = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    let start = Instant::now();
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => break,
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{program} did not finish within {timeout:?}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let output = child.wait_with_output().expect("collect output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// `gdb -batch -nx -ex CMD... EXE CORE`.
pub fn gdb(exe: &Path, core: &Path, commands: &[&str]) -> String {
    let mut command = Command::new("gdb");
    command.args(["-batch", "-nx"]);
    for c in commands {
        command.args(["-ex", c]);
    }
    command.arg(exe).arg(core);
    run_with_timeout(&mut command, READER_TIMEOUT).1
}

/// `lldb -b -c CORE EXE -o CMD...`.
pub fn lldb(exe: &Path, core: &Path, commands: &[&str]) -> String {
    let mut command = Command::new("lldb");
    command.arg("-b").arg("-c").arg(core).arg(exe);
    for c in commands {
        command.args(["-o", c]);
    }
    run_with_timeout(&mut command, READER_TIMEOUT).1
}

/// The `minidump-stackwalk` binary: on PATH or in `~/.cargo/bin`.
pub fn minidump_stackwalk() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("minidump-stackwalk"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    on_path
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            let p = Path::new(&home).join(".cargo/bin/minidump-stackwalk");
            p.is_file().then_some(p)
        })
        .expect("minidump-stackwalk is not installed: cargo install minidump-stackwalk")
}

/// Run `bin args…` with the engine's stall hook at `phase` (see `snapdump::fault`): wait until
/// it says it stalled, run `meanwhile` (change the world: kill the target, fill the disk), let
/// it go on, and return how it ended (stderr holds every line it printed).
pub fn run_stalled(bin: &Path, args: &[&str], phase: &str, meanwhile: impl FnOnce()) -> Output {
    use std::io::{BufRead, BufReader, Read};
    let release = std::env::temp_dir().join(format!(
        "snapdump-release-{}-{phase}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&release);
    let mut dumper = Command::new(bin)
        .args(args)
        .env("SNAPDUMP_STALL_AT", phase)
        .env("SNAPDUMP_STALL_RELEASE", &release)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stderr = BufReader::new(dumper.stderr.take().expect("piped stderr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wanted = format!("stalled at {phase}");
    let mut said = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{} never reached {phase}: {said:?}", bin.display()));
        let done = line.contains(&wanted);
        said.push(line);
        if done {
            break;
        }
    }
    meanwhile();
    std::fs::write(&release, b"").expect("create the release file");
    // A dumper that hangs after the release is a failure, not a test that never ends.
    let deadline = Instant::now() + READER_TIMEOUT;
    let status = loop {
        if let Some(status) = dumper.try_wait().expect("wait for the dumper") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = dumper.kill();
            let _ = dumper.wait();
            said.extend(rx.try_iter());
            panic!(
                "{} did not finish within {READER_TIMEOUT:?} of the release from {phase}: {said:?}",
                bin.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = Vec::new();
    dumper
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_end(&mut stdout)
        .expect("read stdout");
    let _ = std::fs::remove_file(&release);
    said.extend(rx.iter());
    Output {
        status,
        stdout,
        stderr: said.join("\n").into_bytes(),
    }
}
