"""Mutations are pushed to exactly the subscribed holders of the subject (real servers)."""

from __future__ import annotations

from datetime import date

import pytest

from node.client import make_envelope
from node.core.directory import Authorization, Institution, Integration, Period, Service, Subscription
from node.testing import default_directory
from tests.conftest import fetch_all, local_call

SOURCE, UNEMPLOYMENT, HEALTH, FAMILY, WELFARE = (
    "0403019261", "0428759497", "0566988259", "0200065765", "0212344876")
ALL = (SOURCE, UNEMPLOYMENT, HEALTH, FAMILY, WELFARE)
WORKER = "85073003328"
MUTATION = "mutation.address"  # not a catalogue declaration: any payload


def seed() -> list:
    since = Period(date(2020, 1, 1))
    return default_directory(ALL) + [
        Institution(SOURCE, 12, "Contributions institution"),
        Service(MUTATION, 1, "mutation", "citizen", "fan_out"),
        Authorization("publish", MUTATION, SOURCE),
        Subscription("s-u", UNEMPLOYMENT, MUTATION, frozenset({1})),
        Subscription("s-h", HEALTH, MUTATION),
        Subscription("s-f", FAMILY, MUTATION, frozenset({1})),
        Subscription("s-w", WELFARE, MUTATION, frozenset({1})),
        Integration(WORKER, UNEMPLOYMENT, 1, period=since),
        Integration(WORKER, HEALTH, 4, period=since),
        Integration(WORKER, FAMILY, 2, period=since),  # other capacity
        Integration(WORKER, WELFARE, 1, period=Period(date(2020, 1, 1), date(2025, 12, 31))),
        Integration(WORKER, SOURCE, 1, period=since),  # the source holds it too
    ]


@pytest.fixture
async def net(start_network):
    return await start_network(*ALL, seed=seed())


async def test_mutation_reaches_exactly_the_subscribed_holders(net) -> None:
    raw = make_envelope(MUTATION, [], b"address changed", subject_citizen=WORKER)
    outcomes, seqs = await local_call(net.local_api(SOURCE), "submit", [raw])
    assert outcomes[0].reason == "ACCEPTED"  # the node leaves the subscribers to the hub
    (decided,) = await local_call(net.local_api(SOURCE), "outcomes", seqs, wait_ms=10_000)
    assert decided.reason == "ACCEPTED"
    assert set(decided.receivers) == {UNEMPLOYMENT, HEALTH}
    for who in (UNEMPLOYMENT, HEALTH):
        (got,) = await fetch_all(net.local_api(who), 1)
        assert got.payload.data == b"address changed" and got.sender == SOURCE
    for who in (FAMILY, WELFARE, SOURCE):
        assert await fetch_all(net.local_api(who), 1, timeout=0.5) == []
