"""Fixtures of the Ansible deploy test (``pytest -m deploy tests/deploy``).

Needs root, systemd-nspawn, sshd and a virtualenv with ansible-core + ansible-lint: all installed
by ``tests/deploy/prepare-host.sh``. When something is missing the tests FAIL, unless
``CROSSROADS_DEPLOY_OPTIONAL=1`` is set, in which case they are skipped with the reason.

Environment:
  CROSSROADS_DEPLOY_VENV       virtualenv with ansible-playbook/ansible-lint (default: .venv-deploy)
  CROSSROADS_DEPLOY_ARTIFACTS  where to keep playbook output and host journals (default: a
                               pytest temporary directory, printed at the end of the session)
  CROSSROADS_DEPLOY_OPTIONAL   1 to skip instead of fail when the machine cannot run the test

Two labs, never up at once (the machine has 2 cores): ``lab`` (CA, one SQLite hub, nodes; module
scope, for test_deploy.py) and ``tier_lab`` (the hub tier: etcd + Patroni/PostgreSQL, two hub
replicas, three nodes; session scope, for test_tier_deploy.py and test_tier_failover.py, which
run after test_deploy.py has torn its lab down). ``tier_deployed`` deploys the tier once.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from node.testing import Pki
from pki import ca as pki_ca
from pki import identity as pki_id
from tests.deploy.harness import (
    DEFAULT_HOSTS,
    SUBNET,
    HostSpec,
    Lab,
    PlaybookRun,
    missing_prerequisites,
    parse_recap,
)

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "deploy" / "ansible"
#: The deployed venv's command and interpreter on every host.
CROSSROADS = "/opt/crossroads/venv/bin/crossroads"
VENV_PYTHON = "/opt/crossroads/venv/bin/python"
DEPLOY_VENV = Path(os.environ.get("CROSSROADS_DEPLOY_VENV", REPO / ".venv-deploy"))
OPTIONAL = os.environ.get("CROSSROADS_DEPLOY_OPTIONAL") == "1"

ENTERPRISE_A = "0403019261"
ENTERPRISE_B = "0428759497"
HUB_IP = f"{SUBNET}.11"
DEMO_SERVICE = {
    "id": "demo.message", "version": 1, "kind": "declaration", "subject_type": "any",
    "routing": "explicit",
}  # fmt: skip


def unavailable(reason: str) -> None:
    if OPTIONAL:
        pytest.skip(f"deploy test not runnable here: {reason}")
    pytest.fail(
        f"deploy test not runnable here: {reason} "
        "(set CROSSROADS_DEPLOY_OPTIONAL=1 to skip instead)",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def deploy_bin() -> Path:
    """The virtualenv bin directory with ansible-playbook and ansible-lint."""
    reason = missing_prerequisites()
    if reason:
        unavailable(reason)
    bindir = DEPLOY_VENV / "bin"
    for tool in ("ansible-playbook", "ansible-lint"):
        if not (bindir / tool).exists():
            unavailable(f"{bindir / tool} not found; run tests/deploy/prepare-host.sh")
    return bindir


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    env = os.environ.get("CROSSROADS_DEPLOY_ARTIFACTS")
    path = Path(env) if env else tmp_path_factory.mktemp("deploy-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    yield path
    sys.stderr.write(f"\n[deploy] playbook output and host journals: {path}\n")


@pytest.fixture(scope="session")
def wheelhouse(deploy_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel` of the project and all its dependencies, for the hosts' /usr/bin/python3."""
    build = tmp_path_factory.mktemp("wheel-build")
    src = build / "src"
    shutil.copytree(
        REPO, src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
            ".hypothesis", "wheelhouse", "run", "demo-run", "deploy",
        ),
    )  # fmt: skip
    # The hosts run this machine's /usr/bin/python3 (their root is an overlay of /): build the
    # wheels with it, so binary wheels match its version.
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(build / "venv")], check=True)
    out = build / "wheelhouse"
    argv = [str(build / "venv" / "bin" / "pip"), "wheel", "-q", "--disable-pip-version-check",
            "-w", str(out)]  # fmt: skip
    if (src / "constraints.txt").exists():
        argv += ["-c", str(src / "constraints.txt")]
    proc = subprocess.run([*argv, str(src)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    shutil.rmtree(src)
    return out


@pytest.fixture(scope="module")
def lab(
    deploy_bin: Path, wheelhouse: Path, artifacts: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lab]:  # fmt: skip
    """One CA host, one hub, two nodes (systemd-nspawn, booted, reachable over SSH)."""
    yield from _running_lab(
        Lab(workdir=tmp_path_factory.mktemp("lab"), hosts=list(DEFAULT_HOSTS),
            wheelhouse=wheelhouse),
        artifacts, "boot",
    )  # fmt: skip


def _running_lab(the_lab: Lab, artifacts: Path, label: str) -> Iterator[Lab]:
    """Boot the lab, yield it, save its journals and tear it down (also on SIGTERM/SIGHUP)."""

    def on_signal(signum: int, _frame: object) -> None:
        the_lab.down()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        t0 = time.monotonic()
        the_lab.up(boot_timeout=180)
        with (artifacts / "timings.txt").open("a") as f:
            f.write(f"{label} {time.monotonic() - t0:.1f}s\n")
        yield the_lab
    finally:
        try:
            the_lab.save_journals(artifacts / label if label != "boot" else artifacts)
        finally:
            the_lab.down()
            for s, handler in previous.items():
                signal.signal(s, handler)


#: Inventory variables of every lab host (the wheelhouse is bind-mounted there; the version
#: to install is the checkout's).
LAB_VARS = {
    "ansible_user": "root",
    "crossroads_network": "demo",
    "crossroads_service_manager": "systemd",
    "crossroads_wheelhouse_dir": "/var/cache/wheelhouse",
    "crossroads_version": tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"],
}


def base_inventory() -> dict[str, Any]:
    """The lab's inventory, shaped like deploy/ansible/inventories/example."""
    by_name = {h.name: h.ip for h in DEFAULT_HOSTS}
    return {
        "all": {
            "vars": dict(LAB_VARS),
            "children": {
                "crossroads_ca": {"hosts": {"ca": {"ansible_host": by_name["ca"]}}},
                "crossroads_hub": {
                    "hosts": {"hub": {"ansible_host": by_name["hub"]}},
                    "vars": {
                        # The alert rules for a Prometheus on the hub host.
                        "crossroads_prometheus_rules_dir": "/etc/prometheus/rules",
                        "crossroads_hub_tls_ip_addresses": [HUB_IP],
                        "crossroads_hub_directory_services": [DEMO_SERVICE],
                        "crossroads_hub_directory_authorizations": [
                            {"id": "demo-sector-17", "service_id": "demo.message", "sector": 17}
                        ],
                    },
                },
                "crossroads_nodes": {
                    "hosts": {
                        "node-a": {
                            "ansible_host": by_name["node-a"],
                            "crossroads_node_enterprise_number": ENTERPRISE_A,
                            "crossroads_node_institution_name": "Institution A",
                            "crossroads_node_sector": 17,
                        },
                        "node-b": {
                            "ansible_host": by_name["node-b"],
                            "crossroads_node_enterprise_number": ENTERPRISE_B,
                            "crossroads_node_institution_name": "Institution B",
                            "crossroads_node_sector": 17,
                        },
                    },
                    "vars": {"crossroads_node_hub_address": f"{HUB_IP}:7443"},
                },
            },
        }
    }


class Ansible:
    """Runs ansible-playbook / ansible-lint from the lab's controller namespace."""

    def __init__(self, lab: Lab, bindir: Path, artifacts: Path, prefix: str = "") -> None:
        self.lab, self.bindir, self.artifacts = lab, bindir, artifacts
        self.prefix = prefix  # of the artifacts' names, one per lab
        self.runs = 0

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PATH=f"{self.bindir}:{env.get('PATH', '/usr/bin:/bin')}",
            ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
            ANSIBLE_HOME=str(self.lab.workdir / "ansible-home"),
            ANSIBLE_LOCAL_TEMP=str(self.lab.workdir / "ansible-tmp"),
            ANSIBLE_SSH_ARGS=" ".join(self.lab.ssh_args),
            ANSIBLE_PRIVATE_KEY_FILE=str(self.lab.key),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_DEPRECATION_WARNINGS="0",
        )
        return env

    def playbook(self, name: str, inventory: dict[str, Any], *extra: str) -> PlaybookRun:
        self.runs += 1
        tag = f"{self.prefix}{self.runs:02d}-{Path(name).stem}"
        inv = self.lab.workdir / f"inventory-{tag}.yml"
        inv.write_text(json.dumps(inventory, indent=1))  # JSON is YAML
        argv = [str(self.bindir / "ansible-playbook"), "-i", str(inv),
                str(ANSIBLE_DIR / "playbooks" / name), *extra]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(
            self.lab.controller(argv), capture_output=True, text=True, env=self.env(),
            cwd=ANSIBLE_DIR, timeout=900, check=False,
        )  # fmt: skip
        seconds = time.monotonic() - t0
        output = proc.stdout + proc.stderr
        (self.artifacts / f"ansible-{tag}.log").write_text(output)
        with (self.artifacts / "timings.txt").open("a") as f:
            f.write(f"{tag} {seconds:.1f}s rc={proc.returncode}\n")
        return PlaybookRun(argv, proc.returncode, output, seconds, parse_recap(output))


@pytest.fixture(scope="module")
def ansible(lab: Lab, deploy_bin: Path, artifacts: Path) -> Ansible:
    return Ansible(lab, deploy_bin, artifacts)


@dataclasses.dataclass(frozen=True)
class MetricsPki:
    """The lab's monitoring PKI: a CA of its own (a site's, not the network's), a server
    certificate per host (its IP and ``<host>.lab``, files ``certs/<host>.crt|key``), and
    Prometheus' client certificate and password."""

    pki: Pki
    password: str
    #: The password's bcrypt hash (once: each hash has its own salt; cost 4, the lowest, for speed).
    hashed: str

    user = "prometheus"

    @property
    def ca(self) -> Path:
        return self.pki.ca_cert

    @property
    def certs(self) -> Path:
        return self.pki.root / "certs"

    @property
    def client(self) -> tuple[Path, Path]:
        """Prometheus' key and certificate (admin profile: clientAuth only)."""
        return self.pki.issue(f"admin:{self.user}")

    def issue(self, host: str, basename: str | None = None) -> tuple[Path, Path]:
        """A new key and server certificate for ``host`` (``basename``: other file names)."""
        ip = next(h.ip for h in DEFAULT_HOSTS if h.name == host)
        return pki_ca.issue(self.pki.ca_dir, self.certs, pki_id.hub(self.pki.network), "hub",
                            extra_dns=[f"{host}.lab"], extra_ips=[ip], basename=basename or host)


@pytest.fixture(scope="session")
def metrics_pki(tmp_path_factory: pytest.TempPathFactory) -> MetricsPki:
    password = secrets.token_urlsafe(18)
    made = MetricsPki(Pki(tmp_path_factory.mktemp("metrics-pki"), network="monitoring"), password,
                      bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode())
    for host in DEFAULT_HOSTS:
        made.issue(host.name)
    return made


def with_metrics_tls(inventory: dict[str, Any], pki: MetricsPki) -> dict[str, Any]:
    """The metrics endpoints on every address, as for a Prometheus on another host: the hub's
    with TLS and a password, the nodes' with TLS and client certificates (the role's /readyz
    wait presents Prometheus' certificate too)."""
    groups = inventory["all"]["children"]
    groups["crossroads_hub"]["vars"].update(
        crossroads_hub_metrics_listen="0.0.0.0:9464",
        crossroads_hub_metrics_tls_cert=str(pki.certs / "hub.crt"),
        crossroads_hub_metrics_tls_key=str(pki.certs / "hub.key"),
        crossroads_hub_metrics_basic_auth_users={pki.user: pki.hashed},
    )  # fmt: skip
    key, cert = pki.client
    groups["crossroads_nodes"]["vars"].update(
        crossroads_node_metrics_listen="0.0.0.0:9465",
        # One file per host, named after it.
        crossroads_node_metrics_tls_cert=f"{pki.certs}/{{{{ inventory_hostname }}}}.crt",
        crossroads_node_metrics_tls_key=f"{pki.certs}/{{{{ inventory_hostname }}}}.key",
        crossroads_node_metrics_client_ca=str(pki.ca),
        crossroads_node_metrics_probe_cert=str(cert),
        crossroads_node_metrics_probe_key=str(key),
    )  # fmt: skip
    return inventory


@pytest.fixture
def inventory(metrics_pki: MetricsPki) -> dict[str, Any]:
    """The lab's inventory, its metrics endpoints with TLS and authentication."""
    return with_metrics_tls(copy.deepcopy(base_inventory()), metrics_pki)


# ---- the hub tier (test_tier_deploy.py, test_tier_failover.py) ------------------------------

TIER_SUBNET = "10.214.0"
#: etcd on the two database hosts and on hub-1, which is also the CA (saves a container).
TIER_DB_HOSTS = ("db-1", "db-2")
TIER_HUB_HOSTS = ("hub-1", "hub-2")
TIER_NODE_HOSTS = ("node-a", "node-b", "node-c")
TIER_ETCD_HOSTS = ("db-1", "db-2", "hub-1")
TIER_HOSTS = [
    HostSpec("db-1", f"{TIER_SUBNET}.11"),
    HostSpec("db-2", f"{TIER_SUBNET}.12"),
    HostSpec("hub-1", f"{TIER_SUBNET}.21"),
    HostSpec("hub-2", f"{TIER_SUBNET}.22"),
    HostSpec("node-a", f"{TIER_SUBNET}.31"),
    HostSpec("node-b", f"{TIER_SUBNET}.32"),
    HostSpec("node-c", f"{TIER_SUBNET}.33"),
]
ENTERPRISE_C = "0566988259"
TIER_ENTERPRISES = {"node-a": ENTERPRISE_A, "node-b": ENTERPRISE_B, "node-c": ENTERPRISE_C}
#: The secrets' variables (vault-encrypted in the test, like an operator's group_vars/all/vault.yml).
TIER_SECRET_VARS = (
    "crossroads_postgresql_superuser_password",
    "crossroads_postgresql_replication_password",
    "crossroads_postgresql_hub_password",
)


@pytest.fixture(scope="session")
def tier_lab(
    deploy_bin: Path, wheelhouse: Path, artifacts: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lab]:  # fmt: skip
    """The hub tier's hosts on 10.214.0.0/24: TIER_DB_HOSTS, TIER_HUB_HOSTS, TIER_NODE_HOSTS.

    Session scope, requested first by test_tier_deploy.py: ``lab`` (module scope) is down by then.
    """
    yield from _running_lab(
        Lab(workdir=tmp_path_factory.mktemp("tier-lab"), hosts=list(TIER_HOSTS),
            wheelhouse=wheelhouse, subnet=TIER_SUBNET),
        artifacts, "tier-boot",
    )  # fmt: skip


@pytest.fixture(scope="session")
def tier_ansible(tier_lab: Lab, deploy_bin: Path, artifacts: Path) -> Ansible:
    return Ansible(tier_lab, deploy_bin, artifacts, prefix="tier-")


def tier_inventory() -> dict[str, Any]:
    """The tier lab's inventory (secrets aside: see ``tier_secrets``)."""
    ip = {h.name: h.ip for h in TIER_HOSTS}
    hub_addresses = [f"{ip[h]}:7443" for h in TIER_HUB_HOSTS]
    nodes = {}
    for i, host in enumerate(TIER_NODE_HOSTS):
        nodes[host] = {
            "ansible_host": ip[host],
            "crossroads_node_enterprise_number": TIER_ENTERPRISES[host],
            "crossroads_node_institution_name": f"Institution {host[-1].upper()}",
            "crossroads_node_sector": 17,
            # Spread the nodes over the replicas: every other one prefers hub-2.
            "crossroads_node_hub_addresses": hub_addresses[i % 2:] + hub_addresses[:i % 2],
        }
    return {
        "all": {
            "vars": {
                **LAB_VARS,
                # Small for the test hosts (2 cores, 7 hosts); 2 replicas x (8 + 7) + admin.
                "crossroads_postgresql_shared_buffers": "16MB",
                "crossroads_postgresql_max_connections": 50,
            },
            "children": {
                "crossroads_ca": {"hosts": {"hub-1": {}}},
                "crossroads_etcd": {"hosts": {h: {} for h in TIER_ETCD_HOSTS}},
                "crossroads_postgresql": {"hosts": {h: {} for h in TIER_DB_HOSTS}},
                "crossroads_hub": {
                    "hosts": {
                        h: {"crossroads_hub_tls_ip_addresses": [ip[h]]} for h in TIER_HUB_HOSTS
                    },
                    "vars": {
                        "crossroads_hub_store_backend": "postgresql",
                        "crossroads_hub_directory_services": [DEMO_SERVICE],
                        "crossroads_hub_directory_authorizations": [
                            {"id": "demo-sector-17", "service_id": "demo.message", "sector": 17}
                        ],
                    },
                },
                "crossroads_nodes": {"hosts": nodes},
                # Every host's address, once (the groups above only name them).
                "tier_lab": {"hosts": {h.name: {"ansible_host": h.ip} for h in TIER_HOSTS}},
            },
        }
    }


@pytest.fixture(scope="session")
def tier_secrets(tier_lab: Lab, deploy_bin: Path) -> tuple[dict[str, str], list[str]]:
    """Random passwords in a vault-encrypted vars file; returns them and the ansible-playbook
    arguments that load it (``-e @FILE --vault-password-file FILE``)."""
    values = {name: secrets.token_urlsafe(18) for name in TIER_SECRET_VARS}
    vault_pass = tier_lab.workdir / "vault-pass"
    vault_pass.write_text(secrets.token_urlsafe(24) + "\n")
    vault_pass.chmod(0o600)
    path = tier_lab.workdir / "secrets.yml"
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    subprocess.run(
        [str(deploy_bin / "ansible-vault"), "encrypt", "--vault-password-file", str(vault_pass),
         str(path)], check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert path.read_text().startswith("$ANSIBLE_VAULT;"), "the secrets file is not encrypted"
    return values, ["-e", f"@{path}", "--vault-password-file", str(vault_pass)]


@pytest.fixture(scope="session")
def tier_deployed(
    tier_ansible: Ansible, tier_secrets: tuple[dict[str, str], list[str]]
) -> PlaybookRun:
    """site.yml run once on the tier lab (the result, failed or not; tests check it)."""
    return tier_ansible.playbook("site.yml", tier_inventory(), *tier_secrets[1])
