"""A misconfigured daemon refuses to start, naming the key to fix (real processes, real PKI).

Each case starts ``python -m node.cli hub|node serve`` and expects exit status 2 with the
config key in stderr, before anything is served; ``check-config`` lists every problem at once.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from node.testing import NetworkLayout, Pki, write_toml
from tests.conftest import A, B


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> NetworkLayout:
    return NetworkLayout(tmp_path_factory.mktemp("start-refusals"), institutions=(A, B))


def _run(layout: NetworkLayout, name: str, role: str, table: dict[str, Any],
         action: str = "serve") -> subprocess.CompletedProcess[str]:
    config = layout.root / f"{name}.toml"
    write_toml(config, table)
    args = [sys.executable, "-P", "-m", "node.cli", role, action, "--config", str(config)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=layout.root)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{role} {action} did not refuse to start (still running after 30 s)")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _stale_crl(layout: NetworkLayout) -> Path:
    path = layout.root / "stale-crl.pem"
    path.write_bytes(layout.pki.crl_bytes(number=99, pem=True,
                                          next_update=datetime.now(UTC) - timedelta(days=1)))
    return path


def _foreign(layout: NetworkLayout) -> Pki:
    return Pki(layout.root / "foreign-pki", "demo")


Case = Callable[[NetworkLayout], tuple[str, dict[str, Any], tuple[str, ...]]]


def _node(layout: NetworkLayout, **over: Any) -> dict[str, Any]:
    return _overridden(layout.node_table(A, "127.0.0.1:1"), layout, over)


def _hub(layout: NetworkLayout, **over: Any) -> dict[str, Any]:
    return _overridden(layout.hub_table(), layout, over)


def _overridden(table: dict[str, Any], layout: NetworkLayout,
                over: dict[str, Any]) -> dict[str, Any]:
    """``table`` with a data directory of its own and ``over`` merged in (tables by key)."""
    table["data_dir"] = str(layout.root / "data" / str(id(over)))
    for key, value in over.items():
        if isinstance(value, dict):
            table.setdefault(key, {}).update(value)
        else:
            table[key] = value
    return table


CASES: dict[str, Case] = {
    # Today it registers as the other institution and takes over its deliveries.
    "node-other-enterprise": lambda lay: ("node", _node(lay, enterprise_number=B),
                                          ("enterprise_number", "tls.cert")),
    "hub-with-node-certificate": lambda lay: (
        "hub", _hub(lay, tls={"cert": str(lay.node_certs[A][1]), "key": str(lay.node_certs[A][0])}),
        ("tls.cert", "hub certificate")),
    "node-with-hub-certificate": lambda lay: (
        "node", _node(lay, tls={"cert": str(lay.hub_cert), "key": str(lay.hub_key)}),
        ("tls.cert", "institution certificate")),
    "hub-wrong-network": lambda lay: ("hub", _hub(lay, network="elsewhere"),
                                      ("tls.ca_cert", "tls.cert", "network")),
    "hub-foreign-ca": lambda lay: ("hub", _hub(lay, tls={"ca_cert": str(_foreign(lay).ca_cert)}),
                                   ("tls.cert", "not issued by the CA in tls.ca_cert")),
    "hub-key-of-another-certificate": lambda lay: ("hub", _hub(lay, tls={"key": str(lay.admin_key)}),
                                                  ("tls.key", "not the private key")),
    "hub-expired-certificate": lambda lay: (
        "hub", _hub(lay, tls=dict(zip(("key", "cert"), map(str, lay.pki.issue(
            "hub", basename="expired-hub", not_before=datetime.now(UTC) - timedelta(days=30),
            not_after=datetime.now(UTC) - timedelta(days=1))), strict=True))),
        ("tls.cert", "expired")),
    "hub-missing-crl": lambda lay: ("hub", _hub(lay, tls={"crl": str(lay.root / "no-crl.pem")}),
                                    ("tls.crl", "cannot read")),
    "hub-crl-of-another-ca": lambda lay: (
        "hub", _hub(lay, tls={"crl": str(_foreign(lay).crl())}),
        ("tls.crl", "not signed by this network's CA")),
    "hub-stale-crl": lambda lay: ("hub", _hub(lay, tls={"crl": str(_stale_crl(lay))}),
                                  ("tls.crl", "past its nextUpdate")),
    # [metrics] (node/metrics_web.py): TLS and basic authentication of the metrics endpoint.
    "hub-metrics-cert-without-key": lambda lay: (
        "hub", _hub(lay, metrics_listen="127.0.0.1:0", metrics={"tls_cert": str(lay.hub_cert)}),
        ("metrics.tls_cert is given without metrics.tls_key",)),
    "node-metrics-unreadable-key": lambda lay: (
        "node", _node(lay, metrics_listen="127.0.0.1:0", metrics={
            "tls_cert": str(lay.hub_cert), "tls_key": str(lay.root / "no-such.key")}),
        ("metrics.tls_key", "cannot read")),
    "hub-metrics-key-of-another-certificate": lambda lay: (
        "hub", _hub(lay, metrics_listen="127.0.0.1:0", metrics={
            "tls_cert": str(lay.hub_cert), "tls_key": str(lay.admin_key)}),
        ("metrics.tls_key", "is not the unencrypted PEM key")),
    "hub-metrics-password-not-hashed": lambda lay: (
        "hub", _hub(lay, metrics_listen="127.0.0.1:0",
                    metrics={"basic_auth_users": {"prometheus": "secret"}}),
        ("metrics.basic_auth_users.prometheus is not a bcrypt hash",)),
    # Today served on port 4464 (70000 mod 65536).
    "hub-port-out-of-range": lambda lay: ("hub", _hub(lay, listen="127.0.0.1:70000"),
                                          ("listen", "out of range")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_daemon_refuses_to_start_naming_the_key(layout: NetworkLayout, case: str) -> None:
    role, table, expected = CASES[case](layout)
    done = _run(layout, case, role, table)
    assert done.returncode == 2, done.stderr[-2000:]
    for text in expected:
        assert text in done.stderr, (text, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    assert not (Path(table["data_dir"]) / ("hub.sqlite" if role == "hub" else "node.sqlite")
                ).exists(), "the daemon opened its store before refusing"


def test_check_config_lists_every_problem_at_once(layout: NetworkLayout) -> None:
    table = _node(layout, enterprise_number=B, listen="127.0.0.1:70000", surprise=1,
                  tls={"key": str(layout.admin_key)})
    done = _run(layout, "check-bad", "node", table, action="check-config")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("crossroads: error")]
    keys = ["listen", "unknown setting surprise", "tls.key", "enterprise_number"]
    for key in keys:
        assert any(key in line for line in lines), (key, done.stderr)
    assert len(lines) >= len(keys)
    ok = _run(layout, "check-ok", "hub", _hub(layout), action="check-config")
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
