"""The hub store's contract (node/store/protocols.py): every backend passes these.

Ordering per destination, idempotent resends, a batch commit that survives a kill -9 whole
or not at all, one audit chain across restarts, audit retention, forward-only migrations.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from node.core.audit import accepted, delivered, verify_export
from node.store.protocols import HubStorage
from node.store.records import ResendRaced
from node.wire.delivery import pack
from node.wire.gen.crossroads.v1 import node_pb2
from node.wire.signed import ensure_signing_key
from tests.conftest import opened
from tests.contract.backends import OLD_DEST, OLD_ENVELOPE, HubBackend
from tests.contract.crash_writer import BATCH, DEST, ORIGIN, SENDER, batch

ROOT = Path(__file__).resolve().parents[2]
R1, R2 = "0428759497", "0202239951"


def _envelopes(packed: tuple[bytes, ...]) -> list[bytes]:
    out: list[bytes] = []
    for blob in packed:
        out.extend(node_pb2.DeliveryBatch.FromString(blob).envelopes)
    return out


async def _commit(store: HubStorage, first: int, rows: list[tuple[str, list[bytes]]]) -> int:
    """One batch from SENDER: a queue row per (destination, envelopes); returns its last seq."""
    queue_rows, records, last = [], [], first - 1
    for dest, envelopes in rows:
        tickets = [f"t{first}-{dest}-{i}" for i in range(len(envelopes))]
        queue_rows.append((dest, len(envelopes), pack(envelopes, tickets)))
        records += [accepted("1", t, SENDER, dest, "svc", "CITIZEN", "85073003328") for t in tickets]
        last += len(envelopes)
    await store.commit_batch(SENDER, ORIGIN, first, last, queue_rows, records, b"ack %d" % first)
    return last


async def test_each_destination_reads_its_envelopes_in_commit_order(
        backend: HubBackend, tmp_path: Path) -> None:
    async with opened(backend.hub(tmp_path, None)) as store:
        last = await _commit(store, 1, [(R1, [b"a1", b"a2"]), (R2, [b"b1"])])
        last = await _commit(store, last + 1, [(R2, [b"b2"]), (R1, [b"a3"])])
        await _commit(store, last + 1, [(R1, [b"a4"])])
        first = await store.read_queue(R1, 0, 100, 1 << 20)
        assert first is not None and first.count == 4
        assert _envelopes(first.packed) == [b"a1", b"a2", b"a3", b"a4"]
        batch_r2 = await store.read_queue(R2, 0, 100, 1 << 20)
        assert batch_r2 is not None and _envelopes(batch_r2.packed) == [b"b1", b"b2"]
        # A delivery acknowledged up to a row drops exactly the rows up to it.
        head = await store.read_queue(R1, 0, 2, 1 << 20)
        assert head is not None and head.count == 2
        await store.commit_delivery(R1, head.last_seq, head.count,
                                    [delivered("2", "t", R1)])
        rest = await store.read_queue(R1, 0, 100, 1 << 20)
        assert rest is not None and _envelopes(rest.packed) == [b"a3", b"a4"]
        assert await store.read_queue(R1, rest.last_seq, 100, 1 << 20) is None


async def test_a_resend_gets_the_original_outcome_and_stores_nothing_twice(
        backend: HubBackend, tmp_path: Path) -> None:
    async with opened(backend.hub(tmp_path, None)) as store:
        await store.commit_batch(SENDER, ORIGIN, 1, 3, [(R1, 3, pack([b"x"] * 3, ["a", "b", "c"]))],
                                 [], b"first ack")
        await store.commit_batch(SENDER, ORIGIN, 4, 5, [], [], b"second ack")
        assert await store.origin_high(SENDER, ORIGIN) == 5
        assert await store.origin_high(SENDER, "another origin") == 0
        assert await store.recent_acks(SENDER, ORIGIN, 2) == [(1, b"first ack"), (4, b"second ack")]
        assert await store.recent_acks(SENDER, ORIGIN, 4) == [(4, b"second ack")]
        with pytest.raises(ResendRaced):
            await store.commit_batch(SENDER, ORIGIN, 1, 3, [(R1, 3, pack([b"y"] * 3, ["d", "e", "f"]))],
                                     [], b"other ack")
        queued = await store.read_queue(R1, 0, 100, 1 << 20)
        assert queued is not None and queued.count == 3
        assert await store.recent_acks(SENDER, ORIGIN, 1) == [(1, b"first ack"), (4, b"second ack")]
    async with opened(backend.hub(tmp_path, None)) as store:  # and after a restart
        assert await store.origin_high(SENDER, ORIGIN) == 5
        assert await store.recent_acks(SENDER, ORIGIN, 1) == [(1, b"first ack"), (4, b"second ack")]


async def test_a_batch_commit_killed_midway_is_all_or_nothing(
        backend: HubBackend, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.contract.crash_writer", backend.name, str(tmp_path),
        cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    acknowledged = 0
    try:
        while acknowledged < 30:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "the writer ended before it was killed"
            acknowledged = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # in the middle of its next commits
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    async with opened(backend.hub(tmp_path, None)) as store:
        high = await store.origin_high(SENDER, ORIGIN)
        assert high % BATCH == 0, "a batch's idempotency record is there whole or not at all"
        assert high >= acknowledged * BATCH, "every acknowledged batch is there"
        queued = await store.read_queue(DEST, 0, 1_000_000, 1 << 40)
        assert queued is not None and queued.count == high
        expected = [env for n in range(1, high // BATCH + 1)
                    for env in _envelopes(tuple(row[2] for row in batch(n)[2]))]
        assert _envelopes(queued.packed) == expected
        assert [a for a, _ in await store.recent_acks(SENDER, ORIGIN, high)] == [high - BATCH + 1]
        await store.commit_batch(SENDER, ORIGIN, high + 1, high + 1, [], [], b"after")
    report = backend.verify(tmp_path)
    assert report.problem is None and report.records == high, "one audit record per envelope"


async def test_the_audit_chain_continues_across_restarts(backend: HubBackend, tmp_path: Path) -> None:
    for round_ in range(3):
        async with opened(backend.hub(tmp_path, None)) as store:
            await _commit(store, round_ * 10 + 1, [(R1, [b"e"] * 2)])
            await store.append_audit([delivered(str(round_), f"t{round_}", R1)])
            assert await store.checkpoint() is None  # no signer configured
    report = backend.verify(tmp_path)
    assert report.problem is None and report.records == 9


async def test_retention_redacts_old_records_and_keeps_the_chain(
        backend: HubBackend, tmp_path: Path) -> None:
    async with opened(backend.hub(tmp_path, ensure_signing_key(tmp_path / "hub.key"))) as store:
        await _commit(store, 1, [(R1, [b"old"] * 3)])
        report = await store.purge({"*": 2})  # records at_us "1": older than the cut-off
        assert report.redacted == 3
        await _commit(store, 4, [(R1, [b"new"])])
        assert [c.hub_ticket for c in await store.who_consulted("85073003328")] == ["t4-0428759497-0"]
    result = backend.verify(tmp_path)
    # The redacted prefix is cut at its signed checkpoint: the chain starts from record 3's
    # checkpoint with the PURGED record (4) and goes on with the new one (5).
    assert result.problem is None and result.log is not None
    assert (result.log.anchor, result.log.first_seq, result.log.last_seq) == (3, 4, 5)


async def test_an_older_schema_is_upgraded_and_a_newer_one_refused(
        backend: HubBackend, tmp_path: Path) -> None:
    backend.old_hub(tmp_path)
    async with opened(backend.hub(tmp_path, None)) as store:
        queued = await store.read_queue(OLD_DEST, 0, 10, 1 << 20)
        assert queued is not None and _envelopes(queued.packed) == [OLD_ENVELOPE]
        last = await _commit(store, 1, [(OLD_DEST, [b"after the upgrade"])])
        assert last == 1
        queued = await store.read_queue(OLD_DEST, 0, 10, 1 << 20)
        assert queued is not None and _envelopes(queued.packed) == [OLD_ENVELOPE, b"after the upgrade"]
    backend.newer_hub(tmp_path)
    store = backend.hub(tmp_path, None)
    with pytest.raises(RuntimeError, match="newer than this software"):
        await store.open()
    assert not store.is_open


async def test_a_reader_paging_the_queue_never_skips_a_slow_commit(
        backend: HubBackend, tmp_path: Path) -> None:
    """Two writers for one destination, the first holding its transaction open after taking
    its positions: a reader paging ``after_seq`` meanwhile still reads every row (positions
    are handed out in commit order, HUB-TIER trap 1)."""
    slow, fast = "0403019261", "0202239951"
    seen: list[bytes] = []

    async def commit(store: HubStorage, sender: str, n: int) -> None:
        env, ticket = b"%s %d" % (sender.encode(), n), f"{sender}-{n}"
        # Only the slow sender's batches carry audit records (the trigger's hook): the fast
        # one's take no chain lock that would order them anyway.
        records = [accepted("1", ticket, sender, R1, "svc", "CITIZEN", "8")] if sender == slow else []
        await store.commit_batch(sender, "o", n, n, [(R1, 1, pack([env], [ticket]))], records,
                                 b"ack")

    async def read(store: HubStorage, until: float) -> None:
        after = 0
        while asyncio.get_running_loop().time() < until:
            got = await store.read_queue(R1, after, 100, 1 << 20)
            if got is not None:
                seen.extend(_envelopes(got.packed))
                after = got.last_seq
            await asyncio.sleep(0.005)

    async with opened(backend.hub(tmp_path, None)) as store:
        await commit(store, fast, 1)
        with backend.slow_commits(tmp_path, slow, 1.0):
            until = asyncio.get_running_loop().time() + 2.5
            reader = asyncio.create_task(read(store, until))
            await asyncio.sleep(0.1)
            slow_commit = asyncio.create_task(commit(store, slow, 1))
            await asyncio.sleep(0.2)  # the slow one has its positions, not its commit
            await commit(store, fast, 2)
            await slow_commit
            await reader
    assert sorted(seen) == sorted([b"%s 1" % slow.encode(), b"%s 1" % fast.encode(),
                                   b"%s 2" % fast.encode()]), "a row skipped or read twice"


async def test_who_consulted_and_the_signed_extract_join_the_deliveries(
        backend: HubBackend, tmp_path: Path) -> None:
    signer = ensure_signing_key(tmp_path / "hub.key")
    async with opened(backend.hub(tmp_path, signer)) as store:
        await _commit(store, 1, [(R1, [b"a"]), (R2, [b"b"])])
        await store.commit_delivery(R1, 1, 1, [delivered("5", f"t1-{R1}-0", R1)])
        await store.append_audit([accepted("6", "", SENDER, "", "svc", "CITIZEN", "other")])
        found = await store.who_consulted("85073003328")
        assert [(c.hub_ticket, c.receivers) for c in found] == [
            (f"t1-{R1}-0", (R1,)), (f"t1-{R2}-0", (R2,))]
        assert [[(d.receiver, d.at_us) for d in c.deliveries] for c in found] == [[(R1, 5)], []]
        assert [c.hub_ticket for c in await store.who_consulted("85073003328", limit=1)] == [
            f"t1-{R2}-0"]
        assert await store.who_consulted("85073003328", since_us=2) == []
        extract = await store.export_subject("85073003328")
        latest = await store.latest_checkpoint()
    body = verify_export(extract, signer.public_key())
    assert [r["seq"] for r in body["records"]] == [1, 2]
    assert [r["fields"]["receiver"] for r in body["deliveries"]] == [R1]
    assert body["head"]["seq"] == 4 and latest is not None and latest.seq == 4
    assert body["checkpoint"]["seq"] == 4
