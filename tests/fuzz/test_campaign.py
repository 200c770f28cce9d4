"""Structure-aware fuzzing of every RPC against real daemons (issue #13).

A hub and two nodes run as real processes (:class:`~node.testing.ProcessNetwork`), each under
an address-space cap (``RLIMIT_AS`` = 1 GiB), with the network's own certificates. For each
method of ``Hub``, ``Node``, ``Local`` and ``DirectoryAdmin``, Hypothesis draws requests from
the method's input descriptor (tests/fuzz/strategies.py: structure, absurd sizes up to the
configured maximum message size, unknown fields, wire damage, generated or garbage envelopes
inside ``bytes`` fields) and sends them as raw bytes, with the credential that reaches the
method: an institution certificate (C, whose node does not run) for ``Hub``, an admin
certificate for ``DirectoryAdmin``, the hub's certificate for node A's ``Node`` service, and
node A's unix socket for ``Local``. Calls run ``WINDOW`` at a time; any status is an answer.

During the campaign every daemon must stay alive (the inputs in flight when one dies are
saved under the work directory). Afterwards: each daemon reports SERVING on gRPC health, its
RSS comes back under :data:`RSS_BOUND`, an envelope from node A's local API reaches node B,
and ``crossroads audit verify --config hub.toml`` exits 0.

Profiles: ``make test`` sends :data:`FAST_EXAMPLES` inputs per method; set
``CROSSROADS_FUZZ_EXAMPLES=N`` (inputs per method) for a long campaign, e.g. ``make fuzz``
(tests/fuzz/README.md has the figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psutil
import pytest
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings

from node.client import LocalClient, make_envelope
from node.rpc.tls import channel_options, hub_tls_name, institution_tls_name
from node.testing import DEMO_SERVICE, ProcessNetwork
from node.wire.gen.crossroads.v1 import directory_pb2, hub_pb2, local_pb2, node_pb2
from tests.conftest import A, B, C
from tests.fuzz.strategies import Sizes, requests

FAST_EXAMPLES = 15
EXAMPLES = int(os.environ.get("CROSSROADS_FUZZ_EXAMPLES", FAST_EXAMPLES))
ADDRESS_SPACE_CAP = 1 << 30
#: The daemons' maximum message size in the campaign (limits.max_batch_bytes; the node's
#: server takes delivery_batch_bytes + max_payload_bytes + 2 MiB, also 4 MiB here).
MAX_MESSAGE = 4 << 20
LIMITS = {"max_payload_bytes": 1 << 20, "max_batch_bytes": MAX_MESSAGE,
          "delivery_batch_bytes": 1 << 20}
#: An idle daemon's RSS is about 70 MiB (measured: hub and nodes 67-69 MiB). The campaign
#: keeps WINDOW calls in flight, each up to 4 messages of up to MAX_MESSAGE bytes, which a
#: daemon may hold twice (bytes and parsed): 8 x 4 x 4 MiB x 2 = 256 MiB at worst, on top
#: of the idle 70 MiB. Memory that grows with the number of inputs breaks this bound.
RSS_BOUND = 400 << 20
WINDOW = 8
CALL_TIMEOUT_S = 3.0
SERVICES = {
    "Hub": hub_pb2, "Node": node_pb2, "Local": local_pb2, "DirectoryAdmin": directory_pb2,
}
METHODS = [m for name, module in SERVICES.items()
           for m in module.DESCRIPTOR.services_by_name[name].methods]
VOCABULARY = (A, B, C, DEMO_SERVICE, "demo", "hub", "85073003328", "2024-01-01", "ACCEPTED",
              "127.0.0.1:1", "unix:/nonexistent", "explicit", "declaration", "any")

_T = TypeVar("_T")
pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(max(300, EXAMPLES * len(METHODS) * 2))]


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


class Campaign:
    """Sends raw requests, ``WINDOW`` calls in flight, and counts the statuses by method.

    The calls run on an asyncio loop in a thread of their own (grpc.aio channels); Hypothesis
    draws the inputs in the test's thread and hands them over.
    """

    def __init__(self, net: ProcessNetwork) -> None:
        self.net = net
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.channels = self._run(_channels(net, grpc.aio))
        self.inflight: deque[tuple[str, list[bytes], Future[str]]] = deque()
        self.codes: Counter[tuple[str, str]] = Counter()
        self.inputs = 0
        self.bytes = 0
        self.peak_rss: dict[str, int] = {}

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def send(self, method: MethodDescriptor, messages: list[bytes]) -> None:
        channel = self.channels[method.containing_service.name]
        path = _path(method)
        call = asyncio.run_coroutine_threadsafe(_call(channel, method, messages), self.loop)
        self.inflight.append((path, messages, call))
        self.inputs += len(messages)
        self.bytes += sum(map(len, messages))
        while len(self.inflight) > WINDOW:
            self._finish()
        self.check_alive()

    def _finish(self) -> None:
        path, _, call = self.inflight.popleft()
        self.codes[path, call.result()] += 1

    def drain(self) -> None:
        while self.inflight:
            self._finish()

    def check_alive(self) -> None:
        """Fail at once when a daemon died; note each one's peak RSS."""
        dead = {n: p.returncode for n, p in self.net.procs.items() if p.poll() is not None}
        for name, proc in self.net.procs.items():
            with contextlib.suppress(psutil.Error):
                rss = psutil.Process(proc.pid).memory_info().rss
                self.peak_rss[name] = max(rss, self.peak_rss.get(name, 0))
        if dead:
            saved = self.net.root / "crash-inputs"
            saved.mkdir(exist_ok=True)
            for i, (path, messages, _) in enumerate(self.inflight):
                for j, message in enumerate(messages):
                    (saved / f"{i}-{path.strip('/').replace('/', '.')}-{j}.bin").write_bytes(message)
            pytest.fail(f"daemons died: {dead}; inputs in flight saved in {saved}\n"
                        f"{self.net.log_tails()}")

    def close(self) -> None:
        async def close_all() -> None:
            for channel in self.channels.values():
                await channel.close()

        self._run(close_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor, messages: list[bytes]) -> str:
    """One raw call (identity serializers); its status code's name. A response stream is read
    for a few messages, then cancelled (WatchDirectory and Serve never end on their own)."""
    path = _path(method)
    try:
        if not method.client_streaming and not method.server_streaming:
            await channel.unary_unary(path)(messages[0], timeout=CALL_TIMEOUT_S)
            return "OK"
        if not method.client_streaming:
            call = channel.unary_stream(path)(messages[0], timeout=CALL_TIMEOUT_S)
        else:
            call = channel.stream_stream(path)(iter(messages), timeout=CALL_TIMEOUT_S)
        n = 0
        async for _ in call:
            n += 1
            if n >= 8:
                call.cancel()
                return "CANCELLED"
        return str((await call.code()).name)
    except grpc.aio.AioRpcError as err:
        if err.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            return f"{err.code().name}: {(err.details() or '')[:160]}"
        return str(err.code().name)


def _fuzz(campaign: Campaign, method: MethodDescriptor, sizes: Sizes) -> None:
    """Send ``EXAMPLES`` generated requests to ``method`` (no shrinking: a daemon that died
    will not answer the smaller inputs; the ones in flight are saved instead)."""

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(requests(method.input_type, sizes, method.client_streaming))
    def fuzz(messages: list[bytes]) -> None:
        campaign.send(method, messages)

    fuzz()


async def _channels(net: ProcessNetwork, grpc_api: Any) -> dict[str, Any]:
    """One raw channel per service, with the credential that reaches it (``grpc_api``:
    ``grpc`` or ``grpc.aio``; async to create the aio channels on their own loop)."""
    big = 2 * MAX_MESSAGE + (1 << 20)  # oversize inputs must reach the server's own check

    def tls(address: str, key: Path, cert: Path, name: str) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(
            net.pki.ca_cert.read_bytes(), key.read_bytes(), cert.read_bytes())
        return grpc_api.secure_channel(address, creds, options=channel_options(name, big))

    node_a = f"127.0.0.1:{net.ready[A]['port']}"
    return {
        "Hub": tls(net.hub_address, *net.node_certs[C], hub_tls_name(net.network)),
        "DirectoryAdmin": tls(net.hub_address, net.admin_key, net.admin_cert,
                              hub_tls_name(net.network)),
        "Node": tls(node_a, net.hub_key, net.hub_cert, institution_tls_name(net.network, A)),
        "Local": grpc_api.insecure_channel(net.local_api(A), options=channel_options(None, big)),
    }


def _report(campaign: Campaign, elapsed: float, rss: dict[str, int] | None = None) -> None:
    """Print the campaign's figures and keep them in ``campaign.json`` (work directory)."""
    summary = {
        "inputs": campaign.inputs, "calls": sum(campaign.codes.values()),
        "megabytes": round(campaign.bytes / 2**20, 1), "seconds": round(elapsed, 1),
        "inputs_per_s": round(campaign.inputs / elapsed, 1),
        "rss_mib_peak": {n: v >> 20 for n, v in campaign.peak_rss.items()},
        "rss_mib_after": {n: v >> 20 for n, v in (rss or {}).items()},
        "statuses": {f"{p} {c}": n for (p, c), n in sorted(campaign.codes.items())},
    }
    (campaign.net.root / "campaign.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def _serving(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status)


def _rss_settles(pids: dict[str, int], timeout: float = 30) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        rss = {n: psutil.Process(pid).memory_info().rss for n, pid in pids.items()}
        if max(rss.values()) < RSS_BOUND or time.monotonic() > deadline:
            return rss
        time.sleep(1)


def _probe_arrives(net: ProcessNetwork) -> bool:
    """A real envelope from node A's local API reaches node B's inbox."""
    with LocalClient(net.local_api(A)) as client:
        outcomes, _ = client.submit([make_envelope(DEMO_SERVICE, [B], b"after the campaign",
                                                   sender_ticket="fuzz-probe")], timeout=30)
        assert [o.reason for o in outcomes] == ["ACCEPTED"], outcomes
    deadline = time.monotonic() + 60
    with LocalClient(net.local_api(B)) as client:
        while time.monotonic() < deadline:
            got = client.fetch(1000, wait_ms=500)
            if got:
                client.acknowledge([e.hub_ticket for e in got])
            if any(e.sender_ticket == "fuzz-probe" and e.sender == A for e in got):
                return True
    return False


def test_every_rpc_survives_generated_garbage(tmp_path: Path) -> None:
    net = ProcessNetwork(tmp_path / "net", institutions=(A, B, C),
                         hub_overrides={"limits": dict(LIMITS)},
                         node_overrides={"limits": dict(LIMITS)})
    net.address_space_cap = ADDRESS_SPACE_CAP
    # glibc reserves 64 MiB of address space per malloc arena (8 per core): under RLIMIT_AS
    # that reservation, not what a daemon uses, would decide when its allocations fail.
    net.env["MALLOC_ARENA_MAX"] = "2"
    sizes = Sizes(max_message=MAX_MESSAGE, vocabulary=VOCABULARY)
    with net:
        net.start(nodes=(A, B))
        for proc in net.procs.values():
            assert psutil.Process(proc.pid).rlimit(psutil.RLIMIT_AS) == (ADDRESS_SPACE_CAP,) * 2
        campaign = Campaign(net)
        started = time.monotonic()
        try:
            for method in METHODS:
                _fuzz(campaign, method, sizes)
            campaign.drain()
            campaign.check_alive()
            elapsed = time.monotonic() - started
            _report(campaign, elapsed)
            assert {path for path, _ in campaign.codes} == {_path(m) for m in METHODS}

            # Alive and SERVING on every port.
            channels = asyncio.run(_channels(net, grpc))
            for name in ("Hub", "Node", "Local"):
                assert _serving(channels[name]) == health_pb2.HealthCheckResponse.SERVING, name
            # Memory comes back under the bound.
            rss = _rss_settles({n: p.pid for n, p in net.procs.items()})
            assert max(rss.values()) < RSS_BOUND, {n: v >> 20 for n, v in rss.items()}
            # Valid traffic flows (the campaign may have rewritten the directory: restore it).
            assert net.seed is not None
            net.apply_directory(net.seed)
            assert _probe_arrives(net), net.log_tails()
            # The audit chain verifies.
            verify = subprocess.run(
                [sys.executable, "-P", "-m", "node.cli", "audit", "verify", "--config",
                 str(net.root / "hub.toml")], cwd=net.root, capture_output=True, text=True,
                timeout=120)
            assert verify.returncode == 0, verify.stdout + verify.stderr
        finally:
            campaign.close()
        _report(campaign, elapsed, rss)
        # Every refusal is a status a handler chose: UNKNOWN is an exception that escaped one.
        unknown = {p: n for (p, code), n in campaign.codes.items() if code.startswith("UNKNOWN")}
        assert not unknown, unknown
        # A clean stop (nodes first, then the hub) after all that.
        codes = {n: net.stop(n) for n in sorted(net.procs, key=lambda n: n == "hub")}
        assert set(codes.values()) == {0}, codes
