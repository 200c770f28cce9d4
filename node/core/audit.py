"""The audit chain: every record carries the hash of the one before it; signed checkpoints.

Records
-------
A record is a tuple of text fields (see :data:`FIELDS`): an :class:`AuditRecord`, built by
the per-event builders (:func:`accepted`, :func:`rejected`, :func:`delivered`, ...) so each
value lands in its named field. Its hash is
``sha256(prev_hash || encode(fields))`` where ``encode`` length-prefixes every field (4-byte
big-endian length, UTF-8 bytes), so no choice of field contents can make two different
records encode alike. The first record's ``prev_hash`` is :data:`GENESIS` (32 zero bytes).

Checkpoints
-----------
Every so often the hub signs the chain head with its Ed25519 key (the directory key): a
:class:`Checkpoint` states ``(seq, hash, at_us, from_seq, segment_digest)`` where
``segment_digest = sha256(hash[from_seq+1] || ... || hash[seq])`` covers every record hash
since the previous checkpoint (``from_seq``). The signed bytes are :func:`checkpoint_message`,
domain-separated from anything else the same key signs.

The segment digest is what lets retention *redact* a record (blank its fields, keep its
seq, hashes and time) without weakening the records around it: a redacted record's hash can
no longer be recomputed from its content, but it is still bound by the signed digest of its
segment, so the records before it stay bound too. Only records inside a signed segment may
be redacted, each naming the ``PURGED`` record that documents the purge which redacted it.

Verification
------------
:func:`verify_log` walks the chain in sequence order and reports the first problem found:

* a sequence number missing (a deleted record) - the gap is named;
* a record whose stored ``prev_hash`` is not the previous record's hash (edited or inserted);
* a record whose stored hash does not match its fields (edited);
* a checkpoint whose hash, segment or signature does not match (record or checkpoint edited);
* a chain that ends before the recorded head or before a signed checkpoint (records deleted
  at the end);
* a redacted record outside a signed segment, or not accounted for by a purge record;
* a log that starts after record 1 without a signed checkpoint anchoring its first record.

:func:`verify_chain` is the plain hash-chain check (no checkpoints), kept for callers that
only have records.

The hub writes records in the same transaction as the envelopes they describe, so the log
and the queue never disagree.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "CHECKPOINT_DOMAIN",
    "EVENTS",
    "EXPORT_DOMAIN",
    "EXPORT_FORMAT",
    "FIELDS",
    "GENESIS",
    "AuditEvent",
    "AuditProblem",
    "AuditRecord",
    "ChainWriter",
    "Checkpoint",
    "ExportError",
    "LogReport",
    "Signer",
    "StoredRecord",
    "accepted",
    "answered",
    "canonical_json",
    "checkpoint_message",
    "delivered",
    "encode_fields",
    "integration",
    "public_key_id",
    "purge_detail",
    "purged",
    "record_hash",
    "refused_call",
    "rejected",
    "segment_digest",
    "sign_checkpoint",
    "sign_export",
    "verify_chain",
    "verify_checkpoint_signature",
    "verify_export",
    "verify_log",
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



class AuditEvent(StrEnum):
    """A record's ``event``, as stored: an envelope or question accepted (one record listing
    its receivers), refused, delivered (one record per receiver, when the receiver
    acknowledged it); a provider's answer to a consultation (one per provider); a subject
    integrated or de-integrated through the directory; a retention purge (detail:
    :func:`purge_detail`)."""

    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    DELIVERED = "DELIVERED"
    ANSWERED = "ANSWERED"
    INTEGRATED = "INTEGRATED"
    DEINTEGRATED = "DEINTEGRATED"
    PURGED = "PURGED"


#: The events' names as stored.
EVENTS = tuple(event.value for event in AuditEvent)


class AuditRecord(NamedTuple):
    """One record to append, its fields named as the ``audit`` table's columns, in hashing
    order (:data:`FIELDS`). A plain tuple underneath: it encodes, hashes and binds exactly
    as the equivalent tuple of strings."""

    at_us: str
    event: str
    hub_ticket: str
    sender: str
    receiver: str
    service_id: str
    subject_type: str
    subject_number: str
    reason: str
    detail: str


# The builders construct the tuple directly (the hub's intake makes one per envelope); the
# event is stored as its plain text value.
_new = tuple.__new__
_ACCEPTED = AuditEvent.ACCEPTED.value
_REJECTED = AuditEvent.REJECTED.value
_DELIVERED = AuditEvent.DELIVERED.value
_ANSWERED = AuditEvent.ANSWERED.value
_PURGED = AuditEvent.PURGED.value


def accepted(at_us: str, hub_ticket: str, sender: str, receiver: str, service_id: str,
             subject_type: str, subject_number: str, detail: str = "") -> AuditRecord:
    """An envelope (or question) accepted: ``receiver`` lists its receivers, comma-separated;
    the reason is ``ACCEPTED``."""
    return _new(AuditRecord, (at_us, _ACCEPTED, hub_ticket, sender, receiver, service_id,
                              subject_type, subject_number, _ACCEPTED, detail))


def rejected(at_us: str, sender: str, receiver: str, service_id: str, subject_type: str,
             subject_number: str, reason: str, detail: str) -> AuditRecord:
    """An envelope (or question) refused: no ticket; ``reason`` is the refusal reason."""
    return _new(AuditRecord, (at_us, _REJECTED, "", sender, receiver, service_id,
                              subject_type, subject_number, reason, detail))


def refused_call(at_us: str, method: str, reason: str, detail: str) -> AuditRecord:
    """A refused call: a ``REJECTED`` record with no sender, the RPC method as
    ``service_id`` and the peer in ``detail``."""
    return rejected(at_us, "", "", method, "", "", reason, detail)


def delivered(at_us: str, hub_ticket: str, receiver: str) -> AuditRecord:
    """An envelope acknowledged by one receiver."""
    return _new(AuditRecord, (at_us, _DELIVERED, hub_ticket, "", receiver, "", "", "",
                              _DELIVERED, ""))


def answered(at_us: str, question: AuditRecord, receiver: str, status: str,
             detail: str) -> AuditRecord:
    """A provider's answer to a consultation: the question's (``ACCEPTED`` record's) ticket,
    sender, service and subject; ``receiver`` the provider, ``reason`` its source status."""
    return _new(AuditRecord, (at_us, _ANSWERED, question.hub_ticket, question.sender,
                              receiver, question.service_id, question.subject_type,
                              question.subject_number, status, detail))


def integration(at_us: str, event: AuditEvent, sender: str, service_id: str,
                subject_number: str, reason: str, detail: str) -> AuditRecord:
    """A directory integration: ``INTEGRATED``, ``DEINTEGRATED`` or ``REJECTED``."""
    return _new(AuditRecord, (at_us, event.value, "", sender, "", service_id, "",
                              subject_number, reason, detail))


def purged(at_us: str, detail: str) -> AuditRecord:
    """A retention purge (detail: :func:`purge_detail`)."""
    return _new(AuditRecord, (at_us, _PURGED, "", "", "", "", "", "", _PURGED, detail))


CHECKPOINT_DOMAIN = b"crossroads/audit-checkpoint/v1\n"
EXPORT_DOMAIN = b"crossroads/audit-export/v1\n"
EXPORT_FORMAT = "crossroads-audit-export/1"


#: 4-byte big-endian lengths 0..255, prebuilt: almost every field is shorter.
_LENGTHS = tuple(n.to_bytes(4, "big") for n in range(256))


def encode_fields(fields: Iterable[str]) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    lengths = _LENGTHS
    for field in fields:
        data = field.encode()
        n = len(data)
        append(lengths[n] if n < 256 else n.to_bytes(4, "big"))
        append(data)
    return b"".join(parts)


def _encoded_column(values: Sequence[str]) -> Iterable[bytes]:
    """:func:`encode_fields`'s encoding of each value of one field across records."""
    lengths = _LENGTHS
    first = values[0]
    if values.count(first) == len(values):
        data = first.encode()
        n = len(data)
        return itertools.repeat((lengths[n] if n < 256 else n.to_bytes(4, "big")) + data,
                                len(values))
    out: list[bytes] = []
    append = out.append
    for value in values:
        data = value.encode()
        n = len(data)
        append((lengths[n] if n < 256 else n.to_bytes(4, "big")) + data)
    return out


def record_hash(prev_hash: bytes, fields: Iterable[str]) -> bytes:
    return hashlib.sha256(prev_hash + encode_fields(fields)).digest()


@dataclass(frozen=True, slots=True)
class StoredRecord:
    seq: int
    fields: tuple[str, ...]
    prev_hash: bytes
    hash: bytes
    #: 0 for a live record; for a redacted one, the seq of the PURGED record that redacted it.
    redacted: int = 0


@dataclass(frozen=True, slots=True)
class AuditProblem:
    seq: int
    message: str
    what: str = "record"  # or "checkpoint"

    def __str__(self) -> str:
        return f"{self.what} {self.seq}: {self.message}"


class ChainWriter:
    """Extends the chain from a known head; the caller stores what :meth:`extend` returns.

    Not thread-safe: the hub calls it inside its single write transaction.
    """

    def __init__(self, last_seq: int = 0, last_hash: bytes = GENESIS) -> None:
        self.last_seq = last_seq
        self.last_hash = last_hash

    def extend(self, records: Iterable[tuple[str, ...]]) -> list[tuple[object, ...]]:
        """Return rows ``(seq, *fields, prev_hash, hash)`` for the given field tuples."""
        return list(zip(*self.extend_columns(list(records)), strict=True))

    def extend_columns(self, records: Sequence[tuple[str, ...]]) -> list[Sequence[object]]:
        """:meth:`extend` column by column: ``[seqs, *field columns, prev_hashes, hashes]``
        (what a multi-row insert binds).

        The fields are encoded column by column (same bytes as :func:`encode_fields`): a
        column with one value throughout (time, event, sender, ... in a hub batch) is encoded
        once."""
        if not records:
            return [[] for _ in range(len(FIELDS) + 3)]
        columns = list(zip(*records, strict=True))
        sha256, join = hashlib.sha256, b"".join
        prev = first_prev = self.last_hash
        hashes: list[bytes] = []
        append = hashes.append
        for parts in zip(*map(_encoded_column, columns), strict=True):
            prev = sha256(prev + join(parts)).digest()
            append(prev)
        seqs = range(self.last_seq + 1, self.last_seq + 1 + len(records))
        self.last_seq, self.last_hash = seqs[-1], prev
        return [seqs, *columns, [first_prev, *hashes[:-1]], hashes]

    def rollback(self, last_seq: int, last_hash: bytes) -> None:
        """Restore the head after a failed transaction."""
        self.last_seq, self.last_hash = last_seq, last_hash


# -- checkpoints ---------------------------------------------------------------------------


class Signer(Protocol):
    """What signs checkpoints and exports: an ``Ed25519PrivateKey`` fits."""

    def sign(self, data: bytes) -> bytes: ...

    def public_key(self) -> Ed25519PublicKey: ...


def public_key_id(public_key: Ed25519PublicKey) -> str:
    """Same id as :func:`node.wire.signed.key_id`: sha256 of the raw key, 16 hex digits."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: bytes
    at_us: int
    from_seq: int
    segment_digest: bytes
    signature: bytes
    key_id: str

    def message(self) -> bytes:
        return checkpoint_message(self.seq, self.hash, self.at_us, self.from_seq,
                                  self.segment_digest)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash.hex(), "at_us": self.at_us,
                "from_seq": self.from_seq, "segment_digest": self.segment_digest.hex(),
                "signature": self.signature.hex(), "key_id": self.key_id}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Checkpoint:
        return cls(_int(d["seq"]), _hex(d["hash"]), _int(d["at_us"]), _int(d["from_seq"]),
                   _hex(d["segment_digest"]), _hex(d["signature"]), str(d["key_id"]))


def checkpoint_message(seq: int, hash_: bytes, at_us: int, from_seq: int, digest: bytes) -> bytes:
    """The exact bytes the hub signs for a checkpoint (fixed layout, 119 bytes)."""
    if len(hash_) != 32 or len(digest) != 32:
        raise ValueError("checkpoint hashes are 32 bytes")
    return (CHECKPOINT_DOMAIN + seq.to_bytes(8, "big") + hash_ + at_us.to_bytes(8, "big")
            + from_seq.to_bytes(8, "big") + digest)


def segment_digest(hashes: Iterable[bytes]) -> bytes:
    h = hashlib.sha256()
    for digest in hashes:
        h.update(digest)
    return h.digest()


def sign_checkpoint(
    signer: Signer, seq: int, hash_: bytes, at_us: int, from_seq: int, digest: bytes
) -> Checkpoint:
    signature = signer.sign(checkpoint_message(seq, hash_, at_us, from_seq, digest))
    return Checkpoint(seq, hash_, at_us, from_seq, digest, signature,
                      public_key_id(signer.public_key()))


def verify_checkpoint_signature(
    checkpoint: Checkpoint, keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    """None if the signature holds under the key it names; else what is wrong."""
    key = keys.get(checkpoint.key_id)
    if key is None:
        return (f"signed by key {checkpoint.key_id}, not by the given key"
                f" ({', '.join(sorted(keys)) or 'none'})")
    try:
        key.verify(checkpoint.signature, checkpoint.message())
    except InvalidSignature:
        return "signature does not verify (checkpoint or signature altered)"
    return None


# -- verification --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogReport:
    problem: AuditProblem | None
    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    redacted: int = 0
    checkpoints: int = 0  # checkpoints matched against the chain
    signatures_checked: bool = False
    anchor: int = 0  # the signed checkpoint the remaining chain starts from (0 = genesis)


def purge_detail(cutoffs: Mapping[str, int], upto_seq: int) -> str:
    """The detail of a PURGED record: the cut-off time per service kind, and the highest seq
    the purge was allowed to redact or cut."""
    return json.dumps({"cutoffs": dict(sorted(cutoffs.items())), "upto_seq": upto_seq},
                      separators=(",", ":"))


def _purge_upto(detail: str) -> int | None:
    try:
        value = json.loads(detail)["upto_seq"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_EVENT = FIELDS.index("event")
_DETAIL = FIELDS.index("detail")


def verify_chain(
    records: Iterable[StoredRecord],
    head: tuple[int, bytes] | None = None,
    start: tuple[int, bytes] | None = None,
) -> AuditProblem | None:
    """Return the first problem in ``records`` (ascending seq), or None if the chain holds.

    ``head`` is the (seq, hash) the writer recorded as the chain's end, if known; ``start``
    the (seq, hash) the chain continues from (a signed checkpoint after a purge), else the
    genesis. Redacted records cannot be checked without checkpoints: use :func:`verify_log`.
    """
    return verify_log(records, head, None, None, start).problem


def verify_log(  # noqa: C901 - one pass, every check in order
    records: Iterable[StoredRecord],
    head: tuple[int, bytes] | None = None,
    checkpoints: Sequence[Checkpoint] | None = None,
    keys: Mapping[str, Ed25519PublicKey] | None = None,
    start: tuple[int, bytes] | None = None,
) -> LogReport:
    """Verify records (ascending seq) against each other, the head and the checkpoints.

    ``checkpoints`` None means "records only" (redacted records are then a problem). With
    ``keys`` (key id -> public key) every checkpoint signature is checked too; without, the
    checkpoints are matched against the chain but their signatures are not checked.
    """
    by_seq = {c.seq: c for c in checkpoints} if checkpoints is not None else {}
    ordered = sorted(by_seq)
    last_cp = ordered[-1] if ordered else 0
    count = redacted = matched = 0
    it: Iterator[StoredRecord] = iter(records)
    first = next(it, None)

    def report(problem: AuditProblem | None, last: int) -> LogReport:
        return LogReport(problem, count, first.seq if first else 0, last, redacted, matched,
                         keys is not None, anchor)

    def sig_problem(cp: Checkpoint) -> AuditProblem | None:
        if keys is None:
            return None
        message = verify_checkpoint_signature(cp, keys)
        return AuditProblem(cp.seq, message, "checkpoint") if message else None

    # Where the chain starts: genesis, a given start, or the signed checkpoint just before
    # the first stored record (the anchor a purge leaves).
    anchor = 0
    expected_seq, prev = 1, GENESIS
    if start is not None:
        anchor = start[0]
        expected_seq, prev = start[0] + 1, start[1]
    elif first is not None and first.seq > 1 and (first.seq - 1) in by_seq:
        cp = by_seq[first.seq - 1]
        if (problem := sig_problem(cp)) is not None:
            return report(problem, 0)
        anchor = cp.seq
        expected_seq, prev = cp.seq + 1, cp.hash
    elif first is None and ordered:
        # Everything up to the last checkpoint was purged and nothing came after.
        anchor = last_cp
        expected_seq, prev = last_cp + 1, by_seq[last_cp].hash
    for cp in (by_seq[s] for s in ordered if s <= anchor):
        if (problem := sig_problem(cp)) is not None:
            return report(problem, 0)

    segment = hashlib.sha256()
    segment_from = anchor
    purge_uptos: dict[int, int] = {}  # PURGED record seq -> its upto_seq
    redactions: dict[int, tuple[int, int]] = {}  # PURGED seq -> (lowest, highest) redacted
    sha256 = hashlib.sha256
    record = first
    while record is not None:
        if record.seq != expected_seq:
            missing = (
                f"{expected_seq}"
                if record.seq == expected_seq + 1
                else f"{expected_seq}..{record.seq - 1}"
            )
            return report(AuditProblem(expected_seq, f"missing (deleted?): records {missing} absent"),
                          expected_seq - 1)
        if record.prev_hash != prev:
            return report(AuditProblem(record.seq,
                                       "previous-hash link broken (record edited or inserted)"),
                          record.seq)
        if record.redacted:
            if checkpoints is None:
                return report(AuditProblem(record.seq, "content purged: verify with checkpoints"),
                              record.seq)
            if record.seq > last_cp:
                return report(AuditProblem(record.seq, "redacted outside any signed checkpoint"
                                           " segment (record erased?)"), record.seq)
            if record.redacted <= record.seq:
                return report(AuditProblem(record.seq, f"redacted by record {record.redacted},"
                                           " which is not a later purge record"), record.seq)
            low, high = redactions.get(record.redacted, (record.seq, record.seq))
            redactions[record.redacted] = (min(low, record.seq), max(high, record.seq))
            redacted += 1
        elif sha256(prev + encode_fields(record.fields)).digest() != record.hash:
            return report(AuditProblem(record.seq,
                                       "content does not match its hash (record edited)"),
                          record.seq)
        elif record.fields[_EVENT] == "PURGED":
            upto = _purge_upto(record.fields[_DETAIL])
            purge_uptos[record.seq] = upto if upto is not None else -1
        prev = record.hash
        count += 1
        if checkpoints is not None:
            segment.update(record.hash)
            at = by_seq.get(record.seq)
            if at is not None:
                cp = at
                if cp.hash != record.hash:
                    return report(AuditProblem(cp.seq, f"hash differs from record {cp.seq}"
                                               " (record or checkpoint altered)", "checkpoint"),
                                  record.seq)
                if cp.from_seq != segment_from:
                    return report(AuditProblem(
                        cp.seq, f"covers records after {cp.from_seq}, but the previous"
                        f" checkpoint is {segment_from} (checkpoint deleted or altered)",
                        "checkpoint"), record.seq)
                if segment.digest() != cp.segment_digest:
                    return report(AuditProblem(
                        cp.seq, f"segment {cp.from_seq + 1}..{cp.seq} does not match its"
                        " digest (a record in it altered)", "checkpoint"), record.seq)
                if (problem := sig_problem(cp)) is not None:
                    return report(problem, record.seq)
                matched += 1
                segment = hashlib.sha256()
                segment_from = cp.seq
        expected_seq += 1
        record = next(it, None)

    last_seq = expected_seq - 1
    if ordered and last_cp > last_seq:
        return report(AuditProblem(last_seq + 1, f"missing: chain ends at {last_seq}, but"
                                   f" checkpoint {last_cp} is signed (records deleted at the end)"),
                      last_seq)
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last_seq:
            return report(AuditProblem(last_seq + 1,
                                       f"missing: chain ends at {last_seq}, head is {head_seq}"),
                          last_seq)
        if head_seq == last_seq and head_seq > 0 and head_hash != prev:
            return report(AuditProblem(last_seq, "last record differs from the recorded head"),
                          last_seq)
    for purge_seq, (low, high) in sorted(redactions.items()):
        upto = purge_uptos.get(purge_seq)
        if upto is None:
            return report(AuditProblem(low, f"redacted by record {purge_seq}, which is not a"
                                       " purge record"), last_seq)
        if high > upto:
            return report(AuditProblem(high, f"redacted by purge {purge_seq}, which only"
                                       f" covered records up to {upto}"), last_seq)
    if anchor > 0 and start is None and not any(u >= anchor for u in purge_uptos.values()):
        return report(AuditProblem(1, f"missing: records 1..{anchor} absent and no purge"
                                   " record covers them"), last_seq)
    return report(None, last_seq)


# -- exports -------------------------------------------------------------------------------


class ExportError(ValueError):
    """An audit extract that does not verify; the message says what is wrong."""


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII only: the bytes an export signature covers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def sign_export(body: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """Wrap an export body with the hub's signature over its canonical form."""
    signature = signer.sign(EXPORT_DOMAIN + canonical_json(body))
    return {"format": EXPORT_FORMAT, "body": dict(body), "signature": signature.hex(),
            "key_id": public_key_id(signer.public_key())}


def verify_export(document: Mapping[str, Any], public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Check an extract with only the hub's public key; return its body or raise
    :class:`ExportError`.

    Checks: the format; the signature over the canonical body; the included checkpoint's own
    signature; every record's hash from its fields and ``prev_hash``; every subject record is
    about the exported subject; every delivery record belongs to one of its envelopes; seqs
    increase and stay within the head.
    """
    if not isinstance(document, Mapping) or set(document) != {"format", "body", "signature",
                                                              "key_id"}:
        raise ExportError("not an audit extract (expected keys format, body, signature, key_id)")
    if document["format"] != EXPORT_FORMAT:
        raise ExportError(f"unknown format {document['format']!r}")
    if document["key_id"] != public_key_id(public_key):
        raise ExportError(f"signed by key {document['key_id']}, not by the given key"
                          f" {public_key_id(public_key)}")
    body = document["body"]
    if not isinstance(body, dict):
        raise ExportError("body is not an object")
    try:
        signature = bytes.fromhex(str(document["signature"]))
        public_key.verify(signature, EXPORT_DOMAIN + canonical_json(body))
    except (ValueError, InvalidSignature):
        raise ExportError("signature does not verify (extract altered)") from None
    try:
        _check_export_body(body, public_key)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ExportError):
            raise
        raise ExportError(f"malformed extract: {exc!r}") from None
    return body


def _check_export_body(body: Mapping[str, Any], public_key: Ed25519PublicKey) -> None:
    subject = str(body["subject"])
    head_seq = _int(body["head"]["seq"])
    if body["checkpoint"] is not None:
        cp = Checkpoint.from_json(body["checkpoint"])
        if verify_checkpoint_signature(cp, {public_key_id(public_key): public_key}) is not None:
            raise ExportError(f"checkpoint {cp.seq}: signature does not verify")
        if cp.seq > head_seq:
            raise ExportError(f"checkpoint {cp.seq}: after the exported head {head_seq}")
    tickets: set[str] = set()
    last = 0
    for kind in ("records", "deliveries"):
        for item in body[kind]:
            seq = _int(item["seq"])
            fields = tuple(str(item["fields"][name]) for name in FIELDS)
            if set(item["fields"]) != set(FIELDS):
                raise ExportError(f"record {seq}: unexpected fields")
            if record_hash(_hex(item["prev_hash"]), fields) != _hex(item["hash"]):
                raise ExportError(f"record {seq}: content does not match its hash")
            if seq > head_seq:
                raise ExportError(f"record {seq}: after the exported head {head_seq}")
            event = item["fields"]["event"]
            if kind == "records":
                if seq <= last:
                    raise ExportError(f"record {seq}: out of order")
                last = seq
                if item["fields"]["subject_number"] != subject:
                    raise ExportError(f"record {seq}: about another subject")
                if event == "ACCEPTED":
                    tickets.add(item["fields"]["hub_ticket"])
            elif event != "DELIVERED" or item["fields"]["hub_ticket"] not in tickets:
                raise ExportError(f"record {seq}: not a delivery of an exported envelope")


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ExportError(f"expected an integer, got {value!r}")
    return value


def _hex(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ExportError(f"expected hex text, got {value!r}")
    return bytes.fromhex(value)
