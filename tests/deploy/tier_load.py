"""Load through a deployed network, with an exactly-once ledger and a timeline of its progress.

The applications run in the test process, as :class:`tests.ha.tier.Traffic` (reused unchanged):
each node host's local API is a unix socket inside its container (``/run/crossroads/node.sock``),
reached from this machine as ``/proc/<the container's PID 1>/root/run/crossroads/node.sock``
(the container's own root seen from outside; no SSH, no extra process on the hosts). Traffic
records what each sending application was acknowledged (its node stored the envelope) and what
each receiving application fetched, so that afterwards :meth:`Traffic.problems` says whether
every acknowledged envelope arrived exactly once.

Acknowledgements to applications continue while the hub tier is down: the node keeps them in
its outbox. What stops during a failover is the hub's acceptance (its commit on the database)
and delivery. :class:`Timeline` samples, every ``every_s``, three counters: acknowledged to the
applications, accepted by the hub (the nodes' ``Status.sent_accepted``, summed) and fetched by
the receivers. Phases are named with :meth:`Timeline.mark`; :meth:`Timeline.figures` gives for
each phase its envelopes/s and the longest time each counter stood still.
"""

from __future__ import annotations

import itertools
import operator
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc

from node.client import LocalClient
from tests.deploy.harness import Lab
from tests.ha.tier import HubTier, Traffic

__all__ = ["DeployedNodes", "Timeline", "counter", "flush_inboxes", "start_traffic", "stop_traffic"]

SOCKET = "run/crossroads/node.sock"
COUNTERS = ("acknowledged", "accepted", "fetched")


@dataclass
class DeployedNodes:
    """The node hosts of a lab, as :class:`Traffic` sees a tier: ``institutions`` (enterprise
    numbers) and ``local_api(enterprise)``."""

    lab: Lab
    hosts: dict[str, str]  # enterprise number -> node host name

    @property
    def institutions(self) -> list[str]:
        return list(self.hosts)

    def local_api(self, enterprise: str) -> str:
        return f"unix:/proc/{self.lab.init_pid(self.hosts[enterprise])}/root/{SOCKET}"


def start_traffic(nodes: DeployedNodes, first: int = 0, batch: int = 5,
                  every_s: float = 0.1) -> Traffic:
    """Steady traffic between every pair of nodes, both ways (see :class:`Traffic`); ``first``
    sets the envelopes' numbers apart from an earlier round's on the same nodes."""
    return Traffic(cast(HubTier, nodes), batch=batch, every_s=every_s, first=first).start()


@dataclass(frozen=True)
class Sample:
    t: float  # time.monotonic()
    acknowledged: int
    fetched: int
    by_node: tuple[int, ...]  # accepted by the hub, per node (in DeployedNodes' order)

    @property
    def accepted(self) -> int:
        return sum(self.by_node)


Counter = Callable[[Sample], int]


def counter(name: str) -> Counter:
    return operator.attrgetter(name)


class Timeline:
    """Samples the counters (see the module's docstring) in a thread; ``stop`` ends it."""

    def __init__(self, traffic: Traffic, nodes: DeployedNodes, every_s: float = 0.25) -> None:
        self.traffic, self.every_s = traffic, every_s
        self.apis = [nodes.local_api(e) for e in nodes.institutions]
        self.samples: list[Sample] = []
        self.marks: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Timeline:
        self._thread.start()
        self.mark("start")
        return self

    def mark(self, label: str, at: float | None = None) -> float:
        """Name the phase that begins now (or ``at``, a time.monotonic() not before the last
        mark's)."""
        at = time.monotonic() if at is None else at
        self.marks.append((label, at))
        return at

    def stop(self) -> None:
        self.mark("stop")
        self._stop.set()
        self._thread.join(30)

    def when(self, label: str) -> float:
        """The time of the last mark named ``label``."""
        return next(t for name, t in reversed(self.marks) if name == label)

    def _run(self) -> None:
        clients = [LocalClient(api, wait_for_ready=False) for api in self.apis]
        accepted = [0] * len(clients)
        try:
            while not self._stop.wait(self.every_s):
                for i, client in enumerate(clients):
                    try:  # a node that does not answer keeps its last count
                        accepted[i] = client.status().sent_accepted
                    except grpc.RpcError:
                        pass
                self.samples.append(Sample(time.monotonic(), self.traffic.sent_count(),
                                           self.traffic.fetched_count(), tuple(accepted)))
        finally:
            for client in clients:
                client.close()

    def _inside(self, after: float, until: float) -> list[Sample]:
        return [s for s in self.samples if after <= s.t <= until]

    def rate(self, count: Counter, after: float, until: float) -> float:
        """Envelopes/s by which ``count`` grew between two times (the nearest samples)."""
        inside = self._inside(after, until)
        if len(inside) < 2:
            return 0.0
        first, last = inside[0], inside[-1]
        return (count(last) - count(first)) / (last.t - first.t)

    def longest_still(self, count: Counter, after: float, until: float) -> float:
        """The longest ``count`` did not grow between two times (to the sampling's
        resolution: ``every_s`` plus a Status call)."""
        inside = self._inside(after, until)
        if not inside:
            return until - after
        longest, since, value = 0.0, after, count(inside[0])
        for sample in inside[1:]:
            if count(sample) > value:
                longest = max(longest, sample.t - since)
                since, value = sample.t, count(sample)
        return max(longest, until - since)

    def without_hub_ack(self, after: float, until: float) -> float:
        """The longest any node went without the hub accepting one of its envelopes."""
        return max(self.longest_still(lambda s, i=i: s.by_node[i], after, until)
                   for i in range(len(self.apis))) if self.apis else 0.0

    def all_served(self, after: float, timeout: float) -> float:
        """Wait until the hub has accepted an envelope of every node after ``after``; the time
        of the sample that shows the last of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inside = [s for s in self.samples if s.t >= after]
            if inside:
                base = inside[0].by_node
                served = [next((s.t for s in inside if s.by_node[i] > base[i]), None)
                          for i in range(len(base))]
                if None not in served:
                    return max(t for t in served if t is not None)
            time.sleep(self.every_s)
        raise AssertionError(f"not every node was served within {timeout:g} s after the mark;"
                             f" last samples: {self.samples[-3:]}")

    def figures(self) -> dict[str, Any]:
        """Per phase (between consecutive marks): seconds, envelopes/s of each counter, the
        longest time each stood still (hub acknowledgements: the worst node's)."""
        phases = []
        for (name, after), (_, until) in itertools.pairwise(self.marks):
            phase: dict[str, Any] = {"phase": name, "seconds": round(until - after, 2)}
            for c in COUNTERS:
                phase[f"{c}_per_s"] = round(self.rate(counter(c), after, until), 1)
            phase["longest_without_acknowledgement_s"] = round(
                self.longest_still(counter("acknowledged"), after, until), 2)
            phase["longest_without_hub_acceptance_s"] = round(
                self.without_hub_ack(after, until), 2)
            phase["longest_without_delivery_s"] = round(
                self.traffic.longest_gap(after, until), 2)
            phases.append(phase)
        return {"sample_every_s": self.every_s, "phases": phases}


def flush_inboxes(nodes: DeployedNodes, wait_ms: int = 500) -> int:
    """Fetch and acknowledge what waits in the nodes' inboxes until none comes for
    ``wait_ms``; how many envelopes that was."""
    flushed = 0
    for enterprise in nodes.institutions:
        with LocalClient(nodes.local_api(enterprise)) as client:
            while batch := client.fetch(1000, wait_ms=wait_ms):
                client.acknowledge([e.hub_ticket for e in batch])
                flushed += len(batch)
    return flushed


def stop_traffic(traffic: Traffic) -> None:
    """End a round at once, without waiting for what is in flight (after a failure)."""
    traffic._sending.clear()
    traffic._fetching.clear()
    for thread in traffic._threads:
        thread.join(60)
