"""The hub's gRPC edge for nodes: hand an authenticated institution's work to the intake or
the directory (who may call: node/hub/callers.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import grpc
import structlog

from node.core.audit import AuditEvent, integration
from node.core.bounds import at_most
from node.core.clock import local_date
from node.core.directory import Integration, problem_of, subject_problem
from node.core.envelope import Decision
from node.core.errors import CrossroadsError, InvalidArgument
from node.core.reasons import CallReason, Reason
from node.hub.consult import Consultations
from node.hub.delivery import Deliverer
from node.hub.directory import Directory
from node.hub.intake import Intake, PreparedBatch
from node.hub.refusal_audit import RefusalAudit
from node.rpc.auth_interceptor import current_peer, recheck_peer
from node.rpc.edge import StreamCall, guard_stream, streaming, unary, until_drained
from node.rpc.malformed import short_name
from node.rpc.multiplex import reply_message_bytes, serve_calls
from node.rpc.peer import PeerAuthenticator
from node.store.protocols import HubStorage
from node.tasks import consume
from node.wire.checkpoints import checkpoint_to_proto
from node.wire.directory import change_from_proto
from node.wire.envelopes import outcome_to_proto
from node.wire.gen.crossroads.v1 import (
    consult_pb2,
    directory_pb2,
    envelope_pb2,
    hub_pb2,
    hub_pb2_grpc,
)

__all__ = ["HubService"]

log = structlog.get_logger(__name__)
_ENDPOINT = re.compile(r"^\[?[A-Za-z0-9.:-]+\]?:\d{1,5}$")
MAX_INTEGRATE_OPS = 50_000


async def _after(
    previous: asyncio.Future[envelope_pb2.BatchAck] | None, commit: PreparedBatch
) -> envelope_pb2.BatchAck:
    """Run ``commit`` once the previous batch's commit is done (a failure there stops it,
    and gives its quota reservation back)."""
    if previous is not None:
        try:
            await previous
        except BaseException:
            commit.release()
            raise
    return await commit()


def _stream_sender(call: StreamCall[Any]) -> str:
    """The institution calling a stream, named in the stream's log line."""
    sender = current_peer().institution
    call.summary["sender"] = sender
    return sender


@dataclass(eq=False)
class HubService(hub_pb2_grpc.HubServicer):
    peers: PeerAuthenticator
    intake: Intake
    deliverer: Deliverer
    store: HubStorage
    directory: Directory
    consultations: Consultations
    #: The audit of refused calls, aggregated.
    refusals: RefusalAudit
    #: Set by a graceful stop: the streams end after the batch in hand.
    draining: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    # -- refusals -------------------------------------------------------------------------
    # Callers are authenticated before any method runs (node/hub/callers.py); the servicer
    # reads the caller with current_peer() and checks it again per message of a stream.

    async def malformed(self, method: str, context: grpc.aio.ServicerContext,
                        detail: str) -> None:
        """Audit a message that did not parse (:mod:`node.rpc.malformed`)."""
        await self.audit_refusal(context, short_name(method),
                                 InvalidArgument(detail, CallReason.MALFORMED_MESSAGE))

    async def audit_refusal(
        self, context: grpc.aio.ServicerContext, method: str, exc: CrossroadsError
    ) -> None:
        """One record per peer, method, reason and interval (:mod:`node.hub.refusal_audit`)."""
        await self.refusals.refused(self.peers.label(context), method, exc.reason,
                                    f"{context.peer()}: {exc}")

    # -- envelopes -------------------------------------------------------------------------

    async def _submit(
        self, call: StreamCall[envelope_pb2.EnvelopeBatch]
    ) -> AsyncIterator[envelope_pb2.BatchAck]:
        sender = _stream_sender(call)
        summary = call.summary
        # A reader prepares each batch (decode, checks, routing) while the previous one commits;
        # commits run in stream order, and each ack is sent as soon as its own commit is done.
        # The queue holds at most two prepared batches: flow control still bounds memory.
        acks: asyncio.Queue[asyncio.Future[envelope_pb2.BatchAck] | None] = asyncio.Queue(2)
        # Every batch prepared on this stream holds a quota reservation until its commit
        # ends; those whose commit never ran give it back when the stream ends.
        prepared: list[tuple[PreparedBatch, asyncio.Future[envelope_pb2.BatchAck]]] = []

        async def read_and_prepare() -> None:
            previous: asyncio.Future[envelope_pb2.BatchAck] | None = None
            async for batch in until_drained(call.requests, self.draining):
                # Re-checked per batch: a certificate revoked mid-stream stops the stream.
                await recheck_peer()
                commit = await self.intake.prepare(sender, batch)
                prepared[:] = [p for p in prepared if p[0].holds_reservation]
                previous = asyncio.ensure_future(_after(previous, commit))
                prepared.append((commit, previous))
                await acks.put(previous)
                summary["batches"] += 1
                summary["envelopes"] += len(batch.envelopes)
            await acks.put(None)

        reader = asyncio.create_task(read_and_prepare())
        getter: asyncio.Future[asyncio.Future[envelope_pb2.BatchAck] | None] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(acks.get())
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():  # the reader failed (or ended) with nothing queued
                    getter.cancel()
                    reader.result()
                    return
                item = getter.result()
                if item is None:
                    return
                yield await item
        finally:
            if getter is not None:  # the stream ended while this waited for the next ack
                getter.cancel()
            reader.cancel()
            consume(reader)
            # Commits queued behind a failed one fail with it: their outcome is dropped with
            # the stream, not reported by asyncio. They are not cancelled: one already
            # committing goes on (its batch is stored and counted; the node's resend is
            # answered with its outcome). Cancelling them here crashed the hub under uvloop
            # (a segfault, 4 runs out of 4, with a full disk).
            while not acks.empty():
                pending = acks.get_nowait()
                if pending is not None:
                    consume(pending)
            for batch, commit_done in prepared:  # when each ends, its reservation does too
                consume(commit_done)
                commit_done.add_done_callback(lambda _, b=batch: b.release())

    Submit = streaming("Hub.Submit", _submit, batches=0, envelopes=0)

    @unary("Hub.Register")
    async def Register(  # noqa: N802 - gRPC method name
        self, request: hub_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> hub_pb2.RegisterResponse:
        institution = current_peer().institution
        if not _ENDPOINT.match(request.endpoint):
            raise InvalidArgument(f"endpoint {request.endpoint!r} is not host:port",
                                  CallReason.BAD_ENDPOINT)
        await self.store.set_endpoint(institution, request.endpoint)
        self.deliverer.set_endpoint(institution, request.endpoint)
        # Continuity: what this hub remembers, for the node to compare with what it knows.
        watermark = (await self.store.origin_high(institution, request.origin)
                     if request.origin else 0)
        checkpoint = await self.store.latest_checkpoint()
        log.info("registered", institution=institution, endpoint=request.endpoint,
                 acknowledged_sequence=watermark)
        return hub_pb2.RegisterResponse(
            institution=institution,
            pending=self.deliverer.pending.get(institution, 0),
            acknowledged_sequence=watermark,
            store_id=self.store.store_id,
            checkpoint=checkpoint_to_proto(checkpoint) if checkpoint else None,
        )

    @unary("Hub.Consult")
    async def Consult(  # noqa: N802 - gRPC method name
        self, request: consult_pb2.ConsultRequest, context: grpc.aio.ServicerContext
    ) -> consult_pb2.ConsultResponse:
        sender = current_peer().institution
        return await self.consultations.consult(sender, request)

    async def _consultations(
        self, call: StreamCall[consult_pb2.ConsultCalls]
    ) -> AsyncIterator[consult_pb2.ConsultReplies]:
        sender = _stream_sender(call)

        async def recheck() -> None:  # a certificate revoked mid-stream ends the stream
            await recheck_peer()
            call.summary["messages"] += 1

        async def consult(request: consult_pb2.ConsultRequest) -> consult_pb2.ConsultResponse:
            return await self.consultations.consult(sender, request)

        async for replies in serve_calls(
            call.requests, consult, consult_pb2.ConsultReplies, consult_pb2.ConsultReply,
            on_message=recheck, draining=self.draining,
            max_in_flight=self.consultations.limits.consultations_in_flight,
            on_refused=lambda request: self.consultations.refused(sender, request),
            max_message_bytes=reply_message_bytes(self.consultations.limits),
        ):
            yield replies

    Consultations = streaming("Hub.Consultations", _consultations, messages=0)

    # -- directory -------------------------------------------------------------------------

    async def WatchDirectory(  # noqa: N802 - gRPC method name
        self, request: directory_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[directory_pb2.SignedDirectoryUpdate]:
        summary: dict[str, Any] = {"updates": 0, "start_revision": request.start_revision}
        async for update in guard_stream(
            "Hub.WatchDirectory", context, self._watch(request, context, summary), summary
        ):
            yield update

    async def _watch(
        self,
        request: directory_pb2.WatchRequest,
        context: grpc.aio.ServicerContext,
        summary: dict[str, Any],
    ) -> AsyncIterator[directory_pb2.SignedDirectoryUpdate]:
        institution = self.directory.institution(current_peer().institution)
        if institution is None:  # gone since the call was admitted: refused (audited) now
            await recheck_peer()
            raise AssertionError("unreachable")
        summary["institution"] = institution.enterprise_number
        await context.send_initial_metadata(())  # the node sees the stream up while idle
        updates = self.directory.watch(institution, request.start_revision)
        async for update in until_drained(updates, self.draining):
            await recheck_peer()
            summary["updates"] += 1
            yield update

    @unary("Hub.Integrate")
    async def Integrate(  # noqa: N802 - gRPC method name
        self, request: directory_pb2.IntegrateRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.IntegrateResponse:
        sender = current_peer().institution
        at_most(len(request.ops), MAX_INTEGRATE_OPS, "ops")
        today = local_date(self.intake.clock)
        decisions: list[Decision] = []
        accepted: list[tuple[Integration, bool]] = []
        for op in request.ops:
            decision, entity = self._integration_decision(sender, op, today)
            decisions.append(decision)
            if entity is not None:
                accepted.append((entity, op.delete))
        revision = await self.directory.apply(accepted) if accepted else self.directory.revision
        await self._audit_integrations(sender, request.ops, decisions)
        return directory_pb2.IntegrateResponse(
            outcomes=[outcome_to_proto(i, d) for i, d in enumerate(decisions)],
            revision=revision,
        )

    def _integration_decision(
        self, sender: str, op: directory_pb2.IntegrateOp, today: date
    ) -> tuple[Decision, Integration | None]:
        entry = directory_pb2.IntegrateOp()
        entry.CopyFrom(op)
        if not entry.integration.institution:
            entry.integration.institution = sender
        try:
            entity, _ = change_from_proto(directory_pb2.DirectoryChange(
                integration=entry.integration))
        except ValueError as exc:
            return Decision(Reason.INVALID_FIELD, str(exc)), None
        assert isinstance(entity, Integration)
        if entity.institution != sender:
            return Decision(Reason.NOT_AUTHORIZED,
                            f"{sender} cannot integrate in the name of {entity.institution}"), None
        problem = subject_problem(entity.subject)
        if problem is not None:
            return Decision(Reason.SUBJECT_NUMBER_INVALID, problem), None
        problem = problem_of(entity)
        if problem is not None:
            return Decision(Reason.INVALID_FIELD, problem), None
        if not self.directory.may_integrate(sender, entity.capacity, today):
            return Decision(Reason.NOT_AUTHORIZED,
                            f"{sender} may not integrate in capacity {entity.capacity}"), None
        return Decision(Reason.ACCEPTED), entity

    async def _audit_integrations(
        self, sender: str, ops: Any, decisions: list[Decision]
    ) -> None:
        now = str(self.intake.clock.now_us())
        await self.store.append_audit([
            integration(now, (AuditEvent.DEINTEGRATED if op.delete else AuditEvent.INTEGRATED)
                        if d.accepted else AuditEvent.REJECTED,
                        sender, "directory.integration", op.integration.subject,
                        d.reason.value, d.detail or f"capacity {op.integration.capacity}")
            for op, d in zip(ops, decisions, strict=True)
        ])
