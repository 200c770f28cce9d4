"""The node's outbox keeps the hub's answer to each batch as the ``BatchAck`` it received (one
row per batch) and still answers the outcome of every envelope, counts and watermark; outcomes
recorded per envelope by earlier versions stay readable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from node.store.node_store import MIGRATIONS, NodeStore, OutboxOutcome
from node.store.sqlite import migrate_sync
from node.wire.envelopes import AckBuilder
from node.wire.gen.crossroads.v1 import envelope_pb2 as pb

B, C = "0428759497", "0212345678"


def _ack(first: int, outcomes: list[tuple[int, str, str, tuple[str, ...]]]) -> bytes:
    """A BatchAck as the hub sends it: (reason number, detail, ticket, receivers) per index."""
    builder = AckBuilder(first)
    for index, (reason, detail, ticket, receivers) in enumerate(outcomes):
        builder.add(index, reason, detail, ticket, receivers)
    return builder.blob()


async def _store(path: Path) -> NodeStore:
    store = NodeStore(path, synchronous="NORMAL")
    await store.open()
    return store


async def test_outcomes_are_read_from_the_stored_acks(tmp_path: Path) -> None:
    store = await _store(tmp_path / "node.sqlite")
    try:
        assert await store.enqueue([b"e%d" % i for i in range(7)]) == list(range(1, 8))
        await store.record_ack(1, 3, _ack(1, [
            (pb.ACCEPTED, "", "t1", (B,)),
            (pb.QUOTA_EXCEEDED, "queue for 0428759497 is full (5)", "", ()),
            (pb.ACCEPTED, "receivers are decided by the hub", "t3", (B, C)),
        ]), refused=[2])
        await store.record_ack(4, 5, _ack(4, [(pb.DUPLICATE, "", "t4", (C,)),
                                              (0, "", "", ())]), refused=[5])
        got = await store.outcomes([3, 1, 2, 4, 5, 6, 99])
    finally:
        await store.close()
    assert got == [
        OutboxOutcome(3, "ACCEPTED", "receivers are decided by the hub", "t3", (B, C)),
        OutboxOutcome(1, "ACCEPTED", "", "t1", (B,)),
        OutboxOutcome(2, "QUOTA_EXCEEDED", "queue for 0428759497 is full (5)", "", ()),
        OutboxOutcome(4, "DUPLICATE", "", "t4", (C,)),
        OutboxOutcome(5, "REASON_UNSPECIFIED", "", "", ()),
        OutboxOutcome(6, None, "", "", ()),  # in the outbox, not decided yet
        OutboxOutcome(99, None, "unknown sequence", "", ()),
    ]
    db = sqlite3.connect(tmp_path / "node.sqlite")
    assert db.execute("SELECT first_seq, last_seq FROM acks ORDER BY last_seq").fetchall() == [
        (1, 3), (4, 5)]
    assert db.execute("SELECT count(*) FROM outcomes").fetchone() == (0,)


async def test_a_resent_batch_is_counted_once_and_its_answer_kept_whole(tmp_path: Path) -> None:
    """A batch resent from an earlier watermark (its first answer was stored meanwhile) gets
    the same outcomes from the hub plus those of the envelopes added to it."""
    store = await _store(tmp_path / "node.sqlite")
    try:
        await store.enqueue([b"x"] * 5)
        first = [(pb.ACCEPTED, "", "t1", (B,)), (pb.QUOTA_EXCEEDED, "full", "", ())]
        await store.record_ack(1, 2, _ack(1, first), refused=[2])
        await store.record_ack(1, 2, _ack(1, first), refused=[2])  # answered twice: no change
        assert (store.decided_seq, store.sent_accepted, store.sent_refused) == (2, 1, 1)
        await store.record_ack(1, 4, _ack(1, [*first, (pb.ACCEPTED, "", "t3", (B,)),
                                              (pb.NO_RECEIVER, "none", "", ())]), refused=[2, 4])
        assert (store.decided_seq, store.sent_accepted, store.sent_refused) == (4, 2, 2)
        got = await store.outcomes([1, 2, 3, 4, 5])
    finally:
        await store.close()
    assert [(o.reason, o.hub_ticket) for o in got] == [
        ("ACCEPTED", "t1"), ("QUOTA_EXCEEDED", ""), ("ACCEPTED", "t3"), ("NO_RECEIVER", ""),
        (None, "")]
    db = sqlite3.connect(tmp_path / "node.sqlite")
    assert db.execute("SELECT first_seq, last_seq FROM acks").fetchall() == [(1, 4)]
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    assert (meta["decided_seq"], meta["sent_accepted"], meta["sent_refused"]) == ("4", "2", "2")


async def test_outcomes_recorded_per_envelope_before_are_still_read(tmp_path: Path) -> None:
    """A database of schema 2 (outcomes as rows) opened by this version: the rows are read,
    the next answers go to ``acks``, the counters go on from the stored ones."""
    path = tmp_path / "node.sqlite"
    old = sqlite3.connect(path, isolation_level=None)
    migrate_sync(old, MIGRATIONS[:2])
    old.executemany("INSERT INTO outbox (seq, envelope) VALUES (?, ?)",
                    [(i, b"x") for i in range(1, 5)])
    old.executemany("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?)", [
        (1, "ACCEPTED", "", "t1", f"{B},{C}"), (2, "UNKNOWN_RECEIVER", "who?", "", "")])
    old.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
        ("origin", "o-1"), ("decided_seq", "2"), ("sent_accepted", "1"), ("sent_refused", "1")])
    old.close()
    store = await _store(path)
    try:
        assert (store.origin, store.decided_seq) == ("o-1", 2)
        await store.record_ack(3, 4, _ack(3, [(pb.ACCEPTED, "", "t3", (C,)),
                                              (pb.ACCEPTED, "", "t4", (B,))]), refused=[])
        got = await store.outcomes([1, 2, 3, 4])
        assert (store.sent_accepted, store.sent_refused) == (3, 1)
    finally:
        await store.close()
    assert got == [
        OutboxOutcome(1, "ACCEPTED", "", "t1", (B, C)),
        OutboxOutcome(2, "UNKNOWN_RECEIVER", "who?", "", ()),
        OutboxOutcome(3, "ACCEPTED", "", "t3", (C,)),
        OutboxOutcome(4, "ACCEPTED", "", "t4", (B,)),
    ]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


async def test_a_store_from_before_the_inbox_counter_counts_its_inbox(tmp_path: Path) -> None:
    """Migration 5: a database that only had inbox ids to go by (a redelivery used one up)
    starts its inbox total from the rows it holds."""
    path = tmp_path / "node.sqlite"
    store = await _store(path)
    try:
        await store.store_delivery(["d1", "d2"], [b"x"] * 2)
        assert await store.store_delivery(["d2", "d3"], [b"x"] * 2) == 1  # id 3 used, ignored
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    with conn:  # back to schema 4, as a node of that version left it
        conn.execute("DELETE FROM meta WHERE key = 'inbox_total'")
        conn.execute("PRAGMA user_version = 4")
    conn.close()
    store = await _store(path)
    try:
        assert store.counts().inbox_total == 3
    finally:
        await store.close()
