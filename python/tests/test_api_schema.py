"""The HTTP API against its own OpenAPI document, by a schema-driven fuzzer.

Starts a real `tradebox serve` (one sandbox worker, no demo data) on a
temporary home holding the repository's fixture, then runs schemathesis
from the server's `/api/v1/openapi.json` with these checks:

  not_a_server_error            no 5xx
  status_code_conformance       every status is documented for its operation
  content_type_conformance      every content type is documented
  response_schema_conformance   every body matches its documented schema
  positive_data_acceptance      requests the document allows are not refused
  negative_data_rejection       requests the document forbids are refused

Deterministic (`--generation-deterministic`: the same cases every run) and
bounded (`--max-examples`); about 15 s on two cores once the sandbox runtime
exists. The home's tradebox.toml lifts the rate limit, so fuzzed runs reach
the sandbox instead of being answered 429 (which the document also allows),
and caps a job at 5 s. Per-operation settings: schemathesis.toml beside this
file.

Environment: TRADEBOX_BIN (as conftest.py), TRADEBOX_RUNTIME (a provisioned
sandbox runtime to share; by default the one the Rust tests provision in
target/tmp/runtime, when it is there; otherwise `tradebox serve` provisions
one in the temporary home, which takes minutes).
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import FIXTURE, REPO

TOKEN = "schema-fuzz-token-0123456789abcdef"
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "positive_data_acceptance",
    "negative_data_rejection",
])
# Cases per operation and phase: ~1,500 requests in all.
MAX_EXAMPLES = 100
CONFIG = Path(__file__).with_name("schemathesis.toml")
HOME_CONFIG = """\
[rate_limit]
executions = 100000
window_seconds = 1

[limits]
timeout_seconds = 5
"""


def _binary() -> Path:
    binary = Path(os.environ.get("TRADEBOX_BIN") or REPO / "target/debug/tradebox")
    if binary.suffix == ".py":
        pytest.skip("TRADEBOX_BIN is the contract writer, which does not serve")
    if not binary.is_file():
        pytest.fail(f"tradebox binary not found: {binary} (run `cargo build`, or set "
                    "TRADEBOX_BIN)", pytrace=False)
    return binary


def _runtime_env() -> dict:
    if os.environ.get("TRADEBOX_RUNTIME"):
        return {}
    # The Rust tests' runtime (CARGO_TARGET_TMPDIR/runtime); `tradebox serve`
    # reuses it under its lock, or brings it up to date.
    shared = REPO / "target/tmp/runtime"
    return {"TRADEBOX_RUNTIME": str(shared)} if shared.is_dir() else {}


class Server:
    """`tradebox serve` on a home, until stop()."""

    def __init__(self, binary: Path, home: Path, log: Path):
        env = {**os.environ, "TRADEBOX_HOME": str(home), "TRADEBOX_TOKEN": TOKEN,
               **_runtime_env()}
        for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
            env.pop(name, None)
        self.log = log
        self._stderr = open(log, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "--quiet", "serve", "--listen", "127.0.0.1:0", "--workers", "1",
             "--no-demo"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
        )
        lines: "queue.Queue[str]" = queue.Queue()

        def read():
            # Reads stdout to its end, so the server never blocks on a full pipe.
            for raw in self.proc.stdout:
                lines.put(raw.decode("utf-8", "replace"))

        threading.Thread(target=read, daemon=True).start()
        # Provisioning a runtime from nothing takes minutes; reusing one, a second.
        deadline = time.monotonic() + 600
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("tradebox serve did not get ready (exit "
                                f"{self.proc.returncode}):\n{self.stderr()}", pytrace=False)
                continue
            if line.startswith("Console ready: "):
                url = line.split(": ", 1)[1].strip()
                break
        # http://127.0.0.1:PORT/?token=...
        self.host = url.split("//", 1)[1].split("/", 1)[0]
        self.base = f"http://{self.host}"

    def stderr(self) -> str:
        self._stderr.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as answer:
            return answer.status, json.loads(answer.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    binary = _binary()
    home = tmp_path_factory.mktemp("schema-home")
    imported = subprocess.run(
        [str(binary), "--quiet", "data", "import", str(FIXTURE / "trade_cache.db"),
         str(FIXTURE / "snapshots")],
        env={**os.environ, "TRADEBOX_HOME": str(home)},
        capture_output=True, text=True, timeout=300,
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    (home / "tradebox.toml").write_text(HOME_CONFIG, encoding="utf-8")
    s = Server(binary, home, tmp_path_factory.mktemp("schema-log") / "serve.log")
    try:
        yield s
    finally:
        s.stop()


def test_api_conforms_to_its_openapi_document(server, tmp_path):
    # A saved function, so that the list has a name the stateful phase can
    # follow to GET /api/v1/functions/{name} (a 200, not only 404s).
    status, reply = server.call("POST", "/api/v1/commands", {
        "user": "U1", "text": "/savefunc weekly | Trades in the store | "
                              "result = len(load_trades(days=None))"})
    assert (status, reply["error"]) == (200, False), reply

    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--no-color",
         "--config-file", str(CONFIG),
         "run", f"{server.base}/api/v1/openapi.json",
         "--header", f"Authorization: Bearer {TOKEN}",
         "--header", f"Host: {server.host}",
         "--checks", CHECKS,
         "--generation-deterministic",
         "--max-examples", str(MAX_EXAMPLES),
         "--workers", "1",
         "--request-timeout", "30",
         "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    took = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found failures:\n{output}"
    print(f"schemathesis: {took:.1f}s")

    # Every operation of the document was fuzzed, but the one serving the
    # document: schemathesis leaves out the operation it loaded the schema from.
    _, doc = server.call("GET", "/api/v1/openapi.json")
    described = {f"{method.upper()} {path}"
                 for path, item in doc["paths"].items() for method in item}
    tested = {case.get("name") for case in ET.parse(tmp_path / "junit.xml").iter("testcase")}
    assert described - {"GET /api/v1/openapi.json"} <= tested, (described, tested)

    # The server lived through it, without a panic, and the fuzzed snippets
    # reached the sandbox (not only the validator or the rate limit).
    assert server.proc.poll() is None, server.stderr()
    assert "panicked" not in server.stderr(), server.stderr()
    _, audit = server.call("GET", "/api/v1/audit?action=analyze&outcome=ok&limit=5000")
    assert audit["count"] >= 5, audit
    _, limited = server.call("GET", "/api/v1/audit?outcome=refused_rate_limit&limit=1")
    assert limited["count"] == 0, limited
