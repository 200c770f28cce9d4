"""The benchmark harness on both hub backends, at tiny sizes: ``benchmarks.e2e`` measures a
SQLite hub and a hub on PostgreSQL in one run, ``benchmarks.consult`` a hub on PostgreSQL;
every envelope and question arrives, the audit chain verifies, and the results record the
tier and the database server's CPU (real processes, a throw-away PostgreSQL)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from benchmarks import consult, e2e

pytestmark = pytest.mark.slow


def _results(out: Path, kind: str) -> dict:  # type: ignore[type-arg]
    (path,) = out.glob(f"{kind}-*.json")
    return dict(json.loads(path.read_text()))


def test_e2e_measures_sqlite_and_postgresql_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert e2e.main(["--envelopes", "2000", "--warmup", "500", "--batch", "500", "--no-relay",
                     "--backend", "sqlite,postgresql", "--workdir", str(tmp_path / "work"),
                     "--out", str(out)]) == 0
    results = _results(out, "e2e")
    assert results["parameters"]["tiers"] == ["sqlite", "postgresql x1"]
    runs = {r["tier"]: r for r in results["e2e"]}
    assert set(runs) == {"sqlite", "postgresql x1"}
    for tier, run in runs.items():
        assert run["envelopes"] == 2000 and run["checks"]["refused"] == 0, tier
        assert run["checks"]["audit"]["ok"] and run["checks"]["audit"]["records"] == 5000, tier
    pg = runs["postgresql x1"]
    assert (pg["backend"], pg["hubs"]) == ("postgresql", 1)
    assert pg["postgresql"]["settings"]["synchronous_commit"] == "on"
    assert pg["cpu"]["processes"]["postgresql"]["cpu_s"] > 0
    assert pg["cpu"]["tier_us_per_envelope"]["postgresql"] > 0
    assert runs["sqlite"]["cpu"]["tier_us_per_envelope"]["postgresql"] is None
    assert set(results["summary"]["tiers"]) == {"sqlite", "postgresql x1"}


def test_consult_on_postgresql_records_latency_per_rate(tmp_path: Path) -> None:
    out = tmp_path / "results"
    term = signal.getsignal(signal.SIGTERM)  # the benchmark ends on SIGTERM: not pytest
    try:
        code = consult.main(["--rates", "50,100", "--seconds", "1", "--warmup-seconds", "0.5",
                             "--citizens", "100", "--probe", "0", "--backend", "postgresql",
                             "--workdir", str(tmp_path / "work"), "--out", str(out)])
    finally:
        signal.signal(signal.SIGTERM, term)
    assert code == 0
    results = _results(out, "consult")
    assert results["tier"]["backend"] == "postgresql" and results["status"] == "ok"
    assert [r["offered_per_s"] for r in results["rates"]] == [50, 100]
    for rate in results["rates"]:
        assert rate["statuses"] == {"DATA_FOUND": rate["offered_per_s"]}
        assert rate["latency_ms"]["p50"] <= rate["latency_ms"]["p99"]
        assert rate["cpu"]["tier_us_per_envelope"]["postgresql"] > 0
    assert set(results["repeats"]) == {"50", "100"}
    assert results["checks"]["verify"]["ok"]


def test_more_hubs_than_one_need_postgresql(capsys) -> None:  # type: ignore[no-untyped-def]
    assert e2e.main(["--hubs", "2"]) == 2
    assert consult.main(["--hubs", "2", "--backend", "sqlite"]) == 2
    assert capsys.readouterr().err.count("--hubs N > 1 needs --backend postgresql") == 2
