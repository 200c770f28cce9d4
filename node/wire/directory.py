"""Converters between directory entities (node.core.directory) and crossroads.v1 messages.

A ``DirectoryChange`` carries one entity in the oneof field named after its kind; the entry
message's fields are the entity's fields (:mod:`node.core.directory_fields`), plus
``has_sector`` for an authorization (proto3 cannot tell sector 0 from no sector).
"""

from __future__ import annotations

import operator
from typing import Any

from node.core.directory import Entity
from node.core.directory_fields import FIELDS, from_values, kind_and_fields
from node.wire.gen.crossroads.v1 import directory_pb2 as pb

__all__ = ["change_from_proto", "change_to_proto"]

#: Kind -> its entry message (the oneof field of DirectoryChange has the kind's name).
_ENTRY: dict[str, Any] = {
    "institution": pb.InstitutionEntry,
    "service": pb.ServiceEntry,
    "authorization": pb.AuthorizationEntry,
    "subscription": pb.SubscriptionEntry,
    "integration": pb.IntegrationEntry,
    "replacement": pb.ReplacementEntry,
    "revoked_certificate": pb.RevokedCertificateEntry,
}

#: Kind -> the entry message's fields as a tuple, in FIELDS order.
_GETTERS = {kind: operator.attrgetter(*(f.name for f in fields)) for kind, fields in FIELDS.items()}
_SECTOR = [f.name for f in FIELDS["authorization"]].index("sector")


def change_to_proto(entity: Entity, delete: bool = False, revision: int = 0) -> pb.DirectoryChange:
    kind, values = kind_and_fields(entity)
    if kind == "authorization":
        values["has_sector"] = values["sector"] is not None
        values["sector"] = values["sector"] or 0
    return pb.DirectoryChange(revision=revision, delete=delete, **{kind: _ENTRY[kind](**values)})


def change_from_proto(change: pb.DirectoryChange) -> tuple[Entity, bool]:
    """The entity and whether it is a delete. Raises ValueError naming a bad field."""
    kind = change.WhichOneof("entity")
    if kind is None:
        raise ValueError("change names no entity")
    entry = getattr(change, kind)
    values = _GETTERS[kind](entry)
    if kind == "authorization" and not entry.has_sector:
        values = (*values[:_SECTOR], None, *values[_SECTOR + 1:])
    return from_values(kind, values), change.delete
