"""Aggregating repeated refusals: one record per peer, method, reason and interval.

A client that retries a refused call in a loop (a revoked certificate, an institution
missing from the directory, a node that cannot commit) must not turn each attempt into an
audit record and a log line: at hundreds a second that is a flood of the audit log, the
disk and the logs, caused by anyone holding a certificate. The evidence must stay, though.

The rule, per key ``(peer, method, reason)`` (and ``service``, where the refusal names one):

* the **first** refusal is recorded at once, in full (as before), and opens an interval of
  ``interval_us``;
* the **following** refusals in that interval are only counted;
* when the interval ends, if any were counted, **one summary** is emitted (count, first and
  last time, the last detail) and the key stays open for another interval (a steady flood
  costs one record per interval); an interval that ends with nothing counted closes the key,
  so the next refusal is recorded at once again;
* :meth:`RefusalAggregator.drain` emits every pending summary (at shutdown).

Memory is bounded by ``max_keys`` open keys: past that, refusals of new keys are counted
under one overflow key whose peer is :data:`OTHER_PEERS` (still counted, never dropped).

Pure: times are given by the caller (µs), nothing here sleeps or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["OTHER_PEERS", "RefusalAggregator", "RefusalKey", "RefusalSummary"]

#: The peer of the overflow key (more distinct keys open than ``max_keys``).
OTHER_PEERS = "(other peers)"


@dataclass(frozen=True, slots=True)
class RefusalKey:
    peer: str
    method: str
    reason: str
    #: The service the refused call was about, where the refuser tells them apart (the
    #: node's local API, per application right); "" elsewhere.
    service: str = ""


@dataclass(frozen=True, slots=True)
class RefusalSummary:
    """``count`` refusals of ``key`` (after the one recorded in full) in ``[first_us, last_us]``."""

    key: RefusalKey
    count: int
    first_us: int
    last_us: int
    detail: str

    def describe(self, interval_s: float) -> str:
        return (f"{self.key.peer}: {self.count} more refused between {self.first_us} and"
                f" {self.last_us} (aggregated per {interval_s:g} s); last: {self.detail}")


@dataclass(slots=True)
class _Run:
    ends_us: int
    count: int = 0
    first_us: int = 0
    last_us: int = 0
    detail: str = ""


def _overflow(key: RefusalKey) -> RefusalKey:
    return replace(key, peer=OTHER_PEERS)


class RefusalAggregator:
    def __init__(self, interval_us: int, max_keys: int = 10_000) -> None:
        if interval_us <= 0:
            raise ValueError("interval_us must be positive")
        self.interval_us = interval_us
        self.max_keys = max_keys
        self._runs: dict[RefusalKey, _Run] = {}
        #: Refusals seen in all, and those recorded in full (the rest went to summaries).
        self.seen = 0
        self.recorded = 0

    def note(self, key: RefusalKey, at_us: int, detail: str, times: int = 1) -> bool:
        """Count ``times`` refusals (at once, e.g. of one batch); ``True`` when the caller
        records the first of them in full now (the others are counted for the summary)."""
        first = self._note(key, at_us, detail)
        if times > 1:
            self.seen += times - 1
            run = self._runs.get(key) or self._runs[_overflow(key)]
            self._count(run, at_us, detail, times - 1)
        return first

    def _note(self, key: RefusalKey, at_us: int, detail: str) -> bool:
        self.seen += 1
        run = self._runs.get(key)
        if run is not None and at_us >= run.ends_us:
            # Its interval is over but was not collected yet: collect it first (see due()).
            return self._late(key, run, at_us, detail)
        if run is None:
            if len(self._runs) >= self.max_keys:
                key = _overflow(key)
                run = self._runs.get(key)
            if run is None:
                self._runs[key] = _Run(ends_us=at_us + self.interval_us)
                self.recorded += 1
                return True
        self._count(run, at_us, detail)
        return False

    def _late(self, key: RefusalKey, run: _Run, at_us: int, detail: str) -> bool:
        if run.count:  # keep counting into the next interval; due() emits the old one
            self._count(run, at_us, detail)
            return False
        run.ends_us = at_us + self.interval_us
        self.recorded += 1
        return True

    @staticmethod
    def _count(run: _Run, at_us: int, detail: str, times: int = 1) -> None:
        if not run.count:
            run.first_us = at_us
        run.count += times
        run.last_us = at_us
        run.detail = detail

    def next_due_us(self) -> int | None:
        """When the earliest open interval ends (``None``: nothing open)."""
        return min((run.ends_us for run in self._runs.values()), default=None)

    def due(self, now_us: int) -> list[RefusalSummary]:
        """Summaries of the intervals ended by ``now_us``; keys left idle are closed."""
        out: list[RefusalSummary] = []
        for key, run in list(self._runs.items()):
            if run.ends_us > now_us:
                continue
            if run.count:
                out.append(RefusalSummary(key, run.count, run.first_us, run.last_us, run.detail))
                self._runs[key] = _Run(ends_us=now_us + self.interval_us)
            else:
                del self._runs[key]
        return out

    def drain(self) -> list[RefusalSummary]:
        """Every pending summary, now (shutdown); all keys are closed."""
        out = [RefusalSummary(key, run.count, run.first_us, run.last_us, run.detail)
               for key, run in self._runs.items() if run.count]
        self._runs.clear()
        return out
