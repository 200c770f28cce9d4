"""Network identities and their names in certificates (pure string logic).

Every certificate the network CA issues carries exactly one identity, as a SPIFFE-shaped URI SAN:

===========  ======================================  ========================================
kind         URI SAN (the identity)                  DNS SAN (TLS target-name override)
===========  ======================================  ========================================
institution  ``spiffe://<network>/institution/<E>``  ``<E>.institution.<network>.crossroads``
hub          ``spiffe://<network>/hub``              ``hub.<network>.crossroads``
admin        ``spiffe://<network>/admin/<name>``     none (administrators are clients only)
app          ``<institution URI>/app/<name>``        none (applications are clients only)
===========  ======================================  ========================================

``<E>`` is the institution's enterprise number, 10 digits without separators, validated with the
mod-97 check of :mod:`node.core.identifiers`; establishment-unit numbers are refused (institutions
are identified by their enterprise number). Network names are DNS labels: 1-63 of ``[a-z0-9-]``,
not starting or ending with ``-``. Admin names: 1-63 of ``[a-z0-9._-]`` starting with a letter or
digit. An application (``app``) belongs to one institution: it is a client of that institution's
node's local API only, and its URI is the institution's with ``/app/<name>`` appended (``name``
as for admins, ``owner`` the enterprise number); its certificate is no institution certificate
(kind ``app``), so the hub and the other nodes refuse it. Parsing is strict (canonical form
only), so two equal identities always have the same string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from belgian_ids import IdentifierError, parse_enterprise_number

__all__ = [
    "Identity",
    "Kind",
    "admin",
    "app",
    "hub",
    "institution",
    "parse_spiffe_id",
    "spiffe_id",
    "tls_name",
    "validate_app_name",
    "validate_network",
]

Kind = Literal["institution", "hub", "admin", "app"]

SCHEME = "spiffe://"
TLS_SUFFIX = "crossroads"
_NETWORK_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ADMIN_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def validate_network(network: str) -> str:
    """Return ``network`` if it is a valid network name, else raise ValueError."""
    if not isinstance(network, str) or not _NETWORK_RE.fullmatch(network):
        raise ValueError(
            f"invalid network name {network!r}: use 1-63 characters of a-z, 0-9 and '-' "
            "(not starting or ending with '-')"
        )
    return network


def validate_app_name(name: str) -> str:
    """Return ``name`` if it is a valid admin or application name, else raise ValueError."""
    if not isinstance(name, str) or not _ADMIN_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"invalid name {name!r}: use 1-63 characters of a-z, 0-9, "
            "'.', '_', '-' starting with a letter or digit"
        )
    return name


def _validate_enterprise(text: str) -> str:
    try:
        number = parse_enterprise_number(text)
    except IdentifierError as exc:
        raise ValueError(exc.message) from None
    if number.is_establishment_unit:
        raise ValueError(
            f"invalid institution identity {text!r}: {number.number} is an establishment unit "
            "number; institutions are identified by their enterprise number (starting with 0 or 1)"
        )
    return number.number


@dataclass(frozen=True)
class Identity:
    """Who a certificate belongs to. Build with :func:`institution`, :func:`hub`, :func:`admin`,
    :func:`app`."""

    kind: Kind
    network: str
    name: str
    #: The enterprise number of the institution an ``app`` belongs to ("" for other kinds).
    owner: str = ""

    def __post_init__(self) -> None:
        validate_network(self.network)
        if self.kind == "institution":
            if _validate_enterprise(self.name) != self.name:
                raise ValueError(
                    f"institution name {self.name!r} must be the 10-digit enterprise number "
                    "without separators (use pki.identity.institution() to normalize)"
                )
        elif self.kind == "hub":
            if self.name != "hub":
                raise ValueError(f"the hub identity's name is 'hub', not {self.name!r}")
        elif self.kind == "admin":
            if not _ADMIN_RE.fullmatch(self.name) or self.name in (".", ".."):
                raise ValueError(
                    f"invalid admin name {self.name!r}: use 1-63 characters of a-z, 0-9, "
                    "'.', '_', '-' starting with a letter or digit"
                )
        elif self.kind == "app":
            validate_app_name(self.name)
            if _validate_enterprise(self.owner) != self.owner:
                raise ValueError(
                    f"application owner {self.owner!r} must be the 10-digit enterprise number "
                    "without separators (use pki.identity.app() to normalize)"
                )
        else:
            raise ValueError(f"unknown identity kind {self.kind!r} (institution, hub, admin, app)")
        if self.owner and self.kind != "app":
            raise ValueError(f"only an application identity has an owner, not a {self.kind}")

    def __str__(self) -> str:
        return spiffe_id(self)


def institution(network: str, enterprise_number: str) -> Identity:
    """An institution node; accepts ``0403.019.261`` / ``BE0403019261`` forms."""
    number = _validate_enterprise(enterprise_number)
    return Identity("institution", validate_network(network), number)


def hub(network: str) -> Identity:
    return Identity("hub", network, "hub")


def admin(network: str, name: str) -> Identity:
    return Identity("admin", network, name)


def app(network: str, enterprise_number: str, name: str) -> Identity:
    """An application of institution ``enterprise_number`` (a client of its node only)."""
    return Identity("app", validate_network(network), name, _validate_enterprise(enterprise_number))


def spiffe_id(identity: Identity) -> str:
    """The URI SAN: ``spiffe://<network>/institution/<E>``, ``.../hub``, ``.../admin/<name>``,
    ``.../institution/<E>/app/<name>``."""
    if identity.kind == "hub":
        return f"{SCHEME}{identity.network}/hub"
    if identity.kind == "app":
        return f"{SCHEME}{identity.network}/institution/{identity.owner}/app/{identity.name}"
    return f"{SCHEME}{identity.network}/{identity.kind}/{identity.name}"


def parse_spiffe_id(uri: str) -> Identity:
    """Parse a canonical identity URI; raises ValueError saying what is wrong."""
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
        raise ValueError(f"identity {uri!r} is not a spiffe:// URI")
    network, _, path = uri[len(SCHEME) :].partition("/")
    try:
        validate_network(network)
    except ValueError as exc:
        raise ValueError(f"identity {uri!r}: {exc}") from None
    parts = path.split("/")
    try:
        if parts == ["hub"]:
            return hub(network)
        if len(parts) == 2 and parts[0] == "institution":
            return Identity("institution", network, parts[1])
        if len(parts) == 2 and parts[0] == "admin":
            return admin(network, parts[1])
        if len(parts) == 4 and parts[0] == "institution" and parts[2] == "app":
            return Identity("app", network, parts[3], parts[1])
    except ValueError as exc:
        raise ValueError(f"identity {uri!r}: {exc}") from None
    raise ValueError(
        f"identity {uri!r}: path must be /hub, /institution/<enterprise-number>,"
        " /institution/<enterprise-number>/app/<name> or /admin/<name>"
    )


def tls_name(identity: Identity) -> str | None:
    """The synthetic DNS SAN used as TLS target-name override (None for administrators and
    applications: clients only)."""
    if identity.kind == "institution":
        return f"{identity.name}.institution.{identity.network}.{TLS_SUFFIX}"
    if identity.kind == "hub":
        return f"hub.{identity.network}.{TLS_SUFFIX}"
    return None
