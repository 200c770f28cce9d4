"""Editing or deleting an audit record makes `crossroads audit verify` fail and name it."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from node.client import LocalClient, make_envelope
from node.core.audit import encode_fields
from node.testing import DEMO_SERVICE, ProcessNetwork
from tests.conftest import A, B

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def audited_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    with ProcessNetwork(root / "net", institutions=(A, B)) as net:
        net.start()
        with LocalClient(net.local_api(A)) as client:
            _, seqs = client.submit([make_envelope(DEMO_SERVICE, [B], b"x") for _ in range(20)])
            client.outcomes(seqs, wait_ms=10_000)
        with LocalClient(net.local_api(B)) as client:
            got = []
            while len(got) < 20:
                got += client.fetch(100, wait_ms=500)
            client.acknowledge([e.hub_ticket for e in got])
        net.stop_all()
    return net.hub_db


def _verify(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", "-m", "node.cli", "audit", "verify", "--db",
                           str(db)], capture_output=True, text=True, timeout=60)


def _copy(db: Path, tmp_path: Path) -> Path:
    target = tmp_path / "hub.sqlite"
    shutil.copy(db, target)
    return target


def _edit(db: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_untouched_log_verifies(audited_db: Path, tmp_path: Path) -> None:
    result = _verify(_copy(audited_db, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "40 records" in result.stdout  # 20 accepted + 20 delivered


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("UPDATE audit SET detail = 'nothing to see' WHERE seq = 7", "record 7: content"),
        ("UPDATE audit SET sender = '0566988259' WHERE seq = 3", "record 3: content"),
        ("DELETE FROM audit WHERE seq = 9", "record 9: missing"),
        ("DELETE FROM audit WHERE seq BETWEEN 12 AND 14", "records 12..14 absent"),
        ("DELETE FROM audit WHERE seq = 40", "record 40: missing"),
    ],
)
def test_tampering_is_detected_and_named(audited_db: Path, tmp_path: Path, sql: str, named: str) -> None:
    db = _copy(audited_db, tmp_path)
    _edit(db, sql)
    result = _verify(db)
    assert result.returncode == 1
    assert named in result.stderr


def test_rehashing_an_edited_record_breaks_the_next_link(audited_db: Path, tmp_path: Path) -> None:
    db = _copy(audited_db, tmp_path)
    conn = sqlite3.connect(db)
    row = conn.execute("SELECT at_us, event, hub_ticket, sender, receiver, service_id,"
                       " subject_type, subject_number, reason, detail, prev_hash FROM audit"
                       " WHERE seq = 5").fetchone()
    fields = [str(v) for v in row[:10]]
    fields[4] = "0566988259"  # claim it went somewhere else, and fix up its own hash
    digest = hashlib.sha256(bytes(row[10]) + encode_fields(fields)).digest()
    conn.execute("UPDATE audit SET receiver = ?, hash = ? WHERE seq = 5", (fields[4], digest))
    conn.commit()
    conn.close()
    result = _verify(db)
    assert result.returncode == 1
    assert "record 6: previous-hash link broken" in result.stderr
