"""Consultation benchmark: latency of a question through the hub to one provider, open loop.

``python -m benchmarks.consult [--rates 500,2000] [--seconds 10] [--warmup-seconds 3]
[--repeat N] ...``

What runs
---------
:class:`node.testing.ProcessNetwork` starts the hub and two institution nodes as real
processes (``python -P -m node.cli ... serve``, fresh PKI, loopback mTLS, ``synchronous=FULL``,
audit log on): the *asker* (0403019261) and the *provider* (0428759497). The directory
(through the hub's admin API before the nodes start) holds a consultation service
``bench.consult`` with the provider as its fixed provider, integration required (phase >= 1),
an authorization for the asker in capacity 1, and ``--citizens`` (10,000) integrations of the
asker, so every question passes the asker node's fragment checks and the hub's full
directory checks (authorization, integration, phase, routing). Both nodes have synced their
fragment before anything is measured.

The two institutions' applications are two processes, as they would be:

* the **provider application** (a process of its own, ``uvloop``) on the provider node's
  local API (``Local.Serve`` stream): it answers at once with ``SOURCE_DATA`` whose data is
  the wall-clock time (µs) at which it got the question (:func:`node.client.serve_answers`);
* the **asking application** (this process, the load generator) on the asker node's local
  API on one ``uvloop`` event loop, like the daemons: with ``--api stream`` (default) every
  question goes on one ``Local.Consultations`` stream (:class:`node.client.Consulter`); with
  ``--api unary`` each is a ``Local.Consult`` call with a ``grpc.aio`` stub (``--channels``
  channels, round robin). A question is a fresh envelope (a random integrated citizen, capacity 1,
  service version 1, empty payload) with ``deadline_ms`` = ``--deadline-ms`` (2,000).

Path of one question: asker app -> asker node (unix socket; structural + fragment checks)
-> hub (``Hub.Consultations`` stream, mTLS: checks) -> provider node (``Node.Answers``
stream, mTLS) -> ``Serve`` stream -> provider app -> back the same way (hub: aggregation)
-> asker app. Two audit records per question: ``ACCEPTED``, committed while the providers
work (the reply waits for it), and ``ANSWERED``, which goes with the next commit
(:mod:`node.hub.audit_group`: concurrent questions share transactions).

**Open loop.** For each rate in ``--rates`` (default 500 and 2,000 questions/s): a warm-up of
``--warmup-seconds`` at that rate (not recorded), then ``--seconds`` (10) measured. Question
*i* is scheduled at ``t0 + i / rate`` whatever happened to earlier questions: a scheduler
task sleeps until the next due time and starts every question that is due (each in its own
task), so a slow system does not slow the offered load (no coordinated omission).
``--max-in-flight`` (10,000) bounds the outstanding questions; a question due while the
bound is reached is not sent and counted as ``NOT_SENT_OVERLOAD``.

``--repeat N`` (1) measures each rate N times in a row on the same network (a warm-up before
each): the tail varies from run to run on a shared machine, so one run says little. Every
run is in ``rates`` (with its ``repeat`` number); ``repeats`` has, per rate, the p50 and p99
of every run and their median, minimum and maximum (:func:`repeat_summary`).

What the numbers mean
---------------------
* ``latency_ms`` p50/p90/p99/max: from the question's **scheduled** time to its response
  (includes any delay of the load generator in sending it; what a caller at that rate sees).
* ``service_ms``: from the actual send (the question handed to the ``Consulter``, or the start
  of the ``Consult`` call) to the response.
* ``send_lag_ms``: actual send - scheduled time (load generator behind schedule if large).
* ``statuses``: ``DATA_FOUND`` (expected), ``INCOMPLETE_DATA`` (the provider timed out or
  was saturated), ``REFUSED``, ``RPC_<code>`` (the local call failed: e.g.
  ``RPC_DEADLINE_EXCEEDED``), ``NOT_SENT_OVERLOAD``. Latency percentiles are over every
  question that got a response (any status); ``ok_latency_ms`` only over ``DATA_FOUND``.
* ``achieved_per_s``: responses with ``DATA_FOUND`` / (last response of any status - first
  scheduled time);
  ``offered_per_s``: the rate asked for.
* ``p99_ms_by_second``: the latency p99 of the questions scheduled in each second of the
  measured phase (a tail spread over the run, or a few bad seconds).
* ``where_ms`` (p50 and p99 per segment, ``DATA_FOUND`` only; one clock, one machine):
  ``asker_to_hub`` = hub receipt - send (asker node's local API and checks, the node's call
  to the hub); ``hub_to_provider_app`` = provider app's receipt - hub receipt (hub checks,
  ``Node.Answers``, provider node, ``Serve`` stream);
  ``provider_app_to_hub`` = when the hub got the part (``SourcePart.answered_at_unix_us``) -
  provider app's receipt (the answer back through the provider node); ``hub_commit`` = the
  hub's reply time - that (aggregation and the audit commit); ``hub_reply_to_asker`` =
  response at the asker app - the hub's reply time (hub -> asker node -> app).
* ``cpu``: CPU seconds per process over the measured phase (psutil) and µs per question
  (``cpu_us_per_envelope`` = per question): ``hub``, ``asker``, ``provider`` (nodes),
  ``loadgen`` (this process: the asking application), ``provider_app``; ``user_system_s``
  splits each into user and kernel time;
  ``machine_cores_busy`` and ``other_cpu_s`` show what else ran on the machine.
* ``client_probe``: before the open-loop phases, closed-loop sequential calls from a plain
  thread: :func:`node.client.consult` (the library's blocking helper, which opens a new
  channel per call) and a blocking stub on one reused channel; their latency tells how many
  threads a blocking client would need for a given rate (rate x latency).
* ``checks``: the hub's audit records by event and reason after the run (``ACCEPTED`` and
  one ``ANSWERED`` per question, when the hub got to write it) and the chain verified
  (``--no-verify`` skips it). ``background_task_errors`` counts exceptions of orphaned
  tasks in this process (e.g. the library provider's failed writes).
* ``code``: SHA-256 prefixes of the node files on the measured path (the working tree may
  hold uncommitted changes).

Everything listens on 127.0.0.1; every process is stopped at the end, also on failure,
timeout (``--timeout`` for the whole invocation), SIGTERM or Ctrl-C. Results:
``benchmarks/results/consult-<timestamp>.json`` and a summary on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import grpc

from benchmarks import common, hub_tier, phases
from benchmarks.common import (
    RECEIVER,
    SENDER,
    BenchError,
    ProcessMeter,
    citizens,
    machine_facts,
    percentile,
    usage_error,
)
from benchmarks.progress import Progress, latency_curve, rate_series, series
from node import grpc_runtime
from node.client import Consulter, LocalClient, consult, make_envelope, serve_answers
from node.core.directory import Authorization, Entity, Integration, Period, Service
from node.rpc.multiplex import CallFailed
from node.testing import default_directory
from node.wire.gen.crossroads.v1 import consult_pb2 as cpb
from node.wire.gen.crossroads.v1 import envelope_pb2, local_pb2_grpc

__all__ = ["main"]

ASKER, PROVIDER = SENDER, RECEIVER
CONSULT = "bench.consult"
CAPACITY = 1
NOT_SENT = "NOT_SENT_OVERLOAD"
CODE_FILES = ("node/client.py", "node/hub/consult.py", "node/hub/service.py", "node/hub/intake.py",
              "node/store/hub_store.py", "node/store/postgres/hub_store.py",
              "node/member/local_api.py", "node/member/answers.py", "node/member/hub_caller.py",
              "node/rpc/multiplex.py")


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: rates per second, e.g. 500,2000") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: positive rates, e.g. 500,2000")
    return rates


def _parser() -> argparse.ArgumentParser:
    p = common.bench_parser("consult", "Consultation latency through the hub to one provider,"
                                " open-loop load at fixed rates (real processes, loopback mTLS).")
    p.add_argument("--rates", type=_rates, default=[500.0, 2000.0],
                   help="questions per second, comma-separated (each measured in turn)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per rate")
    p.add_argument("--repeat", type=int, default=1,
                   help="measured runs per rate (each after its warm-up); medians in 'repeats'")
    p.add_argument("--warmup-seconds", type=float, default=3.0, help="warm-up per rate")
    p.add_argument("--deadline-ms", type=int, default=2_000, help="deadline of each question")
    p.add_argument("--citizens", type=int, default=10_000, help="integrated citizens asked about")
    p.add_argument("--api", choices=("stream", "unary"), default="stream",
                   help="the asking application's calls: one Local.Consultations stream"
                        " (node.client.Consulter, default) or unary Local.Consult calls")
    p.add_argument("--channels", type=int, default=2,
                   help="grpc.aio channels to the asker node (--api unary)")
    p.add_argument("--max-in-flight", type=int, default=10_000,
                   help="questions outstanding at most; beyond, a due question is not sent")
    p.add_argument("--probe", type=int, default=200,
                   help="sequential calls of each blocking client in the client probe (0: none)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    p.add_argument("--no-verify", action="store_true", help="skip the audit chain verification")
    hub_tier.add_tier_options(p)
    phases.add_workdir_options(p)
    return p


def directory(pool: Sequence[str]) -> list[Entity]:
    since = Period(date(2020, 1, 1))
    return [
        *default_directory((ASKER, PROVIDER)),
        Service(CONSULT, 1, "consultation", "citizen", "fixed", provider=PROVIDER,
                integration_required=True, min_phase=1),
        Authorization("bench-consult-asker", CONSULT, institution=ASKER,
                      capacities=frozenset({CAPACITY})),
        *(Integration(c, ASKER, CAPACITY, 2, since) for c in pool),
    ]


# -- the open-loop phase ---------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    scheduled: float  # perf_counter seconds
    sent: float = 0.0
    done: float = 0.0
    status: str = ""
    where_us: tuple[int, ...] | None = None  # see the module doc, "where_ms"


class CpuSplit:
    """User and system CPU seconds per process between ``start`` and ``stop`` (psutil); the
    system part is the kernel's work for the process: syscalls, wake-ups, fsync, loopback."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.before: dict[str, tuple[float, float]] = {}

    def _now(self) -> dict[str, tuple[float, float]]:
        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(Exception):
                t = proc.cpu_times()
                out[name] = (t.user, t.system)
        return out

    def start(self) -> None:
        self.before = self._now()

    def stop(self) -> dict[str, dict[str, float]]:
        after = self._now()
        return {name: {"user_s": round(after[name][0] - self.before[name][0], 3),
                       "system_s": round(after[name][1] - self.before[name][1], 3)}
                for name in after if name in self.before}


class Asker:
    """The asking application: questions on one ``Local.Consultations`` stream
    (:class:`node.client.Consulter`), or unary ``Local.Consult`` calls on a few channels."""

    def __init__(self, address: str, channels: int, pool: Sequence[str], deadline_ms: int,
                 api: str = "stream") -> None:
        self.consulter = Consulter(address) if api == "stream" else None
        self.channels = [grpc.aio.insecure_channel(address) for _ in range(max(1, channels))]
        self.stubs = itertools.cycle(
            [local_pb2_grpc.LocalStub(c) for c in self.channels])  # type: ignore[no-untyped-call]
        self.pool = pool
        self.deadline_ms = deadline_ms
        self.counter = itertools.count()
        self.error_details: dict[str, str] = {}  # the first detail seen per failed status

    async def close(self) -> None:
        if self.consulter is not None:
            await self.consulter.close()
        for channel in self.channels:
            await channel.close()

    def question(self) -> bytes:
        i = next(self.counter)
        return make_envelope(CONSULT, [], b"", sender=ASKER,
                             subject_citizen=self.pool[(i * 7_919) % len(self.pool)],
                             service_version=1, capacity=CAPACITY, sender_ticket=f"q{i}")

    async def ask(self, sample: Sample) -> None:
        request = cpb.ConsultRequest(envelope=self.question(), deadline_ms=self.deadline_ms)
        stub = next(self.stubs)
        sent_wall = time.time_ns() // 1000
        sample.sent = time.perf_counter()
        try:
            if self.consulter is not None:
                response = await self.consulter.consult(request.envelope, self.deadline_ms)
            else:
                response = await stub.Consult(request, timeout=self.deadline_ms / 1000 + 2)
        except grpc.aio.AioRpcError as exc:
            sample.done = time.perf_counter()
            sample.status = f"RPC_{exc.code().name}"
            self.error_details.setdefault(sample.status, str(exc.details())[:300])
            return
        except CallFailed as exc:
            sample.done = time.perf_counter()
            sample.status = f"RPC_{exc.code}"
            self.error_details.setdefault(sample.status, exc.detail[:300])
            return
        sample.done = time.perf_counter()
        done_wall = time.time_ns() // 1000
        sample.status = cpb.ConsultStatus.Name(response.status)
        if response.status != cpb.DATA_FOUND:
            self.error_details.setdefault(sample.status, "; ".join(
                [response.outcome.detail] + [p.detail for p in response.parts if p.detail])[:300])
        if response.status == cpb.DATA_FOUND and len(response.parts) == 1:
            data = response.parts[0].data
            if len(data) == 8:
                (app_at,) = struct.unpack(">q", data)
                answered_at = response.parts[0].answered_at_unix_us
                sample.where_us = (response.received_at_unix_us - sent_wall,
                                   app_at - response.received_at_unix_us,
                                   answered_at - app_at,
                                   response.replied_at_unix_us - answered_at,
                                   done_wall - response.replied_at_unix_us)


async def open_loop(asker: Asker, rate: float, seconds: float, max_in_flight: int,
                    deadline: float) -> list[Sample]:
    """Issue ``rate x seconds`` questions at their scheduled times; wait for every answer."""
    n = max(1, int(rate * seconds))
    interval = 1.0 / rate
    samples = [Sample(0.0) for _ in range(n)]
    tasks: set[asyncio.Task[None]] = set()
    progress = Progress(f"benchmarks: {rate:g} questions/s", total=n, unit="questions sent")
    t0 = time.perf_counter() + 0.005
    i = 0
    while i < n:
        progress.update(i)
        now = time.perf_counter()
        due = t0 + i * interval
        if due > now:
            await asyncio.sleep(due - now)
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {i:,} of {n:,} questions")
        while i < n and t0 + i * interval <= now:
            sample = samples[i]
            sample.scheduled = t0 + i * interval
            if len(tasks) >= max_in_flight:
                sample.status = NOT_SENT
            else:
                task = asyncio.create_task(asker.ask(sample))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            i += 1
    progress.close(i)
    if tasks:
        await asyncio.wait(set(tasks), timeout=max(1.0, deadline - time.monotonic()))
    return samples


def _ms(values: Sequence[float]) -> dict[str, float | None]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {"p50": r(percentile(values, 50)), "p90": r(percentile(values, 90)),
            "p99": r(percentile(values, 99)), "max": r(max(values) if values else None)}


def summarize(samples: Sequence[Sample], rate: float) -> dict[str, Any]:
    answered = [s for s in samples if s.done]
    ok = [s for s in answered if s.status == "DATA_FOUND"]
    statuses = Counter(s.status or "NO_RESPONSE" for s in samples)
    first = min(s.scheduled for s in samples)
    last_done = max((s.done for s in answered), default=first)
    where = [s.where_us for s in ok if s.where_us is not None]
    names = ("asker_to_hub", "hub_to_provider_app", "provider_app_to_hub", "hub_commit",
             "hub_reply_to_asker")
    return {
        "offered_per_s": rate,
        "questions": len(samples),
        "answered": len(answered),
        "statuses": dict(statuses.most_common()),
        "achieved_per_s": round(len(ok) / (last_done - first), 1) if last_done > first else None,
        "latency_ms": _ms([(s.done - s.scheduled) * 1000 for s in answered]),
        "ok_latency_ms": _ms([(s.done - s.scheduled) * 1000 for s in ok]),
        "service_ms": _ms([(s.done - s.sent) * 1000 for s in answered]),
        "service_ms_p50_by_status": {
            st: _r3(percentile([(s.done - s.sent) * 1000 for s in answered if s.status == st], 50))
            for st in statuses if st != NOT_SENT and st != "NO_RESPONSE"},
        "send_lag_ms": _ms([(s.sent - s.scheduled) * 1000 for s in samples if s.sent]),
        "where_ms": {name: {"p50": _r3(percentile([w[k] / 1000 for w in where], 50)),
                            "p99": _r3(percentile([w[k] / 1000 for w in where], 99))}
                     for k, name in enumerate(names)},
        "p99_ms_by_second": _p99_by_second(answered, first),
        "series": series(rate_series(((s.done, 1) for s in ok), first, last_done),
                         latency_curve([(s.done - s.scheduled) * 1000 for s in answered]),
                         "answers (DATA_FOUND)"),
    }


def repeat_summary(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per offered rate (as text): the latency p50 and p99 of every run, and their median,
    minimum and maximum."""
    by_rate: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_rate.setdefault(f"{run['offered_per_s']:g}", []).append(run)
    summary: dict[str, dict[str, Any]] = {}
    for rate, group in by_rate.items():
        entry: dict[str, Any] = {"runs": len(group)}
        for key in ("p50", "p99"):
            values = [r["latency_ms"][key] for r in group if r["latency_ms"][key] is not None]
            entry[f"{key}_ms"] = {"median": _r3(percentile(values, 50)),
                                  "min": min(values, default=None),
                                  "max": max(values, default=None), "each": values}
        summary[rate] = entry
    return summary


def _p99_by_second(answered: Sequence[Sample], first: float) -> list[float | None]:
    """Latency p99 of the questions scheduled in each second of the run: whether the tail
    is spread over the run or comes from a few bad seconds."""
    seconds: dict[int, list[float]] = {}
    for s in answered:
        seconds.setdefault(int(s.scheduled - first), []).append((s.done - s.scheduled) * 1000)
    return [_r3(percentile(seconds.get(i, []), 99)) for i in range(max(seconds, default=-1) + 1)]


def _r3(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


# -- the run -----------------------------------------------------------------------------------


async def _provider_handler(envelope: envelope_pb2.Envelope) -> tuple[int, bytes]:
    return cpb.SOURCE_DATA, struct.pack(">q", time.time_ns() // 1000)


def _provider_app(address: str) -> None:
    """The provider institution's application, in a process of its own (like the daemons:
    uvloop when installed)."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_answers(address, _provider_handler))


def _probe(address: str, envelopes: list[bytes], deadline_ms: int) -> dict[str, Any]:
    """Closed loop, one thread: the blocking helper, then a blocking stub on one channel."""
    out: dict[str, Any] = {}
    half = len(envelopes) // 2
    times: list[float] = []
    statuses: Counter[str] = Counter()
    t0 = time.perf_counter()
    for env in envelopes[:half]:
        t = time.perf_counter()
        response = consult(address, env, deadline_ms)
        times.append((time.perf_counter() - t) * 1000)
        statuses[cpb.ConsultStatus.Name(response.status)] += 1
    wall = time.perf_counter() - t0
    out["node_client_consult"] = {"what": "node.client.consult: a new channel per call",
                                  "calls": half, "calls_per_s": round(half / wall, 1),
                                  "latency_ms": _ms(times), "statuses": dict(statuses)}
    times, statuses = [], Counter()
    with grpc.insecure_channel(address) as channel:
        stub = local_pb2_grpc.LocalStub(channel)  # type: ignore[no-untyped-call]
        stub.Consult(cpb.ConsultRequest(envelope=envelopes[half], deadline_ms=deadline_ms),
                     timeout=deadline_ms / 1000 + 2, wait_for_ready=True)
        t0 = time.perf_counter()
        for env in envelopes[half + 1:]:
            t = time.perf_counter()
            response = stub.Consult(cpb.ConsultRequest(envelope=env, deadline_ms=deadline_ms),
                                    timeout=deadline_ms / 1000 + 2)
            times.append((time.perf_counter() - t) * 1000)
            statuses[cpb.ConsultStatus.Name(response.status)] += 1
        wall = time.perf_counter() - t0
    out["blocking_stub_one_channel"] = {
        "what": "grpc blocking stub, one channel reused, sequential",
        "calls": len(times), "calls_per_s": round(len(times) / wall, 1) if wall else None,
        "latency_ms": _ms(times), "statuses": dict(statuses)}
    return out


async def _measure(net: hub_tier.TierNetwork, pool: Sequence[str], args: argparse.Namespace,
                   deadline: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    background_errors: Counter[str] = Counter()

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        background_errors[type(exc).__name__ if exc else str(context.get("message"))] += 1

    loop.set_exception_handler(on_error)  # count, not print, errors of orphaned tasks
    provider_app = multiprocessing.get_context("spawn").Process(
        target=_provider_app, args=(net.local_api(PROVIDER),), daemon=True)
    provider_app.start()
    asker = Asker(net.local_api(ASKER), args.channels, pool, args.deadline_ms, args.api)
    out: dict[str, Any] = {"rates": []}
    try:
        # The provider application starts and attaches its Serve stream; ask until it answers.
        first: str = ""
        for _ in range(600):
            sample = Sample(time.perf_counter())
            await asker.ask(sample)
            first = sample.status
            if first == "DATA_FOUND":
                break
            await asyncio.sleep(0.05)
        else:
            raise BenchError(f"the provider application never answered (last status: {first}:"
                             f" {asker.error_details.get(first)})")
        if args.probe > 0:
            envelopes = [asker.question() for _ in range(2 * args.probe + 1)]
            out["client_probe"] = await asyncio.to_thread(
                _probe, net.local_api(ASKER), envelopes, args.deadline_ms)
            p = out["client_probe"]
            print(f"  client probe: node.client.consult p50"
                  f" {p['node_client_consult']['latency_ms']['p50']} ms"
                  f" ({p['node_client_consult']['calls_per_s']}/s sequential); blocking stub"
                  f" p50 {p['blocking_stub_one_channel']['latency_ms']['p50']} ms"
                  f" ({p['blocking_stub_one_channel']['calls_per_s']}/s)", flush=True)
        assert provider_app.pid is not None
        tier, trees = net.tier_pids()
        pids = {**tier, "asker": net.pid(ASKER), "provider": net.pid(PROVIDER),
                "loadgen": os.getpid(), "provider_app": provider_app.pid}
        processes = {name: pid for name, pid in pids.items() if name not in trees}
        for rate, repeat in itertools.product(args.rates, range(1, args.repeat + 1)):
            if args.warmup_seconds > 0:
                await open_loop(asker, rate, args.warmup_seconds, args.max_in_flight, deadline)
            meter, split = ProcessMeter(pids, trees), CpuSplit(processes)
            loadavg = os.getloadavg()
            meter.start()
            split.start()
            samples = await open_loop(asker, rate, args.seconds, args.max_in_flight, deadline)
            meter.stop()
            result = summarize(samples, rate)
            result["cpu"] = meter.report(len(samples))
            result["cpu"]["user_system_s"] = split.stop()
            result["cpu"]["tier_us_per_envelope"] = hub_tier.tier_cpu(result["cpu"], list(tier))
            result["loadavg_1m_before"] = round(loadavg[0], 2)
            result["repeat"] = repeat
            out["rates"].append(result)
            lat, cpu = result["latency_ms"], result["cpu"]
            run_no = f" (run {repeat})" if args.repeat > 1 else ""
            print(f"  {rate:,.0f}/s{run_no}: achieved {result['achieved_per_s']}/s, latency p50"
                  f" {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} max {lat['max']} ms;"
                  f" statuses {result['statuses']}; machine cores busy"
                  f" {cpu['machine_cores_busy']}; p99 by second {result['p99_ms_by_second']}",
                  flush=True)
    finally:
        await asker.close()
        provider_app.terminate()
        provider_app.join(10)
        if provider_app.is_alive():
            provider_app.kill()
        out["background_task_errors"] = dict(background_errors)
        out["error_details"] = asker.error_details
        out["repeats"] = repeat_summary(out["rates"])
    return out


def run(net: hub_tier.TierNetwork, pool: Sequence[str], args: argparse.Namespace,
        deadline: float) -> dict[str, Any]:
    from benchmarks.directory import wait_synced

    net.start_hub()
    t = time.monotonic()
    revision = net.apply_directory(directory(pool))
    seeded_s = time.monotonic() - t
    sync: dict[str, float] = {}
    for name in (PROVIDER, ASKER):
        net.start_node(name)
        with LocalClient(net.local_api(name)) as client:
            sync[name], _ = wait_synced(client, revision, deadline)
    try:
        import uvloop

        measured = uvloop.run(_measure(net, pool, args, deadline))
    except ImportError:  # pragma: no cover - uvloop is a dependency of the daemons
        measured = asyncio.run(_measure(net, pool, args, deadline))
    measured["directory"] = {"revision": revision, "seed_s": round(seeded_s, 2),
                             "integrations": len(pool),
                             "fragment_sync_s": {k: round(v, 2) for k, v in sync.items()}}
    return measured


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.seconds, args.citizens, args.channels, args.max_in_flight, args.deadline_ms,
           args.repeat) <= 0:
        return usage_error("consult", "sizes and counts must be positive")
    try:
        choice = hub_tier.tier_choices(args)[0]
    except ValueError as exc:
        return usage_error("consult", str(exc))
    common.end_on_signals()
    started = time.monotonic()
    deadline = started + args.timeout
    root, temporary = phases.work_root(args, "crossroads-consult-")
    machine = machine_facts()
    results = phases.results_header(
        "consult", argv, machine,
        parameters=phases.parameters(args)
        | {"synchronous": "FULL", "audit_log": True, "asker": ASKER, "provider": PROVIDER},
        code=common.code_digests(CODE_FILES))
    phases.announce(f"consultation benchmark: rates {args.rates} /s, {args.seconds:g} s each"
                    f" after {args.warmup_seconds:g} s warm-up; hub tier {choice.label}",
                    machine, root)
    with hub_tier.cluster_for([choice], root) as cluster, phases.Run(
            "consult", results, args, root, temporary, started,
            failures=(*phases.FAILURES, grpc.RpcError)) as bench:
        pool = citizens(args.citizens)
        net = phases.fresh_network(root, (ASKER, PROVIDER), seed=[], choice=choice,
                                   cluster=cluster)
        bench.net = net
        results["tier"] = net.facts()
        results |= run(net, pool, args, deadline)
    print("Results:")
    for r in results.get("rates", []):
        lat, ok, where = r["latency_ms"], r["service_ms"], r["where_ms"]
        cpu = ", ".join(f"{n} {v['cpu_us_per_envelope']:.0f}"
                        for n, v in r["cpu"]["processes"].items())
        print(f"  {r['offered_per_s']:>7,.0f}/s offered, {r['achieved_per_s']}/s DATA_FOUND:"
              f" latency p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} max {lat['max']} ms"
              f" (service p50 {ok['p50']}, p99 {ok['p99']})")
        print(f"           statuses {r['statuses']}; CPU µs/question: {cpu};"
              f" machine cores busy {r['cpu']['machine_cores_busy']}")
        print("           p50 ms: " + ", ".join(f"{k} {v['p50']}" for k, v in where.items()))
    for rate, summary in results.get("repeats", {}).items():
        if summary["runs"] > 1:
            p99 = summary["p99_ms"]
            print(f"  {float(rate):>7,.0f}/s over {summary['runs']} runs: p99 median"
                  f" {p99['median']} ms (min {p99['min']}, max {p99['max']}); p50 median"
                  f" {summary['p50_ms']['median']} ms")
    return phases.report_end(results, bench.path)


if __name__ == "__main__":
    grpc_runtime.hold_core()  # one gRPC core for every phase (node/grpc_runtime.py)
    raise SystemExit(main())
