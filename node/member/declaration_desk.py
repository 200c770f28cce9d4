"""The contributions institution's desk: an accepted immediate declaration becomes a mutation.

A node configured with ``emit_employment_mutations = true`` is the social-security
contributions institution of its network. For every ``declaration.immediate`` envelope the
hub delivers to it, the node checks the declaration once more (the sender's node already did,
but the receiver trusts nobody's validation but its own) and, when it is a valid recruitment
or discharge, builds the ``mutation.employment`` envelope that the hub then pushes to the
subscribers holding the worker (docs/SERVICES.md, "The flow"):

* subject: the worker; period begin: the mutation's event date (start of employment for a
  recruitment, end for a discharge), which is the date the hub's subscriber rules look at;
* payload: :class:`~node.core.declarations.EmploymentMutation` whose
  ``source_declaration_id`` is the declaration's hub ticket;
* sender ticket: ``employment-mutation:<hub ticket>``, so the institution's applications and
  the audit log can tie the mutation to its declaration.

**Exactly once.** :meth:`NodeStore.store_delivery` queues the mutation in the outbox in the
same transaction that stores the declaration in the inbox, and only when the declaration is
new there: a redelivered declaration (same hub ticket, after a crash of either side) is a
duplicate and emits nothing; a crash before the commit leaves neither.

A declaration that does not validate (or a discharge/recruitment-less kind) is still stored
for the institution's application, it just emits no mutation; the reason is logged.
"""

from __future__ import annotations

from datetime import date

import structlog
from google.protobuf.message import DecodeError

from node.core.clock import Clock, SystemClock, local_date
from node.core.declarations import (
    IMMEDIATE,
    MUTATION_EMPLOYMENT,
    ImmediateDeclaration,
    employment_mutation_for,
    validate,
)
from node.wire.declarations import (
    MEDIA_TYPE_EMPLOYMENT_MUTATION,
    PayloadError,
    decode_payload,
    encode_employment_mutation,
)
from node.wire.gen.crossroads.v1 import envelope_pb2

__all__ = ["SENDER_TICKET_PREFIX", "DeclarationDesk"]

log = structlog.get_logger("crossroads.declarations")

SENDER_TICKET_PREFIX = "employment-mutation:"


class DeclarationDesk:
    """Turns delivered immediate declarations into employment mutations sent by ``institution``."""

    def __init__(self, institution: str, clock: Clock | None = None) -> None:
        self.institution = institution
        self.clock = clock or SystemClock()

    def mutation_for(self, hub_ticket: str, raw: bytes, today: date | None = None) -> bytes | None:
        """The serialized ``mutation.employment`` envelope for a delivered envelope, or None
        (not an immediate declaration, or one that emits nothing)."""
        envelope = envelope_pb2.Envelope()
        try:
            envelope.ParseFromString(raw)
        except DecodeError:
            return None
        if envelope.service_id != IMMEDIATE:
            return None
        payload = envelope.payload
        try:
            declaration = decode_payload(IMMEDIATE, payload.media_type, payload.data)
            errors = validate(declaration, today or local_date(self.clock), envelope.subject.number)
        except PayloadError as exc:
            errors = [exc.error]
        if errors:
            log.warning("declaration_emits_no_mutation", hub_ticket=hub_ticket,
                        fields=sorted({e.path for e in errors}))
            return None
        assert isinstance(declaration, ImmediateDeclaration)
        try:
            mutation = employment_mutation_for(declaration, hub_ticket)
        except ValueError as exc:
            log.warning("declaration_emits_no_mutation", hub_ticket=hub_ticket, why=str(exc))
            return None
        out = envelope_pb2.Envelope(
            service_id=MUTATION_EMPLOYMENT,
            sender=self.institution,
            sender_ticket=f"{SENDER_TICKET_PREFIX}{hub_ticket}",
            sent_at_unix_us=self.clock.now_us(),
            period=envelope_pb2.Period(begin_date=mutation.event_date),
            payload=envelope_pb2.Payload(data=encode_employment_mutation(mutation),
                                         media_type=MEDIA_TYPE_EMPLOYMENT_MUTATION),
        )
        out.subject.type = envelope_pb2.SUBJECT_TYPE_CITIZEN
        out.subject.number = mutation.worker_citizen_number
        return out.SerializeToString()
