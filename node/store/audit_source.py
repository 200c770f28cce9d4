"""Where ``crossroads audit`` finds the hub's audit log: one seam, one implementation per
backend.

Design
------
* :class:`AuditSource` is everything the audit commands do with the log (verify, summary,
  who consulted, signed export, the directory's service kinds, retention purge). The
  commands (:mod:`node.cli.audit`) see only this protocol; which backend it is gets decided
  once, by :func:`audit_source` from the hub's config (``[store] backend``) or by the
  ``--db`` option (a SQLite file).
* :class:`SqliteAuditSource` reads ``hub.sqlite`` through :mod:`node.store.audit_queries`;
  :class:`node.store.postgres.audit_source.PostgresAuditSource` reads the hub's PostgreSQL
  database (every replica's records: one chain, serialized in the database) through
  :mod:`node.store.postgres.audit`. Both make their results with the same functions of
  :mod:`node.store.audit_queries` (:func:`~node.store.audit_queries.summary_of`,
  :func:`~node.store.audit_queries.consultations`, ...): same log, same output.
* The sources are synchronous (a command line's calls); the PostgreSQL one runs each call
  on its own event loop and connection.
* A source that cannot reach its log raises :class:`FileNotFoundError` (no SQLite file) or
  :class:`SourceUnavailable` (PostgreSQL unreachable, refused the login, or holds no hub
  store), whose message is one line for the operator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from node.store import audit_queries
from node.store.audit_queries import AuditReport, Consultation, PurgeReport

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from node.config import HubConfig
    from node.core.audit import Checkpoint, Signer

__all__ = ["AuditSource", "SourceUnavailable", "SqliteAuditSource", "audit_source",
           "directory_kinds"]


class SourceUnavailable(RuntimeError):
    """The audit log's database cannot be read (the message says why, in one line)."""


class AuditSource(Protocol):
    """The hub's audit log, as the audit commands use it."""

    def verify(self, keys: Mapping[str, Ed25519PublicKey] | None,
               pinned: Sequence[Checkpoint] = (), integrity: bool = False) -> AuditReport:
        """The chain, its checkpoints and (with ``keys``) their signatures; that it holds
        each ``pinned`` checkpoint; with ``integrity``, the database's own check of its
        storage first where it has one (SQLite's ``PRAGMA integrity_check``)."""
        ...

    def summary(self) -> dict[str, Any]:
        """:func:`node.store.audit_queries.summary_of` of the log."""
        ...

    def who_consulted(self, subject_number: str, since_us: int | None = None,
                      limit: int | None = None) -> list[Consultation]:
        ...

    def export_subject(self, subject_number: str, signer: Signer,
                       since_us: int | None = None) -> dict[str, Any]:
        ...

    def service_kinds(self) -> dict[str, str]:
        """Service id -> kind from the hub's directory, where this source knows it (else
        empty: the purge then needs ``--service-kind`` or ``--directory-db``)."""
        ...

    def purge_kinds(self, cutoffs: Mapping[str, int], service_kinds: Mapping[str, str],
                    default_kind: str, now_us: int) -> PurgeReport:
        ...


class SqliteAuditSource:
    """The audit log in a hub's SQLite file (and its directory file, for service kinds)."""

    def __init__(self, path: Path, directory: Path | None = None) -> None:
        if not path.exists():
            raise FileNotFoundError(f"no hub database at {path}")
        self.path, self.directory = path, directory

    def verify(self, keys: Mapping[str, Ed25519PublicKey] | None,
               pinned: Sequence[Checkpoint] = (), integrity: bool = False) -> AuditReport:
        return audit_queries.verify_file(self.path, keys, pinned, integrity=integrity)

    def summary(self) -> dict[str, Any]:
        return audit_queries.summary(self.path)

    def who_consulted(self, subject_number: str, since_us: int | None = None,
                      limit: int | None = None) -> list[Consultation]:
        with audit_queries.connected(self.path) as conn:
            return audit_queries.who_consulted(conn, subject_number, since_us, limit)

    def export_subject(self, subject_number: str, signer: Signer,
                       since_us: int | None = None) -> dict[str, Any]:
        with audit_queries.connected(self.path) as conn:
            return audit_queries.export_subject(conn, subject_number, signer, since_us)

    def service_kinds(self) -> dict[str, str]:
        return directory_kinds(self.directory)

    def purge_kinds(self, cutoffs: Mapping[str, int], service_kinds: Mapping[str, str],
                    default_kind: str, now_us: int) -> PurgeReport:
        with audit_queries.connected(self.path, write=True) as conn:
            return audit_queries.purge_kinds(conn, cutoffs, service_kinds, default_kind, now_us)


def directory_kinds(directory: Path | None) -> dict[str, str]:
    """Service id -> kind from the hub's ``directory.sqlite`` (empty: none there)."""
    if directory is None or not directory.exists():
        return {}
    try:
        return audit_queries.service_kinds_from_directory(directory)
    except (OSError, ValueError, KeyError) as exc:
        raise SourceUnavailable(f"{directory}: cannot read service kinds ({exc})") from None


def audit_source(config: HubConfig) -> AuditSource:
    """The audit log of the hub ``config`` describes: its PostgreSQL database, or the
    ``hub.sqlite`` in its data directory (the one place the audit tool picks a backend).
    The directory, for service kinds, is in the same database, or ``directory.sqlite`` in the
    data directory."""
    from node.config import StoreBackend

    if config.store.backend is StoreBackend.POSTGRESQL:
        from node.store.backend import pg_params
        from node.store.postgres.audit_source import PostgresAuditSource

        try:
            params = pg_params(config.store)
        except (OSError, RuntimeError, ValueError) as exc:
            raise SourceUnavailable(f"cannot read the hub's database password: {exc}") from None
        return PostgresAuditSource(params)
    return SqliteAuditSource(config.data_dir / "hub.sqlite", config.data_dir / "directory.sqlite")
