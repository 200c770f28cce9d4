"""The poison pill of issue #13, with real processes: one 1.2 MB envelope listing a receiver
100,000 times once took the hub past 20 GB (a copy per listing, each carrying the whole list)
and was resent by its node after every restart.

The hub runs under an address-space cap (``RLIMIT_AS``: what it had at start plus 1 GiB), so a
regression fails the test instead of the machine.
"""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import time
from pathlib import Path

import grpc
import pytest

from node.app import init_state
from node.client import LocalClient, make_envelope
from node.rpc.tls import channel_options, hub_tls_name
from node.store.node_store import NodeStore
from node.testing import DEMO_SERVICE, ProcessNetwork
from node.wire.gen.crossroads.v1 import envelope_pb2, hub_pb2_grpc
from tests.conftest import A, B

pytestmark = pytest.mark.slow

LISTINGS = 100_000
#: How much the hub's resident memory may grow while it refuses the envelope (it holds the
#: 1.2 MB batch and its decoded copy; the old code needed ~12 * N**2 = 120 GB).
RSS_GROWTH_BOUND_KIB = 150 * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _cap_address_space(pid: int, extra_bytes: int = 1 << 30) -> None:
    cap = _status_kib(pid, "VmSize") * 1024 + extra_bytes
    resource.prlimit(pid, resource.RLIMIT_AS, (cap, cap))


def _poison() -> bytes:
    return make_envelope(DEMO_SERVICE, [B] * LISTINGS, b"poison", sender=A)


def _outcomes(api: str, seqs: list[int], timeout: float = 40) -> list[str]:
    deadline = time.monotonic() + timeout
    with LocalClient(api) as client:
        while True:
            reasons = [o.reason for o in client.outcomes(seqs, wait_ms=1_000)]
            if "PENDING" not in reasons or time.monotonic() > deadline:
                return reasons


def _audited(net: ProcessNetwork, reason: str) -> int:
    db = sqlite3.connect(net.hub_db)
    try:
        return int(db.execute("SELECT count(*) FROM audit WHERE reason = ?", (reason,))
                   .fetchone()[0])
    finally:
        db.close()


def test_the_hub_refuses_the_poison_pill_with_bounded_memory(tmp_path: Path) -> None:
    """A raw submit (no node in between) of the 100,000-listing envelope: refused, hub alive."""
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.start(nodes=[B])
        hub = net.pid("hub")
        _cap_address_space(hub)
        before = _status_kib(hub, "VmRSS")
        key, cert = net.node_certs[A]
        creds = grpc.ssl_channel_credentials(net.pki.ca_cert.read_bytes(), key.read_bytes(),
                                             cert.read_bytes())
        good = make_envelope(DEMO_SERVICE, [B], b"fine", sender=A)
        batch = envelope_pb2.EnvelopeBatch(envelopes=[_poison(), good])
        with grpc.secure_channel(net.hub_address, creds,
                                 options=channel_options(hub_tls_name(net.network), 64 << 20)
                                 ) as channel:
            (ack,) = list(hub_pb2_grpc.HubStub(channel).Submit(iter([batch]), timeout=60))
        assert [envelope_pb2.Reason.Name(o.reason) for o in ack.outcomes] == [
            "TOO_MANY_RECEIVERS", "ACCEPTED"]
        assert net.procs["hub"].poll() is None
        assert _status_kib(hub, "VmRSS") - before < RSS_GROWTH_BOUND_KIB
        with LocalClient(net.local_api(B)) as client:
            got = client.fetch(10, wait_ms=10_000)
        assert [e.payload.data for e in got] == [b"fine"]


def test_a_poison_pill_in_the_outbox_ends_with_a_refusal_and_stays_ended(tmp_path: Path) -> None:
    """The envelope already sits in a node's outbox (queued by an older version, before the
    bound): the node refuses it with a reason its application reads, sends what follows, and
    does not send it again after a restart."""
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.start(nodes=[B])
        hub = net.pid("hub")
        _cap_address_space(hub)
        before = _status_kib(hub, "VmRSS")

        async def queue() -> list[int]:
            await init_state(net.node_config(A, net.hub_address))  # the node's state, first
            store = NodeStore(net.root / "nodes" / A / "node.sqlite")
            await store.open()
            try:
                return await store.enqueue(
                    [_poison(), make_envelope(DEMO_SERVICE, [B, B], b"twice", sender=A),
                     make_envelope(DEMO_SERVICE, [B], b"after", sender=A)])
            finally:
                await store.close()

        seqs = asyncio.run(queue())
        net.start_node(A)
        expected = ["TOO_MANY_RECEIVERS", "DUPLICATE_RECEIVER", "ACCEPTED"]
        assert _outcomes(net.local_api(A), seqs) == expected
        with LocalClient(net.local_api(A)) as client:
            (refusal, _, _) = client.outcomes(seqs)
        assert "limits.max_receivers" in refusal.detail
        with LocalClient(net.local_api(B)) as client:
            got = client.fetch(10, wait_ms=10_000)
        assert [e.payload.data for e in got] == [b"after"]
        # The node refused the large one itself, before sending it (its uplink checks what is
        # large enough to break the bound); the hub refused the small one.
        assert (_audited(net, "TOO_MANY_RECEIVERS"), _audited(net, "DUPLICATE_RECEIVER")) == (0, 1)
        # A restart does not bring it back.
        net.stop(A)
        net.start_node(A)
        with LocalClient(net.local_api(A)) as client:
            status = client.status()
            assert [o.reason for o in client.outcomes(seqs)] == expected
        assert (status.outbox_pending, status.sent_accepted, status.sent_refused) == (0, 1, 2)
        assert status.hub_state == "OK", status.hub_state_detail  # its own refusal: no regression
        time.sleep(1.0)
        assert (_audited(net, "TOO_MANY_RECEIVERS"), _audited(net, "DUPLICATE_RECEIVER")) == (0, 1)
        assert net.procs["hub"].poll() is None
        assert _status_kib(hub, "VmRSS") - before < RSS_GROWTH_BOUND_KIB
