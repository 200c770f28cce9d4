"""A refused call's reason travels as a ``google.rpc.ErrorInfo`` in the status details and a
client reads it back (docs/PROTOCOL.md, "Call-level reasons"): real hub and node in process
(mTLS, SQLite) and real grpc clients, sync and grpc.aio. A status without our ErrorInfo reads
as ``UNKNOWN``, never an exception."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from node.client import LocalClient, make_envelope
from node.core.reasons import CallReason
from node.testing import DEMO_SERVICE, InProcessNetwork
from node.wire.errors import DOMAIN, CallError, call_error
from node.wire.gen.crossroads.v1 import directory_pb2 as dpb
from node.wire.gen.crossroads.v1 import directory_pb2_grpc, envelope_pb2, hub_pb2_grpc, local_pb2
from tests.conftest import A, B, hub_channel

BAD = "0403019216"  # check digits do not match


def _error_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The one ErrorInfo of the status, read with grpc_status alone (not our reader)."""
    status = rpc_status.from_call(exc)
    assert status is not None, "no status details"
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return info


async def test_a_refused_stream_carries_its_reason(network: InProcessNetwork) -> None:
    key, cert = network.node_certs[A]
    two = [make_envelope(DEMO_SERVICE, [B], b"fine", sender=A)] * 2
    past_the_end = envelope_pb2.EnvelopeBatch(origin="o", first_sequence=2**63 - 1, envelopes=two)
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        call = hub_pb2_grpc.HubStub(channel).Submit(timeout=20)
        await call.write(past_the_end)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
    info = _error_info(raised.value)
    assert (info.reason, info.domain) == ("SEQUENCE_OUT_OF_RANGE", "crossroads.v1")
    error = call_error(raised.value)
    assert error == CallError(grpc.StatusCode.INVALID_ARGUMENT, CallReason.SEQUENCE_OUT_OF_RANGE,
                              f"SEQUENCE_OUT_OF_RANGE: a batch of 2 from first_sequence {2**63 - 1}"
                              f" goes past {2**63 - 1}", {})


async def test_a_refused_call_names_the_refused_change(network: InProcessNetwork) -> None:
    key, cert = network.pki.issue("admin:bob")
    bad = dpb.DirectoryChange(institution=dpb.InstitutionEntry(enterprise_number=BAD, sector=17))
    good = dpb.DirectoryChange(institution=dpb.InstitutionEntry(enterprise_number=A, sector=17))
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        stub = directory_pb2_grpc.DirectoryAdminStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Apply(dpb.ApplyRequest(changes=[good, good, bad]), timeout=10)
    info = _error_info(raised.value)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "INVALID_ENTRY", DOMAIN, {"change": "2"})
    error = call_error(raised.value)
    assert (error.code, error.reason, error.metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT, CallReason.INVALID_ENTRY, {"change": "2"})
    assert error.message.startswith("INVALID_ENTRY: change 2: ")


async def test_refusals_before_the_handler_carry_their_reason(network: InProcessNetwork) -> None:
    """The caller's identity (a node certificate at the admin service) and a message that
    does not parse (refused by the interceptor, before any servicer)."""
    key, cert = network.node_certs[A]
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as role:
            await directory_pb2_grpc.DirectoryAdminStub(channel).Apply(dpb.ApplyRequest(),
                                                                       timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await channel.unary_unary("/crossroads.v1.Hub/Register")(b"\x0a\xff", timeout=10)
    assert call_error(role.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED,
                                          CallReason.WRONG_ROLE)
    assert _error_info(malformed.value).reason == "MALFORMED_MESSAGE"
    assert call_error(malformed.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT,
                                               CallReason.MALFORMED_MESSAGE)


async def test_a_sync_client_reads_the_reason(network: InProcessNetwork) -> None:
    def acknowledge_too_many() -> grpc.RpcError:
        with LocalClient(network.local_api(A)) as client, pytest.raises(grpc.RpcError) as raised:
            client.stub.Acknowledge(local_pb2.AcknowledgeRequest(hub_tickets=["t"] * 10_001),
                                    timeout=10)
        return raised.value

    error = call_error(await asyncio.to_thread(acknowledge_too_many))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                          CallReason.TOO_MANY_TICKETS)
    assert error.message.startswith("TOO_MANY_TICKETS: at most 10000 hub tickets")


async def test_a_status_without_our_details_reads_as_unknown(network: InProcessNetwork) -> None:
    key, cert = network.node_certs[A]
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary("/crossroads.v1.Hub/NoSuchMethod")(b"", timeout=10)
    error = call_error(raised.value)
    assert (error.code, error.reason, error.metadata) == (
        grpc.StatusCode.UNIMPLEMENTED, CallReason.UNKNOWN, {})


def _status(code: grpc.StatusCode, *infos: error_details_pb2.ErrorInfo) -> bytes:
    status = status_pb2.Status(code=code.value[0], message="refused")
    for info in infos:
        status.details.add().Pack(info)
    return status.SerializeToString()


def _garbage_info() -> bytes:
    """A status whose ErrorInfo's bytes do not parse."""
    status = status_pb2.Status(code=grpc.StatusCode.PERMISSION_DENIED.value[0], message="refused")
    status.details.add(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\x0a\xff")
    return status.SerializeToString()


#: What a server that is not (this version of) Crossroads may put in the details trailer.
FOREIGN = {
    "newer": _status(grpc.StatusCode.PERMISSION_DENIED,
                     error_details_pb2.ErrorInfo(reason="A_REASON_ADDED_LATER", domain=DOMAIN)),
    "other_domain": _status(grpc.StatusCode.PERMISSION_DENIED,
                            error_details_pb2.ErrorInfo(reason="WRONG_ROLE", domain="example.com")),
    "other_code": _status(grpc.StatusCode.NOT_FOUND,
                          error_details_pb2.ErrorInfo(reason="WRONG_ROLE", domain=DOMAIN)),
    "garbage": b"\x0a\xff not a status",
    "garbage_info": _garbage_info(),
}


@pytest.fixture
async def foreign_server(tmp_path: Path) -> AsyncIterator[str]:
    """A gRPC server on a unix socket refusing ``/t.T/<case>`` with the details of FOREIGN."""

    async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        case = dict(context.invocation_metadata() or ())["case"]
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "refused",
                            (("grpc-status-details-bin", FOREIGN[case]),))
        raise AssertionError("unreachable")

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t.T", {"Refuse": grpc.unary_unary_rpc_method_handler(refuse)}),))
    address = f"unix:{tmp_path / 'foreign.sock'}"
    server.add_insecure_port(address)
    await server.start()
    yield address
    await server.stop(None)


@pytest.mark.parametrize("case", sorted(FOREIGN))
async def test_foreign_or_newer_details_read_as_unknown(foreign_server: str, case: str) -> None:
    async with grpc.aio.insecure_channel(foreign_server) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary("/t.T/Refuse")(b"", metadata=(("case", case),), timeout=10)
    error = call_error(raised.value)
    assert (error.code, error.reason, error.message) == (
        grpc.StatusCode.PERMISSION_DENIED, CallReason.UNKNOWN, "refused")
