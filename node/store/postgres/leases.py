"""Delivery leases on PostgreSQL: which hub replica delivers to which destination.

Design
------
* **Tables** (migration 4). ``hub_replicas``: one row per replica (its id, last heartbeat,
  ``draining``). ``delivery_leases``: one row per destination: ``owner`` ('' when free),
  ``token`` (the fencing token: +1 at every change of owner) and ``expires_at``. Every time
  is the database's (``now()``), never a replica's: replicas' clocks do not matter.
* **A lease round** (:func:`renew`, one transaction, every ~1 s per replica): heartbeat
  (and forget replicas silent for a day); register destinations that appeared (a queue
  position or a registered endpoint); extend this replica's leases to ``now() + ttl``; count
  the live replicas (heartbeat within the TTL, not draining) and the destinations, and take
  free or expired leases (``FOR UPDATE SKIP LOCKED``: two replicas taking at once never
  take the same row): every one whose node registered at this replica, then those whose
  node registered at no live replica up to the fair share ``ceil(destinations / live)``;
  never one whose node registered at another live replica (see the affinity below). The
  answer: the leases held and their tokens; those to hand over after their batch in flight
  (the deliverer's): the ``foreign`` ones (registered at another live replica) and a
  ``surplus`` of the ``movable`` ones (registered at no live replica) beyond the fair
  share; the endpoints every destination registered, at any
  replica (deliveries and consultations dial them); and every destination's queued
  envelopes (its last position minus its last delivered one: a row or two per destination,
  never a scan of the queue). A lease of this replica is renewed even after it expired, if
  nobody took it: its token did not change, so nobody delivered meanwhile.
* **Affinity**: a node registers (``Hub.Register``, migration 5's ``registered_at``) at the
  replica its uplink chose, and that replica delivers to it while it is live. So the
  nodes' hub lists, which spread their submissions over the replicas, spread the deliveries
  the same way, and each replica works on its own nodes' traffic; the fair share only
  places destinations whose replica is gone (or that never registered).
* **The fence** (:func:`fence`): ``commit_delivery`` with a token first reads the lease row
  ``FOR SHARE`` where (destination, token, owner) match, in its own transaction. No row:
  :class:`~node.store.records.LeaseLost`, the transaction rolls back (nothing deleted,
  nothing audited). A row: it stays share-locked until the commit, so a takeover (an UPDATE
  of that row) waits for the commit and the new owner reads the queue after it.
* **Release** (:func:`release`): the given leases (with their tokens, still this replica's)
  become free at once, ``leaving`` marks the replica draining (no longer counted live), and a
  ``pg_notify`` on :data:`LEASE_CHANNEL` makes the other replicas run a round at once.
* **The doorbell** (:func:`listen`): a batch's transaction notifies :data:`QUEUE_CHANNEL`
  with the destinations it queued for (:func:`queue_bell`, one notification per batch, its
  payload bounded: ``*`` when the names would not fit). A replica listens on a connection of
  its own; notifications are delivered at commit and lost while the listener is away, so
  after every (re)connection every queue is looked at again (``missed``), and the deliverer
  still polls its idle queues now and then.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

import asyncpg
import structlog

from node.core.backoff import Backoff
from node.store.postgres.connection import DATABASE_ERRORS, PgParams, connect
from node.store.protocols import QueueDoorbell
from node.store.records import HeldLeases, LeaseLost
from node.tasks import cause_of, wait_event

__all__ = ["LEASE_CHANNEL", "QUEUE_CHANNEL", "fence", "listen", "queue_bell", "release", "renew"]

log = structlog.get_logger(__name__)

#: The channel a batch's commit rings with the destinations it queued for.
QUEUE_CHANNEL = "crossroads_queue"
#: The channel a replica rings when it frees leases (a drain).
LEASE_CHANNEL = "crossroads_leases"
#: PostgreSQL refuses payloads of 8000 bytes or more: a longer list of names rings ``*``.
MAX_BELL_BYTES = 7000
#: A replica silent this long is forgotten (its row in ``hub_replicas``; long dead anyway).
FORGET_REPLICAS_AFTER = timedelta(days=1)
#: The listening connection's ``application_name`` (what ``pg_stat_activity`` shows).
LISTENER_NAME = "crossroads-hub-doorbell"
#: How often the listening connection is checked (a dead one is noticed only on I/O).
LISTEN_PING_S = 5.0


#: Joins a lease (``l``) with the live replica its destination's node last registered at
#: (``r``; NULL: none, or not live). ``$2``: the lease TTL, which is also the liveness bound.
_PREFERRED = (
    "LEFT JOIN destinations d ON d.institution = l.dest LEFT JOIN hub_replicas r"
    " ON r.replica = d.registered_at AND NOT r.draining AND r.heartbeat_at > now() - $2::interval")
#: Takes (for ``$1``, until ``now() + $2``) the free or expired leases the caller's
#: conditions on ``r`` select; the caller closes the subquery.
_TAKE = (
    "UPDATE delivery_leases SET owner = $1, token = token + 1, expires_at = now() + $2::interval"
    f" WHERE dest IN (SELECT l.dest FROM delivery_leases l {_PREFERRED}"
    " WHERE (l.owner = '' OR (l.expires_at <= now() AND l.owner <> $1))")


def queue_bell(dests: Sequence[str]) -> str:
    """The payload naming ``dests`` (``*``: every destination, when they would not fit)."""
    payload = ",".join(dests)
    return payload if len(payload.encode()) <= MAX_BELL_BYTES else "*"


async def renew(conn: asyncpg.Connection, replica: str, ttl_s: float) -> HeldLeases:
    """One lease round in the caller's transaction (see the module's design)."""
    ttl = timedelta(seconds=ttl_s)
    await conn.execute(
        "INSERT INTO hub_replicas (replica, heartbeat_at) VALUES ($1, now())"
        " ON CONFLICT (replica) DO UPDATE SET heartbeat_at = now(), draining = false", replica)
    await conn.execute("DELETE FROM hub_replicas WHERE heartbeat_at < now() - $1::interval",
                       FORGET_REPLICAS_AFTER)
    await conn.execute(
        "INSERT INTO delivery_leases (dest) SELECT dest FROM queue_positions"
        " UNION SELECT institution FROM destinations ON CONFLICT (dest) DO NOTHING")
    held = await conn.fetchval(
        "WITH renewed AS (UPDATE delivery_leases SET expires_at = now() + $2::interval"
        " WHERE owner = $1 RETURNING 1) SELECT count(*) FROM renewed", replica, ttl)
    live, total = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM hub_replicas WHERE NOT draining"
        " AND heartbeat_at > now() - $1::interval), (SELECT count(*) FROM delivery_leases)", ttl)
    share = math.ceil(total / max(live, 1))
    held += await conn.fetchval(  # every free lease of a node registered here
        f"WITH taken AS ({_TAKE} AND r.replica = $1 FOR UPDATE OF l SKIP LOCKED)"
        " RETURNING 1) SELECT count(*) FROM taken", replica, ttl)
    if held < share:  # and free ones that no live replica prefers, up to the fair share
        await conn.execute(f"{_TAKE} AND r.replica IS NULL ORDER BY l.dest LIMIT $3"
                           " FOR UPDATE OF l SKIP LOCKED)", replica, ttl, share - held)
    rows = await conn.fetch(
        "SELECT l.dest, l.token, r.replica FROM delivery_leases l"
        f" {_PREFERRED} WHERE l.owner = $1", replica, ttl)
    foreign = frozenset(r[0] for r in rows if r[2] not in (None, replica))
    movable = frozenset(r[0] for r in rows if r[2] is None)
    endpoints = await conn.fetch(
        "SELECT institution, endpoint FROM destinations WHERE endpoint IS NOT NULL")
    queued = await conn.fetch(
        "SELECT q.dest, q.position - coalesce(d.delivered_seq, 0) FROM queue_positions q"
        " LEFT JOIN destinations d ON d.institution = q.dest")
    return HeldLeases(tokens={r[0]: int(r[1]) for r in rows},
                      endpoints={r[0]: r[1] for r in endpoints},
                      surplus=max(0, min(len(movable), len(rows) - len(foreign) - share)),
                      queued={r[0]: int(r[1]) for r in queued},
                      foreign=foreign, movable=movable)


async def release(conn: asyncpg.Connection, replica: str, tokens: Mapping[str, int],
                  leaving: bool) -> None:
    """Free ``tokens``' leases now (in the caller's transaction); ring the other replicas."""
    dests = sorted(tokens)
    await conn.execute(
        "UPDATE delivery_leases l SET owner = '', expires_at = '-infinity'"
        " FROM unnest($2::text[], $3::bigint[]) AS u(dest, token)"
        " WHERE l.dest = u.dest AND l.token = u.token AND l.owner = $1",
        replica, dests, [tokens[d] for d in dests])
    if leaving:
        await conn.execute("UPDATE hub_replicas SET draining = true WHERE replica = $1", replica)
    await conn.execute("SELECT pg_notify($1, $2)", LEASE_CHANNEL, replica)


async def fence(conn: asyncpg.Connection, replica: str, dest: str, token: int) -> None:
    """:class:`LeaseLost` unless ``replica`` holds ``dest``'s lease with ``token``; else the
    lease row stays share-locked until the caller's transaction ends."""
    held = await conn.fetchval(
        "SELECT 1 FROM delivery_leases WHERE dest = $1 AND token = $2 AND owner = $3 FOR SHARE",
        dest, token, replica)
    if held is None:
        raise LeaseLost(dest, token)


def _ring(doorbell: QueueDoorbell) -> Callable[[object, int, str, str], None]:
    def heard(_conn: object, _pid: int, channel: str, payload: str) -> None:
        if channel == LEASE_CHANNEL:
            doorbell.leases_freed()
        elif payload == "*":
            doorbell.missed()
        else:
            for dest in payload.split(","):
                doorbell.queued(dest)

    return heard


async def listen(params: PgParams, doorbell: QueueDoorbell, backoff: Backoff | None = None) -> None:
    """Ring ``doorbell`` on the channels' notifications until cancelled, on a connection of
    its own, connecting again (with backoff) whenever it is lost; ``missed`` after each
    connection (what was rung meanwhile is gone)."""
    backoff = backoff or Backoff()
    while True:
        try:
            await _listen_once(params, doorbell, backoff)
        except DATABASE_ERRORS as exc:
            delay = backoff.next_delay()
            log.warning("queue_listener_failed", error=cause_of(exc), retry_in_s=round(delay, 3))
            await asyncio.sleep(delay)


async def _listen_once(params: PgParams, doorbell: QueueDoorbell, backoff: Backoff) -> None:
    """One listening connection, until it is lost (an exception)."""
    conn = await connect(params, statement_cache_size=params.statement_cache_size,
                         server_settings={"application_name": LISTENER_NAME})
    try:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        heard = _ring(doorbell)
        for channel in (QUEUE_CHANNEL, LEASE_CHANNEL):
            await conn.add_listener(channel, heard)
        doorbell.missed()
        doorbell.leases_freed()
        backoff.reset()
        while not lost.is_set():
            if not await wait_event(lost, LISTEN_PING_S):
                async with asyncio.timeout(LISTEN_PING_S):
                    await conn.execute("SELECT 1")
        raise ConnectionError("the listening connection was closed")
    finally:
        conn.terminate()
