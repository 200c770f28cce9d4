"""The hub's reference directory: the master store, the in-memory small tables, the per-batch
decisions, and the signed fragments streamed to nodes.

* Small tables (institutions, services, authorizations, subscriptions, revoked serials) are
  held in memory and rebuilt after every change; integrations and replaced numbers stay in
  SQLite and are fetched per batch, for the batch's distinct subjects only, through an LRU
  cache of the most recently asked subjects (:mod:`node.store.integrations`), which a
  background task preloads after start (in subject order, until full).
* Every change goes through :meth:`Directory.apply` (validated, one revision each, one
  transaction), then wakes the watchers.
* Changes made through other hub replicas (a PostgreSQL store several replicas share) come
  from the store (:meth:`DirectoryLog.follow`, after its caches took them in) to
  :meth:`Directory._followed`, which does what :meth:`Directory.apply` does after its commit:
  small tables, ``on_change`` callbacks, watchers. When the store had to start over (the
  changes it missed were compacted away), the callbacks get every small-table entity as a
  put at the current revision ("this is so now"): what they do with a put is idempotent.
* :meth:`Directory.watch` yields the signed updates for one institution: a snapshot (in parts of
  at most ``SNAPSHOT_PART`` entities) when it starts from 0 or from before the compacted
  revision, else deltas, then new deltas as changes land. Each delta says which revision it
  starts from, so a node detects any gap. Deltas go up to the store's :attr:`revision` (what
  this process took in: in commit order, so no revision below it is still to come); a
  snapshot may be ahead of it, and the stream then waits for the store to catch up. A node
  ahead of this process (it came from another replica) makes the store catch up first; a
  compaction found after reading deltas (made by another replica) means a snapshot instead.
  Every replica signs with the same directory key (``directory_key``, deployed to each), so
  the signed updates verify whichever replica served them.
* The network CA's CRL the hub loaded (:meth:`Directory.publish_crl`) rides the same signed
  stream: at the start of every stream (at the node's revision) and whenever it changes, an
  empty delta (``from_revision == to_revision``) carries it in ``crl`` (DER). The node verifies the CA's
  signature on it itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.core.clock import Clock, SystemClock
from node.core.directory import (
    Authorization,
    DirectoryView,
    Entity,
    Institution,
    Integration,
    RevokedCertificate,
    Service,
    Subscription,
    current_numbers,
    fragment_owners,
    owner_of,
    problem_of,
    subjects_to_read,
)
from node.core.errors import InvalidArgument
from node.core.reasons import CallReason
from node.store.protocols import DirectoryLog
from node.store.records import LoggedChange
from node.tasks import spawn
from node.wire.directory import change_to_proto
from node.wire.gen.crossroads.v1 import directory_pb2 as pb
from node.wire.signed import sign_update

__all__ = ["INTEGRATION_SERVICE", "Directory"]

log = structlog.get_logger(__name__)

#: Authorizations on this service id say in which capacities an institution may integrate.
INTEGRATION_SERVICE = "directory.integration"
SNAPSHOT_PART = 20_000
DELTA_LIMIT = 5_000


@dataclass(slots=True)
class _Tables:
    institutions: dict[str, Institution] = field(default_factory=dict)
    services: dict[tuple[str, int], Service] = field(default_factory=dict)
    authorizations: dict[str, list[Authorization]] = field(default_factory=dict)
    subscriptions: list[Subscription] = field(default_factory=list)
    subscriptions_by_service: dict[str, list[Subscription]] = field(default_factory=dict)
    revoked: frozenset[int] = frozenset()


class Directory:
    def __init__(self, store: DirectoryLog, signing_key: Ed25519PrivateKey,
                 preload: bool = True, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.preload = preload
        self.signing_key = signing_key
        self.tables = _Tables()
        self.changed = asyncio.Condition()
        self.on_change: list = []  # callbacks(list[LoggedChange]) run after each apply
        self._warming: asyncio.Task[None] | None = None
        #: The CA-signed CRL (DER) the hub publishes to nodes (None: none loaded).
        self.crl: bytes | None = None
        self._crl_notice: asyncio.Task[None] | None = None
        store.follow(self._followed)

    def publish_crl(self, der: bytes) -> None:
        """Send ``der`` (a CRL the hub verified) to every watching node."""
        self.crl = der
        with contextlib.suppress(RuntimeError):  # no running loop: watchers start later
            self._crl_notice = asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def open(self) -> None:
        await self.store.open()
        await self._reload()
        if self.preload:
            self._warming = spawn(self._warm(), "directory-cache-warm-up")

    async def _warm(self) -> None:
        started = self.clock.monotonic()
        loaded = await self.store.warm_cache()
        log.info("directory_cache_warm", subjects=loaded,
                 seconds=round(self.clock.monotonic() - started, 2))

    async def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._warming
        await self.store.close()

    @property
    def revision(self) -> int:
        return self.store.revision

    async def _reload(self) -> list[Entity]:
        """The small tables from the store; returns their entities."""
        tables = _Tables()
        revoked: set[int] = set()
        entities = await self.store.small_tables()
        for entity in entities:
            if isinstance(entity, Institution):
                tables.institutions[entity.enterprise_number] = entity
            elif isinstance(entity, Service):
                tables.services[(entity.id, entity.version)] = entity
            elif isinstance(entity, Authorization):
                tables.authorizations.setdefault(entity.service_id, []).append(entity)
            elif isinstance(entity, Subscription):
                tables.subscriptions.append(entity)
                tables.subscriptions_by_service.setdefault(entity.service_id, []).append(entity)
            elif isinstance(entity, RevokedCertificate):
                revoked.add(int(entity.serial, 16))
        tables.revoked = frozenset(revoked)
        self.tables = tables
        return entities

    # -- changes ---------------------------------------------------------------------------

    async def apply(self, changes: Sequence[tuple[Entity, bool]]) -> int:
        """Validate and apply; the revision of the last change (nothing to apply: the
        current one). Raises InvalidArgument naming the first bad change."""
        for index, (entity, deleted) in enumerate(changes):
            problem = None if deleted else problem_of(entity)
            if problem is not None:
                raise InvalidArgument(f"change {index}: {problem}", CallReason.INVALID_ENTRY,
                                      {"change": str(index)})
        logged = await self.store.apply(changes)
        await self._taken(logged)
        return logged[-1].revision if logged else self.store.revision

    async def _taken(self, logged: list[LoggedChange]) -> None:
        """After the commit of ``logged`` (here or through another replica)."""
        if any(not isinstance(c.entity, Integration) for c in logged):
            await self._reload()
        for callback in self.on_change:
            callback(logged)
        async with self.changed:
            self.changed.notify_all()

    async def _followed(self, changes: list[LoggedChange], resynced: bool) -> None:
        """The store took in what another replica committed (see the module's doc)."""
        if resynced:
            revision = self.store.revision
            changes = [LoggedChange(revision, owner_of(e), e, False) for e in await self._reload()]
        await self._taken(changes)

    # -- decisions -------------------------------------------------------------------------

    async def view_for(self, envelopes: Iterable[tuple[str, str, int]]) -> DirectoryView:
        """What deciding on envelopes given as ``(subject, service id, service version)``
        needs: the small tables, the replacements of every subject, and the integrations of
        the subjects whose service reads them only (:attr:`Service.reads_integrations`: a
        batch for a fixed or explicit service without integration checks reads none)."""
        t = self.tables
        view = DirectoryView(t.institutions, t.services, t.authorizations, {}, {},
                             t.subscriptions_by_service)
        subjects, wanted = subjects_to_read(envelopes, view)
        if subjects:
            view.replaced = await self.store.replacements_of(subjects)
        if wanted:  # the integrations are read under the current number
            view.integrations = await self.store.integrations_of(
                current_numbers(wanted, view.replaced))
        return view

    def revoked_serials(self) -> frozenset[int]:
        return self.tables.revoked

    def institution(self, enterprise: str) -> Institution | None:
        return self.tables.institutions.get(enterprise)

    def may_integrate(self, institution: str, capacity: int, day: date) -> bool:
        inst = self.tables.institutions.get(institution)
        if inst is None or not inst.active:
            return False
        return any(
            a.applies_to(inst) and (not a.capacities or capacity in a.capacities)
            and a.period.contains(day)
            for a in self.tables.authorizations.get(INTEGRATION_SERVICE, ())
        )

    # -- replication -----------------------------------------------------------------------

    async def watch(self, institution: Institution, start: int) -> AsyncIterator[pb.SignedDirectoryUpdate]:
        """Signed updates for ``institution`` from ``start``, forever."""
        owners = fragment_owners(institution)
        recipient = institution.enterprise_number
        current = start
        if start > self.store.revision:  # perhaps seen through another replica
            await self.store.catch_up()
        if start == 0 or start < self.store.compacted_revision or start > self.store.revision:
            current, entities = await self.store.snapshot(owners)
            for update in self._snapshot_parts(recipient, current, entities):
                yield update
        sent_crl: bytes | None = None
        while True:
            if self.crl is not None and self.crl is not sent_crl:
                sent_crl = self.crl
                yield self._signed(pb.DirectoryUpdate(
                    kind=pb.DirectoryUpdate.KIND_DELTA, recipient=recipient,
                    from_revision=current, to_revision=current, crl=sent_crl,
                    produced_at_unix_us=self.clock.now_us(), last_part=True,
                ))
            async with self.changed:
                upto = self.store.revision
                if upto <= current:  # below: a snapshot ahead of what the store took in
                    if self.crl is sent_crl:
                        await self.changed.wait()
                    continue
            if current < self.store.compacted_revision:
                current, entities = await self.store.snapshot(owners)
                for update in self._snapshot_parts(recipient, current, entities):
                    yield update
                continue
            changes = await self.store.changes_since(owners, current, upto, DELTA_LIMIT)
            if current < self.store.compacted_revision:
                continue  # compacted meanwhile (another replica): a snapshot, above
            to = upto if len(changes) < DELTA_LIMIT else changes[-1].revision
            yield self._signed(pb.DirectoryUpdate(
                kind=pb.DirectoryUpdate.KIND_DELTA, recipient=recipient, from_revision=current,
                to_revision=to, changes=[_proto(c) for c in changes],
                produced_at_unix_us=self.clock.now_us(), last_part=True,
            ))
            current = to

    def _snapshot_parts(
        self, recipient: str, revision: int, entities: list[Entity]
    ) -> Iterable[pb.SignedDirectoryUpdate]:
        parts = max(1, -(-len(entities) // SNAPSHOT_PART))
        for part in range(parts):
            chunk = entities[part * SNAPSHOT_PART:(part + 1) * SNAPSHOT_PART]
            yield self._signed(pb.DirectoryUpdate(
                kind=pb.DirectoryUpdate.KIND_SNAPSHOT, recipient=recipient, from_revision=0,
                to_revision=revision, changes=[change_to_proto(e) for e in chunk],
                produced_at_unix_us=self.clock.now_us(), part=part,
                last_part=part == parts - 1,
            ))

    def _signed(self, update: pb.DirectoryUpdate) -> pb.SignedDirectoryUpdate:
        return sign_update(update, self.signing_key)


def _proto(change: LoggedChange) -> pb.DirectoryChange:
    return change_to_proto(change.entity, change.deleted, change.revision)
