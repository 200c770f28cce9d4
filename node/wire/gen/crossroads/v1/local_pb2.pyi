from node.wire.gen.crossroads.v1 import consult_pb2 as _consult_pb2
from node.wire.gen.crossroads.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LocalSubmitRequest(_message.Message):
    __slots__ = ("envelopes",)
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, envelopes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class LocalSubmitResponse(_message.Message):
    __slots__ = ("outcomes", "sequences")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[_envelope_pb2.EnvelopeOutcome]
    sequences: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[_envelope_pb2.EnvelopeOutcome, _Mapping]]] = ..., sequences: _Optional[_Iterable[int]] = ...) -> None: ...

class OutcomesRequest(_message.Message):
    __slots__ = ("sequences", "wait_ms")
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    sequences: _containers.RepeatedScalarFieldContainer[int]
    wait_ms: int
    def __init__(self, sequences: _Optional[_Iterable[int]] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class OutcomesResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[_envelope_pb2.EnvelopeOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[_envelope_pb2.EnvelopeOutcome, _Mapping]]] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("max", "wait_ms")
    MAX_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    max: int
    wait_ms: int
    def __init__(self, max: _Optional[int] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class FetchResponse(_message.Message):
    __slots__ = ("envelopes",)
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, envelopes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class AcknowledgeRequest(_message.Message):
    __slots__ = ("hub_tickets",)
    HUB_TICKETS_FIELD_NUMBER: _ClassVar[int]
    hub_tickets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hub_tickets: _Optional[_Iterable[str]] = ...) -> None: ...

class AcknowledgeResponse(_message.Message):
    __slots__ = ("acknowledged",)
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: int
    def __init__(self, acknowledged: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("institution", "outbox_pending", "sent_accepted", "sent_refused", "inbox_unacknowledged", "inbox_total", "hub_connected", "directory_revision", "directory_lag", "directory_last_sync_unix_us", "directory_connected", "hub_state", "hub_state_detail", "hub_acknowledged_sequence", "hub_checkpoint_seq")
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_PENDING_FIELD_NUMBER: _ClassVar[int]
    SENT_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SENT_REFUSED_FIELD_NUMBER: _ClassVar[int]
    INBOX_UNACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    INBOX_TOTAL_FIELD_NUMBER: _ClassVar[int]
    HUB_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_REVISION_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_LAG_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_LAST_SYNC_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    HUB_STATE_FIELD_NUMBER: _ClassVar[int]
    HUB_STATE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    HUB_ACKNOWLEDGED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    HUB_CHECKPOINT_SEQ_FIELD_NUMBER: _ClassVar[int]
    institution: str
    outbox_pending: int
    sent_accepted: int
    sent_refused: int
    inbox_unacknowledged: int
    inbox_total: int
    hub_connected: bool
    directory_revision: int
    directory_lag: int
    directory_last_sync_unix_us: int
    directory_connected: bool
    hub_state: str
    hub_state_detail: str
    hub_acknowledged_sequence: int
    hub_checkpoint_seq: int
    def __init__(self, institution: _Optional[str] = ..., outbox_pending: _Optional[int] = ..., sent_accepted: _Optional[int] = ..., sent_refused: _Optional[int] = ..., inbox_unacknowledged: _Optional[int] = ..., inbox_total: _Optional[int] = ..., hub_connected: _Optional[bool] = ..., directory_revision: _Optional[int] = ..., directory_lag: _Optional[int] = ..., directory_last_sync_unix_us: _Optional[int] = ..., directory_connected: _Optional[bool] = ..., hub_state: _Optional[str] = ..., hub_state_detail: _Optional[str] = ..., hub_acknowledged_sequence: _Optional[int] = ..., hub_checkpoint_seq: _Optional[int] = ...) -> None: ...
