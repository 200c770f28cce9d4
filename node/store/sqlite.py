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
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

__all__ = ["SYNCHRONOUS_MODES", "connect", "connect_sync", "migrate", "rollback"]

SYNCHRONOUS_MODES = ("FULL", "NORMAL")


def _pragmas(synchronous: str) -> list[str]:
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous}",
        "PRAGMA busy_timeout=10000",
        "PRAGMA foreign_keys=ON",
        "PRAGMA cache_size=-65536",
    ]


async def connect(path: Path, synchronous: str = "FULL") -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in _pragmas(synchronous):
        await conn.execute(pragma)
    return conn


def connect_sync(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """A plain connection for command-line tools (audit verify, status)."""
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


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
