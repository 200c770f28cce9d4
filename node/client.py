"""A small synchronous client for a node's local API (used by the CLI, the demo, tests)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import grpc

from node.rpc.multiplex import StreamCaller
from node.wire.envelopes import decode, reason_from_proto
from node.wire.gen.crossroads.v1 import consult_pb2, envelope_pb2, local_pb2, local_pb2_grpc

__all__ = ["Consulter", "LocalClient", "Outcome", "consult", "make_envelope", "serve_answers"]


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int
    reason: str
    detail: str
    hub_ticket: str
    receivers: tuple[str, ...]


def make_envelope(
    service_id: str,
    receivers: Sequence[str],
    payload: bytes = b"",
    *,
    sender: str = "",
    subject_citizen: str = "",
    subject_enterprise: str = "",
    service_version: int = 0,
    capacity: int = 0,
    sender_ticket: str = "",
    media_type: str = "application/octet-stream",
    digest: bool = False,
) -> bytes:
    envelope = envelope_pb2.Envelope(
        service_id=service_id,
        service_version=service_version,
        sender=sender,
        receivers=list(receivers),
        capacity=capacity,
        sender_ticket=sender_ticket,
        sent_at_unix_us=time.time_ns() // 1000,
        payload=envelope_pb2.Payload(
            data=payload,
            media_type=media_type,
            sha256=hashlib.sha256(payload).digest() if digest else b"",
        ),
    )
    if subject_citizen:
        envelope.subject.type = envelope_pb2.SUBJECT_TYPE_CITIZEN
        envelope.subject.number = subject_citizen
    elif subject_enterprise:
        envelope.subject.type = envelope_pb2.SUBJECT_TYPE_ENTERPRISE
        envelope.subject.number = subject_enterprise
    return envelope.SerializeToString()


def _outcome(o: envelope_pb2.EnvelopeOutcome) -> Outcome:
    """No reason yet: ``PENDING`` (the hub's answer is to come) or, when the detail says why
    none will come (an unknown sequence, one purged by retention), ``UNKNOWN``."""
    reason = reason_from_proto(o.reason)
    if reason is None:
        return Outcome(o.index, "UNKNOWN" if o.detail else "PENDING", o.detail, "", ())
    return Outcome(o.index, reason.value, o.detail, o.hub_ticket, tuple(o.receivers))


class LocalClient:
    """``wait_for_ready=False``: a call fails at once (UNAVAILABLE) when the node cannot be
    reached, instead of waiting for it until the call's deadline (what the CLI wants)."""

    def __init__(self, address: str, max_message_bytes: int = 64 * 1024 * 1024,
                 wait_for_ready: bool = True) -> None:
        self.wait_for_ready = wait_for_ready
        self.channel = grpc.insecure_channel(
            address,
            options=[("grpc.max_receive_message_length", max_message_bytes),
                     ("grpc.max_send_message_length", max_message_bytes)],
        )
        self.stub = local_pb2_grpc.LocalStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, envelopes: Sequence[bytes], timeout: float = 30) -> tuple[list[Outcome], list[int]]:
        response = self.stub.Submit(
            local_pb2.LocalSubmitRequest(envelopes=list(envelopes)), timeout=timeout,
            wait_for_ready=self.wait_for_ready,
        )
        return [_outcome(o) for o in response.outcomes], list(response.sequences)

    def outcomes(self, sequences: Iterable[int], wait_ms: int = 0) -> list[Outcome]:
        seqs = list(sequences)
        response = self.stub.Outcomes(
            local_pb2.OutcomesRequest(sequences=seqs, wait_ms=wait_ms),
            timeout=wait_ms / 1000 + 30,
        )
        return [_outcome(o) for o in response.outcomes]

    def fetch(self, limit: int = 1000, wait_ms: int = 0) -> list[envelope_pb2.Envelope]:
        response = self.stub.Fetch(
            local_pb2.FetchRequest(max=limit, wait_ms=wait_ms), timeout=wait_ms / 1000 + 30
        )
        return [decode(raw) for raw in response.envelopes]

    def acknowledge(self, hub_tickets: Sequence[str]) -> int:
        response = self.stub.Acknowledge(
            local_pb2.AcknowledgeRequest(hub_tickets=list(hub_tickets)), timeout=30
        )
        return response.acknowledged

    def status(self) -> local_pb2.StatusResponse:
        return self.stub.Status(local_pb2.StatusRequest(), timeout=10,
                                wait_for_ready=self.wait_for_ready)


def consult(address: str, envelope: bytes, deadline_ms: int = 5_000,
            wait_for_ready: bool = True) -> consult_pb2.ConsultResponse:
    """Ask a question through a node's local API (blocking)."""
    with grpc.insecure_channel(address) as channel:
        return local_pb2_grpc.LocalStub(channel).Consult(
            consult_pb2.ConsultRequest(envelope=envelope, deadline_ms=deadline_ms),
            timeout=deadline_ms / 1000 + 5, wait_for_ready=wait_for_ready)


class Consulter:
    """Many questions at once through a node's local API (asyncio): every question goes on one
    ``Local.Consultations`` stream. :meth:`consult` raises
    :class:`node.rpc.multiplex.CallFailed` when the node could not take the question (e.g.
    ``UNAVAILABLE``: the hub is unreachable)."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        stub = local_pb2_grpc.LocalStub(self.channel)
        self._caller: StreamCaller[consult_pb2.ConsultRequest, consult_pb2.ConsultResponse] = (
            StreamCaller(lambda: stub.Consultations(wait_for_ready=True),
                         consult_pb2.ConsultCalls, consult_pb2.ConsultCall))

    async def consult(self, envelope: bytes, deadline_ms: int = 5_000) -> consult_pb2.ConsultResponse:
        return await self._caller.call(
            consult_pb2.ConsultRequest(envelope=envelope, deadline_ms=deadline_ms),
            timeout=deadline_ms / 1000 + 5)

    async def close(self) -> None:
        await self._caller.close()
        await self.channel.close()

    async def __aenter__(self) -> Consulter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


Handler = Callable[[envelope_pb2.Envelope], Awaitable[tuple[int, bytes]]]


async def serve_answers(address: str, handler: Handler, ready: asyncio.Event | None = None) -> None:
    """Be an institution's answering application: answer every question the node passes on
    with ``handler(envelope) -> (SourceStatus, data)`` until cancelled."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = local_pb2_grpc.LocalStub(channel).Serve()
        await call.write(consult_pb2.Answer())  # opens the stream
        if ready is not None:
            ready.set()

        # grpc.aio allows one write at a time on a stream: answers computed concurrently
        # take turns (two concurrent writes break the stream).
        writing = asyncio.Lock()

        async def reply(question: consult_pb2.Question) -> None:
            status, data = await handler(decode(question.envelope))
            async with writing:
                with contextlib.suppress(grpc.aio.UsageError, asyncio.InvalidStateError):
                    # the stream ended meanwhile
                    await call.write(consult_pb2.Answer(id=question.id, status=status, data=data))

        tasks: set[asyncio.Task[None]] = set()
        async for question in call:
            task = asyncio.create_task(reply(question))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
