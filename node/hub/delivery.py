"""Delivery from the hub to each destination node: in order, one batch in flight, durable.

One worker task per destination institution (the synapse federation-sender model):

* It reads the next envelopes for its destination from the queue (ascending ``seq``), sends
  them as one ``DeliveryBatch`` on a ``Node.Deliver`` stream to the node's registered endpoint,
  and waits for that batch's ack before sending the next: one batch in flight. The queue holds
  them already packed as delivery batches (:mod:`node.wire.delivery`): the message sent is
  those bytes joined.
* The node acks only after storing the batch; the worker then deletes the delivered rows and
  writes the ``DELIVERED`` audit records in one transaction (:meth:`HubStore.commit_delivery`).
  The remaining queue *is* the persisted cursor.
* Any failure (node down, no endpoint yet, timeout, wrong ack, the hub's own store failing)
  closes the stream and retries the same batch after an exponential backoff with jitter,
  capped (``Backoff.maximum``; the loop is :class:`node.rpc.reconnect.Reconnect`). The backoff
  starts over only after real progress: a batch acked by the node *and* committed here. A node
  registering again does not reset it.
  A crash between the node's commit and the hub's makes the hub resend that batch; the node
  drops envelopes whose hub ticket it already holds, so each envelope is applied once.
* While nothing is queued the worker sleeps on an event that the intake sets after a commit.
  Memory is bounded: at most one batch (``delivery_batch_*`` limits) per destination.
* **Connected** (``status()``, the ``crossroads_hub_delivery_connected`` metric) means: a
  ``Node.Deliver`` stream to the node's registered endpoint is open on a connection that is
  up (the channel READY: TLS done with that institution's certificate, and gRPC keepalive
  pings answered, else the connection goes down), and no batch has waited for its ack longer
  than ``liveness_bound_s`` (keepalive interval + timeout). While idle, the worker keeps that
  stream open (opening it when the connection is up; checking it every second while
  connecting, every 5 s otherwise), so a healthy idle node reads 1 and a frozen one 0.

The hub dials with the network CA as trust root and the destination's synthetic TLS name, so
a stream only ever opens to a server holding that institution's certificate.

**Delivery across replicas** (several hubs on one PostgreSQL; docs/ARCHITECTURE.md). A
worker runs only for a destination whose lease this replica holds
(:class:`~node.store.protocols.DeliveryLeases`; a SQLite store holds every destination):

* The lease task runs a round every :data:`LEASE_PERIOD_S`: heartbeat, renew what it holds
  to the database's ``now()`` + :data:`LEASE_TTL_S`, take the free or expired leases of the
  nodes registered at it, and others up to its fair share (node/store/postgres/leases.py,
  "Affinity"). A destination it no longer holds loses its worker at once; one registered
  at another live replica, or a surplus beyond the fair share, is handed over by its worker
  after the batch in flight is committed.
* A worker sends a batch only while ``clock.monotonic()`` is before the round's start +
  TTL - :data:`LEASE_MARGIN_S` (the database set the expiry later than that start); past it,
  it waits for the next successful round. Its ``commit_delivery`` carries the lease's
  fencing token; :class:`~node.store.records.LeaseLost` (another replica took the
  destination over) ends the worker at once, nothing written, no retry against the fence.
* **Takeover bound.** A replica that dies renewed its leases at most :data:`LEASE_TTL_S`
  before they expire; the survivors' next round, at most :data:`LEASE_PERIOD_S` later (plus
  the round's own duration), takes them: :data:`TAKEOVER_BOUND_S` (7 s) from death to a
  new owner, then the new owner connects and resends from the committed queue head.
* **Order across a takeover.** Each batch starts at the queue head (everything before it was
  acknowledged by the node), the node stores a batch in one transaction and drops tickets it
  holds, so an old owner's late batch and the new owner's batches interleave as prefixes of
  the same sequence: the first arrival of each envelope lands in order.
* **Wake across replicas.** A batch's commit rings the store's doorbell (``pg_notify``)
  with its destinations; :meth:`Deliverer.queued` wakes the owner's worker wherever the
  batch arrived; after the listener reconnects every worker looks again (:meth:`missed`),
  and an idle worker polls its queue every 5 s anyway. Endpoints registered at any replica
  come with each round (read from the database), for deliveries and consultations.
* **Drain** (:meth:`Deliverer.stop`, on SIGTERM after the server's grace): the in-flight
  batches' commits land, then every lease is released (the others take them at once, woken
  by the release's notification) and this replica stops counting as live.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import structlog

from node.config import Keepalive, Limits, Timeouts
from node.core.audit import AuditRecord, delivered
from node.core.clock import Clock
from node.core.errors import CrossroadsError
from node.rpc.edge import describe
from node.rpc.reconnect import Reconnect
from node.rpc.server_certs import ServerRevoked, verify_server
from node.rpc.tls import InstitutionDialer, TlsMaterial
from node.store.protocols import DeliveryQueue
from node.store.records import HeldLeases, LeaseLost, QueuedBatch
from node.tasks import cancel_and_wait, consume, spawn, wait_event
from node.wire.delivery import delivery_message, first_ticket_us, tickets_of
from node.wire.gen.crossroads.v1 import node_pb2

__all__ = ["Deliverer"]

log = structlog.get_logger(__name__)

#: Between attempts of a destination while the hub's database is damaged (store.damaged).
DAMAGED_RETRY_S = 30.0
#: A batch waiting longer than this for its ack makes the destination count as not connected:
#: gRPC keepalive's interval + timeout (node/rpc/tls.py), the bound a live peer answers in.
LIVENESS_BOUND_S = 40.0
DELIVER_METHOD = "/crossroads.v1.Node/Deliver"
#: A lease lasts this long after its last renewal (on the database's clock).
LEASE_TTL_S = 5.0
#: Between lease rounds (heartbeat, renew, take a fair share).
LEASE_PERIOD_S = 1.0
#: A worker stops sending this long before the database would let its lease expire.
LEASE_MARGIN_S = 1.5
#: From a replica's death to its destinations' new owner, at most (see the module's docstring).
TAKEOVER_BOUND_S = LEASE_TTL_S + 2 * LEASE_PERIOD_S


class DeliveryError(Exception):
    """A delivery attempt that failed at the node's end; ``cause`` names it (bounded, for the
    ``crossroads_hub_delivery_failures_total`` metric)."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


def failure_cause(exc: BaseException) -> str:
    """A failed attempt's cause, from a small fixed set: the gRPC status of a failed call
    (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ...), the delivery's own (``NO_ACK``,
    ``STREAM_CLOSED``, ``WRONG_ACK``, ``SERVER_REVOKED``), the hub's (``NOT_STORED``: its store
    failed), else ``OTHER``."""
    if isinstance(exc, DeliveryError):
        return exc.cause
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    if isinstance(exc, CrossroadsError):
        return exc.reason.value
    return "OTHER"


def _ignore_delivered(queue_wait_s: float, round_trip_s: float) -> None:
    """No metrics endpoint: nothing observed."""


@dataclass(slots=True)
class _Destination:
    institution: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    channel: grpc.aio.Channel | None = None
    call: grpc.aio.StreamStreamCall | None = None
    cursor: int = 0
    delivered: int = 0
    connected: bool = False
    reconnect: bool = False
    prefetch: asyncio.Future[QueuedBatch | None] | None = None
    commit: asyncio.Future[None] | None = None
    retry: Reconnect = field(default_factory=lambda: Reconnect("delivery_failed"))
    #: ``clock.monotonic()`` when the batch in flight was sent (``None``: none in flight).
    waiting_since: float | None = None
    #: Unix microseconds when the first envelope of the batch at the queue head was accepted
    #: (its ticket's time; ``None``: nothing queued, as far as this worker knows).
    oldest_us: int | None = None
    #: The stream whose server certificate was checked against the revoked serials.
    verified_call: grpc.aio.StreamStreamCall | None = None
    #: The fencing token of this destination's lease (0 where a store owns every one).
    token: int = 0
    #: Hand the lease over after the batch in flight (a surplus beyond the fair share).
    releasing: bool = False
    #: The worker is over (lease lost or handed over): it is not started again.
    ended: bool = False


class Deliverer:
    def __init__(
        self,
        store: DeliveryQueue,
        tls: TlsMaterial,
        network: str,
        limits: Limits,
        endpoints: dict[str, str],
        pending: dict[str, int],
        clock: Clock,
        keepalive: Keepalive | None = None,
        revoked: Callable[[], frozenset[int]] | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        """``revoked``: the serials the CA revoked (CRL and directory); a node endpoint that
        presents one of them gets no envelope (:func:`node.rpc.server_certs.verify_server`).
        ``timeouts.ack_s``: how long a batch in flight may wait for its ack."""
        self.store = store
        self.revoked = revoked
        self.dialer = InstitutionDialer(tls, network, keepalive or Keepalive())
        self.limits = limits
        self.endpoints = endpoints
        self.pending = pending
        self.clock = clock
        self._destinations: dict[str, _Destination] = {}
        self._stopping = False
        self.ack_timeout_s = (timeouts or Timeouts()).ack_s
        self.liveness_bound_s = LIVENESS_BOUND_S
        self.lease_ttl_s, self.lease_period_s = LEASE_TTL_S, LEASE_PERIOD_S
        self.lease_margin_s = LEASE_MARGIN_S
        #: What the last lease round left this replica holding, and until when (monotonic).
        self.leases = HeldLeases()
        self._leases_until = -math.inf
        self._known: set[str] = set()
        #: Leases this replica's workers gave up (lost or handed over), by token: a round
        #: that read the table before the release does not start them again.
        self._given_up: dict[str, int] = {}
        self._round_now = asyncio.Event()
        self._lease_task: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        #: Failed delivery attempts by cause (:func:`failure_cause`).
        self.failures: Counter[str] = Counter()
        #: Called once per delivered batch with (how long its oldest envelope waited at the
        #: hub until the batch was sent, the batch's round trip to the node's ack), seconds.
        self.on_delivered: Callable[[float, float], None] = _ignore_delivered

    def start(self, institutions: list[str]) -> None:
        """Start the lease task (its first round starts the workers) and the doorbell."""
        self._known.update(institutions)
        self._lease_task = spawn(self._hold_leases(), "delivery-leases")
        self._listen_task = spawn(self.store.listen(self), "delivery-doorbell")

    def wake(self, institution: str) -> None:
        dest = self._owned(institution)
        if dest is not None:
            dest.wake.set()

    def set_endpoint(self, institution: str, endpoint: str) -> None:
        changed = self.endpoints.get(institution) != endpoint
        self.endpoints[institution] = endpoint
        dest = self._owned(institution)
        if dest is None:  # another replica's (it reads the endpoint from the database)
            return
        if changed:
            dest.reconnect = True  # the worker reconnects before its next batch
        # The backoff is left alone: a node that registers again is not progress (a node
        # whose store fails registers again after each failure), only a committed batch is.
        dest.wake.set()

    # -- the store's doorbell (QueueDoorbell) -------------------------------------------------

    def queued(self, dest: str) -> None:
        self.wake(dest)

    def missed(self) -> None:
        for dest in list(self._destinations.values()):
            dest.wake.set()

    def leases_freed(self) -> None:
        self._round_now.set()

    def revocations_changed(self) -> None:
        """A new CRL or revoked certificate: every destination reconnects, and its server
        certificate is checked again before its next batch."""
        for dest in self._destinations.values():
            dest.reconnect = True
            dest.wake.set()

    def status(self) -> dict[str, dict[str, object]]:
        now = self.clock.monotonic()
        return {
            name: {
                "pending": self.pending.get(name, 0),
                "delivered": d.delivered,
                "connected": self._connected(d, now),
                "oldest_us": d.oldest_us,
                "endpoint": self.endpoints.get(name),
            }
            # list() takes the items in one step: safe from another thread (a metrics scrape)
            # while the event loop adds a destination.
            for name, d in list(self._destinations.items())
        }

    def _connected(self, dest: _Destination, now: float) -> bool:
        """The stream is up and answering (see the module's docstring); plain reads, so a
        metrics scrape may call it from its own thread."""
        waiting = dest.waiting_since
        return dest.connected and (waiting is None or now - waiting <= self.liveness_bound_s)

    async def stop(self) -> None:
        """The drain: workers stop, the in-flight batches' commits land, then the leases
        are handed over at once (not at their expiry) and this replica leaves the tier."""
        self._stopping = True
        await cancel_and_wait(self._lease_task, self._listen_task)
        await cancel_and_wait(*(d.task for d in self._destinations.values()))
        for dest in self._destinations.values():
            if dest.commit is not None:  # let acknowledged bookkeeping land
                with contextlib.suppress(Exception):
                    await dest.commit
            if dest.prefetch is not None:
                dest.prefetch.cancel()
                consume(dest.prefetch)  # it may have failed already: nobody will look
            await self._close(dest)
        if self.leases.every:
            return
        held = {name: dest.token for name, dest in self._destinations.items()}
        try:  # bounded: past the TTL they have expired anyway
            async with asyncio.timeout(self.lease_ttl_s):
                await self.store.release_leases(held, leaving=True)
        except Exception as exc:  # noqa: BLE001 - they expire instead (LEASE_TTL_S)
            log.warning("delivery_leases_not_released", error=describe(exc),
                        destinations=len(held))
        else:
            log.info("delivery_leases_released", destinations=len(held))

    # -- leases ------------------------------------------------------------------------------

    def _owned(self, institution: str) -> _Destination | None:
        """The destination's worker if this replica delivers to it (started on demand where
        the store holds every destination)."""
        if self.leases.every and not self._stopping:
            return self._ensure(institution, 0)
        return self._destinations.get(institution)

    def _lease_valid(self) -> bool:
        return self.clock.monotonic() < self._leases_until

    async def _hold_leases(self) -> None:
        """Lease rounds until stopped (see the module's docstring); a failed round leaves
        the leases to run out (the workers stop sending at their deadline)."""
        failing = False
        while True:
            started = self.clock.monotonic()
            try:
                async with asyncio.timeout(self.lease_ttl_s):
                    held = await self.store.renew_leases(self.lease_ttl_s)
            except Exception as exc:  # noqa: BLE001 - try again next round, say so once
                if not failing:
                    log.warning("delivery_leases_failed", error=describe(exc))
                failing = True
            else:
                if failing:
                    log.info("delivery_leases_renewed", held=len(held.tokens))
                failing = False
                self._apply(held, started)
            self._round_now.clear()
            await _wait(self._round_now, self.lease_period_s)

    def _apply(self, held: HeldLeases, started: float) -> None:
        lapsed = not self._lease_valid()
        first_of_all, self.leases = not self.leases.every, held
        if held.every:  # from now on a worker starts on demand (_owned)
            self._leases_until = math.inf
            if first_of_all:
                for name in self._known | set(self.pending) | set(self.endpoints):
                    self._ensure(name, 0)
            return
        self._leases_until = started + self.lease_ttl_s - self.lease_margin_s
        # Stored and delivered at any replica: the quota (node/hub/intake.py) counts it all,
        # up to a round's worth of this replica's own traffic (corrected at the next round).
        self.pending.update(held.queued)
        self._given_up = {n: t for n, t in self._given_up.items() if held.tokens.get(n) == t}
        for name, dest in list(self._destinations.items()):
            if held.tokens.get(name) != dest.token:
                log.info("delivery_lease_lost", destination=name, token=dest.token)
                self._end(dest)
        for name, endpoint in held.endpoints.items():
            if self.endpoints.get(name) != endpoint:  # registered at another replica
                self.endpoints[name] = endpoint  # (consultations dial these too)
                if name in self._destinations:
                    self._destinations[name].reconnect = True
        for name, token in held.tokens.items():
            if self._given_up.get(name) == token:
                continue
            if name not in self._destinations:
                log.info("delivery_lease_taken", destination=name, token=token)
                self._ensure(name, token)
            elif lapsed:
                self._destinations[name].wake.set()  # sending again
        self._hand_over(held)

    def _hand_over(self, held: HeldLeases) -> None:
        """Mark for release after their batch in flight: the ``foreign`` destinations (their
        nodes' replica delivers to them), and ``surplus`` of the ``movable`` ones (idle ones
        first)."""
        held_now = list(self._destinations.values())
        foreign = [d for d in held_now if d.institution in held.foreign and not d.releasing]
        movable = [d for d in held_now if d.institution in held.movable]
        surplus = held.surplus - sum(d.releasing for d in movable)
        idle_first = sorted((d for d in movable if not d.releasing),
                            key=lambda d: (self.pending.get(d.institution, 0), d.institution))
        for dest in foreign + idle_first[:max(0, surplus)]:
            dest.releasing = True
            dest.wake.set()

    async def _release(self, dest: _Destination) -> None:
        """The worker's last step when its lease is handed over: its last commit lands,
        then the lease is freed."""
        if dest.commit is not None:
            previous, dest.commit = dest.commit, None
            await previous
        await self.store.release_leases({dest.institution: dest.token})
        log.info("delivery_lease_released", destination=dest.institution, token=dest.token)
        self._end(dest)

    def _end(self, dest: _Destination) -> None:
        """This replica no longer delivers to ``dest``: its worker ends (now, even mid-batch:
        the fence refuses a late commit), its stream and channel close."""
        dest.ended = True
        if self._destinations.get(dest.institution) is dest:
            del self._destinations[dest.institution]
            self._given_up[dest.institution] = dest.token
        if dest.task is not None and dest.task is not asyncio.current_task():
            dest.task.cancel()

    # -- per destination -------------------------------------------------------------------

    def _ensure(self, institution: str, token: int) -> _Destination:
        dest = self._destinations.get(institution)
        if dest is None:
            dest = _Destination(institution, token=token)
            self._destinations[institution] = dest
            self._spawn(dest)
        return dest

    def _spawn(self, dest: _Destination) -> None:
        # A context of its own: started during a call, it does not log as that call's caller.
        dest.task = asyncio.create_task(self._run(dest), name=f"deliver-{dest.institution}",
                                        context=contextvars.Context())
        dest.task.add_done_callback(lambda task, d=dest: self._worker_ended(d, task))

    def _worker_ended(self, dest: _Destination, task: asyncio.Task[None]) -> None:
        """A worker only ends on stop or with its lease; if anything else ended it, say so
        and start anew."""
        if self._stopping or dest.ended or task.cancelled():
            return
        log.error("delivery_worker_died", destination=dest.institution,
                  error=describe(task.exception() or RuntimeError("returned")))
        self._spawn(dest)

    async def _read(self, dest: _Destination, after: int) -> QueuedBatch | None:
        return await self.store.read_queue(
            dest.institution, after, self.limits.delivery_batch_envelopes,
            self.limits.delivery_batch_bytes,
        )

    async def _run(self, dest: _Destination) -> None:
        try:
            await dest.retry.run(lambda: self._step(dest),
                                 lambda exc: self._retry_later(dest, exc),
                                 running=lambda: not (self._stopping or dest.ended))
        finally:
            if dest.ended:  # its lease is gone: nothing of it stays open
                if dest.prefetch is not None:
                    dest.prefetch.cancel()
                    consume(dest.prefetch)  # it may have failed already: nobody will look
                await self._close(dest)

    async def _step(self, dest: _Destination) -> None:
        """Deliver the next batch, or wait for one (keeping the stream open meanwhile)."""
        if dest.releasing:
            await self._release(dest)
            return
        if not self._lease_valid():  # wait for a round to renew it (or to say it is lost)
            dest.wake.clear()
            await _wait(dest.wake, self.lease_period_s)
            return
        if dest.prefetch is not None:
            batch = await dest.prefetch
            dest.prefetch = None
        else:
            batch = await self._read(dest, dest.cursor)
        if batch is None:
            dest.wake.clear()
            # Re-check after clearing: a commit may have landed in between.
            batch = await self.store.read_queue(
                dest.institution, dest.cursor, 1, self.limits.delivery_batch_bytes
            )
            if batch is None:
                dest.oldest_us = None
                if dest.releasing:  # flagged while the queue was read: not left to sleep
                    return
                connecting = await self._keep_open(dest)
                await _wait(dest.wake, 1.0 if connecting else 5.0)
            return
        dest.oldest_us = first_ticket_us(batch.packed[0])  # one row of the batch parsed
        if dest.institution not in self.endpoints:
            dest.wake.clear()
            await _wait(dest.wake, 5.0)
            return
        await self._deliver(dest, batch)

    async def _retry_later(self, dest: _Destination, exc: BaseException) -> None:
        self.failures[failure_cause(exc)] += 1
        # Start over from what the store holds: a batch whose bookkeeping failed is still
        # queued there and goes again (the node drops what it already has).
        for task in (dest.prefetch, dest.commit):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        dest.prefetch = dest.commit = None
        dest.cursor = 0
        if self.store.damaged:
            # The file is damaged (logged once, at error, by the store): nothing a retry can
            # fix; try again now and then, quietly, rather than ~20 times a second.
            await self._close(dest)
            await asyncio.sleep(DAMAGED_RETRY_S)
            return
        await self._close(dest)
        await dest.retry.back_off(exc, destination=dest.institution,
                                  endpoint=self.endpoints.get(dest.institution))

    async def _keep_open(self, dest: _Destination) -> bool:
        """Idle: keep a stream open to the node while its connection is up, and say whether
        it is (``dest.connected``). Connecting is left to the channel (gRPC's own reconnect
        backoff): nothing is logged for a node that is away. True while connecting (look
        again in a second; otherwise in 5 s)."""
        if dest.institution not in self.endpoints:
            dest.connected = False
            return False
        if dest.reconnect:
            dest.reconnect = False
            await self._close(dest)
        if dest.channel is None:
            self._open_channel(dest)
        assert dest.channel is not None
        state = dest.channel.get_state(try_to_connect=True)
        ready = state is grpc.ChannelConnectivity.READY
        if ready and (dest.call is None or dest.call.done()):
            self._open_call(dest, idle=True)
        dest.connected = ready and dest.call is not None and not dest.call.done()
        return state in (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING)

    async def _deliver(self, dest: _Destination, batch: QueuedBatch) -> None:
        """Send one batch and wait for its ack (the only batch in flight). Meanwhile the next
        batch is read from the queue and the previous batch's bookkeeping is committed."""
        call = await self._stream(dest)
        if dest.verified_call is not call:
            await self._verify_server(dest)
            dest.verified_call = call
        if not self._lease_valid():  # ran out meanwhile: sent after the next renewal
            dest.prefetch = asyncio.get_running_loop().create_future()
            dest.prefetch.set_result(batch)
            return
        last = batch.last_seq
        message = delivery_message(batch.packed, last)
        try:
            # Bounded like a broken stream: a node that takes the stream and then neither
            # reads (the write waits on flow control) nor answers is retried, not waited on.
            async with asyncio.timeout(self.ack_timeout_s):
                sent_us = self.clock.now_us()
                dest.waiting_since = sent = self.clock.monotonic()
                await call.write(message)
                dest.prefetch = asyncio.ensure_future(self._read(dest, last))
                ack = await call.read()
                dest.waiting_since = None
        except TimeoutError:
            raise DeliveryError(f"no ack for the batch up to {last} in {self.ack_timeout_s:g} s",
                                "NO_ACK") from None
        round_trip = self.clock.monotonic() - sent
        tickets = tickets_of(message)
        if ack is grpc.aio.EOF:
            raise DeliveryError("node closed the delivery stream", "STREAM_CLOSED")
        if ack.last_sequence != last:
            raise DeliveryError(f"ack for {ack.last_sequence}, expected {last}", "WRONG_ACK")
        dest.connected = True  # the node answered on this stream
        if dest.oldest_us is not None:
            self.on_delivered((sent_us - dest.oldest_us) / 1e6, round_trip)
        now, institution = str(self.clock.now_us()), dest.institution
        audit = [delivered(now, ticket, institution) for ticket in tickets]
        if ack.duplicates:
            log.info("delivery_duplicates", destination=dest.institution, count=ack.duplicates)
        if dest.commit is not None:  # bookkeeping stays in batch order
            previous, dest.commit = dest.commit, None
            await previous
        dest.commit = asyncio.ensure_future(self._commit(dest, last, len(audit), audit))
        dest.cursor = last

    async def _verify_server(self, dest: _Destination) -> None:
        """The hub as a client refuses a revoked certificate too: the node's endpoint must
        not present one before a batch is written on a new stream."""
        if self.revoked is None or dest.channel is None:
            return
        try:
            await verify_server(dest.channel, self.endpoints[dest.institution], self.revoked(),
                                self.ack_timeout_s)
        except ServerRevoked as exc:
            raise DeliveryError(str(exc), "SERVER_REVOKED") from None

    async def _commit(
        self, dest: _Destination, last: int, count: int, audit: list[AuditRecord]
    ) -> None:
        try:
            await self.store.commit_delivery(dest.institution, last, count, audit, dest.token)
        except LeaseLost:  # another replica delivers to it now: stop here, no retry
            log.warning("delivery_lease_fenced", destination=dest.institution,
                        token=dest.token, upto=last)
            self._end(dest)
            return
        dest.retry.backoff.reset()  # real progress: a batch acked by the node and committed here
        dest.delivered += count
        self.pending[dest.institution] = max(0, self.pending.get(dest.institution, 0) - count)

    async def _stream(self, dest: _Destination) -> grpc.aio.StreamStreamCall:
        if dest.reconnect:
            dest.reconnect = False
            await self._close(dest)
        if dest.call is not None and dest.call.done():  # ended while idle (the node stopped)
            self._drop_stream(dest)
        if dest.call is not None:
            return dest.call
        if dest.channel is None:
            self._open_channel(dest)
        return self._open_call(dest)

    def _open_channel(self, dest: _Destination) -> None:
        # A batch may take one envelope (a payload) over its bound.
        dest.channel = self.dialer.channel(
            dest.institution, self.endpoints[dest.institution],
            self.limits.delivery_batch_bytes + self.limits.max_payload_bytes)

    def _open_call(self, dest: _Destination, idle: bool = False) -> grpc.aio.StreamStreamCall:
        assert dest.channel is not None
        if dest.call is not None:
            self._drop_stream(dest)
        # The batches are sent as the bytes the queue holds (node.wire.delivery): no serializer.
        dest.call = dest.channel.stream_stream(
            DELIVER_METHOD, request_serializer=None,
            response_deserializer=node_pb2.DeliveryAck.FromString)()
        # Opened while idle: at most one per 5 s per destination (a node that ends each
        # stream at once, e.g. refusing the hub, is retried at that pace), at debug.
        (log.debug if idle else log.info)(
            "delivery_stream_open", destination=dest.institution,
            endpoint=self.endpoints.get(dest.institution))
        return dest.call

    def _drop_stream(self, dest: _Destination) -> None:
        if dest.call is not None:
            dest.call.cancel()
        dest.call = None

    async def _close(self, dest: _Destination) -> None:
        self._drop_stream(dest)
        dest.connected = False
        dest.waiting_since = None
        if dest.channel is not None:
            channel, dest.channel = dest.channel, None
            await channel.close()


async def _wait(event: asyncio.Event, timeout: float) -> None:
    await wait_event(event, timeout)
