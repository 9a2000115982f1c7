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


def test_wipe_scratch_removes_everything(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "g").write_text("y")
    (tmp_path / "link").symlink_to("/etc/hostname")
    (tmp_path / ".hidden").write_text("z")
    zygote.wipe_scratch(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


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
