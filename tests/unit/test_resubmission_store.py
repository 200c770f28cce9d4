"""The node store's memory of sender tickets (real SQLite file): a resubmission gets the first
sequence while the first envelope is in the outbox, and is a new envelope once retention
purged it (the documented window)."""

from __future__ import annotations

from pathlib import Path

from node.store.node_store import Enqueued
from tests.unit.test_node_retention import _accepted, _rows
from tests.unit.test_node_store import _store


def _same(a: bytes, b: bytes) -> bool:
    return a == b


async def test_ticket_window_is_the_outbox_retention(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = await _store(path)
    try:
        first = await store.enqueue_once([b"a", b"b", b"a", b"c"], ["t1", "t2", "t1", ""], _same)
        assert first == Enqueued([1, 2, 1, 3], frozenset({2}))
        again = await store.enqueue_once([b"b", b"other", b"c"], ["t2", "t1", ""], _same)
        assert again == Enqueued([2, 4, 5], frozenset({0}))  # no ticket: always new
        assert store.pending_count == 5
        assert _rows(path, "outbox") == [1, 2, 3, 4, 5]
        # "t1" has two different envelopes now: each is found again
        assert await store.enqueue_once([b"other", b"a"], ["t1", "t1"], _same) == Enqueued(
            [4, 1], frozenset({0, 1}))

        await store.record_ack(1, 5, _accepted(1, 5), refused=[])
        await store.mark(100)
        await store.purge(before_us=150)
        assert await store.enqueue_once([b"a"], ["t1"], _same) == Enqueued([6], frozenset())
    finally:
        await store.close()
