"""The stand-alone systemd units (deploy/systemd/) as systemd reads them: ``systemd-analyze
verify`` finds nothing to say (an unknown key or a bad value is a warning there, so any
output fails), and they run the daemon as a ``Type=notify`` service with a watchdog
(node/supervisor.py; tests/e2e/test_systemd_notify.py checks the daemon's side). Part of
``make test-deploy``, whose host preparation installs systemd."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.deploy
UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED = "/opt/crossroads/venv/bin/crossroads"  # where deploy/systemd/README.md installs it


@pytest.mark.parametrize("kind", ["hub", "node"])
def test_the_unit_verifies_cleanly_and_is_a_notify_service_with_a_watchdog(
        kind: str, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: run tests/deploy/prepare-host.sh")
    text = (UNITS / f"crossroads-{kind}.service").read_text()
    lines = set(text.splitlines())
    assert {"Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=on-failure"} <= lines
    assert f"ExecStart={INSTALLED} {kind} serve --config /etc/crossroads/{kind}.toml" in lines
    # Verified with this checkout's entry point in place of the installed one (it must exist).
    unit = tmp_path / f"crossroads-{kind}.service"
    unit.write_text(text.replace(INSTALLED, str(Path(sys.executable).parent / "crossroads")))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr
