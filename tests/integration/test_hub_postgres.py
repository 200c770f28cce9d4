"""The hub on PostgreSQL (``[store] backend = "postgresql"``): real hub and nodes in process,
a real PostgreSQL server; the same traffic as on SQLite, and the state checks of a replica
(node/store/postgres/preflight.py) before it serves."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.app import HubApp
from node.config import hub_config
from node.store.data_dir import DataDirError, StateReason
from node.store.postgres.connection import PgParams
from node.store.postgres.preflight import prepare_database
from node.testing import InProcessNetwork, NetworkLayout
from node.testing_postgres import PgDatabase, PostgresServer
from node.wire.signed import ensure_signing_key
from tests.conftest import (
    A,
    B,
    C,
    NetworkStarter,
    fetch_all,
    http_get,
    hub_channel,
    local_call,
    numbered_envelopes,
    submit_accepted,
)


# pg_database comes first: the networks stop before their database is dropped.
async def test_envelopes_cross_a_hub_on_postgresql_and_survive_its_restart(
        pg_database: PgDatabase, start_network: NetworkStarter) -> None:
    net: InProcessNetwork = await start_network(
        hub_overrides={"store": pg_database.store_table()})
    for name in ("hub.sqlite", "directory.sqlite"):  # the queue and directory are in it
        assert not (net.root / "hub" / name).exists()
    assert net.hub.directory.revision > 0  # seeded, in the database
    # C is away: what is queued for it waits in PostgreSQL, across the hub's restart.
    await net.stop_node(C)
    await submit_accepted(net.local_api(A),
                          numbered_envelopes(30, lambda i: [B, C] if i % 2 else [B]))
    at_b = await fetch_all(net.local_api(B), 30)
    assert [e.sender_ticket for e in at_b] == [str(i) for i in range(30)]  # once, in order
    store_id = net.hub.store.store_id
    await net.hub.stop()
    net.hub = HubApp(net.hub_config(net.hub_address), init=False)
    await net.hub.start()
    assert net.hub.store.store_id == store_id  # the same hub for the nodes' continuity check
    assert net.hub.deliverer is not None and net.hub.deliverer.pending[C] == 15
    await net.start_node(C)
    at_c = await fetch_all(net.local_api(C), 15)
    assert [e.sender_ticket for e in at_c] == [str(i) for i in range(1, 30, 2)]


async def test_a_replica_refuses_an_empty_database_without_init_and_a_foreign_key(
        pg_database: PgDatabase, start_network: NetworkStarter, tmp_path: Path) -> None:
    net: InProcessNetwork = await start_network(
        A, hub_overrides={"store": pg_database.store_table()})
    table = net.hub_table()
    # Another replica of the same hub: its own data_dir, the same key and database.
    other = hub_config({**table, "data_dir": str(tmp_path / "replica-b")}, net.root)
    replica = HubApp(other, init=True)
    await replica.start()
    assert replica.store.store_id == net.hub.store.store_id
    await replica.stop()
    # A replica whose key is not the one the database is signed with does not serve.
    foreign_key = tmp_path / "foreign.key"
    ensure_signing_key(foreign_key)
    foreign = hub_config({**table, "data_dir": str(tmp_path / "replica-c"),
                          "directory_key": str(foreign_key)}, net.root)
    with pytest.raises(DataDirError) as refused:
        await HubApp(foreign, init=True).start()
    assert refused.value.reason is StateReason.STATE_INCONSISTENT
    assert "directory_key" in str(refused.value)


async def test_a_first_start_on_an_empty_database_needs_init(
        pg_database: PgDatabase, tmp_path: Path) -> None:
    params = PgParams.from_sources(pg_database.dsn, pg_database.password_file)
    key = tmp_path / "directory-signing.key"
    with pytest.raises(DataDirError) as refused:
        await prepare_database(params, False, key)
    assert refused.value.reason is StateReason.STATE_MISSING and "--init" in str(refused.value)
    assert not key.exists()  # nothing made, nothing written
    assert await prepare_database(params, True, key) is True  # set up, with a new key
    assert await prepare_database(params, False, key) is False  # found: a later start


async def test_two_replicas_initializing_one_empty_database_at_once(
        pg_server: PostgresServer, pg_database: PgDatabase, tmp_path: Path) -> None:
    """Both replicas of a new tier started with ``--init`` at the same instant (Ansible
    starts them in parallel): the schema is made once (migrations under an advisory lock),
    both serve the same hub; a replica given another signing key is refused, whichever
    starts first."""
    layout = NetworkLayout(tmp_path / "net", hub_overrides={"store": pg_database.store_table()})
    tables = [{**layout.hub_table(), "data_dir": str(tmp_path / f"replica-{i}"),
               "store": {**pg_database.store_table(), "replica_id": f"r{i}"}} for i in range(2)]
    replicas = [HubApp(hub_config(t, layout.root), init=True) for t in tables]
    try:
        await asyncio.gather(*(r.start() for r in replicas))
        assert replicas[0].store.store_id == replicas[1].store.store_id
        params = PgParams.from_sources(pg_database.dsn, pg_database.password_file)
        assert await prepare_database(params, False, layout.directory_key) is False
    finally:
        await asyncio.gather(*(r.stop() for r in replicas))
    # Two replicas with keys of their own, at once on another empty database: one wins.
    with pg_server.database(tmp_path) as other:
        params = PgParams.from_sources(other.dsn, other.password_file)
        keys = [tmp_path / f"key-{i}" for i in range(2)]
        outcomes = await asyncio.gather(*(prepare_database(params, True, k) for k in keys),
                                        return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, DataDirError)]
        assert len(refused) == 1 and refused[0].reason is StateReason.STATE_INCONSISTENT
        assert sum(o is True for o in outcomes) == 1


async def _health(net: InProcessNetwork) -> int:
    key, cert = net.node_certs[A]
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10)
    return int(reply.status)


async def _until(condition, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_hub_that_loses_its_database_reports_not_serving_acks_nothing_and_recovers(
        start_network: NetworkStarter, tmp_path: Path) -> None:
    serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                            health_pb2.HealthCheckResponse.NOT_SERVING)
    with PostgresServer() as server, server.database(tmp_path) as database:
        net: InProcessNetwork = await start_network(
            A, B, hub_overrides={"store": database.store_table(), "metrics_listen": "127.0.0.1:0"})
        assert await _health(net) == serving
        probes = net.hub.metrics.port  # type: ignore[union-attr]
        assert (await http_get(probes, "/readyz"))[0] == 200
        # The database's size on the server (read at start, then every 60 s).
        scrape = (await http_get(probes, "/metrics"))[1].decode()
        size = re.search(r'^crossroads_store_database_size_bytes\{database="postgresql"\} (\S+)$',
                         scrape, re.M)
        assert size is not None and float(size.group(1)) > 1_000_000, scrape[-2000:]
        await asyncio.to_thread(server.kill)  # the database is gone at once
        await _until(lambda: _is(net, not_serving))
        status, body = await http_get(probes, "/readyz")  # the same verdict, over HTTP
        assert status == 503 and json.loads(body)["checks"]["store_writable"] is False
        assert net.hub.health is not None and net.hub.health.outages == 1
        _, seqs = await local_call(net.local_api(A), "submit", numbered_envelopes(5))
        await asyncio.sleep(2)  # the uplink tries meanwhile: nothing may be acknowledged
        pending = await local_call(net.local_api(A), "outcomes", seqs, wait_ms=0)
        assert [o.reason for o in pending] == ["PENDING"] * 5  # still in A's outbox
        await asyncio.to_thread(server.restart)
        await _until(lambda: _is(net, serving))
        assert (await http_get(probes, "/readyz"))[0] == 200
        decided = await local_call(net.local_api(A), "outcomes", seqs, wait_ms=30_000)
        assert [o.reason for o in decided] == ["ACCEPTED"] * 5
        at_b = await fetch_all(net.local_api(B), 5)
        assert [e.sender_ticket for e in at_b] == [str(i) for i in range(5)]
        await net.stop()  # before the server goes


async def _is(net: InProcessNetwork, status: int) -> bool:
    return await _health(net) == status


async def test_a_hub_whose_database_is_gone_still_stops(
        start_network: NetworkStarter, tmp_path: Path) -> None:
    with PostgresServer() as server:  # the whole server goes with the test: nothing to drop
        server.sql("CREATE DATABASE gone")
        password = tmp_path / "password"
        password.write_text(server.password)
        password.chmod(0o600)
        database = PgDatabase("gone", server.dsn("gone"), password)
        net: InProcessNetwork = await start_network(
            A, hub_overrides={"store": database.store_table()})
        await asyncio.to_thread(server.kill)
        await asyncio.wait_for(net.stop(), 60)  # the failed final checkpoint is logged
        assert not net.hub.store.is_open
