"""End-to-end benchmark: sender node -> hub -> receiver node, real processes, loopback mTLS.

``python -m benchmarks.e2e [--envelopes N] [--repeat 3] ...`` (or ``crossroads bench ...``).

What runs
---------
* **End to end.** :class:`node.testing.ProcessNetwork` starts the hub and two institution nodes
  (sender, receiver) as real processes with a fresh throw-away PKI and fresh SQLite files:
  ``synchronous=FULL`` everywhere and the audit log on (it always is). This process is the
  *load generator*: it submits pre-built envelopes (~200 bytes each: service ``demo.message``,
  one receiver, a citizen subject, a sender ticket, the sender field filled in, a padding
  payload) in batches of 1,000 through the sender node's local API (``LocalClient.submit``,
  a few calls in flight from worker threads), and a consumer thread drains the receiver node's
  local API the way an application would: ``fetch(1000)`` then ``acknowledge`` those tickets.
* **Bare relay** (:mod:`benchmarks.relay`): the same batches from a sender process through a
  relay process to a receiver process, plain ``grpc.aio`` bidirectional streams over loopback
  mTLS with the same certificates, no checks, no storage. Its rate is the ceiling for this
  shape of traffic on this machine; we print our rate as a fraction of it.

Both runs start with a warm-up (default 10,000 envelopes, not measured; it also opens every
connection), then measure a fixed number of envelopes (default 200,000; the relay sends those
same batches ``--relay-rounds`` times, default 5, because one pass takes it a fraction of a
second).

Flow control: the load generator keeps at most ``--window`` batches (default 16) *in flight
end to end*: a batch takes a slot when its submit starts and frees it when its last envelope
has been fetched at the receiver. The relay's sender has the same window (the relay answers a
batch only once the receiver acknowledged it). Without such a bound the sender node's outbox
would just grow and latency would measure the backlog.

What the numbers mean
---------------------
* ``envelopes_per_s``: measured envelopes / wall time from the first submit of the measured
  phase to the return of the last ``acknowledge`` at the receiver (relay: last ack back at the
  sender). "Delivered and acknowledged" means the receiving application has it.
* ``batch_latency_ms`` p50/p99: per batch, from the start of its ``Submit`` call to the moment
  its last envelope came back from a ``Fetch`` at the receiver (tracked by the batch number in
  each envelope's ``sender_ticket``). It includes the sender's outbox commit, the uplink's wait
  for a window slot, the hub's checks, commit and delivery, the receiver's commit and the
  consumer's polling. Under saturation it is about ``window * batch / rate`` (Little's law): it
  tells how the pipeline behaves at full load, not the latency of an idle network. Relay:
  sender ``write`` -> receiver receipt.
* ``cpu``: CPU seconds (user + system, all threads) per process over the measured phase, from
  psutil: ``hub``, ``sender`` and ``receiver`` nodes (relay: ``relay``, ``sender``,
  ``receiver``) and ``loadgen`` (this process: submitters + consumer). ``peak_rss_bytes`` is
  each process's high-water mark (``VmHWM``). ``machine_cores_busy`` / ``other_cpu_s`` show
  what else ran on the machine meanwhile.
* ``checks``: envelopes refused (must be 0), sender/receiver node counters, and the hub's audit
  chain verified after the run (``crossroads audit verify``), so the audit log was really on.

Every process listens on 127.0.0.1 only and is stopped at the end, also on failure or
timeout (``--timeout`` is per run). Results go to ``benchmarks/results/e2e-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RECEIVER,
    SENDER,
    BenchError,
    ProcessMeter,
    bench_parser,
    build_batches,
    machine_facts,
    median_of,
    p50_p99,
    rounded,
    usage_error,
    verified,
    write_results,
)
from benchmarks.hub_tier import (
    TierChoice,
    TierNetwork,
    add_tier_options,
    cluster_for,
    hub_tables,
    tier_choices,
    tier_cpu,
)
from benchmarks.phases import (
    Backlog,
    BatchWindow,
    add_traffic_options,
    add_workdir_options,
    announce,
    results_header,
    work_root,
)
from node import grpc_runtime
from node.client import LocalClient
from node.testing import ProcessNetwork

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = bench_parser("e2e", "End-to-end benchmark: sender node -> hub -> receiver node (real"
                            " processes, loopback mTLS), and the bare gRPC relay ceiling.")
    add_traffic_options(p, envelopes=200_000, warmup=10_000, window=16, submitters=4)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per run before abort")
    p.add_argument("--repeat", type=int, default=1, help="runs of each; the summary is the median")
    p.add_argument("--relay-rounds", type=int, default=5,
                   help="the relay sends the measured batches this many times (it is fast)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--relay-only", action="store_true", help="only the bare relay")
    mode.add_argument("--no-relay", action="store_true", help="only the end-to-end run")
    p.add_argument("--no-verify", action="store_true", help="skip the audit chain verification")
    add_tier_options(p, several=True)
    add_workdir_options(p)
    p.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)  # profiling aid
    return p


# -- the end-to-end run --------------------------------------------------------------------


class _Phase(BatchWindow):
    """Submit ``batches`` through the sender's local API, drain the receiver's, time it.
    A refused envelope never arrives: it counts as done for its batch."""

    def __init__(self, sender: LocalClient, receiver: LocalClient, batches: list[list[bytes]],
                 first_batch: int, args: argparse.Namespace, deadline: float) -> None:
        super().__init__(batches, first_batch, args, deadline)
        self.sender, self.receiver = sender, receiver
        self.refused = 0
        self.refusals: dict[str, int] = {}
        self.acknowledged = 0

    def _refused(self, batch: int, reasons: list[str]) -> None:
        with self.lock:
            self.refused += len(reasons)
            for r in reasons:
                self.refusals[r] = self.refusals.get(r, 0) + 1
        self._arrived({batch: len(reasons)}, time.monotonic())

    def run(self) -> tuple[float, float]:
        total = sum(len(b) for b in self.batches)
        threads = self._submitters(self._submit_all, self.sender.submit)
        start = time.monotonic()
        for t in threads:
            t.start()
        try:
            while self.acknowledged + self.refused < total:
                if self.errors:
                    raise BenchError(f"submit failed: {self.errors[0]!r}") from self.errors[0]
                if time.monotonic() > self.deadline:
                    raise TimeoutError(
                        f"timed out: {self.acknowledged} of {total} envelopes acknowledged")
                envelopes = self.receiver.fetch(self.args.fetch_max, wait_ms=100)
                at = time.monotonic()
                if not envelopes:
                    continue
                ours = self._arrived(self._batches_of(envelopes), at)
                self.receiver.acknowledge([e.hub_ticket for e in envelopes])
                self.acknowledged += ours
            end = time.monotonic()
        finally:
            self._join(threads)
        return start, end

    def throughput(self, start: float, end: float) -> dict[str, Any]:
        """Envelopes acknowledged at the receiver from ``start`` to ``end``, and their rate."""
        wall = end - start
        return {"envelopes": self.acknowledged, "wall_s": round(wall, 3),
                "envelopes_per_s": round(self.acknowledged / wall, 1),
                "series": self.series(start, end)}


def traffic_checks(phase: _Phase, tx_status: Any, rx_status: Any, verify: ProcessNetwork | None,
                   sender_node: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """What a traffic run checks after the daemons stopped: refusals, envelopes of no batch of
    the phase, both nodes' counters (``sender_node``: more of the sender's), ``extra``; and
    the hub's audit chain, verified, when ``verify`` is its network."""
    checks: dict[str, Any] = {
        "refused": phase.refused,
        "refusals": phase.refusals,
        "unexpected_envelopes": phase.unexpected,
        "sender_node": {"sent_accepted": tx_status.sent_accepted,
                        "sent_refused": tx_status.sent_refused,
                        "outbox_pending": tx_status.outbox_pending, **(sender_node or {})},
        "receiver_node": {"inbox_total": rx_status.inbox_total,
                          "inbox_unacknowledged": rx_status.inbox_unacknowledged},
        **extra,
    }
    tables = None if verify is None else hub_tables(verify)
    if tables is not None:
        try:
            checks["audit"] = verified(tables, "verify_s")
        finally:
            tables.close()
    return checks


def _backlog(net: ProcessNetwork) -> Backlog:
    """Where the envelopes in flight sit: in the sender's outbox (not yet acknowledged by the
    hub), in the hub's queue (not yet delivered) or in the receiver's inbox (not yet fetched
    and acknowledged)."""
    return Backlog.of(net, ("sender_outbox", [SENDER]), ("receiver_inbox", [RECEIVER]))


def run_e2e(net: TierNetwork, args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    warm_batches = -(-args.warmup // args.batch)
    n_batches = -(-args.envelopes // args.batch)
    warm = build_batches(0, warm_batches, args.batch, args.envelope_bytes)
    measured = build_batches(warm_batches, n_batches, args.batch, args.envelope_bytes)
    count = sum(len(b) for b in measured)
    net.wipe()
    try:
        net.start()
        tier, trees = net.tier_pids()
        pids = {**tier, "sender": net.pid(SENDER), "receiver": net.pid(RECEIVER),
                "loadgen": os.getpid()}
        with LocalClient(net.local_api(SENDER)) as tx, LocalClient(net.local_api(RECEIVER)) as rx:
            if warm:
                _Phase(tx, rx, warm, 0, args, deadline).run()
            meter = ProcessMeter(pids, trees)
            phase = _Phase(tx, rx, measured, warm_batches, args, deadline)
            with _backlog(net) as backlog:
                meter.start()
                start, end = phase.run()
                meter.stop()
            cpu = meter.report(count)
            tx_status, rx_status = tx.status(), rx.status()
            if args.hold:
                input(f"holding; pids {pids}; press Enter to stop ")
    finally:
        net.stop_all()
    checks = traffic_checks(phase, tx_status, rx_status, None if args.no_verify else net,
                            synchronous=net.hub_table()["synchronous"])
    lat = phase.latencies_ms()
    cpu["tier_us_per_envelope"] = tier_cpu(cpu, tier)
    return {
        **net.facts(),
        **phase.throughput(start, end),
        "batch_latency_ms": {
            "what": "Submit call start -> last envelope of the batch fetched at the receiver",
            "batches": len(lat),
            **p50_p99(lat, with_max=True),
        },
        "submit_call_ms": p50_p99(phase.submit_ms),
        "backlog_envelopes": backlog.report(),
        "cpu": cpu,
        "checks": checks,
    }


# -- driver --------------------------------------------------------------------------------



def _summary(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return None
    names = list(ok[0]["cpu"]["processes"])
    return {
        "runs": len(ok),
        "envelopes_per_s": median_of(r["envelopes_per_s"] for r in ok),
        "batch_latency_ms_p50": median_of(r["batch_latency_ms"]["p50"] for r in ok),
        "batch_latency_ms_p99": median_of(r["batch_latency_ms"]["p99"] for r in ok),
        "cpu_s": {n: median_of(r["cpu"]["processes"][n]["cpu_s"] for r in ok) for n in names},
        "cpu_us_per_envelope": {
            n: median_of(r["cpu"]["processes"][n]["cpu_us_per_envelope"] for r in ok)
            for n in names
        },
        "peak_rss_mib": {
            n: rounded(median_of((r["cpu"]["processes"][n]["peak_rss_bytes"] or 0) / 2**20 for r in ok))
            for n in names
        },
        "machine_cores_busy": median_of(r["cpu"]["machine_cores_busy"] for r in ok),
        "tier_us_per_envelope": {
            n: median_of(r["cpu"]["tier_us_per_envelope"][n] for r in ok)
            for n in ok[0]["cpu"].get("tier_us_per_envelope", {})
        },
    }


def _line(label: str, s: dict[str, Any] | None) -> str:
    if s is None:
        return f"  {label:<11}: failed (or not run)"
    cpu = " ".join(f"{n} {v:.1f}" for n, v in s["cpu_s"].items())
    return (f"  {label:<11}: {s['envelopes_per_s']:>9,.0f} env/s   batch latency p50"
            f" {s['batch_latency_ms_p50']:.0f} ms, p99 {s['batch_latency_ms_p99']:.0f} ms"
            f"   CPU s: {cpu}")


def _run_all(net: TierNetwork, root: Path, choices: list[TierChoice], args: argparse.Namespace,
             results: dict[str, Any]) -> None:
    """Each repeat: every tier in turn (interleaved, so they share the machine's moods),
    then the bare relay."""
    for rep in range(args.repeat):
        for choice in [] if args.relay_only else choices:
            net.choice = choice
            label = "e2e" if len(choices) == 1 else f"e2e {choice.label}"
            results["e2e"].append({"tier": choice.label, **net.facts(),
                                   **_guarded(label, rep, run_e2e, net, args)})
        if not args.no_relay:
            results["relay"].append(_guarded("relay", rep, _relay, net, root, rep, args))


def main(argv: list[str] | None = None) -> int:
    if argv and argv[0] == "--":  # ``crossroads bench -- --envelopes N`` passes the "--" on
        argv = argv[1:]
    args = _parser().parse_args(argv)
    if min(args.envelopes, args.batch, args.window, args.repeat, args.relay_rounds) <= 0:
        return usage_error("e2e", "--envelopes, --batch, --window, --repeat, --relay-rounds"
                                  " must be positive")
    try:
        choices = tier_choices(args)
    except ValueError as exc:
        return usage_error("e2e", str(exc))
    root, temporary = work_root(args, "crossroads-bench-")
    machine = machine_facts()
    results = results_header(
        "e2e", argv, machine,
        parameters={
            "envelopes": args.envelopes, "warmup": args.warmup, "batch": args.batch,
            "envelope_bytes": args.envelope_bytes, "window_batches": args.window,
            "submitters": args.submitters, "fetch_max": args.fetch_max,
            "timeout_s_per_run": args.timeout, "repeat": args.repeat,
            "synchronous": "FULL", "audit_log": True, "relay_rounds": args.relay_rounds,
            "tiers": [c.label for c in choices],
        },
        e2e=[], relay=[])
    announce(f"benchmark: {args.envelopes:,} envelopes of ~{args.envelope_bytes} B in batches of"
             f" {args.batch:,}, window {args.window} batches, {args.repeat} run(s) each;"
             f" hub tiers: {', '.join(c.label for c in choices)}", machine, root)
    failed = False
    net: TierNetwork | None = None
    try:
        with cluster_for(choices, root) as cluster:
            net = TierNetwork(root / "net", institutions=(SENDER, RECEIVER), cluster=cluster)
            try:
                _run_all(net, root, choices, args, results)
            finally:
                net.stop_all()
    except KeyboardInterrupt:
        failed = True
        results["interrupted"] = True
    finally:
        tiers = {c.label: _summary([r for r in results["e2e"] if r["tier"] == c.label])
                 for c in choices}
        e2e, relay = tiers[choices[0].label], _summary(results["relay"])
        results["summary"] = {"e2e": e2e, "relay": relay, "tiers": tiers}
        if e2e and relay:
            results["summary"]["ratio"] = round(e2e["envelopes_per_s"] / relay["envelopes_per_s"], 4)
        failed = failed or any("error" in r for r in results["e2e"] + results["relay"])
        results["status"] = "failed" if failed else "ok"
        path = write_results("e2e", results, Path(args.out) if args.out else None)
        if temporary and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("Results (median of runs):")
    if not args.relay_only:
        for label, summary in tiers.items():
            print(_line("end to end" if len(tiers) == 1 else label, summary))
    if not args.no_relay:
        print(_line("bare relay", relay))
    if "ratio" in results["summary"]:
        print(f"  ratio      : end to end = {results['summary']['ratio']:.1%} of the bare relay")
    print(f"  written to {path}")
    return 1 if failed else 0


def _guarded(kind: str, rep: int, body: Any, *args: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        result: dict[str, Any] = body(*args)
    except (TimeoutError, BenchError, RuntimeError, OSError) as exc:
        print(f"  {kind} run {rep + 1}: FAILED after {time.monotonic() - started:.0f} s: {exc}",
              file=sys.stderr, flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"}
    s = result
    with contextlib.suppress(KeyError, TypeError):
        print(f"  {kind} run {rep + 1}: {s['envelopes_per_s']:,.0f} env/s, batch latency p50"
              f" {s['batch_latency_ms']['p50']:.0f} ms p99 {s['batch_latency_ms']['p99']:.0f} ms",
              flush=True)
    return result


def _relay(net: ProcessNetwork, root: Path, rep: int, args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.relay import run_relay

    return run_relay(
        root / f"relay-{rep + 1}",
        ca=net.pki.ca_cert,
        hub_cert=(net.hub_key, net.hub_cert),
        sender_cert=net.node_certs[SENDER],
        receiver_cert=net.node_certs[RECEIVER],
        envelopes=args.envelopes, warmup=args.warmup, batch=args.batch, window=args.window,
        envelope_bytes=args.envelope_bytes, deadline=time.monotonic() + args.timeout,
        rounds=args.relay_rounds,
    )


if __name__ == "__main__":
    grpc_runtime.hold_core()  # one gRPC core for every phase (node/grpc_runtime.py)
    raise SystemExit(main())
