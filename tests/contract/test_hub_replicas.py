"""The PostgreSQL hub store with several processes on one database (what the SQLite store
never faces): idempotency and the audit chain across stores, failures that store nothing, and
where the password comes from.

Each "replica" here is a :class:`PostgresHubStore` of its own (its own pool) on the test's
database; the crash test of the contract suite (test_hub_contract.py) covers another
process.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import asyncpg
import pytest

from node.core.audit import accepted, delivered, public_key_id
from node.store.failures import Unavailable
from node.store.postgres import PgParams, PostgresHubStore
from node.store.postgres import audit as pg_audit
from node.wire.delivery import pack
from node.wire.signed import ensure_signing_key
from tests.conftest import opened
from tests.contract.backends import HUB_BACKENDS, pg_do, pg_params, run_sync
from tests.contract.crash_writer import DEST, ORIGIN, SENDER

PG = HUB_BACKENDS["postgresql"]


def _batch(first: int, n: int, tag: bytes) -> tuple[list[tuple[str, int, bytes]], list]:  # type: ignore[type-arg]
    tickets = [f"{tag.decode()}{first + i}" for i in range(n)]
    records = [accepted("1", t, SENDER, DEST, "svc", "CITIZEN", "85073003328") for t in tickets]
    return [(DEST, n, pack([tag] * n, tickets))], records


async def test_the_same_batch_sent_to_two_replicas_is_stored_once(pg_dir: Path) -> None:
    async with opened(PG.hub(pg_dir, None)) as a, opened(PG.hub(pg_dir, None)) as b:
        results = await asyncio.gather(
            *(store.commit_batch(SENDER, ORIGIN, 1, 10, *_batch(1, 10, tag), b"ack " + tag)
              for store, tag in ((a, b"a"), (b, b"b"))), return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["NoneType", "ResendRaced"]
        winner = b"a" if results[0] is None else b"b"
        for store in (a, b):  # either replica gives the resend the original outcome
            assert await store.recent_acks(SENDER, ORIGIN, 1) == [(1, b"ack " + winner)]
            assert await store.origin_high(SENDER, ORIGIN) == 10
        queued = await b.read_queue(DEST, 0, 100, 1 << 20)
        assert queued is not None and queued.count == 10
    report = PG.verify(pg_dir)
    assert report.problem is None and report.records == 10


async def test_replicas_appending_at_once_keep_one_verifiable_chain(pg_dir: Path) -> None:
    signer = ensure_signing_key(pg_dir / "hub.key")
    stores = [PG.hub(pg_dir, signer) for _ in range(3)]
    for store in stores:
        await store.open()
    try:
        async def work(i: int, store: PostgresHubStore) -> None:
            for n in range(10):
                first = 1 + n * 5
                rows, records = _batch(first, 5, b"r%d-" % i)
                await store.commit_batch(SENDER, f"origin-{i}", first, first + 4, rows, records,
                                         b"ack")
                await store.append_audit([delivered("2", f"d{i}-{n}", DEST)])
            await store.checkpoint()

        await asyncio.gather(*(work(i, s) for i, s in enumerate(stores)))  # type: ignore[arg-type]
        latest = await stores[0].latest_checkpoint()
    finally:
        for store in stores:
            await store.close()
    report = PG.verify(pg_dir)
    assert report.problem is None and report.records == 3 * 10 * 6
    assert report.log is not None and report.log.checkpoints >= 1
    assert latest is not None and latest.seq == 3 * 10 * 6
    # The checkpoints' signatures verify with the hub's key, whichever replica signed.
    keys = {public_key_id(signer.public_key()): signer.public_key()}
    signed = run_sync(pg_do(pg_dir, lambda conn: pg_audit.verify(conn, keys)))
    assert signed.problem is None and signed.records == report.records


async def test_a_commit_whose_connection_dies_stores_nothing(pg_dir: Path) -> None:
    async with opened(PG.hub(pg_dir, None)) as store:
        await store.commit_batch(SENDER, ORIGIN, 1, 5, *_batch(1, 5, b"x"), b"ack 1")
        params = pg_params(pg_dir)
        admin = await asyncpg.connect(params.dsn, password=params.password)
        try:
            with PG.slow_commits(pg_dir, SENDER, 2.0):
                commit = asyncio.create_task(
                    store.commit_batch(SENDER, ORIGIN, 6, 10, *_batch(6, 5, b"y"), b"ack 2"))
                await asyncio.sleep(0.5)  # inside its transaction, before the commit
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'COPY \"audit\"%'")
                assert killed == 1
                with pytest.raises(Unavailable, match="nothing stored"):
                    await commit
        finally:
            await admin.close()
        assert sum(store.failures.counts.values()) == 1
        assert await store.origin_high(SENDER, ORIGIN) == 5
        # The pool replaces the dead connection: the resend is stored, once.
        await store.commit_batch(SENDER, ORIGIN, 6, 10, *_batch(6, 5, b"y"), b"ack 2")
        assert await store.origin_high(SENDER, ORIGIN) == 10
        queued = await store.read_queue(DEST, 0, 100, 1 << 20)
        assert queued is not None and queued.count == 10
    report = PG.verify(pg_dir)
    assert report.problem is None and report.records == 10


def test_the_password_comes_from_a_file_or_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("s3cret\nignored\n")
    from_file = PgParams.from_sources("postgresql://hub@db1,db2/hub", password_file=tmp_path / "pw")
    assert from_file.password == "s3cret" and "s3cret" not in repr(from_file)
    monkeypatch.setenv("HUB_PG_PASSWORD", "env-secret")
    assert PgParams.from_sources("host=db", password_env="HUB_PG_PASSWORD").password == "env-secret"
    monkeypatch.delenv("HUB_PG_PASSWORD")
    with pytest.raises(RuntimeError, match="HUB_PG_PASSWORD is not set"):
        PgParams.from_sources("host=db", password_env="HUB_PG_PASSWORD")


async def test_a_store_without_prepared_statements_works_behind_a_pooler(pg_dir: Path) -> None:
    params = dataclasses.replace(pg_params(pg_dir), statement_cache_size=0)
    async with opened(PostgresHubStore(params)) as store:
        await store.commit_batch(SENDER, ORIGIN, 1, 5, *_batch(1, 5, b"p"), b"ack")
        assert await store.recent_acks(SENDER, ORIGIN, 1) == [(1, b"ack")]
        queued = await store.read_queue(DEST, 0, 100, 1 << 20)
        assert queued is not None and queued.count == 5
