//! `snapdump dump --triage`: a mini dump without what identifies the run. The test target runs
//! with a secret in its environment and another in its arguments; the mini dump of it holds
//! both (so these checks can fail), the triage dumps hold neither anywhere in the file, yet gdb
//! and minidump-stackwalk still name every thread's function.

mod common;

use common::{snapdump, temp_dir, text};
use std::path::Path;
use std::process::Command;

use minidump::Minidump;
use minidump::format::MINIDUMP_STREAM_TYPE as Stream;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, elf};
use snapdump_test_support::{Target, assert_running_untraced, find_subsequence, tools};

const KNOWN_FUNCTIONS: [&str; 4] = [
    "target_blocked_in_read",
    "target_sleeping",
    "target_waiting_on_futex",
    "target_spinning",
];

/// Strings no other run of anything would hold.
fn secrets() -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let tag = format!("{}x{nanos:08x}", std::process::id());
    (format!("hunter2-{tag}"), format!("argsecret-{tag}"))
}

fn dump(pid: i32, flags: &[&str], path: &Path) -> Vec<u8> {
    let pid = pid.to_string();
    let mut args = vec!["dump", "--pid", &pid, "-o", path.to_str().unwrap()];
    args.extend(flags);
    let out = snapdump(&args);
    assert!(
        out.status.success(),
        "snapdump {flags:?} failed: {}",
        text(&out.stderr)
    );
    std::fs::read(path).unwrap()
}

/// NT_PRPSINFO's pr_psargs, up to its NUL.
fn psargs(core: &[u8]) -> Vec<u8> {
    let file = ElfFile64::<Endianness>::parse(core).unwrap();
    let endian = file.endian();
    let notes_header = &file.elf_program_headers()[0];
    assert_eq!(notes_header.p_type(endian), elf::PT_NOTE);
    let mut notes = notes_header.notes(endian, core).unwrap().unwrap();
    while let Some(note) = notes.next().unwrap() {
        if note.n_type(endian) == elf::NT_PRPSINFO {
            let args = &note.desc()[56..136];
            let len = args.iter().position(|&b| b == 0).unwrap_or(args.len());
            return args[..len].to_vec();
        }
    }
    panic!("no NT_PRPSINFO note");
}

#[test]
fn triage_dumps_hold_no_arguments_or_environment() {
    let (env_secret, arg_secret) = secrets();
    let mut target = Target::spawn_with_env(
        &["--label", &arg_secret],
        &[("SNAPDUMP_TEST_SECRET", &env_secret)],
    );
    let ready = target.ready().clone();
    let exe = target.exe_path();
    let argv0 = exe.to_str().unwrap().as_bytes().to_vec();
    let dir = temp_dir("triage");
    let found = |bytes: &[u8], what: &str| find_subsequence(bytes, what.as_bytes()).is_some();

    // The control: a mini dump keeps both, at the top of the main thread's stack.
    for format in ["elf", "minidump"] {
        let mini = dump(
            ready.pid,
            &["--mini", "--format", format],
            &dir.join(format!("mini.{format}")),
        );
        assert!(found(&mini, &env_secret), "{format}: mini lacks the env");
        assert!(found(&mini, &arg_secret), "{format}: mini lacks the args");
    }

    // ELF, stopped and from a snapshot (another memory source).
    for (name, flags) in [
        ("triage.core", &["--triage"][..]),
        ("triage-snapshot.core", &["--triage", "--snapshot"][..]),
    ] {
        let path = dir.join(name);
        let core = dump(ready.pid, flags, &path);
        assert_running_untraced(ready.pid);
        assert!(
            !found(&core, &env_secret),
            "{name}: the env secret is in it"
        );
        assert!(
            !found(&core, &arg_secret),
            "{name}: the arg secret is in it"
        );
        let wanted = &argv0[..argv0.len().min(79)];
        assert_eq!(
            psargs(&core),
            wanted,
            "{name}: psargs is {:?}",
            text(&psargs(&core))
        );
        // snapdump's note says the dump is redacted.
        assert!(
            found(&core, "mode=mini\nredacted=args,environ\n"),
            "{name}: no redaction in the SNAPDUMP note"
        );
        // argv[0] itself is kept in memory too.
        assert!(
            find_subsequence(&core, &argv0).is_some(),
            "{name}: no argv[0]"
        );
        let gdb = tools::gdb(&exe, &path, &["info threads", "thread apply all bt"]);
        for tid in &ready.tids {
            assert!(
                gdb.contains(&format!("LWP {tid}")),
                "{name}: gdb lacks thread {tid}\n{gdb}"
            );
        }
        for function in KNOWN_FUNCTIONS {
            assert!(
                gdb.contains(function),
                "{name}: gdb shows no {function}\n{gdb}"
            );
        }
    }

    // Minidump.
    let path = dir.join("triage.dmp");
    let bytes = dump(ready.pid, &["--triage", "--format", "minidump"], &path);
    assert!(!found(&bytes, &env_secret), "minidump: the env secret");
    assert!(!found(&bytes, &arg_secret), "minidump: the arg secret");
    let minidump = Minidump::read_path(&path).expect("the minidump crate opens it");
    let cmdline = minidump
        .get_raw_stream(Stream::LinuxCmdLine as u32)
        .expect("LinuxCmdLine");
    assert_eq!(cmdline, [&argv0[..], b"\0"].concat());
    let environ = minidump
        .get_raw_stream(Stream::LinuxEnviron as u32)
        .unwrap_or(&[]);
    assert!(environ.is_empty(), "LinuxEnviron holds {}", text(environ));
    let mut command = Command::new(tools::minidump_stackwalk());
    command.args(["--json", "--use-local-debuginfo"]).arg(&path);
    let (output, all) = tools::run_with_timeout(&mut command, tools::READER_TIMEOUT);
    assert!(output.status.success(), "minidump-stackwalk failed:\n{all}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let threads = json["threads"].as_array().expect("threads");
    assert_eq!(threads.len(), 5);
    for function in KNOWN_FUNCTIONS {
        let named = threads.iter().any(|thread| {
            thread["frames"].as_array().into_iter().flatten().any(|f| {
                f["function"].as_str().is_some_and(|n| n.contains(function))
                    || f["inlines"].as_array().into_iter().flatten().any(|i| {
                        i["function_name"]
                            .as_str()
                            .is_some_and(|n| n.contains(function))
                    })
            })
        });
        assert!(named, "minidump-stackwalk shows no {function}:\n{all}");
    }

    target.wake_and_check("after the triage dumps");
    assert_running_untraced(ready.pid);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn triage_conflicts_with_the_other_modes() {
    for other in ["--mini", "--heap", "--full", "--runtime-dump"] {
        let out = snapdump(&["dump", "--pid", "1", "--triage", other]);
        assert_eq!(out.status.code(), Some(2), "--triage {other}");
        assert!(text(&out.stderr).contains("cannot be used with"), "{other}");
    }
}
