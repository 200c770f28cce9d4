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

from collections.abc import Mapping
from dataclasses import fields
from datetime import date
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from node.core import declarations as core
from node.core.declarations import FieldError
from node.wire.gen.crossroads.services.v1 import declarations_pb2 as pb

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_C = TypeVar("_C", bound="DataclassInstance")
_M = TypeVar("_M", bound=Message)

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
# Converters: a core value and its message have the same field names


class _Codec(Generic[_C, _M]):
    """``core_type`` <-> ``message_type``, field by field: enumeration fields through their
    :class:`_Enum`, repeated message fields (a tuple in the core value) through their own
    codec, the others as they are."""

    def __init__(self, core_type: type[_C], message_type: type[_M],
                 enums: Mapping[str, _Enum] | None = None,
                 nested: Mapping[str, _Codec[Any, Any]] | None = None) -> None:
        names = [f.name for f in fields(core_type)]
        if set(names) != set(message_type.DESCRIPTOR.fields_by_name):
            raise TypeError(f"{core_type.__name__} and {message_type.DESCRIPTOR.full_name}"
                            " do not have the same fields")
        self.core_type, self.message_type = core_type, message_type
        self.enums, self.nested = dict(enums or {}), dict(nested or {})
        self.plain = [n for n in names if n not in self.enums and n not in self.nested]

    def to_proto(self, value: _C) -> _M:
        kwargs: dict[str, Any] = {name: getattr(value, name) for name in self.plain}
        for name, enum in self.enums.items():
            kwargs[name] = enum.number(getattr(value, name))
        for name, codec in self.nested.items():
            kwargs[name] = [codec.to_proto(item) for item in getattr(value, name)]
        return self.message_type(**kwargs)

    def from_proto(self, message: _M) -> _C:
        kwargs: dict[str, Any] = {name: getattr(message, name) for name in self.plain}
        for name, enum in self.enums.items():
            kwargs[name] = enum.name(getattr(message, name))
        for name, codec in self.nested.items():
            kwargs[name] = tuple(codec.from_proto(item) for item in getattr(message, name))
        return self.core_type(**kwargs)

    def encode(self, value: _C) -> bytes:
        return self.to_proto(value).SerializeToString()


_IMMEDIATE: _Codec[core.ImmediateDeclaration, pb.ImmediateDeclaration] = _Codec(
    core.ImmediateDeclaration, pb.ImmediateDeclaration,
    enums={"kind": _KIND, "worker_type": _WORKER_TYPE})
_QUARTERLY: _Codec[core.QuarterlyDeclaration, pb.QuarterlyDeclaration] = _Codec(
    core.QuarterlyDeclaration, pb.QuarterlyDeclaration,
    nested={"workers": _Codec(core.QuarterlyWorkerLine, pb.QuarterlyWorkerLine)})
_SOCIAL_RISK: _Codec[core.SocialRiskDeclaration, pb.SocialRiskDeclaration] = _Codec(
    core.SocialRiskDeclaration, pb.SocialRiskDeclaration, enums={"risk": _RISK})
_EMPLOYMENT_MUTATION: _Codec[core.EmploymentMutation, pb.EmploymentMutation] = _Codec(
    core.EmploymentMutation, pb.EmploymentMutation,
    enums={"event": _EVENT, "worker_type": _WORKER_TYPE})

# The converters by name (docs/SERVICES.md): value -> message, message -> value, value -> bytes.
immediate_to_proto, immediate_from_proto, encode_immediate = (
    _IMMEDIATE.to_proto, _IMMEDIATE.from_proto, _IMMEDIATE.encode)
quarterly_to_proto, quarterly_from_proto, encode_quarterly = (
    _QUARTERLY.to_proto, _QUARTERLY.from_proto, _QUARTERLY.encode)
social_risk_to_proto, social_risk_from_proto, encode_social_risk = (
    _SOCIAL_RISK.to_proto, _SOCIAL_RISK.from_proto, _SOCIAL_RISK.encode)
(employment_mutation_to_proto, employment_mutation_from_proto,
 encode_employment_mutation) = (_EMPLOYMENT_MUTATION.to_proto, _EMPLOYMENT_MUTATION.from_proto,
                                _EMPLOYMENT_MUTATION.encode)

#: Service id -> the codec of its payload.
_CODECS: dict[str, _Codec[Any, Any]] = {
    core.IMMEDIATE: _IMMEDIATE,
    core.QUARTERLY: _QUARTERLY,
    core.SOCIAL_RISK: _SOCIAL_RISK,
    core.MUTATION_EMPLOYMENT: _EMPLOYMENT_MUTATION,
}
#: The services whose payloads have a schema here (validated at the sending node).
CATALOGUE_SERVICES = frozenset(_CODECS)
_SERVICE_OF: dict[type, str] = {codec.core_type: sid for sid, codec in _CODECS.items()}


def encode_payload(value: core.Payload) -> tuple[bytes, str]:
    """``(data, media_type)`` for an envelope payload."""
    service = _SERVICE_OF[type(value)]
    return _CODECS[service].encode(value), MEDIA_TYPES[service]


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
    codec = _CODECS[service_id]
    message_type = codec.message_type
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
    return codec.from_proto(message)


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
