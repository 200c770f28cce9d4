"""The node's local API for the institution's own applications (no TLS; socket permissions).

``Submit`` runs the same envelope checks as the hub (so mistakes surface at the source with
the same reason codes), fills in the sender and the sent time when the application left them
empty, and commits the accepted envelopes to the outbox before answering. An envelope
submitted again with the same sender ticket (an application retrying after a lost answer or
a timeout), while the first is still in the outbox, is not queued twice: it is answered with
the first one's sequence (detail ``RESUBMITTED``), so its Outcomes are the first one's. The uplink sends
them on. ``Fetch``/``Acknowledge`` read the inbox in arrival order.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date

import grpc
from google.protobuf.message import DecodeError

from node.core.bounds import at_most
from node.core.clock import Clock, local_date
from node.core.directory import shared_decisions
from node.core.envelope import Decision, EnvelopeHead, Policy, check_envelope
from node.core.errors import InvalidArgument
from node.core.reasons import CallReason, Reason
from node.member.answers import Answering, Session
from node.member.app_permissions import (
    answering_limited,
    check_consult,
    check_send,
    may_answer,
)
from node.member.fragment import FragmentWatcher, check_with_fragment
from node.member.hub_caller import HubCaller
from node.member.uplink import Uplink
from node.rpc.edge import guard_stream, unary
from node.rpc.multiplex import reply_message_bytes, serve_calls
from node.store.protocols import FragmentReplica, NodeStorage
from node.store.records import Enqueued
from node.tasks import consume, wait_event
from node.wire.declarations import CATALOGUE_SERVICES, validate_payload
from node.wire.envelopes import decode, head_of, outcome_to_proto, outcomes_blob
from node.wire.gen.crossroads.v1 import consult_pb2, envelope_pb2, local_pb2, local_pb2_grpc

__all__ = ["RESUBMITTED", "LocalService", "same_submission"]

MAX_SUBMIT = 10_000
#: Starts the detail of an outcome answered from an earlier submission with the same ticket.
RESUBMITTED = "RESUBMITTED"
MAX_WAIT_MS = 60_000
#: Sequences per Outcomes call and hub tickets per Acknowledge call (as many as one Fetch
#: returns at most); beyond: INVALID_ARGUMENT, before any is looked up.
MAX_OUTCOMES = 10_000
MAX_ACKNOWLEDGE = 10_000
#: The largest sequence ``Outcomes`` answers for: an outcome carries it in
#: ``EnvelopeOutcome.index``, a uint32.
MAX_OUTCOME_SEQUENCE = 2**32 - 1
_OUTCOMES_FIELD = local_pb2.LocalSubmitResponse.DESCRIPTOR.fields_by_name["outcomes"].number
#: (subject number, service id, service version) of an EnvelopeHead, in one call.
_subject_and_service = operator.itemgetter(*map(EnvelopeHead._fields.index, (
    "subject_number", "service_id", "service_version")))


@dataclass(eq=False)
class LocalService(local_pb2_grpc.LocalServicer):
    institution: str
    policy: Policy
    store: NodeStorage
    uplink: Uplink
    fragment: FragmentReplica
    watcher: FragmentWatcher
    answering: Answering
    hub: HubCaller
    clock: Clock

    @unary("Local.Submit")
    async def Submit(  # noqa: N802 - gRPC method name
        self, request: local_pb2.LocalSubmitRequest, context: grpc.aio.ServicerContext
    ) -> local_pb2.LocalSubmitResponse:
        # May the calling application send to these services? (app_permissions)
        check_send(lambda: (s for s in map(_service_of, request.envelopes) if s is not None))
        at_most(len(request.envelopes), MAX_SUBMIT, "envelopes")
        keys: dict[int, str] = {}
        decisions, ready, heads = self._prepare(request.envelopes, keys)
        await self._check_with_fragment(decisions, ready, heads)
        queued = [raw for raw in ready if raw is not None]
        placed = await self.store.enqueue_once(
            queued, [keys.get(i) for i, raw in enumerate(ready) if raw is not None],
            same_submission)
        seqs = placed.seqs
        if placed.resubmitted:
            _note_resubmissions(decisions, ready, placed)
        response = local_pb2.LocalSubmitResponse.FromString(
            outcomes_blob(decisions, _OUTCOMES_FIELD))
        if len(seqs) == len(ready):  # all accepted
            response.sequences.extend(seqs)
        else:
            taken = iter(seqs)
            response.sequences.extend([next(taken) if raw is not None else 0
                                       for raw in ready])
        return response

    async def _check_with_fragment(
        self, decisions: list[Decision], ready: list[bytes | None],
        heads: list[EnvelopeHead | None],
    ) -> None:
        """The directory rules at the source, from the node's fragment (same reason codes as
        the hub). Without a fragment yet, the hub decides alone."""
        if self.fragment.revision == 0:
            return
        view = await self.fragment.view_for(map(_subject_and_service, filter(None, heads)))
        today = local_date(self.clock)
        decision_for = shared_decisions(
            view, lambda head: check_with_fragment(head, self.institution, view, today))
        accepted = Reason.ACCEPTED
        for i, (head, decision) in enumerate(zip(heads, decisions, strict=True)):
            if decision.reason is accepted and head is not None:
                decision = decision_for(head)
                if decision.reason is not accepted:
                    decisions[i], ready[i] = decision, None

    def _prepare(
        self, raws: list[bytes], keys: dict[int, str] | None = None
    ) -> tuple[list[Decision], list[bytes | None], list[EnvelopeHead | None]]:
        """Decode and check each envelope at the source; with ``keys``, also note the
        sender ticket of each accepted one that has one (by index: its resubmission key)."""
        decisions: list[Decision] = []
        ready: list[bytes | None] = []
        heads: list[EnvelopeHead | None] = []
        now_us = self.clock.now_us()  # one reading for the stamps and the date checks
        today = date.fromtimestamp(now_us / 1_000_000)
        memo: dict[object, Decision | None] = {}  # service + receiver checks, per call
        institution, policy, accepted = self.institution, self.policy, Reason.ACCEPTED
        for raw in raws:
            try:
                envelope = decode(raw)
            except DecodeError as exc:
                decisions.append(Decision(Reason.MALFORMED_ENVELOPE, f"not an Envelope: {exc}"))
                ready.append(None)
                heads.append(None)
                continue
            head = head_of(envelope)
            changed = False
            if not head.sender:
                envelope.sender = institution
                head = head._replace(sender=institution)
                changed = True
            if not envelope.sent_at_unix_us:
                envelope.sent_at_unix_us = now_us
                changed = True
            heads.append(head)
            decision = check_envelope(head, institution, policy, memo, today)
            if decision.reason is accepted and head.service_id in CATALOGUE_SERVICES:
                decision = _declaration_check(envelope, today) or decision
            decisions.append(decision)
            if decision.reason is accepted:
                ready.append(envelope.SerializeToString() if changed else raw)
                if keys is not None and envelope.sender_ticket:
                    keys[len(ready) - 1] = envelope.sender_ticket
            else:
                ready.append(None)
        return decisions, ready, heads

    @unary("Local.Outcomes")
    async def Outcomes(  # noqa: N802 - gRPC method name
        self, request: local_pb2.OutcomesRequest, context: grpc.aio.ServicerContext
    ) -> local_pb2.OutcomesResponse:
        at_most(len(request.sequences), MAX_OUTCOMES, "sequences", CallReason.TOO_MANY_SEQUENCES)
        deadline = self.clock.monotonic() + min(request.wait_ms, MAX_WAIT_MS) / 1000
        seqs = list(request.sequences)
        if seqs and max(seqs) > MAX_OUTCOME_SEQUENCE:
            raise InvalidArgument(
                f"sequence {max(seqs)} is above {MAX_OUTCOME_SEQUENCE}, the largest an"
                " outcome's index carries", reason=CallReason.SEQUENCE_OUT_OF_RANGE)
        while True:
            self.uplink.decided.clear()
            results = await self.store.outcomes(seqs)
            remaining = deadline - self.clock.monotonic()
            if not any(r.awaited for r in results) or remaining <= 0:
                break
            await wait_event(self.uplink.decided, min(remaining, 0.5))
        response = local_pb2.OutcomesResponse()
        for r in results:
            response.outcomes.append(
                envelope_pb2.EnvelopeOutcome(
                    index=r.seq,
                    reason=envelope_pb2.Reason.Value(r.reason) if r.reason else 0,
                    detail=r.detail,
                    hub_ticket=r.hub_ticket,
                    receivers=r.receivers,
                )
            )
        return response

    @unary("Local.Fetch")
    async def Fetch(  # noqa: N802 - gRPC method name
        self, request: local_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> local_pb2.FetchResponse:
        limit = request.max or 1000
        if limit > 10_000:
            raise InvalidArgument("max is at most 10000")
        deadline = self.clock.monotonic() + min(request.wait_ms, MAX_WAIT_MS) / 1000
        while True:
            self.store.inbox_changed.clear()
            rows = await self.store.fetch(limit)
            remaining = deadline - self.clock.monotonic()
            if rows or remaining <= 0:
                break
            await wait_event(self.store.inbox_changed, remaining)
        return local_pb2.FetchResponse(envelopes=[blob for _, blob in rows])

    @unary("Local.Acknowledge")
    async def Acknowledge(  # noqa: N802 - gRPC method name
        self, request: local_pb2.AcknowledgeRequest, context: grpc.aio.ServicerContext
    ) -> local_pb2.AcknowledgeResponse:
        at_most(len(request.hub_tickets), MAX_ACKNOWLEDGE, "hub tickets",
                CallReason.TOO_MANY_TICKETS)
        n = await self.store.acknowledge(list(request.hub_tickets))
        return local_pb2.AcknowledgeResponse(acknowledged=n)

    @unary("Local.Status")
    async def Status(  # noqa: N802 - gRPC method name
        self, request: local_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> local_pb2.StatusResponse:
        c = self.store.counts()
        return local_pb2.StatusResponse(
            institution=self.institution,
            outbox_pending=c.outbox_pending,
            sent_accepted=c.sent_accepted,
            sent_refused=c.sent_refused,
            inbox_unacknowledged=c.inbox_unacknowledged,
            inbox_total=c.inbox_total,
            hub_connected=self.uplink.connected,
            directory_revision=self.fragment.revision,
            directory_lag=self.fragment.lag,
            directory_last_sync_unix_us=self.fragment.last_sync_us,
            directory_connected=self.watcher.connected,
            **_hub_state(self.store),
        )

    @unary("Local.Consult")
    async def Consult(  # noqa: N802 - gRPC method name
        self, request: consult_pb2.ConsultRequest, context: grpc.aio.ServicerContext
    ) -> consult_pb2.ConsultResponse:
        return await self._consult(request)

    async def Consultations(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[consult_pb2.ConsultCalls],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[consult_pb2.ConsultReplies]:
        async for replies in guard_stream("Local.Consultations", context, serve_calls(
            request_iterator, self._consult, consult_pb2.ConsultReplies, consult_pb2.ConsultReply,
            max_in_flight=self.hub.config.limits.consultations_in_flight,
            max_message_bytes=reply_message_bytes(self.hub.config.limits),
        ), {}):
            yield replies

    async def _consult(self, request: consult_pb2.ConsultRequest) -> consult_pb2.ConsultResponse:
        decisions, ready, heads = self._prepare([request.envelope])
        if heads[0] is not None:  # may the calling application consult it? (app_permissions)
            check_consult(heads[0].service_id)
        await self._check_with_fragment(decisions, ready, heads)
        if ready[0] is None:  # refused at the source, same reason as the hub would give
            return consult_pb2.ConsultResponse(
                status=consult_pb2.REFUSED, outcome=outcome_to_proto(0, decisions[0]))
        return await self.hub.consult(
            consult_pb2.ConsultRequest(envelope=ready[0], deadline_ms=request.deadline_ms))

    async def Serve(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[consult_pb2.Answer],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[consult_pb2.Question]:
        session = self.answering.attach()
        # An application allowed to answer some services only: the others' questions are
        # answered SOURCE_UNAVAILABLE on its behalf, never shown to it (app_permissions).
        limited = answering_limited()

        async def read_answers() -> None:
            async for answer in request_iterator:
                session.resolve(answer)

        reader = asyncio.create_task(read_answers())
        reader.add_done_callback(lambda _: session.wake.set())
        try:
            while not reader.done():
                await session.wake.wait()
                session.wake.clear()
                questions = session.questions
                while questions and not reader.done():
                    question = questions.popleft()
                    if not limited or _answered_for_it(session, question):
                        yield question
        finally:
            reader.cancel()
            consume(reader)  # an answers stream that broke ends the session: nothing to report
            self.answering.detach(session)


def _answered_for_it(session: Session, question: consult_pb2.Question) -> bool:
    """Whether the calling application may answer ``question``; if not, it is answered
    ``SOURCE_UNAVAILABLE`` on its behalf (and the refusal logged)."""
    service = _service_of(question.envelope) or ""
    if may_answer(service):
        return True
    session.resolve(consult_pb2.Answer(
        id=question.id, status=consult_pb2.SOURCE_UNAVAILABLE,
        detail=f"{CallReason.APPLICATION_NOT_PERMITTED}: no application of this institution may"
               f" answer {service}"))
    return False


def _service_of(raw: bytes) -> str | None:
    try:
        service: str = envelope_pb2.Envelope.FromString(raw).service_id
    except DecodeError:
        return None  # refused with the other checks (MALFORMED_ENVELOPE)
    return service


def same_submission(first: bytes, again: bytes) -> bool:
    """Whether ``again`` is ``first`` submitted once more: the same envelope but for its sent
    time (which the node or the client fills in anew on each attempt). Called only for an
    envelope whose sender ticket is that of an earlier one (node/store/node_store.py)."""
    if first == again:
        return True
    try:
        a, b = decode(first), decode(again)
    except DecodeError:
        return False
    a.sent_at_unix_us = b.sent_at_unix_us = 0
    return a == b


def _note_resubmissions(
    decisions: list[Decision], ready: list[bytes | None], placed: Enqueued
) -> None:
    """A resubmitted envelope keeps its first outcome (ACCEPTED, queued at the node) and
    sequence; the detail says it was not queued again."""
    queued = (i for i, raw in enumerate(ready) if raw is not None)
    for k, i in enumerate(queued):
        if k in placed.resubmitted:
            decisions[i] = decisions[i]._replace(
                detail=f"{RESUBMITTED}: already queued as sequence {placed.seqs[k]} with this"
                       " sender ticket; not queued again")


def _declaration_check(envelope: envelope_pb2.Envelope, today: date) -> Decision | None:
    """Declarations are validated before they leave the node: every invalid field named."""
    problems = validate_payload(envelope.service_id, envelope.payload.media_type,
                                envelope.payload.data, today,
                                subject=envelope.subject.number or None)
    if not problems:
        return None
    more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    return Decision(Reason.INVALID_FIELD, "; ".join(str(p) for p in problems[:20]) + more)


def _hub_state(store: NodeStorage) -> dict[str, object]:
    """The Status fields on hub continuity (node.member.continuity)."""
    found, cp = store.hub_regression, store.hub_checkpoint
    return {"hub_state": found.reason.value if found else "OK",
            "hub_state_detail": found.detail if found else "",
            "hub_acknowledged_sequence": store.hub_acked_seq,
            "hub_checkpoint_seq": cp.seq if cp else 0}
