"""A daemon raises its soft open-file limit to the hard one, and caps connections at half."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from node.open_files import MIN_CONNECTIONS, connection_cap

_PROBE = """
import json, resource
from node.open_files import connection_cap, raise_soft_limit
limit = raise_soft_limit()
print(json.dumps({"soft": limit.soft, "hard": limit.hard, "before": limit.soft_before,
                  "now": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                  "cap": connection_cap(), "cap2": connection_cap(servers=2)}))
"""


def _probe(soft: int, hard: int) -> dict[str, int]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True,
                         preexec_fn=limit).stdout
    return dict(json.loads(out))


def test_soft_limit_of_a_unit_default_is_raised_to_the_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"hard open-file limit {hard} is too low to show the raise")
    target = 4096 if hard == resource.RLIM_INFINITY else hard
    got = _probe(1024, target)
    assert (got["before"], got["soft"], got["now"]) == (1024, target, target)
    assert got["cap"] == target // 2
    assert got["cap2"] == target // 4


def test_a_limit_that_cannot_be_raised_is_kept_and_shared() -> None:
    got = _probe(1024, 1024)
    assert (got["before"], got["soft"], got["now"]) == (1024, 1024, 1024)
    assert (got["cap"], got["cap2"]) == (512, 256)


def test_the_cap_never_falls_below_its_floor() -> None:
    assert connection_cap(servers=10**6) == MIN_CONNECTIONS
