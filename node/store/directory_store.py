"""The hub's master copy of the reference directory, as a revisioned log.

Every change (put or delete of one entity) gets the next revision and is written, in the
same transaction, to the current-state table of its kind and to ``dir_changes`` (revision,
kind, key, owner, op, JSON). ``owner`` says whose fragment the change belongs to (see
:func:`node.core.directory.owner_of`), so a node's deltas are one indexed range query.

Threads (:class:`node.store.threaded.SQLiteThreads`): a change, a compaction and a snapshot
each run as one call in the writer thread, which alone moves :attr:`DirectoryStore.revision`
(after the commit): a snapshot read there is at the revision it reports. Deltas and the
integrations of a batch's subjects are read in the reader thread.

Snapshots are built from the current-state tables at the current revision.
:meth:`compact` deletes changes up to a revision and records it as ``compacted_revision``:
a node that is further behind gets a snapshot instead of deltas.

Reads on the hot path: the integrations of a batch's subjects go through a separate reader
connection and an LRU cache by subject (:data:`CACHE_SUBJECTS`, see
:mod:`node.store.integrations`); replaced numbers (old -> new) are few (a number is replaced
when a bis number becomes a register number) and are held whole in memory, so asking about
a subject never waits for the database to learn it was not replaced. Both are a
:class:`DirectoryCaches`, which :meth:`DirectoryStore.apply` keeps true, on the event loop after
each commit (the PostgreSQL store, :mod:`node.store.postgres.directory_store`, shares it, the
stored JSON of an entity and the table of each kind). The small tables (institutions,
services, authorizations) are kept in memory by :class:`node.hub.directory.Directory`.

Other writers: none. The hub's data directory is locked by one process, whose writer thread
alone writes this file: :meth:`DirectoryStore.follow` keeps its callback and never calls it,
and :meth:`DirectoryStore.catch_up` has nothing to do.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from node.core.directory import Entity, Integration, Replacement, key_of, kind_of, owner_of
from node.core.directory_fields import FIELDS, from_values, kind_and_fields
from node.store.integrations import (
    COLUMNS,
    INTEGRATIONS_TABLE,
    SubjectCache,
    integration_of,
    preload,
    read_integrations,
    write_integrations,
)
from node.store.protocols import FollowCallback
from node.store.records import LoggedChange
from node.store.sqlite import migrate_sync, transaction
from node.store.threaded import SQLiteThreads

__all__ = [
    "OWNED_KINDS",
    "SMALL_KINDS",
    "DirectoryCaches",
    "DirectoryStore",
    "LoggedChange",
    "decode_entity",
    "encode_entity",
    "runs",
]

MIGRATIONS = [
    """
    CREATE TABLE dir_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE dir_changes (
        revision INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX dir_changes_by_owner ON dir_changes (owner, revision);
    CREATE TABLE institutions (key TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE services (key TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE authorizations (key TEXT PRIMARY KEY, owner TEXT NOT NULL, data TEXT NOT NULL);
    CREATE TABLE subscriptions (key TEXT PRIMARY KEY, owner TEXT NOT NULL, data TEXT NOT NULL);
    CREATE TABLE revoked (key TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE replacements (old_number TEXT PRIMARY KEY, new_number TEXT NOT NULL);
    """
    + INTEGRATIONS_TABLE
    + """
    INSERT INTO dir_meta VALUES ('revision', 0), ('compacted_revision', 0);
    """,
]

#: The kinds every fragment holds whole, and those held by owner: the small tables, in the
#: order :meth:`DirectoryStore.small_tables` lists them.
SMALL_KINDS = ("institution", "service", "revoked_certificate")
OWNED_KINDS = ("authorization", "subscription")
_SMALL_TABLES = dict(zip(SMALL_KINDS, ("institutions", "services", "revoked"), strict=True))
_OWNED_TABLES = dict(zip(OWNED_KINDS, ("authorizations", "subscriptions"), strict=True))
#: Subjects whose integrations the hub keeps decoded in memory (LRU).
CACHE_SUBJECTS = 250_000


def encode_entity(entity: Entity) -> str:
    """The stored JSON of an entity: its fields (:mod:`node.core.directory_fields`) under
    their short stored keys."""
    kind, values = kind_and_fields(entity)
    return json.dumps(dict(zip(_STORED[kind], values.values(), strict=True)),
                      separators=(",", ":"))


def decode_entity(kind: str, text: str) -> Entity:
    data = json.loads(text)
    return from_values(kind, [data[key] for key in _STORED[kind]])


_STORED = {kind: tuple(f.stored for f in fields) for kind, fields in FIELDS.items()}


class DirectoryCaches:
    """What the hub keeps in memory of the big parts of the directory: the integrations of
    recently asked subjects (LRU) and every replaced number. :meth:`take` keeps them true: it
    is called with every committed change, in revision order, after its commit."""

    def __init__(self) -> None:
        self.integrations: SubjectCache[tuple[Integration, ...]] = SubjectCache(CACHE_SUBJECTS)
        self.replaced: dict[str, str] = {}  # every replacement: old number -> new number

    def reset(self, replaced: dict[str, str]) -> None:
        """Start over from ``replaced`` (all of them, as stored) and an empty cache."""
        self.integrations.clear()
        self.replaced = replaced

    def take(self, logged: Iterable[LoggedChange]) -> None:
        """After the commit of ``logged``: the caches follow."""
        logged = list(logged)
        self.integrations.forget(
            c.entity.subject for c in logged if isinstance(c.entity, Integration))
        replaced = self.replaced
        for change in logged:
            entity = change.entity
            if not isinstance(entity, Replacement):
                continue
            if change.deleted:
                replaced.pop(entity.old_number, None)
            else:
                replaced[entity.old_number] = entity.new_number

    def replacements_of(self, numbers: Iterable[str]) -> dict[str, str]:
        """Old number -> new number for those of ``numbers`` that were replaced, and along
        chains of replacements (at most 10 hops)."""
        replaced = self.replaced
        found: dict[str, str] = {}
        pending = [n for n in numbers if n in replaced]
        for _ in range(10):
            if not pending:
                break
            step = {n: replaced[n] for n in pending if n not in found}
            found.update(step)
            pending = [n for n in step.values() if n in replaced and n not in found]
        return found


class DirectoryStore:
    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.path = path
        self._db = SQLiteThreads(path, synchronous, "directory-store", loop_reads=True)
        #: Moved by the writer thread only, after each commit (so a snapshot read there
        #: agrees with it).
        self.revision = 0
        self.compacted_revision = 0
        self.caches = DirectoryCaches()
        self.integration_cache = self.caches.integrations

    def follow(self, callback: FollowCallback) -> None:
        """Nothing to follow: this process alone writes the file (see the module's doc)."""

    async def catch_up(self) -> None:
        """Nothing to take in: every change was made here."""

    async def open(self) -> None:
        self.caches.reset(await self._db.open(self._open))

    def _open(self, w: sqlite3.Connection) -> dict[str, str]:
        migrate_sync(w, MIGRATIONS)
        meta = dict(w.execute("SELECT key, value FROM dir_meta").fetchall())
        self.revision = int(meta.get("revision", 0))
        self.compacted_revision = int(meta.get("compacted_revision", 0))
        return dict(w.execute("SELECT old_number, new_number FROM replacements").fetchall())

    async def close(self) -> None:
        await self._db.close()

    # -- writing ---------------------------------------------------------------------------

    async def apply(self, changes: Sequence[tuple[Entity, bool]]) -> list[LoggedChange]:
        """Apply (entity, delete) changes atomically, one revision each."""
        if not changes:
            return []
        return await self._db.write(self._apply, changes, then=self._applied)

    def _apply(self, changes: Sequence[tuple[Entity, bool]]) -> list[LoggedChange]:
        revision = self.revision
        logged: list[LoggedChange] = []
        log_rows: list[tuple[object, ...]] = []
        by_table: dict[str, list[tuple[Entity, bool]]] = {}
        for entity, deleted in changes:
            revision += 1
            owner = owner_of(entity)
            kind = kind_of(entity)
            logged.append(LoggedChange(revision, owner, entity, deleted))
            log_rows.append((revision, owner, kind, key_of(entity), int(deleted),
                             encode_entity(entity)))
            by_table.setdefault(kind, []).append((entity, deleted))
        with transaction(self._db.writer) as w:
            w.executemany("INSERT INTO dir_changes VALUES (?,?,?,?,?,?)", log_rows)
            for kind, items in by_table.items():
                _apply_state(w, kind, items)
            w.execute("UPDATE dir_meta SET value = ? WHERE key = 'revision'", (revision,))
        self.revision = revision
        return logged

    def _applied(self, logged: list[LoggedChange]) -> None:
        """On the loop, after the commit: the caches follow."""
        self.caches.take(logged)

    async def compact(self, keep_after: int) -> tuple[int, int]:
        """Drop history up to ``keep_after``; returns (compacted revision, rows removed)."""
        return await self._db.write(self._compact, keep_after)

    def _compact(self, keep_after: int) -> tuple[int, int]:
        upto = min(keep_after, self.revision)
        if upto <= self.compacted_revision:
            return self.compacted_revision, 0
        with transaction(self._db.writer) as w:
            removed = w.execute("DELETE FROM dir_changes WHERE revision <= ?", (upto,)).rowcount
            w.execute("UPDATE dir_meta SET value = ? WHERE key = 'compacted_revision'", (upto,))
        self.compacted_revision = upto
        return upto, max(removed, 0)

    # -- reading ---------------------------------------------------------------------------

    async def small_tables(self) -> list[Entity]:
        """Institutions, services, authorizations, subscriptions, revoked certificates."""
        return await self._db.write(self._small_tables)

    def _small_tables(self) -> list[Entity]:
        w = self._db.writer
        return [decode_entity(kind, data)
                for kind, table in (*_SMALL_TABLES.items(), *_OWNED_TABLES.items())
                for (data,) in w.execute(f"SELECT data FROM {table} ORDER BY key")]

    async def warm_cache(self) -> int:
        """Preload the integration cache (in the background after start: batches meanwhile
        read what they miss as usual). Returns the subjects loaded."""
        return await preload(self._db, self.integration_cache)

    async def integrations_of(self, subjects: Iterable[str]) -> dict[str, tuple[Integration, ...]]:
        """Integrations of the given subjects (cached by subject, else one query per 500)."""
        return await read_integrations(self._db, subjects, self.integration_cache)

    async def replacements_of(self, numbers: Iterable[str]) -> dict[str, str]:
        """:meth:`DirectoryCaches.replacements_of` (from memory)."""
        return self.caches.replacements_of(numbers)

    async def snapshot(self, owners: Sequence[str]) -> tuple[int, list[Entity]]:
        """The fragment made of ``owners``' entities, and the revision it is at (read in the
        writer thread, between commits: the revision and the content agree)."""
        return await self._db.write(self._snapshot, owners)

    def _snapshot(self, owners: Sequence[str]) -> tuple[int, list[Entity]]:
        r = self._db.writer
        entities: list[Entity] = []
        for kind, table in _SMALL_TABLES.items():
            entities.extend(decode_entity(kind, data)
                            for (data,) in r.execute(f"SELECT data FROM {table} ORDER BY key"))
        marks = ",".join("?" * len(owners))
        for kind, table in _OWNED_TABLES.items():
            entities.extend(decode_entity(kind, data) for (data,) in r.execute(
                f"SELECT data FROM {table} WHERE owner IN ({marks}) ORDER BY key", owners))
        entities.extend(Replacement(o, n) for o, n in
                        r.execute("SELECT old_number, new_number FROM replacements"))
        institutions = [o for o in owners if o and not o.startswith("sector:")]
        if institutions:
            marks = ",".join("?" * len(institutions))
            entities.extend(integration_of(row) for row in r.execute(
                f"SELECT {COLUMNS} FROM integrations WHERE institution IN ({marks})",
                institutions))
        return self.revision, entities

    async def changes_since(
        self, owners: Sequence[str], after: int, upto: int, limit: int = 10_000
    ) -> list[LoggedChange]:
        """Changes of ``owners`` in (after, upto], oldest first, at most ``limit``."""
        return await self._db.read(_changes_since, self._db.reader, owners, after, upto, limit)


def _changes_since(conn: sqlite3.Connection, owners: Sequence[str], after: int, upto: int,
                   limit: int) -> list[LoggedChange]:
    marks = ",".join("?" * len(owners))
    return [LoggedChange(int(rev), owner, decode_entity(kind, data), bool(deleted))
            for rev, owner, kind, deleted, data in conn.execute(
                f"SELECT revision, owner, kind, deleted, data FROM dir_changes"
                f" WHERE owner IN ({marks}) AND revision > ? AND revision <= ?"
                f" ORDER BY revision LIMIT ?", (*owners, after, upto, limit))]


def _apply_state(w: sqlite3.Connection, kind: str, items: list[tuple[Entity, bool]]) -> None:
    if kind == "integration":
        # Keep order: a put then a delete of the same key in one call must end deleted.
        for deleted, group in runs(items):
            write_integrations(w, group, deleted)  # type: ignore[arg-type]
        return
    for entity, deleted in items:
        key = key_of(entity)
        if kind == "replacement":
            assert isinstance(entity, Replacement)
            if deleted:
                w.execute("DELETE FROM replacements WHERE old_number = ?", (key,))
            else:
                w.execute("INSERT OR REPLACE INTO replacements VALUES (?, ?)",
                          (entity.old_number, entity.new_number))
        elif kind in _SMALL_TABLES:
            table = _SMALL_TABLES[kind]
            if deleted:
                w.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
            else:
                w.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)",
                          (key, encode_entity(entity)))
        else:
            table = _OWNED_TABLES[kind]
            if deleted:
                w.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
            else:
                w.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)",
                          (key, owner_of(entity), encode_entity(entity)))


def runs(items: Iterable[tuple[Entity, bool]]) -> list[tuple[bool, list[Entity]]]:
    """``items`` as runs of puts and of deletes, in order (a put then a delete of one key in
    one call must end deleted)."""
    found: list[tuple[bool, list[Entity]]] = []
    for entity, deleted in items:
        if found and found[-1][0] == deleted:
            found[-1][1].append(entity)
        else:
            found.append((deleted, [entity]))
    return found
