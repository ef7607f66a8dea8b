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
