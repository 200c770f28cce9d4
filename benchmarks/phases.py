"""The load generator's phases and the run driver, shared by the benchmarks of real processes.

Design
------
A *phase* (:class:`BatchWindow`) submits pre-built batches of envelopes through a node's local
API from a few submitter threads while consumer threads drain the receiving nodes' local APIs
like applications (fetch, then acknowledge). At most ``args.window`` batches are in flight end
to end: a batch takes a slot when its ``Submit`` starts and frees it when the last of its
envelopes (``copies`` of each, for a fan-out) came out of a fetch. A batch is told from the
sender ticket ``BBBBBBB-IIII`` (:func:`benchmarks.common.ticket_batch`). Everything here is
per batch or per fetched list, never per envelope beyond counting, so the load generator
costs the same whatever is measured.

:mod:`benchmarks.e2e` (and :mod:`benchmarks.directory`, through it) drains one receiver and
counts refusals as done; :mod:`benchmarks.mutations` drains every subscriber and stops at the
first refusal. They subclass :class:`BatchWindow` for that and nothing else.

:class:`Backlog` samples where the envelopes in flight sit with read-only reads of the
daemons' databases (the nodes' SQLite files, the hub's SQLite file or PostgreSQL database: no
RPC, nothing the daemons have to serve).

The driver helpers (:func:`results_header`, :func:`work_root`, :func:`add_workdir_options`,
:func:`announce`, :func:`fresh_network`, :func:`finish_run`) are the frame every benchmark's
``main()`` shares: the JSON results' common fields, the work directory, the first line printed,
a network started afresh, and the clean-up that stops every daemon, checks the audit chain and
writes the results also when the run failed. :class:`Run` is that clean-up around a ``with``
block, which also records an interrupt or a failure in the results instead of raising it.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks.common import BenchError, audit_checks, median_of, ticket_batch, write_results
from benchmarks.hub_tier import TABLE_ERRORS, HubTables, SqliteTables, TierNetwork, hub_tables
from benchmarks.progress import Progress, latency_curve, rate_series, series
from node.testing import ProcessNetwork

__all__ = [
    "FAILURES",
    "Backlog",
    "BatchWindow",
    "Run",
    "add_traffic_options",
    "add_workdir_options",
    "announce",
    "finish_run",
    "fresh_network",
    "report_end",
    "results_header",
    "work_root",
]

#: Envelopes a node has stored but the hub has not decided yet.
OUTBOX_PENDING = ("SELECT coalesce(max(seq), 0) - coalesce((SELECT CAST(value AS INTEGER)"
                  " FROM meta WHERE key = 'decided_seq'), 0) FROM outbox")
#: Envelopes the hub holds for delivery.
HUB_QUEUED = "SELECT coalesce(sum(count), 0) FROM queue"
#: Envelopes a node received that its application has not acknowledged.
INBOX_UNACKNOWLEDGED = "SELECT count(*) FROM inbox WHERE acked = 0"


class BatchWindow:
    """Submit ``batches`` (numbered from ``first_batch``) with at most ``args.window`` in
    flight; subclasses drain the receivers and decide what a refusal means."""

    def __init__(self, batches: list[list[bytes]], first_batch: int, args: argparse.Namespace,
                 deadline: float, copies: int = 1) -> None:
        self.batches, self.first_batch = batches, first_batch
        self.args, self.deadline = args, deadline
        n = len(batches)
        self.submit_at = [0.0] * n
        self.submit_ms = [0.0] * n
        self.done_at = [0.0] * n
        self.remaining = [len(b) * copies for b in batches]
        self.slots = threading.Semaphore(args.window)
        self.lock = threading.Lock()
        self.next = 0
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.unexpected = 0
        #: ``(time, envelopes)`` per fetched list of this phase: the throughput over time.
        self.arrivals: list[tuple[float, int]] = []
        self.progress = Progress(f"benchmarks: {type(self).__module__.rsplit('.', 1)[-1]}"
                                 f" batches {first_batch}-{first_batch + n - 1}",
                                 total=sum(self.remaining),
                                 unit="deliveries" if copies > 1 else "envelopes")

    def _refused(self, batch: int, reasons: list[str]) -> None:
        raise NotImplementedError

    def _take(self) -> int | None:
        with self.lock:
            i = self.next
            if i >= len(self.batches):
                return None
            self.next += 1
            return i

    def _submit_all(self, submit: Callable[..., tuple[Sequence[Any], Any]]) -> None:
        """One submitter's loop: the next batch, a free slot, ``submit`` it, time it."""
        while not self.stop.is_set():
            i = self._take()
            if i is None:
                return
            while not self.slots.acquire(timeout=0.2):
                if self.stop.is_set():
                    return
            started = time.monotonic()
            self.submit_at[i] = started
            outcomes, _ = submit(self.batches[i], timeout=120)
            self.submit_ms[i] = (time.monotonic() - started) * 1000
            bad = [o.reason for o in outcomes if o.reason != "ACCEPTED"]
            if bad:
                self._refused(i, bad)

    def _thread(self, name: str, body: Callable[..., None], *args: Any) -> threading.Thread:
        """A daemon thread running ``body``; what it raises stops the phase (see ``errors``)."""

        def guarded() -> None:
            try:
                body(*args)
            except BaseException as exc:  # noqa: BLE001 - reported by run()
                self.errors.append(exc)
                self.stop.set()

        return threading.Thread(target=guarded, daemon=True, name=name)

    def _submitters(self, body: Callable[..., None], *args: Any) -> list[threading.Thread]:
        return [self._thread(f"submit-{k}", body, *args)
                for k in range(max(1, min(self.args.submitters, self.args.window)))]

    def _batches_of(self, envelopes: Sequence[Any]) -> dict[int, int]:
        """Envelopes per batch (an index into ``batches``; out of range: not of this phase)."""
        per_batch: dict[int, int] = {}
        for e in envelopes:
            b = ticket_batch(e.sender_ticket) - self.first_batch
            per_batch[b] = per_batch.get(b, 0) + 1
        return per_batch

    def _arrived(self, per_batch: Mapping[int, int], at: float) -> int:
        """Count arrivals; a batch all arrived frees its slot. Returns those of this phase."""
        ours = 0
        with self.lock:
            for b, count in per_batch.items():
                if not 0 <= b < len(self.batches):
                    self.unexpected += count
                    continue
                ours += count
                self.remaining[b] -= count
                if self.remaining[b] == 0:
                    self.done_at[b] = at
                    self.slots.release()
            if ours:
                self.arrivals.append((at, ours))
                self.progress.update(self.progress.done + ours)
        return ours

    def _join(self, threads: Sequence[threading.Thread]) -> None:
        self.stop.set()
        for t in threads:
            t.join(5)
        self.progress.close()

    def series(self, start: float, end: float, unit: str = "envelopes") -> dict[str, Any]:
        """The phase's arrivals per second over time and its batch latency curve."""
        return series(rate_series(self.arrivals, start, end), latency_curve(self.latencies_ms()),
                      unit)

    def latencies_ms(self) -> list[float]:
        """Per batch: from the start of its Submit to its last envelope fetched."""
        return [(d - s) * 1000 for s, d in zip(self.submit_at, self.done_at, strict=True)
                if d and s]


class Backlog:
    """Samples, every ``interval`` s, the sum of each named list of ``(tables, query)``
    (read-only connections, opened by :meth:`of`, closed at the end)."""

    def __init__(self, queries: Mapping[str, Sequence[tuple[HubTables, str]]],
                 interval: float = 0.25) -> None:
        self.queries = queries
        self.samples: dict[str, list[int]] = {k: [] for k in self.queries}
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="backlog")

    @classmethod
    def of(cls, net: ProcessNetwork, outbox: tuple[str, Sequence[str]],
           inbox: tuple[str, Sequence[str]]) -> Backlog:
        """Outboxes of the senders, the hub's queue (SQLite or PostgreSQL: its replicas
        share it), inboxes of the receivers (each named)."""
        nodes = net.root / "nodes"
        hub = hub_tables(net)
        return cls({
            outbox[0]: [(SqliteTables(nodes / e / "node.sqlite"), OUTBOX_PENDING)
                        for e in outbox[1]],
            "hub_queue": [] if hub is None else [(hub, HUB_QUEUED)],
            inbox[0]: [(SqliteTables(nodes / e / "node.sqlite"), INBOX_UNACKNOWLEDGED)
                       for e in inbox[1]],
        })

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            for name, queries in self.queries.items():
                with contextlib.suppress(*TABLE_ERRORS):
                    self.samples[name].append(
                        sum(int(tables.rows(sql)[0][0]) for tables, sql in queries))

    def __enter__(self) -> Backlog:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        for queries in self.queries.values():
            for tables, _ in queries:
                tables.close()

    def report(self) -> dict[str, Any]:
        return {name: {"median": median_of(v), "max": max(v) if v else None}
                for name, v in self.samples.items()} | {"interval_s": self.interval}


# -- the driver ------------------------------------------------------------------------------


def add_traffic_options(p: argparse._ActionsContainer, *, envelopes: int, warmup: int,
                        window: int, submitters: int, what: str = "envelopes") -> None:
    """The options of the traffic a :class:`BatchWindow` sends (with this benchmark's
    defaults): how much, in which batches, how many in flight, how it is drained."""
    p.add_argument("--envelopes", type=int, default=envelopes, help=f"{what} measured per run")
    p.add_argument("--warmup", type=int, default=warmup, help=f"{what} before measuring")
    p.add_argument("--batch", type=int, default=1_000, help="envelopes per submitted batch")
    p.add_argument("--envelope-bytes", type=int, default=200, help="serialized envelope size")
    p.add_argument("--window", type=int, default=window,
                   help="batches in flight end to end (submitted, not yet fetched)")
    p.add_argument("--submitters", type=int, default=submitters, help="concurrent Submit calls")
    p.add_argument("--fetch-max", type=int, default=1_000, help="envelopes per Fetch")


def add_workdir_options(p: argparse.ArgumentParser) -> None:
    """``--workdir``, ``--keep`` and ``--out``, as every benchmark of processes takes them."""
    p.add_argument("--workdir", help="keep PKI, databases and logs here (default: temporary)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    p.add_argument("--out", help="results directory (default: benchmarks/results)")


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments of a run, as its results record them (not where they are written)."""
    return {k: v for k, v in vars(args).items() if k not in ("workdir", "keep", "out")}


def work_root(args: argparse.Namespace, prefix: str) -> tuple[Path, bool]:
    """The work directory (``--workdir``, else a new temporary one) and whether it is
    temporary."""
    temporary = args.workdir is None
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix=prefix))
    root.mkdir(parents=True, exist_ok=True)
    return root, temporary


def results_header(kind: str, argv: list[str] | None, machine: dict[str, Any],
                   **fields: Any) -> dict[str, Any]:
    """The fields every benchmark's results start with, then ``fields``."""
    return {
        "benchmark": kind,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": ["python", "-m", f"benchmarks.{kind}",
                    *(argv if argv is not None else sys.argv[1:])],
        "machine": machine,
        **fields,
    }


def announce(what: str, machine: Mapping[str, Any], where: Path | str) -> None:
    """The first line a benchmark prints: what it runs, on which machine, where."""
    print(f"Crossroads {what}; {machine['cpu_count']} x {machine['cpu_model']}, Python"
          f" {machine['python']}, grpcio {machine['grpcio']}; work dir {where}", flush=True)


def fresh_network(root: Path, institutions: Sequence[str], **options: Any) -> TierNetwork:
    """A :class:`~benchmarks.hub_tier.TierNetwork` of ``institutions`` under ``root / "net"``
    (its hub tier as ``options`` say: ``choice``, ``cluster``; default one SQLite hub), without
    what a previous run in the same work directory left there."""
    shutil.rmtree(root / "net", ignore_errors=True)
    return TierNetwork(root / "net", institutions=tuple(institutions), **options)


def finish_run(kind: str, results: dict[str, Any], net: ProcessNetwork | None,
               args: argparse.Namespace, root: Path, temporary: bool, status: str,
               started: float) -> Path:
    """After a run, also a failed one: stop every daemon, count the audit records and check
    the chain (unless ``--no-verify``), write the results, remove a temporary work directory."""
    if net is not None:
        net.stop_all()
        with contextlib.suppress(*TABLE_ERRORS):
            tables = hub_tables(net)
            if tables is not None:
                try:
                    results["checks"] = audit_checks(tables, not args.no_verify)
                finally:
                    tables.close()
    results["status"] = status
    results["wall_s"] = round(time.monotonic() - started, 1)
    path = write_results(kind, results, Path(args.out) if args.out else None)
    if temporary and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return path


#: What ends a run as "failed" (recorded in the results) rather than with a traceback.
FAILURES: tuple[type[BaseException], ...] = (TimeoutError, BenchError, RuntimeError, OSError)


class Run:
    """A benchmark run of ``kind`` as a ``with`` block, with :func:`finish_run` on leaving it.

    The block sets :attr:`net` once it started the network. An interrupt, or one of
    ``failures``, ends the block and is recorded in the results (status "interrupted" or
    "failed", and the "error"), not raised; anything else is raised after the clean-up, with
    the status "ok" as the block left it. :attr:`path` is where the results were written.
    """

    def __init__(self, kind: str, results: dict[str, Any], args: argparse.Namespace,
                 root: Path, temporary: bool, started: float,
                 failures: tuple[type[BaseException], ...] = FAILURES) -> None:
        self.kind, self.results, self.args, self.failures = kind, results, args, failures
        self.root, self.temporary, self.started = root, temporary, started
        self.net: ProcessNetwork | None = None
        self.status = "ok"
        self._path: Path | None = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        handled = exc_type is None or issubclass(exc_type, (KeyboardInterrupt, *self.failures))
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.status = "interrupted"
        elif handled and exc is not None:
            self.status = "failed"
            self.results["error"] = f"{type(exc).__name__}: {exc}"
            print(f"benchmarks.{self.kind}: FAILED: {exc}", file=sys.stderr, flush=True)
        self._path = finish_run(self.kind, self.results, self.net, self.args, self.root,
                                self.temporary, self.status, self.started)
        return handled

    @property
    def path(self) -> Path:
        if self._path is None:
            raise RuntimeError("the run has not finished")
        return self._path


def report_end(results: dict[str, Any], path: Path) -> int:
    """The last lines of a run's summary (the audit checks, where the results are) and the
    exit status: 0 when the run's status is "ok"."""
    if "checks" in results:
        print(f"  audit: {results['checks'].get('events')}"
              f" verify {results['checks'].get('verify', {}).get('ok')}")
    print(f"  written to {path}")
    return 0 if results["status"] == "ok" else 1
