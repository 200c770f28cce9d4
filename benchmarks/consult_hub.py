"""The hub's own cost per consultation, in process: ``python -m benchmarks.consult_hub``.

What runs: a real :class:`node.app.HubApp` (its store with ``synchronous=FULL``, directory,
audit group; uvloop, like the daemon) with the directory of :mod:`benchmarks.consult` (a
consultation service with integration checks, 10,000 integrated citizens) and a provider
that answers at once in process instead of a ``Node.Answers`` stream. Questions go straight
to :meth:`node.hub.consult.Consultations.consult`: no gRPC, no TLS, no other process. So the
figures are the hub's checks, its durable audit commit and its asyncio bookkeeping per
question, which is what the hub spends beyond a bare relay hop (:mod:`benchmarks.consult_relay`).

For each ``--concurrency`` C (default 1 and 8): ``--questions`` questions, C at a time
(questions asked together share the audit group's commits). Each result: CPU per question
(user and system, all threads), the event loop thread's share, wall time per question.
Questions ask about citizens in rotation through the 10,000, so most read their integrations
from SQLite the first time, as in :mod:`benchmarks.consult`.

Results: ``benchmarks/results/consult_hub-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import bench_parser, citizens, machine_facts, usage_error, write_results
from benchmarks.consult import ASKER, CAPACITY, CONSULT, PROVIDER, directory
from benchmarks.progress import Progress, latency_curve, rate_series, series
from node import grpc_runtime
from node.app import HubApp
from node.client import make_envelope
from node.testing import NetworkLayout
from node.wire.gen.crossroads.v1 import consult_pb2 as cpb

__all__ = ["main"]


class _AnsweringProvider:
    """Stands in for a provider node's ``Node.Answers`` stream: answers every call at once."""

    async def call(self, request: cpb.AnswerRequest, timeout: float) -> cpb.AnswerResponse:
        return cpb.AnswerResponse(status=cpb.SOURCE_DATA, data=b"x")

    async def close(self) -> None:
        return None


async def _measure(root: Path, questions: int, concurrency: int) -> dict[str, Any]:
    layout = NetworkLayout(root, institutions=(ASKER, PROVIDER))
    hub = HubApp(layout.hub_config(), init=True)
    await hub.start()
    try:
        pool = list(citizens(10_000))
        await hub.directory.apply([(entity, False) for entity in directory(pool)])
        consultations = hub.consultations
        assert consultations is not None, "the hub serves consultations"
        hub.deliverer.endpoints[PROVIDER] = "127.0.0.1:1"  # known to the hub, never dialled
        consultations._providers[PROVIDER] = (  # the stand-in provider
            "127.0.0.1:1", None, _AnsweringProvider())  # type: ignore[assignment]
        warmup = 200
        envelopes = [
            make_envelope(CONSULT, [], b"", sender=ASKER,
                          subject_citizen=pool[(i * 7_919) % len(pool)], service_version=1,
                          capacity=CAPACITY, sender_ticket=f"q{i}")
            for i in range(warmup + questions)]
        statuses: dict[str, int] = {}
        answered: list[tuple[float, int]] = []  # (time, 1) per answer
        latency_us: list[float] = []

        async def ask(envelope: bytes) -> None:
            asked = time.perf_counter()
            response = await consultations.consult(
                ASKER, cpb.ConsultRequest(envelope=envelope, deadline_ms=2_000))
            done = time.perf_counter()
            answered.append((done, 1))
            latency_us.append((done - asked) * 1e6)
            name = cpb.ConsultStatus.Name(response.status)
            statuses[name] = statuses.get(name, 0) + 1

        for envelope in envelopes[:warmup]:
            await ask(envelope)
        statuses.clear()
        answered.clear()
        latency_us.clear()
        progress = Progress(f"benchmarks: consult_hub {concurrency} at a time", total=questions,
                            unit="questions")
        before, loop_before, wall_before = os.times(), time.thread_time(), time.perf_counter()
        for i in range(warmup, warmup + questions, concurrency):
            await asyncio.gather(*(ask(e) for e in envelopes[i:i + concurrency]))
            progress.update(len(answered))
        after, loop_after, wall_after = os.times(), time.thread_time(), time.perf_counter()
        progress.close()
        consultations._providers.clear()  # nothing to close
    finally:
        await hub.stop()

    def per_question(seconds: float) -> float:
        return round(seconds / questions * 1e6, 1)

    user, system = after.user - before.user, after.system - before.system
    return {
        "concurrency": concurrency, "questions": questions, "statuses": statuses,
        "cpu_us_per_question": per_question(user + system),
        "user_us_per_question": per_question(user),
        "system_us_per_question": per_question(system),
        "event_loop_thread_us_per_question": per_question(loop_after - loop_before),
        "wall_us_per_question": per_question(wall_after - wall_before),
        "series": series(rate_series(answered, wall_before, wall_after),
                         latency_curve(latency_us), "questions", latency_unit="µs"),
    }


def _parser() -> argparse.ArgumentParser:
    p = bench_parser("consult_hub", __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=2_000, help="measured per concurrency")
    p.add_argument("--concurrency", default="1,8",
                   type=lambda text: [int(c) for c in text.split(",")],
                   help="questions asked at a time, comma-separated (default 1,8)")
    p.add_argument("--out", help="results directory (default: benchmarks/results)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.questions < 1 or any(c < 1 for c in args.concurrency):
        return usage_error("consult_hub", "counts must be positive")
    import uvloop

    results = []
    for concurrency in args.concurrency:
        with tempfile.TemporaryDirectory(prefix="crossroads-consult-hub-") as tmp:
            result = uvloop.run(_measure(Path(tmp), args.questions, concurrency))
        results.append(result)
        print(f"  {concurrency} at a time: {result['cpu_us_per_question']} µs CPU per question"
              f" (user {result['user_us_per_question']}, system"
              f" {result['system_us_per_question']}; event loop thread"
              f" {result['event_loop_thread_us_per_question']}), wall"
              f" {result['wall_us_per_question']} µs; {result['statuses']}", flush=True)
    path = write_results("consult_hub", {
        "benchmark": "consult_hub", "machine": machine_facts(),
        "parameters": {"questions": args.questions, "concurrency": args.concurrency},
        "results": results,
    }, Path(args.out) if args.out else None)
    print(f"  written to {path}")
    return 0 if all(r["statuses"] == {"DATA_FOUND": r["questions"]} for r in results) else 1


if __name__ == "__main__":
    grpc_runtime.hold_core()  # one gRPC core for every phase (node/grpc_runtime.py)
    sys.exit(main())
