"""The zygote: a warm Python process (pandas, numpy, pyarrow and matplotlib
imported, the data snapshot memory-mapped) that runs jobs for the supervisor,
one at a time, each in a freshly forked and confined child.

It is started by the Rust launcher (crates/sandbox/src/launcher.rs) as pid 1
of its own namespaces, inside a read-only root. Protocol on stdin/stdout:
frames of a 4-byte big-endian length and JSON.

    zygote -> supervisor   {"type": "ready", "pid", "rss_kb", "threads", "versions"}
    supervisor -> zygote   {"type": "job", "id", "code", "timeout_ms", "memory_mb",
                            "output_limit", "params", "as_of"}
    zygote -> supervisor   {"type": "result", "id", "status", ...}
                           then, when status is "ok", one frame with the
                           child's result JSON exactly as the child wrote it

status: "ok", "timeout", "too_large", or "died" (with "signal" or "exit_code").
The next child is forked and confined ahead of its job, so a job costs its
own run time plus one round trip.
"""

import json
import os
import select
import shutil
import signal
import struct
import sys
import time

MAX_RESULT = 48 << 20


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame(fd=0):
    header = _read_exact(fd, 4)
    if header is None:
        return None
    body = _read_exact(fd, struct.unpack(">I", header)[0])
    return None if body is None else body


def write_frame(payload: bytes, fd=1):
    data = struct.pack(">I", len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send(obj, fd=1):
    write_frame(json.dumps(obj).encode(), fd)


def _read_all(fd):
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


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

    def run(self, job):
        """Give the child its job; return (header, result bytes or None)."""
        timeout = job.get("timeout_ms", 30_000) / 1000
        started = time.monotonic()
        deadline = started + timeout
        header = {"type": "result", "id": job.get("id")}
        try:
            write_frame(json.dumps(job).encode(), self.job_w)
            os.close(self.job_w)
        except OSError:
            pass  # the child died before reading: reported below
        chunks, size, status = [], 0, None
        while status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = "timeout"
                break
            ready, _, _ = select.select([self.res_r], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self.res_r, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_RESULT:
                status = "too_large"
            else:
                chunks.append(chunk)
        if status is not None:
            os.kill(self.pid, signal.SIGKILL)
        _, wait_status = os.waitpid(self.pid, 0)
        os.close(self.res_r)
        header["elapsed_ms"] = int((time.monotonic() - started) * 1000)
        if status is None:
            if os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0 and chunks:
                status = "ok"
            else:
                status = "died"
                if os.WIFSIGNALED(wait_status):
                    header["signal"] = os.WTERMSIG(wait_status)
                else:
                    header["exit_code"] = os.WEXITSTATUS(wait_status)
        header["status"] = status
        return header, (b"".join(chunks) if status == "ok" else None)


def _no_data(*args, **kwargs):
    """Stands in for the data helpers when no snapshot is loaded."""
    raise RuntimeError("no trade data is loaded: run `tradebox data demo` or "
                       "`tradebox data import PATH` first")


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
        result = runner.run(job.get("code", ""), helpers,
                            output_limit=job.get("output_limit", 1 << 20))
        payload = json.dumps(result, default=str).encode()
        if len(payload) > MAX_RESULT:
            payload = json.dumps({
                "success": False, "result": None, "value": None, "output": "",
                "execution_time_ms": result.get("execution_time_ms", 0), "artifacts": [],
                "error": {"type": "ResultTooLarge",
                          "message": f"the result is {len(payload) >> 20} MiB, over the "
                                     f"{MAX_RESULT >> 20} MiB limit"}}).encode()
        view_ = memoryview(payload)
        while view_:
            view_ = view_[os.write(res_w, view_):]
    except BaseException as e:  # noqa: BLE001 - the child reports and exits
        code = 70
        try:
            os.write(res_w, json.dumps({
                "success": False, "result": None, "value": None, "output": "",
                "execution_time_ms": 0, "artifacts": [],
                "error": {"type": "SandboxError", "message": f"{type(e).__name__}: {e}"}}).encode())
            code = 0
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(code)


def main():
    """Warm up, report ready, then serve jobs until stdin closes."""
    # As pid 1 of its namespace the zygote ignores signals it has no handler
    # for when they come from inside: a job cannot kill it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from tradebox import confine
    confine.set_pdeathsig()
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
    send({"type": "ready", "pid": os.getpid(), "rss_kb": _rss_kb(), "threads": _threads(),
          "python": sys.version.split()[0],
          "versions": {"pandas": pandas.__version__, "numpy": numpy.__version__,
                       "pyarrow": pyarrow.__version__, "matplotlib": matplotlib.__version__},
          "snapshot": None if snapshot is None else snapshot.manifest.get("version")})
    child = Child(filters, snapshot, scratch)
    while True:
        body = read_frame(0)
        if body is None:
            return
        msg = json.loads(body)
        if msg.get("type") == "ping":
            send({"type": "pong", "rss_kb": _rss_kb(), "threads": _threads()})
            continue
        header, result = child.run(msg)
        wipe_scratch()
        send(header)
        if result is not None:
            write_frame(result)
        child = Child(filters, snapshot, scratch)
