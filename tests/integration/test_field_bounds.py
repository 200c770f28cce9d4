"""Bounds on the variable-size fields that had none (issue #13; docs/PROTOCOL.md, "Bounds"):
each refused with a stable reason before any work, the stream or daemon going on."""

from __future__ import annotations

import asyncio
import sqlite3

import grpc
import pytest

from node.client import LocalClient, make_envelope
from node.testing import DEMO_SERVICE
from node.wire.gen.crossroads.v1 import consult_pb2 as cpb
from node.wire.gen.crossroads.v1 import directory_pb2, directory_pb2_grpc, envelope_pb2, local_pb2
from tests.conftest import A, B, hub_channel, local_call, submit_raw
from tests.integration.test_consultations import ASKER, P1, P2, P3, ask, provider, seed, stop

ALL = (ASKER, P1, P2, P3)


def _local_error(api: str, method: str, request: object) -> grpc.RpcError:
    with LocalClient(api) as client, pytest.raises(grpc.RpcError) as raised:
        getattr(client.stub, method)(request, timeout=10)
    return raised.value


async def test_local_outcomes_and_acknowledge_take_at_most_10000_items(network) -> None:
    api = network.local_api(A)
    error = await asyncio.to_thread(_local_error, api, "Outcomes", local_pb2.OutcomesRequest(
        sequences=range(1, 10_002)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("TOO_MANY_SEQUENCES")
    error = await asyncio.to_thread(_local_error, api, "Acknowledge",
                                    local_pb2.AcknowledgeRequest(hub_tickets=["t"] * 10_001))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("TOO_MANY_TICKETS")
    # At the bound, fine.
    assert len(await local_call(api, "outcomes", range(1, 10_001))) == 10_000
    assert await local_call(api, "acknowledge", ["t"] * 10_000) == 0


async def test_hub_refuses_an_overlong_origin_and_goes_on(network) -> None:
    key, cert = network.node_certs[A]
    good = make_envelope(DEMO_SERVICE, [B], b"fine", sender=A)
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await submit_raw(channel, [envelope_pb2.EnvelopeBatch(
                origin="o" * 65, first_sequence=1, envelopes=[good])])
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith("ORIGIN_TOO_LONG")
        (ack,) = await submit_raw(channel, [envelope_pb2.EnvelopeBatch(
            origin="o" * 64, first_sequence=1, envelopes=[good])])
    assert envelope_pb2.Reason.Name(ack.outcomes[0].reason) == "ACCEPTED"


@pytest.fixture
async def small_answers(start_network):
    """Answers of at most 16 KiB at P1's node; at most 32 KiB of answers per response at the
    hub (half its 64 KiB max_batch_bytes)."""
    return await start_network(
        *ALL, seed=seed(),
        hub_overrides={"limits": {"max_payload_bytes": 48 * 1024, "max_batch_bytes": 64 * 1024}},
        per_node={P1: {"limits": {"max_payload_bytes": 16 * 1024}}})


async def test_answers_over_the_limits_become_source_errors(small_answers) -> None:
    net = small_answers
    tasks = [await provider(net, p, data=b"a" * (20 * 1024)) for p in (P1, P2, P3)]
    for _ in range(500):  # every provider has registered its endpoint with the hub
        if net.hub.deliverer and all(p in net.hub.deliverer.endpoints for p in (P1, P2, P3)):
            break
        await asyncio.sleep(0.01)
    try:
        response, _ = await ask(net)
    finally:
        await stop(*tasks)
    assert response.status == cpb.INCOMPLETE_DATA
    parts = {p.institution: p for p in response.parts}
    assert parts[P1].status == cpb.SOURCE_ERROR and not parts[P1].data
    assert "limits.max_payload_bytes" in parts[P1].detail
    # P2 and P3 each answered 20 KiB: one fits in the response's 32 KiB, the other is dropped.
    statuses = sorted((parts[P2].status, parts[P3].status))
    assert statuses == [cpb.SOURCE_DATA, cpb.SOURCE_ERROR], response.parts
    dropped = parts[P2] if parts[P2].status == cpb.SOURCE_ERROR else parts[P3]
    assert "dropped" in dropped.detail and not dropped.data


async def test_overlong_routing_text_is_refused_and_not_copied_into_the_audit(network) -> None:
    long_service = make_envelope("s" * 100_000, [B], b"x", sender=A)
    long_subject = envelope_pb2.Envelope.FromString(make_envelope(DEMO_SERVICE, [B], b"x",
                                                                  sender=A))
    long_subject.legal_context = "l" * 300
    raws = [long_service, long_subject.SerializeToString()]
    outcomes, _ = await local_call(network.local_api(A), "submit", raws)
    assert [o.reason for o in outcomes] == ["INVALID_FIELD"] * 2
    assert "service_id is 100000 characters, at most 256" in outcomes[0].detail
    assert "legal_context is 300 characters" in outcomes[1].detail
    key, cert = network.node_certs[A]
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        (ack,) = await submit_raw(channel, [envelope_pb2.EnvelopeBatch(envelopes=raws)])
    assert [envelope_pb2.Reason.Name(o.reason) for o in ack.outcomes] == ["INVALID_FIELD"] * 2
    db = sqlite3.connect(network.hub_db)
    (longest,) = db.execute("SELECT max(length(service_id)) FROM audit").fetchone()
    assert longest <= 256


async def test_who_consulted_takes_a_bounded_limit(network) -> None:
    async with hub_channel(network.hub_address, network.pki.ca_cert, network.admin_cert,
                           network.admin_key) as channel:
        stub = directory_pb2_grpc.DirectoryAdminStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.WhoConsulted(directory_pb2.WhoConsultedRequest(
                subject="85073003328", limit=100_001), timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith("LIMIT_TOO_LARGE")
        found = await stub.WhoConsulted(directory_pb2.WhoConsultedRequest(
            subject="85073003328", limit=100_000), timeout=10)
    assert list(found.records) == []
