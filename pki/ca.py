"""The network CA: one self-signed root per network that issues every node, hub and admin cert.

Design
------
* **One level.** The root signs leaf certificates directly (``path_length=0``); there are no
  intermediates, so verification is "directly issued by the CA" + validity + CRL + identity.
* **Keys never travel.** :func:`create_request` generates the key where it will be used (file mode
  0600 from the first byte: ``os.open(..., O_CREAT | O_EXCL, 0o600)``, never overwritten) and
  writes a CSR; :func:`sign_request` runs on the CA host. :func:`issue` does both for labs/demos.
* **The CA decides, the CSR only asks.** From a CSR the CA takes the public key and the requested
  names, after checking the CSR signature, that it carries exactly one identity URI of this CA's
  network whose kind matches the profile (node -> institution, hub -> hub, admin -> admin,
  app -> app) with a
  valid enterprise number, and that no requested DNS name lies in the ``.crossroads`` namespace
  (a node cannot ask for the hub's name). The CA writes the SAN itself (identity URI, the
  identity's synthetic TLS name, then the requested extra DNS names and IPs); subject, extensions
  and lifetime come from the profile, never from the CSR.
* **Profiles.** Every leaf: BasicConstraints(ca=False) critical, SKI, AKI, random 159-bit serial.
  hub/node: KeyUsage digitalSignature (+ keyAgreement for EC keys) critical, EKU serverAuth +
  clientAuth (both act as server and client), 397 days. admin: KeyUsage digitalSignature
  critical, EKU clientAuth only, 90 days. app (an institution's application, a client of its
  own node's local API only): as admin, 397 days. Lifetimes never exceed the CA's own.
* **The CA itself:** BasicConstraints(ca=True, path_length=0) critical, KeyUsage(keyCertSign,
  cRLSign) critical, SKI, and a URI SAN ``spiffe://<network>`` naming its trust domain, so that
  holders of only ``ca.crt`` know the network (:func:`network_of_ca`). No name constraints: URI
  name constraints are unevenly supported by TLS stacks and a critical extension a verifier does
  not understand fails every handshake.
* **Revocation** is a signed CRL (:func:`generate_crl`) with an increasing CRL number, built from
  ``revoked.json``; consumers call :func:`load_revoked_serials` (signature checked against the CA).

CA directory layout::

    ca.key         PEM PKCS#8, 0600          ca.crt    PEM
    ca.json        {"network", "algorithm", "format"}
    index.jsonl    one JSON line per issued certificate (serial hex, identity, not_after, sha256)
    revoked.json   {"crl_number": n, "revoked": [{"serial", "reason", "revoked_at"}]}

All failures a caller can cause raise :class:`PkiError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.identity import (
    TLS_SUFFIX,
    Identity,
    parse_spiffe_id,
    spiffe_id,
    tls_name,
    validate_network,
)

__all__ = [
    "ALGORITHMS",
    "PROFILES",
    "PkiError",
    "create_request",
    "fingerprint_sha256",
    "generate_crl",
    "identity_of_certificate",
    "init_ca",
    "issue",
    "load_revoked_serials",
    "network_of_ca",
    "revoke",
    "sign_request",
    "verify_certificate",
]

ALGORITHMS: tuple[str, ...] = ("ec-p256", "ed25519")
PROFILES: tuple[str, ...] = ("hub", "node", "admin", "app")
_PROFILE_KIND = {"hub": "hub", "node": "institution", "admin": "admin", "app": "app"}
_DEFAULT_DAYS = {"hub": 397, "node": 397, "admin": 90, "app": 397}
#: Client-only profiles: EKU clientAuth, no serverAuth.
_CLIENT_ONLY = frozenset({"admin", "app"})
_BACKDATE = timedelta(minutes=5)  # tolerate small clock skew between CA and verifiers
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_RE = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_REASONS = {
    flag.name: flag for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
}

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class PkiError(Exception):
    """A PKI operation was refused or a certificate failed verification (one-line message)."""


# --------------------------------------------------------------------------------------------
# Small helpers: time, files, keys


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start; never overwrite an existing key."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PkiError(f"{path} already exists; refusing to overwrite a private key") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def _write_public(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write atomically (temp file + rename) so readers never see a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} not found: {path}") from None


def _generate_key(algorithm: str) -> PrivateKey:
    if algorithm == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise PkiError(f"unknown key algorithm {algorithm!r} (choose from {', '.join(ALGORITHMS)})")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, "certificate"))
    except ValueError:
        raise PkiError(f"{path} is not a PEM certificate") from None


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the DER certificate (no colons)."""
    return cert.fingerprint(hashes.SHA256()).hex()


# --------------------------------------------------------------------------------------------
# Identity in certificates


def _identity_from_san(san: x509.SubjectAlternativeName, what: str) -> Identity:
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    if len(spiffe) != 1:
        raise PkiError(f"{what} must carry exactly one spiffe:// URI SAN, found {len(spiffe)}")
    try:
        return parse_spiffe_id(spiffe[0])
    except ValueError as exc:
        raise PkiError(f"{what}: {exc}") from None


def _san_of(extensions: x509.Extensions, what: str) -> x509.SubjectAlternativeName:
    try:
        return extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PkiError(f"{what} has no subjectAltName (no network identity)") from None


def identity_of_certificate(cert: x509.Certificate) -> Identity:
    """The network identity in the certificate's spiffe:// URI SAN; PkiError if none/invalid."""
    return _identity_from_san(_san_of(cert.extensions, "certificate"), "certificate")


def network_of_ca(ca_cert: x509.Certificate) -> str:
    """The network a CA certificate serves (its ``spiffe://<network>`` URI SAN)."""
    san = _san_of(ca_cert.extensions, "CA certificate")
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://") and "/" not in uri[len("spiffe://") :]:
            return validate_network(uri[len("spiffe://") :])
    raise PkiError("CA certificate has no spiffe://<network> URI SAN")


# --------------------------------------------------------------------------------------------
# The CA directory


@dataclass(frozen=True)
class _Ca:
    directory: Path
    network: str
    key: PrivateKey
    cert: x509.Certificate


def _load_ca(ca_dir: Path) -> _Ca:
    ca_dir = Path(ca_dir)
    if not (ca_dir / "ca.json").is_file():
        raise PkiError(f"no CA in {ca_dir} (ca.json not found; run init-ca first)")
    try:
        meta = json.loads(_read(ca_dir / "ca.json", "CA metadata"))
        key = serialization.load_pem_private_key(_read(ca_dir / "ca.key", "CA key"), None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"cannot load the CA in {ca_dir}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise PkiError(f"unsupported CA key type in {ca_dir / 'ca.key'}")
    cert = load_certificate(ca_dir / "ca.crt")
    pub = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*pub) != cert.public_key().public_bytes(*pub):
        raise PkiError(f"ca.key and ca.crt in {ca_dir} do not belong together")
    return _Ca(ca_dir, meta["network"], key, cert)


def init_ca(
    ca_dir: Path,
    network: str,
    algorithm: str = "ec-p256",
    validity_days: int = 3650,
) -> Path:
    """Create a new network CA in ``ca_dir``; returns the path of ``ca.crt``."""
    ca_dir = Path(ca_dir)
    try:
        validate_network(network)
    except ValueError as exc:
        raise PkiError(str(exc)) from None
    if validity_days < 1:
        raise PkiError("validity must be at least 1 day")
    if any((ca_dir / name).exists() for name in ("ca.key", "ca.crt", "ca.json")):
        raise PkiError(f"a CA already exists in {ca_dir}; refusing to overwrite it")
    key = _generate_key(algorithm)
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Crossroads"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Crossroads {network} CA"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{network}")]),
            critical=False,
        )
        .sign(key, _hash_for(key))
    )
    _write_private(ca_dir / "ca.key", _key_pem(key))
    _write_public(ca_dir / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    meta = {"format": 1, "network": network, "algorithm": algorithm}
    _write_public(ca_dir / "ca.json", json.dumps(meta, indent=2).encode() + b"\n")
    _write_public(ca_dir / "revoked.json", b'{"crl_number": 0, "revoked": []}\n', 0o600)
    (ca_dir / "index.jsonl").touch(mode=0o600)
    return ca_dir / "ca.crt"


def _key_usage(
    *,
    digital_signature: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --------------------------------------------------------------------------------------------
# Requests (on the node's host)


def _basename(identity: Identity) -> str:
    if identity.kind == "app":
        return f"app-{identity.owner}-{identity.name}"
    return identity.name if identity.kind != "admin" else f"admin-{identity.name}"


def _check_dns(names: Iterable[str]) -> list[str]:
    out = []
    for name in names:
        lowered = name.lower().rstrip(".")
        if not _DNS_RE.fullmatch(lowered):
            raise PkiError(f"invalid DNS name {name!r} (no wildcards, letters/digits/'-' labels)")
        out.append(lowered)
    return out


def _check_ips(ips: Iterable[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise PkiError(str(exc)) from None


def _san(
    identity: Identity,
    extra_dns: Iterable[str],
    extra_ips: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id(identity))]
    dns = [n for n in (tls_name(identity),) if n] + list(extra_dns)
    names += [x509.DNSName(n) for n in dict.fromkeys(dns)]
    names += [x509.IPAddress(ip) for ip in dict.fromkeys(extra_ips)]
    return x509.SubjectAlternativeName(names)


def _subject(identity: Identity) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Crossroads {identity.network}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.kind),
            x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
        ]
    )


def create_request(
    out_dir: Path,
    identity: Identity,
    extra_dns: Iterable[str] = (),
    extra_ips: Iterable[str] = (),
    algorithm: str = "ec-p256",
    basename: str | None = None,
) -> tuple[Path, Path]:
    """Generate a key (0600) and a CSR for ``identity``; returns ``(key_path, csr_path)``."""
    out_dir = Path(out_dir)
    base = basename or _basename(identity)
    dns, ips = _check_dns(extra_dns), _check_ips(extra_ips)
    key = _generate_key(algorithm)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(identity))
        .add_extension(_san(identity, dns, ips), critical=False)
        .sign(key, _hash_for(key))
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, csr_path = out_dir / f"{base}.key", out_dir / f"{base}.csr"
    _write_private(key_path, _key_pem(key))
    _write_public(csr_path, csr.public_bytes(serialization.Encoding.PEM))
    return key_path, csr_path


# --------------------------------------------------------------------------------------------
# Signing (on the CA host)


def _checked_request(
    ca: _Ca, csr_path: Path, profile: str
) -> tuple[x509.CertificateSigningRequest, Identity, x509.SubjectAlternativeName]:
    try:
        csr = x509.load_pem_x509_csr(_read(csr_path, "certificate request"))
    except ValueError:
        raise PkiError(f"{csr_path} is not a PEM certificate request") from None
    if not csr.is_signature_valid:
        raise PkiError(f"{csr_path}: the request's signature is invalid")
    key = csr.public_key()
    if not (
        isinstance(key, ed25519.Ed25519PublicKey)
        or (
            isinstance(key, ec.EllipticCurvePublicKey)
            and key.curve.name in ("secp256r1", "secp384r1")
        )
    ):
        raise PkiError(f"{csr_path}: unsupported key type (use ec-p256 or ed25519)")
    san = _san_of(csr.extensions, f"request {csr_path}")
    identity = _identity_from_san(san, f"request {csr_path}")
    if identity.network != ca.network:
        raise PkiError(
            f"request is for network {identity.network!r} but this CA serves {ca.network!r}"
        )
    if _PROFILE_KIND[profile] != identity.kind:
        raise PkiError(
            f"profile {profile!r} is for {_PROFILE_KIND[profile]} identities, "
            f"but the request is for {spiffe_id(identity)}"
        )
    own = tls_name(identity)
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for name in san:
        if isinstance(name, x509.DNSName):
            [lowered] = _check_dns([name.value])
            if lowered == own:
                continue
            if lowered == TLS_SUFFIX or lowered.endswith("." + TLS_SUFFIX):
                raise PkiError(
                    f"request asks for DNS name {name.value!r}: the .{TLS_SUFFIX} names are "
                    "reserved for the identities the CA assigns them to"
                )
            dns.append(lowered)
        elif isinstance(name, x509.IPAddress):
            if not isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                raise PkiError(f"request carries an IP network SAN {name.value}")
            ips.append(name.value)
        elif not (isinstance(name, x509.UniformResourceIdentifier) and name.value == str(identity)):
            raise PkiError(f"request carries an unsupported SAN {name!r}")
    # The CA writes the SAN itself: identity URI, the synthetic TLS name, then the extras.
    return csr, identity, _san(identity, dns, ips)


def _validity(
    ca: _Ca,
    profile: str,
    validity_days: int | None,
    not_before: datetime | None,
    not_after: datetime | None,
) -> tuple[datetime, datetime]:
    now = _now()
    start = _utc(not_before) if not_before else now - _BACKDATE
    if not_after is not None:
        end = _utc(not_after)
    else:
        days = _DEFAULT_DAYS[profile] if validity_days is None else validity_days
        if days < 1:
            raise PkiError("validity must be at least 1 day")
        end = now + timedelta(days=days)
    end = min(end, ca.cert.not_valid_after_utc)  # never outlive the CA
    if end <= start:
        raise PkiError(f"certificate would end ({end:%Y-%m-%dT%H:%M:%SZ}) before it starts")
    return start, end


def sign_request(
    ca_dir: Path,
    csr_path: Path,
    profile: str,
    out_path: Path,
    validity_days: int | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Path:
    """Check a CSR against ``profile`` and the CA's network, sign it, record it in the index."""
    if profile not in PROFILES:
        raise PkiError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
    ca = _load_ca(ca_dir)
    csr, identity, san = _checked_request(ca, Path(csr_path), profile)
    start, end = _validity(ca, profile, validity_days, not_before, not_after)
    key = csr.public_key()
    is_ec = isinstance(key, ec.EllipticCurvePublicKey)
    if profile in _CLIENT_ONLY:
        usage = _key_usage(digital_signature=True)
        eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
    else:
        usage = _key_usage(digital_signature=True, key_agreement=is_ec)
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(identity))
        .issuer_name(ca.cert.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(san, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca.key, _hash_for(ca.key))
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write_public(out_path, cert.public_bytes(serialization.Encoding.PEM))
    _append_index(ca, cert, identity, profile)
    return out_path


def _append_index(ca: _Ca, cert: x509.Certificate, identity: Identity, profile: str) -> None:
    entry = {
        "serial": format(cert.serial_number, "x"),
        "identity": spiffe_id(identity),
        "profile": profile,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "fingerprint_sha256": fingerprint_sha256(cert),
        "issued_at": _now().isoformat(),
    }
    with open(ca.directory / "index.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def _read_index(ca: _Ca) -> list[dict[str, Any]]:
    text = _read(ca.directory / "index.jsonl", "certificate index").decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def issue(
    ca_dir: Path,
    out_dir: Path,
    identity: Identity,
    profile: str,
    extra_dns: Iterable[str] = (),
    extra_ips: Iterable[str] = (),
    *,
    algorithm: str = "ec-p256",
    basename: str | None = None,
    validity_days: int | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> tuple[Path, Path]:
    """Request + sign in one step (labs, demos, tests); returns ``(key_path, cert_path)``."""
    if profile not in PROFILES:
        raise PkiError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
    key_path, csr_path = create_request(
        out_dir, identity, extra_dns, extra_ips, algorithm=algorithm, basename=basename
    )
    cert_path = csr_path.with_suffix(".crt")
    try:
        sign_request(ca_dir, csr_path, profile, cert_path, validity_days, not_before, not_after)
    except PkiError:
        key_path.unlink()  # a key without a certificate would block the next attempt
        csr_path.unlink()
        raise
    return key_path, cert_path


# --------------------------------------------------------------------------------------------
# Revocation


def _parse_serial(text: str) -> int:
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        serial = int(cleaned, 16)
    except ValueError:
        raise PkiError(f"invalid serial {text!r}: expected hexadecimal") from None
    if serial <= 0:
        raise PkiError(f"invalid serial {text!r}")
    return serial


def _reason(name: str) -> x509.ReasonFlags:
    key = name.strip().replace("-", "_")
    by_value = {flag.value.lower(): flag for flag in _REASONS.values()}
    flag = _REASONS.get(key) or by_value.get(key.replace("_", "").lower())
    if flag is None:
        raise PkiError(f"unknown revocation reason {name!r} (choose from {', '.join(_REASONS)})")
    return flag


def revoke(
    ca_dir: Path,
    serial_hex: str | None = None,
    cert_path: Path | None = None,
    reason: str = "unspecified",
) -> str:
    """Mark a certificate issued by this CA as revoked; returns its serial (hex).

    Give exactly one of ``serial_hex`` or ``cert_path``. Revoking twice is a no-op. The CRL is
    not regenerated here: run :func:`generate_crl` after revoking.
    """
    if (serial_hex is None) == (cert_path is None):
        raise PkiError("give exactly one of a serial or a certificate to revoke")
    ca = _load_ca(ca_dir)
    flag = _reason(reason)
    if cert_path is not None:
        cert = load_certificate(Path(cert_path))
        _check_issued_by(cert, ca.cert)
        serial = cert.serial_number
    else:
        assert serial_hex is not None
        serial = _parse_serial(serial_hex)
        if not any(int(e["serial"], 16) == serial for e in _read_index(ca)):
            raise PkiError(f"serial {serial:x} was not issued by this CA (not in index.jsonl)")
    state = json.loads(_read(ca.directory / "revoked.json", "revocation list"))
    if all(int(r["serial"], 16) != serial for r in state["revoked"]):
        state["revoked"].append(
            {"serial": format(serial, "x"), "reason": flag.name, "revoked_at": _now().isoformat()}
        )
        _write_public(ca.directory / "revoked.json", json.dumps(state, indent=2).encode(), 0o600)
    return format(serial, "x")


def generate_crl(ca_dir: Path, out_path: Path, next_update_days: int = 7) -> Path:
    """Write a PEM CRL of every revoked serial, signed by the CA, with the next CRL number."""
    if next_update_days < 1:
        raise PkiError("the CRL's next update must be at least 1 day ahead")
    ca = _load_ca(ca_dir)
    state = json.loads(_read(ca.directory / "revoked.json", "revocation list"))
    state["crl_number"] += 1
    last_update = _now() - _BACKDATE
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(last_update)
        .next_update(last_update + _BACKDATE + timedelta(days=next_update_days))
        .add_extension(x509.CRLNumber(state["crl_number"]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    for entry in state["revoked"]:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(entry["serial"], 16))
            .revocation_date(min(datetime.fromisoformat(entry["revoked_at"]), last_update))
        )
        if entry["reason"] != "unspecified":  # RFC 5280: omit reasonCode rather than unspecified
            revoked = revoked.add_extension(x509.CRLReason(_REASONS[entry["reason"]]), False)
        builder = builder.add_revoked_certificate(revoked.build())
    crl = builder.sign(ca.key, _hash_for(ca.key))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write_public(out_path, crl.public_bytes(serialization.Encoding.PEM))
    _write_public(ca.directory / "revoked.json", json.dumps(state, indent=2).encode(), 0o600)
    return out_path


def load_revoked_serials(crl_path: Path, ca_cert_path: Path) -> frozenset[int]:
    """The serials a CRL revokes, after checking it was signed by the CA."""
    ca_cert = load_certificate(Path(ca_cert_path))
    try:
        crl = x509.load_pem_x509_crl(_read(Path(crl_path), "CRL"))
    except ValueError:
        raise PkiError(f"{crl_path} is not a PEM CRL") from None
    public = ca_cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise PkiError(f"unsupported CA key type in {ca_cert_path}")
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(public):
        raise PkiError(f"CRL {crl_path} is not signed by this CA")
    return frozenset(revoked.serial_number for revoked in crl)


# --------------------------------------------------------------------------------------------
# Verification


def _check_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise PkiError(
            f"certificate (issuer {cert.issuer.rfc4514_string()!r}) was not issued by this CA"
        ) from None


def _check_time(cert: x509.Certificate, at: datetime, what: str) -> None:
    if at < cert.not_valid_before_utc:
        raise PkiError(
            f"{what} is not valid yet (valid from {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ})"
        )
    if at > cert.not_valid_after_utc:
        raise PkiError(f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")


def verify_certificate(
    ca_cert_path: Path,
    cert_path: Path,
    crl_path: Path | None = None,
    expected: Identity | str | None = None,
    at: datetime | None = None,
) -> Identity:
    """Check a leaf certificate against the network CA; returns its identity or raises PkiError.

    Checks, in order: issued (and signed) by the CA, not a CA itself, CA and leaf valid at ``at``
    (default now), identity of the CA's network, not revoked by the CRL (whose signature is
    checked), and equal to ``expected`` when given.
    """
    ca_cert = load_certificate(Path(ca_cert_path))
    cert = load_certificate(Path(cert_path))
    moment = _utc(at) if at is not None else _now()
    _check_issued_by(cert, ca_cert)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        raise PkiError("certificate has no basicConstraints extension") from None
    if is_ca:
        raise PkiError("certificate is a CA certificate, not a leaf")
    _check_time(ca_cert, moment, "the CA certificate")
    _check_time(cert, moment, "certificate")
    identity = identity_of_certificate(cert)
    network = network_of_ca(ca_cert)
    if identity.network != network:
        raise PkiError(f"certificate is for network {identity.network!r}, not {network!r}")
    if crl_path is not None and cert.serial_number in load_revoked_serials(crl_path, ca_cert_path):
        raise PkiError(f"certificate serial {cert.serial_number:x} is revoked")
    if expected is not None:
        try:
            want = parse_spiffe_id(expected) if isinstance(expected, str) else expected
        except ValueError as exc:
            raise PkiError(f"expected identity: {exc}") from None
        if want != identity:
            raise PkiError(f"identity mismatch: expected {want}, certificate is {identity}")
    return identity
