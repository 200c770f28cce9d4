"""The audit log in the hub's PostgreSQL database, for ``crossroads audit``
(:class:`~node.store.audit_source.AuditSource`).

Every replica appends to one chain serialized in the database (the head row's lock,
:mod:`node.store.postgres.hub_store`), so reading the database reads everything every
replica recorded: the commands need no merging. Each call opens one connection on an event
loop of its own (``asyncio.run``: the audit tool is a command line, not the running hub),
runs :mod:`node.store.postgres.audit`, and closes it. Nothing here migrates the schema: a
database without the hub's tables is refused, not changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from node.store.audit_queries import AuditReport, Consultation, PurgeReport
from node.store.audit_source import SourceUnavailable, directory_kinds
from node.store.postgres import audit, directory_store
from node.store.postgres.connection import DATABASE_ERRORS, PgParams, connect

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from node.core.audit import Checkpoint, Signer

__all__ = ["PostgresAuditSource"]

_T = TypeVar("_T")


class PostgresAuditSource:
    """The hub's audit log in PostgreSQL (``params``: the hub's DSN and password); the
    services' kinds from the directory in the same database (or, given ``directory``, from
    that ``directory.sqlite`` file)."""

    def __init__(self, params: PgParams, directory: Path | None = None) -> None:
        self.params = params
        self.directory = directory

    def _run(self, action: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        return asyncio.run(self._connected(action))

    async def _connected(self, action: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        try:
            conn = await connect(self.params, command_timeout=self.params.command_timeout_s,
                                         statement_cache_size=self.params.statement_cache_size)
        except DATABASE_ERRORS as exc:
            raise SourceUnavailable(
                f"cannot reach the hub's PostgreSQL database: {_one_line(exc)}") from None
        try:
            if await conn.fetchval("SELECT to_regclass('audit_head')") is None:
                raise SourceUnavailable("the hub's PostgreSQL database holds no hub store (no"
                                        " audit tables: has a hub opened it yet?)")
            return await action(conn)
        finally:
            await conn.close()

    def verify(self, keys: Mapping[str, Ed25519PublicKey] | None,
               pinned: Sequence[Checkpoint] = (), integrity: bool = False) -> AuditReport:
        # ``integrity``: PostgreSQL checks each page's checksum as it reads it (clusters are
        # made with data checksums), so reading the whole chain is the check.
        return self._run(lambda conn: audit.verify(conn, keys, pinned))

    def summary(self) -> dict[str, Any]:
        return self._run(audit.summary)

    def who_consulted(self, subject_number: str, since_us: int | None = None,
                      limit: int | None = None) -> list[Consultation]:
        return self._run(lambda conn: audit.who_consulted(conn, subject_number, since_us, limit))

    def export_subject(self, subject_number: str, signer: Signer,
                       since_us: int | None = None) -> dict[str, Any]:
        return self._run(lambda conn: audit.export_subject(conn, subject_number, signer,
                                                           since_us))

    def service_kinds(self) -> dict[str, str]:
        if self.directory is not None:
            return directory_kinds(self.directory)
        return self._run(directory_store.service_kinds)

    def purge_kinds(self, cutoffs: Mapping[str, int], service_kinds: Mapping[str, str],
                    default_kind: str, now_us: int) -> PurgeReport:
        return self._run(lambda conn: audit.purge_kinds(conn, cutoffs, service_kinds,
                                                        default_kind, now_us))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
