"""The SQL of the hub's audit log, straight from its SQLite file: verify, summarize, who
consulted a subject, signed extracts, retention purge.

Everything here takes a plain :mod:`sqlite3` connection (or a path) so the command line
(:mod:`node.audit_tool`, the audit CLI's functions) and the running hub
(:class:`node.store.hub_store.HubStore`, in a worker thread) share one implementation. See
docs/AUDIT.md for the formats and the trust argument.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.core.audit import (
    FIELDS,
    GENESIS,
    AuditProblem,
    ChainWriter,
    Checkpoint,
    LogReport,
    Signer,
    StoredRecord,
    purge_detail,
    purged,
    sign_export,
    verify_checkpoint_signature,
    verify_log,
)
from node.store.sqlite import connect_sync, transaction

__all__ = [
    "SUBJECT_WHERE",
    "TAIL_WHERE",
    "AuditReport",
    "Consultation",
    "Delivery",
    "PurgeReport",
    "check_pinned",
    "connected",
    "export_subject",
    "load_checkpoints",
    "pinned_problem",
    "purge",
    "purge_kinds",
    "Redactor",
    "consultations",
    "signed_export",
    "service_kinds_from_directory",
    "subject_query",
    "summary",
    "summary_of",
    "verify_file",
    "who_consulted",
]

_COLUMNS = ("at_us, event, hub_ticket, sender, receiver, service_id, subject_type,"
            " subject_number, reason, detail")
#: One subject's records through the subject index ``audit_subjects`` (one parameter, used
#: twice: ``?1``): the records are re-checked, so an index entry of a record since redacted
#: or deleted by retention finds nothing.
SUBJECT_WHERE = ("seq IN (SELECT seq FROM audit_subjects WHERE subject_number = ?1)"
                 " AND subject_number = ?1")
#: The hub's newest records, not indexed yet (at most about
#: ``node.store.hub_store.SUBJECT_INDEX_EVERY`` with a subject): a range read past the index.
TAIL_WHERE = "seq > (SELECT upto FROM audit_indexed WHERE id = 1) AND subject_number = ?1"
DEFAULT_KIND = "unknown"


def _open(path: Path, write: bool = False) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"no hub database at {path}")
    return connect_sync(path, read_only=not write)


@contextlib.contextmanager
def connected(path: Path, write: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to the hub's file for one command, read-only unless ``write`` (the
    purge); closed at the end of the block."""
    conn = _open(path, write)
    try:
        yield conn
    finally:
        conn.close()


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


def _has_table(conn: sqlite3.Connection, name: str, kind: str = "table") -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?",
                        (kind, name)).fetchone() is not None


def _head(conn: sqlite3.Connection) -> tuple[int, bytes]:
    row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    return (int(row[0]), bytes(row[1])) if row else (0, GENESIS)


# -- verification --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditReport:
    records: int
    problem: AuditProblem | None
    log: LogReport | None = None


def load_checkpoints(conn: sqlite3.Connection) -> list[Checkpoint]:
    if not _has_table(conn, "audit_checkpoints"):
        return []
    return [
        Checkpoint(int(r[0]), bytes(r[1]), int(r[2]), int(r[3]), bytes(r[4]), bytes(r[5]), str(r[6]))
        for r in conn.execute("SELECT seq, hash, at_us, from_seq, segment_digest, signature,"
                              " key_id FROM audit_checkpoints ORDER BY seq")
    ]


def verify_file(
    path: Path,
    keys: Mapping[str, Ed25519PublicKey] | None = None,
    pinned: Sequence[Checkpoint] = (),
    integrity: bool = False,
) -> AuditReport:
    """Verify the chain, the checkpoints and (with ``keys``) their signatures; that the chain
    holds each ``pinned`` checkpoint (one kept outside the hub, e.g. by a node: proof that the
    chain did not restart or lose its end); with ``integrity``, SQLite's full
    ``PRAGMA integrity_check`` of the file first."""
    conn = _open(path)
    try:
        if integrity:
            rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(10)")]
            if rows != ["ok"]:
                return AuditReport(0, AuditProblem(0, "database file damaged (PRAGMA"
                                                   f" integrity_check): {'; '.join(rows)}",
                                                   "file"))
        conn.execute("BEGIN")  # one snapshot: records, checkpoints and head agree
        report = verify_log(_records(conn), _head(conn), load_checkpoints(conn), keys)
        problem = report.problem
        for cp in pinned:
            if problem is None:
                problem = check_pinned(conn, cp, keys)
        conn.execute("COMMIT")
        return AuditReport(report.records, problem, report)
    finally:
        conn.close()


def check_pinned(
    conn: sqlite3.Connection, cp: Checkpoint, keys: Mapping[str, Ed25519PublicKey] | None
) -> AuditProblem | None:
    """None if the chain in ``conn`` holds checkpoint ``cp`` (see :func:`pinned_problem`)."""
    row = conn.execute("SELECT hash FROM audit WHERE seq = ?", (cp.seq,)).fetchone()
    if row is None and _has_table(conn, "audit_checkpoints"):
        row = conn.execute("SELECT hash FROM audit_checkpoints WHERE seq = ?",
                           (cp.seq,)).fetchone()
    return pinned_problem(cp, keys, None if row is None else bytes(row[0]), _head(conn)[0])


def pinned_problem(
    cp: Checkpoint, keys: Mapping[str, Ed25519PublicKey] | None, stored_hash: bytes | None,
    head_seq: int,
) -> AuditProblem | None:
    """None if a chain holds checkpoint ``cp``: ``stored_hash`` is the chain's hash at
    ``cp.seq`` (of its record or, that record purged, of the same checkpoint anchoring the
    chain; None: neither) and must be ``cp.hash``; with ``keys``, its signature must verify
    too (every backend's ``verify --checkpoint`` decides here)."""
    if keys is not None and (message := verify_checkpoint_signature(cp, keys)) is not None:
        return AuditProblem(cp.seq, f"given checkpoint: {message}", "checkpoint")
    if stored_hash is None:
        return AuditProblem(cp.seq, f"the given checkpoint is at record {cp.seq}, but this"
                            f" chain ends at {head_seq}: records lost (restored from an older"
                            " copy, or the chain restarted)", "checkpoint")
    if stored_hash != cp.hash:
        return AuditProblem(cp.seq, "the given checkpoint's chain hash differs from this"
                            f" chain's record {cp.seq}: not the same chain (it restarted or"
                            " was replaced)", "checkpoint")
    return None


def _records(conn: sqlite3.Connection) -> Iterator[StoredRecord]:
    redacted = "redacted" if _has_column(conn, "audit", "redacted") else "0"
    cursor = conn.execute(
        f"SELECT seq, {_COLUMNS}, prev_hash, hash, {redacted} FROM audit ORDER BY seq")
    while rows := cursor.fetchmany(10_000):
        for row in rows:
            yield StoredRecord(int(row[0]), tuple(str(v) for v in row[1:11]), bytes(row[11]),
                               bytes(row[12]), int(row[13]))


def summary(path: Path) -> dict[str, Any]:
    """Record counts by event and by reason; the chain's extent and checkpoints."""
    conn = _open(path)
    try:
        conn.execute("BEGIN")  # one snapshot
        checkpoints = None
        if _has_table(conn, "audit_checkpoints"):
            checkpoints = conn.execute("SELECT count(*), max(seq), max(at_us)"
                                       " FROM audit_checkpoints").fetchone()
        result = summary_of(
            conn.execute("SELECT event, count(*) FROM audit GROUP BY event").fetchall(),
            conn.execute("SELECT reason, count(*) FROM audit WHERE event = 'REJECTED'"
                         " GROUP BY reason").fetchall(),
            conn.execute("SELECT min(seq) FROM audit").fetchone()[0], _head(conn), checkpoints)
        conn.execute("COMMIT")
        return result
    finally:
        conn.close()


def summary_of(
    events: Iterable[Sequence[Any]], rejected_by_reason: Iterable[Sequence[Any]],
    first_seq: int | None, head: tuple[int, bytes], checkpoints: Sequence[Any] | None,
) -> dict[str, Any]:
    """The summary of a log from its counts (event, n) and (reason, n), its first record,
    its head and (count, last seq, last time) of its checkpoints, None if it has no
    checkpoint table (every backend's ``summary`` ends here; the counts in name order)."""
    counts = dict(sorted((str(event), int(n)) for event, n in events))
    if "" in counts:
        counts["(redacted)"] = counts.pop("")
    result: dict[str, Any] = {
        "events": counts,
        "rejected_by_reason": dict(sorted((str(reason), int(n))
                                          for reason, n in rejected_by_reason)),
        "chain": {"first_seq": first_seq or 0, "head_seq": head[0], "head_hash": head[1].hex()}}
    if checkpoints is not None:
        n, last, at = checkpoints
        result["checkpoints"] = {"count": n, "last_seq": last or 0, "last_at_us": at or 0}
    return result


# -- who consulted -------------------------------------------------------------------------


class Delivery(NamedTuple):
    """A receiver's acknowledgement of an envelope (its ``DELIVERED`` record ``seq``)."""

    receiver: str
    at_us: int
    seq: int


@dataclass(frozen=True, slots=True)
class Consultation:
    """One audit record about a subject: an envelope accepted or refused (or a directory
    integration), with the receivers it was routed to and the deliveries acknowledged."""

    seq: int
    at_us: int
    event: str  # ACCEPTED | REJECTED | ANSWERED | INTEGRATED | DEINTEGRATED
    institution: str  # the sender: who asked
    service_id: str  # what kind of data
    outcome: str  # ACCEPTED or the refusal reason
    detail: str
    subject_type: str
    hub_ticket: str
    receivers: tuple[str, ...]
    deliveries: tuple[Delivery, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at_us": self.at_us, "event": self.event,
                "institution": self.institution, "service_id": self.service_id,
                "outcome": self.outcome, "detail": self.detail, "subject_type": self.subject_type,
                "hub_ticket": self.hub_ticket, "receivers": list(self.receivers),
                "deliveries": [{"receiver": d.receiver, "at_us": d.at_us, "seq": d.seq}
                               for d in self.deliveries]}


def subject_query(columns: str, tail: bool = False) -> str:
    """``SELECT columns`` of one subject's records (one parameter: the number) through the
    index ``audit_subjects`` or, with ``tail``, the records not indexed yet; callers append
    further conditions (plain ``?`` parameters follow the number) and the order."""
    return f"SELECT {columns} FROM audit WHERE {TAIL_WHERE if tail else SUBJECT_WHERE}"


def _subject_rows(
    conn: sqlite3.Connection, columns: str, subject_number: str, since_us: int | None,
    limit: int | None,
) -> list[Any]:
    """One subject's records (``columns`` start with ``seq``) in seq order; with ``limit``
    the most recent. Inside the caller's read transaction: the index and the tail are read
    from one snapshot."""
    if not _has_table(conn, "audit_subjects"):  # a file from before migration 7: no index
        head, tail = f"SELECT {columns} FROM audit WHERE subject_number = ?1", None
    else:
        head, tail = subject_query(columns), subject_query(columns, tail=True)
    params: list[Any] = [subject_number]
    since = ""
    if since_us is not None:
        since = " AND at_us >= ?"
        params.append(since_us)
    if limit is not None:
        rows = conn.execute(head + since + " ORDER BY seq DESC LIMIT ?",
                            [*params, limit]).fetchall()
        rows.reverse()
    else:
        rows = conn.execute(head + since + " ORDER BY seq", params).fetchall()
    if tail is not None:
        newest = conn.execute(tail + since, params).fetchall()
        if newest:
            rows = sorted(rows + newest, key=lambda r: int(r[0]))
            if limit is not None:
                rows = rows[-limit:] if limit > 0 else []
    return rows


def who_consulted(
    conn: sqlite3.Connection,
    subject_number: str,
    since_us: int | None = None,
    limit: int | None = None,
) -> list[Consultation]:
    """Every record about ``subject_number`` (oldest first; with ``limit``, the most recent
    ``limit``), each with its deliveries joined by hub ticket.

    One range read on ``audit_subjects`` (:func:`subject_query`) plus one indexed look-up
    per batch of 500 tickets on ``audit_delivered_by_ticket``: milliseconds for a citizen,
    whatever the log's size.
    """
    if not subject_number:
        raise ValueError("a subject number is required")
    conn.execute("BEGIN")
    try:
        rows = _subject_rows(conn, f"seq, {_COLUMNS}", subject_number, since_us, limit)
        tickets = [r[3] for r in rows if r[2] == "ACCEPTED" and r[3]]
        deliveries = _deliveries(conn, tickets)
    finally:
        conn.execute("COMMIT")
    return consultations(rows, deliveries)


def consultations(rows: Sequence[Sequence[Any]],
                  deliveries: Mapping[str, Sequence[Delivery]]) -> list[Consultation]:
    """The consultations of a subject's record rows (``seq, {_COLUMNS}``), with the
    deliveries of their tickets (every backend's who-consulted ends here)."""
    return [
        Consultation(int(seq), int(at_us), event, sender, service, reason, detail, subject_type,
                     ticket, tuple(r for r in receiver.split(",") if r),
                     tuple(deliveries.get(ticket, ())) if event == "ACCEPTED" else ())
        for (seq, at_us, event, ticket, sender, receiver, service, subject_type, _subject, reason,
             detail) in rows
    ]


def _deliveries(conn: sqlite3.Connection, tickets: Sequence[str]) -> dict[str, list[Delivery]]:
    found: dict[str, list[Delivery]] = {}
    if not tickets or not _has_table(conn, "audit_delivered_by_ticket", "index"):
        return found
    for i in range(0, len(tickets), 500):
        chunk = tickets[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for seq, at_us, ticket, receiver in conn.execute(
            "SELECT seq, at_us, hub_ticket, receiver FROM audit INDEXED BY"
            f" audit_delivered_by_ticket WHERE event = 'DELIVERED' AND hub_ticket IN ({marks})"
            " ORDER BY seq", chunk,
        ):
            found.setdefault(ticket, []).append(Delivery(receiver, int(at_us), int(seq)))
    return found


# -- signed extracts -----------------------------------------------------------------------


def _record_json(row: Sequence[Any]) -> dict[str, Any]:
    return {"seq": int(row[0]),
            "fields": {name: str(value) for name, value in zip(FIELDS, row[1:11], strict=True)},
            "prev_hash": bytes(row[11]).hex(), "hash": bytes(row[12]).hex()}


def export_subject(
    conn: sqlite3.Connection,
    subject_number: str,
    signer: Signer,
    since_us: int | None = None,
    now_us: int | None = None,
) -> dict[str, Any]:
    """A signed extract of everything the log holds about one subject.

    The body lists the subject's records and the delivery records of its envelopes (all
    fields, seq, prev_hash, hash), the chain head at export time and the latest signed
    checkpoint; the hub signs the canonical body (:func:`node.core.audit.sign_export`).
    """
    import time

    if not subject_number:
        raise ValueError("a subject number is required")
    since = since_us or 0
    conn.execute("BEGIN")
    try:
        head_seq, head_hash = _head(conn)
        rows = _subject_rows(conn, f"seq, {_COLUMNS}, prev_hash, hash", subject_number, since,
                             None)
        tickets = [r[3] for r in rows if r[2] == "ACCEPTED" and r[3]]
        delivered: list[Sequence[Any]] = []
        if tickets and _has_table(conn, "audit_delivered_by_ticket", "index"):
            for i in range(0, len(tickets), 500):
                chunk = tickets[i:i + 500]
                delivered += conn.execute(
                    f"SELECT seq, {_COLUMNS}, prev_hash, hash FROM audit INDEXED BY"
                    " audit_delivered_by_ticket WHERE event = 'DELIVERED' AND hub_ticket IN"
                    f" ({','.join('?' * len(chunk))})", chunk,
                ).fetchall()
        checkpoints = conn.execute(
            "SELECT seq, hash, at_us, from_seq, segment_digest, signature, key_id"
            " FROM audit_checkpoints ORDER BY seq DESC LIMIT 1").fetchall() \
            if _has_table(conn, "audit_checkpoints") else []
    finally:
        conn.execute("COMMIT")
    return signed_export(subject_number, since, now_us if now_us is not None
                         else time.time_ns() // 1000, (head_seq, head_hash),
                         checkpoints[0] if checkpoints else None, rows, delivered, signer)


def signed_export(
    subject_number: str, since: int, now_us: int, head: tuple[int, bytes],
    checkpoint: Sequence[Any] | None, rows: Sequence[Sequence[Any]],
    delivered: list[Sequence[Any]], signer: Signer,
) -> dict[str, Any]:
    """The signed extract of a subject's record rows (``seq, {_COLUMNS}, prev_hash, hash``),
    the delivery records of its envelopes, the head and the latest checkpoint row, read in
    one snapshot (every backend's export ends here)."""
    delivered.sort(key=lambda r: int(r[0]))
    latest = None
    if checkpoint is not None:
        r = checkpoint
        latest = Checkpoint(int(r[0]), bytes(r[1]), int(r[2]), int(r[3]), bytes(r[4]),
                            bytes(r[5]), str(r[6])).to_json()
    body = {
        "subject": subject_number,
        "since_us": since,
        "exported_at_us": now_us,
        "head": {"seq": head[0], "hash": head[1].hex()},
        "checkpoint": latest,
        "records": [_record_json(r) for r in rows],
        "deliveries": [_record_json(r) for r in delivered],
    }
    return sign_export(body, signer)


# -- retention -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PurgeReport:
    redacted: int = 0  # records whose content was erased
    deleted: int = 0  # records removed by cutting the chain's prefix
    anchor: int = 0  # the signed checkpoint the chain now starts from (0: not cut)
    purge_seq: int = 0  # the PURGED record documenting this purge (0: nothing to do)
    upto_seq: int = 0  # the highest record the purge could touch
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"redacted": self.redacted, "deleted": self.deleted, "anchor": self.anchor,
                "purge_seq": self.purge_seq, "upto_seq": self.upto_seq, "note": self.note}


def service_kinds_from_directory(path: Path) -> dict[str, str]:
    """Service id -> kind (consultation, mutation, ...) from the hub's directory.sqlite."""
    conn = _open(path)
    try:
        kinds: dict[str, str] = {}
        for (data,) in conn.execute("SELECT data FROM services"):
            entry = json.loads(data)
            kinds[str(entry["id"])] = str(entry.get("k") or DEFAULT_KIND)
        return kinds
    finally:
        conn.close()


def purge(
    conn: sqlite3.Connection,
    before_us: int,
    kinds: Collection[str] | None = None,
    service_kinds: Mapping[str, str] | None = None,
    default_kind: str = DEFAULT_KIND,
    now_us: int | None = None,
) -> PurgeReport:
    """Purge records older than ``before_us`` whose service kind is in ``kinds`` (None: every
    kind). ``service_kinds`` maps service id -> kind (the directory's); others are
    ``default_kind``. See :func:`purge_kinds`."""
    cutoffs = {kind: before_us for kind in kinds} if kinds is not None else {"*": before_us}
    return purge_kinds(conn, cutoffs, service_kinds or {}, default_kind, now_us)


def purge_kinds(
    conn: sqlite3.Connection,
    cutoffs: Mapping[str, int],
    service_kinds: Mapping[str, str],
    default_kind: str = DEFAULT_KIND,
    now_us: int | None = None,
    chunk: int = 20_000,
) -> PurgeReport:
    """Apply per-kind cut-offs (kind -> time; ``"*"`` for kinds not listed) and keep the chain
    verifiable.

    1. Only records inside signed checkpoint segments are touched (up to ``upto_seq``: the
       last checkpoint, and no later than the newest record older than every cut-off).
    2. A ``PURGED`` record (the cut-offs and ``upto_seq``) is appended to the chain first.
    3. Records older than their kind's cut-off are *redacted*: every field blanked except the
       time, seq and hashes, marked with the PURGED record's seq; their entries in the
       subject index go in the same transaction. A delivery record has the
       kind of its envelope's ACCEPTED record; once that is gone, it goes at the earliest
       cut-off. PURGED records are never redacted.
    4. The chain's prefix is cut at the last signed checkpoint before the first live record,
       in short transactions each ending at a checkpoint, so the chain always starts at a
       signed checkpoint (the anchor ``crossroads audit verify`` starts from).
    """
    import time

    if not cutoffs:
        return PurgeReport(note="no cut-offs given")
    now = now_us if now_us is not None else time.time_ns() // 1000
    last_cp = conn.execute("SELECT coalesce(max(seq), 0) FROM audit_checkpoints").fetchone()[0]
    if not last_cp:
        return PurgeReport(note="no signed checkpoint yet: nothing can be purged")
    newest_cut = max(cutoffs.values())
    first = conn.execute("SELECT coalesce(min(seq), 0) FROM audit").fetchone()[0]
    upto = _last_before(conn, first, last_cp, newest_cut)
    if upto < first:
        return PurgeReport(note="no record older than the cut-offs")
    redactor = Redactor(cutoffs, service_kinds, default_kind)
    purge_seq = 0

    def ensure_purge_record() -> int:
        nonlocal purge_seq
        if not purge_seq:
            purge_seq = _append_purge_record(conn, now, purge_detail(cutoffs, upto))
        return purge_seq

    redacted = 0
    indexed = _has_table(conn, "audit_subjects")
    low = first
    while low <= upto:
        high = min(upto, low + chunk - 1)
        rows = conn.execute(
            f"SELECT {Redactor.COLUMNS} FROM audit"
            " WHERE seq BETWEEN ? AND ? AND redacted = 0 ORDER BY seq", (low, high)).fetchall()
        victims, subjects = redactor.victims(rows)
        if victims:
            marker = ensure_purge_record()
            with transaction(conn):
                conn.executemany(
                    "UPDATE audit SET event = '', hub_ticket = '', sender = '', receiver = '',"
                    " service_id = '', subject_type = '', subject_number = '', reason = '',"
                    " detail = '', redacted = ? WHERE seq = ? AND redacted = 0",
                    [(marker, seq) for seq in victims])
                if indexed:
                    conn.executemany("DELETE FROM audit_subjects WHERE subject_number = ?"
                                     " AND seq = ?", subjects)
            redacted += len(victims)
        low = high + 1

    deleted, anchor = _cut_prefix(conn, first, upto, ensure_purge_record, chunk)
    return PurgeReport(redacted, deleted, anchor, purge_seq, upto)


class Redactor:
    """Which records a purge redacts (step 3 of :func:`purge_kinds`), fed the records in seq
    order chunk by chunk (every backend's purge decides here)."""

    COLUMNS = "seq, at_us, event, hub_ticket, receiver, service_id, subject_number"

    def __init__(self, cutoffs: Mapping[str, int], service_kinds: Mapping[str, str],
                 default_kind: str = DEFAULT_KIND) -> None:
        self.cutoffs, self.service_kinds, self.default_kind = cutoffs, service_kinds, default_kind
        self.default_cut = cutoffs.get("*")
        self.newest_cut = max(cutoffs.values())
        self.open_tickets: dict[str, list[Any]] = {}  # ACCEPTED ticket -> [cut-off, receivers left]

    def cut_of(self, service_id: str) -> int | None:
        kind = self.service_kinds.get(service_id, self.default_kind)
        return self.cutoffs.get(kind, self.default_cut)

    def victims(self, rows: Sequence[Sequence[Any]]) -> tuple[list[int], list[tuple[str, int]]]:
        """The seqs to redact among ``rows`` (:attr:`COLUMNS`, live records), and the
        (subject, seq) of those with a subject (their subject-index entries go too)."""
        victims: list[int] = []
        subjects: list[tuple[str, int]] = []
        for seq, at_us, event, ticket, receiver, service_id, subject in rows:
            if event == "PURGED":
                continue
            if event == "DELIVERED":
                entry = self.open_tickets.get(ticket)
                if entry is None:
                    cut: int | None = self.newest_cut  # its envelope's record is already gone
                else:
                    cut = entry[0]
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self.open_tickets[ticket]
            else:
                cut = self.cut_of(service_id)
                if event == "ACCEPTED" and ticket:
                    self.open_tickets[ticket] = [
                        cut, max(1, len([r for r in receiver.split(",") if r]))]
            if cut is not None and int(at_us) < cut:
                victims.append(int(seq))
                if subject:
                    subjects.append((subject, int(seq)))
        return victims, subjects


def _last_before(conn: sqlite3.Connection, first: int, last: int, cut: int) -> int:
    """The highest seq in [first, last] older than ``cut``, by binary search (the hub stamps
    records from one clock under one lock, so time follows seq); first - 1 if none."""
    def at(seq: int) -> int:
        row = conn.execute("SELECT at_us FROM audit WHERE seq = ?", (seq,)).fetchone()
        return int(row[0]) if row else cut
    lo, hi = first, last
    if lo > hi or at(lo) >= cut:
        return first - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if at(mid) < cut:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _append_purge_record(conn: sqlite3.Connection, now: int, detail: str) -> int:
    """Append the PURGED record under the write lock, from the committed head (the running
    hub re-reads the head in each of its transactions)."""
    with transaction(conn):
        seq, digest = _head(conn)
        writer = ChainWriter(seq, digest)
        rows = writer.extend([purged(str(now), detail)])
        conn.executemany(
            "INSERT INTO audit (seq, at_us, event, hub_ticket, sender, receiver, service_id,"
            " subject_type, subject_number, reason, detail, prev_hash, hash)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        conn.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (writer.last_seq, writer.last_hash))
    return writer.last_seq


def _cut_prefix(
    conn: sqlite3.Connection, first: int, upto: int, ensure_purge_record: Any, chunk: int
) -> tuple[int, int]:
    row = conn.execute("SELECT seq FROM audit WHERE redacted = 0 AND event != 'PURGED'"
                       " ORDER BY seq LIMIT 1").fetchone()
    first_live = int(row[0]) if row else upto + 1
    stops = [int(s) for (s,) in conn.execute(
        "SELECT seq FROM audit_checkpoints WHERE seq >= ? AND seq < ? AND seq <= ? ORDER BY seq",
        (first, first_live, upto))]
    if not stops:
        return 0, 0
    ensure_purge_record()
    deleted, start, anchor = 0, first, 0
    for i, stop in enumerate(stops):
        if stop - start + 1 < chunk and i < len(stops) - 1:
            continue  # cut in steps of about ``chunk`` records, always at a checkpoint
        with transaction(conn):
            cur = conn.execute("DELETE FROM audit WHERE seq <= ?", (stop,))
            conn.execute("DELETE FROM audit_checkpoints WHERE seq < ?", (stop,))
        deleted += cur.rowcount
        start, anchor = stop + 1, stop
    return deleted, anchor
