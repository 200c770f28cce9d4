"""``crossroads_hub_delivery_connected``: 1 when a delivery stream to the node is open on a
live connection and the node answers in time; 0 otherwise (issue #13: it read 1 while the
node was frozen and 0 while it was healthy and idle)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from node.client import make_envelope
from node.rpc.tls import TlsMaterial, server_options
from node.testing import DEMO_SERVICE, InProcessNetwork
from node.wire.gen.crossroads.v1 import hub_pb2, hub_pb2_grpc, node_pb2_grpc
from tests.conftest import A, B, C, NetworkStarter, hub_channel, local_call

METRICS = {"metrics_listen": "127.0.0.1:0"}


async def _connected(net: InProcessNetwork, who: str) -> float | None:
    def get() -> str:
        port = net.hub.metrics.port  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return r.read().decode()

    text = await asyncio.to_thread(get)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "crossroads_hub_delivery_connected" and s.labels == {"destination": who}:
                return s.value
    return None


async def _until_metric(net: InProcessNetwork, who: str, value: float,
                        timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (seen := await _connected(net, who)) != value:
        assert time.monotonic() < deadline, f"{who}: metric {seen}, expected {value}"
        await asyncio.sleep(0.1)


class FrozenNode(node_pb2_grpc.NodeServicer):
    """Takes a delivery stream and its batches, never answers (as a stopped process would,
    minus the keepalive pings, which gRPC core still answers here)."""

    def __init__(self) -> None:
        self.batches = 0

    async def Deliver(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        async for _ in request_iterator:
            self.batches += 1
        if False:  # an async generator that never yields
            yield None


async def test_healthy_idle_node_reads_connected(start_network: NetworkStarter) -> None:
    net = await start_network(A, B, C, hub_overrides=METRICS)
    # Nothing was ever delivered to C: its node is up, registered, idle.
    await _until_metric(net, C, 1.0)
    await net.stop_node(C)
    await _until_metric(net, C, 0.0)  # the node went away: the stream is gone


async def test_node_that_takes_a_batch_and_never_answers_reads_not_connected(
        start_network: NetworkStarter) -> None:
    # A long ack timeout: the stream to the frozen node is not given up meanwhile.
    net = await start_network(A, B, hub_overrides={**METRICS, "timeouts": {"ack_s": 600}})
    node = FrozenNode()
    key, cert = net.node_certs[B]
    server = grpc.aio.server(options=server_options(64 << 20))
    node_pb2_grpc.add_NodeServicer_to_server(node, server)
    port = server.add_secure_port("127.0.0.1:0", TlsMaterial(
        net.pki.ca_cert.read_bytes(), cert.read_bytes(), key.read_bytes()).server_credentials())
    await server.start()
    try:
        await net.stop_node(B)
        net.hub.deliverer.liveness_bound_s = 0.5
        async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
            await hub_pb2_grpc.HubStub(channel).Register(
                hub_pb2.RegisterRequest(endpoint=f"127.0.0.1:{port}"), timeout=10)
        await _until_metric(net, B, 1.0)  # up and idle
        _, seqs = await local_call(net.local_api(A), "submit",
                                   [make_envelope(DEMO_SERVICE, [B], b"x")])
        await local_call(net.local_api(A), "outcomes", seqs, wait_ms=10_000)
        await _until_metric(net, B, 0.0)  # a batch unanswered past the bound
        assert node.batches == 1
        assert net.hub.deliverer.pending[B] == 1
    finally:
        await server.stop(None)
