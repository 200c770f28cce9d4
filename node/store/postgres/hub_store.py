"""The hub's store on PostgreSQL (asyncpg): the same contract as the SQLite
:class:`~node.store.hub_store.HubStore` (``HubStorage``, tests/contract/), safe for several
hub processes sharing one database.

Design
------
* **One transaction per batch, bulk writes.** :meth:`PostgresHubStore.commit_batch` writes the
  queue rows, the audit records and the idempotency record in one transaction, each table
  with one statement binding arrays (``INSERT ... SELECT FROM unnest(...)``): the statement
  count is per batch, never per envelope. The hub acknowledges after it returns (committed).
* **Idempotency across processes.** The ``origins`` row of (sender, origin) is taken
  ``FOR UPDATE`` first: two replicas committing the same origin's sequences serialize there,
  and the second finds ``high_seq >= first_seq`` and raises
  :class:`~node.store.records.ResendRaced` (nothing written). ``recent_acks`` has a primary
  key on (sender, origin, first_seq) and is inserted ``ON CONFLICT DO NOTHING``.
* **Positions in commit order per destination.** A sequence or ``max(seq)+1`` would hand out
  positions in call order, not commit order: a reader paging ``after_seq`` could pass a
  position whose transaction commits later and skip it for ever. A destination's positions
  come from its row in ``queue_positions``, updated (row-locked) in the batch's transaction:
  the next writer for that destination waits for this commit, so a committed position is
  never followed by an uncommitted lower one. Rows are locked in destination order (no
  deadlocks between batches); positions count envelopes, as in SQLite.
* **One audit chain, serialized in the database.** Every append locks ``audit_head``
  ``FOR UPDATE`` inside its transaction and extends the chain from the head it read, so the
  chain is one sequence in commit order whichever process appends. The cost: every batch of
  every replica serializes on that row for the rest of its transaction (the insert and the
  commit's flush), which caps the tier at one chain's commit rate; the choice between this and
  per-replica chains tied by checkpoints is argued in docs/AUDIT.md (#15). Lock order
  everywhere: origin row, destination rows (sorted), audit head.
* **Checkpoints.** The last checkpoint is re-read under the head lock each time (another
  replica may have signed); the segment digest since it is kept in memory while this
  process is the only one appending, and re-read from the records otherwise.
* **Delivery leases** (:mod:`node.store.postgres.leases`): one replica delivers to a
  destination at a time; :meth:`PostgresHubStore.commit_delivery` with a token checks it in
  its transaction (the fence). A batch's commit rings the queue doorbell (``pg_notify``, one
  per batch, in the statement that takes the positions: no extra round trip) naming its
  destinations, so their owner wakes whichever replica stored the batch.
* **Failures.** A database error in a write raises
  :class:`~node.store.failures.Unavailable` (counted in :attr:`failures`): nothing was
  committed, the hub does not acknowledge. Every write transaction and every read of the
  intake and delivery paths ends within two statement timeouts (30 s), whatever it waits
  on, and its connection is then closed (:func:`~node.store.postgres.connection.acquire`);
  the audit's queries and retention's purge keep only the per-statement bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from node.config import AuditCheckpoints
from node.core.audit import GENESIS, AuditRecord, ChainWriter, Checkpoint, Signer, sign_checkpoint
from node.core.clock import Clock, SystemClock
from node.core.errors import Unavailable
from node.core.reasons import CallReason
from node.store.audit_queries import Consultation, PurgeReport
from node.store.failures import StoreFailures
from node.store.postgres import audit, leases
from node.store.postgres.connection import (
    DATABASE_ERRORS,
    WRITABLE_SQL,
    PgParams,
    acquire,
    connect,
    create_pool,
    migrate,
)
from node.store.protocols import QueueDoorbell
from node.store.records import (
    HeldLeases,
    HubState,
    QueuedBatch,
    QueueRow,
    ResendRaced,
    rows_that_fit,
)

__all__ = ["ACK_HISTORY", "PostgresHubStore"]

#: How many sequences of recent acks to keep per origin (as the SQLite store).
ACK_HISTORY = 200_000
#: The server ends a hub session idle this long inside a transaction (see ``open``).
IDLE_IN_TRANSACTION_S = 3.0
#: A transaction (or read) ends within this many statement timeouts, whatever it waits on.
USE_BOUND_STATEMENTS = 2
#: How long :meth:`PostgresHubStore.close` waits for busy connections before cutting them.
CLOSE_TIMEOUT_S = 10.0
#: The audit table's columns, in the order of :meth:`ChainWriter.extend_columns`.
_AUDIT_COLUMNS = ("seq", "at_us", "event", "hub_ticket", "sender", "receiver", "service_id",
                  "subject_type", "subject_number", "reason", "detail", "prev_hash", "hash")


def _audit_rows(columns: Sequence[Sequence[object]]) -> Iterator[tuple[object, ...]]:
    """The rows of a binary ``COPY`` into ``audit`` (``at_us`` is text in the record, bigint
    in the table; a batch's records share one time, converted once)."""
    times: dict[object, int] = {}
    at_us = [times[t] if t in times else times.setdefault(t, int(str(t))) for t in columns[1]]
    return zip(columns[0], at_us, *columns[2:], strict=True)


class PostgresHubStore:
    """:class:`~node.store.protocols.HubStorage` on PostgreSQL (see the module's design)."""

    def __init__(
        self,
        params: PgParams,
        signer: Signer | None = None,
        checkpoints: AuditCheckpoints | None = None,
        clock: Clock | None = None,
        replica_id: str | None = None,
    ) -> None:
        """``replica_id``: names this process in the delivery leases (default: host and
        process id); two live replicas must never share one."""
        checkpoints = checkpoints or AuditCheckpoints()
        if checkpoints.every_records < 1 or checkpoints.every_s < 0:
            raise ValueError("checkpoints: every_records must be >= 1 and every_s >= 0")
        self.params = params
        self.signer = signer
        self.checkpoint_every = checkpoints.every_records
        self.checkpoint_us = int(checkpoints.every_s * 1_000_000)
        self.clock = (clock or SystemClock()).now_us
        self._pool: asyncpg.Pool | None = None
        # The segment digest of the record hashes after checkpoint ``_segment_from`` up to
        # ``_segment_upto`` (what this process appended since; -1: read it again).
        self._segment = hashlib.sha256()
        self._segment_from = self._segment_upto = -1
        #: The chain head as of this replica's last append (the metrics' audit_last_seq).
        self.audit_last_seq = 0
        self.replica_id = replica_id or f"{socket.gethostname()}:{os.getpid()}"
        self.store_id = ""
        self.damaged = ""  # PostgreSQL reports damage as errors of the statement: never set
        self.on_damaged: list[Callable[[], None]] = []  # never called (see ``damaged``)
        self._ping_conn: asyncpg.Connection | None = None
        #: Every read and write transaction ends within this time (see ``acquire``).
        self._bound_s = USE_BOUND_STATEMENTS * params.command_timeout_s
        self.failures = StoreFailures()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> HubState:
        # A replica cut off mid-transaction holds row locks (a lease's FOR SHARE, a
        # destination's position row) until the server ends its session: 3 s idle in a
        # transaction (the hub never waits that long between two statements of one), well
        # inside the leases' TTL, so the destination's takeover keeps its bound.
        pool = await create_pool(self.params, idle_in_transaction_s=IDLE_IN_TRANSACTION_S)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                state = await self._load_state(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        return state

    async def _load_state(self, conn: asyncpg.Connection) -> HubState:
        state = HubState()
        await conn.execute(
            "INSERT INTO meta (key, value) VALUES ('store_id', $1), ('created_at_us', $2)"
            " ON CONFLICT (key) DO NOTHING", str(uuid.uuid4()), str(self.clock()))
        self.store_id = state.store_id = str(
            await conn.fetchval("SELECT value FROM meta WHERE key = 'store_id'"))
        state.pending = {r["dest"]: int(r["n"]) for r in await conn.fetch(
            "SELECT dest, sum(count) AS n FROM queue GROUP BY dest")}
        state.next_queue_seq = 1 + int(await conn.fetchval(
            "SELECT greatest((SELECT max(position) FROM queue_positions),"
            " (SELECT max(delivered_seq) FROM destinations), 0)"))
        state.endpoints = {r["institution"]: r["endpoint"] for r in await conn.fetch(
            "SELECT institution, endpoint FROM destinations WHERE endpoint IS NOT NULL")}
        return state

    async def close(self) -> None:
        """Close the pool; connections still busy after :data:`CLOSE_TIMEOUT_S` are cut
        (their transactions roll back: nothing half-written stays)."""
        pool, self._pool = self._pool, None
        ping, self._ping_conn = self._ping_conn, None
        if ping is not None:
            ping.terminate()
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                pool.terminate()

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def ping(self) -> None:
        """One bounded round trip to the primary on a connection of its own (not the pool's:
        a pool busy with commits is not an unreachable database); ``Unavailable`` when it
        fails or the server no longer takes writes (a demoted primary: the connection is
        dropped and the next ping looks for the primary), since a replica that cannot commit
        must say so (node/hub/store_health.py)."""
        if self._pool is None:
            raise RuntimeError("the hub store is not open")
        timeout = self.params.ping_timeout_s
        try:
            if self._ping_conn is None or self._ping_conn.is_closed():
                self._ping_conn = await connect(self.params, timeout=timeout,
                                                statement_cache_size=0)
            if not await self._ping_conn.fetchval(WRITABLE_SQL, timeout=timeout):
                raise ConnectionError("the server takes no writes (a standby, or read-only)")
        except DATABASE_ERRORS as exc:
            conn, self._ping_conn = self._ping_conn, None
            if conn is not None:
                conn.terminate()
            # The pool's connections go too (each when next released, or at once when idle):
            # after a primary that went silent (a pulled plug, not a reset), an idle one would
            # otherwise be handed out after the failover and hang on the dead host until a
            # statement's bound (the deploy test saw 60-75 s without deliveries).
            await self._pool.expire_connections()
            raise Unavailable(f"the hub's database: {type(exc).__name__}: {exc}",
                              CallReason.NOT_STORED) from exc

    @asynccontextmanager
    async def _transaction(self, component: str, bound_s: float | None = None,
                           **context: object) -> AsyncIterator[asyncpg.Connection]:
        """One write transaction, ended within ``bound_s`` (default: two statement
        timeouts); a database failure becomes ``Unavailable`` (nothing stored);
        :class:`ResendRaced` passes as it is."""
        if self._pool is None:
            raise RuntimeError("the hub store is not open")
        try:
            async with acquire(self._pool, bound_s or self._bound_s) as conn, \
                    conn.transaction():
                yield conn
        except DATABASE_ERRORS as exc:
            self._segment_upto = -1
            raise self.failures.failed(component, exc, **context) from exc
        except BaseException:
            self._segment_upto = -1
            raise

    @asynccontextmanager
    async def _reader(self, bounded: bool = True) -> AsyncIterator[asyncpg.Connection]:
        """A connection for reads; a database failure becomes ``Unavailable`` (counted as
        ``hub_read``), never an exception the RPC edge does not know. ``bounded=False``: no
        bound on the whole use (retention's purge, chunk after chunk; each statement keeps
        its own)."""
        if self._pool is None:
            raise RuntimeError("the hub store is not open")
        try:
            async with acquire(self._pool, self._bound_s if bounded else None) as conn:
                yield conn
        except DATABASE_ERRORS as exc:
            raise self.failures.failed("hub_read", exc) from exc

    # -- intake ----------------------------------------------------------------------------

    async def origin_high(self, sender: str, origin: str) -> int:
        async with self._reader() as conn:
            high = await conn.fetchval("SELECT high_seq FROM origins WHERE sender = $1"
                                       " AND origin = $2", sender, origin)
        return int(high or 0)

    async def recent_acks(self, sender: str, origin: str, from_seq: int) -> list[tuple[int, bytes]]:
        async with self._reader() as conn:
            rows = await conn.fetch(
                "SELECT first_seq, ack FROM recent_acks WHERE sender = $1 AND origin = $2"
                " AND last_seq >= $3 ORDER BY first_seq", sender, origin, from_seq)
        return [(int(r[0]), zlib.decompress(r[1])) for r in rows]

    async def commit_batch(self, sender: str, origin: str, first_seq: int, last_seq: int,
                           queue_rows: Sequence[QueueRow], audit_records: Sequence[AuditRecord],
                           ack: bytes) -> None:
        async with self._transaction("hub_intake", sender=sender) as conn:
            if origin:  # the (sender, origin) row, created if new, locked until the commit
                high = await conn.fetchval(
                    "INSERT INTO origins AS o (sender, origin, high_seq) VALUES ($1, $2, 0)"
                    " ON CONFLICT (sender, origin) DO UPDATE SET high_seq = o.high_seq"
                    " RETURNING high_seq", sender, origin)
                if int(high) >= first_seq:
                    raise ResendRaced(f"sequences from {first_seq} of {origin} were stored"
                                      " meanwhile", CallReason.RESEND_RACED)
            if queue_rows:
                await self._enqueue(conn, queue_rows)
            if origin:  # the idempotency record, and the oldest acks out of the history
                await conn.execute(
                    "WITH high AS (UPDATE origins SET high_seq = $4 WHERE sender = $1"
                    " AND origin = $2), old AS (DELETE FROM recent_acks WHERE sender = $1"
                    " AND origin = $2 AND last_seq < $6)"
                    " INSERT INTO recent_acks (sender, origin, first_seq, last_seq, ack)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    sender, origin, first_seq, last_seq, zlib.compress(ack, 1),
                    last_seq - ACK_HISTORY)
            # Last: the audit head's lock, which every appending transaction of every
            # replica waits for, is held from here to the commit only.
            await self._append_audit(conn, audit_records)

    async def _enqueue(self, conn: asyncpg.Connection, queue_rows: Sequence[QueueRow]) -> None:
        """Position the rows under their destinations' row locks (see the design)."""
        added: dict[str, int] = {}
        for dest, count, _packed in queue_rows:
            added[dest] = added.get(dest, 0) + count
        dests = sorted(added)
        # The doorbell rides along (a one-row CTE joined once): delivered at commit.
        ends = dict(await conn.fetch(
            "WITH bell AS (SELECT pg_notify($3, $4))"
            " INSERT INTO queue_positions AS q (dest, position)"
            " SELECT u.dest, u.n FROM unnest($1::text[], $2::bigint[]) AS u(dest, n), bell"
            " ORDER BY 1"
            " ON CONFLICT (dest) DO UPDATE SET position = q.position + excluded.position"
            " RETURNING dest, position", dests, [added[d] for d in dests],
            leases.QUEUE_CHANNEL, leases.queue_bell(dests)))
        position = {dest: int(ends[dest]) - added[dest] for dest in dests}
        seqs = []
        for dest, count, _packed in queue_rows:
            position[dest] += count
            seqs.append(position[dest])
        await conn.execute(
            "INSERT INTO queue (dest, seq, count, packed) SELECT * FROM"
            " unnest($1::text[], $2::bigint[], $3::integer[], $4::bytea[])",
            [r[0] for r in queue_rows], seqs, [r[1] for r in queue_rows],
            [r[2] for r in queue_rows])

    # -- the audit chain -------------------------------------------------------------------

    async def _lock_head(self, conn: asyncpg.Connection) -> ChainWriter:
        row = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        if row is None:  # the first record ever: create the head row, then lock it
            await conn.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, $1)"
                               " ON CONFLICT DO NOTHING", GENESIS)
            row = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        self.audit_last_seq = max(self.audit_last_seq, int(row[0]))  # committed: locked, read
        return ChainWriter(int(row[0]), bytes(row[1]))

    async def _append_audit(self, conn: asyncpg.Connection,
                            records: Sequence[AuditRecord]) -> None:
        """Extend the chain inside the caller's transaction; checkpoint when due."""
        if not records:
            return
        chain = await self._lock_head(conn)
        if self.signer is not None:
            cp_seq, cp_at = await self._segment_at(conn, chain.last_seq)
        columns = chain.extend_columns(records)
        # COPY (binary): the client encodes 1,000 records in about 1 ms; binding them as
        # arrays to an INSERT ... unnest took about 6 ms of the hub's CPU.
        await conn.copy_records_to_table("audit", records=_audit_rows(columns),
                                         columns=_AUDIT_COLUMNS)
        await conn.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
                           chain.last_seq, chain.last_hash)
        if self.signer is None:
            return
        self._segment.update(b"".join(columns[-1]))  # type: ignore[arg-type]
        self._segment_upto = chain.last_seq
        now = self.clock()
        if chain.last_seq - cp_seq >= self.checkpoint_every or now - cp_at >= self.checkpoint_us:
            await self._write_checkpoint(conn, chain, cp_seq, now)

    async def _segment_at(self, conn: asyncpg.Connection, head_seq: int) -> tuple[int, int]:
        """The last checkpoint (seq, at_us), and the segment digest since it brought up to
        ``head_seq`` (under the head lock)."""
        row = await conn.fetchrow(
            "SELECT seq, at_us FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
        cp_seq, cp_at = (int(row[0]), int(row[1])) if row else (0, 0)
        if (self._segment_from, self._segment_upto) != (cp_seq, head_seq):
            self._segment = hashlib.sha256()
            for (digest,) in await conn.fetch("SELECT hash FROM audit WHERE seq > $1"
                                              " AND seq <= $2 ORDER BY seq", cp_seq, head_seq):
                self._segment.update(digest)
            self._segment_from, self._segment_upto = cp_seq, head_seq
        return cp_seq, cp_at

    async def _write_checkpoint(self, conn: asyncpg.Connection, chain: ChainWriter,
                                from_seq: int, now: int) -> Checkpoint:
        assert self.signer is not None
        cp = sign_checkpoint(self.signer, chain.last_seq, chain.last_hash, now, from_seq,
                             self._segment.digest())
        await conn.execute(
            "INSERT INTO audit_checkpoints (seq, hash, at_us, from_seq, segment_digest,"
            " signature, key_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            cp.seq, cp.hash, cp.at_us, cp.from_seq, cp.segment_digest, cp.signature, cp.key_id)
        self._segment = hashlib.sha256()
        self._segment_from = self._segment_upto = cp.seq
        return cp

    async def append_audit(self, records: Sequence[AuditRecord]) -> None:
        async with self._transaction("hub_audit", records=len(records)) as conn:
            await self._append_audit(conn, records)

    async def checkpoint(self) -> Checkpoint | None:
        if self.signer is None:
            return None
        async with self._transaction("hub_audit") as conn:
            chain = await self._lock_head(conn)
            cp_seq, _ = await self._segment_at(conn, chain.last_seq)
            if chain.last_seq <= cp_seq:
                return None
            return await self._write_checkpoint(conn, chain, cp_seq, self.clock())

    async def database_size(self) -> int:
        """``pg_database_size`` of the hub's database: its tables, indexes and TOAST (not the
        server's WAL, which the cluster's own monitoring watches)."""
        async with self._reader() as conn:
            return int(await conn.fetchval("SELECT pg_database_size(current_database())"))

    async def latest_checkpoint(self) -> Checkpoint | None:
        async with self._reader() as conn:
            return await audit.latest_checkpoint(conn)

    # -- audit queries (node.store.postgres.audit) -----------------------------------------

    async def who_consulted(self, subject_number: str, since_us: int | None = None,
                            limit: int | None = None) -> list[Consultation]:
        async with self._reader(bounded=False) as conn:
            return await audit.who_consulted(conn, subject_number, since_us, limit)

    async def export_subject(self, subject_number: str,
                             since_us: int | None = None) -> dict[str, Any]:
        if self.signer is None:
            raise RuntimeError("no signing key: cannot sign an audit extract")
        async with self._reader(bounded=False) as conn:
            return await audit.export_subject(conn, subject_number, self.signer, since_us,
                                              self.clock())

    async def purge(self, cutoffs: Mapping[str, int], service_kinds: Mapping[str, str] | None = None,
                    default_kind: str = "unknown") -> PurgeReport:
        async with self._reader(bounded=False) as conn:
            report = await audit.purge_kinds(conn, cutoffs, service_kinds or {}, default_kind,
                                             self.clock())
        self._segment_upto = -1
        return report

    # -- delivery --------------------------------------------------------------------------

    async def read_queue(self, dest: str, after_seq: int, limit: int,
                         max_bytes: int) -> QueuedBatch | None:
        async with self._reader() as conn, conn.transaction(isolation="repeatable_read",
                                                            readonly=True):
            sizes = await conn.fetch(
                "SELECT seq, count, length(packed) FROM queue WHERE dest = $1 AND seq > $2"
                " ORDER BY seq LIMIT $3", dest, after_seq, min(limit, 1024))
            if not sizes:
                return None
            last, count = rows_that_fit(sizes, limit, max_bytes)
            packed = tuple(r[0] for r in await conn.fetch(
                "SELECT packed FROM queue WHERE dest = $1 AND seq > $2 AND seq <= $3"
                " ORDER BY seq", dest, after_seq, last))
        return QueuedBatch(int(last), int(count), packed)

    async def commit_delivery(self, dest: str, upto_seq: int, count: int,
                              audit_records: Sequence[AuditRecord],
                              token: int | None = None) -> None:
        async with self._transaction("hub_delivery", destination=dest) as conn:
            if token is not None:
                await leases.fence(conn, self.replica_id, dest, token)
            await conn.execute("DELETE FROM queue WHERE dest = $1 AND seq <= $2", dest, upto_seq)
            await self._append_audit(conn, audit_records)
            await conn.execute(
                "INSERT INTO destinations AS d (institution, delivered_seq, delivered_count,"
                " updated_at_us) VALUES ($1, $2, $3, $4) ON CONFLICT (institution) DO UPDATE SET"
                " delivered_seq = excluded.delivered_seq,"
                " delivered_count = d.delivered_count + excluded.delivered_count,"
                " updated_at_us = excluded.updated_at_us", dest, upto_seq, count, self.clock())

    async def set_endpoint(self, institution: str, endpoint: str) -> None:
        async with self._transaction("hub_endpoint", institution=institution) as conn:
            await conn.execute(
                "INSERT INTO destinations (institution, endpoint, updated_at_us, registered_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (institution) DO UPDATE SET"
                " endpoint = excluded.endpoint, registered_at = excluded.registered_at",
                institution, endpoint, self.clock(), self.replica_id)

    # -- delivery leases (node.store.postgres.leases) ----------------------------------------

    async def renew_leases(self, ttl_s: float) -> HeldLeases:
        # Bounded by the TTL: a round that cannot finish before its leases would run out is
        # a failed round (node/hub/delivery.py), never one stuck on a dead connection.
        async with self._transaction("hub_leases", bound_s=ttl_s) as conn:
            return await leases.renew(conn, self.replica_id, ttl_s)

    async def release_leases(self, tokens: Mapping[str, int], leaving: bool = False) -> None:
        async with self._transaction("hub_leases") as conn:
            await leases.release(conn, self.replica_id, tokens, leaving)

    async def listen(self, doorbell: QueueDoorbell) -> None:
        await leases.listen(self.params, doorbell)
