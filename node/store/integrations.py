"""Integrations in SQLite, shared by the hub's directory and the nodes' fragments.

Both keep integrations (possibly millions) in an ``integrations`` table with the same columns
and read them per batch of envelopes for the batch's subjects only. :func:`read_integrations`
does that read through a :class:`SubjectCache`: the integrations of recently asked subjects
stay decoded in memory (LRU, bounded by a number of subjects), so a subject that comes back
costs a dict look-up instead of a query and a decode.

Keeping the cache true: every writer calls :meth:`SubjectCache.forget` with the subjects it
changed, after its commit. A read that started before such a commit may have seen the old
rows; :meth:`SubjectCache.forget` moves the cache's generation, and a read fills the cache only
if the generation did not move while it ran (its result is still used for the batch at hand,
like any read that just preceded a write).
"""

from __future__ import annotations

import functools
import sqlite3
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import date
from typing import Any, Generic, TypeVar

from node.core.directory import Integration, Period
from node.store.threaded import SQLiteThreads

__all__ = [
    "INTEGRATIONS_TABLE",
    "SubjectCache",
    "answer",
    "grouped",
    "integration_of",
    "integration_row",
    "preload",
    "preload_from",
    "read_integrations",
    "write_integrations",
]

V = TypeVar("V")
#: Subjects per ``IN (...)`` query.
CHUNK = 500
#: Subjects few enough to read in the calling thread (see :func:`read_integrations`).
QUICK_SUBJECTS = 4
COLUMNS = "subject, institution, capacity, begin_date, end_date, phase"
#: The table, as both stores' first migration creates it (a migration's text never changes).
INTEGRATIONS_TABLE = """
    CREATE TABLE integrations (
        subject TEXT NOT NULL,
        institution TEXT NOT NULL,
        capacity INTEGER NOT NULL,
        begin_date TEXT NOT NULL,
        end_date TEXT NOT NULL,
        phase INTEGER NOT NULL,
        PRIMARY KEY (subject, institution, capacity, begin_date)
    ) WITHOUT ROWID;
    CREATE INDEX integrations_by_institution ON integrations (institution);
"""
#: One string object per institution number for all cached integrations.
_INSTITUTIONS: dict[str, str] = {}


def _d(day: date | None) -> str:
    return "" if day is None or day == date.min else day.isoformat()


def integration_row(i: Integration) -> tuple[object, ...]:
    """The row of the ``integrations`` table (:data:`COLUMNS` order)."""
    return (i.subject, i.institution, i.capacity, _d(i.period.begin), _d(i.period.end), i.phase)


def write_integrations(
    conn: sqlite3.Connection, integrations: Sequence[Integration], deleted: bool
) -> None:
    """Put (or, ``deleted``, delete) ``integrations`` in the caller's transaction (the caller
    then calls :meth:`SubjectCache.forget` with their subjects, after its commit)."""
    rows = [integration_row(i) for i in integrations]
    if deleted:
        conn.executemany(
            "DELETE FROM integrations WHERE subject = ? AND institution = ?"
            " AND capacity = ? AND begin_date = ?", [r[:4] for r in rows])
    else:
        conn.executemany("INSERT OR REPLACE INTO integrations VALUES (?,?,?,?,?,?)", rows)


@functools.lru_cache(maxsize=4096)
def _period(begin: str, end: str) -> Period:
    return Period(date.fromisoformat(begin) if begin else date.min,
                  date.fromisoformat(end) if end else None)


def integration_of(row: Sequence[Any]) -> Integration:
    subject, institution, capacity, begin, end, phase = row
    return Integration(subject, institution, int(capacity), int(phase), _period(begin, end))


class SubjectCache(Generic[V]):
    """Values by subject number, the ``max_subjects`` most recently used (0 = no cache)."""

    def __init__(self, max_subjects: int) -> None:
        self.max_subjects = max_subjects
        self.generation = 0
        self._entries: OrderedDict[str, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, subjects: Iterable[str]) -> tuple[dict[str, V], list[str]]:
        """``(found, missing)``."""
        found: dict[str, V] = {}
        missing: list[str] = []
        entries = self._entries
        for s in subjects:
            value = entries.get(s)
            if value is None:
                missing.append(s)
            else:
                entries.move_to_end(s)
                found[s] = value
        return found, missing

    def lookup_one(self, subject: str) -> V | None:
        """Without counting or refreshing it."""
        return self._entries.get(subject)

    def fill(self, generation: int, values: dict[str, V]) -> None:
        """Remember ``values`` read at ``generation`` (ignored if a write came in between)."""
        if generation != self.generation or not self.max_subjects:
            return
        entries = self._entries
        entries.update(values)
        while len(entries) > self.max_subjects:
            entries.popitem(last=False)

    def forget(self, subjects: Iterable[str]) -> None:
        """After a write about ``subjects`` committed."""
        self.generation += 1
        for s in subjects:
            self._entries.pop(s, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


async def preload(
    db: SQLiteThreads, cache: SubjectCache[tuple[Integration, ...]], rows: int = 20_000,
) -> int:
    """:func:`preload_from` the ``integrations`` table of ``db``."""
    def fetch(after: str, limit: int) -> Awaitable[Sequence[Sequence[Any]]]:
        return db.fetchall(f"SELECT {COLUMNS} FROM integrations WHERE subject > ?"
                           " ORDER BY subject LIMIT ?", (after, limit))

    return await preload_from(fetch, cache, rows)


#: ``fetch(after, limit)``: at most ``limit`` integration rows (:data:`COLUMNS`) of subjects
#: after ``after``, in subject order.
FetchAfter = Callable[[str, int], Awaitable[Sequence[Sequence[Any]]]]


async def preload_from(
    fetch: FetchAfter, cache: SubjectCache[tuple[Integration, ...]], rows: int = 20_000,
) -> int:
    """Fill ``cache`` from an integrations table, in subject order, until it is full or
    the table is read (``rows`` per ``fetch``; the event loop runs between them). Returns the
    subjects loaded. A chunk read while a write came in is dropped (the generation check), so
    the cache stays true; a subject cut by a chunk's end is read whole with the next one."""
    after, loaded = "", 0
    while len(cache) < cache.max_subjects:
        generation = cache.generation
        found = await fetch(after, rows)
        if not found:
            break
        complete = len(found) < rows
        if not complete:  # the last subject may continue in the next chunk: read it whole then
            last = found[-1][0]
            found = [r for r in found if r[0] != last]
            if not found:  # one subject fills a whole chunk: left to the batches' reads
                after = last
                continue
        held: dict[str, list[Integration]] = {}
        key = ""
        for subject, institution, capacity, begin, end, phase in found:
            if subject != key:  # rows come in subject order: one string per subject
                key = subject
                held[key] = []
            held[key].append(Integration(key, _INSTITUTIONS.setdefault(institution, institution),
                                         capacity, phase, _period(begin, end)))
        # A subject a batch read meanwhile is already there (and no older than this).
        fresh = {s: tuple(v) for s, v in held.items() if cache.lookup_one(s) is None}
        cache.fill(generation, fresh)
        loaded += len(fresh)
        if complete:
            break
        after = found[-1][0]
    return loaded


async def read_integrations(
    db: SQLiteThreads, subjects: Iterable[str], cache: SubjectCache[tuple[Integration, ...]],
) -> dict[str, tuple[Integration, ...]]:
    """The integrations of ``subjects`` (subjects without any are left out).

    The subjects not cached are read in ``db``'s reader thread (one hand-over for all), or,
    when they are at most :data:`QUICK_SUBJECTS`, on its :attr:`~SQLiteThreads.loop_reader`
    in the calling thread: a consultation's one subject costs less to read than the
    hand-over to the reader thread and back."""
    found, missing = cache.lookup(set(subjects))
    generation = cache.generation
    read: dict[str, tuple[Integration, ...]] = {}
    quick = db.loop_reader
    if quick is not None and len(missing) <= QUICK_SUBJECTS:
        if missing:
            read = grouped(missing, quick.execute(_select_in(len(missing)), missing))
    elif missing:
        read = await db.read(_read_chunks, db.reader, missing)
    return answer(cache, generation, found, read)


def answer(
    cache: SubjectCache[tuple[Integration, ...]], generation: int,
    found: dict[str, tuple[Integration, ...]], read: dict[str, tuple[Integration, ...]],
) -> dict[str, tuple[Integration, ...]]:
    """The end of a read through ``cache``: ``read`` (the subjects ``cache`` missed, read at
    ``generation``) fills it, and the answer leaves out the subjects without integrations."""
    cache.fill(generation, read)
    found.update(read)
    return {s: v for s, v in found.items() if v}


def _read_chunks(conn: sqlite3.Connection, subjects: Sequence[str]) -> dict[str, tuple[Integration, ...]]:
    read: dict[str, tuple[Integration, ...]] = {}
    for start in range(0, len(subjects), CHUNK):
        chunk = subjects[start:start + CHUNK]
        read.update(grouped(chunk, conn.execute(_select_in(len(chunk)), chunk)))
    return read


@functools.lru_cache(maxsize=64)
def _select_in(n: int) -> str:
    return f"SELECT {COLUMNS} FROM integrations WHERE subject IN ({','.join('?' * n)})"


def grouped(
    chunk: Sequence[str], rows: Iterable[tuple[Any, ...]],
) -> dict[str, tuple[Integration, ...]]:
    """Rows of ``chunk``'s subjects as one tuple per subject (empty for a subject without)."""
    lists: dict[str, list[Integration]] = {s: [] for s in chunk}
    keys = {s: s for s in chunk}
    for subject, institution, capacity, begin, end, phase in rows:
        # Cached values share their strings: the subject with its key, the institution
        # with every other row of that institution. (Measured at the hub with ~5 integrations
        # per subject: up to ~1.4 KB of RSS per cached subject.)
        key = keys[subject]
        lists[key].append(Integration(key, _INSTITUTIONS.setdefault(institution, institution),
                                      capacity, phase, _period(begin, end)))
    return {s: tuple(v) for s, v in lists.items()}
