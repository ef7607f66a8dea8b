//! `snapdump dump` writing ELF cores of the test target, proved with gdb, lldb and the `object`
//! crate; and the CLI's refusals, each with its exit code and message, leaving the target
//! running and nothing on disk.

mod common;

use common::{snapdump, temp_dir, text};
use std::path::{Path, PathBuf};
use std::process::Command;

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, elf};
use snapdump_test_support::{
    Target, assert_running_untraced, find_subsequence, heap_pattern, known_global_value,
    secret_pattern, tools,
};

const KNOWN_FUNCTIONS: [&str; 4] = [
    "target_blocked_in_read",
    "target_sleeping",
    "target_waiting_on_futex",
    "target_spinning",
];

/// Dump `pid` in `mode` to `path`, asserting success and the CLI's output contract.
fn dump_ok(pid: i32, mode: &str, path: &Path) {
    let out = snapdump(&[
        "dump",
        "--pid",
        &pid.to_string(),
        mode,
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "snapdump {mode} failed: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), path.to_str().unwrap());
    let summary = text(&out.stderr);
    assert!(
        summary.contains("ms (stop ") && summary.contains("5 threads"),
        "{summary}"
    );
    assert!(!Path::new(&format!("{}.partial", path.display())).exists());
}

struct LoadSegment {
    vaddr: u64,
    filesz: u64,
    flags: u32,
}

fn load_segments(core: &[u8]) -> Vec<LoadSegment> {
    let file = ElfFile64::<Endianness>::parse(core).expect("a valid ELF file");
    assert_eq!(file.elf_header().e_type.get(file.endian()), elf::ET_CORE);
    file.elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(file.endian()) == elf::PT_LOAD)
        .map(|ph| LoadSegment {
            vaddr: ph.p_vaddr(file.endian()),
            filesz: ph.p_filesz(file.endian()),
            flags: ph.p_flags(file.endian()),
        })
        .collect()
}

/// Whether this CPU has `flag` in /proc/cpuinfo.
fn cpu_has(flag: &str) -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == flag))
}

#[test]
fn every_mode_gives_a_core_gdb_and_lldb_read() {
    let mut target = Target::spawn(&[]);
    let ready = target.ready().clone();
    let exe = target.exe_path();
    let dir = temp_dir("modes");
    let secret = secret_pattern(ready.seed, 64);
    let heap_start = heap_pattern(ready.seed, 64);
    let global = known_global_value(ready.seed);
    let mut sizes = Vec::new();

    for mode in ["--mini", "--heap", "--full"] {
        let path = dir.join(format!("{}.core", &mode[2..]));
        dump_ok(ready.pid, mode, &path);
        assert_running_untraced(ready.pid);
        let core = std::fs::read(&path).unwrap();
        sizes.push(core.len() as u64);

        assert!(
            find_subsequence(&core, &secret).is_none(),
            "{mode}: the MADV_DONTDUMP secret is in the dump"
        );
        let segments = load_segments(&core);
        let code_with_contents = segments
            .iter()
            .any(|s| s.flags & elf::PF_X != 0 && s.filesz > 0 && s.vaddr != 0);
        match mode {
            "--mini" => assert!(core.len() < 1 << 20, "mini core is {} bytes", core.len()),
            "--heap" => assert!(find_subsequence(&core, &heap_start).is_some()),
            _ => assert!(code_with_contents, "full mode stored no executable segment"),
        }

        let gdb = tools::gdb(
            &exe,
            &path,
            &[
                "info threads",
                "thread apply all bt",
                "p/x (unsigned long)SNAPDUMP_KNOWN_GLOBAL",
                &format!("x/2gx {:#x}", ready.heap_addr),
                "info registers ymm0",
            ],
        );
        // The XSAVE note is laid out as gdb reads it: gdb drops a note of another size with
        // "Section `.reg-xstate/N' in core file too small", and the ymm/zmm upper halves
        // become <unavailable>.
        assert!(
            !gdb.contains("too small"),
            "{mode}: gdb rejects a register note\n{gdb}"
        );
        if cpu_has("avx") {
            let ymm0 = gdb.lines().find(|l| l.starts_with("ymm0"));
            assert!(
                ymm0.is_some_and(|l| l.contains("v8_int32") && !l.contains("unavailable")),
                "{mode}: gdb has no value for ymm0\n{gdb}"
            );
        }
        for tid in &ready.tids {
            assert!(
                gdb.contains(&format!("LWP {tid}")),
                "{mode}: gdb lacks thread {tid}\n{gdb}"
            );
        }
        for function in KNOWN_FUNCTIONS {
            assert!(
                gdb.contains(function),
                "{mode}: gdb shows no {function}\n{gdb}"
            );
        }
        let lldb = tools::lldb(
            &exe,
            &path,
            &[
                "thread list",
                "bt all",
                "target variable SNAPDUMP_KNOWN_GLOBAL",
            ],
        );
        for function in KNOWN_FUNCTIONS {
            assert!(
                lldb.contains(function),
                "{mode}: lldb shows no {function}\n{lldb}"
            );
        }
        assert!(
            lldb.contains(&format!("tid = {}", ready.pid)),
            "{mode}: lldb lacks the main thread\n{lldb}"
        );
        if mode != "--mini" {
            assert!(
                gdb.contains(&format!("{global:#x}")),
                "{mode}: gdb does not print the known global {global:#x}\n{gdb}"
            );
            let word = u64::from_le_bytes(heap_start[..8].try_into().unwrap());
            assert!(
                gdb.contains(&format!("{word:#018x}")),
                "{mode}: gdb does not show the heap word {word:#018x}\n{gdb}"
            );
            assert!(
                lldb.contains(&global.to_string()),
                "{mode}: lldb does not print the known global {global}\n{lldb}"
            );
        }
    }
    assert!(
        sizes[1] < sizes[2],
        "heap {} is not smaller than full {}",
        sizes[1],
        sizes[2]
    );

    // The target carries on: blocked calls complete, sleeps were not cut short.
    target.wake_and_check("after three dumps");
    let status = target.status();
    assert!(status.heap_ok);
    assert_eq!(status.short_sleeps, 0);
    assert_running_untraced(ready.pid);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn notes_are_in_the_kernels_order() {
    let target = Target::spawn(&[]);
    let dir = temp_dir("notes");
    let path = dir.join("n.core");
    dump_ok(target.pid(), "--mini", &path);
    let core = std::fs::read(&path).unwrap();
    let file = ElfFile64::<Endianness>::parse(&*core).unwrap();
    let endian = file.endian();
    let headers = file.elf_program_headers();
    assert_eq!(
        headers[0].p_type(endian),
        elf::PT_NOTE,
        "PT_NOTE comes first"
    );
    let mut notes = headers[0].notes(endian, &*core).unwrap().unwrap();
    let mut types = Vec::new();
    let mut last = None;
    while let Some(note) = notes.next().unwrap() {
        types.push(note.n_type(endian));
        last = Some((note.name().to_vec(), note.desc().to_vec()));
    }
    // snapdump's own note (what wrote the core, in which mode) closes the list.
    let (owner, desc) = last.unwrap();
    assert_eq!(owner, b"SNAPDUMP");
    assert!(
        String::from_utf8_lossy(&desc).contains("mode=mini\n"),
        "{desc:?}"
    );
    types.pop();
    let expected_first = [
        elf::NT_PRSTATUS,
        elf::NT_PRPSINFO,
        elf::NT_SIGINFO,
        elf::NT_AUXV,
        elf::NT_FILE,
        elf::NT_PRFPREG,
        elf::NT_X86_XSTATE,
    ];
    assert_eq!(types[..7], expected_first);
    assert_eq!(
        types[7..],
        [elf::NT_PRSTATUS, elf::NT_PRFPREG, elf::NT_X86_XSTATE].repeat(4)
    );
    // PT_LOADs in address order.
    let loads = load_segments(&core);
    assert!(loads.windows(2).all(|w| w[0].vaddr < w[1].vaddr));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn default_names_never_replace_a_file() {
    let target = Target::spawn(&[]);
    let pid = target.pid().to_string();
    let dir = temp_dir("names");
    let mut paths = Vec::new();
    for _ in 0..2 {
        let out = snapdump(&[
            "dump",
            "--pid",
            &pid,
            "--mini",
            "-q",
            "-o",
            dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(out.stderr.is_empty(), "-q printed {}", text(&out.stderr));
        paths.push(PathBuf::from(text(&out.stdout).trim()));
    }
    let first = paths[0].file_name().unwrap().to_str().unwrap().to_owned();
    let prefix = format!("snapdump-test-t_{pid}_");
    assert!(
        first.starts_with(&prefix) && first.ends_with(".core"),
        "{first}"
    );
    let stamp = &first[prefix.len()..first.len() - ".core".len()];
    assert!(
        stamp.len() == 15 && stamp.as_bytes()[8] == b'_',
        "timestamp {stamp}"
    );
    assert_ne!(paths[0], paths[1]);
    assert!(paths.iter().all(|p| p.exists()));

    // An explicit existing file is kept unless --overwrite.
    let precious = dir.join("precious.core");
    std::fs::write(&precious, b"keep me").unwrap();
    let out = snapdump(&[
        "dump",
        "--pid",
        &pid,
        "--mini",
        "-o",
        precious.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        text(&out.stderr).contains("--overwrite"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    let out = snapdump(&[
        "dump",
        "--pid",
        &pid,
        "--mini",
        "--overwrite",
        "-o",
        precious.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(&std::fs::read(&precious).unwrap()[..4], b"\x7fELF");
    assert_running_untraced(target.pid());
    std::fs::remove_dir_all(dir).unwrap();
}

fn assert_refused(args: &[&str], code: i32, message: &str) -> String {
    let out = snapdump(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty());
    stderr
}

#[test]
fn refusals_have_clear_messages_and_exit_codes() {
    let target = Target::spawn(&[]);
    let pid = target.pid().to_string();
    let dir = temp_dir("refusals");
    let out = dir.join("x.core");
    let out = out.to_str().unwrap();

    assert_refused(
        &["dump", "--pid", "999999999", "-o", out],
        3,
        "no process with pid",
    );
    assert_refused(
        &["dump", "--name", "no-such-program-xyz", "-o", out],
        3,
        "no process named",
    );
    assert_refused(&["dump", "--pid", "2", "-o", out], 4, "kernel thread");
    assert_refused(
        &["dump", "--pid", &pid, "-o", "/nonexistent/dir/x.core"],
        5,
        "does not exist",
    );
    assert_refused(
        &["dump", "--pid", &pid, "-o", "/proc/x.core"],
        5,
        "cannot write in /proc",
    );
    assert_refused(
        &["dump", "--pid", &pid, "--min-free", "100T", "-o", out],
        5,
        "not enough free space",
    );
    assert_refused(&["dump", "-o", out], 2, "--pid");

    // A zombie: a child that exited and was not reaped yet.
    let mut zombie = Command::new("true").spawn().unwrap();
    let zpid = zombie.id() as i32;
    while snapdump_test_support::proc_state(zpid) != 'Z' {
        std::thread::yield_now();
    }
    assert_refused(
        &["dump", "--pid", &zpid.to_string(), "-o", out],
        4,
        "zombie",
    );
    zombie.wait().unwrap();

    // Two processes of one name: the candidates are listed.
    let other = Target::spawn(&[]);
    let stderr = assert_refused(
        &["dump", "--name", "snapdump-test-target", "-o", out],
        3,
        "pick one with --pid",
    );
    assert!(
        stderr.contains(&pid) && stderr.contains(&other.pid().to_string()),
        "{stderr}"
    );

    // Nothing was written, the target was never harmed.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert_running_untraced(target.pid());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_traced_target_is_refused_naming_the_tracer() {
    use nix::sys::ptrace;
    use nix::unistd::Pid;
    let target = Target::spawn(&[]);
    let pid = Pid::from_raw(target.pid());
    ptrace::seize(pid, ptrace::Options::empty()).unwrap();
    let dir = temp_dir("traced");
    let out = dir.join("x.core");
    let me = std::process::id().to_string();
    let stderr = assert_refused(
        &[
            "dump",
            "--pid",
            &target.pid().to_string(),
            "-o",
            out.to_str().unwrap(),
        ],
        4,
        "already being traced by pid",
    );
    assert!(stderr.contains(&me), "{stderr}");
    ptrace::interrupt(pid).unwrap();
    nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL)).unwrap();
    ptrace::detach(pid, None).unwrap();
    assert_running_untraced(target.pid());
    assert!(!out.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_process_is_found_by_its_name() {
    let dir = temp_dir("byname");
    let name = format!("sd-sleep-{}", std::process::id());
    let program = dir.join(&name);
    std::fs::copy("/bin/sleep", &program).unwrap();
    // A fresh copy can be "text file busy" while another test's fork still holds the fd we
    // wrote it with; that passes as soon as that child execs.
    let mut attempts = 0;
    let mut sleeper = loop {
        match Command::new(&program).arg("600").spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(26) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("cannot run {}: {e}", program.display()),
        }
    };
    // Wait until the copy runs as itself (exec finished), not as the test's fork.
    let pid = sleeper.id() as i32;
    while std::fs::read_link(format!("/proc/{pid}/exe")).ok() != Some(program.clone()) {
        std::thread::yield_now();
    }
    let core = dir.join("s.core");
    let out = snapdump(&[
        "dump",
        "--pn",
        &name,
        "--mini",
        "-f",
        core.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let gdb = tools::gdb(&program, &core, &["bt"]);
    assert!(gdb.contains("nanosleep"), "{gdb}");
    assert_running_untraced(pid);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ps_lists_the_target() {
    let target = Target::spawn(&[]);
    let out = snapdump(&["ps"]);
    assert!(out.status.success());
    let listing = text(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&target.pid().to_string()))
        .unwrap_or_else(|| panic!("target not listed:\n{listing}"));
    assert!(
        line.contains("snapdump-test-t") && line.contains("yes"),
        "{line}"
    );
}
