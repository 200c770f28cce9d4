"""Signed audit checkpoints, retention purge and the ``crossroads audit`` commands, on real
SQLite files written by :class:`HubStore`."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from node.audit_tool import load_public_keys, purge, verify_file, who_consulted
from node.cli import audit as audit_cli
from node.config import AuditCheckpoints
from node.core.audit import ChainWriter, encode_fields, purge_detail
from node.core.clock import FakeClock
from node.core.directory import Service
from node.store.audit_queries import _append_purge_record
from node.store.directory_store import DirectoryStore
from node.store.hub_store import MIGRATIONS, HubStore
from node.wire.delivery import pack
from node.wire.signed import ensure_signing_key, public_path

SUBJECT, OTHER = "85073003328", "90010100164"
S, R1, R2 = "0403019261", "0428759497", "0566988259"
DAY = 86_400_000_000
T0 = 1_700_000_000_000_000
KINDS = {"svc.consult": "consultation", "svc.mutate": "mutation"}


#: Signed every 100 records or every hour: the tests move the clock to make time due.
EVERY_100 = AuditCheckpoints(every_records=100, every_s=3600)


def accepted(at: int, ticket: str, subject: str = SUBJECT, service: str = "svc.consult",
             receivers: Sequence[str] = (R1,)) -> tuple[str, ...]:
    return (str(at), "ACCEPTED", ticket, S, ",".join(receivers), service, "citizen", subject,
            "ACCEPTED", "")


def rejected(at: int, subject: str = SUBJECT, service: str = "svc.consult") -> tuple[str, ...]:
    return (str(at), "REJECTED", "", S, R1, service, "citizen", subject, "NOT_AUTHORIZED", "no")


def delivered(at: int, ticket: str, receiver: str = R1) -> tuple[str, ...]:
    return (str(at), "DELIVERED", ticket, "", receiver, "", "", "", "DELIVERED", "")


async def commit(store: HubStore, records: Sequence[tuple[str, ...]]) -> None:
    rows = [(r[4].split(",")[0], 1, pack([b"x"], [r[2]])) for r in records if r[1] == "ACCEPTED"]
    await store.commit_batch(S, "", 0, 0, rows, records, b"ack")


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "directory-signing.key"
    ensure_signing_key(path)
    return path


@pytest.fixture
def keys(key_path: Path) -> dict:
    return load_public_keys([public_path(key_path)])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(now_us=T0)


@pytest.fixture
async def store(tmp_path: Path, key_path: Path, clock: FakeClock) -> AsyncIterator[HubStore]:
    s = HubStore(tmp_path / "hub.sqlite", "NORMAL", signer=ensure_signing_key(key_path),
                 checkpoints=EVERY_100, clock=clock)
    await s.open()
    yield s
    await s.close()


def checkpoint_rows(db: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(db) as conn:
        return [(int(a), int(b)) for a, b in
                conn.execute("SELECT seq, from_seq FROM audit_checkpoints ORDER BY seq")]


def edit(db: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def problem_text(db: Path, keys: dict | None) -> str:
    return str(verify_file(db, keys).problem)


async def fill(store: HubStore, batches: int = 10, size: int = 30) -> None:
    for b in range(batches):
        await commit(store, [rejected(T0 + b * 1000 + i, OTHER) for i in range(size)])


# -- checkpoints -----------------------------------------------------------------------------


async def test_checkpoints_every_n_records_and_every_t_seconds(store: HubStore, clock: FakeClock,
                                                                keys: dict) -> None:
    await fill(store)  # 10 commits of 30: the first is due by time (no checkpoint yet)
    assert checkpoint_rows(store.path) == [(30, 0), (150, 30), (270, 150)]
    clock.advance(3600)  # an hour later, one more commit is due by time
    await commit(store, [rejected(T0, OTHER)])
    assert checkpoint_rows(store.path)[-1] == (301, 270)
    await commit(store, [rejected(T0, OTHER)])
    assert checkpoint_rows(store.path)[-1] == (301, 270)  # neither due
    cp = await store.checkpoint()  # at shutdown: sign the head
    assert cp is not None and (cp.seq, cp.from_seq) == (302, 301)
    assert await store.checkpoint() is None  # nothing new
    report = verify_file(store.path, keys)
    assert report.problem is None and report.log is not None
    assert (report.records, report.log.checkpoints, report.log.signatures_checked) == (302, 5, True)


async def test_without_a_signer_there_are_no_checkpoints(tmp_path: Path) -> None:
    s = HubStore(tmp_path / "hub.sqlite", "NORMAL")
    await s.open()
    try:
        await fill(s, 3)
        assert await s.checkpoint() is None
    finally:
        await s.close()
    assert checkpoint_rows(tmp_path / "hub.sqlite") == []
    assert verify_file(tmp_path / "hub.sqlite").problem is None


async def test_a_failed_commit_takes_its_checkpoint_with_it(tmp_path: Path, key_path: Path,
                                                           keys: dict) -> None:
    store = HubStore(tmp_path / "hub.sqlite", "NORMAL", signer=ensure_signing_key(key_path),
                     checkpoints=AuditCheckpoints(every_s=0))  # every commit is due
    await store.open()
    try:
        await commit(store, [rejected(T0, OTHER)] * 3)
        with pytest.raises(TypeError):  # no ack to store: fails after the audit rows and checkpoint
            await store.commit_batch(S, "origin", 1, 1, [], [rejected(T0, OTHER)] * 4, None)  # type: ignore[arg-type]
        assert checkpoint_rows(store.path) == [(3, 0)]
        await commit(store, [rejected(T0, OTHER)] * 2)
        assert checkpoint_rows(store.path) == [(3, 0), (5, 3)]
        assert verify_file(store.path, keys).problem is None
    finally:
        await store.close()


async def test_a_reopened_store_continues_the_segment(tmp_path: Path, key_path: Path,
                                                      keys: dict) -> None:
    path = tmp_path / "hub.sqlite"
    for _ in range(3):
        s = HubStore(path, "NORMAL", signer=ensure_signing_key(key_path),
                     checkpoints=AuditCheckpoints(every_records=50))
        await s.open()
        await fill(s, 2, 40)
        await s.close()  # no checkpoint at close: the next run's covers this run's tail
    assert checkpoint_rows(path) == [(40, 0), (120, 40), (200, 120)]
    assert verify_file(path, keys).problem is None


async def test_an_upgraded_database_gets_checkpoints_over_its_old_records(
    tmp_path: Path, key_path: Path, keys: dict
) -> None:
    path = tmp_path / "hub.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    writer = ChainWriter()
    rows = writer.extend([rejected(T0 + i, OTHER) for i in range(25)])
    conn.executemany("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("INSERT INTO audit_head VALUES (1, ?, ?)", (writer.last_seq, writer.last_hash))
    conn.close()
    assert verify_file(path).problem is None  # the version-1 layout still verifies
    old = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    assert len(who_consulted(old, OTHER)) == 25  # and answers, without a delivery index
    old.close()
    s = HubStore(path, "NORMAL", signer=ensure_signing_key(key_path))
    await s.open()
    try:
        await fill(s, 1, 5)
    finally:
        await s.close()
    assert checkpoint_rows(path) == [(30, 0)]
    report = verify_file(path, keys)
    assert report.problem is None and report.records == 30


async def test_another_process_may_append_while_the_hub_runs(store: HubStore, keys: dict) -> None:
    await fill(store, 2)
    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        assert _append_purge_record(conn, T0, purge_detail({"*": T0}, 0)) == 61
    finally:
        conn.close()
    await fill(store, 2)
    assert await store.checkpoint() is not None
    assert verify_file(store.path, keys).problem is None


# -- tampering -------------------------------------------------------------------------------


@pytest.fixture
async def signed_db(store: HubStore) -> Path:
    await fill(store)
    await store.checkpoint()
    return store.path  # checkpoints at 30, 150, 270, 300


async def test_a_forged_checkpoint_signature_is_found_with_the_key(signed_db: Path,
                                                                   keys: dict) -> None:
    edit(signed_db, "UPDATE audit_checkpoints SET signature = ? WHERE seq = 150", bytes(64))
    assert problem_text(signed_db, keys) == (
        "checkpoint 150: signature does not verify (checkpoint or signature altered)")
    assert verify_file(signed_db, None).problem is None  # only the key can tell


async def test_rewriting_the_chain_after_an_edit_is_caught_by_the_checkpoint(
    signed_db: Path, keys: dict
) -> None:
    conn = sqlite3.connect(signed_db)
    rows = conn.execute("SELECT seq, at_us, event, hub_ticket, sender, receiver, service_id,"
                        " subject_type, subject_number, reason, detail, prev_hash FROM audit"
                        " WHERE seq >= 200 ORDER BY seq").fetchall()
    prev = bytes(rows[0][11])
    for i, row in enumerate(rows):  # edit 200, then re-hash everything after it, and the head
        fields = [str(v) for v in row[1:11]]
        if i == 0:
            fields[3] = R2
        digest = hashlib.sha256(prev + encode_fields(fields)).digest()
        conn.execute("UPDATE audit SET sender = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                     (fields[3], prev, digest, row[0]))
        prev = digest
    conn.execute("UPDATE audit_head SET hash = ?", (prev,))
    conn.commit()
    conn.close()
    assert problem_text(signed_db, keys).startswith("checkpoint 270: hash differs from record 270")


async def test_truncating_the_log_and_its_head_is_found(signed_db: Path, keys: dict) -> None:
    conn = sqlite3.connect(signed_db)
    conn.execute("DELETE FROM audit WHERE seq > 280")
    conn.execute("UPDATE audit_head SET seq = 280, hash = (SELECT hash FROM audit WHERE seq = 280)")
    conn.commit()
    conn.close()
    assert problem_text(signed_db, keys) == (
        "record 281: missing: chain ends at 280, but checkpoint 300 is signed"
        " (records deleted at the end)")


@pytest.mark.parametrize(("sql", "named"), [
    ("UPDATE audit SET detail = 'x' WHERE seq = 77", "record 77: content does not match"),
    ("DELETE FROM audit WHERE seq = 5", "record 5: missing"),
    ("DELETE FROM audit_checkpoints WHERE seq = 150", "checkpoint 270: covers records after 150"),
    ("UPDATE audit_checkpoints SET hash = zeroblob(32) WHERE seq = 30", "checkpoint 30: hash differs"),
    ("UPDATE audit_checkpoints SET at_us = at_us + 1 WHERE seq = 30", "checkpoint 30: signature"),
])
async def test_tampering_is_named(signed_db: Path, keys: dict, sql: str, named: str) -> None:
    edit(signed_db, sql)
    assert problem_text(signed_db, keys).startswith(named)


# -- retention -------------------------------------------------------------------------------


async def day_workload(store: HubStore, days: int = 20) -> None:
    """Per day: a consultation (delivered the next day), a mutation about SUBJECT, a refusal
    about OTHER and an unknown-service record; checkpoints every 100 records."""
    pending: list[str] = []
    for day in range(days):
        at = T0 + day * DAY
        records = [delivered(at, t) for t in pending]
        pending = [f"c{day}", f"m{day}"]
        records += [accepted(at, f"c{day}"), accepted(at + 1, f"m{day}", service="svc.mutate"),
                    rejected(at + 2, OTHER), rejected(at + 3, OTHER, service="svc.other")]
        await commit(store, records)
        if day % 3 == 2:
            await store.checkpoint()


def live(db: Path) -> dict[int, tuple[int, str, str, str]]:
    with sqlite3.connect(db) as conn:
        return {int(s): (int(a), e, t, v) for s, a, e, t, v in conn.execute(
            "SELECT seq, at_us, event, hub_ticket, service_id FROM audit WHERE redacted = 0")}


async def test_retention_per_service_kind_keeps_the_chain_verifiable(
    store: HubStore, clock: FakeClock, keys: dict
) -> None:
    await day_workload(store)
    await store.checkpoint()
    await store._write(store._index_subjects)  # every record in the subject index
    clock.set_us(T0 + 30 * DAY)
    report = await store.purge({"consultation": T0 + 12 * DAY, "mutation": T0 + 5 * DAY,
                                "unknown": T0 + 3 * DAY}, KINDS)
    assert (report.upto_seq, report.anchor, report.deleted) == (70, 16, 16)
    with sqlite3.connect(store.path) as conn:  # the index holds the live records only
        indexed = conn.execute("SELECT subject_number, seq FROM audit_subjects").fetchall()
        with_subject = conn.execute("SELECT subject_number, seq FROM audit"
                                    " WHERE subject_number <> ''").fetchall()
    assert sorted(indexed) == sorted(with_subject) and indexed
    left = live(store.path)
    for seq, (at, event, ticket, service) in left.items():
        if service == "svc.consult":
            assert at >= T0 + 12 * DAY, seq
        if service == "svc.mutate":
            assert at >= T0 + 5 * DAY, seq
        if service == "svc.other":
            assert at >= T0 + 3 * DAY, seq
        if event == "DELIVERED":  # a delivery goes with its envelope's kind
            cut = T0 + (12 if ticket.startswith("c") else 5) * DAY
            assert at >= cut, seq
    assert sum(1 for v in left.values() if v[3] == "svc.other") == 17  # days 3..19
    assert sum(1 for v in left.values() if v[3] == "svc.mutate") == 15  # days 5..19
    verified = verify_file(store.path, keys)
    assert verified.problem is None and verified.log is not None
    assert verified.log.anchor == report.anchor and verified.log.redacted > 0
    # who-consulted no longer knows the purged consultations; the kept ones are whole.
    conn = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True, isolation_level=None)
    found = who_consulted(conn, SUBJECT)
    conn.close()
    assert [c.hub_ticket for c in found] == (
        [f"m{d}" for d in range(5, 12)] + [x for d in range(12, 20) for x in (f"c{d}", f"m{d}")])
    assert all(len(c.deliveries) == 1 for c in found if c.hub_ticket != "c19" and
               c.hub_ticket != "m19")
    # The hub carries on writing and checkpointing after the purge.
    await day_workload(store, 2)
    await store.checkpoint()
    assert verify_file(store.path, keys).problem is None


async def test_purge_tampering_is_found(store: HubStore, clock: FakeClock, keys: dict) -> None:
    await day_workload(store)
    await store.checkpoint()
    report = await store.purge({"consultation": T0 + 12 * DAY}, KINDS)
    left = live(store.path)
    # A live mutation record before a redacted one: edit it and forge the redacted's link.
    victim = min(s for s, v in left.items() if v[3] == "svc.mutate" and s + 1 not in left
                 and s > report.anchor)
    conn = sqlite3.connect(store.path)
    row = conn.execute("SELECT at_us, event, hub_ticket, sender, receiver, service_id,"
                       " subject_type, subject_number, reason, detail, prev_hash FROM audit"
                       " WHERE seq = ?", (victim,)).fetchone()
    fields = [str(v) for v in row[:10]]
    fields[3] = R2
    digest = hashlib.sha256(bytes(row[10]) + encode_fields(fields)).digest()
    conn.execute("UPDATE audit SET sender = ?, hash = ? WHERE seq = ?", (R2, digest, victim))
    conn.execute("UPDATE audit SET prev_hash = ? WHERE seq = ?", (digest, victim + 1))
    conn.commit()
    conn.close()
    assert "does not match its digest" in problem_text(store.path, keys)


async def test_erasing_a_recent_record_as_if_purged_is_found(store: HubStore, keys: dict) -> None:
    await day_workload(store)
    await store.checkpoint()
    report = await store.purge({"consultation": T0 + 5 * DAY}, KINDS)
    recent = report.upto_seq + 3
    edit(store.path, "UPDATE audit SET subject_number = '', sender = '', redacted = ?"
         " WHERE seq = ?", report.purge_seq, recent)
    assert problem_text(store.path, keys).startswith(
        f"record {recent}: redacted by purge {report.purge_seq}, which only covered records up to")


async def test_cutting_more_than_a_purge_allowed_is_found(store: HubStore, keys: dict) -> None:
    await day_workload(store)
    await store.checkpoint()
    report = await store.purge({"*": T0 + 3 * DAY}, KINDS)
    later = max(s for s, _ in checkpoint_rows(store.path) if s < report.purge_seq)
    assert later > report.upto_seq
    edit(store.path, "DELETE FROM audit WHERE seq <= ?", later)
    assert "no purge record covers them" in problem_text(store.path, keys)


async def test_purge_needs_a_checkpoint_and_only_touches_signed_segments(tmp_path: Path) -> None:
    s = HubStore(tmp_path / "hub.sqlite", "NORMAL")
    await s.open()
    try:
        await day_workload(s, 3)
    finally:
        await s.close()
    conn = sqlite3.connect(tmp_path / "hub.sqlite", isolation_level=None)
    report = purge(conn, T0 + 10 * DAY)
    conn.close()
    assert report.redacted == 0 and "no signed checkpoint" in report.note
    assert verify_file(tmp_path / "hub.sqlite").problem is None


# -- the command line (on both hub backends: tests/contract/test_audit_cli.py) ---------------


def cli(*argv: str) -> int:
    return audit_cli.main(list(argv))


@pytest.mark.parametrize(("argv", "message"), [
    (["verify", "--db", "/nonexistent/hub.sqlite"], "no hub database at /nonexistent/hub.sqlite"),
    (["verify"], "give --db or --config"),
    (["who-consulted", SUBJECT, "--db", "{db}", "--since", "yesterday"], "is not a date"),
    (["export", "--db", "{db}", "--subject", SUBJECT, "--signing-key", "/nonexistent.key"],
     "no signing key at /nonexistent.key"),
    (["verify-export", "/nonexistent.json", "--key", "{pub}"], "no file at /nonexistent.json"),
    (["verify", "--db", "{db}", "--key", "{db}"], "not an Ed25519 public key"),
    (["purge", "--db", "{db}", "--retention", "consultation"], "expected NAME=VALUE"),
])
async def test_cli_errors_are_one_line_and_exit_2(signed_db: Path, key_path: Path, capsys,  # type: ignore[no-untyped-def]
                                                  argv: list[str], message: str) -> None:
    argv = [a.format(db=signed_db, pub=public_path(key_path)) for a in argv]
    assert cli(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("crossroads audit: error: ") and message in err


async def test_cli_with_a_hub_config_finds_database_keys_and_service_kinds(
    tmp_path: Path, clock: FakeClock, capsys  # type: ignore[no-untyped-def]
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "hub.toml"
    config.write_text('network = "demo"\nlisten = "127.0.0.1:0"\ndata_dir = "data"\n'
                      '[tls]\nca_cert = "ca.pem"\ncert = "hub.pem"\nkey = "hub.key"\ncrl = "crl.pem"\n')
    key = ensure_signing_key(data / "directory-signing.key")
    directory = DirectoryStore(data / "directory.sqlite")
    await directory.open()
    await directory.apply([(Service("svc.consult", kind="consultation"), False),
                           (Service("svc.mutate", kind="mutation"), False)])
    await directory.close()
    store = HubStore(data / "hub.sqlite", "NORMAL", signer=key, checkpoints=EVERY_100,
                     clock=clock)
    await store.open()
    try:
        await day_workload(store, 6)
        await store.checkpoint()
    finally:
        await store.close()
    assert cli("purge", "--config", str(config), "--retention", "mutation=0") == 0
    # The directory says svc.mutate is a mutation: 6 of them and their 5 deliveries.
    assert capsys.readouterr().out.startswith("purged: 11 records redacted")
    assert cli("verify", "--config", str(config)) == 0  # the .pub next to the key
    assert "signatures verified with key" in capsys.readouterr().out
    extract = tmp_path / "extract.json"
    assert cli("export", "--config", str(config), "--subject", SUBJECT, "-o", str(extract)) == 0
    assert cli("verify-export", str(extract), "--key", str(data / "directory-signing.pub")) == 0
    out = capsys.readouterr().out
    # The consultations are left, with their deliveries (the last day's are still pending).
    assert out.startswith(f"audit extract OK: subject {SUBJECT}, 6 records, 5 deliveries")
