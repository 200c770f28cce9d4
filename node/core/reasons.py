"""Stable reason codes: envelope outcomes (:class:`Reason`) and refused calls (:class:`CallReason`).

:class:`Reason`: the same names appear in the wire enum ``crossroads.v1.Reason``, in batch
acks, in the node's local checks and in the audit log.

:class:`CallReason`: why a whole call (or stream) was refused. It travels in the gRPC status
details as a ``google.rpc.ErrorInfo`` (reason, domain ``crossroads.v1``, metadata;
:mod:`node.wire.errors`), starts the status message (``REASON: text``, for people and logs),
and names refusals in the hub's audit log and in the refusal log lines. A client reads it
back with :func:`node.wire.errors.call_error`; a status without our ``ErrorInfo`` (another
server, a proxy, a reason newer than this code) reads as :attr:`CallReason.UNKNOWN`.

Both lists, with each code's meaning, are in docs/PROTOCOL.md (a test keeps them complete).
Codes are only ever added, never renamed or reused.
"""

from __future__ import annotations

import enum

__all__ = ["STORED", "CallReason", "Reason"]


class Reason(enum.StrEnum):
    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"
    MALFORMED_ENVELOPE = "MALFORMED_ENVELOPE"
    SENDER_MISMATCH = "SENDER_MISMATCH"
    UNKNOWN_SERVICE = "UNKNOWN_SERVICE"
    UNKNOWN_RECEIVER = "UNKNOWN_RECEIVER"
    SUBJECT_NUMBER_INVALID = "SUBJECT_NUMBER_INVALID"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    PAYLOAD_DIGEST_MISMATCH = "PAYLOAD_DIGEST_MISMATCH"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    INVALID_FIELD = "INVALID_FIELD"
    NOT_AUTHORIZED = "NOT_AUTHORIZED"
    NOT_INTEGRATED = "NOT_INTEGRATED"
    PHASE_TOO_LOW = "PHASE_TOO_LOW"
    NO_RECEIVER = "NO_RECEIVER"
    SUBJECT_REPLACED = "SUBJECT_REPLACED"
    TOO_MANY_IN_FLIGHT = "TOO_MANY_IN_FLIGHT"
    DUPLICATE_RECEIVER = "DUPLICATE_RECEIVER"
    TOO_MANY_RECEIVERS = "TOO_MANY_RECEIVERS"
    UNDELIVERABLE = "UNDELIVERABLE"


#: Outcomes meaning "the hub holds this envelope".
STORED = frozenset({Reason.ACCEPTED, Reason.DUPLICATE})


class CallReason(enum.StrEnum):
    """Why a call was refused; the gRPC status code is the error class's
    (:mod:`node.core.errors`), listed per reason in docs/PROTOCOL.md."""

    #: Read back from a status without a Crossroads ``ErrorInfo``; never sent (also the reason
    #: of the base class :class:`~node.core.errors.CrossroadsError`, which is never raised).
    UNKNOWN = "UNKNOWN"
    # The generic reason of each error class, when the refusal names no better one.
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    # Who is calling (node/rpc/peer.py, node/rpc/auth_interceptor.py, node/hub/callers.py).
    NO_CERTIFICATE = "NO_CERTIFICATE"
    BAD_IDENTITY = "BAD_IDENTITY"
    WRONG_NETWORK = "WRONG_NETWORK"
    CERTIFICATE_REVOKED = "CERTIFICATE_REVOKED"
    CERTIFICATE_NOT_REGISTERED = "CERTIFICATE_NOT_REGISTERED"
    CRL_STALE = "CRL_STALE"
    WRONG_ROLE = "WRONG_ROLE"
    UNKNOWN_INSTITUTION = "UNKNOWN_INSTITUTION"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    # The node's local API (node/member/app_permissions.py).
    NOT_AN_APPLICATION = "NOT_AN_APPLICATION"
    APPLICATION_OF_ANOTHER_INSTITUTION = "APPLICATION_OF_ANOTHER_INSTITUTION"
    APPLICATION_UNKNOWN = "APPLICATION_UNKNOWN"
    APPLICATION_NOT_PERMITTED = "APPLICATION_NOT_PERMITTED"
    # Limits and request fields.
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    TOO_MANY_IN_FLIGHT = Reason.TOO_MANY_IN_FLIGHT.value
    ORIGIN_TOO_LONG = "ORIGIN_TOO_LONG"
    SEQUENCE_OUT_OF_RANGE = "SEQUENCE_OUT_OF_RANGE"
    TOO_MANY_SEQUENCES = "TOO_MANY_SEQUENCES"
    TOO_MANY_TICKETS = "TOO_MANY_TICKETS"
    LIMIT_TOO_LARGE = "LIMIT_TOO_LARGE"
    BAD_ENDPOINT = "BAD_ENDPOINT"
    INVALID_ENTRY = "INVALID_ENTRY"
    MALFORMED_MESSAGE = "MALFORMED_MESSAGE"
    # Retry later.
    NOT_STORED = "NOT_STORED"
    RESEND_RACED = "RESEND_RACED"
    HUB_UNAVAILABLE = "HUB_UNAVAILABLE"
