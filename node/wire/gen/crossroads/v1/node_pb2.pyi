from node.wire.gen.crossroads.v1 import consult_pb2 as _consult_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class DeliveryBatch(_message.Message):
    __slots__ = ("last_sequence", "envelopes", "hub_tickets")
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    HUB_TICKETS_FIELD_NUMBER: _ClassVar[int]
    last_sequence: int
    envelopes: _containers.RepeatedScalarFieldContainer[bytes]
    hub_tickets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, last_sequence: _Optional[int] = ..., envelopes: _Optional[_Iterable[bytes]] = ..., hub_tickets: _Optional[_Iterable[str]] = ...) -> None: ...

class DeliveryAck(_message.Message):
    __slots__ = ("last_sequence", "stored", "duplicates")
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    last_sequence: int
    stored: int
    duplicates: int
    def __init__(self, last_sequence: _Optional[int] = ..., stored: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...
