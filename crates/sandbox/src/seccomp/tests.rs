//! Tests of the policy files and of the programs compiled from them, for
//! both architectures, run through the BPF interpreter (nothing is
//! installed in the test process).

// libc's `Ioctl` is `c_ulong` with glibc and `c_int` with musl: the casts
// to u64 are needed on some targets only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::unnecessary_cast)]

use std::collections::{BTreeMap, BTreeSet};

use nix::libc;
use seccompiler::TargetArch;

use super::bpf::{self, SeccompData, RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS};
use super::policy::{lint, Op};
use super::*;

const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

/// The compiled stack of a filter (see [`Filter::stack`]) for `arch`.
struct Stack {
    arch: TargetArch,
    programs: Vec<BpfProgram>,
}

impl Stack {
    fn of(filter: Filter, arch: TargetArch) -> Stack {
        Stack {
            arch,
            programs: filter
                .stack()
                .iter()
                .map(|f| compile(*f, arch).unwrap())
                .collect(),
        }
    }

    /// What the stack returns for `name(args)`; `None` when `arch` has no
    /// such call.
    fn call(&self, name: &str, args: &[u64]) -> Option<u32> {
        let nr = syscall_number(name, self.arch).ok()?;
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        let refs: Vec<&[seccompiler::sock_filter]> =
            self.programs.iter().map(Vec::as_slice).collect();
        Some(bpf::decide(&refs, &SeccompData::new(self.arch, nr, a)).unwrap())
    }

    fn expect(&self, name: &str, args: &[u64], want: u32) {
        if let Some(got) = self.call(name, args) {
            assert_eq!(
                got, want,
                "{:?}: {name}({args:#x?}) returned {got:#x}, expected {want:#x}",
                self.arch
            );
        }
    }
}

#[test]
fn every_file_parses_and_compiles_for_both_architectures() {
    for source in &SOURCES {
        parse(source).unwrap();
    }
    for arch in ARCHES {
        for filter in Filter::ALL {
            let p = compile(filter, arch).unwrap();
            assert!(!p.is_empty() && p.len() < 4096, "{}", p.len());
            assert_eq!(to_bytes(&p).len(), p.len() * 8);
        }
    }
    // What the launcher uses: the host's programs.
    for p in [zygote_filter(), child_filter(), enosys_filter()] {
        assert!(!p.unwrap().is_empty());
    }
}

#[test]
fn every_rule_has_a_reason_and_no_rule_repeats_shadows_or_contradicts() {
    for arch in ARCHES {
        for filter in Filter::ALL {
            let doc = document(filter, arch).unwrap();
            let findings = lint(filter.name(), &doc);
            assert!(findings.is_empty(), "{arch:?}: {findings:#?}");
        }
    }
}

#[test]
fn the_x86_64_additions_do_not_repeat_a_common_rule() {
    let common: BTreeSet<String> = parse(&SOURCES[1])
        .unwrap()
        .filter
        .into_iter()
        .map(|r| r.syscall)
        .collect();
    let extra = parse(&SOURCES[2]).unwrap();
    for rule in extra.filter {
        assert!(
            !common.contains(&rule.syscall),
            "{} is in both child.json and child.x86_64.json",
            rule.syscall
        );
        assert!(rule.args.is_none(), "x86_64 additions are unconditional");
    }
}

/// The constants a condition's comment may name (its first word), with
/// their values from the C headers (libc): a number that does not match its
/// name fails here.
fn constants() -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("TCGETS", libc::TCGETS as u64),
        ("TIOCGWINSZ", libc::TIOCGWINSZ as u64),
        ("FIONBIO", libc::FIONBIO as u64),
        ("FIOCLEX", libc::FIOCLEX as u64),
        ("FIONCLEX", libc::FIONCLEX as u64),
        ("PR_SET_NAME", libc::PR_SET_NAME as u64),
        ("PR_GET_NAME", libc::PR_GET_NAME as u64),
        ("PR_SET_VMA", libc::PR_SET_VMA as u64),
        ("PR_SET_SECCOMP", libc::PR_SET_SECCOMP as u64),
        ("PR_GET_SECCOMP", libc::PR_GET_SECCOMP as u64),
        ("AF_UNIX", libc::AF_UNIX as u64),
        ("CLONE_THREAD", libc::CLONE_THREAD as u64),
        ("CLONE_NEWUSER", libc::CLONE_NEWUSER as u64),
        ("CLONE_NEWNS", libc::CLONE_NEWNS as u64),
        ("CLONE_NEWPID", libc::CLONE_NEWPID as u64),
        ("CLONE_NEWNET", libc::CLONE_NEWNET as u64),
        ("CLONE_NEWIPC", libc::CLONE_NEWIPC as u64),
        ("CLONE_NEWUTS", libc::CLONE_NEWUTS as u64),
        ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP as u64),
        ("INT_MAX", i32::MAX as u64),
    ])
}

#[test]
fn named_values_match_the_c_headers() {
    // The ioctl and prctl numbers are the same on x86_64 and aarch64 (both
    // use the kernel's generic ioctl and prctl numbers), so the host's libc
    // checks both.
    let table = constants();
    for arch in ARCHES {
        for filter in Filter::ALL {
            for rule in document(filter, arch).unwrap().filter {
                for c in rule.conditions() {
                    let comment = c.comment.as_deref().unwrap_or("");
                    let word = comment.split([':', ' ']).next().unwrap_or("");
                    let named = word.chars().any(|ch| ch.is_ascii_uppercase())
                        && word
                            .chars()
                            .all(|ch| ch.is_ascii_uppercase() || ch == '_' || ch.is_ascii_digit());
                    if named {
                        let value = table.get(word).unwrap_or_else(|| {
                            panic!("{}: unknown constant {word} in {comment:?}", rule.syscall)
                        });
                        assert_eq!(*value, c.val, "{}: {comment:?}", rule.syscall);
                    } else {
                        assert_eq!(
                            word.parse::<u64>().ok(),
                            Some(c.val),
                            "{}: a condition's comment starts with its value's name or the \
                             value itself: {comment:?}",
                            rule.syscall
                        );
                    }
                }
            }
        }
    }
    let mask = [
        "CLONE_NEWNS",
        "CLONE_NEWCGROUP",
        "CLONE_NEWUTS",
        "CLONE_NEWIPC",
    ]
    .iter()
    .chain(&[
        "CLONE_NEWUSER",
        "CLONE_NEWPID",
        "CLONE_NEWNET",
        "CLONE_THREAD",
    ])
    .map(|n| table[n])
    .fold(0, |m, f| m | f);
    let clone = document(Filter::Child, TargetArch::x86_64)
        .unwrap()
        .filter
        .into_iter()
        .find(|r| r.syscall == "clone")
        .unwrap();
    assert_eq!(clone.conditions()[0].op, Op::MaskedEq(mask));
}

/// Every rule is live: some call is decided the way the rule says only
/// because of it. For each rule, a call it matches (its witness) gets the
/// filter's match action from the whole stack; with the rule removed, the
/// same call gets something else. A rule shadowed by another rule or by a
/// filter stacked with it (an allowed call the zygote denies anyway) fails.
#[test]
fn every_rule_decides_some_call_no_other_rule_decides() {
    for arch in ARCHES {
        for filter in Filter::ALL {
            let doc = document(filter, arch).unwrap();
            let want = doc.match_action.ret();
            let stack_with = |replacement: Option<&FilterDoc>| -> Vec<BpfProgram> {
                let mut replaced = false;
                filter
                    .stack()
                    .iter()
                    .map(|f| match replacement {
                        // Replace the filter where it is first installed.
                        Some(doc) if *f == filter && !replaced => {
                            replaced = true;
                            compile_doc(filter, doc, arch).unwrap()
                        }
                        _ => compile(*f, arch).unwrap(),
                    })
                    .collect()
            };
            let whole = stack_with(None);
            for (i, rule) in doc.filter.iter().enumerate() {
                let nr = syscall_number(&rule.syscall, arch).unwrap();
                let args = rule.witness().unwrap();
                let data = SeccompData::new(arch, nr, args);
                let decide = |programs: &[BpfProgram]| {
                    let refs: Vec<&[seccompiler::sock_filter]> =
                        programs.iter().map(Vec::as_slice).collect();
                    bpf::decide(&refs, &data).unwrap()
                };
                let with = decide(&whole);
                let without = decide(&stack_with(Some(&doc.without(i))));
                assert_eq!(
                    with,
                    want,
                    "{arch:?} {}: {} ({args:#x?}) is not decided by its rule: {with:#x}",
                    filter.name(),
                    rule.label()
                );
                assert_ne!(
                    without,
                    want,
                    "{arch:?} {}: {} is redundant: without it {args:#x?} is decided the same",
                    filter.name(),
                    rule.label()
                );
            }
        }
    }
}

#[test]
fn rule_labels_are_unique() {
    for arch in ARCHES {
        let doc = document(Filter::Child, arch).unwrap();
        let mut seen = BTreeSet::new();
        for rule in &doc.filter {
            assert!(seen.insert(rule.label()), "{} twice", rule.label());
        }
    }
}

/// The corpus's list of allowed calls it does not make, with reasons (see
/// the README): each names a rule of the child's allow-list.
#[test]
fn the_unreached_list_names_real_rules_with_reasons() {
    let unreached: BTreeMap<String, String> =
        serde_json::from_str(include_str!("../../seccomp/corpus/unreached.json")).unwrap();
    let mut labels = BTreeSet::new();
    for arch in ARCHES {
        for rule in document(Filter::Child, arch).unwrap().filter {
            labels.insert(rule.label());
        }
    }
    for (label, reason) in &unreached {
        assert!(
            labels.contains(label),
            "{label} is not a rule of child.json"
        );
        assert!(
            reason.trim().len() >= policy::MIN_REASON,
            "{label}: {reason:?}"
        );
    }
}

#[test]
fn the_child_runs_threads_but_no_process_and_no_namespace() {
    let thread = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;
    let fork = (libc::CLONE_CHILD_CLEARTID | libc::CLONE_CHILD_SETTID | libc::SIGCHLD) as u64;
    let vfork = (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64;
    for arch in ARCHES {
        let child = Stack::of(Filter::Child, arch);
        child.expect("clone", &[thread], RET_ALLOW);
        child.expect("clone", &[fork], EPERM);
        child.expect("clone", &[vfork], EPERM);
        for ns in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
        ] {
            child.expect("clone", &[thread | ns as u64], EPERM);
        }
        child.expect("clone3", &[0, 88], ENOSYS);
        for name in [
            "execve",
            "execveat",
            "fork",
            "vfork",
            "ptrace",
            "process_vm_readv",
            "unshare",
            "setns",
            "mount",
            "bpf",
            "io_uring_setup",
            "userfaultfd",
            "perf_event_open",
            "pidfd_open",
            "pidfd_send_signal",
            "rt_sigqueueinfo",
            "rt_tgsigqueueinfo",
            "tkill",
            "wait4",
            "seccomp",
            "landlock_restrict_self",
            "setrlimit",
            "setpriority",
            "chroot",
        ] {
            child.expect(name, &[0, 0, 0], EPERM);
        }
    }
}

#[test]
fn the_child_may_signal_itself_only() {
    let neg = |n: i64| n as u64;
    for arch in ARCHES {
        let child = Stack::of(Filter::Child, arch);
        for pid in [2u64, 5, 4_000_000, 0x7fff_ffff] {
            child.expect("kill", &[pid, libc::SIGINT as u64], RET_ALLOW);
            child.expect("tgkill", &[pid, pid, libc::SIGINT as u64], RET_ALLOW);
        }
        // A pid_t is an int: the kernel reads the low half of the register.
        child.expect("kill", &[0xdead_beef_0000_0005, 9], RET_ALLOW);
        for pid in [0u64, 1, neg(-1), neg(-5), 0xffff_ffff, 0x8000_0000] {
            child.expect("kill", &[pid, 9], EPERM);
            child.expect("tgkill", &[pid, 1, 9], EPERM);
        }
        child.expect("tkill", &[5, 9], EPERM);
    }
}

#[test]
fn the_childs_ioctl_prctl_prlimit_and_sockets_are_narrow() {
    for arch in ARCHES {
        let child = Stack::of(Filter::Child, arch);
        for req in [
            libc::TCGETS,
            libc::TIOCGWINSZ,
            libc::FIONBIO,
            libc::FIOCLEX,
            libc::FIONCLEX,
        ] {
            child.expect("ioctl", &[1, req as u64, 0], RET_ALLOW);
            // The request is an unsigned int: the high half does not count.
            child.expect(
                "ioctl",
                &[1, req as u64 | 0xffff_0000_0000_0000, 0],
                RET_ALLOW,
            );
        }
        for req in [
            libc::TIOCSTI,
            libc::TIOCSCTTY,
            libc::TCSETS,
            libc::TIOCSWINSZ,
            libc::FIONREAD,
            libc::TIOCLINUX,
            libc::TCGETS2,
            libc::FICLONE,
            libc::SIOCGIFCONF,
            0,
        ] {
            child.expect("ioctl", &[1, req as u64, 0], EPERM);
        }
        for op in [
            libc::PR_SET_NAME,
            libc::PR_GET_NAME,
            libc::PR_SET_VMA,
            libc::PR_SET_SECCOMP,
            libc::PR_GET_SECCOMP,
        ] {
            child.expect("prctl", &[op as u64, 0], RET_ALLOW);
        }
        for op in [
            libc::PR_SET_PDEATHSIG,
            libc::PR_SET_DUMPABLE,
            libc::PR_SET_NO_NEW_PRIVS,
            libc::PR_CAP_AMBIENT,
            libc::PR_SET_MM,
            libc::PR_SET_PTRACER,
            libc::PR_SET_SECUREBITS,
            libc::PR_SET_CHILD_SUBREAPER,
        ] {
            child.expect("prctl", &[op as u64, 0], EPERM);
        }
        child.expect("prlimit64", &[0, libc::RLIMIT_AS as u64, 1, 0], RET_ALLOW);
        for pid in [1u64, 2, 5] {
            child.expect("prlimit64", &[pid, libc::RLIMIT_AS as u64, 1, 0], EPERM);
        }
        for (name, n) in [("socket", 3usize), ("socketpair", 4)] {
            let args = |domain: i32| {
                let mut a = vec![domain as u64, libc::SOCK_STREAM as u64];
                a.resize(n, 0);
                a
            };
            child.expect(name, &args(libc::AF_UNIX), RET_ALLOW);
            for domain in [
                libc::AF_INET,
                libc::AF_INET6,
                libc::AF_NETLINK,
                libc::AF_PACKET,
                libc::AF_VSOCK,
            ] {
                child.expect(name, &args(domain), EPERM);
            }
        }
    }
}

#[test]
fn the_zygote_may_exec_and_fork_but_not_leave_its_namespaces() {
    let fork = libc::SIGCHLD as u64;
    for arch in ARCHES {
        let zygote = Stack::of(Filter::Zygote, arch);
        zygote.expect("execve", &[0, 0, 0], RET_ALLOW);
        zygote.expect("clone", &[fork], RET_ALLOW);
        zygote.expect("clone", &[fork | libc::CLONE_NEWUSER as u64], EPERM);
        zygote.expect("clone", &[fork | libc::CLONE_NEWNET as u64], EPERM);
        zygote.expect("clone3", &[0, 88], ENOSYS);
        zygote.expect("socket", &[libc::AF_UNIX as u64, 1, 0], RET_ALLOW);
        zygote.expect("socket", &[libc::AF_INET as u64, 1, 0], EPERM);
        zygote.expect("socket", &[libc::AF_NETLINK as u64, 3, 0], EPERM);
        for name in [
            "ptrace",
            "unshare",
            "mount",
            "bpf",
            "io_uring_setup",
            "keyctl",
        ] {
            zygote.expect(name, &[0, 0, 0], EPERM);
        }
        // What the zygote does not deny it allows (the child's list narrows it).
        zygote.expect("pidfd_send_signal", &[3, 9, 0, 0], RET_ALLOW);
    }
}

#[test]
fn other_architectures_and_the_x32_abi_are_refused() {
    let x86 = Stack::of(Filter::Child, TargetArch::x86_64);
    let read = syscall_number("read", TargetArch::x86_64).unwrap();
    let refs: Vec<&[seccompiler::sock_filter]> = x86.programs.iter().map(Vec::as_slice).collect();
    let as_aarch64 = SeccompData::new(TargetArch::aarch64, read, [0; 6]);
    assert_eq!(bpf::decide(&refs, &as_aarch64), Ok(RET_KILL_PROCESS));
    let x32 = SeccompData::new(TargetArch::x86_64, read | 0x4000_0000, [0; 6]);
    assert_eq!(bpf::decide(&refs, &x32), Ok(EPERM));
    let native = SeccompData::new(TargetArch::x86_64, read, [0; 6]);
    assert_eq!(bpf::decide(&refs, &native), Ok(RET_ALLOW));
}

#[test]
fn syscall_numbers_come_from_seccompilers_tables() {
    assert_eq!(syscall_number("read", TargetArch::x86_64).unwrap(), 0);
    assert_eq!(syscall_number("read", TargetArch::aarch64).unwrap(), 63);
    assert_eq!(syscall_number("clone3", TargetArch::aarch64).unwrap(), 435);
    assert!(syscall_number("fork", TargetArch::aarch64).is_err());
    assert!(syscall_number("no_such_call", TargetArch::x86_64).is_err());
    let host = host_arch().unwrap();
    assert_eq!(
        i64::from(syscall_number("ioctl", host).unwrap()),
        libc::SYS_ioctl
    );
}

#[test]
fn a_broken_file_is_a_policy_error() {
    let bad = Source {
        file: "bad.json",
        filter: Filter::Enosys,
        arch: None,
        text: r#"{"enosys": {"mismatch_action": "allow", "match_action": "allow", "filter": [], "x": 1}}"#,
    };
    assert!(matches!(parse(&bad), Err(PolicyError::Parse { .. })));
    let misnamed = Source {
        text: r#"{"other": {"mismatch_action": "allow", "match_action": {"errno": 1}, "filter": []}}"#,
        ..bad
    };
    assert!(matches!(parse(&misnamed), Err(PolicyError::Shape { .. })));
    let doc = FilterDoc {
        mismatch_action: Action::Allow,
        match_action: Action::Errno(1),
        filter: vec![Rule {
            syscall: "no_such_call".into(),
            args: None,
            comment: None,
        }],
    };
    let err = compile_doc(Filter::Enosys, &doc, TargetArch::x86_64).unwrap_err();
    assert!(err.to_string().contains("no_such_call"), "{err}");
}

/// Argument vectors to try each call with: none, all bits, every value a
/// condition of `doc` compares with (in every position), and a few mixed.
fn argument_sets(doc: &FilterDoc) -> Vec<[u64; 6]> {
    let mut values: BTreeSet<u64> = doc
        .filter
        .iter()
        .flat_map(|r| r.conditions().iter().map(|c| c.val))
        .collect();
    values.extend([0, 1, u64::MAX, 0xffff_ffff, 0x1_0000_0000]);
    let mut sets: Vec<[u64; 6]> = values.iter().map(|v| [*v; 6]).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..4 {
        let mut a = [0u64; 6];
        for slot in &mut a {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *slot = x;
        }
        sets.push(a);
    }
    sets
}

#[test]
fn the_dispatch_decides_every_call_as_seccompilers_program_does() {
    let numbers: Vec<u32> = (0..1200)
        .chain((0..600).map(|n| n | 0x4000_0000))
        .chain([0x3fff_ffff, 0x7fff_ffff, 0x8000_0000, u32::MAX])
        .collect();
    for arch in ARCHES {
        for filter in Filter::ALL {
            let fast = compile(filter, arch).unwrap();
            let plain = compile_plain(filter, arch).unwrap();
            assert!(fast.len() > plain.len() && fast.ends_with(&plain));
            let args = argument_sets(&document(filter, arch).unwrap());
            for audit in [
                bpf::audit_arch(arch),
                bpf::AUDIT_ARCH_X86_64,
                bpf::AUDIT_ARCH_AARCH64,
                0,
            ] {
                for &nr in &numbers {
                    for a in &args {
                        let mut data = SeccompData::new(arch, nr, *a);
                        data.arch = audit;
                        assert_eq!(
                            bpf::run(&fast, &data),
                            bpf::run(&plain, &data),
                            "{filter:?} for {arch:?}: call {nr:#x} on arch {audit:#x} with {a:#x?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_call_no_rule_names_is_decided_in_a_few_steps() {
    for arch in ARCHES {
        let fast = compile(Filter::Child, arch).unwrap();
        let plain = compile_plain(Filter::Child, arch).unwrap();
        let named: BTreeSet<u32> = document(Filter::Child, arch)
            .unwrap()
            .filter
            .iter()
            .map(|r| syscall_number(&r.syscall, arch).unwrap())
            .collect();
        let unnamed = (0..500).filter(|nr| !named.contains(nr));
        let (mut before, mut after, mut calls) = (0, 0, 0);
        for nr in unnamed {
            let data = SeccompData::new(arch, nr, [0; 6]);
            let (ret, steps) = bpf::run_counted(&fast, &data).unwrap();
            assert_eq!(ret, EPERM);
            assert!(steps <= 20, "{arch:?}: call {nr} took {steps} steps");
            before += bpf::run_counted(&plain, &data).unwrap().1;
            after += steps;
            calls += 1;
        }
        println!(
            "{arch:?}: {calls} unnamed calls, {before} steps before the dispatch, {after} after"
        );
        assert!(after * 10 < before, "{after} vs {before}");
    }
}
