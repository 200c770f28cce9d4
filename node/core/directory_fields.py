"""The one definition of a directory entity's fields, for every codec of it.

An entity (:mod:`node.core.directory`) is written four ways: the hub's and nodes' stores (JSON
with short keys), the ``crossroads.v1`` directory messages, and the operator's JSON and CSV
files. They all name the same fields: :data:`FIELDS` lists each kind's fields in order, with
the name used by the files and the proto messages and the key used in the stores' JSON.

:func:`to_fields` turns an entity into plain values (dates as ISO text, ``""`` for an open
end or no begin; capacities as a sorted list; an authorization's ``sector`` None when it names
an institution), and :func:`from_fields` builds the entity back from such values, with the
entity's default for an empty enum or version field (a proto3 message says "not set" that
way) and the enums of :mod:`node.core.directory` for the values they know. :func:`from_fields`
does not validate: the file codec (:mod:`node.files.directory_import`) checks every field and
then :func:`node.core.directory.problem_of`, which also refuses an unknown enum value.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import date
from typing import Any, NamedTuple, TypeVar

from node.core import directory as d
from node.core.directory import Entity, Period, kind_of

__all__ = ["FIELDS", "Field", "date_text", "from_fields", "member_of", "parse_date", "to_fields"]


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

#: The fields that hold a period: (begin, end).
_PERIOD = {"authorization": ("valid_from", "valid_to"), "integration": ("begin_date", "end_date")}


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


def to_fields(entity: Entity) -> dict[str, Any]:
    """Field name -> plain value, every field of the entity's kind, in order."""
    kind = kind_of(entity)
    period = _PERIOD.get(kind)
    values: dict[str, Any] = {}
    for f in FIELDS[kind]:
        if period is not None and f.name in period:
            p: Period = entity.period  # type: ignore[union-attr]
            values[f.name] = date_text(p.begin if f.name == period[0] else p.end)
        else:
            value = getattr(entity, f.name)
            values[f.name] = sorted(value) if isinstance(value, frozenset) else value
    return values


_E = TypeVar("_E", bound=enum.StrEnum)


def member_of(kind: type[_E], value: str, default: _E) -> _E:
    """The enum member for ``value`` (``default`` when empty); an unknown value stays text,
    for :func:`node.core.directory.problem_of` to name."""
    if not value:
        return default
    return kind(value) if value in kind.__members__.values() else value  # type: ignore[return-value]


def from_fields(kind: str, v: Mapping[str, Any]) -> Entity:
    """The entity of ``kind`` with these field values (as :func:`to_fields` gives them)."""
    if kind == "institution":
        return d.Institution(
            v["enterprise_number"], v["sector"], v["name"], v["endpoint"], v["cert_fingerprint"],
            member_of(d.InstitutionStatus, v["status"], d.InstitutionStatus.ACTIVE))
    if kind == "service":
        return d.Service(
            v["id"], v["version"] or 1, member_of(d.ServiceKind, v["kind"], d.ServiceKind.CONSULTATION),
            member_of(d.SubjectType, v["subject_type"], d.SubjectType.CITIZEN),
            member_of(d.Routing, v["routing"], d.Routing.FIXED), v["provider"],
            v["integration_required"], v["min_phase"], frozenset(v["capacities"]))
    if kind == "authorization":
        return d.Authorization(
            v["id"], v["service_id"], v["institution"], v["sector"], v["legal_context"],
            frozenset(v["capacities"]), _period(v["valid_from"], v["valid_to"]))
    if kind == "integration":
        return d.Integration(v["subject"], v["institution"], v["capacity"], v["phase"],
                             _period(v["begin_date"], v["end_date"]))
    if kind == "replacement":
        return d.Replacement(v["old_number"], v["new_number"])
    if kind == "subscription":
        return d.Subscription(v["id"], v["institution"], v["service_id"],
                              frozenset(v["capacities"]), v["condition"])
    if kind == "revoked_certificate":
        return d.RevokedCertificate(v["serial"].lower(), v["institution"], v["reason"])
    raise ValueError(f"unknown kind {kind!r}")


def _period(begin: str, end: str) -> Period:
    return Period(parse_date(begin, date.min) or date.min, parse_date(end))
