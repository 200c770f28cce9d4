"""A node's consultations to the hub, on behalf of its applications.

Every question goes on the one ``Hub.Consultations`` stream the node keeps open (see
:mod:`node.rpc.multiplex`: the stream is opened on the first question and again after it
broke). A question the hub could not take fails with ``HUB_UNAVAILABLE``, or with
``RESOURCE_EXHAUSTED`` (reason ``TOO_MANY_IN_FLIGHT``) when the hub refused it for having
the limit of this node's questions in flight: the application may retry it later.
"""

from __future__ import annotations

import grpc

from node.config import NodeConfig
from node.core.errors import ResourceExhausted, Unavailable
from node.core.reasons import Reason
from node.rpc.multiplex import CallFailed, StreamCaller
from node.rpc.tls import TlsMaterial, channel_options, hub_tls_name
from node.wire.gen.crossroads.v1 import consult_pb2, hub_pb2_grpc

__all__ = ["HubCaller"]

# Beyond the question's own deadline, how long the node waits for the hub's reply.
REPLY_MARGIN_S = 0.5


class HubCaller:
    def __init__(self, config: NodeConfig, tls: TlsMaterial) -> None:
        self.config = config
        self.tls = tls
        self._channel: grpc.aio.Channel | None = None
        self._caller: StreamCaller[consult_pb2.ConsultRequest,
                                   consult_pb2.ConsultResponse] | None = None

    def _consultations(self) -> StreamCaller[consult_pb2.ConsultRequest,
                                             consult_pb2.ConsultResponse]:
        if self._caller is None:
            tls_name = self.config.hub_tls_name or hub_tls_name(self.config.network)
            self._channel = grpc.aio.secure_channel(
                self.config.hub, self.tls.channel_credentials(),
                options=channel_options(tls_name, self.config.limits.max_batch_bytes,
                                        self.config.keepalive))
            self._caller = StreamCaller(hub_pb2_grpc.HubStub(self._channel).Consultations,
                                        consult_pb2.ConsultCalls, consult_pb2.ConsultCall)
        return self._caller

    async def consult(self, request: consult_pb2.ConsultRequest) -> consult_pb2.ConsultResponse:
        deadline_ms = request.deadline_ms or 5_000
        try:
            return await self._consultations().call(
                request, timeout=deadline_ms / 1000 + REPLY_MARGIN_S)
        except CallFailed as exc:
            if exc.code == "RESOURCE_EXHAUSTED":  # the hub is busy with this node's questions
                raise ResourceExhausted(f"hub: {exc.detail}", Reason.TOO_MANY_IN_FLIGHT) from exc
            raise Unavailable(f"hub: {exc}", "HUB_UNAVAILABLE") from exc

    async def close(self) -> None:
        if self._caller is not None:
            await self._caller.close()
            self._caller = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
