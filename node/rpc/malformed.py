"""Requests that do not parse: a clear refusal, a hook to log or audit it, the stream spared
where it can be.

A peer's message that is not a valid protobuf of the method's request type used to surface
as ``UNKNOWN: Unexpected DecodeError`` and end the stream, with nothing in the audit log.
:class:`MalformedRequests`, a server interceptor, gives every method a request deserializer
that never raises: a message that does not parse becomes a :class:`Malformed` marker, and

* a unary request is refused with ``INVALID_ARGUMENT`` and the stable reason
  ``MALFORMED_MESSAGE``;
* on a request stream where every call carries its own id (``keep_going``: the multiplexed
  consultation streams, :mod:`node.rpc.multiplex`) the message is skipped and the stream goes
  on: the calls already taken are answered, the malformed message's own calls cannot be named
  and time out at their caller;
* on any other request stream (ordered batches acknowledged in turn: ``Hub.Submit``,
  ``Node.Deliver``) the stream ends with ``INVALID_ARGUMENT``/``MALFORMED_MESSAGE`` once the
  messages before it are answered: a batch that cannot be read cannot be acknowledged, and
  the sender resends from its last acknowledged one on a new stream.

In every case the message is logged (``malformed_message``) and ``on_malformed(method,
context, detail)``, if given, is awaited first (the hub audits a ``REJECTED`` record). The
process and every other stream go on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from node.core.errors import InvalidArgument
from node.core.reasons import CallReason
from node.rpc.handler_wrapper import HandlerWrapper
from node.rpc.refuse import abort_refused

__all__ = ["CALL_STREAMS", "Malformed", "MalformedRequests", "short_name"]

log = structlog.get_logger(__name__)
#: The request streams where every call carries its own id (:mod:`node.rpc.multiplex`,
#: ``Local.Serve``): a malformed message there is skipped and the stream goes on.
CALL_STREAMS = frozenset({
    "/crossroads.v1.Hub/Consultations", "/crossroads.v1.Node/Answers",
    "/crossroads.v1.Local/Consultations", "/crossroads.v1.Local/Serve",
})
OnMalformed = Callable[[str, grpc.aio.ServicerContext, str], Awaitable[None]]


class Malformed:
    """A request message that did not parse (what the tolerant deserializer returns)."""

    __slots__ = ("error", "size")

    def __init__(self, size: int, error: str) -> None:
        self.size, self.error = size, error


class MalformedRequests(HandlerWrapper):
    def __init__(self, on_malformed: OnMalformed | None = None,
                 keep_going: Collection[str] = CALL_STREAMS) -> None:
        self._on_malformed = on_malformed
        self.keep_going = frozenset(keep_going)

    async def on_malformed(self, method: str, context: grpc.aio.ServicerContext,
                           detail: str) -> None:
        log.warning("malformed_message", method=short_name(method), peer=context.peer(),
                    detail=detail)
        if self._on_malformed is not None:
            await self._on_malformed(method, context, detail)

    def wrap(  # noqa: C901 - one wrapper per kind of call: grpc.aio dispatches on it
        self, handler: grpc.RpcMethodHandler, method: str,
    ) -> grpc.RpcMethodHandler:
        if handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer
        kind = _type_name(parse)

        def tolerant(raw: bytes) -> Any:
            try:
                return parse(raw)
            except DecodeError as exc:
                return Malformed(len(raw), str(exc))

        if handler.request_streaming:
            keep_going = method in self.keep_going

            def checked(requests: AsyncIterator[Any],
                        context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                return self._checked(requests, context, method, kind, keep_going)

            if handler.response_streaming:
                streams = handler.stream_stream

                async def stream_stream(requests: AsyncIterator[Any],
                                        context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                    async for response in streams(checked(requests, context), context):
                        yield response

                return handler._replace(request_deserializer=tolerant,
                                        stream_stream=stream_stream)
            answers = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any],
                                   context: grpc.aio.ServicerContext) -> Any:
                return await answers(checked(requests, context), context)

            return handler._replace(request_deserializer=tolerant, stream_unary=stream_unary)
        if handler.response_streaming:
            streams = handler.unary_stream

            async def unary_stream(request: Any,
                                   context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if isinstance(request, Malformed):
                    await self._refuse(request, context, method, kind)
                async for response in streams(request, context):
                    yield response

            return handler._replace(request_deserializer=tolerant, unary_stream=unary_stream)
        answers = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                await self._refuse(request, context, method, kind)
            return await answers(request, context)

        return handler._replace(request_deserializer=tolerant, unary_unary=unary_unary)

    async def _checked(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                       method: str, kind: str, keep_going: bool) -> AsyncIterator[Any]:
        number = 0
        async for request in requests:
            number += 1
            if not isinstance(request, Malformed):
                yield request
                continue
            detail = _detail(number, method, kind, request)
            await self.on_malformed(method, context, detail)
            if not keep_going:
                raise InvalidArgument(detail, CallReason.MALFORMED_MESSAGE)

    async def _refuse(self, request: Malformed, context: grpc.aio.ServicerContext, method: str,
                      kind: str) -> None:
        """Refuse a unary request that did not parse (``context.abort`` raises)."""
        detail = _detail(1, method, kind, request)
        await self.on_malformed(method, context, detail)
        await abort_refused(context, InvalidArgument(detail, CallReason.MALFORMED_MESSAGE))


def short_name(method: str) -> str:
    """``/crossroads.v1.Hub/Submit`` -> ``Hub.Submit`` (as in the logs and the audit log)."""
    service, _, name = method.rpartition("/")
    return f"{service.rpartition('.')[2]}.{name}"


def _detail(number: int, method: str, kind: str, request: Malformed) -> str:
    return (f"message {number} on {short_name(method)} ({request.size} bytes) is not a"
            f" valid {kind}: {request.error}")


def _type_name(parse: Callable[[bytes], Any]) -> str:
    owner = getattr(parse, "__self__", None)  # e.g. EnvelopeBatch.FromString
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return descriptor.full_name if descriptor is not None else "request"
