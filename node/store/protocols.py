"""The storage seams: what the hub and the node need of their stores, as Protocols.

Design
------
The orchestration (:mod:`node.hub`, :mod:`node.member`) is typed against these protocols, not
against the SQLite classes that implement them today (:class:`~node.store.hub_store.HubStore`,
:class:`~node.store.node_store.NodeStore`, :class:`~node.store.directory_store.DirectoryStore`,
:class:`~node.store.fragment_store.FragmentStore`). A second backend (a PostgreSQL tier of hub
replicas) implements the same protocols and passes the same contract suite
(``tests/contract/``).

Rules every implementation keeps (the contract suite checks them):

* **A batch is one commit.** :meth:`BatchIntake.commit_batch` stores a batch's queue rows,
  its audit records and the sender's idempotency record (highest sequence + the ack) in one
  transaction: after a crash either all of it is there or none of it.
* **Resends get their original outcome.** :meth:`BatchIntake.recent_acks` returns the acks
  stored for an origin's sequences; :meth:`BatchIntake.commit_batch` refuses
  (:class:`~node.store.records.ResendRaced`, nothing written) sequences already stored.
* **Per-destination order.** :meth:`DeliveryQueue.read_queue` returns a destination's rows in
  commit order; :meth:`DeliveryQueue.commit_delivery` removes them and audits the delivery in
  one transaction.
* **One deliverer per destination.** :class:`DeliveryLeases`: a replica delivers to a
  destination only while it holds its lease; :meth:`DeliveryQueue.commit_delivery` given the
  lease's fencing token checks it in its own transaction and raises
  :class:`~node.store.records.LeaseLost` (nothing written) if another replica took it over.
  Leases expire on the database's clock. A store used by one hub process alone (SQLite) owns
  every destination (:data:`~node.store.records.EVERY_DESTINATION`).
* **One audit chain.** Every record appended (with a batch, a delivery or alone) extends one
  hash chain in commit order, across restarts and other writers (a purge).
* **Migrations are forward-only.** Opening a store of an older schema upgrades it; one of a
  newer schema is refused.

Nothing here names a backend: no connections, cursors or SQL types cross these seams, only
bytes, strings, numbers and the records of :mod:`node.store.records` and
:mod:`node.core`. Each method is one transaction (or one consistent read).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from node.core.audit import AuditRecord, Checkpoint
from node.core.continuity import HubRegression
from node.core.directory import DirectoryView, Entity, Integration
from node.store.records import (
    Enqueued,
    HeldLeases,
    HubState,
    LoggedChange,
    NodeCounts,
    OutboxOutcome,
    Purged,
    QueuedBatch,
    QueueRow,
)

if TYPE_CHECKING:
    from node.store.audit_queries import Consultation, PurgeReport
    from node.store.failures import StoreFailures

__all__ = [
    "AuditLog",
    "BatchIntake",
    "DeliveryLeases",
    "DeliveryQueue",
    "DirectoryLog",
    "FollowCallback",
    "FragmentReplica",
    "ContinuityState",
    "HubStorage",
    "Inbox",
    "NodeStorage",
    "Outbox",
    "QueueDoorbell",
    "QueueRow",
    "RetentionMarks",
]


# -- hub ---------------------------------------------------------------------------------------


class BatchIntake(Protocol):
    """Idempotency and the atomic batch commit (:mod:`node.hub.intake`)."""

    async def origin_high(self, sender: str, origin: str) -> int:
        """The highest sequence stored for (sender, origin); 0: none."""

    async def recent_acks(self, sender: str, origin: str, from_seq: int) -> list[tuple[int, bytes]]:
        """(first_seq, ack) of the stored acks whose range reaches ``from_seq`` or later."""

    async def commit_batch(self, sender: str, origin: str, first_seq: int, last_seq: int,
                           queue_rows: Sequence[QueueRow], audit_records: Sequence[AuditRecord],
                           ack: bytes) -> None:
        """Queue rows + audit records + idempotency record (``last_seq``, ``ack``) in one
        transaction; :class:`~node.store.records.ResendRaced` if the sequences from
        ``first_seq`` were stored meanwhile."""


class AuditLog(Protocol):
    """The tamper-evident audit chain, its checkpoints and its queries."""

    async def append_audit(self, records: Sequence[AuditRecord]) -> None:
        """Records that come with no envelope to store (their own transaction)."""

    async def checkpoint(self) -> Checkpoint | None:
        """Sign the head now if it moved (None: no signer, or nothing new)."""

    async def latest_checkpoint(self) -> Checkpoint | None: ...

    async def who_consulted(
        self, subject_number: str, since_us: int | None = None, limit: int | None = None
    ) -> list[Consultation]: ...

    async def export_subject(self, subject_number: str, since_us: int | None = None) -> dict[str, Any]:
        """A signed extract of one subject's records."""

    async def purge(self, cutoffs: Mapping[str, int], service_kinds: Mapping[str, str] | None = None,
                    default_kind: str = "unknown") -> PurgeReport:
        """Retention: redact or cut what is older than its kind's cut-off."""


class QueueDoorbell(Protocol):
    """What :meth:`DeliveryLeases.listen` rings (the deliverer): a doorbell, not a log."""

    def queued(self, dest: str) -> None:
        """Rows were queued for ``dest`` (by any replica)."""

    def missed(self) -> None:
        """Rings may have been lost (the listener was away): look at every queue again."""

    def leases_freed(self) -> None:
        """A replica handed leases over (drain): take what is free now, not at the next round."""


class DeliveryLeases(Protocol):
    """Which hub replica delivers to which destination (:mod:`node.hub.delivery`)."""

    async def renew_leases(self, ttl_s: float) -> HeldLeases:
        """One lease round, one transaction: this replica is alive; the leases it holds last
        until the database's ``now()`` + ``ttl_s``; free or expired ones are taken up to its
        fair share (ceil(destinations / live replicas)). What it holds afterwards."""

    async def release_leases(self, tokens: Mapping[str, int], leaving: bool = False) -> None:
        """Hand these leases (destination -> token, still this replica's) over now;
        ``leaving``: this replica stops delivering (not counted among the live ones)."""

    async def listen(self, doorbell: QueueDoorbell) -> None:
        """Until cancelled: ring ``doorbell`` when another process queued rows or freed leases
        (returns at once where no other process writes the store)."""


class DeliveryQueue(DeliveryLeases, Protocol):
    """The per-destination queue (:mod:`node.hub.delivery`)."""

    #: Non-empty once the store was found damaged at run time (what the backend said).
    damaged: str

    async def read_queue(self, dest: str, after_seq: int, limit: int,
                         max_bytes: int) -> QueuedBatch | None:
        """``dest``'s next rows after ``after_seq``, in commit order (at least one row)."""

    async def commit_delivery(
        self, dest: str, upto_seq: int, count: int, audit_records: Sequence[AuditRecord],
        token: int | None = None,
    ) -> None:
        """``dest`` acknowledged up to ``upto_seq``: drop those rows and audit it, at once.
        ``token``: the fencing token of ``dest``'s lease, checked in the same transaction
        (:class:`~node.store.records.LeaseLost`, nothing written, if no longer held); None:
        no lease (tools and tests writing a store alone)."""

    async def set_endpoint(self, institution: str, endpoint: str) -> None: ...


class HubStorage(BatchIntake, AuditLog, DeliveryQueue, Protocol):
    """The hub's store: all of the above on one database (a batch commit writes the queue,
    the audit chain and the idempotency records in one transaction)."""

    store_id: str
    #: Called once (in the event loop) when the store finds its database damaged.
    on_damaged: list[Callable[[], None]]
    #: Failed writes, by component and cause (its listeners hear of each at once).
    failures: StoreFailures

    async def open(self) -> HubState: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise :class:`~node.core.errors.Unavailable` when the store cannot commit now (the
        hub's health: node/hub/store_health.py); bounded in time."""

    @property
    def audit_last_seq(self) -> int:
        """The audit chain's last record known committed here (the metrics; on PostgreSQL
        the head this replica last saw, as of its last append)."""

    async def database_size(self) -> int | None:
        """Bytes the database server holds for this store (the metrics); None where the
        daemon measures its own files (SQLite)."""

    @property
    def is_open(self) -> bool: ...


#: ``callback(changes, resynced)``: what a :class:`DirectoryLog` took in from other writers.
FollowCallback = Callable[[list[LoggedChange], bool], Awaitable[None]]


class DirectoryLog(Protocol):
    """The hub's master directory: a revisioned log of entity changes
    (:mod:`node.hub.directory`).

    Revisions are one sequence in commit order, whoever writes: once a revision is committed,
    every lower one is. :attr:`revision` is the last one this store took in (its own and, on
    a database several hub replicas share, the others'); :meth:`changes_since` up to it never
    skips one."""

    revision: int
    compacted_revision: int

    def follow(self, callback: FollowCallback) -> None:
        """Call ``callback`` after this store took in changes that *other* writers committed
        (other hub replicas): ``(changes, False)`` in revision order, or ``([], True)`` when
        the changes it missed were compacted away and it started over from the current state.
        A store no one else writes never calls it."""

    async def catch_up(self) -> None:
        """Take in now what other writers committed (as :meth:`follow` reports it)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def apply(self, changes: Sequence[tuple[Entity, bool]]) -> list[LoggedChange]:
        """(entity, delete) changes in one transaction, one revision each."""

    async def compact(self, keep_after: int) -> tuple[int, int]: ...

    async def small_tables(self) -> list[Entity]: ...

    async def warm_cache(self) -> int: ...

    async def integrations_of(self, subjects: Iterable[str]) -> dict[str, tuple[Integration, ...]]: ...

    async def replacements_of(self, numbers: Iterable[str]) -> dict[str, str]: ...

    async def snapshot(self, owners: Sequence[str]) -> tuple[int, list[Entity]]:
        """``owners``' entities and the revision they are at (possibly above
        :attr:`revision`, never below what they hold)."""

    async def changes_since(
        self, owners: Sequence[str], after: int, upto: int, limit: int = 10_000
    ) -> list[LoggedChange]:
        """Changes of ``owners`` in (after, upto], oldest first, at most ``limit``; when
        ``after`` is below the compacted revision (:attr:`compacted_revision` is up to date
        after the call), what they were is gone and the caller needs a snapshot."""


# -- node --------------------------------------------------------------------------------------


class Outbox(Protocol):
    """What the institution submits, sent to the hub in order (:mod:`node.member.uplink`)."""

    origin: str
    decided_seq: int
    sent_accepted: int
    sent_refused: int
    outbox_changed: asyncio.Event

    async def enqueue(self, envelopes: Sequence[bytes]) -> list[int]:
        """Store envelopes for sending; their sequences (never reused), committed on return."""

    async def enqueue_once(
        self, envelopes: Sequence[bytes], keys: Sequence[str | None],
        same: Callable[[bytes, bytes], bool],
    ) -> Enqueued: ...

    async def pending(self, after_seq: int, limit: int, max_bytes: int) -> list[tuple[int, bytes]]: ...

    async def record_ack(
        self, first_seq: int, last_seq: int, ack: bytes, refused: Sequence[int],
        from_hub: bool = True,
    ) -> None: ...

    async def outcomes(self, seqs: Sequence[int]) -> list[OutboxOutcome]: ...


class Inbox(Protocol):
    """What the hub delivers, until the application acknowledges it."""

    inbox_changed: asyncio.Event

    async def store_delivery(
        self,
        tickets: Sequence[str],
        envelopes: Sequence[bytes],
        derive: Callable[[str, bytes], bytes | None] | None = None,
    ) -> int: ...

    async def fetch(self, limit: int) -> list[tuple[str, bytes]]: ...

    async def acknowledge(self, tickets: Sequence[str]) -> int: ...

    def counts(self) -> NodeCounts: ...


class RetentionMarks(Protocol):
    """Marks and purges of what the node is done with (:mod:`node.member.retention`)."""

    async def mark(self, now_us: int) -> None: ...

    async def purge(self, before_us: int, chunk: int = ...) -> Purged: ...


class ContinuityState(Protocol):
    """What the node knows of the hub's state (:mod:`node.member.continuity`)."""

    hub_acked_seq: int
    hub_checkpoint: Checkpoint | None
    hub_regression: HubRegression | None

    async def save_continuity(
        self, checkpoint: Checkpoint | None, regression: HubRegression | None
    ) -> None: ...


class NodeStorage(Outbox, Inbox, RetentionMarks, ContinuityState, Protocol):
    """The node's store: all of the above on one database."""

    store_id: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class FragmentReplica(Protocol):
    """The node's copy of its directory fragment (:mod:`node.member.fragment`)."""

    revision: int
    recipient: str
    last_sync_us: int
    crl_der: bytes | None

    @property
    def lag(self) -> int: ...

    def note_hub_revision(self, revision: int) -> None: ...

    async def apply_snapshot(self, revision: int, entities: Sequence[Entity],
                             recipient: str | None = None) -> None: ...

    async def apply_delta(self, from_revision: int, to_revision: int,
                          changes: Sequence[tuple[Entity, bool]]) -> None:
        """:class:`~node.store.records.RevisionGap` (nothing applied) unless the replica is
        at ``from_revision``."""

    async def save_crl(self, der: bytes) -> None: ...

    async def view_for(self, envelopes: Iterable[tuple[str, str, int]]) -> DirectoryView: ...
