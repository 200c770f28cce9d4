"""Employers' declarations: per-field validation, the catalogue, the mutation, the wire form."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.core import declarations as d
from node.core.declarations import (
    EmploymentMutation,
    FieldError,
    ImmediateDeclaration,
    QuarterlyDeclaration,
    QuarterlyWorkerLine,
    SocialRiskDeclaration,
    catalogue,
    employment_mutation_for,
    quarter_bounds,
    validate_employment_mutation,
    validate_immediate,
    validate_quarterly,
    validate_social_risk,
)
from node.core.identifiers import citizen_check_digits, enterprise_check_digits
from node.wire import declarations as wire
from node.wire.gen.crossroads.services.v1 import declarations_pb2 as pb
from tests.unit.properties import TODAY, examples

PROPERTY = examples(200)

EMPLOYER = "0403019261"
WORKER = "85073003328"
WORKER2 = "17073003384"
WORKER3 = "98472899765"  # bis number
CONTRIBUTIONS = "0566988259"
UNIT = "2" + "0000000" + enterprise_check_digits("20000000")  # a valid establishment unit

RECRUITMENT = ImmediateDeclaration(
    kind="RECRUITMENT", employer_enterprise_number=EMPLOYER, worker_citizen_number=WORKER,
    joint_committee="200", worker_type="OTHER", start_date="2026-06-16",
    planned_weekly_hours=38.0, employer_reference="HR-2026-0001")
DISCHARGE = ImmediateDeclaration(
    kind="DISCHARGE", employer_enterprise_number=EMPLOYER, worker_citizen_number=WORKER,
    start_date="2019-03-01", end_date="2026-06-30")
LINE = QuarterlyWorkerLine(
    citizen_number=WORKER, joint_committee="200", period_start_date="2026-01-01",
    gross_salary_cents=1_234_567, worked_days=64, worked_hours=486.4)
QUARTERLY = QuarterlyDeclaration(
    employer_enterprise_number=EMPLOYER, year=2026, quarter=1,
    workers=(LINE, replace(LINE, citizen_number=WORKER2, joint_committee="330.01",
                           period_start_date="2026-02-10", period_end_date="2026-03-20",
                           worked_days=20, worked_hours=80.0)))
RISK = SocialRiskDeclaration(
    risk="INCAPACITY", employer_enterprise_number=EMPLOYER, worker_citizen_number=WORKER,
    joint_committee="200", event_date="2026-06-01", last_worked_date="2026-05-29",
    monthly_reference_salary_cents=345_000, contract_weekly_hours=38.0)
MUTATION = EmploymentMutation(
    worker_citizen_number=WORKER, employer_enterprise_number=EMPLOYER, event="STARTED",
    event_date="2026-06-16", start_date="2026-06-16", joint_committee="200",
    worker_type="OTHER", source_declaration_id="0b9b3c1e-0000-4000-8000-000000000001")


#: Changes to a valid declaration, and the (field, code) pairs its validator then reports.
FieldCases = list[tuple[dict[str, Any], list[tuple[str, str]]]]


def pairs(errors: list[FieldError]) -> list[tuple[str, str]]:
    return [(e.path, e.code) for e in errors]


# --------------------------------------------------------------------------------------------
# Valid examples


@pytest.mark.parametrize("value", [
    RECRUITMENT,
    replace(RECRUITMENT, end_date="2026-09-30", employer_reference=""),  # fixed term
    replace(RECRUITMENT, worker_type="STUDENT", planned_weekly_hours=12.5),
    replace(RECRUITMENT, worker_citizen_number=WORKER3, joint_committee="330.01.20"),
    replace(RECRUITMENT, start_date=str(TODAY - timedelta(days=365))),  # window edges
    replace(RECRUITMENT, start_date=str(TODAY + timedelta(days=365))),
    replace(RECRUITMENT, planned_weekly_hours=0.0),  # not given
    DISCHARGE,
    replace(DISCHARGE, start_date="2026-06-30"),  # a one-day occupation
], ids=lambda v: f"{v.kind}-{v.worker_type}-{v.start_date}")
def test_valid_immediate_declarations(value: ImmediateDeclaration) -> None:
    assert validate_immediate(value, TODAY) == []


@pytest.mark.parametrize("risk", [r.value for r in d.SocialRisk if r.value])
def test_valid_social_risk_declarations(risk: str) -> None:
    assert validate_social_risk(replace(RISK, risk=risk), TODAY) == []


def test_valid_quarterly_and_mutation() -> None:
    assert validate_quarterly(QUARTERLY, TODAY) == []
    assert validate_quarterly(replace(QUARTERLY, year=2026, quarter=2), TODAY) != []  # dates
    assert validate_employment_mutation(MUTATION, TODAY) == []


# --------------------------------------------------------------------------------------------
# One invalid field: exactly that field is named, with its code


RECRUITMENT_ERRORS: FieldCases = [
    ({"kind": ""}, [("kind", "REQUIRED")]),  # then nothing else is required
    ({"kind": "HIRE"}, [("kind", "VALUE_INVALID")]),
    ({"employer_enterprise_number": ""}, [("employer_enterprise_number", "REQUIRED")]),
    ({"employer_enterprise_number": "0403019216"},
     [("employer_enterprise_number", "SUBJECT_NUMBER_INVALID")]),
    ({"employer_enterprise_number": "0403.019.261"},
     [("employer_enterprise_number", "SUBJECT_NUMBER_INVALID")]),
    ({"employer_enterprise_number": UNIT},
     [("employer_enterprise_number", "SUBJECT_NUMBER_INVALID")]),
    ({"worker_citizen_number": ""}, [("worker_citizen_number", "REQUIRED")]),
    ({"worker_citizen_number": "85073003327"},
     [("worker_citizen_number", "SUBJECT_NUMBER_INVALID")]),
    ({"worker_citizen_number": "85133000105"},
     [("worker_citizen_number", "SUBJECT_NUMBER_INVALID")]),
    ({"worker_citizen_number": "85.07.30-033.28"},
     [("worker_citizen_number", "SUBJECT_NUMBER_INVALID")]),
    ({"joint_committee": ""}, [("joint_committee", "REQUIRED")]),
    ({"joint_committee": "20"}, [("joint_committee", "VALUE_INVALID")]),
    ({"joint_committee": "500"}, [("joint_committee", "VALUE_INVALID")]),
    ({"worker_type": ""}, [("worker_type", "REQUIRED")]),
    ({"worker_type": "INTERN"}, [("worker_type", "VALUE_INVALID")]),
    ({"start_date": ""}, [("start_date", "REQUIRED")]),
    ({"start_date": "2026-02-30"}, [("start_date", "DATE_INVALID")]),
    ({"start_date": "20260616"}, [("start_date", "DATE_INVALID")]),
    ({"start_date": "16/06/2026"}, [("start_date", "DATE_INVALID")]),
    ({"start_date": str(TODAY - timedelta(days=366))}, [("start_date", "OUT_OF_RANGE")]),
    ({"start_date": str(TODAY + timedelta(days=366))}, [("start_date", "OUT_OF_RANGE")]),
    ({"end_date": "2026-06-15"}, [("end_date", "DATE_ORDER")]),
    ({"end_date": "2026-13-01"}, [("end_date", "DATE_INVALID")]),
    ({"worker_type": "STUDENT", "planned_weekly_hours": 0.0},
     [("planned_weekly_hours", "REQUIRED")]),
    ({"planned_weekly_hours": -1.0}, [("planned_weekly_hours", "OUT_OF_RANGE")]),
    ({"planned_weekly_hours": 60.5}, [("planned_weekly_hours", "OUT_OF_RANGE")]),
    ({"planned_weekly_hours": float("nan")}, [("planned_weekly_hours", "OUT_OF_RANGE")]),
    ({"employer_reference": "x" * 65}, [("employer_reference", "OUT_OF_RANGE")]),
    ({"employer_reference": "a\nb"}, [("employer_reference", "VALUE_INVALID")]),
]


DISCHARGE_ERRORS: FieldCases = [
    ({"end_date": ""}, [("end_date", "REQUIRED")]),
    ({"start_date": ""}, [("start_date", "REQUIRED")]),
    ({"start_date": "2026-07-01"}, [("end_date", "DATE_ORDER")]),
    ({"end_date": str(TODAY - timedelta(days=366))}, [("end_date", "OUT_OF_RANGE")]),
    ({"end_date": str(TODAY + timedelta(days=366))}, [("end_date", "OUT_OF_RANGE")]),
    ({"joint_committee": "1"}, [("joint_committee", "VALUE_INVALID")]),  # optional, checked
]


SOCIAL_RISK_ERRORS: FieldCases = [
    ({"risk": ""}, [("risk", "REQUIRED")]),
    ({"risk": "FLU"}, [("risk", "VALUE_INVALID")]),
    ({"employer_enterprise_number": "0431150351"},
     [("employer_enterprise_number", "SUBJECT_NUMBER_INVALID")]),
    ({"worker_citizen_number": "12345678901"},
     [("worker_citizen_number", "SUBJECT_NUMBER_INVALID")]),
    ({"joint_committee": ""}, [("joint_committee", "REQUIRED")]),
    ({"event_date": ""}, [("event_date", "REQUIRED")]),
    ({"event_date": "2026-6-1"}, [("event_date", "DATE_INVALID")]),
    ({"event_date": "2026-06-16"}, [("event_date", "OUT_OF_RANGE")]),  # not planned: no future
    ({"event_date": str(TODAY - timedelta(days=3 * 365 + 1)), "last_worked_date": ""},
     [("event_date", "OUT_OF_RANGE"), ("last_worked_date", "REQUIRED")]),
    ({"last_worked_date": ""}, [("last_worked_date", "REQUIRED")]),
    ({"last_worked_date": "2026-06-02"}, [("last_worked_date", "DATE_ORDER")]),
    ({"last_worked_date": "yesterday"}, [("last_worked_date", "DATE_INVALID")]),
    ({"monthly_reference_salary_cents": 0}, [("monthly_reference_salary_cents", "REQUIRED")]),
    ({"monthly_reference_salary_cents": -5},
     [("monthly_reference_salary_cents", "OUT_OF_RANGE")]),
    ({"contract_weekly_hours": 80.0}, [("contract_weekly_hours", "OUT_OF_RANGE")]),
]


def test_planned_risks_may_be_declared_ahead() -> None:
    ahead = str(TODAY + timedelta(days=180))
    for risk in ("MATERNITY", "PATERNITY", "UNEMPLOYMENT_TEMPORARY"):
        assert validate_social_risk(replace(RISK, risk=risk, event_date=ahead), TODAY) == []
        too_far = replace(RISK, risk=risk, event_date=str(TODAY + timedelta(days=181)))
        assert pairs(validate_social_risk(too_far, TODAY)) == [("event_date", "OUT_OF_RANGE")]
    # not required for a work accident, still checked when given
    accident = replace(RISK, risk="WORK_ACCIDENT", last_worked_date="")
    assert validate_social_risk(accident, TODAY) == []
    assert validate_social_risk(replace(accident, risk="INCAPACITY"), TODAY) != []


QUARTERLY_HEADER_ERRORS: FieldCases = [
    ({"employer_enterprise_number": "BE0403019261"},
     [("employer_enterprise_number", "SUBJECT_NUMBER_INVALID")]),
    ({"year": 0}, [("year", "REQUIRED")]),
    ({"year": 2015}, [("year", "OUT_OF_RANGE")]),
    ({"year": 2027}, [("year", "OUT_OF_RANGE")]),
    ({"quarter": 0}, [("quarter", "REQUIRED")]),
    ({"quarter": 5}, [("quarter", "OUT_OF_RANGE")]),
    ({"workers": ()}, [("workers", "REQUIRED")]),
    ({"employer_reference": "y" * 65}, [("employer_reference", "OUT_OF_RANGE")]),
]


MUTATION_ERRORS: FieldCases = [
    ({"event": ""}, [("event", "REQUIRED")]),
    ({"event_date": "2026-06-17"}, [("event_date", "VALUE_INVALID")]),
    ({"event": "ENDED"}, [("end_date", "REQUIRED")]),
    ({"source_declaration_id": ""}, [("source_declaration_id", "REQUIRED")]),
    ({"worker_type": ""}, [("worker_type", "REQUIRED")]),
]


def _field_cases(name: str, validate: Callable[[Any, date], list[FieldError]], valid: object,
                 cases: FieldCases) -> list[Any]:
    return [pytest.param(validate, valid, changes, expected, id=f"{name}-{i}")
            for i, (changes, expected) in enumerate(cases)]


@pytest.mark.parametrize(("validate", "valid", "changes", "expected"), [
    *_field_cases("recruitment", validate_immediate, RECRUITMENT, RECRUITMENT_ERRORS),
    *_field_cases("discharge", validate_immediate, DISCHARGE, DISCHARGE_ERRORS),
    *_field_cases("social-risk", validate_social_risk, RISK, SOCIAL_RISK_ERRORS),
    *_field_cases("quarterly", validate_quarterly, QUARTERLY, QUARTERLY_HEADER_ERRORS),
    *_field_cases("mutation", validate_employment_mutation, MUTATION, MUTATION_ERRORS),
])
def test_field_errors(validate: Callable[[Any, date], list[FieldError]], valid: object,
                      changes: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    """A valid declaration with ``changes``: its validator names exactly ``expected``."""
    assert pairs(validate(replace(valid, **changes), TODAY)) == expected


def test_a_quarter_that_has_not_begun_is_refused() -> None:
    q3 = replace(QUARTERLY, quarter=3, workers=(replace(LINE, period_start_date="2026-07-01"),))
    assert pairs(validate_quarterly(q3, TODAY)) == [("quarter", "OUT_OF_RANGE")]
    assert validate_quarterly(q3, date(2026, 7, 1)) == []


@pytest.mark.parametrize(("changes", "expected"), [
    ({"citizen_number": ""}, [("citizen_number", "REQUIRED")]),
    ({"citizen_number": "85073003327"}, [("citizen_number", "SUBJECT_NUMBER_INVALID")]),
    ({"joint_committee": ""}, [("joint_committee", "REQUIRED")]),
    ({"joint_committee": "2OO"}, [("joint_committee", "VALUE_INVALID")]),
    ({"period_start_date": ""}, [("period_start_date", "REQUIRED")]),
    ({"period_start_date": "2026-01-32"}, [("period_start_date", "DATE_INVALID")]),
    ({"period_start_date": "2025-12-31"}, [("period_start_date", "OUT_OF_RANGE")]),
    ({"period_end_date": "2026-04-01"}, [("period_end_date", "OUT_OF_RANGE")]),
    ({"period_start_date": "2026-03-01", "period_end_date": "2026-02-01"},
     [("period_end_date", "DATE_ORDER")]),
    ({"gross_salary_cents": -1}, [("gross_salary_cents", "OUT_OF_RANGE")]),
    ({"worked_days": 91}, [("worked_days", "OUT_OF_RANGE")]),  # Q1 2026 has 90 days
    ({"period_end_date": "2026-01-10", "worked_hours": 70.0},
     [("worked_days", "OUT_OF_RANGE")]),  # 64 days in a 10-day period
    ({"worked_days": -1, "worked_hours": 0.0}, [("worked_days", "OUT_OF_RANGE")]),
    ({"worked_hours": -0.5}, [("worked_hours", "OUT_OF_RANGE")]),
    ({"worked_days": 2, "worked_hours": 48.5}, [("worked_hours", "OUT_OF_RANGE")]),
    ({"worked_days": 0, "worked_hours": 0.25}, [("worked_hours", "OUT_OF_RANGE")]),
    ({"worked_hours": float("inf")}, [("worked_hours", "OUT_OF_RANGE")]),
])
def test_quarterly_line_errors_name_the_line(changes: dict[str, Any],
                                             expected: list[tuple[str, str]]) -> None:
    bad = replace(LINE, **{"citizen_number": WORKER3, **changes})
    value = replace(QUARTERLY, workers=(QUARTERLY.workers[1], LINE, bad))
    assert pairs(validate_quarterly(value, TODAY)) == [(f"workers[2].{p}", c)
                                                       for p, c in expected]


def test_quarterly_boundaries_pass() -> None:
    edge = replace(LINE, period_start_date="2026-03-31", period_end_date="2026-03-31",
                   worked_days=1, worked_hours=24.0, gross_salary_cents=0)
    full = replace(LINE, citizen_number=WORKER2, worked_days=90, worked_hours=90 * 24.0)
    assert validate_quarterly(replace(QUARTERLY, workers=(edge, full)), TODAY) == []


def test_duplicate_lines_are_named() -> None:
    value = replace(QUARTERLY, workers=(LINE, QUARTERLY.workers[1], LINE))
    assert pairs(validate_quarterly(value, TODAY)) == [("workers[2]", "DUPLICATE")]
    assert "workers[0]" in validate_quarterly(value, TODAY)[0].message
    # the same worker in two occupations with different starts is fine
    second = replace(LINE, period_start_date="2026-02-01", worked_days=20, worked_hours=100)
    assert validate_quarterly(replace(QUARTERLY, workers=(LINE, second)), TODAY) == []


# --------------------------------------------------------------------------------------------
# Many invalid fields: all reported, in field order


def test_every_invalid_field_of_an_immediate_declaration_is_reported() -> None:
    bad = ImmediateDeclaration(
        kind="RECRUITMENT", employer_enterprise_number="0403019216",
        worker_citizen_number="85073003327", joint_committee="9", worker_type="X",
        start_date="2026-02-30", end_date="nope", planned_weekly_hours=-3.0,
        employer_reference="r" * 100)
    assert pairs(validate_immediate(bad, TODAY)) == [
        ("employer_reference", "OUT_OF_RANGE"),
        ("employer_enterprise_number", "SUBJECT_NUMBER_INVALID"),
        ("worker_citizen_number", "SUBJECT_NUMBER_INVALID"),
        ("joint_committee", "VALUE_INVALID"),
        ("worker_type", "VALUE_INVALID"),
        ("start_date", "DATE_INVALID"),
        ("end_date", "DATE_INVALID"),
        ("planned_weekly_hours", "OUT_OF_RANGE"),
    ]
    assert pairs(validate_immediate(ImmediateDeclaration(), TODAY)) == [
        ("kind", "REQUIRED"), ("employer_enterprise_number", "REQUIRED"),
        ("worker_citizen_number", "REQUIRED"), ("start_date", "REQUIRED")]


def test_every_invalid_line_of_a_quarterly_declaration_is_reported() -> None:
    lines = tuple(
        replace(LINE, citizen_number=n, period_start_date=f"2026-01-{i + 1:02d}")
        for i, n in enumerate([WORKER, "85073003327", WORKER2, "1", WORKER3, "85073003328x"]))
    value = replace(QUARTERLY, quarter=9, workers=lines)
    assert pairs(validate_quarterly(value, TODAY)) == [
        ("quarter", "OUT_OF_RANGE"),
        ("workers[1].citizen_number", "SUBJECT_NUMBER_INVALID"),
        ("workers[3].citizen_number", "SUBJECT_NUMBER_INVALID"),
        ("workers[5].citizen_number", "SUBJECT_NUMBER_INVALID"),
    ]


def test_every_invalid_field_of_a_social_risk_declaration_is_reported() -> None:
    bad = SocialRiskDeclaration(risk="MATERNITY", event_date="2030-01-01",
                                monthly_reference_salary_cents=-1, contract_weekly_hours=-1)
    assert pairs(validate_social_risk(bad, TODAY)) == [
        ("employer_enterprise_number", "REQUIRED"), ("worker_citizen_number", "REQUIRED"),
        ("joint_committee", "REQUIRED"), ("event_date", "OUT_OF_RANGE"),
        ("last_worked_date", "REQUIRED"), ("monthly_reference_salary_cents", "OUT_OF_RANGE"),
        ("contract_weekly_hours", "OUT_OF_RANGE")]


def test_messages_never_repeat_a_citizen_number() -> None:
    bad = replace(QUARTERLY, workers=(replace(LINE, citizen_number="85073003327"), LINE, LINE))
    errors = (validate_quarterly(bad, TODAY)
              + validate_immediate(replace(RECRUITMENT, worker_citizen_number="85073003327"),
                                   TODAY, subject=WORKER)
              + validate_immediate(RECRUITMENT, TODAY, subject=WORKER2))
    assert pairs(errors)[1:4] == [("workers[2]", "DUPLICATE"),
                                  ("worker_citizen_number", "SUBJECT_NUMBER_INVALID"),
                                  ("worker_citizen_number", "SUBJECT_MISMATCH")]
    assert len(errors) == 5
    for e in errors:
        assert "8507300332" not in str(e) and "1707300338" not in str(e)


def test_subject_must_match_the_payload() -> None:
    assert validate_immediate(RECRUITMENT, TODAY, subject=WORKER) == []
    assert pairs(validate_immediate(RECRUITMENT, TODAY, subject=WORKER2)) == [
        ("worker_citizen_number", "SUBJECT_MISMATCH")]
    assert pairs(validate_social_risk(RISK, TODAY, subject=WORKER2)) == [
        ("worker_citizen_number", "SUBJECT_MISMATCH")]
    assert validate_quarterly(QUARTERLY, TODAY, subject=EMPLOYER) == []
    assert pairs(validate_quarterly(QUARTERLY, TODAY, subject=CONTRIBUTIONS)) == [
        ("employer_enterprise_number", "SUBJECT_MISMATCH")]


# --------------------------------------------------------------------------------------------
# The mutation and the catalogue


def test_recruitment_emits_a_started_mutation() -> None:
    m = employment_mutation_for(replace(RECRUITMENT, end_date="2026-12-31"), "ticket-1")
    assert m == replace(MUTATION, end_date="2026-12-31", source_declaration_id="ticket-1")
    assert validate_employment_mutation(m, TODAY, subject=WORKER) == []


def test_discharge_emits_an_ended_mutation() -> None:
    m = employment_mutation_for(DISCHARGE, "ticket-2")
    assert (m.event, m.event_date, m.start_date, m.end_date) == (
        "ENDED", "2026-06-30", "2019-03-01", "2026-06-30")
    assert (m.worker_citizen_number, m.employer_enterprise_number) == (WORKER, EMPLOYER)
    assert validate_employment_mutation(m, TODAY) == []


def test_no_mutation_without_a_kind_or_an_id() -> None:
    with pytest.raises(ValueError, match="kind"):
        employment_mutation_for(replace(RECRUITMENT, kind=""), "t")
    with pytest.raises(ValueError, match="declaration_id"):
        employment_mutation_for(RECRUITMENT, "")


def test_catalogue() -> None:
    services = {s.id: s for s in catalogue(CONTRIBUTIONS)}
    assert set(services) == {d.IMMEDIATE, d.QUARTERLY, d.SOCIAL_RISK, d.MUTATION_EMPLOYMENT}
    for sid in (d.IMMEDIATE, d.QUARTERLY, d.SOCIAL_RISK):
        s = services[sid]
        assert (s.kind, s.routing, s.provider) == ("declaration", "fixed", CONTRIBUTIONS)
    assert services[d.QUARTERLY].subject_type == "enterprise"
    assert services[d.IMMEDIATE].subject_type == "citizen"
    m = services[d.MUTATION_EMPLOYMENT]
    assert (m.kind, m.routing, m.subject_type, m.provider) == ("mutation", "fan_out", "citizen", "")
    assert set(wire.MEDIA_TYPES) == set(services)
    for bad in ("0403019216", "0566.988.259", ""):
        with pytest.raises(ValueError, match="enterprise number"):
            catalogue(bad)


# --------------------------------------------------------------------------------------------
# Wire: round trips and the sending node's check


@pytest.mark.parametrize("value", [
    RECRUITMENT, DISCHARGE, QUARTERLY, RISK, MUTATION,
    ImmediateDeclaration(), QuarterlyDeclaration(), SocialRiskDeclaration(), EmploymentMutation(),
], ids=lambda v: type(v).__name__)
def test_round_trip(value: d.Payload) -> None:
    data, media_type = wire.encode_payload(value)
    service = {v: k for k, v in wire.MEDIA_TYPES.items()}[media_type]
    assert wire.decode_payload(service, media_type, data) == value


def test_enumerations_map_to_proto_names() -> None:
    m = wire.immediate_to_proto(replace(RECRUITMENT, worker_type="STUDENT"))
    assert (m.kind, m.worker_type) == (pb.IMMEDIATE_KIND_RECRUITMENT, pb.WORKER_TYPE_STUDENT)
    assert wire.social_risk_to_proto(RISK).risk == pb.SOCIAL_RISK_INCAPACITY
    assert wire.employment_mutation_to_proto(MUTATION).event == pb.EMPLOYMENT_EVENT_STARTED
    assert wire.immediate_to_proto(ImmediateDeclaration()).kind == pb.IMMEDIATE_KIND_UNSPECIFIED
    with pytest.raises(ValueError, match="RECRUITMENT"):
        wire.immediate_to_proto(replace(RECRUITMENT, kind="HIRE"))
    assert wire.MEDIA_TYPE_IMMEDIATE == (
        "application/x-protobuf; proto=crossroads.services.v1.ImmediateDeclaration")


def test_validate_payload_reports_fields_of_the_decoded_message() -> None:
    data = wire.encode_immediate(replace(RECRUITMENT, worker_citizen_number="85073003327",
                                         start_date="2026-02-30"))
    errors = wire.validate_payload(d.IMMEDIATE, wire.MEDIA_TYPE_IMMEDIATE, data, TODAY)
    assert pairs(errors) == [("worker_citizen_number", "SUBJECT_NUMBER_INVALID"),
                             ("start_date", "DATE_INVALID")]
    ok = wire.encode_quarterly(QUARTERLY)
    assert wire.validate_payload(d.QUARTERLY, wire.MEDIA_TYPE_QUARTERLY, ok, TODAY) == []
    assert pairs(wire.validate_payload(d.QUARTERLY, wire.MEDIA_TYPE_QUARTERLY, ok, TODAY,
                                       subject=WORKER)) == [
        ("employer_enterprise_number", "SUBJECT_MISMATCH")]


def test_an_unknown_enumeration_number_is_named() -> None:
    data = pb.ImmediateDeclaration(kind=7, worker_type=42).SerializeToString()
    value = wire.decode_payload(d.IMMEDIATE, wire.MEDIA_TYPE_IMMEDIATE, data)
    assert isinstance(value, ImmediateDeclaration)
    assert (value.kind, value.worker_type) == ("7", "42")
    assert wire.encode_payload(value)[0] == data  # kept as it came
    errors = wire.validate_payload(d.IMMEDIATE, wire.MEDIA_TYPE_IMMEDIATE, data, TODAY)
    assert ("kind", "VALUE_INVALID") in pairs(errors)
    assert ("worker_type", "VALUE_INVALID") in pairs(errors)


@pytest.mark.parametrize(("service", "media_type", "data", "expected"), [
    (d.IMMEDIATE, wire.MEDIA_TYPE_IMMEDIATE, b"\xff\xff\xff", ("payload", "PAYLOAD_UNDECODABLE")),
    (d.IMMEDIATE, wire.MEDIA_TYPE_IMMEDIATE, wire.encode_quarterly(QUARTERLY),
     ("payload", "PAYLOAD_UNDECODABLE")),  # another message: unknown fields
    (d.SOCIAL_RISK, wire.MEDIA_TYPE_SOCIAL_RISK, b"\x12\x02\xff\xfe",
     ("payload", "PAYLOAD_UNDECODABLE")),  # field 2 as bytes: wrong wire type
    (d.QUARTERLY, "application/json", b"{}", ("payload.media_type", "MEDIA_TYPE_UNSUPPORTED")),
    (d.QUARTERLY, wire.MEDIA_TYPE_IMMEDIATE, wire.encode_quarterly(QUARTERLY),
     ("payload.media_type", "MEDIA_TYPE_UNSUPPORTED")),
    (d.QUARTERLY, "", wire.encode_quarterly(QUARTERLY),
     ("payload.media_type", "MEDIA_TYPE_UNSUPPORTED")),
])
def test_an_undecodable_payload_is_one_error(service: str, media_type: str, data: bytes,
                                             expected: tuple[str, str]) -> None:
    assert pairs(wire.validate_payload(service, media_type, data, TODAY)) == [expected]
    with pytest.raises(wire.PayloadError) as info:
        wire.decode_payload(service, media_type, data)
    assert (info.value.error.path, info.value.error.code) == expected


def test_media_type_spelling_is_tolerated() -> None:
    data = wire.encode_immediate(RECRUITMENT)
    for spelling in ("application/x-protobuf;proto=crossroads.services.v1.ImmediateDeclaration",
                     "Application/X-Protobuf ;  Proto = crossroads.services.v1.ImmediateDeclaration"):
        assert wire.validate_payload(d.IMMEDIATE, spelling, data, TODAY) == []
    lower = "application/x-protobuf; proto=crossroads.services.v1.immediatedeclaration"
    assert wire.validate_payload(d.IMMEDIATE, lower, data, TODAY) != []


def test_services_outside_the_catalogue_are_not_judged() -> None:
    assert wire.validate_payload("demo.message", "text/plain", b"\xff", TODAY) == []
    assert wire.media_type_for("demo.message") is None
    with pytest.raises(KeyError):
        wire.decode_payload("demo.message", "text/plain", b"")


def test_an_empty_payload_decodes_to_an_empty_declaration() -> None:
    errors = wire.validate_payload(d.SOCIAL_RISK, wire.MEDIA_TYPE_SOCIAL_RISK, b"", TODAY)
    assert ("risk", "REQUIRED") in pairs(errors)


# --------------------------------------------------------------------------------------------
# Properties: generated valid declarations validate clean and survive the wire


@st.composite
def citizen_numbers(draw: st.DrawFn) -> str:
    yy, mm, dd = draw(st.integers(30, 99)), draw(st.integers(1, 12)), draw(st.integers(1, 28))
    first9 = f"{yy:02d}{mm:02d}{dd:02d}{draw(st.integers(1, 998)):03d}"
    return first9 + citizen_check_digits(first9, born_2000s=False)


@st.composite
def enterprise_numbers(draw: st.DrawFn) -> str:
    first8 = f"{draw(st.integers(0, 19_999_999)):08d}"
    return first8 + enterprise_check_digits(first8)


joint_committees = st.from_regex(r"[1-3][0-9]{2}(\.[0-9]{2}){0,2}", fullmatch=True)
hours = st.integers(0, 24 * 4).map(lambda quarters: quarters / 4)  # per day, in 15 minutes


@st.composite
def quarterly_declarations(draw: st.DrawFn) -> QuarterlyDeclaration:
    year = draw(st.integers(TODAY.year - 10, TODAY.year))
    last_quarter = 4 if year < TODAY.year else (TODAY.month - 1) // 3 + 1
    quarter = draw(st.integers(1, last_quarter))
    first, last = quarter_bounds(year, quarter)
    span = (last - first).days
    lines = []
    seen: set[tuple[str, str]] = set()
    for _ in range(draw(st.integers(1, 8))):
        start = first + timedelta(days=draw(st.integers(0, span)))
        end = draw(st.none() | st.integers(0, (last - start).days).map(
            lambda n, s=start: s + timedelta(days=n)))
        days = draw(st.integers(0, ((end or last) - start).days + 1))
        line = QuarterlyWorkerLine(
            citizen_number=draw(citizen_numbers()), joint_committee=draw(joint_committees),
            period_start_date=start.isoformat(),
            period_end_date=end.isoformat() if end else "",
            gross_salary_cents=draw(st.integers(0, 10**10)), worked_days=days,
            worked_hours=sum(draw(st.lists(hours, min_size=days, max_size=days))))
        if (line.citizen_number, line.period_start_date) not in seen:
            seen.add((line.citizen_number, line.period_start_date))
            lines.append(line)
    return QuarterlyDeclaration(
        employer_enterprise_number=draw(enterprise_numbers()), year=year, quarter=quarter,
        workers=tuple(lines), employer_reference=draw(st.text(
            st.characters(codec="utf-8", exclude_categories=("C", "Z")), max_size=64)))


@PROPERTY
@given(quarterly_declarations())
def test_generated_quarterly_declarations_validate_clean(value: QuarterlyDeclaration) -> None:
    assert validate_quarterly(value, TODAY) == []
    data, media_type = wire.encode_payload(value)
    assert wire.decode_payload(d.QUARTERLY, media_type, data) == value
    assert wire.validate_payload(d.QUARTERLY, media_type, data, TODAY) == []


@PROPERTY
@given(quarterly_declarations(), st.data())
def test_a_broken_line_is_named_by_its_index(value: QuarterlyDeclaration,
                                             data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(value.workers) - 1))
    field, bad = data.draw(st.sampled_from([
        ("citizen_number", "00000000000"), ("joint_committee", "0"),
        ("period_start_date", "2026-02-29"), ("gross_salary_cents", -1),
        ("worked_hours", -1.0)]))
    workers = list(value.workers)
    workers[i] = replace(workers[i], **{field: bad})
    errors = validate_quarterly(replace(value, workers=tuple(workers)), TODAY)
    assert f"workers[{i}].{field}" in [e.path for e in errors]
    assert all(e.path.startswith(f"workers[{i}]") for e in errors)


@PROPERTY
@given(st.builds(
    ImmediateDeclaration,
    kind=st.sampled_from(["", "RECRUITMENT", "DISCHARGE", "5"]),
    employer_enterprise_number=st.text(max_size=12), worker_citizen_number=st.text(max_size=12),
    joint_committee=st.text(max_size=8), worker_type=st.sampled_from([w.value for w in d.WorkerType]),
    start_date=st.dates().map(str) | st.text(max_size=10),
    end_date=st.dates().map(str) | st.just(""),
    planned_weekly_hours=st.floats(allow_nan=False, width=64),
    employer_reference=st.text(max_size=70)))
def test_any_immediate_declaration_round_trips_and_validates(value: ImmediateDeclaration) -> None:
    errors = validate_immediate(value, TODAY)
    assert all(e.code in d.CODES for e in errors)
    fields = set(ImmediateDeclaration.__dataclass_fields__)
    assert {e.path for e in errors} <= fields  # every error names a real field
    assert not errors or value.kind != "RECRUITMENT" or value.worker_type != "" or any(
        e.path == "worker_type" for e in errors)
    data, media_type = wire.encode_payload(value)
    assert wire.decode_payload(d.IMMEDIATE, media_type, data) == value
