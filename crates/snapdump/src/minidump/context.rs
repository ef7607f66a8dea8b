//! A thread's registers as a `CONTEXT_AMD64`.

use minidump_common::format::{CONTEXT_AMD64, ContextFlagsAmd64};

use crate::capture::{Thread, reg};

/// CONTROL | INTEGER | SEGMENTS | FLOATING_POINT (0x10000f). Debug registers are not read.
pub fn context_flags() -> u32 {
    (ContextFlagsAmd64::CONTEXT_AMD64_CONTROL
        | ContextFlagsAmd64::CONTEXT_AMD64_INTEGER
        | ContextFlagsAmd64::CONTEXT_AMD64_SEGMENTS
        | ContextFlagsAmd64::CONTEXT_AMD64_FLOATING_POINT)
        .bits()
}

/// `user_regs_struct` and the FXSAVE area → `CONTEXT_AMD64`. Missing registers (a short
/// register block) read as zero; the FXSAVE area is copied verbatim into `float_save`.
pub fn amd64_context(thread: &Thread) -> CONTEXT_AMD64 {
    let r = |index| thread.reg(index);
    let mut context = CONTEXT_AMD64 {
        context_flags: context_flags(),
        cs: r(reg::CS) as u16,
        ds: r(reg::DS) as u16,
        es: r(reg::ES) as u16,
        fs: r(reg::FS) as u16,
        gs: r(reg::GS) as u16,
        ss: r(reg::SS) as u16,
        eflags: r(reg::EFLAGS) as u32,
        rax: r(reg::RAX),
        rcx: r(reg::RCX),
        rdx: r(reg::RDX),
        rbx: r(reg::RBX),
        rsp: r(reg::RSP),
        rbp: r(reg::RBP),
        rsi: r(reg::RSI),
        rdi: r(reg::RDI),
        r8: r(reg::R8),
        r9: r(reg::R9),
        r10: r(reg::R10),
        r11: r(reg::R11),
        r12: r(reg::R12),
        r13: r(reg::R13),
        r14: r(reg::R14),
        r15: r(reg::R15),
        rip: r(reg::RIP),
        ..CONTEXT_AMD64::default()
    };
    if let Some(fpregs) = &thread.fpregs {
        let len = fpregs.len().min(context.float_save.len());
        context.float_save[..len].copy_from_slice(&fpregs[..len]);
        // FXSAVE keeps MXCSR at byte 24.
        if let Some(mxcsr) = fpregs.get(24..28) {
            context.mx_csr = u32::from_le_bytes(mxcsr.try_into().expect("4 bytes"));
        }
    }
    context
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minidump::format::{Blob, size_of};

    fn thread(regs: Vec<u8>, fpregs: Option<Vec<u8>>) -> Thread {
        Thread {
            tid: 7,
            name: b"t".to_vec(),
            regs,
            fpregs,
            xstate: None,
            pending_signal: None,
            stat: None,
            status: None,
        }
    }

    #[test]
    fn registers_land_at_the_documented_offsets() {
        let mut regs = vec![0u8; reg::COUNT * 8];
        let mut set = |index: usize, value: u64| {
            regs[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes())
        };
        set(reg::RAX, 0x1111);
        set(reg::R15, 0xffff);
        set(reg::RIP, 0x4242);
        set(reg::RSP, 0x7ffd_0000);
        set(reg::EFLAGS, 0x246);
        set(reg::CS, 0x33);
        let mut fx = vec![0u8; 512];
        fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        fx[160] = 0xab; // xmm0
        let context = amd64_context(&thread(regs, Some(fx)));
        let mut blob = Blob::new();
        blob.put(context);
        let bytes = blob.finish().unwrap();
        assert_eq!(size_of::<CONTEXT_AMD64>(), 1232);
        assert_eq!(bytes.len(), 1232);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        assert_eq!(u32_at(48), 0x10000f);
        assert_eq!(u32_at(52), 0x1f80);
        assert_eq!(u16::from_le_bytes([bytes[56], bytes[57]]), 0x33);
        assert_eq!(u32_at(68), 0x246);
        assert_eq!(u64_at(120), 0x1111);
        assert_eq!(u64_at(120 + 4 * 8), 0x7ffd_0000);
        assert_eq!(u64_at(120 + 15 * 8), 0xffff);
        assert_eq!(u64_at(248), 0x4242);
        assert_eq!(bytes[256 + 160], 0xab);
    }

    #[test]
    fn short_register_blocks_do_not_panic() {
        let context = amd64_context(&thread(vec![1, 2, 3], Some(vec![9; 10])));
        assert_eq!(context.rip, 0);
        assert_eq!(context.float_save[9], 9);
        assert_eq!(context.mx_csr, 0);
    }
}
