"""gRPC's transport setting is made on import of ``node``, before grpc loads, and yields to
the operator's own."""

from __future__ import annotations

import os
import subprocess
import sys

from node import grpc_runtime

PROBE = "import os, sys\n{imports}\nprint(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))"


def _run(imports: str, env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if env_value is not None:
        env["GRPC_EXPERIMENTS"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], env=env,
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_importing_node_sets_the_transport_before_grpc_loads() -> None:
    assert _run("import node\nimport grpc", None) == grpc_runtime.GRPC_EXPERIMENTS
    assert _run("import node.client", None) == grpc_runtime.GRPC_EXPERIMENTS


def test_the_operators_setting_is_kept_even_when_empty() -> None:
    assert _run("import node", "") == ""
    assert _run("import node", "tcp_rcv_lowat") == "tcp_rcv_lowat"


def test_nothing_is_set_when_grpc_was_loaded_first() -> None:
    assert _run("import grpc\nimport node", None) == "<unset>"


def test_apply_on_a_given_environment() -> None:
    env: dict[str, str] = {}
    assert grpc_runtime.apply(env) is ("grpc" not in sys.modules)
    env = {"GRPC_EXPERIMENTS": "x"}
    assert grpc_runtime.apply(env) is False and env == {"GRPC_EXPERIMENTS": "x"}
