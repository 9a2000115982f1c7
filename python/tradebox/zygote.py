"""The zygote: a warm Python process (pandas, numpy, pyarrow and matplotlib
imported, the data snapshot memory-mapped) that runs jobs for the supervisor,
one at a time, each in a freshly forked and confined child.

It is started by the Rust launcher (crates/sandbox/src/launcher.rs) as pid 1
of its own namespaces, inside a read-only root. Protocol on stdin/stdout:
frames of a 4-byte big-endian length and a body.

    zygote -> supervisor   {"type": "ready", "pid", "rss_kb", "threads", "versions"}
    supervisor -> zygote   {"type": "job", "timeout_ms"}   (no user data)
                           then one frame: the job for the child (JSON with the
                           code, limits, params, as_of), relayed as bytes
    zygote -> supervisor   {"type": "result", "status", "elapsed_ms", ...}
                           then, when status is "ok", one frame: the child's
                           result exactly as the child wrote it
    supervisor -> zygote   {"type": "ping"}  ->  {"type": "pong", "rss_kb", "threads"}

status: "ok", "timeout", "too_large", or "died" (with "signal" or "exit_code").

What one job leaves must not reach the next, which is forked from this
process: job payloads never become Python objects here; they pass through two
anonymous mappings that are dropped (MADV_DONTNEED) after every job. The
zygote is not dumpable, so a job cannot read its memory or open its pipes
through /proc/1. The next child is forked and confined ahead of its job, so
a job costs its own run time plus one round trip.
"""

import json
import mmap
import os
import select
import shutil
import signal
import struct
import sys
import time

MAX_JOB = 4 << 20
MAX_RESULT = 48 << 20


class Buffer:
    """An anonymous mapping that payloads pass through, dropped after use."""

    def __init__(self, size):
        # Private: a shared mapping would be shared with every child, and
        # MADV_DONTNEED does not clear the pages of a shared one.
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
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
    """Write a frame; `payload` may be bytes or a memoryview (not copied)."""
    _write_all(fd, memoryview(struct.pack(">I", len(payload))))
    _write_all(fd, memoryview(payload))


def send(obj, fd=1):
    write_frame(json.dumps(obj).encode(), fd)


def _threads():
    return len(os.listdir("/proc/self/task"))


def _rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def wipe_scratch(path="/tmp"):
    """Remove what a job left in the scratch directory."""
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.ismount(full):
            continue
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            try:
                os.unlink(full)
            except OSError:
                pass


class Child:
    """A forked, confined child waiting for its one job."""

    def __init__(self, filters, snapshot, scratch_bytes):
        threads = _threads()
        if threads != 1:
            raise RuntimeError(f"zygote has {threads} threads; refusing to fork")
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(job_w)
            os.close(res_r)
            _child_main(job_r, res_w, filters, snapshot, scratch_bytes)
        os.close(job_r)
        os.close(res_w)
        self.pid, self.job_w, self.res_r = pid, job_w, res_r

    def run(self, timeout_s, job, job_len, result):
        """Give the child its job (in `job`) and collect its answer into
        `result`. Returns (status, length of the answer): "ok" as soon as a
        whole answer frame has arrived, else "timeout", "too_large" or None
        (the child ended without a whole answer: see `finish`)."""
        self.deadline = time.monotonic() + timeout_s
        try:
            write_frame(job.view[:job_len], self.job_w)
        except OSError:
            pass  # the child died before reading: reported by finish()
        os.close(self.job_w)
        job.drop()
        self.pidfd = os.pidfd_open(self.pid)
        size, exited = 0, False
        while True:
            if size >= 4:
                want = 4 + struct.unpack(">I", result.view[:4])[0]
                if want > MAX_RESULT:
                    return "too_large", 0
                if size >= want:
                    return "ok", want
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", 0
            if exited:
                return None, 0
            ready, _, _ = select.select([self.pidfd, self.res_r], [], [], remaining)
            if self.res_r in ready:
                k = result.read_some(self.res_r, size)
                if k == 0:
                    exited = True  # end of the pipe; the frame check above decides
                size += k
            elif self.pidfd in ready:
                # Exited: the pipe holds the rest of what it wrote.
                while size < MAX_RESULT and (k := result.read_some(self.res_r, size)):
                    size += k
                exited = True

    def finish(self, kill):
        """Make sure the child is gone (killing it if asked, or at the
        deadline) and return how it ended, for the result header; a child
        that outlived the deadline is reported as {"timed_out": True}."""
        timed_out = False
        if not kill:
            remaining = max(self.deadline - time.monotonic(), 0)
            ready, _, _ = select.select([self.pidfd], [], [], remaining)
            kill = timed_out = not ready
        if kill:
            os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        os.close(self.pidfd)
        os.close(self.res_r)
        if timed_out:
            return {"timed_out": True}
        if os.WIFSIGNALED(status):
            return {"signal": os.WTERMSIG(status)}
        return {"exit_code": os.WEXITSTATUS(status)}


def _no_data(*args, **kwargs):
    """Stands in for the data helpers when no snapshot is loaded."""
    raise RuntimeError("no trade data is loaded: run `tradebox data demo` or "
                       "`tradebox data import PATH` first")


def _failure(kind, message, elapsed_ms=0):
    return json.dumps({"success": False, "result": None, "value": None, "output": "",
                       "execution_time_ms": elapsed_ms, "artifacts": [],
                       "error": {"type": kind, "message": message}}).encode()


def _child_main(job_r, res_w, filters, snapshot, scratch_bytes):
    """Confine, wait for the job, run it, write the result, exit."""
    code = 0
    try:
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):  # the protocol pipes belong to the zygote alone
            os.dup2(devnull, fd)
        from tradebox import confine, runner
        confine.child(filters, scratch_bytes)
        body = read_frame(job_r)
        if body is None:
            os._exit(0)
        job = json.loads(body)
        confine.limit_job(job.get("memory_mb", 1024) << 20, job.get("timeout_ms", 30_000) / 1000)
        helpers = {"params": job.get("params") or {}}
        if snapshot is not None:
            view = snapshot.with_as_of(job.get("as_of"))
            helpers.update(load_trades=view.load_trades, load_balances=view.load_balances,
                           load_snapshots=view.load_snapshots)
        else:
            helpers.update(load_trades=_no_data, load_balances=_no_data, load_snapshots=_no_data)
        caps = job.get("caps") or {}
        result = runner.run(job.get("code", ""), helpers,
                            output_limit=job.get("output_limit", 1 << 20), caps=caps)
        payload = runner.encode(result, caps)
        if len(payload) + 4 > MAX_RESULT:
            payload = _failure("ResultTooLarge", f"the result is {len(payload) >> 20} MiB, over "
                               f"the {MAX_RESULT >> 20} MiB limit",
                               result.get("execution_time_ms", 0))
        write_frame(payload, res_w)
        os.close(res_w)
    except BaseException as e:  # noqa: BLE001 - the child reports and exits
        code = 70
        try:
            write_frame(_failure("SandboxError", f"{type(e).__name__}: {e}"), res_w)
            code = 0
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(code)


def _warm_up(snapshot, runner):
    """Pay the first-call costs (lazy imports and caches inside pandas,
    numpy and the runner's rendering) once here, not in every job."""
    helpers = {"params": {}}
    if snapshot is not None:
        helpers["load_trades"] = snapshot.load_trades
    code = ("df = load_trades(days=1)\n" if snapshot is not None else
            "df = pd.DataFrame({'exchange': ['a', 'b'], 'amount': [1.0, 2.0]})\n")
    code += "result = df.groupby('exchange')['amount'].sum()"
    runner.run(code, helpers)
    wipe_scratch()


def main():
    """Warm up, report ready, then serve jobs until stdin closes."""
    # As pid 1 of its namespace the zygote ignores signals it has no handler
    # for when they come from inside: a job cannot kill it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
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
    if os.path.exists("/data/manifest.json"):
        snapshot = data.Snapshot("/data")
    filters = confine.load_filters()
    scratch = shutil.disk_usage("/tmp").total
    _warm_up(snapshot, runner)
    send({"type": "ready", "pid": os.getpid(), "rss_kb": _rss_kb(), "threads": _threads(),
          "python": sys.version.split()[0],
          "versions": {"pandas": pandas.__version__, "numpy": numpy.__version__,
                       "pyarrow": pyarrow.__version__, "matplotlib": matplotlib.__version__},
          "snapshot": None if snapshot is None else snapshot.manifest.get("version")})
    job, result = Buffer(MAX_JOB), Buffer(MAX_RESULT)
    child = Child(filters, snapshot, scratch)
    while True:
        control = read_frame(0)
        if control is None:
            return
        msg = json.loads(control)
        if msg.get("type") == "ping":
            send({"type": "pong", "rss_kb": _rss_kb(), "threads": _threads()})
            continue
        length = _read_length(0)
        if length is None or length > MAX_JOB or not job.read_exact(0, length):
            return  # the supervisor broke the protocol: start afresh
        started = time.monotonic()
        status, size = child.run(msg.get("timeout_ms", 30_000) / 1000, job, length, result)
        header = {"type": "result", "status": status}
        if status == "ok":  # answer first; the child is still exiting
            header["elapsed_ms"] = int((time.monotonic() - started) * 1000)
            send(header)
            write_frame(result.view[4:size])
        ended = child.finish(kill=status in ("timeout", "too_large"))
        if status != "ok":
            if status is None:
                status = "timeout" if ended.pop("timed_out", False) else "died"
                header.update(ended)
            header["status"] = status
            header["elapsed_ms"] = int((time.monotonic() - started) * 1000)
            send(header)
        result.drop()
        wipe_scratch()
        child = Child(filters, snapshot, scratch)
