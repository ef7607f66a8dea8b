//! Dumps of the test target written by `snapdump dump`, every mode, both formats, plain and
//! zstd: inspect reads back every thread, the names, the modules and each thread's function.

mod common;

use common::{Expect, TempDir, check_target, inspect, snapdump_dump};
use snapdump_inspect::{DumpFormat, ReasonKind, Writer};
use snapdump_test_support::Target;

const MODES: [&str; 3] = ["mini", "heap", "full"];

#[test]
fn snapdump_elf_cores_in_every_mode() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("elf");
    for mode in MODES {
        let path = dir.path(&format!("{mode}.core"));
        snapdump_dump(target.pid(), &[&format!("--{mode}")], &path)
            .unwrap_or_else(|e| panic!("snapdump --{mode}: {e}"));
        let report = inspect(&path, true);
        assert_eq!(report.format, DumpFormat::ElfCore);
        assert_eq!(report.writer, Some(Writer::Snapdump), "{mode}");
        assert_eq!(report.mode.as_deref(), Some(mode), "mode from the note");
        assert!(
            report.mode_recorded,
            "{mode}: the SNAPDUMP note names the mode"
        );
        assert_eq!(report.process.reason.kind, ReasonKind::Requested);
        assert!(report.threads.iter().all(|t| !t.crashed));
        check_target(
            &report,
            target.ready(),
            &target.exe_path(),
            Expect {
                names: false,
                stacks: true,
            },
        );
    }
}

#[test]
fn snapdump_zstd_core_reads_like_the_plain_one() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("zst");
    let path = dir.path("heap.core.zst");
    snapdump_dump(target.pid(), &["--compress"], &path).expect("snapdump --compress");
    let head = std::fs::read(&path).unwrap();
    assert_eq!(head[..4], [0x28, 0xb5, 0x2f, 0xfd], "a zstd stream");
    let report = inspect(&path, true);
    assert_eq!(report.compression.as_deref(), Some("zstd"));
    assert_eq!(report.mode.as_deref(), Some("heap"));
    check_target(
        &report,
        target.ready(),
        &target.exe_path(),
        Expect {
            names: false,
            stacks: true,
        },
    );
}

#[test]
fn snapdump_minidumps_in_every_mode() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("mdmp");
    for mode in MODES {
        let path = dir.path(&format!("{mode}.dmp"));
        if let Err(e) = snapdump_dump(
            target.pid(),
            &["--format", "minidump", &format!("--{mode}")],
            &path,
        ) {
            if e.contains("not built yet") {
                eprintln!("SKIPPED: snapdump cannot write minidumps yet: {e}");
                return;
            }
            panic!("snapdump --format minidump --{mode}: {e}");
        }
        let report = inspect(&path, true);
        assert_eq!(report.format, DumpFormat::Minidump);
        assert_eq!(
            report.mode.as_deref(),
            Some(mode),
            "mode inferred from the contents"
        );
        assert!(
            !report.mode_recorded,
            "minidumps carry no mode: it is inferred"
        );
        assert_eq!(report.process.reason.kind, ReasonKind::Requested);
        check_target(
            &report,
            target.ready(),
            &target.exe_path(),
            Expect {
                names: true,
                stacks: true,
            },
        );
    }
}
