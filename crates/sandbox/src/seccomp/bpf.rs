//! A classic-BPF interpreter for seccomp programs, so tests can ask a
//! compiled program (for either architecture, on any host) what it does
//! with a call, without installing it; and the kernel's rule for a stack
//! of filters.
//!
//! It runs the instructions seccompiler emits (loads of `seccomp_data`
//! words, `and`, conditional and unconditional jumps, returns) and refuses
//! anything else, as it refuses jumps out of the program.

use seccompiler::{sock_filter, TargetArch};

/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_AARCH64`.
pub const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;

/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_ERRNO` (the errno is in the low 16 bits).
pub const RET_ERRNO: u32 = 0x0005_0000;
/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ACTION_FULL: u32 = 0xffff_0000;

/// The audit architecture value of `arch`.
pub fn audit_arch(arch: TargetArch) -> u32 {
    match arch {
        TargetArch::x86_64 => AUDIT_ARCH_X86_64,
        TargetArch::aarch64 => AUDIT_ARCH_AARCH64,
        TargetArch::riscv64 => 0xc000_00f3,
    }
}

/// The kernel's `struct seccomp_data`: what a filter sees of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    /// A call of number `nr` on `arch` with `args`.
    pub fn new(arch: TargetArch, nr: u32, args: [u64; 6]) -> SeccompData {
        SeccompData {
            nr,
            arch: audit_arch(arch),
            instruction_pointer: 0,
            args,
        }
    }

    /// The 32-bit word at byte `offset` (the kernel lays the struct out in
    /// native byte order; both supported architectures are little-endian,
    /// so the low half of a 64-bit field comes first).
    fn word(&self, offset: u32) -> Option<u32> {
        let half = |v: u64, high: bool| if high { (v >> 32) as u32 } else { v as u32 };
        match offset {
            0 => Some(self.nr),
            4 => Some(self.arch),
            8 | 12 => Some(half(self.instruction_pointer, offset == 12)),
            16..=63 if offset.is_multiple_of(4) => {
                let arg = self.args.get(usize::try_from((offset - 16) / 8).ok()?)?;
                Some(half(*arg, offset % 8 == 4))
            }
            _ => None,
        }
    }
}

/// A program the interpreter cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    #[error("instruction {pc}: unsupported opcode {code:#06x}")]
    Opcode { pc: usize, code: u16 },
    #[error("instruction {pc}: load outside seccomp_data (offset {offset})")]
    Load { pc: usize, offset: u32 },
    #[error("the program runs past its end")]
    PastEnd,
}

const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const JMP_JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// Runs `program` on `data` and returns what it returns (`SECCOMP_RET_*`).
pub fn run(program: &[sock_filter], data: &SeccompData) -> Result<u32, BpfError> {
    run_counted(program, data).map(|(ret, _)| ret)
}

/// [`run`], and the number of instructions it ran.
pub fn run_counted(program: &[sock_filter], data: &SeccompData) -> Result<(u32, usize), BpfError> {
    let mut acc: u32 = 0;
    let mut pc: usize = 0;
    let mut steps = 0;
    // A classic-BPF program only jumps forward, so it ends within its length.
    while let Some(ins) = program.get(pc) {
        steps += 1;
        let next = pc + 1;
        let jump = |taken: bool| next + usize::from(if taken { ins.jt } else { ins.jf });
        pc = match ins.code {
            LD_W_ABS => {
                acc = data
                    .word(ins.k)
                    .ok_or(BpfError::Load { pc, offset: ins.k })?;
                next
            }
            ALU_AND_K => {
                acc &= ins.k;
                next
            }
            JMP_JA => next + usize::try_from(ins.k).map_err(|_| BpfError::PastEnd)?,
            JMP_JEQ_K => jump(acc == ins.k),
            JMP_JGT_K => jump(acc > ins.k),
            JMP_JGE_K => jump(acc >= ins.k),
            JMP_JSET_K => jump(acc & ins.k != 0),
            RET_K => return Ok((ins.k, steps)),
            code => return Err(BpfError::Opcode { pc, code }),
        };
    }
    Err(BpfError::PastEnd)
}

/// What a stack of filters returns for a call, by the kernel's rule: every
/// filter runs, the action of highest precedence wins (`KILL_PROCESS`
/// first, `ALLOW` last), and among equal actions the most recently
/// installed filter's value (its errno) wins. `stack` is in installation
/// order.
pub fn decide(stack: &[&[sock_filter]], data: &SeccompData) -> Result<u32, BpfError> {
    let mut ret = RET_ALLOW;
    for program in stack.iter().rev() {
        let cur = run(program, data)?;
        // The kernel compares the actions as signed numbers.
        if ((cur & RET_ACTION_FULL) as i32) < ((ret & RET_ACTION_FULL) as i32) {
            ret = cur;
        }
    }
    Ok(ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
        sock_filter { code, jt, jf, k }
    }

    #[test]
    fn runs_loads_jumps_and_returns() {
        // if nr == 7 && (arg0 & 0xf0) == 0x10: errno 1, else allow
        let program = [
            ins(LD_W_ABS, 0, 0, 0),
            ins(JMP_JEQ_K, 0, 3, 7),
            ins(LD_W_ABS, 0, 0, 16),
            ins(ALU_AND_K, 0, 0, 0xf0),
            ins(JMP_JEQ_K, 1, 0, 0x10),
            ins(RET_K, 0, 0, RET_ALLOW),
            ins(RET_K, 0, 0, RET_ERRNO | 1),
        ];
        let call = |nr, a0| SeccompData::new(TargetArch::x86_64, nr, [a0, 0, 0, 0, 0, 0]);
        assert_eq!(run(&program, &call(7, 0x13)), Ok(RET_ERRNO | 1));
        assert_eq!(run(&program, &call(7, 0x23)), Ok(RET_ALLOW));
        assert_eq!(run(&program, &call(8, 0x13)), Ok(RET_ALLOW));
        assert_eq!(
            run(&[ins(LD_W_ABS, 0, 0, 64)], &call(1, 1)),
            Err(BpfError::Load { pc: 0, offset: 64 })
        );
        assert_eq!(
            run(&[ins(JMP_JA, 0, 0, 5)], &call(1, 1)),
            Err(BpfError::PastEnd)
        );
        assert_eq!(
            run(&[ins(0x07, 0, 0, 0)], &call(1, 1)),
            Err(BpfError::Opcode { pc: 0, code: 0x07 })
        );
    }

    #[test]
    fn loads_read_every_field_of_seccomp_data() {
        let data = SeccompData {
            nr: 7,
            arch: AUDIT_ARCH_AARCH64,
            instruction_pointer: 0x1111_2222_3333_4444,
            args: [0xa0a0_0001_b0b0_0002, 0, 0, 0, 0, 0x5555_6666_7777_8888],
        };
        let load = |offset| run(&[ins(LD_W_ABS, 0, 0, offset), ins(0x16, 0, 0, 0)], &data);
        // RET A (0x16) is not supported: read the accumulator through JEQ instead.
        assert!(load(0).is_err());
        let equals = |offset, value| {
            let p = [
                ins(LD_W_ABS, 0, 0, offset),
                ins(JMP_JEQ_K, 0, 1, value),
                ins(RET_K, 0, 0, 1),
                ins(RET_K, 0, 0, 0),
            ];
            run(&p, &data) == Ok(1)
        };
        assert!(equals(0, 7));
        assert!(equals(4, AUDIT_ARCH_AARCH64));
        assert!(equals(8, 0x3333_4444) && equals(12, 0x1111_2222));
        assert!(equals(16, 0xb0b0_0002) && equals(20, 0xa0a0_0001));
        assert!(equals(56, 0x7777_8888) && equals(60, 0x5555_6666));
        assert!(!equals(62, 0));
    }

    #[test]
    fn stacked_filters_follow_the_kernels_precedence() {
        let ret = |k| vec![ins(RET_K, 0, 0, k)];
        let (allow, eperm, enosys, kill) = (
            ret(RET_ALLOW),
            ret(RET_ERRNO | 1),
            ret(RET_ERRNO | 38),
            ret(RET_KILL_PROCESS),
        );
        let call = SeccompData::new(TargetArch::aarch64, 1, [0; 6]);
        let d = |s: &[&[sock_filter]]| decide(s, &call);
        assert_eq!(d(&[&allow, &eperm]), Ok(RET_ERRNO | 1));
        assert_eq!(
            d(&[&eperm, &enosys]),
            Ok(RET_ERRNO | 38),
            "the newest errno"
        );
        assert_eq!(d(&[&enosys, &eperm]), Ok(RET_ERRNO | 1), "the newest errno");
        assert_eq!(d(&[&kill, &eperm, &allow]), Ok(RET_KILL_PROCESS));
        assert_eq!(d(&[]), Ok(RET_ALLOW));
    }
}
