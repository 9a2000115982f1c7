//! The sandbox's raw system calls, each behind a safe wrapper: the only
//! module of tradebox-sandbox allowed `unsafe`, and every `unsafe` block
//! here says why it is sound (`// SAFETY:`). The launcher and the doctor
//! call these wrappers; everything else goes through nix, caps, landlock
//! and seccompiler, which are safe APIs.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;

use nix::libc;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// Which side of a [`clone_into_namespaces`] this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The new process (pid 1 of a new pid namespace, when asked for one).
    Child,
    /// The caller, with the new process's pid.
    Parent(Pid),
}

/// How many threads this process has (the entries of `/proc/self/task`).
pub fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Closes every descriptor from `first` up (`close_range(first, ~0, 0)`).
///
/// Descriptors Rust objects still own become invalid, so call it before
/// anything opens one: the launcher calls it first thing, when it holds
/// only stdin, stdout and stderr.
pub fn close_descriptors_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range takes two integers and a flag and touches no
    // memory of this process; closing descriptors is not a memory-safety
    // matter (a later use of one fails with EBADF).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Like `fork`, but the new process starts in the new namespaces of
/// `namespaces` (with `SIGCHLD` to the parent when it ends). A raw `clone`
/// rather than `unshare` + `fork`, so that the parent, outside the new user
/// namespace, can write the child's uid and gid maps (which a root caller
/// needs in order to map the sandbox to an unprivileged host uid).
///
/// Refuses unless the process is single-threaded: after a fork only the
/// calling thread exists, and a lock held by another thread would stay
/// locked forever in the child.
pub fn clone_into_namespaces(namespaces: CloneFlags) -> io::Result<Forked> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "clone needs a single-threaded process, found {threads} threads"
        )));
    }
    let flags = namespaces.bits() | libc::SIGCHLD;
    // SAFETY: the process is single-threaded (checked just above, and it
    // cannot gain a thread meanwhile, since only this thread could start
    // one). Without CLONE_VM and with a null stack, clone behaves as fork:
    // the child gets a copy of the address space and returns here with 0;
    // no pointer is passed to the kernel.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        0 => Ok(Forked::Child),
        p if p > 0 => i32::try_from(p)
            .map(|p| Forked::Parent(Pid::from_raw(p)))
            .map_err(|_| io::Error::other(format!("clone returned pid {p}"))),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The Landlock ABI version the kernel offers (0: none).
pub fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: the version query passes a null attribute pointer with size
    // 0, which the kernel does not read, and only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_landlock_version_is_a_number() {
        assert!(landlock_abi() >= 0);
    }

    #[test]
    fn threads_are_counted() {
        // The test harness runs tests on threads of its own.
        assert!(thread_count().unwrap() >= 1);
    }

    #[test]
    fn clone_refuses_a_multi_threaded_process() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let err = clone_into_namespaces(CloneFlags::empty()).unwrap_err();
        assert!(err.to_string().contains("single-threaded"), "{err}");
        drop(tx);
        let _ = other.join();
    }
}
