"""Delivery across hub replicas: two Deliverers, each on a PostgresHubStore of its own
(replicas "a" and "b" on one real PostgreSQL database), delivering to real nodes (mTLS, their
SQLite stores) started by the in-process harness.

Rows are committed through replica a's store only: the owner of each destination (the
replica its node registered at, a or b) is woken by the doorbell, delivers in order,
exactly once. Then replica b dies (its tasks cancelled, nothing released) and a takes its
destinations over within the stated bound; order holds at the node across the takeover.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import socket
import time
from collections.abc import AsyncIterator

import asyncpg

from node.app import HubApp
from node.client import make_envelope
from node.core.audit import accepted
from node.core.clock import SystemClock
from node.hub.delivery import TAKEOVER_BOUND_S, Deliverer
from node.store.audit_queries import AuditReport
from node.store.postgres import PgParams, PostgresHubStore
from node.store.postgres import audit as pg_audit
from node.tasks import cancel_and_wait
from node.testing import DEMO_SERVICE, InProcessNetwork
from node.testing_postgres import PgDatabase
from node.wire.delivery import pack
from node.wire.envelopes import stamper
from tests.conftest import A, B, C, NetworkStarter, fetch_all

RECEIVERS = (B, C)
_tickets = itertools.count(1)


class _Replica:
    """A hub replica's delivery side: its store and its Deliverer."""

    def __init__(self, net: InProcessNetwork, db: PgDatabase, name: str) -> None:
        params = PgParams.from_sources(db.dsn, password_file=db.password_file, max_size=4)
        self.store = PostgresHubStore(params, replica_id=name)
        cfg = net.hub.config
        self.deliverer = Deliverer(self.store, net.hub.tls, cfg.network, cfg.limits, {}, {},
                                   SystemClock(), keepalive=cfg.keepalive, timeouts=cfg.timeouts)

    async def start(self) -> None:
        await self.store.open()
        self.deliverer.start([])

    def holds(self, dest: str) -> bool:
        return self.deliverer.leases.token(dest) is not None

    async def pause(self) -> None:
        """Its lease rounds stop, yet its workers go on believing in their leases (a
        process frozen past its lease, or a clock gone wrong): only the fence stops them."""
        d = self.deliverer
        await cancel_and_wait(d._lease_task)
        d._leases_until = math.inf

    async def kill(self) -> None:
        """As kill -9 would leave it: its tasks end, its leases stay in the table."""
        d = self.deliverer
        d._stopping = True
        await cancel_and_wait(d._lease_task, d._listen_task,
                              *(dest.task for dest in d._destinations.values()))
        for dest in d._destinations.values():
            await d._close(dest)
        await self.store.close()


@contextlib.asynccontextmanager
async def _tier(net: InProcessNetwork, db: PgDatabase) -> AsyncIterator[tuple[_Replica, _Replica]]:
    a, b = _Replica(net, db, "a"), _Replica(net, db, "b")
    await a.start()
    try:
        await b.start()
        try:
            # As Hub.Register would: B's node chose replica a, C's replica b.
            for dest, replica in zip(RECEIVERS, (a, b), strict=True):
                endpoint = net.hub.deliverer.endpoints[dest]  # type: ignore[union-attr]
                await replica.store.set_endpoint(dest, endpoint)
            yield a, b
        finally:
            if b.store.is_open:
                await b.deliverer.stop()
                await b.store.close()
    finally:
        await a.deliverer.stop()
        await a.store.close()


async def _verify(db: PgDatabase) -> AuditReport:
    """The audit chain in the database, verified."""
    conn = await asyncpg.connect(db.dsn, password=db.password_file.read_text().strip())
    try:
        return await pg_audit.verify(conn)
    finally:
        await conn.close()


async def _commit(store: PostgresHubStore, first: int, count: int) -> int:
    """``count`` envelopes from A to each receiver (sender tickets ``first``...), one batch."""
    stamp = stamper(time.time_ns() // 1000)
    rows, records = [], []
    for dest in RECEIVERS:
        tickets = [f"ticket-{next(_tickets):08d}" for _ in range(count)]
        envelopes = [stamp(make_envelope(DEMO_SERVICE, [dest], b"m", sender=A,
                                         sender_ticket=str(first + i)), t)
                     for i, t in enumerate(tickets)]
        rows.append((dest, count, pack(envelopes, tickets)))
        records += [accepted("1", t, A, dest, DEMO_SERVICE, "CITIZEN", "") for t in tickets]
    last = first + count - 1
    await store.commit_batch(A, "tier-origin", first, last, rows, records, b"ack")
    return last


async def _until(condition: object, timeout: float) -> float:
    """Seconds until ``condition()`` held (failing after ``timeout``)."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, "timed out"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def _received_in_order(net: InProcessNetwork, first: int, last: int) -> None:
    """Each receiver's application fetches (and acknowledges) sender tickets ``first`` to
    ``last``, in order, once, and nothing else."""
    for dest in RECEIVERS:
        got = await fetch_all(net.local_api(dest), last - first + 1)
        assert [int(e.sender_ticket) for e in got] == list(range(first, last + 1)), dest
        assert await fetch_all(net.local_api(dest), 1, timeout=1.0) == []  # nothing twice


async def test_each_destination_has_one_owner_who_delivers_in_order_then_takes_over(
        pg_database: PgDatabase, start_network: NetworkStarter) -> None:
    net = await start_network(A, B, C)
    async with _tier(net, pg_database) as (a, b):
        # Both live: each delivers to the node registered at it; one owner per destination.
        await _until(lambda: a.holds(B) and b.holds(C), 10)
        assert not b.holds(B) and not a.holds(C)
        # Endpoints registered at one replica reach the other, for its deliveries and its
        # consultations.
        registered = {d: net.hub.deliverer.endpoints[d] for d in RECEIVERS}  # type: ignore[union-attr]
        await _until(lambda: all(b.deliverer.endpoints.get(d) == registered[d]
                                 for d in RECEIVERS), 3)
        last = 0
        for _ in range(5):  # stored through a, delivered by each destination's owner
            last = await _commit(a.store, last + 1, 10)
        await _received_in_order(net, 1, last)
        owned_by_b = next(d for d in RECEIVERS if b.holds(d))
        assert b.deliverer.status()[owned_by_b]["delivered"] == last
        assert owned_by_b not in a.deliverer.status()
        # What b delivered is off a's count too (the quota of a's intake reads it).
        await _until(lambda: a.deliverer.pending.get(owned_by_b) == 0, 3)

        # b dies mid-stream: batches go on arriving at a; a takes b's destination over.
        await b.kill()
        writer = asyncio.create_task(_keep_committing(a.store, last))
        took = await _until(lambda: a.holds(owned_by_b), TAKEOVER_BOUND_S + 2)
        assert took < TAKEOVER_BOUND_S, f"takeover after {took:.1f} s"
        print(f"replica b's destination taken over {took:.1f} s after its death")
        before, last = last, await writer
        await _received_in_order(net, before + 1, last)
    report = await _verify(pg_database)
    assert report.problem is None
    assert report.records == 2 * len(RECEIVERS) * last  # accepted, and delivered once each


async def _keep_committing(store: PostgresHubStore, last: int, batches: int = 20) -> int:
    for _ in range(batches):
        last = await _commit(store, last + 1, 5)
        await asyncio.sleep(0.2)
    return last


async def test_a_paused_owner_is_fenced_off_and_stops_at_its_first_late_commit(
        pg_database: PgDatabase, start_network: NetworkStarter) -> None:
    net = await start_network(A, B, C)
    async with _tier(net, pg_database) as (a, b):
        await _until(lambda: any(b.holds(d) for d in RECEIVERS)
                     and all(a.holds(d) != b.holds(d) for d in RECEIVERS), 10)
        owned_by_b = next(d for d in RECEIVERS if b.holds(d))
        last = await _commit(a.store, 1, 10)
        await _received_in_order(net, 1, last)
        await b.pause()
        writer = asyncio.create_task(_keep_committing(a.store, last, batches=30))
        await _until(lambda: a.holds(owned_by_b), TAKEOVER_BOUND_S + 2)
        # b goes on sending until its first commit after the takeover is refused.
        await _until(lambda: owned_by_b not in b.deliverer.status(), 10)
        before, last = last, await writer
        await _received_in_order(net, before + 1, last)
    report = await _verify(pg_database)
    assert report.problem is None
    # One DELIVERED record per envelope: the fenced commit wrote none.
    assert report.records == 2 * len(RECEIVERS) * last


async def _lease_owners(db: PgDatabase) -> dict[str, str]:
    conn = await asyncpg.connect(db.dsn, password=db.password_file.read_text().strip())
    try:
        return dict(await conn.fetch("SELECT dest, owner FROM delivery_leases"))
    finally:
        await conn.close()


async def test_a_hub_on_postgresql_delivers_under_leases_and_hands_them_over_when_it_stops(
        pg_database: PgDatabase, start_network: NetworkStarter) -> None:
    net = await start_network(A, B, C, hub_overrides={"store": pg_database.store_table()})
    hub = net.hub
    first = hub.store.replica_id  # type: ignore[attr-defined]
    assert first.startswith(f"{socket.gethostname()}:0-")  # listen :0: one of its own
    await _until(lambda: all(hub.deliverer.leases.token(d) is not None  # type: ignore[union-attr]
                             for d in (A, B, C)), 10)
    await net.hub.stop()  # the drain: every lease handed over, not left to expire
    assert await _lease_owners(pg_database) == {A: "", B: "", C: ""}
    net.hub_overrides["store"]["replica_id"] = "hub-2"
    net.hub = HubApp(net.hub_config(net.hub_address), init=False)
    started = time.monotonic()
    await net.hub.start()
    deliverer = net.hub.deliverer
    assert deliverer is not None and net.hub.store.replica_id == "hub-2"  # type: ignore[attr-defined]
    took = await _until(lambda: all(deliverer.leases.token(d) is not None for d in (A, B, C)),
                        TAKEOVER_BOUND_S)
    assert time.monotonic() - started < 3.0, f"taken after {took:.1f} s: on expiry, not at once"
    assert set((await _lease_owners(pg_database)).values()) == {"hub-2"}
