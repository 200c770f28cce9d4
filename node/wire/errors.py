"""The one table from domain errors to gRPC status codes."""

from __future__ import annotations

import grpc

from node.core import errors

__all__ = ["STATUS", "status_of"]

STATUS: dict[type[errors.CrossroadsError], grpc.StatusCode] = {
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_of(error: errors.CrossroadsError) -> tuple[grpc.StatusCode, str]:
    """The status code and details (``REASON: message``) for a domain error."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls], f"{error.reason}: {error}"
    return grpc.StatusCode.INTERNAL, f"{error.reason}: {error}"
