"""The one place that picks the hub's storage: SQLite files or a shared PostgreSQL database.

Design
------
``[store] backend`` (node/config.py :class:`~node.config.StoreConfig`) chooses:

* ``sqlite`` (the default): ``hub.sqlite`` and ``directory.sqlite`` in ``data_dir``, one hub
  process (the data directory's lock keeps a second one out).
* ``postgresql``: the queue, idempotency records, audit chain and directory in one database
  that every replica of the hub tier shares (docs/ARCHITECTURE.md, "The hub tier"). The data
  directory keeps only the lock file (and the signing key, if it lives there).

The state checks of :mod:`node.store.data_dir` hold for both; on PostgreSQL,
:func:`node.store.postgres.preflight.prepare_database` checks the database before any store
opens (its rules are written there).
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.config import HubConfig, StoreBackend, StoreConfig
from node.core.clock import Clock
from node.store.data_dir import StateLayout, layout_files
from node.store.directory_store import DirectoryStore
from node.store.hub_store import HubStore
from node.store.protocols import DirectoryLog, HubStorage

if TYPE_CHECKING:
    from node.store.postgres.connection import PgParams

__all__ = ["HubBackend", "hub_layout", "open_hub_backend", "pg_params", "replica_id"]


@dataclass(frozen=True, slots=True)
class HubBackend:
    """The hub's stores, not yet opened (``open()`` each, as HubApp does)."""

    hub: HubStorage
    directory: DirectoryLog


def hub_layout(config: HubConfig) -> StateLayout:
    """The hub's state in its data directory: the two SQLite databases (none on PostgreSQL),
    and its signing key when kept in the data dir."""
    databases = (("hub.sqlite", "directory.sqlite")
                 if config.store.backend is StoreBackend.SQLITE else ())
    return StateLayout("hub", config.data_dir, databases,
                       layout_files([config.directory_key_path], config.data_dir))


def pg_params(store: StoreConfig) -> PgParams:
    """The connection parameters of ``[store]`` (the password read from its file or the
    environment now)."""
    from node.store.postgres.connection import PgParams

    if store.dsn is None:
        raise ValueError("store.dsn is required with backend = \"postgresql\"")
    return PgParams.from_sources(
        store.dsn, store.password_file, store.password_env, min_size=store.pool_min_size,
        max_size=store.pool_max_size, statement_cache_size=store.statement_cache_size)


def replica_id(config: HubConfig) -> str:
    """``[store] replica_id``, else ``<hostname>:<listen port>``. A port chosen at start
    (``:0``) is not known yet, and two live replicas must never share an id (they would hold
    each other's leases): ``<hostname>:0-<random>`` then, new at each start."""
    if config.store.replica_id:
        return config.store.replica_id
    port = config.listen.rpartition(":")[2]
    return f"{socket.gethostname()}:{port if port not in ('', '0') else f'0-{secrets.token_hex(4)}'}"


def open_hub_backend(config: HubConfig, signer: Ed25519PrivateKey, clock: Clock) -> HubBackend:
    """The stores ``config`` names (see the module's docstring)."""
    if config.store.backend is StoreBackend.SQLITE:
        return HubBackend(
            HubStore(config.data_dir / "hub.sqlite", config.synchronous, signer=signer,
                     checkpoints=config.audit_checkpoints, clock=clock),
            DirectoryStore(config.data_dir / "directory.sqlite", config.synchronous))
    from node.store.postgres.directory_store import PostgresDirectoryStore
    from node.store.postgres.hub_store import PostgresHubStore

    params = pg_params(config.store)
    return HubBackend(
        PostgresHubStore(params, signer=signer, checkpoints=config.audit_checkpoints,
                         clock=clock, replica_id=replica_id(config)),
        PostgresDirectoryStore(params))
