"""The hub tier a benchmark runs against: ``--backend sqlite|postgresql`` and ``--hubs N``.

* ``sqlite`` (the default, as before): one hub process on its ``hub.sqlite``.
* ``postgresql``: :class:`PgCluster`, a throw-away PostgreSQL 15 started by the benchmark
  from Debian's binaries (:class:`node.testing_postgres.PostgresServer`), tuned like a
  production server sized for this machine (:data:`PG_SETTINGS`, explained in
  benchmarks/README.md), with a login role for the hubs whose password is in a file of the
  work directory (the hubs' ``[store] password_file``); a fresh database for each run.
* ``--hubs N``: :class:`TierNetwork` starts N ``crossroads hub serve`` processes on that one
  database (PostgreSQL only), each with a data directory of its own (its lock file) and the
  same directory signing key; every node's ``hubs = [...]`` lists every replica, rotated so
  that each replica is the first choice of its share of the nodes (node *k* starts at
  replica *k mod N*).
* :func:`tier_choices` turns the options into the tiers to measure (e2e compares several in
  one run: ``--backend sqlite,postgresql --hubs 1,2``).

:class:`HubTables` reads the hub's tables for the benchmarks' samples and checks (the
backlog in the hub's queue, audit counts, the chain verified through
:class:`node.store.audit_source.AuditSource`) on either backend. :meth:`TierNetwork.tier_pids`
names the processes whose CPU is the tier's, the database server's as a process tree
(:class:`benchmarks.common.ProcessMeter` counts the postmaster, everything it forked and its
exited children), and :func:`tier_cpu` sums it per envelope.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from node.store.audit_source import AuditSource, SqliteAuditSource
from node.store.postgres import PgParams
from node.store.postgres.audit_source import PostgresAuditSource
from node.testing import ProcessNetwork
from node.testing_postgres import PostgresServer, postgres_bindir

__all__ = [
    "BACKENDS",
    "PG_SETTINGS",
    "TABLE_ERRORS",
    "HubTables",
    "PgCluster",
    "TierChoice",
    "TierNetwork",
    "add_tier_options",
    "cluster_for",
    "hub_tables",
    "tier_choices",
    "tier_cpu",
]

BACKENDS = ("sqlite", "postgresql")
#: What reading a hub's or node's tables may fail with (a sample or a check then skipped).
TABLE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, RuntimeError,
                                                 asyncpg.PostgresError, asyncpg.InterfaceError)
HUB_ROLE, HUB_DATABASE = "crossroads_hub", "crossroads"
#: The server's settings: production values scaled to a 2-core machine that also runs the
#: hubs, the nodes and the load generator (benchmarks/README.md explains each). Durability is
#: production's: fsync, synchronous_commit and full_page_writes on.
PG_SETTINGS: dict[str, str] = {
    "max_connections": "100",
    "shared_buffers": "'512MB'",
    "effective_cache_size": "'4GB'",
    "work_mem": "'8MB'",
    "maintenance_work_mem": "'256MB'",
    "wal_buffers": "'16MB'",
    "wal_compression": "on",
    "min_wal_size": "'1GB'",
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'15min'",
    "checkpoint_completion_target": "0.9",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
    "max_worker_processes": "4",
    "max_parallel_workers_per_gather": "0",
    "jit": "off",
    "autovacuum_naptime": "'10s'",
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_insert_scale_factor": "0.05",
    "autovacuum_analyze_scale_factor": "0.05",
    "log_min_messages": "warning",
}


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or any(n not in BACKENDS for n in names):
        raise argparse.ArgumentTypeError(f"{text!r}: {' or '.join(BACKENDS)}, comma-separated")
    return list(dict.fromkeys(names))


def _counts(text: str) -> list[int]:
    try:
        counts = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: hub counts of at least 1, comma-separated")
    return list(dict.fromkeys(counts))


def add_tier_options(p: argparse.ArgumentParser, several: bool = False) -> None:
    """``--backend`` and ``--hubs``; with ``several``, comma-separated lists whose every
    combination is measured in turn in the same run (SQLite only with one hub)."""
    if several:
        p.add_argument("--backend", type=_names, default=["sqlite"],
                       help="the hub's store, comma-separated to compare in one run:"
                            " sqlite (one hub process) and/or postgresql (a throw-away server"
                            " started by the benchmark, tuned as benchmarks/README.md says)")
        p.add_argument("--hubs", type=_counts, default=[1],
                       help="hub processes (replicas) on the PostgreSQL database,"
                            " comma-separated to compare (e.g. 1,2)")
    else:
        p.add_argument("--backend", choices=BACKENDS, default="sqlite",
                       help="the hub's store: sqlite (one hub process) or postgresql (a"
                            " throw-away server started by the benchmark, tuned as"
                            " benchmarks/README.md says)")
        p.add_argument("--hubs", type=int, default=1,
                       help="hub processes (replicas) on the PostgreSQL database")


@dataclass(frozen=True)
class TierChoice:
    """One hub tier to measure: a backend and how many hub processes."""

    backend: str
    hubs: int

    @property
    def label(self) -> str:
        return self.backend if self.backend == "sqlite" else f"{self.backend} x{self.hubs}"


def tier_choices(args: argparse.Namespace) -> list[TierChoice]:
    """The tiers ``--backend`` and ``--hubs`` ask for; ValueError saying why they cannot run."""
    backends = args.backend if isinstance(args.backend, list) else [args.backend]
    counts = args.hubs if isinstance(args.hubs, list) else [args.hubs]
    if min(counts) < 1:
        raise ValueError("--hubs must be at least 1")
    if backends == ["sqlite"] and max(counts) > 1:
        raise ValueError("--hubs N > 1 needs --backend postgresql (replicas share one database)")
    return [TierChoice(b, 1 if b == "sqlite" else n)
            for b in backends for n in ([1] if b == "sqlite" else counts)]


@dataclass
class PgCluster:
    """A throw-away PostgreSQL server (:data:`PG_SETTINGS`) with the hub's login role, its
    password in a file of the work directory; :meth:`fresh_database` before each run."""

    root: Path
    server: PostgresServer = field(init=False)
    password_file: Path = field(init=False)

    def start(self) -> PgCluster:
        self.server = PostgresServer(settings=dict(PG_SETTINGS)).start()
        self.password_file = self.root / "hub-db.password"
        self.password_file.write_text(secrets.token_urlsafe(18) + "\n")
        self.password_file.chmod(0o600)
        self._admin(f"CREATE ROLE {HUB_ROLE} LOGIN PASSWORD"
                    f" '{self.password_file.read_text().strip()}'")
        return self

    def stop(self) -> None:
        self.server.stop()

    def fresh_database(self) -> None:
        """An empty database for the next run (the previous run's dropped)."""
        self._admin(f"DROP DATABASE IF EXISTS {HUB_DATABASE} WITH (FORCE)")
        self._admin(f"CREATE DATABASE {HUB_DATABASE} OWNER {HUB_ROLE}")

    def _admin(self, sql: str) -> None:
        server = self.server

        async def run() -> None:
            conn = await asyncpg.connect(server.dsn(), password=server.password)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()
        asyncio.run(run())

    @property
    def dsn(self) -> str:
        return self.server.dsn(HUB_DATABASE, user=HUB_ROLE)

    def params(self) -> PgParams:
        return PgParams.from_sources(self.dsn, password_file=self.password_file)

    def store_table(self) -> dict[str, Any]:
        """The hubs' ``[store]`` table."""
        return {"backend": "postgresql", "dsn": self.dsn,
                "password_file": str(self.password_file)}

    def pid(self) -> int:
        pid = self.server.pid()
        if pid is None:
            raise RuntimeError("the PostgreSQL server is not running")
        return pid

    def facts(self) -> dict[str, Any]:
        return {"settings": PG_SETTINGS, "bindir": str(postgres_bindir())}


@contextlib.contextmanager
def cluster_for(choices: Sequence[TierChoice], root: Path) -> Iterator[PgCluster | None]:
    """The PostgreSQL server ``choices`` need (None: SQLite alone), stopped at the end."""
    if all(c.backend == "sqlite" for c in choices):
        yield None
        return
    cluster = PgCluster(root).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass
class TierNetwork(ProcessNetwork):
    """A :class:`ProcessNetwork` whose hub is ``choice.hubs`` replicas on ``cluster``
    (None: SQLite): replica 1 is "hub" (data in ``hub/``), replica *i* is "hub-i"
    (``hub-i/``). Set :attr:`choice` between runs to measure another tier."""

    choice: TierChoice = field(default_factory=lambda: TierChoice("sqlite", 1))
    cluster: PgCluster | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hub_addresses: list[str] = []

    @property
    def on_postgresql(self) -> bool:
        return self.choice.backend == "postgresql"

    @property
    def replica_names(self) -> list[str]:
        return ["hub", *(f"hub-{i}" for i in range(2, self.choice.hubs + 1))]

    def hub_table(self, listen: str = "127.0.0.1:0") -> dict[str, Any]:
        table = super().hub_table(listen)
        if self.on_postgresql:
            assert self.cluster is not None, "a PostgreSQL tier needs its cluster"
            table["store"] = self.cluster.store_table()
        return table

    def node_table(self, enterprise: str, hub_address: str) -> dict[str, Any]:
        table = super().node_table(enterprise, hub_address)
        if len(self.hub_addresses) > 1:
            k = self.institutions.index(enterprise) % len(self.hub_addresses)
            table.pop("hub", None)
            table["hubs"] = self.hub_addresses[k:] + self.hub_addresses[:k]
        return table

    def start_hub(self, init: bool | None = None, listen: str | None = None) -> None:
        """Start every replica (the first as :class:`ProcessNetwork` starts its hub) on a
        fresh database (PostgreSQL)."""
        if self.on_postgresql and not self.hub_address:
            assert self.cluster is not None
            self.cluster.fresh_database()
        super().start_hub(init, listen)
        self.hub_addresses = [self.hub_address]
        for name in self.replica_names[1:]:
            table = self.hub_table()
            table["data_dir"] = str(self.root / name)
            info = self._spawn(name, "hub", table, init)
            self.hub_addresses.append(f"127.0.0.1:{info['port']}")

    def wipe(self) -> None:
        """Forget the previous run: the hubs' and nodes' files, the addresses."""
        replicas = [p.name for p in self.root.glob("hub-*") if p.is_dir()]
        for sub in ("hub", "nodes", "sock", *replicas):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        for ready in self.root.glob("*.ready"):
            ready.unlink()
        self.hub_address = ""
        self.hub_addresses = []
        self.initialized.clear()

    def tier_pids(self) -> tuple[dict[str, int], set[str]]:
        """The hub replicas' pids and the database server's ("postgresql"), and which of
        them are process trees (for :class:`benchmarks.common.ProcessMeter`)."""
        pids = {name: self.pid(name) for name in self.replica_names}
        if self.on_postgresql and self.cluster is not None:
            pids["postgresql"] = self.cluster.pid()
            return pids, {"postgresql"}
        return pids, set()

    def facts(self) -> dict[str, Any]:
        """What the results record of the tier measured."""
        facts: dict[str, Any] = {"backend": self.choice.backend, "hubs": self.choice.hubs}
        if self.on_postgresql and self.cluster is not None:
            facts["postgresql"] = self.cluster.facts()
        return facts


def tier_cpu(report: dict[str, Any], replicas: Sequence[str]) -> dict[str, float | None]:
    """CPU µs per envelope of the tier from a :class:`benchmarks.common.ProcessMeter`
    report: every hub replica together ("hubs") and the database server ("postgresql",
    None on SQLite, whose work is the hub's own)."""
    per = {n: v["cpu_us_per_envelope"] for n, v in report["processes"].items()}
    hubs = [per[n] for n in replicas if n != "postgresql" and per.get(n) is not None]
    return {"hubs": round(sum(hubs), 2) if hubs else None, "postgresql": per.get("postgresql")}


# -- the hub's tables, on either backend -----------------------------------------------------


class HubTables(Protocol):
    """Read-only SQL on one database (the hub's, or a node's SQLite file)."""

    def rows(self, sql: str) -> list[tuple[Any, ...]]: ...
    def audit(self) -> AuditSource: ...
    def close(self) -> None: ...


class SqliteTables:
    """A read-only connection to a SQLite file, usable from the sampling thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                    check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout=1000")

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql).fetchall()]

    def audit(self) -> AuditSource:
        return SqliteAuditSource(self.path)

    def close(self) -> None:
        self.conn.close()


class PgTables:
    """One connection to the hub's PostgreSQL database on an event loop of its own (used by
    one thread at a time: the sampler, then the checks)."""

    def __init__(self, params: PgParams) -> None:
        self.params = params
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(
            asyncpg.connect(params.dsn, password=params.password))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.loop.run_until_complete(self.conn.fetch(sql))]

    def audit(self) -> AuditSource:
        return PostgresAuditSource(self.params)

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def hub_tables(net: ProcessNetwork) -> HubTables | None:
    """The hub's tables of ``net`` (None: no hub store was made)."""
    if isinstance(net, TierNetwork) and net.on_postgresql and net.cluster is not None:
        return PgTables(net.cluster.params())
    return SqliteTables(net.hub_db) if net.hub_db.exists() else None
