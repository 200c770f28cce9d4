from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubjectType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBJECT_TYPE_UNSPECIFIED: _ClassVar[SubjectType]
    SUBJECT_TYPE_CITIZEN: _ClassVar[SubjectType]
    SUBJECT_TYPE_ENTERPRISE: _ClassVar[SubjectType]
    SUBJECT_TYPE_NONE: _ClassVar[SubjectType]

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    ACCEPTED: _ClassVar[Reason]
    DUPLICATE: _ClassVar[Reason]
    MALFORMED_ENVELOPE: _ClassVar[Reason]
    SENDER_MISMATCH: _ClassVar[Reason]
    UNKNOWN_SERVICE: _ClassVar[Reason]
    UNKNOWN_RECEIVER: _ClassVar[Reason]
    SUBJECT_NUMBER_INVALID: _ClassVar[Reason]
    PAYLOAD_TOO_LARGE: _ClassVar[Reason]
    PAYLOAD_DIGEST_MISMATCH: _ClassVar[Reason]
    QUOTA_EXCEEDED: _ClassVar[Reason]
    INVALID_FIELD: _ClassVar[Reason]
    NOT_AUTHORIZED: _ClassVar[Reason]
    NOT_INTEGRATED: _ClassVar[Reason]
    PHASE_TOO_LOW: _ClassVar[Reason]
    NO_RECEIVER: _ClassVar[Reason]
    SUBJECT_REPLACED: _ClassVar[Reason]
    TOO_MANY_IN_FLIGHT: _ClassVar[Reason]
    DUPLICATE_RECEIVER: _ClassVar[Reason]
    TOO_MANY_RECEIVERS: _ClassVar[Reason]
    UNDELIVERABLE: _ClassVar[Reason]
SUBJECT_TYPE_UNSPECIFIED: SubjectType
SUBJECT_TYPE_CITIZEN: SubjectType
SUBJECT_TYPE_ENTERPRISE: SubjectType
SUBJECT_TYPE_NONE: SubjectType
REASON_UNSPECIFIED: Reason
ACCEPTED: Reason
DUPLICATE: Reason
MALFORMED_ENVELOPE: Reason
SENDER_MISMATCH: Reason
UNKNOWN_SERVICE: Reason
UNKNOWN_RECEIVER: Reason
SUBJECT_NUMBER_INVALID: Reason
PAYLOAD_TOO_LARGE: Reason
PAYLOAD_DIGEST_MISMATCH: Reason
QUOTA_EXCEEDED: Reason
INVALID_FIELD: Reason
NOT_AUTHORIZED: Reason
NOT_INTEGRATED: Reason
PHASE_TOO_LOW: Reason
NO_RECEIVER: Reason
SUBJECT_REPLACED: Reason
TOO_MANY_IN_FLIGHT: Reason
DUPLICATE_RECEIVER: Reason
TOO_MANY_RECEIVERS: Reason
UNDELIVERABLE: Reason

class Subject(_message.Message):
    __slots__ = ("type", "number")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    type: SubjectType
    number: str
    def __init__(self, type: _Optional[_Union[SubjectType, str]] = ..., number: _Optional[str] = ...) -> None: ...

class Period(_message.Message):
    __slots__ = ("begin_date", "end_date")
    BEGIN_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    begin_date: str
    end_date: str
    def __init__(self, begin_date: _Optional[str] = ..., end_date: _Optional[str] = ...) -> None: ...

class Payload(_message.Message):
    __slots__ = ("data", "media_type", "sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    media_type: str
    sha256: bytes
    def __init__(self, data: _Optional[bytes] = ..., media_type: _Optional[str] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("hub_ticket", "sender_ticket", "service_id", "service_version", "legal_context", "sender", "receivers", "subject", "capacity", "period", "sent_at_unix_us", "received_at_unix_us", "payload")
    HUB_TICKET_FIELD_NUMBER: _ClassVar[int]
    SENDER_TICKET_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEGAL_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVERS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    hub_ticket: str
    sender_ticket: str
    service_id: str
    service_version: int
    legal_context: str
    sender: str
    receivers: _containers.RepeatedScalarFieldContainer[str]
    subject: Subject
    capacity: int
    period: Period
    sent_at_unix_us: int
    received_at_unix_us: int
    payload: Payload
    def __init__(self, hub_ticket: _Optional[str] = ..., sender_ticket: _Optional[str] = ..., service_id: _Optional[str] = ..., service_version: _Optional[int] = ..., legal_context: _Optional[str] = ..., sender: _Optional[str] = ..., receivers: _Optional[_Iterable[str]] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ..., capacity: _Optional[int] = ..., period: _Optional[_Union[Period, _Mapping]] = ..., sent_at_unix_us: _Optional[int] = ..., received_at_unix_us: _Optional[int] = ..., payload: _Optional[_Union[Payload, _Mapping]] = ...) -> None: ...

class EnvelopeOutcome(_message.Message):
    __slots__ = ("index", "reason", "detail", "hub_ticket", "receivers")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    HUB_TICKET_FIELD_NUMBER: _ClassVar[int]
    RECEIVERS_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: Reason
    detail: str
    hub_ticket: str
    receivers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[_Union[Reason, str]] = ..., detail: _Optional[str] = ..., hub_ticket: _Optional[str] = ..., receivers: _Optional[_Iterable[str]] = ...) -> None: ...

class EnvelopeBatch(_message.Message):
    __slots__ = ("origin", "first_sequence", "envelopes")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    origin: str
    first_sequence: int
    envelopes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, origin: _Optional[str] = ..., first_sequence: _Optional[int] = ..., envelopes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BatchAck(_message.Message):
    __slots__ = ("first_sequence", "outcomes")
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    first_sequence: int
    outcomes: _containers.RepeatedCompositeFieldContainer[EnvelopeOutcome]
    def __init__(self, first_sequence: _Optional[int] = ..., outcomes: _Optional[_Iterable[_Union[EnvelopeOutcome, _Mapping]]] = ...) -> None: ...
