"""Unary calls from a node to the hub on behalf of its applications (consultations)."""

from __future__ import annotations

import grpc

from node.config import NodeConfig
from node.core.errors import Unavailable
from node.rpc.tls import TlsMaterial, channel_options, hub_tls_name
from node.wire.gen.crossroads.v1 import consult_pb2, hub_pb2_grpc

__all__ = ["HubCaller"]


class HubCaller:
    def __init__(self, config: NodeConfig, tls: TlsMaterial) -> None:
        self.config = config
        self.tls = tls
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> hub_pb2_grpc.HubStub:
        if self._channel is None:
            tls_name = self.config.hub_tls_name or hub_tls_name(self.config.network)
            self._channel = grpc.aio.secure_channel(
                self.config.hub, self.tls.channel_credentials(),
                options=channel_options(tls_name, self.config.limits.max_batch_bytes))
        return hub_pb2_grpc.HubStub(self._channel)

    async def consult(self, request: consult_pb2.ConsultRequest) -> consult_pb2.ConsultResponse:
        deadline_ms = request.deadline_ms or 5_000
        try:
            return await self._stub().Consult(request, timeout=deadline_ms / 1000 + 0.5)
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"hub: {exc.code().name}: {exc.details()}", "HUB_UNAVAILABLE") from exc

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
