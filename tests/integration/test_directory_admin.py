"""``crossroads directory`` against a real hub: admin certificates, mutual TLS, DirectoryAdmin.

The CLI is synchronous (a blocking gRPC channel); the hub runs in the test's event loop, so
every CLI call runs in a thread.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path

import grpc
import pytest

from node.cli import directory as directory_cli
from node.testing import InProcessNetwork
from node.wire.gen.crossroads.v1 import directory_pb2 as pb
from node.wire.gen.crossroads.v1 import directory_pb2_grpc
from tests.conftest import A, B, hub_channel

D = "0212344876"  # a valid enterprise number not on the network yet
BAD = "0403019216"  # check digits do not match
CITIZEN, CITIZEN_NEW = "85073003328", "17073003384"


class Cli:
    """Runs ``crossroads directory ...`` with one certificate; returns (code, stdout, stderr).
    (Its own streams: the hub in this process logs to sys.stdout.)"""

    def __init__(self, network: InProcessNetwork, who: str = "admin:alice") -> None:
        key, cert = network.node_certs[who] if who in network.node_certs else \
            network.pki.issue(who)
        self.connection = ["--hub", network.hub_address, "--ca-cert", str(network.pki.ca_cert),
                           "--cert", str(cert), "--key", str(key), "--timeout", "20"]

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(directory_cli.main, [*self.connection, *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    async def ok(self, *argv: str) -> str:
        code, out, err = await self(*argv)
        assert (code, err) == (0, ""), err
        return out

    async def show(self, *argv: str) -> dict:
        return json.loads(await self.ok("show", *argv, "--format", "json"))


def _revision(out: str) -> int:
    assert out.startswith("revision "), out
    return int(out.split()[1])


async def test_put_show_remove_round_trip(network: InProcessNetwork) -> None:
    cli = Cli(network)
    start = (await cli.show())["revision"]
    r1 = _revision(await cli.ok("put-institution", "--enterprise", "0212.344.876", "--sector",
                                "17", "--name", "OCMW Brugge", "--status", "suspended"))
    assert r1 == start + 1
    await cli.ok("put-service", "--id", "person.death", "--kind", "mutation",
                 "--routing", "fan_out", "--capacity", "2", "--capacity", "1")
    await cli.ok("put-authorization", "--id", "auth-17", "--service", "person.death",
                 "--sector", "17", "--legal-context", "delib-1/2024", "--from", "2024-01-01")
    await cli.ok("put-subscription", "--id", "sub-1", "--institution", A,
                 "--service", "person.death", "--capacity", "2")
    await cli.ok("put-integration", "--subject", CITIZEN, "--institution", A, "--capacity", "2",
                 "--phase", "3", "--from", "2024-03-01")
    await cli.ok("put-replacement", "--old", CITIZEN, "--new", CITIZEN_NEW)
    last = _revision(await cli.ok("revoke-cert", "--serial", "0A:FF", "--institution", B,
                                  "--reason", "superseded"))
    assert last == r1 + 6

    shown = await cli.show()
    assert shown["revision"] == last
    assert {"enterprise_number": D, "sector": 17, "name": "OCMW Brugge", "endpoint": "",
            "cert_fingerprint": "", "status": "suspended"} in shown["institutions"]
    assert {"id": "person.death", "version": 1, "kind": "mutation", "subject_type": "citizen",
            "routing": "fan_out", "provider": "", "integration_required": False, "min_phase": 0,
            "capacities": [1, 2]} in shown["services"]
    # (The hub seeds one demo authorization per configured institution.)
    assert [a for a in shown["authorizations"] if a["id"] == "auth-17"] == [
        {"id": "auth-17", "service_id": "person.death", "sector": 17,
         "legal_context": "delib-1/2024", "capacities": [], "valid_from": "2024-01-01",
         "valid_to": ""}]
    assert shown["subscriptions"][0]["id"] == "sub-1"
    assert shown["revoked_certificates"] == [
        {"serial": "0aff", "institution": B, "reason": "superseded"}]
    assert (await cli.show("integrations", "--subject", CITIZEN))["integrations"] == [
        {"subject": CITIZEN, "institution": A, "capacity": 2, "phase": 3,
         "begin_date": "2024-03-01", "end_date": ""}]
    assert (await cli.show("replacements", "--subject", CITIZEN))["replacements"] == [
        {"old_number": CITIZEN, "new_number": CITIZEN_NEW}]
    table = (await cli.ok("show", "authorizations")).splitlines()
    assert table[:3] == [f"revision {last}", "", f"authorizations ({len(shown['authorizations'])})"]
    assert table[3].split() == ["id", "service_id", "institution", "sector", "legal_context",
                                "capacities", "valid_from", "valid_to"]
    assert ["auth-17", "person.death", "17", "delib-1/2024", "2024-01-01"] in [
        line.split() for line in table[4:]]

    # The hub's decisions see the new entries.
    assert network.hub.directory.institution(D) is not None

    for kind, *key in (("authorization", "auth-17"), ("subscription", "sub-1"),
                       ("integration", CITIZEN, A, "2"), ("replacement", CITIZEN),
                       ("revoked", "0aff"), ("service", "person.death", "1"),
                       ("institution", D)):
        last = _revision(await cli.ok("remove", kind, *key))
    assert last == r1 + 13
    # remove sent the stored entry, so the delete goes to the fragment that held it.
    db = sqlite3.connect(network.root / "hub" / "directory.sqlite")
    try:
        logged = db.execute("SELECT owner, deleted FROM dir_changes WHERE kind = 'authorization'"
                            " AND key = 'auth-17' ORDER BY revision").fetchall()
    finally:
        db.close()
    assert logged == [("sector:17", 0), ("sector:17", 1)]
    shown = await cli.show()
    assert D not in {i["enterprise_number"] for i in shown["institutions"]}
    assert "auth-17" not in {a["id"] for a in shown["authorizations"]}
    assert "subscriptions" not in shown
    assert "person.death" not in {s["id"] for s in shown.get("services", [])}
    assert "integrations" not in await cli.show("integrations", "--subject", CITIZEN)
    assert network.hub.directory.institution(D) is None

    code, out, err = await cli("remove", "authorization", "auth-17")
    assert (code, out) == (2, "")
    assert err == "crossroads directory: error: no authorization auth-17 in the directory\n"


async def test_bulk_import_of_1000_authorizations_from_csv(
        network: InProcessNetwork, tmp_path: Path) -> None:
    cli = Cli(network)
    await cli.ok("put-service", "--id", "health.insurability", "--kind", "consultation",
                 "--provider", B)
    before = (await cli.show())["revision"]
    lines = ["id,service_id,institution,sector,capacities,valid_from,valid_to"]
    for i in range(1000):
        who = f"{A},," if i % 2 else ",17,"
        lines.append(f"bulk-{i:04d},health.insurability,{who}1;2,2024-01-01,")
    path = tmp_path / "authorizations.csv"
    path.write_text("\n".join(lines) + "\n")

    out = await cli.ok("import", str(path), "--batch", "400")
    assert out == (f"imported 1000 entries (1000 authorizations) in 3 calls: "
                   f"revision {before + 1000}\n")
    shown = await cli.show("authorizations")
    assert shown["revision"] == before + 1000
    by_id = {a["id"]: a for a in shown["authorizations"] if a["id"].startswith("bulk-")}
    assert len(by_id) == 1000
    assert by_id["bulk-0001"]["institution"] == A and by_id["bulk-0002"]["sector"] == 17
    assert by_id["bulk-0999"]["capacities"] == [1, 2]

    # The default is one Apply per 5,000 changes: re-importing is one call (puts replace).
    out = await cli.ok("import", str(path))
    assert out.endswith(f"in 1 call: revision {before + 2000}\n")
    assert len([a for a in (await cli.show("authorizations"))["authorizations"]
                if a["id"].startswith("bulk-")]) == 1000

    out = await cli.ok("compact", "--keep-after", str(before + 1000))
    assert out == f"compacted up to revision {before + 1000}: {before + 1000} changes removed\n"


async def test_a_bad_row_is_named_and_nothing_is_imported(
        network: InProcessNetwork, tmp_path: Path) -> None:
    cli = Cli(network)
    before = await cli.show()
    rows = [f"{number},17,Institution {number}" for number in (D, BAD, "0200065765")]
    path = tmp_path / "institutions.csv"
    path.write_text("enterprise_number,sector,name\n" + "\n".join(rows) + "\n")
    code, out, err = await cli("import", str(path))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"crossroads directory: error: {path}: line 3: field enterprise_number: invalid "
        f"enterprise number '{BAD}': mod-97 check digits do not match (97 - first 8 digits "
        "mod 97 = 61, got 16) (nothing imported)"]
    assert await cli.show() == before

    # The hub checks too, whoever the client is: the refused change is named.
    key, cert = network.pki.issue("admin:bob")
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        stub = directory_pb2_grpc.DirectoryAdminStub(channel)
        bad = pb.DirectoryChange(institution=pb.InstitutionEntry(enterprise_number=BAD,
                                                                 sector=17))
        good = pb.DirectoryChange(institution=pb.InstitutionEntry(enterprise_number=D,
                                                                  sector=17))
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Apply(pb.ApplyRequest(changes=[good, bad]), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "change 1" in (exc.value.details() or "")
    assert await cli.show() == before


async def test_a_node_certificate_is_refused(network: InProcessNetwork) -> None:
    node = Cli(network, who=A)
    for argv in (["show"], ["put-institution", "--enterprise", D, "--sector", "17"],
                 ["compact"]):
        code, out, err = await node(*argv)
        assert (code, out) == (2, "")
        lines = err.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("crossroads directory: error: PERMISSION_DENIED: "), lines
    admin = Cli(network)
    assert D not in {i["enterprise_number"] for i in (await admin.show())["institutions"]}


async def test_wrong_network_name_fails_the_handshake(
        network: InProcessNetwork) -> None:
    cli = Cli(network)
    code, _, err = await cli("--network", "other", "show")
    assert code == 2
    assert err.startswith("crossroads directory: error: UNAVAILABLE: ")
