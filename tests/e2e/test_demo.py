"""`make demo` works: the demo network runs every step and says OK (real processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.demo import WORKER, run_demo


def test_demo_runs_every_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(tmp_path / "demo", envelopes=300) == 0
    out = capsys.readouterr().out
    assert "pushed to Health insurer, Family allowances fund" in out
    assert "Unemployment office received mutation.employment from Contributions institution" in out
    assert "answer: DATA_FOUND" in out
    assert f"Who consulted my data? (citizen {WORKER}" in out
    assert "Audit chain: OK" in out and out.rstrip().splitlines()[-1].startswith("OK:")
