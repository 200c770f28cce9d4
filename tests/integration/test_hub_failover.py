"""A node with a list of hub addresses, real hub and nodes in process (mTLS, SQLite): the
first address is a port where nothing listens, and the node fails over to the live hub."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from node.audit_tool import verify_file
from node.client import make_envelope
from node.core.directory import Institution
from node.core.errors import Unavailable
from node.member.hub_caller import HubCaller
from node.metrics import node_metrics
from node.rpc.hub_choice import HubChoice
from node.testing import InProcessNetwork, free_port
from node.wire.gen.crossroads.v1 import consult_pb2
from tests.conftest import (
    A,
    B,
    C,
    NetworkStarter,
    fetch_all,
    numbered_envelopes,
    submit_accepted,
)


async def _wait_for(condition, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_node_listing_a_dead_address_first_sends_receives_and_watches(
        start_network: NetworkStarter) -> None:
    dead = f"127.0.0.1:{free_port()}"
    net: InProcessNetwork = await start_network(hub_list=lambda live: [dead, live])
    live = net.hub_address
    await submit_accepted(net.local_api(A),
                          numbered_envelopes(40, lambda i: [B, C] if i % 2 else [B]))
    at_b = await fetch_all(net.local_api(B), 40)
    at_c = await fetch_all(net.local_api(C), 20)
    assert [e.sender_ticket for e in at_b] == [str(i) for i in range(40)]  # once, in order
    assert [e.sender_ticket for e in at_c] == [str(i) for i in range(1, 40, 2)]
    # A directory change reaches every node's fragment through the live hub.
    revision = await net.hub.directory.apply([(Institution(A, 17, "Renamed centre"), False)])
    await _wait_for(lambda: all(n.fragment.revision == revision for n in net.nodes.values()))
    for node in net.nodes.values():
        assert node.hubs.current == live and node.hubs.switches == 1  # moved once, stayed
        assert node.uplink is not None and node.uplink.address == live
        assert node.watcher is not None and node.watcher.address == live
        samples = {(s.name, tuple(s.labels.values())): s.value
                   for m in node_metrics(node) for s in m.samples}
        assert samples[("crossroads_node_hub_address", (live,))] == 1.0
        assert samples[("crossroads_node_hub_address", (dead,))] == 0.0
        assert samples[("crossroads_node_hub_switches_total", ())] == 1.0
    assert verify_file(net.hub_db).problem is None


async def test_consultations_move_to_the_next_address_when_the_hub_is_not_reachable(
        network: InProcessNetwork) -> None:
    dead = f"127.0.0.1:{free_port()}"
    node = network.nodes[A]
    config = replace(node.config, hubs=(dead, network.hub_address))
    hubs = HubChoice(config.hubs)
    caller = HubCaller(config, node.tls, hubs=hubs)
    question = consult_pb2.ConsultRequest(
        envelope=make_envelope("no.such.service", [], b"", subject_citizen="85073003328"),
        deadline_ms=2_000)
    try:
        try:
            await caller.consult(question)
            raise AssertionError("a hub answered at a port where nothing listens")
        except Unavailable as exc:  # the question in flight fails with a clear status
            assert "hub" in str(exc)
        assert hubs.current == network.hub_address
        answer = await caller.consult(question)  # the next one goes to the live hub
        assert answer.status == consult_pb2.REFUSED
        assert caller.address == network.hub_address
    finally:
        await caller.close()
