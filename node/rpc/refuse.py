"""Ending a call refused by a domain error: the one place a call is aborted.

``await abort_refused(context, error)`` ends the call with the error's status code, the
message ``REASON: text`` and the reason as a ``google.rpc.ErrorInfo`` in the status details
(:func:`node.wire.errors.rich_status`); it never returns. :func:`node.rpc.edge.refuse` (the
servicers' guards, the authentication interceptor) logs the refusal, then calls it; the
malformed-message interceptor calls it directly."""

from __future__ import annotations

from typing import NoReturn

import grpc

from node.core.errors import CrossroadsError
from node.wire.errors import rich_status

__all__ = ["abort_refused"]


async def abort_refused(context: grpc.aio.ServicerContext, error: CrossroadsError) -> NoReturn:
    status = rich_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: context.abort raises") from error
