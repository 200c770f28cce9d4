"""The floor under consultation latency: the same four hops with no work at all.

``python -m benchmarks.consult_relay [--rates 500,2000] [--seconds 10] ...``

A question in :mod:`benchmarks.consult` crosses four processes between the asking and the
answering application (asker node, hub, provider node, each with checks, TLS and the audit
commit at the hub). Here the same chain is built from bare relays: three processes that pass
each call on to the next over one multiplexed stream (:mod:`node.rpc.multiplex`, the
daemons' own machinery, ``uvloop``, the daemons' GIL switch interval) and a fourth that
answers at once; this process asks, open loop, exactly as the consultation benchmark does
(:func:`benchmarks.consult.open_loop`). No TLS, no checks, no storage: what is left is the
cost of grpc.aio streams and of the processes taking turns on the machine's cores, which no
change inside the daemons can remove. Quote the consultation benchmark's latency next to
this one.

Everything listens on 127.0.0.1; the relays are stopped at the end. Results:
``benchmarks/results/consult_relay-<time>.json`` (per rate: latency percentiles from the
scheduled time, CPU µs per question per process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from benchmarks.common import ProcessMeter, bench_parser, machine_facts, write_results
from benchmarks.consult import Sample, _rates, open_loop, summarize
from node import grpc_runtime
from node.app import GIL_SWITCH_INTERVAL_S
from node.config import Limits
from node.rpc.multiplex import CallFailed, StreamCaller, serve_calls
from node.wire.gen.crossroads.v1 import consult_pb2 as cpb

__all__ = ["main"]

HOPS = ("asker_relay", "hub_relay", "provider_relay", "provider_app")
METHOD = "/bench.Relay/Calls"


def _caller(port: int) -> StreamCaller[cpb.ConsultRequest, cpb.ConsultResponse]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    open_stream = channel.stream_stream(
        METHOD, request_serializer=cpb.ConsultCalls.SerializeToString,
        response_deserializer=cpb.ConsultReplies.FromString)
    return StreamCaller(lambda: open_stream(wait_for_ready=True), cpb.ConsultCalls,
                        cpb.ConsultCall)


async def _serve(next_port: int | None, ports: Any) -> None:
    if next_port is None:
        async def handle(request: cpb.ConsultRequest) -> cpb.ConsultResponse:
            return cpb.ConsultResponse(status=cpb.DATA_FOUND)
    else:
        onward = _caller(next_port)

        async def handle(request: cpb.ConsultRequest) -> cpb.ConsultResponse:
            return await onward.call(request, timeout=request.deadline_ms / 1000)

    async def calls(requests: AsyncIterator[cpb.ConsultCalls],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[cpb.ConsultReplies]:
        async for replies in serve_calls(requests, handle, cpb.ConsultReplies, cpb.ConsultReply,
                                         max_in_flight=Limits().stream_calls_in_flight):
            yield replies

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Relay", {
        "Calls": grpc.stream_stream_rpc_method_handler(
            calls, request_deserializer=cpb.ConsultCalls.FromString,
            response_serializer=cpb.ConsultReplies.SerializeToString)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ports.put(port)
    await server.wait_for_termination()


def _relay(next_port: int | None, ports: Any) -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(next_port, ports))


class RelayAsker:
    """The asking application of :func:`benchmarks.consult.open_loop`, on the relay chain."""

    def __init__(self, port: int, deadline_ms: int) -> None:
        self.calls = _caller(port)
        self.deadline_ms = deadline_ms
        self.question = cpb.ConsultRequest(envelope=b"x" * 200, deadline_ms=deadline_ms)

    async def ask(self, sample: Sample) -> None:
        sample.sent = time.perf_counter()
        try:
            response = await self.calls.call(self.question, self.deadline_ms / 1000 + 1)
        except CallFailed as exc:
            sample.status = f"RPC_{exc.code}"
        else:
            sample.status = cpb.ConsultStatus.Name(response.status)
        sample.done = time.perf_counter()


async def _measure(args: argparse.Namespace, port: int, pids: dict[str, int]) -> list[Any]:
    asker = RelayAsker(port, args.deadline_ms)
    for _ in range(200):  # warm the chain's streams
        await asker.ask(Sample(time.perf_counter()))
    deadline = time.monotonic() + args.timeout
    out = []
    for rate in args.rates:
        await open_loop(asker, rate, args.warmup_seconds, 10_000, deadline)
        meter = ProcessMeter({**pids, "asker_app": os.getpid()})
        meter.start()
        samples = await open_loop(asker, rate, args.seconds, 10_000, deadline)
        meter.stop()
        result = summarize(samples, rate)
        result["cpu"] = meter.report(len(samples))
        out.append(result)
        lat = result["latency_ms"]
        cpu = ", ".join(f"{n} {v['cpu_us_per_envelope']:.0f}"
                        for n, v in result["cpu"]["processes"].items())
        print(f"  {rate:,.0f}/s: latency p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']}"
              f" max {lat['max']} ms; statuses {result['statuses']}; CPU µs/question: {cpu}",
              flush=True)
    await asker.calls.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("consult_relay", "Consultation latency floor: four bare relays.")
    p.add_argument("--rates", type=_rates, default=[500.0, 2000.0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup-seconds", type=float, default=3.0)
    p.add_argument("--deadline-ms", type=int, default=2_000)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", help="results directory (default: benchmarks/results)")
    args = p.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    processes: dict[str, Any] = {}
    try:
        next_port: int | None = None
        for name in reversed(HOPS):  # the answering end first, each relay knows the next
            process = context.Process(target=_relay, args=(next_port, ports), daemon=True)
            process.start()
            processes[name] = process
            next_port = ports.get(timeout=60)
        assert next_port is not None
        print(f"Crossroads consultation floor: {' -> '.join(HOPS)}, no TLS, no checks, no"
              f" storage; rates {args.rates}", flush=True)
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        rates = asyncio.run(_measure(args, next_port,
                                     {n: proc.pid for n, proc in processes.items()}))
    finally:
        for process in processes.values():
            process.kill()
            process.join(5)
    path = write_results("consult_relay", {
        "benchmark": "consult_relay", "command": " ".join(sys.argv), "machine": machine_facts(),
        "parameters": {k: v for k, v in vars(args).items() if k != "out"}, "rates": rates,
    }, Path(args.out) if args.out else None)
    print(f"  written to {path}")
    return 0


if __name__ == "__main__":
    grpc_runtime.hold_core()  # one gRPC core for every phase (node/grpc_runtime.py)
    raise SystemExit(main())
