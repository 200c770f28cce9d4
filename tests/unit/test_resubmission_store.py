"""The node store's memory of resubmission keys (real SQLite file): a resubmission gets the
first sequence while the first envelope is in the outbox, and is a new envelope once
retention purged it (the documented window); the key is the sender ticket, and the local API
tells whether two envelopes under one ticket are the same submission (all but the sent
time)."""

from __future__ import annotations

from pathlib import Path

from node.client import make_envelope
from node.member.local_api import same_submission
from node.store.node_store import Enqueued, NodeStore
from tests.unit.test_node_retention import _accepted, _rows
from tests.unit.test_node_store import _store


async def test_key_window_is_the_outbox_retention(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = await _store(path)
    try:
        first = await store.enqueue_once([b"a", b"b", b"a", b"c"], ["k1", "k2", "k1", None], _eq)
        assert first == Enqueued([1, 2, 1, 3], frozenset({2}))
        again = await store.enqueue_once([b"b", b"d", b"c"], ["k2", "k3", None], _eq)
        assert again == Enqueued([2, 4, 5], frozenset({0}))  # no key: always new
        assert store.pending_count == 5
        assert _rows(path, "outbox") == [1, 2, 3, 4, 5]

        await store.record_ack(1, 5, _accepted(1, 5), refused=[])
        await store.mark(100)
        await store.purge(before_us=150)
        assert await store.enqueue_once([b"a"], ["k1"], _eq) == Enqueued([6], frozenset())
    finally:
        await store.close()


def _eq(first: bytes, again: bytes) -> bool:
    return first == again


def test_a_submission_is_the_same_envelope_but_for_its_sent_time() -> None:
    def envelope(ticket: str, payload: bytes = b"p") -> bytes:
        return make_envelope("demo.message", ["0428759497"], payload, sender_ticket=ticket)

    first = envelope("t")
    assert same_submission(first, envelope("t"))  # two attempts: different sent times
    assert not same_submission(first, envelope("u"))
    assert not same_submission(first, envelope("t", b"other"))
    assert not same_submission(first, b"\xff not an envelope")


async def test_the_keys_survive_a_restart_and_the_window_forgets_the_oldest(
        tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = await _store(path)
    try:
        await store.enqueue_once([b"a", b"b"], ["k1", "k2"], _eq)
    finally:
        await store.close()
    store = NodeStore(path, resubmit_window=2)  # reloaded from the outbox at open
    await store.open()
    try:
        assert await store.enqueue_once([b"a"], ["k1"], _eq) == Enqueued([1], frozenset({0}))
        assert await store.enqueue_once([b"c"], ["k3"], _eq) == Enqueued([3], frozenset())
        # k1 was the oldest of three: forgotten, so its envelope is queued again; k2 is kept.
        assert await store.enqueue_once([b"a", b"b"], ["k1", "k2"], _eq) == Enqueued(
            [4, 2], frozenset({1}))
    finally:
        await store.close()
