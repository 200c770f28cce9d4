"""The hub's per-envelope shortcuts write and answer exactly what the plain code did:
multi-row inserts that bind shared values once, acks built as bytes, time-ordered tickets,
the quota's whole-batch check, the queue packed in delivery batches and read by size."""

from __future__ import annotations

import random
import sqlite3
import uuid
from pathlib import Path

from node.core.envelope import Decision, apply_quota
from node.core.reasons import Reason
from node.hub.intake import _uuid7s
from node.store.hub_store import HubStore
from node.store.sqlite import _chunks, insert_columns, insert_rows
from node.wire.delivery import cut, delivery_message, tickets_of
from node.wire.envelopes import AckBuilder
from node.wire.gen.crossroads.v1 import envelope_pb2 as pb
from node.wire.gen.crossroads.v1 import node_pb2

S, R = "0403019261", "0428759497"


def _table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b, c, d)")
    return conn


def test_insert_rows_binds_shared_values_once_and_keeps_values_and_types() -> None:
    conn = _table()
    rows: list[tuple[object, ...]] = [(i, "same", b"\x00blob", i % 3) for i in range(1, 1_301)]
    rows += [(2_000, 1, 1.0, True), (2_001, 1, 1, 1), (2_002, None, b"", "x")]
    rows += [(3_000 + i, 1.0 if i % 2 else 1, bytearray(b"ab"), b"ab") for i in range(7)]
    insert_rows(conn, "INSERT INTO t (a, b, c, d) VALUES ", 4, rows, chunk=500)
    stored = conn.execute("SELECT a, b, c, d, typeof(b), typeof(c), typeof(d) FROM t"
                          " ORDER BY a").fetchall()
    assert [r[:4] for r in stored] == [tuple(bytes(v) if isinstance(v, bytearray) else v
                                             for v in row) for row in rows]
    kinds = {type(v): k for row, s in zip(rows, stored, strict=True)
             for v, k in zip(row[1:], s[4:], strict=True)}
    assert kinds == {str: "text", bytes: "blob", bytearray: "blob", int: "integer",
                     float: "real", bool: "integer", type(None): "null"}
    assert conn.execute("SELECT typeof(b) FROM t WHERE a = 3001").fetchone() == ("real",)
    assert conn.execute("SELECT typeof(b) FROM t WHERE a = 3000").fetchone() == ("integer",)


def test_insert_columns_takes_columns_of_any_sequence_and_nothing() -> None:
    conn = _table()
    batch = pb.EnvelopeBatch(envelopes=[b"x", b"y"])
    insert_columns(conn, "INSERT INTO t (a, b, c, d) VALUES ", [[1, 2], ("k", "k"),
                                                               batch.envelopes, [None, 5]])
    insert_columns(conn, "INSERT INTO t (a, b, c, d) VALUES ", [[], [], [], []])
    insert_columns(conn, "INSERT INTO t (a) VALUES ", [])
    assert conn.execute("SELECT * FROM t ORDER BY a").fetchall() == [(1, "k", b"x", None),
                                                                     (2, "k", b"y", 5)]


def test_chunks_are_powers_of_two_that_add_up() -> None:
    for count, limit in [(1_000, 1_024), (1_000, 2_340), (0, 8), (1, 1), (5_000, 1_024), (7, 1),
                         (700, 700)]:
        sizes = _chunks(count, limit)
        assert sum(sizes) == count and all(s & (s - 1) == 0 and s <= limit for s in sizes)
        assert sizes == sorted(sizes, reverse=True)
    assert len(_chunks(1_000, 1_024)) == 6


def test_ack_builder_writes_what_protobuf_serializes() -> None:
    rng = random.Random(7)
    for first in (0, 1, 300, 2**40):
        built, message = AckBuilder(first), pb.BatchAck(first_sequence=first)
        for i in range(200):
            outcome = dict(index=rng.choice([0, i, 128, 20_000]), reason=rng.choice([0, 1, 9]),
                           detail=rng.choice(["", "détail " * rng.randint(1, 40)]),
                           hub_ticket=rng.choice(["", str(uuid.uuid4())]),
                           receivers=rng.choice([(), (R,), ("a", "b" * 200)]))
            built.add(**outcome)
            message.outcomes.add(**outcome)
        assert built.blob() == message.SerializeToString()


def test_hub_tickets_are_ordered_uuid7() -> None:
    now_us = 1_764_355_000_123_456
    tickets = list(_uuid7s(300_000, now_us))
    assert tickets == sorted(tickets) and len(set(tickets)) == len(tickets)
    for text in (tickets[0], tickets[262_143], tickets[262_144], tickets[-1]):
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7
        assert parsed.variant == uuid.RFC_4122 and parsed.int >> 80 == now_us // 1000


def test_quota_checks_the_whole_batch_first() -> None:
    ok = Decision(Reason.ACCEPTED, receivers=(R,))
    refused = Decision(Reason.UNKNOWN_SERVICE, "x")
    decisions = [ok, refused, ok]
    assert apply_quota(decisions, {R: 8}, quota=10) == (decisions, {R: 2})
    result, added = apply_quota(decisions, {R: 9}, quota=10)
    assert [d.reason for d in result] == [Reason.ACCEPTED, Reason.UNKNOWN_SERVICE,
                                          Reason.QUOTA_EXCEEDED] and added == {R: 1}


async def test_deliveries_stay_out_of_the_subject_index_and_the_queue_reads_by_size(tmp_path: Path) -> None:
    store = HubStore(tmp_path / "hub.sqlite", "NORMAL")
    await store.open()
    try:
        tickets = [str(uuid.uuid4()) for _ in range(5)]
        # Runs of 2, 2 and 1 envelopes of 100 bytes: queue positions 2, 4, 5.
        runs = cut([b"e" * 100] * 5, tickets, 2, 10_000)
        await store.commit_batch(
            S, "", 0, 0, [(R, n, packed) for n, packed in runs],
            [("1", "ACCEPTED", t, S, R, "svc", "CITIZEN", "85073003328", "ACCEPTED", "")
             for t in tickets], b"")
        whole = await store.read_queue(R, 0, 10, 10_000)
        assert whole is not None and (whole.last_seq, whole.count) == (5, 5)
        assert tickets_of(b"".join(whole.packed)) == tickets
        by_size = await store.read_queue(R, 0, 10, 250)  # 2 rows of ~250 bytes don't fit
        assert by_size is not None and (by_size.last_seq, by_size.count) == (2, 2)
        by_count = await store.read_queue(R, 0, 3, 10_000)
        assert by_count is not None and (by_count.last_seq, by_count.count) == (2, 2)
        first = await store.read_queue(R, 0, 1, 1)  # at least one row, whatever its size
        assert first is not None and tickets_of(first.packed[0]) == tickets[:2]
        rest = await store.read_queue(R, 2, 10, 10_000)
        assert rest is not None and (rest.last_seq, rest.count) == (5, 3)
        assert await store.read_queue(R, 5, 10, 250) is None
        await store.commit_delivery(R, 5, 5, [("2", "DELIVERED", t, "", R, "", "", "",
                                                "DELIVERED", "") for t in tickets])
        assert await store.read_queue(R, 0, 10, 250) is None
        assert _indexed(tmp_path) == (0, [])
    finally:
        await store.close()
    # Indexed at close: the accepted records (they have a subject), not the deliveries.
    assert _indexed(tmp_path) == (10, [("85073003328", seq) for seq in range(1, 6)])


def test_queue_runs_respect_both_limits_and_keep_order() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        sizes = [rnd.choice((1, 50, 300, 5_000)) for _ in range(rnd.randrange(1, 60))]
        envelopes = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
        tickets = [f"t{i}" for i in range(len(sizes))]
        max_envelopes, max_bytes = rnd.randrange(1, 20), rnd.choice((1, 400, 6_000, 10**6))
        runs = cut(envelopes, tickets, max_envelopes, max_bytes)
        parsed = [node_pb2.DeliveryBatch.FromString(packed) for _, packed in runs]
        assert [e for p in parsed for e in p.envelopes] == envelopes
        assert [t for p in parsed for t in p.hub_tickets] == tickets
        for (count, _), p in zip(runs, parsed, strict=True):
            assert count == len(p.envelopes) == len(p.hub_tickets) >= 1
            assert count <= max_envelopes
            assert count == 1 or sum(map(len, p.envelopes)) <= max_bytes
        # Greedy: a run stops only where the next envelope would break a limit.
        for (count, _), p, nxt in zip(runs, parsed, parsed[1:], strict=False):
            assert (count == max_envelopes
                    or sum(map(len, p.envelopes)) + len(nxt.envelopes[0]) > max_bytes)


def test_joined_runs_and_the_last_sequence_parse_as_one_delivery_batch() -> None:
    runs = cut([b"a", b"bb", b"ccc"], ["t1", "t2", "t3"], 1, 100)
    message = node_pb2.DeliveryBatch.FromString(delivery_message([p for _, p in runs], 2**40))
    assert message == node_pb2.DeliveryBatch(
        last_sequence=2**40, envelopes=[b"a", b"bb", b"ccc"], hub_tickets=["t1", "t2", "t3"])


def _indexed(root: Path) -> tuple[int, list[tuple[str, int]]]:
    conn = sqlite3.connect(root / "hub.sqlite")
    try:
        return (conn.execute("SELECT upto FROM audit_indexed").fetchone()[0],
                conn.execute("SELECT subject_number, seq FROM audit_subjects ORDER BY seq").fetchall())
    finally:
        conn.close()
