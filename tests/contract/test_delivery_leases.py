"""Delivery leases (node/store/protocols.py ``DeliveryLeases``): which hub replica delivers to
which destination, and the fence on ``commit_delivery``.

On every backend: a lease round names a token for a queued destination, and a delivery
committed with it lands. On PostgreSQL, with two stores on one database as two replicas
("a" and "b"): fair shares, affinity (a node's lease goes to the replica it registered at),
takeover on expiry (the database's clock), the fence (an old owner's commit writes
nothing), release on drain, the doorbell.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from node.core.audit import accepted, delivered
from node.store.postgres import PostgresHubStore, leases
from node.store.protocols import HubStorage
from node.store.records import LeaseLost
from node.wire.delivery import pack
from tests.contract.backends import HUB_BACKENDS, HubBackend, pg_params
from tests.contract.crash_writer import SENDER

PG = HUB_BACKENDS["postgresql"]
DESTS = ("0202239951", "0403019261", "0428759497", "0809030410")
#: A short lease for the expiry tests, and how often the survivor runs its rounds.
TTL_S, PERIOD_S = 1.0, 0.1


async def _queue(store: HubStorage, first: int, dests: tuple[str, ...],
                 origin: str = "lease-origin") -> int:
    """One envelope per destination in one batch; the batch's last sequence."""
    rows, records = [], []
    for i, dest in enumerate(dests):
        ticket = f"t{first + i}"
        rows.append((dest, 1, pack([b"to " + dest.encode()], [ticket])))
        records.append(accepted("1", ticket, SENDER, dest, "svc", "CITIZEN", "85073003328"))
    last = first + len(dests) - 1
    await store.commit_batch(SENDER, origin, first, last, rows, records, b"ack")
    return last


async def test_a_delivery_committed_with_the_lease_token_lands(
        backend: HubBackend, tmp_path: Path) -> None:
    store = backend.hub(tmp_path, None)
    await store.open()
    try:
        await _queue(store, 1, DESTS[:2])
        held = await store.renew_leases(5.0)
        token = held.token(DESTS[0])
        assert token is not None and held.surplus == 0
        queued = await store.read_queue(DESTS[0], 0, 10, 1 << 20)
        assert queued is not None
        await store.commit_delivery(DESTS[0], queued.last_seq, queued.count,
                                    [delivered("2", "t1", DESTS[0])], token)
        assert await store.read_queue(DESTS[0], 0, 10, 1 << 20) is None
        await store.release_leases({DESTS[0]: token}, leaving=True)
    finally:
        await store.close()
    assert backend.verify(tmp_path).records == 3


@asynccontextmanager
async def _replicas(path: Path) -> AsyncIterator[tuple[PostgresHubStore, PostgresHubStore]]:
    a = PostgresHubStore(pg_params(path), replica_id="a")
    b = PostgresHubStore(pg_params(path), replica_id="b")
    await a.open()
    try:
        await b.open()
        try:
            yield a, b
        finally:
            await b.close()
    finally:
        await a.close()


async def test_two_live_replicas_share_the_destinations_fairly(pg_dir: Path) -> None:
    async with _replicas(pg_dir) as (a, b):
        await _queue(a, 1, DESTS)
        alone = await a.renew_leases(5.0)
        assert sorted(alone.tokens) == sorted(DESTS) and alone.surplus == 0
        joined = await b.renew_leases(5.0)  # two live now: a share of 2, nothing free yet
        assert joined.tokens == {}
        over = await a.renew_leases(5.0)
        assert over.surplus == 2
        handed = dict(sorted(over.tokens.items())[:2])
        await a.release_leases(handed)
        taken = await b.renew_leases(5.0)
        assert sorted(taken.tokens) == sorted(handed)
        # A change of owner is a new token: the one a held is no fence for b's lease.
        assert all(taken.tokens[d] == handed[d] + 1 for d in handed)
        kept = await a.renew_leases(5.0)
        assert set(kept.tokens) == set(DESTS) - set(handed) and kept.surplus == 0
        assert (await b.renew_leases(5.0)).surplus == 0


async def test_a_dead_replicas_leases_are_taken_over_on_expiry_and_fenced(pg_dir: Path) -> None:
    async with _replicas(pg_dir) as (a, b):
        await _queue(a, 1, DESTS[:2])
        await _queue(a, 3, DESTS[:2])
        old = (await a.renew_leases(TTL_S)).tokens
        assert sorted(old) == sorted(DESTS[:2])
        died = time.monotonic()  # "a" renews no more
        while True:  # b's rounds, as its lease task runs them
            held = await b.renew_leases(TTL_S)
            if len(held.tokens) == 2:
                break
            assert time.monotonic() - died < TTL_S + 2 * PERIOD_S + 1.0, "no takeover"
            await asyncio.sleep(PERIOD_S)
        took = time.monotonic() - died
        assert held.queued == {DESTS[0]: 2, DESTS[1]: 2}  # stored through a, counted at b
        assert TTL_S - 0.3 <= took <= TTL_S + 2 * PERIOD_S + 0.5  # on expiry, not before
        dest = DESTS[0]
        queued = await a.read_queue(dest, 0, 10, 1 << 20)
        assert queued is not None and queued.count == 2
        # The old owner, back from its pause, acknowledges a batch: fenced, nothing written.
        with pytest.raises(LeaseLost):
            await a.commit_delivery(dest, queued.last_seq, queued.count,
                                    [delivered("9", "t1", dest)], old[dest])
        assert await b.read_queue(dest, 0, 10, 1 << 20) == queued
        assert not sum(a.failures.counts.values())  # a fence is no store failure
        # The new owner's commit lands.
        await b.commit_delivery(dest, queued.last_seq, queued.count,
                                [delivered("9", "t1", dest), delivered("9", "t3", dest)],
                                held.tokens[dest])
        assert await b.read_queue(dest, 0, 10, 1 << 20) is None
        # The old owner's next round no longer names what it lost, and counts b's delivery.
        after = await a.renew_leases(TTL_S)
        assert after.tokens == {} and after.queued == {DESTS[0]: 0, DESTS[1]: 2}
    assert PG.verify(pg_dir).records == 4 + 2  # queued, then delivered once


async def test_a_lease_that_ran_out_untaken_is_renewed_with_its_token(pg_dir: Path) -> None:
    async with _replicas(pg_dir) as (a, _b):
        await _queue(a, 1, DESTS[:1])
        first = await a.renew_leases(0.2)
        await asyncio.sleep(0.3)  # expired, nobody took it: nobody delivered meanwhile
        again = await a.renew_leases(5.0)
        assert again.tokens == first.tokens


async def test_a_draining_replica_hands_its_leases_over_at_once(pg_dir: Path) -> None:
    async with _replicas(pg_dir) as (a, b):
        await _queue(a, 1, DESTS)
        held = await a.renew_leases(60.0)  # long: only the release can free them
        assert (await b.renew_leases(60.0)).tokens == {}
        await a.release_leases(held.tokens, leaving=True)
        taken = await b.renew_leases(60.0)  # a is draining: b's share is everything
        assert sorted(taken.tokens) == sorted(DESTS) and taken.surplus == 0


async def test_a_replica_delivers_to_the_nodes_registered_at_it_while_it_lives(
        pg_dir: Path) -> None:
    async with _replicas(pg_dir) as (a, b):
        await _queue(a, 1, DESTS)
        for dest in DESTS:  # their nodes' uplinks chose b (Hub.Register), not yet live
            await b.set_endpoint(dest, f"{dest}.example:7000")
        alone = await a.renew_leases(5.0)  # b is no live replica: a's share is everything
        assert sorted(alone.tokens) == sorted(DESTS) and alone.movable == set(DESTS)
        assert (await b.renew_leases(5.0)).tokens == {}  # live now; a holds them
        told = await a.renew_leases(5.0)
        assert told.foreign == set(DESTS) and told.movable == set() and told.surplus == 0
        await a.release_leases(told.tokens)
        # Below its fair share (2), a still takes none of b's nodes while b is live ...
        assert (await a.renew_leases(5.0)).tokens == {}
        # ... and b takes every one of them, beyond its fair share.
        taken = await b.renew_leases(5.0)
        assert sorted(taken.tokens) == sorted(DESTS) and taken.foreign == set()
        assert taken.surplus == 0
        # b drains: its nodes are nobody's now, a's share is everything again.
        await b.release_leases(taken.tokens, leaving=True)
        again = await a.renew_leases(5.0)
        assert sorted(again.tokens) == sorted(DESTS) and again.movable == set(DESTS)


class _Doorbell:
    def __init__(self) -> None:
        self.queued_for: list[str] = []
        self.missed_count = self.freed = 0
        self.rang = asyncio.Event()

    def queued(self, dest: str) -> None:
        self.queued_for.append(dest)
        self.rang.set()

    def missed(self) -> None:
        self.missed_count += 1
        self.rang.set()

    def leases_freed(self) -> None:
        self.freed += 1
        self.rang.set()


async def _rung(bell: _Doorbell) -> None:
    await asyncio.wait_for(bell.rang.wait(), 5.0)
    bell.rang.clear()


async def test_a_batch_stored_at_one_replica_rings_the_others_doorbell(pg_dir: Path) -> None:
    async with _replicas(pg_dir) as (a, b):
        bell = _Doorbell()
        listening = asyncio.create_task(b.listen(bell))
        try:
            await _rung(bell)  # connected: "look at everything", and take free leases
            assert (bell.missed_count, bell.freed, bell.queued_for) == (1, 1, [])
            await _queue(a, 1, DESTS[:3])
            await _rung(bell)
            assert sorted(bell.queued_for) == sorted(DESTS[:3])
            await a.release_leases({}, leaving=True)
            await _rung(bell)
            assert bell.freed == 2
            # Names that would not fit in a notification ring "look at everything".
            many = tuple(f"{n:010d}" for n in range(1000, 1700))
            await _queue(a, 4, many)
            await _rung(bell)
            assert bell.missed_count == 2 and len(bell.queued_for) == 3
            # The listening connection dies: it comes back, and says what it may have missed.
            params = pg_params(pg_dir)
            admin = await asyncpg.connect(params.dsn, password=params.password)
            try:
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = $1",
                    leases.LISTENER_NAME)
            finally:
                await admin.close()
            assert killed == 1
            await _rung(bell)
            assert bell.missed_count == 3
        finally:
            listening.cancel()
            with pytest.raises(asyncio.CancelledError):
                await listening
