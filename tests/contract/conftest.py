"""The contract suite's fixtures: every hub test runs once per hub backend, every node test
once per node backend (tests/contract/backends.py).

A PostgreSQL hub test gets a database of its own on one server per test session (started on
first use: a run of SQLite tests alone starts none), created before the test and dropped
after it; its DSN and password file are left in the test's ``tmp_path``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.testing_postgres import PostgresServer
from tests.contract.backends import (
    HUB_BACKENDS,
    NODE_BACKENDS,
    PG_DSN_FILE,
    PG_PASSWORD_FILE,
    HubBackend,
    NodeBackend,
)


@contextlib.contextmanager
def _database(server: PostgresServer, directory: Path) -> Iterator[None]:
    """A fresh database for the block, its DSN and password file in ``directory``."""
    with server.database(directory) as database:
        (directory / PG_DSN_FILE).write_text(database.dsn)
        (directory / PG_PASSWORD_FILE).write_text(server.password + "\n")
        yield


@pytest.fixture(params=sorted(HUB_BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubBackend]:
    if request.param != "postgresql":
        yield HUB_BACKENDS[request.param]
        return
    with _database(request.getfixturevalue("pg_server"), tmp_path):
        yield HUB_BACKENDS[request.param]


@pytest.fixture
def pg_dir(pg_server: PostgresServer, tmp_path: Path) -> Iterator[Path]:
    """A directory naming a fresh PostgreSQL database (tests of that backend alone)."""
    with _database(pg_server, tmp_path):
        yield tmp_path


@pytest.fixture(params=sorted(NODE_BACKENDS))
def node_backend(request: pytest.FixtureRequest) -> NodeBackend:
    return NODE_BACKENDS[request.param]
