"""tradebox: the Python side of tradebox, the helpers user snippets run with.

`tradebox.data` reads the Arrow snapshot exported by the Rust store and
provides `load_trades`, `load_balances` and `load_snapshots`.
"""

from tradebox.data import (Snapshot, SnapshotError, configure, load_balances,
                           load_snapshots, load_trades, open_snapshot)

__all__ = ["Snapshot", "SnapshotError", "configure", "load_balances",
           "load_snapshots", "load_trades", "open_snapshot"]
