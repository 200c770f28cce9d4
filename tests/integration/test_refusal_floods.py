"""Refused calls in a loop: aggregated in the audit log and in the logs, nothing lost.

Before issue #13 every refused call was one audit record and one log line: a revoked
certificate retrying in a loop wrote ~700 records a second, an institution missing from the
directory tens of thousands a day. Now, per peer, method and reason: the first refusal is
recorded at once, the others counted and written as one record per interval (and at
shutdown), so the count of refusals is still all there.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

import grpc
import pytest
import structlog

from node.audit_tool import verify_file
from node.hub.refusal_audit import RefusalAudit
from node.testing import DEFAULT_INSTITUTIONS, InProcessNetwork
from node.wire.gen.crossroads.v1 import directory_pb2, directory_pb2_grpc, hub_pb2, hub_pb2_grpc
from pki import ca as pki_ca
from tests.conftest import A, B, hub_channel

OUTSIDER = DEFAULT_INSTITUTIONS[3]  # a valid certificate, not in the directory
ATTEMPTS = 150


def _rejected(db: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT service_id, reason, detail FROM audit"
                            " WHERE event = 'REJECTED' ORDER BY seq").fetchall()
    finally:
        conn.close()


def _accounted(rows: list[tuple[str, str, str]], method: str, reason: str) -> int:
    """Refusals the records stand for: 1 per full record, n per ``n more refused``."""
    total = 0
    for service, why, detail in rows:
        if (service, why) != (method, reason):
            continue
        more = re.search(r": (\d+) more refused between", detail)
        total += int(more.group(1)) if more else 1
    return total


async def _hammer(address: str, ca: Path, cert: Path, key: Path, times: int) -> None:
    async with hub_channel(address, ca, cert, key) as channel:
        stub = hub_pb2_grpc.HubStub(channel)
        for _ in range(times):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Register(hub_pb2.RegisterRequest(endpoint="127.0.0.1:1"), timeout=5)
            assert err.value.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                        grpc.StatusCode.PERMISSION_DENIED)


async def test_repeated_refusals_are_one_record_per_peer_reason_and_interval(
        tmp_path: Path) -> None:
    async with InProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        revoked_key_cert = net.pki.issue(A, basename="to-revoke")
        pki_ca.revoke(net.pki.ca_dir, cert_path=revoked_key_cert[1])
        net.pki.crl()
        net.hub.revocations.refresh()
        outsider_key, outsider_cert = net.pki.issue(OUTSIDER)
        with structlog.testing.capture_logs() as logs:
            await _hammer(net.hub_address, net.pki.ca_cert, revoked_key_cert[1],
                          revoked_key_cert[0], ATTEMPTS)
            await _hammer(net.hub_address, net.pki.ca_cert, outsider_cert, outsider_key,
                          ATTEMPTS)
        rows = _rejected(net.hub_db)
        # While the interval runs: the first refusal of each, in full, nothing else.
        assert [(s, r) for s, r, _ in rows] == [("Hub.Register", "CERTIFICATE_REVOKED"),
                                              ("Hub.Register", "UNKNOWN_INSTITUTION")]
        refused_lines = [e for e in logs if e["event"] == "rpc" and e.get("status") != "OK"]
        assert len(refused_lines) == 2, refused_lines
    rows = _rejected(net.hub_db)
    # At shutdown, one summary each, with the count of the others: every refusal accounted.
    assert len(rows) == 4
    assert _accounted(rows, "Hub.Register", "CERTIFICATE_REVOKED") == ATTEMPTS
    assert _accounted(rows, "Hub.Register", "UNKNOWN_INSTITUTION") == ATTEMPTS
    assert f"institution:{OUTSIDER}#" in rows[-1][2] or f"institution:{OUTSIDER}#" in rows[-2][2]
    assert verify_file(net.hub_db).problem is None


async def test_summaries_are_written_when_each_interval_ends(tmp_path: Path) -> None:
    async with InProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        interval = 0.2
        net.hub.service.refusals = RefusalAudit(net.hub.store.append_audit, net.hub.clock,
                                                interval)
        outsider_key, outsider_cert = net.pki.issue(OUTSIDER)
        for _ in range(3):
            await _hammer(net.hub_address, net.pki.ca_cert, outsider_cert, outsider_key, 20)
        # Wait (count-based) for the last interval to end and its summary to be written.
        for _ in range(100):
            rows = _rejected(net.hub_db)
            if _accounted(rows, "Hub.Register", "UNKNOWN_INSTITUTION") == 60:
                break
            await asyncio.sleep(interval / 4)
        assert _accounted(rows, "Hub.Register", "UNKNOWN_INSTITUTION") == 60
        assert 2 <= len(rows) < 60  # aggregated, and the hub was still running
    assert verify_file(net.hub_db).problem is None


async def test_admin_service_refusals_are_audited_and_aggregated(tmp_path: Path) -> None:
    async with InProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        key, cert = net.node_certs[A]  # a node certificate on the admin service
        async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
            stub = directory_pb2_grpc.DirectoryAdminStub(channel)
            for _ in range(30):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Show(directory_pb2.ShowRequest(part="institutions"), timeout=5)
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert [(s, r) for s, r, _ in _rejected(net.hub_db)] == [
            ("DirectoryAdmin.Show", "WRONG_ROLE")]
    rows = _rejected(net.hub_db)
    assert _accounted(rows, "DirectoryAdmin.Show", "WRONG_ROLE") == 30
    assert verify_file(net.hub_db).problem is None
