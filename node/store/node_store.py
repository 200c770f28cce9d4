"""A node's durable state: the outbox (to the hub) and the inbox (from the hub).

Outbox: every envelope the institution's applications submit gets the next ``seq`` (rowid,
never reused) and is committed before the local API answers. The uplink sends rows with
``seq > decided_seq`` to the hub in order and records the hub's outcome per envelope (table
``outcomes``); since the hub acknowledges batches in order, ``decided_seq`` (in ``meta``) is a
watermark: every envelope at or below it has the hub's decision. After a crash the uplink resends from the
watermark; the hub answers those it already stored with their original outcome (same
``origin`` + ``seq``), so nothing is lost and nothing is stored twice.

Inbox: delivered envelopes are committed before the node acknowledges the delivery batch;
``hub_ticket`` is unique, so a redelivery of the same envelope is dropped (counted as a
duplicate). Applications read unacknowledged rows in arrival order and acknowledge by ticket.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from node.store.sqlite import connect, migrate, rollback

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
    # 2: the hub's outcomes in their own narrow table (inserting there is cheaper than
    # rewriting the outbox rows that hold the envelopes), and running counters.
    """
    CREATE TABLE outcomes (
        seq INTEGER PRIMARY KEY,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        hub_ticket TEXT NOT NULL,
        receivers TEXT NOT NULL
    );
    INSERT INTO outcomes SELECT seq, reason, coalesce(detail, ''), coalesce(hub_ticket, ''),
        coalesce(receivers, '') FROM outbox WHERE reason IS NOT NULL;
    INSERT OR REPLACE INTO meta SELECT 'sent_accepted', count(*) FROM outcomes
        WHERE reason IN ('ACCEPTED', 'DUPLICATE');
    INSERT OR REPLACE INTO meta SELECT 'sent_refused', count(*) FROM outcomes
        WHERE reason NOT IN ('ACCEPTED', 'DUPLICATE');
    """,
]

_STORED = ("ACCEPTED", "DUPLICATE")


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
        self.sent_accepted = 0
        self.sent_refused = 0
        self._last_seq = 0
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
        self.sent_accepted = int(await self._meta("sent_accepted") or 0)
        async with self.conn.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM outbox), 0),"
            " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0))"
        ) as cur:
            row = await cur.fetchone()
        self._last_seq = int(row[0]) if row else 0
        self.sent_refused = int(await self._meta("sent_refused") or 0)

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
                start = self._last_seq + 1
                seqs = list(range(start, start + len(envelopes)))
                await c.executemany(
                    "INSERT INTO outbox (seq, envelope) VALUES (?, ?)", zip(seqs, envelopes, strict=True)
                )
                await c.execute("COMMIT")
            except BaseException:
                await rollback(c)
                raise
            self._last_seq = seqs[-1]
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
            found = await cur.fetchall()  # one trip to the database thread, not one per 64 rows
        for seq, blob in found:
            if rows and size + len(blob) > max_bytes:
                break
            rows.append((seq, blob))
            size += len(blob)
        return rows

    async def record_outcomes(
        self, last_seq: int, outcomes: Sequence[tuple[int, str, str, str, int]]
    ) -> None:
        """Store the hub's outcomes ``(reason, detail, ticket, receivers, seq)`` and move the
        decided watermark to ``last_seq``."""
        async with self._lock:
            c = self.conn
            new = [o for o in outcomes if o[4] > self.decided_seq]
            accepted = sum(1 for o in new if o[0] in _STORED)
            await c.execute("BEGIN IMMEDIATE")
            try:
                await c.executemany(
                    "INSERT OR REPLACE INTO outcomes (reason, detail, hub_ticket, receivers, seq)"
                    " VALUES (?, ?, ?, ?, ?)",
                    new,
                )
                await c.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [("decided_seq", str(last_seq)),
                     ("sent_accepted", str(self.sent_accepted + accepted)),
                     ("sent_refused", str(self.sent_refused + len(new) - accepted))])
                await c.execute("COMMIT")
            except BaseException:
                await rollback(c)
                raise
            self.decided_seq = max(self.decided_seq, last_seq)
            self.sent_accepted += accepted
            self.sent_refused += len(new) - accepted

    async def outcomes(self, seqs: Sequence[int]) -> list[OutboxOutcome]:
        result = []
        for seq in seqs:
            async with self.conn.execute(
                "SELECT reason, detail, hub_ticket, receivers FROM outcomes WHERE seq = ?", (seq,)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                known = seq <= self._last_seq
                result.append(OutboxOutcome(seq, None, "" if known else "unknown sequence", "", ()))
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

    async def store_delivery(
        self,
        tickets: Sequence[str],
        envelopes: Sequence[bytes],
        derive: Callable[[str, bytes], bytes | None] | None = None,
    ) -> int:
        """Store delivered envelopes; return how many were new (the rest were duplicates).

        ``derive(hub_ticket, envelope)`` may return an envelope to send in reply (the
        contributions institution's employment mutation): it is queued in the outbox in the
        same transaction, and only for an envelope that is new in the inbox, so a redelivery
        emits nothing twice."""
        replies = {}
        if derive is not None:
            for ticket, raw in zip(tickets, envelopes, strict=True):
                reply = derive(ticket, raw)
                if reply is not None:
                    replies[ticket] = reply
        async with self._lock:
            c = self.conn
            await c.execute("BEGIN IMMEDIATE")
            try:
                if replies:  # only those whose envelope is new here
                    async with c.execute(
                        f"SELECT hub_ticket FROM inbox WHERE hub_ticket IN"
                        f" ({','.join('?' * len(replies))})", list(replies)) as cur:
                        for (known,) in await cur.fetchall():
                            del replies[known]
                cur = await c.executemany(
                    "INSERT OR IGNORE INTO inbox (hub_ticket, envelope) VALUES (?, ?)",
                    zip(tickets, envelopes, strict=True),
                )
                stored = max(cur.rowcount, 0)
                await cur.close()
                start = self._last_seq + 1
                seqs = list(range(start, start + len(replies)))
                if replies:
                    await c.executemany("INSERT INTO outbox (seq, envelope) VALUES (?, ?)",
                                        zip(seqs, replies.values(), strict=True))
                await c.execute("COMMIT")
            except BaseException:
                await rollback(c)
                raise
            if seqs:
                self._last_seq = seqs[-1]
        if stored:
            self.inbox_changed.set()
        if seqs:
            self.outbox_changed.set()
        return stored

    async def fetch(self, limit: int) -> list[tuple[str, bytes]]:
        async with self.conn.execute(
            "SELECT hub_ticket, envelope FROM inbox WHERE acked = 0 ORDER BY id LIMIT ?",
            (limit,),
        ) as cur:
            return list(await cur.fetchall())  # type: ignore[arg-type]

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
                await rollback(c)
                raise
            return n

    async def counts(self) -> NodeCounts:
        c = self.conn
        queries = (
            ("SELECT count(*) FROM outbox WHERE seq > ?", (self.decided_seq,)),
            ("SELECT count(*) FROM inbox WHERE acked = 0", ()),
            ("SELECT coalesce(max(id), 0) FROM inbox", ()),
        )
        values = []
        for sql, params in queries:
            async with c.execute(sql, params) as cur:
                row = await cur.fetchone()
            values.append(int(row[0]) if row else 0)
        pending, unacked, total = values
        return NodeCounts(pending, self.sent_accepted, self.sent_refused, unacked, total)
