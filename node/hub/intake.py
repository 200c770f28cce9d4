"""The hub's intake: one submitted batch in, one durable acknowledgement out.

For a batch from an authenticated institution:

1. **Resends.** Envelopes whose (origin, sequence) the hub already stored get their original
   outcome back (from ``recent_acks``) or ``DUPLICATE``; they are not stored again.
2. **Decode and check**, per batch: malformed bytes become ``MALFORMED_ENVELOPE``; the rest go
   through :func:`node.core.envelope.check_batch` and the per-receiver quota.
3. **Stamp** each accepted envelope with a fresh hub ticket (a time-ordered UUIDv7) and the
   reception time.
4. **Commit** the queue rows (per receiver, its envelopes packed as delivery batches:
   :mod:`node.wire.delivery`), audit records (one per envelope, accepted or refused) and the
   idempotency record in one transaction; only then build the ack.
5. **Wake** the delivery workers of the receivers.

A bad envelope only ever affects its own outcome; an exception escaping here (storage
failure) fails the stream, and the node resends the unacknowledged batch later.

**The quota and pipelining.** The hub prepares a stream's next batches while the previous
one commits, and several streams run at once, so the count of committed envelopes
(``pending``) is behind what prepared batches will add. Each prepared batch therefore
*reserves* what it accepts (``Intake.reserved``) and is checked against committed plus
reserved: a receiver's queue never passes ``destination_quota`` because of concurrent
batches. A reservation ends when its commit ends (moved to ``pending`` if stored, dropped if
not) or with :meth:`PreparedBatch.release` (the hub's ``Submit`` releases every batch it
prepared when the stream ends, including those whose commit never started). One slack
remains, outside the quota check: a commit whose wait was cancelled while the writer thread
went on and stored the batch is not counted in ``pending`` until the hub restarts (at most
one batch, ``max_batch_envelopes``, per such cancelled stream).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import cast

import structlog

from node.config import Limits
from node.core.audit import AuditRecord, rejected
from node.core.audit import accepted as accepted_record
from node.core.bounds import MAX_HEAD_TEXT_CHARS, MAX_ORIGIN_CHARS
from node.core.clock import Clock, local_date
from node.core.directory import decide, request_of, shared_decisions
from node.core.envelope import Decision, EnvelopeHead, Policy, apply_quota, check_batch
from node.core.errors import InvalidArgument, ResourceExhausted
from node.core.reasons import CallReason, Reason
from node.core.refusals import RefusalKey, RefusalSummary
from node.hub.directory import Directory
from node.rpc.refusal_flood import REFUSAL_INTERVAL_S, TimedRefusals
from node.store.protocols import BatchIntake
from node.wire.delivery import cut
from node.wire.envelopes import (
    SUBJECT_TYPE_NAMES,
    AckBuilder,
    decode_heads,
    outcome_to_proto,
    reason_to_proto,
    stamper,
)
from node.wire.gen.crossroads.v1 import envelope_pb2 as pb

__all__ = ["Intake", "IntakeStats", "PreparedBatch"]

log = structlog.get_logger(__name__)

#: The largest sequence number a batch may reach: the hub keeps them in SQLite INTEGERs.
MAX_SEQUENCE = 2**63 - 1



@dataclass(slots=True)
class IntakeStats:
    batches: int = 0
    accepted: int = 0
    refused: int = 0
    duplicates: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class _Occupancy(Mapping[str, int]):
    """Committed plus reserved envelopes per receiver, as the quota check reads them."""

    def __init__(self, pending: dict[str, int], reserved: dict[str, int]) -> None:
        self._pending, self._reserved = pending, reserved

    def __getitem__(self, receiver: str) -> int:
        found = self._pending.get(receiver, 0) + self._reserved.get(receiver, 0)
        if not found and receiver not in self._pending and receiver not in self._reserved:
            raise KeyError(receiver)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(set(self._pending) | set(self._reserved))

    def __len__(self) -> int:
        return len(set(self._pending) | set(self._reserved))


class PreparedBatch:
    """A prepared batch: await it (``await prepared()``) to commit it and get its ack, or
    :meth:`release` it to give its quota reservation back without committing."""

    def __init__(self, commit: Callable[[], Awaitable[pb.BatchAck]],
                 reserved: dict[str, int] | None = None,
                 added: dict[str, int] | None = None) -> None:
        self._commit = commit
        self._reserved = reserved
        self._added = added or {}

    async def __call__(self) -> pb.BatchAck:
        try:
            return await self._commit()
        finally:
            self.release()  # stored: counted in ``pending`` by the commit; else given back

    @property
    def holds_reservation(self) -> bool:
        return self._reserved is not None

    def release(self) -> None:
        if self._reserved is None:
            return
        reserved, self._reserved = self._reserved, None
        for receiver, n in self._added.items():
            left = reserved.get(receiver, 0) - n
            if left > 0:
                reserved[receiver] = left
            else:
                reserved.pop(receiver, None)


class Intake:
    def __init__(
        self,
        store: BatchIntake,
        policy: Policy,
        directory: Directory,
        pending: dict[str, int],
        limits: Limits,
        wake: Callable[[str], None],
        clock: Clock,
    ) -> None:
        """``limits``: the configured ones (``destination_quota``, ``max_batch_envelopes``,
        and the ``delivery_batch_*`` sizes the queue rows are cut to)."""
        self.store = store
        self.policy = policy
        self.directory = directory
        self.pending = pending
        self.quota = limits.destination_quota
        self.max_batch_envelopes = limits.max_batch_envelopes
        self.wake = wake
        self.clock = clock
        #: (envelopes, bytes): queue rows are cut to delivery batches of at most this size.
        self.queue_cut = (limits.delivery_batch_envelopes, limits.delivery_batch_bytes)
        self.stats = IntakeStats()
        self._high: dict[tuple[str, str], int] = {}
        #: Envelopes accepted by prepared batches not committed yet, per receiver.
        self.reserved: dict[str, int] = {}
        #: Refused envelopes' log lines, aggregated per sender and reason.
        self.refusal_logs = TimedRefusals(_log_refused_repeated, clock=clock)

    def _log_refused(self, sender: str, reason: str, count: int, detail: str) -> None:
        """Refused envelopes of a stored batch (QUOTA_EXCEEDED, NOT_AUTHORIZED, ...): each has
        its audit record; the log says so once per sender, reason and interval."""
        if self.refusal_logs.note(RefusalKey(sender, "Hub.Submit", reason), detail, count):
            log.warning("envelopes_refused", sender=sender, reason=reason, count=count,
                        detail=detail)

    async def process(self, sender: str, batch: pb.EnvelopeBatch) -> pb.BatchAck:
        """Check, store and acknowledge one batch."""
        commit = await self.prepare(sender, batch)
        return await commit()

    async def prepare(self, sender: str, batch: pb.EnvelopeBatch) -> PreparedBatch:
        """Everything up to the commit (decode, checks, routing, stamping); returns the commit.

        The hub prepares a stream's next batch while the previous one commits, so the Python
        work and the SQLite work of consecutive batches overlap. Commits stay in stream order
        (the caller awaits each before starting the next)."""
        raws = batch.envelopes
        count = len(raws)
        if count > self.max_batch_envelopes:
            raise ResourceExhausted(
                f"batch of {count} envelopes exceeds the limit of {self.max_batch_envelopes}",
                CallReason.BATCH_TOO_LARGE,
            )
        origin, first = batch.origin, batch.first_sequence
        if len(origin) > MAX_ORIGIN_CHARS:
            raise InvalidArgument(f"origin is {len(origin)} characters, at most"
                                  f" {MAX_ORIGIN_CHARS}", CallReason.ORIGIN_TOO_LONG)
        if origin and first == 0:
            raise InvalidArgument("first_sequence starts at 1 when origin is set")
        if first + max(count, 1) - 1 > MAX_SEQUENCE:
            raise InvalidArgument(
                f"a batch of {count} from first_sequence {first} goes past {MAX_SEQUENCE}",
                CallReason.SEQUENCE_OUT_OF_RANGE)
        self.stats.batches += 1
        outcomes: list[pb.EnvelopeOutcome] = []
        skip = 0
        if origin:
            high = await self._origin_high(sender, origin)
            skip = max(0, min(count, high - first + 1))
            if skip:
                outcomes = await self._replayed(sender, origin, first, skip)
                self.stats.duplicates += skip
        fresh = (await self._fresh(sender, origin, first, skip, list(raws[skip:]))
                 if skip < count else None)
        finish, added = fresh if fresh is not None else (None, {})

        async def commit() -> pb.BatchAck:
            if finish is None:
                return pb.BatchAck(first_sequence=first, outcomes=outcomes)
            fresh = await finish()
            if not skip:
                return fresh  # built for this batch, from ``first``
            return pb.BatchAck(first_sequence=first, outcomes=[*outcomes, *fresh.outcomes])

        return PreparedBatch(commit, self.reserved, added)

    async def _origin_high(self, sender: str, origin: str) -> int:
        key = (sender, origin)
        if key not in self._high:
            self._high[key] = await self.store.origin_high(sender, origin)
        return self._high[key]

    async def _replayed(
        self, sender: str, origin: str, first: int, skip: int
    ) -> list[pb.EnvelopeOutcome]:
        known: dict[int, pb.EnvelopeOutcome] = {}
        for ack_first, blob in await self.store.recent_acks(sender, origin, first):
            ack = pb.BatchAck.FromString(blob)
            for outcome in ack.outcomes:
                known[ack_first + outcome.index] = outcome
        result = []
        for i in range(skip):
            original = known.get(first + i)
            if original is None:
                original = outcome_to_proto(
                    0, Decision(Reason.DUPLICATE, "already stored; original outcome expired")
                )
            outcome = pb.EnvelopeOutcome()
            outcome.CopyFrom(original)
            outcome.index = i
            result.append(outcome)
        return result

    async def _fresh(  # noqa: C901 - the hot path: one loop over the batch, no call per envelope
        self, sender: str, origin: str, first: int, offset: int, raws: list[bytes]
    ) -> tuple[Callable[[], Awaitable[pb.BatchAck]], dict[str, int]]:
        """The batch's commit, and what it reserved per receiver (see the module's docstring:
        the caller's :class:`PreparedBatch` gives the reservation back)."""
        envelopes, heads = decode_heads(raws)
        decisions = await self._decide(sender, heads)
        decisions, added = apply_quota(decisions, _Occupancy(self.pending, self.reserved),
                                       self.quota)
        now = self.clock.now_us()
        now_text = str(now)
        accepted_reason = Reason.ACCEPTED
        accepted = sum(1 for d in decisions if d.reason is accepted_reason)
        tickets = _uuid7s(accepted, now)
        stamp_one = stamper(now)
        # Per receiver: its stamped envelopes and their tickets, in batch order.
        queued: dict[str, tuple[list[bytes], list[str]]] = {}
        audit: list[AuditRecord] = []
        # The ack is built once, as bytes: stored as the idempotency record, parsed to be sent.
        ack = AckBuilder(first + offset)
        add_outcome = ack.add
        accepted_code = reason_to_proto(accepted_reason)
        add_record = audit.append
        type_names = SUBJECT_TYPE_NAMES
        for i, (raw, head, decision) in enumerate(zip(raws, heads, decisions, strict=True)):
            reason, detail, receivers = decision
            if reason is accepted_reason:
                h = cast(EnvelopeHead, head)  # accepted, so it decoded
                ticket = next(tickets)
                stamped = stamp_one(raw, ticket)
                for receiver in receivers:
                    run = queued.get(receiver)
                    if run is None:
                        run = queued[receiver] = ([], [])
                    run[0].append(stamped)
                    run[1].append(ticket)
                add_record(accepted_record(now_text, ticket, sender, ",".join(receivers),
                                           h.service_id, type_names.get(h.subject_type, "?"),
                                           h.subject_number))
                add_outcome(offset + i, accepted_code, detail, ticket, receivers)
                continue
            envelope = envelopes[i]
            if envelope is not None:
                subject = envelope.subject
                # At most the bound's worth of receivers: a refused list of 100,000 is not
                # copied into the audit log (the detail gives its length).
                listed = envelope.receivers[:self.policy.max_receivers]
                record = rejected(now_text, sender, ",".join(listed),
                                  envelope.service_id[:MAX_HEAD_TEXT_CHARS],
                                  type_names.get(subject.type, "?"),
                                  subject.number[:MAX_HEAD_TEXT_CHARS], reason.value, detail)
            else:
                record = rejected(now_text, sender, "", "", "", "", reason.value, detail)
            add_record(record)
            add_outcome(offset + i, reason_to_proto(reason), detail, "", receivers)
        by_reason = self.stats.by_reason
        if accepted:
            by_reason["ACCEPTED"] = by_reason.get("ACCEPTED", 0) + accepted
        refused_here: dict[str, tuple[int, str]] = {}  # reason: (count, an example's detail)
        if accepted < len(decisions):
            for d in decisions:
                if d.reason is not accepted_reason:
                    by_reason[d.reason.value] = by_reason.get(d.reason.value, 0) + 1
                    seen = refused_here.get(d.reason.value)
                    refused_here[d.reason.value] = ((seen[0] + 1, seen[1]) if seen
                                                    else (1, d.detail))
        last = first + offset + len(raws) - 1
        ack_blob = ack.blob()
        queue_rows = [(receiver, count, packed)
                      for receiver, (stamped_envelopes, tickets_of_run) in queued.items()
                      for count, packed in cut(stamped_envelopes, tickets_of_run,
                                               *self.queue_cut)]

        async def finish() -> pb.BatchAck:
            try:
                await self.store.commit_batch(
                    sender, origin, first + offset, last, queue_rows, audit,
                    _reindexed(ack_blob, offset),
                )
            except BaseException:
                # Whether the batch is stored is not known here: the wait was cancelled (the
                # sender went away) while the writer thread went on, or another stream of
                # this origin stored it first (RESEND_RACED). The cached high may be behind
                # the store's: read it again for the next batch, or every resend would be
                # taken for new and refused as raced, for ever.
                if origin:
                    self._high.pop((sender, origin), None)
                raise
            if origin:
                self._high[(sender, origin)] = max(self._high.get((sender, origin), 0), last)
            self.stats.accepted += accepted
            self.stats.refused += len(decisions) - accepted
            for receiver, n in added.items():
                self.pending[receiver] = self.pending.get(receiver, 0) + n
                self.wake(receiver)
            for reason, (n, detail) in refused_here.items():
                self._log_refused(sender, reason, n, detail)
            return pb.BatchAck.FromString(ack_blob)

        # Reserved from the check above (no await in between) until the commit ends.
        for receiver, n in added.items():
            self.reserved[receiver] = self.reserved.get(receiver, 0) + n
        return finish, added

    async def decide_one(
        self, sender: str, raw: bytes
    ) -> tuple[pb.Envelope | None, Decision]:
        """The same checks and routing as a batch, for one envelope (consultations)."""
        envelopes, heads = decode_heads([raw])
        decisions = await self._decide(sender, heads)
        return envelopes[0], decisions[0]

    async def _decide(self, sender: str, heads: list[EnvelopeHead | Decision]) -> list[Decision]:
        """The structural checks, then the directory's decision for every envelope that passed
        them: one lookup of what the batch's subjects need, then pure rules per envelope. One
        date for the whole batch, from the clock."""
        today = local_date(self.clock)
        decisions = check_batch(heads, sender, self.policy, today)
        view = await self.directory.view_for(
            (h.subject_number, h.service_id, h.service_version)
            for h, d in zip(heads, decisions, strict=True)
            if d.accepted and isinstance(h, EnvelopeHead))
        def compute(head: EnvelopeHead) -> Decision:
            request = request_of(head)
            if isinstance(request, Decision):
                return request
            return decide(head, request, sender, view, today)[0]

        decision_for = shared_decisions(view, compute)
        return [decision_for(head) if decision.accepted and isinstance(head, EnvelopeHead)
                else decision for head, decision in zip(heads, decisions, strict=True)]


def _log_refused_repeated(summaries: list[RefusalSummary]) -> None:
    for s in summaries:
        log.warning("envelopes_refused_repeated", sender=s.key.peer, reason=s.key.reason,
                    count=s.count, first_us=s.first_us, last_us=s.last_us, detail=s.detail,
                    interval_s=REFUSAL_INTERVAL_S)


def _uuid7s(count: int, now_us: int) -> Iterator[str]:
    """``count`` time-ordered UUIDs (RFC 9562 version 7) as text.

    48 bits of Unix milliseconds, then a 30-bit counter (12 bits in ``rand_a``, 18 at the top
    of ``rand_b``) so tickets of one batch sort in order, then 44 random bits. Time-ordered
    tickets keep the receivers' unique index on hub tickets append-mostly (random UUIDs
    made every insert a random B-tree descent, and slower as the inbox grew).
    """
    ms = now_us // 1000
    rand = os.urandom(6 * count).hex()  # 12 hex digits per ticket, 11 used
    h = f"{ms:012x}"
    base = f"{h[:8]}-{h[8:]}-7"  # unix_ts_ms, version 7
    prefix_hi, prefix = -1, ""
    for i in range(count):
        hi = i >> 18
        if hi != prefix_hi:  # rand_a: the counter's top 12 bits
            prefix_hi, prefix = hi, f"{base}{hi:03x}-"
        # rand_b: variant 0b10 and the counter's low 18 bits (5 hex digits), 44 random bits.
        low = f"{0x80000 | (i & 0x3FFFF):05x}"
        yield f"{prefix}{low[:4]}-{low[4]}{rand[12 * i + 1:12 * i + 12]}"


def _reindexed(ack_blob: bytes, offset: int) -> bytes:
    """Stored acks index outcomes from their own first sequence."""
    if offset == 0:
        return ack_blob
    ack = pb.BatchAck.FromString(ack_blob)
    for outcome in ack.outcomes:
        outcome.index -= offset
    return ack.SerializeToString()
