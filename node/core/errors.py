"""Domain errors raised across the edge of an RPC, and how they are told apart.

    CrossroadsError                 expected: the peer or the operator did something wrong
    ├── Unauthenticated             no, unverifiable or revoked certificate; wrong network
    ├── PermissionDenied            authenticated, but not allowed to call this
    ├── InvalidArgument             a request field is malformed or out of range
    ├── ResourceExhausted           a limit was hit (batch too large)
    └── Unavailable                 stopping, or a dependency is down: retry later

Each carries a stable machine-readable ``reason`` (a :class:`~node.core.reasons.CallReason`,
by default the class's generic one) and optional ``metadata`` (short strings naming what was
refused, e.g. ``change``: the index of a refused directory change). ``node.wire.errors`` maps
each class to a gRPC status code and the reason and metadata to the status's ``ErrorInfo``;
anything else escaping a handler is a bug (INTERNAL).
Per-envelope refusals are not exceptions: they are :class:`node.core.envelope.Decision`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from node.core.reasons import CallReason

__all__ = [
    "CrossroadsError",
    "InvalidArgument",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]


class CrossroadsError(Exception):
    reason = CallReason.UNKNOWN
    metadata: Mapping[str, str] = MappingProxyType({})

    def __init__(self, message: str, reason: CallReason | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        if metadata is not None:
            self.metadata = metadata


class Unauthenticated(CrossroadsError):
    reason = CallReason.UNAUTHENTICATED


class PermissionDenied(CrossroadsError):
    reason = CallReason.PERMISSION_DENIED


class InvalidArgument(CrossroadsError):
    reason = CallReason.INVALID_ARGUMENT


class ResourceExhausted(CrossroadsError):
    reason = CallReason.RESOURCE_EXHAUSTED


class Unavailable(CrossroadsError):
    reason = CallReason.UNAVAILABLE
