"""A node whose disk is full: its uplink, its directory watch and the hub's delivery to it
back off, capped.

Real processes (hub and two nodes), node B's data directory on a small tmpfs that the test
fills. B has envelopes in its outbox and the hub has envelopes queued for B: B's uplink gets
each batch acknowledged and cannot store the ack, B cannot store the envelopes delivered to
it. Both loops fail again and again; each ``Register`` of B's succeeds. Before issue #13 a
successful ``Register`` reset both backoffs (the node's and the hub's delivery to B), and both
loops retried every 25-50 ms. The attempts are counted over a window and compared with the
most the backoff schedule allows (counts, not timings). Then the disk is freed and nothing
acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from node.audit_tool import verify_file
from node.client import LocalClient, make_envelope
from node.core.backoff import Backoff
from node.core.directory import Service
from node.testing import DEMO_SERVICE, ProcessNetwork
from tests.conftest import A, B
from tests.full_disk import fill, small_tmpfs

WINDOW_S = 6.0
CITIZEN = "85073003328"


def most_attempts(window_s: float, backoff: Backoff | None = None) -> int:
    """The most failures a loop following ``backoff`` can log in any ``window_s``: its
    shortest delays (half the ceiling: full jitter from ceiling/2), from the first attempt."""
    b = backoff or Backoff()
    total, n = 0.0, 0
    while True:
        ceiling = min(b.maximum, b.initial * b.factor**n)
        if total + ceiling / 2 > window_s:
            return n + 1
        total += ceiling / 2
        n += 1


def _count(log: Path, *needles: str) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if all(n in line for n in needles))


def _submit(api: str, count: int, to: str, prefix: str) -> None:
    with LocalClient(api) as client:
        outcomes, _ = client.submit([
            make_envelope(DEMO_SERVICE, [to], b"x" * 100, subject_citizen=CITIZEN,
                          sender_ticket=f"{prefix}{i}") for i in range(count)], timeout=30)
    assert {o.reason for o in outcomes} == {"ACCEPTED"}


def _fetch(api: str, expected: int, timeout: float = 60) -> set[str]:
    got: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        with contextlib.suppress(Exception), LocalClient(api) as client:
            batch = client.fetch(1000, wait_ms=300)
            got.update(e.sender_ticket for e in batch)
            if batch:
                client.acknowledge([e.hub_ticket for e in batch])
    return got


def test_full_disk_at_a_node_backs_off_both_loops(tmp_path: Path) -> None:
    root = tmp_path / "net"
    with small_tmpfs(root / "nodes" / B) as b_dir, ProcessNetwork(
            root, institutions=(A, B)) as net:
        net.start()
        net.stop("hub")  # envelopes wait at both ends
        _submit(net.local_api(B), 20, A, "b-")
        filler = fill(b_dir)
        net.start_hub()  # same address
        _submit(net.local_api(A), 20, B, "a-")
        # A directory change B cannot store: its directory watch fails too.
        net.apply_directory([Service("demo.other", 1, "declaration", "any", "explicit")])
        b_log, hub_log = root / f"{B}.log", root / "hub.log"
        time.sleep(1.0)  # the first attempts, at the shortest delays
        uplink_before = _count(b_log, "uplink_failed")
        delivery_before = _count(hub_log, "delivery_failed", B)
        watch_before = _count(b_log, "directory_watch_failed")
        time.sleep(WINDOW_S)
        uplink = _count(b_log, "uplink_failed") - uplink_before
        delivery = _count(hub_log, "delivery_failed", B) - delivery_before
        watch = _count(b_log, "directory_watch_failed") - watch_before
        bound = most_attempts(WINDOW_S)
        tails = net.log_tails(6)
        # Still trying (the evidence), but on the backoff schedule, not every 25-50 ms.
        assert uplink_before + uplink >= 2, tails
        assert delivery_before + delivery >= 2, tails
        assert uplink <= bound, (uplink, bound, tails)
        assert delivery <= bound, (delivery, bound, tails)
        assert watch_before + watch >= 2, tails
        assert watch <= bound, (watch, bound, tails)
        # The disk frees up: everything gets through, once.
        filler.unlink()
        assert _fetch(net.local_api(B), 20) == {f"a-{i}" for i in range(20)}
        assert _fetch(net.local_api(A), 20) == {f"b-{i}" for i in range(20)}
        net.stop_all()
    for log in root.glob("*.log"):
        text = log.read_text(errors="replace")
        assert "Task exception was never retrieved" not in text, log.name
        assert "asyncio_unhandled" not in text, log.name
        assert "Traceback" not in text, log.name
    assert verify_file(net.hub_db).problem is None


def test_most_attempts_follows_the_schedule() -> None:
    # 0.025 + 0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 1.6 = 3.175 s, then 2.5 s each (cap 5 s).
    assert most_attempts(3.0) == 7
    assert most_attempts(6.0) == 9


def test_full_disk_at_the_hub_fails_streams_without_stray_tracebacks(tmp_path: Path) -> None:
    """The hub cannot commit: each Submit stream fails with batches prepared behind the one
    whose commit failed. Their failure is the stream's, logged with it; before issue #13 each
    also came out later as a plain-text "Task exception was never retrieved" traceback."""
    root = tmp_path / "net"
    with small_tmpfs(root / "hub", "24m") as hub_dir, ProcessNetwork(
            root, institutions=(A, B), per_node={A: {"submit_window": 4}}) as net:
        net.start()
        fill(hub_dir)
        with LocalClient(net.local_api(A)) as client:
            for k in range(4):  # several batches: the uplink pipelines them
                client.submit([make_envelope(DEMO_SERVICE, [B], b"y" * 60_000,
                                             subject_citizen=CITIZEN, sender_ticket=f"{k}-{i}")
                               for i in range(200)], timeout=30)
        a_log, hub_log = root / f"{A}.log", root / "hub.log"
        deadline = time.monotonic() + 30
        while _count(a_log, "uplink_failed") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _count(a_log, "uplink_failed") >= 3, net.log_tails(6)
        net.stop_all()
    text = hub_log.read_text(errors="replace")
    assert "Segmentation fault" not in text
    assert "Task exception was never retrieved" not in text
    assert "asyncio_unhandled" not in text
    assert "Traceback" not in text
