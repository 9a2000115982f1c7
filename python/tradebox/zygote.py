"""The zygote: a warm Python process (pandas, numpy, pyarrow and matplotlib
imported, the data snapshot memory-mapped) that runs jobs for the supervisor,
one at a time, each in a freshly forked and confined child.

It is started by the Rust launcher (crates/sandbox/src/launcher.rs) as pid 1
of its own namespaces, inside a read-only root. Protocol on stdin/stdout:
frames of a 4-byte big-endian length and a body.

    zygote -> supervisor   {"type": "ready", "pid", "rss_kb", "threads", "versions"}
    supervisor -> zygote   {"type": "job", "timeout_ms", "result_bytes", "output_bytes"}
                           then one frame: the job for the child (JSON with the
                           code, limits, params, as_of, caps), relayed as bytes
    zygote -> supervisor   {"type": "accepted"} once both are read, before the
                           child sees the job (a zygote that does not say so in
                           time is replaced and the job runs on a fresh one)
    zygote -> supervisor   {"type": "result", "status": "ok", "elapsed_ms"}
                           then one frame: the child's answer exactly as written
                       or  {"type": "result", "status", "elapsed_ms", "cpu_ms",
                            "output_total", ...} then one frame: the output the
                           job printed before it ended (its mirror, see Child)
                           then, once the scratch is wiped and the next child
                           forked: {"type": "idle"}, or {"type": "unhealthy",
                           "reason"} and the zygote exits (the supervisor
                           replaces it before the next job)
    supervisor -> zygote   {"type": "ping"}  ->  {"type": "pong", "rss_kb", "threads"}
    supervisor -> zygote   {"type": "load", "version": "v000008"}, between jobs
    zygote -> supervisor   {"type": "loaded", "version", "rss_kb"} once the
                           version is mapped and a child forked on it;
                           {"type": "load_failed", "reason"} if it cannot
                           be read (the zygote keeps the version it had); or
                           {"type": "unhealthy", "reason"} and exits

The snapshot root is mounted at /data; the version to serve first is named
by TRADEBOX_DATA_VERSION. Segments a new version shares with the old one
(hard links of the same files) stay mapped once (`data.retain`).

status: "ok", "timeout", "too_large", "confine" (the child could not be
confined; "message" says why, and no job code ran), or "died" (with "signal"
or "exit_code").

What one job leaves must not reach the next, which is forked from this
process: job payloads never become Python objects here; they pass through two
anonymous mappings that are dropped (MADV_DONTNEED) after every job. The
zygote is not dumpable, so a job cannot read its memory or open its pipes
through /proc/1. The next child is forked and confined ahead of its job, so
a job costs its own run time plus one round trip. While it waits, the child
runs a typical query (`_warm_up`, cut short as soon as the job comes: the
zygote sends SIGUSR1 just before it writes the job) to pay its copy-on-write
faults and first-call costs before the job rather than during it; the
zygote's own objects are made immortal on Python 3.12+ (`immortalize`), so
a child never writes their reference counts, and frozen (`gc.freeze`), so a
child's garbage collector never writes to their pages; its heap is on huge pages
(`huge_heap`), so a fork copies fewer page-table entries. After each fork the
zygote runs its own side of a job once with made-up frames (`rehearse`), so
that the pages it writes for a job are copied before one comes.

A job that runs longer than DEMOTE_AFTER_S is demoted, again every
DEMOTE_AFTER_S for threads started meanwhile: all its threads to nice 19,
its main thread (and every thread it starts from then on) to SCHED_IDLE. It
then gets little more than the CPU no other job wants, so a long job (a loop
running to its time limit) cannot slow the short queries of other workers.
The child leads its own session and process group (`confine.child`), which
is how the zygote reaches every thread without /proc. The job cannot undo
any of it: raising a priority needs CAP_SYS_NICE in the host's user
namespace, and the child's seccomp filter denies setpriority,
sched_setscheduler and setpgid.

Between jobs: the child is killed once its answer is whole and passed on,
a millisecond later (`_let_answer_out`; nothing it does afterwards counts,
and it sleeps meanwhile, `_await_kill`),
reaped, and the scratch folder is emptied and checked (empty, writable, no
space or inode in use) before "idle" is sent, and so before the next job; a
scratch that cannot be reset makes the zygote report "unhealthy" and exit,
so no later job starts on what a job left. After an answer the next child is
forked while the killed one is torn down (`fork_beside`), after a timeout or
crash only once it is reaped.
"""

import contextlib
import ctypes
import errno
import gc
import json
import mmap
import os
import re
import select
import shutil
import signal
import struct
import sys
import sysconfig
import time
import types

MAX_JOB = 4 << 20
MAX_RESULT = 256 << 20  # virtual room; the job's "result_bytes" is the real cap
MAX_OUTPUT = 64 << 20   # room for the output mirror (limits.output_bytes is at most 64 MiB)
MIRROR_HEADER = struct.Struct("<QQ")  # bytes kept, bytes printed in all
WARM_AFTER_S = 0.001  # a child whose job is not there by then warms up first
AFTER_ANSWER_S = 0.001  # the answer's way out, before the next child is made (`_let_answer_out`)
WARM_ROWS = 50_000  # at most this many trades in a warm-up
DEMOTE_AFTER_S = 1.0  # a job running longer yields the CPU to every other job

_libc = ctypes.CDLL(None, use_errno=True)


MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25  # linux/mman.h (Python 3.11 lacks the second)
HUGE_PAGE = 2 << 20


def huge_heap():
    """Back the heap (glibc's: what numpy, pandas, pyarrow and Python's
    larger objects allocate, about 30 MiB once warm) with transparent huge
    pages: forking the zygote then copies one page-table entry per 2 MiB of
    it instead of 512, and a child's exit unmaps as much less. A child's
    first write to such a page still copies only 4 KiB (the kernel splits
    the shared huge page for that child). Best effort: a kernel before 6.1
    (no MADV_COLLAPSE) or with huge pages off changes nothing. Returns the
    MiB collapsed.

    Only the heap: collapsing every other anonymous mapping as well (about
    50 MiB more at the start) keeps little under load, as measured on
    3.11 and 3.13: each write of the zygote's own to a huge page a child
    shares splits that page back into small ones, and between jobs it
    writes to most of them; the pool's throughput did not change."""
    with open("/proc/self/maps") as f:
        heap = [line.split()[0] for line in f if line.split()[5:] == ["[heap]"]]
    if not heap:
        return 0
    low, high = (int(x, 16) for x in heap[0].split("-"))
    start = (low + HUGE_PAGE - 1) // HUGE_PAGE * HUGE_PAGE
    end = high // HUGE_PAGE * HUGE_PAGE
    if end <= start:
        return 0
    _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_HUGEPAGE)
    return sum(2 for chunk in range(start, end, HUGE_PAGE)
               if _libc.madvise(ctypes.c_void_p(chunk), ctypes.c_size_t(HUGE_PAGE),
                                MADV_COLLAPSE) == 0)


IMMORTAL_REFCNT = 0xFFFFFFFF  # _Py_IMMORTAL_REFCNT of 64-bit CPython 3.12 and 3.13
# What is never entered when looking for the objects a snapshot holds: the
# program (modules, classes, functions, code), not its data.
_PROGRAM = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType,
            types.MethodType, types.CodeType, types.CellType)


def can_immortalize():
    """Whether this interpreter has immortal objects that a refcount of
    IMMORTAL_REFCNT makes (PEP 683): CPython 3.12 and 3.13, 64-bit, with the
    GIL, not a debug build. Elsewhere `immortalize` does nothing."""
    return (sys.implementation.name == "cpython" and (3, 12) <= sys.version_info[:2] <= (3, 13)
            and sys.maxsize > 2**32 and not hasattr(sys, "gettotalrefcount")
            and not sysconfig.get_config_var("Py_GIL_DISABLED"))


def _data_types():
    """The types whose objects may hold a mapped segment's memory."""
    import numpy
    import pyarrow
    return (numpy.ndarray, pyarrow.Buffer, pyarrow.Array, pyarrow.ChunkedArray,
            pyarrow.Table, pyarrow.RecordBatch, pyarrow.Scalar, pyarrow.NativeFile)


def _reachable(roots):
    """The ids of the objects reachable from `roots` through data (lists,
    dicts, instances, Arrow tables, arrays), never through `_PROGRAM`."""
    found, todo = set(), list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in found or isinstance(obj, _PROGRAM):
            continue
        found.add(id(obj))
        todo.extend(gc.get_referents(obj))
        # An instance's dict, once made, is not among its referents while
        # its attributes are kept inline (3.13), yet outlives it if immortal.
        with contextlib.suppress(AttributeError, TypeError):
            todo.append(object.__getattribute__(obj, "__dict__"))
    return found


def immortalize(*mortal):
    """Make the objects the zygote holds immortal, so that a forked child
    never writes to their pages: on CPython 3.12 and 3.13 an immortal
    object's reference count is never changed (PEP 683), while any other
    object's is, each time a job's code as much as names it (a module, a
    function, a class, a constant), and that write copies the whole 4 KiB
    page in the child: about a quarter of what a child copies for a
    typical query.

    Every object the collector tracks (after a collection) and the objects
    they refer to directly (strings, numbers) is made immortal, except
    those reachable from `mortal` (the snapshot and the data caches) and
    any array, table or buffer (`_data_types`): an immortal object is never
    freed, and a version the zygote moves away from must be unmapped once
    no snapshot uses it. A job's child may still change an immortal object
    (its pages are then copied, as before); only reference counts stop
    being written. Returns how many objects were made immortal: 0 on an
    interpreter without immortal objects (`can_immortalize`), where nothing
    changes."""
    if not can_immortalize():
        return 0
    gc.collect()
    tracked = gc.get_objects()
    referred = gc.get_referents(*tracked)
    objects = dict(zip(map(id, referred), referred))
    objects.update(zip(map(id, tracked), tracked))
    for key in _reachable(mortal) | {id(tracked), id(referred), id(mortal)}:
        objects.pop(key, None)
    holders = _data_types()
    data_types = {t for t in set(map(type, objects.values())) if issubclass(t, holders)}
    refcount, at = sys.getrefcount, ctypes.c_ssize_t.from_address
    made = 0
    for obj in objects.values():
        # Arrays, tables and buffers may hold a mapped segment; some objects
        # are immortal already (None, small numbers, interned strings).
        if type(obj) not in data_types and refcount(obj) < IMMORTAL_REFCNT:
            at(id(obj)).value = IMMORTAL_REFCNT
            made += 1
    return made


def _address(m):
    """The address of a mapping (its buffer export is released at once)."""
    c = ctypes.c_char.from_buffer(m)
    address = ctypes.addressof(c)
    del c
    return address


def _unmap(address, size):
    """Unmap pages in this process only (a forked child drops the zygote's
    buffers: untouched, they are address space a job could fill beyond its
    memory limit, which counts only new mappings)."""
    page = mmap.PAGESIZE
    start = (address + page - 1) // page * page
    end = (address + size) // page * page
    if end > start and _libc.munmap(ctypes.c_void_p(start), ctypes.c_size_t(end - start)):
        raise OSError(ctypes.get_errno(), "munmap failed")


class Buffer:
    """An anonymous mapping that payloads pass through, dropped after use."""

    def __init__(self, size):
        # Private: a shared mapping would be shared with every child, and
        # MADV_DONTNEED does not clear the pages of a shared one.
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        self.region = (_address(self.map), size)
        self.view = memoryview(self.map)
        self.used = 0

    def read_exact(self, fd, n):
        """Fill the first n bytes from fd; False on end of stream."""
        self.used = max(self.used, n)
        got = 0
        while got < n:
            k = os.readv(fd, [self.view[got:n]])
            if k == 0:
                return False
            got += k
        return True

    def read_some(self, fd, offset):
        """Read what is available at offset (0 at end of stream)."""
        k = os.readv(fd, [self.view[offset:]])
        self.used = max(self.used, offset + k)
        return k

    def drop(self):
        """Give the used pages back to the kernel: they read as zeros after."""
        if self.used:
            page = mmap.PAGESIZE
            self.map.madvise(mmap.MADV_DONTNEED, 0, (self.used + page - 1) // page * page)
            self.used = 0


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_length(fd):
    header = _read_exact(fd, 4)
    return None if header is None else struct.unpack(">I", header)[0]


def read_frame(fd=0):
    length = _read_length(fd)
    return None if length is None else _read_exact(fd, length)


def _write_all(fd, view):
    while view:
        view = view[os.write(fd, view):]


def write_frame(payload, fd=1):
    """Write a frame; `payload` may be bytes or a memoryview. Its length and
    its bytes go out in one system call (the reader wakes once), and the
    payload is never copied into a Python object: job data must not linger
    in the zygote's heap, which the next child inherits."""
    view = memoryview(payload)
    header = memoryview(struct.pack(">I", len(view)))
    sent = os.writev(fd, [header, view])
    if sent < len(header):
        _write_all(fd, header[sent:])
        sent = len(header)
    _write_all(fd, view[sent - len(header):])


def send(obj, fd=1):
    write_frame(json.dumps(obj).encode(), fd)


def _threads():
    return len(os.listdir("/proc/self/task"))


def _rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def demote(pid):
    """Demote the job's child `pid`, leader of its own process group: every
    thread to nice 19 (PRIO_PGRP reaches each thread of the group), and its
    main thread, whose new threads inherit it, to SCHED_IDLE."""
    with contextlib.suppress(OSError):  # gone meanwhile
        os.setpriority(os.PRIO_PGRP, pid, 19)
    with contextlib.suppress(OSError):
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))


def empty_dir(top):
    """Remove everything below the open directory `top`, whatever modes and
    nesting a job left, and never through a symbolic link. Each folder in
    `top` is made ours to read and write (chmod 700), its files are unlinked
    and its folders moved up into `top`, to be emptied in turn; then it is
    removed. No path is ever more than two levels below `top`.

    That bound is what keeps the wipe linear: Landlock checks each access by
    walking up from it to a rule, so a walk down a deep nest would pay the
    depth at every step (3,000 nested folders took two seconds, not 0.1).
    A file's own mode does not matter to unlink."""
    spare = 0  # the next name to try for a folder moved up
    while True:
        found = _entries(top)
        if not found:
            return
        for name, is_dir in found:
            if not is_dir:
                os.unlink(name, dir_fd=top)
                continue
            os.chmod(name, 0o700, dir_fd=top)  # a folder, not a link: scanned so
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
            try:
                spare = _move_up(fd, top, spare)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=top)


def _entries(fd):
    """The names in the open folder `fd`, each with whether it is a folder."""
    with os.scandir(fd) as entries:
        return [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]


def _move_up(fd, top, spare):
    """Empty the folder `fd`, one level below `top`: unlink its files, move
    its folders into `top` under names not taken there. Returns the next
    spare name. Where the kernel refuses any move between folders (Landlock
    before ABI 2 does, with EXDEV) the rest of the folder is emptied in place."""
    for name, is_dir in _entries(fd):
        if not is_dir:
            os.unlink(name, dir_fd=fd)
            continue
        os.chmod(name, 0o700, dir_fd=fd)  # moving a folder rewrites its '..'
        try:
            spare = _rename_into(top, fd, name, spare)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            _empty_in_place(fd)
            break
    return spare


def _rename_into(top, fd, name, spare):
    """Move `name` from the folder `fd` into `top` as `.wipe-<n>`, with the
    first n from `spare` that a job's own entries do not hold (an empty
    folder of that name is replaced, which removes it). Returns n + 1."""
    while True:
        try:
            os.rename(name, f".wipe-{spare}", src_dir_fd=fd, dst_dir_fd=top)
            return spare + 1
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                raise
            spare += 1


def _empty_in_place(top):
    """Remove everything below the open directory `top` depth first, without
    recursion and with one descriptor open below `top` at a time. Its cost
    grows with the square of the nesting under Landlock (see empty_dir), so
    it is only the fallback where folders cannot be moved."""
    fd, names = top, []  # the folder being emptied, and the names down to it
    try:
        while True:
            sub = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        sub = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if sub is not None:  # go down; this folder is rescanned after
                os.chmod(sub, 0o700, dir_fd=fd, follow_symlinks=True)  # a folder, not a link
                down = os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                if fd != top:
                    os.close(fd)
                fd = down
                names.append(sub)
                continue
            if not names:
                return
            up = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            if len(names) == 1:
                os.close(up)
                up = top
            fd = up
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        if fd != top:
            os.close(fd)


def wipe_scratch(path="/tmp"):
    """Empty the scratch tmpfs and check that the next job finds it as new:
    empty, mode 1777 and ours, no block or inode in use. Returns None, or
    what is wrong (then the zygote must not run another job)."""
    try:
        os.chmod(path, 0o1777)  # a job may have taken the permissions away
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            empty_dir(top)
        finally:
            os.close(top)
        st, fs, left = os.lstat(path), os.statvfs(path), os.listdir(path)
    except (OSError, ValueError) as e:
        return f"the scratch folder could not be emptied: {e}"
    if left:
        return f"the scratch folder still holds {len(left)} entries"
    if st.st_mode & 0o7777 != 0o1777 or st.st_uid != os.getuid():
        return f"the scratch folder has mode {st.st_mode & 0o7777:o}, owner {st.st_uid}"
    if fs.f_bfree != fs.f_blocks or fs.f_files - fs.f_ffree > 1:
        return (f"the scratch still uses {fs.f_blocks - fs.f_bfree} blocks and "
                f"{fs.f_files - fs.f_ffree} inodes")
    return None


class Mirror:
    """The output a job has printed so far, kept in a mapping it shares with
    the zygote, so that a job stopped at its time limit (or crashed) still
    reports what it printed. Written by the child, read by the zygote only
    after the child is gone; its content is the job's own output."""

    def __init__(self, shared):
        self.map, self.kept, self.size = shared, 0, len(shared)

    def limit(self, output_bytes):
        """Keep only room for `output_bytes` mapped in this child."""
        size = MIRROR_HEADER.size + max(output_bytes, 0)
        if size < self.size:
            _unmap(_address(self.map) + size, self.size - size)
            self.size = size

    def __call__(self, data, total):
        room = self.size - MIRROR_HEADER.size - self.kept
        data = data[:max(room, 0)]
        start = MIRROR_HEADER.size + self.kept
        self.map[start:start + len(data)] = data
        self.kept += len(data)
        MIRROR_HEADER.pack_into(self.map, 0, self.kept, total)


class Child:
    """A forked, confined child waiting for its one job."""

    def __init__(self, filters, snapshot, scratch_bytes, unmap=()):
        threads = _threads()
        if threads != 1:
            raise RuntimeError(f"zygote has {threads} threads; refusing to fork")
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        # Shared with this child alone: unmapped here after its job, before
        # the next child is forked.
        self.mirror = mmap.mmap(-1, MIRROR_HEADER.size + MAX_OUTPUT)
        try:
            pid = os.fork()
        except OSError:
            for fd in (job_r, job_w, res_r, res_w):
                os.close(fd)
            self.mirror.close()
            raise
        if pid == 0:  # the child: never returns
            os.close(job_w)
            os.close(res_r)
            _child_main(job_r, res_w, Mirror(self.mirror), filters, snapshot, scratch_bytes,
                        unmap)
        os.close(job_r)
        os.close(res_w)
        self.pid, self.job_w, self.res_r = pid, job_w, res_r
        self.pidfd = os.pidfd_open(pid)
        self.deadline = 0.0
        self.demote_at = 0.0

    def _wait(self, fd):
        """Wait until `fd` is readable or the child exits; False at the
        deadline. Demotes the job when it has run long (see the module's
        documentation)."""
        while True:
            now = time.monotonic()
            remaining = self.deadline - now
            if remaining <= 0:
                return False
            if now >= self.demote_at:
                demote(self.pid)
                self.demote_at = now + DEMOTE_AFTER_S
            timeout = min(remaining, self.demote_at - now)
            ready, _, _ = select.select([self.pidfd, fd], [], [], timeout)
            if ready:
                return True

    def run(self, timeout_s, job, job_len, result, limit):
        """Give the child its job (in `job`) and collect its answer into
        `result`. Returns (status, length of the answer): "ok" as soon as a
        whole answer frame of at most `limit` bytes has arrived, else
        "timeout", "too_large", "confine" (the message in result[:length])
        or None (the child ended without a whole answer: see `finish`)."""
        self.deadline = time.monotonic() + timeout_s
        self.demote_at = time.monotonic() + DEMOTE_AFTER_S
        with contextlib.suppress(OSError):  # gone already: finish() says how
            signal.pidfd_send_signal(self.pidfd, signal.SIGUSR1)  # stop warming up
        try:
            write_frame(job.view[:job_len], self.job_w)
        except OSError:
            pass  # the child died before reading: reported by finish()
        os.close(self.job_w)
        job.drop()
        # The child's first byte says whether it is confined. It writes it
        # before it reads its job, so no job code has run yet: unlike
        # everything after it, this byte and its message can be trusted.
        if not self._wait(self.res_r):
            return "timeout", 0
        mark = os.read(self.res_r, 1)
        if mark == b"E":
            n = 0
            while n < 4096 and self._wait(self.res_r) and (k := result.read_some(self.res_r, n)):
                n = min(n + k, 4096)
            return "confine", n
        if mark != b"A":
            return None, 0
        size, exited = 0, False
        while True:
            if size >= 4:
                want = 4 + struct.unpack(">I", result.view[:4])[0]
                if want > min(limit, MAX_RESULT):
                    return "too_large", 0
                if size >= want:
                    return "ok", want
            if exited:
                return None, 0
            if not self._wait(self.res_r):
                return "timeout", 0
            k = result.read_some(self.res_r, size) if size < MAX_RESULT else 0
            if k == 0:  # end of the pipe, or exited: the frame check above decides
                while size < MAX_RESULT and (k := result.read_some(self.res_r, size)):
                    size += k
                exited = True
            size += k

    def kill(self):
        signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def let_go(self):
        """Close what the zygote holds of a child it has killed (its answer
        pipe, its pidfd, the output mapping), so that the next child, which
        is forked before this one is reaped (`reap`), inherits none of it."""
        os.close(self.pidfd)
        os.close(self.res_r)
        self.mirror.close()

    def reap(self):
        """Wait until a child let go of is gone, every thread of it."""
        os.waitpid(self.pid, 0)

    def finish(self, kill):
        """Make sure the child is gone (killing it if asked, or at the
        deadline) and return how it ended, for the result header: "signal"
        or "exit_code", "cpu_ms", and "timed_out" for a child that outlived
        the deadline."""
        timed_out = False
        if not kill:
            kill = timed_out = not self._wait(self.pidfd)
        if kill:
            self.kill()
        _, status, usage = os.wait4(self.pid, 0)
        os.close(self.pidfd)
        os.close(self.res_r)
        ended = {"cpu_ms": int((usage.ru_utime + usage.ru_stime) * 1000)}
        if timed_out:
            ended["timed_out"] = True
        elif os.WIFSIGNALED(status):
            ended["signal"] = os.WTERMSIG(status)
        else:
            ended["exit_code"] = os.WEXITSTATUS(status)
        return ended

    def output_total(self):
        """How many bytes the (finished) job printed in all."""
        return MIRROR_HEADER.unpack_from(self.mirror, 0)[1]

    def send_output(self, limit):
        """One frame: the output the (finished) job printed and kept (at
        most `limit` bytes: the mirror's header is the job's to write)."""
        kept = min(MIRROR_HEADER.unpack_from(self.mirror, 0)[0], max(limit, 0),
                   len(self.mirror) - MIRROR_HEADER.size)
        view = memoryview(self.mirror)
        try:
            part = view[MIRROR_HEADER.size:MIRROR_HEADER.size + kept]
            write_frame(part)
            part.release()
        finally:
            view.release()

    def close(self):
        self.mirror.close()

    def discard(self):
        """Kill a child that has run no job (`finish`), and `close` it."""
        self.finish(kill=True)
        self.close()


# A job shaped as the supervisor sends it (`Zygote::run` in crates/sandbox/src/pool.rs),
# for warm-ups and the rehearsal.
_SAMPLE_JOB = json.dumps({"code": "result = 1 + 1", "timeout_ms": 30_000, "memory_mb": 1024,
                          "cpu_seconds": 31, "output_limit": 1 << 20, "params": {},
                          "as_of": None, "caps": {"result_bytes": 1 << 20}}).encode()


def rehearse(job, result):
    """Run the zygote's own side of a job once, on a pipe to itself, with
    made-up frames: read a job's header and body into `job`, say
    "accepted", pass the body on, read an answer into `result`, pass it on
    with its header, and drop both buffers. Called right after each fork:
    every page the zygote writes from then on (reference counts,
    allocator pools, on Python 3.11 most of what the job path names) is
    shared with the new child, and the first write to each copies it.
    Paid here, between jobs, those copies (about 140 pages on Python 3.11)
    no longer fall between a job's arrival and its child, or between the
    answer and the supervisor (traced with `perf sched`: the answer passed
    on in 0.1 ms instead of 0.3). Nothing of any job is involved, and
    nothing is kept."""
    r, w = os.pipe()
    try:
        send({"type": "job", "timeout_ms": 30_000, "result_bytes": 1 << 20,
              "output_bytes": 1 << 20}, w)
        write_frame(_SAMPLE_JOB, w)
        json.loads(read_frame(r))
        length = _read_length(r)
        job.read_exact(r, length)
        send({"type": "accepted"}, w)
        read_frame(r)
        started = time.monotonic()
        write_frame(job.view[:length], w)
        job.drop()
        _readable(r, 0)
        size = result.read_some(r, 0)
        struct.unpack(">I", result.view[:4])
        send({"type": "result", "status": "ok", "elapsed_ms": int(time.monotonic() - started)},
             w)
        write_frame(result.view[4:size], w)
        read_frame(r)
        read_frame(r)
    finally:
        os.close(r)
        os.close(w)
        job.drop()
        result.drop()


def fork_beside(killed, fork):
    """Fork the next child (`fork()`) while `killed`, a child killed once its
    answer was whole, is still being torn down, then reap `killed`: its
    teardown (unmapping its copy of the zygote takes milliseconds) runs
    beside the fork rather than before it. The next child inherits nothing
    of `killed` (`let_go` comes first), `killed` runs no code meanwhile
    (SIGKILL is pending for every thread of it), and the caller resets the
    scratch and only then says "idle", so the next job finds nothing of it.
    Returns the next child, or None if the fork was refused for a moment
    (EAGAIN: the dying threads still count against the sandbox's task
    limit); the caller then forks after the reap, as before."""
    killed.let_go()
    try:
        ahead = fork()
    except BlockingIOError:
        ahead = None
    killed.reap()
    return ahead


def _no_data(*args, **kwargs):
    """Stands in for the data helpers when no snapshot is loaded."""
    raise RuntimeError("no trade data is loaded: run `tradebox data demo` or "
                       "`tradebox data import PATH` first")


def _failure(kind, message, elapsed_ms=0):
    message = message.encode("utf-8", "backslashreplace").decode()  # no lone surrogates
    return json.dumps({"success": False, "result": None, "value": None, "output": "",
                       "execution_time_ms": elapsed_ms, "artifacts": [],
                       "error": {"type": kind, "message": message}}).encode()


def _child_main(job_r, res_w, mirror, filters, snapshot, scratch_bytes, unmap):
    """Confine, say so, wait for the job, run it, write the answer, exit."""
    try:
        for address, size in unmap:  # the zygote's own buffers
            _unmap(address, size)
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):  # the protocol pipes belong to the zygote alone
            os.dup2(devnull, fd)
        from tradebox import confine, runner
        confine.child(filters, scratch_bytes)
    except BaseException as e:  # noqa: BLE001 - no job code has run: report and exit
        with contextlib.suppress(BaseException):
            _write_all(res_w, memoryview(b"E" + f"{type(e).__name__}: {e}".encode()[:4000]))
        os._exit(71)
    code = 0
    try:
        _write_all(res_w, memoryview(b"A"))  # armed; what follows is the job's
        _await_job(job_r, snapshot, runner)
        body = read_frame(job_r)
        if body is None:
            os._exit(0)
        # The zygote's SIGUSR1 came before the job's first byte, so it has
        # been taken or ignored by now: the job finds the signal as any
        # process does.
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        job = json.loads(body)
        mirror.limit(job.get("output_limit", 1 << 20))
        confine.limit_job(job.get("memory_mb", 1024) << 20, job.get("cpu_seconds", 31))
        helpers = {"params": job.get("params") or {}}
        if snapshot is not None:
            view = snapshot.with_as_of(job.get("as_of"))
            helpers.update(load_trades=view.load_trades, load_balances=view.load_balances,
                           load_snapshots=view.load_snapshots)
        else:
            helpers.update(load_trades=_no_data, load_balances=_no_data, load_snapshots=_no_data)
        caps = job.get("caps") or {}
        result = runner.run(job.get("code", ""), helpers, caps=caps, output_mirror=mirror,
                            output_limit=job.get("output_limit", 1 << 20))
        write_frame(runner.encode(result, caps), res_w)
        os.close(res_w)
        _await_kill()
    except BaseException as e:  # noqa: BLE001 - the child reports and exits
        # After job code ran, this is the job's failure, never the sandbox's.
        code = 70
        with contextlib.suppress(BaseException):
            write_frame(_failure("ResultError", f"the result could not be returned: "
                                 f"{type(e).__name__}: {e}"), res_w)
            code = 0
    finally:
        os._exit(code)


def _let_answer_out(fd=0):
    """Wait AFTER_ANSWER_S once an answer is passed on, or until the
    supervisor writes again (`fd` readable), before the work between jobs:
    the killed child's teardown and the next fork, each milliseconds of
    kernel work that this kernel does not preempt. Started at once, they
    took the CPUs just as the answer went on its way (the supervisor's slot
    thread, its async side, the client), whose wake-ups then waited behind
    them: in `perf sched` traces a woken client waited 3 ms for the CPU where
    the zygote was forking. The answer is out; nothing of the next job
    waits here, since the supervisor sends it only after "idle"."""
    _readable(fd, AFTER_ANSWER_S)


def _await_kill():
    """Sleep until the zygote's SIGKILL, which comes once it has passed the
    answer on. Exiting at once instead would start tearing this process
    down (milliseconds of kernel work, unmapping its copy of the zygote)
    just as the zygote wakes to read the answer: the scheduler, told by the
    pipe that the writer is about to sleep, wakes the zygote on this CPU,
    where it waited out the teardown (2-3 ms, measured with `perf sched`)
    before it could pass the answer on."""
    while True:
        select.select([], [], [])


class _JobCame(BaseException):
    """Raised once in a warming child when its job comes (see `_on_job`)."""


_warming = False  # True in a child while its warm-up may be cut short


def _on_job(signum, frame):
    """SIGUSR1, sent by the zygote just before it writes a child's job: a
    child still warming up stops at once, not at the end of its query. The
    handler is installed in the zygote, so no child is ever without it
    (the signal's default action would kill the child); elsewhere it does
    nothing."""
    global _warming
    if _warming:
        _warming = False
        raise _JobCame


def _await_job(job_r, snapshot, runner):
    """Wait for the job on `job_r`, warming up meanwhile if it is not there
    within WARM_AFTER_S. The warm-up is cut short when the job comes: at
    the next bytecode once SIGUSR1 says so (`_on_job`), else at its next
    look at the pipe, so the job waits for no more than the C call under
    way. Returns "ready" (no warm-up), "warmed" or "cut".

    SIGUSR1 is ignored from then on: with nothing left to cut short, the
    zygote's signal would only run `_on_job` on the job's path, where its
    first call in this child copies pages (about 0.1 ms)."""
    global _warming
    try:
        if _readable(job_r, WARM_AFTER_S):
            return "ready"
        _warming = True
        try:
            _warm_up(snapshot, runner, stop=lambda: not _warming or _readable(job_r, 0))
        except (Exception, _JobCame):  # best effort, never the job's failure
            pass
        finally:
            cut, _warming = not _warming, False
        return "cut" if cut else "warmed"
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _warm_up(snapshot, runner, stop=lambda: False):
    """Pay the first-call costs of a typical job (lazy imports and caches
    inside pandas, numpy and pyarrow, the runner's rendering and encoding):
    once in the zygote, and again in each child while it waits for its job,
    where they are the copy-on-write faults of the pages such a job writes.
    It is what every job does first (a job's frame decoded, the size its
    limits start from read, `result = 1 + 1` run and encoded), then one
    query, run and then encoded: a job that comes early finds at least its
    own path warm (for `result = 1 + 1` 20 ms after the last answer, the
    p50 fell from 3.2-4.1 to 2.0-2.9 ms on Python 3.11, benches/executor.sh).
    `stop()` is asked before each part, and a child's warm-up is cut short
    anywhere when its job comes (`_await_job`). It reads only the snapshot,
    which every job may read whole, writes no file, starts no thread, and
    keeps nothing: what it made is collected before the job."""
    from tradebox import confine
    env = {"params": {}}
    if snapshot is not None:
        view = snapshot.with_as_of("latest")
        days = 7.0  # or fewer, so that the warm-up stays short on a busy desk's store
        while days > 1 / 24 and view.rows_within(days) > WARM_ROWS:
            days /= 2
        env["load_trades"] = view.load_trades
        frame = f"load_trades(days={days!r})"
    else:
        frame = "pd.DataFrame({'exchange': ['a', 'b'], 'amount': [1.0, 2.0]})"
    try:
        if not stop():  # the path of every job: its frame decoded, its limits, a value shown
            json.loads(_SAMPLE_JOB)
            confine.address_space()
            runner.encode(runner.run("result = 1 + 1", {"params": {}}))
        if not stop():
            result = runner.run(f"result = {frame}.groupby('exchange')['amount'].sum()", env)
            if not stop():
                runner.encode(result)
    finally:
        env.clear()
        gc.collect()


def _open_version(data, name):
    """The snapshot version `name` (a folder under /data)."""
    if not (isinstance(name, str) and re.fullmatch(r"v[0-9]+", name)):
        raise ValueError(f"not a snapshot version name: {name!r}")
    return data.Snapshot(f"/data/{name}")


def _readable(fd, timeout):
    return bool(select.select([fd], [], [], timeout)[0])


def main():
    """Serve (`_serve`), then exit at once: the interpreter's teardown is
    not for a process whose objects were made immortal (`immortalize`)."""
    _serve()
    os._exit(0)


def _serve():
    """Warm up, report ready, then serve jobs until stdin closes."""
    # As pid 1 of its namespace the zygote ignores signals it has no handler
    # for when they come from inside: a job cannot kill it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, _on_job)  # inherited by every child
    from tradebox import confine
    confine.set_pdeathsig()
    confine.set_dumpable(False)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import numpy
    import pandas
    import pyarrow
    pyarrow.set_cpu_count(1)
    pyarrow.set_io_thread_count(1)
    from tradebox import data, runner  # noqa: F401
    snapshot = None
    if os.environ.get("TRADEBOX_DATA_VERSION"):
        try:
            snapshot = _open_version(data, os.environ["TRADEBOX_DATA_VERSION"])
        except Exception as e:  # noqa: BLE001 - the supervisor falls back to another version
            send({"type": "error", "layer": "snapshot", "message": f"{type(e).__name__}: {e}"})
            return
    filters = confine.load_filters()
    scratch = shutil.disk_usage("/tmp").total
    _warm_up(snapshot, runner)
    # What the zygote holds now is never written by a child: no reference
    # count changes (on Python 3.12+), and no garbage collector traversal.
    immortal = immortalize(snapshot, data._SEGMENTS, data._BALANCES)
    gc.freeze()
    huge_heap()
    problem = wipe_scratch()
    if problem:
        send({"type": "error", "layer": "scratch", "message": problem})
        return
    send({"type": "ready", "pid": os.getpid(), "rss_kb": _rss_kb(), "threads": _threads(),
          "python": sys.version.split()[0], "immortal": immortal,
          "versions": {"pandas": pandas.__version__, "numpy": numpy.__version__,
                       "pyarrow": pyarrow.__version__, "matplotlib": matplotlib.__version__},
          "snapshot": None if snapshot is None else snapshot.manifest.get("version")})
    job, result = Buffer(MAX_JOB), Buffer(MAX_RESULT)
    buffers = (job.region, result.region)

    def fork_child():
        """A new child, with the job path rehearsed after it (`rehearse`)."""
        forked = Child(filters, snapshot, scratch, buffers)
        with contextlib.suppress(OSError):  # best effort: it only moves a cost
            rehearse(job, result)
        return forked

    def next_child(problem, reply, ahead=None):
        """The next child, forked on the current snapshot once the scratch
        is reset (or `ahead`, forked already: see `replace`), with `reply`
        sent; None, with "unhealthy" sent, when `problem` says the scratch
        (or the last child) could not be reset."""
        if problem:
            if ahead is not None:
                ahead.discard()
            send({"type": "unhealthy", "reason": problem})
            return None
        forked = fork_child() if ahead is None else ahead
        send(reply)
        return forked

    def replace(killed):
        """The next child after `killed`, a child killed once its answer was
        whole (see `fork_beside`), with "idle" sent once `killed` is reaped
        and the scratch reset; None, with "unhealthy" sent, as in
        `next_child`."""
        ahead = fork_beside(killed, fork_child)
        return next_child(wipe_scratch(), {"type": "idle"}, ahead)

    child = fork_child()
    while True:
        control = read_frame(0)
        if control is None:
            return
        msg = json.loads(control)
        if msg.get("type") == "ping":
            send({"type": "pong", "rss_kb": _rss_kb(), "threads": _threads()})
            continue
        if msg.get("type") == "load":
            child.discard()  # it waits on the old version; nothing of a job ran in it
            try:
                loaded = _open_version(data, msg.get("version"))
            except Exception as e:  # noqa: BLE001 - reported; the old version stays
                reply = {"type": "load_failed", "reason": f"{type(e).__name__}: {e}"}
            else:
                # Opening checked the order of every new segment's timestamps
                # (its pages are in); the code paths are warm since the start,
                # and the next child warms up on the new version by itself.
                snapshot = loaded
                data.retain(snapshot)
                gc.freeze()
                huge_heap()
                reply = {"type": "loaded", "version": snapshot.manifest.get("version"),
                         "rss_kb": _rss_kb()}
            child = next_child(wipe_scratch(), reply)
            if child is None:
                return
            continue
        length = _read_length(0)
        if length is None or length > MAX_JOB or not job.read_exact(0, length):
            return  # the supervisor broke the protocol: start afresh
        send({"type": "accepted"})  # nothing of the job has run yet
        started = time.monotonic()
        status, size = child.run(msg.get("timeout_ms", 30_000) / 1000, job, length, result,
                                 int(msg.get("result_bytes", MAX_RESULT)) + 4)
        elapsed = lambda: int((time.monotonic() - started) * 1000)  # noqa: E731
        if status == "ok":
            # The answer is final (it is in `result`): nothing the job does
            # after it counts. It goes out first; the child, asleep since it
            # wrote it (`_await_kill`), is killed after.
            send({"type": "result", "status": "ok", "elapsed_ms": elapsed()})
            write_frame(result.view[4:size])
            _let_answer_out()
            child.kill()
            result.drop()
            child = replace(child)
        else:
            header = {"type": "result", "status": status}
            if status == "confine":
                header["message"] = bytes(result.view[:size]).decode("utf-8", "replace")
            ended = child.finish(kill=status in ("timeout", "too_large", "confine"))
            if status is None:
                status = "timeout" if ended.pop("timed_out", False) else "died"
            ended.pop("timed_out", None)
            header.update(ended, status=status, elapsed_ms=elapsed())
            header["output_total"] = child.output_total()
            send(header)
            child.send_output(int(msg.get("output_bytes", MAX_OUTPUT)))
            _let_answer_out()
            result.drop()
            child.close()
            child = next_child(wipe_scratch() or (status == "confine" and header["message"]),
                               {"type": "idle"})
        if child is None:
            return
