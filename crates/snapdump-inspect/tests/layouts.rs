//! ELF core layouts that real cores use but the test target's dumps do not: ≥ 0xffff
//! segments (PN_XNUM, the count in section 0's sh_info).

mod common;

use common::{TempDir, snapdump_dump};
use snapdump_inspect::{Options, Writer, inspect_bytes};
use snapdump_test_support::Target;

/// Rewrites a core's header to the PN_XNUM form: e_phnum 0xffff, one SHT_NULL section header
/// appended whose sh_info holds the real count.
fn to_pn_xnum(core: &[u8]) -> Vec<u8> {
    let mut out = core.to_vec();
    let phnum = u16::from_le_bytes(out[56..58].try_into().unwrap()) as u32;
    let shoff = out.len() as u64;
    let mut section = [0u8; 64];
    section[32..40].copy_from_slice(&1u64.to_le_bytes()); // sh_size
    section[44..48].copy_from_slice(&phnum.to_le_bytes()); // sh_info
    out.extend_from_slice(&section);
    out[40..48].copy_from_slice(&shoff.to_le_bytes()); // e_shoff
    out[56..58].copy_from_slice(&0xffffu16.to_le_bytes()); // e_phnum = PN_XNUM
    out[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    out[60..62].copy_from_slice(&1u16.to_le_bytes()); // e_shnum
    out
}

#[test]
fn pn_xnum_core_reads_like_the_original() {
    let target = Target::spawn(&[]);
    let dir = TempDir::new("xnum");
    let path = dir.path("mini.core");
    snapdump_dump(target.pid(), &["--mini"], &path).expect("snapdump --mini");
    let core = std::fs::read(&path).unwrap();
    let plain = inspect_bytes(&core, &Options::default()).unwrap();
    let xnum = inspect_bytes(&to_pn_xnum(&core), &Options::default()).unwrap();
    assert!(xnum.errors.is_empty(), "{:?}", xnum.errors);
    assert_eq!(xnum.writer, Some(Writer::Snapdump));
    assert_eq!(xnum.threads.len(), plain.threads.len());
    assert_eq!(xnum.modules.len(), plain.modules.len());
    assert_eq!(xnum.regions.len(), plain.regions.len());
    assert_eq!(xnum.memory.stored_bytes, plain.memory.stored_bytes);

    // A section header past the end of the file: the count is unknown, a clear error.
    let mut cut = to_pn_xnum(&core);
    cut.truncate(cut.len() - 10);
    let e = inspect_bytes(&cut, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("PN_XNUM"), "{e}");
}
