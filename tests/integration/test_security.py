"""Who may talk to the hub: real mTLS handshakes with certificates from our own PKI."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from node.client import make_envelope
from node.rpc.tls import channel_options, institution_tls_name
from node.testing import DEMO_SERVICE, InProcessNetwork, Pki
from node.wire.gen.crossroads.v1 import (
    consult_pb2,
    envelope_pb2,
    hub_pb2,
    hub_pb2_grpc,
    node_pb2,
)
from pki import ca as pki_ca
from tests.conftest import A, B, hub_channel, submit_raw


def _batch(*raws: bytes) -> envelope_pb2.EnvelopeBatch:
    return envelope_pb2.EnvelopeBatch(envelopes=list(raws))


async def _register(channel: grpc.aio.Channel) -> hub_pb2.RegisterResponse:
    return await hub_pb2_grpc.HubStub(channel).Register(
        hub_pb2.RegisterRequest(endpoint="127.0.0.1:1"), timeout=5
    )


def _audit(net: InProcessNetwork, sql: str) -> list[tuple]:
    db = sqlite3.connect(net.hub_db)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


async def test_certificate_from_a_foreign_ca_is_refused(network: InProcessNetwork, tmp_path) -> None:
    foreign = Pki(tmp_path / "foreign", network="demo")
    key, cert = foreign.issue(A)
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _register(channel)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # TLS handshake refused


async def test_expired_certificate_is_refused(network: InProcessNetwork) -> None:
    now = datetime.now(UTC)
    key, cert = network.pki.issue(A, basename="expired", not_before=now - timedelta(days=10),
                                  not_after=now - timedelta(days=1))
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _register(channel)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_without_certificate_is_refused(network: InProcessNetwork) -> None:
    async with hub_channel(network.hub_address, network.pki.ca_cert, None, None) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _register(channel)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_revoked_certificate_is_refused_and_audited(network: InProcessNetwork) -> None:
    key, cert = network.pki.issue(A, basename="to-revoke")
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        assert (await _register(channel)).institution == A  # valid before revocation
        serial = pki_ca.revoke(network.pki.ca_dir, cert_path=cert)
        network.pki.crl()
        network.hub.revocations.refresh()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _register(channel)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "CERTIFICATE_REVOKED" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await submit_raw(channel, [_batch(make_envelope(DEMO_SERVICE, [B], b"x", sender=A))])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    rows = _audit(network, "SELECT reason, detail FROM audit WHERE event = 'REJECTED'")
    assert [r[0] for r in rows] == ["CERTIFICATE_REVOKED", "CERTIFICATE_REVOKED"]
    assert serial.lower().lstrip("0") in rows[0][1].lower()
    # The node's own (different) certificate still works.
    node_key, node_cert = network.node_certs[A]
    async with hub_channel(network.hub_address, network.pki.ca_cert, node_cert, node_key) as ch:
        assert (await _register(ch)).institution == A


async def test_spoofed_sender_is_rejected_and_audited(network: InProcessNetwork) -> None:
    key, cert = network.node_certs[A]
    spoofed = make_envelope(DEMO_SERVICE, [B], b"x", sender=B, subject_citizen="85073003328")
    honest = make_envelope(DEMO_SERVICE, [B], b"y", sender=A)
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        (ack,) = await submit_raw(channel, [_batch(spoofed, honest)])
    reasons = [envelope_pb2.Reason.Name(o.reason) for o in ack.outcomes]
    assert reasons == ["SENDER_MISMATCH", "ACCEPTED"]
    rows = _audit(network, "SELECT sender, reason, detail, subject_number FROM audit"
                           " WHERE event = 'REJECTED'")
    assert rows == [(A, "SENDER_MISMATCH", ack.outcomes[0].detail, "85073003328")]
    assert B in rows[0][2]


def _node_to_node(network: InProcessNetwork, caller: str, node: str, method: str,
                  message: object) -> grpc.StatusCode:
    """Offer ``message`` on a stream ``method`` of ``node``'s hub-facing server with
    ``caller``'s (a node's) certificate; return the status the node answered.

    This uses the blocking client: grpc.aio's client may report a write that fails as the
    server ends the call as ``INTERNAL: Internal error from Core`` instead of the status
    the server sent (grpc/grpc#36066)."""
    key, cert = network.node_certs[caller]
    creds = grpc.ssl_channel_credentials(network.pki.ca_cert.read_bytes(), key.read_bytes(),
                                         cert.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{network.nodes[node].port}", creds,
                             options=channel_options(institution_tls_name("demo", node),
                                                     1 << 20)) as channel:
        call = channel.stream_stream(f"/crossroads.v1.Node/{method}",
                                     request_serializer=type(message).SerializeToString)
        with pytest.raises(grpc.RpcError) as refused:
            list(call(iter([message]), timeout=5))
    return refused.value.code()


async def test_only_the_hub_may_deliver_to_a_node(network: InProcessNetwork) -> None:
    """A node's Deliver service refuses another node's certificate."""
    code = await asyncio.to_thread(_node_to_node, network, A, B, "Deliver", node_pb2.DeliveryBatch(
        last_sequence=1, envelopes=[b""], hub_tickets=["fake"]))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert (await asyncio.to_thread(lambda: network.nodes[B].deliver.received)) == 0


async def test_only_the_hub_may_ask_a_node_for_answers(network: InProcessNetwork) -> None:
    """A node's Answers stream refuses another node's certificate."""
    code = await asyncio.to_thread(_node_to_node, network, A, B, "Answers", consult_pb2.AnswerCalls(
        calls=[consult_pb2.AnswerCall(id=1, request=consult_pb2.AnswerRequest(
            envelope=b"", deadline_ms=100))]))
    assert code == grpc.StatusCode.PERMISSION_DENIED
