"""What a daemon writes when things go wrong around it, from real processes: gRPC core's own
plain-text lines stay out of the JSON log, and a daemon that never started does not log that
it stopped."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.testing import NetworkLayout, ProcessNetwork, write_toml
from tests.conftest import A

pytestmark = pytest.mark.slow
#: An address of TEST-NET-1 (RFC 5737): no interface of this machine has it, so binding fails.
UNBINDABLE = "192.0.2.1:7443"


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_junk_connections_leave_only_json_lines_in_the_hub_log(tmp_path: Path) -> None:
    with ProcessNetwork(tmp_path / "net", institutions=(A,)) as net:
        net.start()
        host, port = net.hub_address.rsplit(":", 1)
        for junk in (b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\x05hello",
                     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0" * 50):
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(junk)
                time.sleep(0.2)  # gRPC core reads it and gives up on the handshake
        time.sleep(0.5)
    for name in ("hub", A):
        lines = _lines((net.root / f"{name}.log").read_text())
        assert lines
        not_json = [line for line in lines if not line.startswith("{")]
        assert not_json == [], f"{name}.log: {not_json[:3]}"
        assert all(json.loads(line)["event"] for line in lines)


@pytest.mark.parametrize("role", ["hub", "node"])
def test_a_daemon_that_cannot_start_does_not_log_stopped(tmp_path: Path, role: str) -> None:
    layout = NetworkLayout(tmp_path / "net", institutions=(A,))
    table = (layout.hub_table(UNBINDABLE) if role == "hub"
             else {**layout.node_table(A, "127.0.0.1:1"), "listen": UNBINDABLE})
    config = tmp_path / f"{role}.toml"
    write_toml(config, table)
    # --init: a first start, so what fails is the start itself (the address), not the
    # data directory check that precedes it.
    done = subprocess.run([sys.executable, "-P", "-m", "node.cli", role, "serve", "--init",
                           "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "could not start" in done.stderr and "Traceback" not in done.stderr
    events = [json.loads(line) for line in _lines(done.stdout)]
    assert [e["event"] for e in events if e["level"] == "error"] == ["start_failed"]
    assert f"{role}_stopped" not in [e["event"] for e in events]
