"""The hub's audit of refused calls, aggregated (:mod:`node.core.refusals`).

A refused call (a revoked certificate, an institution missing from the directory, a message
that does not parse, a wrong role on the admin service) is a ``REJECTED`` record with no
sender, the RPC method as ``service_id``, the reason, and the peer in ``detail``. A peer that
keeps retrying gets, per method and reason, its first refusal recorded at once and then one
summary record per interval (:data:`REFUSAL_INTERVAL_S`) with the count of the others:
``detail`` = ``<peer>: <n> more refused between <first_us> and <last_us> (aggregated per
<s> s); last: <detail of the last one>``. Pending summaries are written when the hub stops.

The peer is the certificate's identity and serial when the certificate can be read (a client
reconnecting from a new port is the same peer), else the client's address without port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from node.core.audit import AuditRecord, refused_call
from node.core.clock import Clock
from node.core.refusals import RefusalKey, RefusalSummary
from node.rpc.refusal_flood import REFUSAL_INTERVAL_S, TimedRefusals
from node.tasks import spawn

__all__ = ["RefusalAudit"]

log = structlog.get_logger(__name__)
Record = AuditRecord


def _record(at_us: int, method: str, reason: str, detail: str) -> Record:
    return refused_call(str(at_us), method, reason, detail)


class RefusalAudit:
    def __init__(self, append: Callable[[Sequence[Record]], Awaitable[None]], clock: Clock,
                 interval_s: float = REFUSAL_INTERVAL_S) -> None:
        self._append = append
        self.refusals = TimedRefusals(self._write_summaries, interval_s, clock=clock)
        self._writes: set[asyncio.Task[None]] = set()

    async def refused(self, peer: str, method: str, reason: str, detail: str) -> None:
        """Audit one refusal of ``peer`` (a stable label): in full if it is the first of its
        interval, else counted for the interval's summary."""
        if self.refusals.note(RefusalKey(peer, method, reason), detail):
            await self._append([_record(self.refusals.clock(), method, reason, detail)])

    def _records(self, summaries: list[RefusalSummary]) -> list[Record]:
        now = self.refusals.clock()
        interval = self.refusals.interval_s
        for s in summaries:
            log.warning("refusals_aggregated", peer=s.key.peer, method=s.key.method,
                        reason=s.key.reason, count=s.count, interval_s=interval)
        return [_record(now, s.key.method, s.key.reason, s.describe(interval))
                for s in summaries]

    def _write_summaries(self, summaries: list[RefusalSummary]) -> None:
        task = spawn(self._append(self._records(summaries)), "refusal-audit-summaries")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def close(self) -> None:
        """Write every pending summary (the hub is stopping; the store is still open)."""
        pending = self.refusals.close()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if pending:
            await self._append(self._records(pending))
