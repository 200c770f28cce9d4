"""Declarations are validated at the sending node: every invalid field named, nothing invalid
leaves the node (real node, real hub)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from node.client import make_envelope
from node.core.declarations import ImmediateDeclaration, catalogue
from node.core.directory import Authorization
from node.testing import default_directory
from node.wire.declarations import MEDIA_TYPE_IMMEDIATE, encode_immediate
from node.wire.gen.crossroads.v1 import envelope_pb2
from tests.conftest import fetch_all, local_call

EMPLOYER, CONTRIBUTIONS = "0403019261", "0428759497"
WORKER = "85073003328"


@pytest.fixture
async def net(start_network):
    seed = default_directory((EMPLOYER, CONTRIBUTIONS)) + catalogue(CONTRIBUTIONS) + [
        Authorization("declare", "declaration.immediate", EMPLOYER)]
    return await start_network(EMPLOYER, CONTRIBUTIONS, seed=seed)


def declaration(payload: bytes) -> bytes:
    raw = envelope_pb2.Envelope.FromString(make_envelope(
        "declaration.immediate", [], payload, subject_citizen=WORKER,
        media_type=MEDIA_TYPE_IMMEDIATE))
    return raw.SerializeToString()


async def test_invalid_fields_are_named_and_nothing_invalid_leaves(net) -> None:
    today = date.today()
    good = ImmediateDeclaration(
        kind="RECRUITMENT", employer_enterprise_number=EMPLOYER, worker_citizen_number=WORKER,
        joint_committee="200", worker_type="OTHER", start_date=today.isoformat(),
        planned_weekly_hours=38.0)
    bad = ImmediateDeclaration(
        kind="RECRUITMENT", employer_enterprise_number="0403019216",
        worker_citizen_number="85073003327", joint_committee="200", worker_type="OTHER",
        start_date=today.isoformat(), end_date=(today - timedelta(days=3)).isoformat(),
        planned_weekly_hours=38.0)
    outcomes, seqs = await local_call(net.local_api(EMPLOYER), "submit", [
        declaration(encode_immediate(bad)), declaration(b"\xff\xff not protobuf"),
        declaration(encode_immediate(good))])
    assert [o.reason for o in outcomes] == ["INVALID_FIELD", "INVALID_FIELD", "ACCEPTED"]
    detail = outcomes[0].detail
    for field in ("employer_enterprise_number", "worker_citizen_number", "end_date"):
        assert field in detail
    assert "payload" in outcomes[1].detail
    assert seqs[:2] == [0, 0]
    (got,) = await fetch_all(net.local_api(CONTRIBUTIONS), 1)  # only the valid one travelled
    assert got.payload.media_type == MEDIA_TYPE_IMMEDIATE
    assert await fetch_all(net.local_api(CONTRIBUTIONS), 1, timeout=0.5) == []
