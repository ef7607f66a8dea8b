//! Damaged input: truncated at every interesting place, random, hostile. inspect must give a
//! clear error (unreadable) or a report whose `errors` say what is missing — never a panic.

mod common;

use common::{TempDir, minidump_writer_dump, snapdump_dump};
use snapdump_inspect::{Error, Options, Report, inspect, inspect_bytes};
use snapdump_test_support::{Target, splitmix64, target_exe};

fn options(stacks: bool) -> Options {
    Options {
        stacks,
        ..Options::default()
    }
}

/// Renders a report both ways, as the CLI would.
fn render(report: &Report) {
    let _ = snapdump_inspect::text::render(
        report,
        &snapdump_inspect::text::Sections {
            threads: true,
            modules: true,
            memory: true,
        },
    );
    let mut json = Vec::new();
    report.write_json(&mut json).unwrap();
}

/// Either an error, or a report that lists damage. `stacks` also walks the stacks (slow:
/// it reads the module files).
fn check(bytes: &[u8], what: &str, stacks: bool) -> Result<Report, Error> {
    let result = inspect_bytes(bytes, &options(stacks));
    match &result {
        Ok(report) => {
            render(report);
            assert!(
                report.is_damaged(),
                "{what}: read without any error listed ({} of the bytes)",
                bytes.len()
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    result
}

#[test]
fn truncated_elf_core() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("trunc-elf");
    let path = dir.path("mini.core");
    snapdump_dump(target.pid(), &["--mini"], &path).expect("snapdump --mini");
    let core = std::fs::read(&path).unwrap();
    let intact = inspect_bytes(&core, &options(false)).unwrap();
    assert!(!intact.is_damaged(), "{:?}", intact.errors);

    assert_eq!(
        inspect_bytes(&[], &options(false)).unwrap_err(),
        Error::Empty
    );
    for cut in [1, 3] {
        assert_eq!(
            inspect_bytes(&core[..cut], &options(false))
                .unwrap_err()
                .name(),
            "Truncated",
            "cut at {cut}"
        );
    }
    let e = inspect_bytes(&core[..40], &options(false)).unwrap_err();
    assert_eq!(e.name(), "Truncated");
    assert!(e.to_string().contains("ELF header"), "{e}");
    let e = inspect_bytes(&core[..64], &options(false)).unwrap_err();
    assert!(e.to_string().contains("program headers"), "{e}");

    // Inside the program headers, inside the notes, inside the memory, one byte short.
    let phoff = 64usize;
    let notes_at = u64::from_le_bytes(core[phoff + 8..phoff + 16].try_into().unwrap()) as usize;
    for (cut, expect) in [
        (phoff + 56 * 3 + 10, "truncated program headers"),
        (notes_at + 400, "truncated notes"),
        (core.len() / 2, "the file is truncated"),
        (core.len() - 1, "the file is truncated"),
    ] {
        let report = check(&core[..cut], &format!("cut at {cut}"), true).unwrap();
        assert!(
            report.errors.iter().any(|e| e.contains(expect)),
            "cut at {cut}: {:?}",
            report.errors
        );
    }
    // Cut in the memory: threads and modules are still all there.
    let half = inspect_bytes(&core[..core.len() / 2], &options(true)).unwrap();
    assert_eq!(half.threads.len(), intact.threads.len());
    assert_eq!(half.modules.len(), intact.modules.len());

    // Every cut point in the headers and notes, then a sample of the rest.
    let notes_end = notes_at + 0x5000;
    for cut in (0..notes_end.min(core.len()))
        .step_by(7)
        .chain((notes_end..core.len()).step_by(4093))
    {
        let _ = check(&core[..cut], &format!("cut at {cut}"), false);
    }

    // The file itself, cut, through the path API.
    let cut_path = dir.path("cut.core");
    std::fs::write(&cut_path, &core[..core.len() / 3]).unwrap();
    assert!(inspect(&cut_path, &options(true)).unwrap().is_damaged());
}

#[test]
fn truncated_minidump() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("trunc-mdmp");
    let path = dir.path("mini.dmp");
    minidump_writer_dump(target.pid(), &path);
    let dump = std::fs::read(&path).unwrap();
    let intact = inspect_bytes(&dump, &options(false)).unwrap();
    assert!(!intact.is_damaged(), "{:?}", intact.errors);
    assert_eq!(intact.threads.len(), 5);

    for cut in [1, 3, 20] {
        assert_eq!(
            inspect_bytes(&dump[..cut], &options(false))
                .unwrap_err()
                .name(),
            "Truncated",
            "cut at {cut}"
        );
    }
    for cut in (0..dump.len()).step_by(97) {
        let _ = check(&dump[..cut], &format!("cut at {cut}"), false);
    }
    let report = check(&dump[..dump.len() / 2], "half", true).unwrap();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("past the end of the file")),
        "{:?}",
        report.errors
    );
}

#[test]
fn truncated_zstd_stream() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("trunc-zst");
    let path = dir.path("mini.core.zst");
    snapdump_dump(target.pid(), &["--mini", "--compress"], &path).expect("snapdump --compress");
    let zst = std::fs::read(&path).unwrap();
    let cut_path = dir.path("cut.core.zst");
    std::fs::write(&cut_path, &zst[..zst.len() * 2 / 3]).unwrap();
    let report = inspect(&cut_path, &options(true)).unwrap();
    assert_eq!(report.compression.as_deref(), Some("zstd"));
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("zstd stream is damaged")),
        "{:?}",
        report.errors
    );
    assert_eq!(
        report.threads.len(),
        5,
        "the notes were in the decompressed part"
    );
    // Only the magic survives: nothing decompresses.
    std::fs::write(&cut_path, &zst[..6]).unwrap();
    assert_eq!(
        inspect(&cut_path, &options(false)).unwrap_err().name(),
        "Decompress"
    );
    let _ = check(&zst[..zst.len() / 2], "in-memory zstd", true);
}

#[test]
fn random_and_foreign_files() {
    let mut state = 7;
    let random: Vec<u8> = (0..4096).map(|_| splitmix64(&mut state) as u8).collect();
    let e = inspect_bytes(&random, &options(true)).unwrap_err();
    assert_eq!(e.name(), "UnknownFormat");
    assert!(
        e.to_string().contains("not an ELF core or a minidump"),
        "{e}"
    );

    // Random bytes behind each magic number.
    for magic in [&b"\x7fELF"[..], b"MDMP", &[0x28, 0xb5, 0x2f, 0xfd]] {
        for seed in 0..200u64 {
            let mut state = seed;
            let len = (splitmix64(&mut state) % 3000) as usize;
            let mut bytes = magic.to_vec();
            bytes.extend((0..len).map(|_| splitmix64(&mut state) as u8));
            let _ = check(
                &bytes,
                &format!("{magic:?} + random, seed {seed}"),
                seed % 50 == 0,
            );
        }
    }

    // An ELF file that is not a core: the test target itself.
    let exe = std::fs::read(target_exe()).unwrap();
    let e = inspect_bytes(&exe, &options(false)).unwrap_err();
    assert_eq!(e.name(), "NotACore", "{e}");

    let dir = TempDir::new("foreign");
    assert_eq!(
        inspect(&dir.path("missing.core"), &options(false))
            .unwrap_err()
            .name(),
        "Io"
    );
    assert_eq!(
        inspect(&dir.0, &options(false)).unwrap_err().name(),
        "Io",
        "a folder"
    );
}
