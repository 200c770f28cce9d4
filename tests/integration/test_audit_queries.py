"""Who consulted a citizen, and their signed extract, after a mixed workload of 100,000
envelopes written through :class:`HubStore` to a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.audit_tool import load_public_keys, subject_query, verify_file, who_consulted
from node.core.audit import ExportError, verify_export
from node.store.hub_store import SUBJECT_INDEX_EVERY, HubStore
from node.wire.delivery import pack, tickets_of
from node.wire.signed import ensure_signing_key, load_public_key, public_path

ENVELOPES = 100_000
BATCH = 2_000
T0 = 1_700_000_000_000_000
TARGET = "85073003328"
#: Numbers that look like the target's (same prefix, one digit off, longer): never in its list.
NEIGHBOURS = ("85073003327", "8507300332", "850730033281", "85073003329")
SENDERS = ("0403019261", "0428759497", "0566988259", "0200065765", "0212345678")
RECEIVERS = ("0887654321", "0876543210", "0865432109", "0854321098")
OFFLINE = "0843210987"  # never acknowledges: its envelopes stay undelivered
SERVICES = ("ssn.identity", "ssn.income", "ssn.career", "ssn.address.mutation")
REASONS = ("NOT_AUTHORIZED", "NO_RECEIVER", "QUOTA_EXCEEDED", "PHASE_TOO_LOW")
UNINDEXED_TAIL = 15_000  # records left out of the subject index (see _build)


@dataclass
class Expected:
    at_us: int
    institution: str
    service_id: str
    outcome: str
    ticket: str
    receivers: tuple[str, ...]
    deliveries: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Built:
    db: Path
    pub: Path
    expected: dict[str, list[Expected]]
    build_s: float
    records: int


async def _build(root: Path) -> Built:
    key_path = root / "directory-signing.key"
    store = HubStore(root / "hub.sqlite", "NORMAL", signer=ensure_signing_key(key_path))
    await store.open()
    rnd = random.Random(5)
    citizens = [f"{rnd.randrange(10**10, 10**11):011d}" for _ in range(3_000)]
    tracked = {TARGET, *NEIGHBOURS}
    expected: dict[str, list[Expected]] = {n: [] for n in tracked}
    by_ticket: dict[str, Expected] = {}
    previous: dict[str, list[str]] = {}  # receiver -> tickets of the previous batch
    previous_end = 0
    started = time.perf_counter()
    at = T0
    for first in range(0, ENVELOPES, BATCH):
        audit, queue = [], []
        for _ in range(BATCH):
            at += 1_000
            r = rnd.random()
            subject = (TARGET if r < 0.0006 else NEIGHBOURS[int(r * 10_000) % 4] if r < 0.0012
                       else rnd.choice(citizens))
            sender, service = rnd.choice(SENDERS), rnd.choice(SERVICES)
            receivers = tuple(rnd.sample(RECEIVERS + (OFFLINE,), rnd.choice((1, 1, 2))))
            if rnd.random() < 0.7:
                ticket = str(uuid.UUID(int=rnd.getrandbits(128)))
                outcome, detail = "ACCEPTED", ""
                queue += [(dest, 1, pack([b"envelope"], [ticket])) for dest in receivers]
            else:
                ticket, outcome, detail = "", rnd.choice(REASONS), "refused"
            audit.append((str(at), "ACCEPTED" if ticket else "REJECTED", ticket, sender,
                          ",".join(receivers), service, "citizen", subject, outcome, detail))
            if subject in tracked:
                entry = Expected(at, sender, service, outcome, ticket, receivers)
                expected[subject].append(entry)
                if ticket:
                    by_ticket[ticket] = entry
        await store.commit_batch(SENDERS[0], "origin", first + 1, first + BATCH, queue, audit,
                                 b"ack")
        # The previous batch is acknowledged by every receiver but the offline one.
        for dest, tickets in sorted(previous.items()):
            at += 1_000
            records = [(str(at), "DELIVERED", t, "", dest, "", "", "", "DELIVERED", "")
                       for t in tickets]
            await store.commit_delivery(dest, previous_end, len(tickets), records)
            for t in tickets:
                if t in by_ticket:
                    by_ticket[t].deliveries.append((dest, at))
        previous = {}
        for dest, _, packed in queue:
            if dest != OFFLINE:
                previous.setdefault(dest, []).extend(tickets_of(packed))
        previous_end = store.next_queue_seq - 1
    await store.checkpoint()
    records = store.chain.last_seq
    await store.close()  # moves every record into the subject index
    # As a hub killed while running leaves it: its newest records not in the index yet.
    conn = sqlite3.connect(root / "hub.sqlite", isolation_level=None)
    conn.execute("DELETE FROM audit_subjects WHERE seq > ?", (records - UNINDEXED_TAIL,))
    conn.execute("UPDATE audit_indexed SET upto = ?", (records - UNINDEXED_TAIL,))
    conn.close()
    return Built(root / "hub.sqlite", public_path(key_path), expected,
                 time.perf_counter() - started, records)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return asyncio.run(_build(tmp_path_factory.mktemp("audit100k")))


def _reader(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)


def _as_tuples(found: list) -> list[tuple]:  # type: ignore[type-arg]
    return [(c.at_us, c.institution, c.service_id, c.outcome, c.hub_ticket, c.receivers,
             [(d.receiver, d.at_us) for d in c.deliveries]) for c in found]


def _expected_tuples(entries: list[Expected]) -> list[tuple]:  # type: ignore[type-arg]
    return [(e.at_us, e.institution, e.service_id, e.outcome, e.ticket, e.receivers,
             e.deliveries) for e in entries]


def test_who_consulted_returns_exactly_the_citizens_records(built: Built) -> None:
    conn = _reader(built.db)
    try:
        total = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
        assert total == built.records > 150_000  # 100,000 envelopes and their deliveries
        found = who_consulted(conn, TARGET)
        mine = built.expected[TARGET]
        assert len(mine) >= 40
        assert {e.outcome for e in mine} >= {"ACCEPTED", "NOT_AUTHORIZED"}
        assert any(e.deliveries for e in mine) and any(
            e.ticket and OFFLINE in e.receivers for e in mine)
        assert _as_tuples(found) == _expected_tuples(mine)
        # Nothing about anyone else: every record returned is the target's, in the log too.
        seqs = [c.seq for c in found]
        subjects = {row[0] for row in conn.execute(
            f"SELECT DISTINCT subject_number FROM audit WHERE seq IN ({','.join('?' * len(seqs))})",
            seqs)}
        assert subjects == {TARGET}
        tickets = {c.hub_ticket for c in found}
        delivered = [d.seq for c in found for d in c.deliveries]
        assert {row[0] for row in conn.execute(
            f"SELECT DISTINCT hub_ticket FROM audit WHERE seq IN ({','.join('?' * len(delivered))})",
            delivered)} <= tickets
        for number in NEIGHBOURS:
            assert _as_tuples(who_consulted(conn, number)) == _expected_tuples(
                built.expected[number])
        assert who_consulted(conn, "00000000000") == []
        # --since: only the tail.
        middle = mine[len(mine) // 2].at_us
        assert _as_tuples(who_consulted(conn, TARGET, since_us=middle)) == _expected_tuples(
            [e for e in mine if e.at_us >= middle])
        assert _as_tuples(who_consulted(conn, TARGET, limit=3)) == _expected_tuples(mine[-3:])
    finally:
        conn.close()


def test_who_consulted_reads_the_subject_index(built: Built) -> None:
    """The queries who-consulted runs are range reads of ``audit_subjects`` and of the
    newest records not in it yet (how fast that is on a large log is measured by
    ``benchmarks/audit.py``, not asserted here)."""
    conn = _reader(built.db)
    try:
        def plan(sql: str, *params: object) -> str:
            return " ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))

        indexed = [plan(subject_query("seq") + tail, TARGET, *extra)
                   for tail, extra in ((" ORDER BY seq", ()), (" AND at_us >= ? ORDER BY seq", (T0,)),
                                       (" ORDER BY seq DESC LIMIT ?", (3,)))]
        newest = plan(subject_query("seq", tail=True), TARGET)
        upto = conn.execute("SELECT upto FROM audit_indexed").fetchone()[0]
        waiting = conn.execute("SELECT count(*) FROM audit WHERE seq > ? AND subject_number <> ''",
                               (upto,)).fetchone()[0]
        indexed_rows = conn.execute("SELECT count(*) FROM audit_subjects").fetchone()[0]
        # Records without a subject (deliveries) are never in the subject index.
        with_subject = conn.execute("SELECT count(*) FROM audit WHERE seq <= ?"
                                    " AND subject_number <> ''", (upto,)).fetchone()[0]
    finally:
        conn.close()
    for p in indexed:
        assert "USING PRIMARY KEY (subject_number=?)" in p, p  # the index, by subject
        assert "USING INTEGER PRIMARY KEY (rowid=?)" in p, p  # then each record by seq
        assert "SCAN audit" not in p, p
    assert "USING INTEGER PRIMARY KEY (rowid>?)" in newest, newest  # the tail: a range read
    assert indexed_rows == with_subject > 50_000
    assert 0 < waiting < SUBJECT_INDEX_EVERY and upto == built.records - UNINDEXED_TAIL


def test_the_export_verifies_with_only_the_hub_public_key(built: Built, tmp_path: Path) -> None:
    async def export() -> dict:  # type: ignore[type-arg]
        store = HubStore(built.db, "NORMAL",
                         signer=ensure_signing_key(built.pub.with_suffix(".key")))
        await store.open()
        try:
            assert _as_tuples(await store.who_consulted(TARGET)) == _expected_tuples(
                built.expected[TARGET])
            return await store.export_subject(TARGET)
        finally:
            await store.close()

    document = json.loads(json.dumps(asyncio.run(export())))  # as a file would carry it
    body = verify_export(document, load_public_key(built.pub))
    assert [r["fields"]["at_us"] for r in body["records"]] == [
        str(e.at_us) for e in built.expected[TARGET]]
    assert {r["fields"]["subject_number"] for r in body["records"]} == {TARGET}
    assert len(body["deliveries"]) == sum(len(e.deliveries) for e in built.expected[TARGET])
    # Dropping one refusal from the extract, or another key, fails.
    refused = next(i for i, r in enumerate(body["records"]) if r["fields"]["event"] == "REJECTED")
    del document["body"]["records"][refused]
    with pytest.raises(ExportError):
        verify_export(document, load_public_key(built.pub))


def test_the_whole_log_verifies_with_its_checkpoints(built: Built) -> None:
    report = verify_file(built.db, load_public_keys([built.pub]))
    assert report.problem is None and report.log is not None
    assert report.log.checkpoints >= built.records // 10_000 and report.log.signatures_checked
