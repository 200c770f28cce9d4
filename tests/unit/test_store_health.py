"""The hub's store health (node/hub/store_health.py): a ping that fails in a way nobody
foresaw turns the replica NOT_SERVING like any other failed ping, and the checks go on."""

from __future__ import annotations

import asyncio

from node.core.errors import Unavailable
from node.core.reasons import CallReason
from node.hub.store_health import StoreHealth


async def test_an_unforeseen_ping_error_is_not_serving_and_the_checks_go_on() -> None:
    failures = [Unavailable("gone", CallReason.NOT_STORED), KeyError("a client's own bug")]
    pings = 0

    async def ping() -> None:
        nonlocal pings
        pings += 1
        if failures:
            raise failures.pop(0)

    changes: list[bool] = []

    async def on_change(serving: bool) -> None:
        changes.append(serving)

    health = StoreHealth(ping, on_change, period_s=0.01)
    task = asyncio.create_task(health.run())
    try:
        async with asyncio.timeout(5):
            while pings < 5:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert not task.done() or task.cancelled()
    assert changes == [False, True]  # NOT_SERVING through both failures, then SERVING
    assert health.healthy and health.outages == 1
