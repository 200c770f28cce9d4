"""Table-driven tests of the directory decision rules (node.core.directory.decide)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from node.core.directory import (
    Authorization,
    DirectoryView,
    Institution,
    Integration,
    Period,
    Request,
    Service,
    decide,
    request_of,
    shared_decision_key,
)
from node.core.envelope import SUBJECT_CITIZEN, SUBJECT_ENTERPRISE, Decision, EnvelopeHead
from node.core.reasons import Reason

TODAY = date(2026, 11, 28)
YESTERDAY, TOMORROW = TODAY - timedelta(days=1), TODAY + timedelta(days=1)
WELFARE, HEALTH, UNEMPLOYMENT, PENSIONS = "0403019261", "0428759497", "0566988259", "0200065765"
CITIZEN, OTHER, OLD = "85073003328", "17073003384", "70010108997"

INSTITUTIONS = {
    WELFARE: Institution(WELFARE, 17),
    HEALTH: Institution(HEALTH, 11),
    UNEMPLOYMENT: Institution(UNEMPLOYMENT, 18),
    PENSIONS: Institution(PENSIONS, 5, status="suspended"),
}
SERVICES = {
    ("insurability", 1): Service("insurability", 1, "consultation", "citizen", "fixed", HEALTH,
                                 integration_required=True, min_phase=2),
    ("income", 1): Service("income", 1, "consultation", "citizen", "fan_out",
                           integration_required=True, capacities=frozenset({1, 2})),
    ("open", 1): Service("open", 1, "consultation", "citizen", "fan_out"),
    ("company", 1): Service("company", 1, "consultation", "enterprise", "fixed", HEALTH),
}
AUTH = {
    "insurability": [Authorization("a1", "insurability", WELFARE, legal_context="D-123",
                                   capacities=frozenset({2}),
                                   period=Period(date(2020, 1, 1), date(2030, 12, 31))),
                     Authorization("a2", "insurability", sector=18,
                                   period=Period(date(2020, 1, 1), YESTERDAY))],
    "income": [Authorization("b1", "income", sector=17),
               Authorization("b2", "income", HEALTH),
               Authorization("b3", "income", UNEMPLOYMENT),
               Authorization("b4", "income", PENSIONS)],
    "open": [Authorization("c1", "open", WELFARE, period=Period(TOMORROW))],
    "company": [Authorization("d1", "company", WELFARE)],
}
INTEGRATIONS = {
    CITIZEN: [
        Integration(CITIZEN, WELFARE, 2, phase=3, period=Period(date(2024, 1, 1))),
        Integration(CITIZEN, HEALTH, 1, phase=1, period=Period(date(2010, 1, 1))),
        Integration(CITIZEN, UNEMPLOYMENT, 2, period=Period(date(2020, 1, 1), YESTERDAY)),
        Integration(CITIZEN, PENSIONS, 1, period=Period(date(2020, 1, 1))),
    ],
    OTHER: [Integration(OTHER, WELFARE, 2, phase=1, period=Period(date(2024, 1, 1))),
            Integration(OTHER, HEALTH, 3, period=Period(date(2024, 1, 1)))],
}
VIEW = DirectoryView(INSTITUTIONS, SERVICES, AUTH, INTEGRATIONS, {OLD: CITIZEN})


def head(service: str = "insurability", subject: str = CITIZEN, subject_type: int = SUBJECT_CITIZEN,
         **kw: object) -> EnvelopeHead:
    return EnvelopeHead(sender=WELFARE, receivers=(), service_id=service, service_version=0,
                        subject_type=subject_type, subject_number=subject, payload_size=1,
                        **kw)  # type: ignore[arg-type]


def run(h: EnvelopeHead, sender: str = WELFARE, capacity: int = 2, context: str = "D-123",
        period: Period | None = None) -> Decision:
    return decide(h, Request(capacity, context, period), sender, VIEW, TODAY)[0]


@pytest.mark.parametrize(
    ("case", "kwargs", "reason", "receivers"),
    [
        ("fixed provider", {}, Reason.ACCEPTED, (HEALTH,)),
        ("unknown service", {"h": head("nope")}, Reason.UNKNOWN_SERVICE, ()),
        ("wrong legal context", {"context": "D-999"}, Reason.NOT_AUTHORIZED, ()),
        ("capacity not authorized", {"capacity": 1}, Reason.NOT_AUTHORIZED, ()),
        ("authorization ended yesterday", {"sender": UNEMPLOYMENT}, Reason.NOT_AUTHORIZED, ()),
        ("authorization starts tomorrow", {"h": head("open")}, Reason.NOT_AUTHORIZED, ()),
        ("suspended sender", {"sender": PENSIONS, "h": head("income")}, Reason.NOT_AUTHORIZED, ()),
        ("not integrated", {"h": head(subject="98472899765")}, Reason.NOT_INTEGRATED, ()),
        ("phase too low", {"h": head(subject=OTHER)}, Reason.PHASE_TOO_LOW, ()),
        ("period before the integration", {"period": Period(date(2023, 6, 1), date(2024, 6, 1))},
         Reason.NOT_INTEGRATED, ()),
        ("period inside the open integration", {"period": Period(date(2025, 1, 1), TODAY)},
         Reason.ACCEPTED, (HEALTH,)),
        ("replaced number mapped", {"h": head(subject=OLD)}, Reason.ACCEPTED, (HEALTH,)),
        ("fan-out: active, authorized, relevant capacity, not the sender",
         {"h": head("income")}, Reason.ACCEPTED, (HEALTH,)),
        ("fan-out: nobody else holds the subject", {"h": head("income", OTHER), "capacity": 2},
         Reason.NO_RECEIVER, ()),
        ("subject type must match the service", {"h": head("company")}, Reason.INVALID_FIELD, ()),
        ("enterprise subject", {"h": head("company", "0428759497", SUBJECT_ENTERPRISE)},
         Reason.ACCEPTED, (HEALTH,)),
        ("not authorized for this service", {"sender": HEALTH, "h": head("company", "0428759497",
                                                                       SUBJECT_ENTERPRISE)},
         Reason.NOT_AUTHORIZED, ()),
    ],
)
def test_decide(case: str, kwargs: dict[str, object], reason: Reason,
                receivers: tuple[str, ...]) -> None:
    h = kwargs.pop("h", head())
    decision = run(h, **kwargs)  # type: ignore[arg-type]
    assert decision.reason is reason, (case, decision.detail)
    assert decision.receivers == receivers
    if reason is not Reason.ACCEPTED:
        assert decision.detail


def test_replaced_number_is_noted_in_the_outcome() -> None:
    decision, subject = decide(head(subject=OLD), Request(2, "D-123", None), WELFARE, VIEW, TODAY)
    assert subject == CITIZEN
    assert decision.detail == f"SUBJECT_REPLACED: {OLD} -> {CITIZEN}"


def test_fan_out_skips_ended_suspended_and_irrelevant_capacities() -> None:
    # UNEMPLOYMENT ended yesterday, PENSIONS is suspended, HEALTH capacity 1 is relevant.
    decision = run(head("income"), capacity=2)
    assert decision.receivers == (HEALTH,)


def test_request_of_rejects_malformed_periods() -> None:
    bad = request_of(head(period_begin="2026-13-01"))
    assert isinstance(bad, Decision) and bad.reason is Reason.INVALID_FIELD
    backwards = request_of(head(period_begin="2026-02-01", period_end="2026-01-01"))
    assert isinstance(backwards, Decision) and backwards.reason is Reason.INVALID_FIELD
    ok = request_of(head(period_begin="2026-01-01", capacity=2, legal_context="D"))
    assert ok == Request(2, "D", Period(date(2026, 1, 1), None))


def test_envelopes_with_one_shared_decision_key_get_the_same_decision() -> None:
    """The hub decides once per shared key in a batch: that is only right if every envelope
    with the key gets the decision any other one would."""
    services = {**SERVICES, ("notice", 1): Service("notice", 1, "declaration", "any", "explicit")}
    auth = {**AUTH, "notice": [Authorization("e1", "notice", WELFARE, capacities=frozenset({2}))]}
    view = DirectoryView(INSTITUTIONS, services, auth, INTEGRATIONS, {OLD: CITIZEN})
    subjects = [(CITIZEN, SUBJECT_CITIZEN), (OTHER, SUBJECT_CITIZEN), (OLD, SUBJECT_CITIZEN),
                ("98472899765", SUBJECT_CITIZEN), ("0428759497", SUBJECT_ENTERPRISE)]
    by_key: dict[tuple[object, ...], set[Decision]] = {}
    for service_id, _ in services:
        for subject, subject_type in subjects:
            for receivers in ((), (HEALTH,), (HEALTH, UNEMPLOYMENT), (PENSIONS,)):
                for capacity in (1, 2):
                    h = head(service_id, subject, subject_type, capacity=capacity,
                             legal_context="D-123")._replace(receivers=receivers)
                    key = shared_decision_key(h, view)
                    if service_id != "notice" and service_id != "company" or subject == OLD:
                        assert key is None, h  # reads integrations, or a replaced subject
                    if key is not None:
                        request = request_of(h)
                        assert isinstance(request, Request)
                        by_key.setdefault(key, set()).add(
                            decide(h, request, WELFARE, view, TODAY)[0])
    assert len(by_key) > 10
    assert all(len(decisions) == 1 for decisions in by_key.values()), by_key
