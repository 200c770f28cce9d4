"""Hosts of the deployed network lose power under load (issue #16's tests 2-4).

Each test runs steady traffic between the node hosts in both directions (tests/deploy/tier_load.py:
the applications run here and reach each node's local API through its container's root), pulls
the plug on one host (``Lab.power_off``: link down, every process killed at once, disk kept),
waits until the hub accepts envelopes of every node again, keeps the load a while, then drains
and checks the ledger: every envelope acknowledged to an application was fetched exactly once,
in order per sender, and accepted by the hub. ``crossroads audit verify`` passes on a hub host.
The figures (envelopes/s before, during and after; the longest time without hub acceptance and
without deliveries) are printed and written to ``failover-figures.json`` in the artifacts.

The tests never assert how long anything took; they wait for it within generous limits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import ENTERPRISE_A, ENTERPRISE_B
from tests.deploy.harness import Lab
from tests.deploy.tier_load import DeployedNodes, Timeline, start_traffic, stop_traffic

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]

CROSSROADS = "/opt/crossroads/venv/bin/crossroads"
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


def audit_verifies(lab: Lab, hub_host: str) -> str:
    r = lab.ssh(hub_host, f"runuser -u crossroads -- {CROSSROADS} audit verify "
                          "--config /etc/crossroads/hub.toml", check=False, timeout=300)  # fmt: skip
    assert r.returncode == 0, f"audit verify on {hub_host}: {r.stdout}{r.stderr}"
    return r.stdout


def power_cut_under_load(
    lab: Lab, nodes: DeployedNodes, victim: str, round_no: int,
    restore: Callable[[], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """See the module's docstring; ``restore`` runs after the power cut (e.g. powers the host
    on again when nothing can take over its work). The figures."""
    traffic = start_traffic(nodes, first=round_no * ROUND)
    timeline = Timeline(traffic, nodes).start()
    drained = False
    try:
        time.sleep(WARMUP_S)
        timeline.mark("before")
        time.sleep(BEFORE_S)
        off = timeline.mark("failover")
        lab.power_off(victim)
        if restore is not None:
            restore()
        served = timeline.all_served(off + 1.0, RECOVER_TIMEOUT_S)
        timeline.mark("after", at=served)
        time.sleep(AFTER_S)
        traffic.stop_sending()
        timeline.mark("drain")
        traffic.drain(DRAIN_TIMEOUT_S, lambda: f"last samples: {timeline.samples[-3:]}")
        drained = True
    finally:
        if not drained:
            stop_traffic(traffic)
        timeline.stop()
    assert traffic.problems() == []
    assert traffic.refused() == {}, "the hub refused acknowledged envelopes"
    figures = timeline.figures()
    figures.update(
        victim=victim,
        acknowledged=traffic.sent_count(),
        fetched=traffic.fetched_count(),
        lost=0, doubled=0,  # asserted above: problems() lists either
        without_hub_acceptance_s=round(timeline.without_hub_ack(off, served + AFTER_S), 2),
        without_delivery_s=round(traffic.longest_gap(off, served + AFTER_S), 2),
    )  # fmt: skip
    during = [p for p in figures["phases"] if p["phase"] == "failover"]
    assert during and during[0]["acknowledged_per_s"] > 0, "no application was acknowledged"
    return figures


# ---- the single hub of the first lab (test_deploy.py's): its host loses power ------------------


def test_hub_host_power_cut_on_sqlite_loses_and_doubles_nothing(lab: Lab, artifacts: Path) -> None:
    """One hub, nothing to fail over to: the nodes keep acknowledging their applications and
    queue; the hub host boots again, its service starts by itself, and everything queued is
    delivered exactly once."""
    if lab.ssh("hub", "systemctl is-active crossroads-hub", check=False).returncode != 0:
        pytest.fail("the first lab is not deployed (see test_deploy.py)", pytrace=False)
    nodes = DeployedNodes(lab, {ENTERPRISE_A: "node-a", ENTERPRISE_B: "node-b"})

    def restore() -> None:
        time.sleep(5)  # the nodes notice and queue
        lab.power_on("hub")

    figures = power_cut_under_load(lab, nodes, "hub", round_no=1, restore=restore)
    audit_verifies(lab, "hub")
    record(artifacts, "single_hub_power_cut", figures)
