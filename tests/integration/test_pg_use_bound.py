"""A bounded use of a pooled PostgreSQL connection (node/store/postgres/connection.py
``acquire``) ends on time even when the server goes silent, as a primary that lost power
looks to its clients: a proxy in front of a real PostgreSQL stops forwarding anything (and
takes new connections without answering on them). A use that failed terminates its
connection, and a timer bounds the whole use: giving a connection back to the pool resets it
without a timeout of its own, which is how a replica's lease round hung for minutes after a
database failover in the deploy test."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from node.store.postgres.connection import DATABASE_ERRORS, PgParams, acquire, create_pool
from node.testing_postgres import PgDatabase


class SilentProxy:
    """Forwards TCP to ``target`` until :meth:`go_silent`: then nothing passes any more."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.silent = asyncio.Event()
        self.port = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while not self.silent.is_set() and (data := await reader.read(65536)):
                if self.silent.is_set():
                    break
                writer.write(data)
                await writer.drain()
        await self.silent.wait()  # silent: keep the socket open, answer nothing

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent.is_set():
            await asyncio.sleep(3600)
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, upstream_writer),
                             self._pipe(upstream_reader, writer), return_exceptions=True)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SilentProxy]:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()


async def test_a_use_on_a_silent_server_ends_at_its_bound(pg_database: PgDatabase) -> None:
    url = urlsplit(pg_database.dsn)
    proxy = SilentProxy(url.hostname or "127.0.0.1", url.port or 5432)
    async with proxy.running():
        dsn = urlunsplit(url._replace(netloc=f"{url.username}@127.0.0.1:{proxy.port}"))
        params = PgParams.from_sources(dsn, password_file=pg_database.password_file,
                                       max_size=2)
        pool = await create_pool(params)
        try:
            started = time.monotonic()
            async with asyncio.timeout(20):  # the test's own bound: a hang fails it
                with pytest.raises(DATABASE_ERRORS):
                    async with acquire(pool, bound_s=2.0) as conn:
                        assert await conn.fetchval("SELECT 1") == 1
                        proxy.silent.set()  # the power cut
                        # The statement's own timeout ends it; giving the connection back
                        # must not wait on the silent server.
                        await conn.fetchval("SELECT 2", timeout=0.5)
            took = time.monotonic() - started
            assert took < 4.0, f"the bounded use lasted {took:.1f} s"
        finally:
            pool.terminate()
