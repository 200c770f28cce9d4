"""A daemon under systemd (``Type=notify``, ``WatchdogSec``), as a real process talking to a
notification socket this test binds in systemd's place: ``READY=1`` once it serves,
``WATCHDOG=1`` every half period from its event loop, ``STOPPING=1`` at SIGTERM; and nothing
at all without ``NOTIFY_SOCKET``."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.testing import ProcessNetwork
from tests.conftest import A

pytestmark = pytest.mark.slow
WATCHDOG_USEC = 400_000  # WatchdogSec=0.4: a ping every 0.2 s


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(0.2)
        yield sock, path


def _received(sock: socket.socket, seconds: float) -> list[str]:
    """Every state received during ``seconds``, in order (a datagram may hold several)."""
    states, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            states += sock.recv(4096).decode().split("\n")
        except TimeoutError:
            continue
    return states


@pytest.mark.parametrize("role", ["hub", "node"])
def test_a_daemon_says_ready_pets_its_watchdog_and_says_stopping(
        role: str, tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    under_systemd = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    with ProcessNetwork(tmp_path / "net", institutions=(A,)) as net:
        if role == "hub":
            net.env.update(under_systemd)
            net.start_hub()
        else:  # the hub runs outside systemd, the node under it
            net.start_hub()
            net.env.update(under_systemd)
            net.start_node(A)
        name = "hub" if role == "hub" else A
        serving = _received(sock, 1.5)  # the ready file exists: it said READY=1 before
        assert serving[0] == "READY=1"
        assert serving[1].startswith("STATUS=serving on port ")
        pings = serving.count("WATCHDOG=1")
        assert 4 <= pings <= 12, serving  # every 0.2 s for 1.5 s, give or take scheduling
        assert set(serving[2:]) == {"WATCHDOG=1"}
        assert net.stop(name) == 0
        assert "STOPPING=1" in _received(sock, 0.5)


def test_nothing_is_sent_for_another_process_or_without_systemd(
        tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    with ProcessNetwork(tmp_path / "net", institutions=(A,)) as net:
        # WATCHDOG_PID names another process: the pings are not ours to send.
        net.env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC=str(WATCHDOG_USEC), WATCHDOG_PID="1")
        net.start_hub()
        states = _received(sock, 1.0)
        assert states[0] == "READY=1" and "WATCHDOG=1" not in states
        net.stop("hub")
        assert _received(sock, 0.5) == ["STOPPING=1"]
        net.env = {k: v for k, v in net.env.items() if not k.startswith(("NOTIFY", "WATCHDOG"))}
        net.start_hub()
        assert _received(sock, 1.0) == []
