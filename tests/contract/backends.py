"""The storage backends the contract suite runs against (today: SQLite).

A backend says how to make its hub and node stores at a path, and how to prepare the two
files the migration contract needs (an older schema with data in it, a newer schema than
this software). A new backend (PostgreSQL) adds an entry here and must pass every test in
tests/contract/.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.config import AuditCheckpoints
from node.core.audit import Signer
from node.store.hub_store import MIGRATIONS, HubStore
from node.store.node_store import NodeStore
from node.store.protocols import HubStorage, NodeStorage

#: The destination queued in the older-schema file, and its envelope.
OLD_DEST, OLD_ENVELOPE = "0428759497", b"queued before the upgrade"


@dataclass(frozen=True)
class Backend:
    name: str
    #: The hub store in a directory; with a signer, it checkpoints the chain at every commit.
    hub: Callable[[Path, Signer | None], HubStorage]
    node: Callable[[Path], NodeStorage]
    #: Write a hub store of the first schema holding one queued envelope (OLD_*).
    old_hub: Callable[[Path], None]
    #: Mark a hub store's schema as newer than this software knows.
    newer_hub: Callable[[Path], None]


def _sqlite_old_hub(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    first = MIGRATIONS[0]
    assert isinstance(first, str)
    conn.executescript(first)
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO queue (seq, dest, hub_ticket, envelope) VALUES (1, ?, 't1', ?)",
                 (OLD_DEST, OLD_ENVELOPE))
    conn.close()


def _sqlite_newer_hub(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()


BACKENDS = {
    "sqlite": Backend(
        "sqlite",
        hub=lambda path, signer: HubStore(path / "hub.sqlite", "NORMAL", signer=signer,
                                          checkpoints=AuditCheckpoints(every_records=1)),
        node=lambda path: NodeStore(path / "node.sqlite", "NORMAL"),
        old_hub=lambda path: _sqlite_old_hub(path / "hub.sqlite"),
        newer_hub=lambda path: _sqlite_newer_hub(path / "hub.sqlite"),
    ),
}

