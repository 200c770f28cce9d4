"""The local API's per-envelope shortcuts answer exactly what the plain code did: the
``Submit`` outcomes encoded as bytes."""

from __future__ import annotations

import random

from node.core.envelope import Decision
from node.core.reasons import Reason
from node.wire.envelopes import outcomes_blob, reason_to_proto
from node.wire.gen.crossroads.v1 import local_pb2

R, C = "0428759497", "0212345678"


def _plain(decisions: list[Decision]) -> local_pb2.LocalSubmitResponse:
    response = local_pb2.LocalSubmitResponse()
    for i, (reason, detail, receivers) in enumerate(decisions):
        response.outcomes.add(index=i, reason=reason_to_proto(reason), detail=detail,
                              receivers=receivers)
    return response


def test_outcomes_blob_is_what_protobuf_serializes() -> None:
    rng = random.Random(7)
    accepted = Decision(Reason.ACCEPTED, receivers=(R,))  # one object for many envelopes
    choices = [
        accepted,
        Decision(Reason.ACCEPTED, "receivers are decided by the hub"),
        Decision(Reason.INVALID_FIELD, "détail " * 40),  # a detail longer than 127 bytes
        Decision(Reason.UNKNOWN_RECEIVER, "no receiver given"),
        Decision(Reason.ACCEPTED, receivers=(R, C, "x" * 300)),
    ]
    for count in (0, 1, 2, 129, 1_000, 20_000):
        # Equal decisions that are distinct objects too (not only the shared ones).
        decisions = [rng.choice(choices) if rng.random() < 0.8 else Decision(*rng.choice(choices))
                     for _ in range(count)]
        field = local_pb2.LocalSubmitResponse.DESCRIPTOR.fields_by_name["outcomes"].number
        blob = outcomes_blob(decisions, field)
        assert blob == _plain(decisions).SerializeToString()
        parsed = local_pb2.LocalSubmitResponse.FromString(blob)
        assert [o.index for o in parsed.outcomes] == list(range(count))


def test_prepare_fills_in_sender_and_time_and_refuses_with_the_reason() -> None:
    from node.core.clock import FakeClock
    from node.core.envelope import Policy
    from node.member.local_api import LocalService
    from node.wire.gen.crossroads.v1 import envelope_pb2 as pb

    me = "0403019261"
    policy = Policy(institutions=frozenset(), services=frozenset(), max_payload_bytes=100,
                    check_services=False, check_receivers=False)
    clock = FakeClock()
    service = LocalService(me, policy, None, None, None, None, None, None,  # type: ignore[arg-type]
                           clock)
    bare = pb.Envelope(service_id="demo.message", receivers=[R]).SerializeToString()
    complete = pb.Envelope(service_id="demo.message", receivers=[R], sender=me,
                           sent_at_unix_us=5).SerializeToString()
    other = pb.Envelope(service_id="demo.message", receivers=[R], sender=C).SerializeToString()
    big = pb.Envelope(service_id="demo.message", receivers=[R],
                      payload=pb.Payload(data=b"x" * 101)).SerializeToString()
    decisions, ready, heads = service._prepare([bare, complete, b"\xff\xff", other, big])
    assert [d.reason for d in decisions] == [
        Reason.ACCEPTED, Reason.ACCEPTED, Reason.MALFORMED_ENVELOPE, Reason.SENDER_MISMATCH,
        Reason.PAYLOAD_TOO_LARGE]
    filled = pb.Envelope.FromString(ready[0])
    assert filled.sender == me and filled.sent_at_unix_us == clock.now_us()  # the node's clock
    assert heads[0] is not None and heads[0].sender == me
    assert ready[1] == complete  # nothing to fill in: the bytes as sent
    assert ready[2:] == [None, None, None] and heads[2] is None
    assert "not an Envelope" in decisions[2].detail and C in decisions[3].detail
    assert heads[4] is not None and heads[4].sender == me  # filled in, then checked


def test_prepare_checks_subjects_at_the_date_of_the_node_clock() -> None:
    from datetime import datetime

    from node.core.clock import FakeClock
    from node.core.envelope import Policy
    from node.member.local_api import LocalService
    from node.wire.gen.crossroads.v1 import envelope_pb2 as pb

    me, born_2017 = "0403019261", "17073003384"  # valid from 2017 on (2000s check digits)
    policy = Policy(institutions=frozenset(), services=frozenset(), max_payload_bytes=100,
                    check_services=False, check_receivers=False)
    clock = FakeClock(now_us=int(datetime(2016, 12, 31, 12).timestamp() * 1_000_000))
    service = LocalService(me, policy, None, None, None, None, None, None,  # type: ignore[arg-type]
                           clock)
    envelope = pb.Envelope(service_id="demo.message", receivers=[R], sender=me)
    envelope.subject.type = pb.SUBJECT_TYPE_CITIZEN
    envelope.subject.number = born_2017
    raw = envelope.SerializeToString()
    [decision], _, _ = service._prepare([raw])
    assert decision.reason is Reason.SUBJECT_NUMBER_INVALID
    assert "BIRTH_YEAR_IN_FUTURE" in decision.detail
    clock.advance(86_400)  # New Year's Day 2017, by the node's clock
    [decision], _, _ = service._prepare([raw])
    assert decision.reason is Reason.ACCEPTED
