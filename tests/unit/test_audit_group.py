"""Group commit of audit records: every record durable before append returns, in order,
fewer transactions than records under concurrency (real HubStore, real SQLite file)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from node.audit_tool import verify_file
from node.hub.audit_group import AuditGroup
from node.store.hub_store import HubStore


def record(n: int) -> tuple[str, ...]:
    return (str(1_000 + n), "ACCEPTED", f"t-{n}", "0403019261", "0428759497", "svc", "citizen",
            "85073003328", "ACCEPTED", "consultation")


async def test_concurrent_appends_share_commits_in_order(tmp_path: Path) -> None:
    store = HubStore(tmp_path / "hub.sqlite", "FULL")
    await store.open()
    group = AuditGroup(store.append_audit)
    try:
        async def one(n: int) -> int:
            await group.append([record(n)])
            # Durable on return: a separate connection sees it.
            conn = sqlite3.connect(tmp_path / "hub.sqlite")
            try:
                return conn.execute("SELECT count(*) FROM audit WHERE hub_ticket = ?",
                                    (f"t-{n}",)).fetchone()[0]
            finally:
                conn.close()

        seen = await asyncio.gather(*(one(n) for n in range(60)))
        assert seen == [1] * 60
        assert group.commits < 60
    finally:
        await group.close()
        await store.close()
    assert _tickets(tmp_path / "hub.sqlite") == [f"t-{n}" for n in range(60)]
    assert verify_file(tmp_path / "hub.sqlite").problem is None


async def test_a_cancelled_caller_does_not_withdraw_its_records(tmp_path: Path) -> None:
    store = HubStore(tmp_path / "hub.sqlite", "FULL")
    await store.open()
    group = AuditGroup(store.append_audit)
    try:
        task = asyncio.create_task(group.append([record(1)]))
        await asyncio.sleep(0)
        task.cancel()
        await group.close()
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "hub.sqlite")
    try:
        assert conn.execute("SELECT count(*) FROM audit WHERE hub_ticket = 't-1'").fetchone()[0] == 1
    finally:
        conn.close()


def _tickets(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [t for (t,) in conn.execute("SELECT hub_ticket FROM audit ORDER BY seq")]
    finally:
        conn.close()


async def test_records_added_for_later_ride_with_the_next_commit(tmp_path: Path) -> None:
    """add_later starts no commit of its own before later_s: its records go with the next
    add's commit, in the order added, and cost no extra commit."""
    path = tmp_path / "hub.sqlite"
    store = HubStore(path, "FULL")
    await store.open()
    group = AuditGroup(store.append_audit, later_s=30.0)
    try:
        group.add_later([record(1), record(2)])
        await asyncio.sleep(0.05)
        assert _tickets(path) == [] and group.commits == 0  # waiting for company
        await group.append([record(3)])
        assert _tickets(path) == ["t-1", "t-2", "t-3"] and group.commits == 1
    finally:
        await group.close()
        await store.close()


async def test_records_added_for_later_are_committed_within_later_s_or_on_flush(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hub.sqlite"
    store = HubStore(path, "FULL")
    await store.open()
    group = AuditGroup(store.append_audit, later_s=0.05)
    try:
        group.add_later([record(1)])
        for _ in range(100):  # no other record comes: the timer commits it
            if _tickets(path) == ["t-1"]:
                break
            await asyncio.sleep(0.01)
        assert _tickets(path) == ["t-1"]
        group.later_s = 30.0
        group.add_later([record(2)])
        await group.flush()  # e.g. before an audit query
        assert _tickets(path) == ["t-1", "t-2"]
        group.add_later([record(3)])
    finally:
        await group.close()  # the last ones too
        await store.close()
    assert _tickets(path) == ["t-1", "t-2", "t-3"]
    assert verify_file(path).problem is None


async def test_records_for_later_left_by_a_commit_under_way_wait_for_the_next_add(
    tmp_path: Path,
) -> None:
    """A consultation's ANSWERED records often arrive while another question's commit is
    being written: they do not make a commit of their own right after it."""
    path = tmp_path / "hub.sqlite"
    store = HubStore(path, "FULL")
    await store.open()
    writing = asyncio.Event()

    async def commit(records: Sequence[tuple[str, ...]]) -> None:
        writing.set()
        await asyncio.sleep(0.05)
        await store.append_audit(records)

    group = AuditGroup(commit, later_s=30.0)
    try:
        first = group.add([record(1)])
        await writing.wait()  # its commit is being written ...
        group.add_later([record(2)])  # ... when this comes
        await first
        await asyncio.sleep(0.05)
        assert _tickets(path) == ["t-1"] and group.commits == 1
        await group.append([record(3)])
        assert _tickets(path) == ["t-1", "t-2", "t-3"] and group.commits == 2
    finally:
        await group.close()
        await store.close()
