"""The directory administration service: admin certificates only (node/hub/callers.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import structlog

from node.core.bounds import MAX_WHO_CONSULTED
from node.core.directory import (
    Authorization,
    Entity,
    Institution,
    Replacement,
    RevokedCertificate,
    Service,
    Subscription,
)
from node.core.errors import InvalidArgument
from node.core.reasons import CallReason
from node.hub.directory import Directory
from node.rpc.auth_interceptor import current_peer
from node.rpc.edge import unary
from node.store.protocols import AuditLog
from node.wire.directory import change_from_proto, change_to_proto
from node.wire.gen.crossroads.v1 import directory_pb2 as pb
from node.wire.gen.crossroads.v1 import directory_pb2_grpc

__all__ = ["AdminService"]

log = structlog.get_logger(__name__)

_PARTS: dict[str, tuple[type, ...]] = {
    "institutions": (Institution,),
    "services": (Service,),
    "authorizations": (Authorization,),
    "subscriptions": (Subscription,),
    "replacements": (Replacement,),
    "revoked": (RevokedCertificate,),
    "": (Institution, Service, Authorization, Subscription, Replacement, RevokedCertificate),
}


@dataclass(eq=False)
class AdminService(directory_pb2_grpc.DirectoryAdminServicer):
    directory: Directory
    audit: AuditLog
    #: Commits records that go with the next group (a consultation's ANSWERED records),
    #: so a query sees every answer the hub has given.
    flush_audit: Callable[[], Awaitable[None]]

    @unary("DirectoryAdmin.Apply")
    async def Apply(  # noqa: N802 - gRPC method name
        self, request: pb.ApplyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyResponse:
        changes: list[tuple[Entity, bool]] = []
        for index, change in enumerate(request.changes):
            try:
                changes.append(change_from_proto(change))
            except ValueError as exc:
                raise InvalidArgument(f"change {index}: {exc}", CallReason.INVALID_ENTRY,
                                      {"change": str(index)}) from exc
        revision = await self.directory.apply(changes)
        log.info("directory_changed", admin=current_peer().name, changes=len(changes),
                 revision=revision)
        return pb.ApplyResponse(revision=revision)

    @unary("DirectoryAdmin.Show")
    async def Show(  # noqa: N802 - gRPC method name
        self, request: pb.ShowRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShowResponse:
        response = pb.ShowResponse(revision=self.directory.revision)
        if request.part == "integrations":
            if not request.subject:
                raise InvalidArgument("showing integrations needs a subject")
            found = await self.directory.store.integrations_of([request.subject])
            entities: list[Entity] = list(found.get(request.subject, []))
        elif request.part in _PARTS:
            kinds = _PARTS[request.part]
            entities = [e for e in await self.directory.store.small_tables()
                        if isinstance(e, kinds)]
            if Replacement in kinds:
                found_r = await self.directory.store.replacements_of(
                    [request.subject]) if request.subject else {}
                entities += [Replacement(o, n) for o, n in found_r.items()]
        else:
            raise InvalidArgument(f"unknown part {request.part!r}")
        response.entries.extend(change_to_proto(e) for e in entities)
        return response

    @unary("DirectoryAdmin.Compact")
    async def Compact(  # noqa: N802 - gRPC method name
        self, request: pb.CompactRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompactResponse:
        keep_after = request.keep_after or max(0, self.directory.revision - 10_000)
        revision, removed = await self.directory.store.compact(keep_after)
        return pb.CompactResponse(compacted_revision=revision, removed=removed)

    @unary("DirectoryAdmin.WhoConsulted")
    async def WhoConsulted(  # noqa: N802 - gRPC method name
        self, request: pb.WhoConsultedRequest, context: grpc.aio.ServicerContext
    ) -> pb.WhoConsultedResponse:
        if not request.subject:
            raise InvalidArgument("subject is required")
        if request.limit > MAX_WHO_CONSULTED:
            raise InvalidArgument(f"limit is at most {MAX_WHO_CONSULTED}", CallReason.LIMIT_TOO_LARGE)
        await self.flush_audit()
        found = await self.audit.who_consulted(
            request.subject, request.since_unix_us or None, request.limit or 1000)
        return pb.WhoConsultedResponse(records=[
            pb.ConsultationRecord(
                at_unix_us=c.at_us, event=c.event, institution=c.institution,
                service_id=c.service_id, outcome=c.outcome, hub_ticket=c.hub_ticket,
                receivers=list(c.receivers))
            for c in found])
