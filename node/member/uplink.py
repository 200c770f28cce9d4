"""The node's uplink to the hub: the outbox, sent in order, with several batches in flight.

Per connection: ``Register`` the delivery endpoint, open ``Hub.Submit``, then run two loops
on the one stream: the *writer* reads undecided envelopes after the last one sent (at most
``window`` batches unacknowledged, which bounds memory at both ends) and the *reader* applies
each ``BatchAck`` to the outbox (the ack as received + decided watermark, in one
transaction). Acks come back in batch order, so the watermark only moves forward.

A hub that takes batches and does not answer (a stream stuck at the other end, which no
keepalive notices) counts as a failure too: when the oldest batch in flight has waited
``[timeouts] ack_s`` for its ack, the *watchdog* ends the stream.

On any failure the stream is dropped and, after an exponential backoff (capped at
``Backoff.maximum``, reset only after real progress: an ack received *and stored*, or a
session that lasted ``HEALTHY_AFTER_S``; a successful ``Register`` is not; the loop is
:class:`node.rpc.reconnect.Reconnect`), a new one starts
from the watermark: batches that were sent but not acknowledged are sent again, with the
same origin and sequences, and the hub answers those it had already stored with their
original outcomes. The outbox keeps accepting local submissions meanwhile.

Giving up (no envelope is retried for ever). Two cases are decided by the node itself, with
an outcome stored like the hub's (so ``Local.Outcomes`` reads it, and it is never sent again):

* **Over the node's bounds**: an envelope already in the outbox that breaks the receiver
  bound (e.g. queued by an older version without it) is refused before it is sent, with the
  hub's reason (``TOO_MANY_RECEIVERS``, ``DUPLICATE_RECEIVER``). Only envelopes large enough
  to hold more receivers than the bound are decoded for this; the hub checks all of them.
* **The hub cannot take it** (``UNDELIVERABLE``): a stream that fails twice in a row with the
  same oldest batch sent and unanswered (once is a hub restart or a network blip) puts the
  uplink in *isolation*: up to the last envelope that was in flight, it sends one envelope per
  batch and waits for its answer before the next. An envelope that
  ends the stream on its own :data:`GIVE_UP_AFTER` times in a row (the hub was reachable:
  ``Register`` answered) is given up. A resend of an envelope the hub had stored is answered
  from its idempotency record (cheap), so one that fails every time was not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections import deque
from collections.abc import Callable

import grpc
import structlog
from google.protobuf.message import DecodeError

from node.config import NodeConfig
from node.core.clock import Clock
from node.core.envelope import Decision, receivers_problem
from node.core.reasons import Reason
from node.core.refusals import RefusalKey, RefusalSummary
from node.member.continuity import HubContinuity
from node.member.hub_stream import HubStream
from node.rpc.edge import describe, really_cancelled
from node.rpc.hub_choice import HubChoice
from node.rpc.reconnect import Reconnect
from node.rpc.refusal_flood import REFUSAL_INTERVAL_S, TimedRefusals
from node.rpc.server_certs import ServerCheck
from node.rpc.tls import TlsMaterial
from node.store.protocols import Outbox
from node.wire.envelopes import decode, reason_to_proto
from node.wire.gen.crossroads.v1 import envelope_pb2, hub_pb2, hub_pb2_grpc

__all__ = ["Uplink"]

log = structlog.get_logger(__name__)

#: Consecutive failed streams with the same oldest batch unanswered before isolation.
ISOLATE_AFTER = 2
#: Times an envelope sent on its own may end the stream unanswered before it is given up.
GIVE_UP_AFTER = 3
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


def _ignore(seconds: float) -> None:
    """No metrics endpoint: nothing observed."""


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


class Uplink(HubStream):
    task_name = "uplink"

    def __init__(self, config: NodeConfig, tls: TlsMaterial, store: Outbox, endpoint: str,
                 continuity: HubContinuity | None = None,
                 server_check: ServerCheck | None = None, clock: Clock | None = None,
                 hubs: HubChoice | None = None) -> None:
        """``config.limits.submit_batch_*``: the batches' sizes (within the hub's bounds);
        ``config.timeouts.ack_s``: the watchdog's bound; ``clock``: the daemon's; ``hubs``:
        the node's shared hub choice (default: one of its own over ``config.hubs``)."""
        super().__init__(config, tls, hubs, Reconnect("uplink_failed"))
        #: Checks the hub's state at each Register; the outbox is not sent while it found a
        #: hub that lost state (node.member.continuity).
        self.continuity = continuity
        #: Refuses a hub whose certificate the CA revoked (node/rpc/server_certs.py): checked
        #: after Register, before any envelope is sent, then every second of the session.
        self.server_check = server_check
        self.store = store
        self.endpoint = endpoint
        self.sent_batches = 0
        self.failures = 0  # sessions that failed (each followed by a backoff)
        self.decided = asyncio.Event()
        limits = config.limits
        self._batch_envelopes = min(limits.submit_batch_envelopes, limits.max_batch_envelopes)
        self._batch_bytes = min(limits.submit_batch_bytes, limits.max_batch_bytes // 2)
        self.ack_timeout_s = config.timeouts.ack_s
        #: Envelopes decided here: over the node's bounds, or given up (see module doc).
        self.decided_locally = 0
        #: While the watermark is below this: one envelope per batch (isolation).
        self._isolate_until = 0
        #: (sequence, failures) of the envelope sent alone that ended the stream.
        self._strikes = (0, 0)
        #: (first sequence, failures) of the oldest batch unanswered when streams failed.
        self._repeats = (0, 0)
        self._last_error = ""
        #: Set each time an ack is stored (the writer waits for answers in isolation).
        self._acked = asyncio.Event()
        self._max_receivers = config.limits.max_receivers
        #: Envelopes up to this size cannot list more receivers than the bound (each entry
        #: takes at least two bytes) and are left to the hub's checks.
        self._cheap_size = 2 * self._max_receivers
        #: Refused envelopes' log lines, aggregated per reason.
        self.refusal_logs = TimedRefusals(_log_refused_repeated, clock=clock)
        #: Called once per acknowledged batch: seconds from its sending to the hub's ack.
        self.on_ack: Callable[[float], None] = _ignore

    async def _connection(self) -> None:
        """One session on a new channel to the hub."""
        await self._give_up_if_hopeless()
        channel = self._open_channel(self.config.limits.max_batch_bytes)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self._session(channel)
        finally:
            self.connected = False
            if loop.time() - started >= HEALTHY_AFTER_S:
                # A session that lasted is progress (an idle node has no acks).
                self._reconnect.backoff.reset()
            await channel.close()

    async def _failed(self, exc: BaseException, *, logged: bool = False) -> None:
        self.failures += 1
        await super()._failed(exc, logged=logged)

    async def _session(self, channel: grpc.aio.Channel) -> None:
        stub = hub_pb2_grpc.HubStub(channel)
        registered = await stub.Register(
            hub_pb2.RegisterRequest(endpoint=self.endpoint, origin=self.store.origin),
            timeout=10, wait_for_ready=False
        )
        if self.server_check is not None:
            self.server_check.check(fresh=True)
        log.info("uplink_registered", hub=self.address, institution=registered.institution,
                 waiting_at_hub=registered.pending,
                 hub_acknowledged_sequence=registered.acknowledged_sequence)
        if self.continuity is not None:
            await self.continuity.check(registered)  # raises HubStateRegressed: no submit
        call = channel.stream_stream(
            _SUBMIT, request_serializer=envelope_pb2.EnvelopeBatch.SerializeToString)()
        self.connected = True
        inflight: deque[tuple[int, int, float]] = deque()
        window = asyncio.Semaphore(self.config.submit_window)
        tasks = (asyncio.create_task(self._writer(call, inflight, window)),
                 asyncio.create_task(self._reader(call, inflight, window)),
                 asyncio.create_task(self._watchdog(inflight)),
                 asyncio.create_task(self._server_watch()))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
            raise UplinkError("submit stream ended")
        except BaseException as exc:
            if not really_cancelled():
                self._note_failure(inflight, exc)
            raise
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            call.cancel()

    async def _server_watch(self) -> None:
        """End the session once the hub's certificate is revoked (a CRL that arrived later)."""
        while self.server_check is not None:
            await asyncio.sleep(1.0)
            self.server_check.check()
        await asyncio.Event().wait()

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
            if self.refusal_logs.note(RefusalKey(self.address, "Hub.Submit", reason),
                                      detail, count):
                log.warning("envelopes_refused_by_hub", hub=self.address, reason=reason,
                            count=count, detail=detail)

    async def _watchdog(self, inflight: deque[tuple[int, int, float]]) -> None:
        """Fail the session when the oldest batch in flight has waited too long for its ack."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ack_timeout_s / 4)
            if inflight and loop.time() - inflight[0][2] > self.ack_timeout_s:
                raise UplinkError(f"no ack for the batch from sequence {inflight[0][0]}"
                                  f" in {self.ack_timeout_s:g} s")

    def _note_failure(self, inflight: deque[tuple[int, int, float]], exc: BaseException) -> None:
        """After a failed stream: isolate what was sent and left unanswered, or count a strike
        against the one envelope that was (see module doc)."""
        if not inflight:
            return  # nothing was waiting for an answer: no envelope to blame
        first, last = inflight[0][0], inflight[-1][1]
        self._last_error = describe(exc)
        if first == last and first <= self._isolate_until:
            seq, failures = self._strikes
            self._strikes = (first, failures + 1 if seq == first else 1)
            log.warning("uplink_envelope_failed_alone", seq=first, failures=self._strikes[1],
                        give_up_after=GIVE_UP_AFTER, error=self._last_error)
            return
        seq, failures = self._repeats
        self._repeats = (first, failures + 1 if seq == first else 1)
        if self._repeats[1] >= ISOLATE_AFTER:
            self._isolate_until = max(self._isolate_until, last)
            log.warning("uplink_isolating", first=first, last=last, error=self._last_error)

    async def _give_up_if_hopeless(self) -> None:
        seq, failures = self._strikes
        if failures < GIVE_UP_AFTER or seq != self.store.decided_seq + 1:
            return
        self._strikes = (0, 0)
        await self._decide_locally(seq, Decision(
            Reason.UNDELIVERABLE,
            f"the hub ended the stream each of the last {failures} times this envelope was"
            f" sent on its own ({self._last_error}); the node gave up on it"))

    async def _decide_locally(self, seq: int, decision: Decision) -> None:
        """Store an outcome for ``seq`` (the next to be decided) as if the hub had sent it."""
        ack = envelope_pb2.BatchAck(first_sequence=seq, outcomes=[envelope_pb2.EnvelopeOutcome(
            index=0, reason=reason_to_proto(decision.reason), detail=decision.detail)])
        await self.store.record_ack(seq, seq, ack.SerializeToString(), [seq], from_hub=False)
        self.decided_locally += 1
        log.error("uplink_decided_locally", seq=seq, reason=decision.reason.value,
                  detail=decision.detail)
        self._acked.set()
        self.decided.set()

    def _refusal(self, raw: bytes) -> Decision | None:
        """The node's own bound on an envelope already in the outbox (see module doc)."""
        if len(raw) <= self._cheap_size:
            return None
        try:
            receivers = decode(raw).receivers
        except DecodeError:
            return None  # the hub answers MALFORMED_ENVELOPE
        return receivers_problem(receivers, self._max_receivers)

    async def _answered(self, upto: int) -> None:
        """Wait until every envelope up to ``upto`` has its outcome stored."""
        while self.store.decided_seq < upto:
            self._acked.clear()
            await self._acked.wait()

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
            limit = self._batch_envelopes
            if after < self._isolate_until:  # one at a time, each answered before the next
                limit = 1
                await self._answered(after)
            changed.clear()
            rows = await self.store.pending(after, limit, self._batch_bytes)
            while not rows:
                await changed.wait()
                changed.clear()
                rows = await self.store.pending(after, limit, self._batch_bytes)
            refused = next(((i, d) for i, d in enumerate(map(self._refusal, map(_envelope_of,
                                                                                    rows)))
                            if d is not None), None)
            if refused is not None:
                index, decision = refused
                if index == 0:  # decided here, in sequence order: after all before it
                    await self._answered(after)
                    await self._decide_locally(rows[0][0], decision)
                    after = rows[0][0]
                    window.release()
                    continue
                del rows[index:]
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
            first, last, sent = inflight.popleft()
            self.on_ack(asyncio.get_running_loop().time() - sent)
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
            if self._strikes[0] and last >= self._strikes[0]:
                self._strikes = (0, 0)  # the envelope that failed alone went through
            self._acked.set()
            # Real progress (an ack received and stored): only now does the backoff start
            # over. A successful Register or an open stream is not progress: a node whose
            # store fails would otherwise reconnect every few milliseconds.
            self._reconnect.backoff.reset()
            self.decided.set()
