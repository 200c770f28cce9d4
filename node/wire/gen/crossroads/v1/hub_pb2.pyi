from node.wire.gen.crossroads.v1 import consult_pb2 as _consult_pb2
from node.wire.gen.crossroads.v1 import directory_pb2 as _directory_pb2
from node.wire.gen.crossroads.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("endpoint", "origin")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    origin: str
    def __init__(self, endpoint: _Optional[str] = ..., origin: _Optional[str] = ...) -> None: ...

class AuditCheckpoint(_message.Message):
    __slots__ = ("seq", "hash", "at_us", "from_seq", "segment_digest", "signature", "key_id")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    AT_US_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hash: bytes
    at_us: int
    from_seq: int
    segment_digest: bytes
    signature: bytes
    key_id: str
    def __init__(self, seq: _Optional[int] = ..., hash: _Optional[bytes] = ..., at_us: _Optional[int] = ..., from_seq: _Optional[int] = ..., segment_digest: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., key_id: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("institution", "pending", "acknowledged_sequence", "store_id", "checkpoint")
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    institution: str
    pending: int
    acknowledged_sequence: int
    store_id: str
    checkpoint: AuditCheckpoint
    def __init__(self, institution: _Optional[str] = ..., pending: _Optional[int] = ..., acknowledged_sequence: _Optional[int] = ..., store_id: _Optional[str] = ..., checkpoint: _Optional[_Union[AuditCheckpoint, _Mapping]] = ...) -> None: ...
