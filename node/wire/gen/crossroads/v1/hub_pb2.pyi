from node.wire.gen.crossroads.v1 import consult_pb2 as _consult_pb2
from node.wire.gen.crossroads.v1 import directory_pb2 as _directory_pb2
from node.wire.gen.crossroads.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    def __init__(self, endpoint: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("institution", "pending")
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    institution: str
    pending: int
    def __init__(self, institution: _Optional[str] = ..., pending: _Optional[int] = ...) -> None: ...
