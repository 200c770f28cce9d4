from node.wire.gen.crossroads.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConsultStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSULT_STATUS_UNSPECIFIED: _ClassVar[ConsultStatus]
    DATA_FOUND: _ClassVar[ConsultStatus]
    NO_DATA_FOUND: _ClassVar[ConsultStatus]
    INCOMPLETE_DATA: _ClassVar[ConsultStatus]
    REFUSED: _ClassVar[ConsultStatus]

class SourceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_STATUS_UNSPECIFIED: _ClassVar[SourceStatus]
    SOURCE_DATA: _ClassVar[SourceStatus]
    SOURCE_NO_DATA: _ClassVar[SourceStatus]
    SOURCE_TIMEOUT: _ClassVar[SourceStatus]
    SOURCE_UNAVAILABLE: _ClassVar[SourceStatus]
    SOURCE_ERROR: _ClassVar[SourceStatus]
CONSULT_STATUS_UNSPECIFIED: ConsultStatus
DATA_FOUND: ConsultStatus
NO_DATA_FOUND: ConsultStatus
INCOMPLETE_DATA: ConsultStatus
REFUSED: ConsultStatus
SOURCE_STATUS_UNSPECIFIED: SourceStatus
SOURCE_DATA: SourceStatus
SOURCE_NO_DATA: SourceStatus
SOURCE_TIMEOUT: SourceStatus
SOURCE_UNAVAILABLE: SourceStatus
SOURCE_ERROR: SourceStatus

class ConsultRequest(_message.Message):
    __slots__ = ("envelope", "deadline_ms")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    deadline_ms: int
    def __init__(self, envelope: _Optional[bytes] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class SourcePart(_message.Message):
    __slots__ = ("institution", "status", "data", "media_type", "detail", "answered_at_unix_us")
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_AT_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    institution: str
    status: SourceStatus
    data: bytes
    media_type: str
    detail: str
    answered_at_unix_us: int
    def __init__(self, institution: _Optional[str] = ..., status: _Optional[_Union[SourceStatus, str]] = ..., data: _Optional[bytes] = ..., media_type: _Optional[str] = ..., detail: _Optional[str] = ..., answered_at_unix_us: _Optional[int] = ...) -> None: ...

class ConsultResponse(_message.Message):
    __slots__ = ("status", "outcome", "hub_ticket", "sender_ticket", "sent_at_unix_us", "received_at_unix_us", "replied_at_unix_us", "parts")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    HUB_TICKET_FIELD_NUMBER: _ClassVar[int]
    SENDER_TICKET_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    REPLIED_AT_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    status: ConsultStatus
    outcome: _envelope_pb2.EnvelopeOutcome
    hub_ticket: str
    sender_ticket: str
    sent_at_unix_us: int
    received_at_unix_us: int
    replied_at_unix_us: int
    parts: _containers.RepeatedCompositeFieldContainer[SourcePart]
    def __init__(self, status: _Optional[_Union[ConsultStatus, str]] = ..., outcome: _Optional[_Union[_envelope_pb2.EnvelopeOutcome, _Mapping]] = ..., hub_ticket: _Optional[str] = ..., sender_ticket: _Optional[str] = ..., sent_at_unix_us: _Optional[int] = ..., received_at_unix_us: _Optional[int] = ..., replied_at_unix_us: _Optional[int] = ..., parts: _Optional[_Iterable[_Union[SourcePart, _Mapping]]] = ...) -> None: ...

class AnswerRequest(_message.Message):
    __slots__ = ("envelope", "deadline_ms")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    deadline_ms: int
    def __init__(self, envelope: _Optional[bytes] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class AnswerResponse(_message.Message):
    __slots__ = ("status", "data", "media_type", "detail")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    status: SourceStatus
    data: bytes
    media_type: str
    detail: str
    def __init__(self, status: _Optional[_Union[SourceStatus, str]] = ..., data: _Optional[bytes] = ..., media_type: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class Question(_message.Message):
    __slots__ = ("id", "envelope", "deadline_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    envelope: bytes
    deadline_ms: int
    def __init__(self, id: _Optional[int] = ..., envelope: _Optional[bytes] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class Answer(_message.Message):
    __slots__ = ("id", "status", "data", "media_type", "detail", "services")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    id: int
    status: SourceStatus
    data: bytes
    media_type: str
    detail: str
    services: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., status: _Optional[_Union[SourceStatus, str]] = ..., data: _Optional[bytes] = ..., media_type: _Optional[str] = ..., detail: _Optional[str] = ..., services: _Optional[_Iterable[str]] = ...) -> None: ...

class ConsultCall(_message.Message):
    __slots__ = ("id", "request")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    id: int
    request: ConsultRequest
    def __init__(self, id: _Optional[int] = ..., request: _Optional[_Union[ConsultRequest, _Mapping]] = ...) -> None: ...

class ConsultCalls(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[ConsultCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[ConsultCall, _Mapping]]] = ...) -> None: ...

class ConsultReply(_message.Message):
    __slots__ = ("id", "response", "error_code", "error", "error_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    id: int
    response: ConsultResponse
    error_code: str
    error: str
    error_reason: str
    def __init__(self, id: _Optional[int] = ..., response: _Optional[_Union[ConsultResponse, _Mapping]] = ..., error_code: _Optional[str] = ..., error: _Optional[str] = ..., error_reason: _Optional[str] = ...) -> None: ...

class ConsultReplies(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[ConsultReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[ConsultReply, _Mapping]]] = ...) -> None: ...

class AnswerCall(_message.Message):
    __slots__ = ("id", "request")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    id: int
    request: AnswerRequest
    def __init__(self, id: _Optional[int] = ..., request: _Optional[_Union[AnswerRequest, _Mapping]] = ...) -> None: ...

class AnswerCalls(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[AnswerCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[AnswerCall, _Mapping]]] = ...) -> None: ...

class AnswerReply(_message.Message):
    __slots__ = ("id", "response", "error_code", "error", "error_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    id: int
    response: AnswerResponse
    error_code: str
    error: str
    error_reason: str
    def __init__(self, id: _Optional[int] = ..., response: _Optional[_Union[AnswerResponse, _Mapping]] = ..., error_code: _Optional[str] = ..., error: _Optional[str] = ..., error_reason: _Optional[str] = ...) -> None: ...

class AnswerReplies(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[AnswerReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[AnswerReply, _Mapping]]] = ...) -> None: ...
