//! The NT_X86_XSTATE note in the layout gdb reads.
//!
//! `PTRACE_GETREGSET(NT_X86_XSTATE)` returns the XSAVE area in the CPU's *standard*
//! (non-compacted) format: each state component at the offset CPUID leaf 0xD gives for it on
//! this CPU, the area as long as the enabled components need (CPUID 0xD.0 EBX). Bytes 464..472
//! hold XCR0 (the enabled components) and the header's XSTATE_BV (512..520) says which of them
//! are not in their initial state.
//!
//! gdb does not know the CPU a core comes from. It reads XCR0 and assumes the layout of Intel's
//! MPX-era CPUs: AVX-512 opmasks at 1088, ZMM_Hi256 at 1152, Hi16_ZMM at 1664, PKRU at 2688,
//! and the note exactly `X86_XSTATE_SIZE(xcr0)` bytes long (gdb/i387-tdep.c,
//! gdbsupport/x86-xstate.h; the size check is corelow.c's "Section ... in core file too
//! small", after which gdb drops the whole note: ymm/zmm/k registers become unavailable). CPUs
//! with AVX-512 but no MPX (AMD Zen 4) put AVX-512 256 bytes earlier and their area is 2432
//! bytes (2440 with PKRU) instead of 2688 (2696). gdb 13 rejects every such note; gdb >= 14
//! knows the 2440-byte AMD layout, but not the 2432-byte one (AVX-512 without PKRU, as in VMs
//! that hide PKU).
//!
//! So the note is re-laid into gdb's layout: the legacy area, the header and every component
//! the kernel gave are copied byte for byte, each to gdb's offset for it; components gdb does
//! not know stay at the CPU's offset. On Intel CPUs the two layouts agree and the kernel's bytes
//! are written unchanged. The legacy area, the header and the AVX halves at 576 never move, so
//! readers that look only there (lldb 14 shows xmm from the FXSAVE note and no ymm from any
//! core) are unaffected.

use std::borrow::Cow;
use std::ops::Range;

use crate::sys::XsaveComponent;

/// Bytes 464..472 of the legacy area: XCR0, as the kernel puts it there for ptrace and cores.
const XCR0_OFFSET: usize = 464;
/// XSAVE header: XSTATE_BV (components not in their initial state), then XCOMP_BV.
const XSTATE_BV_OFFSET: usize = 512;
const XCOMP_BV_OFFSET: usize = 520;
/// XCOMP_BV bit 63: the area is in the compacted format (never from ptrace; checked anyway).
const COMPACTED: u64 = 1 << 63;
/// The legacy FXSAVE area (512) and the XSAVE header (64): the same on every CPU.
const FIXED_END: usize = 576;

/// The components gdb knows, at gdb's fixed offsets: (XCR0 bit, offset, size).
const GDB_COMPONENTS: [(u32, usize, usize); 7] = [
    (2, 576, 256),   // AVX: upper halves of ymm0-15
    (3, 960, 64),    // MPX bound registers
    (4, 1024, 64),   // MPX BNDCFGU/BNDSTATUS
    (5, 1088, 64),   // AVX-512 opmasks k0-7
    (6, 1152, 512),  // AVX-512 ZMM_Hi256: upper halves of zmm0-15
    (7, 1664, 1024), // AVX-512 Hi16_ZMM: zmm16-31
    (9, 2688, 8),    // PKRU
];

/// The note size gdb requires for `xcr0`: gdb's `X86_XSTATE_SIZE`.
fn gdb_size(xcr0: u64) -> usize {
    if xcr0 & (1 << 9) != 0 {
        2696
    } else if xcr0 & (0b111 << 5) != 0 {
        2688
    } else if xcr0 & (0b11 << 3) != 0 {
        1088
    } else if xcr0 & (1 << 2) != 0 {
        832
    } else {
        FIXED_END
    }
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

/// One component of the output: where the kernel put it (`None`: beyond the area the kernel
/// returned) and where gdb looks for it.
struct Placement {
    bit: u32,
    from: Option<Range<usize>>,
    to: Range<usize>,
}

/// `kernel` (an NT_X86_XSTATE regset as the kernel returned it) in the layout gdb reads.
/// `cpu[n]` is where this CPU's standard format puts component `n`
/// ([`crate::sys::xsave_components`]). Components the kernel's area is too short for are
/// zero-filled and marked initial in XSTATE_BV. Returns `kernel` itself when it already is in
/// gdb's layout, or when it cannot be re-laid safely (too short, compacted, a component whose
/// place CPUID does not give, components that would overlap).
pub fn for_gdb<'a>(kernel: &'a [u8], cpu: &[Option<XsaveComponent>]) -> Cow<'a, [u8]> {
    if kernel.len() < FIXED_END || u64_at(kernel, XCOMP_BV_OFFSET) & COMPACTED != 0 {
        return Cow::Borrowed(kernel);
    }
    let xcr0 = u64_at(kernel, XCR0_OFFSET);
    let mut placements = Vec::new();
    for bit in 2..64u32 {
        if xcr0 & (1 << bit) == 0 {
            continue;
        }
        let Some(Some(c)) = cpu.get(bit as usize) else {
            // Enabled, but where the kernel put it is unknown: leave the area alone.
            return Cow::Borrowed(kernel);
        };
        let from = c.offset..c.offset + c.size;
        let from = (from.start >= FIXED_END && from.end <= kernel.len()).then_some(from);
        let to = match GDB_COMPONENTS.iter().find(|(b, ..)| *b == bit) {
            Some(&(_, offset, size)) => offset..offset + size,
            // gdb does not read it: keep it where the CPU puts it (lldb or a later gdb may).
            None => match &from {
                Some(from) => from.clone(),
                None => continue,
            },
        };
        placements.push(Placement { bit, from, to });
    }
    let len = placements
        .iter()
        .map(|p| p.to.end)
        .fold(gdb_size(xcr0), usize::max);

    let in_place = placements
        .iter()
        .all(|p| p.from.as_ref().is_some_and(|f| f.start == p.to.start));
    if in_place && kernel.len() >= len {
        return Cow::Borrowed(kernel);
    }
    let mut targets: Vec<&Range<usize>> = placements.iter().map(|p| &p.to).collect();
    targets.sort_by_key(|r| r.start);
    if targets.windows(2).any(|w| w[0].end > w[1].start) {
        return Cow::Borrowed(kernel);
    }

    let mut out = vec![0u8; len];
    out[..FIXED_END].copy_from_slice(&kernel[..FIXED_END]);
    let mut xstate_bv = u64_at(kernel, XSTATE_BV_OFFSET);
    for p in &placements {
        match &p.from {
            Some(from) => {
                let n = from.len().min(p.to.len());
                out[p.to.start..p.to.start + n]
                    .copy_from_slice(&kernel[from.start..from.start + n]);
            }
            // Not in the kernel's area: zeros, which is what XSTATE_BV clear means.
            None => xstate_bv &= !(1 << p.bit),
        }
    }
    out[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].copy_from_slice(&xstate_bv.to_le_bytes());
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(offset: usize, size: usize) -> Option<XsaveComponent> {
        Some(XsaveComponent { offset, size })
    }

    /// CPUID 0xD of an AVX-512 CPU without MPX (AMD Zen 4), with PKRU.
    fn zen4() -> [Option<XsaveComponent>; 64] {
        let mut t = [None; 64];
        t[2] = c(576, 256);
        t[5] = c(832, 64);
        t[6] = c(896, 512);
        t[7] = c(1408, 1024);
        t[9] = c(2432, 8);
        t
    }

    /// CPUID 0xD of an Intel AVX-512 CPU with MPX and PKRU: gdb's layout.
    fn intel() -> [Option<XsaveComponent>; 64] {
        let mut t = [None; 64];
        for (bit, offset, size) in GDB_COMPONENTS {
            t[bit as usize] = c(offset, size);
        }
        t
    }

    /// A kernel regset of `len` bytes: every byte a function of its offset (so moved bytes are
    /// recognisable), with XCR0 and XSTATE_BV set.
    fn area(len: usize, xcr0: u64, xstate_bv: u64) -> Vec<u8> {
        let mut a: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
        a[XCR0_OFFSET..XCR0_OFFSET + 8].copy_from_slice(&xcr0.to_le_bytes());
        a[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].copy_from_slice(&xstate_bv.to_le_bytes());
        a[XCOMP_BV_OFFSET..XCOMP_BV_OFFSET + 8].copy_from_slice(&0u64.to_le_bytes());
        a
    }

    #[test]
    fn gdb_sizes_follow_x86_xstate_size() {
        assert_eq!(gdb_size(0x3), 576);
        assert_eq!(gdb_size(0x7), 832);
        assert_eq!(gdb_size(0x1f), 1088);
        assert_eq!(gdb_size(0xe7), 2688);
        assert_eq!(gdb_size(0xff), 2688);
        assert_eq!(gdb_size(0x2e7), 2696);
    }

    #[test]
    fn avx512_without_mpx_moves_to_gdb_offsets() {
        // What this bug was found on: AMD EPYC VM, XCR0 0xe7 (no MPX, no PKRU), 2432 bytes.
        let kernel = area(2432, 0xe7, 0xa2);
        let out = for_gdb(&kernel, &zen4());
        assert_eq!(out.len(), 2688);
        assert_eq!(out[..832], kernel[..832]); // legacy, header (XCR0, XSTATE_BV), AVX
        assert!(out[832..1088].iter().all(|&b| b == 0)); // gap + MPX slots
        assert_eq!(out[1088..1152], kernel[832..896]); // k0-7
        assert_eq!(out[1152..1664], kernel[896..1408]); // ZMM_Hi256
        assert_eq!(out[1664..2688], kernel[1408..2432]); // Hi16_ZMM
    }

    #[test]
    fn pkru_moves_too() {
        let kernel = area(2440, 0x2e7, 0x2e7);
        let out = for_gdb(&kernel, &zen4());
        assert_eq!(out.len(), 2696);
        assert_eq!(out[1664..2688], kernel[1408..2432]);
        assert_eq!(out[2688..2696], kernel[2432..2440]);
        assert_eq!(u64_at(&out, XSTATE_BV_OFFSET), 0x2e7);
    }

    #[test]
    fn gdb_layout_is_written_unchanged() {
        let kernel = area(2696, 0x2ff, 0x2ff);
        assert!(matches!(for_gdb(&kernel, &intel()), Cow::Borrowed(b) if b == kernel));
        // AVX only: 832 bytes, nothing to move.
        let kernel = area(832, 0x7, 0x7);
        assert!(matches!(for_gdb(&kernel, &intel()), Cow::Borrowed(_)));
        // A component gdb does not know (AMX tile data, bit 18) past gdb's area stays there.
        let mut cpu = intel();
        cpu[17] = c(2752, 64);
        cpu[18] = c(2816, 8192);
        let kernel = area(11008, 0x602ff, 0x2ff);
        assert!(matches!(for_gdb(&kernel, &cpu), Cow::Borrowed(_)));
    }

    #[test]
    fn unknown_components_keep_their_place_when_others_move() {
        let mut cpu = zen4();
        cpu[17] = c(2752, 64);
        let kernel = area(2816, 0x202e7, 0x202e7);
        let out = for_gdb(&kernel, &cpu);
        assert_eq!(out.len(), 2816);
        assert_eq!(out[1088..1152], kernel[832..896]);
        assert_eq!(out[2688..2696], kernel[2432..2440]);
        assert_eq!(out[2752..2816], kernel[2752..2816]);
    }

    #[test]
    fn components_beyond_the_kernel_area_are_zero_and_initial() {
        // Hi16_ZMM and PKRU missing from a short area.
        let kernel = area(1408, 0x2e7, 0x2e7);
        let out = for_gdb(&kernel, &zen4());
        assert_eq!(out.len(), 2696);
        assert_eq!(out[1152..1664], kernel[896..1408]);
        assert!(out[1664..].iter().all(|&b| b == 0));
        assert_eq!(
            u64_at(&out, XSTATE_BV_OFFSET),
            0x2e7 & !(1 << 7) & !(1 << 9)
        );
        assert_eq!(u64_at(&out, XCR0_OFFSET), 0x2e7);
    }

    #[test]
    fn left_alone_when_it_cannot_be_relaid() {
        // Too short for a header.
        let short = vec![7u8; 512];
        assert!(matches!(for_gdb(&short, &zen4()), Cow::Borrowed(_)));
        // Compacted format.
        let mut compacted = area(2432, 0xe7, 0xe7);
        compacted[XCOMP_BV_OFFSET..XCOMP_BV_OFFSET + 8]
            .copy_from_slice(&(COMPACTED | 0xe7).to_le_bytes());
        assert!(matches!(for_gdb(&compacted, &zen4()), Cow::Borrowed(_)));
        // CPUID does not say where an enabled component is.
        let kernel = area(2432, 0xe7, 0xe7);
        assert!(matches!(for_gdb(&kernel, &[None; 64]), Cow::Borrowed(_)));
        // An unknown component where gdb wants the opmasks.
        let mut cpu = zen4();
        cpu[19] = c(1100, 64);
        let kernel = area(2432, 0x800e7, 0xe7);
        assert!(matches!(for_gdb(&kernel, &cpu), Cow::Borrowed(_)));
    }

    #[test]
    fn this_cpu_puts_avx_at_576() {
        // The one offset every XSAVE CPU shares; a sanity check of the CPUID reader.
        if let Some(avx) = crate::sys::xsave_components()[2] {
            assert_eq!(
                avx,
                XsaveComponent {
                    offset: 576,
                    size: 256
                }
            );
        }
    }
}
