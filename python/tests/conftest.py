"""Shared fixtures: cex-reporter data folders and snapshots of them built by
the real `tradebox` binary (`tradebox data import`).

Two tiers of data:
  fixture  tests/fixtures/cex-reporter, the repository's own data (written by
           tests/fixtures/generate.py, its answers in expected.json); always.
  real     the cex-reporter folder TRADEBOX_FIXTURES names, when it is set;
           skipped otherwise.

Environment: TRADEBOX_FIXTURES (the real tier), TRADEBOX_BIN (default
<repo>/target/debug/tradebox). During development only, TRADEBOX_BIN may
name python/tests/_contract_writer.py, which writes the same snapshot layout
with pyarrow.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests/fixtures/cex-reporter"


def _data_folder(path: Path, what: str) -> Path:
    if not (path / "trade_cache.db").is_file() or not (path / "snapshots").is_dir():
        pytest.fail(f"{what} not found: {path} must hold trade_cache.db and snapshots/",
                    pytrace=False)
    return path


@pytest.fixture(scope="session", params=["fixture", "real"])
def fixture_dir(request) -> Path:
    """A cex-reporter data folder: the repository's fixture, then (when
    TRADEBOX_FIXTURES is set) the real data."""
    if request.param == "fixture":
        return _data_folder(FIXTURE, "the repository's fixture (python3 "
                            "tests/fixtures/generate.py writes it)")
    real = os.environ.get("TRADEBOX_FIXTURES")
    if not real:
        pytest.skip("real-data tier skipped: TRADEBOX_FIXTURES is not set")
    return _data_folder(Path(real), "TRADEBOX_FIXTURES")


@pytest.fixture(scope="session")
def repo_fixture(fixture_dir) -> bool:
    """Whether fixture_dir is the repository's fixture (which expected.json describes)."""
    return fixture_dir == FIXTURE


@pytest.fixture(scope="session")
def expected() -> dict:
    """The fixture's answers, computed by its generator."""
    return json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def snapshot_root(fixture_dir, tmp_path_factory) -> Path:
    """`<TRADEBOX_HOME>/snapshot` after importing the data with the binary."""
    binary = Path(os.environ.get("TRADEBOX_BIN") or REPO / "target/debug/tradebox")
    if not binary.is_file():
        pytest.fail(f"tradebox binary not found: {binary} (run `cargo build`, or set "
                    "TRADEBOX_BIN)", pytrace=False)
    cmd = [sys.executable, str(binary)] if binary.suffix == ".py" else [str(binary)]
    home = tmp_path_factory.mktemp("tradebox-home")
    proc = subprocess.run(
        [*cmd, "data", "import", str(fixture_dir / "trade_cache.db"),
         str(fixture_dir / "snapshots")],
        env={**os.environ, "TRADEBOX_HOME": str(home)},
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"`{binary} data import` failed ({proc.returncode}):\n"
                    f"{proc.stdout}{proc.stderr}", pytrace=False)
    root = home / "snapshot"
    if not (root / "current").is_dir():
        pytest.fail(f"`{binary} data import` exited 0 but wrote no snapshot at "
                    f"{root}/current", pytrace=False)
    return root
