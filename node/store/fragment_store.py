"""A node's copy of its directory fragment, replicated from the hub.

The fragment is the public part of the directory (institutions, services, revoked
certificates, replaced numbers) plus the node's own authorizations (including those granted
to its whole sector), integrations and subscriptions. The hub streams it as signed snapshots
and deltas (:mod:`node.member.fragment` verifies them); this store applies each one in one
transaction and records the revision it reached:

* :meth:`FragmentStore.apply_snapshot` replaces everything at a revision;
* :meth:`FragmentStore.apply_delta` applies the changes made between ``from_revision`` and
  ``to_revision`` and refuses (:class:`RevisionGap`, nothing applied) unless the store is at
  ``from_revision`` exactly.

Integrations (possibly millions) stay in SQLite and are read per batch of envelopes, for the
batch's subjects only (:meth:`FragmentStore.view_for`), through an LRU cache by subject
(:mod:`node.store.integrations`; updated by deltas). A fragment is the institution's own
integrations, which its envelopes are about: a snapshot fills the cache with what it brings
and a restart preloads it (in the background) from SQLite, so a fragment of up to
:data:`CACHE_SUBJECTS` subjects is checked from memory.
Everything else is small and kept in memory, updated after each commit, so
:func:`node.core.directory.decide` runs on it without I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from node.core.clock import Clock, SystemClock
from node.core.directory import (
    Authorization,
    DirectoryView,
    Entity,
    Institution,
    Integration,
    Replacement,
    Service,
    Subscription,
    current_numbers,
    key_of,
    kind_of,
    subjects_to_read,
)
from node.store.directory_store import decode_entity, encode_entity
from node.store.integrations import (
    COLUMNS,
    INTEGRATIONS_TABLE,
    SubjectCache,
    integration_of,
    integration_row,
    preload,
    read_integrations,
    write_integrations,
)
from node.store.records import RevisionGap
from node.store.sqlite import migrate_sync, transaction
from node.store.threaded import SQLiteThreads
from node.tasks import spawn

__all__ = ["FragmentStore", "RevisionGap"]

MIGRATIONS = [
    """
    CREATE TABLE frag_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE entities (kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
                           PRIMARY KEY (kind, key)) WITHOUT ROWID;
    """
    + INTEGRATIONS_TABLE
    + """
    INSERT INTO frag_meta VALUES ('revision', '0'), ('last_sync_us', '0'),
        ('hub_revision', '0'), ('recipient', '');
    """,
]

#: The kinds kept in memory (everything but integrations).
SMALL_KINDS = ("institution", "service", "authorization", "subscription", "replacement",
               "revoked_certificate")
KINDS = (*SMALL_KINDS, "integration")
#: Subjects whose integrations the node keeps decoded in memory (LRU).
CACHE_SUBJECTS = 200_000


def _runs(changes: Sequence[tuple[Entity, bool]]) -> list[tuple[str, bool, list[Entity]]]:
    """Consecutive changes of the same kind and operation, in order (a put then a delete of
    the same key must end deleted)."""
    runs: list[tuple[str, bool, list[Entity]]] = []
    for entity, deleted in changes:
        kind = kind_of(entity)
        if runs and runs[-1][0] == kind and runs[-1][1] == deleted:
            runs[-1][2].append(entity)
        else:
            runs.append((kind, deleted, [entity]))
    return runs


class FragmentStore:
    def __init__(self, path: Path, synchronous: str = "FULL",
                 clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()
        self._db = SQLiteThreads(path, synchronous, "fragment-store", loop_reads=True)
        self._warming: asyncio.Task[int] | None = None
        self._lock = asyncio.Lock()
        self.integration_cache: SubjectCache[tuple[Integration, ...]] = SubjectCache(CACHE_SUBJECTS)
        #: The revision the fragment is at (0 = nothing received yet).
        self.revision = 0
        #: When the last snapshot or delta was applied (microseconds since the epoch; 0 = never).
        self.last_sync_us = 0
        #: The highest revision the hub announced (to_revision of any verified update).
        self.hub_revision = 0
        #: The institution the fragment was received for ("" = none yet).
        self.recipient = ""
        #: The CA's CRL (DER) last received through the directory (None: none yet). The
        #: store keeps it; the caller verifies it (node/rpc/revocation.py).
        self.crl_der: bytes | None = None
        self._small: dict[str, dict[str, Entity]] = {k: {} for k in SMALL_KINDS}
        self._institutions: dict[str, Institution] = {}
        self._services: dict[tuple[str, int], Service] = {}
        self._authorizations: dict[str, list[Authorization]] = {}
        self._replaced: dict[str, str] = {}
        self._revoked: frozenset[int] = frozenset()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        meta, small = await self._db.open(_load)
        self.revision = int(meta.get("revision", 0))
        self.last_sync_us = int(meta.get("last_sync_us", 0))
        self.hub_revision = max(int(meta.get("hub_revision", 0)), self.revision)
        self.recipient = meta.get("recipient", "")
        self.crl_der = bytes.fromhex(meta["crl_der"]) if meta.get("crl_der") else None
        self._small = small
        self._rebuild(set(SMALL_KINDS))
        if self.revision:
            self._warming = spawn(preload(self._db, self.integration_cache),
                                  "fragment-cache-warm-up")

    async def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._warming
            self._warming = None
        await self._db.close()

    @property
    def lag(self) -> int:
        """How many revisions the fragment is behind the hub's last announced revision."""
        return max(0, self.hub_revision - self.revision)

    def note_hub_revision(self, revision: int) -> None:
        """Record a revision the hub announced without it being applied (e.g. a refused
        delta, or the first part of a snapshot): it only feeds :attr:`lag`."""
        self.hub_revision = max(self.hub_revision, revision)

    # -- applying ----------------------------------------------------------------------------

    async def apply_snapshot(self, revision: int, entities: Sequence[Entity],
                             recipient: str | None = None) -> None:
        """Replace the whole fragment with ``entities`` (all puts) at ``revision``."""
        async with self._lock:
            now_us = self.clock.now_us()
            hub_revision = max(self.hub_revision, revision)
            recipient = self.recipient if recipient is None else recipient
            small: dict[str, dict[str, Entity]] = {k: {} for k in SMALL_KINDS}
            integrations: list[tuple[object, ...]] = []
            for entity in entities:
                if isinstance(entity, Integration):
                    integrations.append(integration_row(entity))
                else:
                    small[kind_of(entity)][key_of(entity)] = entity
            def write() -> None:
                with transaction(self._db.writer) as w:
                    w.execute("DELETE FROM entities")
                    w.execute("DELETE FROM integrations")
                    w.executemany(
                        "INSERT INTO entities VALUES (?, ?, ?)",
                        [(kind, key, encode_entity(e))
                         for kind, table in small.items() for key, e in table.items()])
                    w.executemany("INSERT OR REPLACE INTO integrations VALUES (?,?,?,?,?,?)",
                                  integrations)
                    _write_meta(w, revision, now_us, hub_revision, recipient)

            def committed(_: None) -> None:
                self._small = small
                self._rebuild(set(SMALL_KINDS))
                self.integration_cache.clear()
                self._fill_cache(e for e in entities if isinstance(e, Integration))
                self._committed(revision, now_us, hub_revision, recipient)

            await self._db.write(write, then=committed)

    def _fill_cache(self, integrations: Iterable[Integration]) -> None:
        """The integrations of a snapshot just committed, by subject, as far as the cache
        holds (whole subjects only)."""
        by_subject: dict[str, list[Integration]] = {}
        room = self.integration_cache.max_subjects
        for integration in integrations:
            held = by_subject.get(integration.subject)
            if held is None:
                if len(by_subject) >= room:
                    continue
                held = by_subject[integration.subject] = []
            held.append(integration)
        self.integration_cache.fill(self.integration_cache.generation,
                                    {s: tuple(v) for s, v in by_subject.items()})

    async def apply_delta(self, from_revision: int, to_revision: int,
                          changes: Sequence[tuple[Entity, bool]]) -> None:
        """Apply ``changes`` (entity, delete) in order, moving from ``from_revision`` to
        ``to_revision``. Raises :class:`RevisionGap` (nothing applied) unless the fragment is
        at ``from_revision``, or ``ValueError`` if ``to_revision`` goes backwards."""
        async with self._lock:
            if from_revision != self.revision:
                raise RevisionGap(self.revision, from_revision, to_revision)
            if to_revision < from_revision:
                raise ValueError(f"delta goes backwards ({from_revision}->{to_revision})")
            now_us = self.clock.now_us()
            hub_revision = max(self.hub_revision, to_revision)
            runs = _runs(changes)
            recipient = self.recipient

            def write() -> None:
                with transaction(self._db.writer) as w:
                    for kind, deleted, group in runs:
                        _write_run(w, kind, deleted, group)
                    _write_meta(w, to_revision, now_us, hub_revision, recipient)

            def committed(_: None) -> None:
                touched: set[str] = set()
                for kind, deleted, group in runs:
                    if kind == "integration":
                        self.integration_cache.forget(
                            e.subject for e in group  # type: ignore[attr-defined]
                        )
                        continue
                    touched.add(kind)
                    table = self._small[kind]
                    for entity in group:
                        if deleted:
                            table.pop(key_of(entity), None)
                        else:
                            table[key_of(entity)] = entity
                self._rebuild(touched)
                self._committed(to_revision, now_us, hub_revision, recipient)

            await self._db.write(write, then=committed)

    async def save_crl(self, der: bytes) -> None:
        """Keep ``der`` (a CRL the caller verified) across restarts."""
        async with self._lock:
            await self._db.write(self._db.writer.execute,
                                 "INSERT OR REPLACE INTO frag_meta VALUES ('crl_der', ?)",
                                 (der.hex(),))
        self.crl_der = der

    def _committed(self, revision: int, now_us: int, hub_revision: int, recipient: str) -> None:
        self.revision = revision
        self.last_sync_us = now_us
        self.hub_revision = hub_revision
        self.recipient = recipient

    def _rebuild(self, kinds: set[str]) -> None:
        """Refresh the derived in-memory tables of the kinds that changed. New objects are
        built (never mutated in place) so a view handed out earlier stays consistent."""
        s = self._small
        if "institution" in kinds:
            self._institutions = {k: e for k, e in s["institution"].items()
                                  if isinstance(e, Institution)}
        if "service" in kinds:
            self._services = {(e.id, e.version): e for e in s["service"].values()
                              if isinstance(e, Service)}
        if "authorization" in kinds:
            by_service: dict[str, list[Authorization]] = {}
            for a in s["authorization"].values():
                if isinstance(a, Authorization):
                    by_service.setdefault(a.service_id, []).append(a)
            self._authorizations = by_service
        if "replacement" in kinds:
            self._replaced = {k: r.new_number for k, r in s["replacement"].items()
                              if isinstance(r, Replacement)}
        if "revoked_certificate" in kinds:
            self._revoked = frozenset(int(k, 16) for k in s["revoked_certificate"])

    # -- reading -----------------------------------------------------------------------------

    async def view_for(self, envelopes: Iterable[tuple[str, str, int]]) -> DirectoryView:
        """What deciding on envelopes given as ``(subject, service id, service version)``
        needs: like :meth:`view`, with the integrations only of the subjects whose service
        reads them (see :meth:`node.hub.directory.Directory.view_for`)."""
        view = DirectoryView(self._institutions, self._services, self._authorizations, {},
                             self._replaced)
        _, wanted = subjects_to_read(envelopes, view)
        if wanted:
            view.integrations = await read_integrations(
                self._db, current_numbers(wanted, self._replaced), self.integration_cache)
        return view

    async def view(self, subjects: Iterable[str]) -> DirectoryView:
        """What :func:`node.core.directory.decide` needs for a batch about ``subjects``: the
        small tables whole, the replacements and integrations of those subjects only."""
        wanted = current_numbers({s for s in subjects if s}, self._replaced)
        integrations = await read_integrations(self._db, wanted, self.integration_cache)
        replaced = {n: self._replaced[n] for n in wanted if n in self._replaced}
        return DirectoryView(self._institutions, self._services, self._authorizations,
                             integrations, replaced)

    async def integrations_of_institution(self, enterprise: str) -> list[Integration]:
        rows = await self._db.fetchall(
            f"SELECT {COLUMNS} FROM integrations WHERE institution = ?"
            " ORDER BY subject, capacity, begin_date", (enterprise,))
        return [integration_of(row) for row in rows]

    def revoked_serials(self) -> frozenset[int]:
        """Serial numbers of the certificates the directory revokes."""
        return self._revoked

    def institution(self, enterprise: str) -> Institution | None:
        return self._institutions.get(enterprise)

    def institutions(self) -> dict[str, Institution]:
        return self._institutions

    def subscriptions(self) -> list[Subscription]:
        table = self._small["subscription"]
        return [e for k in sorted(table) if isinstance(e := table[k], Subscription)]

    def entities(self, kind: str) -> list[Entity]:
        """The in-memory entities of one small kind, by key."""
        table = self._small[kind]
        return [table[k] for k in sorted(table)]

    async def counts(self) -> dict[str, int]:
        """Entities per kind (the integration count is one query)."""
        counts = {kind: len(self._small[kind]) for kind in SMALL_KINDS}
        rows = await self._db.fetchall("SELECT COUNT(*) FROM integrations")
        counts["integration"] = int(rows[0][0]) if rows else 0
        return counts


def _load(w: sqlite3.Connection) -> tuple[dict[str, str], dict[str, dict[str, Entity]]]:
    """At open (writer thread): migrate; the meta values and the small kinds' entities."""
    migrate_sync(w, MIGRATIONS)
    meta = dict(w.execute("SELECT key, value FROM frag_meta").fetchall())
    small: dict[str, dict[str, Entity]] = {k: {} for k in SMALL_KINDS}
    for kind, key, data in w.execute("SELECT kind, key, data FROM entities"):
        small[kind][key] = decode_entity(kind, data)
    return meta, small


def _write_run(w: sqlite3.Connection, kind: str, deleted: bool, group: list[Entity]) -> None:
    if kind == "integration":
        write_integrations(w, group, deleted)  # type: ignore[arg-type]
    elif deleted:
        w.executemany("DELETE FROM entities WHERE kind = ? AND key = ?",
                      [(kind, key_of(e)) for e in group])
    else:
        w.executemany("INSERT OR REPLACE INTO entities VALUES (?, ?, ?)",
                      [(kind, key_of(e), encode_entity(e)) for e in group])


def _write_meta(w: sqlite3.Connection, revision: int, now_us: int, hub_revision: int,
                recipient: str) -> None:
    w.executemany(
        "INSERT OR REPLACE INTO frag_meta VALUES (?, ?)",
        [("revision", str(revision)), ("last_sync_us", str(now_us)),
         ("hub_revision", str(hub_revision)), ("recipient", recipient)])
