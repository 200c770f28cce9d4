"""The destination quota holds under concurrent, pipelined batches (issue #13: a quota of
100,000 accepted 102,000 in one of three runs).

The hub prepares a stream's next batches while the previous one commits, and several
streams run at once; before the fix each prepared batch was checked against the count of
*committed* envelopes only, so the batches in between were all let through.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
import structlog

from node.client import make_envelope
from node.testing import DEMO_SERVICE, InProcessNetwork
from node.wire.gen.crossroads.v1 import envelope_pb2, hub_pb2_grpc
from tests.conftest import A, B, C, NetworkStarter, hub_channel, local_call

QUOTA = 300
BATCHES, PER_BATCH = 8, 50  # per stream, written back to back


async def _flood(net: InProcessNetwork, sender: str, tag: str) -> list[envelope_pb2.BatchAck]:
    key, cert = net.node_certs[sender]
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        call = hub_pb2_grpc.HubStub(channel).Submit(timeout=60)
        for b in range(BATCHES):
            await call.write(envelope_pb2.EnvelopeBatch(envelopes=[
                make_envelope(DEMO_SERVICE, [B], b"q", sender=sender,
                              sender_ticket=f"{tag}-{b}-{i}") for i in range(PER_BATCH)]))
        await call.done_writing()
        acks = []
        while (ack := await call.read()) is not grpc.aio.EOF:
            acks.append(ack)
        return acks


async def test_concurrent_pipelined_batches_never_pass_the_quota(tmp_path: Path) -> None:
    async with InProcessNetwork(tmp_path / "q", institutions=(A, B, C),
                                hub_overrides={"limits": {"destination_quota": QUOTA}}) as net:
        await net.stop_node(B)  # nothing leaves the queue
        with structlog.testing.capture_logs() as logs:
            results = await asyncio.gather(*(_flood(net, s, f"{s}{k}")
                                             for s in (A, C) for k in range(2)))
        outcomes = [o for acks in results for ack in acks for o in ack.outcomes]
        assert len(outcomes) == 4 * BATCHES * PER_BATCH
        accepted = sum(o.reason == envelope_pb2.ACCEPTED for o in outcomes)
        refused = {o.reason for o in outcomes if o.reason != envelope_pb2.ACCEPTED}
        assert accepted == QUOTA  # filled, and not one more
        assert refused == {envelope_pb2.QUOTA_EXCEEDED}
        assert net.hub.deliverer.pending[B] == QUOTA
        assert net.hub.intake.reserved == {}  # every reservation ended with its stream
        # Logged by the hub: once per sender and reason in the interval, not per envelope.
        lines = [e for e in logs if e["event"] == "envelopes_refused"]
        assert sorted(e["sender"] for e in lines) == [A, C], lines
        assert {e["reason"] for e in lines} == {"QUOTA_EXCEEDED"}
    conn = sqlite3.connect(net.hub_db)
    try:
        (queued,) = conn.execute("SELECT count(*) FROM audit WHERE event = 'ACCEPTED'").fetchone()
    finally:
        conn.close()
    assert queued == QUOTA


async def test_a_stream_cut_mid_way_gives_its_reservations_back(start_network: NetworkStarter) -> None:
    net = await start_network(A, B, hub_overrides={"limits": {"destination_quota": QUOTA}})
    await net.stop_node(B)
    key, cert = net.node_certs[A]
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        call = hub_pb2_grpc.HubStub(channel).Submit(timeout=60)
        for b in range(BATCHES):
            await call.write(envelope_pb2.EnvelopeBatch(envelopes=[
                make_envelope(DEMO_SERVICE, [B], b"q", sender=A, sender_ticket=f"{b}-{i}")
                for i in range(PER_BATCH)]))
        await call.read()  # one ack, then the sender goes away
        call.cancel()
    for _ in range(200):  # the hub notices the cancelled stream
        if not net.hub.intake.reserved:
            break
        await asyncio.sleep(0.02)
    assert net.hub.intake.reserved == {}
    # What was stored counts; the rest of the quota is still available.
    stored = net.hub.deliverer.pending[B]
    assert PER_BATCH <= stored <= QUOTA
    acks = await _flood(net, A, "again")
    accepted = sum(o.reason == envelope_pb2.ACCEPTED for a in acks for o in a.outcomes)
    assert stored + accepted == QUOTA


async def test_quota_refusals_are_logged_at_the_node(start_network: NetworkStarter) -> None:
    net = await start_network(A, B, hub_overrides={"limits": {"destination_quota": 5}})
    await net.stop_node(B)
    with structlog.testing.capture_logs() as logs:
        for round_ in range(3):
            envelopes = [make_envelope(DEMO_SERVICE, [B], b"x", sender_ticket=f"{round_}-{i}")
                         for i in range(8)]
            _, seqs = await local_call(net.local_api(A), "submit", envelopes)
            decided = await local_call(net.local_api(A), "outcomes", seqs, wait_ms=10_000)
            assert len(decided) == 8
    lines = [e for e in logs if e["event"] == "envelopes_refused_by_hub"]
    assert [(e["reason"], e["count"]) for e in lines] == [("QUOTA_EXCEEDED", 3)], lines
    assert "full" in lines[0]["detail"]
    assert net.nodes[A].uplink.refusal_logs.aggregator.seen == 3 + 8 + 8
