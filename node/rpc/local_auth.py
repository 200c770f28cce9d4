"""The local API's gate: who the caller is and whether it may make this call, on every call.

A server interceptor of the node's local server (node/app.py), after
:class:`~node.rpc.malformed.MalformedRequests` (so it only ever sees requests that parse):

* **Identity.** On a TCP local API (mutual TLS: the handshake has verified the client's
  certificate against ``local_tls.ca_cert``) the certificate's identity, revocation checked
  against the node's directory fragment, must be an application of this node's institution
  listed in ``[[applications]]``; on the unix socket the caller is the socket's client
  (node/member/app_permissions.py). A refusal is ``UNAUTHENTICATED`` (no, unreadable or
  revoked certificate) or ``PERMISSION_DENIED``, before the method runs.
* **Permission.** Per method (:data:`ACTIONS`): Submit's envelopes' services against
  ``send`` (the whole call is refused, nothing queued), Outcomes needs a send right, Fetch and
  Acknowledge need ``fetch``, Consult and each call of Consultations need ``consult`` for the
  envelope's service (a refused consultation call gets its own error reply, the stream goes
  on), Serve needs ``answer``: a question for a service the application may not answer is not
  shown to it but answered ``SOURCE_UNAVAILABLE`` on its behalf. Status, health and
  reflection need only a known caller; any other Local method is refused to a restricted
  caller (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from node.core.errors import CrossroadsError
from node.member.app_permissions import (
    APPLICATION_NOT_PERMITTED,
    Action,
    Caller,
    LocalPermissions,
    enter_call,
)
from node.rpc.malformed import short_name
from node.rpc.peer import PeerAuthenticator
from node.wire.errors import status_of
from node.wire.gen.crossroads.v1 import consult_pb2, envelope_pb2

__all__ = ["ACTIONS", "LocalAuth"]

_LOCAL = "/crossroads.v1.Local/"
#: What each Local method needs (None: a known caller is enough).
ACTIONS: dict[str, Action | None] = {
    "Submit": Action.SEND,
    "Outcomes": Action.SEND,
    "Fetch": Action.FETCH,
    "Acknowledge": Action.FETCH,
    "Status": None,
    "Consult": Action.CONSULT,
    "Consultations": Action.CONSULT,
    "Serve": Action.ANSWER,
}


def _service_of(raw: bytes) -> str | None:
    try:
        service: str = envelope_pb2.Envelope.FromString(raw).service_id
    except DecodeError:
        return None  # the service refuses it (MALFORMED_ENVELOPE)
    return service


class LocalAuth(grpc.aio.ServerInterceptor):
    def __init__(self, policy: LocalPermissions, peers: PeerAuthenticator | None) -> None:
        """``peers``: the TLS peer authenticator (TCP local API), None for the unix socket."""
        self.policy = policy
        self.peers = peers

    def caller(self, context: grpc.aio.ServicerContext, method: str) -> Caller:
        if self.peers is None:
            return self.policy.unix_socket
        try:
            peer = self.peers.authenticate(context)
        except CrossroadsError as exc:
            self.policy.refusals.note(context.peer(), method, "", exc.reason, str(exc))
            raise
        return self.policy.application(peer.identity, method)

    async def intercept_service(  # noqa: C901 - one wrapper per kind of call: grpc.aio dispatches on it
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full = handler_call_details.method
        method = short_name(full)
        local = full.startswith(_LOCAL)
        name = full.removeprefix(_LOCAL)
        action = ACTIONS.get(name) if local else None
        unknown = local and name not in ACTIONS

        async def admit(context: grpc.aio.ServicerContext) -> Caller:
            """The caller, allowed to open this call (else the call is refused)."""
            try:
                caller = self.caller(context, method)
                if unknown and not caller.unrestricted:
                    self.policy.refuse(caller.name, method, "", APPLICATION_NOT_PERMITTED,
                                       f"{method} is not open to applications")
                if action is not None and name != "Submit":
                    self.policy.check(caller, method, action)
            except CrossroadsError as exc:
                await context.abort(*status_of(exc))
                raise AssertionError("unreachable") from exc
            enter_call(self.policy, caller)
            return caller

        # grpc.aio calls a behaviour by its kind (coroutine or async generator function), so
        # each wrapper is of the kind it wraps.
        if handler.request_streaming and handler.response_streaming:
            streams = handler.stream_stream
            serve = name == "Serve"

            async def stream_stream(requests: AsyncIterator[Any],
                                    context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                caller = await admit(context)
                if serve and not caller.may_every_service(Action.ANSWER):
                    async for question in self._serve(caller, streams, requests, context):
                        yield question
                    return
                async for response in streams(requests, context):
                    yield response

            return handler._replace(stream_stream=stream_stream)
        if handler.response_streaming:
            responses = handler.unary_stream

            async def unary_stream(request: Any,
                                   context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await admit(context)
                async for response in responses(request, context):
                    yield response

            return handler._replace(unary_stream=unary_stream)
        if handler.request_streaming:
            gather = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any],
                                   context: grpc.aio.ServicerContext) -> Any:
                await admit(context)
                return await gather(requests, context)

            return handler._replace(stream_unary=stream_unary)
        answer = handler.unary_unary
        submit = name == "Submit"

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            caller = await admit(context)
            if submit and not caller.may_every_service(Action.SEND):
                services = {s for s in map(_service_of, request.envelopes) if s is not None}
                try:
                    self.policy.check(caller, method, Action.SEND, sorted(services))
                except CrossroadsError as exc:
                    await context.abort(*status_of(exc))
            return await answer(request, context)

        return handler._replace(unary_unary=unary_unary)

    async def _serve(self, caller: Caller, serve: Any, answers: AsyncIterator[Any],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """Serve for an application allowed to answer some services only: the others'
        questions are answered ``SOURCE_UNAVAILABLE`` on its behalf, never shown to it."""
        on_behalf: asyncio.Queue[consult_pb2.Answer] = asyncio.Queue()
        async for question in serve(_merged(answers, on_behalf), context):
            service = _service_of(question.envelope) or ""
            if caller.may(Action.ANSWER, service):
                yield question
                continue
            detail = f"application {caller.name} may not answer {service}"
            with contextlib.suppress(CrossroadsError):
                self.policy.refuse(caller.name, "Local.Serve", service,
                                   APPLICATION_NOT_PERMITTED, detail)
            on_behalf.put_nowait(consult_pb2.Answer(
                id=question.id, status=consult_pb2.SOURCE_UNAVAILABLE,
                detail=f"{APPLICATION_NOT_PERMITTED}: no application of this institution may"
                       f" answer {service}"))


async def _merged(first: AsyncIterator[Any], second: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    """Items of ``first`` and of ``second`` as they come, until ``first`` ends."""
    it = first.__aiter__()
    nxt: asyncio.Future[Any] | None = None
    got: asyncio.Future[Any] | None = None
    try:
        while True:
            nxt = nxt or asyncio.ensure_future(it.__anext__())
            got = got or asyncio.ensure_future(second.get())
            done, _ = await asyncio.wait({nxt, got}, return_when=asyncio.FIRST_COMPLETED)
            if got in done:
                yield got.result()
                got = None
            if nxt in done:
                try:
                    item = nxt.result()
                except StopAsyncIteration:
                    return
                nxt = None
                yield item
    finally:
        for future in (nxt, got):
            if future is not None and not future.done():
                future.cancel()
                future.add_done_callback(lambda f: f.cancelled() or f.exception())
