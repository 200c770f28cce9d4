"""gRPC's transport setting is made by the entry points (importing ``node.cli``), before grpc
loads, and yields to the operator's own; importing ``node`` or ``pki`` has no side effects."""

from __future__ import annotations

import os
import subprocess
import sys

from node import grpc_runtime

PROBE = "import os, sys\n{imports}\nprint(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))"


def _run(code: str, env_value: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if env_value is not None:
        env["GRPC_EXPERIMENTS"] = env_value
    out = subprocess.run([sys.executable, "-P", "-c", code], env=env,
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def _experiments(imports: str, env_value: str | None) -> str:
    return _run(PROBE.format(imports=imports), env_value)


def test_the_entry_points_set_the_transport_before_grpc_loads() -> None:
    assert _experiments("import node.cli\nimport grpc", None) == grpc_runtime.GRPC_EXPERIMENTS
    assert _experiments("import benchmarks", None) == grpc_runtime.GRPC_EXPERIMENTS


def test_the_operators_setting_is_kept_even_when_empty() -> None:
    assert _experiments("import node.cli", "") == ""
    assert _experiments("import node.cli", "tcp_rcv_lowat") == "tcp_rcv_lowat"


def test_nothing_is_set_when_grpc_was_loaded_first() -> None:
    assert _experiments("import grpc\nimport node.cli", None) == "<unset>"


def test_importing_node_and_pki_has_no_side_effects() -> None:
    """The environment is left as it was, grpc is not loaded, and pki does not load node."""
    code = ("import os, sys\nbefore = dict(os.environ)\nimport pki, pki.cli\n"
            "pki_loads_node = any(m == 'node' or m.startswith('node.') for m in sys.modules)\n"
            "import node\nprint(dict(os.environ) == before, 'grpc' in sys.modules, pki_loads_node)")
    assert _run(code) == "True False False"


def test_apply_on_a_given_environment() -> None:
    env: dict[str, str] = {}
    assert grpc_runtime.apply(env) is ("grpc" not in sys.modules)
    env = {"GRPC_EXPERIMENTS": "x"}
    assert grpc_runtime.apply(env) is False and env == {"GRPC_EXPERIMENTS": "x"}


HOLD_PROBE = """
import asyncio, sys
from node import grpc_runtime
grpc_runtime.apply()
import grpc
if sys.argv[1] == "hold":
    assert grpc_runtime.hold_core() and not grpc_runtime.hold_core()
async def one_network():
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    await channel.close()
for _ in range(3):
    asyncio.run(one_network())
"""


def _core_users_left(mode: str) -> int:
    """gRPC's user count when the probe's three networks are closed, from gRPC's API trace."""
    env = {**os.environ, "GRPC_TRACE": "api", "GRPC_VERBOSITY": "DEBUG"}
    done = subprocess.run([sys.executable, "-P", "-c", HOLD_PROBE, mode], env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    inits = done.stderr.count("grpc_init(void)")
    assert inits >= 3, done.stderr[-2000:]
    return inits - done.stderr.count("grpc_shutdown(void)")


def test_a_held_core_outlives_every_network() -> None:
    """Without the hold the count falls to zero (gRPC tears its core down); with it, it stays
    at one when every channel is closed."""
    assert _core_users_left("plain") == 0
    assert _core_users_left("hold") == 1
