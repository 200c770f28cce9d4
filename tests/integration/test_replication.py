"""Directory replication, node side: the FragmentWatcher over real mTLS.

First against a small scripted hub (real gRPC server, real certificates, updates signed with
node.wire.signed) that can tamper with, misaddress or skip updates; then against the real hub.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs

from node.config import NodeConfig, TlsFiles
from node.core import directory as dr
from node.core.backoff import Backoff
from node.member.fragment import FragmentWatcher
from node.rpc.tls import TlsMaterial, server_options
from node.store.fragment_store import FragmentStore
from node.testing import DEMO_SERVICE, InProcessNetwork, Pki
from node.wire.directory import change_to_proto
from node.wire.gen.crossroads.v1 import directory_pb2 as pb
from node.wire.gen.crossroads.v1 import hub_pb2_grpc
from node.wire.signed import load_public_key, public_path, sign_update
from pki.ca import load_certificate

A, B, C = "0403019261", "0428759497", "0566988259"
CITIZEN = "85073003328"

SEED: list[dr.Entity] = [
    dr.Institution(A, 17, "A"),
    dr.Institution(B, 12, "B"),
    dr.Institution(C, 17, "C"),
    dr.Service("health.insurability", 1, provider=B),
    dr.Authorization("auth-a", "health.insurability", institution=A),
    dr.Integration(CITIZEN, A, 1, 1),
    dr.RevokedCertificate("0a"),
]


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# -- a scripted hub ------------------------------------------------------------------------------


class ScriptedHub(hub_pb2_grpc.HubServicer):
    """Keeps a revision log like the hub, serves WatchDirectory for one recipient, and applies
    ``faults`` (consumed one per delta sent): "tamper", "gap", "recipient", "key"."""

    def __init__(self, key: Ed25519PrivateKey, recipient: str, part_size: int = 3) -> None:
        self.key = key
        self.recipient = recipient
        self.part_size = part_size
        self.revision = 0
        self.log: list[tuple[int, dr.Entity, bool]] = []
        self.state: dict[tuple[str, str], dr.Entity] = {}
        self.requests: list[int] = []
        self.faults: list[str] = []
        self.hold_last_part: asyncio.Event | None = None
        self.parts_sent = 0
        self.changed = asyncio.Condition()

    async def change(self, *entities: dr.Entity, delete: bool = False) -> None:
        for entity in entities:
            self.revision += 1
            self.log.append((self.revision, entity, delete))
            if delete:
                self.state.pop((dr.kind_of(entity), dr.key_of(entity)), None)
            else:
                self.state[(dr.kind_of(entity), dr.key_of(entity))] = entity
        async with self.changed:
            self.changed.notify_all()

    def _sign(self, update: pb.DirectoryUpdate) -> pb.SignedDirectoryUpdate:
        return sign_update(update, self.key)

    async def WatchDirectory(  # noqa: N802 - gRPC method name
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SignedDirectoryUpdate]:
        self.requests.append(request.start_revision)
        await context.send_initial_metadata(())
        current = request.start_revision
        if current == 0:
            current = self.revision
            entities = list(self.state.values())
            parts = max(1, -(-len(entities) // self.part_size))
            for part in range(parts):
                last = part == parts - 1
                if last and self.hold_last_part is not None:
                    await self.hold_last_part.wait()
                chunk = entities[part * self.part_size:(part + 1) * self.part_size]
                yield self._sign(pb.DirectoryUpdate(
                    kind=pb.DirectoryUpdate.KIND_SNAPSHOT, recipient=self.recipient,
                    to_revision=current, changes=[change_to_proto(e) for e in chunk],
                    part=part, last_part=last))
                self.parts_sent += 1
        while True:
            async with self.changed:
                while self.revision <= current:
                    await self.changed.wait()
                upto = self.revision
            yield self._delta(current, upto)
            current = upto

    def _delta(self, current: int, upto: int) -> pb.SignedDirectoryUpdate:
        fault = self.faults.pop(0) if self.faults else ""
        update = pb.DirectoryUpdate(
            kind=pb.DirectoryUpdate.KIND_DELTA,
            recipient=C if fault == "recipient" else self.recipient,
            from_revision=current + 1 if fault == "gap" else current, to_revision=upto,
            changes=[change_to_proto(e, d, r) for r, e, d in self.log if current < r <= upto],
            last_part=True)
        signed = sign_update(update, Ed25519PrivateKey.generate() if fault == "key" else self.key)
        if fault == "tamper":
            body = bytearray(signed.update)
            body[len(body) // 2] ^= 0x01
            signed.update = bytes(body)
        return signed


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    pki.issue("hub")
    pki.issue(A)
    yield pki


class Rig:
    """A scripted hub on 127.0.0.1:0 and a watcher for institution A on a real store."""

    def __init__(self, pki: Pki, root: Path) -> None:
        self.pki = pki
        self.root = root
        self.key = Ed25519PrivateKey.generate()
        self.hub = ScriptedHub(self.key, A)
        certs = pki.root / "certs"
        self.hub_tls = TlsMaterial(pki.ca_cert.read_bytes(), (certs / "hub.crt").read_bytes(),
                                   (certs / "hub.key").read_bytes())
        self.node_files = TlsFiles(pki.ca_cert, certs / f"{A}.crt", certs / f"{A}.key")
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.store = FragmentStore(root / "fragment.sqlite")
        self.watcher: FragmentWatcher | None = None

    async def start_hub(self) -> None:
        self.server = grpc.aio.server(options=server_options(64 << 20))
        hub_pb2_grpc.add_HubServicer_to_server(self.hub, self.server)
        self.port = self.server.add_secure_port(f"127.0.0.1:{self.port}",
                                                self.hub_tls.server_credentials())
        await self.server.start()

    async def stop_hub(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None

    async def start_watcher(self) -> FragmentWatcher:
        await self.store.open()
        config = NodeConfig(network="demo", enterprise_number=A, listen="127.0.0.1:0",
                            hubs=(f"127.0.0.1:{self.port}",), local_api="127.0.0.1:0",
                            data_dir=self.root, tls=self.node_files)
        self.watcher = FragmentWatcher(config, TlsMaterial.load(self.node_files), self.store,
                                       self.key.public_key(), Backoff(initial=0.01, maximum=0.1))
        self.watcher.start()
        return self.watcher

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
        await self.store.close()
        await self.stop_hub()


@pytest.fixture
async def rig(pki: Pki, tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(pki, tmp_path)
    await rig.hub.change(*SEED)
    await rig.start_hub()
    try:
        yield rig
    finally:
        await rig.stop()


async def synced(rig: Rig) -> FragmentWatcher:
    watcher = await rig.start_watcher()
    await until(lambda: rig.store.revision == rig.hub.revision)
    return watcher


async def test_snapshot_in_parts_is_applied_whole_then_deltas(rig: Rig) -> None:
    rig.hub.hold_last_part = asyncio.Event()
    with capture_logs() as logs:
        watcher = await rig.start_watcher()
        await until(lambda: rig.hub.parts_sent == 2)  # parts 0 and 1 of 3 are at the node
        await asyncio.sleep(0.1)
        assert rig.store.revision == 0 and rig.store.institution(A) is None  # staged only
        rig.hub.hold_last_part.set()
        await until(lambda: rig.store.revision == len(SEED))
    assert watcher.connected and watcher.changed.is_set() and watcher.refused == 0
    counts = await rig.store.counts()
    assert (counts["institution"], counts["integration"], counts["revoked_certificate"]) == (3, 1, 1)
    assert [e["revision"] for e in logs if e["event"] == "directory_synced"] == [len(SEED)]

    watcher.changed.clear()
    await rig.hub.change(dr.Institution(C, 17, "C", status="suspended"), dr.RevokedCertificate("ff"))
    await rig.hub.change(dr.Integration(CITIZEN, A, 1, 1), delete=True)
    await until(lambda: rig.store.revision == rig.hub.revision)
    assert watcher.changed.is_set()
    assert not rig.store.institution(C).active
    assert rig.store.revoked_serials() == frozenset({0x0A, 0xFF})
    assert await rig.store.integrations_of_institution(A) == []
    assert rig.hub.requests == [0] and watcher.refused == 0 and rig.store.lag == 0


async def test_tampered_delta_is_refused_then_resynced(rig: Rig) -> None:
    watcher = await synced(rig)
    at = rig.store.revision
    rig.hub.faults = ["tamper"]
    with capture_logs() as logs:
        await rig.hub.change(dr.Institution(B, 12, "B renamed"))
        await until(lambda: rig.store.revision == rig.hub.revision)
    refusals = [e for e in logs if e["event"] == "directory_update_refused"]
    assert len(refusals) == 1 and "signature" in refusals[0]["reason"]
    assert watcher.refused == 1
    assert rig.hub.requests == [0, at]  # reconnected from its own revision, got the delta again
    assert rig.store.institution(B).name == "B renamed"


async def test_gap_is_refused_and_twice_in_a_row_asks_for_a_snapshot(rig: Rig) -> None:
    watcher = await synced(rig)
    at = rig.store.revision
    rig.hub.faults = ["gap", "gap"]
    with capture_logs() as logs:
        await rig.hub.change(dr.Authorization("sector-17", "health.insurability", sector=17))
        await until(lambda: rig.store.revision == rig.hub.revision)
    assert rig.hub.requests == [0, at, 0]  # refused on the first stream, then from `at`
    assert watcher.refused == 2
    reasons = [e["reason"] for e in logs if e["event"] == "directory_update_refused"]
    assert len(reasons) == 2 and all("gap" in r for r in reasons)
    view = await rig.store.view([])
    assert {a.id for a in view.authorizations["health.insurability"]} == {"auth-a", "sector-17"}


async def test_gap_once_then_good_delta_needs_no_snapshot(rig: Rig) -> None:
    watcher = await synced(rig)
    at = rig.store.revision
    rig.hub.faults = ["gap"]
    await rig.hub.change(dr.RevokedCertificate("ab"))
    await until(lambda: rig.store.revision == rig.hub.revision)
    assert rig.hub.requests == [0, at] and watcher.refused == 1
    assert 0xAB in rig.store.revoked_serials()


@pytest.mark.parametrize("fault", ["recipient", "key"])
async def test_misaddressed_or_foreign_signed_update_is_refused(rig: Rig, fault: str) -> None:
    watcher = await synced(rig)
    at = rig.store.revision
    rig.hub.faults = [fault]
    await rig.hub.change(dr.Institution(B, 12, "B2"))
    await until(lambda: rig.store.revision == rig.hub.revision)
    assert watcher.refused == 1 and rig.hub.requests == [0, at]
    assert rig.store.institution(B).name == "B2"


async def test_hub_down_keeps_the_fragment_and_resumes_with_deltas(rig: Rig) -> None:
    watcher = await synced(rig)
    at = rig.store.revision
    await rig.stop_hub()
    await until(lambda: not watcher.connected)
    for _ in range(20):  # a few failed reconnects: never "connected", fragment kept
        await asyncio.sleep(0.01)
        assert not watcher.connected
    assert rig.store.revision == at and rig.store.institution(A) is not None
    await rig.hub.change(dr.Institution(B, 12, "B while away"))
    await rig.start_hub()  # same port
    await until(lambda: rig.store.revision == rig.hub.revision)
    assert rig.hub.requests[-1] == at and 0 not in rig.hub.requests[1:]
    assert watcher.refused == 0 and rig.store.institution(B).name == "B while away"
    assert (watcher.snapshots, watcher.deltas) == (1, 1)


async def test_connected_while_idle_and_up_to_date(rig: Rig) -> None:
    watcher = await synced(rig)
    await rig.stop_hub()
    await until(lambda: not watcher.connected)
    await rig.start_hub()  # nothing changed: the hub has no update to send
    await until(lambda: watcher.connected)
    assert rig.hub.requests[-1] == rig.store.revision and watcher.deltas == 0


async def test_fragment_of_another_institution_is_replaced_by_a_snapshot(rig: Rig) -> None:
    # A data directory that held C's fragment: the watcher asks for a snapshot (start 0).
    await rig.store.open()
    await rig.store.apply_snapshot(3, [dr.Institution(C, 17)], recipient=C)
    await rig.store.close()
    await synced(rig)
    assert rig.hub.requests == [0] and rig.store.recipient == A
    assert rig.store.institution(A) is not None



# -- against the real hub ------------------------------------------------------------------------

CITIZENS = ("85073003328", "17073003384", "00010100105")


class RealHub:
    """The in-process hub (seeded directory, signing key) and standalone watchers with their
    own fragment stores, one per institution, that can go offline and come back."""

    def __init__(self, net: InProcessNetwork) -> None:
        self.net = net
        self.hub_key = load_public_key(public_path(net.directory_key))
        self.watchers: dict[str, FragmentWatcher] = {}
        self.stores: dict[str, FragmentStore] = {}

    async def online(self, enterprise: str) -> FragmentWatcher:
        config = self.net.node_config(enterprise, self.net.hub_address)
        store = FragmentStore(self.net.root / "fragments" / f"{enterprise}.sqlite")
        await store.open()
        watcher = FragmentWatcher(config, TlsMaterial.load(config.tls), store, self.hub_key,
                                  Backoff(initial=0.01, maximum=0.1))
        watcher.start()
        self.stores[enterprise], self.watchers[enterprise] = store, watcher
        return watcher

    async def offline(self, enterprise: str) -> None:
        await self.watchers.pop(enterprise).stop()
        await self.stores.pop(enterprise).close()

    async def apply(self, changes: list[tuple[dr.Entity, bool]]) -> int:
        return await self.net.hub.directory.apply(changes)

    async def caught_up(self, timeout: float = 10.0) -> None:
        revision = self.net.hub.directory.revision
        await until(lambda: all(s.revision == revision for s in self.stores.values()), timeout)

    async def close(self) -> None:
        for enterprise in list(self.watchers):
            await self.offline(enterprise)


@pytest.fixture
async def real(network: InProcessNetwork) -> AsyncIterator[RealHub]:
    real = RealHub(network)
    try:
        yield real
    finally:
        await real.close()


async def test_real_hub_sends_each_node_only_its_fragment(real: RealHub) -> None:
    sector = {A: 7, B: 11, C: 18}  # node.testing.SECTORS
    await real.apply([
        (dr.Integration(CITIZENS[0], A, 1, 1), False),
        (dr.Integration(CITIZENS[1], A, 1, 1), False),
        (dr.Integration(CITIZENS[0], B, 2, 1), False),
        (dr.Authorization("for-a-sector", DEMO_SERVICE, sector=sector[A]), False),
        (dr.Authorization("for-b-sector", DEMO_SERVICE, sector=sector[B]), False),
        (dr.Subscription("sub-b", B, DEMO_SERVICE), False),
    ])
    for e in (A, B, C):
        await real.online(e)
    await real.caught_up()
    a, b, c = (real.stores[e] for e in (A, B, C))
    assert {i.subject for i in await a.integrations_of_institution(A)} == set(CITIZENS[:2])
    assert await a.integrations_of_institution(B) == []
    assert (await a.counts())["integration"] == 2
    assert [i.institution for i in (await a.view([CITIZENS[0]])).integrations[CITIZENS[0]]] == [A]
    assert await b.integrations_of_institution(A) == []
    assert (await b.counts())["integration"] == 1
    assert (await c.counts())["integration"] == 0
    auths = {e: {x.id for x in s.entities("authorization")} for e, s in real.stores.items()}
    assert auths == {A: {f"demo-{A}", "for-a-sector"}, B: {f"demo-{B}", "for-b-sector"},
                     C: {f"demo-{C}"}}
    assert [s.id for s in b.subscriptions()] == ["sub-b"] and a.subscriptions() == []
    assert all(set(s.institutions()) == {A, B, C} for s in real.stores.values())  # public part
    # Later changes follow the same rule, as deltas.
    await real.apply([(dr.Integration(CITIZENS[1], B, 2, 1), False),
                      (dr.Integration(CITIZENS[0], A, 1, 1), True)])
    await real.caught_up()
    assert {i.subject for i in await a.integrations_of_institution(A)} == {CITIZENS[1]}
    assert await a.integrations_of_institution(B) == []
    assert len(await b.integrations_of_institution(B)) == 2
    assert all(w.refused == 0 and w.snapshots == 1 for w in real.watchers.values())


async def test_node_offline_during_1000_changes_catches_up_with_deltas(real: RealHub) -> None:
    await real.online(A)
    await real.caught_up()
    await real.offline(A)
    changes: list[tuple[dr.Entity, bool]] = []
    for i in range(1000):
        if i % 2:
            changes.append((dr.Authorization(f"b-{i}", DEMO_SERVICE, institution=B), False))
        else:
            changes.append((dr.RevokedCertificate(f"{i + 0x1000:x}"), False))
    changes.append((dr.Institution(C, 18, "C renamed"), False))
    for start in range(0, len(changes), 100):  # many revisions, many transactions
        await real.apply(changes[start:start + 100])
    watcher = await real.online(A)  # same fragment file: resumes from its revision
    await real.caught_up()
    store = real.stores[A]
    assert (watcher.snapshots, watcher.refused) == (0, 0) and watcher.deltas >= 1
    assert len(store.revoked_serials()) == 500
    assert not any(a.id.startswith("b-") for a in store.entities("authorization"))
    assert store.institution(C).name == "C renamed" and store.lag == 0


async def test_node_offline_past_compaction_gets_a_snapshot(real: RealHub) -> None:
    await real.online(A)
    await real.caught_up()
    await real.offline(A)
    await real.apply([(dr.Institution(C, 18), True), (dr.RevokedCertificate("beef"), False)])
    await real.apply([(dr.Integration(CITIZENS[2], A, 1, 1), False)])
    directory = real.net.hub.directory
    await directory.store.compact(directory.revision)
    watcher = await real.online(A)
    await real.caught_up()
    store = real.stores[A]
    assert (watcher.snapshots, watcher.refused) == (1, 0)
    assert store.institution(C) is None  # the delete is visible through the snapshot
    assert 0xBEEF in store.revoked_serials()
    assert [i.subject for i in await store.integrations_of_institution(A)] == [CITIZENS[2]]


async def test_revocation_through_the_directory_reaches_every_node(real: RealHub) -> None:
    for e in (A, B, C):
        await real.online(e)
    await real.caught_up()
    _, old_cert = real.net.pki.issue(B, basename="b-old")
    serial = load_certificate(old_cert).serial_number
    await real.apply([(dr.RevokedCertificate(f"{serial:x}", B, "superseded"), False)])
    await real.caught_up()
    for e, store in real.stores.items():
        assert serial in store.revoked_serials(), e
    assert all(w.connected and w.refused == 0 for w in real.watchers.values())
