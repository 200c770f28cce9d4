"""End to end with real processes: a hub and nodes started as `python -m node.cli ... serve`."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from node.audit_tool import verify_file, who_consulted
from node.client import LocalClient, make_envelope
from node.store.sqlite import connect_sync
from node.testing import DEMO_SERVICE, ProcessNetwork
from node.wire.gen.crossroads.v1 import local_pb2
from tests.conftest import A, B, C

pytestmark = pytest.mark.slow
CITIZENS = ("85073003328", "17073003384", "70010108997", "98472899765", "00000100166")


def _submit(api: str, receivers_of, count: int, prefix: str, batch: int = 1000) -> None:
    with LocalClient(api) as client:
        for start in range(0, count, batch):
            envelopes = [
                make_envelope(DEMO_SERVICE, receivers_of(i), b"p" * 120,
                              subject_citizen=CITIZENS[i % 5], sender_ticket=f"{prefix}{i}")
                for i in range(start, min(count, start + batch))
            ]
            outcomes, _ = client.submit(envelopes, timeout=60)
            assert {o.reason for o in outcomes} == {"ACCEPTED"}


class Drain:
    """An application reading and acknowledging a node's inbox in the background.

    Like a real application it records what it fetched before acknowledging, so when the node
    dies between the two it sees those envelopes again: it keeps them by hub ticket. A sender
    ticket seen under two hub tickets would mean the hub stored an envelope twice.
    """

    def __init__(self, api: str) -> None:
        self.api = api
        self.by_hub_ticket: dict[str, str] = {}
        self.fetches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with LocalClient(self.api) as client:
                    while not self._stop.is_set():
                        got = client.fetch(2000, wait_ms=200)
                        for e in got:
                            self.by_hub_ticket[e.hub_ticket] = e.sender_ticket
                        if got:
                            self.fetches += 1
                            client.acknowledge([e.hub_ticket for e in got])
            except Exception:  # noqa: BLE001 - the node may be down (crash tests): retry
                time.sleep(0.2)

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.by_hub_ticket) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # anything extra (a duplicate) would show up now
        self._stop.set()
        self._thread.join(10)

    @property
    def tickets(self) -> list[str]:
        return list(self.by_hub_ticket.values())


def _audit_counts(db: Path) -> Counter[str]:
    conn = sqlite3.connect(db)
    try:
        return Counter(dict(conn.execute("SELECT event, count(*) FROM audit GROUP BY event")))
    finally:
        conn.close()


def test_100k_envelopes_each_delivered_exactly_once(tmp_path: Path) -> None:
    per_sender = 100_000 // 3 + 1  # 100,002 in all
    with ProcessNetwork(tmp_path / "net", institutions=(A, B, C)) as net:
        net.start()
        drains = {e: Drain(net.local_api(e)) for e in (A, B, C)}
        others = {A: (B, C), B: (C, A), C: (A, B)}
        senders = [
            threading.Thread(target=_submit, args=(net.local_api(e), lambda i, o=others[e]: [o[i % 2]],
                                                   per_sender, f"{e}-"))
            for e in (A, B, C)
        ]
        for t in senders:
            t.start()
        for t in senders:
            t.join(300)
        expected = {e: {f"{s}-{i}" for s in (A, B, C) for i in range(per_sender)
                        if others[s][i % 2] == e} for e in (A, B, C)}
        for e, drain in drains.items():
            drain.wait_for(len(expected[e]), timeout=300)
        net.stop_all()
    for e, drain in drains.items():
        assert len(drain.tickets) == len(expected[e]), e  # no sender ticket twice
        assert set(drain.tickets) == expected[e], e
    total = 3 * per_sender
    counts = _audit_counts(net.hub_db)
    assert counts["ACCEPTED"] == total
    assert counts["DELIVERED"] == total
    assert verify_file(net.hub_db).problem is None
    # The citizens' view of this traffic: exactly the envelopes about each one, each delivered
    # once to its receiver.
    conn = connect_sync(net.hub_db, read_only=True)
    try:
        for k, citizen in enumerate(CITIZENS[:2]):
            found = who_consulted(conn, citizen)
            assert Counter((c.institution, c.receivers) for c in found) == Counter(
                (s, (others[s][i % 2],)) for s in (A, B, C) for i in range(per_sender)
                if i % 5 == k)
            assert {(c.event, c.outcome, c.service_id) for c in found} == {
                ("ACCEPTED", "ACCEPTED", DEMO_SERVICE)}
            assert all([d.receiver for d in c.deliveries] == list(c.receivers) for c in found)
    finally:
        conn.close()


def test_kill_9_hub_and_receiver_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    total = 50_000
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.start()
        drain = Drain(net.local_api(B))
        sender = threading.Thread(
            target=_submit, args=(net.local_api(A), lambda i: [B], total, "c-", 500))
        sender.start()
        def progress() -> str:
            return (f"{len(drain.by_hub_ticket)} received, sender alive: {sender.is_alive()};"
                    f" {_status_line(net, A)}; {_status_line(net, B)}")

        _wait_until(lambda: len(drain.by_hub_ticket) >= 5_000, 120, net, progress)
        net.kill("hub")  # mid-stream: batches in flight both ways
        time.sleep(0.5)
        net.start_hub()
        _wait_until(lambda: len(drain.by_hub_ticket) >= 25_000, 120, net, progress)
        net.kill(B)  # receiver dies with a delivery batch in flight
        time.sleep(0.5)
        net.start_node(B)
        sender.join(300)
        drain.wait_for(total, timeout=300)
        with LocalClient(net.local_api(A)) as client:
            status = client.status()
        net.stop_all()
    received = Counter(drain.tickets)
    assert [t for t, n in received.items() if n > 1] == []  # none stored twice by the hub
    assert set(received) == {f"c-{i}" for i in range(total)}  # none lost
    inbox = sqlite3.connect(net.root / "nodes" / B / "node.sqlite")
    assert inbox.execute("SELECT count(*), count(DISTINCT hub_ticket) FROM inbox").fetchone() == (
        total, total)  # the receiving node applied each envelope once
    assert status.outbox_pending == 0 and status.sent_accepted == total
    counts = _audit_counts(net.hub_db)
    assert counts["ACCEPTED"] == total  # resends were recognised, not stored twice
    assert counts["DELIVERED"] >= total
    assert verify_file(net.hub_db).problem is None


class Sender:
    """An application submitting through a node that may die: it keeps the sender tickets
    of every batch the node acknowledged, and of every batch whose call failed (in doubt:
    stored or not, the node may have died before or after its commit). It does not resend
    those: what became of them is what the test looks at."""

    def __init__(self, api: str, receiver: str, total: int, batch: int = 500) -> None:
        self.api, self.receiver, self.total, self.batch = api, receiver, total, batch
        self.acknowledged: set[str] = set()
        self.in_doubt: set[str] = set()
        self.refused: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with LocalClient(self.api) as client:
            for start in range(0, self.total, self.batch):
                tickets = [f"s-{i}" for i in range(start, min(self.total, start + self.batch))]
                envelopes = [make_envelope(DEMO_SERVICE, [self.receiver], b"p" * 120,
                                           subject_citizen=CITIZENS[i % 5], sender_ticket=t)
                             for i, t in enumerate(tickets)]
                try:
                    outcomes, _ = client.submit(envelopes, timeout=10)
                except grpc.RpcError:
                    self.in_doubt.update(tickets)
                    time.sleep(0.2)
                    continue
                self.refused += [t for t, o in zip(tickets, outcomes, strict=True)
                                 if o.reason != "ACCEPTED"]
                self.acknowledged.update(tickets)
                time.sleep(0.01)  # a steady stream, so the node dies in the middle of it

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the sender did not finish"


def test_kill_9_sender_node_keeps_every_envelope_it_acknowledged(tmp_path: Path) -> None:
    """Acknowledged means stored, at the sending node too: kill -9 it while its application
    submits and its uplink sends; every envelope Local.Submit acknowledged still reaches the
    receiver, once."""
    total = 40_000
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.start()
        drain = Drain(net.local_api(B))
        sender = Sender(net.local_api(A), B, total)

        def progress() -> str:
            return (f"{len(sender.acknowledged)} acknowledged, {len(sender.in_doubt)} in doubt,"
                    f" {len(drain.by_hub_ticket)} received; {_status_line(net, A)};"
                    f" {_status_line(net, B)}")

        _wait_until(lambda: len(sender.acknowledged) >= 10_000, 120, net, progress)
        net.kill(A)  # with Local.Submit calls and uplink batches in flight
        acknowledged_before = len(sender.acknowledged)
        time.sleep(0.5)
        net.start_node(A)
        status = finish(net, sender, drain, progress)
    assert sender.refused == []
    assert acknowledged_before < total - len(sender.in_doubt)  # killed mid-stream
    received = Counter(drain.tickets)
    assert [t for t, n in received.items() if n > 1] == []  # none twice
    assert sender.acknowledged <= set(received)  # every acknowledged one arrived
    assert set(received) <= sender.acknowledged | sender.in_doubt  # and nothing else
    assert status.outbox_pending == 0 and status.sent_accepted == len(received)
    assert verify_file(net.hub_db).problem is None


def finish(net: ProcessNetwork, sender: Sender, drain: Drain,
           progress: Callable[[], str]) -> local_pb2.StatusResponse:
    """Wait for ``sender`` to finish and for every envelope it got acknowledged to reach
    ``drain`` (then a moment more: a duplicate would show), stop the network; the sending
    node's (A) status just before."""
    sender.join(300)
    _wait_until(lambda: sender.acknowledged <= set(drain.tickets), 300, net, progress)
    drain.wait_for(len(drain.tickets), timeout=1)
    with LocalClient(net.local_api(A)) as client:
        status = client.status()
    net.stop_all()
    return status


def _status_line(net: ProcessNetwork, node: str) -> str:
    """A node's Local.Status in one line, for a failure message."""
    try:
        with LocalClient(net.local_api(node)) as client:
            s = client.stub.Status(local_pb2.StatusRequest(), timeout=5)
    except Exception as exc:  # noqa: BLE001 - the message says it could not be read
        return f"{node}: no status ({exc!r:.80})"
    return (f"{node}: outbox pending {s.outbox_pending}, accepted {s.sent_accepted}, refused"
            f" {s.sent_refused}, inbox {s.inbox_total}, hub connected {s.hub_connected}")


def _wait_until(condition, timeout: float, net: ProcessNetwork, progress) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{net.log_tails()}\ntimed out at {progress()}", pytrace=False)
        time.sleep(0.05)
