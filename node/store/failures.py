"""Storage failures named by their cause, logged once by the component that failed, counted.

A write that SQLite (or the file system under it) refuses, a full disk above all, is not a
bug of the caller and not a refusal of the peer: nothing was stored, and the same request
may succeed later. Each store keeps a :class:`StoreFailures`; the component whose write
failed (at a node ``local_submit``, ``inbox_store``, ``inbox_ack``, ``outbox_ack``; at the hub
``hub_intake``, ``hub_audit``, ``hub_delivery``)
hands it the exception and raises what it returns: an
:class:`~node.core.errors.Unavailable` with the stable reason ``NOT_STORED``, which the RPC
edge sends as gRPC ``UNAVAILABLE`` ("NOT_STORED: ...: nothing stored, retry") instead of the
``UNKNOWN`` of an exception escaping a handler. The failure is logged at ``error``
(``store_failed`` with component, cause and SQLite's message) and counted by component and
cause (``crossroads_store_errors_total``, node/metrics.py).
"""

from __future__ import annotations

import enum
import errno
import sqlite3
from collections import Counter
from collections.abc import Callable

import structlog

from node.core.errors import Unavailable
from node.core.reasons import CallReason

__all__ = ["NOT_STORED", "StoreCause", "StoreFailures", "cause_of"]

log = structlog.get_logger("store")

NOT_STORED = CallReason.NOT_STORED


class StoreCause(enum.StrEnum):
    DISK_FULL = "DISK_FULL"
    IO_ERROR = "IO_ERROR"
    READ_ONLY = "READ_ONLY"
    CORRUPT = "CORRUPT"
    BUSY = "BUSY"
    OTHER = "OTHER"


#: SQLite's primary result codes (the low byte of an extended code).
_SQLITE_CAUSES = {
    sqlite3.SQLITE_FULL: StoreCause.DISK_FULL,
    sqlite3.SQLITE_IOERR: StoreCause.IO_ERROR,
    sqlite3.SQLITE_CANTOPEN: StoreCause.IO_ERROR,
    sqlite3.SQLITE_READONLY: StoreCause.READ_ONLY,
    sqlite3.SQLITE_CORRUPT: StoreCause.CORRUPT,
    sqlite3.SQLITE_NOTADB: StoreCause.CORRUPT,
    sqlite3.SQLITE_BUSY: StoreCause.BUSY,
    sqlite3.SQLITE_LOCKED: StoreCause.BUSY,
}
_ERRNO_CAUSES = {errno.ENOSPC: StoreCause.DISK_FULL, errno.EDQUOT: StoreCause.DISK_FULL,
                 errno.EIO: StoreCause.IO_ERROR, errno.EROFS: StoreCause.READ_ONLY}


def cause_of(exc: BaseException) -> StoreCause:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _SQLITE_CAUSES.get(code & 0xFF, StoreCause.OTHER)
    if isinstance(exc, OSError) and exc.errno is not None:
        return _ERRNO_CAUSES.get(exc.errno, StoreCause.OTHER)
    return StoreCause.OTHER


class StoreFailures:
    """Failed writes of one store, by (component, cause)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, StoreCause]] = Counter()
        #: Called (in the event loop) after each failure: the hub checks its store's health
        #: at once (node/hub/store_health.py).
        self.listeners: list[Callable[[], None]] = []

    def failed(self, component: str, exc: BaseException, **context: object) -> Unavailable:
        """Log and count ``exc``; return the error to raise (``from exc``)."""
        cause = cause_of(exc)
        self.counts[(component, cause)] += 1
        log.error("store_failed", component=component, cause=cause.value, error=str(exc),
                  **context)
        for listener in self.listeners:
            listener()
        return Unavailable(f"{component}: {cause.value} ({exc}): nothing stored, retry",
                           NOT_STORED)
