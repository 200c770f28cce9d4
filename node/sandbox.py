"""``crossroads sandbox up|status|down``: a local network that stays up, for a newcomer to poke
at with the real commands.

Design: ``up`` builds what ``make demo`` builds in a directory of the user's choosing (a
throw-away CA and certificates, configs, the demo's reference directory: docs/DIRECTORY.md)
and starts the hub and ``--nodes`` institution nodes as real ``crossroads ... serve``
processes on loopback, plus one small answering application (``crossroads answer``) per
provider node, so that consultations find data. The processes run in sessions of their own,
detached from the terminal: they outlive ``up``, which records them in ``<dir>/sandbox.json``
and prints the exact commands that use them (sending, reading the inbox, consulting, the
audit). ``status`` says which are alive, and each node's view (hub connected, directory
revision); ``down`` stops them all (SIGTERM, then SIGKILL after a grace) and keeps the
directory for a look at the logs and databases (``--purge`` removes it).

A second ``up`` on a directory whose processes still run is refused; one whose processes are
gone starts again on the same state (the daemons without ``--init``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from node.client import LocalClient
from node.core.directory import Integration
from node.demo import (
    FAMILY,
    HEALTH,
    NAMES,
    SITUATION,
    UNEMPLOYMENT,
    WELFARE,
    WORKER,
    demo_directory,
)
from node.testing import DEMO_SERVICE, ProcessNetwork

__all__ = ["MAX_NODES", "MIN_NODES", "SandboxError", "down", "status", "up"]

#: The institutions in the order ``--nodes`` takes them: the asker of consultations first,
#: then the providers holding the worker's file (they exchange demo.message too).
ORDER = (WELFARE, UNEMPLOYMENT, HEALTH, FAMILY,
         *(e for e in NAMES if e not in (WELFARE, UNEMPLOYMENT, HEALTH, FAMILY)))
MIN_NODES, MAX_NODES = 2, len(ORDER)
#: What each provider's answering application says about the worker.
ANSWERS = {UNEMPLOYMENT: "no unemployment benefit", HEALTH: "insured, no incapacity",
           FAMILY: "child benefit for two children"}
STATE = "sandbox.json"
STOP_GRACE_S = 20.0
MAX_SOCKET_PATH = 107


class SandboxError(Exception):
    """The sandbox cannot do what was asked (the message says why)."""


@dataclass(frozen=True)
class Process:
    name: str  # "hub", an enterprise number, or "answer-<enterprise number>"
    pid: int

    @property
    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _not_zombie(self.pid)


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True  # no /proc: trust kill(0)


def _read_state(root: Path) -> dict[str, object] | None:
    try:
        return dict(json.loads((root / STATE).read_text()))
    except FileNotFoundError:
        return None


def _processes(state: dict[str, object]) -> list[Process]:
    return [Process(name, int(pid)) for name, pid in dict(state["processes"]).items()]  # type: ignore[call-overload]


def up(root: Path, nodes: int) -> str:
    """Start the sandbox in ``root``; the text to print (what runs, the commands to try)."""
    if not MIN_NODES <= nodes <= MAX_NODES:
        raise SandboxError(f"--nodes must be {MIN_NODES} to {MAX_NODES}, not {nodes}")
    root = root.resolve()
    longest = root / "sock" / "0000000000.sock"  # a unix socket's path has 107 bytes at most
    if len(str(longest).encode()) > MAX_SOCKET_PATH:
        raise SandboxError(f"{root} is too deep for the nodes' sockets ({longest}): choose a"
                           f" --dir with a shorter absolute path")
    state = _read_state(root)
    if state is not None and any(p.alive for p in _processes(state)):
        raise SandboxError(f"a sandbox already runs in {root}: `crossroads sandbox down"
                           f" --dir {root}` first")
    institutions = ORDER[:nodes]
    # The demo's directory, the worker's file held only where a node runs (a consultation
    # then finds every source up).
    seed = [e for e in demo_directory()
            if not (isinstance(e, Integration) and e.institution not in institutions)]
    net = ProcessNetwork(root, institutions, seed=seed)
    net.preexec = {name: os.setsid for name in ("hub", *institutions)}  # detached sessions
    net.initialized = set(net.preexec) if (root / "hub").is_dir() else set()
    processes: dict[str, int] = {}
    try:
        hub_port = (state or {}).get("hub_port")
        net.start_hub(listen=f"127.0.0.1:{hub_port}" if hub_port else None)
        processes["hub"] = net.pid("hub")
        for e in institutions:
            net.start_node(e)
            processes[e] = net.pid(e)
        for e in institutions:
            if e in ANSWERS:
                processes[f"answer-{e}"] = _answerer(net, e)
    except BaseException:
        net.stop_all()
        raise
    finally:
        net.procs.clear()  # they outlive this process (ProcessNetwork kills its own at exit)
    (root / STATE).write_text(json.dumps({
        "processes": processes, "hub_address": net.hub_address,
        "hub_port": int(net.hub_address.rsplit(":", 1)[1]),
        "local_apis": {e: net.local_api(e) for e in institutions}}, indent=1))
    return _guide(root, net, institutions)


def _answerer(net: ProcessNetwork, enterprise: str) -> int:
    log = (net.root / f"answer-{enterprise}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "node.cli", "answer", "--local-api",
         net.local_api(enterprise), "--data", ANSWERS[enterprise]],
        stdout=log, stderr=subprocess.STDOUT, env=net.env, cwd=net.root,
        start_new_session=True)
    log.close()
    return proc.pid


def _guide(root: Path, net: ProcessNetwork, institutions: tuple[str, ...]) -> str:
    sender, receiver = institutions[1], institutions[2 if len(institutions) > 2 else 0]
    lines = [f"Crossroads sandbox in {root}: hub on {net.hub_address}, nodes:"]
    lines += [f"  {e}  {NAMES[e]:<26} local API {net.local_api(e)}" for e in institutions]
    lines += [
        "",
        "Try (each command as it is):",
        f"  crossroads send --local-api {net.local_api(sender)} --service {DEMO_SERVICE}"
        f" --to {receiver} --subject-citizen {WORKER} --payload hello --wait",
        f"  crossroads inbox --local-api {net.local_api(receiver)} --ack",
        f"  crossroads consult --local-api {net.local_api(WELFARE)} --service {SITUATION}"
        f" --subject-citizen {WORKER} --capacity 1",
        f"  crossroads node status --local-api {net.local_api(sender)}",
        f"  crossroads audit who-consulted {WORKER} --config {root / 'hub.toml'}",
        f"  crossroads audit verify --config {root / 'hub.toml'}",
        f"  crossroads sandbox status --dir {root}",
        f"  crossroads sandbox down --dir {root}",
        "",
        f"Logs: {root}/*.log; configs: {root}/hub.toml, {root}/<enterprise number>.toml.",
    ]
    return "\n".join(lines)


def state_of(root: Path) -> dict[str, object]:
    """What ``up`` wrote about the sandbox in ``root``: its processes' pids, the hub's
    address, each node's local API (``crossroads sandbox up --json``)."""
    state = _read_state(root.resolve())
    if state is None:
        raise SandboxError(f"no sandbox in {root} (crossroads sandbox up --dir {root})")
    return state


def status(root: Path) -> tuple[bool, str, list[dict[str, object]]]:
    """Whether every process of the sandbox in ``root`` runs, a report, and a record per
    process (``sandbox status --json``)."""
    state = state_of(root)
    lines, records, healthy = [], [], True
    apis = dict(state["local_apis"])  # type: ignore[call-overload]
    for proc in _processes(state):
        alive = proc.alive
        healthy &= alive
        detail = ""
        if alive and proc.name in apis:
            detail = _node_view(str(apis[proc.name]))
        lines.append(f"  {proc.name:<22} pid {proc.pid:<8} {'up' if alive else 'DOWN'}{detail}")
        records.append({"process": proc.name, "pid": proc.pid, "up": alive,
                        "local_api": apis.get(proc.name)})
    head = f"sandbox in {root.resolve()}: {'all up' if healthy else 'NOT all up'}"
    return healthy, "\n".join([head, *lines]), records


def _node_view(api: str) -> str:
    try:
        with LocalClient(api) as client:
            s = client.status()
    except Exception as exc:  # noqa: BLE001 - a status line, not a failure of the command
        return f"  (local API: {type(exc).__name__})"
    return (f"  hub {'connected' if s.hub_connected else 'NOT connected'},"
            f" directory revision {s.directory_revision}")


def down(root: Path, purge: bool = False) -> tuple[str, dict[str, object]]:
    """Stop every process of the sandbox in ``root`` (``purge``: and remove the directory);
    what to print, and the record of it (``sandbox down --json``)."""
    root = root.resolve()
    state = _read_state(root)
    if state is None:
        raise SandboxError(f"no sandbox in {root}")
    procs = [p for p in _processes(state) if p.alive]
    for p in procs:  # the answering applications first: they hold streams to their nodes
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while any(p.alive for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = [p.name for p in procs if p.alive]
    for p in procs:
        if p.alive:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(p.pid, signal.SIGKILL)
    (root / STATE).unlink()
    if purge:
        shutil.rmtree(root)
    said = f"stopped {len(procs)} processes"
    if killed:
        said += f" ({', '.join(killed)} killed after {STOP_GRACE_S:g} s)"
    record = {"dir": root, "stopped": [p.name for p in procs], "killed": killed, "purged": purge}
    return said + (f"; removed {root}" if purge else f"; their files stay in {root}"), record


