"""Who may call the hub: its server's role table and its gate (node/rpc/auth_interceptor.py).

Nodes call ``Hub`` with their institution's certificate, administrators ``DirectoryAdmin``
with an admin certificate; health and reflection are open to any certificate of the network.
On top of the certificate checks every server makes (network, revocation, role), an
institution must be active in the reference directory and, when the directory registers a
certificate fingerprint for it, present that certificate (``UNKNOWN_INSTITUTION``,
``CERTIFICATE_NOT_REGISTERED``). Every refusal, at the start of a call or later in a stream,
is audited (``REJECTED``, aggregated per peer, method and reason: node/hub/refusal_audit.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from node.core.directory import Institution
from node.core.errors import CrossroadsError, PermissionDenied, Unauthenticated
from node.core.reasons import CallReason
from node.hub.directory import Directory
from node.rpc.auth_interceptor import HEALTH_AND_REFLECTION, CertificateGate, Role, Table
from node.rpc.peer import Peer, PeerAuthenticator

__all__ = ["HUB_TABLE", "HubGate", "active_institution"]

#: The hub server's table (node/rpc/auth_interceptor.py).
HUB_TABLE: Table = {
    "/crossroads.v1.Hub/": frozenset({Role.INSTITUTION}),
    "/crossroads.v1.DirectoryAdmin/": frozenset({Role.ADMIN}),
    **HEALTH_AND_REFLECTION,
}
OnRefused = Callable[[grpc.aio.ServicerContext, str, CrossroadsError], Awaitable[None]]


def active_institution(directory: Directory, peer: Peer) -> Institution:
    """The institution ``peer``'s certificate names, active in the directory with this
    certificate (else the refusal)."""
    institution = directory.institution(peer.identity.name)
    if institution is None or not institution.active:
        raise PermissionDenied(
            f"institution {peer.identity.name} is not active in the directory",
            CallReason.UNKNOWN_INSTITUTION,
        )
    if institution.cert_fingerprint and institution.cert_fingerprint != peer.fingerprint:
        raise Unauthenticated(
            f"certificate {peer.fingerprint[:16]}... is not the one registered for"
            f" {institution.enterprise_number}", CallReason.CERTIFICATE_NOT_REGISTERED,
        )
    return institution


class HubGate(CertificateGate):
    def __init__(self, peers: PeerAuthenticator, directory: Directory,
                 on_refused: OnRefused) -> None:
        """``on_refused(context, method, error)``: audits a refusal (the hub service's)."""
        super().__init__(peers)
        self.directory = directory
        self.on_refused = on_refused

    def verify(self, role: Role, peer: Peer) -> None:
        if role is Role.INSTITUTION:
            active_institution(self.directory, peer)

    async def refused(self, context: grpc.aio.ServicerContext, method: str,
                      exc: CrossroadsError) -> None:
        await self.on_refused(context, method, exc)
