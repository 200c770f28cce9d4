"""Operator slips with real processes: a second daemon started by mistake, a permissive umask.

A second hub or node on a data directory, a port or a unix socket already in use must refuse
to start, naming what to change, and leave the running daemon alone; what the daemons write
is private to their user whatever umask they were started with.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.client import LocalClient, make_envelope
from node.testing import DEMO_SERVICE, ProcessNetwork, write_toml
from tests.conftest import A, B

pytestmark = pytest.mark.slow


@pytest.fixture
def net(tmp_path: Path) -> Iterator[ProcessNetwork]:
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as network:
        yield network


def _must_refuse(net: ProcessNetwork, name: str, role: str, table: dict[str, Any]) -> str:
    """Start a daemon that must not start: returns its stderr; fails if it became ready.
    It is started as on a first start (``--init``), so only the slip under test stops it."""
    config, ready = net.root / f"{name}.toml", net.root / f"{name}.ready"
    write_toml(config, table)
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "node.cli", role, "serve", "--config", str(config),
         "--ready-file", str(ready), "--init"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=net.env, cwd=net.root)
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not ready.exists(), f"a second {role} started ({name})"
        assert proc.wait(10) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=10)
    return stderr.decode()


def _status(api: str) -> str:
    with LocalClient(api) as client:
        return client.status().institution


def test_second_hub_on_the_same_data_dir_refuses_naming_it_and_the_holder(
    net: ProcessNetwork,
) -> None:
    net.start(nodes=[])
    error = _must_refuse(net, "hub2", "hub", net.hub_table(net.hub_address))
    assert f"data_dir {net.root / 'hub'} is in use" in error
    assert f"pid {net.pid('hub')}" in error
    assert net.procs["hub"].poll() is None


def test_second_hub_on_the_same_port_cannot_bind_it(net: ProcessNetwork) -> None:
    """With SO_REUSEPORT (gRPC's default) it would bind and share the port with the first."""
    net.start(nodes=[])
    table = net.hub_table(net.hub_address)
    table["data_dir"] = str(net.root / "hub2")
    error = _must_refuse(net, "hub2", "hub", table)
    assert f"cannot listen on {net.hub_address}" in error or "Failed to bind" in error


def test_second_node_on_the_same_data_dir_refuses(net: ProcessNetwork) -> None:
    net.start(nodes=[A])
    table = net.node_table(A, net.hub_address)
    table["local_api"] = f"unix:{net.root / 'sock' / 'other.sock'}"
    error = _must_refuse(net, "a2", "node", table)
    assert f"data_dir {net.root / 'nodes' / A} is in use" in error
    assert f"pid {net.pid(A)}" in error
    assert _status(net.local_api(A)) == A


def test_second_node_never_takes_a_live_nodes_socket(net: ProcessNetwork) -> None:
    net.start(nodes=[A])
    table = net.node_table(B, net.hub_address)
    table["local_api"] = net.local_api(A)  # the slip: B configured with A's socket path
    error = _must_refuse(net, B, "node", table)
    assert "local_api" in error and "running process" in error
    assert _status(net.local_api(A)) == A  # A's socket is still there and still A's


def test_a_dead_nodes_socket_is_replaced(net: ProcessNetwork) -> None:
    net.start(nodes=[A])
    net.kill(A)  # kill -9 leaves the socket file behind
    assert stat.S_ISSOCK(Path(net.local_api(A).removeprefix("unix:")).lstat().st_mode)
    net.start_node(A)
    assert _status(net.local_api(A)) == A


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode)
            for p in [root, *root.rglob("*")]}


def test_data_is_private_whatever_the_umask(net: ProcessNetwork) -> None:
    net.hub_overrides["directory_key"] = str(net.root / "hub" / "directory-signing.key")
    previous = os.umask(0)  # the daemons inherit the most permissive umask there is
    try:
        net.start()
    finally:
        os.umask(previous)
    with LocalClient(net.local_api(A)) as client:
        outcomes, _ = client.submit([make_envelope(DEMO_SERVICE, [B], b"x")], timeout=20)
    assert [o.reason for o in outcomes] == ["ACCEPTED"]
    for name, root in (("hub", net.root / "hub"), ("node", net.root / "nodes" / A)):
        modes = _modes(root)
        assert any(p.endswith(".sqlite-wal") for p in modes), (name, modes)
        assert modes.pop(".") == 0o700, name
        assert modes.pop("directory-signing.pub", 0o644) == 0o644  # a public key
        assert modes == {p: 0o600 for p in modes}, name
    socket_path = Path(net.local_api(A).removeprefix("unix:"))
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o660


@pytest.mark.parametrize("address", ["0.0.0.0:0", "127.0.0.1:0"])
def test_a_tcp_local_api_without_mutual_tls_does_not_start(
    net: ProcessNetwork, address: str,
) -> None:
    """Before: served in plaintext to every local user (or the LAN), as the institution."""
    net.start(nodes=[])
    table = net.node_table(A, net.hub_address)
    table["local_api"] = address
    error = _must_refuse(net, A, "node", table)
    assert "local_tls is required when local_api is a TCP address" in error
