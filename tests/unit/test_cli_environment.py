"""The command line's shared vocabulary: ``--local-api`` and ``--config`` default to
``$CROSSROADS_LOCAL_API`` and ``$CROSSROADS_CONFIG`` (a flag given wins; without either the
command refuses, naming the flag), and the shell completion answers through argcomplete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli.crossroads import build_parser


def test_local_api_and_config_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSROADS_LOCAL_API", "unix:/run/crossroads/node.sock")
    monkeypatch.setenv("CROSSROADS_CONFIG", "/etc/crossroads/node.toml")
    parser = build_parser()
    assert parser.parse_args(["status"]).local_api == "unix:/run/crossroads/node.sock"
    assert parser.parse_args(["inbox", "--local-api", "127.0.0.1:7445"]).local_api == \
        "127.0.0.1:7445"
    assert parser.parse_args(["node", "check-config"]).config == "/etc/crossroads/node.toml"
    assert parser.parse_args(["hub", "serve", "--config", "hub.toml"]).config == "hub.toml"


def test_without_the_flag_or_the_variable_the_command_names_the_flag(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CROSSROADS_LOCAL_API", raising=False)
    monkeypatch.delenv("CROSSROADS_CONFIG", raising=False)
    for argv, flag in ((["status"], "--local-api"), (["node", "init"], "--config")):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(argv)
        assert exc.value.code == 2
        assert f"the following arguments are required: {flag}" in capsys.readouterr().err


def test_the_shell_completes_commands_and_flags(tmp_path: Path) -> None:
    def complete(line: str) -> list[str]:
        out = tmp_path / "completions"
        env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line,
               "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
               "_ARGCOMPLETE_IFS": "\n"}
        proc = subprocess.run([sys.executable, "-P", "-m", "node.cli"], env=env,
                              capture_output=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        return sorted(word.strip() for word in out.read_text().split("\n"))

    assert complete("crossroads au") == ["audit"]
    assert {"--local-api", "--json"} <= set(complete("crossroads status --"))
