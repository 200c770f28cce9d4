"""``crossroads sandbox`` beyond the README's walkthrough (tests/e2e/test_readme.py): a second
``up`` while it runs is refused, ``status`` fails when a process died, ``down`` after a
crash stops what is left, and ``up`` again starts on the same state (no second first start)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import check_json_lines

pytestmark = pytest.mark.slow


def crossroads(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", "-m", "node.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180, check=False)


def test_the_sandbox_refuses_a_second_up_reports_a_dead_process_and_restarts(
        tmp_path: Path) -> None:
    box = tmp_path / "box"
    try:
        assert crossroads("sandbox", "up", "--dir", str(box), "--nodes", "2",
                          cwd=tmp_path).returncode == 0
        again = crossroads("sandbox", "up", "--dir", str(box), cwd=tmp_path)
        assert again.returncode == 1 and "already runs" in again.stderr
        processes = json.loads((box / "sandbox.json").read_text())["processes"]
        assert set(processes) == {"hub", "0212344876", "0566988259", "answer-0566988259"}
        os.kill(processes["hub"], signal.SIGKILL)
        status = crossroads("sandbox", "status", "--dir", str(box), cwd=tmp_path)
        assert status.returncode == 1 and "NOT all up" in status.stdout
        assert "hub NOT connected" in status.stdout
        down = crossroads("sandbox", "down", "--dir", str(box), cwd=tmp_path)
        assert down.returncode == 0 and down.stdout.startswith("stopped 3 processes")
        assert not (box / "sandbox.json").exists() and (box / "hub.toml").exists()
        up = crossroads("sandbox", "up", "--dir", str(box), "--nodes", "2", "--json",
                        cwd=tmp_path)
        assert up.returncode == 0, up.stderr
        (state,) = check_json_lines(up.stdout)  # the sandbox's processes and addresses
        assert state["dir"] == str(box.resolve()) and set(state["local_apis"]) == set(processes) & {
            "0212344876", "0566988259"}
        status = crossroads("sandbox", "status", "--dir", str(box), "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        running = check_json_lines(status.stdout)  # one line per process
        assert {r["process"] for r in running} == set(processes) and all(r["up"] for r in running)
        # The second start is no first start: the daemons run without --init.
        for pid in json.loads((box / "sandbox.json").read_text())["processes"].values():
            assert b"--init" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        down = crossroads("sandbox", "down", "--dir", str(box), "--purge", "--json", cwd=tmp_path)
        (stopped,) = check_json_lines(down.stdout)
        assert down.returncode == 0 and stopped["purged"] and len(stopped["stopped"]) == 4
    finally:
        crossroads("sandbox", "down", "--dir", str(box), "--purge", cwd=tmp_path)
    assert not box.exists()


def test_bad_requests_are_refused_with_a_reason(tmp_path: Path) -> None:
    nodes = crossroads("sandbox", "up", "--dir", "box", "--nodes", "9", cwd=tmp_path)
    assert nodes.returncode == 1 and "--nodes must be 2 to 7" in nodes.stderr
    nothing = crossroads("sandbox", "status", "--dir", "box", cwd=tmp_path)
    assert nothing.returncode == 1 and "no sandbox in" in nothing.stderr
    deep = "d" * 90
    too_deep = crossroads("sandbox", "up", "--dir", deep, cwd=tmp_path)
    assert too_deep.returncode == 1 and "too deep" in too_deep.stderr
