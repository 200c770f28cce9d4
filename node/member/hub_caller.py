"""A node's consultations to the hub, on behalf of its applications.

Every question goes on the one ``Hub.Consultations`` stream the node keeps open (see
:mod:`node.rpc.multiplex`: the stream is opened on the first question and again after it
broke). A question the hub could not take fails with ``HUB_UNAVAILABLE``, or with
``RESOURCE_EXHAUSTED`` (reason ``TOO_MANY_IN_FLIGHT``) when the hub refused it for having
the limit of this node's questions in flight: the application may retry it later.

Failover (:mod:`node.rpc.hub_choice`): when the stream to the hub breaks, or the hub is not
reachable, the address is reported failed to the node's hub choice; the questions that were
on that stream fail (``HUB_UNAVAILABLE``: the application may ask again) and the next
question opens its stream on a channel to the address chosen then. An error the hub put in
one call's reply (e.g. the provider is unavailable) is no failure of the hub.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from node.config import NodeConfig
from node.core.errors import ResourceExhausted, Unavailable
from node.core.reasons import CallReason
from node.rpc.hub_choice import HubChoice
from node.rpc.multiplex import CallFailed, StreamCaller
from node.rpc.server_certs import ServerCheck, ServerRevoked
from node.rpc.tls import TlsMaterial, hub_channel
from node.wire.gen.crossroads.v1 import consult_pb2, hub_pb2_grpc

__all__ = ["HubCaller"]

# Beyond the question's own deadline, how long the node waits for the hub's reply.
REPLY_MARGIN_S = 0.5


class HubCaller:
    def __init__(self, config: NodeConfig, tls: TlsMaterial,
                 server_check: ServerCheck | None = None, hubs: HubChoice | None = None) -> None:
        self.config = config
        self.tls = tls
        #: Refuses a hub whose certificate the CA revoked, before a question is sent.
        self.server_check = server_check
        #: The node's shared hub choice (default: one of its own over ``config.hubs``).
        self.hubs = hubs or HubChoice(config.hubs)
        #: The address of ``_channel``.
        self.address = self.hubs.current
        self._channel: grpc.aio.Channel | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._caller: StreamCaller[consult_pb2.ConsultRequest,
                                   consult_pb2.ConsultResponse] | None = None

    def _consultations(self) -> StreamCaller[consult_pb2.ConsultRequest,
                                             consult_pb2.ConsultResponse]:
        """The caller, its channel to the hub chosen now: a new channel when the choice
        moved and no stream is open on the old one (a working stream is never cut)."""
        if self._caller is None:
            self._caller = StreamCaller(self._open_stream,
                                        consult_pb2.ConsultCalls, consult_pb2.ConsultCall)
        if self._channel is None or (self.address != self.hubs.current
                                     and not self._caller.streaming):
            old, self.address = self._channel, self.hubs.current
            self._channel = hub_channel(self.config, self.tls,
                                        self.config.limits.max_batch_bytes, self.address)
            if old is not None:
                task = asyncio.create_task(old.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        return self._caller

    def _open_stream(self) -> grpc.aio.StreamStreamCall:
        assert self._channel is not None  # _consultations() made it
        return hub_pb2_grpc.HubStub(self._channel).Consultations()

    async def consult(self, request: consult_pb2.ConsultRequest) -> consult_pb2.ConsultResponse:
        deadline_ms = request.deadline_ms or 5_000
        caller = self._consultations()
        address = self.address
        await self._check_server(deadline_ms / 1000)
        try:
            return await caller.call(
                request, timeout=deadline_ms / 1000 + REPLY_MARGIN_S)
        except CallFailed as exc:
            if caller.broken:  # the stream, not this call: the next hub address
                self.hubs.failed(address, str(exc))
            if exc.code == "RESOURCE_EXHAUSTED":  # the hub is busy with this node's questions
                raise ResourceExhausted(f"hub: {exc.detail}", CallReason.TOO_MANY_IN_FLIGHT) from exc
            raise Unavailable(f"hub: {exc}", CallReason.HUB_UNAVAILABLE) from exc

    async def _check_server(self, timeout_s: float) -> None:
        """With a CRL in force: connect first, then look at the hub's certificate."""
        channel, address = self._channel, self.address
        if self.server_check is None or channel is None or not self.server_check.active():
            return
        try:
            fresh = await self._connected(channel, timeout_s)
        except Unavailable as exc:
            self.hubs.failed(address, str(exc))
            raise
        try:
            self.server_check.check(fresh=fresh)
        except ServerRevoked as exc:
            self.hubs.failed(address, str(exc))
            await self.close()
            raise Unavailable(f"hub: {exc}", CallReason.HUB_UNAVAILABLE) from exc

    @staticmethod
    async def _connected(channel: grpc.aio.Channel, timeout_s: float) -> bool:
        """Wait until ``channel`` is connected (True if it was not already); an unreachable
        hub fails at once (TRANSIENT_FAILURE), as the call itself would."""
        ready, failed = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE
        state = channel.get_state(try_to_connect=True)
        if state == ready:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while state != ready:
            remaining = deadline - loop.time()
            if state in (failed, grpc.ChannelConnectivity.SHUTDOWN) or remaining <= 0:
                raise Unavailable("hub: not reachable", CallReason.HUB_UNAVAILABLE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
            state = channel.get_state()
        return True

    async def close(self) -> None:
        if self._caller is not None:
            await self._caller.close()
            self._caller = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self._closing:
            await asyncio.gather(*self._closing)
