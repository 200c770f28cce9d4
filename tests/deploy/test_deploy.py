"""The Ansible deployment (deploy/ansible) on simulated hosts: CA, hub, two institution nodes.

The tests run in file order and build on each other, like an operator would:
the tags select the phases, bad inventories are refused before anything changes, `--check`
on the new hosts changes nothing and fails nothing, site.yml deploys the network, envelopes
flow from node A to node B through the hub, a second run, `--check` and `--tags configure`
change nothing, the probes and metrics answer (over HTTPS from another host, with a password
at the hub and a client certificate at the nodes), a new log level, and new metrics
certificates and users, are applied by a reload, the CA host's CRL refresh timer renews the
CRL, rotate_certs.yml
replaces every certificate without losing envelopes and the old ones are refused afterwards,
and a rebuilt wheel with an unchanged version is reinstalled.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from tests.deploy.conftest import (
    ANSIBLE_DIR,
    CROSSROADS,
    ENTERPRISE_A,
    ENTERPRISE_B,
    HUB_IP,
    REPO,
    VENV_PYTHON,
    Ansible,
    MetricsPki,
    base_inventory,
)
from tests.deploy.harness import Lab, PlaybookRun

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]

LOCAL_API = "unix:/run/crossroads/node.sock"
TLS = "/etc/crossroads/tls"
NODES = ("node-a", "node-b")
ALL_HOSTS = ("ca", "hub", *NODES)
SERVICES = (("hub", "hub"), ("node-a", "node"), ("node-b", "node"))
ENTERPRISE_C = "0566988259"
ENTERPRISE_D = "0800123405"

_state: dict[str, Any] = {}


def _flat(text: str) -> str:
    return " ".join(text.split())


def _explain(run: PlaybookRun) -> str:
    return f"ansible-playbook rc={run.returncode}, recap={run.recap}\n{run.output[-6000:]}"


def _require_deployed() -> None:
    if not _state.get("deployed"):
        pytest.fail("site.yml did not deploy the network (see test_site_deploys)", pytrace=False)


def send(lab: Lab, host: str, to: str, count: int, payload: str, wait: bool = False) -> list[dict]:
    cmd = (f"{CROSSROADS} send --json --local-api {LOCAL_API} --service demo.message --to {to} "
           f"--subject-citizen 85073003328 --count {count} --payload {payload}"
           + (" --wait" if wait else ""))  # fmt: skip
    r = lab.ssh(host, cmd, check=False, timeout=60)
    assert r.returncode == 0, f"send from {host} failed ({r.returncode}): {r.stdout}{r.stderr}"
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def drain_inbox(lab: Lab, host: str, expected: int, timeout: float = 60) -> list[dict]:
    """Fetch (and acknowledge) envelopes on `host` until `expected` arrived or time is up."""
    received: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        r = lab.ssh(
            host, f"{CROSSROADS} inbox --json --local-api {LOCAL_API} --max 500 --wait-ms 2000 --ack",
            check=False, timeout=60,
        )  # fmt: skip
        received += [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    for envelope in received:  # --json prints bytes as base64 (docs/OPERATIONS.md)
        envelope["payload"] = base64.b64decode(envelope["payload"]).decode()
    return received


def http_get(lab: Lab, host: str, url: str) -> tuple[int, str]:
    """GET `url` on `host` (the status, and the body)."""
    r = lab.ssh(host, f"{VENV_PYTHON} -c \"import sys, urllib.request, urllib.error\n"
                      f"try: r = urllib.request.urlopen('{url}', timeout=10)\n"
                      f"except urllib.error.HTTPError as e: r = e\n"
                      f"sys.stdout.write(str(r.status) + chr(10) + r.read().decode())\"",
                timeout=60)  # fmt: skip
    status, _, body = r.stdout.partition("\n")
    return int(status), body


def metric(lab: Lab, host: str, port: int, name: str) -> float:
    """The value of an unlabelled metric of the daemon on `host`, its metrics port on loopback
    without TLS (the roles' default: the tier lab's, test_tier_deploy.py)."""
    status, body = http_get(lab, host, f"http://127.0.0.1:{port}/metrics")
    found = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    assert status == 200 and found, f"{host}: no {name} in {body[:300]}"
    return float(found.group(1))


_SCRAPE = """
import base64, http.client, json, ssl, sys, urllib.error, urllib.request
url, opts = sys.argv[1], json.loads(sys.argv[2])
context = ssl.create_default_context(cafile=opts["ca"]) if opts.get("ca") else None
if context is not None and opts.get("cert"):
    context.load_cert_chain(opts["cert"], opts["key"])
request = urllib.request.Request(url)
if opts.get("user"):
    token = base64.b64encode(f"{opts['user']}:{opts['password']}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
try:
    r = urllib.request.urlopen(request, timeout=10, context=context)
except urllib.error.HTTPError as e:
    r = e
except (OSError, http.client.HTTPException) as e:  # TLS refused, connection reset or closed
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    sys.exit()
print(json.dumps({"status": r.status, "body": r.read().decode()}))
"""


def scrape(lab: Lab, url: str, **opts: str) -> tuple[int | None, str]:
    """GET `url` from the controller (another host than the daemon's, like a Prometheus host):
    the status and body, or None and the error (a refused handshake, a reset connection).
    `opts`: ca (file to verify the server with), cert and key (a client certificate), user and
    password (basic authentication)."""
    r = subprocess.run(lab.controller([sys.executable, "-c", _SCRAPE, url, json.dumps(opts)]),
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    return (None, result["error"]) if "error" in result else (result["status"], result["body"])


def hub_metrics(lab: Lab, pki: MetricsPki) -> str:
    """The hub's /metrics, scraped as Prometheus does (HTTPS, the password)."""
    status, body = scrape(lab, f"https://{HUB_IP}:9464/metrics", ca=str(pki.ca), user=pki.user,
                          password=pki.password)  # fmt: skip
    assert status == 200, f"hub /metrics: {status} {body[:300]}"
    return body


def node_metrics(lab: Lab, pki: MetricsPki, host: str, path: str = "/metrics") -> tuple[int | None, str]:
    """`path` of the node's metrics port, as Prometheus asks (HTTPS, its client certificate)."""
    key, cert = pki.client
    return scrape(lab, f"https://{lab.ip(host)}:9465{path}", ca=str(pki.ca), cert=str(cert),
                  key=str(key))  # fmt: skip


def hub_metric(lab: Lab, pki: MetricsPki, name: str) -> float:
    """The value of an unlabelled metric of this lab's hub (HTTPS, the password)."""
    body = hub_metrics(lab, pki)
    found = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    assert found, f"hub: no {name} in {body[:300]}"
    return float(found.group(1))


def main_pid(lab: Lab, host: str, kind: str) -> str:
    return lab.ssh(host, f"systemctl show -p MainPID --value crossroads-{kind}.service").stdout.strip()


def assert_untouched(lab: Lab) -> None:
    for host in ALL_HOSTS:
        r = lab.ssh(host, "ls -d /opt/crossroads /etc/crossroads /var/lib/crossroads "
                          "/var/lib/crossroads-ca 2>/dev/null; getent passwd crossroads",
                    check=False)  # fmt: skip
        assert r.stdout.strip() == "", f"{host} was changed by a refused run: {r.stdout}"


# ---- lint ---------------------------------------------------------------------------------


def test_ansible_lint_production_profile(deploy_bin: Path, tmp_path: Path) -> None:
    # Lint a copy: ansible-lint writes a .ansible/ cache into the project (git root) it runs in.
    tree = tmp_path / "ansible"
    shutil.copytree(ANSIBLE_DIR, tree)
    proc = subprocess.run(
        [str(deploy_bin / "ansible-lint"), "--profile", "production", "--nocolor"],
        cwd=tree, capture_output=True, text=True, timeout=300, check=False,
        env={"PATH": f"{deploy_bin}:/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


# ---- (e) bad inventories fail in preflight and change nothing --------------------------------


def test_preflight_refuses_invalid_enterprise_number(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any]
) -> None:
    nodes = inventory["all"]["children"]["crossroads_nodes"]["hosts"]
    nodes["node-b"]["crossroads_node_enterprise_number"] = "0431150351"  # bad check digits
    run = ansible.playbook("site.yml", inventory)
    assert run.returncode != 0, _explain(run)
    message = (
        'crossroads_node on node-b: crossroads_node_enterprise_number "0431150351" is not a '
        "valid enterprise number"
    )
    assert message in _flat(run.output), _explain(run)
    assert run.changed == 0, _explain(run)
    assert "PLAY [Set up the network CA]" not in run.output, "went past the preflight play"
    assert_untouched(lab)


def test_preflight_refuses_missing_hub_address(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any]
) -> None:
    del inventory["all"]["children"]["crossroads_nodes"]["vars"]["crossroads_node_hub_address"]
    run = ansible.playbook("site.yml", inventory)
    assert run.returncode != 0, _explain(run)
    assert "crossroads_node_hub_address must be set" in _flat(run.output), _explain(run)
    assert run.changed == 0, _explain(run)
    assert_untouched(lab)


def test_preflight_refuses_negative_retention(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any]
) -> None:
    inventory["all"]["children"]["crossroads_nodes"]["vars"]["crossroads_node_retention_days"] = -1
    run = ansible.playbook("site.yml", inventory)
    assert run.returncode != 0, _explain(run)
    assert "crossroads_node_retention_days must be a whole number of days, 0 or more (got -1)" in (
        _flat(run.output)), _explain(run)
    assert run.changed == 0, _explain(run)
    assert_untouched(lab)


def test_preflight_refuses_missing_certificates_when_not_issuing(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any]
) -> None:
    inventory["all"]["vars"]["crossroads_tls_issue"] = False
    run = ansible.playbook("site.yml", inventory)
    assert run.returncode != 0, _explain(run)
    assert "but these files are missing: /etc/crossroads/tls/ca.crt" in _flat(run.output), (
        _explain(run)
    )
    assert run.changed == 0, _explain(run)
    assert_untouched(lab)


def test_preflight_refuses_bad_daemon_settings(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any], metrics_pki: MetricsPki
) -> None:
    inventory["all"]["vars"].update(
        crossroads_log_level="verbose", crossroads_synchronous="OFF",
        crossroads_limits={"max_payload": 5, "max_receivers": 0},
    )  # fmt: skip
    run = ansible.playbook("site.yml", inventory)
    assert run.returncode != 0, _explain(run)
    out = _flat(run.output)
    for message in (
        'crossroads_log_level must be one of debug, info, warning, error (got "verbose")',
        'crossroads_synchronous must be one of FULL, NORMAL (got "OFF")',
        "crossroads_limits.max_payload is not a key of [limits]",
        "crossroads_limits.max_receivers must be a positive integer (got 0)",
    ):  # fmt: skip
        assert message in out, f"{message!r} missing: {_explain(run)}"
    assert run.changed == 0, _explain(run)
    assert_untouched(lab)

    # The metrics endpoint's settings: on the nodes (checked first), then on the hub. A value
    # that is no bcrypt hash may be a password: it is not shown.
    n, h = "crossroads_node_metrics", "crossroads_hub_metrics"
    bad_nodes = base_inventory()
    node_a, node_b = (bad_nodes["all"]["children"]["crossroads_nodes"]["hosts"][x] for x in NODES)
    node_a.update({f"{n}_client_ca": str(metrics_pki.ca),
                   f"{n}_basic_auth_users": {"prometheus": "hunter2"}})
    node_b.update({f"{n}_listen": "", f"{n}_tls_cert": str(metrics_pki.certs / "node-b.crt")})
    bad_hub = base_inventory()
    bad_hub["all"]["children"]["crossroads_hub"]["vars"].update({
        f"{h}_tls_key": str(metrics_pki.certs / "hub.key"),
        f"{h}_basic_auth_users": {"prometheus": "$2b$12$hunter2"}})
    for bad, messages in (
        (bad_nodes, [f"crossroads_node on node-a: {n}_client_ca needs {n}_tls_cert and {n}_tls_key",
                     f"{n}_basic_auth_users.prometheus is not a bcrypt hash",
                     f'crossroads_node on node-b: {n}_tls_cert set but {n}_listen is ""',
                     f"{n}_tls_cert is set without {n}_tls_key: give both or neither"]),
        (bad_hub, [f"crossroads_hub on hub: {h}_tls_key is set without {h}_tls_cert",
                   f"{h}_basic_auth_users.prometheus is not a bcrypt hash"]),
    ):  # fmt: skip
        run = ansible.playbook("site.yml", bad)
        assert run.returncode != 0, _explain(run)
        out = _flat(run.output)
        for message in messages:
            assert message in out, f"{message!r} missing: {_explain(run)}"
        assert "hunter2" not in out, _explain(run)
        assert run.changed == 0, _explain(run)
    assert_untouched(lab)


def test_preflight_refuses_a_version_not_in_the_wheelhouse(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any]
) -> None:
    inventory["all"]["vars"]["crossroads_version"] = "9.9.9"
    run = ansible.playbook("site.yml", inventory)
    assert run.returncode != 0, _explain(run)
    assert ("crossroads: no crossroads-9.9.9-*.whl in the wheelhouse /var/cache/wheelhouse on"
            in _flat(run.output)), _explain(run)  # fmt: skip
    assert run.changed == 0, _explain(run)
    assert_untouched(lab)


# ---- tags and check mode ------------------------------------------------------------------


def test_tags_select_the_phases(deploy_bin: Path, tmp_path: Path) -> None:
    """`--tags install|configure|run` select the phases (README.md, "Tags"); the checks always."""
    inv = tmp_path / "inventory.yml"
    inv.write_text(json.dumps(base_inventory()))
    listed = {}
    for tag in ("install", "configure", "run"):
        proc = subprocess.run(
            [str(deploy_bin / "ansible-playbook"), "-i", str(inv), "--list-tasks", "--tags", tag,
             str(ANSIBLE_DIR / "playbooks" / "site.yml")],
            cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=120, check=False,
            env={"PATH": f"{deploy_bin}:/usr/bin:/bin", "HOME": str(tmp_path),
                 "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg")},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        listed[tag] = _listed_tasks(proc.stdout)
    ca, hub, nodes = "Set up the network CA", "Deploy the hub", "Deploy the institution nodes"
    everywhere = {f"{play}/Check the inputs" for play in (ca, hub, nodes)} | {
        "Check the inventory before changing anything/Check the hub"}
    expect = {
        "install": {f"{play}/Install the software" for play in (ca, hub, nodes)},
        "configure": {f"{hub}/Configure the hub", f"{nodes}/Configure the node",
                      f"{hub}/Obtain the hub certificate", f"{ca}/Install the CRL refresh units",
                      f"{hub}/Run the hub", f"{nodes}/Run the node",
                      f"{hub}/Publish the certificate revocation list",
                      f"{hub}/Install the metrics endpoint's TLS files",
                      f"{nodes}/Install the metrics endpoint's TLS files"},
        "run": {f"{ca}/Enable and start the CRL refresh timer", f"{hub}/Run the hub",
                f"{nodes}/Run the node"},
    }  # fmt: skip
    for tag, names in expect.items():
        assert names | everywhere <= listed[tag], (tag, sorted(listed[tag]))
        others = set().union(*(v for k, v in expect.items() if k != tag)) - names
        assert not others & listed[tag], (tag, sorted(others & listed[tag]))


def _listed_tasks(output: str) -> set[str]:
    """`--list-tasks` output as {"<play>/<task>"} (role prefixes dropped: includes have none)."""
    found, play = set(), ""
    for line in output.splitlines():
        if line.startswith("  play #"):
            play = line.split("): ", 1)[1].split("\t")[0]
        elif line.startswith("      ") and "\tTAGS:" in line:
            found.add(f"{play}/{line.split(chr(9))[0].strip().split(' : ', 1)[-1]}")
    return found


def test_check_mode_on_new_hosts_fails_nothing_and_changes_nothing(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any]
) -> None:
    run = ansible.playbook("site.yml", inventory, "--check")
    assert run.returncode == 0 and run.failed == 0, _explain(run)
    assert set(run.recap) == set(ALL_HOSTS), run.recap
    assert run.changed > 0, "check mode on new hosts reports nothing to do"
    assert_untouched(lab)


# ---- (a) deploy ---------------------------------------------------------------------------


def test_site_deploys(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any], metrics_pki: MetricsPki
) -> None:
    run = ansible.playbook("site.yml", inventory)
    assert run.returncode == 0 and run.failed == 0, _explain(run)
    assert set(run.recap) == set(ALL_HOSTS), run.recap
    _state["deployed"] = True

    for host, kind in SERVICES:
        unit = f"crossroads-{kind}.service"
        r = lab.ssh(host, f"systemctl is-active {unit}; systemd-analyze verify {unit}",
                    check=False)  # fmt: skip
        assert r.returncode == 0 and r.stdout.startswith("active"), f"{host}: {r.stdout}{r.stderr}"
        r = lab.ssh(host, f"stat -c '%a %U' {TLS}/{kind}.key {TLS} /var/lib/crossroads "
                          f"/var/lib/crossroads/{kind}; systemctl show -p User -p NRestarts {unit}")
        assert r.stdout.split("\n")[:4] == [
            "600 crossroads", "750 root", "750 crossroads", "700 crossroads"
        ], f"{host}: {r.stdout}"
        assert "User=crossroads" in r.stdout and "NRestarts=0" in r.stdout, r.stdout
        # A notify service with a watchdog, reloaded with SIGHUP (like deploy/systemd/).
        r = lab.ssh(host, f"systemctl show -p Type -p NotifyAccess -p WatchdogUSec "
                          f"-p ExecReload {unit}")  # fmt: skip
        for expected in ("Type=notify", "NotifyAccess=main", "WatchdogUSec=30s", "kill -HUP"):
            assert expected in r.stdout, f"{host}: {r.stdout}"
        # The daemon's settings from the role variables (their defaults).
        r = lab.ssh(host, f"grep -E '^(synchronous|log_level) = ' /etc/crossroads/{kind}.toml")
        assert r.stdout.split("\n")[:2] == ['synchronous = "FULL"', 'log_level = "info"'], r.stdout
        # The consultation limit is rendered into the running configuration.
        r = lab.ssh(host, f"grep -x 'consultations_in_flight = 200' /etc/crossroads/{kind}.toml",
                    check=False)
        assert r.returncode == 0, f"{host}: {r.stdout}{r.stderr}"
    for host in NODES:  # and the node's retention (the role's default)
        r = lab.ssh(host, "grep -x 'retention_days = 30' /etc/crossroads/node.toml", check=False)
        assert r.returncode == 0, f"{host}: {r.stdout}{r.stderr}"
    # Prometheus metrics over HTTPS from another host (more in test_metrics_need_tls_and_...).
    assert "\ncrossroads_hub_" in hub_metrics(lab, metrics_pki)
    status, body = node_metrics(lab, metrics_pki, "node-a")
    assert status == 200 and "\ncrossroads_node_" in body, f"node-a: {status} {body[:300]}"
    # Their files: the keys readable by the service user only (the probe's: root only).
    for host, files in (
        ("hub", {"hub-metrics.key": "600 crossroads crossroads",
                 "hub-metrics.crt": "644 root crossroads"}),
        ("node-a", {"node-metrics.key": "600 crossroads crossroads",
                    "node-metrics.crt": "644 root crossroads",
                    "node-metrics-client-ca.crt": "644 root crossroads",
                    "node-metrics-probe.key": "600 root root"}),
    ):  # fmt: skip
        r = lab.ssh(host, f"cd {TLS} && stat -c '%n %a %U %G' {' '.join(files)}")
        assert r.stdout.split("\n")[:-1] == [f"{n} {m}" for n, m in files.items()], r.stdout
    # The CA key stays on the CA host; no private key of the CA anywhere else.
    r = lab.ssh("ca", "stat -c '%a %U' /var/lib/crossroads-ca/ca.key")
    assert r.stdout.strip() == "600 root"
    for host in ("hub", *NODES):
        assert lab.ssh(host, "test ! -e /var/lib/crossroads-ca", check=False).returncode == 0


# ---- (b) envelopes from node A to node B through the hub ----------------------------------


def test_envelopes_flow_from_a_to_b(lab: Lab) -> None:
    _require_deployed()
    outcomes = send(lab, "node-a", ENTERPRISE_B, 5, "hello-b", wait=True)
    assert len(outcomes) == 5 and {o["reason"] for o in outcomes} == {"ACCEPTED"}, outcomes
    received = drain_inbox(lab, "node-b", 5)
    assert [e["payload"] for e in received] == ["hello-b"] * 5, received
    assert {e["sender"] for e in received} == {ENTERPRISE_A}, received
    # And back.
    send(lab, "node-b", ENTERPRISE_A, 1, "hello-a", wait=True)
    assert [e["payload"] for e in drain_inbox(lab, "node-a", 1)] == ["hello-a"]


# ---- (c) idempotence ----------------------------------------------------------------------


def test_second_run_changes_nothing(ansible: Ansible, inventory: dict[str, Any]) -> None:
    _require_deployed()
    run = ansible.playbook("site.yml", inventory)
    assert run.returncode == 0, _explain(run)
    changed = {h: r.changed for h, r in run.recap.items() if r.changed}
    assert changed == {}, _explain(run)


def test_check_mode_on_deployed_hosts_changes_nothing(
    ansible: Ansible, inventory: dict[str, Any]
) -> None:
    _require_deployed()
    run = ansible.playbook("site.yml", inventory, "--check")
    assert run.returncode == 0 and run.failed == 0, _explain(run)
    changed = {h: r.changed for h, r in run.recap.items() if r.changed}
    assert changed == {}, _explain(run)


def test_configure_tag_alone_changes_nothing(ansible: Ansible, inventory: dict[str, Any]) -> None:
    _require_deployed()
    run = ansible.playbook("site.yml", inventory, "--tags", "configure")
    assert run.returncode == 0 and run.failed == 0, _explain(run)
    assert "Install the project from the wheelhouse" not in run.output, "install ran"
    assert "Enable and start the service" not in run.output, "run ran"
    changed = {h: r.changed for h, r in run.recap.items() if r.changed}
    assert changed == {}, _explain(run)


def test_metrics_need_tls_and_credentials(lab: Lab, metrics_pki: MetricsPki) -> None:
    """From the controller, another host (a Prometheus host's place): the hub's metrics over
    HTTPS with the password, the nodes' with a client certificate; no plain HTTP; the probes
    need no password (docs/OPERATIONS.md, "Metrics")."""
    _require_deployed()
    pki, hub = metrics_pki, f"https://{HUB_IP}:9464"
    body = hub_metrics(lab, pki)
    for name in ("crossroads_hub_ready", "crossroads_hub_crl_number", "crossroads_build_info",
                 "process_cpu_seconds_total"):  # fmt: skip
        assert f"\n{name}" in body, f"hub: no {name}"
    status, body = scrape(lab, f"{hub}/metrics", ca=str(pki.ca))
    assert status == 401, f"hub /metrics without a password: {status} {body[:300]}"
    status, _ = scrape(lab, f"{hub}/metrics", ca=str(pki.ca), user=pki.user, password="wrong")
    assert status == 401, f"hub /metrics with a wrong password: {status}"
    status, error = scrape(lab, f"http://{HUB_IP}:9464/metrics")
    assert status is None, f"hub: plain HTTP answered {status}"
    for path in ("/healthz", "/readyz"):
        status, body = scrape(lab, f"{hub}{path}", ca=str(pki.ca))
        assert status == 200, f"hub {path}: {status} {body}"
    assert json.loads(body)["ready"] is True, body
    failures = re.search(r'^crossroads_metrics_auth_failures_total\{reason="missing"\} (\S+)$',
                         hub_metrics(lab, pki), re.MULTILINE)  # fmt: skip
    assert failures and float(failures.group(1)) >= 1, "the refusal was not counted"

    # A node: TLS and client certificates (no password).
    node = f"https://{lab.ip('node-a')}:9465"
    for path in ("/metrics", "/healthz", "/readyz"):
        status, body = node_metrics(lab, pki, "node-a", path)
        assert status == 200, f"node-a {path}: {status} {body[:300]}"
    assert json.loads(body)["ready"] is True, body
    for path in ("/metrics", "/readyz"):  # without a client certificate: the handshake fails
        status, error = scrape(lab, f"{node}{path}", ca=str(pki.ca))
        assert status is None, f"node-a {path} without a client certificate: {status}"
    status, error = scrape(lab, f"http://{lab.ip('node-a')}:9465/metrics")
    assert status is None, f"node-a: plain HTTP answered {status}"
    # The client checks the server's certificate: without the monitoring CA it is refused.
    status, error = scrape(lab, f"{hub}/readyz")
    assert status is None and "CERTIFICATE_VERIFY_FAILED" in error, f"{status} {error}"


def test_alert_rules_for_the_hub_hosts_prometheus(lab: Lab) -> None:
    _require_deployed()
    # The alert rules where the hub host's Prometheus reads them (crossroads_prometheus_rules_dir).
    rules = lab.ssh("hub", "cat /etc/prometheus/rules/crossroads-alerts.yml").stdout
    assert rules == (REPO / "deploy" / "monitoring" / "alerts.yml").read_text()


def test_new_log_level_is_applied_by_a_reload(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any]
) -> None:
    _require_deployed()
    before = main_pid(lab, "hub", "hub")
    inventory["all"]["vars"]["crossroads_log_level"] = "debug"
    run = ansible.playbook("hub.yml", inventory, "--tags", "configure,run")
    assert run.returncode == 0 and run.recap["hub"].changed > 0, _explain(run)
    assert "RUNNING HANDLER [crossroads_hub : Reload crossroads-hub]" in run.output, _explain(run)
    assert "Restart crossroads-hub" not in run.output.split("RUNNING HANDLER")[-1], _explain(run)
    assert main_pid(lab, "hub", "hub") == before, "the hub was restarted"
    r = lab.ssh("hub", "grep -x 'log_level = \"debug\"' /etc/crossroads/hub.toml; "
                       "journalctl -u crossroads-hub -o cat | grep '\"event\": \"reloaded\"' "
                       "| grep -c '\"log_level\": \"debug\"'")
    assert int(r.stdout.split()[-1]) >= 1, r.stdout
    del inventory["all"]["vars"]["crossroads_log_level"]  # back
    run = ansible.playbook("hub.yml", inventory, "--tags", "configure,run")
    assert run.returncode == 0 and main_pid(lab, "hub", "hub") == before, _explain(run)


def test_new_metrics_certificate_and_users_are_applied_by_a_reload(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any], metrics_pki: MetricsPki
) -> None:
    """A new certificate and key for the hub's metrics endpoint, and a second user, in one run:
    a reload (SIGHUP reads the files again and takes the users), the same process, serving the
    new certificate; the users go back by a reload too."""
    _require_deployed()
    pki, before = metrics_pki, main_pid(lab, "hub", "hub")
    key, cert = pki.issue("hub", basename="hub-next")
    shutil.copy(key, pki.certs / "hub.key")  # the inventory's files, replaced
    shutil.copy(cert, pki.certs / "hub.crt")
    hub_vars = inventory["all"]["children"]["crossroads_hub"]["vars"]
    hub_vars["crossroads_hub_metrics_basic_auth_users"] = {
        pki.user: pki.hashed, "grafana": bcrypt.hashpw(b"second", bcrypt.gensalt(rounds=4)).decode()}
    run = ansible.playbook("hub.yml", inventory, "--tags", "configure,run")
    assert run.returncode == 0 and run.recap["hub"].changed > 0, _explain(run)
    assert "RUNNING HANDLER [crossroads_hub : Reload crossroads-hub]" in run.output, _explain(run)
    assert "Restart crossroads-hub" not in run.output.split("RUNNING HANDLER")[-1], _explain(run)
    assert main_pid(lab, "hub", "hub") == before, "the hub was restarted"
    deadline = time.monotonic() + 20  # systemctl reload sends SIGHUP and returns
    while True:
        served = subprocess.run(
            lab.controller([sys.executable, "-c", "import ssl, sys; print(ssl.get_server_"
                            f"certificate(('{HUB_IP}', 9464), ca_certs=sys.argv[1]))", str(pki.ca)]),
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        new = ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(cert.read_text())
        if new or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert new, "the hub serves its old metrics certificate"
    status, _ = scrape(lab, f"https://{HUB_IP}:9464/metrics", ca=str(pki.ca), user="grafana",
                       password="second")  # fmt: skip
    assert status == 200, f"the new user: {status}"

    del hub_vars["crossroads_hub_metrics_basic_auth_users"]["grafana"]  # back
    run = ansible.playbook("hub.yml", inventory, "--tags", "configure,run")
    assert run.returncode == 0 and main_pid(lab, "hub", "hub") == before, _explain(run)
    deadline = time.monotonic() + 20
    while True:
        status, _ = scrape(lab, f"https://{HUB_IP}:9464/metrics", ca=str(pki.ca), user="grafana",
                           password="second")  # fmt: skip
        if status == 401 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == 401, f"the removed user: {status}"


def _crl_number(lab: Lab, host: str, path: str) -> int:
    r = lab.ssh(host, f"{VENV_PYTHON} -c \"from cryptography import x509; "
                      f"c = x509.load_pem_x509_crl(open('{path}', 'rb').read()); print("
                      f"c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)\"")
    return int(r.stdout.strip())


def test_crl_refresh_timer_renews_the_crl(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any], metrics_pki: MetricsPki
) -> None:
    """The timer on the CA host (here not a hub host) writes a new CRL; the hub, elsewhere,
    gets it at the next hub.yml run (`--tags crl`), by a reload."""
    _require_deployed()
    r = lab.ssh("ca", "systemctl list-timers --all --no-legend crossroads-crl-refresh.timer; "
                      "systemctl is-enabled crossroads-crl-refresh.timer")
    assert "crossroads-crl-refresh.timer" in r.stdout and r.stdout.split()[-1] == "enabled", r.stdout
    r = lab.ssh("ca", "systemd-analyze verify crossroads-crl-refresh.service "
                      "crossroads-crl-refresh.timer", check=False)  # fmt: skip
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    ca_crl = "/var/lib/crossroads-ca/crl.pem"
    number = _crl_number(lab, "ca", ca_crl)
    assert hub_metric(lab, metrics_pki, "crossroads_hub_crl_number") == number
    lab.ssh("ca", "systemctl start crossroads-crl-refresh.service")
    assert _crl_number(lab, "ca", ca_crl) == number + 1
    assert _crl_number(lab, "hub", f"{TLS}/crl.pem") == number, "the hub host was changed"

    pid = main_pid(lab, "hub", "hub")
    run = ansible.playbook("hub.yml", inventory, "--tags", "crl")
    assert run.returncode == 0, _explain(run)
    assert "RUNNING HANDLER [crossroads_hub : Reload crossroads-hub]" in run.output, _explain(run)
    assert _crl_number(lab, "hub", f"{TLS}/crl.pem") == number + 1
    assert hub_metric(lab, metrics_pki, "crossroads_hub_crl_number") == number + 1
    assert main_pid(lab, "hub", "hub") == pid, "the hub was restarted"


# ---- (d) certificate rotation -------------------------------------------------------------


def _probe(lab: Lab, key: str, cert: str) -> subprocess.CompletedProcess[str]:
    return lab.ssh(
        "node-a",
        f"cd /tmp && /opt/crossroads/venv/bin/python /root/probe_hub.py {HUB_IP}:7443 "
        f"hub.demo.crossroads {TLS}/ca.crt {cert} {key} {lab.ip('node-a')}:7444",
        check=False, timeout=60,
    )  # fmt: skip


def test_rotation_keeps_traffic_and_refuses_old_certificates(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any]
) -> None:
    _require_deployed()
    # Keep copies of the current (soon old) material to try it afterwards.
    lab.ssh("node-a", f"install -d -m 0700 /root/old && cp {TLS}/node.* /root/old/")
    lab.ssh("hub", f"install -d -m 0700 /root/old && cp {TLS}/hub.crt /root/old/")
    probe = (Path(__file__).parent / "probe_hub.py").read_text()
    lab.ssh("node-a", f"cat > /root/probe_hub.py <<'EOF'\n{probe}\nEOF")
    r = _probe(lab, "/root/old/node.key", "/root/old/node.crt")
    assert r.returncode == 0, f"probe with the current certificate failed: {r.stdout}{r.stderr}"

    # Traffic while rotating: node B keeps sending to node A; every accepted envelope must arrive.
    sent: list[str] = []
    stop = threading.Event()

    def sender() -> None:
        i = 0
        while not stop.is_set():
            payload = f"during-{i}"
            r = lab.ssh("node-b", f"{CROSSROADS} send --local-api {LOCAL_API} --service "
                        f"demo.message --to {ENTERPRISE_A} --payload {payload}",
                        check=False, timeout=60)  # fmt: skip
            if r.returncode == 0:
                sent.append(payload)
            i += 1
            time.sleep(0.3)

    before = send(lab, "node-b", ENTERPRISE_A, 3, "before")
    assert len(before) == 3
    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    try:
        run = ansible.playbook("rotate_certs.yml", inventory)
    finally:
        stop.set()
        thread.join(timeout=120)
    assert run.returncode == 0 and run.failed == 0, _explain(run)
    after = send(lab, "node-b", ENTERPRISE_A, 3, "after", wait=True)
    assert {o["reason"] for o in after} == {"ACCEPTED"}, after

    expected = ["before"] * 3 + sent + ["after"] * 3
    received = drain_inbox(lab, "node-a", len(expected), timeout=90)
    assert sorted(e["payload"] for e in received) == sorted(expected), (
        f"sent during rotation: {len(sent)}; missing: "
        f"{sorted(set(expected) - {e['payload'] for e in received})}"
    )
    assert len(sent) > 0, "no envelope was accepted while rotating"

    # The old certificates are revoked in the CRL published to the hub ...
    crl = lab.ssh("hub", f"cat {TLS}/crl.pem").stdout
    lab.ssh("node-a", f"cat > /root/old/crl.pem <<'EOF'\n{crl}EOF")
    for host, cert, crl_path, expect in (
        ("hub", "/root/old/hub.crt", f"{TLS}/crl.pem", 2),
        ("hub", f"{TLS}/hub.crt", f"{TLS}/crl.pem", 0),
        ("node-a", "/root/old/node.crt", "/root/old/crl.pem", 2),
        ("node-a", f"{TLS}/node.crt", "/root/old/crl.pem", 0),
    ):
        r = lab.ssh(host, f"{CROSSROADS} pki verify --ca-cert {TLS}/ca.crt --cert {cert} "
                          f"--crl {crl_path}", check=False)  # fmt: skip
        out = r.stdout + r.stderr
        assert r.returncode == expect, f"{host} {cert}: rc={r.returncode} {out}"
        assert expect == 0 or "revoked" in out, out

    # ... and the hub refuses a client holding the old key and certificate (it re-reads the CRL
    # when the file changes), while the new ones work.
    deadline = time.monotonic() + 20
    while True:
        r = _probe(lab, "/root/old/node.key", "/root/old/node.crt")
        if r.returncode == 3 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.returncode == 3 and "UNAUTHENTICATED" in r.stdout, r.stdout + r.stderr
    r = _probe(lab, f"{TLS}/node.key", f"{TLS}/node.crt")
    assert r.returncode == 0, r.stdout + r.stderr


# ---- an institution joins; a host without systemd ------------------------------------------


def _joined_inventory(inventory: dict[str, Any], lab: Lab) -> dict[str, Any]:
    nodes = inventory["all"]["children"]["crossroads_nodes"]["hosts"]
    nodes["node-c"] = {
        "ansible_host": lab.ip("node-c"),
        "crossroads_node_enterprise_number": ENTERPRISE_C,
        "crossroads_node_institution_name": "Institution C",
        "crossroads_node_sector": 17,
    }
    nodes["node-d"] = {
        "ansible_host": lab.ip("node-d"),
        "crossroads_node_enterprise_number": ENTERPRISE_D,
        "crossroads_node_institution_name": "Institution D (no systemd)",
        "crossroads_node_sector": 17,
        "crossroads_service_manager": "none",
    }
    return inventory


def test_institutions_join(ansible: Ansible, lab: Lab, inventory: dict[str, Any]) -> None:
    """README's joining steps: hub.yml (the directory), then nodes.yml --limit the new hosts
    (the play waits until each is ready: connected to the hub, which knows it)."""
    _require_deployed()
    inventory = _joined_inventory(inventory, lab)
    run = ansible.playbook("hub.yml", inventory)
    assert run.returncode == 0 and run.recap["hub"].changed > 0, _explain(run)
    run = ansible.playbook("nodes.yml", inventory, "--limit", "node-c,node-d")
    assert run.returncode == 0 and set(run.recap) == {"node-c", "node-d"}, _explain(run)

    send(lab, "node-a", ENTERPRISE_C, 2, "hello-c", wait=True)
    assert [e["payload"] for e in drain_inbox(lab, "node-c", 2)] == ["hello-c"] * 2

    # node-d: installed and configured, no unit; its operator runs the daemon by other means.
    r = lab.ssh("node-d", "test ! -e /etc/systemd/system/crossroads-node.service && "
                          "stat -c '%a %U' /etc/crossroads/tls/node.key /run/crossroads")
    assert r.stdout.split("\n")[:2] == ["600 crossroads", "750 crossroads"], r.stdout
    lab.ssh("node-d", "setsid -f runuser -u crossroads -- "
                      f"{CROSSROADS} node serve --config /etc/crossroads/node.toml "
                      "--ready-file /run/crossroads/ready.json >/var/log/crossroads-node.log 2>&1")
    lab.ssh("node-d", "for i in $(seq 100); do test -e /run/crossroads/ready.json && exit 0; "
                      "sleep 0.2; done; cat /var/log/crossroads-node.log; exit 1")  # fmt: skip
    send(lab, "node-a", ENTERPRISE_D, 1, "hello-d", wait=True)
    assert [e["payload"] for e in drain_inbox(lab, "node-d", 1)] == ["hello-d"]


# ---- a rebuilt wheel with an unchanged version is installed ---------------------------------


def test_rebuilt_wheel_is_reinstalled(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any], wheelhouse: Path
) -> None:
    _require_deployed()
    (wheel,) = wheelhouse.glob("crossroads-*.whl")
    token = f"rebuild-{time.time_ns()}"
    with zipfile.ZipFile(wheel, "a") as zf:  # same name and version, different content
        zf.writestr("node/_deploy_test_marker.py", f"TOKEN = {token!r}\n")
    inventory = _joined_inventory(inventory, lab)
    show = "systemctl show -p MainPID --value crossroads-{}.service"
    before = {h: lab.ssh(h, show.format(k)).stdout.strip() for h, k in SERVICES}

    # node-c and node-d would be reinstalled too; leave them out to save time.
    run = ansible.playbook("site.yml", inventory, "--limit", ",".join(ALL_HOSTS))
    assert run.returncode == 0, _explain(run)
    for host in ALL_HOSTS:
        r = lab.ssh(host, "/opt/crossroads/venv/bin/python -c "
                          "'import node._deploy_test_marker as m; print(m.TOKEN)'", check=False)
        assert r.stdout.strip() == token, f"{host} runs the old wheel: {r.stdout}{r.stderr}"
    after = {h: lab.ssh(h, show.format(k)).stdout.strip() for h, k in SERVICES}
    assert all(after[h] != before[h] for h in after), f"not restarted: {before} -> {after}"
    send(lab, "node-a", ENTERPRISE_B, 1, "after-upgrade", wait=True)
    assert [e["payload"] for e in drain_inbox(lab, "node-b", 1)] == ["after-upgrade"]


# ---- a daemon that never comes up fails the play (last: leaves node-c broken) ----------------


def test_service_that_does_not_come_up_fails_the_play(
    ansible: Ansible, lab: Lab, inventory: dict[str, Any]
) -> None:
    _require_deployed()
    inventory = _joined_inventory(inventory, lab)
    node_c = inventory["all"]["children"]["crossroads_nodes"]["hosts"]["node-c"]
    node_c["crossroads_node_listen_address"] = "10.9.9.9"  # not on the host: bind fails
    node_c["crossroads_port_timeout"] = 10
    run = ansible.playbook("nodes.yml", inventory, "--limit", "node-c")
    assert run.returncode != 0 and run.recap["node-c"].failed == 1, _explain(run)
    # Type=notify: the restart itself fails (no READY=1 before the daemon exits); a daemon
    # that never exits nor listens is caught by the port check (crossroads_port_timeout).
    headers = re.findall(r"^(?:TASK|RUNNING HANDLER) \[[^\]]+\]", run.output.rsplit("fatal:", 1)[0],
                         re.MULTILINE)  # fmt: skip
    assert headers[-1] in ("RUNNING HANDLER [crossroads_node : Restart crossroads-node]",
                           "TASK [crossroads : Wait for the service port]"), _explain(run)
    r = lab.ssh("node-c", "ss -Htln 'sport = :7444'")
    assert r.stdout.strip() == "", f"something listens on 7444: {r.stdout}"
