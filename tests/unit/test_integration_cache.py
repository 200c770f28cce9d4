"""The in-memory cache of integrations by subject never serves a stale answer (real SQLite)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from node.core.directory import Integration, Period, Replacement
from node.store import integrations
from node.store.directory_store import DirectoryStore
from node.store.fragment_store import FragmentStore
from node.store.integrations import SubjectCache
from tests.conftest import opened

A, B = "0403019261", "0428759497"
CITIZEN, OTHER, OLD = "85073003328", "17073003384", "00010100105"
SINCE = Period(date(2020, 1, 1))


def test_lru_is_bounded_and_keeps_the_recently_used() -> None:
    cache: SubjectCache[str] = SubjectCache(2)
    cache.fill(cache.generation, {"a": "1", "b": "2"})
    assert cache.lookup(["a"]) == ({"a": "1"}, [])  # a is now the most recent
    cache.fill(cache.generation, {"c": "3"})
    assert cache.lookup(["a", "b", "c"]) == ({"a": "1", "c": "3"}, ["b"])
    assert len(cache) == 2


def test_a_read_that_raced_a_write_does_not_fill() -> None:
    cache: SubjectCache[str] = SubjectCache(10)
    started = cache.generation
    cache.forget(["a"])  # a write committed while the read ran
    cache.fill(started, {"a": "old"})
    assert cache.lookup(["a"]) == ({}, ["a"])


async def test_node_fragment_reads_deltas_and_snapshots_through_the_cache(tmp_path: Path) -> None:
    async with opened(FragmentStore(tmp_path / "fragment.sqlite")) as store:
        mine = Integration(CITIZEN, A, 1, 1, SINCE)
        await store.apply_snapshot(1, [mine], recipient=A)
        assert (await store.view([CITIZEN, OTHER])).integrations == {CITIZEN: (mine,)}
        await store.apply_delta(1, 3, [(mine, True), (Integration(OTHER, A, 2, 1, SINCE), False)])
        view = await store.view([CITIZEN, OTHER])
        assert view.integrations == {OTHER: (Integration(OTHER, A, 2, 1, SINCE),)}
        await store.apply_snapshot(4, [mine], recipient=A)  # a resync replaces everything
        assert (await store.view([CITIZEN, OTHER])).integrations == {CITIZEN: (mine,)}


async def test_node_fragment_reads_integrations_only_for_services_that_use_them(
        tmp_path: Path) -> None:
    from node.core.directory import Service

    async with opened(FragmentStore(tmp_path / "fragment.sqlite")) as store:
        mine = Integration(CITIZEN, A, 1, 1, SINCE)
        await store.apply_snapshot(1, [
            Service("plain", 1, "declaration", "citizen", "explicit"),
            Service("checked", 1, "consultation", "citizen", "fixed", provider=B,
                    integration_required=True),
            mine, Replacement(OLD, CITIZEN)], recipient=A)
        plain = await store.view_for([(OLD, "plain", 1), (CITIZEN, "plain", 0)])
        assert plain.integrations == {} and plain.replaced[OLD] == CITIZEN
        checked = await store.view_for([(OLD, "checked", 1), (OTHER, "plain", 1)])
        assert checked.integrations == {CITIZEN: (mine,)}


async def test_node_fragment_checks_its_own_integrations_from_memory(tmp_path: Path) -> None:
    """A snapshot fills the cache with what it brings; a restart preloads it from SQLite."""
    import asyncio

    mine = [Integration(CITIZEN, A, 1, 1, SINCE), Integration(CITIZEN, A, 2, 1, SINCE),
            Integration(OTHER, A, 1, 1, SINCE)]
    async with opened(FragmentStore(tmp_path / "fragment.sqlite")) as store:
        await store.apply_snapshot(1, mine, recipient=A)
        found, missing = store.integration_cache.lookup([CITIZEN, OTHER])
        assert missing == [] and sorted(found[CITIZEN]) == sorted(mine[:2])
    async with opened(FragmentStore(tmp_path / "fragment.sqlite")) as again:
        for _ in range(100):
            if len(again.integration_cache) == 2:
                break
            await asyncio.sleep(0.01)
        found, missing = again.integration_cache.lookup([CITIZEN, OTHER])
        assert missing == [] and found[OTHER] == (mine[2],)
        assert (await again.view([CITIZEN])).integrations[CITIZEN] == found[CITIZEN]


async def test_preload_fills_whole_subjects_across_chunk_ends(tmp_path: Path) -> None:
    from node.store.integrations import preload, read_integrations

    async with opened(DirectoryStore(tmp_path / "directory.sqlite")) as store:
        held = {CITIZEN: [Integration(CITIZEN, A, c, 1, SINCE) for c in range(1, 4)],
                OTHER: [Integration(OTHER, B, 1, 1, SINCE)],
                OLD: [Integration(OLD, A, c, 1, SINCE) for c in range(1, 7)]}  # fills a chunk
        await store.apply([(i, False) for v in held.values() for i in v])
        cache: SubjectCache[tuple[Integration, ...]] = SubjectCache(100)
        loaded = await preload(store._db, cache, rows=4)
        assert loaded == 2 and len(cache) == 2  # OLD's 6 rows never fit a chunk of 4
        for subject in (CITIZEN, OTHER):
            assert sorted(cache.lookup_one(subject) or ()) == sorted(held[subject])
        assert cache.lookup_one(OLD) is None
        assert sorted((await read_integrations(store._db, [OLD], cache))[OLD]) == sorted(held[OLD])
        # A full cache stops the preload.
        small: SubjectCache[tuple[Integration, ...]] = SubjectCache(1)
        await preload(store._db, small, rows=4)
        assert len(small) == 1


async def test_the_hub_reads_integrations_only_for_services_that_use_them(tmp_path: Path) -> None:
    """A batch for an explicit-routing service reads no integrations; one for an
    integration-checked service reads them, under the subject's current number."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from node.core.directory import Service
    from node.hub.directory import Directory

    async with opened(Directory(DirectoryStore(tmp_path / "directory.sqlite"),
                                Ed25519PrivateKey.generate(), preload=False)) as directory:
        await directory.apply([
            (Service("plain", 1, "declaration", "citizen", "explicit"), False),
            (Service("checked", 1, "consultation", "citizen", "fixed", provider=B,
                     integration_required=True), False),
            (Integration(CITIZEN, A, 1, 1, SINCE), False),
            (Replacement(OLD, CITIZEN), False),
        ])
        plain = await directory.view_for([(OLD, "plain", 1), (OTHER, "plain", 0)])
        assert plain.replaced == {OLD: CITIZEN}
        assert plain.integrations == {}
        checked = await directory.view_for([(OLD, "checked", 0), (OTHER, "plain", 1)])
        assert checked.integrations == {CITIZEN: (Integration(CITIZEN, A, 1, 1, SINCE),)}


async def test_few_and_many_subjects_read_the_same_integrations(tmp_path: Path) -> None:
    """The quick read (a few subjects, on the calling thread) and the reader thread's read
    (more than QUICK_SUBJECTS) give the same answers for the same rows."""
    async with opened(DirectoryStore(tmp_path / "directory.sqlite")) as store:
        subjects = [f"8507300{i:02d}" for i in range(integrations.QUICK_SUBJECTS + 3)]
        await store.apply([(Integration(s, inst, cap, 1, SINCE), False)
                           for i, s in enumerate(subjects) for inst, cap in ((A, 1), (B, i))])
        many = await store.integrations_of(subjects + [OTHER])
        assert sorted(many) == sorted(subjects) and all(len(v) == 2 for v in many.values())
        store.integration_cache.clear()
        few: dict[str, tuple[Integration, ...]] = {}
        for i in range(0, len(subjects), 2):
            few.update(await store.integrations_of(subjects[i:i + 2] + [OTHER]))
        assert {s: sorted(v) for s, v in few.items()} == {s: sorted(v) for s, v in many.items()}
