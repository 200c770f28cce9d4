"""Who is calling: the verified peer certificate mapped to an identity, fail closed.

The TLS handshake has already verified the chain and validity period against the network
CA. Here the leaf certificate (``x509_pem_cert`` in the call's auth context) is parsed once
per distinct certificate (cached), its ``spiffe://<network>/...`` URI SAN becomes the
caller's :class:`pki.identity.Identity`, and its serial is checked against the current
revocation list on every call (and, with :meth:`PeerAuthenticator.recheck`, on every message
of a long-lived stream). Any doubt raises :class:`Unauthenticated`. An optional ``gate``
refuses every caller while it names a reason (``CRL_STALE``: the CRL in force is past its
nextUpdate under the ``refuse`` policy, :mod:`node.rpc.revocation`). Which roles may call
which method is the servers' tables' business (:mod:`node.rpc.auth_interceptor`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from node.core.errors import Unauthenticated
from node.core.reasons import CallReason
from node.rpc.refusal_flood import peer_host
from pki.identity import Identity, parse_spiffe_id

__all__ = ["Peer", "PeerAuthenticator"]


@dataclass(frozen=True, slots=True)
class Peer:
    identity: Identity
    serial: int
    fingerprint: str  # SHA-256 of the certificate (DER), lower-case hex


class PeerAuthenticator:
    def __init__(self, network: str, revoked: Callable[[], frozenset[int]],
                 gate: Callable[[], CallReason | None] | None = None) -> None:
        self.network = network
        self._revoked = revoked
        self._gate = gate
        self._cache: dict[bytes, Peer] = {}

    def authenticate(self, context: grpc.aio.ServicerContext) -> Peer:
        auth = context.auth_context()
        pems = auth.get("x509_pem_cert") or []
        if not pems:
            raise Unauthenticated("no client certificate", CallReason.NO_CERTIFICATE)
        pem = pems[0]
        peer = self._cache.get(pem)
        if peer is None:
            peer = self._parse(pem)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[pem] = peer
        return self.recheck(peer)

    def recheck(self, peer: Peer) -> Peer:
        """``peer`` again, later in the same stream: its certificate is still not revoked."""
        reason = self._gate() if self._gate is not None else None
        if reason is not None:
            raise Unauthenticated(
                f"revocation status unknown ({reason}): every peer is refused", reason)
        if peer.serial in self._revoked():
            raise Unauthenticated(
                f"certificate {peer.serial:x} of {peer.identity.name} is revoked",
                CallReason.CERTIFICATE_REVOKED,
            )
        return peer

    def _parse(self, pem: bytes) -> Peer:
        try:
            cert = x509.load_pem_x509_certificate(pem)
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = [u for u in sans.get_values_for_type(x509.UniformResourceIdentifier)
                    if u.startswith("spiffe://")]
            if len(uris) != 1:
                raise ValueError(f"expected one spiffe URI SAN, found {len(uris)}")
            identity = parse_spiffe_id(uris[0])
        except (ValueError, x509.ExtensionNotFound) as exc:
            raise Unauthenticated(f"certificate identity unreadable: {exc}", CallReason.BAD_IDENTITY) from exc
        if identity.network != self.network:
            raise Unauthenticated(
                f"certificate is for network {identity.network!r}, not {self.network!r}",
                CallReason.WRONG_NETWORK,
            )
        return Peer(identity, cert.serial_number,
                    cert.fingerprint(hashes.SHA256()).hex())

    def label(self, context: grpc.aio.ServicerContext) -> str:
        """A stable name of the caller for aggregating its refusals: ``kind:name#serial`` of
        its certificate when it can be read (revoked or not), else its address without port."""
        pems = context.auth_context().get("x509_pem_cert") or []
        if pems:
            peer = self._cache.get(pems[0])
            if peer is None:
                try:
                    peer = self._parse(pems[0])
                except Unauthenticated:
                    peer = None
            if peer is not None:
                return f"{peer.identity.kind}:{peer.identity.name}#{peer.serial:x}"
        return peer_host(context.peer())
