from node.wire.gen.crossroads.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstitutionEntry(_message.Message):
    __slots__ = ("enterprise_number", "sector", "name", "endpoint", "cert_fingerprint", "status")
    ENTERPRISE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CERT_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    enterprise_number: str
    sector: int
    name: str
    endpoint: str
    cert_fingerprint: str
    status: str
    def __init__(self, enterprise_number: _Optional[str] = ..., sector: _Optional[int] = ..., name: _Optional[str] = ..., endpoint: _Optional[str] = ..., cert_fingerprint: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class ServiceEntry(_message.Message):
    __slots__ = ("id", "version", "kind", "subject_type", "routing", "provider", "integration_required", "min_phase", "capacities")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    MIN_PHASE_FIELD_NUMBER: _ClassVar[int]
    CAPACITIES_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    kind: str
    subject_type: str
    routing: str
    provider: str
    integration_required: bool
    min_phase: int
    capacities: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., kind: _Optional[str] = ..., subject_type: _Optional[str] = ..., routing: _Optional[str] = ..., provider: _Optional[str] = ..., integration_required: _Optional[bool] = ..., min_phase: _Optional[int] = ..., capacities: _Optional[_Iterable[int]] = ...) -> None: ...

class AuthorizationEntry(_message.Message):
    __slots__ = ("id", "service_id", "institution", "sector", "has_sector", "legal_context", "capacities", "valid_from", "valid_to")
    ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    HAS_SECTOR_FIELD_NUMBER: _ClassVar[int]
    LEGAL_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CAPACITIES_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_TO_FIELD_NUMBER: _ClassVar[int]
    id: str
    service_id: str
    institution: str
    sector: int
    has_sector: bool
    legal_context: str
    capacities: _containers.RepeatedScalarFieldContainer[int]
    valid_from: str
    valid_to: str
    def __init__(self, id: _Optional[str] = ..., service_id: _Optional[str] = ..., institution: _Optional[str] = ..., sector: _Optional[int] = ..., has_sector: _Optional[bool] = ..., legal_context: _Optional[str] = ..., capacities: _Optional[_Iterable[int]] = ..., valid_from: _Optional[str] = ..., valid_to: _Optional[str] = ...) -> None: ...

class IntegrationEntry(_message.Message):
    __slots__ = ("subject", "institution", "capacity", "phase", "begin_date", "end_date")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    BEGIN_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    subject: str
    institution: str
    capacity: int
    phase: int
    begin_date: str
    end_date: str
    def __init__(self, subject: _Optional[str] = ..., institution: _Optional[str] = ..., capacity: _Optional[int] = ..., phase: _Optional[int] = ..., begin_date: _Optional[str] = ..., end_date: _Optional[str] = ...) -> None: ...

class ReplacementEntry(_message.Message):
    __slots__ = ("old_number", "new_number")
    OLD_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NEW_NUMBER_FIELD_NUMBER: _ClassVar[int]
    old_number: str
    new_number: str
    def __init__(self, old_number: _Optional[str] = ..., new_number: _Optional[str] = ...) -> None: ...

class SubscriptionEntry(_message.Message):
    __slots__ = ("id", "institution", "service_id", "capacities", "condition")
    ID_FIELD_NUMBER: _ClassVar[int]
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITIES_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    id: str
    institution: str
    service_id: str
    capacities: _containers.RepeatedScalarFieldContainer[int]
    condition: str
    def __init__(self, id: _Optional[str] = ..., institution: _Optional[str] = ..., service_id: _Optional[str] = ..., capacities: _Optional[_Iterable[int]] = ..., condition: _Optional[str] = ...) -> None: ...

class RevokedCertificateEntry(_message.Message):
    __slots__ = ("serial", "institution", "reason")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    serial: str
    institution: str
    reason: str
    def __init__(self, serial: _Optional[str] = ..., institution: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DirectoryChange(_message.Message):
    __slots__ = ("revision", "delete", "institution", "service", "authorization", "integration", "replacement", "subscription", "revoked_certificate")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_FIELD_NUMBER: _ClassVar[int]
    REPLACEMENT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REVOKED_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    delete: bool
    institution: InstitutionEntry
    service: ServiceEntry
    authorization: AuthorizationEntry
    integration: IntegrationEntry
    replacement: ReplacementEntry
    subscription: SubscriptionEntry
    revoked_certificate: RevokedCertificateEntry
    def __init__(self, revision: _Optional[int] = ..., delete: _Optional[bool] = ..., institution: _Optional[_Union[InstitutionEntry, _Mapping]] = ..., service: _Optional[_Union[ServiceEntry, _Mapping]] = ..., authorization: _Optional[_Union[AuthorizationEntry, _Mapping]] = ..., integration: _Optional[_Union[IntegrationEntry, _Mapping]] = ..., replacement: _Optional[_Union[ReplacementEntry, _Mapping]] = ..., subscription: _Optional[_Union[SubscriptionEntry, _Mapping]] = ..., revoked_certificate: _Optional[_Union[RevokedCertificateEntry, _Mapping]] = ...) -> None: ...

class DirectoryUpdate(_message.Message):
    __slots__ = ("kind", "recipient", "from_revision", "to_revision", "changes", "produced_at_unix_us", "part", "last_part", "crl")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[DirectoryUpdate.Kind]
        KIND_SNAPSHOT: _ClassVar[DirectoryUpdate.Kind]
        KIND_DELTA: _ClassVar[DirectoryUpdate.Kind]
    KIND_UNSPECIFIED: DirectoryUpdate.Kind
    KIND_SNAPSHOT: DirectoryUpdate.Kind
    KIND_DELTA: DirectoryUpdate.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    FROM_REVISION_FIELD_NUMBER: _ClassVar[int]
    TO_REVISION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    PRODUCED_AT_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    LAST_PART_FIELD_NUMBER: _ClassVar[int]
    CRL_FIELD_NUMBER: _ClassVar[int]
    kind: DirectoryUpdate.Kind
    recipient: str
    from_revision: int
    to_revision: int
    changes: _containers.RepeatedCompositeFieldContainer[DirectoryChange]
    produced_at_unix_us: int
    part: int
    last_part: bool
    crl: bytes
    def __init__(self, kind: _Optional[_Union[DirectoryUpdate.Kind, str]] = ..., recipient: _Optional[str] = ..., from_revision: _Optional[int] = ..., to_revision: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[DirectoryChange, _Mapping]]] = ..., produced_at_unix_us: _Optional[int] = ..., part: _Optional[int] = ..., last_part: _Optional[bool] = ..., crl: _Optional[bytes] = ...) -> None: ...

class SignedDirectoryUpdate(_message.Message):
    __slots__ = ("update", "signature", "key_id")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    update: bytes
    signature: bytes
    key_id: str
    def __init__(self, update: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., key_id: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("start_revision",)
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    start_revision: int
    def __init__(self, start_revision: _Optional[int] = ...) -> None: ...

class IntegrateRequest(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[IntegrateOp]
    def __init__(self, ops: _Optional[_Iterable[_Union[IntegrateOp, _Mapping]]] = ...) -> None: ...

class IntegrateOp(_message.Message):
    __slots__ = ("integration", "delete")
    INTEGRATION_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    integration: IntegrationEntry
    delete: bool
    def __init__(self, integration: _Optional[_Union[IntegrationEntry, _Mapping]] = ..., delete: _Optional[bool] = ...) -> None: ...

class IntegrateResponse(_message.Message):
    __slots__ = ("outcomes", "revision")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[_envelope_pb2.EnvelopeOutcome]
    revision: int
    def __init__(self, outcomes: _Optional[_Iterable[_Union[_envelope_pb2.EnvelopeOutcome, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class WhoConsultedRequest(_message.Message):
    __slots__ = ("subject", "since_unix_us", "limit")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    since_unix_us: int
    limit: int
    def __init__(self, subject: _Optional[str] = ..., since_unix_us: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ConsultationRecord(_message.Message):
    __slots__ = ("at_unix_us", "event", "institution", "service_id", "outcome", "hub_ticket", "receivers")
    AT_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    INSTITUTION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    HUB_TICKET_FIELD_NUMBER: _ClassVar[int]
    RECEIVERS_FIELD_NUMBER: _ClassVar[int]
    at_unix_us: int
    event: str
    institution: str
    service_id: str
    outcome: str
    hub_ticket: str
    receivers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, at_unix_us: _Optional[int] = ..., event: _Optional[str] = ..., institution: _Optional[str] = ..., service_id: _Optional[str] = ..., outcome: _Optional[str] = ..., hub_ticket: _Optional[str] = ..., receivers: _Optional[_Iterable[str]] = ...) -> None: ...

class WhoConsultedResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[ConsultationRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[ConsultationRecord, _Mapping]]] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[DirectoryChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[DirectoryChange, _Mapping]]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class ShowRequest(_message.Message):
    __slots__ = ("part", "subject")
    PART_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    part: str
    subject: str
    def __init__(self, part: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class ShowResponse(_message.Message):
    __slots__ = ("revision", "entries")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    revision: int
    entries: _containers.RepeatedCompositeFieldContainer[DirectoryChange]
    def __init__(self, revision: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[DirectoryChange, _Mapping]]] = ...) -> None: ...

class CompactRequest(_message.Message):
    __slots__ = ("keep_after",)
    KEEP_AFTER_FIELD_NUMBER: _ClassVar[int]
    keep_after: int
    def __init__(self, keep_after: _Optional[int] = ...) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ("compacted_revision", "removed")
    COMPACTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    compacted_revision: int
    removed: int
    def __init__(self, compacted_revision: _Optional[int] = ..., removed: _Optional[int] = ...) -> None: ...
