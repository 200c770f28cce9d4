"""The node's side of directory replication: watch the hub, verify, apply to the fragment.

One ``Hub.WatchDirectory`` stream from the fragment's revision. Every update is checked
before anything is applied, in this order:

1. the hub's Ed25519 signature over the exact bytes (:func:`node.wire.signed.verify_update`);
2. the recipient is this institution;
3. a snapshot arrives as parts 0, 1, ... (same ``to_revision``), staged until the part with
   ``last_part``, then applied in one transaction;
4. a delta starts at the fragment's revision exactly (otherwise :class:`RevisionGap`);
5. a ``crl`` an update carries must be signed by the network CA (checked here, with the
   node's own CA certificate, not only the hub's directory signature); it replaces the CRL in
   force unless older (:class:`node.rpc.revocation.RevocationList`) and is kept in the
   fragment store, so a restarted node refuses the same serials before it reconnects.

A refusal is logged (``directory_update_refused``), counted in :attr:`FragmentWatcher.refused`,
and drops the stream; after a backoff the watcher reconnects from the fragment's revision, and
after two refusals in a row from 0, which makes the hub send a snapshot. Any other failure
(hub unreachable, stream closed) reconnects from the fragment's revision after a backoff
(``directory_watch_failed``; the loop is :class:`node.rpc.reconnect.Reconnect`).
Meanwhile the node keeps working from the fragment it has.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date

import grpc
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from node.config import NodeConfig
from node.core.backoff import Backoff
from node.core.clock import Clock, SystemClock
from node.core.directory import DirectoryView, Entity, decide, request_of
from node.core.envelope import Decision, EnvelopeHead
from node.core.reasons import Reason
from node.member.hub_stream import HubStream
from node.rpc.hub_choice import HubChoice
from node.rpc.reconnect import Reconnect
from node.rpc.revocation import RevocationList
from node.rpc.tls import TlsMaterial
from node.store.protocols import FragmentReplica
from node.store.records import RevisionGap
from node.wire.directory import change_from_proto
from node.wire.gen.crossroads.v1 import directory_pb2 as pb
from node.wire.gen.crossroads.v1 import hub_pb2_grpc
from node.wire.signed import SignatureError, key_id, verify_update
from pki.ca import PkiError

__all__ = ["FragmentWatcher", "UpdateRefused", "check_with_fragment"]

log = structlog.get_logger(__name__)

#: Refusals in a row after which the watcher asks for a snapshot (start_revision 0).
RESYNC_AFTER = 2
#: A directory stream up this long counts as progress (the backoff starts over).
HEALTHY_AFTER_S = 10.0
MAX_UPDATE_BYTES = 256 * 1024 * 1024


class UpdateRefused(Exception):
    """An update from the hub that must not be applied (the reason is the message)."""


class FragmentWatcher(HubStream):
    task_name = "fragment-watcher"

    def __init__(self, config: NodeConfig, tls: TlsMaterial, store: FragmentReplica,
                 hub_key: Ed25519PublicKey, backoff: Backoff | None = None,
                 revocations: RevocationList | None = None,
                 hubs: HubChoice | None = None, clock: Clock | None = None) -> None:
        super().__init__(config, tls, hubs,
                         Reconnect("directory_watch_failed", backoff or Backoff()))
        self.clock = clock or SystemClock()
        #: ``clock.monotonic()`` when the last stream went down (None: never up; readiness,
        #: node/probes.py: the fragment was current until then).
        self.disconnected_at: float | None = None
        #: Unix seconds when the fragment was last known current: an update applied, or
        #: the stream going down (0.0: never; the metric reads now while the stream is up).
        self.current_at = 0.0
        self.revocations = revocations
        self.store = store
        self.hub_key = hub_key
        self.hub_key_id = key_id(hub_key)
        #: Updates refused since start (bad signature, wrong recipient, gap, ...).
        self.refused = 0
        #: Set after each applied snapshot or delta (callers clear it).
        self.changed = asyncio.Event()
        #: Snapshots and deltas applied since start.
        self.snapshots = 0
        self.deltas = 0
        self._refusals_in_a_row = 0

    async def stop(self) -> None:
        await super().stop()
        self._down()

    def start_revision(self) -> int:
        """Where the next stream starts: 0 (snapshot) after repeated refusals or when the
        fragment was received for another institution, else the fragment's revision."""
        if self._refusals_in_a_row >= RESYNC_AFTER:
            return 0
        if self.store.recipient and self.store.recipient != self.config.enterprise_number:
            return 0
        return self.store.revision

    async def _connection(self) -> None:
        """One watch stream on a new channel to the hub; it only ends by failing."""
        channel = self._open_channel(MAX_UPDATE_BYTES)
        try:
            await self._session(channel)
        except UpdateRefused as exc:
            self._refused(str(exc))
            raise
        finally:
            self._down()
            await channel.close()
        raise ConnectionError("hub closed the directory stream")

    def _down(self) -> None:
        if self.connected:
            self.current_at = self.clock.now_us() / 1e6
            self.connected = False
            self.disconnected_at = self.clock.monotonic()

    async def _failed(self, exc: BaseException, *, logged: bool = False) -> None:
        # A refusal was logged as such (directory_update_refused).
        await super()._failed(exc, logged=logged or isinstance(exc, UpdateRefused))

    def _refused(self, reason: str) -> None:
        self.refused += 1
        self._refusals_in_a_row += 1
        log.warning("directory_update_refused", reason=reason, revision=self.store.revision,
                    refused=self.refused,
                    resync=self._refusals_in_a_row >= RESYNC_AFTER)

    async def _session(self, channel: grpc.aio.Channel) -> None:
        start = self.start_revision()
        call = hub_pb2_grpc.HubStub(channel).WatchDirectory(
            pb.WatchRequest(start_revision=start))
        log.debug("directory_watch_started", hub=self.address, start_revision=start)
        connected = asyncio.create_task(self._when_connected(call))
        snapshot: _Snapshot | None = None
        try:
            async for signed in call:
                self.connected = True
                update = self._verified(signed)
                if update.crl:
                    await self._adopt_crl(update.crl)
                    if (not update.changes and update.kind == pb.DirectoryUpdate.KIND_DELTA
                            and update.from_revision == update.to_revision
                            == self.store.revision):
                        continue  # only the CRL: nothing to apply, no write
                if update.kind == pb.DirectoryUpdate.KIND_SNAPSHOT:
                    if snapshot is None:
                        snapshot = _Snapshot(update.to_revision)
                    snapshot.add(update)
                    if update.last_part:
                        await self._apply_snapshot(snapshot)
                        snapshot = None
                elif update.kind == pb.DirectoryUpdate.KIND_DELTA:
                    if snapshot is not None:
                        raise UpdateRefused("delta received in the middle of a snapshot")
                    await self._apply_delta(update)
                else:
                    raise UpdateRefused(f"update kind {update.kind} unknown")
        finally:
            connected.cancel()
            call.cancel()

    async def _when_connected(self, call: grpc.aio.UnaryStreamCall) -> None:
        """The stream is up once the hub's response headers arrive (the hub sends them at once
        even when it has nothing to send yet), or with the first update.

        The backoff starts over after real progress only: an update applied
        (:meth:`_applied`), or the stream still up ``HEALTHY_AFTER_S`` after it opened. Headers
        alone are not progress: a node whose fragment store fails would reconnect at once,
        be sent the same update and fail again, every few milliseconds."""
        with contextlib.suppress(Exception):
            await call.initial_metadata()
            if not call.done():
                self.connected = True
                await asyncio.sleep(HEALTHY_AFTER_S)
                if not call.done() and self._refusals_in_a_row == 0:
                    self._reconnect.backoff.reset()  # a healthy hub; refusals keep backing off

    def _verified(self, signed: pb.SignedDirectoryUpdate) -> pb.DirectoryUpdate:
        try:
            update = verify_update(signed, self.hub_key)
        except SignatureError as exc:
            detail = "" if signed.key_id == self.hub_key_id else (
                f" (signed by key {signed.key_id!r}, expected {self.hub_key_id})")
            raise UpdateRefused(f"{exc}{detail}") from None
        except DecodeError as exc:
            raise UpdateRefused(f"signed update is not a DirectoryUpdate: {exc}") from None
        if update.recipient != self.config.enterprise_number:
            raise UpdateRefused(f"update is for {update.recipient!r},"
                                f" not {self.config.enterprise_number}")
        self.store.note_hub_revision(update.to_revision)
        return update

    async def _adopt_crl(self, der: bytes) -> None:
        if self.revocations is None:
            return
        try:
            adopted = self.revocations.adopt_bytes(der, "directory")
        except PkiError as exc:
            raise UpdateRefused(f"CRL_NOT_SIGNED_BY_CA: {exc}") from None
        if adopted and der != self.store.crl_der:
            await self.store.save_crl(der)

    async def _apply_snapshot(self, snapshot: _Snapshot) -> None:
        before = self.store.revision
        await self.store.apply_snapshot(snapshot.revision, snapshot.entities,
                                        recipient=self.config.enterprise_number)
        if snapshot.revision < before:
            log.warning("directory_revision_went_back", before=before, revision=snapshot.revision)
        log.info("directory_synced", kind="snapshot", revision=snapshot.revision,
                 entities=len(snapshot.entities), parts=snapshot.parts)
        self.snapshots += 1
        self._applied()

    async def _apply_delta(self, update: pb.DirectoryUpdate) -> None:
        changes = [_change(c) for c in update.changes]
        try:
            await self.store.apply_delta(update.from_revision, update.to_revision, changes)
        except RevisionGap as exc:
            raise UpdateRefused(f"revision gap: {exc}") from None
        except ValueError as exc:
            raise UpdateRefused(str(exc)) from None
        log.debug("directory_synced", kind="delta", revision=update.to_revision,
                  changes=len(changes))
        self.deltas += 1
        self._applied()

    def _applied(self) -> None:
        self.current_at = self.clock.now_us() / 1e6
        self._refusals_in_a_row = 0
        self._reconnect.backoff.reset()
        self.changed.set()


class _Snapshot:
    """Parts of one snapshot, staged until the last one."""

    def __init__(self, revision: int) -> None:
        self.revision = revision
        self.parts = 0
        self.entities: list[Entity] = []

    def add(self, update: pb.DirectoryUpdate) -> None:
        if update.part != self.parts:
            raise UpdateRefused(f"snapshot part {update.part} received, expected {self.parts}")
        if update.to_revision != self.revision:
            raise UpdateRefused(f"snapshot part {update.part} is at revision {update.to_revision},"
                                f" not {self.revision}")
        for change in update.changes:
            entity, deleted = _change(change)
            if deleted:
                raise UpdateRefused("a snapshot contains a delete")
            self.entities.append(entity)
        self.parts += 1


def _change(change: pb.DirectoryChange) -> tuple[Entity, bool]:
    try:
        return change_from_proto(change)
    except ValueError as exc:
        raise UpdateRefused(f"change at revision {change.revision}: {exc}") from None


def check_with_fragment(head: EnvelopeHead, sender: str, view: DirectoryView,
                        today: date) -> Decision:
    """The hub's directory rules (:func:`node.core.directory.decide`) applied at the source,
    to an envelope that passed :func:`node.core.envelope.check_envelope`.

    A node's fragment holds every institution, service and replaced number but only its own
    authorizations and integrations, so it cannot compute fan-out receivers: for a
    ``fan_out`` service or a mutation (pushed to subscribers) a missing receiver is left for the
    hub to decide (accepted here).
    Callers skip this check while the fragment is empty (``store.revision == 0``).
    """
    request = request_of(head)
    if isinstance(request, Decision):
        return request
    decision, _ = decide(head, request, sender, view, today)
    if decision.reason is Reason.NO_RECEIVER:
        service = view.service(head.service_id, head.service_version)
        if service is not None and (service.routing == "fan_out" or service.kind == "mutation"):
            return Decision(Reason.ACCEPTED, "receivers are decided by the hub")
    return decision
