//! A binary search in front of a compiled filter.
//!
//! seccompiler's program compares the call's number with each rule's in
//! turn, so a call that no rule names runs through all of it. The kernel
//! runs the program that way once for every system call number when the
//! filter is installed (to learn which calls it always allows), and the
//! child's allow-list is installed by every job: that walk made up half of
//! the install's cost, about 0.3 ms of CPU per job.
//!
//! The prelude checks the architecture, loads the number and finds it among
//! the numbers the rules name in a few comparisons. A number none of them
//! names gets the filter's mismatch action at once, as it would at the end
//! of seccompiler's program; any other number, and any other architecture,
//! goes on to seccompiler's program, unchanged, which decides as before.
//! The tests run both programs on every number and compare.

use seccompiler::{sock_filter, BpfProgram};

const LD_W_ABS: u16 = 0x20;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
/// `offsetof(struct seccomp_data, nr)` and `arch`.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// Numbers compared one by one at a leaf of the search (at most 255).
const LEAF: usize = 8;
/// The longest a conditional jump reaches (its offsets are 8 bits).
const MAX_SHORT: usize = u8::MAX as usize;

/// An instruction of the prelude, before jumps to the program are resolved.
#[derive(Debug)]
enum Step {
    Plain(sock_filter),
    /// Go on to seccompiler's program (placed right after the prelude).
    ToProgram,
}

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> Step {
    Step::Plain(sock_filter { code, jt, jf, k })
}

/// `program` behind the dispatch: `audit_arch` is the architecture it was
/// compiled for, `named` the (sorted, distinct) numbers its rules name,
/// `mismatch` what it returns for any other call.
pub fn prepend(program: BpfProgram, audit_arch: u32, named: &[u32], mismatch: u32) -> BpfProgram {
    let mut steps = vec![
        ins(LD_W_ABS, 0, 0, ARCH),
        ins(JMP_JEQ_K, 1, 0, audit_arch),
        Step::ToProgram,
        ins(LD_W_ABS, 0, 0, NR),
    ];
    search(named, mismatch, &mut steps);
    let len = steps.len();
    steps
        .into_iter()
        .enumerate()
        .map(|(pc, step)| match step {
            Step::Plain(i) => i,
            // A forward jump from pc to `len`, the program's first instruction.
            Step::ToProgram => sock_filter {
                code: JMP_JA,
                jt: 0,
                jf: 0,
                k: u32::try_from(len - pc - 1).unwrap_or(u32::MAX),
            },
        })
        .chain(program)
        .collect()
}

/// Appends the search for the call's number (in the accumulator) among
/// `named`: on to the program when found, `mismatch` when not.
fn search(named: &[u32], mismatch: u32, out: &mut Vec<Step>) {
    if named.len() <= LEAF {
        // Each match jumps over the rest and the `ret` to one shared jump.
        for (i, &nr) in named.iter().enumerate() {
            out.push(ins(JMP_JEQ_K, (named.len() - i) as u8, 0, nr));
        }
        out.push(ins(RET_K, 0, 0, mismatch));
        out.push(Step::ToProgram);
        return;
    }
    let (low, high) = named.split_at(named.len() / 2);
    let mut below = Vec::new();
    search(low, mismatch, &mut below);
    if below.len() <= MAX_SHORT {
        // nr >= high[0]: skip the lower half.
        out.push(ins(JMP_JGE_K, below.len() as u8, 0, high[0]));
    } else {
        // Too far for a conditional jump: through an unconditional one.
        let skip = u32::try_from(below.len()).unwrap_or(u32::MAX);
        out.push(ins(JMP_JGE_K, 0, 1, high[0]));
        out.push(ins(JMP_JA, 0, 0, skip));
    }
    out.extend(below);
    search(high, mismatch, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::bpf::{self, SeccompData};
    use seccompiler::TargetArch;

    const X86: u32 = 0xc000_003e;
    const NO: u32 = 0x0005_0001;
    const PROGRAM: u32 = 0x7fff_0000;

    fn decide(p: &[sock_filter], arch: u32, nr: u32) -> u32 {
        let mut data = SeccompData::new(TargetArch::x86_64, nr, [0; 6]);
        data.arch = arch;
        bpf::run(p, &data).unwrap()
    }

    #[test]
    fn named_numbers_reach_the_program_and_others_get_the_mismatch() {
        for count in [0usize, 1, 3, 4, 7, 50, 400] {
            let named: Vec<u32> = (0..count as u32).map(|i| i * 3 + 1).collect();
            // A stand-in for seccompiler's program: it answers PROGRAM.
            let p = prepend(
                vec![sock_filter {
                    code: RET_K,
                    jt: 0,
                    jf: 0,
                    k: PROGRAM,
                }],
                X86,
                &named,
                NO,
            );
            for nr in 0..count as u32 * 3 + 5 {
                let want = if named.contains(&nr) { PROGRAM } else { NO };
                assert_eq!(decide(&p, X86, nr), want, "{count} named, nr {nr}");
            }
            assert_eq!(decide(&p, X86, u32::MAX), NO);
            assert_eq!(decide(&p, 0xc000_00b7, 1), PROGRAM, "another arch");
        }
    }

    #[test]
    fn a_large_set_needs_long_jumps_and_still_fits() {
        let named: Vec<u32> = (0..1000).collect();
        let p = prepend(vec![], X86, &named, NO);
        assert!(p.iter().any(|i| i.code == JMP_JA && i.k > 1));
        assert!(p.len() < 4096, "{}", p.len());
    }
}
