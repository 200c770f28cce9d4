"""A node's retention: envelopes it is done with leave its store after ``retention_days``.

The outbox keeps every envelope the institution's applications submitted, the inbox every
envelope delivered to it; neither is the record of the exchange (the hub's audit log is), so
without retention ``node.sqlite`` grows by every envelope for the life of the node.

Every ``every_s`` (an hour), and once at start, :class:`Retention` marks how far the outbox
and the inbox have come (:meth:`NodeStore.mark`) and purges what was there at the last mark
older than the retention period (:meth:`NodeStore.purge`): outbox envelopes the hub has
decided, and inbox envelopes the application has acknowledged. An undecided or unacknowledged
envelope stays, however old. So a finished envelope goes between ``retention_days`` and
``retention_days`` + ``every_s`` after it was stored. A failed round is logged and tried again
at the next one; it never stops the node.
"""

from __future__ import annotations

import asyncio

import structlog

from node.core.clock import Clock
from node.store.protocols import RetentionMarks
from node.store.records import Purged
from node.tasks import BackgroundTask

__all__ = ["EVERY_S", "Retention"]

log = structlog.get_logger(__name__)
#: How often a node marks its store and purges (also the purge's granularity).
EVERY_S = 3600.0
DAY_US = 86_400_000_000


class Retention(BackgroundTask):
    task_name = "retention"

    def __init__(self, store: RetentionMarks, days: int, clock: Clock,
                 every_s: float = EVERY_S) -> None:
        if days < 1:
            raise ValueError("retention_days must be at least 1 (0 turns retention off)")
        self.store = store
        self.days = days
        self.every_s = every_s
        self.clock = clock

    async def run_once(self, now_us: int | None = None) -> Purged:
        """Mark the store at ``now_us`` (default: now) and purge what is older than the
        retention period."""
        now = self.clock.now_us() if now_us is None else now_us
        await self.store.mark(now)
        purged = await self.store.purge(now - self.days * DAY_US)
        if purged.outbox or purged.inbox:
            log.info("retention_purged", outbox=purged.outbox, inbox=purged.inbox,
                     upto_seq=purged.upto_seq, retention_days=self.days)
        return purged

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - tried again next round
                log.error("retention_failed", error=repr(exc))
            await asyncio.sleep(self.every_s)
