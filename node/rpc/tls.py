"""gRPC credentials and channel options for mutual TLS.

Servers require a client certificate signed by the network CA (``require_client_auth``);
the TLS handshake itself refuses other CAs, expired certificates and clients without one.
Revocation and identity are checked per call by :mod:`node.rpc.peer`.

Clients verify the server against a synthetic DNS name carried in every certificate
(``hub.<network>.crossroads``, ``<enterprise>.institution.<network>.crossroads``), so a
connection to a node's endpoint proves the server *is* that institution, whatever address
it listens on.

Connection bounds and keepalive (``server_options`` / ``channel_options``; docs/OPERATIONS.md,
"Connections and keepalive"):

* A connection must finish its TLS handshake within ``HANDSHAKE_TIMEOUT_MS`` (gRPC's default:
  120 s), so sockets that connect and never speak, or stop mid-ClientHello, are closed soon
  and cannot pile up until the process runs out of file descriptors.
* A server accepts at most ``max_connections`` connections at once (gRPC core's
  ``grpc.max_allowed_incoming_connections``; the daemons pass half their open-file limit,
  :mod:`node.open_files`): beyond, a new connection is closed at once instead of failing
  every ``accept`` and ``open`` of the process with EMFILE.
* A connection without a call for ``IDLE_TIMEOUT_MS`` is closed by the server (GOAWAY; the
  client reconnects when it needs to).
* Keepalive: a ping after ``keepalive.time_ms``, the connection closed when its ack has not
  come within ``keepalive.timeout_ms``. gRPC core (1.85) in effect does not apply
  ``grpc.keepalive_timeout_ms`` to the keepalive ping: every ping it sends gets a timer of
  ``grpc.http2.ping_timeout_ms`` (default 60 s), and the separate keepalive timer in
  ``grpc_chttp2_end_write`` (chttp2/transport/writing.cc) is only armed when a handle for it
  already exists. That is why a frozen peer was noticed after 60-90 s instead of 40.
  Both are set to ``keepalive.timeout_ms`` here (tests/e2e/test_frozen_peers.py fails
  without ``grpc.http2.ping_timeout_ms``). A server lets its peers ping as often
  as every ``min(keepalive.time_ms / 2, 10 s)`` without data before it answers GOAWAY
  ``too_many_pings`` (which would make gRPC double the client's keepalive time).

The daemons' client channels come from one constructor, :func:`secure_channel`. The headroom
rule: a channel takes and sends messages up to the largest content it carries, as bounded by
``Limits`` (a batch's bytes, a payload, a delivery batch and the one envelope that may take it
over its bound, a directory update), plus ``MESSAGE_HEADROOM_BYTES`` (1 MiB) for what wraps
that content (protobuf tags and lengths, tickets, outcomes, the other fields).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from node.config import Keepalive, NodeConfig, TlsFiles
from node.rpc.server_certs import OPEN_CHANNELS

__all__ = [
    "HANDSHAKE_TIMEOUT_MS",
    "IDLE_TIMEOUT_MS",
    "InstitutionDialer",
    "MESSAGE_HEADROOM_BYTES",
    "TlsMaterial",
    "TlsReloadRefused",
    "channel_options",
    "hub_channel",
    "hub_tls_name",
    "institution_tls_name",
    "secure_channel",
    "server_options",
]


class TlsReloadRefused(Exception):
    """New TLS files that must not replace the ones in use (the reason is the message)."""


@dataclass(slots=True)
class TlsMaterial:
    """The daemon's CA certificate, certificate and key (PEM). :meth:`reload` (SIGHUP)
    replaces them in place: channels opened afterwards, and every TLS handshake on a server
    made with :meth:`server_credentials`, use the new ones; established connections, and
    the streams on them, go on as they are."""

    ca_cert: bytes
    cert: bytes
    key: bytes
    #: +1 at every replacement (the servers' credential fetchers compare it).
    generation: int = 0

    @classmethod
    def load(cls, files: TlsFiles) -> TlsMaterial:
        return cls(files.ca_cert.read_bytes(), files.cert.read_bytes(), files.key.read_bytes())

    def reload(self, files: TlsFiles) -> bool:
        """Read ``files`` again; whether they replaced the material in use.
        :class:`TlsReloadRefused` (nothing replaced) when the key is not the certificate's
        or the CA did not issue the certificate; ``OSError`` when a file cannot be read."""
        new = TlsMaterial.load(files)
        if (new.ca_cert, new.cert, new.key) == (self.ca_cert, self.cert, self.key):
            return False
        _check_pair(new)
        self.ca_cert, self.cert, self.key = new.ca_cert, new.cert, new.key
        self.generation += 1
        return True

    def _server_config(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)],
                                                         root_certificates=self.ca_cert)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Client certificates required; the material in force at each handshake."""
        served = self.generation

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            nonlocal served  # called by gRPC before each new connection's handshake
            if self.generation == served:
                return None  # unchanged
            served = self.generation
            return self._server_config()

        return grpc.dynamic_ssl_server_credentials(self._server_config(), fetch,
                                                   require_client_authentication=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_cert, private_key=self.key, certificate_chain=self.cert
        )


def _check_pair(material: TlsMaterial) -> None:
    try:
        cert = x509.load_pem_x509_certificate(material.cert)
        ca = x509.load_pem_x509_certificate(material.ca_cert)
        key = serialization.load_pem_private_key(material.key, password=None)
    except ValueError as exc:
        raise TlsReloadRefused(f"unreadable PEM: {exc}") from exc
    raw = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        raise TlsReloadRefused("the key is not the certificate's")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise TlsReloadRefused("the CA certificate did not issue the certificate") from exc


def hub_tls_name(network: str) -> str:
    return f"hub.{network}.crossroads"


def institution_tls_name(network: str, enterprise_number: str) -> str:
    return f"{enterprise_number}.institution.{network}.crossroads"


#: Time a new connection has to finish its TLS handshake (gRPC's default: 120 s).
HANDSHAKE_TIMEOUT_MS = 10_000
#: A connection without any call for this long is closed by the server (GOAWAY).
IDLE_TIMEOUT_MS = 10 * 60_000
#: Peers may ping this often (at most) without data before a server sends GOAWAY
#: ``too_many_pings``; half the daemon's own ``keepalive.time_ms`` when that is lower.
MIN_PEER_PING_INTERVAL_MS = 10_000


def _keepalive_options(keepalive: Keepalive) -> list[tuple[str, int]]:
    return [
        ("grpc.keepalive_time_ms", keepalive.time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.timeout_ms),
        # What gRPC core actually waits for a ping's ack (see the module's docstring).
        ("grpc.http2.ping_timeout_ms", keepalive.timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        # Keepalive pings on an idle connection are not limited to gRPC's default of 2.
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC turns SO_REUSEPORT on by default: a second daemon started by mistake on the
        # same port would then bind too, and the kernel would split connections between them.
        ("grpc.so_reuseport", 0),
    ]


def server_options(
    max_message_bytes: int, keepalive: Keepalive | None = None, max_connections: int | None = None
) -> list[tuple[str, int]]:
    keepalive = keepalive or Keepalive()
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *_keepalive_options(keepalive),
        ("grpc.http2.min_ping_interval_without_data_ms",
         min(MIN_PEER_PING_INTERVAL_MS, keepalive.time_ms // 2)),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_connection_idle_ms", IDLE_TIMEOUT_MS),
    ]
    if max_connections is not None:
        options.append(("grpc.max_allowed_incoming_connections", max_connections))
    return options


def channel_options(
    tls_name: str | None, max_message_bytes: int, keepalive: Keepalive | None = None
) -> list[tuple[str, object]]:
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *_keepalive_options(keepalive or Keepalive()),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]
    if tls_name:
        options.append(("grpc.ssl_target_name_override", tls_name))
    return options


#: Bytes a client channel allows beyond the largest content it carries (the module's docstring).
MESSAGE_HEADROOM_BYTES = 1 << 20


def secure_channel(target: str, tls: TlsMaterial, tls_name: str, largest_content_bytes: int,
                   keepalive: Keepalive | None = None) -> grpc.aio.Channel:
    """A mutual-TLS channel to ``target`` whose server must hold ``tls_name``'s certificate,
    for messages up to ``largest_content_bytes`` + :data:`MESSAGE_HEADROOM_BYTES`."""
    channel = grpc.aio.secure_channel(
        target, tls.channel_credentials(),
        options=channel_options(tls_name, largest_content_bytes + MESSAGE_HEADROOM_BYTES,
                                keepalive))
    OPEN_CHANNELS.register(channel)  # its server's certificate is checked while it is open
    return channel


def hub_channel(config: NodeConfig, tls: TlsMaterial, largest_content_bytes: int,
                target: str) -> grpc.aio.Channel:
    """A node's :func:`secure_channel` to its hub at ``target`` (one of ``config.hubs``, as
    :class:`node.rpc.hub_choice.HubChoice` chose), whose certificate must hold
    ``config.hub_tls_name`` (default: the network's hub name), whichever address it is."""
    return secure_channel(target, tls, config.hub_tls_name or hub_tls_name(config.network),
                          largest_content_bytes, config.keepalive)


@dataclass(frozen=True, slots=True)
class InstitutionDialer:
    """The hub's channels to the nodes (delivery, consultations): to an institution's
    endpoint, whose server must hold that institution's certificate."""

    tls: TlsMaterial
    network: str
    keepalive: Keepalive = Keepalive()

    def channel(self, institution: str, endpoint: str,
                largest_content_bytes: int) -> grpc.aio.Channel:
        return secure_channel(endpoint, self.tls, institution_tls_name(self.network, institution),
                              largest_content_bytes, self.keepalive)
