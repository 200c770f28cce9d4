"""Repeated refusals on the event loop: :class:`node.core.refusals.RefusalAggregator` with a
timer, so each interval's summary comes out when the interval ends (not at the next refusal).

Two users: the hub's audit of refused calls (:mod:`node.hub.refusal_audit`) and the
``rpc`` log lines of refused calls (:mod:`node.rpc.edge`), in both daemons.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from node.core.clock import Clock, SystemClock
from node.core.refusals import RefusalAggregator, RefusalKey, RefusalSummary

__all__ = ["REFUSAL_INTERVAL_S", "TimedRefusals", "peer_host"]

#: The aggregation interval of refused calls, in the audit log and in the logs.
REFUSAL_INTERVAL_S = 60.0


class TimedRefusals:
    """Note refusals; ``emit`` gets the summaries of each ended interval (event loop)."""

    def __init__(self, emit: Callable[[list[RefusalSummary]], None],
                 interval_s: float = REFUSAL_INTERVAL_S, max_keys: int = 10_000,
                 clock: Clock | None = None) -> None:
        """``clock``: the daemon's (default: the system's, for the process-wide log
        aggregation of :mod:`node.rpc.edge`)."""
        self.emit = emit
        self.interval_s = interval_s
        self.aggregator = RefusalAggregator(max(1, int(interval_s * 1e6)), max_keys)
        self.clock = (clock or SystemClock()).now_us  # wall-clock microseconds
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def note(self, key: RefusalKey, detail: str, times: int = 1) -> bool:
        """Count ``times`` refusals; ``True`` when the caller records the first in full now."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # another event loop (tests run one per test)
            self._timer = None
            self._loop = loop
        first = self.aggregator.note(key, self.clock(), detail, times)
        self._arm()
        return first

    def _arm(self) -> None:
        if self._timer is not None or self._loop is None or self._loop.is_closed():
            return
        due = self.aggregator.next_due_us()
        if due is not None:
            delay = max(0.0, (due - self.clock()) / 1e6)
            self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        summaries = self.aggregator.due(self.clock())
        if summaries:
            self.emit(summaries)
        self._arm()

    def close(self) -> list[RefusalSummary]:
        """Stop the timer; the summaries still pending (for the caller to write now)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self.aggregator.drain()


def peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:54321`` -> ``ipv4:127.0.0.1``: a client reconnecting from new ports
    is one peer."""
    head, sep, port = peer.rpartition(":")
    return head if sep and port.isdigit() and head else peer
