"""Receivers are bounded and distinct on every path (issue #13): the node's local API, the hub's
intake (a raw submit that skips the node's checks), consultations at the node and at the hub;
and an envelope the hub cannot take is given up by the node with a reason, not retried for ever.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from node.client import consult, make_envelope
from node.testing import DEMO_SERVICE
from node.wire.gen.crossroads.v1 import consult_pb2, envelope_pb2, hub_pb2_grpc
from tests.conftest import A, B, C, fetch_all, hub_channel, local_call, submit_raw

MAX_RECEIVERS = 3
#: Valid enterprise numbers not on the network (the count bound is checked before the directory).
OTHERS = ("0200065765", "0212344876")


@pytest.fixture
async def bounded(start_network):
    limits = {"limits": {"max_receivers": MAX_RECEIVERS}}
    return await start_network(A, B, C, hub_overrides=limits, node_overrides=limits)


def _cases() -> list[tuple[bytes, str]]:
    return [
        (make_envelope(DEMO_SERVICE, [B, B], b"twice", sender=A), "DUPLICATE_RECEIVER"),
        (make_envelope(DEMO_SERVICE, [B, C, B], b"twice", sender=A), "DUPLICATE_RECEIVER"),
        (make_envelope(DEMO_SERVICE, [B, C, *OTHERS], b"four", sender=A), "TOO_MANY_RECEIVERS"),
        (make_envelope(DEMO_SERVICE, [B] * 100_000, b"poison", sender=A), "TOO_MANY_RECEIVERS"),
        (make_envelope(DEMO_SERVICE, [B, C], b"fine", sender=A), "ACCEPTED"),
    ]


async def test_local_api_refuses_duplicate_and_too_many_receivers(bounded) -> None:
    cases = _cases()
    outcomes, seqs = await local_call(bounded.local_api(A), "submit", [raw for raw, _ in cases])
    assert [o.reason for o in outcomes] == [expected for _, expected in cases]
    assert "limit 3 (limits.max_receivers)" in outcomes[2].detail
    assert "0428759497" in outcomes[0].detail
    assert [s != 0 for s in seqs] == [False, False, False, False, True]
    got_b = await fetch_all(bounded.local_api(B), 1)
    got_c = await fetch_all(bounded.local_api(C), 1)
    assert [e.payload.data for e in got_b + got_c] == [b"fine", b"fine"]


async def test_hub_refuses_them_from_a_raw_submit(bounded) -> None:
    cases = _cases()
    key, cert = bounded.node_certs[A]
    batch = envelope_pb2.EnvelopeBatch(envelopes=[raw for raw, _ in cases])
    async with hub_channel(bounded.hub_address, bounded.pki.ca_cert, cert, key) as channel:
        (ack,) = await submit_raw(channel, [batch])
    assert [envelope_pb2.Reason.Name(o.reason) for o in ack.outcomes] == [
        expected for _, expected in cases]
    assert "100000 receivers" in ack.outcomes[3].detail
    got_b = await fetch_all(bounded.local_api(B), 1)
    assert [e.payload.data for e in got_b] == [b"fine"]  # queued once, not once per listing
    # The refused 100,000-long list is not copied into the audit log.
    db = sqlite3.connect(bounded.hub_db)
    (longest,) = db.execute("SELECT max(length(receiver)) FROM audit").fetchone()
    assert longest < 100


async def test_consultations_refuse_them_at_the_node_and_at_the_hub(bounded) -> None:
    duplicate = make_envelope(DEMO_SERVICE, [B, B], b"?", sender=A)
    too_many = make_envelope(DEMO_SERVICE, [B, C, *OTHERS], b"?", sender=A)
    for raw, expected in ((duplicate, "DUPLICATE_RECEIVER"), (too_many, "TOO_MANY_RECEIVERS")):
        at_node = await asyncio.to_thread(consult, bounded.local_api(A), raw, 2_000)
        assert at_node.status == consult_pb2.REFUSED
        assert envelope_pb2.Reason.Name(at_node.outcome.reason) == expected
        key, cert = bounded.node_certs[A]
        async with hub_channel(bounded.hub_address, bounded.pki.ca_cert, cert, key) as channel:
            at_hub = await hub_pb2_grpc.HubStub(channel).Consult(
                consult_pb2.ConsultRequest(envelope=raw, deadline_ms=2_000), timeout=10)
        assert at_hub.status == consult_pb2.REFUSED
        assert envelope_pb2.Reason.Name(at_hub.outcome.reason) == expected


@pytest.fixture
async def small_hub(start_network):
    """A hub that takes smaller messages than its nodes send (a misconfiguration, or nodes of
    another version): an envelope over the hub's message size ends the submit stream every
    time it is sent."""
    return await start_network(
        A, B,
        hub_overrides={"limits": {"max_payload_bytes": 16 * 1024, "max_batch_bytes": 64 * 1024}})


async def _outcomes(api: str, seqs: list[int], settled: int, timeout: float = 30) -> list:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcomes = await local_call(api, "outcomes", seqs, wait_ms=500)
        if sum(o.reason != "PENDING" for o in outcomes) >= settled or loop.time() > deadline:
            return outcomes


async def test_node_gives_up_on_an_envelope_the_hub_cannot_take(small_hub) -> None:
    net = small_hub
    before = make_envelope(DEMO_SERVICE, [B], b"before", sender=A)
    too_big = make_envelope(DEMO_SERVICE, [B], b"x" * (200 * 1024), sender=A)
    after = make_envelope(DEMO_SERVICE, [B], b"after", sender=A)
    outcomes, seqs = await local_call(net.local_api(A), "submit", [before, too_big, after])
    assert [o.reason for o in outcomes] == ["ACCEPTED"] * 3  # within the node's own limits
    outcomes = await _outcomes(net.local_api(A), seqs, 3)
    assert [o.reason for o in outcomes] == ["ACCEPTED", "UNDELIVERABLE", "ACCEPTED"]
    assert "RESOURCE_EXHAUSTED" in outcomes[1].detail
    got = await fetch_all(net.local_api(B), 2)
    assert sorted(e.payload.data for e in got) == [b"after", b"before"]
    status = await local_call(net.local_api(A), "status")
    assert (status.outbox_pending, status.sent_accepted, status.sent_refused) == (0, 2, 1)
    assert net.nodes[A].uplink is not None and net.nodes[A].uplink.decided_locally == 1
    # Given up for good: a restarted node does not send it again.
    batches = net.hub.intake.stats.batches if net.hub.intake else 0
    await net.stop_node(A)
    await net.start_node(A)
    await asyncio.sleep(1.0)
    outcomes = await local_call(net.local_api(A), "outcomes", seqs)
    assert [o.reason for o in outcomes] == ["ACCEPTED", "UNDELIVERABLE", "ACCEPTED"]
    assert net.nodes[A].uplink.connected
    assert (net.hub.intake.stats.batches if net.hub.intake else 0) == batches
    assert (await local_call(net.local_api(A), "status")).outbox_pending == 0


async def test_a_stream_failure_does_not_give_up_on_envelopes_that_go_through(small_hub) -> None:
    """Isolation sends the envelopes around the bad one alone; each of them is delivered."""
    net = small_hub
    raws = [make_envelope(DEMO_SERVICE, [B], f"n{i}".encode(), sender=A) for i in range(5)]
    raws.insert(3, make_envelope(DEMO_SERVICE, [B], b"x" * (200 * 1024), sender=A))
    _, seqs = await local_call(net.local_api(A), "submit", raws)
    outcomes = await _outcomes(net.local_api(A), seqs, 6)
    assert [o.reason for o in outcomes] == ["ACCEPTED"] * 3 + ["UNDELIVERABLE"] + ["ACCEPTED"] * 2
    assert len(await fetch_all(net.local_api(B), 5)) == 5


def test_reason_numbers_are_stable() -> None:
    assert (envelope_pb2.DUPLICATE_RECEIVER, envelope_pb2.TOO_MANY_RECEIVERS,
            envelope_pb2.UNDELIVERABLE) == (18, 19, 20)

