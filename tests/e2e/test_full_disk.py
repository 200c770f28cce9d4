"""A full disk, tried as an operator meets it: the data directories of a hub and two nodes
each on a small tmpfs of its own, filled up in turn while envelopes flow (real processes).

Each time the component that failed logs ``store_failed`` at ``error`` with the cause and
SQLite's message and counts it (``crossroads_store_errors_total``); an application that
submits gets UNAVAILABLE ``NOT_STORED`` (retry) instead of UNKNOWN; a failed stream is not
logged at info. Once space is freed everything flows again, and nothing acknowledged is lost
or delivered twice."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from node.audit_tool import verify_file
from node.client import LocalClient, make_envelope
from node.testing import DEMO_SERVICE, ProcessNetwork
from tests.conftest import A, B
from tests.full_disk import fill, small_tmpfs

pytestmark = pytest.mark.slow
CITIZEN = "85073003328"


#: Stream ends logged at info by design (docs/OPERATIONS.md, "Logs"): done, or ended by the
#: peer (e.g. a node whose own disk is full drops its uplink session: the hub sees a cancel).
ROUTINE_ENDS = ("OK", "CancelledError", "GeneratorExit")


def log_events(net: ProcessNetwork, name: str) -> list[dict[str, object]]:
    lines = (net.root / f"{name}.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def store_errors(net: ProcessNetwork, name: str) -> dict[tuple[str, str], float]:
    port = json.loads((net.root / f"{name}.ready").read_text())["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("crossroads_store_errors_total{"):
            labels, value = line[len("crossroads_store_errors_total{"):].split("} ")
            pairs = dict(p.split("=") for p in labels.split(","))
            found[(pairs["component"].strip('"'), pairs["cause"].strip('"'))] = float(value)
    return found


def until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def envelopes(prefix: str, count: int, size: int = 2048) -> list[bytes]:
    return [make_envelope(DEMO_SERVICE, [B], b"x" * size, subject_citizen=CITIZEN,
                          sender_ticket=f"{prefix}-{i}") for i in range(count)]


def failed_store(net: ProcessNetwork, name: str, component: str) -> list[dict[str, object]]:
    return [e for e in log_events(net, name)
            if e.get("event") == "store_failed" and e.get("component") == component]


def test_a_full_disk_is_named_counted_and_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "net"
    with (small_tmpfs(tmp_path / "hub-disk") as hub_disk, small_tmpfs(tmp_path / "a-disk") as a_disk,
          small_tmpfs(tmp_path / "b-disk") as b_disk):
        net = ProcessNetwork(
            root, institutions=(A, B),
            hub_overrides={"data_dir": str(hub_disk), "metrics_listen": "127.0.0.1:0"},
            node_overrides={"metrics_listen": "127.0.0.1:0"},
            per_node={A: {"data_dir": str(a_disk)}, B: {"data_dir": str(b_disk)}})
        with net:
            net.start()
            api_a, api_b = net.local_api(A), net.local_api(B)
            received: dict[str, str] = {}

            def drain() -> None:
                with LocalClient(api_b) as client:
                    got = client.fetch(1000)
                    for e in got:
                        assert e.sender_ticket not in received.values(), "delivered twice"
                        received[e.hub_ticket] = e.sender_ticket
                    if got:
                        client.acknowledge([e.hub_ticket for e in got])

            sent: set[str] = set()

            def submit(batch: list[bytes], prefix: str) -> None:
                with LocalClient(api_a) as client:
                    outcomes, _ = client.submit(batch)
                assert {o.reason for o in outcomes} == {"ACCEPTED"}
                sent.update(f"{prefix}-{i}" for i in range(len(batch)))

            submit(envelopes("before", 20), "before")

            # 1. The sending node's disk: the application is told NOT_STORED, retries later.
            filler = fill(a_disk)
            with LocalClient(api_a) as client, pytest.raises(grpc.RpcError) as failed:
                client.submit(envelopes("a-full", 100))
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            assert failed.value.details().startswith("NOT_STORED: local_submit: DISK_FULL")
            (logged, *_) = failed_store(net, A, "local_submit")
            assert logged["level"] == "error" and logged["cause"] == "DISK_FULL"
            assert "full" in str(logged["error"])
            assert store_errors(net, A)[("local_submit", "DISK_FULL")] >= 1
            filler.unlink()
            submit(envelopes("a-full", 100), "a-full")  # the retry, once there is room

            # 2. The receiving node's disk: its inbox cannot store a delivery.
            until(lambda: (drain(), len(received) == 120)[1])
            filler = fill(b_disk)
            submit(envelopes("b-full", 100), "b-full")
            until(lambda: bool(failed_store(net, B, "inbox_store")))
            (logged, *_) = failed_store(net, B, "inbox_store")
            assert logged["level"] == "error" and logged["cause"] == "DISK_FULL"
            assert store_errors(net, B)[("inbox_store", "DISK_FULL")] >= 1
            failed_streams = [e for e in log_events(net, B) if e.get("event") == "rpc"
                              and e.get("method") == "Node.Deliver"
                              and e.get("status") not in ROUTINE_ENDS]
            assert failed_streams and all(e["level"] != "info" for e in failed_streams)
            filler.unlink()
            until(lambda: (drain(), len(received) == 220)[1])

            # 3. The hub's disk: its intake cannot store a batch; the node keeps it queued.
            filler = fill(hub_disk)
            submit(envelopes("hub-full", 100), "hub-full")
            until(lambda: bool(failed_store(net, "hub", "hub_intake")))
            (logged, *_) = failed_store(net, "hub", "hub_intake")
            assert logged["level"] == "error" and logged["cause"] == "DISK_FULL"
            assert store_errors(net, "hub")[("hub_intake", "DISK_FULL")] >= 1
            refusals = [e for e in log_events(net, "hub") if e.get("event") == "rpc"
                        and e.get("method") == "Hub.Submit" and e.get("status") not in ROUTINE_ENDS]
            assert refusals and all(e["level"] != "info" for e in refusals)
            filler.unlink()
            until(lambda: (drain(), len(received) == 320)[1], timeout=90)

            time.sleep(0.5)
            drain()
            assert sorted(received.values()) == sorted(sent)  # each once, nothing lost
        assert verify_file(hub_disk / "hub.sqlite").problem is None
