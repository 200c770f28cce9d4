"""Packed delivery batches (node/wire/delivery.py): the tickets first, so the queue head's
acceptance time (the hub's queue-age metrics) is read without parsing the envelopes."""

from __future__ import annotations

from node.hub.intake import _uuid7s
from node.wire.delivery import delivery_message, first_ticket_us, pack
from node.wire.gen.crossroads.v1 import node_pb2

NOW_US = 1_796_000_000_123_456


def test_a_packed_batch_parses_as_before_and_joins_with_older_ones() -> None:
    envelopes = [b"e%d" % i for i in range(5)]
    tickets = list(_uuid7s(5, NOW_US))
    older = node_pb2.DeliveryBatch(envelopes=envelopes[3:], hub_tickets=tickets[3:])
    message = node_pb2.DeliveryBatch.FromString(delivery_message(
        [pack(envelopes[:3], tickets[:3]), older.SerializeToString()], 42))
    assert list(message.envelopes) == envelopes
    assert list(message.hub_tickets) == tickets
    assert message.last_sequence == 42


def test_the_first_ticket_tells_when_the_batch_was_accepted() -> None:
    tickets = list(_uuid7s(3, NOW_US))
    expected = NOW_US // 1000 * 1000  # a UUIDv7 holds milliseconds
    assert first_ticket_us(pack([b"a", b"b", b"c"], tickets)) == expected
    older = node_pb2.DeliveryBatch(envelopes=[b"a"], hub_tickets=tickets[:1])
    assert first_ticket_us(older.SerializeToString()) == expected  # parsed instead
    assert first_ticket_us(pack([b"a"], ["t1"])) is None  # not a UUIDv7: nothing measured
    assert first_ticket_us(b"\xff\xff") is None
