//! Disk safety and economy: untouched memory is never read and never stored, the estimate is
//! honest, a full or vanished disk fails cleanly, compressed and size-capped dumps still load.

mod common;

use common::{snapdump, temp_dir, text};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use snapdump_test_support::{Target, assert_running_untraced, tools};

/// A `/proc/PID/status` field in bytes.
fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in status"))
        * 1024
}

fn disk_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

fn gdb_sees_threads(exe: &Path, core: &Path, tids: &[i32]) {
    let out = tools::gdb(exe, core, &["info threads"]);
    for tid in tids {
        assert!(
            out.contains(&format!("LWP {tid}")),
            "gdb lacks {tid}:\n{out}"
        );
    }
}

#[test]
fn a_sparse_target_gives_a_small_dump_that_reads_back_whole() {
    // 2 GiB reserved, 10% touched.
    let target = Target::spawn(&["--sparse-reserve-mb", "2048", "--sparse-touch-pct", "10"]);
    let pid = target.pid();
    let dir = temp_dir("sparse");
    let core = dir.join("s.core");
    let rss_before = status_kib(pid, "VmRSS");
    let pte_before = status_kib(pid, "VmPTE");
    let out = snapdump(&[
        "dump",
        "--pid",
        &pid.to_string(),
        "--heap",
        "-o",
        core.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rss_after = status_kib(pid, "VmRSS");
    let pte_after = status_kib(pid, "VmPTE");
    let on_disk = disk_bytes(&core);
    let apparent = std::fs::metadata(&core).unwrap().len();
    // Untouched pages take no room at all, not even as holes: the file is dense.
    assert!(
        apparent as f64 <= 1.1 * rss_before as f64,
        "{apparent} bytes long for {rss_before} bytes resident"
    );
    assert!(
        on_disk as f64 <= 1.1 * rss_before as f64,
        "{on_disk} bytes on disk for {rss_before} bytes resident"
    );
    // Yet the whole reserved range reads back: touched pages (every tenth, page 9 first, its
    // first byte the page number | 1) with their bytes, untouched ones as zeros.
    let sparse = target.ready().sparse_addr.expect("sparse_addr in READY");
    let byte = |page: u64| format!("p/x *(unsigned char *){:#x}", sparse + page * 4096);
    let out = tools::gdb(
        &target.exe_path(),
        &core,
        &[&byte(9), &byte(0), &byte(199), &byte(2047 * 256 + 5)],
    );
    let values: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix('$')?.split_once(" = ").map(|(_, v)| v))
        .collect();
    assert_eq!(values, ["0x9", "0x0", "0xc7", "0x0"], "{out}");
    // Reading untouched pages would map them and grow the page tables by megabytes.
    assert!(
        pte_after <= pte_before + 64 * 1024,
        "VmPTE grew from {pte_before} to {pte_after}"
    );
    assert!(
        rss_after <= rss_before + 4 * 1024 * 1024,
        "VmRSS grew from {rss_before} to {rss_after}"
    );
    gdb_sees_threads(&target.exe_path(), &core, &target.ready().tids);
    assert_running_untraced(pid);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_dry_run_estimate_is_within_ten_percent() {
    let target = Target::spawn(&["--touch-mb", "64"]);
    let pid = target.pid().to_string();
    let dir = temp_dir("estimate");
    for mode in ["--mini", "--heap", "--full"] {
        let dry = snapdump(&[
            "dump",
            "--pid",
            &pid,
            mode,
            "--dry-run",
            "-o",
            dir.to_str().unwrap(),
        ]);
        assert!(dry.status.success(), "{}", text(&dry.stderr));
        let listing = text(&dry.stdout);
        assert!(
            listing.contains("[stack]") && listing.contains("[heap]"),
            "{listing}"
        );
        let estimate: u64 = listing
            .lines()
            .find_map(|l| l.strip_prefix("estimate: "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no estimate in {listing}"));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "a dry run wrote a file"
        );
        let core = dir.join("e.core");
        let out = snapdump(&["dump", "--pid", &pid, mode, "-o", core.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let real = disk_bytes(&core);
        let error = (estimate as f64 - real as f64).abs() / real as f64;
        assert!(error <= 0.10, "{mode}: estimate {estimate}, real {real}");
        std::fs::remove_file(core).unwrap();
    }
    assert_running_untraced(target.pid());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn compressed_dumps_decompress_to_a_core_gdb_reads() {
    let target = Target::spawn(&["--touch-mb", "32"]);
    let dir = temp_dir("zstd");
    let out = snapdump(
        &[
            "dump",
            "--pid",
            &target.pid().to_string(),
            "--compress",
            "-o",
        ]
        .iter()
        .copied()
        .chain([dir.to_str().unwrap()])
        .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let packed = PathBuf::from(text(&out.stdout).trim());
    assert!(
        packed.to_str().unwrap().ends_with(".core.zst"),
        "{packed:?}"
    );
    let plain = zstd::decode_all(std::fs::File::open(&packed).unwrap()).unwrap();
    // The touched memory is random bytes; only the holes compress.
    assert!(disk_bytes(&packed) < plain.len() as u64);
    assert_eq!(&plain[..4], b"\x7fELF");
    let core = dir.join("plain.core");
    std::fs::write(&core, &plain).unwrap();
    gdb_sees_threads(&target.exe_path(), &core, &target.ready().tids);
    assert_running_untraced(target.pid());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn max_size_refuses_or_truncates_keeping_the_stacks() {
    let target = Target::spawn(&["--touch-mb", "64"]);
    let pid = target.pid().to_string();
    let dir = temp_dir("maxsize");
    let core = dir.join("m.core");
    let core_arg = core.to_str().unwrap();
    let out = snapdump(&[
        "dump",
        "--pid",
        &pid,
        "--full",
        "--max-size",
        "8M",
        "-o",
        core_arg,
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--max-size allows 8.0 MiB"));
    assert!(!core.exists());
    let out = snapdump(&[
        "dump",
        "--pid",
        &pid,
        "--full",
        "--max-size",
        "8M",
        "--truncate",
        "-o",
        core_arg,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("left out to fit --max-size"));
    assert!(disk_bytes(&core) <= 8 << 20, "{}", disk_bytes(&core));
    let bt = tools::gdb(&target.exe_path(), &core, &["thread apply all bt"]);
    for function in [
        "target_blocked_in_read",
        "target_sleeping",
        "target_spinning",
    ] {
        assert!(bt.contains(function), "{function} missing from\n{bt}");
    }
    assert_running_untraced(target.pid());
    std::fs::remove_dir_all(dir).unwrap();
}

/// A small tmpfs, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(name: &str, size: &str) -> SmallDisk {
        let dir = temp_dir(name);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_dump_too_big_for_the_disk_is_refused_before_writing() {
    let target = Target::spawn(&["--touch-mb", "128"]);
    let disk = SmallDisk::mount("small", "64m");
    let out = snapdump(&[
        "dump",
        "--pid",
        &target.pid().to_string(),
        "--min-free",
        "0",
        "-o",
        disk.0.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let message = text(&out.stderr);
    assert!(
        message.contains("not enough free space") && message.contains("free"),
        "{message}"
    );
    assert_eq!(std::fs::read_dir(&disk.0).unwrap().count(), 0);
    assert_running_untraced(target.pid());
}

/// Run a dump that stalls once it has started writing, do `meanwhile`, let it go on.
fn change_the_world_mid_write(pid: i32, output: &Path, meanwhile: impl FnOnce()) -> Output {
    let pid = pid.to_string();
    let output = output.to_str().unwrap();
    tools::run_stalled(
        Path::new(env!("CARGO_BIN_EXE_snapdump")),
        &["dump", "--pid", &pid, "--min-free", "0", "-o", output],
        "writing",
        meanwhile,
    )
}

#[test]
fn the_disk_filling_up_mid_write_fails_cleanly() {
    let mut target = Target::spawn(&["--touch-mb", "48"]);
    let disk = SmallDisk::mount("fills", "96m");
    let filler = disk.0.join("filler");
    let out = change_the_world_mid_write(target.pid(), &disk.0, || {
        // Someone else takes the space the estimate counted on.
        let _ = std::fs::write(&filler, vec![1u8; 80 << 20]);
    });
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not enough free space"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        std::fs::read_dir(&disk.0).unwrap().count(),
        0,
        "a partial dump remains"
    );
    assert_running_untraced(target.pid());
    target.wake_and_check("after a full disk");
}

#[test]
fn the_output_folder_vanishing_mid_write_fails_cleanly() {
    let mut target = Target::spawn(&[]);
    let dir = temp_dir("vanish");
    let out = change_the_world_mid_write(target.pid(), &dir, || {
        std::fs::remove_dir_all(&dir).unwrap();
    });
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(!dir.exists());
    assert_running_untraced(target.pid());
    target.wake_and_check("after the folder went");
}
