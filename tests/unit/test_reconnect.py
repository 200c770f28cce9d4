"""The one retry loop of the long-lived client streams (node/rpc/reconnect.py)."""

from __future__ import annotations

import asyncio
import random

from structlog.testing import capture_logs

from node.core.backoff import Backoff
from node.rpc.reconnect import Reconnect


def _fast() -> Backoff:
    return Backoff(initial=0.001, maximum=0.004, rng=random.Random(7))


async def test_failures_back_off_with_growing_delays_and_the_owner_decides_when_to_stop() -> None:
    retry = Reconnect("thing_failed", _fast())
    attempts: list[int] = []
    failures: list[str] = []

    async def attempt() -> None:
        attempts.append(len(attempts))
        if len(attempts) == 2:
            raise asyncio.CancelledError()  # as grpc.aio raises for a cancelled call
        raise ConnectionError(f"down {len(attempts)}")

    async def failed(exc: BaseException) -> None:
        failures.append(type(exc).__name__)
        await retry.back_off(exc, peer="hub")

    with capture_logs() as logs:
        await retry.run(attempt, failed, running=lambda: len(attempts) < 4)
    assert failures == ["ConnectionError", "CancelledError", "ConnectionError",
                        "ConnectionError"]
    lines = [e for e in logs if e["event"] == "thing_failed"]
    assert [e["peer"] for e in lines] == ["hub"] * 4
    assert "down 1" in lines[0]["error"] and lines[0]["log_level"] == "warning"
    delays = [e["retry_in_s"] for e in lines]
    assert retry.backoff.attempts == 4 and delays[-1] >= delays[0]


async def test_progress_is_the_owners_to_report_and_a_logged_failure_is_not_logged_again(
) -> None:
    retry = Reconnect("thing_failed", _fast())
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            retry.backoff.reset()  # real progress, seen by the owner
        raise ValueError("refused")

    async def failed(exc: BaseException) -> None:
        await retry.back_off(exc, logged=True)

    with capture_logs() as logs:
        await retry.run(attempt, failed, running=lambda: calls < 5)
    assert retry.backoff.attempts == 3  # the three failures since the reset (not five)
    assert not [e for e in logs if e["event"] == "thing_failed"]


async def test_cancelling_the_task_ends_the_loop_without_a_failure() -> None:
    retry = Reconnect("thing_failed", _fast())
    started = asyncio.Event()
    failures: list[BaseException] = []

    async def attempt() -> None:
        started.set()
        await asyncio.Event().wait()

    async def failed(exc: BaseException) -> None:
        failures.append(exc)

    task = asyncio.create_task(retry.run(attempt, failed))
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()
    assert failures == []
