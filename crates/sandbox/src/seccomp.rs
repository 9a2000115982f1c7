//! The seccomp filters of the sandbox, as data compiled by `seccompiler`.
//!
//! - [`zygote_filter`] (a deny-list) is installed by the launcher just before
//!   it executes Python: no ptrace, mount, namespaces, BPF, io_uring,
//!   keyrings, userfaultfd, perf events, kernel modules, sockets other than
//!   `AF_UNIX`. It must still allow `execve` (for that one exec) and `fork`
//!   (the zygote forks each job's child).
//! - [`child_filter`] (an allow-list) is stacked on top by each job's child
//!   before it touches user code (`python/tradebox/confine.py` installs the
//!   program compiled here with one `prctl`): no exec, no fork (`clone` only
//!   with `CLONE_THREAD`), sockets only `AF_UNIX`, `prlimit64` only on
//!   itself. Everything else fails with EPERM.
//! - [`enosys_filter`] makes `clone3` fail with ENOSYS, installed last in
//!   both places: `clone3` passes its flags in memory, out of a filter's
//!   sight, and ENOSYS makes glibc fall back to `clone`, whose flags the
//!   filters check. (Of several stacked filters returning an errno, the most
//!   recently installed one's errno wins.)

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// A filter could not be built: a bug in the policy, never user input.
#[derive(Debug, thiserror::Error)]
#[error("seccomp policy: {0}")]
pub struct PolicyError(String);

fn arch() -> Result<TargetArch, PolicyError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        other => Err(PolicyError(format!("unsupported architecture {other}"))),
    }
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, PolicyError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| PolicyError(e.to_string()))
}

/// A rule that matches when every condition holds.
fn when(conds: Vec<SeccompCondition>) -> Result<SeccompRule, PolicyError> {
    SeccompRule::new(conds).map_err(|e| PolicyError(e.to_string()))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, PolicyError> {
    SeccompFilter::new(rules, mismatch, matched, arch()?)
        .and_then(TryInto::try_into)
        .map_err(|e| PolicyError(e.to_string()))
}

const EPERM: u32 = libc::EPERM as u32;

const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

/// The zygote's deny-list (see the module doc).
pub fn zygote_filter() -> Result<BpfProgram, PolicyError> {
    let denied = [
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_bpf,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_userfaultfd,
        libc::SYS_perf_event_open,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_quotactl,
        libc::SYS_fanotify_init,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_personality,
        libc::SYS_syslog,
    ];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        denied.iter().map(|&nr| (nr, vec![])).collect();
    let not_unix = || cond(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64);
    rules.insert(libc::SYS_socket, vec![when(vec![not_unix()?])?]);
    rules.insert(libc::SYS_socketpair, vec![when(vec![not_unix()?])?]);
    let mut clone = Vec::new();
    for flag in NAMESPACE_FLAGS {
        let flag = flag as u64;
        clone.push(when(vec![cond(0, SeccompCmpOp::MaskedEq(flag), flag)?])?);
    }
    rules.insert(libc::SYS_clone, clone);
    compile(rules, SeccompAction::Allow, SeccompAction::Errno(EPERM))
}

/// The job child's allow-list (see the module doc).
pub fn child_filter() -> Result<BpfProgram, PolicyError> {
    let mut allowed = vec![
        // files, through Landlock
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_lseek,
        libc::SYS_close,
        libc::SYS_close_range,
        libc::SYS_openat,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_fstatfs,
        libc::SYS_statfs,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_readlinkat,
        libc::SYS_getdents64,
        libc::SYS_getcwd,
        libc::SYS_chdir,
        libc::SYS_fchdir,
        libc::SYS_mkdirat,
        libc::SYS_unlinkat,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_symlinkat,
        libc::SYS_ftruncate,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_fallocate,
        libc::SYS_fchmod,
        libc::SYS_fchmodat,
        libc::SYS_utimensat,
        libc::SYS_umask,
        libc::SYS_fcntl,
        libc::SYS_ioctl,
        libc::SYS_dup,
        libc::SYS_dup3,
        libc::SYS_pipe2,
        libc::SYS_copy_file_range,
        libc::SYS_sendfile,
        libc::SYS_flock,
        // memory
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mprotect,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_msync,
        libc::SYS_mincore,
        libc::SYS_brk,
        libc::SYS_membarrier,
        // signals, within the process (the pid namespace hides everything else)
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigsuspend,
        libc::SYS_rt_sigtimedwait,
        libc::SYS_sigaltstack,
        libc::SYS_kill,
        libc::SYS_tgkill,
        libc::SYS_tkill,
        libc::SYS_getitimer,
        libc::SYS_setitimer,
        libc::SYS_timer_create,
        libc::SYS_timer_settime,
        libc::SYS_timer_delete,
        // identity and time
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_getppid,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_getgroups,
        libc::SYS_getresuid,
        libc::SYS_getresgid,
        libc::SYS_getpgid,
        libc::SYS_getsid,
        libc::SYS_uname,
        libc::SYS_sysinfo,
        libc::SYS_getrusage,
        libc::SYS_times,
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettimeofday,
        libc::SYS_getrandom,
        libc::SYS_sched_getaffinity,
        libc::SYS_sched_yield,
        libc::SYS_sched_getparam,
        libc::SYS_sched_getscheduler,
        // threads and process end
        libc::SYS_futex,
        libc::SYS_set_robust_list,
        libc::SYS_get_robust_list,
        libc::SYS_set_tid_address,
        libc::SYS_rseq,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_wait4,
        libc::SYS_waitid,
        // waiting on descriptors
        libc::SYS_ppoll,
        libc::SYS_pselect6,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_eventfd2,
        libc::SYS_timerfd_create,
        libc::SYS_timerfd_settime,
        libc::SYS_timerfd_gettime,
        // AF_UNIX sockets only (socket/socketpair are checked below)
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept4,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        libc::SYS_shutdown,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
    ];
    #[cfg(target_arch = "x86_64")]
    allowed.extend([
        libc::SYS_open,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_access,
        libc::SYS_readlink,
        libc::SYS_unlink,
        libc::SYS_rename,
        libc::SYS_mkdir,
        libc::SYS_rmdir,
        libc::SYS_getdents,
        libc::SYS_dup2,
        libc::SYS_pipe,
        libc::SYS_poll,
        libc::SYS_select,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_create,
        libc::SYS_alarm,
        libc::SYS_time,
        libc::SYS_getrlimit,
        libc::SYS_arch_prctl,
        libc::SYS_chmod,
        libc::SYS_symlink,
        libc::SYS_getpgrp,
    ]);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        allowed.iter().map(|&nr| (nr, vec![])).collect();
    let unix = || cond(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64);
    rules.insert(libc::SYS_socket, vec![when(vec![unix()?])?]);
    rules.insert(libc::SYS_socketpair, vec![when(vec![unix()?])?]);
    // Threads only: CLONE_THREAD set and no namespace flag.
    let thread = libc::CLONE_THREAD as u64;
    let ns_mask = NAMESPACE_FLAGS.iter().fold(0u64, |m, f| m | *f as u64);
    rules.insert(
        libc::SYS_clone,
        vec![when(vec![cond(
            0,
            SeccompCmpOp::MaskedEq(thread | ns_mask),
            thread,
        )?])?],
    );
    // Resource limits of itself only (pid 0), so a job may lower its own.
    rules.insert(
        libc::SYS_prlimit64,
        vec![when(vec![cond(0, SeccompCmpOp::Eq, 0)?])?],
    );
    // Naming threads and memory areas, and adding seccomp filters (which can
    // only restrict further); nothing else of prctl.
    let prctl_ok: Vec<SeccompRule> = [
        libc::PR_SET_NAME,
        libc::PR_GET_NAME,
        libc::PR_SET_VMA,
        libc::PR_SET_SECCOMP,
        libc::PR_GET_SECCOMP,
    ]
    .iter()
    .map(|&op| when(vec![cond(0, SeccompCmpOp::Eq, op as u64)?]))
    .collect::<Result<_, _>>()?;
    rules.insert(libc::SYS_prctl, prctl_ok);
    compile(rules, SeccompAction::Errno(EPERM), SeccompAction::Allow)
}

/// `clone3` answers ENOSYS (see the module doc).
pub fn enosys_filter() -> Result<BpfProgram, PolicyError> {
    let rules = BTreeMap::from([(libc::SYS_clone3, vec![])]);
    compile(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )
}

/// The program as the kernel's `struct sock_filter` array, native endian,
/// for the Python child to install.
pub fn to_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for ins in program {
        out.extend_from_slice(&ins.code.to_ne_bytes());
        out.push(ins.jt);
        out.push(ins.jf);
        out.extend_from_slice(&ins.k.to_ne_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        for p in [zygote_filter(), child_filter(), enosys_filter()] {
            let p = p.unwrap();
            assert!(!p.is_empty() && p.len() < 4096, "{}", p.len());
            assert_eq!(to_bytes(&p).len(), p.len() * 8);
        }
    }
}
