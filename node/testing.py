"""Harnesses that start a real network on loopback: in-process, or as real processes.

Both build a throw-away PKI with :mod:`pki` (network CA, hub and node certificates), write
real TOML configs and use real SQLite files under a work directory.

* :class:`InProcessNetwork` runs a :class:`~node.app.HubApp` and N :class:`~node.app.NodeApp`
  in the current event loop (integration tests).
* :class:`ProcessNetwork` runs ``python -m node.cli hub|node serve`` as child processes
  (end-to-end and crash tests, the demo, the benchmarks). The hub keeps its first port across
  restarts so nodes find it again.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from node.config import HubConfig, NodeConfig, hub_config, node_config
from node.core.directory import Authorization, Entity, Institution, Service
from node.wire.signed import ensure_signing_key, public_path
from pki import ca as pki_ca
from pki import identity as pki_id

__all__ = ["DEFAULT_INSTITUTIONS", "InProcessNetwork", "Pki", "ProcessNetwork"]

#: Valid enterprise numbers for labs and tests.
DEFAULT_INSTITUTIONS = ("0403019261", "0428759497", "0566988259", "0200065765", "0212344876")
DEMO_SERVICE = "demo.message"
#: Sectors given to the test institutions, in order.
SECTORS = (7, 11, 18, 17, 12)


def default_directory(institutions: Iterable[str]) -> list[Entity]:
    """A small directory: the institutions, the demo service (explicit receivers, any subject)
    and an authorization for each institution to call it."""
    entities: list[Entity] = []
    for i, e in enumerate(institutions):
        entities.append(Institution(e, SECTORS[i % len(SECTORS)], f"Institution {e}"))
    entities.append(Service(DEMO_SERVICE, 1, "declaration", "any", "explicit"))
    entities += [Authorization(f"demo-{e}", DEMO_SERVICE, institution=e) for e in institutions]
    return entities


@dataclass
class Pki:
    """A network CA and certificates issued from it, under ``root``."""

    root: Path
    network: str = "demo"

    def __post_init__(self) -> None:
        self.ca_dir = self.root / "ca"
        if not (self.ca_dir / "ca.crt").exists():
            pki_ca.init_ca(self.ca_dir, self.network)

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca.crt"

    def issue(self, who: str, profile: str | None = None, **validity: Any) -> tuple[Path, Path]:
        """Key and certificate for ``who``: "hub", an enterprise number, or "admin:<name>"."""
        if who == "hub":
            identity, profile = pki_id.hub(self.network), profile or "hub"
        elif who.startswith("admin:"):
            identity, profile = pki_id.admin(self.network, who[6:]), profile or "admin"
        else:
            identity, profile = pki_id.institution(self.network, who), profile or "node"
        basename = validity.pop("basename", None) or who.replace(":", "-")
        key, cert = self.root / "certs" / f"{basename}.key", self.root / "certs" / f"{basename}.crt"
        if key.exists() and cert.exists() and not validity:  # a layout made again on its root
            return key, cert
        return pki_ca.issue(
            self.ca_dir, self.root / "certs", identity, profile, extra_dns=["localhost"],
            extra_ips=["127.0.0.1"], basename=basename, **validity,
        )

    def crl(self) -> Path:
        return pki_ca.generate_crl(self.ca_dir, self.root / "crl.pem")

    def crl_bytes(self, number: int, next_update: datetime | None = None,
                  signer: Pki | None = None, pem: bool = False) -> bytes:
        """A CRL naming this CA as issuer, revoking nothing, with any CRL number and
        nextUpdate, signed by this CA's key or by ``signer``'s (tests: a stale, a replayed or
        a forged CRL)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        key = serialization.load_pem_private_key(
            ((signer or self).ca_dir / "ca.key").read_bytes(), None)
        issuer = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        until = next_update or datetime.now(UTC) + timedelta(days=1)
        crl = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
               .last_update(min(datetime.now(UTC), until) - timedelta(hours=2))
               .next_update(until)
               .add_extension(x509.CRLNumber(number), critical=False)
               .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
        return crl.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):  # in a sub-table: an inline table (e.g. basic_auth_users)
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def _is_table(value: Any) -> bool:
    """A sub-table, or an array of tables (a list of dicts)."""
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value))


def free_port() -> int:
    """A TCP port of 127.0.0.1 where nothing listens (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_toml(path: Path, table: Mapping[str, Any]) -> None:
    """Enough TOML for our configs: scalars, lists of scalars, sub-tables (their tables
    inline), arrays of tables."""
    lines: list[str] = []
    scalars = {k: v for k, v in table.items() if not _is_table(v)}
    lines += [f"{k} = {_toml(v)}" for k, v in scalars.items()]
    for k, v in table.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_toml(vv)}" for kk, vv in v.items()]
        elif _is_table(v) and isinstance(v, list):
            for item in v:
                lines.append(f"\n[[{k}]]")
                lines += [f"{kk} = {_toml(vv)}" for kk, vv in item.items()]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class NetworkLayout:
    """Configs for a hub and its nodes, as TOML tables (tests tweak them before starting)."""

    root: Path
    institutions: tuple[str, ...] = DEFAULT_INSTITUTIONS[:3]
    network: str = "demo"
    hub_overrides: dict[str, Any] = field(default_factory=dict)
    node_overrides: dict[str, Any] = field(default_factory=dict)
    #: Settings of one node (by enterprise number), applied after ``node_overrides``.
    per_node: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: list[Entity] | None = None
    #: The nodes' hub list, given the hub's address (None: ``hub = <that address>``), e.g.
    #: ``lambda live: [dead, live]`` for a node that must fail over.
    hub_list: Callable[[str], list[str]] | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.pki = Pki(self.root / "pki", self.network)
        self.hub_key, self.hub_cert = self.pki.issue("hub")
        self.admin_key, self.admin_cert = self.pki.issue("admin:harness")
        self.node_certs = {e: self.pki.issue(e) for e in self.institutions}
        if not (self.root / "pki" / "crl.pem").exists():
            self.pki.crl()  # the hub refuses to start without its configured CRL
        self.directory_key = self.root / "pki" / "directory-signing.key"
        ensure_signing_key(self.directory_key)
        if self.seed is None:
            self.seed = default_directory(self.institutions)

    def hub_table(self, listen: str = "127.0.0.1:0") -> dict[str, Any]:
        table: dict[str, Any] = {
            "network": self.network,
            "listen": listen,
            "data_dir": str(self.root / "hub"),
            "synchronous": "FULL",
            "tls": {"ca_cert": str(self.pki.ca_cert), "cert": str(self.hub_cert),
                    "key": str(self.hub_key), "crl": str(self.root / "pki" / "crl.pem")},
            "limits": {},
            "directory_key": str(self.directory_key),
        }
        _merge(table, self.hub_overrides)
        return table

    def node_table(self, enterprise: str, hub_address: str) -> dict[str, Any]:
        key, cert = self.node_certs[enterprise]
        table: dict[str, Any] = {
            "network": self.network,
            "enterprise_number": enterprise,
            "listen": "127.0.0.1:0",
            "local_api": f"unix:{self.root / 'sock' / enterprise}.sock",
            "data_dir": str(self.root / "nodes" / enterprise),
            "synchronous": "FULL",
            "hub_directory_key": str(public_path(self.directory_key)),
            "tls": {"ca_cert": str(self.pki.ca_cert), "cert": str(cert), "key": str(key)},
        }
        if self.hub_list is None:
            table["hub"] = hub_address
        else:
            table["hubs"] = self.hub_list(hub_address)
        _merge(table, self.node_overrides)
        _merge(table, self.per_node.get(enterprise, {}))
        return table

    def hub_config(self, listen: str = "127.0.0.1:0") -> HubConfig:
        return hub_config(self.hub_table(listen), self.root)

    def node_config(self, enterprise: str, hub_address: str) -> NodeConfig:
        return node_config(self.node_table(enterprise, hub_address), self.root)

    @property
    def hub_db(self) -> Path:
        return self.root / "hub" / "hub.sqlite"

    def local_api(self, enterprise: str) -> str:
        return f"unix:{self.root / 'sock' / enterprise}.sock"


def _cap_address_space(limit: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` setting ``RLIMIT_AS`` to ``limit`` bytes in the child (None: no cap)."""
    if limit is None:
        return None

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return cap


def _preexec(*steps: Callable[[], None] | None) -> Callable[[], None] | None:
    """One ``preexec_fn`` running each of ``steps`` that is not None (None: none at all)."""
    todo = [step for step in steps if step is not None]
    if not todo:
        return None

    def run() -> None:
        for step in todo:
            step()

    return run


def _merge(table: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(table.get(key), dict):
            table[key].update(value)
        else:
            table[key] = value


class InProcessNetwork(NetworkLayout):
    """A hub and nodes in this event loop: ``await start()`` and ``await stop()``, or
    ``async with InProcessNetwork(...) as net:`` (started on entry, stopped on exit)."""

    async def start(self) -> None:
        from node.app import HubApp, NodeApp

        self.hub = HubApp(self.hub_config(), init=True)
        await self.hub.start()
        self.hub_address = f"127.0.0.1:{self.hub.port}"
        if self.hub.directory.revision == 0 and self.seed:
            await self.hub.directory.apply([(e, False) for e in self.seed])
        self.nodes: dict[str, NodeApp] = {}
        for e in self.institutions:
            await self.start_node(e)

    async def start_node(self, enterprise: str) -> None:
        from node.app import NodeApp

        app = NodeApp(self.node_config(enterprise, self.hub_address), init=True)
        await app.start()
        self.nodes[enterprise] = app
        await self._registered(app)

    @staticmethod
    async def _registered(app: Any, timeout: float = 10.0) -> None:
        """Wait (a while, not failing) until the node's uplink has registered at the hub, or
        failed to: a test that starts the network and consults at once must find every
        endpoint known."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        uplink = app.uplink
        while (uplink is not None and not uplink.connected and not uplink.failures
               and loop.time() < deadline):
            await asyncio.sleep(0.01)

    async def stop_node(self, enterprise: str) -> None:
        await self.nodes.pop(enterprise).stop()

    async def stop(self) -> None:
        for e in list(self.nodes):
            await self.stop_node(e)
        await self.hub.stop()

    async def __aenter__(self) -> InProcessNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ProcessNetwork(NetworkLayout):
    """A hub and nodes as real processes (``python -m node.cli ... serve``).

    ``address_space_cap`` (bytes; set it before starting), when set, is each child's
    ``RLIMIT_AS``: an allocation past it fails in that process (``MemoryError``) instead of
    growing until the kernel's OOM killer picks a victim (the fuzzing campaign, tests/fuzz/).
    ``ready[name]`` holds what each process wrote to its ready file (ports, local API).
    """

    address_space_cap: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ready: dict[str, dict[str, Any]] = {}
        self.hub_address = ""
        atexit.register(self._kill_leftovers)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        #: Run in a process (by name: "hub", an enterprise number) before it executes, e.g.
        #: to give it the resource limits of a systemd unit.
        self.preexec: dict[str, Callable[[], None]] = {}
        #: Daemons started once already: later starts go without ``--init``, as an
        #: operator's would (a lost state then refuses to start).
        self.initialized: set[str] = set()
        #: A command to run a daemon under (by name), e.g. ``["ip", "netns", "exec", "ns1"]``
        #: for one in a network namespace; it must exec the daemon in its own process.
        self.wrap: dict[str, list[str]] = {}

    def _spawn(self, name: str, role: str, table: dict[str, Any],
               init: bool | None = None) -> dict[str, Any]:
        """Start a daemon; ``init`` (default: on its first start here) passes ``--init``."""
        config = self.root / f"{name}.toml"
        write_toml(config, table)
        ready = self.root / f"{name}.ready"
        ready.unlink(missing_ok=True)
        log = (self.root / f"{name}.log").open("ab")
        if init is None:
            init = name not in self.initialized
        self.initialized.add(name)
        proc = subprocess.Popen(
            [*self.wrap.get(name, []), sys.executable, "-P", "-m", "node.cli", role, "serve",
             "--config", str(config),
             "--ready-file", str(ready), *(["--init"] if init else [])],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.root,
            preexec_fn=_preexec(_cap_address_space(self.address_space_cap),
                                self.preexec.get(name)),
        )
        log.close()
        self.procs[name] = proc
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.root}/{name}.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not become ready; see {self.root}/{name}.log")
            time.sleep(0.05)
        self.ready[name] = dict(json.loads(ready.read_text()))
        return self.ready[name]

    def start_hub(self, init: bool | None = None, listen: str | None = None) -> None:
        """Start the hub: on ``listen``, else where it was (a free port at first)."""
        first = not self.hub_address
        listen = listen or self.hub_address or "127.0.0.1:0"
        info = self._spawn("hub", "hub", self.hub_table(listen), init)
        self.hub_address = f"127.0.0.1:{info['port']}"
        if first and self.seed:
            self.apply_directory(self.seed)

    def apply_directory(self, entities: Iterable[Entity], delete: bool = False) -> int:
        """Change the running hub's directory through its admin API (admin certificate)."""
        import grpc

        from node.rpc.tls import hub_tls_name
        from node.wire.directory import change_to_proto
        from node.wire.gen.crossroads.v1 import directory_pb2, directory_pb2_grpc

        creds = grpc.ssl_channel_credentials(
            self.pki.ca_cert.read_bytes(), self.admin_key.read_bytes(),
            self.admin_cert.read_bytes())
        options = [("grpc.ssl_target_name_override", hub_tls_name(self.network)),
                   ("grpc.max_send_message_length", 256 << 20)]
        with grpc.secure_channel(self.hub_address, creds, options=options) as channel:
            stub = directory_pb2_grpc.DirectoryAdminStub(channel)
            response = stub.Apply(directory_pb2.ApplyRequest(
                changes=[change_to_proto(e, delete) for e in entities]), timeout=120)
        return int(response.revision)

    def start_node(self, enterprise: str, init: bool | None = None) -> None:
        (self.root / "sock").mkdir(exist_ok=True)
        self._spawn(enterprise, "node", self.node_table(enterprise, self.hub_address), init)

    def start(self, nodes: Iterable[str] | None = None) -> None:
        self.start_hub()
        for e in self.institutions if nodes is None else nodes:
            self.start_node(e)

    def kill(self, name: str) -> None:
        """kill -9, no goodbye."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def stop(self, name: str, timeout: float = 30) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise

    def stop_all(self) -> None:
        for name in [n for n in self.procs if n != "hub"]:
            self._stop_quietly(name)
        if "hub" in self.procs:
            self._stop_quietly("hub")

    def _stop_quietly(self, name: str) -> None:
        try:
            self.stop(name)
        except Exception:  # noqa: BLE001 - teardown goes on
            pass

    def _kill_leftovers(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def log_tails(self, lines: int = 12, width: int = 240) -> str:
        """The last lines of every process's log, for a test's failure message (CI shows
        little else of a process that stalled)."""
        parts = []
        for log in sorted(self.root.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}")
            parts.extend(line[:width] for line in tail)
        return "\n".join(parts)

    def __enter__(self) -> ProcessNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
