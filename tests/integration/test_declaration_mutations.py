"""An accepted immediate declaration at the contributions institution becomes an employment
mutation that reaches exactly the subscribers holding the worker (real hub, real nodes)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from node.client import make_envelope
from node.core.declarations import (
    IMMEDIATE,
    MUTATION_EMPLOYMENT,
    EmploymentMutation,
    ImmediateDeclaration,
    SocialRiskDeclaration,
    catalogue,
)
from node.core.directory import Authorization, Integration, Period, Subscription
from node.member.declaration_desk import SENDER_TICKET_PREFIX, DeclarationDesk
from node.store.node_store import NodeStore
from node.testing import default_directory
from node.wire.declarations import (
    MEDIA_TYPE_IMMEDIATE,
    decode_payload,
    encode_immediate,
    encode_social_risk,
)
from tests.conftest import fetch_all, local_call

EMPLOYER, CONTRIBUTIONS, UNEMPLOYMENT, HEALTH, FAMILY = (
    "0403019261", "0428759497", "0566988259", "0200065765", "0212344876")
ALL = (EMPLOYER, CONTRIBUTIONS, UNEMPLOYMENT, HEALTH, FAMILY)
WORKER = "85073003328"
TODAY = date.today()


def seed() -> list:
    since = Period(date(2020, 1, 1))
    return default_directory(ALL) + catalogue(CONTRIBUTIONS) + [
        Authorization("declare", IMMEDIATE, EMPLOYER),
        Authorization("publish", MUTATION_EMPLOYMENT, CONTRIBUTIONS),
        Subscription("s-u", UNEMPLOYMENT, MUTATION_EMPLOYMENT, frozenset({1})),
        Subscription("s-h", HEALTH, MUTATION_EMPLOYMENT),
        Subscription("s-f", FAMILY, MUTATION_EMPLOYMENT, frozenset({1})),
        Integration(WORKER, UNEMPLOYMENT, 1, period=since),
        Integration(WORKER, HEALTH, 4, period=since),
        Integration(WORKER, FAMILY, 2, period=since),  # other capacity: not reached
    ]


def recruitment(**changes: object) -> ImmediateDeclaration:
    fields: dict[str, object] = dict(
        kind="RECRUITMENT", employer_enterprise_number=EMPLOYER, worker_citizen_number=WORKER,
        joint_committee="200", worker_type="OTHER", start_date=TODAY.isoformat(),
        planned_weekly_hours=38.0, employer_reference="hire-1")
    fields.update(changes)
    return ImmediateDeclaration(**fields)  # type: ignore[arg-type]


def envelope_of(declaration: ImmediateDeclaration, ticket: str = "") -> bytes:
    return make_envelope(IMMEDIATE, [], encode_immediate(declaration), subject_citizen=WORKER,
                         media_type=MEDIA_TYPE_IMMEDIATE, sender_ticket=ticket)


@pytest.fixture
async def net(start_network):
    return await start_network(*ALL, seed=seed(),
                               per_node={CONTRIBUTIONS: {"emit_employment_mutations": True}})


async def test_recruitment_and_discharge_reach_exactly_the_subscribed_holders(net) -> None:
    discharge = recruitment(kind="DISCHARGE", start_date=(TODAY - timedelta(days=30)).isoformat(),
                            end_date=TODAY.isoformat(), employer_reference="fire-1")
    outcomes, seqs = await local_call(net.local_api(EMPLOYER), "submit",
                                      [envelope_of(recruitment()), envelope_of(discharge)])
    assert [o.reason for o in outcomes] == ["ACCEPTED", "ACCEPTED"]
    decided = await local_call(net.local_api(EMPLOYER), "outcomes", seqs, wait_ms=10_000)
    tickets = [d.hub_ticket for d in decided]
    assert all(tickets) and [d.receivers for d in decided] == [(CONTRIBUTIONS,)] * 2

    # The contributions institution's application still gets both declarations.
    declarations = await fetch_all(net.local_api(CONTRIBUTIONS), 2)
    assert [d.hub_ticket for d in declarations] == tickets

    for who in (UNEMPLOYMENT, HEALTH):
        got = await fetch_all(net.local_api(who), 2)
        assert [g.service_id for g in got] == [MUTATION_EMPLOYMENT] * 2
        assert {g.sender for g in got} == {CONTRIBUTIONS}
        assert [g.sender_ticket for g in got] == [SENDER_TICKET_PREFIX + t for t in tickets]
        assert [g.subject.number for g in got] == [WORKER, WORKER]
        mutations = [decode_payload(MUTATION_EMPLOYMENT, g.payload.media_type, g.payload.data)
                     for g in got]
        assert mutations == [
            EmploymentMutation(WORKER, EMPLOYER, "STARTED", TODAY.isoformat(), TODAY.isoformat(),
                               "", "200", "OTHER", tickets[0]),
            EmploymentMutation(WORKER, EMPLOYER, "ENDED", TODAY.isoformat(),
                               discharge.start_date, TODAY.isoformat(), "200", "OTHER", tickets[1]),
        ]
        assert [g.period.begin_date for g in got] == [TODAY.isoformat()] * 2
    for who in (FAMILY, EMPLOYER, CONTRIBUTIONS):
        assert await fetch_all(net.local_api(who), 1, timeout=0.5) == []


async def test_a_node_without_the_setting_emits_nothing(start_network) -> None:
    network = await start_network(*ALL, seed=seed())
    outcomes, _ = await local_call(network.local_api(EMPLOYER), "submit",
                                   [envelope_of(recruitment())])
    assert outcomes[0].reason == "ACCEPTED"
    assert len(await fetch_all(network.local_api(CONTRIBUTIONS), 1)) == 1
    for who in (UNEMPLOYMENT, HEALTH):
        assert await fetch_all(network.local_api(who), 1, timeout=1.0) == []


async def test_a_redelivered_declaration_emits_one_mutation(tmp_path) -> None:
    """The hub redelivers after a lost ack: the inbox drops the duplicate, and so the outbox
    gets no second mutation (same transaction)."""
    store = NodeStore(tmp_path / "node.sqlite")
    await store.open()
    try:
        desk = DeclarationDesk(CONTRIBUTIONS)
        raw = envelope_of(recruitment())
        other = make_envelope("demo.message", [CONTRIBUTIONS], b"hello")
        assert await store.store_delivery(["t-1", "t-2"], [raw, other], desk.mutation_for) == 2
        assert await store.store_delivery(["t-1"], [raw], desk.mutation_for) == 0
        pending = await store.pending(0, 100, 1 << 20)
        assert len(pending) == 1
    finally:
        await store.close()
    # Reopened (a restart): still one, and the next sequence follows it.
    store = NodeStore(tmp_path / "node.sqlite")
    await store.open()
    try:
        assert await store.store_delivery(["t-1"], [raw], desk.mutation_for) == 0
        assert await store.store_delivery(["t-3"], [envelope_of(recruitment())],
                                          desk.mutation_for) == 1
        assert [seq for seq, _ in await store.pending(0, 100, 1 << 20)] == [1, 2]
    finally:
        await store.close()


def test_only_valid_recruitments_and_discharges_emit() -> None:
    desk = DeclarationDesk(CONTRIBUTIONS)
    assert desk.mutation_for("t", envelope_of(recruitment())) is not None
    # Invalid at the receiver too (a node that skipped validation): no mutation.
    assert desk.mutation_for("t", envelope_of(recruitment(joint_committee="999"))) is None
    assert desk.mutation_for("t", envelope_of(recruitment(worker_citizen_number="85073003327"))) is None
    # Not an immediate declaration, undecodable payload, undecodable envelope.
    risk = make_envelope("declaration.social_risk", [], encode_social_risk(SocialRiskDeclaration()),
                         subject_citizen=WORKER)
    assert desk.mutation_for("t", risk) is None
    assert desk.mutation_for("t", make_envelope(IMMEDIATE, [], b"\xff\xff",
                                                subject_citizen=WORKER,
                                                media_type=MEDIA_TYPE_IMMEDIATE)) is None
    assert desk.mutation_for("t", b"\xff\xfe not a protobuf") is None
    # Kind not given: nothing to emit.
    assert desk.mutation_for("t", envelope_of(recruitment(kind=""))) is None
