"""What ``crossroads bench`` reads from a result file (figures and their better direction, the
comparison), the time series a phase records, and the progress line on a terminal and in a
log."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from benchmarks.progress import Progress, latency_curve, rate_series
from benchmarks.report import CompareError, compare, figures, series_lines

E2E = {
    "benchmark": "e2e",
    "summary": {"e2e": {"envelopes_per_s": 20_000.0, "batch_latency_ms_p99": 900.0,
                        "cpu_us_per_envelope": {"hub": 30.0}, "machine_cores_busy": 1.7,
                        "runs": 3},
                "ratio": 0.02},
    "e2e": [{"envelopes_per_s": 1.0}],  # the runs: the summary's medians count, not these
}
CONSULT = {
    "benchmark": "consult",
    "rates": [{"offered_per_s": 500, "achieved_per_s": 499.0,
               "latency_ms": {"p50": 5.0, "p99": 12.0, "max": 40.0},
               "where_ms": {"hub_commit": {"p50": 1.0}}}],
}


def test_figures_are_found_by_key_with_the_better_direction() -> None:
    assert figures(E2E) == {
        "e2e.envelopes_per_s": {"value": 20_000.0, "better": "higher"},
        "e2e.batch_latency_ms_p99": {"value": 900.0, "better": "lower"},
        "e2e.cpu_us_per_envelope.hub": {"value": 30.0, "better": "lower"},
        "ratio": {"value": 0.02, "better": "higher"},
    }
    assert figures(CONSULT) == {  # offered rate, max and breakdowns are no figures
        "rates.500/s.achieved_per_s": {"value": 499.0, "better": "higher"},
        "rates.500/s.latency_ms.p50": {"value": 5.0, "better": "lower"},
        "rates.500/s.latency_ms.p99": {"value": 12.0, "better": "lower"},
    }
    audit = {"benchmark": "audit", "queries": {"heavy": {"n": 30, "p50": 80.0, "mean": 82.0}},
             "log": {"records_per_s": 40_000}}  # building the log is no figure
    assert figures(audit) == {"queries.heavy.p50": {"value": 80.0, "better": "lower"}}


def test_compare_gives_new_over_old_and_refuses_another_program() -> None:
    new = {"benchmark": "e2e", "summary": {"e2e": {"envelopes_per_s": 25_000.0,
                                                   "batch_latency_ms_p99": 450.0}}}
    out = compare(new, E2E, Path("old.json"))
    assert out["figures"] == {
        "e2e.envelopes_per_s": {"old": 20_000.0, "new": 25_000.0, "ratio": 1.25,
                                "better": "higher"},
        "e2e.batch_latency_ms_p99": {"old": 900.0, "new": 450.0, "ratio": 0.5,
                                     "better": "lower"},
    }
    with pytest.raises(CompareError, match="old.json is a result of consult, not of e2e"):
        compare(new, CONSULT, Path("old.json"))


def test_every_series_entry_is_a_line_named_by_where_it_is() -> None:
    runs = [{"tier": tier, "series": {"throughput": [[1.0, 2.0]]}}
            for tier in ("sqlite", "sqlite", "postgresql x1")]
    results = {"benchmark": "e2e", "e2e": runs, "summary": {"series": {}}}
    assert [name for name, _ in series_lines(results)] == [
        "e2e sqlite run 1", "e2e sqlite run 2", "e2e postgresql x1"]


def test_rate_series_counts_per_step_and_latency_curve_by_percentile() -> None:
    events = [(10.0 + k / 100, 10) for k in range(100)]  # 1,000 per second for 1 s
    points = rate_series(events, 10.0, 11.0, steps=4)
    assert [t for t, _ in points] == [0.25, 0.5, 0.75, 1.0]
    assert sum(rate * 0.25 for _, rate in points) == pytest.approx(1_000)
    assert rate_series([(5.0, 1)], 10.0, 11.0, steps=2) == [[0.5, 0.0], [1.0, 0.0]]
    curve = dict((p, v) for p, v in latency_curve([float(v) for v in range(1, 101)]))
    assert curve[0] == 1 and curve[50] == pytest.approx(50.5) and curve[100] == 100


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_updates_in_place_on_a_terminal_and_writes_lines_to_a_log() -> None:
    tty = _Terminal()
    progress = Progress("phase", total=100, unit="envelopes", stream=tty, interval=0)
    progress.update(40)
    progress.close(100)
    assert tty.getvalue().startswith("\r\x1b[Kphase: 40/100 envelopes (40%), ")
    assert tty.getvalue().count("\n") == 1 and "100/100 envelopes (100%)" in tty.getvalue()

    log = io.StringIO()
    progress = Progress("phase", total=100, stream=log)  # plain lines every 5 s at most
    for done in range(1, 101):
        progress.update(done)
    progress.close()
    lines = log.getvalue().splitlines()
    assert lines[-1].startswith("phase: 100/100 envelopes (100%)") and lines[-1].endswith("done")
    assert len(lines) == 1 and "\r" not in log.getvalue()
