"""Start-up self-checks: is this daemon's own identity what its config says it is?

Run by ``crossroads hub|node check-config`` and by :class:`node.app.HubApp` /
:class:`node.app.NodeApp` before anything is opened or served. Every check reads files only
(no network, no database) and returns problems as one line each, naming the config key to
fix and how; :func:`require` turns a non-empty list into :class:`node.config.ConfigError`.

What is checked:

* ``tls.ca_cert``: readable, a CA certificate, within its validity, of the configured
  ``network`` (its ``spiffe://<network>`` URI SAN): a foreign CA would only fail every
  handshake later, in a loop.
* ``tls.cert``: readable, issued (signed) by that CA, a leaf, within its validity, carrying
  the identity of this role (a hub certificate for the hub, the institution's certificate
  for a node), of the configured ``network`` and, for a node, of the configured
  ``enterprise_number`` (else the node would register as another institution).
* ``tls.key``: readable and the private key of ``tls.cert``.
* ``tls.crl`` (when configured): readable, signed by the CA, not past its nextUpdate, and
  not revoking ``tls.cert`` itself.
* ``hub_directory_key`` (node): a readable Ed25519 public key.
* ``[metrics]`` (node/metrics_web.py): ``tls_cert``, ``tls_key`` and ``client_ca`` readable,
  the key the certificate's, the CA a PEM certificate.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from node import metrics_web
from node.config import ConfigError, HubConfig, NodeConfig, StoreConfig, TlsFiles
from pki.ca import PkiError, identity_of_certificate, network_of_ca
from pki.crl import read_crl
from pki.identity import Kind

__all__ = ["hub_problems", "node_problems", "require"]

_PROFILE = {"hub": "hub", "institution": "node"}


def hub_problems(config: HubConfig, now: datetime | None = None) -> list[str]:
    problems = _tls_problems(config.tls, "hub", config.network, None, now or datetime.now(UTC))
    return problems + _store_problems(config.store) + metrics_web.problems(config.metrics)


def _store_problems(store: StoreConfig) -> list[str]:
    """The database password's source is there (the database itself is checked at start)."""
    problems: list[str] = []
    if store.password_file is not None:
        data = _read(store.password_file, "store.password_file", problems)
        if data is not None and not data.strip():
            problems.append(f"store.password_file: {store.password_file} is empty")
        elif data is not None and store.password_file.stat().st_mode & 0o007:
            problems.append(f"store.password_file: {store.password_file} is readable by others:"
                            " chmod 600 (or 640, its group the hub's)")
    if store.password_env is not None and store.password_env not in os.environ:
        problems.append(f"store.password_env: the environment variable {store.password_env}"
                        " is not set")
    return problems


def node_problems(config: NodeConfig, now: datetime | None = None) -> list[str]:
    problems = _tls_problems(config.tls, "institution", config.network,
                             config.enterprise_number, now or datetime.now(UTC))
    if config.hub_directory_key is not None:
        problems += _directory_key_problems(config.hub_directory_key)
    return problems + metrics_web.problems(config.metrics)


def require(problems: list[str]) -> None:
    """Raise :class:`ConfigError` listing ``problems`` (if any)."""
    if problems:
        raise ConfigError("; ".join(problems), tuple(problems))


def _read(path: Path | None, key: str, problems: list[str]) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        problems.append(f"{key}: cannot read {path} ({exc.strerror or exc}); fix the path or"
                        " the file's permissions")
        return None


def _certificate(data: bytes | None, key: str, problems: list[str]) -> x509.Certificate | None:
    if data is None:
        return None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        problems.append(f"{key}: not a PEM certificate; point it at the .crt file")
        return None


def _window(cert: x509.Certificate, now: datetime, key: str, problems: list[str]) -> None:
    if now < cert.not_valid_before_utc:
        problems.append(f"{key}: not valid before {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
                        " (check this host's clock, or use a certificate valid now)")
    elif now > cert.not_valid_after_utc:
        problems.append(f"{key}: expired on {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ};"
                        " renew it (`crossroads pki issue`)")


def _tls_problems(tls: TlsFiles, kind: Kind, network: str, enterprise: str | None,
                  now: datetime) -> list[str]:
    problems: list[str] = []
    ca = _certificate(_read(tls.ca_cert, "tls.ca_cert", problems), "tls.ca_cert", problems)
    cert = _certificate(_read(tls.cert, "tls.cert", problems), "tls.cert", problems)
    key_pem = _read(tls.key, "tls.key", problems)
    if ca is not None:
        _window(ca, now, "tls.ca_cert", problems)
        try:
            ca_network = network_of_ca(ca)
        except PkiError as exc:
            problems.append(f"tls.ca_cert: {exc}; use the network CA's ca.crt")
        else:
            if network and ca_network != network:
                problems.append(f"tls.ca_cert: the CA of network {ca_network!r}, not of network"
                                f" {network!r}; use this network's ca.crt (or fix network)")
    if cert is not None:
        _own_certificate(cert, ca, kind, network, enterprise, now, problems)
    if cert is not None and key_pem is not None:
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            problems.append("tls.key: not an unencrypted PEM private key; point it at the"
                            " certificate's .key file")
        else:
            spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
                problems.append(f"tls.key: {tls.key} is not the private key of tls.cert"
                                f" {tls.cert}; give the key the certificate was issued for")
    if tls.crl is not None and ca is not None:
        try:
            crl = read_crl(tls.crl, tls.ca_cert)
        except PkiError as exc:
            problems.append(f"tls.crl: {exc}; publish the CA's CRL there (`crossroads pki crl`)")
        else:
            if crl.stale_at(now):
                assert crl.next_update is not None
                problems.append(f"tls.crl: past its nextUpdate"
                                f" ({crl.next_update:%Y-%m-%dT%H:%M:%SZ}); publish a fresh CRL"
                                " (`crossroads pki crl`)")
            if cert is not None and cert.serial_number in crl.serials:
                problems.append(f"tls.cert: serial {cert.serial_number:x} is revoked by tls.crl;"
                                " issue a new certificate")
    return problems


def _own_certificate(cert: x509.Certificate, ca: x509.Certificate | None, kind: Kind,
                     network: str, enterprise: str | None, now: datetime,
                     problems: list[str]) -> None:
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            problems.append("tls.cert: not issued by the CA in tls.ca_cert; use a certificate"
                            " of this network's CA (or fix tls.ca_cert)")
    _window(cert, now, "tls.cert", problems)
    try:
        identity = identity_of_certificate(cert)
    except PkiError as exc:
        problems.append(f"tls.cert: {exc}; use a certificate issued by `crossroads pki`")
        return
    role = "the hub" if kind == "hub" else "a node"
    if identity.kind != kind:
        problems.append(f"tls.cert: {_a(identity.kind)} certificate ({identity}), but {role}"
                        f" needs {_a(kind)} certificate (`crossroads pki issue --profile"
                        f" {_PROFILE[kind]}`)")
    if network and identity.network != network:
        problems.append(f"tls.cert: issued for network {identity.network!r}, but network ="
                        f" {network!r}; fix network or use this network's certificate")
    if (enterprise and identity.kind == "institution"
            and identity.name != enterprise):
        problems.append(f"tls.cert: the certificate of institution {identity.name}, but"
                        f" enterprise_number = {enterprise}; fix enterprise_number or use"
                        " this institution's certificate")


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _directory_key_problems(path: Path) -> list[str]:
    from node.wire.signed import load_public_key

    try:
        load_public_key(path)
    except Exception as exc:  # noqa: BLE001 - any failure: name the key
        return [f"hub_directory_key: cannot load {path} ({exc}); copy the hub's"
                " directory-signing.pub there"]
    return []
