"""Shared pieces of the benchmarks: the envelopes, machine facts, process accounting, results.

Nothing here is measured itself; every benchmark imports from it. The load generator's
phases and the frame of a run (work directory, results header, clean-up) are in
:mod:`benchmarks.phases`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import random
import signal
import sqlite3
import statistics
import sys
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psutil

if TYPE_CHECKING:
    from benchmarks.hub_tier import HubTables

from node.client import make_envelope
from node.core.identifiers import citizen_check_digits

T = TypeVar("T")

__all__ = [
    "usage_error",
    "BenchError",
    "audit_checks",
    "bench_parser",
    "end_on_signals",
    "in_chunks",
    "hub_refusals",
    "interrupted",
    "CITIZEN_POOL",
    "RECEIVER",
    "RESULTS_DIR",
    "SENDER",
    "SERVICE",
    "ProcessMeter",
    "build_batches",
    "code_digests",
    "machine_facts",
    "median_of",
    "p50_p99",
    "percentile",
    "rounded",
    "peak_rss_bytes",
    "ticket_batch",
    "verified",
    "write_results",
]

SENDER, RECEIVER = "0403019261", "0428759497"
SERVICE = "demo.message"
#: Distinct subjects in a run: real traffic is about many people, and the hub's audit index
#: on the subject number costs more with many distinct values than with a handful.
CITIZEN_POOL = 50_000
RESULTS_DIR = Path(__file__).resolve().parent / "results"
_TICKET_DIGITS = 7


def usage_error(tool: str, message: str) -> int:
    """Say why a benchmark's arguments are refused (one line on stderr); its exit status, 2."""
    print(f"benchmarks.{tool}: {message}", file=sys.stderr)
    return 2


def ticket_batch(sender_ticket: str) -> int:
    """The batch number encoded in a benchmark sender ticket ``BBBBBBB-IIII``."""
    return int(sender_ticket[:_TICKET_DIGITS])


@functools.cache
def citizens(count: int = CITIZEN_POOL, seed: int = 20_240_101) -> tuple[str, ...]:
    """``count`` distinct valid citizen numbers (born 1930-1999, register, real dates),
    in a fixed pseudo-random order."""
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        first9 = (f"{rng.randint(30, 99):02d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
                  f"{rng.randint(1, 997):03d}")
        found[first9 + citizen_check_digits(first9, born_2000s=False)] = None
    return tuple(found)


def _envelope(batch: int, index: int, payload: bytes, sender: str, receiver: str) -> bytes:
    pool = citizens()
    return make_envelope(
        SERVICE, [receiver], payload, sender=sender,
        subject_citizen=pool[(batch * 1_000 + index) % len(pool)],
        sender_ticket=f"{batch:0{_TICKET_DIGITS}d}-{index:04d}",
    )


def build_batches(
    first_batch: int, batches: int, batch_size: int, envelope_bytes: int,
    sender: str = SENDER, receiver: str = RECEIVER,
) -> list[list[bytes]]:
    """Pre-built serialized envelopes, ``batches`` lists of ``batch_size``, about
    ``envelope_bytes`` each (payload padded so that the whole serialized envelope has that
    size). Batch numbers start at ``first_batch`` and are encoded in the sender tickets."""
    bare = len(_envelope(first_batch, 0, b"", sender, receiver))
    pad = max(0, envelope_bytes - bare)
    # The payload's length prefix grows by a byte past 127 bytes: trim until it fits.
    while pad and len(_envelope(first_batch, 0, b"x" * pad, sender, receiver)) > envelope_bytes:
        pad -= 1
    payload = b"x" * pad
    return [
        [_envelope(b, i, payload, sender, receiver) for i in range(batch_size)]
        for b in range(first_batch, first_batch + batches)
    ]


def code_digests(files: Sequence[str]) -> dict[str, str]:
    """SHA-256 prefixes of the node files measured (the tree may hold uncommitted work)."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:12]
            for name in files if (root / name).exists()}


def rounded(value: float | None, digits: int = 2) -> float | None:
    """``value`` rounded for the results (None stays None)."""
    return None if value is None else round(value, digits)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    k = (len(data) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def p50_p99(values: Sequence[float], with_max: bool = False) -> dict[str, float | None]:
    """The 50th and 99th percentiles of ``values`` (and their maximum), rounded."""
    out = {"p50": rounded(percentile(values, 50)), "p99": rounded(percentile(values, 99))}
    if with_max:
        out["max"] = rounded(max(values) if values else None)
    return out


def median_of(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    import google.protobuf
    import grpc

    try:
        from google.protobuf.internal import api_implementation

        pb_impl = api_implementation.Type()
    except ImportError:  # pragma: no cover
        pb_impl = "unknown"
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "grpcio": grpc.__version__,
        "protobuf": f"{google.protobuf.__version__} ({pb_impl})",
        "loadavg_at_start": list(os.getloadavg()),
    }


def peak_rss_bytes(pid: int) -> int | None:
    """Peak resident set size of a live process (Linux ``VmHWM``), else its current RSS."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


@dataclass
class _Snapshot:
    at: float
    cpu: dict[str, float]
    system_busy: float
    system_total: float


class ProcessMeter:
    """CPU seconds (user + system, all threads) of named processes between two snapshots,
    plus the machine-wide busy CPU over the same interval (to see interference).

    A name in ``trees`` is a process and everything it forked (a database server: the
    postmaster and its backends): its own CPU, its live descendants' and that of its exited
    children it has reaped (``children_user``/``children_system``), so a backend that exits
    between the snapshots still counts."""

    def __init__(self, pids: dict[str, int], trees: Collection[str] = ()) -> None:
        self.pids = dict(pids)
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.trees = frozenset(trees)
        self._start: _Snapshot | None = None
        self._end: _Snapshot | None = None

    def _cpu(self, name: str, proc: psutil.Process) -> float:
        t = proc.cpu_times()
        if name not in self.trees:
            return float(t.user + t.system)
        total = t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return float(total)

    def _snap(self) -> _Snapshot:
        cpu = {}
        for name, proc in self.procs.items():
            try:
                cpu[name] = self._cpu(name, proc)
            except psutil.Error:
                cpu[name] = float("nan")
        sys_t = psutil.cpu_times()
        total = sum(sys_t)
        idle = sys_t.idle + getattr(sys_t, "iowait", 0.0)
        return _Snapshot(time.monotonic(), cpu, total - idle, total)

    def start(self) -> None:
        self._start = self._snap()

    def stop(self) -> None:
        self._end = self._snap()

    def report(self, envelopes: int) -> dict[str, Any]:
        assert self._start is not None and self._end is not None
        s, e = self._start, self._end
        wall = e.at - s.at
        per_process: dict[str, Any] = {}
        ours = 0.0
        for name, pid in self.pids.items():
            cpu = e.cpu[name] - s.cpu[name]
            ours += cpu
            per_process[name] = {
                "pid": pid,
                "cpu_s": round(cpu, 3),
                "cpu_util": round(cpu / wall, 3) if wall > 0 else None,
                "cpu_us_per_envelope": round(cpu / envelopes * 1e6, 2) if envelopes else None,
                "peak_rss_bytes": peak_rss_bytes(pid),
            }
        busy = e.system_busy - s.system_busy
        return {
            "wall_s": round(wall, 3),
            "processes": per_process,
            "cpu_s_total": round(ours, 3),
            "machine_busy_cpu_s": round(busy, 3),
            "machine_cores_busy": round(busy / wall, 3) if wall > 0 else None,
            # Busy CPU on the machine not accounted to the processes above (other tenants).
            "other_cpu_s": round(busy - ours, 3),
        }


def write_results(kind: str, data: dict[str, Any], out_dir: Path | None = None) -> Path:
    out = out_dir or RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = out / f"{kind}-{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = out / f"{kind}-{stamp}-{n}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


class BenchError(RuntimeError):
    """A benchmark run cannot go on (setup refused, traffic refused, a worker failed)."""


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM handler: stop like Ctrl-C, so every process is stopped on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def end_on_signals() -> None:
    """SIGTERM and SIGINT (even when started in the background with it ignored) end the run
    through the same clean-up as a failure: every daemon is stopped, the results written."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)


def bench_parser(name: str, description: str, **options: Any) -> argparse.ArgumentParser:
    """The argument parser of ``python -m benchmarks.<name>``."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description,
                                   **options)


def in_chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of at most ``size``."""
    part: list[T] = []
    for item in items:
        part.append(item)
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part


def hub_refusals(hub_db: Path) -> str:
    """The hub's refusal reasons so far, from its audit log (read-only; best effort)."""
    try:
        conn = sqlite3.connect(f"file:{hub_db}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT reason, service_id, count(*), min(detail) FROM audit"
                " WHERE event = 'REJECTED' GROUP BY reason, service_id LIMIT 5").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"(audit not readable: {exc})"
    return "; ".join(f"{n} x {reason} on {service} ({detail})"
                     for reason, service, n, detail in rows) or "(none in the audit log yet)"


def audit_checks(tables: HubTables, verify: bool) -> dict[str, Any]:
    """The hub's audit records by ``event:reason`` after a run, and the chain check (on
    either backend: :func:`benchmarks.hub_tier.hub_tables`)."""
    events = dict(tables.rows("SELECT event || ':' || reason, count(*) FROM audit"
                              " GROUP BY 1 ORDER BY 2 DESC"))
    out: dict[str, Any] = {"events": events}
    if verify:
        out["verify"] = verified(tables, "seconds")
    return out


def verified(tables: HubTables, timed: str) -> dict[str, Any]:
    """The hub's audit chain verified: records, ok, the problem, the time it took (``timed``)."""
    t = time.monotonic()
    report = tables.audit().verify(None)
    return {"records": report.records, "ok": report.problem is None,
            "problem": None if report.problem is None else str(report.problem),
            timed: round(time.monotonic() - t, 2)}
