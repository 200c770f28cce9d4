"""Declaration payloads on the wire: ``crossroads.services.v1`` messages <-> node.core values.

An envelope of a declaration service (``node.core.declarations.catalogue``) carries one
serialized message in ``payload.data`` with ``payload.media_type`` one of :data:`MEDIA_TYPES`
(``application/x-protobuf; proto=crossroads.services.v1.ImmediateDeclaration``, ...).

:func:`validate_payload` is the sending node's check (nothing invalid leaves the node): it
decodes the payload and returns every invalid field as a :class:`FieldError`. A payload that
cannot be decoded gives one error on ``payload``, a wrong media type one on
``payload.media_type``; a service that is not in the catalogue gives none (not ours to judge).

Decoding is strict: bytes that parse but carry fields the schema does not know are refused
(they could not be validated). Enumeration numbers the schema does not know are kept as their
number in text, so validation names the field (``VALUE_INVALID``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from google.protobuf.message import DecodeError, Message

from node.core import declarations as core
from node.core.declarations import FieldError
from node.wire.gen.crossroads.services.v1 import declarations_pb2 as pb

__all__ = [
    "CATALOGUE_SERVICES",
    "MEDIA_TYPES",
    "MEDIA_TYPE_EMPLOYMENT_MUTATION",
    "MEDIA_TYPE_IMMEDIATE",
    "MEDIA_TYPE_QUARTERLY",
    "MEDIA_TYPE_SOCIAL_RISK",
    "PayloadError",
    "decode_payload",
    "employment_mutation_from_proto",
    "employment_mutation_to_proto",
    "encode_employment_mutation",
    "encode_immediate",
    "encode_payload",
    "encode_quarterly",
    "encode_social_risk",
    "immediate_from_proto",
    "immediate_to_proto",
    "media_type_for",
    "quarterly_from_proto",
    "quarterly_to_proto",
    "social_risk_from_proto",
    "social_risk_to_proto",
    "validate_payload",
]


def _media_type(message: type[Message]) -> str:
    return f"application/x-protobuf; proto={message.DESCRIPTOR.full_name}"


MEDIA_TYPE_IMMEDIATE = _media_type(pb.ImmediateDeclaration)
MEDIA_TYPE_QUARTERLY = _media_type(pb.QuarterlyDeclaration)
MEDIA_TYPE_SOCIAL_RISK = _media_type(pb.SocialRiskDeclaration)
MEDIA_TYPE_EMPLOYMENT_MUTATION = _media_type(pb.EmploymentMutation)

#: Service id -> the media type of its payload.
MEDIA_TYPES: Mapping[str, str] = {
    core.IMMEDIATE: MEDIA_TYPE_IMMEDIATE,
    core.QUARTERLY: MEDIA_TYPE_QUARTERLY,
    core.SOCIAL_RISK: MEDIA_TYPE_SOCIAL_RISK,
    core.MUTATION_EMPLOYMENT: MEDIA_TYPE_EMPLOYMENT_MUTATION,
}


class PayloadError(ValueError):
    """A payload that cannot be decoded for its service; ``error`` says which field."""

    def __init__(self, error: FieldError) -> None:
        self.error = error
        super().__init__(str(error))


# --------------------------------------------------------------------------------------------
# Enumerations: proto numbers <-> core names (proto prefix stripped; 0 <-> "")


class _Enum:
    def __init__(self, wrapper: Any, prefix: str) -> None:
        self.to_name: dict[int, str] = {}
        for name, number in wrapper.items():
            self.to_name[number] = "" if number == 0 else name.removeprefix(prefix)
        self.to_number = {v: k for k, v in self.to_name.items()}

    def name(self, number: int) -> str:
        """The core name; an unknown number is kept as its digits (validation refuses it)."""
        return self.to_name.get(number, str(number))

    def number(self, name: str) -> int:
        if name in self.to_number:
            return self.to_number[name]
        if name.removeprefix("-").isdigit():  # an unknown number kept by name()
            return int(name)
        raise ValueError(f"{name!r} is not one of {', '.join(n for n in self.to_number if n)}")


_KIND = _Enum(pb.ImmediateKind, "IMMEDIATE_KIND_")
_WORKER_TYPE = _Enum(pb.WorkerType, "WORKER_TYPE_")
_RISK = _Enum(pb.SocialRisk, "SOCIAL_RISK_")
_EVENT = _Enum(pb.EmploymentEvent, "EMPLOYMENT_EVENT_")


# --------------------------------------------------------------------------------------------
# Converters


def immediate_to_proto(d: core.ImmediateDeclaration) -> pb.ImmediateDeclaration:
    return pb.ImmediateDeclaration(
        employer_reference=d.employer_reference, kind=_KIND.number(d.kind),
        employer_enterprise_number=d.employer_enterprise_number,
        worker_citizen_number=d.worker_citizen_number, joint_committee=d.joint_committee,
        worker_type=_WORKER_TYPE.number(d.worker_type), start_date=d.start_date,
        end_date=d.end_date, planned_weekly_hours=d.planned_weekly_hours)


def immediate_from_proto(m: pb.ImmediateDeclaration) -> core.ImmediateDeclaration:
    return core.ImmediateDeclaration(
        employer_reference=m.employer_reference, kind=_KIND.name(m.kind),
        employer_enterprise_number=m.employer_enterprise_number,
        worker_citizen_number=m.worker_citizen_number, joint_committee=m.joint_committee,
        worker_type=_WORKER_TYPE.name(m.worker_type), start_date=m.start_date,
        end_date=m.end_date, planned_weekly_hours=m.planned_weekly_hours)


def _line_to_proto(line: core.QuarterlyWorkerLine) -> pb.QuarterlyWorkerLine:
    return pb.QuarterlyWorkerLine(
        citizen_number=line.citizen_number, joint_committee=line.joint_committee,
        period_start_date=line.period_start_date, period_end_date=line.period_end_date,
        gross_salary_cents=line.gross_salary_cents, worked_days=line.worked_days,
        worked_hours=line.worked_hours)


def _line_from_proto(m: pb.QuarterlyWorkerLine) -> core.QuarterlyWorkerLine:
    return core.QuarterlyWorkerLine(
        citizen_number=m.citizen_number, joint_committee=m.joint_committee,
        period_start_date=m.period_start_date, period_end_date=m.period_end_date,
        gross_salary_cents=m.gross_salary_cents, worked_days=m.worked_days,
        worked_hours=m.worked_hours)


def quarterly_to_proto(d: core.QuarterlyDeclaration) -> pb.QuarterlyDeclaration:
    return pb.QuarterlyDeclaration(
        employer_reference=d.employer_reference,
        employer_enterprise_number=d.employer_enterprise_number, year=d.year,
        quarter=d.quarter, workers=[_line_to_proto(line) for line in d.workers])


def quarterly_from_proto(m: pb.QuarterlyDeclaration) -> core.QuarterlyDeclaration:
    return core.QuarterlyDeclaration(
        employer_reference=m.employer_reference,
        employer_enterprise_number=m.employer_enterprise_number, year=m.year,
        quarter=m.quarter, workers=tuple(_line_from_proto(line) for line in m.workers))


def social_risk_to_proto(d: core.SocialRiskDeclaration) -> pb.SocialRiskDeclaration:
    return pb.SocialRiskDeclaration(
        employer_reference=d.employer_reference, risk=_RISK.number(d.risk),
        employer_enterprise_number=d.employer_enterprise_number,
        worker_citizen_number=d.worker_citizen_number, joint_committee=d.joint_committee,
        event_date=d.event_date, last_worked_date=d.last_worked_date,
        monthly_reference_salary_cents=d.monthly_reference_salary_cents,
        contract_weekly_hours=d.contract_weekly_hours)


def social_risk_from_proto(m: pb.SocialRiskDeclaration) -> core.SocialRiskDeclaration:
    return core.SocialRiskDeclaration(
        employer_reference=m.employer_reference, risk=_RISK.name(m.risk),
        employer_enterprise_number=m.employer_enterprise_number,
        worker_citizen_number=m.worker_citizen_number, joint_committee=m.joint_committee,
        event_date=m.event_date, last_worked_date=m.last_worked_date,
        monthly_reference_salary_cents=m.monthly_reference_salary_cents,
        contract_weekly_hours=m.contract_weekly_hours)


def employment_mutation_to_proto(d: core.EmploymentMutation) -> pb.EmploymentMutation:
    return pb.EmploymentMutation(
        worker_citizen_number=d.worker_citizen_number,
        employer_enterprise_number=d.employer_enterprise_number, event=_EVENT.number(d.event),
        event_date=d.event_date, start_date=d.start_date, end_date=d.end_date,
        joint_committee=d.joint_committee, worker_type=_WORKER_TYPE.number(d.worker_type),
        source_declaration_id=d.source_declaration_id)


def employment_mutation_from_proto(m: pb.EmploymentMutation) -> core.EmploymentMutation:
    return core.EmploymentMutation(
        worker_citizen_number=m.worker_citizen_number,
        employer_enterprise_number=m.employer_enterprise_number, event=_EVENT.name(m.event),
        event_date=m.event_date, start_date=m.start_date, end_date=m.end_date,
        joint_committee=m.joint_committee, worker_type=_WORKER_TYPE.name(m.worker_type),
        source_declaration_id=m.source_declaration_id)


def encode_immediate(d: core.ImmediateDeclaration) -> bytes:
    return immediate_to_proto(d).SerializeToString()


def encode_quarterly(d: core.QuarterlyDeclaration) -> bytes:
    return quarterly_to_proto(d).SerializeToString()


def encode_social_risk(d: core.SocialRiskDeclaration) -> bytes:
    return social_risk_to_proto(d).SerializeToString()


def encode_employment_mutation(d: core.EmploymentMutation) -> bytes:
    return employment_mutation_to_proto(d).SerializeToString()


_CODECS: dict[str, tuple[type[Message], Callable[[Any], core.Payload], type]] = {
    core.IMMEDIATE: (pb.ImmediateDeclaration, immediate_from_proto, core.ImmediateDeclaration),
    core.QUARTERLY: (pb.QuarterlyDeclaration, quarterly_from_proto, core.QuarterlyDeclaration),
    core.SOCIAL_RISK: (pb.SocialRiskDeclaration, social_risk_from_proto,
                       core.SocialRiskDeclaration),
    core.MUTATION_EMPLOYMENT: (pb.EmploymentMutation, employment_mutation_from_proto,
                               core.EmploymentMutation),
}
#: The services whose payloads have a schema here (validated at the sending node).
CATALOGUE_SERVICES = frozenset(_CODECS)
_SERVICE_OF: dict[type, str] = {core_type: sid for sid, (_, _, core_type) in _CODECS.items()}
_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    core.ImmediateDeclaration: encode_immediate,
    core.QuarterlyDeclaration: encode_quarterly,
    core.SocialRiskDeclaration: encode_social_risk,
    core.EmploymentMutation: encode_employment_mutation,
}


def encode_payload(value: core.Payload) -> tuple[bytes, str]:
    """``(data, media_type)`` for an envelope payload."""
    return _ENCODERS[type(value)](value), MEDIA_TYPES[_SERVICE_OF[type(value)]]


def media_type_for(service_id: str) -> str | None:
    """The payload media type of a catalogue service, or None."""
    return MEDIA_TYPES.get(service_id)


def _normalize(media_type: str) -> str:
    """Case-insensitive type/subtype and parameter names, spaces around ``;`` and ``=``
    ignored; parameter values kept as written."""
    parts = [p.strip() for p in media_type.split(";")]
    params = []
    for p in parts[1:]:
        name, _, value = p.partition("=")
        params.append(f"{name.strip().lower()}={value.strip()}")
    return "; ".join([parts[0].lower(), *params])


def decode_payload(service_id: str, media_type: str, data: bytes) -> core.Payload:
    """The core value of a catalogue service's payload. Raises ``KeyError`` for a service not
    in the catalogue and :class:`PayloadError` for a wrong media type or undecodable bytes."""
    message_type, from_proto, _ = _CODECS[service_id]
    expected = MEDIA_TYPES[service_id]
    if _normalize(media_type) != _normalize(expected):
        raise PayloadError(FieldError(
            "payload.media_type", "MEDIA_TYPE_UNSUPPORTED",
            f"{service_id} carries {expected!r}, got {media_type!r}"))
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise PayloadError(FieldError(
            "payload", "PAYLOAD_UNDECODABLE",
            f"not a {message_type.DESCRIPTOR.full_name}: {exc}")) from None
    size = message.ByteSize()
    message.DiscardUnknownFields()
    if message.ByteSize() != size:
        raise PayloadError(FieldError(
            "payload", "PAYLOAD_UNDECODABLE",
            f"not a {message_type.DESCRIPTOR.full_name}: it has fields the schema does not "
            f"know"))
    return from_proto(message)


def validate_payload(
    service_id: str, media_type: str, data: bytes, today: date, subject: str | None = None
) -> list[FieldError]:
    """Every invalid field of the payload of a catalogue service (empty = valid, or not a
    catalogue service). ``subject``: the envelope's subject number; when given, the payload's
    worker (employer for the quarterly declaration) must be that number."""
    if service_id not in _CODECS:
        return []
    try:
        value = decode_payload(service_id, media_type, data)
    except PayloadError as exc:
        return [exc.error]
    return core.validate(value, today, subject)
