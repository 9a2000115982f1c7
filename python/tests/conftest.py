"""Shared fixtures: the cex-reporter fixture data and a snapshot of it built
by the real `tradebox` binary (`tradebox data import`).

Environment: TRADEBOX_FIXTURES (default <repo>/../shared/data/cex-reporter),
TRADEBOX_BIN (default <repo>/target/debug/tradebox). During development only,
TRADEBOX_BIN may name python/tests/_contract_writer.py, which writes the same
snapshot layout with pyarrow.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    path = Path(os.environ.get("TRADEBOX_FIXTURES") or REPO.parent / "shared/data/cex-reporter")
    if not (path / "trade_cache.db").is_file() or not (path / "snapshots").is_dir():
        pytest.fail(f"fixture data not found: {path} must hold trade_cache.db and "
                    "snapshots/ (set TRADEBOX_FIXTURES to its location)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def snapshot_root(fixture_dir, tmp_path_factory) -> Path:
    """`<TRADEBOX_HOME>/snapshot` after importing the fixture with the binary."""
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
