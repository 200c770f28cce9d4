"""The clock: one injected source of time for the daemons, and a fake one for tests.

Design: every component that reads the time takes a :class:`Clock` in its constructor; the
daemons build one :class:`SystemClock` in :mod:`node.app` and hand it down, so a test can put a
:class:`FakeClock` in its place and decide expiries, retention, checkpoints and timeouts
deterministically. Two readings, for two purposes:

* ``now_us()``: wall-clock time, integer microseconds since the Unix epoch. It is what the
  records carry (audit ``at_us``, stamps on envelopes and answers, retention cut-offs). It
  may jump (NTP), so it never measures a duration.
* ``monotonic()``: seconds (float) from an arbitrary origin that never goes back: deadlines,
  waits and liveness bounds.

Components built only by the app take the clock as a required argument; those that tests
and tools also build on their own (the stores, the hub's directory, the revocation checks)
take ``clock=None`` for the system's. The daemons pass their one clock to all of them.

Hot paths keep the bound method (``self._now_us = clock.now_us``) and call it once per batch,
as the lambda defaults did before; asyncio's own timers (``asyncio.sleep``, ``timeout``) are
left to the event loop's clock.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "local_date", "utc_datetime"]


class Clock(Protocol):
    def now_us(self) -> int:
        """Wall-clock time: microseconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes back (for durations and deadlines)."""
        ...


class SystemClock:
    """The machine's clocks (:func:`time.time_ns`, :func:`time.monotonic`)."""

    __slots__ = ()

    def now_us(self) -> int:
        return time.time_ns() // 1000

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told: ``advance(seconds)`` moves both readings forward,
    ``set_us(us)`` puts the wall clock anywhere (backwards too, like an NTP step) and leaves
    the monotonic one alone."""

    __slots__ = ("_monotonic", "_now_us")

    def __init__(self, now_us: int = 1_700_000_000_000_000, monotonic: float = 1_000.0) -> None:
        self._now_us = now_us
        self._monotonic = monotonic

    def now_us(self) -> int:
        return self._now_us

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock's time does not go back; use set_us for the wall clock")
        self._now_us += round(seconds * 1_000_000)
        self._monotonic += seconds

    def set_us(self, now_us: int) -> None:
        self._now_us = now_us


def local_date(clock: Clock) -> date:
    """The clock's wall time as a local calendar date (what ``date.today()`` reads), for
    the date rules: birth years, validity periods of integrations and declarations."""
    return date.fromtimestamp(clock.now_us() / 1_000_000)


def utc_datetime(clock: Clock) -> datetime:
    """The clock's wall time as an aware UTC datetime (for certificates and CRLs)."""
    return datetime.fromtimestamp(clock.now_us() / 1_000_000, UTC)
