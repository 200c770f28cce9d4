"""Domain errors raised across the edge of an RPC, and how they are told apart.

    CrossroadsError                 expected: the peer or the operator did something wrong
    ├── Unauthenticated             no, unverifiable or revoked certificate; wrong network
    ├── PermissionDenied            authenticated, but not allowed to call this
    ├── InvalidArgument             a request field is malformed or out of range
    ├── ResourceExhausted           a limit was hit (batch too large)
    └── Unavailable                 stopping, or a dependency is down: retry later

Each carries a stable machine-readable ``reason`` (UPPER_SNAKE). ``node.wire.errors`` maps
each class to a gRPC status code; anything else escaping a handler is a bug (INTERNAL).
Per-envelope refusals are not exceptions: they are :class:`node.core.envelope.Decision`.
"""

from __future__ import annotations

__all__ = [
    "CrossroadsError",
    "InvalidArgument",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]


class CrossroadsError(Exception):
    reason = "ERROR"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class Unauthenticated(CrossroadsError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(CrossroadsError):
    reason = "PERMISSION_DENIED"


class InvalidArgument(CrossroadsError):
    reason = "INVALID_ARGUMENT"


class ResourceExhausted(CrossroadsError):
    reason = "RESOURCE_EXHAUSTED"


class Unavailable(CrossroadsError):
    reason = "UNAVAILABLE"
