"""`zygote.immortalize`: on CPython 3.12 and 3.13 the zygote's objects are
made immortal, so that a forked child never writes their reference counts
(and copies their pages); the snapshot's objects stay mortal, so that a
version the zygote leaves is freed; elsewhere nothing changes.

Each case runs in a fresh interpreter: the one running pytest, and every
CPython 3.12+ found on this machine (`python3.12`, `python3.13` on PATH, or
pyenv's versions); the 3.12+ case is skipped, saying so, where there is none."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ZYGOTE = Path(__file__).resolve().parents[1] / "tradebox" / "zygote.py"

SCRIPT = r"""
import gc, importlib.util, json, os, sys, weakref
# The module alone (the package imports pandas, which a bare interpreter lacks).
spec = importlib.util.spec_from_file_location("zygote", sys.argv[1])
zygote = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zygote)
zygote._data_types = lambda: (bytearray,)  # stand-ins for Arrow and numpy data

PAGE = os.sysconf("SC_PAGE_SIZE")
IMMORTAL = zygote.IMMORTAL_REFCNT


class Held:
    pass


def touch(obj):
    return obj


class Version:  # as data.Snapshot: the segments it maps, in an attribute
    def __init__(self):
        self.segments = (Held(), Held())
        self.manifest = {"columns": [Held() for _ in range(10)]}


program = [Held() for _ in range(4000)]  # what a job's code names: counts change
snapshot = Version()
vars(snapshot)  # its attribute dict made, as copy.copy does
buffer = bytearray(64)  # data may hold a mapped segment: mortal
segment = weakref.ref(snapshot.segments[0])
made = zygote.immortalize(snapshot)
report = {
    "can": zygote.can_immortalize(), "made": made,
    "program_immortal": all(sys.getrefcount(o) >= IMMORTAL for o in (program, *program)),
    "snapshot_mortal": max(map(sys.getrefcount, (
        snapshot, vars(snapshot), *snapshot.segments, snapshot.manifest, buffer))) < 100,
}


def exclusive(pages):
    # pagemap bit 56: the page is mapped by this process alone (copied)
    with open("/proc/self/pagemap", "rb") as f:
        flags = []
        for page in pages:
            f.seek(page * 8)
            flags.append(int.from_bytes(f.read(8), "little") >> 56 & 1)
    return sum(flags)


pages = sorted({id(o) // PAGE for o in program})
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    for o in program:
        touch(o)
    os.write(w, str(exclusive(pages)).encode())
    os._exit(0)
copied = int(os.read(r, 64))
os.waitpid(pid, 0)
report.update(pages=len(pages), copied=copied)
del snapshot  # the version is left: its objects are freed
gc.collect()
report["segment_freed"] = segment() is None
print(json.dumps(report))
"""


def _run(python):
    out = subprocess.run([python, "-I", "-c", SCRIPT, str(ZYGOTE)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _version(python):
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return tuple(map(int, out.stdout.split())) if out.returncode == 0 else None


def _immortal_pythons():
    """CPython 3.12 and 3.13 interpreters found here (one per version)."""
    candidates = [sys.executable, "python3.12", "python3.13",
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[23].*/bin/python3")))]
    found = {}
    for python in candidates:
        version = _version(python)
        if version in ((3, 12), (3, 13)):
            found.setdefault(version, python)
    return list(found.values())


def test_without_immortal_objects_nothing_changes_and_a_child_copies_what_it_names():
    if sys.version_info >= (3, 12):
        pytest.skip("this interpreter has immortal objects (the other case covers it)")
    report = _run(sys.executable)
    assert report["can"] is False and report["made"] == 0, report
    assert not report["program_immortal"], report
    # What a child only names is copied all the same: the cost immortalize saves.
    assert report["copied"] >= report["pages"] * 0.9, report
    assert report["segment_freed"], report


@pytest.mark.parametrize("python", _immortal_pythons() or [None])
def test_immortal_objects_are_not_copied_and_the_snapshot_is_still_freed(python):
    if python is None:
        pytest.skip("no CPython 3.12 or 3.13 here (python3.12, python3.13, pyenv)")
    report = _run(python)
    assert report["can"] is True and report["made"] > 4000, report
    assert report["program_immortal"], report
    assert report["snapshot_mortal"], report
    # The child named every object: none of their pages was copied for it
    # (a page may still be written for a neighbour of the objects).
    assert report["copied"] <= report["pages"] * 0.1, report
    assert report["segment_freed"], report
