"""The reference directory: its four parts as values, and the decisions made from them.

The parts (DOMAIN.md):

1. **Services** - what can be called: kind (consultation / mutation / declaration /
   integration), subject type, routing (a fixed provider, or fan-out to the institutions that
   hold the subject), whether the caller must have integrated the subject, minimum phase.
2. **Authorizations** - deny by default: an institution (or a whole sector) may call a service
   under a legal context, in some capacities (empty = any), from/to a date.
3. **Integrations** - the person directory: which institution holds a file on which subject,
   in which capacity, with which phase, from/to which date (no end = active). Plus the table
   of replaced numbers.
4. **Subscriptions** - which institution wants which mutations pushed, in which capacities.

:func:`decide` applies the hub's rules to one envelope, in order, first failure wins:

1. subject number structure (``SUBJECT_NUMBER_INVALID``); a replaced number is mapped and
   noted (``SUBJECT_REPLACED`` in the detail of an accepted outcome);
2. the sender is authorized for the service, capacity and legal context on the date
   (``NOT_AUTHORIZED``);
3. if the service requires it, the sender holds an integration of the subject in an
   authorized capacity, active over the whole requested period (``NOT_INTEGRATED``) with a
   phase at least the service's minimum (``PHASE_TOO_LOW``);
4. receivers: the fixed provider, or every *other* active institution holding an integration
   of the subject in a relevant capacity that is itself authorized for the service; for a
   *mutation*, every subscriber holding the subject in a subscribed capacity on the event
   date (the envelope's period begin, else today), minus the source; none -> ``NO_RECEIVER``.

Everything here is pure; the caller fetches the integrations of all subjects of a batch at
once (from its cache, else one query per 500 subjects) and passes them in
(:class:`DirectoryView`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

from node.core.envelope import Decision, EnvelopeHead
from node.core.reasons import Reason

__all__ = [
    "KINDS",
    "Authorization",
    "DirectoryView",
    "Institution",
    "Integration",
    "Period",
    "Replacement",
    "Request",
    "RevokedCertificate",
    "Service",
    "Subscription",
    "covers",
    "decide",
    "fan_out",
    "request_of",
    "subscribers",
]

KINDS = ("consultation", "mutation", "declaration", "integration")
SUBJECT_KINDS = ("citizen", "enterprise", "none", "any")
ROUTINGS = ("fixed", "fan_out", "explicit")


class Period(NamedTuple):
    """Inclusive dates; ``end`` None = open. (NamedTuples here: periods and integrations are
    built by the thousand per batch, and tuples are much cheaper to build than dataclasses.)"""

    begin: date
    end: date | None = None  # inclusive; None = open

    def contains(self, day: date) -> bool:
        return self.begin <= day and (self.end is None or day <= self.end)


def covers(outer: Period, inner: Period) -> bool:
    """True when ``outer`` includes every day of ``inner``."""
    if inner.begin < outer.begin:
        return False
    if outer.end is None:
        return True
    return inner.end is not None and inner.end <= outer.end


@dataclass(frozen=True, slots=True)
class Institution:
    enterprise_number: str
    sector: int
    name: str = ""
    endpoint: str = ""
    cert_fingerprint: str = ""
    status: str = "active"  # active | suspended

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    version: int = 1
    kind: str = "consultation"
    subject_type: str = "citizen"
    routing: str = "fixed"  # fixed provider | fan_out by the directory | explicit receivers
    provider: str = ""
    integration_required: bool = False
    min_phase: int = 0
    capacities: frozenset[int] = frozenset()  # relevant capacities for fan-out; empty = any

    @property
    def reads_integrations(self) -> bool:
        """Deciding on an envelope for this service reads the subject's integrations: to check
        the sender's, to fan out, or to find the subscribers of a mutation (see :func:`decide`)."""
        return (self.integration_required or self.kind == "mutation"
                or self.routing not in ("fixed", "explicit"))


@dataclass(frozen=True, slots=True)
class Authorization:
    id: str
    service_id: str
    institution: str = ""  # one institution, or
    sector: int | None = None  # every institution of a sector
    legal_context: str = ""  # empty = any
    capacities: frozenset[int] = frozenset()  # empty = any
    period: Period = field(default_factory=lambda: Period(date.min))

    def applies_to(self, institution: Institution) -> bool:
        if self.institution:
            return self.institution == institution.enterprise_number
        return self.sector is not None and self.sector == institution.sector

    def allows(self, capacity: int, legal_context: str, day: date) -> bool:
        return (
            (not self.capacities or capacity in self.capacities)
            and (not self.legal_context or self.legal_context == legal_context)
            and self.period.contains(day)
        )


class Integration(NamedTuple):
    subject: str
    institution: str
    capacity: int
    phase: int = 0
    period: Period = Period(date.min)


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    institution: str
    service_id: str
    capacities: frozenset[int] = frozenset()
    condition: str = ""


@dataclass(frozen=True, slots=True)
class Replacement:
    old_number: str
    new_number: str


@dataclass(frozen=True, slots=True)
class RevokedCertificate:
    serial: str  # lower-case hex
    institution: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Request:
    """What :func:`decide` needs beyond the :class:`EnvelopeHead`."""

    capacity: int
    legal_context: str
    period: Period | None  # None = the decision date


@dataclass(slots=True)
class DirectoryView:
    """The slice of the directory one batch needs: small tables whole, integrations of the
    batch's subjects only."""

    institutions: Mapping[str, Institution]
    services: Mapping[tuple[str, int], Service]
    authorizations: Mapping[str, Sequence[Authorization]]  # by service id
    integrations: Mapping[str, Sequence[Integration]]  # by subject number
    replaced: Mapping[str, str]  # old number -> new number
    subscriptions: Mapping[str, Sequence[Subscription]] = field(default_factory=dict)  # by service
    #: Per-view memo of the lookups below: a view serves one batch, whose envelopes mostly
    #: share sender, service and capacity.
    _memo: dict[tuple[object, ...], object] = field(default_factory=dict)

    def service(self, service_id: str, version: int) -> Service | None:
        key = ("s", service_id, version)
        found = self._memo.get(key, _UNKNOWN)
        if found is not _UNKNOWN:
            return found  # type: ignore[return-value]
        if version:
            found = self.services.get((service_id, version))
        else:
            candidates = [s for (sid, _), s in self.services.items() if sid == service_id]
            found = max(candidates, key=lambda s: s.version) if candidates else None
        self._memo[key] = found
        return found

    def shares_decisions(self, service_id: str, version: int) -> bool:
        """The service is known and does not read integrations (see
        :func:`shared_decision_key`)."""
        key = ("shares", service_id, version)
        found = self._memo.get(key)
        if found is None:
            service = self.service(service_id, version)
            found = self._memo[key] = service is not None and not service.reads_integrations
        return found  # type: ignore[return-value]

    def authorizations_for(
        self, service_id: str, institution: Institution, capacity: int, legal_context: str,
        day: date,
    ) -> list[Authorization]:
        key = ("a", service_id, institution.enterprise_number, capacity, legal_context, day)
        if key in self._memo:
            return self._memo[key]  # type: ignore[return-value]
        found = [
            a for a in self.authorizations.get(service_id, ())
            if a.applies_to(institution) and a.allows(capacity, legal_context, day)
        ]
        self._memo[key] = found
        return found


def request_of(head: EnvelopeHead) -> Request | Decision:
    """The decision inputs of an envelope, or INVALID_FIELD for a malformed period."""
    if not head.period_begin and not head.period_end:
        return Request(head.capacity, head.legal_context, None)
    try:
        begin = date.fromisoformat(head.period_begin)
        end = date.fromisoformat(head.period_end) if head.period_end else None
    except ValueError:
        return Decision(Reason.INVALID_FIELD,
                        f"period {head.period_begin!r}..{head.period_end!r} is not ISO dates")
    if end is not None and end < begin:
        return Decision(Reason.INVALID_FIELD, "period ends before it begins")
    return Request(head.capacity, head.legal_context, Period(begin, end))


_SUBJECT_TYPES = {"citizen": 1, "enterprise": 2, "none": 3}
_UNKNOWN = object()  # not in a memo yet


def _resolve_subject(number: str, replaced: Mapping[str, str]) -> tuple[str, bool]:
    seen = 0
    current = number
    while current in replaced and seen < 10:
        current = replaced[current]
        seen += 1
    return current, seen > 0


def subjects_to_read(
    envelopes: Iterable[tuple[str, str, int]], view: DirectoryView
) -> tuple[set[str], set[str]]:
    """For envelopes given as ``(subject, service id, service version)``: every subject (whose
    replacement the rules follow), and those whose integrations they read
    (:attr:`Service.reads_integrations`). ``view`` needs the small tables only."""
    subjects: set[str] = set()
    wanted: set[str] = set()
    reads: dict[tuple[str, int], bool] = {}  # per service: whether it reads integrations
    for subject, service_id, version in envelopes:
        if subject:
            subjects.add(subject)
            key = (service_id, version)
            read = reads.get(key)
            if read is None:
                service = view.service(service_id, version)
                read = reads[key] = service is not None and service.reads_integrations
            if read:
                wanted.add(subject)
    return subjects, wanted


def current_numbers(subjects: Iterable[str], replaced: Mapping[str, str]) -> set[str]:
    """``subjects`` and the numbers they were replaced by (following chains, as :func:`decide`
    does): the numbers whose integrations the rules read."""
    out = set(subjects)
    for subject in list(out):
        current, hops = subject, 0
        while current in replaced and hops < 10:
            current, hops = replaced[current], hops + 1
            out.add(current)
    return out


def shared_decision_key(head: EnvelopeHead, view: DirectoryView) -> tuple[object, ...] | None:
    """A key under which the decision on ``head`` is the same for every envelope of a batch
    with that key (same sender and day), or None when it depends on the subject itself.

    :func:`decide` reads the subject only to follow its replacement and, for services that
    read integrations (:attr:`Service.reads_integrations`), to check or route by them; for
    any other service, with a subject that was not replaced, the decision depends on these
    fields alone. A batch of a thousand such envelopes is then decided once per distinct key.
    """
    if (not view.shares_decisions(head.service_id, head.service_version)
            or head.subject_number in view.replaced):
        return None
    key: tuple[object, ...] = _shared_fields(head)
    return key


#: The fields of an :class:`EnvelopeHead` a shared decision depends on (one C call per head).
_shared_fields = operator.itemgetter(*(EnvelopeHead._fields.index(name) for name in (
    "service_id", "service_version", "subject_type", "capacity", "legal_context",
    "period_begin", "period_end", "receivers")))


def shared_decisions(
    view: DirectoryView, compute: Callable[[EnvelopeHead], Decision]
) -> Callable[[EnvelopeHead], Decision]:
    """``compute`` for the envelopes of one batch, run once per :func:`shared_decision_key`
    (and for every envelope without one)."""
    shared: dict[tuple[object, ...], Decision] = {}

    def decision_for(head: EnvelopeHead) -> Decision:
        key = shared_decision_key(head, view)
        if key is None:
            return compute(head)
        decision = shared.get(key)
        if decision is None:
            decision = shared[key] = compute(head)
        return decision

    return decision_for


def decide(
    head: EnvelopeHead, request: Request, sender: str, view: DirectoryView, today: date
) -> tuple[Decision, str]:
    """Decide on one envelope that already passed :func:`node.core.envelope.check_envelope`'s
    structural checks. Returns the decision and the (possibly replaced) subject number."""
    institution = view.institutions.get(sender)
    if institution is None or not institution.active:
        return Decision(Reason.NOT_AUTHORIZED, f"institution {sender} is not active"), ""
    service = view.service(head.service_id, head.service_version)
    if service is None:
        return Decision(Reason.UNKNOWN_SERVICE,
                        f"service {head.service_id} v{head.service_version} unknown"), ""
    if service.subject_type != "any":
        expected_type = _SUBJECT_TYPES[service.subject_type]
        if head.subject_type not in (expected_type, 0 if expected_type == 3 else -1):
            return Decision(Reason.INVALID_FIELD,
                            f"service {service.id} is about a {service.subject_type} subject"), ""
    subject, was_replaced = _resolve_subject(head.subject_number, view.replaced)
    day = request.period.begin if request.period else today
    period = request.period or Period(today, today)
    grants = view.authorizations_for(service.id, institution, request.capacity,
                                     request.legal_context, day)
    if not grants:
        return Decision(
            Reason.NOT_AUTHORIZED,
            f"{sender} may not call {service.id} in capacity {request.capacity}"
            f" under {request.legal_context or 'no legal context'} on {day}",
        ), subject
    if service.integration_required:
        problem = _integration_problem(service, sender, subject, request.capacity, period, view)
        if problem is not None:
            return problem, subject
    decision = _route(head, service, sender, subject, period, view, day)
    if decision.reason is Reason.ACCEPTED and was_replaced:
        decision = Decision(Reason.ACCEPTED, f"SUBJECT_REPLACED: {head.subject_number} -> {subject}",
                            decision.receivers)
    return decision, subject


def _integration_problem(
    service: Service, sender: str, subject: str, capacity: int, period: Period,
    view: DirectoryView,
) -> Decision | None:
    held = [
        i for i in view.integrations.get(subject, ())
        if i.institution == sender and (capacity == 0 or i.capacity == capacity)
        and covers(i.period, period)
    ]
    if not held:
        return Decision(Reason.NOT_INTEGRATED,
                        f"{sender} holds no integration of the subject in capacity {capacity}"
                        f" covering {period.begin}..{period.end or 'open'}")
    best = max(i.phase for i in held)
    if best < service.min_phase:
        return Decision(Reason.PHASE_TOO_LOW,
                        f"integration phase {best} is below {service.min_phase}")
    return None


def _route(
    head: EnvelopeHead, service: Service, sender: str, subject: str, period: Period,
    view: DirectoryView, day: date,
) -> Decision:
    if service.kind == "mutation":
        receivers = subscribers(service, subject, period.begin, view, exclude=sender)
        if not receivers:
            return Decision(Reason.NO_RECEIVER, f"no subscriber holds the subject for {service.id}")
        return Decision(Reason.ACCEPTED, receivers=receivers)
    if service.routing == "fixed":
        provider = view.institutions.get(service.provider)
        if provider is None or not provider.active or provider.enterprise_number == sender:
            return Decision(Reason.NO_RECEIVER, f"provider of {service.id} unavailable")
        return Decision(Reason.ACCEPTED, receivers=(provider.enterprise_number,))
    if service.routing == "explicit":
        receivers = tuple(r for r in head.receivers)
        for r in receivers:
            inst = view.institutions.get(r)
            if inst is None or not inst.active or r == sender:
                return Decision(Reason.UNKNOWN_RECEIVER, f"receiver {r} is not on the network")
        if not receivers:
            return Decision(Reason.NO_RECEIVER, "no receiver given")
        return Decision(Reason.ACCEPTED, receivers=receivers)
    receivers = fan_out(service, subject, period, view, day, exclude=sender)
    if not receivers:
        return Decision(Reason.NO_RECEIVER, f"no institution holds the subject for {service.id}")
    return Decision(Reason.ACCEPTED, receivers=receivers)


def subscribers(
    service: Service, subject: str, event_date: date, view: DirectoryView, exclude: str = ""
) -> tuple[str, ...]:
    """The push system: every active institution subscribed to the mutation ``service`` that
    holds an integration of ``subject`` in a subscribed capacity, active on ``event_date``,
    minus the source (sorted)."""
    found: set[str] = set()
    held = view.integrations.get(subject, ())
    for subscription in view.subscriptions.get(service.id, ()):
        who = subscription.institution
        if who == exclude or who in found:
            continue
        inst = view.institutions.get(who)
        if inst is None or not inst.active:
            continue
        if any(i.institution == who and i.period.contains(event_date)
               and (not subscription.capacities or i.capacity in subscription.capacities)
               for i in held):
            found.add(who)
    return tuple(sorted(found))


def fan_out(
    service: Service, subject: str, period: Period, view: DirectoryView, day: date,
    exclude: str = "", capacities: Iterable[int] = (),
) -> tuple[str, ...]:
    """Institutions (sorted) holding an integration of ``subject`` active over ``period``, in
    a relevant capacity, themselves active and authorized for ``service``."""
    wanted = frozenset(capacities) or service.capacities
    found: set[str] = set()
    for integration in view.integrations.get(subject, ()):
        who = integration.institution
        if who == exclude or who in found:
            continue
        if wanted and integration.capacity not in wanted:
            continue
        if not (integration.period.contains(period.begin)
                and (period.end is None or integration.period.contains(period.end))):
            continue
        key = ("r", service.id, who, day)
        ok = view._memo.get(key)
        if ok is None:
            inst = view.institutions.get(who)
            ok = inst is not None and inst.active and any(
                a.applies_to(inst) and a.period.contains(day)
                for a in view.authorizations.get(service.id, ()))
            view._memo[key] = ok
        if not ok:
            continue
        found.add(who)
    return tuple(sorted(found))


# -- identity of entities in the revision log ------------------------------------------------

Entity = (Institution | Service | Authorization | Integration | Replacement | Subscription
          | RevokedCertificate)

PUBLIC = ""


def owner_of(entity: Entity) -> str:
    """Whose fragment a change belongs to: ``""`` (everyone), an institution, or
    ``"sector:<n>"`` (every institution of that sector)."""
    if isinstance(entity, Authorization):
        return entity.institution or f"sector:{entity.sector}"
    if isinstance(entity, (Integration, Subscription)):
        return entity.institution
    return PUBLIC


def fragment_owners(institution: Institution) -> tuple[str, ...]:
    """The owners whose changes make up ``institution``'s fragment."""
    return (PUBLIC, institution.enterprise_number, f"sector:{institution.sector}")


def kind_of(entity: Entity) -> str:
    return {
        Institution: "institution", Service: "service", Authorization: "authorization",
        Integration: "integration", Replacement: "replacement", Subscription: "subscription",
        RevokedCertificate: "revoked_certificate",
    }[type(entity)]


def key_of(entity: Entity) -> str:
    """The entity's identity within its kind (a later put replaces, a delete removes)."""
    if isinstance(entity, Institution):
        return entity.enterprise_number
    if isinstance(entity, Service):
        return f"{entity.id}/{entity.version}"
    if isinstance(entity, (Authorization, Subscription)):
        return entity.id
    if isinstance(entity, Integration):
        return f"{entity.subject}/{entity.institution}/{entity.capacity}/{entity.period.begin}"
    if isinstance(entity, Replacement):
        return entity.old_number
    return entity.serial


def problem_of(entity: Entity) -> str | None:  # noqa: C901 - one check list per entity kind
    """Why an entity cannot enter the directory, or None."""
    from node.core.identifiers import enterprise_number_problem

    def enterprise(value: str, what: str) -> str | None:
        p = enterprise_number_problem(value)
        return None if p is None else f"{what} {value!r}: {p}"

    if isinstance(entity, Institution):
        if entity.status not in ("active", "suspended"):
            return f"status {entity.status!r} must be active or suspended"
        return enterprise(entity.enterprise_number, "enterprise_number")
    if isinstance(entity, Service):
        if not entity.id:
            return "service id is required"
        if entity.kind not in KINDS:
            return f"kind {entity.kind!r} must be one of {', '.join(KINDS)}"
        if entity.subject_type not in SUBJECT_KINDS:
            return f"subject_type {entity.subject_type!r} must be one of {', '.join(SUBJECT_KINDS)}"
        if entity.routing not in ROUTINGS:
            return f"routing {entity.routing!r} must be one of {', '.join(ROUTINGS)}"
        if entity.routing == "fixed":
            return enterprise(entity.provider, "provider")
        return None
    if isinstance(entity, Authorization):
        if not entity.id or not entity.service_id:
            return "authorization id and service_id are required"
        if bool(entity.institution) == (entity.sector is not None):
            return "an authorization names exactly one of institution or sector"
        return enterprise(entity.institution, "institution") if entity.institution else None
    if isinstance(entity, Integration):
        problem = subject_problem(entity.subject)
        if problem:
            return problem
        if entity.period.end is not None and entity.period.end < entity.period.begin:
            return "integration ends before it begins"
        return enterprise(entity.institution, "institution")
    if isinstance(entity, Replacement):
        return subject_problem(entity.old_number) or subject_problem(entity.new_number)
    if isinstance(entity, Subscription):
        if not entity.id or not entity.service_id:
            return "subscription id and service_id are required"
        return enterprise(entity.institution, "institution")
    if not entity.serial or any(c not in "0123456789abcdef" for c in entity.serial):
        return f"serial {entity.serial!r} must be lower-case hex"
    return None


def subject_problem(number: str) -> str | None:
    """A subject is a citizen number (11 digits) or an enterprise number (10 digits)."""
    from node.core.identifiers import citizen_number_problem, enterprise_number_problem

    if len(number) == 11:
        p = citizen_number_problem(number)
    elif len(number) == 10:
        p = enterprise_number_problem(number)
    else:
        p = "not a citizen (11 digits) or enterprise (10 digits) number"
    return None if p is None else f"subject {number!r}: {p}"
