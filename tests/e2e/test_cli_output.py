"""One output style and one flag vocabulary across ``crossroads`` (pki/output.py;
docs/OPERATIONS.md, "Command-line output").

The commands are found in the parser tree, so a new one is covered (or fails here until it
is): every command either takes ``--json`` or is exempt with its reason; every command with
``--json`` is run against a real hub and nodes (real processes, certificates, SQLite) and each
line it prints is checked against the conventions; no visible flag uses a spelling the
vocabulary replaced; failures with ``--json`` are one JSON object on stderr with a reason."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.cli.crossroads import build_parser, main
from node.testing import DEMO_SERVICE, NetworkLayout, ProcessNetwork, write_toml
from node.wire.signed import public_path
from pki.output import ARTEFACTS, FORBIDDEN_FLAGS, Parser
from tests.conftest import A, B, C, check_json_lines
from tests.e2e.test_cli import CITIZEN, SEED

pytestmark = pytest.mark.slow

#: Commands without ``--json``, and why.
EXEMPT = {
    "hub serve": "a daemon: logs, no results",
    "node serve": "a daemon: logs, no results",
    "demo": "a demonstration that narrates",
    **{command: "an artefact, written as it is" for command in ARTEFACTS},
}
#: Commands with ``--json`` checked by another test (each runs a long-lived process).
ELSEWHERE = {
    "answer": "tests/e2e/test_cli.py::test_answer_and_consult_with_json",
    "sandbox up": "tests/e2e/test_sandbox.py",
    "sandbox status": "tests/e2e/test_sandbox.py",
    "sandbox down": "tests/e2e/test_sandbox.py",
    "bench": "tests/e2e/test_bench_command.py (a benchmark run)",
}
#: Exit statuses other than 0 (the record is printed all the same).
EXIT = {"consult": 1}  # demo.message is no consultation: refused, a negative answer


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every leaf command of the parser tree: ("audit verify", its parser), ..."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser
        return
    for name, child in subs[0].choices.items():
        yield from commands(child, (*path, name))


def _options(parser: argparse.ArgumentParser, visible: bool = True) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings
            if not visible or action.help != argparse.SUPPRESS}


def test_the_parser_uses_one_vocabulary() -> None:
    parser = build_parser()
    found = dict(commands(parser))
    for name, sub in found.items():
        forbidden = _options(sub) & set(FORBIDDEN_FLAGS)
        assert not forbidden, f"{name}: {forbidden} (say {[FORBIDDEN_FLAGS[f] for f in forbidden]})"
        json_actions = [a for a in sub._actions if "--json" in a.option_strings]
        if name in EXEMPT:
            assert not json_actions, f"{name} is exempt ({EXEMPT[name]}) but takes --json"
            continue
        assert json_actions, f"{name} takes no --json: add it, or exempt it with a reason"
        (action,) = json_actions
        assert isinstance(action, argparse._StoreTrueAction) and action.help and \
            action.help.startswith("print each"), f"{name}: --json is not the shared option"
    # The old spellings still parse, hidden.
    assert "--output" in _options(found["audit export"], visible=False)
    assert "--ca" in _options(found["directory show"], visible=False)


@dataclass
class World:
    net: ProcessNetwork
    offline: NetworkLayout
    tmp: Path

    @property
    def hub_toml(self) -> str:
        return str(self.net.root / "hub.toml")

    @property
    def admin(self) -> list[str]:
        return ["--hub", self.net.hub_address, "--ca-cert", str(self.net.pki.ca_cert),
                "--cert", str(self.net.admin_cert), "--key", str(self.net.admin_key)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("cli-output")
    offline = NetworkLayout(root / "offline", institutions=(A,))
    write_toml(offline.root / "hub.toml", offline.hub_table())
    write_toml(offline.root / "node.toml", offline.node_table(A, "127.0.0.1:7443"))
    with ProcessNetwork(root / "net", institutions=(A, B), seed=SEED) as net:
        net.start()
        yield World(net, offline, root)


def _pki(w: World) -> Callable[[str], list[str]]:
    ca, out = w.tmp / "ca", w.tmp / "issued"

    def argv(command: str) -> list[str]:
        return {
            "init-ca": ["--ca-dir", str(ca), "--network", "other"],
            "request": ["--out-dir", str(out), "--network", "other", "--profile", "node",
                        "--enterprise", C, "--basename", "requested"],
            "sign": ["--ca-dir", str(ca), "--csr", str(out / "requested.csr"), "--profile", "node",
                     "--out", str(out / "signed.crt")],
            "issue": ["--ca-dir", str(ca), "--out-dir", str(out), "--profile", "admin",
                      "--name", "alice"],
            "revoke": ["--ca-dir", str(ca), "--cert", str(out / "signed.crt")],
            "crl": ["--ca-dir", str(ca), "--out", str(w.tmp / "crl.pem")],
            "verify": ["--ca-cert", str(ca / "ca.crt"), "--cert", str(out / "admin-alice.crt")],
        }[command]
    return argv


def _cases(w: World) -> dict[str, list[str]]:
    """Each command with ``--json`` and its arguments, in the order they run."""
    hub_off, node_off = str(w.offline.root / "hub.toml"), str(w.offline.root / "node.toml")
    api_a, api_b = w.net.local_api(A), w.net.local_api(B)
    extract = w.tmp / "extract.json"
    pki = _pki(w)
    cases = {
        "hub init": ["--config", hub_off],
        "hub check-config": ["--config", hub_off],
        "hub backup": ["--config", hub_off, "--out", str(w.tmp / "hub-backup")],
        "hub restore": ["--config", hub_off, "--from", str(w.tmp / "hub-backup"), "--replace"],
        "node init": ["--config", node_off],
        "node check-config": ["--config", node_off],
        "node backup": ["--config", node_off, "--out", str(w.tmp / "node-backup")],
        "node restore": ["--config", node_off, "--from", str(w.tmp / "node-backup"),
                         "--replace"],
        "node accept-hub-state": ["--config", node_off],
        "send": ["--local-api", api_a, "--service", DEMO_SERVICE, "--to", B,
                 "--subject-citizen", CITIZEN, "--payload", "héllo", "--wait"],
        "inbox": ["--local-api", api_b, "--wait-ms", "10000", "--ack"],
        "consult": ["--local-api", api_a, "--service", DEMO_SERVICE, "--subject-citizen",
                    CITIZEN],
        "status": ["--local-api", api_a],
        "node status": ["--local-api", api_a],
        "audit verify": ["--config", w.hub_toml],
        "audit summary": ["--config", w.hub_toml],
        "audit who-consulted": [CITIZEN, "--config", w.hub_toml],
        "audit verify-export": [str(extract), "--key", str(public_path(w.net.directory_key))],
        "audit purge": ["--config", w.hub_toml, "--before", "2000-01-01"],
        **{f"pki {c}": pki(c) for c in ("init-ca", "request", "sign", "issue", "revoke", "crl",
                                        "verify")},
        "directory put-institution": ["--enterprise", C, "--sector", "17", "--name", "C"],
        "directory put-service": ["--id", "output.test", "--kind", "consultation",
                                  "--routing", "fan_out"],
        "directory put-authorization": ["--id", "output-auth", "--service", "output.test",
                                        "--institution", A],
        "directory put-subscription": ["--id", "output-sub", "--institution", A,
                                       "--service", "output.test"],
        "directory put-integration": ["--subject", CITIZEN, "--institution", C,
                                      "--capacity", "1"],
        "directory put-replacement": ["--old", "17073003384", "--new", CITIZEN],
        "directory revoke-cert": ["--serial", "0a:ff", "--institution", C],
        "directory remove": ["subscription", "output-sub"],
        "directory show": ["services"],
        "directory import": [str(w.tmp / "services.json"), "--dry-run"],
        "directory compact": [],
    }
    for name, argv in cases.items():
        if name.startswith("directory "):
            cases[name] = [*w.admin, *argv]
    return cases


def _prepare(w: World, name: str) -> None:
    """What a command needs from before (the artefacts the exempt commands write)."""
    if name == "audit verify-export":
        extract = w.tmp / "extract.json"
        assert main(["audit", "export", "--config", w.hub_toml, "--subject", CITIZEN,
                     "--out", str(extract)]) == 0
    if name == "directory import":
        assert main(["directory", "show", "services", *w.admin, "--format", "json"]) == 0


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """In process; ``hub``/``node`` commands in a process of their own (a daemon's set-up:
    faulthandler on the real stderr)."""
    if argv[0] in ("hub", "node"):
        done = subprocess.run([sys.executable, "-P", "-m", "node.cli", *argv],
                              capture_output=True, text=True, timeout=120, check=False)
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout, done.stderr
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_json_command_prints_json_lines(world: World, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    found = {name for name, sub in commands(build_parser()) if name not in EXEMPT}
    cases = _cases(world)
    assert found == set(cases) | set(ELSEWHERE), (
        f"commands with --json and no case here: {sorted(found - set(cases) - set(ELSEWHERE))}")
    for name, argv in cases.items():
        _prepare(world, name)
        shown = capsys.readouterr().out
        if name == "directory import":
            (world.tmp / "services.json").write_text(shown)
        code, out, err = _run([*name.split(), *argv, "--json"], capsys)
        assert code == EXIT.get(name, 0), (name, code, err)
        records = check_json_lines(out)
        assert records, f"{name} printed nothing"
        assert err == "", (name, err)
    shutil.rmtree(world.tmp / "issued", ignore_errors=True)


@pytest.mark.parametrize(("argv", "code", "reason"), [
    (["status", "--local-api", "unix:/nonexistent/node.sock"], 3, "NODE_UNREACHABLE"),
    (["send", "--local-api", "unix:/x", "--service", "s", "--to", B, "--count", "x"], 2,
     "USAGE"),
    (["directory", "show", "--hub", "127.0.0.1:1"], 2, "REFUSED"),
    (["pki", "verify", "--ca-cert", "/nonexistent/ca.crt", "--cert", "/nonexistent/c.crt"], 2,
     "REFUSED"),
    (["audit", "summary", "--db", "/nonexistent/hub.sqlite"], 2, "NOT_FOUND"),
    (["node", "check-config", "--config", "/nonexistent/node.toml"], 2, "CONFIG"),
    (["status", "--local-api", "unix:/x", "--surprise"], 2, "USAGE"),  # unrecognized
])
def test_a_failure_with_json_is_one_json_object_on_stderr(
        argv: list[str], code: int, reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        got = main([*argv, "--json"])
    except SystemExit as exc:  # argparse's usage errors
        got = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert got == code and out == "", (got, out, err)
    (failure,) = check_json_lines(err)
    assert failure["reason"] == reason and failure["exit"] == code and failure["error"], failure
    command = " ".join(a for a in argv[:2] if not a.startswith("-"))
    # (Unrecognized arguments are the top-level parser's to report: no command then.)
    assert failure["command"] in (command, "" if reason == "USAGE" else command), failure
    assert not Parser.json_requested  # the next command line starts afresh
