"""The bare gRPC relay: the ceiling for sender -> hub -> receiver on this machine.

Three processes, the same shape as the real network but with no checks, no storage, no
audit and no per-envelope work beyond what gRPC and protobuf do:

* ``sender``: opens ``Hub.Submit`` (mutual TLS, the sender institution's certificate) to the
  relay and writes pre-built ``EnvelopeBatch`` messages (same envelopes, same batch size as the
  end-to-end run), keeping at most ``window`` batches unacknowledged;
* ``relay``: serves ``Hub.Submit`` with the hub's certificate; for each submit stream it opens
  one ``Node.Deliver`` stream to the receiver and turns every ``EnvelopeBatch`` into a
  ``DeliveryBatch`` carrying the same envelope bytes (parse + serialize of the batch, in C);
  when the receiver's ``DeliveryAck`` comes back it answers the sender with a ``BatchAck``
  (no per-envelope outcomes). An ack therefore means "the receiver has it", and the sender's
  window bounds the batches in flight end to end, as the load generator's window does in the
  end-to-end run;
* ``receiver``: serves ``Node.Deliver`` with the receiver institution's certificate, notes the
  arrival time of each batch and acknowledges it at once.

Everything listens on 127.0.0.1 only. Processes run on uvloop, as the daemons do.

``python -m benchmarks.relay receiver|relay|sender ...`` runs one process (used by
:func:`run_relay`, which starts all three and measures them; ``benchmarks.e2e`` calls it).

Batch latency here = from the sender's ``write`` of a batch to the receiver's receipt of it
(both ``time.monotonic_ns``, one clock for the whole machine).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

import grpc

from benchmarks.common import RECEIVER, SENDER, ProcessMeter, bench_parser, build_batches, p50_p99
from node import grpc_runtime
from node.rpc.tls import (
    TlsMaterial,
    channel_options,
    hub_tls_name,
    institution_tls_name,
    server_options,
)
from node.wire.gen.crossroads.v1 import envelope_pb2, hub_pb2_grpc, node_pb2, node_pb2_grpc

__all__ = ["main", "run_relay"]

MAX_MESSAGE = 64 * 1024 * 1024


def _tls(args: argparse.Namespace) -> TlsMaterial:
    return TlsMaterial(Path(args.ca).read_bytes(), Path(args.cert).read_bytes(),
                       Path(args.key).read_bytes())


def _write_ready(path: str, info: dict[str, Any]) -> None:
    ready = Path(path)
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **info}))
    tmp.replace(ready)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# -- receiver ------------------------------------------------------------------------------


class _Receiver(node_pb2_grpc.NodeServicer):
    def __init__(self) -> None:
        self.arrivals: list[tuple[int, int, int]] = []

    async def Deliver(self, request_iterator, context):  # type: ignore[no-untyped-def]  # noqa: N802
        async for batch in request_iterator:
            n = len(batch.envelopes)
            self.arrivals.append((batch.last_sequence, n, time.monotonic_ns()))
            yield node_pb2.DeliveryAck(last_sequence=batch.last_sequence, stored=n)


async def _receiver(args: argparse.Namespace) -> None:
    servicer = _Receiver()
    server = grpc.aio.server(options=server_options(MAX_MESSAGE))
    node_pb2_grpc.add_NodeServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", _tls(args).server_credentials())
    await server.start()
    _write_ready(args.ready_file, {"port": port})
    await _until_signal()
    Path(args.log).write_text(json.dumps(servicer.arrivals))
    await server.stop(1)


# -- relay ---------------------------------------------------------------------------------


class _Relay(hub_pb2_grpc.HubServicer):
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = node_pb2_grpc.NodeStub(channel)

    async def Submit(self, request_iterator, context):  # type: ignore[no-untyped-def]  # noqa: N802
        call = self.stub.Deliver()
        firsts: collections.deque[int] = collections.deque()

        async def forward() -> None:
            try:
                async for batch in request_iterator:
                    firsts.append(batch.first_sequence)
                    await call.write(node_pb2.DeliveryBatch(
                        last_sequence=batch.first_sequence + len(batch.envelopes) - 1,
                        envelopes=batch.envelopes,
                    ))
                await call.done_writing()
            except BaseException:
                call.cancel()
                raise

        task = asyncio.create_task(forward())
        try:
            while True:
                ack = await call.read()
                if ack is grpc.aio.EOF:
                    break
                yield envelope_pb2.BatchAck(first_sequence=firsts.popleft())
        finally:
            task.cancel()
            call.cancel()
            with contextlib.suppress(BaseException):
                await task


async def _relay(args: argparse.Namespace) -> None:
    tls = _tls(args)
    channel = grpc.aio.secure_channel(
        args.to, tls.channel_credentials(),
        options=channel_options(institution_tls_name(args.network, args.receiver), MAX_MESSAGE),
    )
    server = grpc.aio.server(options=server_options(MAX_MESSAGE))
    hub_pb2_grpc.add_HubServicer_to_server(_Relay(channel), server)
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials())
    await server.start()
    _write_ready(args.ready_file, {"port": port})
    await _until_signal()
    await server.stop(1)
    await channel.close()


# -- sender --------------------------------------------------------------------------------


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _sender(args: argparse.Namespace) -> None:
    warm_batches = -(-args.warmup // args.batch)
    batches = -(-args.envelopes // args.batch)
    warm = build_batches(0, warm_batches, args.batch, args.envelope_bytes, args.sender, args.receiver)
    measured = build_batches(warm_batches, batches, args.batch, args.envelope_bytes, args.sender,
                             args.receiver)
    tls = _tls(args)
    channel = grpc.aio.secure_channel(
        args.relay, tls.channel_credentials(),
        options=channel_options(hub_tls_name(args.network), MAX_MESSAGE),
    )
    call = hub_pb2_grpc.HubStub(channel).Submit()
    origin = str(uuid.uuid4())
    window = asyncio.Semaphore(args.window)
    sent: dict[int, tuple[int, int]] = {}  # first_sequence -> (count, send_ns)
    acked: list[tuple[int, int, int, int]] = []  # first, count, send_ns, ack_ns
    state = {"expect": 0, "next": 1}
    done = asyncio.Event()

    async def reader() -> None:
        while True:
            ack = await call.read()
            if ack is grpc.aio.EOF:
                raise RuntimeError("relay closed the stream")
            count, send_ns = sent.pop(ack.first_sequence)
            acked.append((ack.first_sequence, count, send_ns, time.monotonic_ns()))
            window.release()
            if len(acked) == state["expect"]:
                done.set()

    async def phase(which: list[list[bytes]]) -> tuple[int, int, list[tuple[int, int, int, int]]]:
        acked.clear()
        done.clear()
        state["expect"] = len(which)
        start = time.monotonic_ns()
        for envelopes in which:
            await window.acquire()
            first = state["next"]
            state["next"] += len(envelopes)
            sent[first] = (len(envelopes), time.monotonic_ns())
            await call.write(envelope_pb2.EnvelopeBatch(
                origin=origin, first_sequence=first, envelopes=envelopes))
        await done.wait()
        return start, time.monotonic_ns(), list(acked)

    reading = asyncio.create_task(reader())
    loop = asyncio.get_running_loop()
    try:
        _, _, _ = await _race(phase(warm), reading)
        _emit({"event": "warm"})
        await loop.run_in_executor(None, sys.stdin.readline)
        start, end, batches_log = await _race(phase(measured * args.rounds), reading)
        _emit({"event": "measured", "start_ns": start, "end_ns": end, "batches": batches_log})
        await loop.run_in_executor(None, sys.stdin.readline)
    finally:
        reading.cancel()
        call.cancel()
        await channel.close()


async def _race(coro: Any, watched: asyncio.Task[None]) -> Any:
    """Run ``coro`` but fail as soon as ``watched`` (the ack reader) fails."""
    task = asyncio.ensure_future(coro)
    await asyncio.wait({task, watched}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        task.cancel()
        watched.result()
        raise RuntimeError("ack reader stopped")
    return task.result()


# -- command line (one process) ------------------------------------------------------------


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:  # pragma: no cover
        asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("relay", __doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role", required=True)
    for role in ("receiver", "relay", "sender"):
        r = sub.add_parser(role)
        r.add_argument("--ca", required=True)
        r.add_argument("--cert", required=True)
        r.add_argument("--key", required=True)
        r.add_argument("--network", default="demo")
        r.add_argument("--sender", default=SENDER)
        r.add_argument("--receiver", default=RECEIVER)
        if role != "sender":
            r.add_argument("--ready-file", required=True)
        if role == "receiver":
            r.add_argument("--log", required=True, help="arrival log, written at SIGTERM")
        if role == "relay":
            r.add_argument("--to", required=True, help="receiver host:port")
        if role == "sender":
            r.add_argument("--relay", required=True, help="relay host:port")
            r.add_argument("--envelopes", type=int, required=True)
            r.add_argument("--warmup", type=int, required=True)
            r.add_argument("--batch", type=int, required=True)
            r.add_argument("--window", type=int, required=True)
            r.add_argument("--envelope-bytes", type=int, required=True)
            r.add_argument("--rounds", type=int, default=1,
                           help="send the measured batches this many times")
    args = p.parse_args(argv)
    _run({"receiver": _receiver, "relay": _relay, "sender": _sender}[args.role](args))
    return 0


# -- orchestration (the benchmark process) -------------------------------------------------


class _Procs:
    """Child processes of one run; all of them are stopped by :meth:`stop_all`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def spawn(self, name: str, args: list[str], ready: bool, deadline: float,
              **popen: Any) -> dict[str, Any]:
        ready_file = self.root / f"{name}.ready"
        ready_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-P", "-m", "benchmarks.relay", *args]
        if ready:
            cmd += ["--ready-file", str(ready_file)]
        with (self.root / f"{name}.log").open("ab") as log:
            popen.setdefault("stdout", log)
            proc = subprocess.Popen(cmd, stderr=log, env=self.env, cwd=self.root, **popen)
        self.procs[name] = proc
        if not ready:
            return {"pid": proc.pid}
        while not ready_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"relay {name} exited with {proc.returncode}; see "
                                   f"{self.root}/{name}.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"relay {name} did not become ready")
            time.sleep(0.02)
        return dict(json.loads(ready_file.read_text()))

    def terminate(self, name: str, timeout: float = 10) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop_all(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                self.terminate(name)


def _line_reader(stream: IO[bytes]) -> queue.Queue[bytes]:
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        for line in iter(stream.readline, b""):
            lines.put(line)
        lines.put(b"")

    threading.Thread(target=pump, daemon=True, name="relay-sender-stdout").start()
    return lines


def _next_event(lines: queue.Queue[bytes], deadline: float, proc: subprocess.Popen[bytes],
                root: Path) -> dict[str, Any]:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("relay run timed out")
        try:
            line = lines.get(timeout=min(remaining, 1.0))
        except queue.Empty:
            continue
        if not line:
            raise RuntimeError(f"relay sender exited ({proc.poll()}); see {root}/sender.log")
        return dict(json.loads(line))


def run_relay(
    root: Path,
    *,
    ca: Path,
    hub_cert: tuple[Path, Path],
    sender_cert: tuple[Path, Path],
    receiver_cert: tuple[Path, Path],
    envelopes: int,
    warmup: int,
    batch: int,
    window: int,
    envelope_bytes: int,
    deadline: float,
    rounds: int = 1,
    network: str = "demo",
) -> dict[str, Any]:
    """Start receiver, relay and sender; warm up; measure ``envelopes`` x ``rounds`` (the same
    pre-built batches sent ``rounds`` times, for a long enough measurement); stop all three.

    ``*_cert`` are (key, certificate) paths from the same PKI as the end-to-end run.
    """
    root.mkdir(parents=True, exist_ok=True)
    procs = _Procs(root)

    def creds(pair: tuple[Path, Path]) -> list[str]:
        return ["--ca", str(ca), "--key", str(pair[0]), "--cert", str(pair[1]),
                "--network", network]

    arrivals_file = root / "arrivals.json"
    try:
        rx = procs.spawn("receiver", ["receiver", *creds(receiver_cert), "--log",
                                      str(arrivals_file)], True, deadline)
        relay = procs.spawn("relay", ["relay", *creds(hub_cert), "--to",
                                      f"127.0.0.1:{rx['port']}"], True, deadline)
        sender = procs.spawn(
            "sender",
            ["sender", *creds(sender_cert), "--relay", f"127.0.0.1:{relay['port']}",
             "--envelopes", str(envelopes), "--warmup", str(warmup), "--batch", str(batch),
             "--window", str(window), "--envelope-bytes", str(envelope_bytes),
             "--rounds", str(rounds)],
            False, deadline, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        sproc = procs.procs["sender"]
        assert sproc.stdin is not None and sproc.stdout is not None
        lines = _line_reader(sproc.stdout)
        if _next_event(lines, deadline, sproc, root)["event"] != "warm":
            raise RuntimeError("relay sender: unexpected event")
        meter = ProcessMeter({"relay": relay["pid"], "sender": sender["pid"],
                              "receiver": rx["pid"], "loadgen": os.getpid()})
        meter.start()
        sproc.stdin.write(b"go\n")
        sproc.stdin.flush()
        result = _next_event(lines, deadline, sproc, root)
        meter.stop()
        cpu = meter.report(envelopes * rounds)
        sproc.stdin.write(b"exit\n")
        sproc.stdin.flush()
        procs.terminate("sender")
        procs.terminate("relay")
        procs.terminate("receiver")
        arrivals = {last: t for last, _, t in json.loads(arrivals_file.read_text())}
    finally:
        procs.stop_all()

    wall = (result["end_ns"] - result["start_ns"]) / 1e9
    delivered = sum(count for _, count, _, _ in result["batches"])
    latencies = []
    for first, count, send_ns, _ in result["batches"]:
        arrived = arrivals.get(first + count - 1)
        if arrived is not None:
            latencies.append((arrived - send_ns) / 1e6)
    roundtrips = [(ack - send) / 1e6 for _, _, send, ack in result["batches"]]
    return {
        "envelopes": delivered,
        "rounds": rounds,
        "wall_s": round(wall, 3),
        "envelopes_per_s": round(delivered / wall, 1),
        "batch_latency_ms": {
            "what": "sender write -> receiver receipt of the whole batch",
            "batches": len(latencies),
            **p50_p99(latencies, with_max=True),
        },
        "batch_roundtrip_ms": {
            "what": "sender write -> relay's BatchAck (after the receiver's ack)",
            **p50_p99(roundtrips),
        },
        "cpu": cpu,
    }



if __name__ == "__main__":
    grpc_runtime.hold_core()  # one gRPC core for every phase (node/grpc_runtime.py)
    raise SystemExit(main())
