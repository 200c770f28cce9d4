"""Before a replica's stores open: the PostgreSQL database is the hub's, or ``--init`` makes it so.

:mod:`node.store.data_dir`'s rules, for a database instead of files:

* a database without the hub's schema is a first start: it is set up only with ``--init``
  (like an empty data directory), else the hub refuses (``STATE_MISSING``);
* the database remembers the public half of the directory key that signs its audit chain and
  fragments (``meta.directory_key``, written by the first replica to start). A replica whose
  ``directory_key`` differs refuses to start (``STATE_INCONSISTENT``): every replica must sign
  with the one key, or nodes would refuse the fragments of some replicas and the chain's
  checkpoints would be signed under two identities. A replica never creates a key unless it
  initializes the database (``--init`` on an empty database); the others need the file.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.store.data_dir import DataDirError, StateReason
from node.store.postgres.connection import PgParams, connect, migrate, schema_version
from node.wire.signed import ensure_signing_key

__all__ = ["prepare_database", "public_key_text"]


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The key's public half as it is kept in the database (PEM)."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


async def prepare_database(params: PgParams, init: bool, key_path: Path) -> bool:
    """PostgreSQL's counterpart of :func:`~node.store.data_dir.prepare_data_dir` (the module's
    rules): True when the database was empty and is now set up (``init``). The signing key is
    loaded (or, on that first start only, created) here; :class:`DataDirError` otherwise."""
    conn = await connect(params)
    try:
        fresh = await schema_version(conn) == 0
        if fresh and not init:
            raise DataDirError(StateReason.STATE_MISSING, (
                "the hub's PostgreSQL database (store.dsn) holds no hub schema: on a first"
                " start pass --init (crossroads hub serve --init, or crossroads hub init),"
                " else check store.dsn or restore the database"))
        await migrate(conn)
        key = public_key_text(ensure_signing_key(key_path))
        await conn.execute("INSERT INTO meta (key, value) VALUES ('directory_key', $1)"
                           " ON CONFLICT (key) DO NOTHING", key)
        stored = await conn.fetchval("SELECT value FROM meta WHERE key = 'directory_key'")
    finally:
        await conn.close()
    if stored != key:
        raise DataDirError(StateReason.STATE_INCONSISTENT, (
            f"this replica's signing key (directory_key) {key_path} is not the key the hub's"
            " database is signed with: every replica must use the same key file"))
    return fresh
