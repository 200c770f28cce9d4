"""Group commit of the consultations' audit records.

A consultation writes its audit records at the hub in small commits: ``ACCEPTED`` as the
question goes to the providers, one ``ANSWERED`` per source once the parts are in, or
``REJECTED`` for a refusal. One transaction with its fsync per record would make the disk,
not the work, the limit. :class:`AuditGroup` lets the records of concurrent consultations
share commits: while one commit is being written, the records that arrive wait for the next
one, which then takes all of them at once (one transaction, one fsync). At low load a commit
carries one question's records and costs what it did; under load the cost per record falls.

Two ways in:

* :meth:`AuditGroup.add` / :meth:`AuditGroup.append`: the records go with the commit under way
  or the next one, which starts at once; the caller can wait until they are durable.
* :meth:`AuditGroup.add_later`: the records go with whichever commit comes next, but no
  commit starts for them before ``later_s`` has passed; nobody waits for them. A
  consultation's ``ANSWERED`` records ride along with the next question's ``ACCEPTED`` commit
  this way instead of costing a commit of their own.

Guarantees: records are committed in the order they were added (the audit chain order),
records given to :meth:`add` are committed before the future it returns is done (or the
future carries the commit's error), and records given to :meth:`add_later` are committed
within about ``later_s`` (a failed commit is logged: nobody waits for them). A caller
cancelled while waiting does not withdraw its records: they are committed with the group.
:meth:`flush` and :meth:`close` commit everything added so far.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from node.core.audit import AuditRecord

__all__ = ["LATER_S", "AuditGroup"]

log = structlog.get_logger(__name__)
Record = AuditRecord
#: How long records given to :meth:`AuditGroup.add_later` may wait for a commit to join.
LATER_S = 0.02


class AuditGroup:
    def __init__(self, commit: Callable[[Sequence[Record]], Awaitable[None]],
                 later_s: float = LATER_S) -> None:
        self._commit = commit
        self.later_s = later_s
        self._records: list[Record] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._later: asyncio.TimerHandle | None = None
        self.commits = 0

    def add(self, records: Sequence[Record]) -> asyncio.Future[None]:
        """Queue ``records`` now (their place in the chain is taken here); the future is done
        once they are committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._records.extend(records)
        self._waiters.append(done)
        self._start()
        return done

    def add_later(self, records: Sequence[Record]) -> None:
        """Queue ``records`` to go with the next commit, started within ``later_s`` at the
        latest; nobody waits for them."""
        self._records.extend(records)
        if not self._writing:  # else the commit under way sets the timer if they are left
            self._start_later()

    async def append(self, records: Sequence[Record]) -> None:
        """Commit ``records`` (with whatever else is waiting); return once they are durable."""
        await asyncio.shield(self.add(records))

    async def flush(self) -> None:
        """Commit every record added so far (e.g. before answering an audit query)."""
        while True:
            if self._records:
                self._start()
            if self._writer is None or self._writer.done():
                return
            await asyncio.shield(self._writer)

    @property
    def _writing(self) -> bool:
        return self._writer is not None and not self._writer.done()

    def _start(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._records and not self._writing:
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        # Started for records someone waits for (or by the timer, or a flush): commit them,
        # then go on while more such records came meanwhile. Records only added for later
        # go with those; left alone, they wait for the next add or the timer.
        first = True
        while self._records and (first or self._waiters):
            first = False
            records, waiters = self._records, self._waiters
            self._records, self._waiters = [], []
            try:
                await self._commit(records)
            except Exception as exc:  # noqa: BLE001 - every waiter of this group gets it
                log.error("audit_commit_failed", records=len(records), error=repr(exc))
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
                continue
            self.commits += 1
            for w in waiters:
                if not w.done():
                    w.set_result(None)
        if self._records:
            self._start_later()

    def _start_later(self) -> None:
        if self._later is None:
            self._later = asyncio.get_running_loop().call_later(self.later_s, self._start)

    async def close(self) -> None:
        """Commit the records already added (also those added to go later)."""
        await self.flush()
