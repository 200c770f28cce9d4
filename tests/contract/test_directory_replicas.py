"""The directory on PostgreSQL with several hub replicas on one database (what the SQLite store
never faces): one revision sequence in commit order whoever writes, changes reaching the
watchers of every replica (also after the listening connection was cut, or the changes it
missed were compacted away), and signed updates that verify whichever replica served them.

Each "replica" is a :class:`~node.hub.directory.Directory` over a
:class:`~node.store.postgres.directory_store.PostgresDirectoryStore` of its own (its own pool
and listener) on the test's database, all signing with one directory key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.core.backoff import Backoff
from node.core.directory import Entity, Institution, RevokedCertificate, Service, ServiceKind
from node.hub.directory import Directory
from node.store.postgres.directory_store import PostgresDirectoryStore, service_kinds
from node.store.records import LoggedChange
from node.tasks import cancel_and_wait, spawn
from node.wire.gen.crossroads.v1 import directory_pb2 as pb
from node.wire.signed import verify_update
from tests.contract.backends import pg_do, pg_params

A, B = "0403019261", "0428759497"
INST_A = Institution(A, 7, "A")
KEY = Ed25519PrivateKey.generate()


def _replica(path: Path, **store: object) -> Directory:
    return Directory(PostgresDirectoryStore(pg_params(path), **store),  # type: ignore[arg-type]
                     KEY, preload=False)


@contextlib.asynccontextmanager
async def _replicas(path: Path, n: int, **store: object) -> AsyncIterator[list[Directory]]:
    replicas = [_replica(path, **store) for _ in range(n)]
    try:
        for replica in replicas:
            await replica.open()
        yield replicas
    finally:
        for replica in replicas:
            await replica.close()


async def _until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


class Stream:
    """A node's view of one replica's ``WatchDirectory`` stream: every update, verified
    with the directory's public key, and the revision it brought the node to."""

    def __init__(self, directory: Directory, start: int = 0) -> None:
        self.updates: list[pb.DirectoryUpdate] = []
        self.revision = start
        self._task = spawn(self._read(directory.watch(INST_A, start)), "test-watch")

    async def _read(self, stream: AsyncIterator[pb.SignedDirectoryUpdate]) -> None:
        async for signed in stream:
            update = verify_update(signed, KEY.public_key())  # raises unless it verifies
            if update.kind == pb.DirectoryUpdate.KIND_DELTA:
                assert update.from_revision == self.revision, "a gap in the deltas"
            self.updates.append(update)
            self.revision = update.to_revision

    def changes(self) -> list[tuple[int, str]]:
        """(revision, institution name) of every delta's institution change."""
        return [(c.revision, c.institution.name) for u in self.updates
                if u.kind == pb.DirectoryUpdate.KIND_DELTA for c in u.changes]

    async def close(self) -> None:
        await cancel_and_wait(self._task)


@contextlib.asynccontextmanager
async def _streams(*streams: Stream) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for stream in streams:
            await stream.close()


@contextlib.asynccontextmanager
async def _slow_commit(path: Path, name: str, seconds: float) -> AsyncIterator[None]:
    """A trigger that sleeps in the transaction of a change naming ``name`` (after its
    revision was taken, before its commit)."""
    async def create(conn: asyncpg.Connection) -> None:
        await conn.execute(f"""
            CREATE FUNCTION slow_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM new_rows WHERE data LIKE '%{name}%') THEN
                    PERFORM pg_sleep({seconds});
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER slow_change AFTER INSERT ON dir_changes
                REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION slow_change();""")

    await pg_do(path, create)
    try:
        yield
    finally:  # on this loop: a transaction still open here must be able to end first
        await pg_do(path, lambda conn: conn.execute(
            "DROP TRIGGER slow_change ON dir_changes; DROP FUNCTION slow_change()"))


def _named(name: str) -> list[tuple[Entity, bool]]:
    return [(Institution(A, 7, name), False)]


async def test_writers_on_every_replica_make_one_sequence_no_watcher_skips(pg_dir: Path) -> None:
    """A change whose commit is slow holds the head: a change through another replica gets
    the next revision and commits after it, so the third replica's watcher, which only ever
    reads up to a committed head, sees every revision, in order."""
    async with _replicas(pg_dir, 3) as (slow, fast, watched):
        await slow.apply([(INST_A, False)])
        stream = Stream(watched)
        async with _streams(stream):
            async with _slow_commit(pg_dir, "slowly", 1.0):
                first = asyncio.create_task(slow.apply(_named("slowly")))
                await asyncio.sleep(0.3)  # its revision is taken, its commit is not done
                others = [asyncio.create_task(fast.apply(_named(f"fast{n}"))) for n in range(3)]
                await asyncio.sleep(0.3)
                assert not any(t.done() for t in others)  # waiting for the head
                assert await first == 2
                assert sorted(await asyncio.gather(*others)) == [3, 4, 5]
                await watched.apply(_named("last"))
            await _until(lambda: stream.revision == 6)
    assert [r for r, _ in stream.changes()] == [2, 3, 4, 5, 6]
    assert stream.changes()[0] == (2, "slowly")


async def test_a_change_through_one_replica_reaches_the_others_watchers(pg_dir: Path) -> None:
    """Including the small tables and the on_change callbacks; the updates of either replica
    verify with the one directory key and say the same."""
    async with _replicas(pg_dir, 2) as (x, y):
        seen: list[LoggedChange] = []
        y.on_change.append(seen.extend)
        await x.apply([(INST_A, False)])
        at_x, at_y = Stream(x), Stream(y)
        async with _streams(at_x, at_y):
            await _until(lambda: at_x.revision == at_y.revision == 1)
            await x.apply([(Institution(A, 7, "renamed"), False),
                           (RevokedCertificate("beef", B), False)])
            await _until(lambda: at_y.revision == 3, timeout=2.0)
            assert y.institution(A) == Institution(A, 7, "renamed")
            assert 0xBEEF in y.revoked_serials()
            assert [c.revision for c in seen] == [1, 2, 3]
            await _until(lambda: at_x.revision == 3)
        for mine, theirs in zip(at_x.updates, at_y.updates, strict=True):
            mine.produced_at_unix_us = theirs.produced_at_unix_us = 0
            assert mine == theirs


@contextlib.asynccontextmanager
async def _listener_cut(path: Path, store: PostgresDirectoryStore) -> AsyncIterator[None]:
    """Within the block, ``store``'s listening connection is gone and cannot come back (the
    database refuses new connections: said from another database, as PostgreSQL wants);
    afterwards it may."""
    params = pg_params(path)
    base, database = params.dsn.rsplit("/", 1)
    admin = await asyncpg.connect(f"{base}/postgres", password=params.password)
    try:
        await admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        await admin.fetchval("SELECT pg_terminate_backend($1)", store.listener_pid)
        await _until(lambda: store.listener_pid == 0)
        yield
    finally:
        await admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        await admin.close()


async def test_changes_missed_while_the_listener_was_cut_arrive_when_it_is_back(
        pg_dir: Path) -> None:
    """Notifications sent while a listener is away are lost: after reconnecting it reads what
    it missed (no periodic check here: ``poll_s`` is a minute). When what it missed was
    compacted away, it starts over and its watchers get a snapshot."""
    async with _replicas(pg_dir, 2, poll_s=60.0,
                         backoff=Backoff(initial=0.05, maximum=0.2)) as (x, y):
        await x.apply([(INST_A, False)])
        stream = Stream(y)
        async with _streams(stream):
            await _until(lambda: stream.revision == 1)
            store = y.store
            assert isinstance(store, PostgresDirectoryStore) and store.listener_connects == 1
            async with _listener_cut(pg_dir, store):
                await x.apply(_named("while away"))
                await asyncio.sleep(0.5)  # the listener tries, and fails, to come back
                assert stream.revision == 1 and store.listener_pid == 0
            await _until(lambda: stream.revision == 2, timeout=2.0)
            assert stream.changes() == [(2, "while away")] and store.listener_connects == 2
            assert y.institution(A) == Institution(A, 7, "while away")
            async with _listener_cut(pg_dir, store):
                await x.apply(_named("compacted"))
                await x.store.compact(3)
            await _until(lambda: stream.revision == 3, timeout=2.0)
            assert stream.updates[-1].kind == pb.DirectoryUpdate.KIND_SNAPSHOT
            assert y.institution(A) == Institution(A, 7, "compacted")


async def test_a_node_ahead_of_a_replica_or_behind_its_compaction(pg_dir: Path) -> None:
    """A node that comes from another replica with a revision this one did not hear of yet
    gets deltas from there, not a snapshot (the store catches up first); one behind a
    compaction made by another replica gets a snapshot, never a delta with a hole."""
    async with _replicas(pg_dir, 2, poll_s=60.0,
                         backoff=Backoff(initial=0.05, maximum=0.2)) as (x, y):
        await x.apply([(INST_A, False)])
        await _until(lambda: y.revision == 1)
        store = y.store
        assert isinstance(store, PostgresDirectoryStore)
        async with _listener_cut(pg_dir, store):  # y hears of nothing more ...
            await x.apply(_named("two"))
            await x.apply(_named("three"))
            await asyncio.sleep(0.2)
            assert y.revision == 1
            ahead = Stream(y, start=3)  # ... when a node that saw 3 at x comes
            await _until(lambda: y.revision == 3)
            await x.apply(_named("four"))
        async with _streams(ahead):
            await _until(lambda: ahead.revision == 4, timeout=2.0)
        assert [u.kind for u in ahead.updates] == [pb.DirectoryUpdate.KIND_DELTA]
        assert ahead.changes() == [(4, "four")]
        await x.store.compact(3)
        assert y.store.compacted_revision == 0  # y does not know of the compaction yet
        behind = Stream(y, start=2)
        async with _streams(behind):
            await _until(lambda: behind.revision == 4)
        assert [u.kind for u in behind.updates] == [pb.DirectoryUpdate.KIND_SNAPSHOT]
        assert y.store.compacted_revision == 3


async def test_the_audit_purge_finds_the_service_kinds_in_the_database(pg_dir: Path) -> None:
    async with _replicas(pg_dir, 1) as (hub,):
        await hub.store.apply([(Service("ask", 1, provider=A), False),
                               (Service("tell", 2, ServiceKind.MUTATION), False)])
    assert await pg_do(pg_dir, service_kinds) == {"ask": "consultation", "tell": "mutation"}
