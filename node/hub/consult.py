"""Consultations at the hub: check, fan out to the providers, aggregate within the deadline.

A question is checked exactly like an envelope (:meth:`Intake.decide_one`: structure, then the
directory's authorization, integration and routing rules) and audited (``ACCEPTED`` or
``REJECTED``, so "who consulted my data" lists it). The hub then asks every provider in
parallel, with the time left (minus a margin to aggregate and reply), on the one
``Node.Answers`` stream it keeps open per provider node (:mod:`node.rpc.multiplex`), and
returns:

* ``DATA_FOUND`` - every source answered and at least one had data;
* ``NO_DATA_FOUND`` - every source answered without data;
* ``INCOMPLETE_DATA`` - some source timed out, was unreachable or failed (its part says which);
* ``REFUSED`` - the question did not pass the checks (the outcome says why).

Audit, and when it is durable (:mod:`node.hub.audit_group`, commits shared between
concurrent consultations):

* ``ACCEPTED`` (who asked, about whom, for what, which providers; stamped with the time the
  question came in) is committed *while* the providers are asked: its commit overlaps their
  work instead of following it, and the asker gets no answer before it is durable. So every
  answer that leaves the hub is about a question already in the log. (Before, the question
  was logged only with its answers: a hub that crashed meanwhile kept no record of a
  question the providers had seen.)
* ``ANSWERED`` (one per source, with its status) goes with the next commit, within
  :data:`node.hub.audit_group.LATER_S` (20 ms) at the latest, also when the asker gave up
  before the answers came: the providers did see the question. Nobody waits for it: a hub
  that crashes in those milliseconds keeps the question's ``ACCEPTED`` record without its
  sources' statuses. At 500 questions/s these records ride along with the next question's
  ``ACCEPTED`` commit, so a question still costs one commit.
* ``REJECTED`` (a refused question) is durable before the refusal goes back.

A slow or absent provider costs at most the deadline, never a hang: every question carries
its deadline and the hub stops waiting for it when that has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from node.config import Limits
from node.core import audit as audit_records
from node.core.audit import AuditRecord
from node.core.bounds import MAX_DETAIL_CHARS, MAX_HEAD_TEXT_CHARS, MAX_MEDIA_TYPE_CHARS
from node.core.clock import Clock
from node.core.reasons import Reason
from node.hub.audit_group import AuditGroup
from node.hub.delivery import Deliverer
from node.hub.intake import Intake, _uuid7s
from node.rpc.multiplex import CallFailed, StreamCaller
from node.rpc.server_certs import ServerRevoked, verify_server
from node.store.protocols import AuditLog
from node.tasks import spawn
from node.wire.envelopes import SUBJECT_TYPE_NAMES, outcome_to_proto, stamp
from node.wire.gen.crossroads.v1 import consult_pb2 as cpb
from node.wire.gen.crossroads.v1 import envelope_pb2 as epb
from node.wire.gen.crossroads.v1 import node_pb2_grpc

__all__ = ["Consultations"]

log = structlog.get_logger(__name__)
DEFAULT_DEADLINE_MS = 5_000
MAX_DEADLINE_MS = 60_000
MARGIN_MS = 50
#: Bytes of answers one ConsultResponse carries at most, as a share of max_batch_bytes (what
#: the asker's channel takes): a fan-out to many providers answering large data must not make
#: a response nobody can receive.
RESPONSE_DATA_SHARE = 2


def _ignore(name: str, seconds: float) -> None:
    """No metrics endpoint: nothing observed."""


class Consultations:
    def __init__(
        self,
        intake: Intake,
        deliverer: Deliverer,
        store: AuditLog,
        limits: Limits,
        clock: Clock,
    ) -> None:
        """Providers are dialled like the deliverer dials nodes (``deliverer.dialer``)."""
        self.intake = intake
        self.deliverer = deliverer
        self.store = store
        self.limits = limits
        self.clock = clock
        self._providers: dict[str, tuple[str, grpc.aio.Channel, StreamCaller[
            cpb.AnswerRequest, cpb.AnswerResponse]]] = {}
        self._asking: set[asyncio.Future[list[cpb.SourcePart]]] = set()
        #: Provider channels whose server certificate was checked (the deliverer's
        #: ``revoked``: a provider presenting a revoked certificate gets no question).
        self._checked: dict[str, grpc.aio.Channel] = {}
        self.audit = AuditGroup(store.append_audit)
        #: Called once per consultation with its status name and how long it took here, and
        #: once per provider asked with its institution and how long it took to answer.
        self.on_answered: Callable[[str, float], None] = _ignore
        self.on_provider: Callable[[str, float], None] = _ignore

    @property
    def in_flight(self) -> int:
        """Questions whose providers are still being asked."""
        return len(self._asking)

    async def close(self) -> None:
        await self.audit.close()
        for _, channel, caller in self._providers.values():
            await caller.close()
            await channel.close()
        self._providers.clear()

    def revocations_changed(self) -> None:
        """A new CRL or revoked certificate: every provider channel goes, and the next one is
        checked again before its first question."""
        for institution, (_, channel, caller) in list(self._providers.items()):
            spawn(_close(channel, caller), f"close-answers-{institution}")
        self._providers.clear()
        self._checked.clear()

    async def _check_provider(self, institution: str, timeout_s: float) -> None:
        revoked = self.deliverer.revoked
        endpoint, channel, _ = self._providers[institution]
        if revoked is None or self._checked.get(institution) is channel:
            return
        await verify_server(channel, endpoint, revoked(), timeout_s)
        self._checked[institution] = channel

    def _provider(self, institution: str) -> StreamCaller[cpb.AnswerRequest,
                                                           cpb.AnswerResponse] | None:
        """The ``Node.Answers`` stream of ``institution`` at its registered endpoint."""
        endpoint = self.deliverer.endpoints.get(institution)
        if endpoint is None:
            return None
        cached = self._providers.get(institution)
        if cached is not None and cached[0] == endpoint:
            return cached[2]
        if cached is not None:  # re-registered elsewhere: the old stream and channel go
            spawn(_close(*cached[1:]), f"close-answers-{institution}")
        channel = self.deliverer.dialer.channel(institution, endpoint,
                                                 self.limits.max_payload_bytes)
        stub = node_pb2_grpc.NodeStub(channel)
        caller: StreamCaller[cpb.AnswerRequest, cpb.AnswerResponse] = StreamCaller(
            stub.Answers, cpb.AnswerCalls, cpb.AnswerCall)
        self._providers[institution] = (endpoint, channel, caller)
        return caller

    def refused(self, sender: str, request: cpb.ConsultRequest) -> None:
        """Audit a question refused at once because ``sender`` had the limit of
        consultations in flight (``REJECTED``, ``TOO_MANY_IN_FLIGHT``). The record is
        committed with the next group; the refusal does not wait for it."""
        envelope: epb.Envelope | None = None
        with contextlib.suppress(DecodeError):  # what it was about, if it says
            envelope = epb.Envelope.FromString(request.envelope)
        service, subject_type, subject = _about(envelope)
        limit = self.limits.consultations_in_flight
        committed = self.audit.add([audit_records.rejected(
            str(self.clock.now_us()), sender, "", service, subject_type, subject,
            Reason.TOO_MANY_IN_FLIGHT.value, f"consultation: more than {limit} in flight")])
        committed.add_done_callback(_seen)

    async def consult(self, sender: str, request: cpb.ConsultRequest) -> cpb.ConsultResponse:
        started = self.clock.monotonic()
        response = await self._consult(sender, request, started)
        self.on_answered(cpb.ConsultStatus.Name(response.status), self.clock.monotonic() - started)
        return response

    async def _consult(self, sender: str, request: cpb.ConsultRequest,
                       started: float) -> cpb.ConsultResponse:
        deadline_ms = min(request.deadline_ms or DEFAULT_DEADLINE_MS, MAX_DEADLINE_MS)
        received = self.clock.now_us()
        envelope, decision = await self.intake.decide_one(sender, request.envelope)
        service, subject_type, subject = _about(envelope)
        response = cpb.ConsultResponse(
            sender_ticket=envelope.sender_ticket if envelope is not None else "",
            sent_at_unix_us=envelope.sent_at_unix_us if envelope is not None else 0,
            received_at_unix_us=received,
        )
        if decision.reason is not Reason.ACCEPTED:
            response.status = cpb.REFUSED
            response.outcome.CopyFrom(outcome_to_proto(0, decision))
            response.replied_at_unix_us = self.clock.now_us()
            await self.audit.append([audit_records.rejected(
                str(received), sender, "", service, subject_type, subject,
                decision.reason.value, f"consultation: {decision.detail}")])
            return response
        ticket = next(_uuid7s(1, received))
        stamped = stamp(request.envelope, ticket, received)
        response.hub_ticket = ticket
        response.outcome.CopyFrom(outcome_to_proto(0, decision, ticket))
        accepted = audit_records.accepted(str(received), ticket, sender,
                                          ",".join(decision.receivers), service, subject_type,
                                          subject, "consultation")
        left_ms = deadline_ms - (self.clock.monotonic() - started) * 1000 - MARGIN_MS
        logged = self.audit.add([accepted])  # committed while the providers work
        logged.add_done_callback(_seen)
        # Shielded: if the asker gives up (cancels, or its own deadline passes first), the
        # providers' answers are still awaited and audited: they did see the question.
        asking = asyncio.ensure_future(self._ask_all(accepted, decision.receivers, stamped,
                                                     max(1.0, left_ms)))
        self._asking.add(asking)  # held until done, also if nobody awaits it any more
        asking.add_done_callback(self._asking.discard)
        parts = await asyncio.shield(asking)
        await asyncio.shield(logged)  # no answer before the question is in the log
        response.parts.extend(parts)
        statuses = {p.status for p in parts}
        if statuses - {cpb.SOURCE_DATA, cpb.SOURCE_NO_DATA}:
            response.status = cpb.INCOMPLETE_DATA
        elif cpb.SOURCE_DATA in statuses:
            response.status = cpb.DATA_FOUND
        else:
            response.status = cpb.NO_DATA_FOUND
        response.replied_at_unix_us = self.clock.now_us()
        return response

    async def _ask_all(self, accepted: AuditRecord, receivers: tuple[str, ...],
                       stamped: bytes, left_ms: float) -> list[cpb.SourcePart]:
        """Every provider's part; one ``ANSWERED`` record per source (with the source
        status) goes with the next audit commit (``accepted`` is the question's record)."""
        parts = _within(
            await asyncio.gather(*(self._ask(r, stamped, left_ms) for r in receivers)),
            self.limits.max_payload_bytes, self.limits.max_batch_bytes // RESPONSE_DATA_SHARE)
        now = str(self.clock.now_us())
        self.audit.add_later([
            audit_records.answered(now, accepted, p.institution, cpb.SourceStatus.Name(p.status),
                                   p.detail) for p in parts])
        return parts

    async def _ask(self, institution: str, stamped: bytes, left_ms: float) -> cpb.SourcePart:
        started = self.clock.monotonic()
        part = await self._ask_one(institution, stamped, left_ms)
        self.on_provider(institution, self.clock.monotonic() - started)
        return part

    async def _ask_one(self, institution: str, stamped: bytes,
                       left_ms: float) -> cpb.SourcePart:
        part = cpb.SourcePart(institution=institution)
        provider = self._provider(institution)
        if provider is None:
            part.status, part.detail = cpb.SOURCE_UNAVAILABLE, "no endpoint registered"
            return part
        try:
            await self._check_provider(institution, left_ms / 1000)
        except ServerRevoked as exc:
            part.status, part.detail = cpb.SOURCE_UNAVAILABLE, str(exc)
            return part
        try:
            answer = await provider.call(
                cpb.AnswerRequest(envelope=stamped, deadline_ms=int(max(1, left_ms - MARGIN_MS))),
                timeout=left_ms / 1000,
            )
        except CallFailed as exc:
            late = exc.code == "DEADLINE_EXCEEDED"
            part.status = cpb.SOURCE_TIMEOUT if late else cpb.SOURCE_UNAVAILABLE
            part.detail = str(exc)
            return part
        part.status, part.data, part.media_type, part.detail = (
            answer.status, answer.data, answer.media_type[:MAX_MEDIA_TYPE_CHARS],
            answer.detail[:MAX_DETAIL_CHARS])
        part.answered_at_unix_us = self.clock.now_us()
        if part.status == cpb.SOURCE_STATUS_UNSPECIFIED:
            part.status = cpb.SOURCE_ERROR
        return part


def _within(parts: Sequence[cpb.SourcePart], max_part: int, max_total: int) -> list[cpb.SourcePart]:
    """``parts`` with the data of any answer over ``max_part`` bytes, or past ``max_total``
    bytes in all (in provider order), dropped: such a part becomes ``SOURCE_ERROR``."""
    total = 0
    for part in parts:
        size = len(part.data)
        if size > max_part or total + size > max_total:
            part.detail = (f"answer of {size} bytes dropped: over the limit of"
                           f" {min(max_part, max_total - total)} bytes left for it")
            part.status, part.data, part.media_type = cpb.SOURCE_ERROR, b"", ""
            continue
        total += size
    return list(parts)


def _about(envelope: epb.Envelope | None) -> tuple[str, str, str]:
    """What a question is about, for its audit records: service, subject type, subject."""
    if envelope is None:
        return "", "", ""
    return (envelope.service_id[:MAX_HEAD_TEXT_CHARS],
            SUBJECT_TYPE_NAMES.get(envelope.subject.type, "?"),
            envelope.subject.number[:MAX_HEAD_TEXT_CHARS])


def _seen(committed: asyncio.Future[None]) -> None:
    """Take a commit's error, if any, off the future: the audit group logged it already, and
    nobody may be left to await it (a refusal; an asker that gave up)."""
    if not committed.cancelled():
        committed.exception()


async def _close(channel: grpc.aio.Channel, caller: StreamCaller[Any, Any]) -> None:
    await caller.close()
    await channel.close()
