"""Real hub and nodes in process (real gRPC over mTLS, real SQLite): delivery behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time

from node.audit_tool import verify_file
from node.client import make_envelope
from node.testing import DEMO_SERVICE, InProcessNetwork
from node.wire.gen.crossroads.v1 import envelope_pb2
from tests.conftest import A, B, C, fetch_all, hub_channel, local_call, submit_raw


async def test_envelopes_reach_each_receiver_once_in_order(network: InProcessNetwork) -> None:
    envelopes = [
        make_envelope(DEMO_SERVICE, [B] if i % 2 else [B, C], f"m{i}".encode(),
                      subject_citizen="85073003328", sender_ticket=str(i))
        for i in range(50)
    ]
    outcomes, seqs = await local_call(network.local_api(A), "submit", envelopes)
    assert [o.reason for o in outcomes] == ["ACCEPTED"] * 50
    decided = await local_call(network.local_api(A), "outcomes", seqs, wait_ms=10_000)
    assert all(o.reason == "ACCEPTED" and o.hub_ticket for o in decided)

    at_b = await fetch_all(network.local_api(B), 50)
    at_c = await fetch_all(network.local_api(C), 25)
    assert [e.sender_ticket for e in at_b] == [str(i) for i in range(50)]
    assert [e.sender_ticket for e in at_c] == [str(i) for i in range(0, 50, 2)]
    assert all(e.sender == A and e.hub_ticket and e.received_at_unix_us for e in at_b)
    # The hub ticket the sender learned is the one the receiver holds.
    assert {o.hub_ticket for o in decided} == {e.hub_ticket for e in at_b}
    assert verify_file(network.hub_db).problem is None


async def test_offline_receiver_gets_its_envelopes_when_back(network: InProcessNetwork) -> None:
    await network.stop_node(C)
    envelopes = [make_envelope(DEMO_SERVICE, [C], b"later", sender_ticket=str(i)) for i in range(30)]
    _, seqs = await local_call(network.local_api(A), "submit", envelopes)
    decided = await local_call(network.local_api(A), "outcomes", seqs, wait_ms=10_000)
    assert {o.reason for o in decided} == {"ACCEPTED"}
    assert network.hub.deliverer.pending[C] == 30  # waiting at the hub
    await network.start_node(C)
    got = await fetch_all(network.local_api(C), 30)
    assert sorted(int(e.sender_ticket) for e in got) == list(range(30))


async def test_quota_refuses_instead_of_growing(start_network) -> None:
    net = await start_network(A, B, hub_overrides={"limits": {"destination_quota": 5}})
    await net.stop_node(B)
    envelopes = [make_envelope(DEMO_SERVICE, [B], b"x") for _ in range(8)]
    _, seqs = await local_call(net.local_api(A), "submit", envelopes)
    decided = await local_call(net.local_api(A), "outcomes", seqs, wait_ms=10_000)
    assert [o.reason for o in decided] == ["ACCEPTED"] * 5 + ["QUOTA_EXCEEDED"] * 3
    assert "full" in decided[-1].detail
    status = await local_call(net.local_api(A), "status")
    assert (status.sent_accepted, status.sent_refused) == (5, 3)


async def test_resent_batch_is_not_stored_twice(network: InProcessNetwork) -> None:
    key, cert = network.node_certs[A]
    raws = [make_envelope(DEMO_SERVICE, [B], f"{i}".encode(), sender=A) for i in range(3)]
    batch = envelope_pb2.EnvelopeBatch(origin="test-origin", first_sequence=1, envelopes=raws)
    channel = hub_channel(network.hub_address, network.pki.ca_cert, cert, key)
    async with channel:
        first = await submit_raw(channel, [batch])
        again = await submit_raw(channel, [batch])
        # A batch overlapping the stored one: the first two are replays, the third is new.
        overlap = envelope_pb2.EnvelopeBatch(
            origin="test-origin", first_sequence=2,
            envelopes=[raws[1], raws[2], make_envelope(DEMO_SERVICE, [B], b"new", sender=A)],
        )
        third = await submit_raw(channel, [overlap])
    tickets = [o.hub_ticket for o in first[0].outcomes]
    assert all(tickets) and len(set(tickets)) == 3
    assert [o.hub_ticket for o in again[0].outcomes] == tickets
    assert [o.hub_ticket for o in third[0].outcomes][:2] == tickets[1:]
    assert [o.index for o in third[0].outcomes] == [0, 1, 2]
    got = await fetch_all(network.local_api(B), 4)
    assert len(got) == 4 and len({e.hub_ticket for e in got}) == 4
    db = sqlite3.connect(network.hub_db)
    accepted = db.execute("SELECT count(*) FROM audit WHERE event = 'ACCEPTED'").fetchone()[0]
    assert accepted == 4


async def test_a_resend_after_its_stream_went_away_mid_commit_gets_the_stored_outcomes(
    network: InProcessNetwork,
) -> None:
    """The sender went away while the hub committed its batch: the hub's wait was cancelled,
    its writer thread committed all the same. The resend is answered with the stored
    outcomes. (It used to be taken for new, by a cached high that missed that commit, and
    refused as RESEND_RACED on every resend: the node's outbox stalled for good.)"""
    intake, store = network.hub.intake, network.hub.store
    raws = [make_envelope(DEMO_SERVICE, [B], f"{i}".encode(), sender=A) for i in range(3)]
    batch = envelope_pb2.EnvelopeBatch(origin="went-away", first_sequence=1, envelopes=raws)
    commit = await intake.prepare(A, batch)
    waiting = asyncio.ensure_future(commit())
    await asyncio.sleep(0)  # the task hands the commit to the writer thread
    # Hold the event loop (nothing new reaches the writer thread) while the writer thread
    # commits; then cancel the wait before the task learns the commit is done, as when
    # the sender's stream is cancelled.
    time.sleep(1.0)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    assert await store.origin_high(A, "went-away") == 3  # stored all the same

    again = await intake.process(A, batch)
    assert [o.reason for o in again.outcomes] == [envelope_pb2.ACCEPTED] * 3
    db = sqlite3.connect(network.hub_db)
    stored = {t for (t,) in db.execute("SELECT hub_ticket FROM audit WHERE event = 'ACCEPTED'")}
    assert {o.hub_ticket for o in again.outcomes} == stored and len(stored) == 3
