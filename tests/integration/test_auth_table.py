"""Authentication in one place (node/rpc/auth_interceptor.py): every method a server serves is
in its role table, a method missing from the table is refused to everyone, and the log lines
of a call name its caller. Real servers, real certificates from the project's PKI."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import grpc
import pytest
import structlog
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from structlog.contextvars import bound_contextvars, merge_contextvars
from structlog.testing import capture_logs

from node.core.errors import CrossroadsError
from node.hub.callers import HUB_TABLE, HubGate
from node.member.deliver_service import NODE_TABLE
from node.rpc.auth_interceptor import (
    METHOD_NOT_ALLOWED,
    AuthInterceptor,
    Role,
    current_peer,
    rule_for,
)
from node.rpc.local_auth import LOCAL_TABLE
from node.rpc.peer import PeerAuthenticator
from node.rpc.tls import channel_options, institution_tls_name
from node.tasks import spawn
from node.testing import InProcessNetwork
from node.wire.gen.crossroads.v1 import directory_pb2, hub_pb2_grpc
from tests.conftest import A, B, hub_channel


async def _served_methods(channel: grpc.aio.Channel) -> list[str]:
    """Every method of every service the server behind ``channel`` serves (its reflection)."""
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    services = [s.name async for r in call for s in r.list_services_response.service]
    pool = descriptor_pool.Default()
    return [f"/{name}/{method.name}" for name in services
            for method in pool.FindServiceByName(name).methods]


def _node_channel(net: InProcessNetwork, enterprise: str) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(net.pki.ca_cert.read_bytes(),
                                         net.hub_key.read_bytes(), net.hub_cert.read_bytes())
    return grpc.aio.secure_channel(
        f"127.0.0.1:{net.nodes[enterprise].port}", creds,
        options=channel_options(institution_tls_name(net.network, enterprise), 4 << 20))


def _unlisted(methods: list[str], table: Mapping[str, frozenset[Role]]) -> list[str]:
    return [m for m in methods if rule_for(table, m) is None]


async def test_every_method_each_server_serves_is_in_its_table(network: InProcessNetwork) -> None:
    async with hub_channel(network.hub_address, network.pki.ca_cert,
                           network.admin_cert, network.admin_key) as channel:
        hub = await _served_methods(channel)
    async with _node_channel(network, A) as channel:
        node = await _served_methods(channel)
    async with grpc.aio.insecure_channel(network.local_api(A)) as channel:
        local = await _served_methods(channel)
    # Each server serves its own services, health and reflection (a sanity check of the list).
    assert "/crossroads.v1.Hub/Submit" in hub and "/crossroads.v1.DirectoryAdmin/Apply" in hub
    assert "/crossroads.v1.Node/Deliver" in node and "/crossroads.v1.Local/Serve" in local
    assert all("/grpc.health.v1.Health/Check" in m for m in (hub, node, local))
    assert _unlisted(hub, HUB_TABLE) == []
    assert _unlisted(node, NODE_TABLE) == []
    assert _unlisted(local, LOCAL_TABLE) == []


ECHO = "test.Echo"


async def _echo_server(network: InProcessNetwork, table: dict[str, frozenset[Role]],
                       ran: list[str], refused: list[str]) -> tuple[grpc.aio.Server, str]:
    """A real mTLS server (the hub's certificate) with two methods, ``Listed`` and
    ``Unlisted``, behind an AuthInterceptor with ``table`` and the hub's gate (its refusals
    noted in ``refused``)."""

    async def note(context: grpc.aio.ServicerContext, method: str, exc: CrossroadsError) -> None:
        refused.append(f"{method} {exc.reason}")

    def method(name: str) -> grpc.RpcMethodHandler:
        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            ran.append(f"{name} by {current_peer().name}")
            return request

        return grpc.unary_unary_rpc_method_handler(call)

    peers = PeerAuthenticator(network.network, frozenset)
    gate = HubGate(peers, network.hub.directory, note)
    server = grpc.aio.server(interceptors=[AuthInterceptor(table, gate)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        ECHO, {"Listed": method("Listed"), "Unlisted": method("Unlisted")}),))
    port = server.add_secure_port("127.0.0.1:0", network.hub.tls.server_credentials())
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _call(address: str, network: InProcessNetwork, name: str, cert: Path,
                key: Path) -> bytes | grpc.aio.AioRpcError:
    async with hub_channel(address, network.pki.ca_cert, cert, key) as channel:
        try:
            reply: bytes = await channel.unary_unary(f"/{ECHO}/{name}")(b"hello", timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc
    return reply


async def test_a_method_missing_from_the_table_is_refused_to_everyone(
    network: InProcessNetwork,
) -> None:
    ran: list[str] = []
    refused: list[str] = []
    table = {f"/{ECHO}/Listed": frozenset({Role.INSTITUTION})}
    server, address = await _echo_server(network, table, ran, refused)
    try:
        cert_a, key_a = network.node_certs[A][1], network.node_certs[A][0]
        assert await _call(address, network, "Listed", cert_a, key_a) == b"hello"
        for cert, key in ((cert_a, key_a), (network.admin_cert, network.admin_key)):
            closed = await _call(address, network, "Unlisted", cert, key)
            assert isinstance(closed, grpc.aio.AioRpcError)
            assert closed.code() == grpc.StatusCode.PERMISSION_DENIED
            assert closed.details().startswith(METHOD_NOT_ALLOWED)
        wrong = await _call(address, network, "Listed", network.admin_cert, network.admin_key)
        assert isinstance(wrong, grpc.aio.AioRpcError)
        assert wrong.details().startswith("WRONG_ROLE")
    finally:
        await server.stop(None)
    assert ran == [f"Listed by {A}"]  # nothing else ran
    assert refused == ["Echo.Unlisted METHOD_NOT_ALLOWED"] * 2 + ["Echo.Listed WRONG_ROLE"]


@pytest.mark.parametrize("who", [A, B])
async def test_the_log_lines_of_a_call_name_its_institution(
    network: InProcessNetwork, who: str,
) -> None:
    key, cert = network.node_certs[who]
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        with capture_logs(processors=[merge_contextvars]) as logs:
            await hub_pb2_grpc.HubStub(channel).Integrate(directory_pb2.IntegrateRequest(),
                                                          timeout=10)
    lines = [e for e in logs if e.get("method") == "Hub.Integrate"]
    assert lines, logs
    for line in lines:
        assert line["caller"] == f"institution:{who}"
        assert line["caller_institution"] == who


async def test_a_background_task_started_during_a_call_does_not_log_as_its_caller() -> None:
    """A worker started inside a call (e.g. the delivery worker of a new destination, during
    a Submit) lives on after it: it must not name that call's caller in its log lines."""

    async def worker() -> None:
        structlog.get_logger("test").info("working")

    with (capture_logs(processors=[merge_contextvars]) as logs,
          bound_contextvars(caller=f"institution:{A}")):
        structlog.get_logger("test").info("in the call")
        await spawn(worker(), "worker")
    assert [(e["event"], e.get("caller")) for e in logs] == [
        ("in the call", f"institution:{A}"), ("working", None)]
