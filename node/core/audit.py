"""The audit chain: every record carries the hash of the one before it.

A record is a tuple of text fields (see :data:`FIELDS`). Its hash is
``sha256(prev_hash || encode(fields))`` where ``encode`` length-prefixes every field (4-byte
big-endian length, UTF-8 bytes), so no choice of field contents can make two different
records encode alike. The first record's ``prev_hash`` is :data:`GENESIS` (32 zero bytes).

Verification walks the chain in sequence order and reports the first problem found:

* a sequence number missing (a deleted record) - the gap is named;
* a record whose stored ``prev_hash`` is not the previous record's hash (edited or inserted);
* a record whose stored hash does not match its fields (edited);
* a chain that ends before the recorded head (records deleted at the end).

The hub writes records in the same transaction as the envelopes they describe, so the log
and the queue never disagree. Signed checkpoints of the head come with the audit issue.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EVENTS",
    "FIELDS",
    "GENESIS",
    "AuditProblem",
    "ChainWriter",
    "StoredRecord",
    "encode_fields",
    "record_hash",
    "verify_chain",
]

GENESIS = bytes(32)

#: Record fields, in hashing order.
FIELDS = (
    "at_us",
    "event",
    "hub_ticket",
    "sender",
    "receiver",
    "service_id",
    "subject_type",
    "subject_number",
    "reason",
    "detail",
)

#: Events: an envelope accepted (one record listing its receivers), refused, delivered
#: (one record per receiver, when the receiver acknowledged it).
EVENTS = ("ACCEPTED", "REJECTED", "DELIVERED")


def encode_fields(fields: Iterable[str]) -> bytes:
    parts = []
    for field in fields:
        data = field.encode()
        parts.append(len(data).to_bytes(4, "big"))
        parts.append(data)
    return b"".join(parts)


def record_hash(prev_hash: bytes, fields: Iterable[str]) -> bytes:
    return hashlib.sha256(prev_hash + encode_fields(fields)).digest()


@dataclass(frozen=True, slots=True)
class StoredRecord:
    seq: int
    fields: tuple[str, ...]
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class AuditProblem:
    seq: int
    message: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.message}"


class ChainWriter:
    """Extends the chain from a known head; the caller stores what :meth:`extend` returns.

    Not thread-safe: the hub calls it inside its single write transaction.
    """

    def __init__(self, last_seq: int = 0, last_hash: bytes = GENESIS) -> None:
        self.last_seq = last_seq
        self.last_hash = last_hash

    def extend(self, records: Iterable[tuple[str, ...]]) -> list[tuple[object, ...]]:
        """Return rows ``(seq, *fields, prev_hash, hash)`` for the given field tuples."""
        rows: list[tuple[object, ...]] = []
        seq, prev = self.last_seq, self.last_hash
        sha256 = hashlib.sha256
        for fields in records:
            seq += 1
            digest = sha256(prev + encode_fields(fields)).digest()
            rows.append((seq, *fields, prev, digest))
            prev = digest
        self.last_seq, self.last_hash = seq, prev
        return rows

    def rollback(self, last_seq: int, last_hash: bytes) -> None:
        """Restore the head after a failed transaction."""
        self.last_seq, self.last_hash = last_seq, last_hash


def verify_chain(
    records: Iterable[StoredRecord], head: tuple[int, bytes] | None = None
) -> AuditProblem | None:
    """Return the first problem in ``records`` (ascending seq), or None if the chain holds.

    ``head`` is the (seq, hash) the writer recorded as the chain's end, if known.
    """
    expected_seq, prev = 1, GENESIS
    for record in records:
        if record.seq != expected_seq:
            missing = (
                f"{expected_seq}"
                if record.seq == expected_seq + 1
                else f"{expected_seq}..{record.seq - 1}"
            )
            return AuditProblem(expected_seq, f"missing (deleted?): records {missing} absent")
        if record.prev_hash != prev:
            return AuditProblem(record.seq, "previous-hash link broken (record edited or inserted)")
        if record_hash(prev, record.fields) != record.hash:
            return AuditProblem(record.seq, "content does not match its hash (record edited)")
        prev = record.hash
        expected_seq += 1
    last_seq = expected_seq - 1
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last_seq:
            return AuditProblem(last_seq + 1, f"missing: chain ends at {last_seq}, head is {head_seq}")
        if head_seq == last_seq and head_seq > 0 and head_hash != prev:
            return AuditProblem(last_seq, "last record differs from the recorded head")
    return None
