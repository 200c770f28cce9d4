"""Importing the project's modules does no work: every module of node, pki, belgian_ids and
benchmarks imported in a fresh interpreter (in an empty working directory, with an empty
HOME) writes no file, configures no logging, installs no event loop policy or signal handler,
and changes no environment variable but the two gRPC settings that the entry-point packages
``node.cli`` and ``benchmarks`` make on purpose before ``grpc`` is loaded
(:mod:`node.grpc_runtime`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("node", "pki", "belgian_ids", "benchmarks")
#: The entry points' documented settings (node/grpc_runtime.py).
ALLOWED_ENV = {"GRPC_EXPERIMENTS", "GRPC_VERBOSITY"}

SCRIPT = """
import asyncio, importlib, json, logging, os, pkgutil, signal, sys
env = dict(os.environ)
handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
policy = type(asyncio.get_event_loop_policy())
imported = []
for package in sys.argv[1:]:
    root = importlib.import_module(package)
    imported.append(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if info.name.rsplit(".", 1)[-1] == "__main__":  # runs its program when imported
            continue
        importlib.import_module(info.name)
        imported.append(info.name)
import structlog
print(json.dumps({
    "imported": imported,
    "env_changed": sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)),
    "root_handlers": [repr(h) for h in logging.getLogger().handlers],
    "loggers_with_handlers": sorted(  # a library's NullHandler (grpc's) is no configuration
        n for n, l in logging.Logger.manager.loggerDict.items() if isinstance(l, logging.Logger)
        and any(not isinstance(h, logging.NullHandler) for h in l.handlers)),
    "structlog_configured": structlog.is_configured(),
    "policy_changed": type(asyncio.get_event_loop_policy()) is not policy,
    "signals_changed": [s.name for s, h in handlers.items() if signal.getsignal(s) != h],
}))
"""


def test_importing_every_module_does_no_work(tmp_path: Path) -> None:
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *PACKAGES], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"node.cli.crossroads", "benchmarks.cli", "benchmarks.e2e", "pki.cli"} <= set(
        report["imported"])
    assert set(report["env_changed"]) <= ALLOWED_ENV, report["env_changed"]
    assert report["root_handlers"] == [] and report["loggers_with_handlers"] == []
    assert not report["structlog_configured"]
    assert not report["policy_changed"] and report["signals_changed"] == []
    assert list(cwd.iterdir()) == [] and list(home.iterdir()) == []
    assert proc.stderr == ""
