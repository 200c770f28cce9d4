"""The hub tier as real processes: one PostgreSQL, two hub replicas, nodes listing both.

Topology (every address is this machine's, or a namespace the test made):

* PostgreSQL (Debian's binaries, :class:`~node.testing_postgres.PostgresServer`, or a
  Patroni cluster of two, :class:`~tests.ha.patroni.PatroniCluster`, reached with a DSN that
  lists both members) listens on 127.0.0.1 and on the host side of the namespace's link 0
  (``10.<base>.0.1``);
* replica ``hub-a`` runs here, on 127.0.0.1, and reaches PostgreSQL on 127.0.0.1;
* replica ``hub-b`` runs inside a network namespace (:class:`~tests.ha.netns.Namespace`): it
  reaches PostgreSQL over link 0 only, and is reached by the nodes (and reaches them) over
  link 1 (it listens on ``10.<base>.1.2``; the nodes on ``10.<base>.1.1``, which both replicas
  reach). Cutting link 0 cuts hub-b off from the database and from nothing else.
* each node lists both replicas in ``hubs``, the first choice alternating between nodes.

:class:`Traffic` is the applications: every node submits envelopes to the others and fetches
and acknowledges what it receives, recording what each application was acknowledged and
what it fetched, so a test can check that every acknowledged envelope arrived exactly once,
in order per sender.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from node.client import LocalClient, make_envelope
from node.testing import DEMO_SERVICE, ProcessNetwork
from node.testing_postgres import PgDatabase, PostgresServer
from tests.ha.netns import Namespace
from tests.ha.patroni import PatroniCluster

__all__ = ["HubTier", "Traffic", "longest_gap"]

REPLICAS = ("hub-a", "hub-b")
#: hub-b's namespace links: 0 to the database, 1 to the nodes.
DB_LINK, NODE_LINK = 0, 1


class HubTier(ProcessNetwork):
    """See the module's docstring. Build it with :meth:`make`; ``stop_all`` at the end."""

    server: PostgresServer | PatroniCluster
    database: PgDatabase
    ns: Namespace

    @classmethod
    def make(cls, root: Path, server: PostgresServer | PatroniCluster, database: PgDatabase,
             ns: Namespace, **options: Any) -> HubTier:
        tier = cls(root, **options)
        tier.server, tier.database, tier.ns = server, database, ns
        tier.addresses: dict[str, str] = {}
        tier.wrap["hub-b"] = ns.wrap
        return tier

    # -- replicas ------------------------------------------------------------------------------

    def replica_table(self, name: str) -> dict[str, Any]:
        inside = name == "hub-b"
        listen = self.addresses.get(name) or (
            f"{self.ns.link[NODE_LINK].inside_ip}:0" if inside else "127.0.0.1:0")
        db_host = self.ns.link[DB_LINK].host_ip if inside else "127.0.0.1"
        table = self.hub_table(listen)
        table["data_dir"] = str(self.root / name)
        table["store"] = self.database.store_table(
            dsn=self.server.dsn(self.database.name, host=db_host), replica_id=name)
        return table

    def start_replica(self, name: str) -> str:
        info = self._spawn(name, "hub", self.replica_table(name))
        host = self.ns.link[NODE_LINK].inside_ip if name == "hub-b" else "127.0.0.1"
        self.addresses[name] = f"{host}:{info['port']}"
        return self.addresses[name]

    def start(self, nodes: Any = None) -> None:
        for name in REPLICAS:
            self.start_replica(name)
        self.hub_address = self.addresses["hub-a"]  # where apply_directory goes
        if self.seed:
            self.apply_directory(self.seed)
        for i, enterprise in enumerate(self.institutions if nodes is None else nodes):
            self.start_node(enterprise, first=REPLICAS[i % len(REPLICAS)])

    # -- nodes -------------------------------------------------------------------------------

    def start_node(self, enterprise: str, init: bool | None = None,  # type: ignore[override]
                   first: str = "hub-a") -> None:
        (self.root / "sock").mkdir(exist_ok=True)
        table = self.node_table(enterprise, self.addresses[first])
        others = [self.addresses[n] for n in REPLICAS if n != first]
        table.pop("hub", None)
        table["hubs"] = [self.addresses[first], *others]
        table["listen"] = f"{self.ns.link[NODE_LINK].host_ip}:0"  # both replicas reach it
        self._spawn(enterprise, "node", table, init)

    def stop_all(self) -> None:
        for name in [n for n in self.procs if n not in REPLICAS]:
            self._stop_quietly(name)
        for name in REPLICAS:
            if name in self.procs:
                self._stop_quietly(name)


class Traffic:
    """Steady load in both directions (see the module's docstring): each node sends a batch
    of ``batch`` envelopes every ``every_s`` to the next node in turn, and fetches."""

    def __init__(self, tier: HubTier, batch: int = 10, every_s: float = 0.05,
                 first: int = 0) -> None:
        self.tier, self.batch, self.every_s = tier, batch, every_s
        #: The number of each sender's first envelope: rounds of traffic on the same nodes
        #: must not reuse numbers (a node takes an envelope equal to one it has, with the same
        #: sender_ticket, for a resubmission of it).
        self.first = first
        self.lock = threading.Lock()
        #: (sender, receiver) -> the numbers of the envelopes the sender's application was
        #: acknowledged (its node stored them), in submission order.
        self.acknowledged: dict[tuple[str, str], list[int]] = defaultdict(list)
        #: receiver -> (sender, number) in the order its application fetched them.
        self.fetched: dict[str, list[tuple[str, int]]] = defaultdict(list)
        #: receiver -> when (time.monotonic()) each fetch that brought envelopes returned.
        self.fetch_times: dict[str, list[float]] = defaultdict(list)
        self.submit_errors = 0
        #: sender -> the outbox sequences of what its application was acknowledged.
        self.sequences: dict[str, list[int]] = defaultdict(list)
        self._sending = threading.Event()
        self._fetching = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Traffic:
        self._sending.set()
        self._fetching.set()
        for enterprise in self.tier.institutions:
            for target in (self._send, self._fetch):
                thread = threading.Thread(target=target, args=(enterprise,), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def _send(self, sender: str) -> None:
        others = [e for e in self.tier.institutions if e != sender]
        counter = itertools.count(self.first)
        with LocalClient(self.tier.local_api(sender)) as client:
            for receiver in itertools.cycle(others):
                if not self._sending.is_set():
                    return
                numbers = [next(counter) for _ in range(self.batch)]
                envelopes = [make_envelope(DEMO_SERVICE, [receiver], f"{sender}:{n}".encode(),
                                           subject_citizen="85073003328",
                                           sender_ticket=f"{sender}:{n}")
                             for n in numbers]
                try:
                    _, sequences = client.submit(envelopes, timeout=30)
                except grpc.RpcError:
                    self.submit_errors += 1  # not acknowledged: not counted as sent
                else:
                    with self.lock:
                        self.acknowledged[(sender, receiver)].extend(numbers)
                        self.sequences[sender].extend(sequences)
                time.sleep(self.every_s)

    def _fetch(self, receiver: str) -> None:
        with LocalClient(self.tier.local_api(receiver)) as client:
            while self._fetching.is_set():
                try:
                    batch = client.fetch(1000, wait_ms=200)
                    if batch:
                        client.acknowledge([e.hub_ticket for e in batch])
                except grpc.RpcError:
                    time.sleep(0.2)
                    continue
                with self.lock:
                    if batch:
                        self.fetch_times[receiver].append(time.monotonic())
                    for envelope in batch:
                        sender, number = envelope.sender_ticket.split(":")
                        self.fetched[receiver].append((sender, int(number)))

    def stop_sending(self) -> None:
        self._sending.clear()
        for thread in self._threads[::2]:
            thread.join(60)

    def sent_count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.acknowledged.values())

    def fetched_count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.fetched.values())

    def drain(self, timeout: float, progress: Callable[[], str] = lambda: "") -> None:
        """Wait until every acknowledged envelope was fetched (or ``timeout``), then stop."""
        deadline = time.monotonic() + timeout
        while self.fetched_count() < self.sent_count() and time.monotonic() < deadline:
            time.sleep(0.2)
        self._fetching.clear()
        for thread in self._threads[1::2]:
            thread.join(60)
        assert self.fetched_count() >= self.sent_count(), (
            f"{self.sent_count() - self.fetched_count()} acknowledged envelopes never arrived"
            f" in {timeout:g} s\n{progress()}")

    def longest_gap(self, after: float, until: float) -> float:
        """The longest any receiver went without envelopes between ``after`` and ``until``
        (monotonic seconds): a dead replica's destinations wait for their takeover."""
        with self.lock:
            return longest_gap(self.fetch_times.values(), after, until)

    def refused(self) -> dict[str, int]:
        """reason -> how many acknowledged envelopes the hub did not accept (asked of each
        sender's node once every outcome is in: after :meth:`drain`)."""
        counts: dict[str, int] = defaultdict(int)
        for sender, sequences in self.sequences.items():
            with LocalClient(self.tier.local_api(sender)) as client:
                for i in range(0, len(sequences), 5_000):
                    for outcome in client.outcomes(sequences[i:i + 5_000], wait_ms=10_000):
                        if outcome.reason != "ACCEPTED":
                            counts[outcome.reason] += 1
        return dict(counts)

    def problems(self) -> list[str]:
        """What breaks "exactly once, in order per sender" (empty: nothing)."""
        problems: list[str] = []
        for receiver, got in self.fetched.items():
            seen: set[tuple[str, int]] = set()
            last: dict[str, int] = {}
            for sender, number in got:
                if (sender, number) in seen:
                    problems.append(f"{receiver} fetched {sender}:{number} twice")
                seen.add((sender, number))
                if number <= last.get(sender, -1):
                    problems.append(f"{receiver} fetched {sender}:{number} after"
                                    f" {sender}:{last[sender]}")
                last[sender] = max(number, last.get(sender, -1))
            for (sender, to), numbers in self.acknowledged.items():
                if to == receiver:
                    missing = set(numbers) - {n for s, n in seen if s == sender}
                    if missing:
                        problems.append(f"{receiver} never fetched {len(missing)} of {sender}'s"
                                        f" acknowledged envelopes, e.g. {sorted(missing)[:5]}")
        return problems


def longest_gap(series: Iterable[list[float]], after: float, until: float) -> float:
    """The longest any of ``series`` (times of events, monotonic seconds) went without an
    event between ``after`` and ``until``."""
    gaps = []
    for times in series:
        inside = [after, *(t for t in times if after < t < until), until]
        gaps.append(max(b - a for a, b in itertools.pairwise(inside)))
    return max(gaps, default=0.0)
