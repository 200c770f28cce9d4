"""Offline audit-log verification and summaries, straight from the hub's SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from node.core.audit import AuditProblem, StoredRecord, verify_chain
from node.store.sqlite import connect_sync

__all__ = ["AuditReport", "summary", "verify_file"]

_COLUMNS = ("at_us, event, hub_ticket, sender, receiver, service_id, subject_type,"
            " subject_number, reason, detail")


@dataclass(frozen=True, slots=True)
class AuditReport:
    records: int
    problem: AuditProblem | None


def verify_file(path: Path) -> AuditReport:
    if not path.exists():
        raise FileNotFoundError(f"no hub database at {path}")
    conn = connect_sync(path, read_only=True)
    try:
        row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        head = (int(row[0]), bytes(row[1])) if row else (0, b"")
        count = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
        problem = verify_chain(_records(conn), head)
        return AuditReport(int(count), problem)
    finally:
        conn.close()


def _records(conn) -> Iterator[StoredRecord]:  # type: ignore[no-untyped-def]
    cursor = conn.execute(f"SELECT seq, {_COLUMNS}, prev_hash, hash FROM audit ORDER BY seq")
    while rows := cursor.fetchmany(10_000):
        for row in rows:
            yield StoredRecord(
                int(row[0]), tuple(str(v) for v in row[1:11]), bytes(row[11]), bytes(row[12])
            )


def summary(path: Path) -> dict[str, dict[str, int]]:
    """Record counts by event and by reason."""
    conn = connect_sync(path, read_only=True)
    try:
        events = dict(conn.execute("SELECT event, count(*) FROM audit GROUP BY event"))
        reasons = dict(
            conn.execute("SELECT reason, count(*) FROM audit WHERE event = 'REJECTED'"
                         " GROUP BY reason")
        )
        return {"events": events, "rejected_by_reason": reasons}
    finally:
        conn.close()
