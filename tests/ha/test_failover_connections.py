"""How the hub's store connects to a cluster whose primary moves (node/store/postgres/
connection.py), on a real PostgreSQL: the cases a Patroni failover passes through, made
one at a time and fast.

* a DSN listing several hosts whose first does not answer (a powered-off primary, here a
  socket that accepts and never speaks): the store still reaches the second host, each
  host within its own ``connect_timeout_s`` (asyncpg's own walk spends its one timeout on
  the first host and fails: checked too, so that an asyncpg that fixes it is noticed);
* a server that stops taking writes (a demoted primary; here ``default_transaction_read_only``
  turned on under the open store): writes are ``Unavailable`` (``NOT_STORED``: not a refusal
  of the envelope), the connection that met it is closed rather than pooled, the health ping
  fails, no host matching ``target_session_attrs=read-write`` is ``Unavailable`` too; turned
  back, the same store writes again without being reopened.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from node.core.errors import Unavailable
from node.core.reasons import CallReason
from node.store.postgres.connection import PgParams, acquire
from node.store.postgres.hub_store import PostgresHubStore
from node.testing_postgres import SUPERUSER, PostgresServer

pytestmark = pytest.mark.ha


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says anything."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in [*held, listener]:
        conn.close()


def _params(server: PostgresServer, hosts: str) -> PgParams:
    return PgParams(f"postgresql://{SUPERUSER}@{hosts}/postgres?target_session_attrs=read-write",
                    server.password, connect_timeout_s=1.0, ping_timeout_s=1.0)


async def test_a_silent_first_host_does_not_hide_the_primary(
        server: PostgresServer, silent_port: int) -> None:
    params = _params(server, f"127.0.0.1:{silent_port},127.0.0.1:{server.port}")
    with pytest.raises(TimeoutError):  # asyncpg's own walk: one timeout for every host
        await asyncpg.connect(params.dsn, password=params.password, timeout=2.0)
    store = PostgresHubStore(params, replica_id="r1")
    started = time.monotonic()
    await store.open()
    try:
        print(f"opened past a silent first host in {time.monotonic() - started:.1f} s")
        await store.ping()
        await store.set_endpoint("0403019261", "10.0.0.1:1")
    finally:
        await store.close()


async def test_a_primary_turned_read_only_is_unavailable_until_it_takes_writes_again(
        server: PostgresServer, tmp_path: Path) -> None:
    params = _params(server, f"127.0.0.1:{server.port}")
    store = PostgresHubStore(params, replica_id="r1")
    await store.open()
    try:
        await store.set_endpoint("0403019261", "10.0.0.1:1")
        server.sql("ALTER SYSTEM SET default_transaction_read_only = on")
        server.sql("SELECT pg_reload_conf()")
        time.sleep(0.5)  # the open sessions take the reload in at their next statement
        assert store._pool is not None
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            async with acquire(store._pool) as conn:  # the pooled one, opened when writable
                pid = conn.get_server_pid()
                await conn.execute("CREATE TABLE nothing (x int)")
        # Closed, not back in the pool: the next connection looks for a primary.
        for _ in range(50):
            if server.sql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") == "0\n":
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the read-only session {pid} was kept")
        with pytest.raises(Unavailable) as refused:  # and finds none: no host is read-write
            await store.set_endpoint("0403019261", "10.0.0.1:2")
        assert refused.value.reason is CallReason.NOT_STORED
        with pytest.raises(Unavailable):
            await store.ping()
        server.sql("ALTER SYSTEM RESET default_transaction_read_only")
        server.sql("SELECT pg_reload_conf()")
        time.sleep(0.5)
        await store.ping()
        await store.set_endpoint("0403019261", "10.0.0.1:3")
    finally:
        await store.close()
