"""The hub tier deployed with Ansible on simulated hosts (issue #16, test 1).

etcd on db-1, db-2 and hub-1; PostgreSQL under Patroni on db-1 and db-2 (synchronous standby);
two hub replicas on PostgreSQL (hub-1 is also the CA); three nodes listing both replicas. The
secrets come from a vault-encrypted file. In file order: an inventory without its secrets is
refused before anything changes; site.yml deploys the tier; Patroni reports one leader and a
synchronous standby; envelopes flow between the nodes through both replicas; the secrets' files
are 0600 and no secret appears in Ansible's output; a second run changes nothing; the CRL
refresh timer on hub-1 (the CA host) puts a new CRL in force at its hub by a reload.
test_tier_failover.py builds on the deployed tier (fixture ``tier_deployed``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import (
    TIER_DB_HOSTS,
    TIER_ENTERPRISES,
    TIER_ETCD_HOSTS,
    TIER_HUB_HOSTS,
    TIER_NODE_HOSTS,
    Ansible,
    tier_inventory,
)
from tests.deploy.harness import Lab, PlaybookRun
from tests.deploy.test_deploy import _crl_number, drain_inbox, main_pid, metric, send

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1200)]

PATRONI_CLUSTER = (
    "python3 -c \"import urllib.request; print(urllib.request.urlopen("
    "'http://{ip}:8008/cluster', timeout=5).read().decode())\""
)


def _explain(run: PlaybookRun) -> str:
    return f"ansible-playbook rc={run.returncode}, recap={run.recap}\n{run.output[-6000:]}"


def _require(run: PlaybookRun) -> None:
    if run.returncode != 0:
        pytest.fail("site.yml did not deploy the tier (see test_tier_site_deploys)", pytrace=False)


def patroni_cluster(lab: Lab, via: str = TIER_DB_HOSTS[0]) -> dict[str, Any]:
    """Patroni's GET /cluster, asked on one database host."""
    return json.loads(lab.ssh(via, PATRONI_CLUSTER.format(ip=lab.ip(via)), timeout=30).stdout)


def test_tier_preflight_refuses_missing_secrets(tier_ansible: Ansible, tier_lab: Lab) -> None:
    run = tier_ansible.playbook("site.yml", tier_inventory())  # no vault file
    assert run.returncode != 0, _explain(run)
    assert "crossroads_postgresql_superuser_password must be set" in run.output, _explain(run)
    assert "crossroads_postgresql_hub_password must be set" in run.output, _explain(run)
    assert run.changed == 0, _explain(run)
    r = tier_lab.ssh("db-1", "test ! -e /etc/patroni/config.yml && systemctl is-active etcd",
                     check=False)  # fmt: skip
    assert r.stdout.strip() == "inactive", f"db-1 was changed by a refused run: {r.stdout}"


def test_tier_site_deploys(tier_deployed: PlaybookRun, tier_lab: Lab) -> None:
    run = tier_deployed
    assert run.returncode == 0 and run.failed == 0, _explain(run)
    assert set(run.recap) == {h.name for h in tier_lab.hosts}, run.recap
    units = {h: ["etcd"] for h in TIER_ETCD_HOSTS}
    for h in TIER_DB_HOSTS:
        units[h] = [*units.get(h, []), "patroni"]
    for h in TIER_HUB_HOSTS:
        units[h] = [*units.get(h, []), "crossroads-hub"]
    for h in TIER_NODE_HOSTS:
        units[h] = ["crossroads-node"]
    for host, names in units.items():
        r = tier_lab.ssh(host, "systemctl is-active " + " ".join(names), check=False)
        assert r.stdout.split() == ["active"] * len(names), f"{host} {names}: {r.stdout}"
    # Debian's own cluster never runs beside Patroni's.
    for host in TIER_DB_HOSTS:
        r = tier_lab.ssh(host, "systemctl is-enabled postgresql.service", check=False)
        assert r.stdout.strip() == "masked", f"{host}: {r.stdout}"
    # Every replica lists every database host and finds the primary by itself.
    for host in TIER_HUB_HOSTS:
        toml = tier_lab.ssh(host, "cat /etc/crossroads/hub.toml").stdout
        dbs = ",".join(f"{tier_lab.ip(h)}:5432" for h in TIER_DB_HOSTS)
        assert f"@{dbs}/crossroads?target_session_attrs=read-write" in toml, toml
        assert f'replica_id = "{host}"' in toml, toml


def test_patroni_reports_a_leader_and_a_sync_standby(tier_deployed: PlaybookRun,
                                                      tier_lab: Lab) -> None:  # fmt: skip
    _require(tier_deployed)
    members = patroni_cluster(tier_lab)["members"]
    roles = sorted(m["role"] for m in members)
    assert roles == ["leader", "sync_standby"], members
    assert {m["name"] for m in members} == set(TIER_DB_HOSTS), members
    assert all(m["state"] in ("running", "streaming") for m in members), members
    # Asked on the other member, the same answer (one cluster, one leader).
    other = patroni_cluster(tier_lab, TIER_DB_HOSTS[1])["members"]
    assert sorted((m["name"], m["role"]) for m in other) == sorted(
        (m["name"], m["role"]) for m in members), other


def test_envelopes_flow_through_the_tier(tier_deployed: PlaybookRun, tier_lab: Lab) -> None:
    _require(tier_deployed)
    # node-a and node-c prefer hub-1, node-b hub-2: deliveries cross the replicas both ways.
    pairs = list(zip(TIER_NODE_HOSTS, TIER_NODE_HOSTS[1:] + TIER_NODE_HOSTS[:1], strict=True))
    for src, dst in pairs:
        outcomes = send(tier_lab, src, TIER_ENTERPRISES[dst], 3, f"tier-{src}", wait=True)
        assert [o["reason"] for o in outcomes] == ["ACCEPTED"] * 3, outcomes
    for src, dst in pairs:
        received = drain_inbox(tier_lab, dst, 3, timeout=90)
        assert [e["payload"] for e in received] == [f"tier-{src}"] * 3, (dst, received)
        assert {e["sender"] for e in received} == {TIER_ENTERPRISES[src]}, received


def test_secrets_are_private_and_never_logged(
    tier_deployed: PlaybookRun, tier_lab: Lab, tier_secrets: tuple[dict[str, str], list[str]],
    artifacts: Path,
) -> None:  # fmt: skip
    _require(tier_deployed)
    for host in TIER_DB_HOSTS:
        r = tier_lab.ssh(host, "stat -c '%a %U' /etc/patroni/config.yml")
        assert r.stdout.strip() == "600 postgres", f"{host}: {r.stdout}"
    keys = set()
    for host in TIER_HUB_HOSTS:
        r = tier_lab.ssh(host, "stat -c '%a %U' /etc/crossroads/pg-password "
                               "/var/lib/crossroads/hub/directory-signing.key; "
                               "sha256sum < /var/lib/crossroads/hub/directory-signing.key")
        lines = r.stdout.split("\n")
        assert lines[:2] == ["600 crossroads", "600 crossroads"], f"{host}: {r.stdout}"
        keys.add(lines[2])
    assert len(keys) == 1, f"the replicas sign with different keys: {keys}"
    values, _ = tier_secrets
    logs = sorted(artifacts.glob("ansible-tier-*.log"))
    assert logs, "no Ansible output kept"
    for log in logs:
        text = log.read_text()
        for name, value in values.items():
            assert value not in text, f"{name} appears in {log.name}"


def test_tier_second_run_changes_nothing(
    tier_deployed: PlaybookRun, tier_ansible: Ansible,
    tier_secrets: tuple[dict[str, str], list[str]],
) -> None:  # fmt: skip
    _require(tier_deployed)
    run = tier_ansible.playbook("site.yml", tier_inventory(), *tier_secrets[1])
    assert run.returncode == 0, _explain(run)
    changed = {h: r.changed for h, r in run.recap.items() if r.changed}
    assert changed == {}, _explain(run)
    for name, value in tier_secrets[0].items():
        assert value not in run.output, f"{name} appears in Ansible's output"


def test_crl_refresh_timer_reloads_the_hub_on_the_ca_host(
    tier_deployed: PlaybookRun, tier_lab: Lab
) -> None:
    """hub-1 is the CA host: the timer's service writes a new CRL, installs it as the hub's
    and reloads the hub (same process), whose metrics then report the new CRL."""
    _require(tier_deployed)
    host = "hub-1"
    r = tier_lab.ssh(host, "systemctl list-timers --all --no-legend crossroads-crl-refresh.timer")
    assert "crossroads-crl-refresh.timer" in r.stdout, r.stdout
    hub_crl = "/etc/crossroads/tls/crl.pem"
    number = _crl_number(tier_lab, host, hub_crl)
    pid = main_pid(tier_lab, host, "hub")
    tier_lab.ssh(host, "systemctl start crossroads-crl-refresh.service")
    assert _crl_number(tier_lab, host, hub_crl) == number + 1
    assert _crl_number(tier_lab, host, "/var/lib/crossroads-ca/crl.pem") == number + 1
    assert metric(tier_lab, host, 9464, "crossroads_hub_crl_number") == number + 1
    assert main_pid(tier_lab, host, "hub") == pid, "the hub was restarted, not reloaded"
