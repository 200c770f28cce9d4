"""The one definition of a directory entity's fields, for every codec of it.

An entity (:mod:`node.core.directory`) is written four ways: the hub's and nodes' stores (JSON
with short keys), the ``crossroads.v1`` directory messages, and the operator's JSON and CSV
files. They all name the same fields: :data:`FIELDS` lists each kind's fields in order, with
the name used by the files and the proto messages and the key used in the stores' JSON.

:func:`to_fields` turns an entity into plain values (dates as ISO text, ``""`` for an open
end or no begin; capacities as a sorted list; an authorization's ``sector`` None when it names
an institution), and :func:`from_values` builds the entity back from such values, with the
entity's default for an empty enum or version field (a proto3 message says "not set" that
way) and the enums of :mod:`node.core.directory` for the values they know. :func:`from_values`
does not validate: the file codec (:mod:`node.files.directory_import`) checks every field and
then :func:`node.core.directory.problem_of`, which also refuses an unknown enum value.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, NamedTuple, TypeVar

from node.core import directory as d
from node.core.directory import Entity, Period

__all__ = ["FIELDS", "Field", "date_text", "from_values", "kind_and_fields", "member_of", "parse_date",
           "to_fields"]


class Field(NamedTuple):
    name: str  # in files (JSON keys, CSV columns) and in the proto message
    stored: str  # the key in the stores' JSON (short: there are millions of rows)


def _fields(*pairs: str) -> tuple[Field, ...]:
    return tuple(Field(name, stored) for name, stored in (p.split(":") for p in pairs))


#: Each kind's fields, in file-column order (kinds as :func:`node.core.directory.kind_of`).
FIELDS: dict[str, tuple[Field, ...]] = {
    "institution": _fields("enterprise_number:e", "sector:s", "name:n", "endpoint:ep",
                           "cert_fingerprint:fp", "status:st"),
    "service": _fields("id:id", "version:v", "kind:k", "subject_type:st", "routing:r",
                       "provider:p", "integration_required:ir", "min_phase:mp", "capacities:c"),
    "authorization": _fields("id:id", "service_id:svc", "institution:i", "sector:sec",
                             "legal_context:lc", "capacities:c", "valid_from:b", "valid_to:en"),
    "subscription": _fields("id:id", "institution:i", "service_id:svc", "capacities:c",
                            "condition:cond"),
    "integration": _fields("subject:sub", "institution:i", "capacity:c", "phase:ph",
                           "begin_date:b", "end_date:en"),
    "replacement": _fields("old_number:o", "new_number:n"),
    "revoked_certificate": _fields("serial:ser", "institution:i", "reason:r"),
}

def date_text(day: date | None) -> str:
    """A date as ISO text; ``""`` for an open end (None) or no begin (``date.min``)."""
    return "" if day is None or day == date.min else day.isoformat()


def parse_date(text: str, default: date | None = None) -> date | None:
    """ISO date, or ``default`` when empty. Raises ValueError with the bad text."""
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _institution(e: d.Institution) -> dict[str, Any]:
    return {"enterprise_number": e.enterprise_number, "sector": e.sector, "name": e.name,
            "endpoint": e.endpoint, "cert_fingerprint": e.cert_fingerprint, "status": e.status}


def _service(e: d.Service) -> dict[str, Any]:
    return {"id": e.id, "version": e.version, "kind": e.kind, "subject_type": e.subject_type,
            "routing": e.routing, "provider": e.provider,
            "integration_required": e.integration_required, "min_phase": e.min_phase,
            "capacities": sorted(e.capacities)}


def _authorization(e: d.Authorization) -> dict[str, Any]:
    return {"id": e.id, "service_id": e.service_id, "institution": e.institution,
            "sector": e.sector, "legal_context": e.legal_context,
            "capacities": sorted(e.capacities), "valid_from": date_text(e.period.begin),
            "valid_to": date_text(e.period.end)}


def _subscription(e: d.Subscription) -> dict[str, Any]:
    return {"id": e.id, "institution": e.institution, "service_id": e.service_id,
            "capacities": sorted(e.capacities), "condition": e.condition}


def _integration(e: d.Integration) -> dict[str, Any]:
    return {"subject": e.subject, "institution": e.institution, "capacity": e.capacity,
            "phase": e.phase, "begin_date": date_text(e.period.begin),
            "end_date": date_text(e.period.end)}


def _replacement(e: d.Replacement) -> dict[str, Any]:
    return {"old_number": e.old_number, "new_number": e.new_number}


def _revoked_certificate(e: d.RevokedCertificate) -> dict[str, Any]:
    return {"serial": e.serial, "institution": e.institution, "reason": e.reason}


# Entity class -> (kind, its fields as :data:`FIELDS` names them, in that order). Written out
# per kind: these run once per entity of a snapshot (a million integrations), and
# tests/unit/test_directory_codecs.py checks them against FIELDS.
_ENCODERS: dict[type, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    d.Institution: ("institution", _institution),
    d.Service: ("service", _service),
    d.Authorization: ("authorization", _authorization),
    d.Subscription: ("subscription", _subscription),
    d.Integration: ("integration", _integration),
    d.Replacement: ("replacement", _replacement),
    d.RevokedCertificate: ("revoked_certificate", _revoked_certificate),
}


def to_fields(entity: Entity) -> dict[str, Any]:
    """Field name -> plain value, every field of the entity's kind, in :data:`FIELDS` order."""
    return _ENCODERS[type(entity)][1](entity)


def kind_and_fields(entity: Entity) -> tuple[str, dict[str, Any]]:
    """The entity's kind (as :func:`node.core.directory.kind_of`) and :func:`to_fields`."""
    kind, encode = _ENCODERS[type(entity)]
    return kind, encode(entity)


_E = TypeVar("_E", bound=enum.StrEnum)


def member_of(kind: type[_E], value: str, default: _E) -> _E:
    """The enum member for ``value`` (``default`` when empty); an unknown value stays text,
    for :func:`node.core.directory.problem_of` to name."""
    if not value:
        return default
    return _MEMBERS[kind].get(value, value)  # type: ignore[arg-type, return-value]


_MEMBERS: dict[type[enum.StrEnum], dict[str, enum.StrEnum]] = {
    kind: {member.value: member for member in kind}
    for kind in (d.InstitutionStatus, d.ServiceKind, d.SubjectType, d.Routing)
}


def _institution_of(v: Sequence[Any]) -> Entity:
    number, sector, name, endpoint, fingerprint, status = v
    return d.Institution(number, sector, name, endpoint, fingerprint,
                         member_of(d.InstitutionStatus, status, d.InstitutionStatus.ACTIVE))


def _service_of(v: Sequence[Any]) -> Entity:
    id_, version, kind, subject_type, routing, provider, integration_required, min_phase, \
        capacities = v
    return d.Service(id_, version or 1, member_of(d.ServiceKind, kind, d.ServiceKind.CONSULTATION),
                     member_of(d.SubjectType, subject_type, d.SubjectType.CITIZEN),
                     member_of(d.Routing, routing, d.Routing.FIXED), provider,
                     integration_required, min_phase, frozenset(capacities))


def _authorization_of(v: Sequence[Any]) -> Entity:
    id_, service_id, institution, sector, legal_context, capacities, begin, end = v
    return d.Authorization(id_, service_id, institution, sector, legal_context,
                           frozenset(capacities), _period(begin, end))


def _subscription_of(v: Sequence[Any]) -> Entity:
    id_, institution, service_id, capacities, condition = v
    return d.Subscription(id_, institution, service_id, frozenset(capacities), condition)


def _integration_of(v: Sequence[Any]) -> Entity:
    subject, institution, capacity, phase, begin, end = v
    return d.Integration(subject, institution, capacity, phase, _period(begin, end))


def _replacement_of(v: Sequence[Any]) -> Entity:
    old_number, new_number = v
    return d.Replacement(old_number, new_number)


def _revoked_certificate_of(v: Sequence[Any]) -> Entity:
    serial, institution, reason = v
    return d.RevokedCertificate(serial.lower(), institution, reason)


_DECODERS: dict[str, Callable[[Sequence[Any]], Entity]] = {
    "institution": _institution_of,
    "service": _service_of,
    "authorization": _authorization_of,
    "subscription": _subscription_of,
    "integration": _integration_of,
    "replacement": _replacement_of,
    "revoked_certificate": _revoked_certificate_of,
}


def from_values(kind: str, values: Sequence[Any]) -> Entity:
    """The entity of ``kind`` with these field values, in :data:`FIELDS` order (as
    :func:`to_fields` gives them). ValueError for an unknown kind or a bad date."""
    decode = _DECODERS.get(kind)
    if decode is None:
        raise ValueError(f"unknown kind {kind!r}")
    return decode(values)


def _period(begin: str, end: str) -> Period:
    return Period(parse_date(begin, date.min) or date.min, parse_date(end))
