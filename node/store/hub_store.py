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
  is extended in commit order. The head is re-read inside each write transaction, so another
  process may append (``crossroads audit purge`` writes a ``PURGED`` record) while the hub runs.
* **Signed checkpoints.** Given a ``signer`` (the hub's Ed25519 directory key), the commit that
  brings the chain ``checkpoint_every`` records or ``checkpoint_seconds`` past the last
  checkpoint also writes a signed checkpoint of the new head (``audit_checkpoints``), in the
  same transaction: one Ed25519 signature per checkpoint, plus one 32-byte hash update per
  record for the segment digest (see :mod:`node.core.audit`). :meth:`HubStore.checkpoint`
  signs the head on demand (at shutdown).
* **Audit queries.** :meth:`HubStore.who_consulted`, :meth:`HubStore.export_subject` and
  :meth:`HubStore.purge` run :mod:`node.audit_tool` in a worker thread on their own
  connection, so they never hold up the event loop or the writer for long.
* **Idempotent resends.** ``origins`` keeps, per (sender, origin), the highest envelope sequence
  stored; ``recent_acks`` keeps the last acks so a resent batch gets its original outcomes.

Reads of the queue use a second connection (WAL readers never block the writer).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from node.core.audit import GENESIS, ChainWriter, Checkpoint, Signer, sign_checkpoint
from node.core.errors import Unavailable
from node.store.sqlite import connect, connect_sync, migrate, rollback

__all__ = ["HubState", "HubStore", "QueuedRow", "ResendRaced"]


class ResendRaced(Unavailable):
    """A batch's sequences were committed by another stream in the meantime (retry)."""

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
    # 2: signed checkpoints; redaction by retention (0 = live, else the PURGED record's seq).
    """
    ALTER TABLE audit ADD COLUMN redacted INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        hash BLOB NOT NULL,
        at_us INTEGER NOT NULL,
        from_seq INTEGER NOT NULL,
        segment_digest BLOB NOT NULL,
        signature BLOB NOT NULL,
        key_id TEXT NOT NULL
    );
    """,
    # 3: DELIVERED records by ticket, so who-consulted can say when each receiver got an
    # envelope. Cheap because hub tickets are time-ordered (UUIDv7): inserts stay near the
    # index's right edge (with random tickets they halved the store's throughput at 2 M rows).
    """
    CREATE INDEX IF NOT EXISTS audit_delivered_by_ticket ON audit (hub_ticket)
        WHERE event = 'DELIVERED';
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
    def __init__(
        self,
        path: Path,
        synchronous: str = "FULL",
        signer: Signer | None = None,
        checkpoint_every: int = 10_000,
        checkpoint_seconds: float = 60.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if checkpoint_every < 1 or checkpoint_seconds < 0:
            raise ValueError("checkpoint_every must be >= 1 and checkpoint_seconds >= 0")
        self.path = path
        self.synchronous = synchronous
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self.chain = ChainWriter()
        self.next_queue_seq = 1
        # Audit checkpoints: the signer, the policy, and the running segment since the last.
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.checkpoint_us = int(checkpoint_seconds * 1_000_000)
        self.clock = clock or (lambda: time.time_ns() // 1000)
        self.last_checkpoint: tuple[int, int] = (0, 0)  # (seq, at_us)
        self._segment = hashlib.sha256()  # record hashes after last_checkpoint[0] ...
        self._segment_upto = -1  # ... up to this seq (-1: rebuild from the database)
        self._query: sqlite3.Connection | None = None
        self._query_lock = asyncio.Lock()

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
        await self._load_checkpoint_state()
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
        async with self._query_lock:
            if self._query is not None:
                self._query.close()
                self._query = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None

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

        Raises :class:`ResendRaced` (nothing written) when another stream of the same origin
        stored these sequences first (a node that reconnected while its old stream was still
        committing): its stream fails and the node's resend then gets the stored outcomes.
        """
        async with self._lock:
            w = self.writer
            if origin:
                async with w.execute(
                    "SELECT high_seq FROM origins WHERE sender = ? AND origin = ?",
                    (sender, origin),
                ) as cur:
                    row = await cur.fetchone()
                if row is not None and int(row[0]) >= first_seq:
                    raise ResendRaced(
                        f"sequences from {first_seq} of {origin} were stored meanwhile",
                        "RESEND_RACED")
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
                await rollback(w)
                self.chain.rollback(*head)
                raise
            self.next_queue_seq = start + len(queue_rows)

    async def _append_audit(self, records: Sequence[tuple[str, ...]]) -> None:
        """Extend the chain inside the caller's write transaction; checkpoint when due."""
        if not records:
            return
        w = self.writer
        # The head as committed: another process (a purge) may have appended, and a rolled
        # back transaction leaves our checkpoint state stale.
        async with w.execute("SELECT seq, hash FROM audit_head WHERE id = 1") as cur:
            row = await cur.fetchone()
        head = (int(row[0]), bytes(row[1])) if row else (0, GENESIS)
        if head != (self.chain.last_seq, self.chain.last_hash):
            self.chain.rollback(*head)
            self._segment_upto = -1
        if self.signer is not None and self._segment_upto != self.chain.last_seq:
            await self._load_checkpoint_state()
        rows = self.chain.extend(records)
        await w.executemany(
            "INSERT INTO audit (seq, at_us, event, hub_ticket, sender, receiver, service_id,"
            " subject_type, subject_number, reason, detail, prev_hash, hash)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        await w.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (self.chain.last_seq, self.chain.last_hash),
        )
        if self.signer is None:
            return
        update = self._segment.update
        for r in rows:
            update(r[-1])  # type: ignore[arg-type]
        self._segment_upto = self.chain.last_seq
        cp_seq, cp_at = self.last_checkpoint
        now = self.clock()
        if (self.chain.last_seq - cp_seq >= self.checkpoint_every
                or now - cp_at >= self.checkpoint_us):
            await self._write_checkpoint(now)

    async def _load_checkpoint_state(self) -> None:
        """Last checkpoint and the segment digest since, from the database (at open, and after
        a rollback or another process's append)."""
        w = self.writer
        async with w.execute(
            "SELECT seq, at_us FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
        ) as cur:
            row = await cur.fetchone()
        self.last_checkpoint = (int(row[0]), int(row[1])) if row else (0, 0)
        self._segment = hashlib.sha256()
        self._segment_upto = -1
        if self.signer is None:
            return
        async with w.execute(
            "SELECT hash FROM audit WHERE seq > ? AND seq <= ? ORDER BY seq",
            (self.last_checkpoint[0], self.chain.last_seq),
        ) as cur:
            while rows := await cur.fetchmany(50_000):
                for (digest,) in rows:
                    self._segment.update(digest)
        self._segment_upto = self.chain.last_seq

    async def _write_checkpoint(self, now: int) -> Checkpoint:
        assert self.signer is not None
        cp = sign_checkpoint(self.signer, self.chain.last_seq, self.chain.last_hash, now,
                             self.last_checkpoint[0], self._segment.digest())
        await self.writer.execute(
            "INSERT INTO audit_checkpoints (seq, hash, at_us, from_seq, segment_digest,"
            " signature, key_id) VALUES (?,?,?,?,?,?,?)",
            (cp.seq, cp.hash, cp.at_us, cp.from_seq, cp.segment_digest, cp.signature, cp.key_id),
        )
        self.last_checkpoint = (cp.seq, cp.at_us)
        self._segment = hashlib.sha256()
        return cp

    async def checkpoint(self) -> Checkpoint | None:
        """Sign the chain head now if it moved since the last checkpoint (call at shutdown,
        or from a timer). None without a signer or when there is nothing new."""
        if self.signer is None:
            return None
        async with self._lock:
            w = self.writer
            await w.execute("BEGIN IMMEDIATE")
            try:
                async with w.execute("SELECT seq, hash FROM audit_head WHERE id = 1") as cur:
                    row = await cur.fetchone()
                head = (int(row[0]), bytes(row[1])) if row else (0, GENESIS)
                if head != (self.chain.last_seq, self.chain.last_hash):
                    self.chain.rollback(*head)
                    self._segment_upto = -1
                if self._segment_upto != self.chain.last_seq:
                    await self._load_checkpoint_state()
                cp = None
                if self.chain.last_seq > self.last_checkpoint[0]:
                    cp = await self._write_checkpoint(self.clock())
                await w.execute("COMMIT")
            except BaseException:
                await rollback(w)
                self._segment_upto = -1
                raise
            return cp

    # -- audit queries (node.audit_tool, in a worker thread) --------------------------------

    async def _in_thread(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async with self._query_lock:
            if self._query is None:
                self._query = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro",
                                              uri=True, isolation_level=None,
                                              check_same_thread=False)
                self._query.execute("PRAGMA busy_timeout=10000")
            return await asyncio.to_thread(func, self._query, *args, **kwargs)

    async def who_consulted(
        self, subject_number: str, since_us: int | None = None, limit: int | None = None
    ) -> list[Any]:
        """:func:`node.audit_tool.who_consulted` on this hub's log (for the admin API)."""
        from node.audit_tool import who_consulted

        return list(await self._in_thread(who_consulted, subject_number, since_us, limit))

    async def export_subject(self, subject_number: str, since_us: int | None = None) -> dict[str, Any]:
        """A signed audit extract for one subject (:func:`node.audit_tool.export_subject`)."""
        from node.audit_tool import export_subject

        if self.signer is None:
            raise RuntimeError("no signing key: cannot sign an audit extract")
        result: dict[str, Any] = await self._in_thread(
            export_subject, subject_number, self.signer, since_us, self.clock())
        return result

    async def purge(
        self,
        cutoffs: Mapping[str, int],
        service_kinds: Mapping[str, str] | None = None,
        default_kind: str = "unknown",
    ) -> Any:
        """Retention (:func:`node.audit_tool.purge_kinds`) on a connection of its own: its
        short transactions interleave with the hub's commits."""
        from node.audit_tool import purge_kinds

        def run() -> Any:
            conn = connect_sync(self.path)
            try:
                return purge_kinds(conn, cutoffs, service_kinds or {}, default_kind, self.clock())
            finally:
                conn.close()

        return await asyncio.to_thread(run)

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
                await rollback(w)
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
            fetched = await cur.fetchall()  # one thread hop, not one per row
        for seq, ticket, blob in fetched:
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
                await rollback(w)
                self.chain.rollback(*head)
                raise

    async def set_endpoint(self, institution: str, endpoint: str) -> None:
        async with self._lock:
            await self.writer.execute(
                "INSERT INTO destinations (institution, endpoint, updated_at_us) VALUES (?,?,?)"
                " ON CONFLICT (institution) DO UPDATE SET endpoint = excluded.endpoint",
                (institution, endpoint, time.time_ns() // 1000),
            )
