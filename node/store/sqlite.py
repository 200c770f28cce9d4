"""Opening SQLite databases the same way everywhere: WAL, explicit transactions, migrations.

Connections are opened in autocommit mode (``isolation_level=None``); writers run
``BEGIN IMMEDIATE`` ... ``COMMIT`` themselves so that one transaction is exactly one batch.
``synchronous=FULL`` (default) makes a commit survive power loss; ``NORMAL`` survives a
process crash (kill -9) but may lose the last commits on power loss.

Migrations are numbered and forward-only SQL scripts, each run in its own transaction;
``PRAGMA user_version`` records the last one applied. :func:`migrate_sync` also takes a Python
function of the connection, for a step SQL cannot express.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from node.store.data_dir_guard import private_file

__all__ = [
    "SYNCHRONOUS_MODES",
    "connect_sync",
    "ensure_store_identity",
    "insert_columns",
    "insert_rows",
    "migrate_sync",
    "transaction",
]

SYNCHRONOUS_MODES = ("FULL", "NORMAL")
WAL_AUTOCHECKPOINT_PAGES = 8192


def _pragmas(synchronous: str) -> list[str]:
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous}",
        "PRAGMA busy_timeout=10000",
        "PRAGMA foreign_keys=ON",
        "PRAGMA cache_size=-65536",
        # Checkpoint the WAL every ~32 MiB instead of ~4 MiB: pages rewritten by many commits
        # (index pages, the queue's) are copied to the database file once per checkpoint.
        f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}",
    ]


def _private(path: Path) -> None:
    """A store's database is 0600 from its first byte (node/store/data_dir_guard.py)."""
    if str(path) != ":memory:":
        private_file(Path(path))


def connect_sync(
    path: Path, read_only: bool = False, synchronous: str | None = None
) -> sqlite3.Connection:
    """A plain connection: for command-line tools (audit verify, status) as is; with
    ``synchronous``, set up like :func:`connect` for a store that runs its statements in a
    thread of its own (usable from any one thread at a time)."""
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=synchronous is None)
    else:
        if synchronous is not None:
            _private(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=synchronous is None)
    if synchronous is None:
        conn.execute("PRAGMA busy_timeout=10000")
    else:
        for pragma in _pragmas(synchronous):
            conn.execute(pragma)
    return conn


Migration = str | Callable[[sqlite3.Connection], None]


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on a plain connection; on any failure (also an
    exception of the body) roll back, as far as the connection still can, and raise."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise


def migrate_sync(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> int:
    """Apply the migrations not applied yet, each in its own transaction; return the version.
    A file of a newer schema than ``migrations`` is refused (RuntimeError)."""
    row = conn.execute("PRAGMA user_version").fetchone()
    version = int(row[0]) if row else 0
    if version > len(migrations):
        raise RuntimeError(
            f"database schema version {version} is newer than this software ({len(migrations)})"
        )
    for number, script in enumerate(migrations[version:], start=version + 1):
        with transaction(conn):
            if callable(script):
                script(conn)
            else:
                for statement in _statements(script):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
    return len(migrations)


def insert_rows(
    conn: sqlite3.Connection, insert: str, columns: int, rows: Sequence[Sequence[object]],
    chunk: int = 1024,
) -> None:
    """``insert`` (``INSERT INTO t (...) VALUES ``) for all ``rows`` of ``columns`` values, as
    multi-row statements of up to ``chunk`` rows: one SQLite call per chunk instead of one per
    row (``executemany`` steps, and releases and re-takes the GIL, once per row). See
    :func:`insert_columns`."""
    if not rows:
        return
    values = list(zip(*rows, strict=True))
    if len(values) != columns:
        raise ValueError(f"rows of {len(values)} values, expected {columns}")
    insert_columns(conn, insert, values, chunk)


def insert_columns(
    conn: sqlite3.Connection, insert: str, columns: Sequence[Sequence[object]],
    chunk: int = 1024,
) -> None:
    """:func:`insert_rows` for rows given column by column (all columns of equal length).

    Binding the parameters and evaluating the ``VALUES`` cells is most of the cost of such a
    statement (and it holds the GIL), so a column that holds the same value in every row of a
    chunk is bound once and named ``?N`` in each row. ``bytes`` are bound as ``bytearray``:
    the sqlite3 module binds that directly, ``bytes`` go through its adapter look-up (~4x
    slower). The table gets the same rows either way."""
    if not columns:
        return
    count = len(columns[0])
    if any(len(column) != count for column in columns):
        raise ValueError("columns of different lengths")
    limit = max(1, min(chunk, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(columns)))
    i = 0
    for n in _chunks(count, limit):
        shared: list[object] = []
        varying: list[Sequence[object]] = []
        mask = []
        for column in columns:
            part = column[i:i + n] if n < len(column) else column
            if not isinstance(part, list | tuple):  # e.g. a protobuf repeated field
                part = list(part)
            first = part[0]
            kind = type(first)
            # Equal values of one type (1, 1.0 and True are equal, but not bound alike).
            if part.count(first) == n and (kind in _TEXT_OR_BLOB or len(set(map(type, part))) == 1):
                shared.append(bytearray(first) if isinstance(first, bytes) else first)
                mask.append(True)
                continue
            if kind is bytes and set(map(type, part)) == _BYTES:
                part = list(map(bytearray, part))
            varying.append(part)
            mask.append(False)
        conn.execute(_insert_sql(insert, tuple(mask), n),
                     [*shared, *itertools.chain.from_iterable(zip(*varying, strict=True))])
        i += n


def _chunks(count: int, limit: int) -> list[int]:
    """Rows per statement: powers of two up to ``limit``, largest first. SQLite compiles a
    statement of many rows in about the time it takes to run it twenty times, so every count
    is served by the same few compiled statements (the sqlite3 module caches them per
    connection) rather than one new statement per count."""
    sizes = []
    size = 1 << (limit.bit_length() - 1)
    while count:
        while size > count:
            size >>= 1
        sizes += [size] * (count // size)
        count %= size
    return sizes


_TEXT_OR_BLOB = (str, bytes)
_BYTES = {bytes}


@functools.lru_cache(maxsize=256)
def _insert_sql(insert: str, shared: tuple[bool, ...], rows: int) -> str:
    """``insert`` + the ``VALUES`` rows for :func:`insert_columns`: parameters ``?1``.. are the
    shared columns' values, then each row's other values in row order."""
    n_shared = sum(shared)
    numbers = iter(range(1, n_shared + 1))
    cells = [f"?{next(numbers)}" if s else "" for s in shared]
    step = len(shared) - n_shared
    values = []
    for r in range(rows):
        varying = iter(range(n_shared + 1 + r * step, n_shared + 1 + (r + 1) * step))
        values.append("(" + ",".join(c or f"?{next(varying)}" for c in cells) + ")")
    return insert + ",".join(values)


def ensure_store_identity(conn: sqlite3.Connection, now_us: int) -> str:
    """The store's ``store_id`` in its ``meta`` table (key, value), written with
    ``created_at_us`` the first time (a random UUID): which store a daemon runs on, told
    apart from a re-created one. Returns the id."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    if row is not None:
        return str(row[0])
    store_id = str(uuid.uuid4())
    with transaction(conn):
        conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                         [("store_id", store_id), ("created_at_us", str(now_us))])
    return str(conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0])


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
