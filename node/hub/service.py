"""The hub's gRPC edge: authenticate, hand batches to the intake, answer."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog

from node.core.errors import CrossroadsError, InvalidArgument, PermissionDenied
from node.hub.delivery import Deliverer
from node.hub.intake import Intake
from node.rpc.edge import guard_stream, guard_unary, until_drained
from node.rpc.peer import PeerAuthenticator
from node.store.hub_store import HubStore
from node.wire.gen.crossroads.v1 import envelope_pb2, hub_pb2, hub_pb2_grpc

__all__ = ["HubService"]

log = structlog.get_logger(__name__)
_ENDPOINT = re.compile(r"^\[?[A-Za-z0-9.:-]+\]?:\d{1,5}$")


class HubService(hub_pb2_grpc.HubServicer):
    def __init__(
        self,
        peers: PeerAuthenticator,
        intake: Intake,
        deliverer: Deliverer,
        store: HubStore,
        institutions: frozenset[str],
    ) -> None:
        self.peers = peers
        self.intake = intake
        self.deliverer = deliverer
        self.store = store
        self.institutions = institutions
        self.draining = asyncio.Event()

    async def _authenticate(self, context: grpc.aio.ServicerContext, method: str) -> str:
        """The calling institution, or an audited refusal."""
        try:
            peer = self.peers.require(context, "institution")
            if self.institutions and peer.identity.name not in self.institutions:
                raise PermissionDenied(
                    f"institution {peer.identity.name} is not on this network",
                    "UNKNOWN_INSTITUTION",
                )
        except CrossroadsError as exc:
            await self._audit_refusal(context, method, exc)
            raise
        return peer.identity.name

    async def _audit_refusal(
        self, context: grpc.aio.ServicerContext, method: str, exc: CrossroadsError
    ) -> None:
        await self.store.append_audit(
            [(str(time.time_ns() // 1000), "REJECTED", "", "", "", method, "", "",
              exc.reason, f"{context.peer()}: {exc}")]
        )

    async def Submit(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[envelope_pb2.EnvelopeBatch],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[envelope_pb2.BatchAck]:
        summary: dict[str, Any] = {"batches": 0, "envelopes": 0}
        async for ack in guard_stream(
            "Hub.Submit", context, self._submit(request_iterator, context, summary), summary
        ):
            yield ack

    async def _submit(
        self,
        request_iterator: AsyncIterator[envelope_pb2.EnvelopeBatch],
        context: grpc.aio.ServicerContext,
        summary: dict[str, Any],
    ) -> AsyncIterator[envelope_pb2.BatchAck]:
        sender = await self._authenticate(context, "Hub.Submit")
        summary["sender"] = sender
        async for batch in until_drained(request_iterator, self.draining):
            # Re-checked per batch: a certificate revoked mid-stream stops the stream.
            await self._authenticate(context, "Hub.Submit")
            ack = await self.intake.process(sender, batch)
            summary["batches"] += 1
            summary["envelopes"] += len(batch.envelopes)
            yield ack

    async def Register(  # noqa: N802 - gRPC method name
        self, request: hub_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> hub_pb2.RegisterResponse:
        async def body() -> hub_pb2.RegisterResponse:
            institution = await self._authenticate(context, "Hub.Register")
            if not _ENDPOINT.match(request.endpoint):
                raise InvalidArgument(f"endpoint {request.endpoint!r} is not host:port",
                                      "BAD_ENDPOINT")
            await self.store.set_endpoint(institution, request.endpoint)
            self.deliverer.set_endpoint(institution, request.endpoint)
            log.info("registered", institution=institution, endpoint=request.endpoint)
            return hub_pb2.RegisterResponse(
                institution=institution,
                pending=self.deliverer.pending.get(institution, 0),
            )

        return await guard_unary("Hub.Register", context, body)
