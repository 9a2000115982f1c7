"""Unit tests of the zygote's plumbing that runs outside the sandbox too:
framing, the payload buffers (dropped to zeros after a job), the scratch
wipe, and the checks on the seccomp programs. The whole zygote, confined,
is tested end to end from Rust (crates/cli/tests/sandbox_*.rs)."""

import os

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
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(3000):  # deeper than PATH_MAX allows as one path
            os.mkdir("d", dir_fd=fd)
            down = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = down
        os.close(fd)
        return _empty(folder)

    assert _as_sandbox_user(tmp_path, plant) == "[]"


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


class _Runner:
    """Records the snippets a warm-up runs, as the runner would run them."""

    def __init__(self):
        self.codes = []

    def run(self, code, helpers):
        self.codes.append(code)
        return {"success": True}

    def encode(self, result):
        return b"{}"


def test_warm_up_runs_every_step_without_a_job():
    runner = _Runner()
    zygote._warm_up(None, runner)
    assert len(runner.codes) == 3
    assert all("groupby" in c or "len(" in c for c in runner.codes)


def test_warm_up_stops_between_steps_once_the_job_is_there():
    runner = _Runner()
    asked = []

    def stop():
        asked.append(len(runner.codes))
        return len(runner.codes) == 1  # the job came during the first step
    zygote._warm_up(None, runner, stop=stop)
    assert len(runner.codes) == 1
    assert asked == [0, 1]


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
