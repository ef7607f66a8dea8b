//! `snapdump dump --format minidump` of the test target in each mode, proved with the real
//! readers: minidump-stackwalk (symbolized from the local binaries), lldb, and the `minidump`
//! crate reading every stream back against what the target holds.

mod common;

use common::{snapdump, temp_dir, text};
use std::path::{Path, PathBuf};
use std::process::Command;

use minidump::format::MINIDUMP_STREAM_TYPE as Stream;
use minidump::{
    Minidump, MinidumpLinuxMaps, MinidumpLinuxProcStatus, MinidumpMemory64List,
    MinidumpMemoryInfoList, MinidumpMemoryList, MinidumpMiscInfo, MinidumpModuleList,
    MinidumpSystemInfo, MinidumpThreadList, MinidumpThreadNames, Module,
};
use object::Object;
use snapdump_test_support::{
    Ready, Target, assert_running_untraced, find_subsequence, heap_pattern, secret_pattern, tools,
};

/// The test target's threads (READY order) and the function each one is parked in.
const THREADS: [(&str, &str); 4] = [
    ("sd-reader", "target_blocked_in_read"),
    ("sd-sleeper", "target_sleeping"),
    ("sd-waiter", "target_waiting_on_futex"),
    ("sd-spinner", "target_spinning"),
];

/// Dump `pid` as a minidump in `mode` to `path`, asserting success.
fn dump_ok(pid: i32, mode: &str, path: &Path) {
    let out = snapdump(&[
        "dump",
        "--pid",
        &pid.to_string(),
        "--format",
        "minidump",
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
    assert!(path.is_file());
}

/// The GNU build id of a file, as lowercase hex (what readers show as the code id).
fn build_id_hex(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let id = file
        .build_id()
        .unwrap()
        .unwrap_or_else(|| panic!("{} has no build id", path.display()));
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The libc the target has mapped, from its maps.
fn mapped_libc(pid: i32) -> PathBuf {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
        })
        .map(PathBuf::from)
        .expect("the target maps a libc")
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// A `MINIDUMP_STRING` (u32 byte length, UTF-16LE) at `rva`.
fn md_string(file: &[u8], rva: usize) -> String {
    let len = u32_at(file, rva) as usize;
    let units: Vec<u16> = file[rva + 4..rva + 4 + len]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Every stream read back with the `minidump` crate, checked against the target.
fn check_streams(path: &Path, ready: &Ready, exe: &Path, libc: &Path, full: bool) {
    let dump = Minidump::read_path(path).expect("the minidump crate opens it");
    let file = std::fs::read(path).unwrap();
    let mode = path.display();

    // Header: MiniDumpWithFullMemory for heap and full only.
    let flags = u64_at(&file, 24);
    assert_eq!(flags & 2 != 0, full, "{mode}: header flags {flags:#x}");

    // Threads: the leader and the four READY tids, with contexts and stacks.
    let system: MinidumpSystemInfo = dump.get_stream().expect("SystemInfo");
    assert_eq!(system.os, minidump::system_info::Os::Linux);
    assert_eq!(system.cpu, minidump::system_info::Cpu::X86_64);
    let misc: MinidumpMiscInfo = dump.get_stream().expect("MiscInfo");
    assert_eq!(
        misc.raw.process_id().copied(),
        Some(ready.pid as u32),
        "{mode}: MiscInfo pid"
    );
    let threads: MinidumpThreadList = dump.get_stream().expect("ThreadList");
    let tids: Vec<u32> = threads.threads.iter().map(|t| t.raw.thread_id).collect();
    let mut expected: Vec<u32> = std::iter::once(ready.pid as u32)
        .chain(ready.tids.iter().map(|&t| t as u32))
        .collect();
    assert_eq!(tids[0], ready.pid as u32, "{mode}: the leader comes first");
    let mut sorted = tids.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "{mode}: thread ids");
    let memory = dump.get_memory().expect("a memory list");
    for thread in &threads.threads {
        let context = thread
            .context(&system, Some(&misc))
            .expect("a CONTEXT_AMD64");
        let sp = context.get_stack_pointer();
        let ip = context.get_instruction_pointer();
        assert!(ip != 0 && sp != 0, "{mode}: empty registers");
        let stack = thread
            .stack_memory(&memory)
            .unwrap_or_else(|| panic!("{mode}: thread {} has no stack", thread.raw.thread_id));
        let (start, end) = (
            stack.base_address(),
            stack.base_address() + stack.bytes().len() as u64,
        );
        assert!(
            start <= sp.saturating_sub(128) && sp < end,
            "{mode}: stack {start:#x}..{end:#x} does not hold sp {sp:#x}"
        );
        // The descriptor points at the very bytes the memory list holds for that range.
        let raw = thread.raw.stack;
        let own = &file[raw.memory.rva as usize..][..raw.memory.data_size as usize];
        let listed = memory
            .memory_at_address(raw.start_of_memory_range)
            .expect("the stack is in the memory list");
        let listed_bytes = listed.bytes();
        let offset = (raw.start_of_memory_range - listed.base_address()) as usize;
        assert_eq!(
            own,
            &listed_bytes[offset..offset + own.len()],
            "{mode}: the stack descriptor and the memory list disagree"
        );
    }

    let names: MinidumpThreadNames = dump.get_stream().expect("ThreadNames");
    for (&tid, (name, _)) in ready.tids.iter().zip(THREADS) {
        assert_eq!(
            names.get_name(tid as u32).as_deref(),
            Some(name),
            "{mode}: name of {tid}"
        );
    }

    // Modules: the executable (first, by its real path) and libc, with their build ids.
    let modules: MinidumpModuleList = dump.get_stream().expect("ModuleList");
    let exe_real = std::fs::canonicalize(exe).unwrap();
    let main = modules.iter().next().expect("modules");
    assert_eq!(
        Path::new(&*main.code_file()),
        exe_real,
        "{mode}: main module"
    );
    for wanted in [exe_real.as_path(), libc] {
        let module = modules
            .iter()
            .find(|m| Path::new(&*m.code_file()) == wanted)
            .unwrap_or_else(|| panic!("{mode}: no module {}", wanted.display()));
        assert_eq!(
            module.code_identifier().unwrap().as_str().to_lowercase(),
            build_id_hex(wanted),
            "{mode}: code id of {}",
            wanted.display()
        );
        assert!(module.debug_identifier().is_some());
    }

    // Memory: MemoryList in mini, one Memory64List otherwise; the heap pattern at heap_addr.
    let list64 = dump.get_stream::<MinidumpMemory64List>();
    let list32 = dump.get_stream::<MinidumpMemoryList>();
    assert_eq!(list64.is_ok(), full, "{mode}: Memory64List");
    assert_eq!(list32.is_ok(), !full, "{mode}: MemoryList");
    if full {
        let list64 = list64.unwrap();
        let region = list64
            .memory_at_address(ready.heap_addr)
            .expect("the heap buffer is in the Memory64List");
        let offset = (ready.heap_addr - region.base_address) as usize;
        let heap = &region.bytes[offset..];
        assert!(
            heap.len() >= ready.heap_len,
            "{mode}: heap buffer cut short"
        );
        assert!(
            heap[..ready.heap_len] == heap_pattern(ready.seed, ready.heap_len)[..],
            "{mode}: the heap pattern is not at heap_addr"
        );
    } else {
        assert!(
            memory.memory_at_address(ready.heap_addr).is_none(),
            "{mode}: a mini dump holds the heap buffer"
        );
    }

    let info: MinidumpMemoryInfoList = dump.get_stream().expect("MemoryInfoList");
    let heap_info = info
        .memory_info_at_address(ready.heap_addr)
        .expect("the heap buffer's mapping is described");
    assert!(heap_info.is_readable() && heap_info.is_writable());

    // The Linux streams.
    let status: MinidumpLinuxProcStatus = dump.get_stream().expect("LinuxProcStatus");
    assert!(
        text(&status.raw_bytes()).contains(&format!("Pid:\t{}", ready.pid)),
        "{mode}: LinuxProcStatus"
    );
    let maps: MinidumpLinuxMaps = dump.get_stream().expect("LinuxMaps");
    assert!(maps.iter().count() > 10, "{mode}: LinuxMaps");
    let cmdline = dump
        .get_raw_stream(Stream::LinuxCmdLine as u32)
        .expect("LinuxCmdLine");
    assert_eq!(
        cmdline,
        &std::fs::read(format!("/proc/{}/cmdline", ready.pid)).unwrap()[..]
    );
    for stream in [
        Stream::LinuxCpuInfo,
        Stream::LinuxLsbRelease,
        Stream::LinuxEnviron,
        Stream::LinuxAuxv,
    ] {
        let raw = dump
            .get_raw_stream(stream as u32)
            .unwrap_or_else(|e| panic!("{mode}: {stream:?}: {e}"));
        assert!(!raw.is_empty(), "{mode}: {stream:?} is empty");
    }
    assert!(
        dump.get_raw_stream(Stream::ExceptionStream as u32).is_err(),
        "{mode}: a requested dump has no exception stream"
    );

    // LinuxDsoDebug: Breakpad's MDRawDebug64 (40 bytes) then the executable's dynamic section;
    // its map is an array of MDRawLinkMap64 (24 bytes) naming the loaded libraries.
    let debug = dump
        .get_raw_stream(Stream::LinuxDsoDebug as u32)
        .expect("LinuxDsoDebug");
    assert_eq!(u32_at(debug, 0), 1, "{mode}: r_debug.r_version");
    let (map, count) = (u32_at(debug, 4) as usize, u32_at(debug, 8) as usize);
    assert!(
        debug.len() > 40,
        "{mode}: no dynamic section after MDRawDebug"
    );
    let dso_names: Vec<String> = (0..count)
        .map(|i| md_string(&file, u32_at(&file, map + i * 24 + 8) as usize))
        .collect();
    // The loader's names (e.g. /lib/x86_64-linux-gnu/libc.so.6 where maps shows /usr/lib/...).
    assert!(
        dso_names
            .iter()
            .any(|n| Path::new(n).file_name() == libc.file_name()),
        "{mode}: DSO list {dso_names:?} lacks {}",
        libc.display()
    );
}

/// minidump-stackwalk --json --use-local-debuginfo: every thread, the modules' code ids,
/// and each parked function in its own thread.
fn check_stackwalk(path: &Path, ready: &Ready, exe: &Path, libc: &Path) {
    let mut command = Command::new(tools::minidump_stackwalk());
    command.args(["--json", "--use-local-debuginfo"]).arg(path);
    let (output, all) = tools::run_with_timeout(&mut command, tools::READER_TIMEOUT);
    assert!(output.status.success(), "minidump-stackwalk failed:\n{all}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("minidump-stackwalk printed no JSON ({e}):\n{all}"));
    let mode = path.display();
    assert_eq!(json["pid"], ready.pid, "{mode}: pid");
    assert_eq!(json["thread_count"], 5, "{mode}: thread count");
    assert_eq!(json["system_info"]["os"], "Linux");
    assert_eq!(json["system_info"]["cpu_arch"], "amd64");
    let modules = json["modules"].as_array().expect("modules");
    for wanted in [std::fs::canonicalize(exe).unwrap(), libc.to_owned()] {
        let name = wanted.file_name().unwrap().to_str().unwrap();
        let module = modules
            .iter()
            .find(|m| m["filename"] == name)
            .unwrap_or_else(|| panic!("{mode}: stackwalk lists no {name}"));
        assert_eq!(
            module["code_id"].as_str().map(str::to_lowercase),
            Some(build_id_hex(&wanted)),
            "{mode}: code id of {name}"
        );
    }
    let threads = json["threads"].as_array().expect("threads");
    let function_names = |tid: i32| -> Vec<String> {
        let thread = threads
            .iter()
            .find(|t| t["thread_id"] == tid)
            .unwrap_or_else(|| panic!("{mode}: stackwalk has no thread {tid}"));
        let frames = thread["frames"].as_array().expect("frames");
        assert!(frames.len() > 1, "{mode}: thread {tid} has no stack");
        let mut names = Vec::new();
        for frame in frames {
            names.extend(frame["function"].as_str().map(str::to_owned));
            for inline in frame["inlines"].as_array().into_iter().flatten() {
                names.extend(inline["function_name"].as_str().map(str::to_owned));
            }
        }
        names
    };
    assert!(
        function_names(ready.pid)
            .iter()
            .any(|f| f.contains("snapdump_test_target::main")),
        "{mode}: the main thread does not reach main"
    );
    for (&tid, (_, function)) in ready.tids.iter().zip(THREADS) {
        let names = function_names(tid);
        assert!(
            names.iter().any(|f| f.contains(function)),
            "{mode}: thread {tid} does not show {function}: {names:#?}"
        );
    }
}

/// lldb -c FILE EXE: every thread and every parked function.
fn check_lldb(path: &Path, ready: &Ready, exe: &Path) {
    let out = tools::lldb(exe, path, &["thread list", "bt all"]);
    let mode = path.display();
    for tid in std::iter::once(ready.pid).chain(ready.tids.iter().copied()) {
        assert!(
            out.contains(&format!("tid = {tid}")),
            "{mode}: lldb lacks thread {tid}\n{out}"
        );
    }
    for (_, function) in THREADS {
        assert!(
            out.contains(function),
            "{mode}: lldb shows no {function}\n{out}"
        );
    }
}

#[test]
fn every_mode_gives_a_minidump_the_readers_open() {
    let mut target = Target::spawn(&[]);
    let ready = target.ready().clone();
    let exe = target.exe_path();
    let libc = mapped_libc(ready.pid);
    let dir = temp_dir("modes");
    let secret = secret_pattern(ready.seed, 64);
    let mut sizes = Vec::new();

    for mode in ["--mini", "--heap", "--full"] {
        let path = dir.join(format!("{}.dmp", &mode[2..]));
        dump_ok(ready.pid, mode, &path);
        assert_running_untraced(ready.pid);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"MDMP");
        assert!(
            find_subsequence(&bytes, &secret).is_none(),
            "{mode}: the MADV_DONTDUMP secret is in the dump"
        );
        sizes.push(bytes.len());
        drop(bytes);
        let full = mode != "--mini";
        check_streams(&path, &ready, &exe, &libc, full);
        check_stackwalk(&path, &ready, &exe, &libc);
        check_lldb(&path, &ready, &exe);
    }
    eprintln!(
        "minidump sizes: mini {} heap {} full {}",
        sizes[0], sizes[1], sizes[2]
    );
    assert!(
        sizes[0] < 1 << 20,
        "the mini minidump is {} bytes",
        sizes[0]
    );
    assert!(
        sizes[0] < sizes[1] && sizes[1] < sizes[2],
        "sizes {sizes:?}"
    );

    // The target carries on as before.
    target.wake_and_check("after three minidumps");
    let status = target.status();
    assert!(status.heap_ok);
    assert_eq!(status.short_sleeps, 0);
    assert_running_untraced(ready.pid);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_folder_gets_a_default_named_dmp_file() {
    let target = Target::spawn(&[]);
    let dir = temp_dir("names");
    let out = snapdump(&[
        "dump",
        "--pid",
        &target.pid().to_string(),
        "--format",
        "minidump",
        "--mini",
        "-q",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = PathBuf::from(text(&out.stdout).trim());
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some("dmp"));
    assert_eq!(&std::fs::read(&path).unwrap()[..4], b"MDMP");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "stray files");
    assert_running_untraced(target.pid());
    std::fs::remove_dir_all(dir).unwrap();
}
