"""The audit queries of the PostgreSQL hub store: who consulted a subject, signed extracts,
retention purge, verification of the whole chain, a summary.

The decisions and formats are :mod:`node.store.audit_queries`' (:func:`consultations`,
:func:`signed_export`, :class:`Redactor`, :func:`node.core.audit.verify_log`); only the SQL
is PostgreSQL's. The subject index is an ordinary partial index (``audit_by_subject``), kept
by PostgreSQL at each insert. Reads run in one ``REPEATABLE READ`` snapshot; the purge's
writes are short transactions, the PURGED record appended under the chain head's lock like
any other record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import asyncpg

from node.core.audit import (
    GENESIS,
    ChainWriter,
    Checkpoint,
    Signer,
    StoredRecord,
    purge_detail,
    purged,
    verify_log,
)
from node.store.audit_queries import (
    AuditReport,
    Consultation,
    Delivery,
    PurgeReport,
    Redactor,
    consultations,
    pinned_problem,
    signed_export,
    summary_of,
)

__all__ = ["export_subject", "latest_checkpoint", "purge_kinds", "summary", "verify",
           "who_consulted"]

_COLUMNS = ("at_us, event, hub_ticket, sender, receiver, service_id, subject_type,"
            " subject_number, reason, detail")
#: Records fetched from the cursor at a time by :func:`verify`.
VERIFY_CHUNK = 10_000
_CHECKPOINT = "SELECT seq, hash, at_us, from_seq, segment_digest, signature, key_id FROM audit_checkpoints"


def _checkpoint(r: Sequence[Any]) -> Checkpoint:
    return Checkpoint(int(r[0]), bytes(r[1]), int(r[2]), int(r[3]), bytes(r[4]), bytes(r[5]),
                      str(r[6]))


async def _head(conn: asyncpg.Connection) -> tuple[int, bytes]:
    row = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
    return (int(row[0]), bytes(row[1])) if row else (0, GENESIS)


async def latest_checkpoint(conn: asyncpg.Connection) -> Checkpoint | None:
    row = await conn.fetchrow(_CHECKPOINT + " ORDER BY seq DESC LIMIT 1")
    return None if row is None else _checkpoint(row)


async def _subject_rows(conn: asyncpg.Connection, columns: str, subject_number: str,
                        since_us: int | None, limit: int | None) -> list[tuple[Any, ...]]:
    query = f"SELECT {columns} FROM audit WHERE subject_number = $1 AND at_us >= $2"
    since = since_us if since_us is not None else -(1 << 62)
    if limit is not None:
        rows = await conn.fetch(query + " ORDER BY seq DESC LIMIT $3", subject_number, since,
                                limit)
        rows.reverse()
    else:
        rows = await conn.fetch(query + " ORDER BY seq", subject_number, since)
    return [tuple(r) for r in rows]


async def _delivered(conn: asyncpg.Connection, columns: str,
                     rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    tickets = [r[3] for r in rows if r[2] == "ACCEPTED" and r[3]]
    if not tickets:
        return []
    return [tuple(r) for r in await conn.fetch(
        f"SELECT {columns} FROM audit WHERE event = 'DELIVERED' AND hub_ticket = ANY($1::text[])"
        " ORDER BY seq", tickets)]


async def who_consulted(conn: asyncpg.Connection, subject_number: str,
                        since_us: int | None = None, limit: int | None = None) -> list[Consultation]:
    if not subject_number:
        raise ValueError("a subject number is required")
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await _subject_rows(conn, f"seq, {_COLUMNS}", subject_number, since_us, limit)
        found: dict[str, list[Delivery]] = {}
        for seq, at_us, ticket, receiver in await _delivered(
                conn, "seq, at_us, hub_ticket, receiver", rows):
            found.setdefault(ticket, []).append(Delivery(receiver, int(at_us), int(seq)))
    return consultations(rows, found)


async def export_subject(conn: asyncpg.Connection, subject_number: str, signer: Signer,
                         since_us: int | None = None, now_us: int | None = None) -> dict[str, Any]:
    if not subject_number:
        raise ValueError("a subject number is required")
    since = since_us or 0
    columns = f"seq, {_COLUMNS}, prev_hash, hash"
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await _head(conn)
        rows = await _subject_rows(conn, columns, subject_number, since, None)
        delivered = await _delivered(conn, columns, rows)
        checkpoint = await conn.fetchrow(_CHECKPOINT + " ORDER BY seq DESC LIMIT 1")
    return signed_export(subject_number, since, now_us if now_us is not None
                         else time.time_ns() // 1000, head, checkpoint, rows, delivered, signer)


async def verify(conn: asyncpg.Connection, keys: Any = None,
                 pinned: Sequence[Checkpoint] = ()) -> AuditReport:
    """The whole chain, its head and checkpoints from one snapshot, verified
    (:func:`~node.core.audit.verify_log`); and that the chain holds each ``pinned``
    checkpoint (:func:`~node.store.audit_queries.pinned_problem`).

    The records stream: :func:`verify_log` runs in a worker thread and pulls them from a
    server-side cursor :data:`VERIFY_CHUNK` at a time, so memory stays bounded whatever the
    log's size (the snapshot is held until the end: a long verify holds back vacuum)."""
    loop = asyncio.get_running_loop()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await _head(conn)
        checkpoints = [_checkpoint(r) for r in await conn.fetch(_CHECKPOINT + " ORDER BY seq")]
        cursor = await conn.cursor(f"SELECT seq, {_COLUMNS}, prev_hash, hash, redacted"
                                   " FROM audit ORDER BY seq")

        def records() -> Iterator[StoredRecord]:
            while rows := asyncio.run_coroutine_threadsafe(cursor.fetch(VERIFY_CHUNK),
                                                           loop).result():
                for r in rows:
                    yield StoredRecord(int(r[0]), tuple(str(v) for v in r[1:11]), bytes(r[11]),
                                       bytes(r[12]), int(r[13]))

        report = await asyncio.to_thread(verify_log, records(), head, checkpoints, keys)
        stored: dict[int, bytes] = {}  # a record's hash, else its checkpoint's (purged)
        for table in ("audit_checkpoints", "audit"):
            stored |= {int(r[0]): bytes(r[1]) for r in await conn.fetch(
                f"SELECT seq, hash FROM {table} WHERE seq = ANY($1::bigint[])",
                [cp.seq for cp in pinned])} if pinned else {}
    problem = report.problem
    for cp in pinned:
        if problem is None:
            problem = pinned_problem(cp, keys, stored.get(cp.seq), head[0])
    return AuditReport(report.records, problem, report)


async def summary(conn: asyncpg.Connection) -> dict[str, Any]:
    """:func:`node.store.audit_queries.summary` on PostgreSQL, from one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return summary_of(
            await conn.fetch("SELECT event, count(*) FROM audit GROUP BY event"),
            await conn.fetch("SELECT reason, count(*) FROM audit WHERE event = 'REJECTED'"
                             " GROUP BY reason"),
            await conn.fetchval("SELECT min(seq) FROM audit"), await _head(conn),
            await conn.fetchrow("SELECT count(*), max(seq), max(at_us) FROM audit_checkpoints"))


# -- retention -----------------------------------------------------------------------------


async def purge_kinds(conn: asyncpg.Connection, cutoffs: Mapping[str, int],
                      service_kinds: Mapping[str, str], default_kind: str,
                      now_us: int, chunk: int = 20_000) -> PurgeReport:
    """:func:`node.store.audit_queries.purge_kinds` on PostgreSQL (same steps, same report)."""
    if not cutoffs:
        return PurgeReport(note="no cut-offs given")
    last_cp = int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM audit_checkpoints"))
    if not last_cp:
        return PurgeReport(note="no signed checkpoint yet: nothing can be purged")
    redactor = Redactor(cutoffs, service_kinds, default_kind)
    first = int(await conn.fetchval("SELECT coalesce(min(seq), 0) FROM audit"))
    # The records' times follow their seqs (one clock, one lock): a range scan from the end.
    upto = int(await conn.fetchval(
        "SELECT coalesce(max(seq), $1 - 1) FROM audit WHERE seq BETWEEN $1 AND $2"
        " AND at_us < $3", first, last_cp, redactor.newest_cut))
    if upto < first:
        return PurgeReport(note="no record older than the cut-offs")
    purge_seq = 0

    async def ensure_purge_record() -> int:
        nonlocal purge_seq
        if not purge_seq:
            purge_seq = await _append_purge_record(conn, now_us, purge_detail(cutoffs, upto))
        return purge_seq

    redacted = 0
    for low in range(first, upto + 1, chunk):
        rows = await conn.fetch(f"SELECT {Redactor.COLUMNS} FROM audit WHERE seq BETWEEN $1"
                                " AND $2 AND redacted = 0 ORDER BY seq",
                                low, min(upto, low + chunk - 1))
        victims, _subjects = redactor.victims(rows)
        if victims:
            marker = await ensure_purge_record()
            await conn.execute(
                "UPDATE audit SET event = '', hub_ticket = '', sender = '', receiver = '',"
                " service_id = '', subject_type = '', subject_number = '', reason = '',"
                " detail = '', redacted = $1 WHERE seq = ANY($2::bigint[]) AND redacted = 0",
                marker, victims)
            redacted += len(victims)
    deleted, anchor = await _cut_prefix(conn, first, upto, ensure_purge_record, chunk)
    return PurgeReport(redacted, deleted, anchor, purge_seq, upto)


async def _append_purge_record(conn: asyncpg.Connection, now: int, detail: str) -> int:
    async with conn.transaction():
        row = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        writer = ChainWriter(int(row[0]), bytes(row[1])) if row else ChainWriter()
        (record,) = writer.extend([purged(str(now), detail)])
        await conn.execute(
            f"INSERT INTO audit (seq, {_COLUMNS}, prev_hash, hash) VALUES"
            " ($1, $2::text::bigint, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)", *record)
        await conn.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2)"
            " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            writer.last_seq, writer.last_hash)
    return writer.last_seq


async def _cut_prefix(conn: asyncpg.Connection, first: int, upto: int, ensure_purge_record: Any,
                      chunk: int) -> tuple[int, int]:
    first_live = await conn.fetchval("SELECT min(seq) FROM audit WHERE redacted = 0"
                                     " AND event <> 'PURGED'")
    first_live = int(first_live) if first_live is not None else upto + 1
    stops = [int(r[0]) for r in await conn.fetch(
        "SELECT seq FROM audit_checkpoints WHERE seq >= $1 AND seq < $2 AND seq <= $3"
        " ORDER BY seq", first, first_live, upto)]
    if not stops:
        return 0, 0
    await ensure_purge_record()
    deleted, start, anchor = 0, first, 0
    for i, stop in enumerate(stops):
        if stop - start + 1 < chunk and i < len(stops) - 1:
            continue  # cut in steps of about ``chunk`` records, always at a checkpoint
        async with conn.transaction():
            status = await conn.execute("DELETE FROM audit WHERE seq <= $1", stop)
            await conn.execute("DELETE FROM audit_checkpoints WHERE seq < $1", stop)
        deleted += int(status.split()[-1])
        start, anchor = stop + 1, stop
    return deleted, anchor
