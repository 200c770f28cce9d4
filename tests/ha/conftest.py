"""The hub tier's fixtures: a PostgreSQL server (or a Patroni cluster of two,
tests/ha/patroni.py) that also listens on a namespace's link, and a
:class:`~tests.ha.tier.HubTier` of two replicas and three nodes on it (tests/ha/tier.py)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.testing_postgres import PostgresServer
from tests.ha.netns import Namespace, namespaces_available
from tests.ha.patroni import PatroniCluster
from tests.ha.tier import DB_LINK, HubTier


@pytest.fixture
def ns() -> Iterator[Namespace]:
    why_not = namespaces_available()
    if why_not is not None:
        pytest.fail(f"the hub tier tests need network namespaces: {why_not}")
    with Namespace("ha") as namespace:
        yield namespace


@pytest.fixture
def tier(request: pytest.FixtureRequest, ns: Namespace, tmp_path: Path) -> Iterator[HubTier]:
    """Started; ``indirect`` parametrization passes HubTier's options (institutions, seed,
    node_overrides, ...)."""
    with PostgresServer(also_listen=(f"{ns.link[DB_LINK].host_ip}/24",)) as server:
        yield from _started_tier(request, ns, tmp_path, server)


@pytest.fixture
def patroni_tier(request: pytest.FixtureRequest, ns: Namespace, tmp_path: Path
                 ) -> Iterator[HubTier]:
    """As ``tier``, on a Patroni cluster (``tier.server``): the replicas' DSN lists both
    members with ``target_session_attrs=read-write``."""
    with PatroniCluster(also_listen=(f"{ns.link[DB_LINK].host_ip}/24",)) as cluster:
        yield from _started_tier(request, ns, tmp_path, cluster)


def _started_tier(request: pytest.FixtureRequest, ns: Namespace, tmp_path: Path,
                  server: PostgresServer | PatroniCluster) -> Iterator[HubTier]:
    options = getattr(request, "param", {})
    with server.database(tmp_path) as database:
        tier = HubTier.make(tmp_path / "tier", server, database, ns, **options)
        try:
            tier.start()
            yield tier
        finally:
            tier.stop_all()


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """Random points, reproducible: the seed is in the test's output when it fails."""
    seed = random.randrange(1 << 30)
    print(f"random seed {seed} for {request.node.name}")
    return random.Random(seed)
