"""The node's gRPC edge for the hub: receive delivery batches, store, acknowledge; pass the
hub's questions to the answering application. Only the hub may call it (the node server's
table, :data:`NODE_TABLE`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from node.core.errors import InvalidArgument
from node.member.answers import Answering
from node.member.declaration_desk import DeclarationDesk
from node.rpc.auth_interceptor import HEALTH_AND_REFLECTION, Role, Table, recheck_peer
from node.rpc.edge import StreamCall, streaming, until_drained
from node.rpc.multiplex import serve_calls
from node.store.protocols import Inbox
from node.wire.gen.crossroads.v1 import consult_pb2, node_pb2, node_pb2_grpc

__all__ = ["NODE_TABLE", "DeliverService"]

#: The node server's table (node/rpc/auth_interceptor.py): the hub alone calls ``Node``;
#: health and reflection are open to any certificate of the network.
NODE_TABLE: Table = {
    "/crossroads.v1.Node/": frozenset({Role.HUB}),
    **HEALTH_AND_REFLECTION,
}


@dataclass(eq=False)
class DeliverService(node_pb2_grpc.NodeServicer):
    store: Inbox
    answering: Answering
    desk: DeclarationDesk | None = None
    #: The hub's questions answered at once on its ``Answers`` stream
    #: (``[limits] stream_calls_in_flight``).
    max_calls_in_flight: int = field(kw_only=True)
    #: Envelopes stored, and envelopes delivered again (already stored), since start.
    received: int = field(default=0, init=False)
    duplicates: int = field(default=0, init=False)
    #: Set by a graceful stop: the streams end after the batch in hand.
    draining: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def _deliver(
        self, call: StreamCall[node_pb2.DeliveryBatch]
    ) -> AsyncIterator[node_pb2.DeliveryAck]:
        summary = call.summary
        async for batch in until_drained(call.requests, self.draining):
            tickets, envelopes = batch.hub_tickets, batch.envelopes
            if len(tickets) != len(envelopes) or any(not t for t in tickets):
                raise InvalidArgument("every delivered envelope needs its hub ticket")
            stored = await self.store.store_delivery(
                list(tickets), list(envelopes), self.desk.mutation_for if self.desk else None)
            duplicates = len(envelopes) - stored
            self.received += stored
            self.duplicates += duplicates
            summary["batches"] += 1
            summary["stored"] += stored
            summary["duplicates"] += duplicates
            yield node_pb2.DeliveryAck(
                last_sequence=batch.last_sequence, stored=stored, duplicates=duplicates
            )

    Deliver = streaming("Node.Deliver", _deliver, batches=0, stored=0, duplicates=0)

    async def _answers(
        self, call: StreamCall[consult_pb2.AnswerCalls]
    ) -> AsyncIterator[consult_pb2.AnswerReplies]:
        async def recheck() -> None:  # a certificate revoked mid-stream ends the stream
            await recheck_peer()
            call.summary["messages"] += 1

        async for replies in serve_calls(
            call.requests, self.answering.answer, consult_pb2.AnswerReplies,
            consult_pb2.AnswerReply, on_message=recheck, draining=self.draining,
            max_in_flight=self.max_calls_in_flight,
            max_message_bytes=self.answering.max_reply_bytes,
        ):
            yield replies

    Answers = streaming("Node.Answers", _answers, messages=0)
