"""One SQLite file behind two threads: the pattern of the hub's and the node's stores.

Design
------
A store that must not hold up the event loop keeps two plain :mod:`sqlite3` connections,
each used only by a thread of its own:

* the **writer**: every write is one call handed to the writer thread (:meth:`write`) that
  runs a whole transaction there (:func:`node.store.sqlite.transaction`). Writes therefore run
  one at a time, in call order, with one hop from the event loop per transaction (a batch),
  not one per statement;
* the **reader**: reads run in a second thread on a second connection (:meth:`read`); with
  WAL, readers never wait for the writer and see committed transactions only.

The store keeps its own state (counters, revisions) that only the writer thread changes; state
the event loop reads without a hop (caches) follows each commit through :meth:`write`'s
``then``, on the loop, also when the caller is cancelled. This
class owns the threads, the connections and their life cycle; what runs in them is the
store's. :meth:`open` runs the store's setup (migrations, loading state) in the writer thread
before anything else, and closes everything again if it fails.

With ``loop_reads``, a third connection serves reads so small that the hand-over to the
reader thread and back would cost more than the read itself (a consultation's one subject's
integrations): :attr:`loop_reader`, used on the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from node.store.sqlite import connect_sync

__all__ = ["SQLiteThreads"]

T = TypeVar("T")


class SQLiteThreads:
    """The writer and the reader connection of ``path``, each in its own thread."""

    def __init__(self, path: Path, synchronous: str, name: str, loop_reads: bool = False) -> None:
        self.path = path
        self.synchronous = synchronous
        self.name = name
        self.loop_reads = loop_reads
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        #: See the module's docstring (None without ``loop_reads``, or closed).
        self.loop_reader: sqlite3.Connection | None = None
        self._write_thread: ThreadPoolExecutor | None = None
        self._read_thread: ThreadPoolExecutor | None = None

    async def open(self, setup: Callable[[sqlite3.Connection], T]) -> T:
        """Connect both, running ``setup(writer)`` in the writer thread in between; on any
        failure close what was opened and raise."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-writer")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-reader")
        try:
            result: T = await self.write(functools.partial(self._open_writer, setup))
            await self.read(self._open_reader)
            if self.loop_reads:
                self.loop_reader = connect_sync(self.path, synchronous=self.synchronous)
        except BaseException:
            await self.close()
            raise
        return result

    def _open_writer(self, setup: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._writer = connect_sync(self.path, synchronous=self.synchronous)
        return setup(conn)

    def _open_reader(self) -> None:
        self._reader = connect_sync(self.path, synchronous=self.synchronous)

    async def close(self) -> None:
        """Close each connection in its thread, then the threads."""
        if self.loop_reader is not None:
            self.loop_reader.close()
            self.loop_reader = None
        loop = asyncio.get_running_loop()
        for pool, name in ((self._read_thread, "_reader"), (self._write_thread, "_writer")):
            if pool is None:
                continue
            conn = getattr(self, name)
            if conn is not None:
                await loop.run_in_executor(pool, conn.close)
                setattr(self, name, None)
            pool.shutdown(wait=True)
        self._read_thread = self._write_thread = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    @property
    def writer(self) -> sqlite3.Connection:
        """The write connection: only for code running in the writer thread."""
        return _opened(self._writer)

    @property
    def reader(self) -> sqlite3.Connection:
        """The read connection: only for code running in the reader thread."""
        return _opened(self._reader)

    async def write(self, func: Callable[..., T], *args: Any,
                    then: Callable[[T], object] | None = None) -> T:
        """Run ``func(*args)`` in the writer thread, after the writes handed over before.

        ``then(result)``, if given, runs on the event loop once ``func`` returned, as the
        caller resumes: for state the loop reads (caches, in-memory tables) that must follow
        every commit. Such a write is not abandoned when the caller is cancelled: the caller
        waits for the commit, runs ``then`` (so a lock it holds covers both) and is cancelled
        after."""
        assert self._write_thread is not None, "store not open"
        done = asyncio.get_running_loop().run_in_executor(self._write_thread, func, *args)
        if then is None:
            return await done
        try:
            result = await asyncio.shield(done)
        except asyncio.CancelledError:
            await asyncio.wait([done])
            if not done.cancelled() and done.exception() is None:
                then(done.result())
            raise
        then(result)
        return result

    async def read(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` in the reader thread."""
        assert self._read_thread is not None, "store not open"
        return await asyncio.get_running_loop().run_in_executor(self._read_thread, func, *args)

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of one statement, read in the reader thread."""
        return await self.read(_fetchall, self.reader, sql, params)

    def submit_write(self, func: Callable[[], object]) -> Future[object]:
        """Queue ``func`` in the writer thread without waiting for it (background work after
        the writes queued so far). RuntimeError when the store is closed or closing."""
        if self._write_thread is None:
            raise RuntimeError("store not open")
        return self._write_thread.submit(func)


def _fetchall(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def _opened(conn: sqlite3.Connection | None) -> sqlite3.Connection:
    assert conn is not None, "store not open"
    return conn
