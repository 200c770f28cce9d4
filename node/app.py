"""Assembly: builds the hub and the node from their config, explicitly (no service locator).

``HubApp`` = the hub's stores (SQLite or PostgreSQL: :mod:`node.store.backend`) + Intake +
Deliverer + HubService on one mTLS server.
``NodeApp`` = NodeStore + Uplink + DeliverService (mTLS server, for the hub) + LocalService
(for the institution's applications: on a unix socket, 0660, or on TCP with mutual TLS and
application certificates; every call passes :class:`~node.rpc.local_auth.LocalGate`).

Before anything is opened, each daemon checks its own configuration and credentials
(:mod:`node.selfcheck`) and its data directory (:mod:`node.store.data_dir`: present, whole,
not corrupt, or ``--init`` on a first start), then keeps the directory private and locked
for its life (:mod:`node.store.data_dir_guard`).

Both stop in two stages: health NOT_SERVING first, then the servers stop with a grace period
(in-flight batches finish and are acknowledged), then background tasks, then the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from node.config import ConfigError, HubConfig, Limits, NodeConfig, StoreBackend
from node.core.clock import Clock, SystemClock
from node.core.directory import Institution, RevokedCertificate
from node.core.envelope import Policy
from node.core.errors import Unavailable
from node.hub.admin_service import AdminService
from node.hub.callers import HUB_TABLE, HubGate
from node.hub.consult import Consultations
from node.hub.delivery import Deliverer
from node.hub.directory import Directory
from node.hub.intake import Intake
from node.hub.refusal_audit import RefusalAudit
from node.hub.service import HubService
from node.hub.store_health import StoreHealth
from node.member.answers import Answering
from node.member.app_permissions import LocalPermissions, RefusalLog
from node.member.continuity import HubContinuity
from node.member.declaration_desk import DeclarationDesk
from node.member.deliver_service import NODE_TABLE, DeliverService
from node.member.fragment import FragmentWatcher
from node.member.hub_caller import HubCaller
from node.member.local_api import LocalService
from node.member.retention import Retention
from node.member.uplink import Uplink
from node.metrics import HubTimings, MetricsEndpoint, NodeTimings, hub_metrics, node_metrics
from node.open_files import connection_cap, raise_soft_limit
from node.probes import hub_readiness, node_readiness
from node.reload import Reloadable, reload
from node.rpc.auth_interceptor import AuthInterceptor, CertificateGate
from node.rpc.hub_choice import HubChoice
from node.rpc.local_auth import LOCAL_TABLE, LocalGate
from node.rpc.malformed import MalformedRequests
from node.rpc.peer import PeerAuthenticator
from node.rpc.revocation import RevocationList
from node.rpc.server_certs import ServerCheck
from node.rpc.tls import TlsMaterial, server_options
from node.rpc.unix_socket import SOCKET_MODE, claim_socket_path, socket_umask
from node.selfcheck import hub_problems, node_problems, require
from node.store.backend import hub_layout, open_hub_backend, pg_params
from node.store.data_dir import (
    DataDirError,
    StateLayout,
    StateReason,
    prepare_data_dir,
)
from node.store.data_dir_guard import DataDirLock, private_dir
from node.store.fragment_store import FragmentStore
from node.store.node_store import NodeStore
from node.store.postgres.preflight import prepare_database
from node.store.protocols import HubStorage
from node.store.records import LoggedChange
from node.supervisor import Notifier
from node.tasks import cancel_and_wait, report_unhandled, spawn
from node.wire.gen.crossroads.v1 import (
    directory_pb2,
    directory_pb2_grpc,
    hub_pb2,
    hub_pb2_grpc,
    local_pb2,
    local_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
)
from node.wire.signed import ensure_signing_key, load_public_key
from pki.ca import PkiError

__all__ = ["HubApp", "NodeApp", "hub_layout", "init_state", "node_layout", "serve_forever"]

log = structlog.get_logger(__name__)
GRACE_S = 5.0
#: How often a hub reads its database's size on the server (the metrics).
DATABASE_SIZE_EVERY_S = 60.0


class App(Reloadable, Protocol):
    async def start(self) -> dict[str, int | str]: ...
    async def stop(self) -> None: ...


def _health_and_reflection(server: grpc.aio.Server, names: list[str]) -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    return servicer


async def _set_health(servicer: health.aio.HealthServicer, names: list[str], serving: bool) -> None:
    status = (health_pb2.HealthCheckResponse.SERVING if serving
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    for name in ["", *names]:
        await servicer.set(name, status)


def node_layout(config: NodeConfig) -> StateLayout:
    return StateLayout("node", config.data_dir, ("node.sqlite", "fragment.sqlite"))


def _check_hub_state(config: HubConfig, init: bool) -> None:
    """:func:`prepare_data_dir`; and a signing key kept outside the data directory must be
    there once the databases are (a new one would sign the chain under another key). On
    PostgreSQL the data directory holds no database (the state checks are the database's,
    :func:`prepare_database` at start): it is made if missing, and the key must be there."""
    key = config.directory_key_path
    if config.store.backend is StoreBackend.POSTGRESQL:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not init and not key.exists():
            raise DataDirError(StateReason.STATE_MISSING, (
                f"the signing key (directory_key) {key} is missing: copy the key every replica"
                " of the hub uses (the first replica creates it with --init)"))
        return
    fresh = prepare_data_dir(hub_layout(config), init)
    if not fresh and not key.exists():
        raise DataDirError(StateReason.STATE_INCONSISTENT, (
            f"data_dir {config.data_dir} holds the hub's databases but its signing key"
            f" (directory_key) {key} is missing: restore it; a new key would sign the audit"
            " chain and the directory under another identity"))


class HubApp:
    def __init__(self, config: HubConfig, init: bool = False, clock: Clock | None = None) -> None:
        """``init``: create the hub's state if none is there (a first start); without it, a
        data directory without state refuses (:mod:`node.store.data_dir`). ``clock``: the one
        clock every component reads (default: the system's; tests may pass a fake one)."""
        self.config = config
        self.clock = clock = clock or SystemClock()
        require(hub_problems(config))  # its own certificate, key, CA, role, network, CRL
        _check_hub_state(config, init)  # creates the data directory only on a first start
        private_dir(config.data_dir)  # 0700 before anything is written in it
        self.data_lock = DataDirLock(config.data_dir)
        self.layout = hub_layout(config)  # its database files (the metrics' sizes)
        self.init = init
        signing_key = ensure_signing_key(config.directory_key_path)  # directory + audit
        backend = open_hub_backend(config, signing_key, clock)
        self.store = backend.hub
        self.tls = TlsMaterial.load(config.tls)
        self.local_tls: TlsMaterial | None = None  # none: a hub has no local API
        self.revocations = RevocationList(config.tls.crl, config.tls.ca_cert,
                                          stale_policy=config.tls.crl_stale, clock=clock)
        self.directory = Directory(backend.directory, signing_key, clock=clock)
        # Every CRL the hub loads goes to the nodes through the signed directory stream.
        directory = self.directory
        self.revocations.on_loaded.append(lambda crl: directory.publish_crl(crl.der))
        self._checkpoints: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._sizes: asyncio.Task[None] | None = None
        #: The database server's size of the store (PostgreSQL; None: not known, or SQLite).
        self.database_bytes: int | None = None
        self._stopping = False
        self.health: StoreHealth | None = None
        self.server: grpc.aio.Server | None = None
        self.deliverer: Deliverer | None = None
        self.intake: Intake | None = None
        self.service: HubService | None = None
        self.consultations: Consultations | None = None
        self.metrics: MetricsEndpoint | None = None
        #: Calls the server's authentication refused, by reason (node/metrics.py).
        self.auth_refusals: Counter[str] = Counter()
        self.port = 0
        self._names = [hub_pb2.DESCRIPTOR.services_by_name["Hub"].full_name,
                       directory_pb2.DESCRIPTOR.services_by_name["DirectoryAdmin"].full_name]
        self._health: health.aio.HealthServicer | None = None
        self._started = False  # start() finished: only then does stop() log hub_stopped

    async def start(self) -> dict[str, int | str]:
        cfg = self.config
        self.data_lock.acquire()  # first: a second hub on this data_dir stops here
        if cfg.store.backend is StoreBackend.POSTGRESQL:  # its state checks (node.store.backend)
            await prepare_database(pg_params(cfg.store), self.init, cfg.directory_key_path)
        state = await self.store.open()
        await self.revocations.start()
        await self.directory.open()
        # Endpoints: the directory's, overridden by what nodes registered themselves.
        endpoints = {e: i.endpoint for e, i in self.directory.tables.institutions.items()
                     if i.endpoint}
        endpoints.update(state.endpoints)
        policy = _envelope_policy(cfg.limits)
        revocations, directory = self.revocations, self.directory

        def revoked() -> frozenset[int]:
            return revocations.serials | directory.revoked_serials()

        self.deliverer = Deliverer(
            self.store, self.tls, cfg.network, cfg.limits, endpoints, state.pending,
            self.clock, keepalive=cfg.keepalive, revoked=revoked, timeouts=cfg.timeouts,
        )
        self.directory.on_change.append(self._directory_changed)
        self.intake = Intake(self.store, policy, self.directory, state.pending, cfg.limits,
                             self.deliverer.wake, self.clock)
        peers = PeerAuthenticator(cfg.network, revoked, gate=revocations.gate)
        self.consultations = Consultations(self.intake, self.deliverer, self.store, cfg.limits,
                                           self.clock)
        if cfg.metrics_listen:  # served once the hub serves (below)
            self.metrics = MetricsEndpoint(cfg.metrics_listen, lambda: hub_metrics(self),
                                           lambda: hub_readiness(self), cfg.metrics)
            timings = HubTimings(self.metrics.registry)
            self.deliverer.on_delivered = timings.delivered
            self.consultations.on_answered = timings.consulted
            self.consultations.on_provider = timings.provider_answered
        # Nodes' and providers' server certificates are checked again after a new CRL.
        self.revocations.on_loaded.append(lambda crl: self._revocations_changed())
        refusals = RefusalAudit(self.store.append_audit, self.clock)
        service = HubService(peers, self.intake, self.deliverer, self.store, self.directory,
                             self.consultations, refusals)
        self.service = service
        # Who may call what (node/hub/callers.py): every call authenticated before it runs.
        gate = HubGate(peers, self.directory, service.audit_refusal)
        auth = AuthInterceptor(HUB_TABLE, gate)
        self.auth_refusals = auth.refusals
        self.server = grpc.aio.server(
            options=server_options(cfg.limits.max_batch_bytes, cfg.keepalive, connection_cap()),
            interceptors=[MalformedRequests(service.malformed), auth])
        hub_pb2_grpc.add_HubServicer_to_server(service, self.server)
        directory_pb2_grpc.add_DirectoryAdminServicer_to_server(
            AdminService(self.directory, self.store, self.consultations.audit.flush),
            self.server)
        self._health = _health_and_reflection(self.server, self._names)
        # NOT_SERVING while the store cannot commit (node/hub/store_health.py).
        self.health = StoreHealth(self.store.ping, self._serving)
        self.store.on_damaged.append(self.health.check_now)
        self.store.failures.listeners.append(self.health.check_now)
        self.port = self.server.add_secure_port(cfg.listen, self.tls.server_credentials())
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.listen}")
        await self.server.start()
        self.deliverer.start(sorted(set(state.pending) | set(endpoints)))
        await _set_health(self._health, self._names, True)
        self._checkpoints = spawn(self._checkpoint_periodically(), "audit-checkpoints")
        self._sizes = spawn(self._size_periodically(), "database-size")
        self._health_task = spawn(self.health.run(), "store-health")
        info: dict[str, int | str] = {"port": self.port}
        if self.metrics is not None:
            self.metrics.start()
            info["metrics_port"] = self.metrics.port
        log.info("hub_serving", listen=cfg.listen, port=self.port, network=cfg.network,
                 directory_revision=self.directory.revision,
                 pending=sum(state.pending.values()), metrics_port=info.get("metrics_port"))
        self._started = True
        return info

    @property
    def serving(self) -> bool:
        """Started and not stopping (readiness, node/probes.py)."""
        return self._started and not self._stopping

    async def _serving(self, serving: bool) -> None:
        """The store can (or cannot any more) commit: health SERVING (or NOT_SERVING) for the
        supervisor, load balancers and nodes; the hub keeps answering what it can."""
        if self._health is not None and not self._stopping:
            await _set_health(self._health, self._names, serving)

    async def _size_periodically(self) -> None:
        """The database server's size of the store, every :data:`DATABASE_SIZE_EVERY_S`, kept
        for the metrics (a scrape reads it; it never waits on the database)."""
        while True:
            with contextlib.suppress(Exception):  # unreachable: the health says so already
                self.database_bytes = await self.store.database_size()
            await asyncio.sleep(DATABASE_SIZE_EVERY_S)

    async def _checkpoint_periodically(self) -> None:
        """Sign the audit chain head now and then (``[audit_checkpoints] idle_every_s``), so
        an idle hub's last records are covered."""
        while True:
            await asyncio.sleep(self.config.audit_checkpoints.idle_every_s)
            try:
                await self.store.checkpoint()
            except Exception as exc:  # noqa: BLE001 - try again next time, say why
                log.error("audit_checkpoint_failed", error=str(exc))

    def _revocations_changed(self) -> None:
        if self.deliverer is not None:
            self.deliverer.revocations_changed()
        if self.consultations is not None:
            self.consultations.revocations_changed()

    def _directory_changed(self, changes: list[LoggedChange]) -> None:
        assert self.deliverer is not None
        if any(isinstance(change.entity, RevokedCertificate) for change in changes):
            self._revocations_changed()
        for change in changes:
            entity = change.entity
            if (isinstance(entity, Institution) and entity.endpoint and not change.deleted
                    and entity.enterprise_number not in self.deliverer.endpoints):
                self.deliverer.set_endpoint(entity.enterprise_number, entity.endpoint)

    async def stop(self) -> None:
        self._stopping = True
        if self._health is not None:
            await _set_health(self._health, self._names, False)
        if self.service is not None:
            self.service.draining.set()
        if self.server is not None:
            await self.server.stop(GRACE_S)
        if self.deliverer is not None:
            await self.deliverer.stop()
        if self.consultations is not None:
            await self.consultations.close()
        if self.service is not None and self.store.is_open:
            with contextlib.suppress(Exception):  # logged by the store's failure; stop goes on
                await self.service.refusals.close()  # the pending aggregated refusals
        await self.revocations.stop()
        await cancel_and_wait(self._checkpoints, self._health_task, self._sizes)
        await self.directory.close()
        if self.store.is_open:
            try:
                await self.store.checkpoint()  # sign the chain head on the way out
            except Unavailable as exc:  # the database is away: a later start (or another
                # replica) signs what this one appended; the stop goes on
                log.error("audit_checkpoint_failed", error=str(exc), stopping=True)
        await self.store.close()
        await _last_steps(self, "hub_stopped")


class NodeApp:
    def __init__(self, config: NodeConfig, init: bool = False, clock: Clock | None = None) -> None:
        """``init``, ``clock``: as for :class:`HubApp`."""
        self.config = config
        self.clock = clock = clock or SystemClock()
        require(node_problems(config))  # its own certificate, key, CA, role, network, CRL
        prepare_data_dir(node_layout(config), init)  # creates it only on a first start
        private_dir(config.data_dir)  # 0700 before anything is written in it
        self.data_lock = DataDirLock(config.data_dir)
        self.layout = node_layout(config)  # its database files (the metrics' sizes)
        self.store = NodeStore(config.data_dir / "node.sqlite", config.synchronous, clock=clock)
        #: The CA's CRL: from the directory stream (kept in the fragment store), or a local
        #: copy (``[tls] crl``); ignored only with ``[tls] revocation = "off"``.
        self.revocations = RevocationList(config.tls.crl, config.tls.ca_cert,
                                          stale_policy=config.tls.crl_stale, clock=clock)
        self.fragment = FragmentStore(config.data_dir / "fragment.sqlite", config.synchronous,
                                      clock=clock)
        self.watcher: FragmentWatcher | None = None
        self.hub_caller: HubCaller | None = None
        #: Which hub address the node's clients use now (node/rpc/hub_choice.py).
        self.hubs = HubChoice(config.hubs)
        self.server_check: ServerCheck | None = None
        self.tls = TlsMaterial.load(config.tls)
        self.local_tls: TlsMaterial | None = None  # a node's TCP local API ([local_tls])
        self.server: grpc.aio.Server | None = None
        self.local_server: grpc.aio.Server | None = None
        self.uplink: Uplink | None = None
        self.deliver: DeliverService | None = None
        self.retention: Retention | None = None
        self.metrics: MetricsEndpoint | None = None
        #: Calls the node's server and its local API's authentication refused, by reason.
        self.auth_refusals: Counter[str] = Counter()
        self.local_auth_refusals: Counter[str] = Counter()
        self.port = 0
        self.local_port = 0
        self._names = [node_pb2.DESCRIPTOR.services_by_name["Node"].full_name]
        self._local_names = [local_pb2.DESCRIPTOR.services_by_name["Local"].full_name]
        self._health: health.aio.HealthServicer | None = None
        self._local_health: health.aio.HealthServicer | None = None
        self._started = False  # start() finished: only then does stop() log node_stopped

    async def start(self) -> dict[str, int | str]:
        cfg = self.config
        self.data_lock.acquire()  # first: a second node on this data_dir stops here
        await self.store.open()
        await self.fragment.open()
        revocations, fragment = self.revocations, self.fragment
        if fragment.crl_der is not None and cfg.tls.revocation != "off":
            try:
                revocations.adopt_bytes(fragment.crl_der, "fragment store")
            except PkiError as exc:  # e.g. a new CA: wait for the hub's current CRL
                log.error("crl_rejected", source="fragment store", error=str(exc))
        await revocations.start()
        peers = PeerAuthenticator(
            cfg.network, lambda: revocations.serials | fragment.revoked_serials(),
            gate=revocations.gate)
        max_bytes = cfg.limits.delivery_batch_bytes + cfg.limits.max_payload_bytes + (2 << 20)
        auth = AuthInterceptor(NODE_TABLE, CertificateGate(peers))
        self.auth_refusals = auth.refusals
        self.server = grpc.aio.server(
            options=server_options(max_bytes, cfg.keepalive, connection_cap(servers=2)),
            interceptors=[MalformedRequests(), auth])
        self.answering = Answering(cfg.limits.max_payload_bytes)
        # The client side of revocation: the hub's certificate, checked after connecting.
        server_check = ServerCheck(cfg.hubs,
                                   lambda: revocations.serials | fragment.revoked_serials(),
                                   clock=self.clock)
        self.server_check = server_check
        self.hub_caller = HubCaller(cfg, self.tls, server_check, hubs=self.hubs)
        desk = (DeclarationDesk(cfg.enterprise_number, self.clock)
                if cfg.emit_employment_mutations else None)
        self.deliver = DeliverService(self.store, self.answering, desk,
                                      max_calls_in_flight=cfg.limits.stream_calls_in_flight)
        node_pb2_grpc.add_NodeServicer_to_server(self.deliver, self.server)
        self._health = _health_and_reflection(self.server, self._names)
        self.port = self.server.add_secure_port(cfg.listen, self.tls.server_credentials())
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.listen}")
        endpoint = cfg.advertise or _with_port(cfg.listen, self.port)
        self.continuity = HubContinuity(self.store, load_public_key(cfg.hub_directory_key),
                                        self.clock)
        self.uplink = Uplink(cfg, self.tls, self.store, endpoint, continuity=self.continuity,
                             server_check=server_check, clock=self.clock, hubs=self.hubs)
        if cfg.metrics_listen:  # served once the node serves (below)
            self.metrics = MetricsEndpoint(cfg.metrics_listen, lambda: node_metrics(self),
                                           lambda: node_readiness(self), cfg.metrics)
            self.uplink.on_ack = NodeTimings(self.metrics.registry).acknowledged
        policy = _envelope_policy(cfg.limits)
        assert cfg.hub_directory_key is not None
        self.watcher = FragmentWatcher(
            cfg, self.tls, self.fragment, load_public_key(cfg.hub_directory_key),
            revocations=None if cfg.tls.revocation == "off" else self.revocations,
            hubs=self.hubs, clock=self.clock)
        local = LocalService(cfg.enterprise_number, policy, self.store, self.uplink,
                             self.fragment, self.watcher, self.answering, self.hub_caller,
                             self.clock)
        # Who may call the local API, and do what (node/rpc/local_auth.py): over TCP, the
        # applications of [[applications]] with their certificates; over the unix socket,
        # its clients ([local_socket]).
        self.local_permissions = LocalPermissions(cfg.enterprise_number, cfg.applications,
                                                  cfg.local_socket, RefusalLog(clock=self.clock))
        local_gate = LocalGate(self.local_permissions, peers if cfg.local_api_is_tcp else None)
        local_auth = AuthInterceptor(LOCAL_TABLE, local_gate)
        self.local_auth_refusals = local_auth.refusals
        self.local_server = grpc.aio.server(
            options=server_options(cfg.limits.max_batch_bytes, cfg.keepalive,
                                   connection_cap(servers=2)),
            interceptors=[MalformedRequests(), local_auth])
        local_pb2_grpc.add_LocalServicer_to_server(local, self.local_server)
        self._local_health = _health_and_reflection(self.local_server, self._local_names)
        if cfg.local_api.startswith("unix:"):
            # Never unlink a live node's socket; bind so that it is 0660 from birth.
            claim_socket_path(Path(cfg.local_api.removeprefix("unix:")))
            with socket_umask():
                self.local_port = self.local_server.add_insecure_port(cfg.local_api)
        elif cfg.local_tls is None:
            raise ConfigError(f"local_tls is required when local_api is a TCP address"
                              f" ({cfg.local_api})")
        else:  # mutual TLS: applications present certificates of profile app
            self.local_tls = TlsMaterial.load(cfg.local_tls)
            self.local_port = self.local_server.add_secure_port(
                cfg.local_api, self.local_tls.server_credentials())
            if self.local_port == 0:
                raise OSError(f"local_api: cannot listen on {cfg.local_api}")
        await self.server.start()
        await self.local_server.start()
        if cfg.local_api.startswith("unix:"):
            os.chmod(cfg.local_api.removeprefix("unix:"), SOCKET_MODE)
        self.uplink.start()
        self.watcher.start()
        if cfg.retention_days:
            self.retention = Retention(self.store, cfg.retention_days, self.clock)
            self.retention.start()
        info: dict[str, int | str] = {"port": self.port, "local_port": self.local_port,
                                      "local_api": self.local_api}
        if self.metrics is not None:
            self.metrics.start()
            info["metrics_port"] = self.metrics.port
        await _set_health(self._health, self._names, True)
        await _set_health(self._local_health, self._local_names, True)
        log.info("node_serving", institution=cfg.enterprise_number, port=self.port,
                 endpoint=endpoint, local_api=cfg.local_api, hubs=list(cfg.hubs),
                 metrics_port=info.get("metrics_port"))
        self._started = True
        return info

    @property
    def local_api(self) -> str:
        if self.config.local_api.startswith("unix:"):
            return self.config.local_api
        return _with_port(self.config.local_api, self.local_port)

    async def stop(self) -> None:
        for servicer, names in ((self._health, self._names),
                                (self._local_health, self._local_names)):
            if servicer is not None:
                await _set_health(servicer, names, False)
        if self.deliver is not None:
            self.deliver.draining.set()
        if self.local_server is not None:
            await self.local_server.stop(GRACE_S)
        for task in (self.retention, self.uplink, self.watcher):
            if task is not None:
                await task.stop()
        if self.hub_caller is not None:
            await self.hub_caller.close()
        if self.server is not None:
            await self.server.stop(GRACE_S)
        await self.revocations.stop()
        await self.store.close()
        await self.fragment.close()
        await _last_steps(self, "node_stopped")


async def _last_steps(app: HubApp | NodeApp, stopped_event: str) -> None:
    """The end of a daemon's stop: its metrics endpoint, the data directory's lock, and the
    ``*_stopped`` line (only after a start that finished)."""
    if app.metrics is not None:
        await asyncio.to_thread(app.metrics.stop)
    app.data_lock.release()
    if app._started:
        log.info(stopped_event)


async def init_state(config: HubConfig | NodeConfig) -> bool:
    """``crossroads hub|node init``: create the daemon's state if none is there (an
    idempotent first-start step); True when it was created. Refuses like a start would on a
    data directory that is partly there or damaged."""
    stores: list[HubStorage | Directory | NodeStore | FragmentStore]
    if isinstance(config, HubConfig):
        require(hub_problems(config))  # before anything is created
        fresh = prepare_data_dir(hub_layout(config), init=True)
        hub = HubApp(config, init=True)  # makes the signing key
        if config.store.backend is StoreBackend.POSTGRESQL:
            fresh = await prepare_database(pg_params(config.store), True,
                                           config.directory_key_path)
        stores = [hub.store, hub.directory]
    else:
        require(node_problems(config))
        fresh = prepare_data_dir(node_layout(config), init=True)
        node = NodeApp(config, init=True)
        stores = [node.store, node.fragment]
    for store in stores:  # opening creates and migrates
        await store.open()
        await store.close()
    return fresh


def _envelope_policy(limits: Limits) -> Policy:
    """The envelope checks of the hub's intake and the node's local API: structure and
    bounds; the services and receivers are the directory's rules (the hub's directory, the
    node's fragment), checked after these."""
    return Policy(institutions=frozenset(), services=frozenset(),
                  max_payload_bytes=limits.max_payload_bytes,
                  check_services=False, check_receivers=False,
                  max_receivers=limits.max_receivers)


def _with_port(address: str, port: int) -> str:
    host = address.rsplit(":", 1)[0]
    if host in ("0.0.0.0", "[::]", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


#: Allocations between two young-generation collections of Python's cyclic GC (default 700):
#: a batch of 1,000 envelopes allocates tens of thousands of short-lived objects, nearly all
#: freed by reference counting; collecting every 700 of them cost the hub ~5% of its CPU.
GC_THRESHOLD = (50_000, 50, 1_000)
#: The daemons' GIL switch interval (Python's default: 5 ms). The SQLite threads release and
#: re-take the GIL around every call; at 5 ms each re-take may wait that long while the event
#: loop runs Python (measured at the hub: batches waited 60-75 ms for their commit to start;
#: at 0.5 ms, about 2 ms).
GIL_SWITCH_INTERVAL_S = 0.0005


async def serve_forever(app: App, ready_file: Path | None = None,
                        read_config: Callable[[], HubConfig | NodeConfig] | None = None) -> None:
    """Run ``app`` until SIGTERM/SIGINT, then stop it gracefully; on SIGHUP, apply what can
    change of the configuration ``read_config`` reads (node/reload.py)."""
    sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
    # Before the servers are built: their connection caps are shares of this limit.
    files = raise_soft_limit()
    log.info("open_files_limit", soft=files.soft, hard=files.hard, soft_before=files.soft_before,
             connections_per_server=connection_cap())
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(report_unhandled)  # structured, never a plain traceback
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if read_config is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: reload(app, read_config))
    try:
        info = await app.start()
    except BaseException as exc:
        # A daemon that cannot start must exit (non-zero), not linger half-started; what it
        # had opened is closed without a "stopped" line (it never served).
        log.error("start_failed", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            await app.stop()
        raise
    # What start-up built (modules, directory tables, caches' first fill) stays: keep it out
    # of every later collection.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    if ready_file is not None:
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), **info}))
        tmp.replace(ready_file)
    systemd = Notifier()  # Type=notify units (node/supervisor.py); nothing without systemd
    systemd.notify("READY=1", f"STATUS=serving on port {info['port']}")
    watchdog = spawn(systemd.watchdog(), "systemd-watchdog")
    try:
        await stop.wait()
        log.info("stopping", signal="SIGTERM/SIGINT")
    finally:
        systemd.notify("STOPPING=1")
        try:
            await app.stop()
        finally:  # pinging through a long drain too
            await cancel_and_wait(watchdog)
