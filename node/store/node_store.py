"""A node's durable state: the outbox (to the hub) and the inbox (from the hub).

Outbox: every envelope the institution's applications submit gets the next ``seq`` (rowid,
never reused) and is committed before the local API answers. The uplink sends rows with
``seq > decided_seq`` to the hub in order and records the hub's answer to each batch: the
``BatchAck`` as received, one row per batch (table ``acks``, outcome ``index`` = ``seq`` -
``first_seq``; :meth:`NodeStore.outcomes` reads the outcome of each envelope from it; table
``outcomes`` holds those recorded per envelope by earlier versions). Since the hub
acknowledges batches in order, ``decided_seq`` (in ``meta``) is a watermark: every envelope at
or below it has the hub's decision. After a crash the uplink resends from the watermark; the
hub answers those it already stored with their original outcome (same ``origin`` + ``seq``),
so nothing is lost and nothing is stored twice.

Inbox: delivered envelopes are committed before the node acknowledges the delivery batch;
``hub_ticket`` is unique, so a redelivery of the same envelope is dropped (counted as a
duplicate). Applications read unacknowledged rows in arrival order and acknowledge by ticket.

Retention: neither table is the record of the exchange (the hub's audit log is), so what the
node is done with goes after a while instead of growing the file for the life of the node.
:meth:`NodeStore.mark` notes how far the outbox and the inbox had come at a time (table
``marks``; no time column on every row); :meth:`NodeStore.purge` deletes what was there at
the last mark before a cut-off *and* is done with: outbox envelopes the hub has decided (with
their outcomes; asking for one afterwards answers "purged by retention", and ``purged_seq`` in
``meta`` remembers how far) and inbox envelopes the application has acknowledged. An undecided
or unacknowledged envelope stays, however old. Sequences and inbox ids are ``AUTOINCREMENT``:
never reused, also once every row is gone. :mod:`node.member.retention` runs both hourly.

Threads: writes run on one plain ``sqlite3`` connection in a writer thread of their own, reads
on a second connection in a reader thread (WAL: readers never wait for the writer). Each
transaction is one function handed to its thread, so a batch costs one trip there and back,
not one per statement; rows go in as multi-row ``INSERT``s (:func:`insert_columns`).

Resubmissions (:meth:`NodeStore.enqueue_once`): an envelope submitted again with the same
sender ticket and content gets its first sequence instead of a second copy. The ticket is
stored with the envelope (``outbox.resubmit_key``, not indexed) and looked up in memory: the
tickets of the last :data:`RESUBMIT_WINDOW` ticketed envelopes still in the outbox, each with
its latest sequence, reloaded from the outbox at open. Only when a ticket is found is the
stored envelope read and compared with the new one (the caller's ``same``): nothing is hashed
per envelope, and a ticket reused for other content costs one read per use. An SQL index on
a digest, tried first, wrote a B-tree page per envelope at every commit (the sending node's
CPU went up ~75 % in the end-to-end benchmark); a digest per envelope cost ~2 µs.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import json
import operator
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from node.core.audit import Checkpoint
from node.core.clock import Clock, SystemClock
from node.core.continuity import HubRegression
from node.store.failures import StoreFailures
from node.store.records import Enqueued, NodeCounts, OutboxOutcome, Purged
from node.store.sqlite import (
    connect_sync,
    ensure_store_identity,
    insert_columns,
    migrate_sync,
    transaction,
)
from node.store.threaded import SQLiteThreads
from node.wire.envelopes import ack_outcomes

__all__ = [
    "PURGED_DETAIL",
    "RESUBMIT_WINDOW",
    "Enqueued",
    "NodeCounts",
    "NodeStore",
    "OutboxOutcome",
    "Purged",
    "accept_hub_state",
    "stored_checkpoint",
]

_second = operator.itemgetter(1)

T = TypeVar("T")

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
    # 3: the hub's answers as received, one row per batch instead of one per envelope (the
    # ``outcomes`` rows written before stay and are still read).
    """
    CREATE TABLE acks (
        last_seq INTEGER PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        ack BLOB NOT NULL
    );
    """,
    # 4: retention marks: the last outbox sequence and inbox id there were at ``at_us``.
    """
    CREATE TABLE marks (
        at_us INTEGER PRIMARY KEY,
        outbox_seq INTEGER NOT NULL,
        inbox_id INTEGER NOT NULL
    );
    """,
    # 5: envelopes ever stored in the inbox, kept with each delivery (inbox ids cannot tell:
    # a redelivered envelope, ignored, still uses one up).
    """
    INSERT OR IGNORE INTO meta (key, value) SELECT 'inbox_total', count(*) FROM inbox;
    """,
    # 6: a digest of the sender ticket and the content of each envelope submitted with a
    # ticket, indexed, so a resubmission (an application retrying) is answered with the
    # first one's sequence instead of sent twice (:meth:`NodeStore.enqueue_once`); purged
    # with the envelope.
    lambda c: _add_resubmit_key(c),
]
#: Rows deleted per transaction by :meth:`NodeStore.purge` (other writes run in between).
PURGE_CHUNK = 5_000
PURGED_DETAIL = "purged by retention"


#: Resubmission keys a node remembers: the tickets of its last 200,000 envelopes with one
#: (still in the outbox): days of an application's retries at a steady pace, for ~100-400
#: bytes each (docs/OPERATIONS.md, "Safe retries").
RESUBMIT_WINDOW = 200_000


class NodeStore:
    def __init__(self, path: Path, synchronous: str = "FULL",
                 resubmit_window: int = RESUBMIT_WINDOW, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()
        self.synchronous = synchronous
        #: Resubmission key -> first sequence, and (sequence, key) in sequence order for
        #: eviction; both touched by the writer thread only (see the module's docstring).
        self.resubmit_window = resubmit_window
        self._resubmit_keys: dict[str, int] = {}
        self._resubmit_order: collections.deque[tuple[int, str]] = collections.deque()
        self._db = SQLiteThreads(path, synchronous, "node-store")
        self.origin = ""
        self.store_id = ""
        self.decided_seq = 0
        self.hub_acked_seq = 0  # the hub acknowledged this origin's sequences up to here
        self.hub_checkpoint: Checkpoint | None = None  # the latest the hub showed (verified)
        self.hub_regression: HubRegression | None = None  # set: the hub lost state
        self.sent_accepted = 0
        self.sent_refused = 0
        self._last_seq = 0  # moved by the writer thread only (after each commit)
        self.purged_seq = 0  # outbox envelopes up to here may have gone (retention)
        self.inbox_unacknowledged = 0  # kept by the writer thread, after each commit
        self.inbox_total = 0  # envelopes ever stored in the inbox (also purged ones); ditto
        #: Writes that failed (a full disk): logged and counted by component and cause.
        self.failures = StoreFailures()
        #: Set whenever the outbox or inbox grows.
        self.outbox_changed = asyncio.Event()
        self.inbox_changed = asyncio.Event()

    # -- threads -----------------------------------------------------------------------------

    async def _write(self, func: Callable[..., T], *args: object) -> T:
        return await self._db.write(func, *args)

    async def _write_or_fail(self, component: str, func: Callable[..., T], *args: object) -> T:
        """:meth:`_write` for a component's own write: a storage failure (a full disk) is
        logged and counted, and raised as UNAVAILABLE ``NOT_STORED`` (node/store/failures.py)."""
        try:
            return await self._write(func, *args)
        except (sqlite3.Error, OSError) as exc:
            raise self.failures.failed(component, exc) from exc

    async def _read(self, func: Callable[..., T], *args: object) -> T:
        return await self._db.read(func, *args)

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """``body`` in one write transaction (in the writer thread)."""
        with transaction(self._db.writer) as w:
            return body(w)

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        await self._db.open(self._open_writer)

    def _open_writer(self, w: sqlite3.Connection) -> None:
        migrate_sync(w, MIGRATIONS)
        self.store_id = ensure_store_identity(w, self.clock.now_us())
        meta = dict(w.execute("SELECT key, value FROM meta").fetchall())
        self.origin = meta.get("origin", "")
        if not self.origin:
            self.origin = str(uuid.uuid4())
            self._transaction(lambda c: _set_meta(c, [("origin", self.origin)]))
        self.decided_seq = int(meta.get("decided_seq", 0))
        # Continuity (node.core.continuity): what the node knows of the hub's state.
        if "hub_acked_seq" not in meta:  # upgraded: every decided envelope was acked by the hub
            meta["hub_acked_seq"] = str(self.decided_seq)
            self._transaction(lambda c: _set_meta(c, [("hub_acked_seq", meta["hub_acked_seq"])]))
        # Moved only by the hub's acks (record_ack) and the operator (accept_hub_state), never
        # by a decision taken at the node.
        self.hub_acked_seq = int(meta["hub_acked_seq"])
        cp = meta.get("hub_checkpoint")
        self.hub_checkpoint = Checkpoint.from_json(json.loads(cp)) if cp else None
        regression = meta.get("hub_regression")
        self.hub_regression = HubRegression.loads(regression) if regression else None
        self.sent_accepted = int(meta.get("sent_accepted", 0))
        self.sent_refused = int(meta.get("sent_refused", 0))
        self.purged_seq = int(meta.get("purged_seq", 0))
        row = w.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM outbox), 0),"
            " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0))"
        ).fetchone()
        self._last_seq = int(row[0]) if row else 0
        (unacked,) = w.execute("SELECT count(*) FROM inbox WHERE acked = 0").fetchone()
        self.inbox_unacknowledged = int(unacked)
        recent = w.execute(
            "SELECT seq, resubmit_key FROM outbox WHERE seq > ? AND resubmit_key IS NOT NULL"
            " ORDER BY seq DESC LIMIT ?", (self.purged_seq, self.resubmit_window)).fetchall()
        self._remember_keys([(int(seq), str(key)) for seq, key in reversed(recent)])
        self.inbox_total = int(meta.get("inbox_total", 0))

    @property
    def pending_count(self) -> int:
        """Envelopes stored in the outbox and not decided by the hub yet."""
        return self._last_seq - self.decided_seq

    async def close(self) -> None:
        await self._db.close()

    # -- outbox ----------------------------------------------------------------------------

    async def enqueue(self, envelopes: Sequence[bytes]) -> list[int]:
        """Store envelopes for sending; return their sequences (committed on return)."""
        if not envelopes:
            return []
        def run() -> list[int]:
            seqs = self._transaction(lambda c: self._append_outbox(c, envelopes))
            self._last_seq = seqs[-1]  # committed: the numbers are taken
            return seqs

        seqs = await self._write(run)
        self.outbox_changed.set()
        return seqs

    async def enqueue_once(
        self, envelopes: Sequence[bytes], keys: Sequence[str | None],
        same: Callable[[bytes, bytes], bool],
    ) -> Enqueued:
        """:meth:`enqueue`, but an envelope whose resubmission key (``keys[i]``: its sender
        ticket, None for none) is that of an envelope still in the outbox, or of an earlier
        one of this call, and that is the same submission (``same(stored, new)``), is not
        stored again: it gets that envelope's sequence (``resubmitted``). A key is found while
        its envelope is the latest with that key, among the last ``resubmit_window`` ticketed
        ones and in the outbox (until retention purges it, :meth:`purge`). One look-up in
        memory per key, and one read per key found: linear in the call, whatever the outbox
        holds."""
        if not envelopes:
            return Enqueued([], frozenset())
        named = [k for k in keys if k]

        def body(c: sqlite3.Connection) -> Enqueued:
            found = self._queued_under(named) if named else {}
            if not found and len(set(named)) == len(named):  # the usual case: all new
                return Enqueued(self._append_outbox(c, envelopes, keys), frozenset())
            stored = _outbox_envelopes(c, sorted(set(found.values())))
            # A reference is an earlier sequence (> 0) or -(index + 1) of this call's own.
            refs: dict[int, int] = {}
            fresh: list[int] = []
            latest: dict[str, int] = {}  # key -> index in this call of its latest new envelope
            for i, key in enumerate(keys):
                if key:
                    j = latest.get(key)
                    if j is not None and same(envelopes[j], envelopes[i]):
                        refs[i] = -(j + 1)
                        continue
                    seq = found.get(key)
                    if j is None and seq in stored and same(stored[seq], envelopes[i]):
                        refs[i] = seq
                        continue
                    latest[key] = i
                fresh.append(i)
            new = self._append_outbox(c, [envelopes[i] for i in fresh],
                                      [keys[i] for i in fresh]) if fresh else []
            seq_of = dict(zip(fresh, new, strict=True))
            seqs = [seq_of[i] if i in seq_of else
                    refs[i] if refs[i] > 0 else seq_of[-refs[i] - 1]
                    for i in range(len(envelopes))]
            return Enqueued(seqs, frozenset(refs))

        def run() -> Enqueued:
            done = self._transaction(body)
            if len(done.resubmitted) < len(envelopes):  # committed: the numbers are taken
                self._last_seq = max(seq for i, seq in enumerate(done.seqs)
                                     if i not in done.resubmitted)
                self._remember_keys([(seq, key) for i, (seq, key) in
                                     enumerate(zip(done.seqs, keys, strict=True))
                                     if key and i not in done.resubmitted])
            return done

        done = await self._write_or_fail("local_submit", run)
        if len(done.resubmitted) < len(envelopes):
            self.outbox_changed.set()
        return done

    def _queued_under(self, keys: Sequence[str]) -> dict[str, int]:
        """In the writer thread: the latest sequence of each of ``keys`` still remembered
        and not purged by retention."""
        known: dict[str, int] = {}
        for key in keys:
            seq = self._resubmit_keys.get(key)
            if seq is not None and seq > self.purged_seq:
                known[key] = seq
        return known

    def _remember_keys(self, entries: Sequence[tuple[int, str]]) -> None:
        """In the writer thread, after a commit: remember ``(seq, key)`` (in sequence order;
        a key's latest sequence wins); forget the oldest beyond the window and the purged."""
        keys, order = self._resubmit_keys, self._resubmit_order
        for seq, key in entries:
            keys[key] = seq
            order.append((seq, key))
        while order and (len(order) > self.resubmit_window or order[0][0] <= self.purged_seq):
            seq, key = order.popleft()
            if keys.get(key) == seq:
                del keys[key]

    def _append_outbox(self, c: sqlite3.Connection, envelopes: Sequence[bytes],
                       keys: Sequence[str | None] | None = None) -> list[int]:
        """In the writer thread, inside a transaction: the next sequences after
        ``_last_seq``, which the caller moves once the transaction committed. ``keys``: the
        envelopes' resubmission keys, for :meth:`enqueue_once` (None: none)."""
        start = self._last_seq + 1
        seqs = list(range(start, start + len(envelopes)))
        insert_columns(c, "INSERT INTO outbox (seq, envelope, resubmit_key) VALUES ",
                       [seqs, envelopes, keys or [None] * len(envelopes)])
        return seqs

    async def pending(self, after_seq: int, limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Undecided envelopes after ``after_seq``, in order."""
        def read() -> list[tuple[int, bytes]]:
            return self._db.reader.execute(
                "SELECT seq, envelope FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (max(after_seq, self.decided_seq), limit)).fetchall()

        rows = await self._read(read)
        if rows:  # up to ~max_bytes, at least one
            sizes = list(itertools.accumulate(map(len, map(_second, rows))))
            del rows[max(1, bisect.bisect_right(sizes, max_bytes)):]
        return rows

    async def record_ack(
        self, first_seq: int, last_seq: int, ack: bytes, refused: Sequence[int],
        from_hub: bool = True,
    ) -> None:
        """Store the hub's answer to the batch ``first_seq..last_seq`` and move the decided
        watermark to ``last_seq``: ``ack`` is the serialized ``BatchAck`` (an outcome per
        sequence, ``index`` = sequence - ``first_seq``), ``refused`` the sequences it did not
        store (neither ACCEPTED nor DUPLICATE), for the counters. ``from_hub`` False: an
        outcome the node decided itself (the uplink gave up on an envelope); it moves the
        decided watermark but not ``hub_acked_seq``, what the hub acknowledged (the
        continuity check at Register compares the hub's state with that one only)."""
        def run() -> None:
            decided = self.decided_seq  # moved by this thread only, so equal to the database's
            if last_seq <= decided:
                return  # a resend answered while the first answer was stored: nothing new
            new_refused = sum(1 for seq in refused if seq > decided)
            new_accepted = last_seq - max(first_seq - 1, decided) - new_refused
            accepted, refused_total = (self.sent_accepted + new_accepted,
                                       self.sent_refused + new_refused)

            def body(c: sqlite3.Connection) -> None:
                if first_seq <= decided:  # a resend from an earlier watermark: this answer
                    # covers the last stored ones (same outcomes, the hub replays them)
                    c.execute("DELETE FROM acks WHERE last_seq >= ?", (first_seq,))
                c.execute("INSERT INTO acks (last_seq, first_seq, ack) VALUES (?, ?, ?)",
                          (last_seq, first_seq, ack))
                _set_meta(c, [("decided_seq", str(last_seq)), ("sent_accepted", str(accepted)),
                              ("sent_refused", str(refused_total)),
                              *([("hub_acked_seq", str(last_seq))] if from_hub else [])])

            self._transaction(body)
            self.decided_seq, self.sent_accepted, self.sent_refused = (
                last_seq, accepted, refused_total)
            if from_hub:
                self.hub_acked_seq = last_seq

        await self._write_or_fail("outbox_ack", run)

    async def outcomes(self, seqs: Sequence[int]) -> list[OutboxOutcome]:
        def read() -> dict[int, tuple[str, str, str, tuple[str, ...]]]:
            r = self._db.reader
            found = {}
            for start in range(0, len(seqs), 500):  # recorded per envelope (before acks)
                chunk = list(seqs[start:start + 500])
                for seq, reason, detail, ticket, receivers in r.execute(
                        "SELECT seq, reason, detail, hub_ticket, receivers FROM outcomes WHERE"
                        f" seq IN ({','.join('?' * len(chunk))})", chunk):
                    found[seq] = (str(reason), detail or "", ticket or "",
                                  tuple(receivers.split(",")) if receivers else ())
            # Acks do not overlap: walk them in order, each read and decoded once.
            wanted = sorted(set(seqs))
            i = 0
            while i < len(wanted):
                row = r.execute("SELECT first_seq, last_seq, ack FROM acks WHERE last_seq >= ?"
                                " ORDER BY last_seq LIMIT 1", (wanted[i],)).fetchone()
                if row is None:
                    break
                first, last, ack = row
                j = bisect.bisect_right(wanted, last, i)
                by_index = ack_outcomes(ack)
                for seq in wanted[i:j]:
                    outcome = by_index.get(seq - first) if seq >= first else None
                    if outcome is not None:
                        found[seq] = outcome
                i = j
            return found

        found = await self._read(read) if seqs else {}
        result = []
        for seq in seqs:
            row = found.get(seq)
            if row is None:
                detail = (PURGED_DETAIL if 0 < seq <= self.purged_seq else
                          "" if 0 < seq <= self._last_seq else "unknown sequence")
                result.append(OutboxOutcome(seq, None, detail, "", ()))
                continue
            result.append(OutboxOutcome(seq, *row))
        return result

    # -- hub continuity --------------------------------------------------------------------

    async def save_continuity(
        self, checkpoint: Checkpoint | None, regression: HubRegression | None
    ) -> None:
        """Keep the hub's latest verified checkpoint and the regression found (None: none)."""
        items = [("hub_checkpoint", json.dumps(checkpoint.to_json()) if checkpoint else "")]
        items.append(("hub_regression", regression.dumps() if regression else ""))

        def run() -> None:
            self._transaction(lambda c: _set_meta(c, items))
            self.hub_checkpoint, self.hub_regression = checkpoint, regression

        await self._write(run)

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
        replies: dict[str, bytes] = {}
        if derive is not None:
            for ticket, raw in zip(tickets, envelopes, strict=True):
                reply = derive(ticket, raw)
                if reply is not None:
                    replies[ticket] = reply

        def body(c: sqlite3.Connection) -> tuple[int, list[int]]:
            if replies:  # only those whose envelope is new here
                for (known,) in c.execute(
                        f"SELECT hub_ticket FROM inbox WHERE hub_ticket IN"
                        f" ({','.join('?' * len(replies))})", list(replies)).fetchall():
                    del replies[known]
            before = c.total_changes
            insert_columns(c, "INSERT OR IGNORE INTO inbox (hub_ticket, envelope) VALUES ",
                           [tickets, envelopes])
            stored = c.total_changes - before
            if stored:
                _set_meta(c, [("inbox_total", str(self.inbox_total + stored))])
            seqs = self._append_outbox(c, list(replies.values())) if replies else []
            return stored, seqs

        def run() -> tuple[int, list[int]]:
            stored, seqs = self._transaction(body)
            self.inbox_unacknowledged += stored
            self.inbox_total += stored
            if seqs:
                self._last_seq = seqs[-1]
            return stored, seqs

        stored, seqs = await self._write_or_fail("inbox_store", run)
        if stored:
            self.inbox_changed.set()
        if seqs:
            self.outbox_changed.set()
        return stored

    async def fetch(self, limit: int) -> list[tuple[str, bytes]]:
        def read() -> list[tuple[str, bytes]]:
            return self._db.reader.execute(
                "SELECT hub_ticket, envelope FROM inbox WHERE acked = 0 ORDER BY id LIMIT ?",
                (limit,)).fetchall()

        return await self._read(read)

    async def acknowledge(self, tickets: Sequence[str]) -> int:
        """Mark received envelopes as processed by the application (one transaction)."""
        def body(c: sqlite3.Connection) -> int:
            before = c.total_changes
            for start in range(0, len(tickets), 500):
                chunk = list(tickets[start:start + 500])
                c.execute("UPDATE inbox SET acked = 1 WHERE acked = 0 AND hub_ticket IN"
                          f" ({','.join('?' * len(chunk))})", chunk)
            return c.total_changes - before

        def run() -> int:
            acknowledged = self._transaction(body)
            self.inbox_unacknowledged -= acknowledged
            return acknowledged

        return await self._write_or_fail("inbox_ack", run)

    def counts(self) -> NodeCounts:
        """The counters kept in memory (the inbox total counts every envelope ever stored,
        also those purged)."""
        return NodeCounts(self.pending_count, self.sent_accepted, self.sent_refused,
                          self.inbox_unacknowledged, self.inbox_total)

    # -- retention -------------------------------------------------------------------------

    async def mark(self, now_us: int) -> None:
        """Note how far the outbox and the inbox have come at ``now_us``."""
        def run() -> None:
            def body(c: sqlite3.Connection) -> None:
                (inbox_id,) = c.execute(_INBOX_HIGH).fetchone()
                c.execute("INSERT OR REPLACE INTO marks (at_us, outbox_seq, inbox_id)"
                          " VALUES (?, ?, ?)", (now_us, self._last_seq, int(inbox_id)))

            self._transaction(body)

        await self._write(run)

    async def purge(self, before_us: int, chunk: int = PURGE_CHUNK) -> Purged:
        """Delete what was there at the last mark at or before ``before_us`` and is done
        with: decided outbox envelopes (and their outcomes), acknowledged inbox envelopes.
        In transactions of at most ``chunk`` rows, so the node's other writes go on."""
        def cut() -> tuple[int, int, int] | None:
            row = self._db.writer.execute(
                "SELECT at_us, outbox_seq, inbox_id FROM marks WHERE at_us <= ?"
                " ORDER BY at_us DESC LIMIT 1", (before_us,)).fetchone()
            if row is None:
                return None
            # decided_seq is moved by this thread only: no envelope above it goes.
            return int(row[0]), min(int(row[1]), self.decided_seq), int(row[2])

        found = await self._write(cut)
        if found is None:
            return Purged(0, 0, self.purged_seq)
        at_us, upto_seq, inbox_id = found
        # Moved first: an outcome deleted below must read as purged, never as still pending.
        if upto_seq > self.purged_seq:
            await self._write(self._transaction, lambda c: _set_meta(
                c, [("purged_seq", str(upto_seq))]))
            self.purged_seq = upto_seq

        def delete(sql: str, upto: int) -> int:
            return self._transaction(lambda c: c.execute(sql, (upto, chunk)).rowcount)

        deleted = []
        for sql, on_inbox in _PURGES:
            total, n = 0, chunk
            while n == chunk:
                n = await self._write(delete, sql, inbox_id if on_inbox else upto_seq)
                total += n
            deleted.append(total)
        await self._write(self._transaction, lambda c: c.execute(
            "DELETE FROM marks WHERE at_us < ?", (at_us,)))
        return Purged(deleted[0], deleted[-1], self.purged_seq)


_INBOX_HIGH = "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'inbox'), 0)"
#: (statement, bound to the inbox id rather than the outbox sequence); outbox first, inbox last.
_PURGES = (
    ("DELETE FROM outbox WHERE seq IN"
     " (SELECT seq FROM outbox WHERE seq <= ? ORDER BY seq LIMIT ?)", False),
    ("DELETE FROM outcomes WHERE seq IN"
     " (SELECT seq FROM outcomes WHERE seq <= ? ORDER BY seq LIMIT ?)", False),
    # An ack that also covers later envelopes stays (their outcomes are in it).
    ("DELETE FROM acks WHERE last_seq IN"
     " (SELECT last_seq FROM acks WHERE last_seq <= ? ORDER BY last_seq LIMIT ?)", False),
    ("DELETE FROM inbox WHERE id IN"
     " (SELECT id FROM inbox WHERE id <= ? AND acked = 1 ORDER BY id LIMIT ?)", True),
)


def _add_resubmit_key(c: sqlite3.Connection) -> None:
    if "resubmit_key" not in {row[1] for row in c.execute("PRAGMA table_info(outbox)")}:
        c.execute("ALTER TABLE outbox ADD COLUMN resubmit_key BLOB")
    # Looked up in memory (NodeStore._queued_under), never by SQL: an index on a random
    # digest cost a page write per envelope at every commit.
    c.execute("DROP INDEX IF EXISTS outbox_resubmit_key")


def _outbox_envelopes(c: sqlite3.Connection, seqs: Sequence[int]) -> dict[int, bytes]:
    """The stored envelopes of ``seqs`` that are still in the outbox (at most 500 at a time)."""
    found: dict[int, bytes] = {}
    for start in range(0, len(seqs), 500):
        chunk = seqs[start:start + 500]
        found.update((int(seq), bytes(raw)) for seq, raw in c.execute(
            f"SELECT seq, envelope FROM outbox WHERE seq IN ({','.join('?' * len(chunk))})",
            chunk))
    return found


def accept_hub_state(path: Path) -> HubRegression | None:
    """The operator's answer to a hub that lost state (``crossroads node accept-hub-state``,
    the node stopped): take the hub's presented watermark and checkpoint as the new baseline
    and clear the regression, so the node submits again. Returns what was accepted (None:
    no regression recorded)."""
    conn = connect_sync(path)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        text = meta.get("hub_regression")
        if not text:
            return None
        found = HubRegression.loads(text)
        cp = found.presented_checkpoint
        with transaction(conn):
            _set_meta(conn, [("hub_acked_seq", str(found.hub_acked_seq)), ("hub_regression", ""),
                             ("hub_checkpoint", json.dumps(cp.to_json()) if cp else "")])
        return found
    finally:
        conn.close()


def stored_checkpoint(path: Path) -> Checkpoint | None:
    """The hub checkpoint a node keeps (``crossroads node checkpoint``; read-only)."""
    conn = connect_sync(path, read_only=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'hub_checkpoint'").fetchone()
    finally:
        conn.close()
    return Checkpoint.from_json(json.loads(row[0])) if row and row[0] else None


def _set_meta(c: sqlite3.Connection, items: Sequence[tuple[str, str]]) -> None:
    c.executemany("INSERT INTO meta (key, value) VALUES (?, ?)"
                  " ON CONFLICT (key) DO UPDATE SET value = excluded.value", items)
