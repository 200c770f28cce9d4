"""Start-up check of a daemon's data directory: present, complete, readable; or ``--init``.

Why: a hub started on a missing or emptied ``hub.sqlite`` (a restore gone wrong, a file
deleted after a crash) used to create a new one and serve as if new: what it had
acknowledged and not delivered was gone, and its audit chain restarted at record 1 without a
word. A daemon now only creates its state when told to (``serve --init`` or ``hub|node init``
on a first start), and refuses to start on a data directory that is partly there.

The rules, for a :class:`StateLayout` (the databases of one daemon, plus state files such as
the hub's signing key when it lives in the data directory):

* every database present and non-empty, every state file present: start (``--init`` is then
  a no-op, so an idempotent init step may pass it every time);
* nothing there (no database, no ``-wal``, no state file; the directory may be absent):
  ``STATE_MISSING`` unless ``init`` is given, in which case the directory is created;
* anything in between (``directory.sqlite`` without ``hub.sqlite``, a ``-wal`` without its
  database, a signing key without the database or a database without its key):
  ``STATE_INCONSISTENT``, also with ``init``: the operator must restore or remove the
  leftovers by hand (docs/OPERATIONS.md, "Damaged state");
* a database present that fails ``PRAGMA quick_check`` (garbage in the file), or holds no
  schema at all (a file emptied, or whose content lived in a lost ``-wal``):
  ``STATE_CORRUPT`` / ``STATE_MISSING``, naming the file and SQLite's first message.

A zero-length database file counts as absent (that is what SQLite leaves when it creates one
and nothing is ever committed, or what a truncating restore leaves).

``PRAGMA quick_check`` reads every page of the file once (O(size), no index cross-check):
see docs/OPERATIONS.md for the measured cost; ``crossroads audit verify`` runs the full
``integrity_check`` on the hub's database.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DataDirError",
    "StateLayout",
    "StateReason",
    "check_database",
    "prepare_data_dir",
]


class StateReason(enum.StrEnum):
    """Why a daemon refused its data directory (stable strings, in logs and messages)."""

    STATE_MISSING = "STATE_MISSING"
    STATE_INCONSISTENT = "STATE_INCONSISTENT"
    STATE_CORRUPT = "STATE_CORRUPT"


class DataDirError(Exception):
    """The data directory is not fit to start on; ``reason`` says how."""

    def __init__(self, reason: StateReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StateLayout:
    """The state of one daemon: ``databases`` (file names in ``data_dir``) and other
    ``state_files`` (paths) that exist exactly when the databases do."""

    role: str  # "hub" | "node", for messages
    data_dir: Path
    databases: tuple[str, ...]
    state_files: tuple[Path, ...] = field(default=())

    @property
    def database_paths(self) -> list[Path]:
        return [self.data_dir / name for name in self.databases]


def _present(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def prepare_data_dir(layout: StateLayout, init: bool, integrity: bool = True) -> bool:
    """Check ``layout`` (see the module's rules); return True when it is to be initialized
    (nothing there and ``init``). Raises :class:`DataDirError`."""
    where = f"data_dir {layout.data_dir}"
    present = [p for p in layout.database_paths if _present(p)]
    missing = [p for p in layout.database_paths if not _present(p)]
    orphan_wals = [_wal(p) for p in missing if _present(_wal(p))]
    files_present = [p for p in layout.state_files if p.exists()]
    files_missing = [p for p in layout.state_files if not p.exists()]
    if not present and not orphan_wals and not files_present:
        if not init:
            raise DataDirError(StateReason.STATE_MISSING, (
                f"{where} holds no {layout.role} state ({', '.join(layout.databases)} missing);"
                f" on a first start pass --init (crossroads {layout.role} serve --init, or"
                f" crossroads {layout.role} init), else restore the data directory"))
        layout.data_dir.mkdir(parents=True, exist_ok=True)
        return True
    if missing or files_missing or orphan_wals:
        there = [p.name for p in present] + [str(p) for p in files_present]
        there += [f"{p.name} (without its database)" for p in orphan_wals]
        gone = [p.name for p in missing] + [str(p) for p in files_missing]
        raise DataDirError(StateReason.STATE_INCONSISTENT, (
            f"{where} is incomplete: {', '.join(there)} present but {', '.join(gone)} missing"
            " (a partial restore or a deleted file?); --init does not repair this: restore the"
            " whole data directory from one backup, or move it aside to start anew"))
    if integrity:
        for path in present:
            check_database(path, layout.role)
    return False


def check_database(path: Path, role: str = "daemon") -> None:
    """``PRAGMA quick_check`` and a schema on ``path`` (present); raises :class:`DataDirError`."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DataDirError(StateReason.STATE_CORRUPT, (
            f"{path} failed its integrity check: {exc}; the {role} will not serve from a"
            " damaged database: restore it (with its -wal) from a backup")) from None
    if rows != ["ok"]:
        raise DataDirError(StateReason.STATE_CORRUPT, (
            f"{path} failed its integrity check (PRAGMA quick_check): {'; '.join(rows)};"
            f" the {role} will not serve from a damaged database: restore it (with its -wal)"
            " from a backup"))
    if version == 0:
        raise DataDirError(StateReason.STATE_MISSING, (
            f"{path} holds no schema (emptied, or its content was in a lost -wal);"
            " restore it from a backup, or move the data directory aside and pass --init"))


def layout_files(paths: Sequence[Path], data_dir: Path) -> tuple[Path, ...]:
    """Of ``paths``, those inside ``data_dir`` (state that comes and goes with it)."""
    root = data_dir.resolve()
    return tuple(p for p in paths if p.resolve().is_relative_to(root))
