"""Revocation reaches the nodes: the CA's CRL rides the signed directory stream.

A hub certificate revoked with ``crossroads pki revoke`` + ``pki crl`` (the documented
procedure) must be refused by every node, without copying the CRL to the nodes by hand.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from node.client import make_envelope
from node.core.errors import Unavailable
from node.metrics import hub_metrics
from node.rpc.tls import channel_options, institution_tls_name
from node.testing import DEMO_SERVICE, InProcessNetwork, Pki
from node.wire.gen.crossroads.v1 import consult_pb2, hub_pb2, hub_pb2_grpc, node_pb2
from pki import ca as pki_ca
from tests.conftest import A, B, hub_channel, local_call


def _deliver(network: InProcessNetwork, key: Path, cert: Path, node: str,
             batch: node_pb2.DeliveryBatch) -> tuple[grpc.StatusCode, str]:
    """One Node.Deliver stream to ``node`` with a hub certificate; (status, details)."""
    creds = grpc.ssl_channel_credentials(network.pki.ca_cert.read_bytes(), key.read_bytes(),
                                         cert.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{network.nodes[node].port}", creds,
                             options=channel_options(institution_tls_name("demo", node),
                                                     1 << 20)) as channel:
        call = channel.stream_stream("/crossroads.v1.Node/Deliver",
                                     request_serializer=node_pb2.DeliveryBatch.SerializeToString,
                                     response_deserializer=node_pb2.DeliveryAck.FromString)
        try:
            list(call(iter([batch]), timeout=5))
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _batch(sequence: int, ticket: str) -> node_pb2.DeliveryBatch:
    envelope = make_envelope(DEMO_SERVICE, [A], b"from a revoked hub", sender=B)
    return node_pb2.DeliveryBatch(last_sequence=sequence, envelopes=[envelope],
                                  hub_tickets=[ticket])


async def test_node_refuses_deliver_from_a_revoked_hub_certificate(
        network: InProcessNetwork) -> None:
    # A second hub certificate (e.g. the one on a decommissioned or stolen hub host).
    key, cert = network.pki.issue("hub", basename="old-hub")
    code, _ = await asyncio.to_thread(_deliver, network, key, cert, A, node_pb2.DeliveryBatch())
    assert code == grpc.StatusCode.OK  # a valid hub certificate may deliver
    # The documented procedure, on the CA host, then the hub's configured CRL file.
    serial = pki_ca.revoke(network.pki.ca_dir, cert_path=cert)
    network.pki.crl()
    network.hub.revocations.refresh()
    # The nodes learn it through the directory stream, without any copy: wait for it.
    deadline = time.monotonic() + 15
    while True:
        code, details = await asyncio.to_thread(
            _deliver, network, key, cert, A, node_pb2.DeliveryBatch())
        if code != grpc.StatusCode.OK or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert code == grpc.StatusCode.UNAUTHENTICATED, "the node still accepts the revoked hub"
    assert "CERTIFICATE_REVOKED" in details and serial.lstrip("0") in details
    received = network.nodes[A].deliver.received
    code, details = await asyncio.to_thread(_deliver, network, key, cert, A, _batch(1, "T-1"))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "CERTIFICATE_REVOKED" in details
    assert network.nodes[A].deliver.received == received  # nothing stored
    # Every node got it, and keeps it across a restart (from its fragment store).
    await network.stop_node(B)
    await network.start_node(B)
    assert int(serial, 16) in network.nodes[B].revocations.serials
    code, _ = await asyncio.to_thread(_deliver, network, key, cert, B, _batch(1, "T-2"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert network.nodes[B].deliver.received == 0


async def test_a_crl_not_signed_by_the_ca_is_refused_by_the_node(
        network: InProcessNetwork, tmp_path: Path) -> None:
    """The node checks the CRL's CA signature itself, not only the hub's directory signature:
    a hub that publishes a CRL signed by another key does not change what the node refuses."""
    node = network.nodes[A]
    await _until(lambda: node.revocations.current is not None)
    held = node.revocations.current
    other = Pki(tmp_path / "other-pki", "demo")  # another CA, same network name
    forged = network.pki.crl_bytes(number=10_000, signer=other)
    refused = node.watcher.refused if node.watcher else 0
    network.hub.directory.publish_crl(forged)
    await _until(lambda: node.watcher is not None and node.watcher.refused > refused)
    assert node.revocations.current == held


async def test_stale_crl_refuses_every_peer_under_the_refuse_policy(
        network: InProcessNetwork) -> None:
    """Past its nextUpdate, the hub's CRL no longer says who is revoked: with the default
    policy (``crl_stale = "refuse"``) every caller is refused with CRL_STALE, and the
    ``crl_stale`` metric reads 1."""
    key, cert = network.node_certs[A]
    crl_path = network.root / "pki" / "crl.pem"
    crl_path.write_bytes(network.pki.crl_bytes(
        number=500, next_update=datetime.now(UTC) - timedelta(minutes=1), pem=True))
    assert network.hub.revocations.refresh()
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        try:
            await hub_pb2_grpc.HubStub(channel).Register(
                hub_pb2.RegisterRequest(endpoint="127.0.0.1:1"), timeout=5)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "CRL_STALE" in (exc.details() or "")
        else:
            raise AssertionError("a stale CRL still lets peers in")
        samples = {s.name: s.value for m in hub_metrics(network.hub) for s in m.samples}
        assert samples["crossroads_hub_crl_stale"] == 1
        assert samples["crossroads_hub_crl_number"] == 500
        # Under crl_stale = "warn" the hub keeps serving (the metric and the error log stay).
        network.hub.revocations.stale_policy = "warn"
        response = await hub_pb2_grpc.HubStub(channel).Register(
            hub_pb2.RegisterRequest(endpoint="127.0.0.1:1"), timeout=5)
        assert response.institution == A
    assert network.hub.revocations.stale


async def _until(condition: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_node_stops_talking_to_a_hub_whose_certificate_is_revoked(
        network: InProcessNetwork) -> None:
    """The client side: once the CRL revoking the hub's certificate reached the node, the
    node's uplink drops the connection and sends no envelope to that hub."""
    node = network.nodes[A]
    serial = pki_ca.revoke(network.pki.ca_dir, cert_path=network.hub_cert)
    network.pki.crl()
    network.hub.revocations.refresh()
    await _until(lambda: int(serial, 16) in node.revocations.serials)
    await _until(lambda: node.server_check is not None and node.server_check.refused > 0)
    envelope = make_envelope(DEMO_SERVICE, [B], b"not for a revoked hub", sender=A)
    outcomes, seqs = await local_call(network.local_api(A), "submit", [envelope])
    (outcome,) = await local_call(network.local_api(A), "outcomes", seqs, wait_ms=2_000)
    assert outcome.reason not in ("ACCEPTED", "DUPLICATE"), outcome
    assert not node.uplink or not node.uplink.connected
    # Nor is a question sent to it: the consultation fails before leaving the node.
    question = consult_pb2.ConsultRequest(
        envelope=make_envelope(DEMO_SERVICE, [], b"", sender=A), deadline_ms=2_000)
    assert node.hub_caller is not None
    refused = node.server_check.refused if node.server_check else 0
    with pytest.raises(Unavailable, match="SERVER_CERTIFICATE_REVOKED"):
        await node.hub_caller.consult(question)
    assert node.server_check is not None and node.server_check.refused > refused


async def test_the_hub_delivers_nothing_to_a_node_presenting_a_revoked_certificate(
        network: InProcessNetwork) -> None:
    """The hub is a client too (Node.Deliver, Node.Answers): an endpoint presenting a
    certificate the CA revoked gets neither an envelope nor a question, whatever the TLS name
    it proves."""
    _, cert = network.node_certs[B]
    serial = pki_ca.revoke(network.pki.ca_dir, cert_path=cert)
    network.pki.crl()
    network.hub.revocations.refresh()
    assert int(serial, 16) in network.hub.revocations.serials
    received = network.nodes[B].deliver.received
    with capture_logs() as logs:
        envelope = make_envelope(DEMO_SERVICE, [B], b"not for a revoked node", sender=A)
        _, seqs = await local_call(network.local_api(A), "submit", [envelope])
        (outcome,) = await local_call(network.local_api(A), "outcomes", seqs, wait_ms=5_000)
        assert outcome.reason == "ACCEPTED", outcome  # B is in the directory: queued for it
        await _until(lambda: any("SERVER_CERTIFICATE_REVOKED" in str(e.get("error", ""))
                                 for e in logs if e["event"] == "delivery_failed"))
        await asyncio.sleep(1.0)  # the deliverer's retries go on failing
    assert network.nodes[B].deliver.received == received, "delivered to a revoked node"
    assert network.hub.deliverer is not None and network.hub.deliverer.pending.get(B) == 1
    # Nor is it asked a question.
    assert network.hub.consultations is not None
    part = await network.hub.consultations._ask(B, make_envelope(DEMO_SERVICE, [B], b"?"), 2_000)
    assert part.status == consult_pb2.SOURCE_UNAVAILABLE
    assert "SERVER_CERTIFICATE_REVOKED" in part.detail
