"""The hub's queued deliveries as bytes: stored once, sent as they are.

The hub queues the envelopes it accepts for a receiver as *packed* delivery batches: the
serialized ``DeliveryBatch`` fields ``envelopes`` and ``hub_tickets`` of a run of envelopes,
without ``last_sequence`` (:func:`pack`, :func:`cut`). A protobuf message parsed from two
serialized messages joined end to end is the two merged: repeated fields concatenate and a
scalar takes the last value. So the delivery worker builds the message it sends by joining
the packed batches it read and appending ``last_sequence`` (:func:`delivery_message`), with
no per-envelope work, and the node parses it as a plain ``DeliveryBatch``.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from google.protobuf.message import DecodeError

from node.wire.gen.crossroads.v1 import node_pb2

__all__ = ["cut", "delivery_message", "first_ticket_us", "pack", "tickets_of"]


def pack(envelopes: Sequence[bytes], tickets: Sequence[str]) -> bytes:
    """One packed batch: the envelopes (stamped, serialized) and their hub tickets, the
    tickets first (merged like joined batches, the message parses the same) so that the
    first ticket is read without parsing the envelopes (:func:`first_ticket_us`)."""
    return (node_pb2.DeliveryBatch(hub_tickets=tickets).SerializeToString()
            + node_pb2.DeliveryBatch(envelopes=envelopes).SerializeToString())


def cut(
    envelopes: Sequence[bytes], tickets: Sequence[str], max_envelopes: int, max_bytes: int
) -> list[tuple[int, bytes]]:
    """``(count, packed)`` runs of at most ``max_envelopes`` envelopes and ~``max_bytes`` of
    envelope bytes each (at least one envelope per run), in order."""
    total = len(envelopes)
    runs: list[tuple[int, bytes]] = []
    start = 0
    sizes: list[int] | None = None
    while start < total:
        end = min(total, start + max_envelopes)
        if sizes is None and sum(map(len, envelopes[start:end])) > max_bytes:
            sizes = list(itertools.accumulate(map(len, envelopes), initial=0))
        if sizes is not None:  # the last end whose run still fits, at least one envelope
            end = max(start + 1, min(end, bisect.bisect_right(sizes, sizes[start] + max_bytes) - 1))
        runs.append((end - start, pack(envelopes[start:end], tickets[start:end])))
        start = end
    return runs


def delivery_message(packed: Sequence[bytes], last_sequence: int) -> bytes:
    """The serialized ``DeliveryBatch`` of consecutive packed batches."""
    return b"".join((*packed, node_pb2.DeliveryBatch(last_sequence=last_sequence)
                     .SerializeToString()))


def tickets_of(packed: bytes) -> list[str]:
    """The hub tickets of a packed batch (or of several joined, or of a delivery message), in
    order."""
    return list(node_pb2.DeliveryBatch.FromString(packed).hub_tickets)


#: A packed batch's start when :func:`pack` made it: field 3 (``hub_tickets``), length 36.
_TICKET_FIRST = bytes([3 << 3 | 2, 36])


def first_ticket_us(packed: bytes) -> int | None:
    """When the first envelope of a packed batch was accepted, Unix microseconds: its hub
    ticket is a UUIDv7, whose first 48 bits are the acceptance's Unix milliseconds
    (:func:`node.hub.intake._uuid7s`). Read from the first bytes (:func:`pack` puts the tickets
    first); a batch packed otherwise (queued by an older version) is parsed. ``None`` when
    the ticket is not such a UUID (nothing to measure; the batch is delivered all the same)."""
    try:
        if packed.startswith(_TICKET_FIRST):
            ticket = packed[2:38].decode()
        else:
            ticket = node_pb2.DeliveryBatch.FromString(packed).hub_tickets[0]
        return int(ticket[:8] + ticket[9:13], 16) * 1000
    except (ValueError, IndexError, DecodeError):
        return None
