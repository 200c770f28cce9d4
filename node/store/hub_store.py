"""The hub's durable state: the delivery queue, the audit log, idempotency records.

Guarantees
----------
* **One transaction per batch.** :meth:`HubStore.commit_batch` writes the queued envelopes
  (one row per receiver), their audit records and the sender's idempotency record in one
  ``BEGIN IMMEDIATE`` ... ``COMMIT``; the hub acknowledges the batch only after it returns.
* **Delivery cursor = the queue itself.** :meth:`commit_delivery` deletes the delivered rows
  and appends the ``DELIVERED`` audit records in one transaction; what is left in ``queue`` for
  a destination is exactly what it has not acknowledged, in order of ``seq``.
* **Audit chain.** Every record's hash covers the previous record's hash; the chain head is
  kept in ``audit_head`` in the same transaction. Writes are serialized by one lock so the chain
  is extended in commit order.
* **Idempotent resends.** ``origins`` keeps, per (sender, origin), the highest envelope sequence
  stored; ``recent_acks`` keeps the last acks so a resent batch gets its original outcomes.

Reads of the queue use a second connection (WAL readers never block the writer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from node.core.audit import GENESIS, ChainWriter
from node.store.sqlite import connect, migrate

__all__ = ["HubState", "HubStore", "QueuedRow"]

MIGRATIONS = [
    """
    CREATE TABLE queue (
        seq INTEGER PRIMARY KEY,
        dest TEXT NOT NULL,
        hub_ticket TEXT NOT NULL,
        envelope BLOB NOT NULL
    );
    CREATE INDEX queue_by_dest ON queue (dest, seq);
    CREATE TABLE destinations (
        institution TEXT PRIMARY KEY,
        endpoint TEXT,
        delivered_seq INTEGER NOT NULL DEFAULT 0,
        delivered_count INTEGER NOT NULL DEFAULT 0,
        updated_at_us INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE origins (
        sender TEXT NOT NULL,
        origin TEXT NOT NULL,
        high_seq INTEGER NOT NULL,
        PRIMARY KEY (sender, origin)
    );
    CREATE TABLE recent_acks (
        sender TEXT NOT NULL,
        origin TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        ack BLOB NOT NULL,
        PRIMARY KEY (sender, origin, first_seq)
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at_us INTEGER NOT NULL,
        event TEXT NOT NULL,
        hub_ticket TEXT NOT NULL,
        sender TEXT NOT NULL,
        receiver TEXT NOT NULL,
        service_id TEXT NOT NULL,
        subject_type TEXT NOT NULL,
        subject_number TEXT NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL
    );
    CREATE INDEX audit_by_subject ON audit (subject_number, seq);
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL
    );
    """,
]

#: How many sequences of recent acks to keep per origin (covers any node's in-flight window).
ACK_HISTORY = 200_000


@dataclass(frozen=True, slots=True)
class QueuedRow:
    seq: int
    dest: str
    hub_ticket: str
    envelope: bytes


@dataclass(slots=True)
class HubState:
    """What the hub loads at startup."""

    pending: dict[str, int] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)
    next_queue_seq: int = 1


class HubStore:
    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self.chain = ChainWriter()
        self.next_queue_seq = 1

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> HubState:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await connect(self.path, self.synchronous)
        await migrate(self._writer, MIGRATIONS)
        self._reader = await connect(self.path, self.synchronous)
        w = self._writer
        state = HubState()
        async with w.execute("SELECT seq, hash FROM audit_head WHERE id = 1") as cur:
            row = await cur.fetchone()
        self.chain = ChainWriter(row[0], row[1]) if row else ChainWriter(0, GENESIS)
        async with w.execute("SELECT dest, count(*) FROM queue GROUP BY dest") as cur:
            state.pending = {dest: n async for dest, n in cur}
        async with w.execute("SELECT coalesce(max(seq), 0) FROM queue") as cur:
            row = await cur.fetchone()
        async with w.execute("SELECT coalesce(max(delivered_seq), 0) FROM destinations") as cur:
            row2 = await cur.fetchone()
        state.next_queue_seq = max(int(row[0]) if row else 0, int(row2[0]) if row2 else 0) + 1
        self.next_queue_seq = state.next_queue_seq
        async with w.execute(
            "SELECT institution, endpoint FROM destinations WHERE endpoint IS NOT NULL"
        ) as cur:
            state.endpoints = {inst: ep async for inst, ep in cur}
        return state

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def writer(self) -> aiosqlite.Connection:
        assert self._writer is not None, "store not open"
        return self._writer

    @property
    def reader(self) -> aiosqlite.Connection:
        assert self._reader is not None, "store not open"
        return self._reader

    # -- intake ----------------------------------------------------------------------------

    async def origin_high(self, sender: str, origin: str) -> int:
        async with self.writer.execute(
            "SELECT high_seq FROM origins WHERE sender = ? AND origin = ?", (sender, origin)
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def recent_acks(self, sender: str, origin: str, from_seq: int) -> list[tuple[int, bytes]]:
        """(first_seq, ack) of stored acks whose range reaches ``from_seq`` or later."""
        async with self.writer.execute(
            "SELECT first_seq, ack FROM recent_acks WHERE sender = ? AND origin = ?"
            " AND last_seq >= ? ORDER BY first_seq",
            (sender, origin, from_seq),
        ) as cur:
            return [(int(a), bytes(b)) async for a, b in cur]

    async def commit_batch(
        self,
        sender: str,
        origin: str,
        first_seq: int,
        last_seq: int,
        queue_rows: Sequence[tuple[str, str, bytes]],
        audit_records: Sequence[tuple[str, ...]],
        ack: bytes,
    ) -> None:
        """Store one batch atomically: queue rows ``(dest, ticket, envelope)``, audit records,
        idempotency record.

        Queue sequences are assigned here, under the write lock, so they increase in commit
        order: a delivery worker that has seen ``seq`` n has seen every committed row below n.
        """
        async with self._lock:
            w = self.writer
            head = (self.chain.last_seq, self.chain.last_hash)
            start = self.next_queue_seq
            await w.execute("BEGIN IMMEDIATE")
            try:
                if queue_rows:
                    await w.executemany(
                        "INSERT INTO queue (seq, dest, hub_ticket, envelope) VALUES (?,?,?,?)",
                        [(start + i, *row) for i, row in enumerate(queue_rows)],
                    )
                await self._append_audit(audit_records)
                if origin:
                    await w.execute(
                        "INSERT INTO origins (sender, origin, high_seq) VALUES (?,?,?)"
                        " ON CONFLICT (sender, origin) DO UPDATE SET high_seq ="
                        " max(high_seq, excluded.high_seq)",
                        (sender, origin, last_seq),
                    )
                    await w.execute(
                        "INSERT OR REPLACE INTO recent_acks VALUES (?,?,?,?,?)",
                        (sender, origin, first_seq, last_seq, ack),
                    )
                    await w.execute(
                        "DELETE FROM recent_acks WHERE sender = ? AND origin = ?"
                        " AND last_seq < ?",
                        (sender, origin, last_seq - ACK_HISTORY),
                    )
                await w.execute("COMMIT")
            except BaseException:
                await _rollback(w)
                self.chain.rollback(*head)
                raise
            self.next_queue_seq = start + len(queue_rows)

    async def _append_audit(self, records: Sequence[tuple[str, ...]]) -> None:
        if not records:
            return
        rows = self.chain.extend(records)
        await self.writer.executemany(
            "INSERT INTO audit (seq, at_us, event, hub_ticket, sender, receiver, service_id,"
            " subject_type, subject_number, reason, detail, prev_hash, hash)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        await self.writer.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (self.chain.last_seq, self.chain.last_hash),
        )

    async def append_audit(self, records: Sequence[tuple[str, ...]]) -> None:
        """Audit records that come with no envelope to store (e.g. a refused connection)."""
        async with self._lock:
            w = self.writer
            head = (self.chain.last_seq, self.chain.last_hash)
            await w.execute("BEGIN IMMEDIATE")
            try:
                await self._append_audit(records)
                await w.execute("COMMIT")
            except BaseException:
                await _rollback(w)
                self.chain.rollback(*head)
                raise

    # -- delivery --------------------------------------------------------------------------

    async def read_queue(self, dest: str, after_seq: int, limit: int, max_bytes: int) -> list[QueuedRow]:
        """The next envelopes for ``dest`` in order, at most ``limit`` rows / ~``max_bytes``."""
        rows: list[QueuedRow] = []
        size = 0
        async with self.reader.execute(
            "SELECT seq, hub_ticket, envelope FROM queue WHERE dest = ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (dest, after_seq, limit),
        ) as cur:
            async for seq, ticket, blob in cur:
                if rows and size + len(blob) > max_bytes:
                    break
                rows.append(QueuedRow(seq, dest, ticket, bytes(blob)))
                size += len(blob)
        return rows

    async def commit_delivery(
        self, dest: str, upto_seq: int, count: int, audit_records: Sequence[tuple[str, ...]]
    ) -> None:
        """``dest`` acknowledged everything up to ``upto_seq``: drop it, audit it."""
        async with self._lock:
            w = self.writer
            head = (self.chain.last_seq, self.chain.last_hash)
            await w.execute("BEGIN IMMEDIATE")
            try:
                await w.execute("DELETE FROM queue WHERE dest = ? AND seq <= ?", (dest, upto_seq))
                await self._append_audit(audit_records)
                await w.execute(
                    "INSERT INTO destinations (institution, delivered_seq, delivered_count,"
                    " updated_at_us) VALUES (?,?,?,?) ON CONFLICT (institution) DO UPDATE SET"
                    " delivered_seq = excluded.delivered_seq,"
                    " delivered_count = delivered_count + excluded.delivered_count,"
                    " updated_at_us = excluded.updated_at_us",
                    (dest, upto_seq, count, time.time_ns() // 1000),
                )
                await w.execute("COMMIT")
            except BaseException:
                await _rollback(w)
                self.chain.rollback(*head)
                raise

    async def set_endpoint(self, institution: str, endpoint: str) -> None:
        async with self._lock:
            await self.writer.execute(
                "INSERT INTO destinations (institution, endpoint, updated_at_us) VALUES (?,?,?)"
                " ON CONFLICT (institution) DO UPDATE SET endpoint = excluded.endpoint",
                (institution, endpoint, time.time_ns() // 1000),
            )


async def _rollback(conn: aiosqlite.Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except Exception:  # noqa: BLE001 - the connection may already be gone
        pass
