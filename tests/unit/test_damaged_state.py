"""Damaged state, piece by piece on real files: the data directory rules, hub continuity as
a node judges it, checkpoints pinned in ``audit verify``, a store damaged at run time."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from pathlib import Path

import pytest
import structlog

from node import cli
from node.app import NodeApp, hub_layout
from node.audit_tool import load_public_keys, verify_file
from node.config import AuditCheckpoints
from node.core.audit import Checkpoint, public_key_id, sign_checkpoint, verify_checkpoint_signature
from node.core.clock import SystemClock
from node.core.continuity import ContinuityReason, HubRegression, check_continuity
from node.hub.delivery import Deliverer
from node.rpc.tls import TlsMaterial
from node.store.data_dir import DataDirError, StateLayout, StateReason, prepare_data_dir
from node.store.hub_store import HubStore
from node.store.node_store import NodeStore
from node.testing import NetworkLayout, write_toml
from node.wire.delivery import pack
from node.wire.signed import ensure_signing_key, public_path
from tests.conftest import A

S, R = "0403019261", "0428759497"


def _layout(root: Path, key_inside: bool = True) -> StateLayout:
    key = (root / "directory-signing.key",) if key_inside else ()
    return StateLayout("hub", root, ("hub.sqlite", "directory.sqlite"), key)


def _db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def _refusal(layout: StateLayout, init: bool) -> DataDirError:
    with pytest.raises(DataDirError) as caught:
        prepare_data_dir(layout, init)
    return caught.value


# -- the data directory --------------------------------------------------------------------


def test_a_first_start_needs_init(tmp_path: Path) -> None:
    layout = _layout(tmp_path / "hub")
    found = _refusal(layout, init=False)
    assert found.reason is StateReason.STATE_MISSING
    assert str(tmp_path / "hub") in str(found) and "--init" in str(found)
    assert not (tmp_path / "hub").exists()  # nothing created without --init
    assert prepare_data_dir(layout, init=True) is True
    assert (tmp_path / "hub").is_dir()


def test_a_complete_state_starts_with_or_without_init(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    root.mkdir()
    _db(root / "hub.sqlite")
    _db(root / "directory.sqlite")
    (root / "directory-signing.key").write_text("k")
    assert prepare_data_dir(_layout(root), init=False) is False
    assert prepare_data_dir(_layout(root), init=True) is False


@pytest.mark.parametrize("present", [
    ("directory.sqlite", "directory-signing.key"),  # hub.sqlite deleted
    ("hub.sqlite-wal", "directory-signing.key"),  # a -wal without its database
    ("directory-signing.key",),  # a key without its databases
    ("hub.sqlite", "directory.sqlite"),  # databases without their key
])
def test_a_partial_state_refuses_even_with_init(tmp_path: Path, present: tuple[str, ...]) -> None:
    root = tmp_path / "hub"
    root.mkdir()
    for name in present:
        if name.endswith(".sqlite"):
            _db(root / name)
        else:
            (root / name).write_bytes(b"leftover")
    for init in (False, True):
        found = _refusal(_layout(root), init)
        assert found.reason is StateReason.STATE_INCONSISTENT, found
        assert str(root) in str(found)
    assert sorted(p.name for p in root.iterdir()) == sorted(present)  # nothing created


def test_an_empty_database_file_counts_as_missing(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    root.mkdir()
    (root / "hub.sqlite").write_bytes(b"")  # a truncating restore
    _db(root / "directory.sqlite")
    assert _refusal(_layout(root, key_inside=False), True).reason is StateReason.STATE_INCONSISTENT


def test_a_database_without_schema_refuses(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    root.mkdir()
    for name in ("hub.sqlite", "directory.sqlite"):
        conn = sqlite3.connect(root / name)
        conn.execute("PRAGMA journal_mode=WAL")  # a header, no table: content in a lost -wal
        conn.close()
    _db(root / "directory.sqlite")
    found = _refusal(_layout(root, key_inside=False), False)
    assert found.reason is StateReason.STATE_MISSING and "hub.sqlite" in str(found)


def test_a_hub_key_kept_elsewhere_must_exist_once_the_databases_do(tmp_path: Path) -> None:
    layout = NetworkLayout(tmp_path / "net")
    config = layout.hub_config()
    assert hub_layout(config).state_files == ()  # the harness keeps the key outside
    config.data_dir.mkdir(parents=True)
    _db(config.data_dir / "hub.sqlite")
    _db(config.data_dir / "directory.sqlite")
    config.directory_key_path.unlink()
    from node.app import HubApp

    with pytest.raises(DataDirError) as caught:
        HubApp(config)
    assert caught.value.reason is StateReason.STATE_INCONSISTENT
    assert "directory_key" in str(caught.value)
    assert not config.directory_key_path.exists()  # no new key made


def test_a_node_refuses_a_lost_state_without_init(tmp_path: Path) -> None:
    layout = NetworkLayout(tmp_path / "net")
    config = layout.node_config(A, "127.0.0.1:1")
    with pytest.raises(DataDirError) as caught:
        NodeApp(config)
    assert caught.value.reason is StateReason.STATE_MISSING and "--init" in str(caught.value)
    config.data_dir.mkdir(parents=True)
    _db(config.data_dir / "fragment.sqlite")  # node.sqlite lost
    with pytest.raises(DataDirError) as caught:
        NodeApp(config, init=True)
    assert caught.value.reason is StateReason.STATE_INCONSISTENT


# -- continuity as a node judges it --------------------------------------------------------


def _cp(key: object, seq: int, hash_: bytes) -> Checkpoint:
    return sign_checkpoint(key, seq, hash_, 1_700_000_000_000_000, 0, bytes(32))  # type: ignore[arg-type]


def test_continuity_findings(tmp_path: Path) -> None:
    key = ensure_signing_key(tmp_path / "k.key")
    keys = {public_key_id(key.public_key()): key.public_key()}

    def verify(cp: Checkpoint) -> str | None:
        return verify_checkpoint_signature(cp, keys)

    def judge(acked: int, kept: Checkpoint | None, hub: int, shown: Checkpoint | None):  # type: ignore[no-untyped-def]
        return check_continuity(acked, kept, hub, shown, "store", 1, verify)

    cp10, cp20 = _cp(key, 10, b"a" * 32), _cp(key, 20, b"b" * 32)
    fine = judge(20, cp10, 20, cp20)
    assert fine.regression is None and fine.checkpoint == cp20  # the newer one is kept
    assert judge(0, None, 0, None).regression is None  # a new node, a new hub
    assert judge(20, cp20, 25, cp20).checkpoint == cp20
    cases = {
        ContinuityReason.HUB_WATERMARK_REGRESSED: judge(20, cp10, 10, cp20),
        ContinuityReason.HUB_CHECKPOINT_REGRESSED: judge(20, cp20, 20, cp10),
        ContinuityReason.HUB_CHECKPOINT_FORKED: judge(20, cp20, 20, _cp(key, 20, b"c" * 32)),
        ContinuityReason.HUB_CHECKPOINT_MISSING: judge(20, cp20, 20, None),
    }
    for reason, verdict in cases.items():
        assert verdict.regression is not None and verdict.regression.reason is reason
        assert verdict.checkpoint is not None  # the kept one stays
    # A checkpoint signed by another key is not kept (and not taken for a regression).
    other = ensure_signing_key(tmp_path / "other.key")
    forged = judge(20, cp10, 20, _cp(other, 30, b"d" * 32))
    assert forged.regression is None and forged.checkpoint == cp10 and forged.unverified


# -- audit verify --checkpoint ---------------------------------------------------------------


async def _hub_with_records(path: Path, key_path: Path, count: int, tag: str) -> Checkpoint:
    store = HubStore(path, "NORMAL", signer=ensure_signing_key(key_path),
                     checkpoints=AuditCheckpoints(every_records=1_000_000, every_s=3600))
    await store.open()
    try:
        records = [(str(i), "ACCEPTED", f"{tag}-{i}", S, R, "svc", "citizen", "85073003328",
                    "ACCEPTED", "") for i in range(count)]
        await store.commit_batch(S, "", 0, 0, [(R, count, pack([b"x"] * count,
                                                                [r[2] for r in records]))],
                                 records, b"ack")
        await store.checkpoint()
        cp = await store.latest_checkpoint()
        assert cp is not None and cp.seq == count
        return cp
    finally:
        await store.close()


async def test_verify_with_a_checkpoint_tells_a_restarted_chain(tmp_path: Path) -> None:
    key_path = tmp_path / "directory-signing.key"
    ensure_signing_key(key_path)
    keys = load_public_keys([public_path(key_path)])
    real, restarted = tmp_path / "real.sqlite", tmp_path / "restarted.sqlite"
    pinned = await _hub_with_records(real, key_path, 30, "real")
    await _hub_with_records(restarted, key_path, 40, "new")  # re-initialized, chain from 1
    assert verify_file(restarted, keys).problem is None  # alone, it looks fine
    found = verify_file(restarted, keys, [pinned], integrity=True).problem
    assert found is not None and "not the same chain" in str(found)
    short = tmp_path / "short.sqlite"
    await _hub_with_records(short, key_path, 10, "real")
    found = verify_file(short, keys, [pinned]).problem
    assert found is not None and "ends at 10" in str(found)
    assert verify_file(real, keys, [pinned], integrity=True).problem is None


# -- a store damaged at run time -----------------------------------------------------------


async def _damaged_under_a_running_hub(path: Path) -> HubStore:
    """A store with a queue of 400 envelopes for R, whose file goes bad once it is open."""
    store = HubStore(path, "NORMAL")
    await store.open()
    blobs = [random.Random(i).randbytes(3000) for i in range(400)]
    for blob in blobs:
        await store.commit_batch(S, "", 0, 0, [(R, 1, blob)], [], b"")
    await store.close()
    store = HubStore(path, "NORMAL")
    await store.open()
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(random.Random(7).randbytes(8 * 4096))
    return store


async def test_a_store_damaged_at_run_time_says_so_once(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    store = await _damaged_under_a_running_hub(path)
    damaged: list[int] = []
    store.on_damaged.append(lambda: damaged.append(1))
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                with pytest.raises(sqlite3.DatabaseError):
                    await store.read_queue(R, 0, 10_000, 1 << 30)
    finally:
        await store.close()
    assert "malformed" in store.damaged or "not a database" in store.damaged
    assert damaged == [1]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["store_damaged"]


async def test_delivery_does_not_spin_on_a_damaged_store(tmp_path: Path) -> None:
    layout = NetworkLayout(tmp_path / "net")
    config = layout.hub_config()
    store = await _damaged_under_a_running_hub(tmp_path / "hub.sqlite")
    reads = 0
    read_queue = store.read_queue

    async def counted(*args: object) -> object:
        nonlocal reads
        reads += 1
        return await read_queue(*args)  # type: ignore[arg-type]

    store.read_queue = counted  # type: ignore[method-assign]
    deliverer = Deliverer(store, TlsMaterial.load(config.tls), config.network, config.limits,
                          {R: "127.0.0.1:9"}, {R: 400}, SystemClock())
    try:
        with structlog.testing.capture_logs() as logs:
            deliverer.start([R])
            await asyncio.sleep(1.5)
    finally:
        await deliverer.stop()
        await store.close()
    assert store.damaged
    # The old loop retried at 50 ms, 100 ms, 200 ms... (6+ reads in 1.5 s), a warning each.
    assert reads <= 2, reads
    assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == [
        "store_damaged"]


async def test_the_operator_accepts_a_lost_hub_state(tmp_path: Path) -> None:
    layout = NetworkLayout(tmp_path / "net")
    config_path = tmp_path / "node.toml"
    write_toml(config_path, layout.node_table(A, "127.0.0.1:1"))
    db = layout.node_config(A, "127.0.0.1:1").data_dir / "node.sqlite"
    key = ensure_signing_key(tmp_path / "k.key")
    store = NodeStore(db)
    await store.open()
    await store.enqueue([b"e"] * 20)
    await store.record_ack(1, 20, b"", [])
    assert store.hub_acked_seq == 20
    shown = _cp(key, 7, b"a" * 32)
    await store.save_continuity(_cp(key, 12, b"b" * 32), HubRegression(
        ContinuityReason.HUB_WATERMARK_REGRESSED, "lost", 20, 7, "other", 1, shown))
    await store.close()
    assert cli.main(["node", "checkpoint", "--config", str(config_path),
                     "-o", str(tmp_path / "cp.json")]) == 0
    assert Checkpoint.from_json(json.loads((tmp_path / "cp.json").read_text())).seq == 12
    assert cli.main(["node", "accept-hub-state", "--config", str(config_path)]) == 0
    store = NodeStore(db)
    await store.open()
    try:
        assert store.hub_regression is None
        assert store.hub_acked_seq == 7 and store.hub_checkpoint == shown
        assert store.decided_seq == 20  # the outbox goes on from where it was
    finally:
        await store.close()


async def test_an_outcome_the_node_decided_itself_is_not_a_hub_acknowledgement(
        tmp_path: Path) -> None:
    """The uplink gives up on an envelope the hub cannot take (UNDELIVERABLE) by storing an
    outcome of its own: that must not raise ``hub_acked_seq``, or the next Register would
    take the hub, which never stored that sequence, for a hub that lost state."""
    store = NodeStore(tmp_path / "node.sqlite")
    await store.open()
    try:
        await store.enqueue([b"e"] * 3)
        await store.record_ack(1, 2, b"", [])
        await store.record_ack(3, 3, b"", [3], from_hub=False)
        assert (store.decided_seq, store.hub_acked_seq) == (3, 2)
    finally:
        await store.close()
    store = NodeStore(tmp_path / "node.sqlite")
    await store.open()
    try:
        assert (store.decided_seq, store.hub_acked_seq) == (3, 2)
    finally:
        await store.close()
