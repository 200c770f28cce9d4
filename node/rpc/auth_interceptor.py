"""Who may call what: one server interceptor per server authenticates every call, failing closed.

Design
------
* **One table per server.** :class:`AuthInterceptor` holds a table of method prefixes (a whole
  service, ``/crossroads.v1.Hub/``, or one method, ``/crossroads.v1.Local/Submit``) to the
  :class:`Role` s allowed to call them; a method's own entry decides, else its service's. A method
  the server serves but the table does not list is refused to everyone (``PERMISSION_DENIED``,
  ``METHOD_NOT_ALLOWED``): a new RPC without a table entry is closed, not open to any holder
  of a certificate. Health and reflection are listed like any other service.
* **Before the method runs.** grpc.aio gives ``intercept_service`` only the method name, so the
  interceptor wraps the handler's behaviour (of the same kind: coroutine or async generator)
  with one that asks the server's :class:`Gate` who the caller is, from the call's TLS auth
  context, and only then runs the servicer. A refusal is logged like every refused call
  (:func:`node.rpc.edge.refuse`: aggregated per peer, method and reason) and the gate has
  audited it where the server audits refusals (the hub's audit log).
* **Who, for the rest of the call.** The :class:`AuthenticatedPeer` goes in a context variable
  (:func:`current_peer`) that the servicer and the tasks it starts read, and into structlog's
  context variables (``caller``: ``role:name``, e.g. ``institution:0403019261``;
  ``caller_institution``: the enterprise number it acts for): every log line of the call
  names it.
  Both are unbound when the call ends.
* **Streams.** A long-lived stream calls :func:`recheck_peer` per message where it did before
  (``Hub.Submit`` per batch, ``Hub.Consultations`` and ``Node.Answers`` per message,
  ``Hub.WatchDirectory`` per update): a certificate revoked mid-stream (or an institution
  leaving the directory) ends the stream. That is the only per-message work; the interceptor
  itself adds none.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import grpc
import structlog
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from node.core.errors import CrossroadsError, PermissionDenied
from node.core.reasons import CallReason
from node.rpc.edge import refuse
from node.rpc.handler_wrapper import HandlerWrapper
from node.rpc.malformed import short_name
from node.rpc.peer import Peer, PeerAuthenticator

__all__ = [
    "EVERY_ROLE",
    "HEALTH_AND_REFLECTION",
    "METHOD_NOT_ALLOWED",
    "AuthInterceptor",
    "AuthenticatedPeer",
    "CertificateGate",
    "Gate",
    "Role",
    "Table",
    "current_peer",
    "recheck_peer",
    "rule_for",
]

#: The refusal reason of a method the server's table does not list.
METHOD_NOT_ALLOWED = CallReason.METHOD_NOT_ALLOWED


class Role(Enum):
    """What a caller is; for a certificate, its identity's kind (pki/identity.py)."""

    INSTITUTION = "institution"  # a member institution's node, active in the directory
    HUB = "hub"  # the network's hub (calling nodes)
    ADMIN = "admin"  # the network's directory administrators
    APPLICATION = "app"  # an application of the node's institution (local API)


EVERY_ROLE = frozenset(Role)
#: Method prefix -> the roles allowed to call the methods under it.
Table = Mapping[str, frozenset[Role]]

#: Health and reflection, open to any authenticated caller of the server (every role).
HEALTH_AND_REFLECTION: dict[str, frozenset[Role]] = {
    f"/{health_pb2.DESCRIPTOR.services_by_name['Health'].full_name}/": EVERY_ROLE,
    f"/{reflection.SERVICE_NAME}/": EVERY_ROLE,
}


@dataclass(frozen=True, slots=True)
class AuthenticatedPeer:
    """The caller of the current call, once its gate admitted it."""

    role: Role
    #: Its certificate's identity's name (an enterprise number, ``hub``, an admin's or an
    #: application's name), or ``unix-socket``.
    name: str
    #: The enterprise number the caller acts for: an institution's own, an application's
    #: node's; "" for the hub and administrators.
    institution: str
    #: Its certificate's serial (None: a unix socket client, no certificate).
    serial: int | None
    #: The verified certificate, for rechecks (None: no certificate).
    peer: Peer | None = field(default=None, repr=False, compare=False)


class Gate(Protocol):
    """How one server's callers are identified, admitted and checked again. Both methods
    raise a :class:`~node.core.errors.CrossroadsError` for a refusal, already audited/logged
    as the server does for refusals."""

    async def admit(self, context: grpc.aio.ServicerContext, method: str,
                    allowed: frozenset[Role]) -> AuthenticatedPeer: ...

    async def recheck(self, context: grpc.aio.ServicerContext, method: str,
                      caller: AuthenticatedPeer) -> None: ...

    async def refused(self, context: grpc.aio.ServicerContext, method: str,
                      exc: CrossroadsError) -> None:
        """Record a refusal as this server does (beyond the ``rpc`` log line)."""


def require_role(peer: Peer, allowed: frozenset[Role]) -> Role:
    """The role of ``peer``'s certificate, if ``allowed`` (else ``WRONG_ROLE``)."""
    kind = peer.identity.kind
    role = Role(kind)
    if role not in allowed:
        names = " or ".join(sorted(r.value for r in allowed))
        raise PermissionDenied(f"{kind} {peer.identity.name} may not call this; {names} only",
                               CallReason.WRONG_ROLE)
    return role


class CertificateGate:
    """Callers by their TLS certificate (:class:`~node.rpc.peer.PeerAuthenticator`): network,
    revocation, role. Subclasses add checks per role (:meth:`verify`) and where a refusal is
    recorded (:meth:`refused`)."""

    def __init__(self, peers: PeerAuthenticator) -> None:
        self.peers = peers

    async def admit(self, context: grpc.aio.ServicerContext, method: str,
                    allowed: frozenset[Role]) -> AuthenticatedPeer:
        try:
            peer = self.peers.authenticate(context)
            role = require_role(peer, allowed)
            self.verify(role, peer)
        except CrossroadsError as exc:
            await self.refused(context, method, exc)
            raise
        identity = peer.identity
        institution = identity.owner if role is Role.APPLICATION else (
            identity.name if role is Role.INSTITUTION else "")
        return AuthenticatedPeer(role, identity.name, institution, peer.serial, peer)

    async def recheck(self, context: grpc.aio.ServicerContext, method: str,
                      caller: AuthenticatedPeer) -> None:
        assert caller.peer is not None
        try:
            self.verify(caller.role, self.peers.recheck(caller.peer))
        except CrossroadsError as exc:
            await self.refused(context, method, exc)
            raise

    def verify(self, role: Role, peer: Peer) -> None:
        """What else a caller of ``role`` must satisfy (raise to refuse); nothing here."""

    async def refused(self, context: grpc.aio.ServicerContext, method: str,
                      exc: CrossroadsError) -> None:
        """Record a refusal (beyond the ``rpc`` log line every refusal gets); nothing here."""


@dataclass(frozen=True, slots=True)
class _Call:
    caller: AuthenticatedPeer
    gate: Gate
    method: str
    context: grpc.aio.ServicerContext


_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("rpc_call", default=None)


def current_peer() -> AuthenticatedPeer:
    """The authenticated caller of the current call (only inside a call the interceptor
    admitted: anything else is a programming error)."""
    call = _call.get()
    if call is None:
        raise LookupError("no authenticated call in this context")
    return call.caller


async def recheck_peer() -> None:
    """Check the current caller again, later in a stream (revocation, directory): raises the
    refusal, audited, when it may no longer call."""
    call = _call.get()
    if call is None:
        raise LookupError("no authenticated call in this context")
    await call.gate.recheck(call.context, call.method, call.caller)


def rule_for(table: Table, method: str) -> frozenset[Role] | None:
    """The roles ``table`` allows to call ``method``: its own entry, else its service's
    (``/package.Service/``); None when neither is listed."""
    allowed = table.get(method)
    if allowed is None:
        allowed = table.get(method[: method.rfind("/") + 1])
    return allowed


class AuthInterceptor(HandlerWrapper):
    def __init__(self, table: Table, gate: Gate) -> None:
        self.table = dict(table)
        self.gate = gate
        #: Calls refused before their method ran, by reason (the daemons' metrics).
        self.refusals: Counter[str] = Counter()

    def wrap(self, handler: grpc.RpcMethodHandler, full: str) -> grpc.RpcMethodHandler:
        method = short_name(full)
        allowed = rule_for(self.table, full)
        gate, refusals = self.gate, self.refusals

        async def admit(context: grpc.aio.ServicerContext) -> _Bound:
            started = time.perf_counter()
            try:
                if allowed is None:
                    unlisted = PermissionDenied(
                        f"{method} is not open to any caller of this server", METHOD_NOT_ALLOWED)
                    await gate.refused(context, method, unlisted)
                    raise unlisted
                caller = await gate.admit(context, method, allowed)
            except CrossroadsError as exc:
                refusals[exc.reason.value] += 1
                await refuse(method, context, exc, started)
            return _Bound(_Call(caller, gate, method, context))

        if handler.response_streaming:
            if handler.request_streaming:
                streams = handler.stream_stream

                async def stream_stream(requests: AsyncIterator[Any],
                                        context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                    with await admit(context):
                        async for response in streams(requests, context):
                            yield response

                return handler._replace(stream_stream=stream_stream)
            responses = handler.unary_stream

            async def unary_stream(request: Any,
                                   context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with await admit(context):
                    async for response in responses(request, context):
                        yield response

            return handler._replace(unary_stream=unary_stream)
        if handler.request_streaming:
            gather = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any],
                                   context: grpc.aio.ServicerContext) -> Any:
                with await admit(context):
                    return await gather(requests, context)

            return handler._replace(stream_unary=stream_unary)
        answer = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with await admit(context):
                return await answer(request, context)

        return handler._replace(unary_unary=unary_unary)


class _Bound:
    """The admitted call bound in the context variables while the ``with`` block runs."""

    __slots__ = ("_call", "_logs", "_token")

    def __init__(self, call: _Call) -> None:
        self._call = call

    def __enter__(self) -> None:
        caller = self._call.caller
        self._token = _call.set(self._call)
        fields = {"caller": f"{caller.role.value}:{caller.name}"}
        if caller.institution:
            fields["caller_institution"] = caller.institution
        self._logs = structlog.contextvars.bind_contextvars(**fields)

    def __exit__(self, *exc: object) -> None:
        # A stream's generator may be closed later from another context (the event loop's
        # finalizer): the call's own context then ends with its task anyway.
        with contextlib.suppress(ValueError):
            structlog.contextvars.reset_contextvars(**self._logs)
            _call.reset(self._token)
