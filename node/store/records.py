"""The records the storage protocols (:mod:`node.store.protocols`) take and return.

Plain values, free of any backend: what a store hands back is the same whether SQLite or
another database keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from node.core.directory import Entity
from node.core.errors import Unavailable

__all__ = [
    "EVERY_DESTINATION",
    "Enqueued",
    "HeldLeases",
    "HubState",
    "LeaseLost",
    "LoggedChange",
    "NodeCounts",
    "OutboxOutcome",
    "Purged",
    "QueueRow",
    "QueuedBatch",
    "ResendRaced",
    "rows_that_fit",
    "RevisionGap",
]

# -- hub -------------------------------------------------------------------------------------

#: A run of envelopes for one destination: (destination, envelope count, packed batch).
QueueRow = tuple[str, int, bytes]


class ResendRaced(Unavailable):
    """A batch's sequences were committed by another stream in the meantime (retry)."""


class QueuedBatch(NamedTuple):
    """The next queued envelopes of one destination, in order: ``count`` envelopes in the
    ``packed`` batches (:mod:`node.wire.delivery`) of queue rows up to ``last_seq``."""

    last_seq: int
    count: int
    packed: tuple[bytes, ...]


def rows_that_fit(sizes: Sequence[Sequence[int]], limit: int, max_bytes: int) -> tuple[int, int]:
    """(last seq, envelopes) of the queue rows ``(seq, count, bytes)`` (in order, at least
    one) a delivery batch takes: at most ``limit`` envelopes and ~``max_bytes``, and always
    the first row."""
    last, count, size = sizes[0]
    for seq, n, length in sizes[1:]:
        if count + n > limit or size + length > max_bytes:
            break
        last, count, size = seq, count + n, size + length
    return int(last), int(count)


class LeaseLost(Exception):
    """A delivery commit was fenced off: this replica no longer holds ``dest``'s lease with
    ``token`` (another replica took the destination over). Nothing was written."""

    def __init__(self, dest: str, token: int) -> None:
        super().__init__(f"the delivery lease of {dest} (token {token}) is no longer held")
        self.dest = dest
        self.token = token


@dataclass(frozen=True, slots=True)
class HeldLeases:
    """What a hub replica holds after a lease round (:meth:`DeliveryLeases.renew_leases`).

    ``tokens``: destination -> fencing token of each lease held (a token changes whenever a
    destination changes owner); ``endpoints``: the endpoints every destination registered, at
    any replica, as the database has them; to hand over after their batch in flight:
    ``foreign``, the leases of nodes registered at another live replica, and ``surplus`` of
    the ``movable`` ones (registered at no live replica) beyond the fair share (node/store/
    postgres/leases.py, "Affinity"); ``queued``: the envelopes queued
    per destination, every destination's (what other replicas stored and delivered included;
    empty where one process counts them itself). ``every``: a single hub process (SQLite)
    that owns every destination, each with token 0."""

    tokens: Mapping[str, int] = field(default_factory=dict)
    endpoints: Mapping[str, str] = field(default_factory=dict)
    surplus: int = 0
    queued: Mapping[str, int] = field(default_factory=dict)
    every: bool = False
    foreign: frozenset[str] = frozenset()
    movable: frozenset[str] = frozenset()

    def token(self, dest: str) -> int | None:
        """``dest``'s fencing token, None: not held."""
        return 0 if self.every else self.tokens.get(dest)


#: The one hub process of a SQLite store: every destination is its own.
EVERY_DESTINATION = HeldLeases(every=True)


@dataclass(slots=True)
class HubState:
    """What the hub loads at startup."""

    pending: dict[str, int] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)
    next_queue_seq: int = 1
    store_id: str = ""


class LoggedChange(NamedTuple):
    """One change of the directory's log: ``entity`` put (or ``deleted``) at ``revision``,
    in ``owner``'s fragment."""

    revision: int
    owner: str
    entity: Entity
    deleted: bool


# -- node ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxOutcome:
    """The hub's answer to one outbox envelope; ``reason`` None: no answer, and ``detail``
    says why when none will come (an unknown sequence, one purged by retention)."""

    seq: int
    reason: str | None
    detail: str
    hub_ticket: str
    receivers: tuple[str, ...]

    @property
    def awaited(self) -> bool:
        """Sent (or to be sent) and not decided yet: the hub's answer is still to come."""
        return self.reason is None and not self.detail


class Enqueued(NamedTuple):
    """Where :meth:`NodeStore.enqueue_once` put the envelopes: a sequence per envelope, and
    the indexes of those answered with the sequence of an earlier, same envelope."""

    seqs: list[int]
    resubmitted: frozenset[int]


@dataclass(frozen=True, slots=True)
class Purged:
    """What one :meth:`NodeStore.purge` deleted: outbox envelopes up to ``upto_seq``
    (decided ones only) and acknowledged inbox envelopes."""

    outbox: int
    inbox: int
    upto_seq: int


@dataclass(frozen=True, slots=True)
class NodeCounts:
    outbox_pending: int
    sent_accepted: int
    sent_refused: int
    inbox_unacknowledged: int
    inbox_total: int


class RevisionGap(Exception):
    """A delta does not start where the fragment is: nothing was applied."""

    def __init__(self, expected: int, got: int, to_revision: int) -> None:
        super().__init__(f"delta {got}->{to_revision} does not start at the fragment's"
                         f" revision {expected}")
        self.expected = expected
        self.got = got
        self.to_revision = to_revision
