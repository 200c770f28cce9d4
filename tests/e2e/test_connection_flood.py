"""Connection exhaustion: sockets that never finish TLS do not shut real nodes out of the hub.

The hub runs as a real process with a systemd unit's default open-file limit (soft 1024,
set in the child before it executes). 2,000 TCP connections are held against it, most never
sending a byte, some stopping in the middle of a TLS ClientHello. A real node must still
connect, register and get an envelope through, and the hub must close the held sockets
itself once their handshake time is up (node/rpc/tls.py, ``HANDSHAKE_TIMEOUT_MS``).

Two cases: the unit's default (soft 1024, hard higher), which the hub raises at start
(node/open_files.py); and a hard limit of 1024 too, which it cannot raise: then its
connection cap closes the sockets beyond half the limit at once (no EMFILE), and the node
gets in when the held handshakes time out.
"""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from node.client import LocalClient, make_envelope
from node.rpc.tls import HANDSHAKE_TIMEOUT_MS
from node.testing import DEMO_SERVICE, ProcessNetwork
from tests.conftest import A, B

pytestmark = pytest.mark.slow

HELD = 2_000
HALF_HELLOS = 300
#: systemd's default ``LimitNOFILE`` soft limit.
UNIT_DEFAULT_SOFT = 1024
#: The first bytes of a TLS 1.2/1.3 ClientHello record (header announcing 512 bytes, then
#: the start of the handshake message): a client that stops there is half-open.
PARTIAL_CLIENT_HELLO = bytes.fromhex("160301020001") + bytes.fromhex("0001fc0303") + b"\x00" * 16


def _systemd_default_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(UNIT_DEFAULT_SOFT, hard), hard))


def _hard_1024_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (UNIT_DEFAULT_SOFT, UNIT_DEFAULT_SOFT))


def _raise_own_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"this test needs {needed} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _hold(address: str, count: int) -> list[socket.socket]:
    host, port = address.rsplit(":", 1)
    held = []
    for i in range(count):
        s = socket.create_connection((host, int(port)), timeout=5)
        if i < HALF_HELLOS:
            s.sendall(PARTIAL_CLIENT_HELLO)
        held.append(s)
    return held


def _closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("limit", [_systemd_default_nofile, _hard_1024_nofile],
                         ids=["soft_1024", "hard_1024"])
def test_node_connects_while_2000_idle_connections_are_held(
    tmp_path: Path, limit: Callable[[], None]
) -> None:
    _raise_own_nofile(HELD + 1024)
    # Long enough for the held handshakes to time out and the node's uplink to retry.
    bound_s = HANDSHAKE_TIMEOUT_MS / 1000 + 20
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.preexec["hub"] = limit
        net.start_hub()
        held = _hold(net.hub_address, HELD)
        try:
            time.sleep(1)  # let the hub accept what it can
            for e in (A, B):
                net.start_node(e)
            envelope = make_envelope(DEMO_SERVICE, [B], b"through the flood",
                                     subject_citizen="85073003328", sender_ticket="flood-1")
            with LocalClient(net.local_api(A)) as client:
                outcomes, sequences = client.submit([envelope])
                assert [o.reason for o in outcomes] == ["ACCEPTED"]
                decided = client.outcomes(sequences, wait_ms=int(bound_s * 1000))
            assert [o.reason for o in decided] == ["ACCEPTED"], net.log_tails()
            got = []
            deadline = time.monotonic() + bound_s
            with LocalClient(net.local_api(B)) as client:
                while not got and time.monotonic() < deadline:
                    got = client.fetch(10, wait_ms=500)
            assert [e.sender_ticket for e in got] == ["flood-1"], net.log_tails()
            with LocalClient(net.local_api(A)) as client:
                assert client.status().hub_connected
            # The hub itself ends the connections that never finished their handshake.
            deadline = time.monotonic() + bound_s
            open_ = list(held)
            while open_ and time.monotonic() < deadline:
                open_ = [s for s in open_ if not _closed_by_peer(s)]
                time.sleep(0.5)
            assert not open_, f"{len(open_)} of {HELD} held sockets still open at the hub"
        finally:
            for s in held:
                s.close()
        hub_log = (net.root / "hub.log").read_text()
    assert "open_files_limit" in hub_log
    assert "File descriptor limit reached" not in hub_log  # gRPC's accept never hit EMFILE
