//! Shared by the integration tests: dumps of the test target written by snapdump, gcore, the
//! kernel and minidump-writer, and the checks every readable dump of it must pass.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use object::Object;
use snapdump_inspect::{Options, Report};
use snapdump_test_support::Ready;

/// The test target's threads (READY order) and the function each one is parked in.
pub const THREADS: [(&str, &str); 4] = [
    ("sd-reader", "target_blocked_in_read"),
    ("sd-sleeper", "target_sleeping"),
    ("sd-waiter", "target_waiting_on_futex"),
    ("sd-spinner", "target_spinning"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => workspace().join(d),
        None => workspace().join("target"),
    }
}

/// `<target>/debug/snapdump`, built once per test process (`cargo build -p snapdump-cli`;
/// when that fails and a binary exists, the existing one is used, with a note).
pub fn snapdump_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = target_dir().join("debug/snapdump");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "-q", "-p", "snapdump-cli"])
            .current_dir(workspace())
            .status()
            .is_ok_and(|s| s.success());
        if !built {
            assert!(
                bin.exists(),
                "cargo build -p snapdump-cli failed and {} is missing",
                bin.display()
            );
            eprintln!(
                "NOTE: cargo build -p snapdump-cli failed; using the existing {}",
                bin.display()
            );
        }
        bin
    })
    .clone()
}

/// A fresh folder under the system's temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("snapdump-inspect-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `snapdump dump --pid PID ARGS -o OUT`: Ok, or Err with its stderr.
pub fn snapdump_dump(pid: i32, args: &[&str], out: &Path) -> Result<(), String> {
    let output = Command::new(snapdump_bin())
        .args(["dump", "-q", "--pid", &pid.to_string()])
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run snapdump");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// A minidump of `pid` written by the minidump-writer crate (Breakpad's Linux writer ported
/// to Rust): our stand-in for Breakpad/Crashpad.
pub fn minidump_writer_dump(pid: i32, out: &Path) {
    let mut file = std::fs::File::create(out).unwrap();
    minidump_writer::minidump_writer::MinidumpWriterConfig::new(pid, pid)
        .write(&mut file)
        .expect("minidump-writer");
}

/// gdb's `gcore` of `pid` into `dir`; None (with a note on stderr) when gcore is missing.
pub fn gcore(pid: i32, dir: &Path) -> Option<PathBuf> {
    let prefix = dir.join("gcore");
    let output = match Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(pid.to_string())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED: gcore cannot be run ({e}); install gdb");
            return None;
        }
    };
    let core = dir.join(format!("gcore.{pid}"));
    assert!(
        core.exists(),
        "gcore wrote no core: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(core)
}

pub fn inspect(path: &Path, stacks: bool) -> Report {
    let options = Options {
        stacks,
        ..Options::default()
    };
    snapdump_inspect::inspect(path, &options)
        .unwrap_or_else(|e| panic!("inspect {}: {e}", path.display()))
}

fn build_id(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let file = object::File::parse(bytes.as_slice()).ok()?;
    let id = file.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// What a dump of the test target must show.
pub struct Expect {
    /// The threads' names are in the dump (minidumps; ELF cores only name the main thread).
    pub names: bool,
    /// `--stacks` was asked for: each thread's known function must be in its stack.
    pub stacks: bool,
}

/// Checks a report of the test target against what the target is: every thread, the names,
/// the executable and libc with build ids, the known function in each thread's stack, and
/// the JSON document's shape. Panics with the whole text report when something is off.
pub fn check_target(report: &Report, ready: &Ready, exe: &Path, expect: Expect) {
    let shown = snapdump_inspect::text::render(report, &Default::default());
    let fail = |what: String| -> ! { panic!("{what}\n--- report ---\n{shown}") };

    if !report.errors.is_empty() {
        fail(format!("errors in an intact dump: {:?}", report.errors));
    }

    // Threads: the main thread and the four named ones, nothing else.
    let mut tids: Vec<u32> = report.threads.iter().map(|t| t.tid).collect();
    tids.sort_unstable();
    let mut expected: Vec<u32> = ready.tids.iter().map(|&t| t as u32).collect();
    expected.push(ready.pid as u32);
    expected.sort_unstable();
    if tids != expected {
        fail(format!("threads {tids:?}, expected {expected:?}"));
    }
    let name_of = |tid: i32| {
        report
            .threads
            .iter()
            .find(|t| t.tid == tid as u32)
            .and_then(|t| t.name.clone())
    };
    if !name_of(ready.pid).is_some_and(|n| n.starts_with("snapdump-test")) {
        fail(format!("main thread name {:?}", name_of(ready.pid)));
    }
    if expect.names {
        for (i, (name, _)) in THREADS.iter().enumerate() {
            if name_of(ready.tids[i]).as_deref() != Some(*name) {
                fail(format!(
                    "thread {} is named {:?}, expected {name}",
                    ready.tids[i],
                    name_of(ready.tids[i])
                ));
            }
        }
    }
    if report.process.pid != Some(ready.pid as u32) {
        fail(format!("pid {:?}", report.process.pid));
    }

    // Modules: the executable (with the build id of the file) and libc.
    let exe_text = exe.display().to_string();
    let Some(main) = report.modules.iter().find(|m| m.path == exe_text) else {
        fail(format!("no module {exe_text}"));
    };
    if main.build_id.is_none() || main.build_id != build_id(exe) {
        fail(format!(
            "executable build id {:?}, the file's {:?}",
            main.build_id,
            build_id(exe)
        ));
    }
    if !report
        .modules
        .iter()
        .any(|m| m.path.contains("/libc.so") && m.build_id.is_some() && m.size > 0)
    {
        fail("no libc module with a build id".into());
    }
    if report.process.executable.as_deref() != Some(exe_text.as_str()) {
        fail(format!("executable {:?}", report.process.executable));
    }
    if report.memory.regions == 0
        || !report
            .regions
            .iter()
            .any(|r| r.kind == snapdump_inspect::RegionKind::Stack && r.stored > 0)
    {
        fail("no stack region with contents".into());
    }

    // Stacks: each thread is in its function.
    if expect.stacks {
        let Some(stacks) = &report.stacks else {
            fail("no stacks".into());
        };
        for (i, (name, function)) in THREADS.iter().enumerate() {
            let tid = ready.tids[i] as u32;
            let Some(stack) = stacks.iter().find(|s| s.tid == tid) else {
                fail(format!("no stack for {name} ({tid})"));
            };
            if !stack
                .frames
                .iter()
                .any(|f| f.function.as_deref().is_some_and(|n| n.contains(function)))
            {
                let frames: Vec<String> = stack
                    .frames
                    .iter()
                    .map(snapdump_inspect::text::frame_line)
                    .collect();
                fail(format!(
                    "{name} ({tid}): no frame in {function}:\n{}",
                    frames.join("\n")
                ));
            }
        }
    }

    // The JSON document has the documented shape.
    let json = serde_json::to_value(report).unwrap();
    for key in [
        "format", "process", "threads", "modules", "regions", "memory",
    ] {
        if json.get(key).is_none() {
            fail(format!("JSON without {key}"));
        }
    }
    if expect.stacks && json["stacks"].as_array().map(Vec::len) != Some(report.threads.len()) {
        fail("JSON stacks missing".into());
    }
    let ip = json["threads"][0]["ip"].as_str().unwrap_or_default();
    if !ip.starts_with("0x") {
        fail(format!("JSON ip {ip:?} is not a hex string"));
    }
}
