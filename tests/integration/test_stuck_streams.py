"""A stream that stays open but is never answered is given up and retried, at both hops.

Keepalive only notices a dead connection. A peer that is alive and takes a stream, but
never acknowledges on it, used to hold the uplink (node -> hub) or a delivery worker
(hub -> node) for ever. Here the other end is a real gRPC server on real mTLS that goes
silent on its first stream and answers the next one.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc

from node.client import make_envelope
from node.core.errors import Unavailable
from node.member.uplink import Uplink
from node.rpc.tls import TlsMaterial, server_options
from node.store.node_store import NodeStore
from node.testing import DEMO_SERVICE, InProcessNetwork
from node.wire.gen.crossroads.v1 import envelope_pb2, hub_pb2, hub_pb2_grpc, node_pb2, node_pb2_grpc
from tests.conftest import A, B, hub_channel, local_call

#: ``[timeouts] ack_s`` of the daemon under test: a silent stream is given up quickly.
SHORT_ACK = {"timeouts": {"ack_s": 0.5}}


async def _silent_first(streams: list[list[Any]], requests: AsyncIterator[Any],
                        seen_of: Callable[[Any], Iterable[Any]],
                        answer: Callable[[Any], Any]) -> AsyncIterator[Any]:
    """Keep what each stream brings (``seen_of(message)``, one list per stream) and answer
    every message, except on the first stream: it takes its messages without a word."""
    seen: list[Any] = []
    streams.append(seen)
    silent = len(streams) == 1
    async for message in requests:
        seen.extend(seen_of(message))
        if not silent:
            yield answer(message)


class SilentFirstHub(hub_pb2_grpc.HubServicer):
    """Takes the batches of its first ``Submit`` stream without a word; acks later ones."""

    def __init__(self) -> None:
        self.streams: list[list[int]] = []  # first sequences seen, per stream

    async def Register(self, request, context):  # noqa: N802 - gRPC method name
        return hub_pb2.RegisterResponse(institution=A)

    async def Submit(self, request_iterator, context):  # noqa: N802 - gRPC method name
        # grpc.aio serves a stream by its handler's kind: an async generator function here.
        async for ack in _silent_first(self.streams, request_iterator,
                                       lambda b: [b.first_sequence], _accept_all):
            yield ack


def _accept_all(batch: envelope_pb2.EnvelopeBatch) -> envelope_pb2.BatchAck:
    return envelope_pb2.BatchAck(first_sequence=batch.first_sequence, outcomes=[
        envelope_pb2.EnvelopeOutcome(index=i, reason=envelope_pb2.ACCEPTED,
                                     hub_ticket=f"t-{batch.first_sequence + i}")
        for i in range(len(batch.envelopes))])


class SilentFirstNode(node_pb2_grpc.NodeServicer):
    """Reads the batches of its first ``Deliver`` stream and never acks; acks later ones."""

    def __init__(self) -> None:
        self.streams: list[list[str]] = []  # hub tickets received, per stream

    async def Deliver(self, request_iterator, context):  # noqa: N802 - gRPC method name
        async for ack in _silent_first(
                self.streams, request_iterator, lambda b: b.hub_tickets,
                lambda b: node_pb2.DeliveryAck(last_sequence=b.last_sequence,
                                               stored=len(b.envelopes))):
            yield ack


async def _serve(add: Callable[[grpc.aio.Server], None], tls: TlsMaterial) -> tuple[
        grpc.aio.Server, int]:
    server = grpc.aio.server(options=server_options(64 << 20))
    add(server)
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials())
    await server.start()
    return server, port


async def _until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_uplink_gives_up_an_unanswered_stream_and_resends(tmp_path) -> None:
    layout = InProcessNetwork(tmp_path / "net", institutions=(A,), node_overrides=SHORT_ACK)
    hub = SilentFirstHub()
    server, port = await _serve(lambda s: hub_pb2_grpc.add_HubServicer_to_server(hub, s),
                                TlsMaterial(layout.pki.ca_cert.read_bytes(),
                                            layout.hub_cert.read_bytes(),
                                            layout.hub_key.read_bytes()))
    config = layout.node_config(A, f"127.0.0.1:{port}")
    key, cert = layout.node_certs[A]
    store = NodeStore(tmp_path / "node.sqlite")
    await store.open()
    uplink = Uplink(config, TlsMaterial(layout.pki.ca_cert.read_bytes(), cert.read_bytes(),
                                        key.read_bytes()), store, "127.0.0.1:1")
    try:
        await store.enqueue([make_envelope(DEMO_SERVICE, [B], b"x", sender=A) for _ in range(3)])
        uplink.start()
        await _until(lambda: store.decided_seq == 3)
    finally:
        await uplink.stop()
        await store.close()
        await server.stop(None)
    # The silent stream took the batch; the uplink gave it up and sent it again.
    assert hub.streams[0] == [1]
    assert [1] in hub.streams[1:]
    assert store.sent_accepted == 3


async def test_delivery_gives_up_an_unanswered_stream_and_resends(tmp_path) -> None:
    net = InProcessNetwork(tmp_path / "net", institutions=(A, B), hub_overrides=SHORT_ACK)
    await net.start()
    node = SilentFirstNode()
    server = None
    try:
        server = await _in_place_of_b(net, node)
        envelopes = [make_envelope(DEMO_SERVICE, [B], f"{i}".encode(), sender_ticket=str(i))
                     for i in range(5)]
        await _submit_through_a(net, envelopes)
        await _until(lambda: net.hub.deliverer.pending.get(B, 0) == 0
                     and len(node.streams) >= 2)
    finally:
        if server is not None:
            await server.stop(None)
        await net.stop()
    assert len(node.streams[0]) == 5  # taken, never acknowledged
    assert sorted(node.streams[-1]) == sorted(node.streams[0])  # the same envelopes again
    assert net.hub.deliverer.status()[B]["delivered"] == 5


async def _in_place_of_b(net: InProcessNetwork, node: SilentFirstNode) -> grpc.aio.Server:
    """Stop B's node and serve ``node`` on B's certificate instead, registered at the hub."""
    key, cert = net.node_certs[B]
    await net.stop_node(B)
    server, port = await _serve(
        lambda s: node_pb2_grpc.add_NodeServicer_to_server(node, s),
        TlsMaterial(net.pki.ca_cert.read_bytes(), cert.read_bytes(), key.read_bytes()))
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        await hub_pb2_grpc.HubStub(channel).Register(
            hub_pb2.RegisterRequest(endpoint=f"127.0.0.1:{port}"), timeout=10)
    return server


async def _submit_through_a(net: InProcessNetwork, envelopes: list[bytes]) -> None:
    """Submit through A's node and wait until the hub has stored every envelope."""
    _, seqs = await local_call(net.local_api(A), "submit", envelopes)
    decided = await local_call(net.local_api(A), "outcomes", seqs, wait_ms=10_000)
    assert {o.reason for o in decided} == {"ACCEPTED"}


async def test_nothing_is_left_unretrieved_or_pending_at_stop(tmp_path) -> None:
    """A stopped hub leaves no task or future for asyncio to report when it is collected
    (each report is an ``asyncio_unhandled`` error line in the daemon's log).

    It did: each ``Submit`` stream that ended while waiting for its next batch left a
    pending ``Queue.get`` task behind ("Task was destroyed but it is pending!"), here the
    two nodes' streams at stop. The hub also stops with a failed read in flight (the next
    batch's, while the node holds the current one, as when the database goes away)."""
    net = InProcessNetwork(tmp_path / "net", institutions=(A, B))
    await net.start()
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    node = SilentFirstNode()
    server = None
    store = net.hub.deliverer.store
    real = {"read_queue": store.read_queue}  # dropped at the end: nothing keeps the hub

    async def failing_after_the_first_batch(dest: str, after: int, *args: Any) -> Any:
        if after > 0:  # the prefetch of the batch after the one in flight
            raise Unavailable("hub_delivery: IO_ERROR (database gone): nothing stored, retry")
        return await real["read_queue"](dest, after, *args)

    try:
        store.read_queue = failing_after_the_first_batch  # type: ignore[method-assign]
        server = await _in_place_of_b(net, node)
        await _submit_through_a(net, [make_envelope(DEMO_SERVICE, [B], b"x", sender_ticket="1")])
        await _until(lambda: _prefetch_failed(net.hub.deliverer))
        await net.stop()  # while the node still holds the batch, unanswered
        real.clear()
        del net.hub, store  # the stopped hub is collected, as at a daemon's exit
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
        if server is not None:
            await server.stop(None)
        if hasattr(net, "hub"):
            await net.stop()
    assert node.streams[0], "the batch was not in flight"
    assert [(c.get("message"), repr(c.get("task") or c.get("future"))[:200])
            for c in reported] == []


def _prefetch_failed(deliverer: Any) -> bool:
    """B's worker holds a read of the next batch that has ended (failed)."""
    worker = deliverer._destinations.get(B)
    return worker is not None and worker.prefetch is not None and worker.prefetch.done()
