"""Employers' declarations: the sample service catalogue, payload values and their validation.

Three declaration events (DOMAIN.md, "Employers' declarations") plus the mutation that the
contributions institution emits for an accepted immediate declaration:

=========================== =============================== ============ ======================
service id                  payload                         subject      routing
=========================== =============================== ============ ======================
``declaration.immediate``   :class:`ImmediateDeclaration`   citizen      fixed: contributions
``declaration.quarterly``   :class:`QuarterlyDeclaration`   enterprise   fixed: contributions
``declaration.social_risk`` :class:`SocialRiskDeclaration`  citizen      fixed: contributions
``mutation.employment``     :class:`EmploymentMutation`     citizen      pushed to subscribers
=========================== =============================== ============ ======================

The values mirror the ``crossroads.services.v1`` messages field for field (same names), and
hold what was sent *as sent*: dates are ISO text, enumerations are their names without the
proto prefix (``"RECRUITMENT"``; ``""`` = unspecified), so that a bad value can be reported
instead of failing a conversion. ``node.wire.declarations`` converts to and from protobuf.

Validation (``validate_*``) reports **every** invalid field, each as a :class:`FieldError`
whose ``path`` names the field like the proto does (``workers[3].citizen_number``), with a
stable ``code`` (:data:`CODES`) and a message for people. Messages never repeat a citizen
number (they end up in logs). Validation is pure: the day of declaration is a parameter.
The rules are listed in docs/SERVICES.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum

from node.core.directory import Routing, Service, SubjectType
from node.core.directory import ServiceKind as K
from node.core.identifiers import citizen_number_problem, enterprise_number_problem

__all__ = [
    "CODES",
    "IMMEDIATE",
    "MUTATION_EMPLOYMENT",
    "QUARTERLY",
    "SOCIAL_RISK",
    "EmploymentEvent",
    "EmploymentMutation",
    "FieldError",
    "ImmediateDeclaration",
    "ImmediateKind",
    "QuarterlyDeclaration",
    "QuarterlyWorkerLine",
    "SocialRisk",
    "SocialRiskDeclaration",
    "WorkerType",
    "Payload",
    "catalogue",
    "employment_mutation_for",
    "paths",
    "quarter_bounds",
    "validate",
    "validate_employment_mutation",
    "validate_immediate",
    "validate_quarterly",
    "validate_social_risk",
]

IMMEDIATE = "declaration.immediate"
QUARTERLY = "declaration.quarterly"
SOCIAL_RISK = "declaration.social_risk"
MUTATION_EMPLOYMENT = "mutation.employment"

#: Error codes (stable; applications branch on them).
CODES = {
    "REQUIRED": "a required field is empty",
    "SUBJECT_NUMBER_INVALID": "a citizen or enterprise number fails its structure or check digits",
    "SUBJECT_MISMATCH": "a number differs from the envelope's subject number",
    "VALUE_INVALID": "not one of the allowed values or not in the expected format",
    "OUT_OF_RANGE": "a number, length or date outside its allowed range",
    "DATE_INVALID": "not a date written YYYY-MM-DD",
    "DATE_ORDER": "a date before the date it must follow",
    "DUPLICATE": "the same line twice",
    "PAYLOAD_UNDECODABLE": "the payload is not the declared message (wire layer)",
    "MEDIA_TYPE_UNSUPPORTED": "the payload's media type is not the service's (wire layer)",
}

# Plausibility limits (docs/SERVICES.md).
MAX_REFERENCE_CHARS = 64
MAX_WEEKLY_HOURS = 60.0
IMMEDIATE_WINDOW = timedelta(days=365)  # recruitment start / discharge end, both ways
QUARTERLY_YEARS_BACK = 10
SOCIAL_RISK_DAYS_BACK = 3 * 365
PLANNED_RISK_DAYS_AHEAD = 180


class ImmediateKind(StrEnum):
    UNSPECIFIED = ""
    RECRUITMENT = "RECRUITMENT"
    DISCHARGE = "DISCHARGE"


class WorkerType(StrEnum):
    UNSPECIFIED = ""
    OTHER = "OTHER"
    STUDENT = "STUDENT"
    FLEXI = "FLEXI"
    OCCASIONAL = "OCCASIONAL"
    SEASONAL = "SEASONAL"
    APPRENTICE = "APPRENTICE"


class SocialRisk(StrEnum):
    UNSPECIFIED = ""
    INCAPACITY = "INCAPACITY"
    UNEMPLOYMENT_TEMPORARY = "UNEMPLOYMENT_TEMPORARY"
    UNEMPLOYMENT_FULL = "UNEMPLOYMENT_FULL"
    WORK_ACCIDENT = "WORK_ACCIDENT"
    OCCUPATIONAL_DISEASE = "OCCUPATIONAL_DISEASE"
    MATERNITY = "MATERNITY"
    PATERNITY = "PATERNITY"


class EmploymentEvent(StrEnum):
    UNSPECIFIED = ""
    STARTED = "STARTED"
    ENDED = "ENDED"


#: Risks that are known in advance and may be declared before they begin.
PLANNED_RISKS = frozenset(
    {SocialRisk.UNEMPLOYMENT_TEMPORARY, SocialRisk.MATERNITY, SocialRisk.PATERNITY}
)
#: Risks whose declaration must give the last day worked.
LAST_WORKED_REQUIRED = frozenset(
    {SocialRisk.INCAPACITY, SocialRisk.UNEMPLOYMENT_FULL, SocialRisk.MATERNITY}
)


# --------------------------------------------------------------------------------------------
# Values (field names = proto field names; enumerations as text, "" = unspecified)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: ``path`` as in the proto (``workers[3].citizen_number``)."""

    path: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.code}]"


@dataclass(frozen=True, slots=True)
class ImmediateDeclaration:
    kind: str = ""
    employer_enterprise_number: str = ""
    worker_citizen_number: str = ""
    joint_committee: str = ""
    worker_type: str = ""
    start_date: str = ""
    end_date: str = ""
    planned_weekly_hours: float = 0.0
    employer_reference: str = ""


@dataclass(frozen=True, slots=True)
class QuarterlyWorkerLine:
    citizen_number: str = ""
    joint_committee: str = ""
    period_start_date: str = ""
    period_end_date: str = ""
    gross_salary_cents: int = 0
    worked_days: int = 0
    worked_hours: float = 0.0


@dataclass(frozen=True, slots=True)
class QuarterlyDeclaration:
    employer_enterprise_number: str = ""
    year: int = 0
    quarter: int = 0
    workers: tuple[QuarterlyWorkerLine, ...] = field(default_factory=tuple)
    employer_reference: str = ""


@dataclass(frozen=True, slots=True)
class SocialRiskDeclaration:
    risk: str = ""
    employer_enterprise_number: str = ""
    worker_citizen_number: str = ""
    joint_committee: str = ""
    event_date: str = ""
    last_worked_date: str = ""
    monthly_reference_salary_cents: int = 0
    contract_weekly_hours: float = 0.0
    employer_reference: str = ""


@dataclass(frozen=True, slots=True)
class EmploymentMutation:
    worker_citizen_number: str = ""
    employer_enterprise_number: str = ""
    event: str = ""
    event_date: str = ""
    start_date: str = ""
    end_date: str = ""
    joint_committee: str = ""
    worker_type: str = ""
    source_declaration_id: str = ""


Payload = ImmediateDeclaration | QuarterlyDeclaration | SocialRiskDeclaration | EmploymentMutation


# --------------------------------------------------------------------------------------------
# The catalogue


def catalogue(contributions_institution: str) -> list[Service]:
    """The sample services, the declarations going to ``contributions_institution`` (an
    enterprise number). Authorizations and subscriptions are the directory's business."""
    problem = enterprise_number_problem(contributions_institution)
    if problem is not None or not _digits_only(contributions_institution, 10):
        raise ValueError(f"contributions institution {contributions_institution!r} is not an "
                         f"enterprise number (10 digits): {problem or 'separators'}")
    ci = contributions_institution
    return [
        Service(IMMEDIATE, 1, K.DECLARATION, SubjectType.CITIZEN, Routing.FIXED, provider=ci),
        Service(QUARTERLY, 1, K.DECLARATION, SubjectType.ENTERPRISE, Routing.FIXED, provider=ci),
        Service(SOCIAL_RISK, 1, K.DECLARATION, SubjectType.CITIZEN, Routing.FIXED, provider=ci),
        Service(MUTATION_EMPLOYMENT, 1, K.MUTATION, SubjectType.CITIZEN, Routing.FAN_OUT),
    ]


def employment_mutation_for(d: ImmediateDeclaration, declaration_id: str) -> EmploymentMutation:
    """The mutation the contributions institution emits for an accepted immediate declaration
    (``declaration_id``: the hub ticket of its envelope). Send it as ``mutation.employment``
    with subject = the worker and period begin = ``event_date``."""
    if d.kind == ImmediateKind.RECRUITMENT:
        event, event_date = EmploymentEvent.STARTED, d.start_date
    elif d.kind == ImmediateKind.DISCHARGE:
        event, event_date = EmploymentEvent.ENDED, d.end_date
    else:
        raise ValueError(f"an immediate declaration of kind {d.kind!r} emits no mutation")
    if not declaration_id:
        raise ValueError("declaration_id is required")
    return EmploymentMutation(
        worker_citizen_number=d.worker_citizen_number,
        employer_enterprise_number=d.employer_enterprise_number,
        event=str(event),
        event_date=event_date,
        start_date=d.start_date,
        end_date=d.end_date,
        joint_committee=d.joint_committee,
        worker_type=d.worker_type,
        source_declaration_id=declaration_id,
    )


# --------------------------------------------------------------------------------------------
# Field checks: each appends to ``errors`` and returns the parsed value (or None)

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Joint committees: 100-399, optionally with sub-committees: "200", "330.01", "330.01.20".
_JOINT_COMMITTEE = re.compile(r"[1-3]\d{2}(?:\.\d{2}){0,2}")


def _digits_only(text: str, length: int) -> bool:
    return len(text) == length and text.isascii() and text.isdigit()


def _citizen(errors: list[FieldError], path: str, value: str, today: date) -> None:
    if not value:
        errors.append(FieldError(path, "REQUIRED", "a citizen number is required"))
        return
    if not _digits_only(value, 11):
        errors.append(FieldError(path, "SUBJECT_NUMBER_INVALID",
                                 "a citizen number is 11 digits, without separators"))
        return
    problem = citizen_number_problem(value, today)
    if problem is not None:
        errors.append(FieldError(path, "SUBJECT_NUMBER_INVALID",
                                 f"not a valid citizen number ({problem})"))


def _employer(errors: list[FieldError], path: str, value: str) -> None:
    if not value:
        errors.append(FieldError(path, "REQUIRED", "the employer's enterprise number is required"))
        return
    if not _digits_only(value, 10):
        errors.append(FieldError(path, "SUBJECT_NUMBER_INVALID",
                                 f"an enterprise number is 10 digits, without separators: "
                                 f"{value!r}"))
        return
    problem = enterprise_number_problem(value)
    if problem is not None:
        errors.append(FieldError(path, "SUBJECT_NUMBER_INVALID",
                                 f"{value!r} is not a valid enterprise number ({problem})"))
    elif value[0] not in "01":
        errors.append(FieldError(path, "SUBJECT_NUMBER_INVALID",
                                 f"{value!r} is an establishment unit number; an employer is "
                                 f"identified by its enterprise number (starting 0 or 1)"))


def _date(errors: list[FieldError], path: str, value: str, required: bool) -> date | None:
    if not value:
        if required:
            errors.append(FieldError(path, "REQUIRED", "a date (YYYY-MM-DD) is required"))
        return None
    if _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    errors.append(FieldError(path, "DATE_INVALID", f"{value!r} is not a date (YYYY-MM-DD)"))
    return None


def _window(errors: list[FieldError], path: str, day: date | None, earliest: date,
            latest: date) -> None:
    if day is None:
        return
    if day < earliest:
        errors.append(FieldError(path, "OUT_OF_RANGE", f"{day} is before {earliest}"))
    elif day > latest:
        errors.append(FieldError(path, "OUT_OF_RANGE", f"{day} is after {latest}"))


def _order(errors: list[FieldError], path: str, later: date | None, earlier: date | None,
           earlier_name: str) -> None:
    if later is not None and earlier is not None and later < earlier:
        errors.append(FieldError(path, "DATE_ORDER",
                                 f"{later} is before {earlier_name} ({earlier})"))


def _enum(errors: list[FieldError], path: str, value: str, allowed: type[StrEnum],
          required: bool) -> bool:
    """True when ``value`` is a specified member of ``allowed``."""
    names = [m.value for m in allowed if m.value]
    if not value:
        if required:
            errors.append(FieldError(path, "REQUIRED", f"one of {', '.join(names)} is required"))
        return False
    if value not in names:
        errors.append(FieldError(path, "VALUE_INVALID",
                                 f"{value!r} is not one of {', '.join(names)}"))
        return False
    return True


def _joint_committee(errors: list[FieldError], path: str, value: str, required: bool) -> None:
    if not value:
        if required:
            errors.append(FieldError(path, "REQUIRED", "the joint committee is required"))
        return
    if not _JOINT_COMMITTEE.fullmatch(value):
        errors.append(FieldError(path, "VALUE_INVALID",
                                 f"{value!r} is not a joint committee (e.g. 200, 330.01)"))


def _reference(errors: list[FieldError], path: str, value: str) -> None:
    if len(value) > MAX_REFERENCE_CHARS:
        errors.append(FieldError(path, "OUT_OF_RANGE",
                                 f"at most {MAX_REFERENCE_CHARS} characters, got {len(value)}"))
    elif not value.isprintable():
        errors.append(FieldError(path, "VALUE_INVALID", "control characters are not allowed"))


def _weekly_hours(errors: list[FieldError], path: str, value: float, required: bool) -> None:
    if value == 0:
        if required:
            errors.append(FieldError(path, "REQUIRED", "the hours per week are required"))
        return
    if not (math.isfinite(value) and 0 < value <= MAX_WEEKLY_HOURS):
        errors.append(FieldError(path, "OUT_OF_RANGE",
                                 f"hours per week must be more than 0 and at most "
                                 f"{MAX_WEEKLY_HOURS:g}, got {value!r}"))


def _non_negative(errors: list[FieldError], path: str, value: int) -> None:
    if value < 0:
        errors.append(FieldError(path, "OUT_OF_RANGE", f"must be >= 0, got {value}"))


def _subject(errors: list[FieldError], path: str, value: str, subject: str | None) -> None:
    if subject is not None and value and value != subject:
        errors.append(FieldError(path, "SUBJECT_MISMATCH",
                                 "differs from the envelope's subject number"))


# --------------------------------------------------------------------------------------------
# Validation


def validate_immediate(
    d: ImmediateDeclaration, today: date, subject: str | None = None
) -> list[FieldError]:
    """Every invalid field of an immediate declaration (empty list = valid). ``subject``: the
    envelope's subject number, which must be the worker's."""
    errors: list[FieldError] = []
    _reference(errors, "employer_reference", d.employer_reference)
    has_kind = _enum(errors, "kind", d.kind, ImmediateKind, required=True)
    recruitment = has_kind and d.kind == ImmediateKind.RECRUITMENT
    discharge = has_kind and d.kind == ImmediateKind.DISCHARGE
    _employer(errors, "employer_enterprise_number", d.employer_enterprise_number)
    _citizen(errors, "worker_citizen_number", d.worker_citizen_number, today)
    _subject(errors, "worker_citizen_number", d.worker_citizen_number, subject)
    _joint_committee(errors, "joint_committee", d.joint_committee, required=recruitment)
    has_type = _enum(errors, "worker_type", d.worker_type, WorkerType, required=recruitment)
    start = _date(errors, "start_date", d.start_date, required=True)
    end = _date(errors, "end_date", d.end_date, required=discharge)
    if recruitment:
        _window(errors, "start_date", start, today - IMMEDIATE_WINDOW, today + IMMEDIATE_WINDOW)
    if discharge:
        _window(errors, "end_date", end, today - IMMEDIATE_WINDOW, today + IMMEDIATE_WINDOW)
    _order(errors, "end_date", end, start, "start_date")
    student = has_type and d.worker_type == WorkerType.STUDENT
    _weekly_hours(errors, "planned_weekly_hours", d.planned_weekly_hours, required=student)
    return errors


def quarter_bounds(year: int, quarter: int) -> tuple[date, date]:
    """First and last day of a calendar quarter (1-4)."""
    first = date(year, 3 * quarter - 2, 1)
    after = date(year + 1, 1, 1) if quarter == 4 else date(year, 3 * quarter + 1, 1)
    return first, after - timedelta(days=1)


def _worker_line(errors: list[FieldError], path: str, line: QuarterlyWorkerLine,
                 bounds: tuple[date, date] | None, today: date) -> None:
    _citizen(errors, f"{path}.citizen_number", line.citizen_number, today)
    _joint_committee(errors, f"{path}.joint_committee", line.joint_committee, required=True)
    start = _date(errors, f"{path}.period_start_date", line.period_start_date, required=True)
    end = _date(errors, f"{path}.period_end_date", line.period_end_date, required=False)
    if bounds is not None:
        first, last = bounds
        for name, day in (("period_start_date", start), ("period_end_date", end)):
            if day is not None and not first <= day <= last:
                errors.append(FieldError(f"{path}.{name}", "OUT_OF_RANGE",
                                         f"{day} is outside the quarter ({first}..{last})"))
                if name == "period_start_date":
                    start = None  # no day count from a date outside the quarter
                else:
                    end = None
    _order(errors, f"{path}.period_end_date", end, start, "period_start_date")
    _non_negative(errors, f"{path}.gross_salary_cents", line.gross_salary_cents)
    if line.worked_days < 0:
        errors.append(FieldError(f"{path}.worked_days", "OUT_OF_RANGE",
                                 f"must be >= 0, got {line.worked_days}"))
    elif start is not None and bounds is not None and (end is None or end >= start):
        period_days = ((end or bounds[1]) - start).days + 1
        if line.worked_days > period_days:
            errors.append(FieldError(f"{path}.worked_days", "OUT_OF_RANGE",
                                     f"{line.worked_days} days worked in a period of "
                                     f"{period_days} days"))
    hours = line.worked_hours
    if not (math.isfinite(hours) and hours >= 0):
        errors.append(FieldError(f"{path}.worked_hours", "OUT_OF_RANGE",
                                 f"must be >= 0, got {hours!r}"))
    elif line.worked_days >= 0 and hours > 24 * line.worked_days:
        errors.append(FieldError(f"{path}.worked_hours", "OUT_OF_RANGE",
                                 f"{hours:g} hours in {line.worked_days} days worked "
                                 f"(at most 24 a day)"))


def validate_quarterly(
    d: QuarterlyDeclaration, today: date, subject: str | None = None
) -> list[FieldError]:
    """Every invalid field of a quarterly declaration (empty list = valid). ``subject``: the
    envelope's subject number, which must be the employer's."""
    errors: list[FieldError] = []
    _reference(errors, "employer_reference", d.employer_reference)
    _employer(errors, "employer_enterprise_number", d.employer_enterprise_number)
    _subject(errors, "employer_enterprise_number", d.employer_enterprise_number, subject)
    year_ok = quarter_ok = False
    if d.year == 0:
        errors.append(FieldError("year", "REQUIRED", "the year is required"))
    elif not today.year - QUARTERLY_YEARS_BACK <= d.year <= today.year:
        errors.append(FieldError("year", "OUT_OF_RANGE",
                                 f"{d.year} is not between {today.year - QUARTERLY_YEARS_BACK} "
                                 f"and {today.year}"))
    else:
        year_ok = True
    if d.quarter == 0:
        errors.append(FieldError("quarter", "REQUIRED", "the quarter (1-4) is required"))
    elif not 1 <= d.quarter <= 4:
        errors.append(FieldError("quarter", "OUT_OF_RANGE", f"{d.quarter} is not 1 to 4"))
    else:
        quarter_ok = True
    bounds = quarter_bounds(d.year, d.quarter) if year_ok and quarter_ok else None
    if bounds is not None and bounds[0] > today:
        errors.append(FieldError("quarter", "OUT_OF_RANGE",
                                 f"quarter {d.quarter} of {d.year} has not begun"))
    if not d.workers:
        errors.append(FieldError("workers", "REQUIRED", "at least one worker line is required"))
    seen: dict[tuple[str, str], int] = {}
    for i, line in enumerate(d.workers):
        path = f"workers[{i}]"
        _worker_line(errors, path, line, bounds, today)
        key = (line.citizen_number, line.period_start_date)
        if line.citizen_number and line.period_start_date:
            if key in seen:
                errors.append(FieldError(path, "DUPLICATE",
                                         f"same worker and period start as workers[{seen[key]}]"))
            else:
                seen[key] = i
    return errors


def validate_social_risk(
    d: SocialRiskDeclaration, today: date, subject: str | None = None
) -> list[FieldError]:
    """Every invalid field of a social-risk declaration (empty list = valid). ``subject``: the
    envelope's subject number, which must be the worker's."""
    errors: list[FieldError] = []
    _reference(errors, "employer_reference", d.employer_reference)
    has_risk = _enum(errors, "risk", d.risk, SocialRisk, required=True)
    _employer(errors, "employer_enterprise_number", d.employer_enterprise_number)
    _citizen(errors, "worker_citizen_number", d.worker_citizen_number, today)
    _subject(errors, "worker_citizen_number", d.worker_citizen_number, subject)
    _joint_committee(errors, "joint_committee", d.joint_committee, required=True)
    event = _date(errors, "event_date", d.event_date, required=True)
    ahead = PLANNED_RISK_DAYS_AHEAD if has_risk and d.risk in PLANNED_RISKS else 0
    _window(errors, "event_date", event, today - timedelta(days=SOCIAL_RISK_DAYS_BACK),
            today + timedelta(days=ahead))
    last = _date(errors, "last_worked_date", d.last_worked_date,
                 required=has_risk and d.risk in LAST_WORKED_REQUIRED)
    if last is not None and event is not None and last > event:
        errors.append(FieldError("last_worked_date", "DATE_ORDER",
                                 f"{last} is after event_date ({event})"))
    if d.monthly_reference_salary_cents == 0:
        errors.append(FieldError("monthly_reference_salary_cents", "REQUIRED",
                                 "the monthly reference salary is required"))
    else:
        _non_negative(errors, "monthly_reference_salary_cents", d.monthly_reference_salary_cents)
    _weekly_hours(errors, "contract_weekly_hours", d.contract_weekly_hours, required=False)
    return errors


def validate_employment_mutation(
    m: EmploymentMutation, today: date, subject: str | None = None
) -> list[FieldError]:
    """Every invalid field of an employment mutation (empty list = valid)."""
    errors: list[FieldError] = []
    _citizen(errors, "worker_citizen_number", m.worker_citizen_number, today)
    _subject(errors, "worker_citizen_number", m.worker_citizen_number, subject)
    _employer(errors, "employer_enterprise_number", m.employer_enterprise_number)
    has_event = _enum(errors, "event", m.event, EmploymentEvent, required=True)
    started = has_event and m.event == EmploymentEvent.STARTED
    ended = has_event and m.event == EmploymentEvent.ENDED
    event = _date(errors, "event_date", m.event_date, required=True)
    start = _date(errors, "start_date", m.start_date, required=True)
    end = _date(errors, "end_date", m.end_date, required=ended)
    _order(errors, "end_date", end, start, "start_date")
    if event is not None:
        expected, name = (start, "start_date") if started else (end, "end_date")
        if has_event and expected is not None and event != expected:
            errors.append(FieldError("event_date", "VALUE_INVALID",
                                     f"{event} must equal {name} ({expected}) for {m.event}"))
    _joint_committee(errors, "joint_committee", m.joint_committee, required=started)
    _enum(errors, "worker_type", m.worker_type, WorkerType, required=started)
    if not m.source_declaration_id:
        errors.append(FieldError("source_declaration_id", "REQUIRED",
                                 "the source declaration id is required"))
    return errors


_VALIDATORS: dict[type, Callable[..., list[FieldError]]] = {
    ImmediateDeclaration: validate_immediate,
    QuarterlyDeclaration: validate_quarterly,
    SocialRiskDeclaration: validate_social_risk,
    EmploymentMutation: validate_employment_mutation,
}


def validate(value: Payload, today: date, subject: str | None = None) -> list[FieldError]:
    """Dispatch to the ``validate_*`` function for ``value``'s type."""
    return _VALIDATORS[type(value)](value, today, subject)


def paths(errors: Sequence[FieldError]) -> list[str]:
    """The paths of ``errors``, in order (for tests and summaries)."""
    return [e.path for e in errors]
