"""The application commands' probe of a node's address, on real sockets, and the exit code
of each gRPC status."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from node.cli.outcomes import Exit, NodeUnreachable, exit_for_status, probe, run_guarded


def test_probe_names_what_it_tried(tmp_path: Path) -> None:
    missing = tmp_path / "node.sock"
    with pytest.raises(NodeUnreachable, match=f"no socket at {missing}"):
        probe(f"unix:{missing}")
    with socket.socket(socket.AF_UNIX) as stale:  # a socket file nobody listens on
        stale.bind(str(missing))
    with pytest.raises(NodeUnreachable, match=f"unix:{missing}: Connection refused"):
        probe(f"unix:{missing}")
    missing.unlink()
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(missing))
        live.listen()
        probe(f"unix:{missing}")  # someone listens: no error
    with pytest.raises(NodeUnreachable, match="not unix:/path or host:port"):
        probe("nowhere")


def test_exit_codes_of_statuses() -> None:
    assert exit_for_status(grpc.StatusCode.UNAVAILABLE) is Exit.UNAVAILABLE
    assert exit_for_status(grpc.StatusCode.DEADLINE_EXCEEDED) is Exit.UNAVAILABLE
    assert exit_for_status(grpc.StatusCode.PERMISSION_DENIED) is Exit.REFUSED
    assert exit_for_status(grpc.StatusCode.UNAUTHENTICATED) is Exit.REFUSED
    assert exit_for_status(grpc.StatusCode.INVALID_ARGUMENT) is Exit.USAGE
    assert exit_for_status(grpc.StatusCode.INTERNAL) is Exit.NEGATIVE


def test_run_guarded_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> int:
        raise NodeUnreachable("unix:/x", "permission denied", refused=True)

    assert run_guarded("status", broken) == Exit.REFUSED
    assert capsys.readouterr().err == (
        "crossroads status: error: cannot reach the node at unix:/x: permission denied\n")
    assert run_guarded("status", lambda: 1 // 0) == Exit.NEGATIVE
    assert "ZeroDivisionError" in capsys.readouterr().err
