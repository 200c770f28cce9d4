"""Prometheus metrics over HTTP from a running hub and nodes (in process, real mTLS traffic):
the numbers follow what the network did."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import platform
import time

import grpc
from prometheus_client.parser import text_string_to_metric_families

from node.client import make_envelope
from node.testing import DEMO_SERVICE, InProcessNetwork
from node.wire.gen.crossroads.v1 import envelope_pb2
from tests.conftest import (
    A,
    B,
    C,
    NetworkStarter,
    fetch_all,
    http_get,
    hub_channel,
    local_call,
    submit_raw,
)

METRICS = {"metrics_listen": "127.0.0.1:0"}


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = await http_get(port, "/metrics")
    assert status == 200, body
    text = body.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def _scrape_when(port: int, name: str, labels: tuple[tuple[str, str], ...], value: float,
                       timeout: float = 10) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape until the sample ``name{labels}`` shows ``value`` (or ``timeout``): a node stores
    and acknowledges a delivery before the hub commits that ack and counts it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await _scrape(port)
        if samples.get((name, labels)) == value or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def test_metrics_follow_the_traffic(start_network: NetworkStarter) -> None:
    net = await start_network(A, B, C, hub_overrides=METRICS, node_overrides=METRICS)
    await net.stop_node(C)  # C's envelopes wait at the hub
    good = [make_envelope(DEMO_SERVICE, [B], b"b", sender_ticket=str(i)) for i in range(4)]
    good += [make_envelope(DEMO_SERVICE, [C], b"c", sender_ticket=f"c{i}") for i in range(3)]
    _, seqs = await local_call(net.local_api(A), "submit", good)
    decided = await local_call(net.local_api(A), "outcomes", seqs, wait_ms=10_000)
    assert [o.reason for o in decided] == ["ACCEPTED"] * 7
    # A node refuses a bad subject number at the source; straight to the hub, it is the
    # hub that refuses it.
    key, cert = net.node_certs[A]
    bad = make_envelope(DEMO_SERVICE, [B], b"x", sender=A, subject_citizen="85073003329")
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        (ack,) = await submit_raw(channel, [envelope_pb2.EnvelopeBatch(envelopes=[bad])])
    assert ack.outcomes[0].reason == envelope_pb2.SUBJECT_NUMBER_INVALID
    assert len(await local_call(net.local_api(B), "fetch", 10, wait_ms=10_000)) == 4

    hub = await _scrape_when(net.hub.metrics.port,  # type: ignore[union-attr]
                             "crossroads_hub_delivered_envelopes_total", (("destination", B),), 4)
    assert hub[("crossroads_hub_envelopes_accepted_total", ())] == 7
    assert hub[("crossroads_hub_envelopes_refused_total", (("reason", "SUBJECT_NUMBER_INVALID"),))] == 1
    assert hub[("crossroads_hub_queue_envelopes", (("destination", C),))] == 3
    assert hub[("crossroads_hub_delivery_connected", (("destination", C),))] == 0
    assert hub[("crossroads_hub_delivered_envelopes_total", (("destination", B),))] == 4
    assert hub[("crossroads_hub_batches_total", ())] >= 2
    assert hub[("crossroads_hub_audit_last_seq", ())] >= 8  # 7 accepted, 1 refused, ...
    assert hub[("process_cpu_seconds_total", ())] > 0
    # C's three envelopes wait at the hub: the oldest's age grows; B's queue is empty.
    assert 0 < hub[("crossroads_hub_queue_oldest_age_seconds", (("destination", C),))] < 60
    assert hub[("crossroads_hub_queue_oldest_age_seconds", (("destination", B),))] == 0
    # Histograms: once per delivered batch (B's), never per envelope.
    delivered_batches = hub[("crossroads_hub_delivery_round_trip_seconds_count", ())]
    assert 1 <= delivered_batches <= 4
    assert hub[("crossroads_hub_queue_wait_seconds_count", ())] == delivered_batches
    assert hub[("crossroads_hub_queue_wait_seconds_bucket", (("le", "+Inf"),))] == delivered_batches
    assert hub[("crossroads_build_info", (("grpc", grpc.__version__),
                                          ("python", platform.python_version()),
                                          ("version", importlib.metadata.version("crossroads"))))] == 1
    assert hub[("crossroads_hub_ready", (("check", "store_writable"),))] == 1
    now = time.time()
    assert hub[("crossroads_hub_certificate_expiry_timestamp_seconds",
                (("certificate", "tls"),))] > now + 86400
    assert hub[("crossroads_hub_crl_next_update_timestamp_seconds", ())] > now
    assert hub[("crossroads_store_database_size_bytes", (("database", "hub"),))] > 0
    assert ("crossroads_store_wal_size_bytes", (("database", "directory"),)) in hub
    # The deliveries to C fail (its node is away), counted by cause.
    deadline = time.monotonic() + 15
    while not (failures := {k: v for k, v in hub.items()
                            if k[0] == "crossroads_hub_delivery_failures_total"}):
        assert time.monotonic() < deadline, "no delivery failure counted"
        await asyncio.sleep(0.2)
        hub = await _scrape(net.hub.metrics.port)  # type: ignore[union-attr]
    assert set(failures) == {("crossroads_hub_delivery_failures_total", (("cause", "UNAVAILABLE"),))}

    at_a = await _scrape(net.nodes[A].metrics.port)  # type: ignore[union-attr]
    assert at_a[("crossroads_node_sent_accepted_total", ())] == 7
    assert at_a[("crossroads_node_sent_refused_total", ())] == 0
    assert at_a[("crossroads_node_outbox_pending", ())] == 0
    assert at_a[("crossroads_node_hub_connected", ())] == 1
    batches = at_a[("crossroads_node_submit_ack_seconds_count", ())]
    assert 1 <= batches <= 7 and at_a[("crossroads_node_submit_ack_seconds_sum", ())] > 0
    assert now - 60 < at_a[("crossroads_node_directory_last_sync_timestamp_seconds", ())] <= (
        time.time())
    assert at_a[("crossroads_store_database_size_bytes", (("database", "fragment"),))] > 0
    at_b = await _scrape(net.nodes[B].metrics.port)  # type: ignore[union-attr]
    assert at_b[("crossroads_node_inbox_unacknowledged", ())] == 4
    await fetch_all(net.local_api(B), 4)  # reads and acknowledges them
    at_b = await _scrape(net.nodes[B].metrics.port)  # type: ignore[union-attr]
    assert at_b[("crossroads_node_inbox_unacknowledged", ())] == 0


async def _ready_when(port: int, expected: dict[str, bool], timeout: float = 15) -> int:
    """Probe ``/readyz`` until its checks are ``expected``; the last status."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body = await http_get(port, "/readyz")
        answer = json.loads(body)
        if answer["checks"] == expected:
            assert answer["ready"] == all(expected.values())
            return status
        assert asyncio.get_running_loop().time() < deadline, answer
        await asyncio.sleep(0.1)


async def test_probes_say_alive_and_ready_or_what_is_not(start_network: NetworkStarter) -> None:
    net = await start_network(A, B, hub_overrides=METRICS,
                              node_overrides={**METRICS, "readiness_directory_age_s": 5})
    hub_port = net.hub.metrics.port  # type: ignore[union-attr]
    node_port = net.nodes[A].metrics.port  # type: ignore[union-attr]
    assert await http_get(hub_port, "/healthz") == (200, b"ok\n")
    assert await _ready_when(hub_port, {"serving": True, "store_writable": True}) == 200
    assert await _ready_when(node_port, {"hub_connected": True, "directory_fresh": True}) == 200
    synced = await _scrape(node_port)
    assert synced[("crossroads_node_ready", (("check", "directory_fresh"),))] == 1
    await net.hub.stop()
    # The hub is gone: at once no hub; the fragment stays fresh for 5 s, then it is stale.
    assert await _ready_when(node_port, {"hub_connected": False, "directory_fresh": True}) == 503
    # The last sync is when the directory stream went down; it stays there.
    last_sync = ("crossroads_node_directory_last_sync_timestamp_seconds", ())
    down = (await _scrape(node_port))[last_sync]
    assert synced[last_sync] <= down <= time.time()
    await asyncio.sleep(1.1)
    after = await _scrape(node_port)
    assert after[last_sync] == down and after[("crossroads_node_hub_connected", ())] == 0
    assert await _ready_when(node_port, {"hub_connected": False, "directory_fresh": False}) == 503
    assert await http_get(node_port, "/healthz") == (200, b"ok\n")  # alive all the same


async def test_no_endpoint_unless_configured(network: InProcessNetwork) -> None:
    assert network.hub.metrics is None
    assert all(app.metrics is None for app in network.nodes.values())
