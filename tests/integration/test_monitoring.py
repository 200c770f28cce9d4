"""The metrics as Prometheus sees them, and deploy/monitoring/ against them: ``promtool check
metrics`` on real scrapes of a running hub and node (in process, real mTLS traffic first:
envelopes, a consultation, a refused call); the alert rules checked and unit-tested with
``promtool``; every metric name the rules and the dashboard use exported by those scrapes.

promtool comes from Debian's prometheus package (tests/install-monitoring.sh, run by ``make
test``): without it these tests fail, they do not skip."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import grpc
import pytest
import yaml

from node.client import consult, make_envelope, serve_answers
from node.core.directory import Authorization, Integration, Period, Service
from node.testing import DEMO_SERVICE, default_directory
from node.wire.gen.crossroads.v1 import consult_pb2 as cpb
from node.wire.gen.crossroads.v1 import directory_pb2, directory_pb2_grpc
from tests.conftest import A, B, NetworkStarter, fetch_all, http_get, hub_channel, local_call

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
METRICS = {"metrics_listen": "127.0.0.1:0"}
SERVICE, CITIZEN = "income.status", "85073003328"
#: The one name the expressions may use that no daemon exports: Prometheus's own per target.
PROMETHEUS_OWN = frozenset({"up"})


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run tests/install-monitoring.sh (make test does)"
    return found


@dataclass
class Scrapes:
    hub: str
    node: str


async def _scrapes(start_network: NetworkStarter) -> Scrapes:
    """A hub and two nodes after real traffic: envelopes A -> B, a consultation of B by A, a
    call the hub refused; the hub's and A's /metrics."""
    since = Period(date(2020, 1, 1))
    seed = default_directory((A, B)) + [
        Service(SERVICE, 1, "consultation", "citizen", "fan_out", integration_required=True),
        *[Authorization(f"a-{e}", SERVICE, e) for e in (A, B)],
        *[Integration(CITIZEN, e, 1, phase=1, period=since) for e in (A, B)],
    ]
    net = await start_network(A, B, seed=seed, hub_overrides=METRICS, node_overrides=METRICS)
    envelopes = [make_envelope(DEMO_SERVICE, [B], b"b", sender_ticket=str(i)) for i in range(3)]
    _, seqs = await local_call(net.local_api(A), "submit", envelopes)
    await local_call(net.local_api(A), "outcomes", seqs, wait_ms=10_000)
    await fetch_all(net.local_api(B), 3)

    async def answer(envelope: object) -> tuple[int, bytes]:
        return cpb.SOURCE_DATA, b"income"

    ready = asyncio.Event()
    provider = asyncio.create_task(serve_answers(net.local_api(B), answer, ready))
    await asyncio.wait_for(ready.wait(), 5)
    for _ in range(100):
        if net.nodes[B].answering.session is not None:
            break
        await asyncio.sleep(0.01)
    question = make_envelope(SERVICE, [], b"", subject_citizen=CITIZEN, capacity=1,
                             sender_ticket="q-1")
    response = await asyncio.to_thread(consult, net.local_api(A), question, 5_000)
    assert response.status == cpb.DATA_FOUND
    provider.cancel()
    # A node's certificate on the directory's admin API: refused (counted by reason).
    key, cert = net.node_certs[A]
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await directory_pb2_grpc.DirectoryAdminStub(channel).Show(
                directory_pb2.ShowRequest(), timeout=5)
    texts = []
    for app in (net.hub, net.nodes[A]):
        status, body = await http_get(app.metrics.port, "/metrics")  # type: ignore[union-attr]
        assert status == 200
        texts.append(body.decode())
    return Scrapes(*texts)


def exported(text: str) -> set[str]:
    """Every series name a scrape offers: the families it declares (``# TYPE``), with a
    histogram's ``_bucket``, ``_sum`` and ``_count`` and a counter's ``_total``, and every
    sample's name."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{s}" for s in ("bucket", "sum", "count"))
            elif kind == "counter":
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


#: PromQL words that are not metric names.
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                       "group_right", "bool", "offset", "inf", "nan"})


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions
    (followed by ``(``), keywords, label names in ``{...}`` or in ``by (...)``-like lists,
    durations or strings."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word, rest = match.group(0), expr[match.end():].lstrip()
        if word.lower() in _KEYWORDS or rest.startswith("("):
            continue
        if match.start() > 0 and (expr[match.start() - 1].isdigit() or expr[match.start() - 1] == "."):
            continue  # 1e9, 14d
        names.add(word)
    return names


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return {rule.get("alert") or rule["record"]: rule["expr"]
            for group in rules["groups"] for rule in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return {f"{panel['title']} #{i}": target["expr"] for panel in dashboard["panels"]
            for i, target in enumerate(panel.get("targets", []))}


def test_the_expression_parser_finds_metric_names() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, instance) (rate(a_seconds_bucket{job="x"}[5m])))'
        " > 5 and on(instance) b_total offset 1h unless c == bool 1e9 or time() - d < 14 * 86400"
    ) == {"a_seconds_bucket", "b_total", "c", "d"}


async def test_scrapes_pass_promtool_check_metrics(start_network: NetworkStarter) -> None:
    scrapes = await _scrapes(start_network)
    for daemon, text in (("hub", scrapes.hub), ("node", scrapes.node)):
        run = subprocess.run([promtool(), "check", "metrics"], input=text, text=True,
                             capture_output=True, timeout=60)
        assert run.returncode == 0 and not run.stdout.strip() and not run.stderr.strip(), (
            daemon, run.stdout, run.stderr)


async def test_rules_and_dashboard_use_only_exported_metrics(
        start_network: NetworkStarter) -> None:
    scrapes = await _scrapes(start_network)
    names = exported(scrapes.hub) | exported(scrapes.node) | PROMETHEUS_OWN
    expressions = {**alert_expressions(), **dashboard_expressions()}
    assert len(expressions) >= 20
    unknown = {where: sorted(metric_names(expr) - names) for where, expr in expressions.items()
               if metric_names(expr) - names}
    assert not unknown, unknown
    # Every exported crossroads_* family is used somewhere (a new metric gets a panel or an
    # alert, or is named here as deliberately unused).
    used = set().union(*map(metric_names, expressions.values()))
    families = {n for n in names if n.startswith("crossroads_")}
    assert all(any(u == f or u.startswith(f + "_") for u in used) for f in families
               if not f.endswith(("_bucket", "_sum", "_count", "_total", "_created"))
               and f not in UNUSED), sorted(
        f for f in families if not any(u == f or u.startswith(f + "_") for u in used))


#: Exported, on no panel and in no alert: informational, read by hand.
UNUSED = frozenset({
    "crossroads_build_info", "crossroads_hub_audit_last_seq", "crossroads_hub_crl_number",
    "crossroads_node_crl_number", "crossroads_node_hub_acknowledged_sequence",
    "crossroads_node_hub_address", "crossroads_node_directory_revision",
    "crossroads_hub_directory_revision", "crossroads_node_directory_connected",
})


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    check = subprocess.run([promtool(), "check", "rules", str(MONITORING / "alerts.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run([promtool(), "test", "rules", "rules.test.yml"], cwd=MONITORING,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert has at least one unit test, and a runbook entry in docs/OPERATIONS.md.
    tests = yaml.safe_load((MONITORING / "rules.test.yml").read_text())
    covered = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    alerts = {name for name in alert_expressions() if not name.startswith("crossroads:")}
    assert alerts <= covered, sorted(alerts - covered)
    runbook = (MONITORING.parents[1] / "docs" / "OPERATIONS.md").read_text()
    assert all(f"#### {name}" in runbook for name in alerts), sorted(
        name for name in alerts if f"#### {name}" not in runbook)
