"""Opening SQLite databases the same way everywhere: WAL, explicit transactions, migrations.

Connections are opened in autocommit mode (``isolation_level=None``); writers run
``BEGIN IMMEDIATE`` ... ``COMMIT`` themselves so that one transaction is exactly one batch.
``synchronous=FULL`` (default) makes a commit survive power loss; ``NORMAL`` survives a
process crash (kill -9) but may lose the last commits on power loss.

Migrations are numbered, forward-only SQL scripts; ``PRAGMA user_version`` records the last
one applied.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

__all__ = [
    "SYNCHRONOUS_MODES",
    "connect",
    "connect_sync",
    "insert_rows",
    "migrate",
    "migrate_sync",
    "rollback",
]

SYNCHRONOUS_MODES = ("FULL", "NORMAL")
WAL_AUTOCHECKPOINT_PAGES = 8192


def _pragmas(synchronous: str) -> list[str]:
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous}",
        "PRAGMA busy_timeout=10000",
        "PRAGMA foreign_keys=ON",
        "PRAGMA cache_size=-65536",
        # Checkpoint the WAL every ~32 MiB instead of ~4 MiB: pages rewritten by many commits
        # (index pages, the queue's) are copied to the database file once per checkpoint.
        f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}",
    ]


async def connect(path: Path, synchronous: str = "FULL") -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in _pragmas(synchronous):
        await conn.execute(pragma)
    return conn


def connect_sync(
    path: Path, read_only: bool = False, synchronous: str | None = None
) -> sqlite3.Connection:
    """A plain connection: for command-line tools (audit verify, status) as is; with
    ``synchronous``, set up like :func:`connect` for a store that runs its statements in a
    thread of its own (usable from any one thread at a time)."""
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=synchronous is None)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=synchronous is None)
    if synchronous is None:
        conn.execute("PRAGMA busy_timeout=10000")
    else:
        for pragma in _pragmas(synchronous):
            conn.execute(pragma)
    return conn


def migrate_sync(conn: sqlite3.Connection, migrations: Sequence[str]) -> int:
    """:func:`migrate` on a plain connection."""
    row = conn.execute("PRAGMA user_version").fetchone()
    version = int(row[0]) if row else 0
    if version > len(migrations):
        raise RuntimeError(
            f"database schema version {version} is newer than this software ({len(migrations)})"
        )
    for number, script in enumerate(migrations[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(migrations)


@functools.lru_cache(maxsize=64)
def _values_clause(row_sql: str, rows: int) -> str:
    return ",".join([row_sql] * rows)


def insert_rows(
    conn: sqlite3.Connection, insert: str, columns: int, rows: Sequence[Sequence[object]],
    chunk: int = 1024, row_sql: str | None = None,
) -> None:
    """``insert`` (``INSERT INTO t (...) VALUES ``) for all ``rows`` of ``columns`` values, as
    multi-row statements of up to ``chunk`` rows: one SQLite call per chunk instead of one per
    row (``executemany`` steps, and releases and re-takes the GIL, once per row). ``row_sql``:
    the ``(?,...)`` of one row, if it adds constants."""
    row_sql = row_sql or "(" + ",".join("?" * columns) + ")"
    limit = max(1, min(chunk, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // columns))
    for i in range(0, len(rows), limit):
        part = rows[i:i + limit]
        conn.execute(insert + _values_clause(row_sql, len(part)),
                     list(itertools.chain.from_iterable(part)))


async def migrate(conn: aiosqlite.Connection, migrations: Sequence[str]) -> int:
    """Apply the migrations not applied yet, each in its own transaction; return the version."""
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > len(migrations):
        raise RuntimeError(
            f"database schema version {version} is newer than this software ({len(migrations)})"
        )
    for number, script in enumerate(migrations[version:], start=version + 1):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version={number}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
    return len(migrations)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


async def rollback(conn: aiosqlite.Connection) -> None:
    """Roll back after a failed transaction; the connection may already be gone."""
    with contextlib.suppress(Exception):
        await conn.execute("ROLLBACK")
