from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImmediateKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMMEDIATE_KIND_UNSPECIFIED: _ClassVar[ImmediateKind]
    IMMEDIATE_KIND_RECRUITMENT: _ClassVar[ImmediateKind]
    IMMEDIATE_KIND_DISCHARGE: _ClassVar[ImmediateKind]

class WorkerType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_TYPE_UNSPECIFIED: _ClassVar[WorkerType]
    WORKER_TYPE_OTHER: _ClassVar[WorkerType]
    WORKER_TYPE_STUDENT: _ClassVar[WorkerType]
    WORKER_TYPE_FLEXI: _ClassVar[WorkerType]
    WORKER_TYPE_OCCASIONAL: _ClassVar[WorkerType]
    WORKER_TYPE_SEASONAL: _ClassVar[WorkerType]
    WORKER_TYPE_APPRENTICE: _ClassVar[WorkerType]

class SocialRisk(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOCIAL_RISK_UNSPECIFIED: _ClassVar[SocialRisk]
    SOCIAL_RISK_INCAPACITY: _ClassVar[SocialRisk]
    SOCIAL_RISK_UNEMPLOYMENT_TEMPORARY: _ClassVar[SocialRisk]
    SOCIAL_RISK_UNEMPLOYMENT_FULL: _ClassVar[SocialRisk]
    SOCIAL_RISK_WORK_ACCIDENT: _ClassVar[SocialRisk]
    SOCIAL_RISK_OCCUPATIONAL_DISEASE: _ClassVar[SocialRisk]
    SOCIAL_RISK_MATERNITY: _ClassVar[SocialRisk]
    SOCIAL_RISK_PATERNITY: _ClassVar[SocialRisk]

class EmploymentEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMPLOYMENT_EVENT_UNSPECIFIED: _ClassVar[EmploymentEvent]
    EMPLOYMENT_EVENT_STARTED: _ClassVar[EmploymentEvent]
    EMPLOYMENT_EVENT_ENDED: _ClassVar[EmploymentEvent]
IMMEDIATE_KIND_UNSPECIFIED: ImmediateKind
IMMEDIATE_KIND_RECRUITMENT: ImmediateKind
IMMEDIATE_KIND_DISCHARGE: ImmediateKind
WORKER_TYPE_UNSPECIFIED: WorkerType
WORKER_TYPE_OTHER: WorkerType
WORKER_TYPE_STUDENT: WorkerType
WORKER_TYPE_FLEXI: WorkerType
WORKER_TYPE_OCCASIONAL: WorkerType
WORKER_TYPE_SEASONAL: WorkerType
WORKER_TYPE_APPRENTICE: WorkerType
SOCIAL_RISK_UNSPECIFIED: SocialRisk
SOCIAL_RISK_INCAPACITY: SocialRisk
SOCIAL_RISK_UNEMPLOYMENT_TEMPORARY: SocialRisk
SOCIAL_RISK_UNEMPLOYMENT_FULL: SocialRisk
SOCIAL_RISK_WORK_ACCIDENT: SocialRisk
SOCIAL_RISK_OCCUPATIONAL_DISEASE: SocialRisk
SOCIAL_RISK_MATERNITY: SocialRisk
SOCIAL_RISK_PATERNITY: SocialRisk
EMPLOYMENT_EVENT_UNSPECIFIED: EmploymentEvent
EMPLOYMENT_EVENT_STARTED: EmploymentEvent
EMPLOYMENT_EVENT_ENDED: EmploymentEvent

class ImmediateDeclaration(_message.Message):
    __slots__ = ("employer_reference", "kind", "employer_enterprise_number", "worker_citizen_number", "joint_committee", "worker_type", "start_date", "end_date", "planned_weekly_hours")
    EMPLOYER_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EMPLOYER_ENTERPRISE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    WORKER_CITIZEN_NUMBER_FIELD_NUMBER: _ClassVar[int]
    JOINT_COMMITTEE_FIELD_NUMBER: _ClassVar[int]
    WORKER_TYPE_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    PLANNED_WEEKLY_HOURS_FIELD_NUMBER: _ClassVar[int]
    employer_reference: str
    kind: ImmediateKind
    employer_enterprise_number: str
    worker_citizen_number: str
    joint_committee: str
    worker_type: WorkerType
    start_date: str
    end_date: str
    planned_weekly_hours: float
    def __init__(self, employer_reference: _Optional[str] = ..., kind: _Optional[_Union[ImmediateKind, str]] = ..., employer_enterprise_number: _Optional[str] = ..., worker_citizen_number: _Optional[str] = ..., joint_committee: _Optional[str] = ..., worker_type: _Optional[_Union[WorkerType, str]] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., planned_weekly_hours: _Optional[float] = ...) -> None: ...

class QuarterlyWorkerLine(_message.Message):
    __slots__ = ("citizen_number", "joint_committee", "period_start_date", "period_end_date", "gross_salary_cents", "worked_days", "worked_hours")
    CITIZEN_NUMBER_FIELD_NUMBER: _ClassVar[int]
    JOINT_COMMITTEE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_DATE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_DATE_FIELD_NUMBER: _ClassVar[int]
    GROSS_SALARY_CENTS_FIELD_NUMBER: _ClassVar[int]
    WORKED_DAYS_FIELD_NUMBER: _ClassVar[int]
    WORKED_HOURS_FIELD_NUMBER: _ClassVar[int]
    citizen_number: str
    joint_committee: str
    period_start_date: str
    period_end_date: str
    gross_salary_cents: int
    worked_days: int
    worked_hours: float
    def __init__(self, citizen_number: _Optional[str] = ..., joint_committee: _Optional[str] = ..., period_start_date: _Optional[str] = ..., period_end_date: _Optional[str] = ..., gross_salary_cents: _Optional[int] = ..., worked_days: _Optional[int] = ..., worked_hours: _Optional[float] = ...) -> None: ...

class QuarterlyDeclaration(_message.Message):
    __slots__ = ("employer_reference", "employer_enterprise_number", "year", "quarter", "workers")
    EMPLOYER_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    EMPLOYER_ENTERPRISE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    QUARTER_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    employer_reference: str
    employer_enterprise_number: str
    year: int
    quarter: int
    workers: _containers.RepeatedCompositeFieldContainer[QuarterlyWorkerLine]
    def __init__(self, employer_reference: _Optional[str] = ..., employer_enterprise_number: _Optional[str] = ..., year: _Optional[int] = ..., quarter: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[QuarterlyWorkerLine, _Mapping]]] = ...) -> None: ...

class SocialRiskDeclaration(_message.Message):
    __slots__ = ("employer_reference", "risk", "employer_enterprise_number", "worker_citizen_number", "joint_committee", "event_date", "last_worked_date", "monthly_reference_salary_cents", "contract_weekly_hours")
    EMPLOYER_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    EMPLOYER_ENTERPRISE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    WORKER_CITIZEN_NUMBER_FIELD_NUMBER: _ClassVar[int]
    JOINT_COMMITTEE_FIELD_NUMBER: _ClassVar[int]
    EVENT_DATE_FIELD_NUMBER: _ClassVar[int]
    LAST_WORKED_DATE_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_REFERENCE_SALARY_CENTS_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_WEEKLY_HOURS_FIELD_NUMBER: _ClassVar[int]
    employer_reference: str
    risk: SocialRisk
    employer_enterprise_number: str
    worker_citizen_number: str
    joint_committee: str
    event_date: str
    last_worked_date: str
    monthly_reference_salary_cents: int
    contract_weekly_hours: float
    def __init__(self, employer_reference: _Optional[str] = ..., risk: _Optional[_Union[SocialRisk, str]] = ..., employer_enterprise_number: _Optional[str] = ..., worker_citizen_number: _Optional[str] = ..., joint_committee: _Optional[str] = ..., event_date: _Optional[str] = ..., last_worked_date: _Optional[str] = ..., monthly_reference_salary_cents: _Optional[int] = ..., contract_weekly_hours: _Optional[float] = ...) -> None: ...

class EmploymentMutation(_message.Message):
    __slots__ = ("worker_citizen_number", "employer_enterprise_number", "event", "event_date", "start_date", "end_date", "joint_committee", "worker_type", "source_declaration_id")
    WORKER_CITIZEN_NUMBER_FIELD_NUMBER: _ClassVar[int]
    EMPLOYER_ENTERPRISE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_DATE_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    JOINT_COMMITTEE_FIELD_NUMBER: _ClassVar[int]
    WORKER_TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DECLARATION_ID_FIELD_NUMBER: _ClassVar[int]
    worker_citizen_number: str
    employer_enterprise_number: str
    event: EmploymentEvent
    event_date: str
    start_date: str
    end_date: str
    joint_committee: str
    worker_type: WorkerType
    source_declaration_id: str
    def __init__(self, worker_citizen_number: _Optional[str] = ..., employer_enterprise_number: _Optional[str] = ..., event: _Optional[_Union[EmploymentEvent, str]] = ..., event_date: _Optional[str] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., joint_committee: _Optional[str] = ..., worker_type: _Optional[_Union[WorkerType, str]] = ..., source_declaration_id: _Optional[str] = ...) -> None: ...
