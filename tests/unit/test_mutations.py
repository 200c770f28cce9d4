"""The push system: who receives a mutation (table-driven)."""

from __future__ import annotations

from datetime import date

import pytest

from node.core import directory as dr
from node.core.envelope import SUBJECT_CITIZEN, EnvelopeHead
from node.core.reasons import Reason

EVENT = date(2026, 11, 1)
SOURCE = "0403019261"  # contributions institution (authentic source)
UNEMPLOYMENT, HEALTH, FAMILY, WELFARE, PENSIONS, SUSPENDED = (
    "0428759497", "0566988259", "0200065765", "0212344876", "0207446178", "0220916609")
WORKER = "85073003328"
MUTATION = dr.Service("mutation.employment", 1, "mutation", "citizen", "fan_out")

CASES = [
    # (institution, its integration of the worker, subscription capacities, receives?)
    (UNEMPLOYMENT, dr.Integration(WORKER, UNEMPLOYMENT, 1, period=dr.Period(date(2020, 1, 1))), {1}, True),
    (HEALTH, dr.Integration(WORKER, HEALTH, 2, period=dr.Period(date(2026, 1, 1), date(2026, 12, 31))),
     set(), True),
    (FAMILY, None, {1}, False),  # not integrated
    (WELFARE, dr.Integration(WORKER, WELFARE, 1, period=dr.Period(date(2020, 1, 1), date(2026, 10, 31))),
     {1}, False),  # period ended before the event
    (PENSIONS, dr.Integration(WORKER, PENSIONS, 3, period=dr.Period(date(2020, 1, 1))), {1, 2},
     False),  # other capacity
    (SUSPENDED, dr.Integration(WORKER, SUSPENDED, 1, period=dr.Period(date(2020, 1, 1))), {1},
     False),  # institution suspended
    (SOURCE, dr.Integration(WORKER, SOURCE, 1, period=dr.Period(date(2020, 1, 1))), {1},
     False),  # the source itself
]


def view() -> dr.DirectoryView:
    institutions = {e: dr.Institution(e, 1, status="suspended" if e == SUSPENDED else "active")
                    for e, *_ in CASES}
    integrations = [i for _, i, _, _ in CASES if i is not None]
    subscriptions = [dr.Subscription(f"s-{e}", e, MUTATION.id, frozenset(c)) for e, _, c, _ in CASES]
    return dr.DirectoryView(
        institutions, {(MUTATION.id, 1): MUTATION},
        {MUTATION.id: [dr.Authorization("pub", MUTATION.id, SOURCE)]},
        {WORKER: integrations}, {}, {MUTATION.id: subscriptions},
    )


def publish(event: date) -> tuple[Reason, tuple[str, ...]]:
    head = EnvelopeHead(SOURCE, (), MUTATION.id, 1, SUBJECT_CITIZEN, WORKER, 10)
    decision, _ = dr.decide(head, dr.Request(0, "", dr.Period(event, event)), SOURCE, view(), EVENT)
    return decision.reason, decision.receivers


@pytest.mark.parametrize(("institution", "receives"), [(e, r) for e, _, _, r in CASES])
def test_each_case(institution: str, receives: bool) -> None:
    reason, receivers = publish(EVENT)
    assert reason is Reason.ACCEPTED
    assert (institution in receivers) == receives


def test_exact_receivers() -> None:
    assert publish(EVENT) == (Reason.ACCEPTED, tuple(sorted((UNEMPLOYMENT, HEALTH))))


def test_event_date_decides_whose_period_counts() -> None:
    # On 2026-10-15 the welfare centre's integration was still active; health's started 2026.
    assert publish(date(2026, 10, 15))[1] == tuple(sorted((UNEMPLOYMENT, HEALTH, WELFARE)))
    assert publish(date(2025, 6, 1))[1] == tuple(sorted((UNEMPLOYMENT, WELFARE)))


def test_nobody_subscribed_is_no_receiver() -> None:
    head = EnvelopeHead(SOURCE, (), MUTATION.id, 1, SUBJECT_CITIZEN, "17073003384", 10)
    decision, _ = dr.decide(head, dr.Request(0, "", None), SOURCE, view(), EVENT)
    assert decision.reason is Reason.NO_RECEIVER
