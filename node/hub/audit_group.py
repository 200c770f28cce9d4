"""Group commit of the consultations' audit records.

A consultation writes its audit records at the hub in one small commit (``ACCEPTED`` and one
``ANSWERED`` per source, once the providers' parts are in; a refusal writes ``REJECTED``),
durable before the asker gets its answer. One transaction with its fsync per consultation
would make the disk, not the work, the limit. :class:`AuditGroup` lets the records of
concurrent consultations share commits: while one commit is being written, the records that
arrive wait for the next one, which then takes all of them at once (one transaction, one
fsync). At low load a commit
carries one record and costs what it did; under load the cost per record falls.

Guarantees: :meth:`AuditGroup.append` returns only once its records are committed (or raises
the commit's error); records are committed in the order they were appended (the audit chain
order). A caller cancelled
while waiting does not withdraw its records: they are committed with the group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

__all__ = ["AuditGroup"]

Record = tuple[str, ...]


class AuditGroup:
    def __init__(self, commit: Callable[[Sequence[Record]], Awaitable[None]]) -> None:
        self._commit = commit
        self._records: list[Record] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0

    def add(self, records: Sequence[Record]) -> asyncio.Future[None]:
        """Queue ``records`` now (their place in the chain is taken here); the future is done
        once they are committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._records.extend(records)
        self._waiters.append(done)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return done

    async def append(self, records: Sequence[Record]) -> None:
        """Commit ``records`` (with whatever else is waiting); return once they are durable."""
        await asyncio.shield(self.add(records))

    async def _write(self) -> None:
        while self._records:
            records, waiters = self._records, self._waiters
            self._records, self._waiters = [], []
            try:
                await self._commit(records)
            except Exception as exc:  # noqa: BLE001 - every waiter of this group gets it
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
                continue
            self.commits += 1
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def close(self) -> None:
        """Wait for the records already appended to be committed."""
        if self._writer is not None:
            await asyncio.shield(self._writer)
