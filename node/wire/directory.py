"""Converters between directory entities (node.core.directory) and crossroads.v1 messages."""

from __future__ import annotations

from datetime import date

from node.core.directory import (
    Authorization,
    Institution,
    Integration,
    Period,
    Replacement,
    RevokedCertificate,
    Service,
    Subscription,
)
from node.wire.gen.crossroads.v1 import directory_pb2 as pb

__all__ = ["Entity", "change_from_proto", "change_to_proto", "date_from_text", "date_to_text"]

Entity = (Institution | Service | Authorization | Integration | Replacement | Subscription
          | RevokedCertificate)


def date_from_text(text: str, default: date | None = None) -> date | None:
    """ISO date, or ``default`` when empty. Raises ValueError with the bad text."""
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def date_to_text(day: date | None) -> str:
    return "" if day is None or day == date.min else day.isoformat()


def _period(begin: str, end: str) -> Period:
    return Period(date_from_text(begin, date.min) or date.min, date_from_text(end))


def change_to_proto(entity: Entity, delete: bool = False, revision: int = 0) -> pb.DirectoryChange:
    change = pb.DirectoryChange(revision=revision, delete=delete)
    if isinstance(entity, Institution):
        change.institution.CopyFrom(pb.InstitutionEntry(
            enterprise_number=entity.enterprise_number, sector=entity.sector, name=entity.name,
            endpoint=entity.endpoint, cert_fingerprint=entity.cert_fingerprint,
            status=entity.status))
    elif isinstance(entity, Service):
        change.service.CopyFrom(pb.ServiceEntry(
            id=entity.id, version=entity.version, kind=entity.kind,
            subject_type=entity.subject_type, routing=entity.routing, provider=entity.provider,
            integration_required=entity.integration_required, min_phase=entity.min_phase,
            capacities=sorted(entity.capacities)))
    elif isinstance(entity, Authorization):
        change.authorization.CopyFrom(pb.AuthorizationEntry(
            id=entity.id, service_id=entity.service_id, institution=entity.institution,
            sector=entity.sector or 0, has_sector=entity.sector is not None,
            legal_context=entity.legal_context, capacities=sorted(entity.capacities),
            valid_from=date_to_text(entity.period.begin),
            valid_to=date_to_text(entity.period.end)))
    elif isinstance(entity, Integration):
        change.integration.CopyFrom(pb.IntegrationEntry(
            subject=entity.subject, institution=entity.institution, capacity=entity.capacity,
            phase=entity.phase, begin_date=date_to_text(entity.period.begin),
            end_date=date_to_text(entity.period.end)))
    elif isinstance(entity, Replacement):
        change.replacement.CopyFrom(pb.ReplacementEntry(old_number=entity.old_number,
                                                        new_number=entity.new_number))
    elif isinstance(entity, Subscription):
        change.subscription.CopyFrom(pb.SubscriptionEntry(
            id=entity.id, institution=entity.institution, service_id=entity.service_id,
            capacities=sorted(entity.capacities), condition=entity.condition))
    elif isinstance(entity, RevokedCertificate):
        change.revoked_certificate.CopyFrom(pb.RevokedCertificateEntry(
            serial=entity.serial, institution=entity.institution, reason=entity.reason))
    else:  # pragma: no cover - exhaustive above
        raise TypeError(type(entity))
    return change


def change_from_proto(change: pb.DirectoryChange) -> tuple[Entity, bool]:
    """The entity and whether it is a delete. Raises ValueError naming a bad field."""
    which = change.WhichOneof("entity")
    if which == "institution":
        e = change.institution
        entity: Entity = Institution(e.enterprise_number, e.sector, e.name, e.endpoint,
                                     e.cert_fingerprint, e.status or "active")
    elif which == "service":
        s = change.service
        entity = Service(s.id, s.version or 1, s.kind or "consultation",
                         s.subject_type or "citizen", s.routing or "fixed", s.provider,
                         s.integration_required, s.min_phase, frozenset(s.capacities))
    elif which == "authorization":
        a = change.authorization
        entity = Authorization(a.id, a.service_id, a.institution,
                               a.sector if a.has_sector else None, a.legal_context,
                               frozenset(a.capacities), _period(a.valid_from, a.valid_to))
    elif which == "integration":
        i = change.integration
        entity = Integration(i.subject, i.institution, i.capacity, i.phase,
                             _period(i.begin_date, i.end_date))
    elif which == "replacement":
        entity = Replacement(change.replacement.old_number, change.replacement.new_number)
    elif which == "subscription":
        s2 = change.subscription
        entity = Subscription(s2.id, s2.institution, s2.service_id, frozenset(s2.capacities),
                              s2.condition)
    elif which == "revoked_certificate":
        r = change.revoked_certificate
        entity = RevokedCertificate(r.serial.lower(), r.institution, r.reason)
    else:
        raise ValueError("change names no entity")
    return entity, change.delete
