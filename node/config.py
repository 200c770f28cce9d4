"""Validated, frozen configuration for the hub and the node, read from TOML.

Only :mod:`node.cli` reads files; it hands the parsed TOML table to :func:`hub_config` or
:func:`node_config`, which check every value once and raise :class:`ConfigError` naming the
offending key. The reader collects every problem before raising (``ConfigError.problems``,
one line each naming its key and the fix), so ``crossroads hub|node check-config`` can list
them all at once. Relative paths are resolved against the config file's directory.

Ports: 1-65535; 0 ("any free port", tests and labs) only where the daemon listens
(``listen``, ``local_api``, ``metrics_listen``), never where others must connect (``hub``,
``advertise``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from node.core.identifiers import enterprise_number_problem
from pki.identity import validate_app_name

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "ANY_SERVICE",
    "AppPermissions",
    "Application",
    "AuditCheckpoints",
    "ConfigError",
    "HubConfig",
    "Keepalive",
    "Limits",
    "MetricsWeb",
    "NodeConfig",
    "StoreBackend",
    "StoreConfig",
    "Timeouts",
    "TlsFiles",
    "hub_config",
    "node_config",
    "read_hub_config",
    "read_node_config",
]

_NETWORK = re.compile(r"^[a-z0-9-]{1,63}$")
#: A replica's name in the lease tables and logs (``[store] replica_id``).
_REPLICA_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ADDRESS = re.compile(r"^(unix:.+|\[?[A-Za-z0-9.:-]+\]?:\d{1,5})$")


class ConfigError(ValueError):
    """A config that must not be served; ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = problems or (message,)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path
    crl: Path | None = None
    #: "crl": revocation is checked against the network CA's CRL (the hub requires ``crl``);
    #: "off": no CRL at all (the hub must say so explicitly; see docs/OPERATIONS.md).
    revocation: str = "crl"
    #: What to do once the CRL in force is past its nextUpdate: "refuse" every peer, or
    #: "warn" (keep serving; error log and the ``crl_stale`` metric).
    crl_stale: str = "refuse"


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
    #: A node's uplink batches (``Hub.Submit``): at most this many envelopes and bytes each,
    #: and never more than ``max_batch_envelopes`` or half of ``max_batch_bytes``.
    submit_batch_envelopes: int = 1_000
    submit_batch_bytes: int = 8 * 1024 * 1024
    #: Calls in flight on one multiplexed stream (consultations, answers: node/rpc/multiplex.py)
    #: before a further call on it is refused at once (RESOURCE_EXHAUSTED).
    stream_calls_in_flight: int = 10_000


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a daemon waits before it gives a stream up (``[timeouts]``)."""

    #: The oldest batch in flight on a stream (the node's ``Hub.Submit``, the hub's
    #: ``Node.Deliver``) may wait this long for its ack; then the stream is ended and retried.
    ack_s: float = 60.0


@dataclass(frozen=True, slots=True)
class AuditCheckpoints:
    """When the hub signs its audit chain's head (``[audit_checkpoints]``, docs/AUDIT.md).

    A commit that brings the chain ``every_records`` records or ``every_s`` seconds past the
    last checkpoint writes a signed checkpoint in its own transaction; an idle hub signs the
    head every ``idle_every_s`` seconds if it moved (and always when it stops)."""

    every_records: int = 10_000
    every_s: float = 60.0
    idle_every_s: float = 60.0


class StoreBackend(StrEnum):
    """Where the hub keeps its state (``[store] backend``)."""

    #: Two SQLite files in ``data_dir``: one hub process (the embedded default).
    SQLITE = "sqlite"
    #: One PostgreSQL database shared by every replica of the hub tier (docs/OPERATIONS.md).
    POSTGRESQL = "postgresql"


#: libpq's key for a password in a DSN, and a URL's ``user:password@``: refused in ``dsn``.
_DSN_PASSWORD = re.compile(r"(^|[\s?&])password\s*=|^[a-z]+://[^/@]*:[^/@]*@", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The hub's store (``[store]``): SQLite (default) or a shared PostgreSQL database.

    With PostgreSQL, ``dsn`` is a libpq connection string without a password (it may list
    several hosts, ``host=a,b`` or ``postgresql://a,b/db``, with
    ``target_session_attrs=read-write``); the password comes from ``password_file`` (its first
    line, the file readable by the hub only) or the environment variable named by
    ``password_env``, or from neither (``.pgpass``, peer or certificate authentication). A
    password is never written in the DSN nor given on a command line."""

    backend: StoreBackend = StoreBackend.SQLITE
    dsn: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    pool_min_size: int = 2
    pool_max_size: int = 8
    #: Prepared statements cached per connection; 0 behind a transaction-mode pooler.
    statement_cache_size: int = 100
    #: Names this replica in delivery leases and logs; default: ``<hostname>:<listen port>``.
    replica_id: str | None = None


#: A list of addresses (a node's ``hubs``) holds at most this many: checked before any entry
#: is read (a hub tier has a handful of replicas).
MAX_ADDRESSES = 64

#: In a permission list: every service.
ANY_SERVICE = "*"


@dataclass(frozen=True, slots=True)
class AppPermissions:
    """What a client of the local API may do (node/member/app_permissions.py checks it).

    ``send``/``consult``/``answer``: the service ids it may submit envelopes for, consult,
    or answer questions for (``"*"``: any); ``fetch``: read and acknowledge the inbox."""

    send: frozenset[str] = frozenset()
    consult: frozenset[str] = frozenset()
    answer: frozenset[str] = frozenset()
    fetch: bool = False


@dataclass(frozen=True, slots=True)
class Application:
    """An application known to the node: its certificate's name (``pki issue --profile app
    --name``) and what it may do."""

    name: str
    permissions: AppPermissions


@dataclass(frozen=True, slots=True)
class MetricsWeb:
    """The metrics endpoint's TLS and basic authentication (``[metrics]``, node/metrics_web.py):
    none of it by default (plain HTTP, no authentication)."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: With it, clients must present a certificate this CA issued.
    client_ca: Path | None = None
    #: (user name, bcrypt hash): ``/metrics`` needs one of them (``Authorization: Basic``).
    basic_auth_users: tuple[tuple[str, str], ...] = ()

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


#: A bcrypt hash (``$2b$12$...``, as ``htpasswd -B`` or ``bcrypt.hashpw`` make it).
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")


@dataclass(frozen=True, slots=True)
class Keepalive:
    """HTTP/2 keepalive of every gRPC connection a daemon opens or accepts (``[keepalive]``).

    A ping goes out after ``time_ms`` without a ping; a peer that does not answer within
    ``timeout_ms`` (frozen, or its network gone) has its connection closed, so a dead peer is
    noticed within about ``time_ms + timeout_ms`` (node/rpc/tls.py applies both).
    """

    time_ms: int = 30_000
    timeout_ms: int = 10_000


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
    metrics: MetricsWeb = field(default_factory=MetricsWeb)
    keepalive: Keepalive = field(default_factory=Keepalive)
    timeouts: Timeouts = field(default_factory=Timeouts)
    audit_checkpoints: AuditCheckpoints = field(default_factory=AuditCheckpoints)
    store: StoreConfig = field(default_factory=StoreConfig)

    @property
    def directory_key_path(self) -> Path:
        return self.directory_key or self.data_dir / "directory-signing.key"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    network: str
    enterprise_number: str
    listen: str
    #: The hub's addresses (``hubs``, or the older single ``hub``), in order of preference:
    #: the node's clients move to the next one when a connection fails (node/rpc/hub_choice.py).
    hubs: tuple[str, ...]
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
    # Readiness (/readyz, node/probes.py): the longest the directory stream may have been
    # down before the node reports its fragment stale (not ready).
    readiness_directory_age_s: float = 300.0
    metrics_listen: str | None = None  # host:port of the Prometheus endpoint (node/metrics.py)
    metrics: MetricsWeb = field(default_factory=MetricsWeb)
    keepalive: Keepalive = field(default_factory=Keepalive)
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: Mutual TLS of a TCP local API (required then): the node's server certificate and the
    #: CA that signs application certificates.
    local_tls: TlsFiles | None = None
    #: The applications that may call a TCP local API, with what each may do.
    applications: tuple[Application, ...] = ()
    #: What clients of a unix-socket local API may do; None: everything (they are trusted by
    #: the socket's file permissions).
    local_socket: AppPermissions | None = None

    @property
    def local_api_is_tcp(self) -> bool:
        return not self.local_api.startswith("unix:")


def hub_config(table: Mapping[str, Any], base: Path) -> HubConfig:
    cfg, problems = read_hub_config(table, base)
    if problems:
        raise ConfigError("; ".join(problems), tuple(problems))
    return cfg


def node_config(table: Mapping[str, Any], base: Path) -> NodeConfig:
    cfg, problems = read_node_config(table, base)
    if problems:
        raise ConfigError("; ".join(problems), tuple(problems))
    return cfg


def read_hub_config(table: Mapping[str, Any], base: Path) -> tuple[HubConfig, list[str]]:
    """The config as far as it could be read, and every problem found (empty: valid)."""
    r = _Reader(table, base, "")
    cfg = HubConfig(
        network=r.network(),
        listen=r.address("listen", any_port=True),
        data_dir=r.path("data_dir"),
        tls=_tls(r.sub("tls"), hub=True),
        limits=_limits(r.sub("limits", required=False)),
        directory_key=r.path("directory_key", required=False),
        synchronous=r.choice("synchronous", ("FULL", "NORMAL"), "FULL"),
        log_level=r.choice("log_level", ("debug", "info", "warning", "error"), "info"),
        metrics_listen=r.tcp_address("metrics_listen"),
        metrics=_metrics_web(r),
        keepalive=_keepalive(r.sub("keepalive", required=False)),
        timeouts=_timeouts(r.sub("timeouts", required=False)),
        audit_checkpoints=_audit_checkpoints(r.sub("audit_checkpoints", required=False)),
        store=_store(r.sub("store", required=False)),
    )
    r.done()
    return cfg, r.problems


def _store(r: _Reader) -> StoreConfig:
    backend = StoreBackend(r.choice("backend", tuple(StoreBackend), StoreBackend.SQLITE))
    pool = r.numbers(StoreConfig(), {"pool_min_size": 1, "pool_max_size": 1,
                                     "statement_cache_size": 0})
    store = replace(
        pool, backend=backend,
        dsn=r.text("dsn", required=backend is StoreBackend.POSTGRESQL),
        password_file=r.path("password_file", required=False),
        password_env=r.text("password_env", required=False),
        replica_id=r.text("replica_id", required=False),
    )
    if store.replica_id is not None and not _REPLICA_ID.match(store.replica_id):
        r.problem(f"{r.prefix}replica_id must be 1-128 characters of A-Z, a-z, 0-9, '.', '_',"
                  " ':' and '-'")
    if store.pool_max_size < store.pool_min_size:
        r.problem(f"{r.prefix}pool_max_size must be >= pool_min_size")
    if store.password_file is not None and store.password_env is not None:
        r.problem(f"{r.prefix}password_file and {r.prefix}password_env both given: keep one")
    if store.dsn is not None and _DSN_PASSWORD.search(store.dsn):
        r.problem(f"{r.prefix}dsn must not hold a password: put it in a file named by"
                  f" {r.prefix}password_file (or the variable named by {r.prefix}password_env)")
    if backend is StoreBackend.SQLITE:
        for key in ("dsn", "password_file", "password_env"):
            if key in r.table:
                r.problem(f"{r.prefix}{key} applies to backend = \"postgresql\" only:"
                          f" remove it, or set {r.prefix}backend = \"postgresql\"")
    r.done()
    return store


def read_node_config(table: Mapping[str, Any], base: Path) -> tuple[NodeConfig, list[str]]:
    """The config as far as it could be read, and every problem found (empty: valid)."""
    r = _Reader(table, base, "")
    cfg = NodeConfig(
        network=r.network(),
        enterprise_number=r.enterprise("enterprise_number"),
        listen=r.address("listen", any_port=True),
        hubs=_hub_addresses(r),
        local_api=r.address("local_api", any_port=True),
        data_dir=r.path("data_dir"),
        tls=_tls(r.sub("tls"), hub=False),
        hub_directory_key=r.path("hub_directory_key"),
        advertise=r.address("advertise", required=False),
        hub_tls_name=r.text("hub_tls_name", required=False),
        limits=_limits(r.sub("limits", required=False)),
        synchronous=r.choice("synchronous", ("FULL", "NORMAL"), "FULL"),
        log_level=r.choice("log_level", ("debug", "info", "warning", "error"), "info"),
        submit_window=r.integer("submit_window", 4, minimum=1),
        emit_employment_mutations=r.flag("emit_employment_mutations", False),
        retention_days=r.integer("retention_days", 30, minimum=0),
        readiness_directory_age_s=r.seconds("readiness_directory_age_s", 300.0, minimum=1),
        metrics_listen=r.tcp_address("metrics_listen"),
        metrics=_metrics_web(r),
        local_tls=_local_tls(r),
        applications=_applications(r),
        local_socket=_local_socket(r),
        keepalive=_keepalive(r.sub("keepalive", required=False)),
        timeouts=_timeouts(r.sub("timeouts", required=False)),
    )
    r.done()
    for problem in _local_api_problems(cfg):
        r.problem(problem)
    return cfg, r.problems


def _hub_addresses(r: _Reader) -> tuple[str, ...]:
    """``hubs`` (a list of addresses) or the older ``hub`` (one address), not both."""
    if "hub" in r.table and "hubs" in r.table:
        r.used.update(("hub", "hubs"))
        r.problem("hub and hubs both given: keep hubs (a list of host:port), remove hub")
        return ()
    if "hubs" not in r.table:
        if "hub" not in r.table:
            r.used.add("hub")
            r.problem("hubs is required: the hub's addresses, e.g. hubs = [\"hub.example:7443\"]")
            return ()
        single = r.address("hub")
        return () if single is None else (single,)
    return r.addresses("hubs")


def _local_tls(r: _Reader) -> TlsFiles | None:
    if "local_tls" not in r.table:
        r.used.add("local_tls")
        return None
    return _tls(r.sub("local_tls"), hub=False)


def _permissions(r: _Reader) -> AppPermissions:
    return AppPermissions(
        send=r.services("send"), consult=r.services("consult"), answer=r.services("answer"),
        fetch=r.flag("fetch", False))


def _applications(r: _Reader) -> tuple[Application, ...]:
    apps: list[Application] = []
    for t in r.tables("applications"):
        name = t.text("name") or ""
        try:
            validate_app_name(name)
        except ValueError as exc:
            t.problem(f"{t.prefix}name: {exc}")
        if any(a.name == name for a in apps):
            t.problem(f"{t.prefix}name {name!r} is listed twice")
        apps.append(Application(name, _permissions(t)))
        t.done()
    return tuple(apps)


def _local_socket(r: _Reader) -> AppPermissions | None:
    if "local_socket" not in r.table:
        r.used.add("local_socket")
        return None
    sub = r.sub("local_socket")
    permissions = _permissions(sub)
    sub.done()
    return permissions


def _local_api_problems(cfg: NodeConfig) -> list[str]:
    """A TCP local API is reachable by every local user (or further): only with mutual TLS and
    application certificates. The unix socket's settings do not apply to TCP, and back."""
    problems: list[str] = []
    if cfg.local_api is None:  # already reported as missing
        return problems
    if cfg.local_api_is_tcp:
        if cfg.local_tls is None:
            problems.append(
                f"local_tls is required when local_api is a TCP address ({cfg.local_api}):"
                " add [local_tls] ca_cert, cert, key (mutual TLS; applications present"
                " certificates from 'crossroads pki issue --profile app') and list the"
                " applications in [[applications]], or use local_api = \"unix:/path\"")
        if cfg.local_socket is not None:
            problems.append("local_socket applies to a unix-socket local_api only; with a TCP"
                            " local_api list the applications in [[applications]]")
    else:
        if cfg.local_tls is not None:
            problems.append("local_tls applies to a TCP local_api only; the unix socket is"
                            " protected by its file permissions (0660)")
        if cfg.applications:
            problems.append("applications apply to a TCP local_api (with local_tls) only;"
                            " limit the unix socket's clients with [local_socket]")
    return problems


def _metrics_web(r: _Reader) -> MetricsWeb:
    """``[metrics]``: the metrics endpoint's TLS and basic authentication (with
    ``metrics_listen`` only)."""
    if "metrics" not in r.table:
        r.used.add("metrics")
        return MetricsWeb()
    t = r.sub("metrics")
    web = MetricsWeb(tls_cert=t.path("tls_cert", required=False),
                     tls_key=t.path("tls_key", required=False),
                     client_ca=t.path("client_ca", required=False),
                     basic_auth_users=_basic_auth_users(t))
    t.done()
    if "metrics_listen" not in r.table:
        r.problem("metrics applies with metrics_listen only: set metrics_listen = \"host:port\""
                  " or remove [metrics]")
    if (web.tls_cert is None) != (web.tls_key is None):
        given, missing = ("tls_cert", "tls_key") if web.tls_key is None else ("tls_key", "tls_cert")
        r.problem(f"metrics.{given} is given without metrics.{missing}: give both (the"
                  " endpoint's PEM certificate and its key) or neither")
    if web.client_ca is not None and web.tls_cert is None:
        r.problem("metrics.client_ca needs metrics.tls_cert and metrics.tls_key (client"
                  " certificates are TLS's)")
    return web


def _basic_auth_users(t: _Reader) -> tuple[tuple[str, str], ...]:
    value = t._get("basic_auth_users", required=False)
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not value:
        t.problem(f"{t.prefix}basic_auth_users must be a table of user = \"<bcrypt hash>\"")
        return ()
    users: list[tuple[str, str]] = []
    for name, hashed in value.items():
        if not name or ":" in name:
            t.problem(f"{t.prefix}basic_auth_users: user name {name!r} must be non-empty,"
                      " without ':'")
        elif not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed):
            t.problem(f"{t.prefix}basic_auth_users.{name} is not a bcrypt hash ($2b$<cost>$...,"
                      " 60 characters: docs/OPERATIONS.md, \"Metrics\", tells how to make one);"
                      " never a password in clear")
        else:
            users.append((name, hashed))
    return tuple(users)


def _keepalive(r: _Reader) -> Keepalive:
    keepalive = r.numbers(Keepalive(), {"time_ms": 1_000, "timeout_ms": 1_000})
    r.done()
    return keepalive


def _timeouts(r: _Reader) -> Timeouts:
    timeouts = r.numbers(Timeouts(), {"ack_s": 0.1})
    r.done()
    return timeouts


def _audit_checkpoints(r: _Reader) -> AuditCheckpoints:
    policy = r.numbers(AuditCheckpoints(),
                       {"every_records": 1, "every_s": 0, "idle_every_s": 1})
    r.done()
    return policy


def _tls(r: _Reader, hub: bool) -> TlsFiles:
    files = TlsFiles(
        ca_cert=r.path("ca_cert"),
        cert=r.path("cert"),
        key=r.path("key"),
        crl=r.path("crl", required=False),
        revocation=r.choice("revocation", ("crl", "off"), "crl"),
        crl_stale=r.choice("crl_stale", ("refuse", "warn"), "refuse"),
    )
    if hub and files.revocation == "crl" and files.crl is None and "crl" not in r.table:
        r.problem(f"{r.prefix}crl is required: the network CA's CRL (`crossroads pki crl`);"
                  f" to run without revocation, say so with {r.prefix}revocation = \"off\"")
    if files.revocation == "off" and files.crl is not None:
        r.problem(f"{r.prefix}revocation = \"off\" contradicts {r.prefix}crl:"
                  " remove one of them")
    r.done()
    return files


def _limits(r: _Reader) -> Limits:
    limits = r.numbers(Limits(), {
        "max_payload_bytes": 1, "max_batch_bytes": 1024, "max_batch_envelopes": 1,
        "destination_quota": 1, "delivery_batch_envelopes": 1, "delivery_batch_bytes": 1,
        "consultations_in_flight": 1, "max_receivers": 1, "submit_batch_envelopes": 1,
        "submit_batch_bytes": 1, "stream_calls_in_flight": 1,
    })
    if limits.max_batch_bytes < limits.max_payload_bytes + 1024:
        r.problem(f"{r.prefix}max_batch_bytes must exceed max_payload_bytes")
    r.done()
    return limits


_Settings = TypeVar("_Settings", bound="DataclassInstance")


class _Reader:
    """Reads keys from one TOML table, remembering which were used to refuse unknown ones."""

    def __init__(self, table: Mapping[str, Any], base: Path, prefix: str,
                 problems: list[str] | None = None) -> None:
        #: Every problem found so far, shared with the sub-tables' readers.
        self.problems: list[str] = [] if problems is None else problems
        if not isinstance(table, Mapping):
            self.problem(f"{prefix.rstrip('.') or 'config'} must be a table")
            table = {}
        self.table, self.base, self.prefix = table, base, prefix
        self.used: set[str] = set()

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def _get(self, key: str, required: bool) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required:
                self.problem(f"{self.prefix}{key} is required")
            return None
        return self.table[key]

    def text(self, key: str, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problem(f"{self.prefix}{key} must be a non-empty string")
            return None
        return value

    def network(self) -> str:
        value = self.text("network") or ""
        if value and not _NETWORK.match(value):
            self.problem("network must be 1-63 characters of a-z, 0-9 and '-'")
        return value

    def enterprise(self, key: str) -> str:
        value = self.text(key) or ""
        problem = enterprise_number_problem(value)
        if value and (problem is not None or not value.isdigit()):
            self.problem(
                f"{self.prefix}{key} {value!r} is not a valid enterprise number"
                f" ({problem or 'digits only'}; 10 digits, mod-97 check digits)"
            )
        return value

    def address(self, key: str, required: bool = True, any_port: bool = False) -> str | None:
        """``host:port`` or ``unix:/path``; the port 1-65535, or 0 (any free port) where
        ``any_port`` (an address this daemon listens on)."""
        value = self.text(key, required)
        if value is None:
            return None
        if not _ADDRESS.match(value):
            self.problem(f"{self.prefix}{key} {value!r} must be host:port or unix:/path")
        elif not value.startswith("unix:"):
            port, lowest = int(value.rsplit(":", 1)[1]), 0 if any_port else 1
            if not lowest <= port <= 65535:
                self.problem(f"{self.prefix}{key} {value!r}: port {port} is out of range;"
                             f" use {lowest}-65535"
                             + (" (0: any free port)" if any_port else ""))
        return value

    def addresses(self, key: str) -> tuple[str, ...]:
        """A non-empty list of distinct :meth:`address` values (``host:port`` or
        ``unix:/path``, port 1-65535)."""
        value = self._get(key, required=True)
        if not isinstance(value, list) or not value:
            if value is not None:
                self.problem(f"{self.prefix}{key} must be a non-empty list of host:port")
            return ()
        if len(value) > MAX_ADDRESSES:
            self.problem(f"{self.prefix}{key} lists {len(value)} addresses: at most {MAX_ADDRESSES}")
            return ()
        found: list[str] = []
        for i, item in enumerate(value):
            checker = _Reader({f"{key}[{i}]": item}, self.base, self.prefix, self.problems)
            address = checker.address(f"{key}[{i}]")
            if address is None:
                continue
            if address in found:
                self.problem(f"{self.prefix}{key}[{i}] {address!r} is listed twice:"
                             " remove the duplicate")
                continue
            found.append(address)
        return tuple(found)

    def tcp_address(self, key: str) -> str | None:
        """An optional ``host:port`` (no unix socket: e.g. an HTTP endpoint)."""
        value = self.address(key, required=False, any_port=True)
        if value is not None and value.startswith("unix:"):
            self.problem(f"{self.prefix}{key} {value!r} must be host:port")
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
            self.problem(f"{self.prefix}{key} must be an integer >= {minimum}")
            return default
        return value

    def seconds(self, key: str, default: float, minimum: float) -> float:
        """A duration in seconds: an integer or a float, at least ``minimum``."""
        value = self._get(key, required=False)
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool) or value < minimum:
            self.problem(f"{self.prefix}{key} must be a number of seconds >= {minimum:g}")
            return default
        return float(value)

    def numbers(self, defaults: _Settings, minimums: Mapping[str, float]) -> _Settings:
        """``defaults`` (a dataclass) with each field named in ``minimums`` read as its
        default is typed: :meth:`seconds` for a float, else an :meth:`integer`, of at least
        its minimum."""
        values: dict[str, float] = {}
        for key, minimum in minimums.items():
            default = getattr(defaults, key)
            values[key] = (self.seconds(key, default, minimum) if isinstance(default, float)
                           else self.integer(key, default, int(minimum)))
        return replace(defaults, **values)

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(f"{self.prefix}{key} must be true or false")
            return default
        return value

    def services(self, key: str) -> frozenset[str]:
        """An optional list of service ids (``"*"``: any service)."""
        value = self._get(key, required=False)
        if value is None:
            return frozenset()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(f"{self.prefix}{key} must be a list of service ids (or [\"*\"])")
            return frozenset()
        return frozenset(value)

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self._get(key, required=False)
        if value is None:
            return default
        if value not in options:
            self.problem(f"{self.prefix}{key} must be one of {', '.join(options)}")
            return default
        return str(value)

    def sub(self, key: str, required: bool = True) -> _Reader:
        value = self._get(key, required)
        return _Reader(value if value is not None else {}, self.base, f"{self.prefix}{key}.",
                       self.problems)

    def tables(self, key: str) -> list[_Reader]:
        value = self._get(key, required=False) or []
        if not isinstance(value, list):
            self.problem(f"{self.prefix}{key} must be an array of tables")
            return []
        return [_Reader(t, self.base, f"{self.prefix}{key}[{i}].", self.problems)
                for i, t in enumerate(value)]

    def done(self) -> None:
        for key in sorted(set(self.table) - self.used):
            self.problem(f"unknown setting {self.prefix}{key}: remove it (or fix its spelling)")
