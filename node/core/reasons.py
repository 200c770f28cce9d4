"""Stable reason codes for envelope outcomes.

The same names appear in the wire enum ``crossroads.v1.Reason``, in batch acks, in the node's
local checks and in the audit log. Codes are only ever added, never renamed or reused.
"""

from __future__ import annotations

import enum

__all__ = ["Reason", "STORED"]


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
