"""A CRL checked against the network CA: who signed it, which serials, how fresh.

:func:`verify_crl` takes PEM or DER bytes (a file the operator copied, or the bytes a hub
published through the directory) and the CA certificate, and returns a :class:`VerifiedCrl`
only if the CA signed it. Freshness is the caller's policy: :meth:`VerifiedCrl.stale_at` says
whether ``nextUpdate`` has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from pki.ca import PkiError, load_certificate

__all__ = ["VerifiedCrl", "read_crl", "verify_crl"]


@dataclass(frozen=True, slots=True)
class VerifiedCrl:
    """A CRL whose signature by the network CA was checked."""

    der: bytes
    number: int  # the CRLNumber extension (0 when absent)
    serials: frozenset[int]
    last_update: datetime
    next_update: datetime | None

    def stale_at(self, moment: datetime) -> bool:
        """True once ``nextUpdate`` has passed (a CRL without one never goes stale)."""
        return self.next_update is not None and moment > self.next_update


def verify_crl(data: bytes, ca_cert: x509.Certificate, what: str = "CRL") -> VerifiedCrl:
    """Parse ``data`` (PEM or DER) and check the CA signed it; raises :class:`PkiError`."""
    try:
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
               else x509.load_der_x509_crl(data))
    except ValueError:
        raise PkiError(f"{what} is not a PEM or DER CRL") from None
    public = ca_cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise PkiError("unsupported CA key type")
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(public):
        raise PkiError(f"{what} is not signed by this network's CA")
    try:
        number = int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        number = 0
    return VerifiedCrl(
        der=crl.public_bytes(serialization.Encoding.DER),
        number=number,
        serials=frozenset(revoked.serial_number for revoked in crl),
        last_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
    )


def read_crl(crl_path: Path, ca_cert_path: Path) -> VerifiedCrl:
    """:func:`verify_crl` of a file; a missing or unreadable file raises :class:`PkiError`."""
    try:
        data = Path(crl_path).read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read CRL {crl_path}: {exc.strerror or exc}") from None
    return verify_crl(data, load_certificate(Path(ca_cert_path)), f"CRL {crl_path}")
