"""The directory contract: what :class:`node.store.protocols.DirectoryLog` promises, on every
hub backend (tests/contract/backends.py: SQLite, PostgreSQL), with real stores.

Revisions, the state of each kind after puts and deletes, fragments (snapshots and deltas by
owner), compaction, and the in-memory answers (integrations through the subject cache, every
replaced number) that must follow every write at once and survive a reopening.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from node.core import directory as dr
from node.store import integrations
from node.store.records import LoggedChange
from tests.conftest import opened
from tests.contract.backends import HubBackend

A, B = "0403019261", "0428759497"
CITIZEN, OTHER, OLD = "85073003328", "17073003384", "00010100105"
SINCE = dr.Period(date(2020, 1, 1))
INST_A, INST_B = dr.Institution(A, 7, "A"), dr.Institution(B, 11, "B")
SERVICE = dr.Service("svc", 1)


def _puts(*entities: dr.Entity) -> list[tuple[dr.Entity, bool]]:
    return [(e, False) for e in entities]


async def test_each_change_gets_the_next_revision_in_its_owners_log(
        backend: HubBackend, tmp_path: Path) -> None:
    to_a = dr.Authorization("to-a", "svc", institution=A)
    to_sector = dr.Authorization("to-sector", "svc", sector=7)
    integration = dr.Integration(CITIZEN, B, 1, 1, SINCE)
    async with opened(backend.directory(tmp_path)) as store:
        assert (store.revision, store.compacted_revision) == (0, 0)
        assert await store.apply([]) == []
        logged = await store.apply(_puts(INST_A, to_a, to_sector, integration))
        assert logged == [LoggedChange(1, "", INST_A, False), LoggedChange(2, A, to_a, False),
                          LoggedChange(3, "sector:7", to_sector, False),
                          LoggedChange(4, B, integration, False)]
        assert (await store.apply([(to_a, True)]))[0] == LoggedChange(5, A, to_a, True)
        assert store.revision == 5
        owners = dr.fragment_owners(INST_A)
        assert [c.revision for c in await store.changes_since(owners, 0, 5)] == [1, 2, 3, 5]
        assert [c.revision for c in await store.changes_since(owners, 1, 4)] == [2, 3]
        assert [c.revision for c in await store.changes_since(owners, 0, 5, limit=2)] == [1, 2]
        assert await store.changes_since([B], 0, 5) == [LoggedChange(4, B, integration, False)]
        assert await store.changes_since([B], 4, 5) == []
    async with opened(backend.directory(tmp_path)) as again:  # the log is what was stored
        assert again.revision == 5
        assert (await again.apply(_puts(INST_B)))[0].revision == 6


async def test_small_tables_hold_the_current_state_of_each_kind(
        backend: HubBackend, tmp_path: Path) -> None:
    services = [dr.Service("b-svc", 2), dr.Service("a-svc", 1, provider=A)]
    auth = dr.Authorization("auth", "svc", institution=A, capacities=frozenset({1, 2}))
    subscription = dr.Subscription("sub", B, "svc", frozenset({3}), "condition")
    revoked = dr.RevokedCertificate("beef", B, "superseded")
    async with opened(backend.directory(tmp_path)) as store:
        await store.apply(_puts(INST_B, INST_A, *services, auth, subscription, revoked,
                                dr.Integration(CITIZEN, A, 1, 1, SINCE), dr.Replacement(OLD, CITIZEN)))
        # Kind by kind (institutions, services, revoked, authorizations, subscriptions), by key.
        assert await store.small_tables() == [INST_A, INST_B, services[1], services[0], revoked,
                                              auth, subscription]
        renamed = dr.Institution(A, 7, "A renamed")
        await store.apply([(renamed, False), (services[0], True), (revoked, True),
                           (subscription, True)])
        assert await store.small_tables() == [renamed, INST_B, services[1], auth]


async def test_the_last_change_of_a_key_in_one_call_wins(backend: HubBackend,
                                                          tmp_path: Path) -> None:
    mine = dr.Integration(CITIZEN, A, 1, 1, SINCE)
    later = dr.Integration(CITIZEN, A, 1, 2, SINCE)  # same key (subject, institution, capacity, begin)
    async with opened(backend.directory(tmp_path)) as store:
        await store.apply([(mine, False), (mine, True), (INST_A, False), (INST_A, True),
                           (dr.Replacement(OLD, CITIZEN), False), (dr.Replacement(OLD, CITIZEN), True),
                           (dr.Institution(B, 11, "first"), False), (INST_B, False),
                           (mine, False), (later, False)])
        assert store.revision == 10
        assert await store.small_tables() == [INST_B]
        assert await store.replacements_of([OLD]) == {}
        assert await store.integrations_of([CITIZEN]) == {CITIZEN: (later,)}
        _, entities = await store.snapshot(dr.fragment_owners(INST_A))
        assert entities == [INST_B, later]


async def test_a_snapshot_is_the_fragment_of_its_owners_at_its_revision(
        backend: HubBackend, tmp_path: Path) -> None:
    public = [INST_A, INST_B, SERVICE, dr.RevokedCertificate("beef")]
    for_a = [dr.Authorization("to-a", "svc", institution=A), dr.Authorization("to-7", "svc", sector=7),
             dr.Subscription("sub-a", A, "svc"), dr.Integration(CITIZEN, A, 1, 1, SINCE)]
    for_b = [dr.Authorization("to-b", "svc", institution=B), dr.Authorization("to-11", "svc", sector=11),
             dr.Subscription("sub-b", B, "svc"), dr.Integration(OTHER, B, 1, 1, SINCE)]
    async with opened(backend.directory(tmp_path)) as store:
        await store.apply(_puts(*public, *for_a, *for_b, dr.Replacement(OLD, CITIZEN)))
        revision, entities = await store.snapshot(dr.fragment_owners(INST_A))
        assert revision == store.revision == 13
        assert set(entities) == {*public, *for_a, dr.Replacement(OLD, CITIZEN)}
        assert len(entities) == len(public) + len(for_a) + 1
        # A sector alone (no institution): its public part and authorizations, no integrations.
        _, sector = await store.snapshot(["", "sector:11"])
        assert set(sector) == {*public, for_b[1], dr.Replacement(OLD, CITIZEN)}


async def test_compaction_drops_the_history_up_to_a_revision(backend: HubBackend,
                                                             tmp_path: Path) -> None:
    owners = dr.fragment_owners(INST_A)
    async with opened(backend.directory(tmp_path)) as store:
        for n in range(5):
            await store.apply(_puts(dr.Institution(A, 7, f"A{n}")))
        assert await store.compact(3) == (3, 3)
        assert store.compacted_revision == 3
        assert await store.compact(2) == (3, 0)  # never backwards
        assert [c.revision for c in await store.changes_since(owners, 3, 5)] == [4, 5]
        assert await store.compact(99) == (5, 2)  # not beyond the last revision
        revision, entities = await store.snapshot(owners)  # the state stays whole
        assert (revision, entities) == (5, [dr.Institution(A, 7, "A4")])
    async with opened(backend.directory(tmp_path)) as again:
        assert (again.revision, again.compacted_revision) == (5, 5)


@pytest.mark.parametrize("quick", [4, -1], ids=["few-on-the-loop", "reader-thread"])
async def test_reads_its_own_writes_through_the_cache(
        backend: HubBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quick: int) -> None:
    """SQLite reads a few subjects on the event loop's own connection, more through its
    reader thread (-1: always the thread); PostgreSQL reads them in one query either way.
    Every write is seen at once."""
    monkeypatch.setattr(integrations, "QUICK_SUBJECTS", quick)
    async with opened(backend.directory(tmp_path)) as store:
        await store.apply([(dr.Integration(CITIZEN, A, 1, 1, SINCE), False)])
        assert await store.integrations_of([CITIZEN, OTHER]) == {
            CITIZEN: (dr.Integration(CITIZEN, A, 1, 1, SINCE),)}
        assert await store.replacements_of([OLD, CITIZEN]) == {}
        # Both answers are cached now (also "none" for OTHER) ...
        assert store.integration_cache.lookup([CITIZEN, OTHER])[1] == []
        # ... and every write is seen at once.
        await store.apply([(dr.Integration(CITIZEN, B, 2, 1, SINCE), False),
                           (dr.Integration(OTHER, B, 1, 1, SINCE), False),
                           (dr.Replacement(OLD, CITIZEN), False)])
        held = await store.integrations_of([CITIZEN, OTHER])
        assert sorted(held[CITIZEN]) == [dr.Integration(CITIZEN, A, 1, 1, SINCE),
                                         dr.Integration(CITIZEN, B, 2, 1, SINCE)]
        assert held[OTHER] == (dr.Integration(OTHER, B, 1, 1, SINCE),)
        assert await store.replacements_of([OLD]) == {OLD: CITIZEN}
        await store.apply([(dr.Integration(CITIZEN, A, 1, 1, SINCE), True),
                           (dr.Replacement(OLD, CITIZEN), True)])
        assert await store.integrations_of([CITIZEN]) == {
            CITIZEN: (dr.Integration(CITIZEN, B, 2, 1, SINCE),)}
        assert await store.replacements_of([OLD]) == {}
        # Many subjects at once read the same as one by one.
        subjects = [f"8507300{i:02d}" for i in range(12)]
        await store.apply([(dr.Integration(s, inst, cap, 1, SINCE), False)
                           for i, s in enumerate(subjects) for inst, cap in ((A, 1), (B, i))])
        many = await store.integrations_of([*subjects, OLD])
        assert sorted(many) == subjects and all(len(v) == 2 for v in many.values())
        for s in subjects[::5]:
            store.integration_cache.clear()
            assert sorted((await store.integrations_of([s]))[s]) == sorted(many[s])


async def test_every_replacement_and_the_cache_warm_up_after_reopening(
        backend: HubBackend, tmp_path: Path) -> None:
    held = {CITIZEN: [dr.Integration(CITIZEN, A, c, 1, SINCE) for c in range(1, 4)],
            OTHER: [dr.Integration(OTHER, B, 1, 1, SINCE)]}
    async with opened(backend.directory(tmp_path)) as store:
        # A chain: OLD -> OTHER -> CITIZEN.
        await store.apply([(dr.Replacement(OLD, OTHER), False), (dr.Replacement(OTHER, CITIZEN), False)])
        await store.apply([(i, False) for v in held.values() for i in v])
    async with opened(backend.directory(tmp_path)) as again:
        assert await again.replacements_of([OLD, CITIZEN]) == {OLD: OTHER, OTHER: CITIZEN}
        await again.apply([(dr.Replacement(OTHER, CITIZEN), True)])
        assert await again.replacements_of([OLD]) == {OLD: OTHER}
        assert await again.warm_cache() == 2
        cache = again.integration_cache
        assert {s: sorted(cache.lookup_one(s)) for s in held} == held
