"""Converters between wire envelopes (protobuf bytes) and the core's domain values.

This package is the only place that imports generated protobuf code.

Stamping without re-encoding: protobuf defines that parsing the concatenation of two
serialized messages equals merging them, the later value winning for singular fields. The
hub therefore stamps an accepted envelope by appending a tiny serialized
``Envelope(hub_ticket=..., received_at_unix_us=...)`` to the sender's bytes, instead of
decoding, modifying and re-encoding the whole message (payload included). Any value a sender
put in those two fields is overridden by the hub's.

Acks the same way: :class:`AckBuilder` writes a ``BatchAck``'s bytes outcome by outcome (the
exact bytes protobuf would serialize), cheaper than filling a message per envelope.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence

from google.protobuf.message import DecodeError

from node.core.envelope import Decision, EnvelopeHead
from node.core.reasons import Reason
from node.wire.gen.crossroads.v1 import envelope_pb2 as pb

__all__ = [
    "AckBuilder",
    "ack_outcomes",
    "Envelope",
    "decode",
    "decode_heads",
    "head_of",
    "outcomes_blob",
    "outcome_to_proto",
    "reason_from_proto",
    "reason_to_proto",
    "stamp",
    "stamper",
]

Envelope = pb.Envelope
#: Subject type names as the audit log records them.
SUBJECT_TYPE_NAMES = {0: "", 1: "CITIZEN", 2: "ENTERPRISE", 3: "NONE"}
_REASON_TO_PROTO = {reason: pb.Reason.Value(reason.value) for reason in Reason}
_REASON_FROM_PROTO = {number: reason for reason, number in _REASON_TO_PROTO.items()}


def reason_to_proto(reason: Reason) -> int:
    return _REASON_TO_PROTO[reason]


def reason_from_proto(number: int) -> Reason | None:
    """The domain reason, or None for REASON_UNSPECIFIED (no decision yet)."""
    return _REASON_FROM_PROTO.get(number)


def decode(raw: bytes) -> pb.Envelope:
    """Parse one envelope; raises ``DecodeError`` on malformed bytes."""
    return pb.Envelope.FromString(raw)


_new_head = tuple.__new__  # EnvelopeHead(...) without the generated __new__'s extra call
_sha256 = hashlib.sha256
_has_field = pb.Envelope.HasField  # called unbound: no method object per call


def head_of(envelope: pb.Envelope) -> EnvelopeHead:
    payload = envelope.payload
    data = payload.data
    digest = payload.sha256
    subject = envelope.subject
    if _has_field(envelope, "period"):  # most have none: skip building the sub-message
        period = envelope.period
        begin, end = period.begin_date, period.end_date
    else:
        begin = end = ""
    # Field order of EnvelopeHead.
    return _new_head(EnvelopeHead, (
        envelope.sender,
        tuple(envelope.receivers[:]),  # a list first: faster than iterating the container
        envelope.service_id,
        envelope.service_version,
        subject.type,
        subject.number,
        len(data),
        not digest or _sha256(data).digest() == digest,
        envelope.capacity,
        envelope.legal_context,
        begin,
        end,
    ))


def decode_heads(
    raws: Sequence[bytes],
) -> tuple[list[pb.Envelope | None], list[EnvelopeHead | Decision]]:
    """Parse a batch: the envelopes (None where malformed) and their heads (or a refusal)."""
    envelopes: list[pb.Envelope | None] = []
    heads: list[EnvelopeHead | Decision] = []
    add_envelope, add_head = envelopes.append, heads.append
    new = pb.Envelope
    for raw in raws:
        envelope = new()
        try:
            envelope.ParseFromString(raw)
        except DecodeError as exc:
            add_envelope(None)
            add_head(Decision(Reason.MALFORMED_ENVELOPE, f"not an Envelope: {exc}"))
            continue
        add_envelope(envelope)
        add_head(head_of(envelope))
    return envelopes, heads


def stamp(raw: bytes, hub_ticket: str, received_at_us: int) -> bytes:
    """The sender's envelope with the hub's ticket and reception time set (see module doc)."""
    return stamper(received_at_us)(raw, hub_ticket)


def stamper(received_at_us: int) -> Callable[[bytes, str], bytes]:
    """:func:`stamp` for many envelopes received at the same time: encodes the two fields by
    hand (exactly the bytes ``Envelope(hub_ticket=t, received_at_unix_us=r)`` serializes to:
    field 1 length-delimited, field 12 varint, in field order)."""
    suffix = pb.Envelope(received_at_unix_us=received_at_us).SerializeToString()

    def stamp_one(raw: bytes, hub_ticket: str) -> bytes:
        ticket = hub_ticket.encode()
        if not ticket:
            return raw + suffix
        if len(ticket) < 128:  # a one-byte length varint (hub tickets are 36 bytes)
            return b"".join((raw, b"\x0a", _BYTE[len(ticket)], ticket, suffix))
        return raw + pb.Envelope(hub_ticket=hub_ticket).SerializeToString() + suffix

    return stamp_one


_BYTE = tuple(bytes((i,)) for i in range(256))


class AckBuilder:
    """A ``BatchAck`` built as bytes, one outcome at a time: the same bytes as adding each
    outcome to a message and serializing it, at about a third of the cost (the hub builds one
    outcome per envelope; the ack is stored as is and parsed once to be sent)."""

    def __init__(self, first_sequence: int) -> None:
        self._parts = [b"\x08" + _varint(first_sequence)] if first_sequence else []
        self._receivers: dict[tuple[str, ...], bytes] = {}

    def add(self, index: int, reason: int, detail: str = "", hub_ticket: str = "",
            receivers: tuple[str, ...] = ()) -> None:
        """One ``EnvelopeOutcome`` (fields in number order, defaults left out, as protobuf
        serializes them)."""
        part = self._receivers.get(receivers)
        if part is None:
            part = self._receivers[receivers] = _receivers_field(receivers)
        encoded = _outcome_fields(reason, detail, part, hub_ticket)
        if index:
            encoded = b"\x08" + _varint(index) + encoded
        self._parts += (b"\x12", _varint(len(encoded)), encoded)

    def blob(self) -> bytes:
        return b"".join(self._parts)


def outcomes_blob(decisions: Sequence[Decision], field: int) -> bytes:
    """``decisions`` as the repeated ``EnvelopeOutcome`` field number ``field`` of a message
    (outcome ``index`` = position, no hub ticket), in the bytes protobuf serializes: parsing
    them once costs much less than adding a message per outcome. A decision object that
    recurs (the checks remember them per batch) is encoded once."""
    tag = _varint(field << 3 | 2)
    encoded: dict[int, bytes] = {}  # id(decision) -> its fields but the index
    parts: list[bytes] = []
    for i, decision in enumerate(decisions):
        rest = encoded.get(id(decision))
        if rest is None:
            reason, detail, receivers = decision
            rest = encoded[id(decision)] = _outcome_fields(_REASON_TO_PROTO[reason], detail,
                                                           _receivers_field(receivers))
        body = b"\x08" + _varint(i) + rest if i else rest
        parts += (tag, _varint(len(body)), body)
    return b"".join(parts)


def _outcome_fields(reason: int, detail: str, receivers_field: bytes, hub_ticket: str = "") -> bytes:
    """An ``EnvelopeOutcome``'s fields but its index, in field number order, defaults left out
    (as protobuf serializes them); ``receivers_field`` from :func:`_receivers_field`."""
    body = [b"\x10" + _varint(reason)] if reason else []
    if detail:
        data = detail.encode()
        body += (b"\x1a", _varint(len(data)), data)
    if hub_ticket:
        data = hub_ticket.encode()
        body += (b"\x22", _varint(len(data)), data)
    body.append(receivers_field)
    return b"".join(body)


def _receivers_field(receivers: tuple[str, ...]) -> bytes:
    """The repeated ``receivers`` field (number 5) of an ``EnvelopeOutcome``."""
    return b"".join(b"\x2a" + _varint(len(data)) + data for data in (r.encode() for r in receivers))


@functools.lru_cache(maxsize=1 << 14)
def _varint(n: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def ack_outcomes(ack: bytes) -> dict[int, tuple[str, str, str, tuple[str, ...]]]:
    """A serialized ``BatchAck``'s outcomes by index: (reason name, detail, hub ticket,
    receivers); ``REASON_UNSPECIFIED`` for a reason number this version does not know.
    Raises ``DecodeError``."""
    outcomes = {}
    for o in pb.BatchAck.FromString(ack).outcomes:
        reason = _REASON_FROM_PROTO.get(o.reason)
        outcomes[o.index] = (reason.value if reason is not None else "REASON_UNSPECIFIED",
                             o.detail, o.hub_ticket, tuple(o.receivers))
    return outcomes


def outcome_to_proto(
    index: int, decision: Decision, hub_ticket: str = ""
) -> pb.EnvelopeOutcome:
    return pb.EnvelopeOutcome(
        index=index,
        reason=_REASON_TO_PROTO[decision.reason],
        detail=decision.detail,
        hub_ticket=hub_ticket,
        receivers=decision.receivers,
    )


def outcomes_to_proto(
    decisions: Iterable[Decision], tickets: Sequence[str]
) -> list[pb.EnvelopeOutcome]:
    return [
        outcome_to_proto(i, d, tickets[i]) for i, d in enumerate(decisions)
    ]
