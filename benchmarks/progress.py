"""A progress line on stderr for the long phases of a benchmark, and the time series a run
keeps for its plot.

:class:`Progress` writes ``<what>: <done>/<total> <unit> (<pct>), <elapsed> s, <rate>/s`` at
most every ``interval`` seconds: updated in place on a terminal, as plain lines (every
:data:`PLAIN_INTERVAL_S` seconds) when stderr is a file or a pipe, so a log stays short. The
last line of a phase (:meth:`Progress.close`) is always written. ``CROSSROADS_BENCH_PROGRESS=0``
turns the lines off. Nothing here costs more than a clock read per update.

:func:`rate_series` and :func:`latency_curve` turn what a phase counted into the JSON's
``series`` (see :mod:`benchmarks.report`): throughput per time step from the start of the
measured phase, and latency by percentile.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import IO

from benchmarks.common import percentile

__all__ = ["PERCENTILES", "PLAIN_INTERVAL_S", "Progress", "latency_curve", "rate_series", "series"]

#: How often a plain (not a terminal) progress line is written, seconds.
PLAIN_INTERVAL_S = 5.0
#: The percentiles of a latency curve.
PERCENTILES = (0, 10, 25, 50, 75, 90, 95, 99, 99.9, 100)


class Progress:
    """One phase's progress on ``stream`` (stderr): ``update(done)`` as the phase goes,
    ``close()`` at its end."""

    def __init__(self, what: str, total: int | None = None, unit: str = "envelopes",
                 stream: IO[str] | None = None, interval: float | None = None) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else PLAIN_INTERVAL_S)
        self.enabled = os.environ.get("CROSSROADS_BENCH_PROGRESS", "1") != "0"
        self.started = time.monotonic()
        self.done = 0
        self._shown = self.started

    def _line(self, now: float) -> str:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        of = (f"/{self.total:,} {self.unit} ({self.done / self.total:.0%})" if self.total
              else f" {self.unit}")
        return f"{self.what}: {self.done:,}{of}, {elapsed:.1f} s, {rate:,.0f}/s"

    def _write(self, line: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._shown >= self.interval:
            self._shown = now
            self._write(self._line(now), final=False)

    def close(self, done: int | None = None) -> None:
        if done is not None:
            self.done = done
        if self.enabled:
            self._write(self._line(time.monotonic()) + " - done", final=True)


def rate_series(events: Iterable[tuple[float, int]], start: float, end: float,
                steps: int = 60) -> list[list[float]]:
    """``[[t, per_s], ...]``: the counts of ``events`` (``(monotonic time, count)``) from
    ``start`` to ``end`` in about ``steps`` equal steps (at least 0.1 s each), as a rate per
    second at each step's end (``t`` in seconds from ``start``)."""
    wall = end - start
    if wall <= 0:
        return []
    step = max(0.1, wall / steps)
    n = max(1, round(wall / step))
    step = wall / n
    counts = [0] * n
    for at, count in events:
        if start <= at <= end:
            counts[min(n - 1, int((at - start) / step))] += count
    return [[round((k + 1) * step, 3), round(c / step, 1)] for k, c in enumerate(counts)]


def latency_curve(values: Sequence[float]) -> list[list[float]]:
    """``[[percentile, value], ...]`` of ``values`` at :data:`PERCENTILES` (empty: none)."""
    if not values:
        return []
    data = sorted(values)
    return [[p, round(percentile(data, p) or 0.0, 3)] for p in PERCENTILES]


def series(throughput: list[list[float]] | None, latency: list[list[float]] | None,
           unit: str, latency_unit: str = "ms") -> dict[str, object]:
    """A run's ``series`` entry: its throughput over time (``unit`` per second) and its
    latency curve (in ``latency_unit``); the plot (:mod:`benchmarks.report`) finds every
    such entry in a result file."""
    return {"unit": unit, "throughput": throughput or [], "latency": latency or [],
            "latency_unit": latency_unit}
