"""Retention at work in a running network (real hub and nodes in process, mTLS, SQLite): a
node's finished envelopes leave its store after the period; the rest, and the traffic, go on."""

from __future__ import annotations

from node.client import make_envelope
from node.member.retention import DAY_US
from node.testing import DEMO_SERVICE
from tests.conftest import A, B, NetworkStarter, local_call


async def test_finished_envelopes_go_after_the_retention_period(start_network: NetworkStarter) -> None:
    net = await start_network(A, B, node_overrides={"retention_days": 7})
    at_a, at_b = net.nodes[A].retention, net.nodes[B].retention
    assert at_a is not None and at_b is not None
    envelopes = [make_envelope(DEMO_SERVICE, [B], b"p%d" % i, sender_ticket=str(i))
                 for i in range(3)]
    _, seqs = await local_call(net.local_api(A), "submit", envelopes)
    decided = await local_call(net.local_api(A), "outcomes", seqs, wait_ms=10_000)
    assert [o.reason for o in decided] == ["ACCEPTED"] * 3
    got = await local_call(net.local_api(B), "fetch", 10, wait_ms=10_000)
    assert len(got) == 3
    await local_call(net.local_api(B), "acknowledge", [got[0].hub_ticket, got[1].hub_ticket])

    t0 = 2_000 * DAY_US
    await at_a.run_once(t0)
    await at_b.run_once(t0)
    purged_a = await at_a.run_once(t0 + 7 * DAY_US)
    purged_b = await at_b.run_once(t0 + 7 * DAY_US)
    assert (purged_a.outbox, purged_b.inbox) == (3, 2)

    # What the applications see: the sender's outcomes say why they are gone; the
    # receiver still has the envelope it has not acknowledged; the counters go on.
    after = await local_call(net.local_api(A), "outcomes", seqs, wait_ms=5_000)
    assert [(o.reason, o.detail) for o in after] == [("UNKNOWN", "purged by retention")] * 3
    left = await local_call(net.local_api(B), "fetch", 10)
    assert [e.sender_ticket for e in left] == [got[2].sender_ticket]
    status = await local_call(net.local_api(B), "status")
    assert (status.inbox_unacknowledged, status.inbox_total) == (1, 3)

    _, more = await local_call(net.local_api(A), "submit", [
        make_envelope(DEMO_SERVICE, [B], b"later", sender_ticket="later")])
    assert more == [seqs[-1] + 1]
    (outcome,) = await local_call(net.local_api(A), "outcomes", more, wait_ms=10_000)
    assert outcome.reason == "ACCEPTED"


async def test_retention_0_keeps_everything(start_network: NetworkStarter) -> None:
    net = await start_network(A, node_overrides={"retention_days": 0})
    assert net.nodes[A].retention is None
