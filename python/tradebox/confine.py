"""Confinement of a job's child, between the zygote's fork and the job.

The zygote already runs in its namespaces, minimal read-only root, Landlock
domain and seccomp deny-list (set up by the Rust launcher). Here the child
adds what is per job: its own session, death with the zygote, resource
limits, and the seccomp allow-list that the launcher compiled (in
crates/sandbox/src/seccomp.rs) and left in /etc/tradebox. Any failure raises
ConfineError and the child exits without running user code.
"""

import ctypes
import os
import resource
import signal

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_GET_NO_NEW_PRIVS = 39
SECCOMP_MODE_FILTER = 2
FILTERS = ("/etc/tradebox/child.bpf", "/etc/tradebox/enosys.bpf")

_libc = ctypes.CDLL(None, use_errno=True)


class ConfineError(Exception):
    """A confinement step could not be applied."""


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _prctl(option, arg=0):
    result = _libc.prctl(ctypes.c_int(option), arg, ctypes.c_ulong(0), ctypes.c_ulong(0),
                         ctypes.c_ulong(0))
    if result < 0:
        err = ctypes.get_errno()
        raise ConfineError(f"prctl({option}) failed: {os.strerror(err)}")
    return result


def set_pdeathsig():
    """Die with SIGKILL when the parent dies."""
    _prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL))


def set_dumpable(dumpable: bool):
    """A non-dumpable process's /proc files (mem, fd, environ, ...) are closed
    to other processes of the same user: the zygote's jobs cannot read its
    memory or write to its pipes. Children inherit it."""
    _prctl(PR_SET_DUMPABLE, ctypes.c_ulong(1 if dumpable else 0))


def load_filters():
    """The compiled seccomp programs, read once by the zygote."""
    programs = []
    for path in FILTERS:
        with open(path, "rb") as f:
            program = f.read()
        if not program or len(program) % 8:
            raise ConfineError(f"{path}: not a BPF program")
        programs.append(program)
    return programs


def _install(program: bytes):
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    result = _libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                         ctypes.byref(prog), ctypes.c_ulong(0), ctypes.c_ulong(0))
    if result < 0:
        raise ConfineError(f"seccomp filter not installed: {os.strerror(ctypes.get_errno())}")


def child(filters, scratch_bytes: int):
    """Confine the freshly forked child; call before reading the job."""
    os.setsid()
    set_pdeathsig()
    if os.getppid() != 1:  # the zygote is pid 1 of the sandbox's pid namespace
        raise ConfineError("the zygote is gone")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_FSIZE, (scratch_bytes, scratch_bytes))
    if _prctl(PR_GET_NO_NEW_PRIVS) != 1:
        raise ConfineError("no_new_privs is not set")
    for program in filters:
        _install(program)
    if _prctl(PR_GET_SECCOMP) != SECCOMP_MODE_FILTER:
        raise ConfineError("seccomp filter not active")


def address_space() -> int:
    """This process's address space in bytes (what RLIMIT_AS counts)."""
    fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    try:  # not open(): its text layers cost a fresh child 0.2 ms on the job's path
        return int(os.read(fd, 256).split()[0]) * os.sysconf("SC_PAGE_SIZE")
    finally:
        os.close(fd)


def limit_job(memory_bytes: int, cpu_seconds: int):
    """Per-job limits, set once the job is known: address space as headroom
    above the current size (an absolute limit breaks pandas), and CPU time
    (SIGXCPU at the limit, SIGKILL a second later; the supervisor reports
    either as the time limit)."""
    size = address_space()
    resource.setrlimit(resource.RLIMIT_AS, (size + memory_bytes, size + memory_bytes))
    cpu = max(int(cpu_seconds), 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
