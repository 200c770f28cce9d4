"""Online backups of a daemon's SQLite state, and their restore (``crossroads hub|node backup``
and ``restore``; docs/OPERATIONS.md, "Backup and restore").

Design
------
* **Backup, while the daemon serves**: each database of the daemon's
  :class:`~node.store.data_dir.StateLayout` is copied with SQLite's online backup API from a
  read-only connection, in one step: one read transaction, so the copy is that database as
  of one commit, whatever the daemon writes meanwhile (WAL: the writer is not blocked). The
  copy is then checked (``PRAGMA integrity_check``). The databases are copied one after the
  other (the hub's ``hub.sqlite`` then ``directory.sqlite``): each is consistent in itself,
  and nothing in one refers to a later state of the other. State files kept in the data
  directory (the hub's signing key there) are copied as they are. ``manifest.json`` lists
  every file with its size and SHA-256, the role and the time; files and directory are
  fsynced before the command returns. The target directory must not exist yet (or be empty):
  a backup never overwrites another.
* **Restore, daemon stopped**: the manifest must be the same role's, every file its size and
  hash; the data directory must hold no state, or ``replace`` moves what it holds aside
  (``<data_dir>.before-restore-<UTC time>``, never deleted). The files are copied in 0600
  and fsynced under the data directory's lock: a restore while the daemon runs is refused
  (``DataDirInUse``), and so is a daemon started during the restore.
* What a restored hub lost (what it acknowledged after the backup) is found by its nodes at
  their next ``Register`` (the continuity check, docs/OPERATIONS.md, "Damaged state"): the
  operator's procedure there applies.

PostgreSQL keeps a hub tier's state in the database: back it up with the database's tools
(``pg_basebackup`` / the cluster manager); :func:`backup` is for SQLite state only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from node.store.data_dir import StateLayout
from node.store.data_dir_guard import DataDirLock, private_dir

__all__ = ["MANIFEST", "BackupError", "Manifest", "backup", "restore"]

MANIFEST = "manifest.json"
FILE_MODE = 0o600


class BackupError(Exception):
    """A backup or a restore that must not go on (the message says why)."""


@dataclass(frozen=True)
class Manifest:
    role: str
    taken_at: str
    #: file name -> (size in bytes, SHA-256 hex)
    files: dict[str, tuple[int, str]]

    def to_json(self) -> str:
        return json.dumps({"role": self.role, "taken_at": self.taken_at,
                           "files": {n: {"bytes": s, "sha256": h}
                                     for n, (s, h) in sorted(self.files.items())}}, indent=1)

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        try:
            raw = json.loads((directory / MANIFEST).read_text())
            return cls(str(raw["role"]), str(raw["taken_at"]),
                       {n: (int(f["bytes"]), str(f["sha256"])) for n, f in raw["files"].items()})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"{directory} holds no readable {MANIFEST}: {exc}") from None


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return path.stat().st_size, h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_database(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: one step, one read transaction: one commit's state
            problem = dst.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    if problem != "ok":
        raise BackupError(f"the copy of {source.name} fails its integrity check: {problem}")


def backup(layout: StateLayout, target: Path) -> Manifest:
    """Copy ``layout``'s state into ``target`` (new or empty) while the daemon may run."""
    missing = [p for p in layout.database_paths if not p.exists()]
    if missing:
        raise BackupError(f"no {layout.role} state to back up: {missing[0]} is missing")
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: a backup goes to a new directory")
    private_dir(target)
    files: dict[str, tuple[int, str]] = {}
    for source in (*layout.database_paths, *layout.state_files):
        copy = target / source.name
        if source in layout.database_paths:
            _copy_database(source, copy)
        else:
            shutil.copyfile(source, copy)
        os.chmod(copy, FILE_MODE)
        _fsync(copy)
        files[source.name] = _digest(copy)
    manifest = Manifest(layout.role, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), files)
    (target / MANIFEST).write_text(manifest.to_json())
    _fsync(target / MANIFEST)
    _fsync(target)
    return manifest


def restore(layout: StateLayout, source: Path, replace: bool = False) -> Path | None:
    """Put the backup in ``source`` back as ``layout``'s state (the daemon stopped); the
    directory the old state was moved to (``replace``), else None."""
    manifest = Manifest.read(source)
    if manifest.role != layout.role:
        raise BackupError(f"{source} is a backup of a {manifest.role}, not of a {layout.role}")
    expected = {p.name for p in (*layout.database_paths, *layout.state_files)}
    if set(manifest.files) != expected:
        raise BackupError(f"{source} holds {sorted(manifest.files)}; this {layout.role}'s"
                          f" state is {sorted(expected)}")
    for name, recorded in manifest.files.items():
        if not (source / name).exists() or _digest(source / name) != recorded:
            raise BackupError(f"{source / name} is not the file the backup recorded"
                              " (size or SHA-256 differs)")
    lock = DataDirLock(layout.data_dir)
    lock.acquire()  # DataDirInUse while the daemon runs
    try:
        present = [p for p in (*layout.database_paths, *layout.state_files) if p.exists()]
        moved = None
        if present:
            if not replace:
                raise BackupError(f"{layout.data_dir} holds {layout.role} state"
                                  f" ({present[0].name}): restore with --replace to move it"
                                  " aside")
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            moved = layout.data_dir.with_name(f"{layout.data_dir.name}.before-restore-{stamp}")
            private_dir(moved)
            for path in layout.data_dir.iterdir():
                if path.name != lock.path.name:
                    path.rename(moved / path.name)
        for name in manifest.files:
            target = layout.data_dir / name
            shutil.copyfile(source / name, target)
            os.chmod(target, FILE_MODE)
            _fsync(target)
        _fsync(layout.data_dir)
        return moved
    finally:
        lock.release()
