"""Validated, frozen configuration for the hub and the node, read from TOML.

Only :mod:`node.cli` reads files; it hands the parsed TOML table to :func:`hub_config` or
:func:`node_config`, which check every value once and raise :class:`ConfigError` naming the
offending key. Relative paths are resolved against the config file's directory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.core.identifiers import enterprise_number_problem

__all__ = [
    "ConfigError",
    "HubConfig",
    "Limits",
    "NodeConfig",
    "TlsFiles",
    "hub_config",
    "node_config",
]

_NETWORK = re.compile(r"^[a-z0-9-]{1,63}$")
_ADDRESS = re.compile(r"^(unix:.+|\[?[A-Za-z0-9.:-]+\]?:\d{1,5})$")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path
    crl: Path | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 4 * 1024 * 1024
    max_batch_bytes: int = 64 * 1024 * 1024
    max_batch_envelopes: int = 10_000
    destination_quota: int = 1_000_000
    delivery_batch_envelopes: int = 1_000
    delivery_batch_bytes: int = 8 * 1024 * 1024
    #: Consultations in flight per stream (an application's at its node, a node's at the
    #: hub); beyond, a question is refused at once (RESOURCE_EXHAUSTED) instead of queueing
    #: past its deadline while the machine is saturated.
    consultations_in_flight: int = 200
    #: Receivers one envelope may list (explicit routing). The hub queues a copy of the
    #: envelope per receiver, so this bounds what one envelope costs it; a network has a few
    #: thousand institutions at most and an explicit list names a handful. Duplicates are
    #: always refused (DUPLICATE_RECEIVER); beyond the bound: TOO_MANY_RECEIVERS.
    max_receivers: int = 1_000


@dataclass(frozen=True, slots=True)
class HubConfig:
    network: str
    listen: str
    data_dir: Path
    tls: TlsFiles
    limits: Limits = field(default_factory=Limits)
    directory_key: Path | None = None  # Ed25519 signing key; default data_dir/directory-signing.key
    synchronous: str = "FULL"
    log_level: str = "info"
    metrics_listen: str | None = None  # host:port of the Prometheus endpoint (node/metrics.py)

    @property
    def directory_key_path(self) -> Path:
        return self.directory_key or self.data_dir / "directory-signing.key"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    network: str
    enterprise_number: str
    listen: str
    hub: str
    local_api: str
    data_dir: Path
    tls: TlsFiles
    hub_directory_key: Path | None = None  # the hub's directory public key (PEM)
    advertise: str | None = None
    hub_tls_name: str | None = None
    limits: Limits = field(default_factory=Limits)
    synchronous: str = "FULL"
    log_level: str = "info"
    submit_window: int = 4
    # This node is the contributions institution: immediate declarations delivered to it
    # emit employment mutations (node/member/declaration_desk.py).
    emit_employment_mutations: bool = False
    # Days a finished envelope stays in the node's store (node/member/retention.py); 0: kept.
    retention_days: int = 30
    metrics_listen: str | None = None  # host:port of the Prometheus endpoint (node/metrics.py)


def hub_config(table: Mapping[str, Any], base: Path) -> HubConfig:
    r = _Reader(table, base, "")
    cfg = HubConfig(
        network=r.network(),
        listen=r.address("listen"),
        data_dir=r.path("data_dir"),
        tls=_tls(r.sub("tls"), with_crl=True),
        limits=_limits(r.sub("limits", required=False)),
        directory_key=r.path("directory_key", required=False),
        synchronous=r.choice("synchronous", ("FULL", "NORMAL"), "FULL"),
        log_level=r.choice("log_level", ("debug", "info", "warning", "error"), "info"),
        metrics_listen=r.tcp_address("metrics_listen"),
    )
    r.done()
    return cfg


def node_config(table: Mapping[str, Any], base: Path) -> NodeConfig:
    r = _Reader(table, base, "")
    cfg = NodeConfig(
        network=r.network(),
        enterprise_number=r.enterprise("enterprise_number"),
        listen=r.address("listen"),
        hub=r.address("hub"),
        local_api=r.address("local_api"),
        data_dir=r.path("data_dir"),
        tls=_tls(r.sub("tls"), with_crl=False),
        hub_directory_key=r.path("hub_directory_key"),
        advertise=r.address("advertise", required=False),
        hub_tls_name=r.text("hub_tls_name", required=False),
        limits=_limits(r.sub("limits", required=False)),
        synchronous=r.choice("synchronous", ("FULL", "NORMAL"), "FULL"),
        log_level=r.choice("log_level", ("debug", "info", "warning", "error"), "info"),
        submit_window=r.integer("submit_window", 4, minimum=1),
        emit_employment_mutations=r.flag("emit_employment_mutations", False),
        retention_days=r.integer("retention_days", 30, minimum=0),
        metrics_listen=r.tcp_address("metrics_listen"),
    )
    r.done()
    return cfg


def _tls(r: _Reader, with_crl: bool) -> TlsFiles:
    files = TlsFiles(
        ca_cert=r.path("ca_cert"),
        cert=r.path("cert"),
        key=r.path("key"),
        crl=r.path("crl", required=False) if with_crl else None,
    )
    r.done()
    return files


def _limits(r: _Reader) -> Limits:
    d = Limits()
    limits = Limits(
        max_payload_bytes=r.integer("max_payload_bytes", d.max_payload_bytes, minimum=1),
        max_batch_bytes=r.integer("max_batch_bytes", d.max_batch_bytes, minimum=1024),
        max_batch_envelopes=r.integer("max_batch_envelopes", d.max_batch_envelopes, minimum=1),
        destination_quota=r.integer("destination_quota", d.destination_quota, minimum=1),
        delivery_batch_envelopes=r.integer(
            "delivery_batch_envelopes", d.delivery_batch_envelopes, minimum=1
        ),
        delivery_batch_bytes=r.integer("delivery_batch_bytes", d.delivery_batch_bytes, minimum=1),
        consultations_in_flight=r.integer(
            "consultations_in_flight", d.consultations_in_flight, minimum=1
        ),
        max_receivers=r.integer("max_receivers", d.max_receivers, minimum=1),
    )
    if limits.max_batch_bytes < limits.max_payload_bytes + 1024:
        raise ConfigError(f"{r.prefix}max_batch_bytes must exceed max_payload_bytes")
    r.done()
    return limits


class _Reader:
    """Reads keys from one TOML table, remembering which were used to refuse unknown ones."""

    def __init__(self, table: Mapping[str, Any], base: Path, prefix: str) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(f"{prefix or 'config'} must be a table")
        self.table, self.base, self.prefix = table, base, prefix
        self.used: set[str] = set()

    def _get(self, key: str, required: bool) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required:
                raise ConfigError(f"{self.prefix}{key} is required")
            return None
        return self.table[key]

    def text(self, key: str, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.prefix}{key} must be a non-empty string")
        return value

    def network(self) -> str:
        value = self.text("network") or ""
        if not _NETWORK.match(value):
            raise ConfigError("network must be 1-63 characters of a-z, 0-9 and '-'")
        return value

    def enterprise(self, key: str) -> str:
        value = self.text(key) or ""
        problem = enterprise_number_problem(value)
        if problem is not None or not value.isdigit():
            raise ConfigError(
                f"{self.prefix}{key} {value!r} is not a valid enterprise number"
                f" ({problem or 'digits only'}; 10 digits, mod-97 check digits)"
            )
        return value

    def address(self, key: str, required: bool = True) -> str | None:
        value = self.text(key, required)
        if value is not None and not _ADDRESS.match(value):
            raise ConfigError(f"{self.prefix}{key} {value!r} must be host:port or unix:/path")
        return value

    def tcp_address(self, key: str) -> str | None:
        """An optional ``host:port`` (no unix socket: e.g. an HTTP endpoint)."""
        value = self.address(key, required=False)
        if value is not None and value.startswith("unix:"):
            raise ConfigError(f"{self.prefix}{key} {value!r} must be host:port")
        return value

    def path(self, key: str, required: bool = True) -> Path:
        value = self.text(key, required)
        if value is None:
            return None  # type: ignore[return-value]
        path = Path(value)
        return path if path.is_absolute() else (self.base / path).resolve()

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        value = self._get(key, required=False)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"{self.prefix}{key} must be an integer >= {minimum}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.prefix}{key} must be true or false")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self._get(key, required=False)
        if value is None:
            return default
        if value not in options:
            raise ConfigError(f"{self.prefix}{key} must be one of {', '.join(options)}")
        return str(value)

    def sub(self, key: str, required: bool = True) -> _Reader:
        value = self._get(key, required)
        return _Reader(value if value is not None else {}, self.base, f"{self.prefix}{key}.")

    def tables(self, key: str) -> list[_Reader]:
        value = self._get(key, required=False) or []
        if not isinstance(value, list):
            raise ConfigError(f"{self.prefix}{key} must be an array of tables")
        return [_Reader(t, self.base, f"{self.prefix}{key}[{i}].") for i, t in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise ConfigError(f"unknown setting {self.prefix}{unknown[0]}")
