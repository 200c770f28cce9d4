"""Table-driven tests of the pure envelope checks and the quota."""

from __future__ import annotations

from datetime import date

import pytest

from node.core.envelope import (
    SUBJECT_CITIZEN,
    SUBJECT_ENTERPRISE,
    SUBJECT_NONE,
    Decision,
    EnvelopeHead,
    Policy,
    apply_quota,
    check_batch,
    check_envelope,
)
from node.core.reasons import Reason

A, B, C = "0403019261", "0428759497", "0566988259"
POLICY = Policy(frozenset({A, B, C}), frozenset({("svc", 1), ("svc", 2)}), max_payload_bytes=100)


def head(**kw: object) -> EnvelopeHead:
    base = dict(sender=A, receivers=(B,), service_id="svc", service_version=1,
                subject_type=SUBJECT_CITIZEN, subject_number="85073003328", payload_size=10)
    base.update(kw)
    return EnvelopeHead(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, Reason.ACCEPTED),
        ({"service_version": 0}, Reason.ACCEPTED),
        ({"subject_type": SUBJECT_NONE, "subject_number": ""}, Reason.ACCEPTED),
        ({"subject_type": SUBJECT_ENTERPRISE, "subject_number": "0428759497"}, Reason.ACCEPTED),
        ({"receivers": (B, C)}, Reason.ACCEPTED),
        ({"payload_size": 100}, Reason.ACCEPTED),
        ({"service_id": ""}, Reason.INVALID_FIELD),
        ({"sender": B}, Reason.SENDER_MISMATCH),
        ({"sender": ""}, Reason.SENDER_MISMATCH),
        ({"payload_size": 101}, Reason.PAYLOAD_TOO_LARGE),
        ({"digest_ok": False}, Reason.PAYLOAD_DIGEST_MISMATCH),
        ({"subject_number": "85073003327"}, Reason.SUBJECT_NUMBER_INVALID),
        ({"subject_number": "85133000105"}, Reason.SUBJECT_NUMBER_INVALID),
        ({"subject_number": "8507300332"}, Reason.SUBJECT_NUMBER_INVALID),
        ({"subject_type": SUBJECT_ENTERPRISE, "subject_number": "0403019216"},
         Reason.SUBJECT_NUMBER_INVALID),
        ({"subject_type": SUBJECT_NONE, "subject_number": "85073003328"}, Reason.INVALID_FIELD),
        ({"subject_type": 9}, Reason.INVALID_FIELD),
        ({"service_id": "other"}, Reason.UNKNOWN_SERVICE),
        ({"service_version": 3}, Reason.UNKNOWN_SERVICE),
        ({"receivers": ()}, Reason.UNKNOWN_RECEIVER),
        ({"receivers": ("0200065765",)}, Reason.UNKNOWN_RECEIVER),
        ({"receivers": (A,)}, Reason.UNKNOWN_RECEIVER),
        ({"receivers": (B, B)}, Reason.DUPLICATE_RECEIVER),
    ],
)
def test_check_envelope(changes: dict[str, object], reason: Reason) -> None:
    decision = check_envelope(head(**changes), A, POLICY)
    assert decision.reason is reason
    assert bool(decision.detail) == (reason is not Reason.ACCEPTED)


def test_first_failing_rule_wins() -> None:
    both = head(sender=B, subject_number="85073003327", service_id="other")
    assert check_envelope(both, A, POLICY).reason is Reason.SENDER_MISMATCH


def test_node_without_directory_leaves_receivers_and_services_to_the_hub() -> None:
    local = Policy(frozenset(), frozenset(), 100, check_services=False)
    assert check_envelope(head(receivers=("0200065765",), service_id="x"), A, local).accepted


def test_check_batch_passes_prior_decisions_through() -> None:
    refused = Decision(Reason.MALFORMED_ENVELOPE, "bad")
    decisions = check_batch([head(), refused, head(sender=C)], A, POLICY)
    assert [d.reason for d in decisions] == [Reason.ACCEPTED, Reason.MALFORMED_ENVELOPE,
                                             Reason.SENDER_MISMATCH]
    assert decisions[1] is refused


def test_quota_counts_pending_and_this_batch_all_or_nothing() -> None:
    ok = Decision(Reason.ACCEPTED, receivers=(B,))
    both = Decision(Reason.ACCEPTED, receivers=(B, C))
    refused = Decision(Reason.UNKNOWN_SERVICE, "x")
    decisions, added = apply_quota([ok, refused, both, ok, both], {B: 1, C: 0}, quota=3)
    assert [d.reason for d in decisions] == [Reason.ACCEPTED, Reason.UNKNOWN_SERVICE,
                                             Reason.ACCEPTED, Reason.QUOTA_EXCEEDED,
                                             Reason.QUOTA_EXCEEDED]
    assert added == {B: 2, C: 1}  # the refused fan-out did not count towards C


def test_a_batch_decides_each_envelope_as_if_alone() -> None:
    """check_batch remembers service and receiver checks per batch: same decisions."""
    heads = [head(receivers=r, service_id=s, service_version=v)
             for r in ((B,), (B, C), (A,), (B, B), (), ("0999999999",))
             for s, v in (("svc", 1), ("svc", 0), ("svc", 3), ("other", 1))] * 2
    assert check_batch(heads, A, POLICY) == [check_envelope(h, A, POLICY) for h in heads]


def test_receivers_are_bounded_and_distinct_in_one_pass() -> None:
    from node.core.envelope import receivers_problem

    assert receivers_problem(("a", "b", "c"), 3) is None
    assert receivers_problem((), 3) is None
    too_many = receivers_problem(("a", "b", "c", "d"), 3)
    assert too_many is not None and too_many.reason.value == "TOO_MANY_RECEIVERS"
    assert "4 receivers, limit 3 (limits.max_receivers)" in too_many.detail
    twice = receivers_problem(("a", "b", "a"), 3)
    assert twice is not None and twice.reason.value == "DUPLICATE_RECEIVER"
    # 100,000 listings of one receiver: refused for the count, before anything per receiver.
    poison = receivers_problem(("0428759497",) * 100_000, 1_000)
    assert poison is not None and poison.reason.value == "TOO_MANY_RECEIVERS"


def test_a_batch_is_checked_at_the_date_it_is_given() -> None:
    born_2017 = head(subject_number="17073003384")  # 2000s check digits: valid from 2017
    assert check_batch([born_2017], A, POLICY, date(2016, 12, 31))[0].reason is (
        Reason.SUBJECT_NUMBER_INVALID)
    assert check_batch([born_2017], A, POLICY, date(2017, 1, 1))[0].reason is Reason.ACCEPTED
    assert check_envelope(born_2017, A, POLICY, today=date(2017, 1, 1)).accepted
