"""Hosts of the deployed network lose power under load (issue #16's tests 2-4).

Each test runs steady traffic between the node hosts in both directions (tests/deploy/tier_load.py:
the applications run here and reach each node's local API through its container's root), pulls
the plug on one host (``Lab.power_off``: link down, every process killed at once, disk kept),
waits until the hub accepts envelopes of every node again, keeps the load a while, then drains
and checks the ledger: every envelope acknowledged to an application was fetched exactly once,
in order per sender, and accepted by the hub. ``crossroads audit verify`` passes on a hub host.
The figures (envelopes/s before, during and after; the longest time without hub acceptance and
without deliveries; what broke the ledger, if anything) are printed and written to
``failover-figures.json`` in the artifacts before the test asserts.

The tests never assert how long anything took; they wait for it within generous limits.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import (
    CROSSROADS,
    TIER_DB_HOSTS,
    TIER_ENTERPRISES,
    TIER_ETCD_HOSTS,
    TIER_HUB_HOSTS,
    TIER_NODE_HOSTS,
    VENV_PYTHON,
)
from tests.deploy.harness import Lab, PlaybookRun
from tests.deploy.test_tier_deploy import patroni_cluster
from tests.deploy.tier_load import (
    DeployedNodes,
    Timeline,
    counter,
    flush_inboxes,
    start_traffic,
    stop_traffic,
)
from tests.ha.tier import Traffic

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]

PROBE = Path(__file__).parent / "probe_hub.py"
#: Envelope numbers of round k start at k * ROUND (a node takes a repeated number from the same
#: sender for a resubmission).
ROUND = 1_000_000
WARMUP_S, BEFORE_S, AFTER_S = 3.0, 8.0, 8.0
#: Generous: the machine has 2 cores for every host of the lab.
RECOVER_TIMEOUT_S, DRAIN_TIMEOUT_S = 180.0, 180.0

FIGURES: dict[str, Any] = {}


def record(artifacts: Path, name: str, figures: dict[str, Any]) -> None:
    FIGURES[name] = figures
    (artifacts / "failover-figures.json").write_text(json.dumps(FIGURES, indent=1))
    print(f"\n[{name}] " + json.dumps(figures, indent=1))


@contextlib.contextmanager
def journals_on_failure(lab: Lab, artifacts: Path, name: str) -> Iterator[None]:
    """On a failure, keep every running host's journal now (the lab's own copy, at the end of
    the session, has only the last boot of each host: later tests power some off and on)."""
    try:
        yield
    except BaseException:
        lab.save_journals(artifacts / f"failed-{name}")
        raise


def audit_verifies(lab: Lab, hub_host: str) -> str:
    r = lab.ssh(hub_host, f"runuser -u crossroads -- {CROSSROADS} audit verify "
                          "--config /etc/crossroads/hub.toml", check=False, timeout=300)  # fmt: skip
    assert r.returncode == 0, f"audit verify on {hub_host}: {r.stdout}{r.stderr}"
    return r.stdout


def under_load(nodes: DeployedNodes, round_no: int,
               event: Callable[[Timeline, Traffic], dict[str, Any]] | None = None,
               ) -> dict[str, Any]:  # fmt: skip
    """A round of traffic (see the module's docstring): warm-up, a phase "before", ``event``
    (which marks its own phases and returns its figures), then drain and check the ledger.
    The figures, with ``failures``: what broke "every acknowledged envelope fetched exactly
    once, in order per sender, accepted" (empty: nothing). A test records them, then asserts."""
    flushed = flush_inboxes(nodes)  # an earlier, failed round's stragglers: not this round's
    traffic = start_traffic(nodes, first=round_no * ROUND)
    timeline = Timeline(traffic, nodes).start()
    figures: dict[str, Any] = {}
    failures: list[str] = []
    drained = False
    try:
        time.sleep(WARMUP_S)
        timeline.mark("before")
        time.sleep(BEFORE_S)
        if event is not None:
            figures = event(timeline, traffic)
        traffic.stop_sending()
        timeline.mark("drain")
        try:
            traffic.drain(DRAIN_TIMEOUT_S, lambda: f"last samples: {timeline.samples[-3:]}")
        except AssertionError as exc:
            failures.append(str(exc))
        drained = True
    finally:
        if not drained:
            stop_traffic(traffic)
        timeline.stop()
    if any(label == "failover" for label, _ in timeline.marks):
        # From the cut to the end of sending (acceptance) and of the drain (deliveries).
        off = timeline.when("failover")
        figures["without_hub_acceptance_s"] = round(
            timeline.without_hub_ack(off, timeline.when("drain")), 2)
        figures["without_delivery_s"] = round(traffic.longest_gap(off, timeline.when("stop")), 2)
    failures += traffic.problems()
    refused = traffic.refused()
    if refused:
        failures.append(f"the hub refused acknowledged envelopes: {refused}")
    return {**timeline.figures(), **figures, "acknowledged": traffic.sent_count(),
            "fetched": traffic.fetched_count(), "flushed_before": flushed,
            "failures": failures[:10]}


def power_cut(lab: Lab, victim: str) -> Callable[[Timeline, Traffic], dict[str, Any]]:
    """The event of :func:`under_load` that powers ``victim`` off, waits until the hub accepts
    envelopes of every node again, and keeps the load for AFTER_S."""

    def event(timeline: Timeline, _traffic: Traffic) -> dict[str, Any]:
        off = timeline.mark("failover")
        lab.power_off(victim)
        served = timeline.all_served(off + 1.0, RECOVER_TIMEOUT_S)
        timeline.mark("after", at=served)
        time.sleep(AFTER_S)
        assert timeline.rate(counter("acknowledged"), off, served) > 0, (
            "no application was acknowledged while the host was down")
        return {"victim": victim}

    return event


# ---- the hub tier (tier_lab, deployed by test_tier_deploy.py) ---------------------------------

_failed: dict[str, str] = {}  # what -> host: powered off by a test, for test_failed_hosts_rejoin


def tier_nodes(lab: Lab) -> DeployedNodes:
    return DeployedNodes(lab, {TIER_ENTERPRISES[h]: h for h in TIER_NODE_HOSTS})


def require_tier(run: PlaybookRun) -> None:
    if run.returncode != 0:
        pytest.fail("site.yml did not deploy the tier (see test_tier_deploy.py)", pytrace=False)


def assert_hub_serves(lab: Lab, hub: str, via: str = TIER_NODE_HOSTS[0]) -> None:
    """The hub's service is up and answers a node (Register with the node's certificate)."""
    lab.ssh(hub, "systemctl is-active --quiet crossroads-hub || "
                 "(sleep 5; systemctl is-active crossroads-hub)", timeout=60)
    lab.ssh(via, f"cat > /root/probe_hub.py <<'EOF'\n{PROBE.read_text()}\nEOF")
    tls = "/etc/crossroads/tls"
    deadline = time.monotonic() + RECOVER_TIMEOUT_S
    while True:
        r = lab.ssh(via, f"cd /tmp && {VENV_PYTHON} /root/probe_hub.py {lab.ip(hub)}:7443 "
                         f"hub.demo.crossroads {tls}/ca.crt {tls}/node.crt {tls}/node.key "
                         f"{lab.ip(via)}:7444", check=False, timeout=60)  # fmt: skip
        if r.returncode == 0:
            return
        assert time.monotonic() < deadline, f"{hub} does not serve {via}: {r.stdout}{r.stderr}"
        time.sleep(2)


def patroni_members(lab: Lab, via: str) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in patroni_cluster(lab, via)["members"]}


def the_leader(lab: Lab) -> str:
    for via in TIER_DB_HOSTS:
        if via in lab.powered_off:
            continue
        leaders = [n for n, m in patroni_members(lab, via).items() if m["role"] == "leader"]
        if leaders:
            return leaders[0]
    raise AssertionError("Patroni reports no leader")


def test_database_primary_power_cut_under_load(
    tier_deployed: PlaybookRun, tier_lab: Lab, artifacts: Path
) -> None:
    """Issue #16, test 2: the PostgreSQL primary's host loses power; Patroni promotes the
    synchronous standby, the replicas reconnect by themselves (their DSN lists both hosts,
    target_session_attrs=read-write), deliveries resume."""
    require_tier(tier_deployed)
    primary = the_leader(tier_lab)
    (standby,) = (h for h in TIER_DB_HOSTS if h != primary)
    _failed["database"] = primary
    with journals_on_failure(tier_lab, artifacts, "database"):
        figures = under_load(tier_nodes(tier_lab), 2, power_cut(tier_lab, primary))
        figures.update(old_primary=primary, promoted=standby)
        record(artifacts, "database_primary_power_cut", figures)
        assert figures["failures"] == []
        members = patroni_members(tier_lab, standby)
        assert members.get(standby, {}).get("role") == "leader", members
    audit_verifies(tier_lab, TIER_HUB_HOSTS[0])


def test_hub_host_power_cut_under_load(
    tier_deployed: PlaybookRun, tier_lab: Lab, artifacts: Path
) -> None:
    """Issue #16, test 3: a hub host loses power; the nodes that preferred it fail over to the
    other replica, which takes over its destinations. The victim is the replica host without an
    etcd member: with the old primary's member still down, losing a second of three would end
    etcd's quorum, and Patroni would demote the primary (a third failure, not this test's)."""
    require_tier(tier_deployed)
    victim = next(h for h in TIER_HUB_HOSTS if h not in TIER_ETCD_HOSTS)
    survivor = next(h for h in TIER_HUB_HOSTS if h != victim)
    _failed["hub"] = victim
    with journals_on_failure(tier_lab, artifacts, "hub"):
        figures = under_load(tier_nodes(tier_lab), 3, power_cut(tier_lab, victim))
        record(artifacts, "hub_host_power_cut", figures)
        assert figures["failures"] == []
    audit_verifies(tier_lab, survivor)


def test_failed_hosts_rejoin(tier_deployed: PlaybookRun, tier_lab: Lab, artifacts: Path) -> None:
    """Issue #16, test 4: the hosts powered off above boot again and rejoin with no manual
    step: Patroni rewinds the old primary (pg_rewind) and makes it a standby that streams from
    the new one; the hub host's service starts and answers the nodes; a last round flows."""
    require_tier(tier_deployed)
    assert _failed, "no host was powered off (the tests above did not run)"
    t0 = time.monotonic()
    for host in _failed.values():
        tier_lab.power_on(host)
    old_primary = _failed.get("database")
    if old_primary is not None:
        leader = the_leader(tier_lab)
        deadline = time.monotonic() + RECOVER_TIMEOUT_S
        while True:  # a synchronous standby again, on the new primary's timeline
            members = patroni_members(tier_lab, leader)
            member = members.get(old_primary, {})
            if (member.get("role") == "sync_standby"
                    and member.get("state") in ("running", "streaming")
                    and member.get("timeline") == members[leader].get("timeline")):
                break
            assert time.monotonic() < deadline, f"{old_primary} did not rejoin: {members}"
            time.sleep(1)
    rejoined_s = time.monotonic() - t0
    hub = _failed.get("hub")
    if hub is not None:
        assert_hub_serves(tier_lab, hub)
    figures = under_load(tier_nodes(tier_lab), 4)
    figures.update(rejoined=sorted(_failed.values()), rejoin_s=round(rejoined_s, 1))
    record(artifacts, "failed_hosts_rejoin", figures)
    assert figures["failures"] == []
    audit_verifies(tier_lab, TIER_HUB_HOSTS[0])
