"""The hub's reference directory on PostgreSQL (asyncpg): the same revisioned log as the SQLite
:class:`~node.store.directory_store.DirectoryStore` (``DirectoryLog``, tests/contract/), in the
hub's database, shared by every hub replica, each following what the others change.

Design
------
* **One revision sequence, in commit order.** ``dir_head`` (one row) holds the last revision
  and the compacted revision. :meth:`PostgresDirectoryStore.apply` takes that row
  ``FOR UPDATE`` first, numbers its changes from it, writes them (``dir_changes`` and the
  current-state tables, one statement per table and run of puts or deletes, binding arrays)
  and moves the head, in one transaction. The next writer, of any replica, waits on the row
  for this commit: once a revision is committed every lower one is, so a reader paging
  ``changes_since(after, upto)`` with ``upto`` a committed head never skips a revision that
  committed late (a sequence would not give this: HUB-TIER trap 1).
* **A doorbell, then a read.** The apply transaction also calls ``pg_notify`` (channel
  :data:`CHANNEL`, the new head as payload), which PostgreSQL delivers at commit, to every
  session listening on that database. Each store LISTENs on a connection of its own
  (:meth:`~PostgresDirectoryStore._listen`, application name :data:`LISTENER`) and *catches
  up* on a notification, after every (re)connection (notifications are lost while a
  listener is away) and after :data:`POLL_S` without one (which also finds a connection that
  died silently): it reads the committed head, then the changes above :attr:`revision` in
  pages, takes each page into its caches (:class:`~node.store.directory_store.DirectoryCaches`)
  in revision order, moves :attr:`revision` and hands the page to the callback given to
  :meth:`~PostgresDirectoryStore.follow` (:class:`node.hub.directory.Directory`: the small
  tables, ``on_change``, the watchers). A listener that cannot connect retries with backoff
  (:class:`~node.core.backoff.Backoff`), logs each failure and says when it is back
  (``directory_listener_reconnected``); it never ends on an error.
* **One lock for the caches.** A catch-up, and a local apply from its transaction to its
  caches, hold one asyncio lock: the caches take changes in revision order, and a local
  apply first takes in what other replicas committed below its own revisions.
* **Compaction** moves ``compacted_revision`` under the head lock. A store that finds the
  changes it missed compacted away starts over (every replacement read again, the integration
  cache emptied) and tells its callback (``resynced``). :meth:`changes_since` reads the
  compacted revision in the snapshot of the changes and brings :attr:`compacted_revision` up
  to it, so a watcher that checks it after the call never sends a delta with a hole.
* **Snapshots and small tables** are read in one ``REPEATABLE READ`` snapshot with the head:
  a snapshot's revision may be above :attr:`revision` (not taken in yet), never below what it
  holds. Orders are by key in the C collation, as SQLite's.
* **Failures.** A write the database refuses, or a read of integrations for a batch, raises
  :class:`~node.core.errors.Unavailable` (``NOT_STORED``; :class:`~node.store.failures.
  StoreFailures`). A failure after an apply committed (taking in the others' changes below
  it) is logged and left to the listener, which takes in everything from :attr:`revision`
  on, the apply's own changes included; so is a callback that failed (the next catch-up
  starts over, ``resynced``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from node.core.backoff import Backoff
from node.core.directory import (
    Entity,
    Integration,
    Replacement,
    Service,
    key_of,
    kind_of,
    owner_of,
)
from node.store.directory_store import (
    OWNED_KINDS,
    SMALL_KINDS,
    DirectoryCaches,
    decode_entity,
    encode_entity,
    runs,
)
from node.store.failures import StoreFailures
from node.store.integrations import (
    COLUMNS,
    answer,
    grouped,
    integration_of,
    integration_row,
    preload_from,
)
from node.store.postgres.connection import (
    DATABASE_ERRORS,
    PgParams,
    acquire,
    connect,
    create_pool,
    migrate,
)
from node.store.protocols import FollowCallback
from node.store.records import LoggedChange
from node.tasks import cancel_and_wait, spawn

__all__ = ["CHANNEL", "LISTENER", "POLL_S", "POOL_MAX", "PostgresDirectoryStore", "service_kinds"]

log = structlog.get_logger(__name__)

#: The notification channel of directory changes (per database).
CHANNEL = "crossroads_directory"
#: The ``application_name`` of the listening connection (pg_stat_activity).
LISTENER = "crossroads-directory-listener"
#: Seconds without a notification after which the listener checks (and catches up) anyway.
POLL_S = 5.0
#: Changes per page of a catch-up.
PAGE = 10_000
#: Connections of the store's pool at most (``pool_max_size`` if smaller), besides the
#: listener's: batches read integrations the cache misses, streams read snapshots and deltas.
POOL_MAX = 4
#: Seconds a catch-up of the listener, or the pool's closing, may take before it counts as
#: failed (connecting and each statement are bounded by :class:`PgParams`).
CATCH_UP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class _Table:
    """A kind's current-state table: its columns (the first ``keys`` the primary key) and
    their types, and the statements that put and delete a run of rows, each bound as one
    array per column."""

    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    keys: int = 1

    def _unnest(self, columns: Sequence[str]) -> str:
        types = dict(zip(self.columns, self.types, strict=True))
        return "SELECT * FROM unnest({})".format(
            ", ".join(f"${i}::{types[c]}[]" for i, c in enumerate(columns, 1)))

    @property
    def put(self) -> str:
        keys, values = self.columns[:self.keys], self.columns[self.keys:]
        return (f"INSERT INTO {self.name} ({', '.join(self.columns)}) {self._unnest(self.columns)}"
                f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in values))

    @property
    def delete(self) -> str:
        keys = self.columns[:self.keys]
        return f"DELETE FROM {self.name} WHERE ({', '.join(keys)}) IN ({self._unnest(keys)})"


_KEYED = ("key", "data"), ("text", "text")
_OWNED = ("key", "owner", "data"), ("text", "text", "text")
_TABLES = {
    "institution": _Table("dir_institutions", *_KEYED),
    "service": _Table("dir_services", *_KEYED),
    "revoked_certificate": _Table("dir_revoked", *_KEYED),
    "authorization": _Table("dir_authorizations", *_OWNED),
    "subscription": _Table("dir_subscriptions", *_OWNED),
    "replacement": _Table("dir_replacements", ("old_number", "new_number"), ("text", "text")),
    "integration": _Table("dir_integrations", tuple(COLUMNS.split(", ")),
                          ("text", "text", "integer", "text", "text", "integer"), keys=4),
}
_INSERT_CHANGES = (
    "INSERT INTO dir_changes (revision, owner, kind, key, deleted, data) SELECT * FROM"
    " unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::boolean[], $6::text[])")
_CHANGES = "SELECT revision, owner, kind, deleted, data FROM dir_changes"
_INTEGRATIONS = f"SELECT {COLUMNS} FROM dir_integrations"


def _row(kind: str, entity: Entity) -> tuple[object, ...]:
    if isinstance(entity, Integration):
        return integration_row(entity)
    if isinstance(entity, Replacement):
        return entity.old_number, entity.new_number
    if kind in OWNED_KINDS:
        return key_of(entity), owner_of(entity), encode_entity(entity)
    return key_of(entity), encode_entity(entity)


def _logged(rows: Iterable[Sequence[Any]]) -> list[LoggedChange]:
    return [LoggedChange(int(rev), owner, decode_entity(kind, data), bool(deleted))
            for rev, owner, kind, deleted, data in rows]


async def _write_state(conn: asyncpg.Connection, changes: Sequence[tuple[Entity, bool]]) -> None:
    """The current-state tables after ``changes``: per kind, one statement per run of puts or
    deletes (a put then a delete of one key ends deleted; within a run of puts the last of a
    key wins, as one statement may not touch a row twice)."""
    by_kind: dict[str, list[tuple[Entity, bool]]] = {}
    for entity, deleted in changes:
        by_kind.setdefault(kind_of(entity), []).append((entity, deleted))
    for kind, items in by_kind.items():
        table = _TABLES[kind]
        for deleted, entities in runs(items):
            rows = list({r[:table.keys]: r for r in (_row(kind, e) for e in entities)}.values())
            if deleted:
                rows = [r[:table.keys] for r in rows]
            await conn.execute(table.delete if deleted else table.put,
                               *(list(column) for column in zip(*rows, strict=True)))


async def service_kinds(conn: asyncpg.Connection) -> dict[str, str]:
    """Service id -> kind (consultation, mutation, ...) from the directory's services: what
    the audit purge's retention per kind needs (on SQLite:
    :func:`node.store.audit_queries.service_kinds_from_directory`)."""
    services = [decode_entity("service", data)
                for (data,) in await conn.fetch("SELECT data FROM dir_services")]
    return {s.id: s.kind.value for s in services if isinstance(s, Service)}


class PostgresDirectoryStore:
    """:class:`~node.store.protocols.DirectoryLog` on PostgreSQL (see the module's design)."""

    def __init__(self, params: PgParams, poll_s: float = POLL_S,
                 backoff: Backoff | None = None) -> None:
        self.params = params
        self.poll_s = poll_s
        self.backoff = backoff or Backoff(initial=0.1, maximum=5.0)
        #: The last revision taken in (caches, callback); moved under :attr:`_taking` only.
        self.revision = 0
        self.compacted_revision = 0
        self.caches = DirectoryCaches()
        self.integration_cache = self.caches.integrations
        self.failures = StoreFailures()
        #: Times the listener connected (the first included), and its server process (0:
        #: not connected).
        self.listener_connects = 0
        self.listener_pid = 0
        self._pool: asyncpg.Pool | None = None
        self._callback: FollowCallback | None = None
        self._taking = asyncio.Lock()
        self._doorbell = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._resync = False  # a callback failed: start over at the next catch-up

    def follow(self, callback: FollowCallback) -> None:
        self._callback = callback

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        pool = await create_pool(dataclasses.replace(
            self.params, min_size=min(self.params.min_size, POOL_MAX),
            max_size=min(self.params.max_size, POOL_MAX)))
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                await self._start_over(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._listener = spawn(self._listen(), "directory-listener")

    async def close(self) -> None:
        await cancel_and_wait(self._listener)
        self._listener = None
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(CATCH_UP_TIMEOUT_S):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    async def _start_over(self, conn: asyncpg.Connection) -> None:
        """The head and every replacement, from one snapshot; an empty integration cache."""
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            head = await conn.fetchrow(
                "SELECT revision, compacted_revision FROM dir_head WHERE id = 1")
            replaced = dict(await conn.fetch("SELECT old_number, new_number"
                                             " FROM dir_replacements"))
        self.caches.reset(replaced)
        self.revision, self.compacted_revision = int(head[0]), int(head[1])

    def _connection(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the directory store is not open")
        return acquire(self._pool)

    @asynccontextmanager
    async def _snapshot_read(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read",
                                                                readonly=True):
            yield conn

    # -- writing ---------------------------------------------------------------------------

    async def apply(self, changes: Sequence[tuple[Entity, bool]]) -> list[LoggedChange]:
        """Apply (entity, delete) changes atomically, one revision each (see the design)."""
        if not changes:
            return []
        async with self._taking:
            try:
                async with self._connection() as conn, conn.transaction():
                    head = int(await conn.fetchval(
                        "SELECT revision FROM dir_head WHERE id = 1 FOR UPDATE"))
                    logged = [LoggedChange(head + i, owner_of(entity), entity, deleted)
                              for i, (entity, deleted) in enumerate(changes, 1)]
                    await conn.execute(_INSERT_CHANGES, [c.revision for c in logged],
                                       [c.owner for c in logged],
                                       [kind_of(c.entity) for c in logged],
                                       [key_of(c.entity) for c in logged],
                                       [c.deleted for c in logged],
                                       [encode_entity(c.entity) for c in logged])
                    await _write_state(conn, changes)
                    last = logged[-1].revision
                    await conn.execute("UPDATE dir_head SET revision = $1 WHERE id = 1", last)
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(last))
            except DATABASE_ERRORS as exc:
                raise self.failures.failed("directory_apply", exc,
                                           changes=len(changes)) from exc
            try:  # first what other replicas committed below ours
                await self._catch_up_with(self._connection, head)
            except Exception as exc:  # noqa: BLE001 - committed: the listener takes it in
                self._missed(exc, last)
                return logged
            if self.revision == head:
                self.caches.take(logged)
                self.revision = last
        return logged

    async def compact(self, keep_after: int) -> tuple[int, int]:
        """Drop history up to ``keep_after`` (at most the head); returns (compacted revision,
        rows removed)."""
        try:
            async with self._connection() as conn, conn.transaction():
                head, compacted = await conn.fetchrow(
                    "SELECT revision, compacted_revision FROM dir_head WHERE id = 1 FOR UPDATE")
                upto = min(keep_after, int(head))
                removed = 0
                if upto > compacted:
                    status = await conn.execute("DELETE FROM dir_changes WHERE revision <= $1",
                                                upto)
                    removed = int(status.split()[-1])
                    await conn.execute("UPDATE dir_head SET compacted_revision = $1"
                                       " WHERE id = 1", upto)
        except DATABASE_ERRORS as exc:
            raise self.failures.failed("directory_compact", exc) from exc
        self.compacted_revision = max(self.compacted_revision, upto, int(compacted))
        return self.compacted_revision, removed

    # -- following the other replicas ------------------------------------------------------

    async def catch_up(self) -> None:
        """Take in what was committed up to now; a failure is the listener's to retry."""
        async with self._taking:
            try:
                await self._catch_up_with(self._connection, None)
            except Exception as exc:  # noqa: BLE001 - logged; the listener takes it in
                self._missed(exc, self.revision)

    def _missed(self, exc: Exception, revision: int) -> None:
        log.warning("directory_catch_up_failed", error=str(exc) or type(exc).__name__,
                    revision=revision)
        self._doorbell.set()

    async def _catch_up_with(self, borrow: Callable[[], Any], upto: int | None) -> None:
        """Under :attr:`_taking`: take in the changes up to ``upto`` (None: the committed
        head), page by page, each handed to the callback after the caches took it. Each read
        holds a connection from ``borrow()`` (the pool's, or the listener's) only while it
        reads: the callback reads through the pool too."""
        if upto is None:
            async with borrow() as conn:
                upto = int(await conn.fetchval("SELECT revision FROM dir_head WHERE id = 1"))
        while self.revision < upto or self._resync:
            async with borrow() as conn:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    compacted = int(await conn.fetchval(
                        "SELECT compacted_revision FROM dir_head WHERE id = 1"))
                    resync = self._resync or self.revision < compacted
                    if not resync:
                        page = _logged(await conn.fetch(
                            _CHANGES + " WHERE revision > $1 AND revision <= $2"
                            " ORDER BY revision LIMIT $3", self.revision, upto, PAGE))
                if resync:
                    log.warning("directory_resync", revision=self.revision,
                                reason="callback failed" if self._resync
                                else "changes compacted away")
                    await self._start_over(conn)
            if resync:
                self._resync = False
                await self._report([], True)
                return
            if not page:  # cannot be (revisions are contiguous above the compacted one)
                raise RuntimeError(f"directory changes after {self.revision} up to {upto}"
                                   " are missing")
            self.caches.take(page)
            self.revision = page[-1].revision
            await self._report(page, False)

    async def _report(self, changes: list[LoggedChange], resynced: bool) -> None:
        if self._callback is None:
            return
        try:
            await self._callback(changes, resynced)
        except Exception:
            self._resync = True
            raise

    async def _listen(self) -> None:
        """The listener: connect, LISTEN, catch up on every ring (see the design); after any
        failure, again after a backoff. Ends only when cancelled."""
        while True:
            conn: asyncpg.Connection | None = None
            try:
                params = self.params
                conn = await connect(
                    params, command_timeout=params.command_timeout_s,
                    statement_cache_size=params.statement_cache_size,
                    server_settings={"application_name": LISTENER})
                await self._follow_on(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the listener outlives any failure
                delay = self.backoff.next_delay()
                log.warning("directory_listener_down", error=str(exc) or type(exc).__name__,
                            revision=self.revision, retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
            finally:
                self.listener_pid = 0
                if conn is not None:
                    conn.terminate()

    async def _follow_on(self, conn: asyncpg.Connection) -> None:
        doorbell = self._doorbell
        conn.add_termination_listener(lambda _conn: doorbell.set())
        await conn.add_listener(CHANNEL, lambda *_args: doorbell.set())
        self.listener_connects += 1
        self.listener_pid = conn.get_server_pid()
        if self.listener_connects > 1:
            log.info("directory_listener_reconnected", revision=self.revision,
                     pid=self.listener_pid)
        doorbell.set()  # what was committed while no one listened
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that
        # arrives as the awaited ring does (close() would then wait for ever).
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await doorbell.wait()
            doorbell.clear()
            if conn.is_closed():
                raise ConnectionError("the listening connection was closed")
            async with self._taking, asyncio.timeout(CATCH_UP_TIMEOUT_S):
                await self._catch_up_with(lambda: contextlib.nullcontext(conn), None)
            self.backoff.reset()

    # -- reading ---------------------------------------------------------------------------

    async def small_tables(self) -> list[Entity]:
        """Institutions, services, revoked certificates, authorizations, subscriptions."""
        async with self._snapshot_read() as conn:
            return [decode_entity(kind, data)
                    for kind in (*SMALL_KINDS, *OWNED_KINDS)
                    for (data,) in await conn.fetch(
                        f"SELECT data FROM {_TABLES[kind].name} ORDER BY key COLLATE \"C\"")]

    async def warm_cache(self) -> int:
        async def fetch(after: str, limit: int) -> list[Any]:
            async with self._connection() as conn:
                return list(await conn.fetch(
                    _INTEGRATIONS + " WHERE subject > $1 ORDER BY subject LIMIT $2",
                    after, limit))

        return await preload_from(fetch, self.integration_cache)

    async def integrations_of(self, subjects: Iterable[str]) -> dict[str, tuple[Integration, ...]]:
        """Integrations of the given subjects (cached by subject, else one query)."""
        cache = self.integration_cache
        found, missing = cache.lookup(set(subjects))
        generation = cache.generation
        read: dict[str, tuple[Integration, ...]] = {}
        if missing:
            try:
                async with self._connection() as conn:
                    rows = await conn.fetch(_INTEGRATIONS + " WHERE subject = ANY($1::text[])",
                                            missing)
            except DATABASE_ERRORS as exc:
                raise self.failures.failed("directory_read", exc) from exc
            read = grouped(missing, rows)
        return answer(cache, generation, found, read)

    async def replacements_of(self, numbers: Iterable[str]) -> dict[str, str]:
        return self.caches.replacements_of(numbers)

    async def snapshot(self, owners: Sequence[str]) -> tuple[int, list[Entity]]:
        """The fragment made of ``owners``' entities and the head it is at (one snapshot)."""
        institutions = [o for o in owners if o and not o.startswith("sector:")]
        async with self._snapshot_read() as conn:
            head = int(await conn.fetchval("SELECT revision FROM dir_head WHERE id = 1"))
            entities: list[Entity] = []
            for kind in SMALL_KINDS:
                entities.extend(decode_entity(kind, data) for (data,) in await conn.fetch(
                    f"SELECT data FROM {_TABLES[kind].name} ORDER BY key COLLATE \"C\""))
            for kind in OWNED_KINDS:
                entities.extend(decode_entity(kind, data) for (data,) in await conn.fetch(
                    f"SELECT data FROM {_TABLES[kind].name} WHERE owner = ANY($1::text[])"
                    " ORDER BY key COLLATE \"C\"", list(owners)))
            entities.extend(Replacement(o, n) for o, n in await conn.fetch(
                "SELECT old_number, new_number FROM dir_replacements"))
            if institutions:
                entities.extend(integration_of(row) for row in await conn.fetch(
                    _INTEGRATIONS + " WHERE institution = ANY($1::text[])", institutions))
        return head, entities

    async def changes_since(
        self, owners: Sequence[str], after: int, upto: int, limit: int = 10_000
    ) -> list[LoggedChange]:
        """Changes of ``owners`` in (after, upto], oldest first, at most ``limit``; none when
        ``after`` is below the compacted revision (then brought up to date)."""
        async with self._snapshot_read() as conn:
            compacted = int(await conn.fetchval(
                "SELECT compacted_revision FROM dir_head WHERE id = 1"))
            self.compacted_revision = max(self.compacted_revision, compacted)
            if after < compacted:
                return []
            return _logged(await conn.fetch(
                _CHANGES + " WHERE owner = ANY($1::text[]) AND revision > $2 AND revision <= $3"
                " ORDER BY revision LIMIT $4", list(owners), after, upto, limit))

