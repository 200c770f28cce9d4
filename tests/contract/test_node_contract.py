"""The node store's contract (node/store/protocols.py): every backend passes these.

The outbox numbers envelopes for good and keeps the hub's answers (counters and watermark
across restarts, outcomes over many acks), resubmissions under a ticket get the first
sequence only for the same content, retention never takes an undecided envelope, and the
inbox keeps arrival order and drops a redelivery.
"""

from __future__ import annotations

from pathlib import Path

from node.store.records import Enqueued, Purged
from node.wire.gen.crossroads.v1 import envelope_pb2 as pb
from tests.conftest import opened
from tests.contract.backends import NodeBackend
from tests.unit.test_node_retention import _accepted
from tests.unit.test_node_store import B, _ack


def _eq(first: bytes, again: bytes) -> bool:
    return first == again


async def test_counters_and_watermark_survive_a_restart(node_backend: NodeBackend, tmp_path: Path) -> None:
    async with opened(node_backend.node(tmp_path)) as store:
        await store.enqueue([b"x"] * 6)
        await store.record_ack(1, 4, _ack(1, [(pb.ACCEPTED, "", f"t{i}", (B,)) for i in range(3)]
                                          + [(pb.NOT_AUTHORIZED, "no", "", ())]), refused=[4])
    async with opened(node_backend.node(tmp_path)) as store:
        assert (store.decided_seq, store.sent_accepted, store.sent_refused) == (4, 3, 1)
        counts = store.counts()
        assert (counts.outbox_pending, counts.sent_accepted, counts.sent_refused) == (2, 3, 1)
        assert [o.reason for o in await store.outcomes([4, 5])] == ["NOT_AUTHORIZED", None]
        assert await store.pending(0, 10, 1 << 20) == [(5, b"x"), (6, b"x")]


async def test_outcomes_over_many_acks_and_gaps(node_backend: NodeBackend, tmp_path: Path) -> None:
    """Sequences spread over many batches, some asked twice, some after the last ack."""
    async with opened(node_backend.node(tmp_path)) as store:
        await store.enqueue([b"x"] * 100)
        for first in range(1, 91, 10):
            await store.record_ack(first, first + 9, _ack(first, [
                (pb.ACCEPTED, "", f"t{first + i}", (B,)) for i in range(10)]), refused=[])
        asked = [95, 1, 90, 10, 11, 50, 50, 89, 91, 100, 101]
        got = await store.outcomes(asked)
    assert [(o.seq, o.hub_ticket) for o in got] == [
        (s, f"t{s}" if s <= 90 else "") for s in asked]
    assert [o.reason for o in got][-3:] == [None, None, None]
    assert got[-1].detail == "unknown sequence"


async def test_undecided_envelopes_stay_however_old(node_backend: NodeBackend, tmp_path: Path) -> None:
    async with opened(node_backend.node(tmp_path)) as store:
        await store.enqueue([b"a", b"b", b"c"])
        await store.record_ack(1, 1, _accepted(1, 1), refused=[])
        await store.mark(10)
        assert await store.purge(before_us=10**15) == Purged(outbox=1, inbox=0, upto_seq=1)
        assert [seq for seq, _ in await store.pending(0, 10, 1 << 20)] == [2, 3]
        (b,) = await store.outcomes([2])
        assert b.awaited  # still waited for, not "purged"


async def test_a_ticket_reused_for_other_content_is_a_new_envelope(
        node_backend: NodeBackend, tmp_path: Path) -> None:
    async with opened(node_backend.node(tmp_path)) as store:
        assert await store.enqueue_once([b"a", b"b"], ["t", "t"], _eq) == Enqueued(
            [1, 2], frozenset())
        # The ticket's latest envelope is the one remembered; either is found in a call.
        assert await store.enqueue_once([b"b", b"c", b"c"], ["t", "t", "t"], _eq) == Enqueued(
            [2, 3, 3], frozenset({0, 2}))
        assert await store.enqueue_once([b"a"], ["t"], _eq) == Enqueued([4], frozenset())


async def test_the_inbox_keeps_arrival_order_and_drops_a_redelivery(
        node_backend: NodeBackend, tmp_path: Path) -> None:
    async with opened(node_backend.node(tmp_path)) as store:
        assert await store.store_delivery(["t1", "t2"], [b"one", b"two"]) == 2
        assert await store.store_delivery(["t2", "t3"], [b"two", b"three"]) == 1
        assert await store.fetch(10) == [("t1", b"one"), ("t2", b"two"), ("t3", b"three")]
        assert await store.acknowledge(["t2", "t9"]) == 1
        assert await store.acknowledge(["t2"]) == 0  # once
    async with opened(node_backend.node(tmp_path)) as store:
        assert await store.fetch(10) == [("t1", b"one"), ("t3", b"three")]
        counts = store.counts()
        assert (counts.inbox_total, counts.inbox_unacknowledged) == (3, 2)
