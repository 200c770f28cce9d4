"""The contract suite's fixture: every test runs once per backend (tests/contract/backends.py)."""

from __future__ import annotations

import pytest

from tests.contract.backends import BACKENDS, Backend


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]
