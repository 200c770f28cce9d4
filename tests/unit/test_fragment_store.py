"""The node's fragment store: real SQLite files, snapshots, deltas, gaps, views for decide."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest

from node.core.directory import (
    Authorization,
    Institution,
    Integration,
    Period,
    Replacement,
    Request,
    RevokedCertificate,
    Service,
    Subscription,
    decide,
)
from node.core.envelope import SUBJECT_CITIZEN, EnvelopeHead
from node.core.reasons import Reason
from node.member.fragment import check_with_fragment
from node.store.fragment_store import FragmentStore, RevisionGap

A, B, C = "0403019261", "0428759497", "0566988259"
CITIZEN, CITIZEN2, OLD = "85073003328", "17073003384", "00010100105"
TODAY = date(2025, 6, 1)

BASE = [
    Institution(A, 17, "A"),
    Institution(B, 12, "B"),
    Institution(C, 17, "C"),
    Service("health.insurability", 1, "consultation", "citizen", "fixed", B,
            integration_required=True, min_phase=1),
    Service("notify", 1, "consultation", "citizen", "explicit"),
    Authorization("auth-a", "health.insurability", institution=A),
    Integration(CITIZEN, A, 1, 2, Period(date(2020, 1, 1))),
    Replacement(OLD, CITIZEN),
    RevokedCertificate("0a1b", B, "key compromise"),
    Subscription("sub-1", A, "health.insurability"),
]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FragmentStore]:
    s = FragmentStore(tmp_path / "fragment.sqlite")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def head(service: str, subject: str = CITIZEN, receivers: tuple[str, ...] = ()) -> EnvelopeHead:
    return EnvelopeHead(sender=A, receivers=receivers, service_id=service, service_version=0,
                        subject_type=SUBJECT_CITIZEN, subject_number=subject, payload_size=1)


async def decide_for(store: FragmentStore, h: EnvelopeHead, capacity: int = 1):
    view = await store.view([h.subject_number])
    decision, _ = decide(h, Request(capacity, "", None), A, view, TODAY)
    return decision


async def test_new_store_is_empty_at_revision_zero(store: FragmentStore) -> None:
    assert (store.revision, store.last_sync_us, store.hub_revision, store.lag) == (0, 0, 0, 0)
    assert set((await store.counts()).values()) == {0}
    assert store.institution(A) is None


async def test_snapshot_replaces_everything(store: FragmentStore) -> None:
    await store.apply_snapshot(10, BASE, recipient=A)
    assert (store.revision, store.hub_revision, store.recipient) == (10, 10, A)
    assert store.last_sync_us > 0
    assert await store.counts() == {
        "institution": 3, "service": 2, "authorization": 1, "subscription": 1,
        "replacement": 1, "revoked_certificate": 1, "integration": 1}
    await store.apply_snapshot(12, [Institution(C, 17, "C2")])
    assert store.institution(A) is None
    assert store.institution(C) == Institution(C, 17, "C2")
    counts = await store.counts()
    assert counts["integration"] == 0 and counts["institution"] == 1
    assert store.revoked_serials() == frozenset()
    assert store.recipient == A  # kept when not given


async def test_deltas_put_replace_and_delete(store: FragmentStore) -> None:
    await store.apply_snapshot(10, BASE)
    await store.apply_delta(10, 11, [(Institution(B, 12, "B renamed", status="suspended"), False)])
    assert store.revision == 11
    assert store.institution(B) is not None and not store.institution(B).active
    await store.apply_delta(11, 14, [
        (Integration(CITIZEN2, A, 1, 1), False),
        (Integration(CITIZEN, A, 1, 0, Period(date(2020, 1, 1))), True),  # key fields only
        (Subscription("sub-1", A, "x"), True),
        (Institution(C, 17), True),
    ])
    assert store.revision == 14
    assert await store.integrations_of_institution(A) == [Integration(CITIZEN2, A, 1, 1)]
    assert store.subscriptions() == []
    assert store.institution(C) is None
    # Put then delete of the same key in one delta ends deleted, and vice versa.
    integ = Integration(CITIZEN, A, 2, 1)
    await store.apply_delta(14, 15, [(integ, False), (integ, True)])
    assert integ not in await store.integrations_of_institution(A)
    await store.apply_delta(15, 16, [(integ, True), (integ, False)])
    assert integ in await store.integrations_of_institution(A)


async def test_empty_delta_moves_the_revision(store: FragmentStore) -> None:
    await store.apply_snapshot(3, BASE)
    before = store.last_sync_us
    await store.apply_delta(3, 40, [])
    assert store.revision == 40 and store.last_sync_us >= before


async def test_gap_is_refused_and_nothing_applied(store: FragmentStore) -> None:
    await store.apply_snapshot(10, BASE)
    with pytest.raises(RevisionGap) as err:
        await store.apply_delta(11, 12, [(Institution(B, 12, "changed"), False),
                                         (Integration(CITIZEN2, A, 1), False)])
    assert (err.value.expected, err.value.got) == (10, 11)
    assert store.revision == 10
    assert store.institution(B) == Institution(B, 12, "B")
    assert len(await store.integrations_of_institution(A)) == 1
    with pytest.raises(RevisionGap):  # a replayed, already applied delta
        await store.apply_delta(9, 10, [(Institution(B, 12, "old"), False)])
    with pytest.raises(ValueError):
        await store.apply_delta(10, 9, [])
    assert store.revision == 10


async def test_hub_revision_and_lag(store: FragmentStore) -> None:
    await store.apply_snapshot(10, BASE)
    store.note_hub_revision(25)
    store.note_hub_revision(20)  # never goes back
    assert (store.hub_revision, store.lag) == (25, 15)
    await store.apply_delta(10, 25, [])
    assert store.lag == 0


async def test_view_drives_decide(store: FragmentStore) -> None:
    await store.apply_snapshot(10, BASE)
    assert (await decide_for(store, head("health.insurability"))).receivers == (B,)
    # Replaced number: mapped through the fragment's replacements, integration found.
    view = await store.view([OLD])
    assert view.replaced == {OLD: CITIZEN} and CITIZEN in view.integrations
    d = await decide_for(store, head("health.insurability", OLD))
    assert d.reason is Reason.ACCEPTED and "SUBJECT_REPLACED" in d.detail
    # Not integrated in capacity 2; unknown service; not authorized for "notify".
    assert (await decide_for(store, head("health.insurability"), 2)).reason is Reason.NOT_INTEGRATED
    assert (await decide_for(store, head("nope"))).reason is Reason.UNKNOWN_SERVICE
    assert (await decide_for(store, head("notify", receivers=(C,)))).reason is Reason.NOT_AUTHORIZED
    # Revoking the authorization by delta changes the decision at once.
    await store.apply_delta(10, 11, [(Authorization("auth-a", "health.insurability", A), True)])
    assert (await decide_for(store, head("health.insurability"))).reason is Reason.NOT_AUTHORIZED


async def test_view_of_unknown_subject_has_no_integrations(store: FragmentStore) -> None:
    await store.apply_snapshot(10, BASE)
    view = await store.view([CITIZEN2, ""])
    assert view.integrations == {} and view.replaced == {}
    assert set(view.institutions) == {A, B, C}


async def test_sector_authorization_applies_to_the_sector(store: FragmentStore) -> None:
    await store.apply_snapshot(10, BASE)
    assert (await decide_for(store, head("notify", receivers=(C,)))).reason is Reason.NOT_AUTHORIZED
    await store.apply_delta(10, 11, [(Authorization("sector-17", "notify", sector=17), False)])
    d = await decide_for(store, head("notify", receivers=(C,)))
    assert d.reason is Reason.ACCEPTED and d.receivers == (C,)
    # Moving A out of sector 17 removes the grant.
    await store.apply_delta(11, 12, [(Institution(A, 12, "A"), False)])
    assert (await decide_for(store, head("notify", receivers=(C,)))).reason is Reason.NOT_AUTHORIZED


async def test_revoked_serials(store: FragmentStore) -> None:
    await store.apply_snapshot(10, BASE)
    assert store.revoked_serials() == frozenset({0x0A1B})
    await store.apply_delta(10, 12, [(RevokedCertificate("ff"), False),
                                     (RevokedCertificate("0a1b"), True)])
    assert store.revoked_serials() == frozenset({255})


async def test_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "fragment.sqlite"
    first = FragmentStore(path)
    await first.open()
    await first.apply_snapshot(10, BASE, recipient=A)
    await first.apply_delta(10, 11, [(RevokedCertificate("ff"), False),
                                     (Authorization("sector-17", "notify", sector=17), False)])
    first.note_hub_revision(30)
    synced = first.last_sync_us
    await first.close()

    again = FragmentStore(path)
    await again.open()
    try:
        assert (again.revision, again.recipient, again.last_sync_us) == (11, A, synced)
        assert again.hub_revision == 11  # only applied updates are persisted
        assert again.revoked_serials() == frozenset({0x0A1B, 0xFF})
        assert again.institution(B) == Institution(B, 12, "B")
        d = await decide_for(again, head("notify", receivers=(C,)))
        assert d.reason is Reason.ACCEPTED
        assert (await decide_for(again, head("health.insurability"))).receivers == (B,)
        with pytest.raises(RevisionGap):
            await again.apply_delta(10, 11, [])
        await again.apply_delta(11, 12, [])
        assert again.revision == 12
    finally:
        await again.close()


async def test_check_with_fragment_refuses_like_the_hub_but_leaves_fan_out_to_it(
    store: FragmentStore,
) -> None:
    fan_out = Service("mutations", 1, "mutation", "citizen", "fan_out")
    await store.apply_snapshot(10, [*BASE, fan_out, Authorization("auth-m", "mutations", A)])
    view = await store.view([CITIZEN])
    h = head("mutations")
    # The fragment lacks other institutions' integrations, so decide() finds no receiver...
    assert decide(h, Request(1, "", None), A, view, TODAY)[0].reason is Reason.NO_RECEIVER
    # ... and the local check leaves receivers to the hub instead of refusing.
    assert check_with_fragment(h, A, view, TODAY).reason is Reason.ACCEPTED
    assert check_with_fragment(head("nope"), A, view, TODAY).reason is Reason.UNKNOWN_SERVICE
    fixed = check_with_fragment(head("health.insurability"), A, view, TODAY)
    assert fixed.reason is Reason.ACCEPTED and fixed.receivers == (B,)
    unauthorized = check_with_fragment(head("notify", receivers=(C,)), A, view, TODAY)
    assert unauthorized.reason is Reason.NOT_AUTHORIZED
    bad_period = head("mutations")._replace(period_begin="2025-13-01")
    assert check_with_fragment(bad_period, A, view, TODAY).reason is Reason.INVALID_FIELD
