"""The node store's memory of resubmission keys (real SQLite file): a resubmission gets the
first sequence while the first envelope is in the outbox, and is a new envelope once
retention purged it (the documented window); the key is the local API's digest of ticket and
content."""

from __future__ import annotations

from pathlib import Path

from node.client import make_envelope
from node.member.local_api import resubmission_key
from node.store.node_store import Enqueued, NodeStore
from tests.unit.test_node_retention import _accepted, _rows
from tests.unit.test_node_store import _store


async def test_key_window_is_the_outbox_retention(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = await _store(path)
    try:
        first = await store.enqueue_once([b"a", b"b", b"a", b"c"], [b"k1", b"k2", b"k1", None])
        assert first == Enqueued([1, 2, 1, 3], frozenset({2}))
        again = await store.enqueue_once([b"b", b"d", b"c"], [b"k2", b"k3", None])
        assert again == Enqueued([2, 4, 5], frozenset({0}))  # no key: always new
        assert store.pending_count == 5
        assert _rows(path, "outbox") == [1, 2, 3, 4, 5]

        await store.record_ack(1, 5, _accepted(1, 5), refused=[])
        await store.mark(100)
        await store.purge(before_us=150)
        assert await store.enqueue_once([b"a"], [b"k1"]) == Enqueued([6], frozenset())
    finally:
        await store.close()


def test_the_key_is_ticket_and_content_but_not_the_sent_time() -> None:
    def key(ticket: str, payload: bytes = b"p") -> bytes | None:
        return resubmission_key(make_envelope("demo.message", ["0428759497"], payload,
                                              sender_ticket=ticket))

    assert key("t") == key("t") is not None  # two attempts: different sent times
    assert key("t") != key("u") and key("t") != key("t", b"other")
    assert key("") is None


async def test_the_keys_survive_a_restart_and_the_window_forgets_the_oldest(
        tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = await _store(path)
    try:
        await store.enqueue_once([b"a", b"b"], [b"k1", b"k2"])
    finally:
        await store.close()
    store = NodeStore(path, resubmit_window=2)  # reloaded from the outbox at open
    await store.open()
    try:
        assert await store.enqueue_once([b"a"], [b"k1"]) == Enqueued([1], frozenset({0}))
        assert await store.enqueue_once([b"c"], [b"k3"]) == Enqueued([3], frozenset())
        # k1 was the oldest of three: forgotten, so its envelope is queued again; k2 is kept.
        assert await store.enqueue_once([b"a", b"b"], [b"k1", b"k2"]) == Enqueued(
            [4, 2], frozenset({1}))
    finally:
        await store.close()
