"""The README's walkthrough runs literally: its commands (the shell block after
``<!-- walkthrough -->``), in order, on a fresh directory, each exiting 0, with what the
comments promise (the envelope accepted and read, the consultation answered, the audit
verified). ``.venv/bin/`` is this checkout's environment; nothing else is changed."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough() -> list[str]:
    """The commands of the walkthrough block, continuation lines joined, comments dropped."""
    text = README.read_text()
    block = re.search(r"<!-- walkthrough -->\n```sh\n(.*?)```", text, re.S)
    assert block is not None, "README.md lost its walkthrough block"
    joined = block.group(1).replace("\\\n", " ")
    return [shlex.join(shlex.split(line, comments=True)) for line in joined.splitlines()
            if line.strip()]


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    commands = walkthrough()
    assert commands[0].startswith(".venv/bin/crossroads sandbox up")
    assert commands[-1].startswith(".venv/bin/crossroads sandbox down")
    venv_bin = Path(sys.executable).parent
    outputs = []
    try:
        for command in commands:
            argv = shlex.split(command)
            argv[0] = str(venv_bin / Path(argv[0]).name)  # .venv/bin/<tool>: this checkout's
            proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                                  timeout=180, check=False)
            assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
            outputs.append(proc.stdout)
    finally:
        subprocess.run([str(venv_bin / "crossroads"), "sandbox", "down", "--dir",
                        "crossroads-sandbox"], cwd=tmp_path, capture_output=True, timeout=60,
                       check=False)  # whatever failed, no process is left behind

    def output_of(command: str) -> str:
        return next(out for c, out in zip(commands, outputs, strict=True)
                    if c.startswith(f".venv/bin/crossroads {command} "))

    assert output_of("sandbox status").startswith("sandbox in ")
    assert "all up" in output_of("sandbox status")
    assert output_of("send").startswith("ACCEPTED")
    assert "payload='hello'" in output_of("inbox")
    assert output_of("consult").startswith("DATA_FOUND")
    assert output_of("audit verify").startswith("audit log OK")
