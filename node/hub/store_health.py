"""Whether this hub replica can commit now, told to health checks and load balancers.

A replica that cannot reach its database must stop acknowledging at once (it does: nothing is
acknowledged before its commit, and a commit that fails raises ``Unavailable``) and say so,
so that nodes and balancers move to a healthy replica. :class:`StoreHealth` is the saying:

* every ``period_s`` (1 s) it pings the store (:meth:`HubStorage.ping`: one bounded round
  trip on PostgreSQL; on SQLite, whether the file was found damaged);
* a failed write anywhere in the hub (``store.failures`` listeners) pings at once, so the
  health turns within a round trip of the first failure rather than at the next period;
* the first failed ping turns the health NOT_SERVING (``on_change(False)``), logged once at
  error; the first ping that succeeds afterwards turns it SERVING again, logged at warning.
  A ping that fails with an error nobody foresaw (a database client's internal error during
  a failover was one) counts as failed too: the checks never end on it, and a replica never
  stays SERVING because the task that would have said otherwise is gone.

It never stops the hub: a replica cut off from its database keeps its process, its listeners
and its caches, refuses to acknowledge, and rejoins when the database answers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from node.tasks import wait_event

__all__ = ["StoreHealth"]

log = structlog.get_logger(__name__)

PERIOD_S = 1.0


class StoreHealth:
    def __init__(self, ping: Callable[[], Awaitable[None]],
                 on_change: Callable[[bool], Awaitable[None]], period_s: float = PERIOD_S) -> None:
        self.ping = ping
        self.on_change = on_change
        self.period_s = period_s
        #: The last ping's verdict (True until one fails).
        self.healthy = True
        #: Times the health turned NOT_SERVING since start (a metric).
        self.outages = 0
        self._now = asyncio.Event()

    def check_now(self) -> None:
        """Ping at once (a write just failed); safe to call from the event loop at any time."""
        self._now.set()

    async def run(self) -> None:
        while True:
            await wait_event(self._now, self.period_s)
            self._now.clear()
            await self._check()

    async def _check(self) -> None:
        try:
            await self.ping()
        except Exception as exc:  # noqa: BLE001 - any failed ping is a store away (fail closed)
            if self.healthy:
                self.healthy = False
                self.outages += 1
                log.error("store_unreachable", error=str(exc),
                          effect="health NOT_SERVING; nothing is acknowledged until it answers")
                await self.on_change(False)
            return
        if not self.healthy:
            self.healthy = True
            log.warning("store_reachable_again", effect="health SERVING")
            await self.on_change(True)
