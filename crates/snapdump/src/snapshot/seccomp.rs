//! Would the target's seccomp filters let one injected system call through?
//!
//! A filter can kill the whole process on a system call it does not expect (systemd's
//! `SystemCallFilter=` does by default), so before a thread is borrowed its filters are read
//! with `PTRACE_SECCOMP_GET_FILTER` and run here, on the exact `seccomp_data` the kernel will
//! build for the injected call. The interpreter covers the classic-BPF subset the kernel accepts
//! for seccomp (`seccomp_check_filter`); anything else makes the verdict unknown, which the
//! caller treats as a refusal.

use crate::sys::inject::SockFilter;

/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// The `struct seccomp_data` a filter sees.
#[derive(Clone, Copy, Debug)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    /// The address after the `syscall` instruction.
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    fn to_bytes(self) -> [u8; 64] {
        let mut bytes = [0u8; 64];
        bytes[0..4].copy_from_slice(&self.nr.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.arch.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.instruction_pointer.to_le_bytes());
        for (i, arg) in self.args.iter().enumerate() {
            bytes[16 + i * 8..24 + i * 8].copy_from_slice(&arg.to_le_bytes());
        }
        bytes
    }
}

/// What the filters decide for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// `SECCOMP_RET_LOG`: allowed and logged.
    Log,
    /// The call fails with this errno.
    Errno(u16),
    /// `SECCOMP_RET_TRACE`: decided by a seccomp tracer (none: it fails with ENOSYS).
    Trace,
    /// `SECCOMP_RET_USER_NOTIF`: a supervisor process decides; it may never answer.
    UserNotify,
    /// `SECCOMP_RET_TRAP`: SIGSYS.
    Trap,
    /// `SECCOMP_RET_KILL_THREAD` or `SECCOMP_RET_KILL_PROCESS`.
    Kill,
}

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ACTION_FULL: u32 = 0xffff_0000;
const RET_DATA: u32 = 0x0000_ffff;

impl Verdict {
    fn from_action(ret: u32) -> Verdict {
        match ret & RET_ACTION_FULL {
            RET_KILL_PROCESS | RET_KILL_THREAD => Verdict::Kill,
            RET_TRAP => Verdict::Trap,
            RET_ERRNO => Verdict::Errno((ret & RET_DATA) as u16),
            RET_USER_NOTIF => Verdict::UserNotify,
            RET_TRACE => Verdict::Trace,
            RET_LOG => Verdict::Log,
            RET_ALLOW => Verdict::Allow,
            // Unknown actions are treated by the kernel as KILL_PROCESS.
            _ => Verdict::Kill,
        }
    }
}

/// Run every filter of a thread and combine their results the way the kernel does: the action
/// with the highest precedence wins (the lowest value as a signed number). `None` when a
/// program uses an instruction the interpreter does not know.
pub fn evaluate(filters: &[Vec<SockFilter>], data: &SeccompData) -> Option<Verdict> {
    let bytes = data.to_bytes();
    let mut winner: Option<u32> = None;
    for program in filters {
        let ret = run(program, &bytes)?;
        winner = Some(match winner {
            Some(best) if ((best & RET_ACTION_FULL) as i32) <= ((ret & RET_ACTION_FULL) as i32) => {
                best
            }
            _ => ret,
        });
    }
    Some(winner.map_or(Verdict::Allow, Verdict::from_action))
}

// Classic BPF opcode fields (include/uapi/linux/bpf_common.h).
const CLASS_LD: u16 = 0x00;
const CLASS_LDX: u16 = 0x01;
const CLASS_ST: u16 = 0x02;
const CLASS_STX: u16 = 0x03;
const CLASS_ALU: u16 = 0x04;
const CLASS_JMP: u16 = 0x05;
const CLASS_RET: u16 = 0x06;
const CLASS_MISC: u16 = 0x07;
const SIZE_W: u16 = 0x00;
const MODE_IMM: u16 = 0x00;
const MODE_ABS: u16 = 0x20;
const MODE_MEM: u16 = 0x60;
const MODE_LEN: u16 = 0x80;
const SRC_X: u16 = 0x08;

/// Run one program on the 64-byte `seccomp_data`; its 32-bit return value.
fn run(program: &[SockFilter], data: &[u8; 64]) -> Option<u32> {
    let mut a: u32 = 0;
    let mut x: u32 = 0;
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    // Jumps only go forward, so no program runs more instructions than it has.
    while let Some(insn) = program.get(pc) {
        let code = insn.code;
        let k = insn.k;
        pc += 1;
        match code & 0x07 {
            CLASS_LD | CLASS_LDX => {
                let value = match (code & 0x18, code & 0xe0) {
                    (SIZE_W, MODE_ABS) if code & 0x07 == CLASS_LD => {
                        let offset = k as usize;
                        if !offset.is_multiple_of(4) || offset + 4 > data.len() {
                            return None;
                        }
                        u32::from_le_bytes(data[offset..offset + 4].try_into().ok()?)
                    }
                    (SIZE_W, MODE_LEN) => data.len() as u32,
                    (_, MODE_IMM) => k,
                    (_, MODE_MEM) => *mem.get(k as usize)?,
                    _ => return None,
                };
                if code & 0x07 == CLASS_LD {
                    a = value;
                } else {
                    x = value;
                }
            }
            CLASS_ST => *mem.get_mut(k as usize)? = a,
            CLASS_STX => *mem.get_mut(k as usize)? = x,
            CLASS_ALU => {
                let operand = if code & SRC_X != 0 { x } else { k };
                a = match code & 0xf0 {
                    0x00 => a.wrapping_add(operand),
                    0x10 => a.wrapping_sub(operand),
                    0x20 => a.wrapping_mul(operand),
                    0x30 => a.checked_div(operand).unwrap_or(0),
                    0x40 => a | operand,
                    0x50 => a & operand,
                    0x60 => a.checked_shl(operand).unwrap_or(0),
                    0x70 => a.checked_shr(operand).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(operand).unwrap_or(0),
                    0xa0 => a ^ operand,
                    _ => return None,
                };
            }
            CLASS_JMP => {
                let operand = if code & SRC_X != 0 { x } else { k };
                let taken = match code & 0xf0 {
                    0x00 => {
                        pc = pc.checked_add(k as usize)?;
                        continue;
                    }
                    0x10 => a == operand,
                    0x20 => a > operand,
                    0x30 => a >= operand,
                    0x40 => a & operand != 0,
                    _ => return None,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            CLASS_RET => {
                return match code & 0x18 {
                    0x00 => Some(k),
                    0x10 => Some(a),
                    _ => None,
                };
            }
            CLASS_MISC => match code & 0xf8 {
                0x00 => x = a,
                0x80 => a = x,
                _ => return None,
            },
            _ => return None,
        }
    }
    // Falling off the end is rejected by the kernel when a filter is loaded.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }

    fn data(nr: i32, arg0: u64) -> SeccompData {
        SeccompData {
            nr,
            arch: AUDIT_ARCH_X86_64,
            instruction_pointer: 0x7fff_0000_1000,
            args: [arg0, 0, 0, 0, 0, 0],
        }
    }

    /// Allow everything but `nr`, which gets `action`; the shape libseccomp emits.
    fn deny(nr: u32, action: u32) -> Vec<SockFilter> {
        vec![
            insn(LD_W_ABS, 0, 0, 4),
            insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
            insn(RET_K, 0, 0, RET_KILL_PROCESS),
            insn(LD_W_ABS, 0, 0, 0),
            insn(JEQ_K, 0, 1, nr),
            insn(RET_K, 0, 0, action),
            insn(RET_K, 0, 0, RET_ALLOW),
        ]
    }

    #[test]
    fn no_filters_allow() {
        assert_eq!(evaluate(&[], &data(56, 0)), Some(Verdict::Allow));
    }

    #[test]
    fn matching_rule_decides() {
        let filters = [deny(56, RET_ERRNO | 1)];
        assert_eq!(evaluate(&filters, &data(56, 0)), Some(Verdict::Errno(1)));
        assert_eq!(evaluate(&filters, &data(61, 0)), Some(Verdict::Allow));
        let filters = [deny(56, RET_KILL_PROCESS)];
        assert_eq!(evaluate(&filters, &data(56, 0)), Some(Verdict::Kill));
    }

    #[test]
    fn strictest_of_several_filters_wins() {
        let filters = [
            deny(56, RET_LOG),
            deny(56, RET_ERRNO | 13),
            deny(56, RET_TRACE),
        ];
        assert_eq!(evaluate(&filters, &data(56, 0)), Some(Verdict::Errno(13)));
        let filters = [deny(56, RET_ERRNO | 13), deny(56, RET_KILL_THREAD)];
        assert_eq!(evaluate(&filters, &data(56, 0)), Some(Verdict::Kill));
    }

    #[test]
    fn argument_checks_like_dockers_clone_rule() {
        // Deny clone() when any namespace flag is set (low 32 bits of arg0).
        const CLONE_NEW_MASK: u32 = 0x7e02_0000;
        let filter = vec![
            insn(LD_W_ABS, 0, 0, 0),
            insn(JEQ_K, 0, 3, 56),
            insn(LD_W_ABS, 0, 0, 16),
            insn(JSET_K, 0, 1, CLONE_NEW_MASK),
            insn(RET_K, 0, 0, RET_ERRNO | 1),
            insn(RET_K, 0, 0, RET_ALLOW),
        ];
        let filters = [filter];
        assert_eq!(evaluate(&filters, &data(56, 0x400)), Some(Verdict::Allow));
        assert_eq!(
            evaluate(&filters, &data(56, 0x2000_0000)),
            Some(Verdict::Errno(1))
        );
    }

    #[test]
    fn unknown_instructions_and_falling_off_are_unknown() {
        assert_eq!(evaluate(&[vec![insn(0xff, 0, 0, 0)]], &data(56, 0)), None);
        assert_eq!(
            evaluate(&[vec![insn(LD_W_ABS, 0, 0, 0)]], &data(56, 0)),
            None
        );
        // Out-of-bounds and unaligned loads.
        assert_eq!(
            evaluate(&[vec![insn(LD_W_ABS, 0, 0, 64)]], &data(56, 0)),
            None
        );
        assert_eq!(
            evaluate(&[vec![insn(LD_W_ABS, 0, 0, 2)]], &data(56, 0)),
            None
        );
    }
}
