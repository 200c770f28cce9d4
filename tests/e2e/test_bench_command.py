"""``crossroads bench`` as an operator runs it (subprocesses, the quickest real part: micro):
a JSON result with its time series and a PNG plot (drawn again by ``crossroads bench plot``),
progress lines on stderr, ``--compare`` with the ratio per figure and its refusals, the old
``crossroads bench -- ARGS`` form, and a run without matplotlib (the ``bench`` extra missing:
JSON written, exit 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: micro at its smallest: two cases, --quick's five repeats of two runs each.
MICRO = ["micro", "--quick", "--", "--only", "check_batch", "--only", "stamp"]
#: Runs ``crossroads`` with matplotlib made unimportable (a finder in front of every other).
WITHOUT_MATPLOTLIB = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "matplotlib":
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Block())
from node.cli import main
sys.exit(main(sys.argv[1:]))
"""


def bench(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    head = ["-c", code, "bench"] if code else ["-m", "node.cli", "bench"]
    proc = subprocess.run([sys.executable, *head, *args], capture_output=True, text=True,
                          timeout=240)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def only(out: Path, pattern: str) -> Path:
    (path,) = sorted(out.glob(pattern))
    return path


def test_a_run_writes_json_with_series_and_a_png_and_shows_progress(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = bench(*MICRO[:2], "--out", str(out), *MICRO[2:])
    assert proc.returncode == 0, proc.stderr
    path = only(out, "micro-*.json")
    results = json.loads(path.read_text())
    png = only(out, "micro-*.png")
    assert results["plot"] == str(png) and png == path.with_suffix(".png")
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert set(results["cases"]) == {"check_batch", "stamp"}
    for case in results["cases"].values():
        series = case["series"]
        assert len(series["throughput"]) == 5  # one point per repeat
        times = [t for t, _ in series["throughput"]]
        assert times == sorted(times) and all(rate > 0 for _, rate in series["throughput"])
        assert [p for p, _ in series["latency"]][:4] == [0, 10, 25, 50]
    # Progress: one line per case on stderr (not a terminal: plain lines), nothing on stdout.
    assert "benchmarks: micro check_batch: 5/5 repeats (100%)" in proc.stderr
    assert "benchmarks: micro" not in proc.stdout
    assert f"crossroads bench: micro: {path}, {png}" in proc.stdout
    png.unlink()  # drawn again from the JSON alone
    replot = bench("plot", str(path))
    assert replot.returncode == 0 and replot.stdout.strip() == str(png)
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_compare_prints_the_ratio_per_figure_and_refuses_other_files(tmp_path: Path) -> None:
    out = tmp_path / "results"
    first = bench(*MICRO[:2], "--out", str(out), "--no-plot", "--json", *MICRO[2:])
    assert first.returncode == 0, first.stderr
    old_path = only(out, "micro-*.json")
    old = json.loads(old_path.read_text())
    assert not list(out.glob("*.png"))  # --no-plot
    report = json.loads(first.stdout)  # --json: the report alone on stdout
    assert report["exit"] == 0 and report["parts"]["micro"]["result"] == str(old_path)
    assert report["parts"]["micro"]["figures"]["cases.stamp.us_per_envelope_median"] == (
        old["cases"]["stamp"]["us_per_envelope_median"])

    proc = bench(*MICRO[:2], "--out", str(out), "--no-plot", "--compare", str(old_path),
                 *MICRO[2:])
    assert proc.returncode == 0, proc.stderr
    assert f"compared with {old_path}" in proc.stdout
    assert "new/old" in proc.stdout and "cases.stamp.us_per_envelope_median" in proc.stdout
    (new_path,) = set(out.glob("micro-*.json")) - {old_path}
    stored = json.loads(new_path.read_text())["comparison"]
    assert stored["against"] == str(old_path)
    row = stored["figures"]["cases.check_batch.us_per_envelope_median"]
    new_value = json.loads(new_path.read_text())["cases"]["check_batch"]["us_per_envelope_median"]
    assert row["old"] == old["cases"]["check_batch"]["us_per_envelope_median"]
    assert row["new"] == new_value and row["better"] == "lower"
    assert row["ratio"] == pytest.approx(new_value / row["old"], abs=0.001)

    other = tmp_path / "e2e-old.json"
    other.write_text(json.dumps({"benchmark": "e2e", "summary": {"envelopes_per_s": 1.0}}))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    for path, why in ((other, f"{other} is a result of e2e, not of micro"),
                      (garbage, f"{garbage} is not a readable result file")):
        refused = bench(*MICRO[:2], "--out", str(out), "--compare", str(path))
        assert refused.returncode == 2
        assert f"crossroads bench: cannot compare: {why}" in refused.stderr
    assert len(list(out.glob("micro-*.json"))) == 2  # refused before running


def test_arguments_after_the_separator_still_go_to_e2e() -> None:
    proc = bench("--", "--no-such-option")
    assert proc.returncode == 2
    assert "python -m benchmarks.e2e" in proc.stderr  # e2e's own parser refused it
    assert "unrecognized arguments: --no-such-option" in proc.stderr


def test_without_matplotlib_the_json_is_written_and_the_extra_named(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = bench(*MICRO[:2], "--out", str(out), *MICRO[2:], code=WITHOUT_MATPLOTLIB)
    assert proc.returncode == 3, proc.stderr
    assert "matplotlib is not installed" in proc.stderr
    assert "pip install 'crossroads[bench]'" in proc.stderr
    results = json.loads(only(out, "micro-*.json").read_text())
    assert results["plot"] is None and results["cases"]["stamp"]["series"]["throughput"]
    assert not list(out.glob("*.png"))
