"""HubStore storage details: stored acks and queued envelopes across schema upgrades,
multi-row inserts, the audit field encoding."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.core.audit import encode_fields
from node.store.hub_store import MIGRATIONS, HubStore
from node.store.sqlite import insert_rows
from node.wire.delivery import delivery_message, pack
from node.wire.gen.crossroads.v1 import node_pb2

S, R, R2 = "0403019261", "0428759497", "0202239951"


async def test_acks_stored_before_the_upgrade_are_still_returned(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:4]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version=4")
    conn.execute("INSERT INTO recent_acks VALUES (?,?,?,?,?)", (S, "o", 1, 3, b"legacy"))
    conn.close()
    store = HubStore(path, "NORMAL")
    await store.open()
    try:
        await store.commit_batch(S, "o", 4, 6, [], [], b"new ack" * 100)
        assert await store.recent_acks(S, "o", 1) == [(1, b"legacy"), (4, b"new ack" * 100)]
        assert await store.recent_acks(S, "o", 5) == [(4, b"new ack" * 100)]
        assert await store.origin_high(S, "o") == 6
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    packed = conn.execute("SELECT first_seq, packed, length(ack) FROM recent_acks").fetchall()
    conn.close()
    assert packed[0] == (1, 0, 6) and packed[1][:2] == (4, 1) and packed[1][2] < 700


async def test_queued_envelopes_and_the_subject_index_survive_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:5]:
        assert isinstance(script, str)
        conn.executescript(script)
    conn.execute("PRAGMA user_version=5")
    old = [(3, R, "t3", b"three"), (5, R2, "t5", b"five"), (8, R, "t8", b"eight")]
    conn.executemany("INSERT INTO queue (seq, dest, hub_ticket, envelope) VALUES (?,?,?,?)", old)
    conn.execute("INSERT INTO destinations (institution, delivered_seq) VALUES (?, 2)", (R,))
    # Audit records of schema 5: one in the partial subject index, one deferred, one without
    # a subject.
    conn.executemany(
        "INSERT INTO audit (seq, at_us, event, hub_ticket, sender, receiver, service_id,"
        " subject_type, subject_number, reason, detail, prev_hash, hash, deferred)"
        " VALUES (?, ?, ?, '', ?, ?, 'svc', 'CITIZEN', ?, ?, '', x'', x'', ?)",
        [(1, 10, "ACCEPTED", S, R, "85073003328", "ACCEPTED", 0),
         (2, 20, "DELIVERED", "", R, "", "DELIVERED", 0),
         (3, 30, "REJECTED", S, R, "85073003328", "NOT_AUTHORIZED", 1)])
    conn.close()
    store = HubStore(path, "NORMAL")
    state = await store.open()
    try:
        assert state.pending == {R: 2, R2: 1} and state.next_queue_seq == 9
        batch = await store.read_queue(R, 0, 10, 1 << 20)
        assert batch is not None and (batch.last_seq, batch.count) == (8, 2)
        message = node_pb2.DeliveryBatch.FromString(delivery_message(batch.packed, 8))
        assert list(message.envelopes) == [b"three", b"eight"]
        assert list(message.hub_tickets) == ["t3", "t8"]
        # New rows continue after the old positions.
        await store.commit_batch(S, "", 0, 0, [(R, 2, pack([b"n1", b"n2"], ["n1", "n2"]))],
                                 [], b"")
        after = await store.read_queue(R, 8, 10, 1 << 20)
        assert after is not None and (after.last_seq, after.count) == (10, 2)
        assert [c.seq for c in await store.who_consulted("85073003328")] == [1, 3]
    finally:
        await store.close()



def test_insert_rows_writes_every_row_in_order() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c BLOB)")
    rows = [(i, f"r{i}", bytes([i % 256])) for i in range(1, 1_001)]
    insert_rows(conn, "INSERT INTO t (a, b, c) VALUES ", 3, rows, chunk=64)
    insert_rows(conn, "INSERT INTO t (a, b, c) VALUES ", 3, [])
    assert conn.execute("SELECT a, b, c FROM t ORDER BY a").fetchall() == rows


def test_field_encoding_is_length_prefixed_utf8() -> None:
    fields = ["", "é", "x" * 255, "y" * 256, "z" * 70_000, "ACCEPTED"]
    expected = b"".join(len(f.encode()).to_bytes(4, "big") + f.encode() for f in fields)
    assert encode_fields(fields) == expected


def test_chain_rows_hash_their_fields_with_repeated_values() -> None:
    from node.core.audit import ChainWriter, record_hash

    long, accented = "d" * 300, "Zoë"
    records = [(str(i % 3), "ACCEPTED", f"t{i}", "0403019261", accented, long, "", "x", "y", "")
               for i in range(50)]
    rows = ChainWriter().extend(records)
    prev = bytes(32)
    for row, fields in zip(rows, records, strict=True):
        assert row[-2] == prev and row[-1] == record_hash(prev, fields)
        prev = row[-1]  # type: ignore[assignment]


async def test_records_are_indexed_by_subject_in_bulk_and_at_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.audit_tool import who_consulted
    from node.store import hub_store

    monkeypatch.setattr(hub_store, "SUBJECT_INDEX_EVERY", 50)
    path = tmp_path / "hub.sqlite"
    store = HubStore(path, "NORMAL")
    await store.open()
    subject = "85073003328"

    def unindexed() -> int:
        conn = sqlite3.connect(path)
        try:
            return int(conn.execute("SELECT count(*) FROM audit WHERE seq >"
                                    " (SELECT upto FROM audit_indexed)").fetchone()[0])
        finally:
            conn.close()

    def found() -> list[int]:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        try:
            return [c.at_us for c in who_consulted(conn, subject)]
        finally:
            conn.close()

    try:
        for b in range(3):
            records = [(str(b * 100 + i), "REJECTED", "", S, "", "svc", "CITIZEN",
                        subject if i % 2 else "85073003327", "NOT_AUTHORIZED", "")
                       for i in range(20)]
            await store.commit_batch(S, "", 0, 0, [], records, b"")
        # Queued behind the bulk move the third commit started (one writer thread, in order).
        await store.append_audit([("999", "REJECTED", "", S, "", "svc", "CITIZEN", subject,
                                   "NOT_AUTHORIZED", "")])
        expected = [b * 100 + i for b in range(3) for i in range(1, 20, 2)] + [999]
        assert unindexed() == 1  # the first 60 indexed in bulk, the newest waits
        assert found() == expected  # index + tail
    finally:
        await store.close()
    assert unindexed() == 0 and found() == expected

