"""A daemon's data directory: private to its owner, and held by one process at a time.

Design
------
* **Private whatever the umask.** The directory is created 0700 (``mkdir(mode=0o700)``: the
  umask can only narrow that) and set to 0700 if it already existed wider; every SQLite file is
  created 0600 before SQLite opens it (:func:`private_file`), and SQLite gives a database's
  ``-wal`` and ``-shm`` the database file's own mode, so they are 0600 too. A file left wider by
  an older version is narrowed at start. The audit log (citizen numbers) lives in these files.
* **One daemon per directory.** :class:`DataDirLock` takes an exclusive ``flock`` on
  ``data_dir/lock`` for the life of the process and writes the holder's pid into it. A second
  daemon on the same directory fails at once with :class:`DataDirInUse`, naming the directory
  and the holder's pid. ``flock`` locks belong to the open file, so the kernel releases them
  when the holder exits, however it exits (kill -9 included): there is no stale lock to clean.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

__all__ = ["DataDirInUse", "DataDirLock", "private_dir", "private_file"]

DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_NAME = "lock"
#: The files SQLite keeps beside a database (same mode as the database, set by SQLite).
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


class DataDirInUse(RuntimeError):
    """Another live process holds the data directory."""


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) with the directory itself 0700; narrow it if wider."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Make ``path`` exist with mode 0600 (created so from the first byte), and narrow the
    SQLite files beside it that an older version may have left readable by others."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    for suffix in SQLITE_SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            side = path.with_name(path.name + suffix)
            if stat.S_IMODE(side.stat().st_mode) != FILE_MODE:
                os.chmod(side, FILE_MODE)


class DataDirLock:
    """An exclusive lock on ``data_dir/lock``, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        private_dir(self.data_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"data_dir {self.data_dir} is in use by another daemon (pid {holder}, lock"
                f" {self.path}); stop it first, or give this one a data_dir of its own"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock (the pid stays in the file: harmless, and the next holder overwrites it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock
