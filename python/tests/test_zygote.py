"""Unit tests of the zygote's plumbing that runs outside the sandbox too:
framing, the payload buffers (dropped to zeros after a job), the scratch
wipe, and the checks on the seccomp programs. The whole zygote, confined,
is tested end to end from Rust (crates/cli/tests/sandbox_*.rs)."""

import errno
import mmap
import os
import resource
import select
import signal
import time

import pytest

from tradebox import confine, zygote


def test_frames_round_trip_through_a_pipe():
    r, w = os.pipe()
    try:
        zygote.write_frame(b'{"a": 1}', w)
        zygote.write_frame(memoryview(b"xyz"), w)
        os.close(w)
        assert zygote.read_frame(r) == b'{"a": 1}'
        assert zygote.read_frame(r) == b"xyz"
        assert zygote.read_frame(r) is None  # clean end of stream
    finally:
        os.close(r)


def test_a_truncated_frame_reads_as_end_of_stream():
    r, w = os.pipe()
    os.write(w, b"\x00\x00\x00\x10abc")
    os.close(w)
    assert zygote.read_frame(r) is None
    os.close(r)


def test_buffer_is_private_and_reads_zeros_after_drop():
    buf = zygote.Buffer(1 << 20)
    r, w = os.pipe()
    secret = b"TOKEN-" + os.urandom(8).hex().encode()
    os.write(w, secret)
    os.close(w)
    assert buf.read_exact(r, len(secret))
    assert bytes(buf.view[:len(secret)]) == secret
    pid = os.fork()
    if pid == 0:  # a forked child gets a copy, not a shared view
        buf.view[:6] = b"CHILD!"
        os._exit(0)
    os.waitpid(pid, 0)
    assert bytes(buf.view[:6]) == b"TOKEN-"
    buf.drop()
    assert bytes(buf.view[:len(secret)]) == bytes(len(secret))
    assert buf.used == 0
    os.close(r)


def test_the_rehearsal_keeps_nothing():
    job, result = zygote.Buffer(1 << 20), zygote.Buffer(1 << 20)
    fds = sorted(os.listdir("/proc/self/fd"))
    for _ in range(3):
        zygote.rehearse(job, result)
    assert sorted(os.listdir("/proc/self/fd")) == fds
    for buf in (job, result):
        assert buf.used == 0
        assert bytes(buf.view[:4096]) == bytes(4096)


def test_the_rehearsal_writes_where_a_job_would():
    """The pages the zygote's job path writes after a fork are written by
    the rehearsal first: a second job path after it copies far fewer."""
    job, result = zygote.Buffer(1 << 20), zygote.Buffer(1 << 20)

    def minor_faults(fn):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def forked(fn):
        """`fn`'s minor faults in this process, with a child alive (forked
        just before, so every page is shared with it)."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only waits to be killed
            time.sleep(60)
            os._exit(0)
        try:
            return fn()
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)

    def job_path():
        return minor_faults(lambda: zygote.rehearse(job, result))

    zygote.rehearse(job, result)  # first calls, not copies, out of the way
    cold = min(forked(job_path) for _ in range(3))
    warm = min(forked(lambda: zygote.rehearse(job, result) or job_path()) for _ in range(3))
    assert warm < cold / 2, (cold, warm)


def test_after_an_answer_the_zygote_waits_for_its_way_out():
    r, w = os.pipe()
    try:
        started = time.monotonic()
        zygote._let_answer_out(r)
        assert time.monotonic() - started >= zygote.AFTER_ANSWER_S
    finally:
        os.close(r)
        os.close(w)


def test_the_wait_after_an_answer_ends_when_the_supervisor_writes(monkeypatch):
    monkeypatch.setattr(zygote, "AFTER_ANSWER_S", 3600.0)
    r, w = os.pipe()
    try:
        os.write(w, b"\0")
        zygote._let_answer_out(r)  # would wait an hour otherwise
        assert os.read(r, 1) == b"\0"  # nothing of the frame is consumed
    finally:
        os.close(r)
        os.close(w)


def test_read_exact_reports_a_short_stream():
    buf = zygote.Buffer(4096)
    r, w = os.pipe()
    os.write(w, b"abc")
    os.close(w)
    assert not buf.read_exact(r, 10)
    os.close(r)


def _as_sandbox_user(tmp_path, fn):
    """Runs fn(folder) in a child as an unprivileged user (as the sandbox's
    uid is: permissions apply to it), on a folder that user owns; returns
    what fn returned (a short text) or raises with the child's error."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.chdir(folder)  # the parents may not be searchable by that user
            if os.getuid() == 0:
                os.chown(".", 65534, 65534)
                os.setgid(65534)
                os.setuid(65534)
            os.write(w, ("OK " + str(fn("."))).encode())
        except BaseException as e:  # noqa: BLE001
            os.write(w, f"FAIL {type(e).__name__}: {e}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        answer = f.read().decode()
    os.waitpid(pid, 0)
    assert answer.startswith("OK "), answer
    return answer[3:]


def _nest(folder, depth, name="d", mode=None):
    """`depth` folders, each inside the last; each left with `mode`."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    for level in range(depth):
        os.mkdir(name, dir_fd=fd)
        down = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        if mode is not None and level:
            os.fchmod(fd, mode)
        os.close(fd)
        fd = down
    os.close(fd)


def _empty(folder):
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        zygote.empty_dir(fd)
    finally:
        os.close(fd)
    return sorted(os.listdir(folder))


def test_empty_dir_removes_everything(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")

    def plant(folder):
        join = os.path.join
        open(join(folder, "f"), "w").write("x")
        os.makedirs(join(folder, "d", "e"))
        open(join(folder, "d", "e", "g"), "w").write("y")
        os.symlink("/etc/hostname", join(folder, "link"))
        os.symlink(str(outside), join(folder, "dirlink"))  # never followed
        open(join(folder, ".hidden"), "w").write("z")
        os.mkfifo(join(folder, "fifo"))
        return _empty(folder)

    assert _as_sandbox_user(tmp_path, plant) == "[]"
    assert (outside / "keep").read_text() == "k"


def test_empty_dir_undoes_modes_a_job_set(tmp_path):
    def plant(folder):
        join = os.path.join
        for name in ("a", "b", "c"):
            os.makedirs(join(folder, name, "inner"))
            open(join(folder, name, "inner", "file"), "w").write("x")
        os.chmod(join(folder, "a", "inner", "file"), 0)
        os.chmod(join(folder, "a", "inner"), 0)          # no permission at all
        os.chmod(join(folder, "b"), 0o500)               # not writable
        os.chmod(join(folder, "c"), 0o300)               # not readable
        hidden = join(folder, ".full")
        os.mkdir(hidden)
        open(join(hidden, "data"), "wb").write(b"\0" * 4096)
        os.chmod(hidden, 0o100)
        return _empty(folder)

    assert _as_sandbox_user(tmp_path, plant) == "[]"


def test_empty_dir_handles_deep_nesting_without_recursion(tmp_path):
    def plant(folder):
        _nest(folder, 3000)  # deeper than PATH_MAX allows as one path
        return _empty(folder)

    assert _as_sandbox_user(tmp_path, plant) == "[]"


def test_empty_dir_never_acts_deeper_than_two_levels(tmp_path):
    # Landlock walks up from every path it checks: a wipe that went down a
    # deep nest would cost the square of its depth (seconds for a few
    # thousand folders). Every descriptor the wipe acts through must be the
    # top folder or one level below it.
    def plant(folder):
        top = os.path.realpath(folder)
        _nest(folder, 200, mode=0)
        os.makedirs(os.path.join(folder, "wide", "a", "b", "c"))
        deepest = []

        def level(dir_fd):
            if dir_fd is None:
                return 0
            path = os.readlink(f"/proc/self/fd/{dir_fd}")
            return 0 if path == top else len(os.path.relpath(path, top).split("/"))

        def watch(name, where=lambda a, k: [k.get("dir_fd"), k.get("src_dir_fd")]):
            real = getattr(os, name)

            def call(*a, **k):
                deepest.extend(level(fd) for fd in where(a, k))
                return real(*a, **k)
            setattr(os, name, call)

        for name in ("open", "unlink", "rmdir", "chmod", "rename"):
            watch(name)
        watch("scandir", lambda a, k: [a[0]] if a and isinstance(a[0], int) else [])
        left = _empty(folder)
        return f"{left} {max(deepest)}"

    assert _as_sandbox_user(tmp_path, plant) == "[] 1"


def test_empty_dir_moves_folders_past_names_a_job_took(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")

    def plant(folder):
        join = os.path.join
        open(join(folder, ".wipe-0"), "w").write("x")
        os.makedirs(join(folder, ".wipe-1", "full"))
        os.symlink(str(outside), join(folder, ".wipe-2"))
        os.mkdir(join(folder, ".wipe-3"))
        _nest(folder, 50, name=".wipe-4", mode=0o100)
        return _empty(folder)

    assert _as_sandbox_user(tmp_path, plant) == "[]"
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]


def test_empty_dir_empties_in_place_where_folders_cannot_move(tmp_path):
    # Landlock before ABI 2 refuses every move between folders (EXDEV).
    def plant(folder):
        _nest(folder, 100, mode=0)
        os.makedirs(os.path.join(folder, "x", "y"))

        def refuse(*a, **k):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        os.rename = refuse
        return _empty(folder)

    assert _as_sandbox_user(tmp_path, plant) == "[]"


def test_empty_dir_raises_what_it_cannot_handle(tmp_path):
    def plant(folder):
        os.makedirs(os.path.join(folder, "a", "b"))

        def refuse(*a, **k):
            raise OSError(errno.EIO, "Input/output error")
        os.rename = refuse
        try:
            _empty(folder)
        except OSError as e:
            return e.errno
        return "no error"

    assert _as_sandbox_user(tmp_path, plant) == str(errno.EIO)


def test_wipe_scratch_reports_a_folder_it_cannot_reset(tmp_path):
    # Outside the sandbox tmp_path is no private tmpfs: blocks and inodes in
    # use by others must make the check fail, never pass silently.
    (tmp_path / "f").write_text("x")
    problem = zygote.wipe_scratch(str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    assert problem and "scratch" in problem


def test_bad_seccomp_programs_are_refused(tmp_path, monkeypatch):
    empty, odd = tmp_path / "empty.bpf", tmp_path / "odd.bpf"
    empty.write_bytes(b"")
    odd.write_bytes(b"\x00" * 12)
    for path in (empty, odd):
        monkeypatch.setattr(confine, "FILTERS", (str(path),))
        with pytest.raises(confine.ConfineError, match="not a BPF program"):
            confine.load_filters()
    monkeypatch.setattr(confine, "FILTERS", (str(tmp_path / "missing.bpf"),))
    with pytest.raises(FileNotFoundError):
        confine.load_filters()


def test_address_space_counts_a_new_mapping():
    import mmap
    before = confine.address_space()
    assert before > 0 and before % mmap.PAGESIZE == 0
    with mmap.mmap(-1, 64 << 20) as m:
        assert confine.address_space() - before >= len(m)  # RLIMIT_AS counts it untouched
    assert confine.address_space() < before + (64 << 20)


class _Runner:
    """Records the snippets a warm-up runs, as the runner would run them."""

    def __init__(self):
        self.codes, self.encoded = [], 0

    def run(self, code, helpers):
        self.codes.append(code)
        return {"success": True}

    def encode(self, result):
        self.encoded += 1
        return b"{}"


def test_warm_up_runs_and_encodes_a_trivial_job_then_a_query_without_a_job():
    runner = _Runner()
    zygote._warm_up(None, runner)
    assert len(runner.codes) == 2 and runner.codes[0] == "result = 1 + 1"
    assert "groupby" in runner.codes[1]
    assert runner.encoded == 2


def test_warm_up_stops_once_the_job_is_there():
    for came_after, runs, encodes in ((0, 0, 0), (1, 1, 1), (2, 2, 1), (3, 2, 2)):
        runner, asked = _Runner(), []

        def stop():
            asked.append(1)
            return len(asked) > came_after
        zygote._warm_up(None, runner, stop=stop)
        assert (len(runner.codes), runner.encoded) == (runs, encodes)


def test_warm_up_without_data_runs_on_a_small_frame():
    from tradebox import runner
    zygote._warm_up(None, runner)  # pandas, no snapshot: must not raise


def _nice_and_policy(tid):
    stat = open(f"/proc/{tid}/stat").read()
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[16]), int(fields[38])


def test_demote_reaches_every_thread_of_a_session_leader():
    """A child in its own session, with a thread started before the
    demotion: both end at nice 19, its main thread at SCHED_IDLE."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a session leader with a spinning thread
        try:
            import threading
            os.setsid()
            threading.Thread(target=lambda: threading.Event().wait(30), daemon=True).start()
            os.write(ready_w, threading.enumerate()[-1].native_id.to_bytes(4, "little"))
            threading.Event().wait(30)
        finally:
            os._exit(0)
    try:
        tid = int.from_bytes(os.read(ready_r, 4), "little")
        assert _nice_and_policy(pid)[0] == _nice_and_policy(tid)[0] == os.getpriority(os.PRIO_PROCESS, 0)
        zygote.demote(pid)
        assert _nice_and_policy(pid) == (19, os.SCHED_IDLE)
        assert _nice_and_policy(tid)[0] == 19
        assert os.getpriority(os.PRIO_PROCESS, 0) != 19, "the caller is not demoted"
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)


def test_demote_of_a_process_gone_is_harmless():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    zygote.demote(pid)  # no error


def _in_child(body):
    """Run body(report_w) in a forked child with the zygote's SIGUSR1
    handler (installed before the fork, as the zygote does); returns the
    child's pid and the read end of its report pipe."""
    report_r, report_w = os.pipe()
    old = signal.signal(signal.SIGUSR1, zygote._on_job)
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(report_r)
                body(report_w)
                code = 0
            finally:
                os._exit(code)
    finally:
        signal.signal(signal.SIGUSR1, old)
    os.close(report_w)
    return pid, report_r


def _read_report(pid, report_r, timeout=60):
    """Everything the child reported, once it exits (bounded: a child that
    never returns fails the test instead of hanging it)."""
    data = b""
    try:
        while select.select([report_r], [], [], timeout)[0]:
            chunk = os.read(report_r, 1 << 16)
            if not chunk:
                break
            data += chunk
        else:
            os.kill(pid, 9)
            pytest.fail("the child did not finish")
    finally:
        os.close(report_r)
        _, status = os.waitpid(pid, 0)
    assert status == 0, f"the child failed: {status:#x} {data!r}"
    return data


class _SpinningRunner:
    """A warm-up step that never ends on its own, in pure Python (so only
    an exception between two bytecodes can end it)."""

    def __init__(self, started_w):
        self.started_w = started_w

    def run(self, code, helpers):
        os.write(self.started_w, b"s")
        while True:
            pass

    def encode(self, result):
        return b"{}"


def test_a_job_cuts_a_warm_up_step_short():
    """The zygote signals, then writes the job: a child in the middle of a
    step that would never end returns, and the job is there to read."""
    job_r, job_w = os.pipe()
    started_r, started_w = os.pipe()

    def child(report_w):
        os.close(job_w)
        how = zygote._await_job(job_r, None, _SpinningRunner(started_w))
        os.write(report_w, how.encode() + b" " + zygote.read_frame(job_r))

    pid, report_r = _in_child(child)
    os.close(job_r)
    assert os.read(started_r, 1) == b"s"  # the child is inside the step
    os.kill(pid, signal.SIGUSR1)
    zygote.write_frame(b'{"code": "1 + 1"}', job_w)
    assert _read_report(pid, report_r) == b'cut {"code": "1 + 1"}'
    for fd in (job_w, started_r, started_w):
        os.close(fd)


def test_a_job_already_there_skips_the_warm_up():
    job_r, job_w = os.pipe()
    zygote.write_frame(b"{}", job_w)

    def child(report_w):
        os.write(report_w, zygote._await_job(job_r, None, _Runner()).encode())

    pid, report_r = _in_child(child)
    assert _read_report(pid, report_r) == b"ready"
    os.close(job_r)
    os.close(job_w)


def test_the_signal_outside_a_warm_up_changes_nothing():
    """A child that finished warming up, or the zygote itself, takes the
    signal and goes on."""
    zygote._on_job(signal.SIGUSR1, None)  # not warming: no exception
    job_r, job_w = os.pipe()

    def child(report_w):
        how = zygote._await_job(job_r, None, _Runner())
        os.write(report_w, b"w")
        os.write(report_w, how.encode() + b" " + zygote.read_frame(job_r))

    pid, report_r = _in_child(child)
    assert os.read(report_r, 1) == b"w"  # warmed up, waiting for the job
    os.kill(pid, signal.SIGUSR1)
    zygote.write_frame(b"job", job_w)
    assert _read_report(pid, report_r) == b"warmed job"
    os.close(job_r)
    os.close(job_w)


def test_a_warm_up_cut_anywhere_leaves_the_query_right(snapshot_root):
    """The job that cut the warm-up short, at points spread over its whole
    length, gets the same answer as on a child left alone: an interrupted
    step leaves nothing half-made that a job could meet."""
    from tradebox import data, runner
    snap = data.open_snapshot(snapshot_root, as_of="latest")
    query = ("result = load_trades(days=30).groupby(['exchange', 'side'])"
             "[['amount', 'fee']].sum()")

    def answer():
        view = snap.with_as_of("latest")
        res = runner.run(query, {"params": {}, "load_trades": view.load_trades})
        res.pop("execution_time_ms")
        return runner.encode(res)

    def timed_warm_up(report_w):
        started = time.monotonic()
        zygote._warm_up(snap, runner)
        os.write(report_w, f"{time.monotonic() - started:.6f} ".encode() + answer())

    pid, report_r = _in_child(timed_warm_up)
    took, want = _read_report(pid, report_r).split(b" ", 1)
    assert b'"success": true' in want
    cuts = 0
    for i in range(24):
        job_r, job_w = os.pipe()

        def child(report_w):
            os.close(job_w)
            how = zygote._await_job(job_r, snap, runner)
            zygote.read_frame(job_r)
            os.write(report_w, how.encode() + b" " + answer())

        pid, report_r = _in_child(child)
        os.close(job_r)
        time.sleep(zygote.WARM_AFTER_S + float(took) * i / 20)
        os.kill(pid, signal.SIGUSR1)
        zygote.write_frame(b"job", job_w)
        how, got = _read_report(pid, report_r).split(b" ", 1)
        os.close(job_w)
        assert got == want, f"a warm-up cut after {i}/20 of its length"
        cuts += how == b"cut"
    assert cuts >= 10, f"only {cuts} of 24 warm-ups were cut short"


def _rollup_kb(field):
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def test_huge_heap_backs_the_heap_and_a_child_still_copies_small_pages():
    """The heap is collapsed into huge pages, and a forked child's write to
    one copies a small page, not 2 MiB (what a job's memory is counted by)."""
    def child(report_w):
        block = bytearray(100_000)  # below glibc's mmap threshold: in the heap
        mib = zygote.huge_heap()
        if mib == 0:
            os.write(report_w, b"none")
            return
        huge = _rollup_kb("AnonHugePages")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            before = _rollup_kb("Private_Dirty")
            block[50_000] = 1
            os.write(w, str(_rollup_kb("Private_Dirty") - before).encode())
            os._exit(0)
        copied = int(os.read(r, 64))
        os.waitpid(pid, 0)
        os.write(report_w, f"{mib} {huge} {copied}".encode())

    pid, report_r = _in_child(child)
    report = _read_report(pid, report_r)
    if report == b"none":
        pytest.skip("this kernel collapses no huge pages (MADV_COLLAPSE needs Linux 6.1)")
    mib, huge_kb, copied_kb = map(int, report.split())
    assert mib >= 2 and huge_kb >= 2048, report
    assert 0 < copied_kb < 512, f"a write in the child copied {copied_kb} KiB"


def _killed_child():
    """A zygote.Child as the zygote holds one right after its answer: a
    real forked process (here one that sleeps), its answer pipe, pidfd and
    output mapping, killed."""
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    os.close(res_w)
    child = object.__new__(zygote.Child)
    child.pid, child.res_r, child.pidfd = pid, res_r, os.pidfd_open(pid)
    child.mirror = mmap.mmap(-1, 4096)
    child.kill()
    return child


def _gone(child):
    """Whether the child was reaped, and the zygote holds nothing of it."""
    for fd in (child.res_r, child.pidfd):
        with pytest.raises(OSError):
            os.fstat(fd)
    assert child.mirror.closed
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)
    return True


def test_the_next_child_is_forked_once_the_last_is_let_go_and_before_it_is_reaped():
    killed = _killed_child()
    seen = []

    def fork():
        for fd in (killed.res_r, killed.pidfd):  # nothing of it to inherit
            with pytest.raises(OSError):
                os.fstat(fd)
        seen.append(os.path.exists(f"/proc/{killed.pid}"))  # not reaped yet
        return "next"

    assert zygote.fork_beside(killed, fork) == "next"
    assert seen == [True]
    assert _gone(killed)


def test_a_fork_refused_for_a_moment_is_left_to_after_the_reap():
    killed = _killed_child()

    def fork():
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    assert zygote.fork_beside(killed, fork) is None
    assert _gone(killed)


def test_any_other_fork_failure_is_raised():
    killed = _killed_child()

    def fork():
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

    with pytest.raises(OSError, match="memory"):
        zygote.fork_beside(killed, fork)
    os.waitpid(killed.pid, 0)
