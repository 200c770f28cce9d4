"""Directory benchmark (issue 3): checks at scale, first sync of a fragment, hub memory.

``python -m benchmarks.directory [--integrations N] [--citizens N] [--institutions N]
[--envelopes N] [--repeat 3] [--relay-rate R | --no-relay] ...``

What runs
---------
1. **A directory at scale.** ``--institutions`` (50) institutions with valid enterprise numbers,
   ``--citizens`` (200,000) valid citizen numbers, ``--integrations`` (1,000,000) integrations
   over them, services (among them three that need an integration: a consultation with a
   fixed provider, a mutation pushed to its subscribers and a fan-out declaration, plus filler
   services), authorizations (per institution, per sector, some expired), subscriptions, a few
   replaced numbers. Who holds what:

   * the **sender** (0403019261) has integrated *every* citizen (capacity 1, phase 2): it
     may ask about anyone it sends about;
   * the **receiver** (0428759497) too: it is the consultation's provider, the mutation's
     only subscriber and the only other institution authorized for the fan-out service, so
     every envelope goes to it (and to no idle institution);
   * the **first-sync institution** (0566988259) holds ``--first-sync-integrations``
     (100,000);
   * the rest is spread over the other institutions (several capacities per citizen, one in
     ten ended in 2023), so each citizen has ~5 integrations the hub reads and filters.

   By default (``--load api``) the directory is seeded through the running hub's admin API
   (``ProcessNetwork.apply_directory``, ``DirectoryAdmin.Apply``) in chunks of ``--chunk``
   (50,000) changes, and the hub is then restarted, so "RSS after start" is a fresh start
   with the full directory. ``--load direct`` writes ``directory.sqlite`` before the hub
   starts, in this process, through :meth:`node.hub.directory.Directory.apply` (validation +
   :meth:`DirectoryStore.apply`: the admin API's code path without gRPC), same chunks.
   Both take about half a minute for 1,000,000 integrations (``synchronous=FULL``).
2. **Checks at scale.** :class:`node.testing.ProcessNetwork` starts the hub, the sender and
   the receiver as real processes (loopback mTLS, fresh PKI); the benchmark waits until both
   nodes have their fragment (their ``directory_revision`` equals the hub's; the times are
   reported too: these fragments hold ``--citizens`` integrations each). Then the
   end-to-end traffic of :mod:`benchmarks.e2e` (same load generator, window, consumer,
   backlog sampling, CPU accounting) with envelopes that need every directory check
   (``--mix``, default 2:1:1): consultations (fixed provider), mutations (pushed to the
   subscribers holding the subject: the receiver is the mutation's only subscriber) and
   fan-out declarations (to the institutions authorized for the service that hold the
   subject: the receiver, past expired grants), capacity 1, subjects drawn at random from
   the citizens, batches of 1,000. Every envelope passes the sender
   node's fragment checks and the hub's (authorization, integration, phase, routing by the
   directory). ``--repeat`` runs: each starts from a fresh ``hub.sqlite`` and fresh
   ``node.sqlite`` files (queues and audit log empty), keeping the directory and the nodes'
   fragments. The ratio to the bare relay uses ``--relay-rate`` if given, else runs
   :mod:`benchmarks.relay` once in the same invocation (``--no-relay`` skips it).
3. **First sync.** A fresh node (no ``fragment.sqlite``) of the first-sync institution is
   started against the same hub; the time from its launch (and from its ready file) until
   its ``LocalClient.status().directory_revision`` equals the hub's revision (``--sync-repeat``
   times, median), and the size of its ``fragment.sqlite`` (+ WAL).
4. **Hub memory**: RSS after start, after the nodes synced, after the traffic, after the
   first sync, and the peak (``VmHWM``); ``directory.sqlite`` size.
5. **Breakdown** (in this process, after the daemons stopped; ``--no-breakdown`` skips it):
   the directory steps that scale with the directory, timed alone on the real files: the
   hub's per-batch lookup (:meth:`Directory.view_for` for 1,000 random subjects), the
   :func:`decide` calls of a batch, the node's :meth:`FragmentStore.view`, and the parts of
   a first sync (hub snapshot query, building and signing the parts, verifying and decoding
   them, applying the snapshot to an empty fragment).

Everything listens on 127.0.0.1 and every process is stopped at the end, also on failure
or timeout (``--timeout`` bounds the whole invocation). Results:
``benchmarks/results/directory-<timestamp>.json`` and a summary on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import (
    RECEIVER,
    SENDER,
    BenchError,
    ProcessMeter,
    bench_parser,
    citizens,
    end_on_signals,
    hub_refusals,
    in_chunks,
    machine_facts,
    median_of,
    p50_p99,
    peak_rss_bytes,
    usage_error,
    write_results,
)
from benchmarks.phases import (
    add_traffic_options,
    add_workdir_options,
    announce,
    fresh_network,
    parameters,
    results_header,
    work_root,
)
from node import grpc_runtime
from node.client import LocalClient, make_envelope
from node.core.directory import (
    Authorization,
    Entity,
    Institution,
    Integration,
    Period,
    Replacement,
    Service,
    Subscription,
)
from node.core.identifiers import enterprise_check_digits
from node.testing import DEFAULT_INSTITUTIONS, SECTORS, ProcessNetwork

__all__ = ["main"]

FIRST_SYNC = DEFAULT_INSTITUTIONS[2]  # 0566988259
CONSULT = "bench.consultation"  # fixed provider (the receiver), integration required
MUTATION = "bench.mutation"  # a mutation: pushed to the subscribers holding the subject
FANOUT = "bench.fanout"  # fan-out to the authorized holders of the subject (not a mutation)
INTEGRATE = "directory.integration"  # node.hub.directory.INTEGRATION_SERVICE
FILLER_SERVICES = 20
CAPACITY = 1
BEGIN = Period(date(2020, 1, 1))
ENDED = Period(date(2020, 1, 1), date(2023, 12, 31))
_TICKET_DIGITS = 7


def _parser() -> argparse.ArgumentParser:
    p = bench_parser("directory", "Directory benchmark: checks at scale end to end, first sync"
                                  " of a fragment, hub memory (real processes, loopback mTLS).")
    size = p.add_argument_group("directory size")
    size.add_argument("--integrations", type=int, default=1_000_000)
    size.add_argument("--citizens", type=int, default=200_000)
    size.add_argument("--institutions", type=int, default=50)
    size.add_argument("--first-sync-integrations", type=int, default=100_000,
                      help="integrations of the institution whose first sync is timed")
    size.add_argument("--replacements", type=int, default=1_000, help="replaced numbers")
    size.add_argument("--load", choices=("api", "direct"), default="api",
                      help="write directory.sqlite before the hub starts (direct), or seed it"
                           " through the running hub's admin API (api)")
    size.add_argument("--chunk", type=int, default=50_000, help="changes per apply")
    size.add_argument("--reuse-directory", action="store_true",
                      help="with --workdir: keep the directory.sqlite an earlier run left there"
                           " (it must have been made with the same size options)")
    traffic = p.add_argument_group("traffic")
    add_traffic_options(traffic, envelopes=200_000, warmup=10_000, window=16, submitters=4)
    traffic.add_argument("--mix", default="2,1,1", type=_mix,
                         help="weights of consultations (fixed provider), mutations (pushed to"
                              " subscribers) and fan-out declarations (authorized holders)")
    traffic.add_argument("--repeat", type=int, default=1, help="traffic runs (summary: median)")
    traffic.add_argument("--no-traffic", action="store_true", help="skip the traffic runs")
    relay = p.add_mutually_exclusive_group()
    relay.add_argument("--relay-rate", type=float,
                       help="a known bare-relay rate (env/s) for the ratio; default: run the relay")
    relay.add_argument("--no-relay", action="store_true", help="no relay, no ratio")
    p.add_argument("--relay-rounds", type=int, default=5)
    p.add_argument("--sync-repeat", type=int, default=1, help="first-sync measurements")
    p.add_argument("--no-first-sync", action="store_true", help="skip the first-sync step")
    p.add_argument("--no-breakdown", action="store_true", help="skip the in-process breakdown")
    p.add_argument("--no-verify", action="store_true", help="skip the audit chain verification")
    p.add_argument("--timeout", type=float, default=2_400.0,
                   help="seconds for the whole invocation before it is aborted")
    p.add_argument("--seed", type=int, default=3)
    add_workdir_options(p)
    return p


# -- the directory ---------------------------------------------------------------------------


def _institution_numbers(count: int) -> list[str]:
    """``count`` valid enterprise numbers: the test institutions first, then made-up ones."""
    numbers = list(DEFAULT_INSTITUTIONS[:count])
    k = 0
    while len(numbers) < count:
        first8 = f"0{7_000_000 + 10_007 * k:07d}"
        number = first8 + enterprise_check_digits(first8)
        if number not in numbers:
            numbers.append(number)
        k += 1
    return numbers


class Plan:
    """What goes into the directory, generated on the fly (the same for a given size)."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.institutions < 4:
            raise BenchError("--institutions must be at least 4 (sender, receiver, first-sync,"
                             " others)")
        self.n_integrations = args.integrations
        self.n_citizens = args.citizens
        self.first_sync = min(args.first_sync_integrations, args.integrations)
        self.rest = args.integrations - 2 * args.citizens - self.first_sync
        if self.rest < 0:
            raise BenchError(
                f"--integrations ({args.integrations:,}) must be at least 2 x --citizens"
                f" ({2 * args.citizens:,}: the sender and the receiver hold every citizen)"
                f" + --first-sync-integrations ({self.first_sync:,})")
        self.institutions = _institution_numbers(args.institutions)
        self.others = [e for e in self.institutions if e not in (SENDER, RECEIVER, FIRST_SYNC)]
        everyone = citizens(args.citizens + args.replacements, seed=20_240_101 + args.seed)
        self.citizens = everyone[:args.citizens]
        self.replaced = everyone[args.citizens:]
        self.sector = {e: SECTORS[i % len(SECTORS)] for i, e in enumerate(self.institutions)}

    def small(self) -> list[Entity]:
        """Institutions, services, authorizations, replacements."""
        out: list[Entity] = [Institution(e, self.sector[e], f"Institution {e}")
                             for e in self.institutions]
        out += [
            Service(CONSULT, 1, "consultation", "citizen", "fixed", provider=RECEIVER,
                    integration_required=True, min_phase=1),
            Service(MUTATION, 1, "mutation", "citizen", "fan_out", integration_required=True,
                    min_phase=1),
            Service(FANOUT, 1, "declaration", "citizen", "fan_out", integration_required=True,
                    min_phase=1),
            Service("demo.message", 1, "declaration", "any", "explicit"),
            Service(INTEGRATE, 1, "integration", "citizen", "explicit"),
        ]
        fillers = [f"bench.filler.{k:02d}" for k in range(FILLER_SERVICES)]
        for k, sid in enumerate(fillers):
            out.append(Service(sid, 1, ("consultation", "mutation")[k % 2], "citizen", "fixed",
                               provider=self.others[k % len(self.others)],
                               integration_required=k % 3 == 0))
        auths: list[Authorization] = [
            Authorization("bench-consult-sender", CONSULT, institution=SENDER,
                          capacities=frozenset({CAPACITY}), legal_context=""),
            Authorization("bench-mutation-sender", MUTATION, institution=SENDER),
            Authorization("bench-fanout-sender", FANOUT, institution=SENDER),
            Authorization("bench-fanout-receiver", FANOUT, institution=RECEIVER),
        ]
        # Expired grants on the fan-out service: the hub sees them and must skip them.
        auths += [Authorization(f"bench-fanout-old-{e}", FANOUT, institution=e,
                                period=Period(date(2015, 1, 1), date(2019, 12, 31)))
                  for e in self.others[:10]]
        for i, e in enumerate(self.institutions):
            auths.append(Authorization(f"integrate-{e}", INTEGRATE, institution=e))
            auths.append(Authorization(f"demo-{e}", "demo.message", institution=e))
            for j in range(4):
                sid = fillers[(i * 4 + j) % len(fillers)]
                auths.append(Authorization(f"{sid}-{e}", sid, institution=e,
                                           capacities=frozenset({1 + j % 3})))
        for k, sector in enumerate(sorted(set(SECTORS))):
            auths.append(Authorization(f"sector-{sector}-consult", fillers[k], sector=sector))
            auths.append(Authorization(f"sector-{sector}-fanout-old", FANOUT, sector=sector,
                                       period=Period(date(2010, 1, 1), date(2014, 12, 31))))
        out += auths
        # The receiver is the only subscriber of the traffic's mutation (the others subscribe
        # to filler services), so every mutation goes to it and to no idle institution.
        out.append(Subscription("bench-mutation-receiver", RECEIVER, MUTATION,
                                frozenset({CAPACITY})))
        out += [Subscription(f"sub-{k:02d}-{e}", e, fillers[k % len(fillers)])
                for k, e in enumerate(self.institutions)]
        out += [Replacement(old, self.citizens[k * 97 % len(self.citizens)])
                for k, old in enumerate(self.replaced)]
        return out

    def integrations(self) -> Iterator[Integration]:
        for c in self.citizens:
            yield Integration(c, SENDER, CAPACITY, 2, BEGIN)
            yield Integration(c, RECEIVER, CAPACITY, 2, BEGIN)
        n = self.n_citizens
        for j in range(self.first_sync):
            yield Integration(self.citizens[j % n], FIRST_SYNC, 1 + j // n, 1 + j % 3, BEGIN)
        others = self.others
        for j in range(self.rest):
            round_ = j // n
            c = j % n
            yield Integration(self.citizens[c], others[(c + round_) % len(others)],
                              1 + round_ // len(others), j % 4,
                              ENDED if j % 10 == 9 else BEGIN)

    def entities(self) -> Iterator[Entity]:
        yield from self.small()
        yield from self.integrations()

    def counts(self) -> dict[str, Any]:
        small = self.small()
        return {
            "institutions": len(self.institutions),
            "citizens": self.n_citizens,
            "integrations": self.n_integrations,
            "integrations_of": {"sender": self.n_citizens, "receiver": self.n_citizens,
                                "first_sync": self.first_sync,
                                "others": self.rest,
                                "per_other_institution": round(self.rest / len(self.others))},
            "services": sum(isinstance(e, Service) for e in small),
            "authorizations": sum(isinstance(e, Authorization) for e in small),
            "replacements": sum(isinstance(e, Replacement) for e in small),
            "subscriptions": sum(isinstance(e, Subscription) for e in small),
            "changes": len(small) + self.n_integrations,
        }


def load_direct(net: ProcessNetwork, plan: Plan, chunk: int, deadline: float) -> dict[str, Any]:
    """Write the directory into the hub's directory.sqlite before the hub starts."""
    from node.hub.directory import Directory
    from node.store.directory_store import DirectoryStore
    from node.wire.signed import ensure_signing_key

    async def run() -> dict[str, Any]:
        path = net.root / "hub" / "directory.sqlite"
        directory = Directory(DirectoryStore(path, "FULL"), ensure_signing_key(net.directory_key),
                              preload=False)
        await directory.open()
        applied = chunks = 0
        apply_s = 0.0
        started = time.monotonic()
        try:
            for part in in_chunks(plan.entities(), chunk):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"loading timed out after {applied:,} changes")
                t = time.monotonic()
                await directory.apply([(e, False) for e in part])
                apply_s += time.monotonic() - t
                applied += len(part)
                chunks += 1
        finally:
            await directory.close()
        total = time.monotonic() - started
        return {"mode": "direct", "changes": applied, "chunks": chunks, "chunk": chunk,
                "seconds": round(total, 2), "apply_seconds": round(apply_s, 2),
                "generate_seconds": round(total - apply_s, 2),
                "changes_per_s": round(applied / total), "revision": directory.revision}

    return asyncio.run(run())


def reuse_directory(path: Path) -> dict[str, Any]:
    """The directory left in ``--workdir`` by an earlier run (``--reuse-directory``)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        revision = int(conn.execute(
            "SELECT value FROM dir_meta WHERE key = 'revision'").fetchone()[0])
        count = int(conn.execute("SELECT count(*) FROM integrations").fetchone()[0])
    finally:
        conn.close()
    return {"mode": "reused", "changes": revision, "integrations": count, "seconds": None,
            "revision": revision}


def load_api(net: ProcessNetwork, plan: Plan, chunk: int, deadline: float) -> dict[str, Any]:
    """Seed the directory through the running hub's admin API, then restart the hub."""
    net.start_hub()
    applied = chunks = revision = 0
    apply_s = 0.0
    started = time.monotonic()
    per_chunk: list[float] = []
    for part in in_chunks(plan.entities(), chunk):
        if time.monotonic() > deadline:
            raise TimeoutError(f"loading timed out after {applied:,} changes")
        t = time.monotonic()
        revision = net.apply_directory(part)
        per_chunk.append(time.monotonic() - t)
        apply_s += per_chunk[-1]
        applied += len(part)
        chunks += 1
    total = time.monotonic() - started
    hub_peak = peak_rss_bytes(net.pid("hub"))
    net.stop("hub")
    return {"mode": "api", "hub_peak_rss_bytes": hub_peak, "changes": applied,
            "chunks": chunks, "chunk": chunk,
            "seconds": round(total, 2), "apply_seconds": round(apply_s, 2),
            "generate_seconds": round(total - apply_s, 2),
            "apply_call_s": {"first": round(per_chunk[0], 2), "last": round(per_chunk[-1], 2),
                             "median": round(statistics.median(per_chunk), 2)},
            "changes_per_s": round(applied / total), "revision": revision}


# -- traffic ------------------------------------------------------------------------------------


def _envelope(service: str, subject: str, ticket: str, payload: bytes) -> bytes:
    return make_envelope(service, [], payload, sender=SENDER, subject_citizen=subject,
                         service_version=1, capacity=CAPACITY, sender_ticket=ticket)


def _mix(text: str) -> tuple[float, float, float]:
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: three numbers, e.g. 2,1,1") from None
    if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: three non-negative weights, e.g. 2,1,1")
    return weights  # type: ignore[return-value]


def build_traffic(plan: Plan, first_batch: int, batches: int, batch_size: int,
                  envelope_bytes: int, mix: tuple[float, float, float],
                  seed: int) -> list[list[bytes]]:
    """Pre-built envelopes: subjects drawn at random from the citizens; consultations,
    mutations and fan-out declarations in the proportions of ``mix``; the batch number in
    the sender ticket."""
    rng = random.Random(seed * 1_000_003 + first_batch)
    subjects = plan.citizens
    probe = plan.citizens[0]
    bare = len(_envelope(CONSULT, probe, f"{0:0{_TICKET_DIGITS}d}-0000", b""))
    pad = max(0, envelope_bytes - bare)
    while pad and len(_envelope(CONSULT, probe, f"{0:0{_TICKET_DIGITS}d}-0000",
                                b"x" * pad)) > envelope_bytes:
        pad -= 1
    payload = b"x" * pad
    services = (CONSULT, MUTATION, FANOUT)
    out = []
    for b in range(first_batch, first_batch + batches):
        out.append([
            _envelope(rng.choices(services, mix)[0],
                      subjects[rng.randrange(len(subjects))],
                      f"{b:0{_TICKET_DIGITS}d}-{i:04d}", payload)
            for i in range(batch_size)
        ])
    return out


def _rss(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def _file_sizes(path: Path) -> dict[str, int]:
    sizes = {}
    for suffix in ("", "-wal", "-shm"):
        f = Path(f"{path}{suffix}")
        if f.exists():
            sizes[f.name] = f.stat().st_size
    return sizes


def wait_synced(client: LocalClient, revision: int, deadline: float,
                poll_s: float = 0.05) -> tuple[float, Any]:
    """Poll the node's status until its fragment reaches ``revision``; seconds waited."""
    started = time.monotonic()
    while True:
        status = client.status()
        if status.directory_revision >= revision:
            return time.monotonic() - started, status
        if time.monotonic() > deadline:
            raise TimeoutError(f"fragment at revision {status.directory_revision}, lag"
                               f" {status.directory_lag}, hub at {revision}")
        time.sleep(poll_s)


def _wipe_run_state(net: ProcessNetwork) -> None:
    """Fresh queues, audit log and outboxes/inboxes; keeps directory.sqlite and fragments.

    A daemon refuses a data directory holding only part of its state (node/store/data_dir.py:
    ``directory.sqlite`` without ``hub.sqlite`` is what a botched restore looks like), so the
    queues' databases are not just deleted: each is created anew and empty, as ``init``
    creates it, beside the directory or fragment it goes with."""
    from node.store.hub_store import HubStore
    from node.store.node_store import NodeStore
    from node.wire.signed import ensure_signing_key

    hub_dir = net.root / "hub"
    node_dirs = [net.root / "nodes" / e for e in (SENDER, RECEIVER)]
    for path in [*hub_dir.glob("hub.sqlite*"), *(p for d in node_dirs for p in d.glob("node.sqlite*"))]:
        path.unlink()
    stores: list[HubStore | NodeStore] = []
    if (hub_dir / "directory.sqlite").exists():
        stores.append(HubStore(hub_dir / "hub.sqlite", signer=ensure_signing_key(net.directory_key)))
    stores += [NodeStore(d / "node.sqlite") for d in node_dirs if (d / "fragment.sqlite").exists()]

    async def create() -> None:
        for store in stores:
            await store.open()
            await store.close()

    asyncio.run(create())
    shutil.rmtree(net.root / "sock", ignore_errors=True)
    for ready in net.root.glob("*.ready"):
        ready.unlink()


class _RefusalWatch:
    """Stops a phase as soon as the hub refuses an envelope. The load generator sees the
    sender node's own refusals in the ``Submit`` outcomes, but a refusal by the hub comes
    later (the node counts it in ``sent_refused``) and would leave the consumer waiting for
    envelopes that never arrive."""

    def __init__(self, net: ProcessNetwork, phase: Any, interval: float = 0.5) -> None:
        self.net, self.phase, self.interval = net, phase, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="refusals")
        self.baseline = 0

    def _run(self) -> None:
        with LocalClient(self.net.local_api(SENDER)) as client:
            while not self.stop.wait(self.interval):
                with contextlib.suppress(Exception):
                    refused = client.status().sent_refused
                    if refused > self.baseline:
                        self.phase.errors.append(BenchError(
                            f"the hub refused {refused - self.baseline} envelope(s):"
                            f" {hub_refusals(self.net.hub_db)}"))
                        self.phase.stop.set()
                        return

    def __enter__(self) -> _RefusalWatch:
        with LocalClient(self.net.local_api(SENDER)) as client:
            self.baseline = client.status().sent_refused
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def run_traffic(net: ProcessNetwork, plan: Plan, args: argparse.Namespace, rep: int,
                revision: int, deadline: float) -> dict[str, Any]:
    from benchmarks.e2e import _backlog, _Phase, traffic_checks

    warm_batches = -(-args.warmup // args.batch)
    n_batches = -(-args.envelopes // args.batch)
    warm = build_traffic(plan, 0, warm_batches, args.batch, args.envelope_bytes,
                         args.mix, args.seed + rep)
    measured = build_traffic(plan, warm_batches, n_batches, args.batch, args.envelope_bytes,
                             args.mix, args.seed + rep)
    count = sum(len(b) for b in measured)
    _wipe_run_state(net)
    memory: dict[str, Any] = {}
    sync: dict[str, Any] = {}
    try:
        t = time.monotonic()
        net.start_hub()
        hub_start_s = time.monotonic() - t
        hub = net.pid("hub")
        time.sleep(1.0)
        memory["hub_rss_after_start"] = _rss(hub)
        for name in (SENDER, RECEIVER):  # one at a time: each sync is timed alone
            t = time.monotonic()
            net.start_node(name)
            ready = time.monotonic() - t
            with LocalClient(net.local_api(name)) as client:
                waited, status = wait_synced(client, revision, deadline)
            sync[name] = {"launch_to_ready_s": round(ready, 2),
                          "synced_after_ready_s": round(waited, 2),
                          "revision": status.directory_revision,
                          "fragment_total_bytes": sum(_file_sizes(
                              net.root / "nodes" / name / "fragment.sqlite").values())}
        with LocalClient(net.local_api(SENDER)) as tx, LocalClient(net.local_api(RECEIVER)) as rx:
            memory["hub_rss_after_nodes_synced"] = _rss(hub)
            memory["hub_peak_rss_after_nodes_synced"] = peak_rss_bytes(hub)
            pids = {"hub": hub, "sender": net.pid(SENDER), "receiver": net.pid(RECEIVER),
                    "loadgen": os.getpid()}
            if warm:
                warm_phase = _Phase(tx, rx, warm, 0, args, deadline)
                with _RefusalWatch(net, warm_phase):
                    warm_phase.run()
            meter = ProcessMeter(pids)
            phase = _Phase(tx, rx, measured, warm_batches, args, deadline)
            with _backlog(net) as backlog, _RefusalWatch(net, phase):
                meter.start()
                start, end = phase.run()
                meter.stop()
            cpu = meter.report(count)
            memory["hub_rss_after_traffic"] = _rss(hub)
            memory["hub_peak_rss"] = peak_rss_bytes(hub)
            tx_status, rx_status = tx.status(), rx.status()
    finally:
        net.stop_all()
    checks = traffic_checks(
        phase, tx_status, rx_status, None if args.no_verify else net,
        sender_node={"directory_revision": tx_status.directory_revision})
    return {
        **phase.throughput(start, end),
        "batch_latency_ms": p50_p99(phase.latencies_ms(), with_max=True),
        "submit_call_ms": p50_p99(phase.submit_ms),
        "backlog_envelopes": backlog.report(),
        "cpu": cpu,
        "checks": checks,
        "hub_start_s": round(hub_start_s, 2),
        "node_sync": sync,
        "memory_bytes": memory,
    }



# -- first sync -----------------------------------------------------------------------------


def run_first_sync(net: ProcessNetwork, revision: int, repeat: int,
                   deadline: float) -> dict[str, Any]:
    """Start a fresh node of FIRST_SYNC against the hub, time until its fragment is current."""
    _wipe_run_state(net)
    runs = []
    memory: dict[str, Any] = {}
    try:
        net.start_hub()
        hub = net.pid("hub")
        time.sleep(1.0)
        memory["hub_rss_before"] = _rss(hub)
        for _ in range(repeat):
            shutil.rmtree(net.root / "nodes" / FIRST_SYNC, ignore_errors=True)
            hub_cpu = psutil.Process(hub).cpu_times()
            t0 = time.monotonic()
            net.start_node(FIRST_SYNC, init=True)  # a new node each time: a first start
            ready_s = time.monotonic() - t0
            with LocalClient(net.local_api(FIRST_SYNC)) as client:
                waited, status = wait_synced(client, revision, deadline)
            total = time.monotonic() - t0
            hub_cpu_after = psutil.Process(hub).cpu_times()
            node = psutil.Process(net.pid(FIRST_SYNC))
            node_cpu = node.cpu_times()
            frag = net.root / "nodes" / FIRST_SYNC / "fragment.sqlite"
            sizes = _file_sizes(frag)
            runs.append({
                "seconds": round(total, 2),
                "launch_to_ready_s": round(ready_s, 2),
                "ready_to_synced_s": round(waited, 2),
                "revision": status.directory_revision,
                "directory_lag": status.directory_lag,
                "fragment_sqlite_bytes": sizes,
                "fragment_total_bytes": sum(sizes.values()),
                "node_cpu_s": round(node_cpu.user + node_cpu.system, 2),
                "node_rss_bytes": _rss(node.pid),
                "node_peak_rss_bytes": peak_rss_bytes(node.pid),
                "hub_cpu_s": round(hub_cpu_after.user + hub_cpu_after.system
                                   - hub_cpu.user - hub_cpu.system, 2),
            })
            net.stop(FIRST_SYNC)
            print(f"  first sync: {total:.2f} s ({waited:.2f} s after ready),"
                  f" fragment {sum(sizes.values()) / 2**20:.1f} MiB", flush=True)
        memory["hub_rss_after"] = _rss(hub)
        memory["hub_peak_rss"] = peak_rss_bytes(hub)
    finally:
        net.stop_all()
    return {"runs": runs, "seconds_median": median_of(r["seconds"] for r in runs),
            "memory_bytes": memory}


# -- breakdown (in process) -------------------------------------------------------------------


def breakdown(net: ProcessNetwork, plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    """The directory steps that scale with its size, timed alone on the real files."""
    from node.core.directory import decide, request_of
    from node.hub.directory import Directory
    from node.member.fragment import _Snapshot, check_with_fragment
    from node.store.directory_store import DirectoryStore
    from node.store.fragment_store import FragmentStore
    from node.wire.envelopes import decode_heads
    from node.wire.signed import (
        ensure_signing_key,
        load_public_key,
        public_path,
        verify_update,
    )

    traffic = build_traffic(plan, 0, 6, 1_000, args.envelope_bytes, args.mix,
                            args.seed + 99)
    heads_per_batch = [[h for h in decode_heads(b)[1]] for b in traffic]
    out: dict[str, Any] = {}

    async def run() -> None:
        key = ensure_signing_key(net.directory_key)
        # Cold, without the preload: the breakdown times the store's reads themselves.
        directory = Directory(DirectoryStore(net.root / "hub" / "directory.sqlite", "FULL"), key,
                              preload=False)
        await directory.open()
        loop = asyncio.get_running_loop()
        try:
            # Hub, per batch of 1,000: one lookup of the subjects, then decide() each.
            view_s, decide_s = [], []
            today = date.today()
            for heads in heads_per_batch:
                t = loop.time()
                view = await directory.view_for(
                    (h.subject_number, h.service_id, h.service_version) for h in heads)
                view_s.append(loop.time() - t)
                t = loop.time()
                for h in heads:
                    decision, _ = decide(h, request_of(h), SENDER, view, today)
                    assert decision.accepted, decision
                decide_s.append(loop.time() - t)
            out["hub_view_for_1000_ms"] = _ms_stats(view_s[1:])
            out["hub_decide_1000_ms"] = _ms_stats(decide_s[1:])
            out["hub_integrations_per_batch"] = sum(len(v) for v in view.integrations.values())
            # Hub, first sync of FIRST_SYNC: snapshot query, then build + sign the parts.
            inst = directory.institution(FIRST_SYNC)
            assert inst is not None
            from node.core.directory import fragment_owners

            t = loop.time()
            revision, entities = await directory.store.snapshot(fragment_owners(inst))
            out["hub_snapshot_query_s"] = round(loop.time() - t, 3)
            out["snapshot_entities"] = len(entities)
            t = loop.time()
            parts = list(directory._snapshot_parts(FIRST_SYNC, revision, entities))
            out["hub_build_and_sign_parts_s"] = round(loop.time() - t, 3)
            out["snapshot_parts"] = len(parts)
            out["snapshot_bytes"] = sum(p.ByteSize() for p in parts)
            # Node: verify, decode (what FragmentWatcher does per part), then apply.
            public = load_public_key(public_path(net.directory_key))
            t = loop.time()
            staged = _Snapshot(revision)
            for p in parts:
                staged.add(verify_update(p, public))
            out["node_verify_and_decode_s"] = round(loop.time() - t, 3)
            with tempfile.TemporaryDirectory(prefix="crossroads-frag-") as tmp:
                store = FragmentStore(Path(tmp) / "fragment.sqlite", "FULL")
                await store.open()
                try:
                    t = loop.time()
                    await store.apply_snapshot(revision, staged.entities, recipient=FIRST_SYNC)
                    out["node_apply_snapshot_s"] = round(loop.time() - t, 3)
                finally:
                    await store.close()
            # Sender node, per batch: FragmentStore.view + check_with_fragment on its real
            # fragment (a copy, read-only use).
            frag = net.root / "nodes" / SENDER / "fragment.sqlite"
            if frag.exists():
                with tempfile.TemporaryDirectory(prefix="crossroads-frag-") as tmp:
                    copy = Path(tmp) / "fragment.sqlite"
                    conn = __import__("sqlite3").connect(frag)
                    dst = __import__("sqlite3").connect(copy)
                    conn.backup(dst)
                    conn.close()
                    dst.close()
                    store = FragmentStore(copy, "FULL")
                    await store.open()
                    try:
                        fview_s, fcheck_s = [], []
                        for heads in heads_per_batch:
                            t = loop.time()
                            fview = await store.view(h.subject_number for h in heads)
                            fview_s.append(loop.time() - t)
                            t = loop.time()
                            for h in heads:
                                assert check_with_fragment(h, SENDER, fview, today).accepted
                            fcheck_s.append(loop.time() - t)
                        out["node_fragment_view_1000_ms"] = _ms_stats(fview_s[1:])
                        out["node_check_with_fragment_1000_ms"] = _ms_stats(fcheck_s[1:])
                    finally:
                        await store.close()
        finally:
            await directory.close()

    asyncio.run(run())
    return out


def _ms_stats(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"median": round(statistics.median(ms), 2), "min": round(min(ms), 2),
            "max": round(max(ms), 2)}


# -- relay ------------------------------------------------------------------------------------


def run_relay_once(net: ProcessNetwork, root: Path, args: argparse.Namespace,
                   deadline: float) -> dict[str, Any]:
    from benchmarks.relay import run_relay

    return run_relay(
        root / "relay", ca=net.pki.ca_cert, hub_cert=(net.hub_key, net.hub_cert),
        sender_cert=net.node_certs[SENDER], receiver_cert=net.node_certs[RECEIVER],
        envelopes=args.envelopes, warmup=args.warmup, batch=args.batch, window=args.window,
        envelope_bytes=args.envelope_bytes, deadline=min(deadline, time.monotonic() + 300),
        rounds=args.relay_rounds,
    )


# -- driver -----------------------------------------------------------------------------------


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    runs = [r for r in results["traffic"] if "error" not in r]
    s: dict[str, Any] = {"load_s": results.get("load", {}).get("seconds")}
    if runs:
        rate = median_of(r["envelopes_per_s"] for r in runs)
        s["envelopes_per_s"] = rate
        s["envelopes_per_s_runs"] = [r["envelopes_per_s"] for r in runs]
        s["batch_latency_ms_p50"] = median_of(r["batch_latency_ms"]["p50"] for r in runs)
        s["cpu_us_per_envelope"] = {
            n: median_of(r["cpu"]["processes"][n]["cpu_us_per_envelope"] for r in runs)
            for n in runs[0]["cpu"]["processes"]
        }
        s["machine_cores_busy"] = median_of(r["cpu"]["machine_cores_busy"] for r in runs)
        s["hub_rss_mib_after_start"] = _mib(median_of(
            r["memory_bytes"]["hub_rss_after_start"] for r in runs))
        # Only the first run's nodes start without a fragment (later runs keep theirs).
        s["hub_rss_mib_after_nodes_first_sync"] = _mib(
            runs[0]["memory_bytes"]["hub_rss_after_nodes_synced"])
        s["hub_rss_mib_after_traffic_first_run"] = _mib(
            runs[0]["memory_bytes"]["hub_rss_after_traffic"])
        s["hub_rss_mib_after_traffic"] = _mib(median_of(
            r["memory_bytes"]["hub_rss_after_traffic"] for r in runs))
        s["hub_peak_rss_mib"] = _mib(max(r["memory_bytes"]["hub_peak_rss"] or 0 for r in runs))
        s["node_sync_s_first_run"] = {
            n: v.get("synced_after_ready_s") for n, v in runs[0]["node_sync"].items()}
        relay = results.get("relay_rate")
        if relay and rate:
            s["relay_envelopes_per_s"] = relay
            s["ratio"] = round(rate / relay, 4)
    fs = results.get("first_sync")
    if fs and fs.get("runs"):
        s["first_sync_s"] = fs["seconds_median"]
        s["first_sync_fragment_mib"] = _mib(fs["runs"][-1]["fragment_total_bytes"])
        s["hub_rss_mib_after_first_sync"] = _mib(fs["memory_bytes"].get("hub_rss_after"))
    if "directory_sqlite_bytes" in results:
        s["directory_sqlite_mib"] = _mib(sum(results["directory_sqlite_bytes"].values()))
    return s


def _print_summary(s: dict[str, Any], path: Path) -> None:
    def fmt(v: Any, spec: str = ",.0f") -> str:
        return "-" if v is None else format(v, spec)

    print("Results:")
    print(f"  load             : {fmt(s.get('load_s'), '.1f')} s;"
          f" directory.sqlite {fmt(s.get('directory_sqlite_mib'), ',.1f')} MiB")
    if "envelopes_per_s" in s:
        runs = " / ".join(f"{r:,.0f}" for r in s["envelopes_per_s_runs"])
        print(f"  checks at scale  : {s['envelopes_per_s']:,.0f} env/s end to end (runs: {runs});"
              f" batch latency p50 {fmt(s['batch_latency_ms_p50'])} ms;"
              f" machine cores busy {fmt(s['machine_cores_busy'], '.2f')}")
        cpu = ", ".join(f"{n} {v:.1f}" for n, v in s["cpu_us_per_envelope"].items())
        print(f"  CPU µs/envelope  : {cpu}")
        if "ratio" in s:
            print(f"  ratio            : {s['ratio']:.2%} of the bare relay"
                  f" ({s['relay_envelopes_per_s']:,.0f} env/s)")
        print(f"  hub RSS          : {fmt(s['hub_rss_mib_after_start'], '.1f')} MiB after start;"
              f" run 1: {fmt(s['hub_rss_mib_after_nodes_first_sync'], '.1f')} MiB after both"
              f" nodes' first sync, {fmt(s['hub_rss_mib_after_traffic_first_run'], '.1f')} MiB"
              f" after traffic; median after traffic"
              f" {fmt(s['hub_rss_mib_after_traffic'], '.1f')} MiB;"
              f" peak {fmt(s['hub_peak_rss_mib'], '.1f')} MiB")
        print(f"  nodes' sync      : {s['node_sync_s_first_run']} s after ready (first run)")
    if "first_sync_s" in s:
        print(f"  first sync       : {s['first_sync_s']:.2f} s; fragment"
              f" {fmt(s['first_sync_fragment_mib'], '.1f')} MiB; hub RSS after"
              f" {fmt(s['hub_rss_mib_after_first_sync'], '.1f')} MiB")
    print(f"  written to {path}")


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - the phases in order, each behind its flag
    if argv and argv[0] == "--":
        argv = argv[1:]
    args = _parser().parse_args(argv)
    end_on_signals()
    if min(args.envelopes, args.batch, args.window, args.repeat, args.chunk,
           args.citizens, args.sync_repeat) <= 0:
        return usage_error("directory", "sizes and counts must be positive")
    started = time.monotonic()
    deadline = started + args.timeout
    try:
        plan = Plan(args)
    except BenchError as exc:
        return usage_error("directory", str(exc))
    root, temporary = work_root(args, "crossroads-dir-")
    machine = machine_facts()
    results = results_header("directory", argv, machine, code=_code_state(),
                             parameters=parameters(args), directory=plan.counts(), traffic=[])
    announce(f"directory benchmark: {plan.n_integrations:,} integrations, {plan.n_citizens:,}"
             f" citizens, {len(plan.institutions)} institutions; {args.envelopes:,} envelopes"
             f" x {args.repeat}", machine, root)
    failed = False
    net: ProcessNetwork | None = None
    try:
        # A work directory used before: fresh PKI and databases, but --reuse-directory keeps
        # the directory (its content does not depend on the PKI or the signing key).
        existing = root / "net" / "hub" / "directory.sqlite"
        kept = root / "directory.sqlite.kept"
        if args.reuse_directory and existing.exists() and not Path(f"{existing}-wal").exists():
            os.replace(existing, kept)
        net = fresh_network(root, (SENDER, RECEIVER, FIRST_SYNC), seed=[])
        if args.reuse_directory and kept.exists():
            existing.parent.mkdir(parents=True, exist_ok=True)
            os.replace(kept, existing)
            results["load"] = reuse_directory(existing)
        else:
            loader = load_direct if args.load == "direct" else load_api
            results["load"] = loader(net, plan, args.chunk, deadline)
        revision = results["load"]["revision"]
        print(f"  directory: {results['load']['changes']:,} changes,"
              f" {results['load']['seconds'] or 0:.1f} s ({results['load']['mode']});"
              f" revision {revision:,}", flush=True)
        results["directory_sqlite_bytes"] = _file_sizes(net.root / "hub" / "directory.sqlite")
        if not args.no_traffic:
            for rep in range(args.repeat):
                results["traffic"].append(_guarded(
                    "traffic", rep, run_traffic, net, plan, args, rep, revision, deadline))
        if not args.no_first_sync:
            results["first_sync"] = _guarded("first sync", 0, run_first_sync, net, revision,
                                             args.sync_repeat, deadline)
        if not args.no_breakdown:
            results["breakdown"] = _guarded("breakdown", 0, breakdown, net, plan, args)
            print(f"  breakdown: {results['breakdown']}", flush=True)
        if args.relay_rate:
            results["relay_rate"] = args.relay_rate
            results["relay_rate_source"] = "--relay-rate"
        elif not args.no_relay and not args.no_traffic:
            relay = _guarded("relay", 0, run_relay_once, net, root, args, deadline)
            results["relay"] = relay
            if "error" not in relay:
                results["relay_rate"] = relay["envelopes_per_s"]
                results["relay_rate_source"] = "measured in this invocation"
    except KeyboardInterrupt:
        failed = True
        results["interrupted"] = True
    except (TimeoutError, BenchError, RuntimeError, OSError) as exc:
        failed = True
        results["error"] = f"{type(exc).__name__}: {exc}"
        print(f"benchmarks.directory: FAILED: {exc}", file=sys.stderr, flush=True)
    finally:
        if net is not None:
            net.stop_all()
        results["wall_s"] = round(time.monotonic() - started, 1)
        results["summary"] = _summary(results)
        failed = failed or any("error" in r for r in results["traffic"]) or any(
            isinstance(results.get(k), dict) and "error" in results[k]
            for k in ("first_sync", "breakdown", "relay"))
        results["status"] = "failed" if failed else "ok"
        path = write_results("directory", results, Path(args.out) if args.out else None)
        if temporary and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    _print_summary(results["summary"], path)
    return 1 if failed else 0


def _code_state() -> dict[str, Any]:
    """The commit measured and the files of node/ changed from it (read-only git)."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=repo, capture_output=True, text=True,
                                  timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "node_changes": git("status", "--porcelain", "--", "node", "pki").splitlines()}


def _guarded(kind: str, rep: int, body: Any, *args: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        result: dict[str, Any] = body(*args)
    except (TimeoutError, BenchError, RuntimeError, OSError, AssertionError) as exc:
        print(f"  {kind} run {rep + 1}: FAILED after {time.monotonic() - started:.0f} s: {exc!r}",
              file=sys.stderr, flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"}
    with contextlib.suppress(KeyError, TypeError):
        print(f"  {kind} run {rep + 1}: {result['envelopes_per_s']:,.0f} env/s, batch latency"
              f" p50 {result['batch_latency_ms']['p50']:.0f} ms, refused"
              f" {result['checks']['refused']}, nodes synced after"
              f" {[v.get('synced_after_ready_s') for v in result['node_sync'].values()]} s",
              flush=True)
    return result


if __name__ == "__main__":
    grpc_runtime.hold_core()  # one gRPC core for every phase (node/grpc_runtime.py)
    raise SystemExit(main())
