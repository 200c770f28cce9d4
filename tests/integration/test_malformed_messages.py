"""A message that is not a valid protobuf of its method's type: a clear refusal
(``INVALID_ARGUMENT``, ``MALFORMED_MESSAGE``), audited at the hub, and the stream goes on
where every call carries its own id (real hub and nodes in process, mTLS, SQLite)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest

from node.client import make_envelope
from node.testing import DEMO_SERVICE, InProcessNetwork
from node.wire.gen.crossroads.v1 import consult_pb2, envelope_pb2, local_pb2
from tests.conftest import A, B, hub_channel

#: Field 1, length-delimited, with a length running past the end: no protobuf parses it.
CORRUPT = b"\x0a\xff"


def _malformed_records(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT event, detail FROM audit WHERE reason = 'MALFORMED_MESSAGE'"
                            " ORDER BY seq").fetchall()


async def test_submit_stream_ends_clearly_after_acking_what_came_before(
    network: InProcessNetwork,
) -> None:
    key, cert = network.node_certs[A]
    ok = envelope_pb2.EnvelopeBatch(envelopes=[make_envelope(DEMO_SERVICE, [B], b"x", sender=A)])
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        call = channel.stream_stream(
            "/crossroads.v1.Hub/Submit",
            response_deserializer=envelope_pb2.BatchAck.FromString)(timeout=20)
        await call.write(ok.SerializeToString())
        ack = await call.read()
        assert ack.outcomes[0].reason == envelope_pb2.ACCEPTED
        await call.write(CORRUPT)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(
            "MALFORMED_MESSAGE: message 2 on Hub.Submit (2 bytes) is not a"
            " valid crossroads.v1.EnvelopeBatch")
        # The hub serves the same node's next stream.
        again = channel.stream_stream(
            "/crossroads.v1.Hub/Submit",
            response_deserializer=envelope_pb2.BatchAck.FromString)(timeout=20)
        await again.write(ok.SerializeToString())
        assert (await again.read()).outcomes[0].reason == envelope_pb2.ACCEPTED
        await again.done_writing()
    ((event, detail),) = _malformed_records(network.hub_db)
    assert event == "REJECTED" and "message 2 on Hub.Submit" in detail


async def test_consultation_stream_skips_the_message_and_answers_the_rest(
    network: InProcessNetwork,
) -> None:
    key, cert = network.node_certs[A]

    def calls(ident: int) -> bytes:  # a question the hub refuses on its own merits
        return consult_pb2.ConsultCalls(calls=[consult_pb2.ConsultCall(
            id=ident, request=consult_pb2.ConsultRequest(envelope=b"not an envelope"))]
        ).SerializeToString()

    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        call = channel.stream_stream(
            "/crossroads.v1.Hub/Consultations",
            response_deserializer=consult_pb2.ConsultReplies.FromString)(timeout=20)
        await call.write(calls(1))
        await call.write(CORRUPT)
        await call.write(calls(2))
        await call.done_writing()
        replies = [reply async for message in call for reply in message.replies]
        assert await call.code() == grpc.StatusCode.OK
    assert sorted(r.id for r in replies) == [1, 2]
    assert {r.response.status for r in replies} == {consult_pb2.REFUSED}
    ((event, detail),) = _malformed_records(network.hub_db)
    assert event == "REJECTED" and "message 2 on Hub.Consultations" in detail


async def test_unary_request_is_refused_and_audited(network: InProcessNetwork) -> None:
    key, cert = network.node_certs[A]
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary("/crossroads.v1.Hub/Register")(CORRUPT, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(
        "MALFORMED_MESSAGE: message 1 on Hub.Register (2 bytes) is not a valid"
        " crossroads.v1.RegisterRequest")
    assert len(_malformed_records(network.hub_db)) == 1


async def test_node_local_api_refuses_clearly_and_keeps_call_streams(
    network: InProcessNetwork,
) -> None:
    async with grpc.aio.insecure_channel(network.local_api(A)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary("/crossroads.v1.Local/Status")(CORRUPT, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "MALFORMED_MESSAGE: message 1 on Local.Status" in (
            err.value.details())
        status = await channel.unary_unary(
            "/crossroads.v1.Local/Status", request_serializer=local_pb2.StatusRequest.SerializeToString,
            response_deserializer=local_pb2.StatusResponse.FromString)(
                local_pb2.StatusRequest(), timeout=10)
        assert status.institution == A

        call = channel.stream_stream(
            "/crossroads.v1.Local/Consultations",
            response_deserializer=consult_pb2.ConsultReplies.FromString)(timeout=20)
        await call.write(CORRUPT)
        await call.write(consult_pb2.ConsultCalls(calls=[consult_pb2.ConsultCall(
            id=7, request=consult_pb2.ConsultRequest(envelope=b"junk"))]).SerializeToString())
        await call.done_writing()
        replies = [reply async for message in call for reply in message.replies]
        assert await call.code() == grpc.StatusCode.OK
    assert [(r.id, r.response.status) for r in replies] == [(7, consult_pb2.REFUSED)]
