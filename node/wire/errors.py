"""Refusals on the wire: the one table from domain errors to gRPC status codes, and the
reason travelling as a ``google.rpc.ErrorInfo`` in the status details, both ways.

A refused call ends with the error class's status code (:data:`STATUS`), the message
``REASON: text`` (for people and logs) and, in the ``grpc-status-details-bin`` trailer, a
``google.rpc.Status`` holding one ``ErrorInfo``: ``reason`` (a
:class:`~node.core.reasons.CallReason` name), ``domain`` :data:`DOMAIN` and the error's
``metadata``. Clients read it back with :func:`call_error`, never by parsing the message; a
status without a Crossroads ``ErrorInfo``, or with a reason this code does not know, reads
as ``CallReason.UNKNOWN`` (never an exception).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from node.core import errors
from node.core.reasons import CallReason

__all__ = ["DOMAIN", "STATUS", "CallError", "call_error", "reason_named", "rich_status", "status_of"]

#: The ``ErrorInfo.domain`` of every Crossroads refusal.
DOMAIN = "crossroads.v1"

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


def rich_status(error: errors.CrossroadsError) -> grpc.Status:
    """The whole status of a refused call: code, message and the ``ErrorInfo`` trailer."""
    code, message = status_of(error)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN,
                                       metadata=dict(error.metadata))
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(info)
    return rpc_status.to_status(status)


class CallError(NamedTuple):
    """What a client knows of a failed call (:func:`call_error`)."""

    code: grpc.StatusCode | None
    reason: CallReason
    message: str
    metadata: Mapping[str, str]


def call_error(exc: grpc.RpcError) -> CallError:
    """The status code, reason, message and metadata of a failed call (sync or grpc.aio)."""
    code = exc.code() if hasattr(exc, "code") else None
    message = (exc.details() if hasattr(exc, "details") else None) or ""
    info = _error_info(exc)
    if info is None:
        return CallError(code, CallReason.UNKNOWN, message, {})
    return CallError(code, reason_named(info.reason), message, dict(info.metadata))


def reason_named(name: str) -> CallReason:
    """The reason of that name; ``UNKNOWN`` for a name this code does not know (or none)."""
    return CallReason.__members__.get(name, CallReason.UNKNOWN)


def _error_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The Crossroads ``ErrorInfo`` in the status details of ``exc``, if there is one."""
    if not hasattr(exc, "trailing_metadata"):
        return None
    try:
        status = rpc_status.from_call(exc)
        for detail in status.details if status is not None else ():
            info = error_details_pb2.ErrorInfo()
            if detail.Is(info.DESCRIPTOR) and detail.Unpack(info) and info.domain == DOMAIN:
                return info
    except (ValueError, DecodeError):  # details not ours, or not matching the call's status
        pass
    return None
