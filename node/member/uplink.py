"""The node's uplink to the hub: the outbox, sent in order, with several batches in flight.

Per connection: ``Register`` the delivery endpoint, open ``Hub.Submit``, then run two loops
on the one stream: the *writer* reads undecided envelopes after the last one sent (at most
``window`` batches unacknowledged, which bounds memory at both ends) and the *reader* applies
each ``BatchAck`` to the outbox (the ack as received + decided watermark, in one
transaction). Acks come back in batch order, so the watermark only moves forward.

A hub that takes batches and does not answer (a stream stuck at the other end, which no
keepalive notices) counts as a failure too: when the oldest batch in flight has waited
``ACK_TIMEOUT_S`` for its ack, the *watchdog* ends the stream.

On any failure the stream is dropped and, after an exponential backoff (capped at
``Backoff.maximum``, reset only after real progress: an ack received *and stored*, or a
session that lasted ``HEALTHY_AFTER_S``; a successful ``Register`` is not), a new one starts
from the watermark: batches that were sent but not acknowledged are sent again, with the
same origin and sequences, and the hub answers those it had already stored with their
original outcomes. The outbox keeps accepting local submissions meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections import deque

import grpc
import structlog

from node.config import NodeConfig
from node.core.backoff import Backoff
from node.core.refusals import RefusalKey, RefusalSummary
from node.rpc.edge import describe, really_cancelled
from node.rpc.refusal_flood import REFUSAL_INTERVAL_S, TimedRefusals
from node.rpc.tls import TlsMaterial, channel_options, hub_tls_name
from node.store.node_store import NodeStore
from node.tasks import cancel_and_wait, spawn
from node.wire.gen.crossroads.v1 import envelope_pb2, hub_pb2, hub_pb2_grpc

__all__ = ["Uplink"]

log = structlog.get_logger(__name__)

BATCH_ENVELOPES = 1_000
BATCH_BYTES = 8 * 1024 * 1024
#: How long the oldest batch in flight may wait for its ack before the stream is given up.
ACK_TIMEOUT_S = 60.0
#: A session that lasted this long counts as progress too (an idle node has no acks).
HEALTHY_AFTER_S = 10.0


#: Outcomes of envelopes the hub stored (the others count as refused).
_STORED = frozenset({envelope_pb2.ACCEPTED, envelope_pb2.DUPLICATE})
#: ``Hub.Submit`` answering with the acks' bytes as received: the outbox stores them as they
#: are (:meth:`NodeStore.record_ack`), so the uplink parses each once, to check it.
_SUBMIT = "/crossroads.v1.Hub/Submit"
_envelope_of = operator.itemgetter(1)  # of an outbox row (seq, envelope)


class UplinkError(Exception):
    pass


def _reason_name(number: int) -> str:
    try:
        return envelope_pb2.Reason.Name(number)
    except ValueError:
        return str(number)


def _log_refused_repeated(summaries: list[RefusalSummary]) -> None:
    for s in summaries:
        log.warning("envelopes_refused_by_hub_repeated", hub=s.key.peer, reason=s.key.reason,
                    count=s.count, first_us=s.first_us, last_us=s.last_us, detail=s.detail,
                    interval_s=REFUSAL_INTERVAL_S)


class Uplink:
    def __init__(self, config: NodeConfig, tls: TlsMaterial, store: NodeStore, endpoint: str) -> None:
        self.config = config
        self.tls = tls
        self.store = store
        self.endpoint = endpoint
        self.connected = False
        self.sent_batches = 0
        self.failures = 0  # sessions that failed (each followed by a backoff)
        self.decided = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff()
        self._batch_envelopes = min(BATCH_ENVELOPES, config.limits.max_batch_envelopes)
        self._batch_bytes = min(BATCH_BYTES, config.limits.max_batch_bytes // 2)
        self.ack_timeout_s = ACK_TIMEOUT_S
        #: Refused envelopes' log lines, aggregated per reason.
        self.refusal_logs = TimedRefusals(_log_refused_repeated)

    def start(self) -> None:
        self._task = spawn(self._run(), "uplink")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        tls_name = self.config.hub_tls_name or hub_tls_name(self.config.network)
        max_bytes = self.config.limits.max_batch_bytes + (1 << 20)
        loop = asyncio.get_running_loop()
        while True:
            channel = grpc.aio.secure_channel(
                self.config.hub,
                self.tls.channel_credentials(),
                options=channel_options(tls_name, max_bytes),
            )
            started = loop.time()
            try:
                await self._session(channel)
            except asyncio.CancelledError as exc:
                if really_cancelled():
                    raise
                # grpc.aio raises it for a cancelled call
                await self._failed(channel, exc, loop.time() - started)
                continue
            except Exception as exc:  # noqa: BLE001 - any failure: back off, reconnect
                await self._failed(channel, exc, loop.time() - started)
                continue
            finally:
                self.connected = False
            await channel.close()

    async def _failed(self, channel: grpc.aio.Channel, exc: BaseException,
                      lasted_s: float) -> None:
        self.failures += 1
        if lasted_s >= HEALTHY_AFTER_S:
            self._backoff.reset()  # a session that lasted is progress (an idle node has no acks)
        delay = self._backoff.next_delay()
        log.warning("uplink_failed", hub=self.config.hub, error=describe(exc),
                    retry_in_s=round(delay, 3))
        self.connected = False
        await channel.close()
        await asyncio.sleep(delay)

    async def _session(self, channel: grpc.aio.Channel) -> None:
        stub = hub_pb2_grpc.HubStub(channel)
        registered = await stub.Register(
            hub_pb2.RegisterRequest(endpoint=self.endpoint), timeout=10, wait_for_ready=False
        )
        log.info("uplink_registered", institution=registered.institution,
                 waiting_at_hub=registered.pending)
        call = channel.stream_stream(
            _SUBMIT, request_serializer=envelope_pb2.EnvelopeBatch.SerializeToString)()
        self.connected = True
        inflight: deque[tuple[int, int, float]] = deque()
        window = asyncio.Semaphore(self.config.submit_window)
        tasks = (asyncio.create_task(self._writer(call, inflight, window)),
                 asyncio.create_task(self._reader(call, inflight, window)),
                 asyncio.create_task(self._watchdog(inflight)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
            raise UplinkError("submit stream ended")
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            call.cancel()

    def _log_refused(self, ack: envelope_pb2.BatchAck) -> None:
        """Envelopes the hub refused (QUOTA_EXCEEDED, NOT_AUTHORIZED, ...): the application
        reads each outcome; the log says so once per reason and interval, with counts."""
        by_reason: dict[str, tuple[int, str]] = {}
        for o in ack.outcomes:
            if o.reason not in _STORED:
                name = _reason_name(o.reason)
                seen = by_reason.get(name)
                by_reason[name] = (seen[0] + 1, seen[1]) if seen else (1, o.detail)
        for reason, (count, detail) in by_reason.items():
            if self.refusal_logs.note(RefusalKey(self.config.hub, "Hub.Submit", reason),
                                      detail, count):
                log.warning("envelopes_refused_by_hub", hub=self.config.hub, reason=reason,
                            count=count, detail=detail)

    async def _watchdog(self, inflight: deque[tuple[int, int, float]]) -> None:
        """Fail the session when the oldest batch in flight has waited too long for its ack."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ack_timeout_s / 4)
            if inflight and loop.time() - inflight[0][2] > self.ack_timeout_s:
                raise UplinkError(f"no ack for the batch from sequence {inflight[0][0]}"
                                  f" in {self.ack_timeout_s:g} s")

    async def _writer(
        self,
        call: grpc.aio.StreamStreamCall,
        inflight: deque[tuple[int, int, float]],
        window: asyncio.Semaphore,
    ) -> None:
        loop = asyncio.get_running_loop()
        after = self.store.decided_seq
        changed = self.store.outbox_changed
        while True:
            await window.acquire()
            changed.clear()
            rows = await self.store.pending(after, self._batch_envelopes, self._batch_bytes)
            while not rows:
                await changed.wait()
                changed.clear()
                rows = await self.store.pending(after, self._batch_envelopes, self._batch_bytes)
            first, last = rows[0][0], rows[-1][0]
            if last - first + 1 != len(rows):
                raise UplinkError(f"outbox sequences {first}..{last} are not contiguous")
            inflight.append((first, last, loop.time()))
            await call.write(
                envelope_pb2.EnvelopeBatch(
                    origin=self.store.origin, first_sequence=first, envelopes=list(map(_envelope_of, rows))
                )
            )
            self.sent_batches += 1
            after = last

    async def _reader(
        self,
        call: grpc.aio.StreamStreamCall,
        inflight: deque[tuple[int, int, float]],
        window: asyncio.Semaphore,
    ) -> None:
        while True:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                raise UplinkError("hub closed the submit stream")
            ack = envelope_pb2.BatchAck.FromString(raw)
            if not inflight or inflight[0][0] != ack.first_sequence:
                raise UplinkError(f"unexpected ack for sequence {ack.first_sequence}")
            first, last, _ = inflight.popleft()
            if len(ack.outcomes) != last - first + 1:
                raise UplinkError(f"ack for {first} has {len(ack.outcomes)} outcomes")
            stored = _STORED
            refused = [first + o.index for o in ack.outcomes if o.reason not in stored]
            if refused:
                self._log_refused(ack)
            # The hub has answered: the next batch may go while the ack is stored (acks are
            # stored in order, by this loop).
            window.release()
            await self.store.record_ack(first, last, raw, refused)
            # Real progress (an ack received and stored): only now does the backoff start
            # over. A successful Register or an open stream is not progress: a node whose
            # store fails would otherwise reconnect every few milliseconds.
            self._backoff.reset()
            self.decided.set()
