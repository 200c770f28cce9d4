"""Reconnect with backoff: the one retry loop of the long-lived client streams.

Three clients keep a stream to a peer for the life of the process and start over after any
failure: the hub's delivery worker per destination (:mod:`node.hub.delivery`), the node's
uplink (:mod:`node.member.uplink`) and its directory watch (:mod:`node.member.fragment`).
They share this loop, :class:`Reconnect`:

* :meth:`Reconnect.run` awaits the owner's *attempt* (connect and work on the stream) again
  and again. A failure is any exception, and a ``CancelledError`` that grpc.aio raised for a
  cancelled *call*; a cancellation of the task itself (:func:`node.rpc.edge.really_cancelled`)
  ends the loop. An attempt that returns is no failure: the next one starts at once.
* After a failure the owner's handler runs: it closes what the attempt left open, keeps its
  own counts and calls :meth:`Reconnect.back_off`, which takes the next delay of the backoff
  (:class:`node.core.backoff.Backoff`: exponential, full jitter, capped), logs it with the
  failure as one warning line (the owner's event, its fields, ``error``, ``retry_in_s``) unless
  the owner logged the failure itself, and sleeps.
* The backoff starts over only after real progress, which only the owner sees, so the owner
  calls ``backoff.reset()`` (#13): a batch acknowledged and committed, an ack stored, an update
  applied, a session that stayed up long enough. Connecting again, a successful ``Register`` or
  a node registering again are not progress: a peer whose store fails would otherwise be
  retried every few milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from node.core.backoff import Backoff
from node.rpc.edge import describe, really_cancelled

__all__ = ["Reconnect"]

log = structlog.get_logger(__name__)


def _forever() -> bool:
    return True


@dataclass(slots=True)
class Reconnect:
    """The retry loop of one long-lived client stream (see the module's docstring)."""

    #: The warning logged after each failure (``uplink_failed``, ``delivery_failed``, ...).
    event: str
    backoff: Backoff = field(default_factory=Backoff)

    async def run(
        self,
        attempt: Callable[[], Awaitable[object]],
        failed: Callable[[BaseException], Awaitable[None]],
        running: Callable[[], bool] = _forever,
    ) -> None:
        """Await ``attempt()`` while ``running()``; after a failure, ``failed(exc)``."""
        while running():
            try:
                await attempt()
            except asyncio.CancelledError as exc:
                if really_cancelled():
                    raise
                await failed(exc)  # grpc.aio raises it for a cancelled call
            except Exception as exc:  # noqa: BLE001 - any failure: the owner backs off
                await failed(exc)

    async def back_off(self, exc: BaseException, *, logged: bool = False,
                       **fields: object) -> None:
        """Sleep the backoff's next delay, saying so (``event``) unless the failure was
        ``logged`` by the owner already."""
        delay = self.backoff.next_delay()
        if not logged:
            log.warning(self.event, **fields, error=describe(exc), retry_in_s=round(delay, 3))
        await asyncio.sleep(delay)
