"""gRPC credentials and channel options for mutual TLS.

Servers require a client certificate signed by the network CA (``require_client_auth``);
the TLS handshake itself refuses other CAs, expired certificates and clients without one.
Revocation and identity are checked per call by :mod:`node.rpc.peer`.

Clients verify the server against a synthetic DNS name carried in every certificate
(``hub.<network>.crossroads``, ``<enterprise>.institution.<network>.crossroads``), so a
connection to a node's endpoint proves the server *is* that institution, whatever address
it listens on.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from node.config import TlsFiles

__all__ = [
    "TlsMaterial",
    "channel_options",
    "hub_tls_name",
    "institution_tls_name",
    "server_options",
]


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    ca_cert: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, files: TlsFiles) -> TlsMaterial:
        return cls(files.ca_cert.read_bytes(), files.cert.read_bytes(), files.key.read_bytes())

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca_cert, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_cert, private_key=self.key, certificate_chain=self.cert
        )


def hub_tls_name(network: str) -> str:
    return f"hub.{network}.crossroads"


def institution_tls_name(network: str, enterprise_number: str) -> str:
    return f"{enterprise_number}.institution.{network}.crossroads"


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC turns SO_REUSEPORT on by default: a second daemon started by mistake on the
        # same port would then bind too, and the kernel would split connections between them.
        ("grpc.so_reuseport", 0),
    ]


def channel_options(tls_name: str | None, max_message_bytes: int) -> list[tuple[str, object]]:
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]
    if tls_name:
        options.append(("grpc.ssl_target_name_override", tls_name))
    return options
