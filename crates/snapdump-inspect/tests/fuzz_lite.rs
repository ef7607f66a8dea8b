//! "Fuzz-lite": thousands of deterministic mutations (bit flips, hostile words, truncations,
//! moved chunks) of real dumps through both readers, inside `cargo test`. Any panic fails the
//! test and leaves the input in the temporary folder to replay. The coverage-guided fuzz
//! targets in `fuzz/` do the same without an end; this keeps CI honest in fixed time.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::{TempDir, minidump_writer_dump, snapdump_dump};
use snapdump_inspect::{Options, inspect_bytes};
use snapdump_test_support::{Target, splitmix64};

/// Mutations per seed dump (and how many of them also walk the stacks).
const ROUNDS: u64 = 2500;
const WITH_STACKS: u64 = 10;

const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    u64::MAX,
    u64::MAX / 2,
];

fn mutate(seed: &[u8], round: u64) -> Vec<u8> {
    let mut state = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.len() as u64;
    let mut rand = |n: usize| (splitmix64(&mut state) % n.max(1) as u64) as usize;
    let mut data = seed.to_vec();
    let steps = 1 + rand(4);
    for _ in 0..steps {
        // Headers, notes and stream directories sit in the first pages: aim there mostly.
        let len = data.len();
        let hot = len.min(16 << 10);
        let at = |rand: &mut dyn FnMut(usize) -> usize| {
            if rand(10) < 8 { rand(hot) } else { rand(len) }
        };
        match rand(5) {
            0 | 1 => {
                for _ in 0..1 + rand(8) {
                    let i = at(&mut rand);
                    if let Some(b) = data.get_mut(i) {
                        *b ^= 1 << rand(8);
                    }
                }
            }
            2 => {
                let value = INTERESTING[rand(INTERESTING.len())].to_le_bytes();
                let width = [1, 2, 4, 8][rand(4)];
                let i = at(&mut rand) & !(width - 1);
                if i + width <= len {
                    data[i..i + width].copy_from_slice(&value[..width]);
                }
            }
            3 => {
                let cut = if rand(2) == 0 {
                    rand(hot + 1)
                } else {
                    rand(len + 1)
                };
                data.truncate(cut);
            }
            _ => {
                if len > 64 {
                    let from = rand(len);
                    let to = at(&mut rand);
                    let n = (1 + rand(256)).min(len - from).min(len - to);
                    let chunk = data[from..from + n].to_vec();
                    data[to..to + n].copy_from_slice(&chunk);
                }
            }
        }
    }
    data
}

fn run(name: &str, seed: &[u8], dir: &TempDir) {
    let plain = Options::default();
    let stacks = Options {
        stacks: true,
        ..Options::default()
    };
    let mut inputs = 0;
    let mut damaged = 0;
    for round in 0..ROUNDS {
        let input = mutate(seed, round);
        let options = if round % (ROUNDS / WITH_STACKS) == 0 {
            &stacks
        } else {
            &plain
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| match inspect_bytes(&input, options) {
            Ok(report) => {
                let _ = snapdump_inspect::text::render(&report, &Default::default());
                let mut json = Vec::new();
                report.write_json(&mut json).unwrap();
                report.is_damaged()
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                true
            }
        }));
        match outcome {
            Ok(true) => damaged += 1,
            Ok(false) => {}
            Err(_) => {
                let path = dir.0.join(format!("{name}-crash-{round}"));
                std::fs::write(&path, &input).unwrap();
                let keep =
                    std::env::temp_dir().join(format!("snapdump-inspect-{name}-crash-{round}"));
                let _ = std::fs::copy(&path, &keep);
                panic!(
                    "{name}: round {round} panicked; input kept at {}",
                    keep.display()
                );
            }
        }
        inputs += 1;
    }
    eprintln!("{name}: {inputs} inputs, {damaged} reported damage or an error, no panic");
}

#[test]
fn mutated_elf_cores() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("fuzz-elf");
    let path = dir.path("mini.core");
    snapdump_dump(target.pid(), &["--mini"], &path).expect("snapdump --mini");
    let seed = std::fs::read(&path).unwrap();
    drop(target);
    run("elf", &seed, &dir);
}

#[test]
fn mutated_minidumps() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("fuzz-mdmp");
    let path = dir.path("breakpad.dmp");
    minidump_writer_dump(target.pid(), &path);
    let seed = std::fs::read(&path).unwrap();
    run("minidump-writer", &seed, &dir);
    let ours = dir.path("snapdump.dmp");
    match snapdump_dump(target.pid(), &["--mini", "--format", "minidump"], &ours) {
        Ok(()) => run("snapdump-minidump", &std::fs::read(&ours).unwrap(), &dir),
        Err(e) => eprintln!("SKIPPED: snapdump minidump: {e}"),
    }
}

#[test]
fn mutated_zstd_streams() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("fuzz-zst");
    let path = dir.path("mini.core.zst");
    snapdump_dump(target.pid(), &["--mini", "--compress"], &path).expect("snapdump --compress");
    let seed = std::fs::read(&path).unwrap();
    drop(target);
    run("zstd", &seed, &dir);
}

/// Regenerates the seed corpus of `fuzz/` (run by hand:
/// `cargo test -p snapdump-inspect --test fuzz_lite -- --ignored write_fuzz_seeds`). The
/// target runs with an empty environment, so no variable of this machine lands in the repo;
/// the ELF core keeps its headers, notes and the modules' ELF header pages only.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut child = Command::new(snapdump_test_support::target_exe())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(ready) = snapdump_test_support::Ready::parse(&line) {
            break ready.pid;
        }
    };
    let dir = TempDir::new("seeds");
    let core = dir.path("mini.core");
    snapdump_dump(pid, &["--mini"], &core).unwrap();
    let shrunk = headers_only(&std::fs::read(&core).unwrap());
    std::fs::write(fuzz.join("elf_core/seed-snapdump-mini-headers"), shrunk).unwrap();
    let dump = dir.path("breakpad.dmp");
    minidump_writer_dump(pid, &dump);
    std::fs::copy(&dump, fuzz.join("minidump/seed-minidump-writer-mini")).unwrap();
    let ours = dir.path("ours.dmp");
    if snapdump_dump(pid, &["--mini", "--format", "minidump"], &ours).is_ok() {
        std::fs::copy(&ours, fuzz.join("minidump/seed-snapdump-mini")).unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// An ELF core with every PT_LOAD emptied (p_filesz 0) except those holding an ELF header
/// (the modules' first pages: build ids), data packed after the notes.
fn headers_only(core: &[u8]) -> Vec<u8> {
    let u64_at = |at: usize| u64::from_le_bytes(core[at..at + 8].try_into().unwrap());
    let phoff = u64_at(32) as usize;
    let phnum = u16::from_le_bytes(core[56..58].try_into().unwrap()) as usize;
    let data_start = (0..phnum)
        .map(|i| phoff + i * 56)
        .filter(|&ph| u32::from_le_bytes(core[ph..ph + 4].try_into().unwrap()) == 4)
        .map(|ph| (u64_at(ph + 8) + u64_at(ph + 32)) as usize)
        .max()
        .unwrap();
    let mut out = core[..data_start].to_vec();
    for i in 0..phnum {
        let ph = phoff + i * 56;
        if u32::from_le_bytes(core[ph..ph + 4].try_into().unwrap()) != 1 {
            continue;
        }
        let (offset, filesz) = (u64_at(ph + 8) as usize, u64_at(ph + 32) as usize);
        let keep = filesz > 0 && filesz <= 8192 && core.get(offset..offset + 4) == Some(b"\x7fELF");
        let new_offset = out.len() as u64;
        out[ph + 8..ph + 16].copy_from_slice(&new_offset.to_le_bytes());
        if keep {
            out.extend_from_slice(&core[offset..offset + filesz]);
        } else {
            out[ph + 32..ph + 40].copy_from_slice(&0u64.to_le_bytes());
        }
    }
    out
}
