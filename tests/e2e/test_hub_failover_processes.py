"""Failover between hub addresses with real processes: the nodes list two ports; the hub is
killed on the first and started again, on the same files, on the second (two hub processes
cannot share one SQLite store: several replicas on one database come with #15)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from node.audit_tool import verify_file
from node.testing import ProcessNetwork, free_port
from tests.conftest import A, B
from tests.e2e.test_network_processes import Drain, Sender, _status_line, _wait_until, finish
from tests.e2e.test_reload import _events

pytestmark = pytest.mark.slow


def test_a_hub_gone_from_the_first_address_is_found_at_the_second(tmp_path: Path) -> None:
    total = 20_000
    first, second = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with ProcessNetwork(tmp_path / "net", institutions=(A, B),
                        hub_list=lambda _live: [first, second]) as net:
        net.start_hub(listen=first)
        for e in (A, B):
            net.start_node(e)
        drain = Drain(net.local_api(B))
        sender = Sender(net.local_api(A), B, total)

        def progress() -> str:
            return (f"{len(sender.acknowledged)} acknowledged, {len(drain.by_hub_ticket)}"
                    f" received; {_status_line(net, A)}; {_status_line(net, B)}")

        _wait_until(lambda: len(drain.by_hub_ticket) >= 3_000, 120, net, progress)
        net.kill("hub")  # mid-stream: batches in flight both ways
        net.start_hub(listen=second)
        status = finish(net, sender, drain, progress)
        # A node with nothing to send (B) registers again after its uplink's back-off, which
        # can end after the transfer did: wait for both to be registered at the second address.
        _wait_until(lambda: all(_registered(net, e)[-1:] == [second] for e in (A, B)), 30, net,
                    progress)
    assert sender.refused == [] and sender.in_doubt == set()  # the node itself never died
    received = Counter(drain.tickets)
    assert [t for t, n in received.items() if n > 1] == []  # none stored twice by the hub
    assert set(received) == sender.acknowledged == {f"s-{i}" for i in range(total)}
    assert status.outbox_pending == 0 and status.sent_accepted == total
    assert verify_file(net.hub_db).problem is None
    for e in (A, B):  # each node said where it went, and registered there
        switched = _events(net, e, "hub_switched")
        registered = _registered(net, e)
        assert switched and switched[0]["failed"] == first, e
        assert registered[0] == first and registered[-1] == second, e


def _registered(net: ProcessNetwork, enterprise: str) -> list[object]:
    """The hub addresses ``enterprise``'s uplink registered at, in order (its log)."""
    return [x["hub"] for x in _events(net, enterprise, "uplink_registered")]
