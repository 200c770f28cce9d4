"""Frozen peers are noticed within the configured keepalive bound, not gRPC's 60 s ping timeout.

A process stopped with SIGSTOP keeps its sockets: the kernel still acknowledges TCP, so only
an HTTP/2 keepalive ping that goes unanswered shows the peer is gone. The configured bound is
``keepalive.time_ms + keepalive.timeout_ms`` (docs/OPERATIONS.md, "Connections and
keepalive"); the daemons here run with a short keepalive so the test takes seconds, and each
assertion allows that bound plus ``SLACK_S``, derived from the config, never a speed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.client import LocalClient, make_envelope
from node.testing import DEMO_SERVICE, ProcessNetwork
from tests.conftest import A, B

pytestmark = pytest.mark.slow

KEEPALIVE = {"time_ms": 2_000, "timeout_ms": 1_000}
BOUND_S = (KEEPALIVE["time_ms"] + KEEPALIVE["timeout_ms"]) / 1000
#: Scheduling on a loaded machine, the status poll, the uplink noticing the closed stream.
SLACK_S = 5.0
CITIZEN = "85073003328"


@pytest.fixture
def net(tmp_path: Path) -> Iterator[ProcessNetwork]:
    with ProcessNetwork(tmp_path / "net", institutions=(A, B),
                        hub_overrides={"keepalive": dict(KEEPALIVE)},
                        node_overrides={"keepalive": dict(KEEPALIVE)}) as network:
        network.start()
        try:
            yield network
        finally:
            for name in list(network.procs):  # a stopped process cannot take SIGTERM
                os.kill(network.pid(name), signal.SIGCONT)


def _wait_until(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``condition()`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def _hub_connected(net: ProcessNetwork, node: str) -> bool:
    with LocalClient(net.local_api(node)) as client:
        return bool(client.status().hub_connected)


def _receive(api: str, timeout: float) -> list[str]:
    """Sender tickets of what the node's inbox holds (waiting up to ``timeout`` for any), acked."""
    with LocalClient(api) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = client.fetch(100, wait_ms=200)
            if got:
                client.acknowledge([e.hub_ticket for e in got])
                return [e.sender_ticket for e in got]
    return []


def _no_ping_abuse(net: ProcessNetwork) -> None:
    """The short keepalive is accepted by the peers (no GOAWAY too_many_pings, which would
    make gRPC double the keepalive time)."""
    for log in net.root.glob("*.log"):
        assert "too_many_pings" not in log.read_text(errors="replace"), log.name


def _envelope(ticket: str) -> bytes:
    return make_envelope(DEMO_SERVICE, [B], b"x" * 200, subject_citizen=CITIZEN,
                         sender_ticket=ticket)


class _Load:
    """An application submitting to its node without pause (the node keeps its outbox)."""

    def __init__(self, api: str) -> None:
        self.api, self.sent = api, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with LocalClient(self.api) as client:
            while not self._stop.is_set():
                client.submit([_envelope(f"load-{self.sent + i}") for i in range(50)])
                self.sent += 50

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.parametrize("loaded", [False, True], ids=["idle", "under_load"])
def test_frozen_hub_is_noticed_within_the_keepalive_bound(net: ProcessNetwork, loaded: bool) -> None:
    assert _wait_until(lambda: _hub_connected(net, A), 20) is not None, net.log_tails()
    load = _Load(net.local_api(A)) if loaded else None
    try:
        if load is not None:
            assert _wait_until(lambda: load.sent >= 500, 20) is not None
        os.kill(net.pid("hub"), signal.SIGSTOP)
        noticed = _wait_until(lambda: not _hub_connected(net, A), BOUND_S + SLACK_S)
    finally:
        if load is not None:
            load.stop()
    assert noticed is not None, (
        f"the node still reports the frozen hub connected after {BOUND_S + SLACK_S:g} s"
        f" (keepalive {KEEPALIVE})\n{net.log_tails()}")
    # Thawed, the hub is found again.
    os.kill(net.pid("hub"), signal.SIGCONT)
    assert _wait_until(lambda: _hub_connected(net, A), 30) is not None, net.log_tails()
    _no_ping_abuse(net)


def test_frozen_node_is_noticed_by_the_hubs_delivery(net: ProcessNetwork) -> None:
    with LocalClient(net.local_api(A)) as sender:
        sender.submit([_envelope("before")])
    assert _receive(net.local_api(B), 20) == ["before"]  # the delivery stream to B is open
    hub_log = net.root / "hub.log"
    failures_before = hub_log.read_text().count('"delivery_failed"')
    os.kill(net.pid(B), signal.SIGSTOP)
    with LocalClient(net.local_api(A)) as sender:
        sender.submit([_envelope("while-frozen")])

    def delivery_failed() -> bool:
        return hub_log.read_text().count('"delivery_failed"') > failures_before

    noticed = _wait_until(delivery_failed, BOUND_S + SLACK_S)
    assert noticed is not None, (
        f"the hub did not give up its delivery stream to the frozen node within"
        f" {BOUND_S + SLACK_S:g} s (keepalive {KEEPALIVE})\n{net.log_tails()}")
    # Thawed, the node gets the envelope: nothing was lost.
    os.kill(net.pid(B), signal.SIGCONT)
    assert _receive(net.local_api(B), 30) == ["while-frozen"], net.log_tails()
    _no_ping_abuse(net)
