"""The injected clock (node/core/clock.py): the system's readings, and a fake one that moves
only when told, which makes time-dependent decisions of the daemons deterministic."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from node.app import HubApp, NodeApp
from node.core.clock import Clock, FakeClock, SystemClock, local_date, utc_datetime
from node.core.refusals import RefusalKey
from node.rpc.refusal_flood import TimedRefusals
from node.testing import NetworkLayout
from tests.conftest import A


def test_the_system_clock_reads_wall_microseconds_and_a_monotonic_clock() -> None:
    clock: Clock = SystemClock()
    before = time.time_ns() // 1000
    now = clock.now_us()
    assert before <= now <= time.time_ns() // 1000
    first = clock.monotonic()
    assert clock.monotonic() >= first
    assert abs(utc_datetime(clock) - datetime.now(UTC)).total_seconds() < 5
    assert local_date(clock) in (date.today(), date.today() - timedelta(days=1))  # midnight


def test_the_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(now_us=1_000_000, monotonic=5.0)
    assert (clock.now_us(), clock.monotonic()) == (1_000_000, 5.0)
    clock.advance(1.5)
    assert (clock.now_us(), clock.monotonic()) == (2_500_000, 6.5)
    clock.set_us(0)  # an NTP step back: the monotonic clock does not follow
    assert (clock.now_us(), clock.monotonic()) == (0, 6.5)
    assert utc_datetime(clock) == datetime(1970, 1, 1, tzinfo=UTC)
    clock.set_us(int(datetime(2016, 12, 31, 12).timestamp() * 1_000_000))  # local noon
    assert local_date(clock) == date(2016, 12, 31)
    clock.advance(86_400)
    assert local_date(clock) == date(2017, 1, 1)
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


async def test_refusal_summaries_are_stamped_by_the_injected_clock() -> None:
    clock = FakeClock(now_us=10_000_000)
    emitted: list[object] = []
    refusals = TimedRefusals(emitted.append, interval_s=60.0, clock=clock)
    key = RefusalKey("peer", "Hub.Submit", "NOT_AUTHORIZED")
    assert refusals.note(key, "first")  # the first of its interval: recorded in full
    clock.advance(30)
    assert not refusals.note(key, "second", times=2)  # counted for the summary
    [summary] = refusals.close()
    assert (summary.count, summary.first_us, summary.last_us) == (2, 40_000_000, 40_000_000)


async def test_the_daemons_stamp_their_new_databases_with_the_clock_they_were_given(
    tmp_path: Path,
) -> None:
    layout = NetworkLayout(tmp_path / "net", institutions=(A,))
    clock = FakeClock(now_us=1_234_567_890_000_000)
    hub = HubApp(layout.hub_config(), init=True, clock=clock)
    node = NodeApp(layout.node_config(A, "127.0.0.1:1"), init=True, clock=clock)
    for store in (hub.store, node.store):
        await store.open()
        await store.close()
        with sqlite3.connect(store.path) as conn:
            created = conn.execute("SELECT value FROM meta WHERE key = 'created_at_us'").fetchone()
        assert created == (str(clock.now_us()),)
