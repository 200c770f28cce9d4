"""Mutation fan-out benchmark: deliveries per second from one source to N subscribers.

``python -m benchmarks.mutations [--subscribers 4] [--envelopes 50000] [--citizens 50000] ...``

What runs
---------
:class:`node.testing.ProcessNetwork` starts the hub, a *source* node (0403019261) and
``--subscribers`` (4) subscriber nodes as real processes (``python -P -m node.cli ... serve``,
fresh PKI, loopback mTLS, ``synchronous=FULL``, audit log on). The directory is seeded
through the hub's admin API (:meth:`ProcessNetwork.apply_directory`, chunks of 50,000
changes) before the nodes start: a mutation service ``bench.mutation.address`` (kind
``mutation``, fan-out by the directory, like ``mutation.address`` in
``tests/integration/test_mutation_push.py``), the source's authorization to publish it, one
subscription per subscriber (capacity 1), and ``--citizens`` (50,000) citizens each
integrated at *every* subscriber (capacity 1, phase 2): every mutation goes to all
subscribers. Every node has synced its fragment before anything is measured.

This process is the source's application and every subscriber's application:

* **publishing**: pre-built mutation envelopes (~``--envelope-bytes`` 200 bytes: a random
  integrated citizen, no receivers - the hub routes by subscription - a sender ticket
  ``BBBBBBB-IIII`` carrying the batch number) submitted in batches of ``--batch`` (1,000)
  through the source node's local API (``LocalClient.submit``, ``--submitters`` threads);
* **consuming**: one thread per subscriber drains its node's local API like an application,
  ``fetch(--fetch-max)`` then ``acknowledge`` those hub tickets.

At most ``--window`` (8) batches are in flight: a batch takes a slot when its ``Submit``
starts and frees it when all ``subscribers x batch`` of its deliveries were fetched. After a
warm-up (``--warmup`` 5,000 envelopes, not measured), ``--envelopes`` (50,000) are measured.

What the numbers mean
---------------------
* ``deliveries_per_s``: envelopes fetched *and acknowledged* at the subscribers'
  applications, summed over subscribers, / wall time from the first ``Submit`` of the
  measured phase to the last ``Acknowledge`` (target of the issue: 10,000/s).
* ``envelopes_per_s``: mutations published (each delivered ``subscribers`` times) / the
  same wall time.
* ``batch_latency_ms``: ``Submit`` start -> the batch's last delivery fetched at any
  subscriber. Under saturation it is about ``window x batch / envelopes_per_s``.
* ``backlog``: every 0.25 s, read-only SQLite reads of where the envelopes in flight sit:
  the source's outbox (not yet acknowledged by the hub), the hub's queue (rows, one per
  delivery), the subscribers' inboxes (not yet fetched + acknowledged).
* ``cpu``: CPU seconds per process over the measured phase (psutil), ``cpu_us_per_delivery``
  and ``cpu_util``; names ``hub``, ``source``, ``sub-<n>``, ``loadgen`` (this process: the
  publisher and every consumer); ``user_system_s`` splits each process's CPU into user and
  kernel time. ``machine_cores_busy`` / ``other_cpu_s``: the whole machine, and what was
  *not* ours.
* ``checks``: refusals (must be 0), deliveries per subscriber, the hub's audit records by
  event and the chain verified (``--no-verify`` skips it). ``code``: SHA-256 prefixes of the
  node files on the path (the working tree may hold uncommitted changes).

Everything listens on 127.0.0.1; every process is stopped at the end, also on failure,
timeout (``--timeout``), SIGTERM or Ctrl-C. Results:
``benchmarks/results/mutations-<timestamp>.json`` and a summary on stdout.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

from benchmarks.common import (
    SENDER,
    BenchError,
    ProcessMeter,
    bench_parser,
    citizens,
    code_digests,
    end_on_signals,
    hub_refusals,
    in_chunks,
    machine_facts,
    p50_p99,
    usage_error,
)
from benchmarks.consult import CpuSplit
from benchmarks.phases import (
    Backlog,
    BatchWindow,
    Run,
    add_traffic_options,
    add_workdir_options,
    announce,
    fresh_network,
    parameters,
    report_end,
    results_header,
    work_root,
)
from node import grpc_runtime
from node.client import LocalClient, make_envelope
from node.core.directory import Authorization, Entity, Integration, Period, Service, Subscription
from node.core.identifiers import enterprise_check_digits
from node.testing import DEFAULT_INSTITUTIONS, ProcessNetwork, default_directory

__all__ = ["main"]

SOURCE = SENDER
MUTATION = "bench.mutation.address"
CAPACITY = 1
_TICKET_DIGITS = 7


def _parser() -> argparse.ArgumentParser:
    p = bench_parser("mutations", "Mutation fan-out: deliveries per second from one source node"
                                  " to N subscriber nodes through the hub (real processes,"
                                  " loopback mTLS).")
    p.add_argument("--subscribers", type=int, default=4, help="subscriber nodes")
    p.add_argument("--citizens", type=int, default=50_000,
                   help="citizens, each integrated at every subscriber")
    add_traffic_options(p, envelopes=50_000, warmup=5_000, window=8, submitters=2,
                        what="mutations")
    p.add_argument("--chunk", type=int, default=50_000, help="directory changes per Apply")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    p.add_argument("--no-verify", action="store_true", help="skip the audit chain verification")
    p.add_argument("--seed", type=int, default=5)
    add_workdir_options(p)
    return p


def subscriber_numbers(count: int) -> list[str]:
    """The test institutions after the source, then made-up valid enterprise numbers."""
    numbers = [e for e in DEFAULT_INSTITUTIONS if e != SOURCE][:count]
    k = 0
    while len(numbers) < count:
        first8 = f"0{5_200_000 + 10_007 * k:07d}"
        number = first8 + enterprise_check_digits(first8)
        if number not in numbers and number != SOURCE:
            numbers.append(number)
        k += 1
    return numbers


def directory(subs: Sequence[str], pool: Sequence[str]) -> Iterator[Entity]:
    since = Period(date(2020, 1, 1))
    yield from default_directory((SOURCE, *subs))
    yield Service(MUTATION, 1, "mutation", "citizen", "fan_out")
    yield Authorization("bench-publish", MUTATION, institution=SOURCE)
    for e in subs:
        yield Subscription(f"bench-sub-{e}", e, MUTATION, frozenset({CAPACITY}))
    for c in pool:
        for e in subs:
            yield Integration(c, e, CAPACITY, 2, since)


def build_batches(pool: Sequence[str], first_batch: int, batches: int, size: int,
                  envelope_bytes: int, seed: int) -> list[list[bytes]]:
    rng = random.Random(seed * 1_000_003 + first_batch)

    def envelope(b: int, i: int, payload: bytes) -> bytes:
        return make_envelope(MUTATION, [], payload, sender=SOURCE,
                             subject_citizen=pool[rng.randrange(len(pool))], service_version=1,
                             sender_ticket=f"{b:0{_TICKET_DIGITS}d}-{i:04d}",
                             media_type="application/json")

    pad = max(0, envelope_bytes - len(envelope(first_batch, 0, b"")))
    while pad and len(envelope(first_batch, 0, b"x" * pad)) > envelope_bytes:
        pad -= 1
    payload = b'{"street":"' + b"x" * max(0, pad - 13) + b'"}'
    return [[envelope(b, i, payload) for i in range(size)]
            for b in range(first_batch, first_batch + batches)]


# -- one phase -----------------------------------------------------------------------------------


class Phase(BatchWindow):
    """Publish ``batches`` at the source; drain every subscriber; time it. A refusal ends it."""

    def __init__(self, net: ProcessNetwork, subs: Sequence[str], batches: list[list[bytes]],
                 first_batch: int, args: argparse.Namespace, deadline: float) -> None:
        super().__init__(batches, first_batch, args, deadline, copies=len(subs))
        self.net, self.subs = net, list(subs)
        self.total = sum(len(b) for b in batches) * len(self.subs)
        self.refused: dict[str, int] = {}
        self.delivered = dict.fromkeys(self.subs, 0)
        self.last_ack = 0.0

    def _refused(self, batch: int, reasons: list[str]) -> None:
        with self.lock:
            for r in reasons:
                self.refused[r] = self.refused.get(r, 0) + 1
        raise BenchError(f"the source node refused {len(reasons)} envelope(s):"
                         f" {sorted(set(reasons))}")

    def _submitter(self) -> None:
        with LocalClient(self.net.local_api(SOURCE)) as tx:
            self._submit_all(tx.submit)

    def _consumer(self, sub: str) -> None:
        with LocalClient(self.net.local_api(sub)) as rx:
            while not self.stop.is_set():
                envelopes = rx.fetch(self.args.fetch_max, wait_ms=100)
                if not envelopes:
                    continue
                at = time.monotonic()
                per_batch = self._batches_of(envelopes)
                rx.acknowledge([e.hub_ticket for e in envelopes])
                acked = time.monotonic()
                self._arrived(per_batch, at)  # before the count run() waits on
                with self.lock:
                    self.delivered[sub] += len(envelopes)
                    self.last_ack = max(self.last_ack, acked)

    def run(self) -> tuple[float, float]:
        submitters = self._submitters(self._submitter)
        consumers = [self._thread(f"consume-{s}", self._consumer, s) for s in self.subs]
        with LocalClient(self.net.local_api(SOURCE)) as tx:
            refused_before = tx.status().sent_refused
            for t in consumers:
                t.start()
            start = time.monotonic()
            for t in submitters:
                t.start()
            try:
                while True:
                    with self.lock:
                        got = sum(self.delivered.values())
                    if got >= self.total:
                        break
                    if self.errors:
                        raise BenchError(f"{self.errors[0]!r}") from self.errors[0]
                    if time.monotonic() > self.deadline:
                        raise TimeoutError(f"timed out: {got:,} of {self.total:,} deliveries")
                    refused = tx.status().sent_refused - refused_before
                    if refused:
                        raise BenchError(f"the hub refused {refused} mutation(s):"
                                         f" {hub_refusals(self.net.hub_db)}")
                    time.sleep(0.05)
            finally:
                self._join(submitters + consumers)
        return start, self.last_ack


def backlog(net: ProcessNetwork, subs: Sequence[str]) -> Backlog:
    """Where the envelopes in flight sit: the source's outbox, the hub's queue, the
    subscribers' inboxes."""
    return Backlog.of(net, ("source_outbox", [SOURCE]), ("subscriber_inboxes", subs))


# -- the run -------------------------------------------------------------------------------------



def run(net: ProcessNetwork, subs: Sequence[str], args: argparse.Namespace,
        deadline: float) -> dict[str, Any]:
    from benchmarks.directory import wait_synced

    pool = citizens(args.citizens, seed=20_240_101 + args.seed)
    net.start_hub()
    t = time.monotonic()
    revision = changes = 0
    for part in in_chunks(directory(subs, pool), args.chunk):
        revision = net.apply_directory(part)
        changes += len(part)
    seeded_s = time.monotonic() - t
    sync: dict[str, float] = {}
    for name in (SOURCE, *subs):
        net.start_node(name)
    for name in (SOURCE, *subs):
        with LocalClient(net.local_api(name)) as client:
            sync[name], _ = wait_synced(client, revision, deadline)
    warm_batches = -(-args.warmup // args.batch) if args.warmup > 0 else 0
    n_batches = -(-args.envelopes // args.batch)
    warm = build_batches(pool, 0, warm_batches, args.batch, args.envelope_bytes, args.seed)
    measured = build_batches(pool, warm_batches, n_batches, args.batch, args.envelope_bytes,
                             args.seed)
    envelopes = sum(len(b) for b in measured)
    if warm:
        Phase(net, subs, warm, 0, args, deadline).run()
    names = {"hub": "hub", "source": SOURCE} | {f"sub-{k + 1}": s for k, s in enumerate(subs)}
    pids = {label: net.pid(name) for label, name in names.items()} | {"loadgen": os.getpid()}
    meter, split = ProcessMeter(pids), CpuSplit(pids)
    phase = Phase(net, subs, measured, warm_batches, args, deadline)
    loadavg = os.getloadavg()
    with backlog(net, subs) as waiting:
        meter.start()
        split.start()
        start, end = phase.run()
        meter.stop()
    deliveries = sum(phase.delivered.values())
    cpu = meter.report(deliveries)
    cpu["user_system_s"] = split.stop()
    for proc in cpu["processes"].values():  # per delivery, not per envelope
        proc["cpu_us_per_delivery"] = proc.pop("cpu_us_per_envelope")
    wall = end - start
    lat = phase.latencies_ms()
    return {
        "directory": {"changes": changes, "revision": revision, "seed_s": round(seeded_s, 2),
                      "integrations": len(pool) * len(subs),
                      "fragment_sync_s": {k: round(v, 2) for k, v in sync.items()}},
        "envelopes": envelopes,
        "deliveries": deliveries,
        "wall_s": round(wall, 3),
        "deliveries_per_s": round(deliveries / wall, 1),
        "envelopes_per_s": round(envelopes / wall, 1),
        "batch_latency_ms": p50_p99(lat, with_max=True),
        "submit_call_ms": p50_p99(phase.submit_ms),
        "series": phase.series(start, end, "deliveries"),
        "backlog": waiting.report(),
        "cpu": cpu,
        "loadavg_1m_before": round(loadavg[0], 2),
        "per_subscriber": {f"sub-{k + 1}": phase.delivered[s] for k, s in enumerate(subs)},
        "unexpected_envelopes": phase.unexpected,
        "refused": phase.refused,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.subscribers, args.citizens, args.envelopes, args.batch, args.window,
           args.chunk) <= 0 or args.warmup < 0:
        return usage_error("mutations", "sizes and counts must be positive")
    end_on_signals()
    started = time.monotonic()
    deadline = started + args.timeout
    root, temporary = work_root(args, "crossroads-mut-")
    subs = subscriber_numbers(args.subscribers)
    machine = machine_facts()
    results = results_header(
        "mutations", argv, machine,
        parameters=parameters(args)
        | {"synchronous": "FULL", "audit_log": True, "source": SOURCE, "subscriber_numbers": subs},
        code=code_digests(("node/hub/intake.py", "node/hub/delivery.py", "node/hub/service.py",
                           "node/store/hub_store.py", "node/store/node_store.py",
                           "node/member/uplink.py", "node/member/local_api.py",
                           "node/core/directory.py")))
    announce(f"mutation fan-out benchmark: {args.envelopes:,} mutations x {len(subs)}"
             f" subscribers, {args.citizens:,} citizens", machine, root)
    with Run("mutations", results, args, root, temporary, started) as bench:
        bench.net = fresh_network(root, (SOURCE, *subs), seed=[])
        results["run"] = run(bench.net, subs, args, deadline)
    r = results.get("run")
    print("Results:")
    if r:
        cpu = r["cpu"]
        per = ", ".join(f"{n} {v['cpu_us_per_delivery']:.1f}" for n, v in cpu["processes"].items())
        print(f"  {r['deliveries_per_s']:,.0f} deliveries/s ({r['envelopes_per_s']:,.0f}"
              f" mutations/s x {len(subs)} subscribers); {r['deliveries']:,} deliveries in"
              f" {r['wall_s']:.1f} s; batch latency p50 {r['batch_latency_ms']['p50']} ms")
        print(f"  CPU µs/delivery: {per}; machine cores busy {cpu['machine_cores_busy']}"
              f" (other tenants {cpu['other_cpu_s']} CPU s over {cpu['wall_s']} s)")
        print("  backlog medians: " + ", ".join(
            f"{k} {v['median']}" for k, v in r["backlog"].items() if isinstance(v, dict)))
    return report_end(results, bench.path)


if __name__ == "__main__":
    grpc_runtime.hold_core()  # one gRPC core for every phase (node/grpc_runtime.py)
    raise SystemExit(main())
