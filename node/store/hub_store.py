"""The hub's durable state: the delivery queue, the audit log, idempotency records.

Guarantees
----------
* **One transaction per batch.** :meth:`HubStore.commit_batch` writes the queued envelopes
  (one row per receiver), their audit records and the sender's idempotency record in one
  ``BEGIN IMMEDIATE`` ... ``COMMIT``; the hub acknowledges the batch only after it returns.
* **Delivery cursor = the queue itself.** :meth:`commit_delivery` deletes the delivered rows
  and appends the ``DELIVERED`` audit records in one transaction; what is left in ``queue`` for
  a destination is exactly what it has not acknowledged, in order of ``seq``.
* **Queue rows are packed batches.** A row holds a run of envelopes for one destination as a
  packed ``DeliveryBatch`` (:mod:`node.wire.delivery`): the intake packs them, the delivery
  sends them as they are. A row's ``seq`` is the queue position of its last envelope
  (positions count envelopes, so ``delivered_seq`` and the quota keep counting envelopes).
* **One writer thread.** The write connection lives in a thread of its own; each write
  (a whole transaction: :meth:`commit_batch`, :meth:`commit_delivery`, ...) is one call
  handed to it, so writes run one at a time, in call order, with one hop from the event loop
  per batch. Row inserts are multi-row ``INSERT ... VALUES`` statements that bind a value
  shared by all rows once (:func:`node.store.sqlite.insert_columns`).
* **Audit chain.** Every record's hash covers the previous record's hash; the chain head is
  kept in ``audit_head`` in the same transaction. The writer thread extends the chain, so it
  is extended in commit order. The head is re-read inside each write transaction, so another
  process may append (``crossroads audit purge`` writes a ``PURGED`` record) while the hub runs.
* **Signed checkpoints.** Given a ``signer`` (the hub's Ed25519 directory key), the commit that
  brings the chain ``every_records`` records or ``every_s`` seconds past the last checkpoint
  (:class:`node.config.AuditCheckpoints`) also writes a signed checkpoint of the new head
  (``audit_checkpoints``), in the same transaction: one Ed25519 signature per checkpoint,
  plus one 32-byte hash update per record for the segment digest (see :mod:`node.core.audit`).
  :meth:`HubStore.checkpoint` signs the head on demand (at shutdown).
* **Subject index in bulk.** ``audit_subjects (subject_number, seq)`` is the subject index, a
  table of its own. The hub appends records without touching it and, every
  ``SUBJECT_INDEX_EVERY`` records with a subject, indexes the newest ones with one
  ``INSERT ... SELECT`` (its own transaction in the writer thread): an index page is rewritten
  once per bulk rather than once per batch, and the records themselves are never rewritten.
  ``audit_indexed.upto`` is the last seq indexed; queries read the index and the records
  after ``upto`` in one snapshot (:mod:`node.store.audit_queries`).
* **Audit queries.** :meth:`HubStore.who_consulted`, :meth:`HubStore.export_subject` and
  :meth:`HubStore.purge` run :mod:`node.store.audit_queries` in a worker thread on their own
  connection, so they never hold up the event loop or the writer for long.
* **Idempotent resends.** ``origins`` keeps, per (sender, origin), the highest envelope sequence
  stored; ``recent_acks`` keeps the last acks (zlib-compressed, ``packed = 1``) so a resent
  batch gets its original outcomes.

Reads of the queue use a second connection in a second thread (WAL readers never block the
writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from node.config import AuditCheckpoints
from node.core.audit import (
    FIELDS,
    GENESIS,
    AuditRecord,
    ChainWriter,
    Checkpoint,
    Signer,
    sign_checkpoint,
)
from node.core.clock import Clock, SystemClock
from node.core.errors import Unavailable
from node.core.reasons import CallReason
from node.store import records
from node.store.audit_queries import export_subject, purge_kinds, who_consulted
from node.store.failures import NOT_STORED, StoreFailures
from node.store.protocols import QueueDoorbell
from node.store.records import HubState, QueuedBatch, QueueRow, ResendRaced, rows_that_fit
from node.store.sqlite import (
    Migration,
    connect_sync,
    ensure_store_identity,
    insert_columns,
    insert_rows,
    migrate_sync,
    transaction,
)
from node.store.threaded import SQLiteThreads
from node.wire.delivery import pack

__all__ = ["HubState", "HubStore", "QueuedBatch", "ResendRaced"]


_T = TypeVar("_T")
log = structlog.get_logger(__name__)


def _queue_of_packed_batches(conn: sqlite3.Connection) -> None:
    """Migration 6: one row per envelope becomes one row per packed batch. Each old row
    becomes a batch of one, under its own ``seq`` (delivery cursors stay valid)."""
    conn.execute("ALTER TABLE queue RENAME TO queue_v1")
    conn.execute("DROP INDEX queue_by_dest")
    conn.execute(
        "CREATE TABLE queue (seq INTEGER PRIMARY KEY, dest TEXT NOT NULL,"
        " count INTEGER NOT NULL, packed BLOB NOT NULL)")
    conn.execute("CREATE INDEX queue_by_dest ON queue (dest, seq)")
    cur = conn.execute("SELECT seq, dest, hub_ticket, envelope FROM queue_v1 ORDER BY seq")
    while rows := cur.fetchmany(10_000):
        conn.executemany("INSERT INTO queue (seq, dest, count, packed) VALUES (?,?,1,?)",
                         [(seq, dest, pack([bytes(envelope)], [ticket]))
                          for seq, dest, ticket, envelope in rows])
    conn.execute("DROP TABLE queue_v1")


MIGRATIONS: list[Migration] = [
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
    # 4: the subject index leaves out records without a subject (DELIVERED, PURGED, redacted:
    # about half the log), and takes the hub's new records in bulk: the hub writes them with
    # ``deferred = 1`` (found through the small, append-only ``audit_deferred``) and moves
    # them into ``audit_by_subject`` every ``SUBJECT_INDEX_EVERY`` records in one UPDATE, so
    # an index page is rewritten once per bulk instead of once per batch. Queries state the
    # partial indexes' conditions (node.store.audit_queries.SUBJECT_WHERE, DEFERRED_WHERE).
    """
    DROP INDEX IF EXISTS audit_by_subject;
    ALTER TABLE audit ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX audit_by_subject ON audit (subject_number, seq)
        WHERE subject_number <> '' AND deferred = 0;
    CREATE INDEX audit_deferred ON audit (seq) WHERE deferred = 1;
    """,
    # 5: acks stored zlib-compressed (packed = 1; ~57 KB -> ~13 KB for 1,000 outcomes, most of
    # it random ticket bits); rows written before keep packed = 0 (the serialized BatchAck).
    """
    ALTER TABLE recent_acks ADD COLUMN packed INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: the queue holds packed delivery batches (node.wire.delivery), one row per run of
    # envelopes for a destination instead of one row per envelope (Python: it packs the rows).
    _queue_of_packed_batches,
    # 7: the subject index becomes a table filled in bulk from the records after
    # ``audit_indexed.upto`` (one INSERT ... SELECT), instead of partial indexes on the audit
    # table that a bulk UPDATE of every new record moved them between (that UPDATE rewrote
    # each record once more).
    """
    CREATE TABLE audit_subjects (
        subject_number TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (subject_number, seq)
    ) WITHOUT ROWID;
    INSERT INTO audit_subjects SELECT subject_number, seq FROM audit WHERE subject_number <> '';
    CREATE TABLE audit_indexed (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        upto INTEGER NOT NULL
    );
    INSERT INTO audit_indexed VALUES (1, (SELECT coalesce(max(seq), 0) FROM audit));
    DROP INDEX IF EXISTS audit_by_subject;
    DROP INDEX IF EXISTS audit_deferred;
    ALTER TABLE audit DROP COLUMN deferred;
    """,
    # 8: the store's identity (``store_id``, ``created_at_us``), written once when the store is
    # created (or first opened by this version): the hub presents it to nodes at Register, so
    # a hub that starts on another store than the one they knew can be told apart.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
]

#: SQLite's result codes for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB).
_DAMAGED_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
#: How many sequences of recent acks to keep per origin (covers any node's in-flight window).
ACK_HISTORY = 200_000
#: Records with a subject appended before the newest are indexed in bulk (who-consulted reads
#: at most about this many, and the records without a subject between them, past the index).
SUBJECT_INDEX_EVERY = 20_000
_INSERT_AUDIT = (
    "INSERT INTO audit (seq, at_us, event, hub_ticket, sender, receiver, service_id,"
    " subject_type, subject_number, reason, detail, prev_hash, hash) VALUES "
)
_SUBJECT = 1 + FIELDS.index("subject_number")  # in a chain row (seq, *fields, prev, hash)


class HubStore:
    def __init__(
        self,
        path: Path,
        synchronous: str = "FULL",
        signer: Signer | None = None,
        checkpoints: AuditCheckpoints | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``checkpoints``: when commits sign the chain head (default: the documented policy);
        ``clock``: the daemon's clock (default: the system's)."""
        checkpoints = checkpoints or AuditCheckpoints()
        if checkpoints.every_records < 1 or checkpoints.every_s < 0:
            raise ValueError("checkpoints: every_records must be >= 1 and every_s >= 0")
        self.path = path
        self.synchronous = synchronous
        # The writer and the queue reader, each in its own thread: a whole write transaction
        # runs there as one call (one hand-over from the event loop per batch).
        self._db = SQLiteThreads(path, synchronous, "hub-store")
        self.chain = ChainWriter()
        self.next_queue_seq = 1
        # Audit checkpoints: the signer, the policy, and the running segment since the last.
        self.signer = signer
        self.checkpoint_every = checkpoints.every_records
        self.checkpoint_us = int(checkpoints.every_s * 1_000_000)
        #: Wall-clock microseconds (the bound method of the daemon's clock).
        self.clock = (clock or SystemClock()).now_us
        self.last_checkpoint: tuple[int, int] = (0, 0)  # (seq, at_us)
        self._segment = hashlib.sha256()  # record hashes after last_checkpoint[0] ...
        self._segment_upto = -1  # ... up to this seq (-1: rebuild from the database)
        self._query: sqlite3.Connection | None = None
        self._query_lock = asyncio.Lock()
        self._unindexed = 0  # records with a subject not yet indexed (about: a trigger only)
        self._indexing = False
        self.store_id = ""  # this store's identity (meta), read or written at open
        self.damaged = ""  # SQLite's message once the file was found damaged at run time
        self.on_damaged: list[Callable[[], None]] = []  # called once, in the event loop
        #: Writes that failed (a full disk): logged and counted by component and cause.
        self.failures = StoreFailures()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> HubState:
        try:
            return await self._db.open(self._open)
        except sqlite3.DatabaseError as exc:
            self._note_damage(exc)
            raise

    def _open(self, w: sqlite3.Connection) -> HubState:
        migrate_sync(w, MIGRATIONS)
        state = HubState()
        self.store_id = state.store_id = ensure_store_identity(w, self.clock())
        row = w.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        self.chain = ChainWriter(row[0], row[1]) if row else ChainWriter(0, GENESIS)
        self._load_checkpoint_state()
        state.pending = {dest: int(n) for dest, n in
                         w.execute("SELECT dest, sum(count) FROM queue GROUP BY dest")}
        row = w.execute("SELECT coalesce(max(seq), 0) FROM queue").fetchone()
        row2 = w.execute("SELECT coalesce(max(delivered_seq), 0) FROM destinations").fetchone()
        state.next_queue_seq = max(int(row[0]) if row else 0, int(row2[0]) if row2 else 0) + 1
        self.next_queue_seq = state.next_queue_seq
        state.endpoints = {inst: ep for inst, ep in w.execute(
            "SELECT institution, endpoint FROM destinations WHERE endpoint IS NOT NULL")}
        self._unindexed = int(w.execute(
            "SELECT count(*) FROM audit WHERE seq > (SELECT upto FROM audit_indexed)"
            " AND subject_number <> ''").fetchone()[0])
        return state

    def _index_subjects_when_due(self) -> None:
        """Queue the indexing of the newest records by subject (writer thread, after the
        commits already queued) once enough have accumulated."""
        if self._unindexed < SUBJECT_INDEX_EVERY or self._indexing:
            return
        self._indexing = True
        try:
            self._db.submit_write(self._index_subjects)
        except RuntimeError:  # closing: the next open's writes catch up
            self._indexing = False

    def _index_subjects(self) -> None:
        try:
            if not self._db.is_open:
                return
            with self._transaction() as w:
                w.execute("INSERT INTO audit_subjects SELECT subject_number, seq FROM audit"
                          " WHERE seq > (SELECT upto FROM audit_indexed) AND subject_number <> ''")
                w.execute("UPDATE audit_indexed SET upto = (SELECT coalesce(max(seq), 0)"
                          " FROM audit)")
            self._unindexed = 0
        except Exception as exc:  # noqa: BLE001 - the records stay found through the tail
            log.warning("audit_subject_index_failed", error=repr(exc))
        finally:
            self._indexing = False

    async def close(self) -> None:
        if self._db.is_open and self._unindexed:
            # Leave no tail behind: offline queries then read the index alone.
            with contextlib.suppress(Exception):
                await self._write(self._index_subjects)
        await self._db.close()
        async with self._query_lock:
            if self._query is not None:
                self._query.close()
                self._query = None

    @property
    def is_open(self) -> bool:
        return self._db.is_open

    @property
    def audit_last_seq(self) -> int:
        return self.chain.last_seq

    async def database_size(self) -> None:
        """None: the metrics read the files' sizes themselves (node/metrics.py)."""
        return None

    async def ping(self) -> None:
        """``Unavailable`` once the file was found damaged (:attr:`damaged`); a full disk
        fails each write instead, and the next may succeed."""
        if self.damaged:
            raise Unavailable(f"hub.sqlite is damaged: {self.damaged}", NOT_STORED)

    @property
    def writer(self) -> sqlite3.Connection:
        """The write connection: only for code running in the writer thread."""
        return self._db.writer

    async def _write(self, func: Callable[..., _T], *args: Any) -> _T:
        """Run ``func`` in the writer thread: writes are serialized there, in call order."""
        try:
            return await self._db.write(func, *args)
        except sqlite3.DatabaseError as exc:
            self._note_damage(exc)
            raise

    def _note_damage(self, exc: sqlite3.DatabaseError) -> None:
        """A database found damaged at run time ("database disk image is malformed"): say it
        once, at error, and keep it in :attr:`damaged` (a metric; the delivery loops then
        retry slowly instead of ~20 times a second). It stays set until restart, where the
        start-up integrity check refuses the file (node.store.data_dir)."""
        if getattr(exc, "sqlite_errorcode", None) not in _DAMAGED_CODES or self.damaged:
            return
        self.damaged = str(exc)
        log.error("store_damaged", path=str(self.path), error=str(exc),
                  action="restore hub.sqlite from a backup; the hub will not start on it")
        for callback in self.on_damaged:
            callback()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """:func:`~node.store.sqlite.transaction` on the writer (in its thread); on any failure
        the chain head rolls back with it."""
        head = (self.chain.last_seq, self.chain.last_hash)
        try:
            with transaction(self.writer) as w:
                yield w
        except BaseException:
            self.chain.rollback(*head)
            raise

    # -- intake ----------------------------------------------------------------------------

    async def origin_high(self, sender: str, origin: str) -> int:
        def run() -> int:
            row = self.writer.execute(
                "SELECT high_seq FROM origins WHERE sender = ? AND origin = ?", (sender, origin)
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._write(run)

    async def recent_acks(self, sender: str, origin: str, from_seq: int) -> list[tuple[int, bytes]]:
        """(first_seq, ack) of stored acks whose range reaches ``from_seq`` or later."""
        def run() -> list[tuple[int, bytes]]:
            return [(int(a), zlib.decompress(b) if packed else bytes(b))
                    for a, b, packed in self.writer.execute(
                        "SELECT first_seq, ack, packed FROM recent_acks WHERE sender = ?"
                        " AND origin = ? AND last_seq >= ? ORDER BY first_seq",
                        (sender, origin, from_seq),
                    )]

        return await self._write(run)

    async def commit_batch(
        self,
        sender: str,
        origin: str,
        first_seq: int,
        last_seq: int,
        queue_rows: Sequence[QueueRow],
        audit_records: Sequence[AuditRecord],
        ack: bytes,
    ) -> None:
        """Store one batch atomically: queue rows ``(dest, count, packed)``, audit records,
        idempotency record.

        Queue positions are assigned here, in the writer thread, so they increase in commit
        order: a delivery worker that has seen ``seq`` n has seen every committed row below n.

        Raises :class:`ResendRaced` (nothing written) when another stream of the same origin
        stored these sequences first (a node that reconnected while its old stream was still
        committing): its stream fails and the node's resend then gets the stored outcomes.
        """
        try:
            await self._write(self._commit_batch, sender, origin, first_seq, last_seq,
                              queue_rows, audit_records, ack)
        except (sqlite3.Error, OSError) as exc:
            raise self.failures.failed("hub_intake", exc, sender=sender) from exc
        self._index_subjects_when_due()

    def _commit_batch(self, sender: str, origin: str, first_seq: int, last_seq: int,
                      queue_rows: Sequence[QueueRow], audit_records: Sequence[AuditRecord],
                      ack: bytes) -> None:
        """:meth:`commit_batch` in the writer thread."""
        w = self.writer
        if origin:
            row = w.execute("SELECT high_seq FROM origins WHERE sender = ? AND origin = ?",
                            (sender, origin)).fetchone()
            if row is not None and int(row[0]) >= first_seq:
                raise ResendRaced(
                    f"sequences from {first_seq} of {origin} were stored meanwhile",
                    CallReason.RESEND_RACED)
        rows, position = [], self.next_queue_seq - 1
        for dest, count, packed in queue_rows:
            position += count
            rows.append((position, dest, count, packed))
        with self._transaction():
            if rows:
                insert_rows(w, "INSERT INTO queue (seq, dest, count, packed) VALUES ", 4, rows)
            self._append_audit(audit_records)
            if origin:
                w.execute(
                    "INSERT INTO origins (sender, origin, high_seq) VALUES (?,?,?)"
                    " ON CONFLICT (sender, origin) DO UPDATE SET high_seq ="
                    " max(high_seq, excluded.high_seq)",
                    (sender, origin, last_seq),
                )
                w.execute(
                    "INSERT OR REPLACE INTO recent_acks (sender, origin, first_seq, last_seq,"
                    " ack, packed) VALUES (?,?,?,?,?,1)",
                    (sender, origin, first_seq, last_seq, zlib.compress(ack, 1)),
                )
                w.execute(
                    "DELETE FROM recent_acks WHERE sender = ? AND origin = ?"
                    " AND last_seq < ?",
                    (sender, origin, last_seq - ACK_HISTORY),
                )
        self.next_queue_seq = position + 1

    def _append_audit(self, records: Sequence[AuditRecord]) -> None:
        """Extend the chain inside the caller's write transaction; checkpoint when due."""
        if not records:
            return
        w = self.writer
        self._sync_head()
        if self.signer is not None and self._segment_upto != self.chain.last_seq:
            self._load_checkpoint_state()
        columns = self.chain.extend_columns(records)
        insert_columns(w, _INSERT_AUDIT, columns)
        subjects = columns[_SUBJECT]
        self._unindexed += len(subjects) - subjects.count("")
        w.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (self.chain.last_seq, self.chain.last_hash),
        )
        if self.signer is None:
            return
        self._segment.update(b"".join(columns[-1]))  # type: ignore[arg-type]
        self._segment_upto = self.chain.last_seq
        cp_seq, cp_at = self.last_checkpoint
        now = self.clock()
        if (self.chain.last_seq - cp_seq >= self.checkpoint_every
                or now - cp_at >= self.checkpoint_us):
            self._write_checkpoint(now)

    def _sync_head(self) -> None:
        """The chain head as committed, inside the writer's transaction: another process (a
        purge) may have appended, and a rolled back transaction leaves our checkpoint state
        stale."""
        row = self.writer.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        head = (int(row[0]), bytes(row[1])) if row else (0, GENESIS)
        if head != (self.chain.last_seq, self.chain.last_hash):
            self.chain.rollback(*head)
            self._segment_upto = -1

    def _load_checkpoint_state(self) -> None:
        """Last checkpoint and the segment digest since, from the database (at open, and after
        a rollback or another process's append)."""
        w = self.writer
        row = w.execute(
            "SELECT seq, at_us FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        self.last_checkpoint = (int(row[0]), int(row[1])) if row else (0, 0)
        self._segment = hashlib.sha256()
        self._segment_upto = -1
        if self.signer is None:
            return
        cur = w.execute(
            "SELECT hash FROM audit WHERE seq > ? AND seq <= ? ORDER BY seq",
            (self.last_checkpoint[0], self.chain.last_seq),
        )
        while rows := cur.fetchmany(50_000):
            for (digest,) in rows:
                self._segment.update(digest)
        self._segment_upto = self.chain.last_seq

    def _write_checkpoint(self, now: int) -> Checkpoint:
        assert self.signer is not None
        cp = sign_checkpoint(self.signer, self.chain.last_seq, self.chain.last_hash, now,
                             self.last_checkpoint[0], self._segment.digest())
        self.writer.execute(
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
        return await self._write(self._checkpoint)

    def _checkpoint(self) -> Checkpoint | None:
        try:
            with transaction(self.writer):
                self._sync_head()
                if self._segment_upto != self.chain.last_seq:
                    self._load_checkpoint_state()
                if self.chain.last_seq > self.last_checkpoint[0]:
                    return self._write_checkpoint(self.clock())
                return None
        except BaseException:
            self._segment_upto = -1
            raise

    async def latest_checkpoint(self) -> Checkpoint | None:
        """The last signed checkpoint (what the hub shows nodes at Register)."""
        def run() -> Checkpoint | None:
            row = self.writer.execute(
                "SELECT seq, hash, at_us, from_seq, segment_digest, signature, key_id"
                " FROM audit_checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
            if row is None:
                return None
            return Checkpoint(int(row[0]), bytes(row[1]), int(row[2]), int(row[3]),
                              bytes(row[4]), bytes(row[5]), str(row[6]))

        return await self._write(run)

    # -- audit queries (node.store.audit_queries, in a worker thread) ----------------------

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
        """:func:`~node.store.audit_queries.who_consulted` on this hub's log (the admin API)."""
        return list(await self._in_thread(who_consulted, subject_number, since_us, limit))

    async def export_subject(self, subject_number: str, since_us: int | None = None) -> dict[str, Any]:
        """A signed audit extract for one subject (:func:`~.audit_queries.export_subject`)."""
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
        """Retention (:func:`~node.store.audit_queries.purge_kinds`) on a connection of its
        own: its short transactions interleave with the hub's commits."""
        def run() -> Any:
            conn = connect_sync(self.path)
            try:
                return purge_kinds(conn, cutoffs, service_kinds or {}, default_kind, self.clock())
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def append_audit(self, records: Sequence[AuditRecord]) -> None:
        """Audit records that come with no envelope to store (e.g. a refused connection)."""
        def run() -> None:
            with self._transaction():
                self._append_audit(records)

        try:
            await self._write(run)
        except (sqlite3.Error, OSError) as exc:
            raise self.failures.failed("hub_audit", exc, records=len(records)) from exc

    # -- delivery --------------------------------------------------------------------------

    async def read_queue(self, dest: str, after_seq: int, limit: int, max_bytes: int) -> QueuedBatch | None:
        """The next queue rows for ``dest`` in order: at most ``limit`` envelopes and
        ~``max_bytes`` (at least one row); None when nothing is queued after ``after_seq``."""
        try:
            return await self._db.read(self._read_queue, dest, after_seq, limit, max_bytes)
        except sqlite3.DatabaseError as exc:
            self._note_damage(exc)
            raise

    def _read_queue(self, dest: str, after_seq: int, limit: int, max_bytes: int) -> QueuedBatch | None:
        r = self._db.reader
        # Sizes first (the blobs stay on disk), then the blobs of the rows that fit; both in
        # one snapshot.
        r.execute("BEGIN")
        try:
            sizes = r.execute(
                "SELECT seq, count, length(packed) FROM queue WHERE dest = ? AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (dest, after_seq, min(limit, 1024)),
            ).fetchall()
            if not sizes:
                return None
            last, count = rows_that_fit(sizes, limit, max_bytes)
            packed = tuple(bytes(blob) for (blob,) in r.execute(
                "SELECT packed FROM queue WHERE dest = ? AND seq > ? AND seq <= ? ORDER BY seq",
                (dest, after_seq, last)))
        finally:
            r.execute("COMMIT")
        return QueuedBatch(last, count, packed)

    async def commit_delivery(
        self, dest: str, upto_seq: int, count: int, audit_records: Sequence[AuditRecord],
        token: int | None = None,
    ) -> None:
        """``dest`` acknowledged everything up to ``upto_seq``: drop it, audit it. ``token``
        is not checked: the one hub process on this file holds every lease."""
        def run() -> None:
            with self._transaction() as w:
                w.execute("DELETE FROM queue WHERE dest = ? AND seq <= ?", (dest, upto_seq))
                self._append_audit(audit_records)
                w.execute(
                    "INSERT INTO destinations (institution, delivered_seq, delivered_count,"
                    " updated_at_us) VALUES (?,?,?,?) ON CONFLICT (institution) DO UPDATE SET"
                    " delivered_seq = excluded.delivered_seq,"
                    " delivered_count = delivered_count + excluded.delivered_count,"
                    " updated_at_us = excluded.updated_at_us",
                    (dest, upto_seq, count, self.clock()),
                )

        try:
            await self._write(run)
        except (sqlite3.Error, OSError) as exc:
            raise self.failures.failed("hub_delivery", exc, destination=dest) from exc
        self._index_subjects_when_due()

    async def set_endpoint(self, institution: str, endpoint: str) -> None:
        def run() -> None:
            self.writer.execute(
                "INSERT INTO destinations (institution, endpoint, updated_at_us) VALUES (?,?,?)"
                " ON CONFLICT (institution) DO UPDATE SET endpoint = excluded.endpoint",
                (institution, endpoint, self.clock()),
            )

        await self._write(run)

    # -- delivery leases: one hub process owns every destination -----------------------------

    async def renew_leases(self, ttl_s: float) -> records.HeldLeases:
        return records.EVERY_DESTINATION

    async def release_leases(self, tokens: Mapping[str, int], leaving: bool = False) -> None:
        return None

    async def listen(self, doorbell: QueueDoorbell) -> None:
        return None  # no other process queues rows on this file (its data_dir lock)
