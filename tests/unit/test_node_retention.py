"""Retention of a node's store (real SQLite files): what the node is done with goes after the
retention period, nothing else does, and numbering and outcomes stay right afterwards."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from node.core.clock import FakeClock, SystemClock
from node.member.retention import DAY_US, Retention
from node.store.node_store import PURGED_DETAIL, Purged
from node.wire.gen.crossroads.v1 import envelope_pb2 as pb
from tests.unit.test_node_store import B, _ack, _store


def _rows(path: Path, table: str) -> list[int]:
    key = {"outbox": "seq", "inbox": "id", "acks": "last_seq", "marks": "at_us"}[table]
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute(f"SELECT {key} FROM {table} ORDER BY {key}")]


def _accepted(first: int, n: int) -> bytes:
    return _ack(first, [(pb.ACCEPTED, "", f"t{first + i}", (B,)) for i in range(n)])


async def test_purge_takes_only_what_is_done_with_and_was_there_at_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = await _store(path)
    try:
        await store.enqueue([b"e%d" % i for i in range(1, 7)])  # seq 1..6
        await store.record_ack(1, 4, _accepted(1, 4), refused=[])  # 1..4 decided
        await store.store_delivery(["d1", "d2", "d3", "d4"], [b"x"] * 4)  # inbox ids 1..4
        await store.acknowledge(["d1", "d2"])
        await store.mark(100)  # outbox up to 6, inbox up to 4
        await store.enqueue([b"e7", b"e8"])
        await store.record_ack(5, 8, _accepted(5, 4), refused=[])  # one ack: 5..8
        await store.store_delivery(["d5"], [b"x"])
        await store.acknowledge(["d3", "d5"])
        await store.mark(200)

        assert await store.purge(before_us=99) == Purged(0, 0, 0)  # no mark that old
        assert len(_rows(path, "outbox")) == 8

        # The mark at 100: outbox 1..6 (all decided by now), inbox 1..4 but only acknowledged.
        assert await store.purge(before_us=150) == Purged(outbox=6, inbox=3, upto_seq=6)
        assert _rows(path, "outbox") == [7, 8]
        assert _rows(path, "inbox") == [4, 5]  # d4 is not acknowledged; d5 came later
        assert _rows(path, "acks") == [8]  # the ack of 5..8 also holds 7 and 8
        assert _rows(path, "marks") == [100, 200]

        got = await store.outcomes([0, 1, 4, 5, 7, 8, 9])
        assert [(o.seq, o.reason, o.detail) for o in got] == [
            (0, None, "unknown sequence"),  # what Submit answers for one refused at once
            (1, None, PURGED_DETAIL), (4, None, PURGED_DETAIL), (5, "ACCEPTED", ""),
            (7, "ACCEPTED", ""), (8, "ACCEPTED", ""), (9, None, "unknown sequence")]
        assert not any(o.awaited for o in got)
        assert [r[1] for r in await store.fetch(10)] == [b"x"]  # d4, still to be read
        counts = store.counts()
        assert (counts.inbox_total, counts.inbox_unacknowledged) == (5, 1)

        assert await store.purge(before_us=250) == Purged(outbox=2, inbox=1, upto_seq=8)
        assert _rows(path, "outbox") == [] and _rows(path, "inbox") == [4]
        assert _rows(path, "marks") == [200]
    finally:
        await store.close()

    # Reopened with every outbox row gone: numbers go on, purged ones stay known as purged.
    store = await _store(path)
    try:
        assert await store.enqueue([b"e9"]) == [9]
        assert await store.store_delivery(["d4", "d6"], [b"x"] * 2) == 1  # d4 again: dropped
        assert store.counts().inbox_total == 6  # a redelivery is not counted
        (old, new) = await store.outcomes([3, 9])
        assert (old.detail, new.detail, new.awaited) == (PURGED_DETAIL, "", True)
    finally:
        await store.close()


async def test_purge_deletes_in_chunks_and_other_writes_go_on(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = await _store(path)
    try:
        seqs = await store.enqueue([b"%d" % i for i in range(2_500)])
        await store.record_ack(1, 2_500, _accepted(1, 2_500), refused=[])
        await store.mark(1)
        purge = asyncio.ensure_future(store.purge(before_us=1, chunk=5))
        while len(_rows(path, "outbox")) == 2_500:
            await asyncio.sleep(0.001)
        # The writer thread takes other work between the purge's transactions.
        added = await store.enqueue([b"meanwhile"])
        assert not purge.done()
        purged = await purge
        assert purged == Purged(outbox=2_500, inbox=0, upto_seq=seqs[-1])
        assert _rows(path, "outbox") == added == [2_501]
    finally:
        await store.close()


async def test_retention_marks_hourly_and_purges_after_the_period(tmp_path: Path) -> None:
    store = await _store(tmp_path / "node.sqlite")
    clock = FakeClock(now_us=1_000 * DAY_US)
    retention = Retention(store, days=2, clock=clock, every_s=0.01)
    try:
        await store.enqueue([b"old"])
        await store.record_ack(1, 1, _accepted(1, 1), refused=[])
        retention.start()  # marks at once ...
        for _ in range(200):
            if _rows(tmp_path / "node.sqlite", "marks"):
                break
            await asyncio.sleep(0.01)
        assert _rows(tmp_path / "node.sqlite", "outbox") == [1]
        clock.advance(2 * 86_400)  # ... and, two days on, purges what was there then
        for _ in range(500):
            if not _rows(tmp_path / "node.sqlite", "outbox"):
                break
            await asyncio.sleep(0.01)
        assert _rows(tmp_path / "node.sqlite", "outbox") == []
        assert (await store.outcomes([1]))[0].detail == PURGED_DETAIL
    finally:
        await retention.stop()
        await store.close()


def test_retention_needs_at_least_a_day() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Retention(None, days=0, clock=SystemClock())  # type: ignore[arg-type]
