"""The local API's gate: who the caller is and whether it may make this call, on every call.

The gate (:class:`LocalGate`) of the node's local server's
:class:`~node.rpc.auth_interceptor.AuthInterceptor` (node/app.py), which runs after
:class:`~node.rpc.malformed.MalformedRequests` (so it only ever sees requests that parse):

* **Identity.** On a TCP local API (mutual TLS: the handshake has verified the client's
  certificate against ``local_tls.ca_cert``) the certificate's identity, revocation checked
  against the node's directory fragment, must be an application of this node's institution
  listed in ``[[applications]]``; on the unix socket the caller is the socket's client
  (node/member/app_permissions.py). A refusal is ``UNAUTHENTICATED`` (no, unreadable or
  revoked certificate) or ``PERMISSION_DENIED``, before the method runs.
* **Permission.** Per method (:data:`ACTIONS`, and :data:`LOCAL_TABLE`: a Local method not
  listed there is refused to every caller): Outcomes needs a send right, Fetch and
  Acknowledge need ``fetch``, Consult and Consultations need ``consult`` (for some service).
  The checks per service are the local service's (node/member/local_api.py, with the caller
  this gate puts in context): Submit's envelopes' services against ``send`` (the whole call is
  refused, nothing queued), each consultation call against ``consult`` (a refused
  consultation call gets its own error reply, the stream goes on), Serve's questions against
  ``answer`` (a question for a service the application may not answer is not shown to it but
  answered ``SOURCE_UNAVAILABLE`` on its behalf). Status, health and reflection need only a
  known caller.
"""

from __future__ import annotations

import grpc

from node.core.errors import CrossroadsError, PermissionDenied
from node.core.reasons import CallReason
from node.member.app_permissions import Action, Caller, LocalPermissions, enter_call
from node.rpc.auth_interceptor import (
    HEALTH_AND_REFLECTION,
    AuthenticatedPeer,
    Role,
    Table,
)
from node.rpc.peer import Peer, PeerAuthenticator

__all__ = ["ACTIONS", "LOCAL_TABLE", "LocalGate"]

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
_APPLICATION = frozenset({Role.APPLICATION})
#: The local server's table: each Local method by name (a new one is closed until listed
#: here and in :data:`ACTIONS`), health and reflection.
LOCAL_TABLE: Table = {
    **{f"/crossroads.v1.Local/{name}": _APPLICATION for name in ACTIONS},
    **HEALTH_AND_REFLECTION,
}


class LocalGate:
    def __init__(self, policy: LocalPermissions, peers: PeerAuthenticator | None) -> None:
        """``peers``: the TLS peer authenticator (TCP local API), None for the unix socket."""
        self.policy = policy
        self.peers = peers

    async def caller(self, context: grpc.aio.ServicerContext,
                     method: str) -> tuple[Caller, Peer | None]:
        if self.peers is None:
            return self.policy.unix_socket, None
        try:
            peer = self.peers.authenticate(context)
        except CrossroadsError as exc:
            await self.refused(context, method, exc)
            raise
        return self.policy.application(peer.identity, method), peer

    async def refused(self, context: grpc.aio.ServicerContext, method: str,
                      exc: CrossroadsError) -> None:
        self.policy.refusals.note(context.peer(), method, "", exc.reason, str(exc))

    async def admit(self, context: grpc.aio.ServicerContext, method: str,
                    allowed: frozenset[Role]) -> AuthenticatedPeer:
        caller, peer = await self.caller(context, method)
        if Role.APPLICATION not in allowed:  # no such table (yet): fail closed
            raise PermissionDenied(f"{method} is not open to applications", CallReason.WRONG_ROLE)
        action = ACTIONS.get(method.removeprefix("Local.")) if method.startswith(
            "Local.") else None
        if action is not None and method != "Local.Submit":  # Submit's: per service
            self.policy.check(caller, method, action)
        enter_call(self.policy, caller)
        return AuthenticatedPeer(Role.APPLICATION, caller.name, self.policy.institution,
                                 peer.serial if peer else None, peer)

    async def recheck(self, context: grpc.aio.ServicerContext, method: str,
                      caller: AuthenticatedPeer) -> None:
        if self.peers is not None and caller.peer is not None:
            try:
                self.peers.recheck(caller.peer)
            except CrossroadsError as exc:
                await self.refused(context, method, exc)
                raise
