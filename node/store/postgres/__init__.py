"""The hub's storage on PostgreSQL (asyncpg): :class:`PostgresHubStore` and how it connects.

It implements :class:`node.store.protocols.HubStorage` and passes the contract suite
(tests/contract/); the hub cannot select it yet (issue #15).
"""

from node.store.postgres.connection import PgParams
from node.store.postgres.hub_store import PostgresHubStore

__all__ = ["PgParams", "PostgresHubStore"]
