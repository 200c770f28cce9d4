"""A node's durable state: the outbox (to the hub) and the inbox (from the hub).

Outbox: every envelope the institution's applications submit gets the next ``seq`` (rowid,
never reused) and is committed before the local API answers. The uplink sends rows with
``seq > decided_seq`` to the hub in order and records the hub's outcome per envelope; since
the hub acknowledges batches in order, ``decided_seq`` (in ``meta``) is a watermark: every
envelope at or below it has the hub's decision. After a crash the uplink resends from the
watermark; the hub answers those it already stored with their original outcome (same
``origin`` + ``seq``), so nothing is lost and nothing is stored twice.

Inbox: delivered envelopes are committed before the node acknowledges the delivery batch;
``hub_ticket`` is unique, so a redelivery of the same envelope is dropped (counted as a
duplicate). Applications read unacknowledged rows in arrival order and acknowledge by ticket.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from node.store.sqlite import connect, migrate

__all__ = ["NodeCounts", "NodeStore", "OutboxOutcome"]

MIGRATIONS = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        envelope BLOB NOT NULL,
        reason TEXT,
        detail TEXT,
        hub_ticket TEXT,
        receivers TEXT
    );
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        hub_ticket TEXT NOT NULL UNIQUE,
        envelope BLOB NOT NULL,
        acked INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX inbox_unacked ON inbox (id) WHERE acked = 0;
    """,
]


@dataclass(frozen=True, slots=True)
class OutboxOutcome:
    seq: int
    reason: str | None
    detail: str
    hub_ticket: str
    receivers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeCounts:
    outbox_pending: int
    sent_accepted: int
    sent_refused: int
    inbox_unacknowledged: int
    inbox_total: int


class NodeStore:
    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self.origin = ""
        self.decided_seq = 0
        #: Set whenever the outbox or inbox grows.
        self.outbox_changed = asyncio.Event()
        self.inbox_changed = asyncio.Event()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await connect(self.path, self.synchronous)
        await migrate(self._conn, MIGRATIONS)
        self.origin = await self._meta("origin") or ""
        if not self.origin:
            self.origin = str(uuid.uuid4())
            await self._set_meta("origin", self.origin)
        self.decided_seq = int(await self._meta("decided_seq") or 0)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> aiosqlite.Connection:
        assert self._conn is not None, "store not open"
        return self._conn

    async def _meta(self, key: str) -> str | None:
        async with self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def _set_meta(self, key: str, value: str) -> None:
        await self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- outbox ----------------------------------------------------------------------------

    async def enqueue(self, envelopes: Sequence[bytes]) -> list[int]:
        """Store envelopes for sending; return their sequences (committed on return)."""
        if not envelopes:
            return []
        async with self._lock:
            c = self.conn
            await c.execute("BEGIN IMMEDIATE")
            try:
                async with c.execute("SELECT coalesce(max(seq), 0) FROM outbox") as cur:
                    row = await cur.fetchone()
                async with c.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"
                ) as cur:
                    row2 = await cur.fetchone()
                start = max(int(row[0]) if row else 0, int(row2[0]) if row2 else 0) + 1
                seqs = list(range(start, start + len(envelopes)))
                await c.executemany(
                    "INSERT INTO outbox (seq, envelope) VALUES (?, ?)", zip(seqs, envelopes, strict=True)
                )
                await c.execute("COMMIT")
            except BaseException:
                await _rollback(c)
                raise
        self.outbox_changed.set()
        return seqs

    async def pending(self, after_seq: int, limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Undecided envelopes after ``after_seq``, in order."""
        rows: list[tuple[int, bytes]] = []
        size = 0
        async with self.conn.execute(
            "SELECT seq, envelope FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (max(after_seq, self.decided_seq), limit),
        ) as cur:
            async for seq, blob in cur:
                if rows and size + len(blob) > max_bytes:
                    break
                rows.append((int(seq), bytes(blob)))
                size += len(blob)
        return rows

    async def record_outcomes(
        self, last_seq: int, outcomes: Sequence[tuple[int, str, str, str, int]]
    ) -> None:
        """Store the hub's outcomes ``(reason, detail, ticket, receivers, seq)`` and move the
        decided watermark to ``last_seq``."""
        async with self._lock:
            c = self.conn
            await c.execute("BEGIN IMMEDIATE")
            try:
                await c.executemany(
                    "UPDATE outbox SET reason = ?, detail = ?, hub_ticket = ?, receivers = ?"
                    " WHERE seq = ?",
                    outcomes,
                )
                await self._set_meta("decided_seq", str(last_seq))
                await c.execute("COMMIT")
            except BaseException:
                await _rollback(c)
                raise
            self.decided_seq = max(self.decided_seq, last_seq)

    async def outcomes(self, seqs: Sequence[int]) -> list[OutboxOutcome]:
        result = []
        for seq in seqs:
            async with self.conn.execute(
                "SELECT reason, detail, hub_ticket, receivers FROM outbox WHERE seq = ?", (seq,)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                result.append(OutboxOutcome(seq, None, "unknown sequence", "", ()))
                continue
            reason, detail, ticket, receivers = row
            result.append(
                OutboxOutcome(
                    seq,
                    None if reason is None else str(reason),
                    detail or "",
                    ticket or "",
                    tuple(receivers.split(",")) if receivers else (),
                )
            )
        return result

    # -- inbox -----------------------------------------------------------------------------

    async def store_delivery(self, tickets: Sequence[str], envelopes: Sequence[bytes]) -> int:
        """Store delivered envelopes; return how many were new (the rest were duplicates)."""
        async with self._lock:
            c = self.conn
            await c.execute("BEGIN IMMEDIATE")
            try:
                cur = await c.executemany(
                    "INSERT OR IGNORE INTO inbox (hub_ticket, envelope) VALUES (?, ?)",
                    zip(tickets, envelopes, strict=True),
                )
                stored = max(cur.rowcount, 0)
                await cur.close()
                await c.execute("COMMIT")
            except BaseException:
                await _rollback(c)
                raise
        if stored:
            self.inbox_changed.set()
        return stored

    async def fetch(self, limit: int) -> list[tuple[str, bytes]]:
        async with self.conn.execute(
            "SELECT hub_ticket, envelope FROM inbox WHERE acked = 0 ORDER BY id LIMIT ?",
            (limit,),
        ) as cur:
            return [(str(t), bytes(b)) async for t, b in cur]

    async def acknowledge(self, tickets: Sequence[str]) -> int:
        """Mark received envelopes as processed by the application (one transaction)."""
        async with self._lock:
            c = self.conn
            await c.execute("BEGIN IMMEDIATE")
            try:
                cur = await c.executemany(
                    "UPDATE inbox SET acked = 1 WHERE hub_ticket = ? AND acked = 0",
                    [(t,) for t in tickets],
                )
                n = max(cur.rowcount, 0)
                await cur.close()
                await c.execute("COMMIT")
            except BaseException:
                await _rollback(c)
                raise
            return n

    async def counts(self) -> NodeCounts:
        c = self.conn
        queries = (
            ("SELECT count(*) FROM outbox WHERE seq > ?", (self.decided_seq,)),
            ("SELECT count(*) FROM outbox WHERE reason IN ('ACCEPTED', 'DUPLICATE')", ()),
            ("SELECT count(*) FROM outbox WHERE reason IS NOT NULL"
             " AND reason NOT IN ('ACCEPTED', 'DUPLICATE')", ()),
            ("SELECT count(*) FROM inbox WHERE acked = 0", ()),
            ("SELECT count(*) FROM inbox", ()),
        )
        values = []
        for sql, params in queries:
            async with c.execute(sql, params) as cur:
                row = await cur.fetchone()
            values.append(int(row[0]) if row else 0)
        return NodeCounts(*values)


async def _rollback(conn: aiosqlite.Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except Exception:  # noqa: BLE001 - the connection may already be gone
        pass
