"""The distribution as pip, an auditor and an operator see it: the wheel's metadata (an SPDX
license expression with its license file, classifiers), a build without deprecation
warnings, and ``crossroads --version``."""

from __future__ import annotations

import email.parser
import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERSION = importlib.metadata.version("crossroads")


def test_the_wheel_builds_without_warnings_and_declares_its_license(tmp_path: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for warning in ("Warning", "deprecated"):  # setuptools' license-table warning had a cut-off
        assert warning not in output, output
    (wheel,) = tmp_path.glob("crossroads-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"crossroads-{VERSION}.dist-info/METADATA").decode()
    meta = email.parser.Parser().parsestr(metadata)
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert f"crossroads-{VERSION}.dist-info/licenses/LICENSE" in names
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression


def test_crossroads_version_names_the_installed_distribution() -> None:
    proc = subprocess.run([sys.executable, "-P", "-m", "node.cli", "--version"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"crossroads {VERSION}"
