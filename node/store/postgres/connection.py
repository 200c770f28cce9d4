"""Connecting to the hub's PostgreSQL: where the password comes from, the pool, migrations.

Credentials never travel on a command line: :class:`PgParams` holds a libpq DSN without a
password and the password, read by :meth:`PgParams.from_sources` from a file (first line) or
an environment variable.

**Several hosts (a replicated cluster, docs/OPERATIONS.md).** The DSN may list every member,
``postgresql://user@h1:p1,h2:p2/db?target_session_attrs=read-write``; every connection the hub
opens (the pool's, the health ping's, the listeners') goes through :func:`connect_any`, which
tries the hosts in turn, each within ``connect_timeout_s`` of its own, and takes the first that
accepts and is writable. asyncpg 0.31 walks a host list itself, but under one timeout for the
whole walk (a silent first host, a powered-off primary, uses it all up: the second is never
tried), and it gives up at the first host that answers with an error instead of a socket
failure ("the database system is starting up", a member Patroni is restarting as a standby):
so the hub walks the list and asks asyncpg for one host at a time, ``target_session_attrs``
and all (asyncpg honours it for one host: it connects, checks ``in_hot_standby`` /
``default_transaction_read_only`` and refuses with ``TargetServerAttributeNotMatched``).
A DSN in keyword form (``host=a,b``) is passed to asyncpg as it is.

**A server that is no longer the primary** answers writes with ``read_only_sql_transaction``
(SQLSTATE 25006): that is the database being unavailable, never a refusal of the envelope
(it is in :data:`DATABASE_ERRORS`), and :func:`acquire` closes such a connection instead of
returning it to the pool, so that the next one is opened to the new primary.

:func:`migrate` applies :data:`~node.store.postgres.migrations.MIGRATIONS` forward-only, each
in its own transaction holding a transaction-scoped advisory lock, so replicas that open the
database at the same time apply each migration once; a database of a newer schema than this
software is refused (``RuntimeError``), before anything is written.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from node.store.postgres.migrations import MIGRATIONS

__all__ = ["DATABASE_ERRORS", "MIGRATION_LOCK", "WRITABLE_SQL", "PgParams", "acquire",
           "connect", "connect_any", "create_pool", "host_dsns", "migrate", "schema_version"]

#: What a lost, refused or timed-out database connection raises (asyncpg's errors, the
#: socket's, the statement and connect timeouts; asyncpg's client-side errors too: no host
#: of the DSN writable, ``TargetServerAttributeNotMatched``, or a connection left in a
#: broken state by a statement cut off in the middle, "cannot switch to state ...; another
#: operation is in progress", seen on the health ping's connection during a failover):
#: every store turns them into ``Unavailable`` (nothing stored, retry), never an exception
#: the RPC edge does not know.
DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError,
                   asyncpg.exceptions.InternalClientError)
#: True on a server that takes writes (the health ping asks it: a demoted primary, or one
#: set ``default_transaction_read_only``, answers ``SELECT 1`` but commits nothing).
WRITABLE_SQL = ("SELECT NOT pg_is_in_recovery()"
                " AND current_setting('transaction_read_only') = 'off'")

#: The advisory lock key migrations run under (any constant; "crossroads hub").
MIGRATION_LOCK = 0x63726F7373
_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version"
                  " (id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)")


@dataclass(frozen=True)
class PgParams:
    """Where the hub's database is and how to log in (the password is kept out of ``repr``)."""

    dsn: str
    password: str | None = field(default=None, repr=False)
    min_size: int = 1
    max_size: int = 8
    #: Prepared statements cached per connection; 0 behind a transaction-mode pooler
    #: (PgBouncer), where a connection's prepared statements are not its own.
    statement_cache_size: int = 100
    #: Seconds to open a connection, and for any one statement: a database that does not
    #: answer (a partition, a frozen server) fails the write within these bounds instead of
    #: holding it (and the batch's ack) until TCP gives up.
    connect_timeout_s: float = 5.0
    command_timeout_s: float = 15.0
    #: The health ping's bound (node/hub/store_health.py): ``SELECT 1`` on a connection of
    #: its own answers in milliseconds; no answer in this time is a database away.
    ping_timeout_s: float = 2.0

    @classmethod
    def from_sources(cls, dsn: str, password_file: Path | None = None,
                     password_env: str | None = None, **pool: int) -> PgParams:
        """The password from ``password_file`` (its first line) or the environment variable
        ``password_env``; neither: none (a ``.pgpass`` file or trust authentication)."""
        password = None
        if password_file is not None:
            lines = password_file.read_text().splitlines()
            password = lines[0] if lines else ""
        elif password_env is not None:
            password = os.environ.get(password_env)
            if password is None:
                raise RuntimeError(f"environment variable {password_env} is not set")
        return cls(dsn, password, **pool)


#: Each pooled session's server-side bounds on a client that is gone (a replica cut off from
#: the database, its packets dropped): a backend whose writes to it are not acknowledged
#: within 5 s ends (``tcp_user_timeout``), and an idle one is probed after 5 s.
SESSION_SETTINGS = {
    "tcp_user_timeout": "5000",
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}


async def create_pool(params: PgParams, idle_in_transaction_s: float | None = None) -> asyncpg.Pool:
    """``idle_in_transaction_s``: the server ends a session that waits that long for the next
    statement of an open transaction (see PostgresHubStore: a cut-off replica's transaction
    would otherwise keep its row locks until TCP gave up)."""
    settings = dict(SESSION_SETTINGS)
    if idle_in_transaction_s is not None:
        settings["idle_in_transaction_session_timeout"] = f"{int(idle_in_transaction_s * 1000)}"
    pool = await asyncpg.create_pool(params.dsn, password=params.password, connect=connect_any,
                                     min_size=params.min_size, max_size=params.max_size,
                                     statement_cache_size=params.statement_cache_size,
                                     timeout=params.connect_timeout_s,
                                     command_timeout=params.command_timeout_s,
                                     server_settings=settings)
    assert pool is not None
    return pool


async def schema_version(conn: asyncpg.Connection) -> int:
    """The schema's version, 0 on an empty database. Read only: ``CREATE TABLE IF NOT
    EXISTS`` is not safe against a concurrent one (two replicas started with ``--init`` at
    once: "duplicate key ... pg_type_typname_nsp_index"), so the table is made by
    :func:`migrate`, under its lock."""
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def migrate(conn: asyncpg.Connection, migrations: list[str] = MIGRATIONS) -> int:
    """Bring the schema to ``len(migrations)``; the version reached."""
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(_VERSION_TABLE)
            version = await schema_version(conn)
            if version > len(migrations):
                raise RuntimeError(f"database schema version {version} is newer than this"
                                   f" software ({len(migrations)})")
            if version == len(migrations):
                return version
            await conn.execute(migrations[version])
            await conn.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, $1)"
                " ON CONFLICT (id) DO UPDATE SET version = excluded.version", version + 1)


def host_dsns(dsn: str) -> list[str]:
    """One DSN per host of a URI that lists several (``postgresql://u@h1:p1,h2:p2/db?...``),
    in their order; any other DSN as it is."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql") or "," not in parts.netloc:
        return [dsn]
    userinfo, at, hosts = parts.netloc.rpartition("@")
    return [urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}"))
            for host in hosts.split(",")]


async def connect_any(dsn: str, **options: Any) -> asyncpg.Connection:
    """A connection to the first host of ``dsn`` that accepts one (and matches its
    ``target_session_attrs``), each host tried within ``options["timeout"]`` of its own (see
    the module's docstring); the last host's error when none does. The pool's ``connect``."""
    last: BaseException | None = None
    for one in host_dsns(dsn):
        try:
            return await asyncpg.connect(one, **options)
        except DATABASE_ERRORS as exc:
            last = exc
    assert last is not None
    raise last


async def connect(params: PgParams, **options: Any) -> asyncpg.Connection:
    """A connection of its own (not the pool's) to the writable host of ``params``."""
    options.setdefault("timeout", params.connect_timeout_s)
    return await connect_any(params.dsn, password=params.password, **options)


@asynccontextmanager
async def acquire(pool: asyncpg.Pool, bound_s: float | None = None
                  ) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection; one found on a read-only server (a demoted primary), or whose use
    failed, is terminated instead of going back to the pool: the pool opens the next one (to
    the new primary), and nothing waits on a connection in an unknown state.

    ``bound_s``: the whole use (waiting for a connection, every statement, the COMMIT, and
    giving the connection back) ends within that time: then the connection is
    **terminated** (its socket closed at once), and what waits on it fails
    (``ConnectionDoesNotExistError``, a database error). A timer does it, not a
    cancellation: on a connection to a primary that went silent (a power cut), giving the
    connection back to the pool resets it without a timeout of its own, and that wait lasted
    until the kernel gave up, over 2 minutes (a replica's lease round hung there after a
    database failover in the deploy test, and its deliveries stopped with its leases)."""
    conn = await pool.acquire(timeout=bound_s)
    watchdog = (asyncio.get_running_loop().call_later(bound_s, conn.terminate)
                if bound_s is not None else None)
    try:
        yield conn
    except (*DATABASE_ERRORS, asyncio.CancelledError):
        conn.terminate()
        raise
    finally:
        try:
            await pool.release(conn, timeout=bound_s)
        finally:
            if watchdog is not None:
                watchdog.cancel()
