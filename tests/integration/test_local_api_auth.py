"""The local API over TCP: mutual TLS with application certificates, and per-application
permissions checked on every call (node/rpc/local_auth.py, node/member/app_permissions.py).

Node A serves its local API on 127.0.0.1 with mutual TLS; node B keeps its unix socket, limited
by ``[local_socket]``. Real servers, real certificates from the project's CA.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from structlog.testing import capture_logs

from node.client import make_envelope
from node.core.directory import RevokedCertificate
from node.rpc.tls import institution_tls_name
from node.testing import DEMO_SERVICE, InProcessNetwork
from node.wire.gen.crossroads.v1 import (
    consult_pb2,
    envelope_pb2,
    local_pb2,
    local_pb2_grpc,
)
from pki import ca as pki_ca
from pki import identity as pki_id
from tests.conftest import A, B, C, hub_channel

APPS = [
    {"name": "payroll", "send": [DEMO_SERVICE], "fetch": False},
    {"name": "reader", "fetch": True, "consult": ["other.service"]},
    {"name": "answerer", "answer": ["other.service"]},
]


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[InProcessNetwork]:
    net = InProcessNetwork(tmp_path / "net", institutions=(A, B, C))
    key, cert = net.node_certs[A]
    net.per_node[A] = {
        "local_api": "127.0.0.1:0",
        "local_tls": {"ca_cert": str(net.pki.ca_cert), "cert": str(cert), "key": str(key)},
        "applications": APPS,
    }
    net.per_node[B] = {"local_socket": {"send": ["*"], "fetch": False}}
    async with net:
        yield net


def _app_cert(net: InProcessNetwork, owner: str, name: str) -> tuple[Path, Path]:
    return pki_ca.issue(net.pki.ca_dir, net.root / "apps", pki_id.app("demo", owner, name), "app")


def _channel(net: InProcessNetwork, key: Path | None = None,
             cert: Path | None = None) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        net.pki.ca_cert.read_bytes(), key.read_bytes() if key else None,
        cert.read_bytes() if cert else None)
    return grpc.aio.secure_channel(
        net.nodes[A].local_api, creds,
        options=[("grpc.ssl_target_name_override", institution_tls_name("demo", A))])


def _app(net: InProcessNetwork, name: str, owner: str = A) -> grpc.aio.Channel:
    return _channel(net, *_app_cert(net, owner, name))


async def _denied(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    return str(err.value.details())


def _submit(stub: local_pb2_grpc.LocalStub, service: str = DEMO_SERVICE) -> object:
    return stub.Submit(local_pb2.LocalSubmitRequest(
        envelopes=[make_envelope(service, [B], b"hello")]), timeout=10)


async def test_a_permitted_application_sends_over_mutual_tls(network: InProcessNetwork) -> None:
    async with _app(network, "payroll") as channel:
        response = await _submit(local_pb2_grpc.LocalStub(channel))  # type: ignore[misc]
    assert [o.reason for o in response.outcomes] == [envelope_pb2.ACCEPTED]


async def test_plaintext_and_certificateless_clients_get_nothing(
    network: InProcessNetwork,
) -> None:
    """Before: a TCP local API was plaintext, open to every local user."""
    async with grpc.aio.insecure_channel(network.nodes[A].local_api) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await local_pb2_grpc.LocalStub(channel).Status(local_pb2.StatusRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    async with _channel(network) as channel:  # TLS, but no client certificate
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await local_pb2_grpc.LocalStub(channel).Status(local_pb2.StatusRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(("who", "reason"), [
    ("intruder", "APPLICATION_UNKNOWN"),          # an app of A not in [[applications]]
    ("payroll@" + B, "APPLICATION_OF_ANOTHER_INSTITUTION"),
    ("node:" + A, "NOT_AN_APPLICATION"),          # the institution's own node certificate
    ("node:" + B, "NOT_AN_APPLICATION"),
])
async def test_only_this_institutions_listed_applications_are_served(
    network: InProcessNetwork, who: str, reason: str,
) -> None:
    if who.startswith("node:"):
        channel = _channel(network, *network.node_certs[who[5:]])
    else:
        name, _, owner = who.partition("@")
        channel = _app(network, name, owner or A)
    async with channel:
        stub = local_pb2_grpc.LocalStub(channel)
        for call in (stub.Status(local_pb2.StatusRequest(), timeout=10), _submit(stub),
                     stub.Fetch(local_pb2.FetchRequest(), timeout=10)):
            assert (await _denied(call)).startswith(f"{reason}: ")


async def test_each_call_is_checked_against_the_applications_permissions(
    network: InProcessNetwork,
) -> None:
    with capture_logs() as logs:
        async with _app(network, "payroll") as channel:
            stub = local_pb2_grpc.LocalStub(channel)
            assert (await stub.Status(local_pb2.StatusRequest(), timeout=10)).institution == A
            for _ in range(3):  # repeats: one log line, counted
                detail = await _denied(_submit(stub, "other.service"))
                assert detail == ("APPLICATION_NOT_PERMITTED: application payroll may not send"
                                  " other.service")
            assert "APPLICATION_NOT_PERMITTED" in await _denied(
                stub.Fetch(local_pb2.FetchRequest(), timeout=10))
            assert "APPLICATION_NOT_PERMITTED" in await _denied(
                stub.Acknowledge(local_pb2.AcknowledgeRequest(hub_tickets=["x"]), timeout=10))
            assert "APPLICATION_NOT_PERMITTED" in await _denied(stub.Consult(
                consult_pb2.ConsultRequest(envelope=make_envelope(DEMO_SERVICE, [B], b"?")),
                timeout=10))
        async with _app(network, "reader") as channel:
            stub = local_pb2_grpc.LocalStub(channel)
            assert list((await stub.Fetch(local_pb2.FetchRequest(), timeout=10)).envelopes) == []
            assert "APPLICATION_NOT_PERMITTED" in await _denied(_submit(stub))
            assert "APPLICATION_NOT_PERMITTED" in await _denied(
                stub.Outcomes(local_pb2.OutcomesRequest(sequences=[1]), timeout=10))
    refused = [e for e in logs if e["event"] == "local_refused"]
    assert [(e["app"], e["method"], e["service"], e["reason"]) for e in refused] == [
        ("payroll", "Local.Submit", "other.service", "APPLICATION_NOT_PERMITTED"),
        ("payroll", "Local.Fetch", None, "APPLICATION_NOT_PERMITTED"),
        ("payroll", "Local.Acknowledge", None, "APPLICATION_NOT_PERMITTED"),
        ("payroll", "Local.Consult", None, "APPLICATION_NOT_PERMITTED"),
        ("reader", "Local.Submit", DEMO_SERVICE, "APPLICATION_NOT_PERMITTED"),
        ("reader", "Local.Outcomes", None, "APPLICATION_NOT_PERMITTED"),
    ]
    assert network.nodes[A].local_permissions.refusals.total == 8


async def test_a_refused_consultation_call_gets_its_reply_and_the_stream_goes_on(
    network: InProcessNetwork,
) -> None:
    async with _app(network, "reader") as channel:
        call = local_pb2_grpc.LocalStub(channel).Consultations(timeout=20)
        await call.write(consult_pb2.ConsultCalls(calls=[consult_pb2.ConsultCall(
            id=7, request=consult_pb2.ConsultRequest(
                envelope=make_envelope(DEMO_SERVICE, [B], b"?"), deadline_ms=1000))]))
        reply = (await call.read()).replies[0]
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
    assert (reply.id, reply.error_code) == (7, "PERMISSION_DENIED")
    assert reply.error.startswith("APPLICATION_NOT_PERMITTED: application reader may not consult")


async def test_questions_for_services_an_application_may_not_answer_never_reach_it(
    network: InProcessNetwork,
) -> None:
    answering = network.nodes[A].answering
    async with _app(network, "answerer") as channel:
        call = local_pb2_grpc.LocalStub(channel).Serve(timeout=20)
        await call.write(consult_pb2.Answer())  # opens the stream
        while answering.session is None:
            await asyncio.sleep(0.01)

        async def ask(service: str) -> consult_pb2.AnswerResponse:
            return await answering.answer(consult_pb2.AnswerRequest(
                envelope=make_envelope(service, [A], b"?"), deadline_ms=5000))

        refused = await ask(DEMO_SERVICE)
        permitted = asyncio.ensure_future(ask("other.service"))
        question = await call.read()
        assert envelope_pb2.Envelope.FromString(question.envelope).service_id == "other.service"
        await call.write(consult_pb2.Answer(id=question.id, status=consult_pb2.SOURCE_DATA,
                                            data=b"42"))
        assert (await permitted).data == b"42"
        await call.done_writing()
    assert refused.status == consult_pb2.SOURCE_UNAVAILABLE
    assert refused.detail.startswith("APPLICATION_NOT_PERMITTED")


async def test_the_unix_socket_can_be_limited_too(network: InProcessNetwork) -> None:
    async with grpc.aio.insecure_channel(network.local_api(B)) as channel:
        stub = local_pb2_grpc.LocalStub(channel)
        assert "APPLICATION_NOT_PERMITTED" in await _denied(
            stub.Fetch(local_pb2.FetchRequest(), timeout=10))
        response = await stub.Submit(local_pb2.LocalSubmitRequest(
            envelopes=[make_envelope(DEMO_SERVICE, [C], b"hi")]), timeout=10)
    assert [o.reason for o in response.outcomes] == [envelope_pb2.ACCEPTED]


async def test_an_application_certificate_is_no_institution_certificate_at_the_hub(
    network: InProcessNetwork,
) -> None:
    key, cert = _app_cert(network, A, "payroll")
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(
                "/crossroads.v1.Hub/Consult",
                request_serializer=consult_pb2.ConsultRequest.SerializeToString,
                response_deserializer=consult_pb2.ConsultResponse.FromString,
            )(consult_pb2.ConsultRequest(envelope=make_envelope(DEMO_SERVICE, [B], b"?")),
              timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details().startswith("WRONG_ROLE")


async def test_a_revoked_application_certificate_is_refused(network: InProcessNetwork) -> None:
    """Revocation reaches the node through its directory fragment, as for node certificates."""
    key, cert = _app_cert(network, A, "payroll")
    async with _channel(network, key, cert) as channel:
        stub = local_pb2_grpc.LocalStub(channel)
        assert (await stub.Status(local_pb2.StatusRequest(), timeout=10)).institution == A
        serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
        await network.hub.directory.apply([(RevokedCertificate(format(serial, "x")), False)])
        node = network.nodes[A]
        for _ in range(200):
            if serial in node.fragment.revoked_serials():
                break
            await asyncio.sleep(0.05)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Status(local_pb2.StatusRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details().startswith("CERTIFICATE_REVOKED")


async def test_the_socket_is_born_0660(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bound under a restrictive umask, not narrowed afterwards: with chmod out of the way and
    the most permissive umask, the socket still comes out 0660 (before: 0777 until chmod)."""
    import os

    net = InProcessNetwork(tmp_path / "net", institutions=(A,))
    previous = os.umask(0)
    monkeypatch.setattr("node.app.os.chmod", lambda *args: None)
    try:
        await net.start()
    finally:
        os.umask(previous)
    try:
        socket_path = Path(net.local_api(A).removeprefix("unix:"))
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o660
    finally:
        await net.stop()
