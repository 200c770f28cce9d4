"""The hub's master copy of the reference directory, as a revisioned log.

Every change (put or delete of one entity) gets the next revision and is written, in the
same transaction, to the current-state table of its kind and to ``dir_changes`` (revision,
kind, key, owner, op, JSON). ``owner`` says whose fragment the change belongs to (see
:func:`node.core.directory.owner_of`), so a node's deltas are one indexed range query.

Snapshots are built from the current-state tables at the current revision (under the write
lock, so the revision and the content agree). :meth:`compact` deletes changes up to a
revision and records it as ``compacted_revision``: a node that is further behind gets a
snapshot instead of deltas.

Reads on the hot path: the integrations of a batch's subjects go through a separate reader
connection and an LRU cache by subject (:data:`CACHE_SUBJECTS`, see
:mod:`node.store.integrations`); replaced numbers (old -> new) are few (a number is replaced
when a bis number becomes a register number) and are held whole in memory, so asking about
a subject never waits for the database to learn it was not replaced. :meth:`DirectoryStore.apply`
keeps both true. The small
tables (institutions, services, authorizations) are kept in memory by
:class:`node.hub.directory.Directory`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import aiosqlite

from node.core.directory import (
    Authorization,
    Entity,
    Institution,
    Integration,
    Period,
    Replacement,
    RevokedCertificate,
    Service,
    Subscription,
    key_of,
    kind_of,
    owner_of,
)
from node.store.integrations import (
    SubjectCache,
    integration_of,
    integration_row,
    preload,
    read_integrations,
)
from node.store.sqlite import connect, connect_sync, migrate

__all__ = ["DirectoryStore", "LoggedChange", "decode_entity", "encode_entity"]

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
    CREATE TABLE integrations (
        subject TEXT NOT NULL,
        institution TEXT NOT NULL,
        capacity INTEGER NOT NULL,
        begin_date TEXT NOT NULL,
        end_date TEXT NOT NULL,
        phase INTEGER NOT NULL,
        PRIMARY KEY (subject, institution, capacity, begin_date)
    ) WITHOUT ROWID;
    CREATE INDEX integrations_by_institution ON integrations (institution);
    INSERT INTO dir_meta VALUES ('revision', 0), ('compacted_revision', 0);
    """,
]

_SMALL_TABLES = {
    "institution": "institutions",
    "service": "services",
    "revoked_certificate": "revoked",
}
_OWNED_TABLES = {"authorization": "authorizations", "subscription": "subscriptions"}
#: Subjects whose integrations the hub keeps decoded in memory (LRU).
CACHE_SUBJECTS = 250_000


@dataclass(frozen=True, slots=True)
class LoggedChange:
    revision: int
    owner: str
    entity: Entity
    deleted: bool


def _d(day: date | None) -> str:
    return "" if day is None or day == date.min else day.isoformat()


def _day(text: str, default: date | None = None) -> date | None:
    return date.fromisoformat(text) if text else default


def encode_entity(entity: Entity) -> str:
    data: dict[str, Any]
    if isinstance(entity, Institution):
        data = {"e": entity.enterprise_number, "s": entity.sector, "n": entity.name,
                "ep": entity.endpoint, "fp": entity.cert_fingerprint, "st": entity.status}
    elif isinstance(entity, Service):
        data = {"id": entity.id, "v": entity.version, "k": entity.kind, "st": entity.subject_type,
                "r": entity.routing, "p": entity.provider, "ir": entity.integration_required,
                "mp": entity.min_phase, "c": sorted(entity.capacities)}
    elif isinstance(entity, Authorization):
        data = {"id": entity.id, "svc": entity.service_id, "i": entity.institution,
                "sec": entity.sector, "lc": entity.legal_context, "c": sorted(entity.capacities),
                "b": _d(entity.period.begin), "en": _d(entity.period.end)}
    elif isinstance(entity, Integration):
        data = {"sub": entity.subject, "i": entity.institution, "c": entity.capacity,
                "ph": entity.phase, "b": _d(entity.period.begin), "en": _d(entity.period.end)}
    elif isinstance(entity, Replacement):
        data = {"o": entity.old_number, "n": entity.new_number}
    elif isinstance(entity, Subscription):
        data = {"id": entity.id, "i": entity.institution, "svc": entity.service_id,
                "c": sorted(entity.capacities), "cond": entity.condition}
    else:
        data = {"ser": entity.serial, "i": entity.institution, "r": entity.reason}
    return json.dumps(data, separators=(",", ":"))


def decode_entity(kind: str, text: str) -> Entity:
    d = json.loads(text)
    if kind == "institution":
        return Institution(d["e"], d["s"], d["n"], d["ep"], d["fp"], d["st"])
    if kind == "service":
        return Service(d["id"], d["v"], d["k"], d["st"], d["r"], d["p"], d["ir"], d["mp"],
                       frozenset(d["c"]))
    if kind == "authorization":
        return Authorization(d["id"], d["svc"], d["i"], d["sec"], d["lc"], frozenset(d["c"]),
                             Period(_day(d["b"], date.min) or date.min, _day(d["en"])))
    if kind == "integration":
        return Integration(d["sub"], d["i"], d["c"], d["ph"],
                           Period(_day(d["b"], date.min) or date.min, _day(d["en"])))
    if kind == "replacement":
        return Replacement(d["o"], d["n"])
    if kind == "subscription":
        return Subscription(d["id"], d["i"], d["svc"], frozenset(d["c"]), d["cond"])
    return RevokedCertificate(d["ser"], d["i"], d["r"])




class DirectoryStore:
    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._quick: sqlite3.Connection | None = None  # a few subjects' reads, on the loop
        self.lock = asyncio.Lock()
        self.revision = 0
        self.compacted_revision = 0
        self.integration_cache: SubjectCache[tuple[Integration, ...]] = SubjectCache(CACHE_SUBJECTS)
        self._replaced: dict[str, str] = {}  # every replacement: old number -> new number

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await connect(self.path, self.synchronous)
        await migrate(self._writer, MIGRATIONS)
        self._reader = await connect(self.path, self.synchronous)
        self._quick = connect_sync(self.path, synchronous=self.synchronous)
        self.revision = await self._meta("revision")
        self.compacted_revision = await self._meta("compacted_revision")
        self._replaced = dict(await self.reader.execute_fetchall(  # type: ignore[arg-type]
            "SELECT old_number, new_number FROM replacements"))

    async def close(self) -> None:
        if self._quick is not None:
            self._quick.close()
            self._quick = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def writer(self) -> aiosqlite.Connection:
        assert self._writer is not None, "store not open"
        return self._writer

    @property
    def reader(self) -> aiosqlite.Connection:
        assert self._reader is not None, "store not open"
        return self._reader

    async def _meta(self, key: str) -> int:
        async with self.writer.execute("SELECT value FROM dir_meta WHERE key = ?", (key,)) as c:
            row = await c.fetchone()
        return int(row[0]) if row else 0

    # -- writing ---------------------------------------------------------------------------

    async def apply(self, changes: Sequence[tuple[Entity, bool]]) -> list[LoggedChange]:
        """Apply (entity, delete) changes atomically, one revision each."""
        if not changes:
            return []
        async with self.lock:
            w = self.writer
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
            await w.execute("BEGIN IMMEDIATE")
            try:
                await w.executemany("INSERT INTO dir_changes VALUES (?,?,?,?,?,?)", log_rows)
                for kind, items in by_table.items():
                    await self._apply_state(kind, items)
                await w.execute("UPDATE dir_meta SET value = ? WHERE key = 'revision'", (revision,))
                await w.execute("COMMIT")
            except BaseException:  # noqa: BLE001 - rolled back, then re-raised
                try:
                    await w.execute("ROLLBACK")
                finally:
                    raise
            self.revision = revision
            if "integration" in by_table:
                self.integration_cache.forget(
                    e.subject for e, _ in by_table["integration"]  # type: ignore[attr-defined]
                )
            for entity, deleted in by_table.get("replacement", ()):
                assert isinstance(entity, Replacement)
                if deleted:
                    self._replaced.pop(entity.old_number, None)
                else:
                    self._replaced[entity.old_number] = entity.new_number
            return logged

    async def _apply_state(self, kind: str, items: list[tuple[Entity, bool]]) -> None:
        w = self.writer
        if kind == "integration":
            # Keep order: a put then a delete of the same key in one call must end deleted.
            for deleted, group in _runs(items):
                rows = [integration_row(e) for e in group]  # type: ignore[arg-type]
                if deleted:
                    await w.executemany(
                        "DELETE FROM integrations WHERE subject = ? AND institution = ?"
                        " AND capacity = ? AND begin_date = ?", [r[:4] for r in rows])
                else:
                    await w.executemany(
                        "INSERT OR REPLACE INTO integrations VALUES (?,?,?,?,?,?)", rows)
            return
        for entity, deleted in items:
            key = key_of(entity)
            if kind == "replacement":
                assert isinstance(entity, Replacement)
                if deleted:
                    await w.execute("DELETE FROM replacements WHERE old_number = ?", (key,))
                else:
                    await w.execute("INSERT OR REPLACE INTO replacements VALUES (?, ?)",
                                    (entity.old_number, entity.new_number))
            elif kind in _SMALL_TABLES:
                table = _SMALL_TABLES[kind]
                if deleted:
                    await w.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
                else:
                    await w.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)",
                                    (key, encode_entity(entity)))
            else:
                table = _OWNED_TABLES[kind]
                if deleted:
                    await w.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
                else:
                    await w.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)",
                                    (key, owner_of(entity), encode_entity(entity)))

    async def compact(self, keep_after: int) -> tuple[int, int]:
        """Drop history up to ``keep_after``; returns (compacted revision, rows removed)."""
        async with self.lock:
            upto = min(keep_after, self.revision)
            if upto <= self.compacted_revision:
                return self.compacted_revision, 0
            w = self.writer
            await w.execute("BEGIN IMMEDIATE")
            cur = await w.execute("DELETE FROM dir_changes WHERE revision <= ?", (upto,))
            removed = cur.rowcount
            await cur.close()
            await w.execute("UPDATE dir_meta SET value = ? WHERE key = 'compacted_revision'",
                            (upto,))
            await w.execute("COMMIT")
            self.compacted_revision = upto
            return upto, max(removed, 0)

    # -- reading ---------------------------------------------------------------------------

    async def small_tables(self) -> list[Entity]:
        """Institutions, services, authorizations, subscriptions, revoked certificates."""
        result: list[Entity] = []
        for kind, table in (*_SMALL_TABLES.items(), *_OWNED_TABLES.items()):
            async with self.writer.execute(f"SELECT data FROM {table} ORDER BY key") as cur:
                result.extend([decode_entity(kind, row[0]) async for row in cur])
        return result

    async def warm_cache(self) -> int:
        """Preload the integration cache (in the background after start: batches meanwhile
        read what they miss as usual). Returns the subjects loaded."""
        return await preload(self.reader, self.integration_cache)

    async def integrations_of(self, subjects: Iterable[str]) -> dict[str, tuple[Integration, ...]]:
        """Integrations of the given subjects (cached by subject, else one query per 500)."""
        return await read_integrations(self.reader, subjects, self.integration_cache, self._quick)

    async def replacements_of(self, numbers: Iterable[str]) -> dict[str, str]:
        """Old number -> new number for those of ``numbers`` that were replaced, and along
        chains of replacements (at most 10 hops)."""
        replaced = self._replaced
        found: dict[str, str] = {}
        pending = [n for n in numbers if n in replaced]
        for _ in range(10):
            if not pending:
                break
            step = {n: replaced[n] for n in pending if n not in found}
            found.update(step)
            pending = [n for n in step.values() if n in replaced and n not in found]
        return found

    async def snapshot(self, owners: Sequence[str]) -> tuple[int, list[Entity]]:
        """The fragment made of ``owners``' entities, and the revision it is at."""
        async with self.lock:  # consistent with self.revision
            revision = self.revision
            entities: list[Entity] = []
            r = self.writer
            for kind, table in _SMALL_TABLES.items():
                async with r.execute(f"SELECT data FROM {table} ORDER BY key") as cur:
                    entities.extend([decode_entity(kind, row[0]) async for row in cur])
            marks = ",".join("?" * len(owners))
            for kind, table in _OWNED_TABLES.items():
                async with r.execute(
                    f"SELECT data FROM {table} WHERE owner IN ({marks}) ORDER BY key", owners
                ) as cur:
                    entities.extend([decode_entity(kind, row[0]) async for row in cur])
            async with r.execute("SELECT old_number, new_number FROM replacements") as cur:
                entities.extend([Replacement(o, n) async for o, n in cur])
            institutions = [o for o in owners if o and not o.startswith("sector:")]
            if institutions:
                marks = ",".join("?" * len(institutions))
                async with r.execute(
                    f"SELECT subject, institution, capacity, begin_date, end_date, phase"
                    f" FROM integrations WHERE institution IN ({marks})", institutions,
                ) as cur:
                    entities.extend(integration_of(row) for row in await cur.fetchall())
            return revision, entities

    async def changes_since(
        self, owners: Sequence[str], after: int, upto: int, limit: int = 10_000
    ) -> list[LoggedChange]:
        """Changes of ``owners`` in (after, upto], oldest first, at most ``limit``."""
        marks = ",".join("?" * len(owners))
        async with self.reader.execute(
            f"SELECT revision, owner, kind, deleted, data FROM dir_changes"
            f" WHERE owner IN ({marks}) AND revision > ? AND revision <= ?"
            f" ORDER BY revision LIMIT ?",
            (*owners, after, upto, limit),
        ) as cur:
            return [LoggedChange(int(rev), owner, decode_entity(kind, data), bool(deleted))
                    async for rev, owner, kind, deleted, data in cur]


def _runs(items: list[tuple[Entity, bool]]) -> list[tuple[bool, list[Entity]]]:
    runs: list[tuple[bool, list[Entity]]] = []
    for entity, deleted in items:
        if runs and runs[-1][0] == deleted:
            runs[-1][1].append(entity)
        else:
            runs.append((deleted, [entity]))
    return runs
