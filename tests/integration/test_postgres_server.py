"""The throw-away PostgreSQL server the hub-tier tests run on (node.testing_postgres).

It must be a real server that an operator would recognise: password authentication, fsync on,
data that survives a kill -9 of the postmaster, and nothing left behind after stop.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from node.testing_postgres import PostgresServer


def psql(server: PostgresServer, sql: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGPASSWORD": server.password if password is None else password,
           "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(["psql", server.dsn(), "-v", "ON_ERROR_STOP=1", "-Atc", sql],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


def test_password_is_required_and_settings_are_durable(server: PostgresServer) -> None:
    ok = psql(server, "show fsync; show synchronous_commit; show listen_addresses")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["on", "on", "127.0.0.1"]
    refused = psql(server, "select 1", password="not-the-password")
    assert refused.returncode != 0
    assert "password authentication failed" in refused.stderr


def test_committed_rows_survive_kill_9_of_the_postmaster(server: PostgresServer) -> None:
    created = psql(server, "create table t (n int); insert into t select generate_series(1, 1000)")
    assert created.returncode == 0, created.stderr
    pid = server.pid()
    server.kill()
    assert pid is not None and not _alive(pid)
    server.restart()
    after = psql(server, "select count(*) from t")
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == "1000"


def test_stop_removes_the_cluster() -> None:
    pg = PostgresServer().start()
    root = pg.root
    assert (root / "data" / "PG_VERSION").is_file()
    pg.stop()
    assert not root.exists()


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs 5 s later."""
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True
