"""The hub checks and routes by the reference directory (real servers, real certificates)."""

from __future__ import annotations

import asyncio
from datetime import date

import grpc
import pytest

from node.client import make_envelope
from node.core.directory import Authorization, Institution, Integration, Period, RevokedCertificate, Service
from node.hub.directory import INTEGRATION_SERVICE
from node.testing import InProcessNetwork, default_directory
from node.wire.gen.crossroads.v1 import consult_pb2, directory_pb2, envelope_pb2, hub_pb2_grpc
from pki.ca import load_certificate
from tests.conftest import fetch_all, hub_channel, submit_raw

WELFARE, HEALTH, UNEMPLOYMENT, FAMILY, PENSIONS = (
    "0403019261", "0428759497", "0566988259", "0200065765", "0212344876")
CITIZEN = "85073003328"
ALL = (WELFARE, HEALTH, UNEMPLOYMENT, FAMILY, PENSIONS)
SINCE = Period(date(2020, 1, 1))


def seed() -> list:
    entities = default_directory(ALL)
    entities += [
        Institution(WELFARE, 17, "Local welfare centre"),  # replaces the default sector
        Service("income", 1, "consultation", "citizen", "fan_out", integration_required=True),
        Service("insurability", 1, "consultation", "citizen", "fixed", HEALTH,
                integration_required=True, min_phase=2),
        Authorization("w-income", "income", WELFARE),
        Authorization("w-ins", "insurability", WELFARE, capacities=frozenset({2})),
        # Answering fan-out: HEALTH and UNEMPLOYMENT are authorized for "income"; FAMILY is not.
        Authorization("h-income", "income", HEALTH),
        Authorization("u-income", "income", UNEMPLOYMENT),
        Authorization("integrate-17", INTEGRATION_SERVICE, sector=17, capacities=frozenset({2})),
        Integration(CITIZEN, WELFARE, 2, phase=3, period=SINCE),
        Integration(CITIZEN, HEALTH, 1, period=SINCE),
        Integration(CITIZEN, UNEMPLOYMENT, 4, period=SINCE),
        Integration(CITIZEN, FAMILY, 1, period=SINCE),
    ]
    return entities


@pytest.fixture
async def net(start_network):
    return await start_network(*ALL, seed=seed())


def envelope(service: str, sender: str, subject: str = CITIZEN, capacity: int = 2) -> bytes:
    raw = envelope_pb2.Envelope.FromString(
        make_envelope(service, [], b"q", sender=sender, subject_citizen=subject, capacity=capacity))
    return raw.SerializeToString()


async def raw_submit(net: InProcessNetwork, who: str, *raws: bytes) -> list[tuple[str, str]]:
    key, cert = net.node_certs[who]
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        (ack,) = await submit_raw(channel, [envelope_pb2.EnvelopeBatch(envelopes=list(raws))])
    return [(envelope_pb2.Reason.Name(o.reason), ",".join(o.receivers)) for o in ack.outcomes]


async def submit_refused(net: InProcessNetwork, who: str) -> grpc.aio.AioRpcError:
    """The error that ends a Submit stream ``who`` opens (and sends one empty batch on)."""
    key, cert = net.node_certs[who]
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await submit_raw(channel, [envelope_pb2.EnvelopeBatch()])
    return err.value


async def test_hub_refuses_what_the_directory_does_not_allow_even_from_a_raw_client(net) -> None:
    """Bypassing the node's local checks changes nothing: the hub decides."""
    outcomes = await raw_submit(
        net, WELFARE,
        envelope("insurability", WELFARE),                      # authorized, integrated, phase 3
        envelope("insurability", WELFARE, capacity=1),          # capacity not authorized
        envelope("insurability", WELFARE, "17073003384"),       # not integrated
        envelope("income", PENSIONS),                           # spoofed sender
    )
    assert outcomes == [("ACCEPTED", HEALTH), ("NOT_AUTHORIZED", ""), ("NOT_INTEGRATED", ""),
                        ("SENDER_MISMATCH", "")]
    outcomes = await raw_submit(net, PENSIONS, envelope("insurability", PENSIONS))
    assert outcomes == [("NOT_AUTHORIZED", "")]  # no authorization at all


async def test_fan_out_reaches_exactly_the_authorized_holders(net) -> None:
    outcomes = await raw_submit(net, WELFARE, envelope("income", WELFARE))
    assert outcomes == [("ACCEPTED", f"{HEALTH},{UNEMPLOYMENT}")]
    assert len(await fetch_all(net.local_api(HEALTH), 1)) == 1
    assert len(await fetch_all(net.local_api(UNEMPLOYMENT), 1)) == 1
    assert await fetch_all(net.local_api(FAMILY), 1, timeout=1) == []  # holds a file, not authorized
    assert await fetch_all(net.local_api(PENSIONS), 1, timeout=1) == []  # holds no file


async def test_integrate_is_checked_per_op(net) -> None:
    key, cert = net.node_certs[WELFARE]
    ops = [
        directory_pb2.IntegrateOp(integration=directory_pb2.IntegrationEntry(
            subject="17073003384", capacity=2, phase=2, begin_date="2026-01-01")),
        directory_pb2.IntegrateOp(integration=directory_pb2.IntegrationEntry(
            subject="17073003385", capacity=2, begin_date="2026-01-01")),
        directory_pb2.IntegrateOp(integration=directory_pb2.IntegrationEntry(
            subject="17073003384", capacity=9, begin_date="2026-01-01")),
        directory_pb2.IntegrateOp(integration=directory_pb2.IntegrationEntry(
            subject="17073003384", institution=HEALTH, capacity=2, begin_date="2026-01-01")),
    ]
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        response = await hub_pb2_grpc.HubStub(channel).Integrate(
            directory_pb2.IntegrateRequest(ops=ops), timeout=10)
    reasons = [envelope_pb2.Reason.Name(o.reason) for o in response.outcomes]
    assert reasons == ["ACCEPTED", "SUBJECT_NUMBER_INVALID", "NOT_AUTHORIZED", "NOT_AUTHORIZED"]
    held = await net.hub.directory.store.integrations_of(["17073003384"])
    assert [(i.institution, i.capacity, i.phase) for i in held["17073003384"]] == [(WELFARE, 2, 2)]
    # The new integration now lets WELFARE ask about that citizen.
    assert (await raw_submit(net, WELFARE, envelope("insurability", WELFARE, "17073003384"))) == [
        ("ACCEPTED", HEALTH)]


async def test_revocation_through_the_directory_refuses_the_next_stream(net) -> None:
    _, cert = net.node_certs[HEALTH]
    assert (await raw_submit(net, HEALTH, make_envelope("demo.message", [WELFARE], b"x",
                                                        sender=HEALTH)))[0][0] == "ACCEPTED"
    serial = format(load_certificate(cert).serial_number, "x")
    await net.hub.directory.apply([(RevokedCertificate(serial, HEALTH, "key compromise"), False)])
    refused = await submit_refused(net, HEALTH)
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "CERTIFICATE_REVOKED" in refused.details()


async def test_revocation_ends_an_open_consultation_stream(net) -> None:
    """The certificate is checked again on every message of a long-lived Consultations stream."""
    key, cert = net.node_certs[HEALTH]

    def call(i: int) -> consult_pb2.ConsultCalls:
        question = make_envelope("no.such.service", [], b"", sender=HEALTH,
                                 subject_citizen=CITIZEN, capacity=2)
        return consult_pb2.ConsultCalls(calls=[consult_pb2.ConsultCall(
            id=i, request=consult_pb2.ConsultRequest(envelope=question, deadline_ms=1_000))])

    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        stream = hub_pb2_grpc.HubStub(channel).Consultations(timeout=10)
        await stream.write(call(1))
        (reply,) = (await stream.read()).replies
        assert reply.id == 1 and reply.response.status == consult_pb2.REFUSED
        serial = format(load_certificate(cert).serial_number, "x")
        await net.hub.directory.apply([(RevokedCertificate(serial, HEALTH, "key compromise"),
                                        False)])
        await stream.write(call(2))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stream.read()
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "CERTIFICATE_REVOKED" in err.value.details()


async def test_suspended_institution_is_refused(net) -> None:
    await net.hub.directory.apply([(Institution(FAMILY, 7, status="suspended"), False)])
    refused = await submit_refused(net, FAMILY)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "UNKNOWN_INSTITUTION" in refused.details()


async def test_node_checks_against_its_fragment_and_reports_it(net) -> None:
    """Errors surface at the source with the hub's reason codes; status shows the fragment."""
    from tests.conftest import local_call

    node = net.nodes[PENSIONS]
    for _ in range(100):
        if node.fragment.revision == net.hub.directory.revision:
            break
        await asyncio.sleep(0.05)
    status = await local_call(net.local_api(PENSIONS), "status")
    assert status.directory_revision == net.hub.directory.revision > 0
    assert status.directory_lag == 0 and status.directory_connected
    assert status.directory_last_sync_unix_us > 0
    raws = [make_envelope("insurability", [], b"q", subject_citizen=CITIZEN, capacity=2),
            make_envelope("demo.message", [WELFARE], b"ok")]
    outcomes, seqs = await local_call(net.local_api(PENSIONS), "submit", raws)
    assert [o.reason for o in outcomes] == ["NOT_AUTHORIZED", "ACCEPTED"]
    assert seqs[0] == 0  # nothing left the node


async def test_who_consulted_over_the_admin_api(net) -> None:
    """The portal's query: exactly the records about one citizen, admins only."""
    from node.wire.gen.crossroads.v1 import directory_pb2_grpc

    await raw_submit(net, WELFARE, envelope("insurability", WELFARE),
                     envelope("insurability", WELFARE, capacity=1),
                     envelope("insurability", WELFARE, "17073003384"))
    request = directory_pb2.WhoConsultedRequest(subject=CITIZEN)
    async with hub_channel(net.hub_address, net.pki.ca_cert, net.admin_cert,
                           net.admin_key) as channel:
        response = await directory_pb2_grpc.DirectoryAdminStub(channel).WhoConsulted(
            request, timeout=10)
    seen = [(r.event, r.institution, r.service_id, r.outcome, tuple(r.receivers))
            for r in response.records if r.event in ("ACCEPTED", "REJECTED")]
    assert seen == [("ACCEPTED", WELFARE, "insurability", "ACCEPTED", (HEALTH,)),
                    ("REJECTED", WELFARE, "insurability", "NOT_AUTHORIZED", ())]
    key, cert = net.node_certs[WELFARE]
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await directory_pb2_grpc.DirectoryAdminStub(channel).WhoConsulted(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
