"""The storage backends the contract suite runs against: the hub's (SQLite, PostgreSQL) and
the node's (SQLite: the node keeps SQLite).

A hub backend says how to make its store in a test's directory, how to prepare the two stores
the migration contract needs (an older schema with data in it, a newer schema than this
software), how to verify its audit chain, and how to make one sender's commits slow (the
ordering contract). A PostgreSQL store's database is made per test by the fixture
(tests/contract/conftest.py), which leaves its DSN and password file in the directory: a
separate process (tests/contract/crash_writer.py) opens the same store from the directory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from node.config import AuditCheckpoints
from node.core.audit import Signer
from node.store.audit_queries import AuditReport, verify_file
from node.store.directory_store import DirectoryStore
from node.store.hub_store import MIGRATIONS, HubStore
from node.store.node_store import NodeStore
from node.store.postgres import PgParams, PostgresHubStore
from node.store.postgres import audit as pg_audit
from node.store.postgres.connection import migrate
from node.store.postgres.directory_store import PostgresDirectoryStore
from node.store.postgres.migrations import MIGRATIONS as PG_MIGRATIONS
from node.store.protocols import DirectoryLog, HubStorage, NodeStorage
from node.wire.delivery import pack

#: The destination queued in the older-schema store, and its envelope.
OLD_DEST, OLD_ENVELOPE = "0428759497", b"queued before the upgrade"
#: Where a PostgreSQL test store's DSN and password are, in its directory.
PG_DSN_FILE, PG_PASSWORD_FILE = "postgres.dsn", "postgres.password"
_T = TypeVar("_T")


@dataclass(frozen=True)
class HubBackend:
    name: str
    #: The hub store in a directory; with a signer, it checkpoints the chain at every commit.
    hub: Callable[[Path, Signer | None], HubStorage]
    #: Write a hub store of the first schema holding one queued envelope (OLD_*).
    old_hub: Callable[[Path], None]
    #: Mark a hub store's schema as newer than this software knows.
    newer_hub: Callable[[Path], None]
    #: Verify the audit chain of the (closed) store.
    verify: Callable[[Path], AuditReport]
    #: While entered, commits of audit records from ``sender`` hold their transaction open
    #: ``seconds`` longer (a no-op where writes are serialized anyway).
    slow_commits: Callable[[Path, str, float], contextlib.AbstractContextManager[None]]
    #: The hub's directory store in a directory (on PostgreSQL: in the hub's database).
    directory: Callable[[Path], DirectoryLog]


@dataclass(frozen=True)
class NodeBackend:
    name: str
    node: Callable[[Path], NodeStorage]


# -- SQLite ------------------------------------------------------------------------------------


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


@contextlib.contextmanager
def _writes_are_serialized(_path: Path, _sender: str, _seconds: float) -> Iterator[None]:
    yield  # one writer thread: a commit is positioned and done before the next starts


# -- PostgreSQL --------------------------------------------------------------------------------


def pg_params(path: Path) -> PgParams:
    return PgParams.from_sources((path / PG_DSN_FILE).read_text().strip(),
                                 password_file=path / PG_PASSWORD_FILE, max_size=4)


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to its end from synchronous code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def pg_do(path: Path, action: Callable[[asyncpg.Connection], Coroutine[Any, Any, _T]]) -> _T:
    params = pg_params(path)
    conn = await asyncpg.connect(params.dsn, password=params.password)
    try:
        return await action(conn)
    finally:
        await conn.close()


async def _pg_old(conn: asyncpg.Connection) -> None:
    await migrate(conn, PG_MIGRATIONS[:1])
    await conn.execute("INSERT INTO queue (dest, seq, count, packed) VALUES ($1, 1, 1, $2)",
                       OLD_DEST, pack([OLD_ENVELOPE], ["t1"]))
    await conn.execute("INSERT INTO queue_positions (dest, position) VALUES ($1, 1)", OLD_DEST)


async def _pg_newer(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE schema_version SET version = $1", len(PG_MIGRATIONS) + 1)


@contextlib.contextmanager
def _pg_slow_commits(path: Path, sender: str, seconds: float) -> Iterator[None]:
    """A trigger that sleeps in the transaction of ``sender``'s audit inserts (after its
    queue positions were taken, before its commit)."""
    async def create(conn: asyncpg.Connection) -> None:
        await conn.execute(f"""
            CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM new_rows WHERE sender = '{sender}') THEN
                    PERFORM pg_sleep({seconds});
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER slow_commit AFTER INSERT ON audit REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION slow_commit();""")

    async def drop(conn: asyncpg.Connection) -> None:
        await conn.execute("DROP TRIGGER slow_commit ON audit; DROP FUNCTION slow_commit()")

    run_sync(pg_do(path, create))
    try:
        yield
    finally:
        run_sync(pg_do(path, drop))


HUB_BACKENDS = {
    "sqlite": HubBackend(
        "sqlite",
        hub=lambda path, signer: HubStore(path / "hub.sqlite", "NORMAL", signer=signer,
                                          checkpoints=AuditCheckpoints(every_records=1)),
        old_hub=lambda path: _sqlite_old_hub(path / "hub.sqlite"),
        newer_hub=lambda path: _sqlite_newer_hub(path / "hub.sqlite"),
        verify=lambda path: verify_file(path / "hub.sqlite"),
        slow_commits=_writes_are_serialized,
        directory=lambda path: DirectoryStore(path / "directory.sqlite", "NORMAL"),
    ),
    "postgresql": HubBackend(
        "postgresql",
        hub=lambda path, signer: PostgresHubStore(pg_params(path), signer=signer,
                                                  checkpoints=AuditCheckpoints(every_records=1)),
        old_hub=lambda path: run_sync(pg_do(path, _pg_old)),
        newer_hub=lambda path: run_sync(pg_do(path, _pg_newer)),
        verify=lambda path: run_sync(pg_do(path, pg_audit.verify)),
        slow_commits=_pg_slow_commits,
        directory=lambda path: PostgresDirectoryStore(pg_params(path)),
    ),
}

NODE_BACKENDS = {
    "sqlite": NodeBackend("sqlite", node=lambda path: NodeStore(path / "node.sqlite", "NORMAL")),
}
