"""``crossroads audit`` on every hub backend: the same commands, output and exit codes
whether the hub's store is SQLite (``hub.sqlite`` in its data_dir) or PostgreSQL (the
database the hub config's ``[store]`` names, with its password file); and on PostgreSQL,
the records of several replicas as one chain.

The logs are written by the real stores (:class:`HubStore`, :class:`PostgresHubStore`) on a
fake clock; every command runs through the CLI's entry point with ``--config hub.toml``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from node.cli import audit as audit_cli
from node.core.audit import Checkpoint, sign_checkpoint
from node.core.clock import FakeClock
from node.core.directory import Service, ServiceKind
from node.store.hub_store import HubStore
from node.store.postgres import PostgresHubStore
from node.store.postgres import audit as pg_audit
from node.store.protocols import HubStorage
from node.testing import write_toml
from node.wire.signed import ensure_signing_key, public_path
from tests.conftest import opened
from tests.contract.backends import PG_DSN_FILE, PG_PASSWORD_FILE, HubBackend, pg_do, pg_params, run_sync
from tests.unit.test_audit_checkpoints import (
    DAY,
    EVERY_100,
    OTHER,
    R1,
    R2,
    SUBJECT,
    T0,
    S,
    accepted,
    day_workload,
    delivered,
    fill,
)


class Hub:
    """A hub's store and config in ``root`` on one backend (a PostgreSQL test database is
    named by the DSN and password files the fixture left in ``root``)."""

    def __init__(self, backend: str, root: Path) -> None:
        self.backend, self.root = backend, root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.key_path = self.data / "directory-signing.key"
        self.signer = ensure_signing_key(self.key_path)
        self.pub = str(public_path(self.key_path))
        self.clock = FakeClock(now_us=T0)
        self.config = root / "hub.toml"
        table: dict[str, Any] = {
            "network": "demo", "listen": "127.0.0.1:0", "data_dir": str(self.data),
            "tls": {"ca_cert": "ca.pem", "cert": "hub.pem", "key": "hub.key", "crl": "crl.pem"}}
        if backend == "postgresql":
            table["store"] = {"backend": "postgresql",
                              "dsn": (root / PG_DSN_FILE).read_text().strip(),
                              "password_file": str(root / PG_PASSWORD_FILE)}
        write_toml(self.config, table)

    def store(self) -> HubStorage:
        if self.backend == "postgresql":
            return PostgresHubStore(pg_params(self.root), signer=self.signer,
                                    checkpoints=EVERY_100, clock=self.clock)
        return HubStore(self.data / "hub.sqlite", "NORMAL", signer=self.signer,
                        checkpoints=EVERY_100, clock=self.clock)

    def write(self, work: Callable[[Any], Awaitable[object]]) -> None:
        """Run ``work(store)`` on the store, open for it."""
        async def run() -> None:
            async with opened(self.store()) as store:
                await work(store)
        run_sync(run())

    def sql(self, statement: str) -> None:
        """Change the store behind the hub's back (one statement, valid on both)."""
        if self.backend == "postgresql":
            async def execute(conn: Any) -> None:
                await conn.execute(statement)
            run_sync(pg_do(self.root, execute))
            return
        conn = sqlite3.connect(self.data / "hub.sqlite")
        conn.execute(statement)
        conn.commit()
        conn.close()

    def cli(self, command: str, *argv: str) -> int:
        return audit_cli.main([command, "--config", str(self.config), *argv])


@pytest.fixture
def hub(backend: HubBackend, tmp_path: Path) -> Hub:
    return Hub(backend.name, tmp_path)


@pytest.fixture
def signed(hub: Hub) -> Hub:
    """300 records, checkpoints at 30, 150, 270 and 300 (as tests/unit's ``signed_db``)."""
    async def work(store: Any) -> None:
        await fill(store)
        await store.checkpoint()
    hub.write(work)
    return hub


def test_verify_export_and_verify_export(signed: Hub, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    hub = signed
    assert hub.cli("verify") == 0  # the key: the .pub next to the config's directory key
    out = capsys.readouterr().out
    assert out.startswith("audit log OK: 300 records, chain verified (seq 1..300); 4 checkpoints,"
                          " signatures verified with key")
    extract = tmp_path / "extract.json"
    assert hub.cli("export", "--subject", OTHER, "-o", str(extract)) == 0
    assert audit_cli.main(["verify-export", str(extract), "--key", hub.pub]) == 0
    assert capsys.readouterr().out.startswith(f"audit extract OK: subject {OTHER}, 300 records")
    hub.sql("UPDATE audit_checkpoints SET at_us = at_us + 1 WHERE seq = 270")
    assert hub.cli("verify") == 1
    assert "audit log INVALID: checkpoint 270: signature" in capsys.readouterr().err


@pytest.mark.parametrize(("sql", "named"), [
    ("UPDATE audit SET detail = 'x' WHERE seq = 77", "record 77: content does not match"),
    ("DELETE FROM audit WHERE seq = 5", "record 5: missing"),
    ("DELETE FROM audit_checkpoints WHERE seq = 150", "checkpoint 270: covers records after 150"),
])
def test_a_tampered_row_fails_verify_and_is_named(signed: Hub, sql: str, named: str,
                                                   capsys) -> None:  # type: ignore[no-untyped-def]
    signed.sql(sql)
    assert signed.cli("verify") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"audit log INVALID: {named}")


def test_who_consulted_and_purge(hub: Hub, capsys) -> None:  # type: ignore[no-untyped-def]
    async def work(store: Any) -> None:
        await day_workload(store, 6)
        await store.checkpoint()
    hub.write(work)
    assert hub.cli("who-consulted", SUBJECT, "--since", "2023-11-18", "--json") == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [c["hub_ticket"] for c in found] == ["c4", "m4", "c5", "m5"]
    assert found[0]["deliveries"][0]["receiver"] == R1 and found[0]["institution"] == S
    assert hub.cli("who-consulted", SUBJECT, "--limit", "1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "svc.mutate  ACCEPTED  to 0428759497" in lines[0]
    assert hub.cli("purge", "--retention", "consultation=0", "--service-kind",
                   "svc.consult=consultation") == 0
    # 6 consultations, their 5 deliveries, 6 consultation refusals; mutations have no cut-off.
    assert capsys.readouterr().out.startswith("purged: 17 records redacted, 0 deleted")
    assert hub.cli("verify") == 0
    assert "17 redacted by retention" in capsys.readouterr().out


def test_purge_reads_the_service_kinds_from_the_hubs_own_directory(
        backend: HubBackend, hub: Hub, capsys) -> None:  # type: ignore[no-untyped-def]
    """No ``--service-kind``: the kinds come from the hub's directory, in ``directory.sqlite``
    or, on PostgreSQL, in the hub's database."""
    async def work(store: Any) -> None:
        await day_workload(store, 6)
        directory = backend.directory(hub.data if backend.name == "sqlite" else hub.root)
        async with opened(directory):
            await directory.apply([(Service("svc.consult", kind=ServiceKind.CONSULTATION), False),
                                   (Service("svc.mutate", kind=ServiceKind.MUTATION), False)])
    hub.write(work)
    assert hub.cli("purge", "--retention", "consultation=0") == 0
    assert capsys.readouterr().out.startswith("purged: 17 records redacted, 0 deleted")


# -- one log, two backends: the same output --------------------------------------------------


def _run(hub: Hub, capsys: Any, command: str, *argv: str) -> tuple[int, str, str]:
    code = hub.cli(command, *argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_same_log_gives_the_same_output_on_both_backends(
    pg_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    hubs = [Hub("sqlite", tmp_path / "sqlite"), Hub("postgresql", pg_dir)]
    for hub in hubs:  # one key, one clock, one workload: one chain
        for path in (hub.key_path, public_path(hub.key_path)):
            path.write_bytes((hubs[0].data / path.name).read_bytes())
        hub.signer = ensure_signing_key(hub.key_path)

        async def work(store: Any) -> None:
            await day_workload(store, 8)
            await store.checkpoint()
        hub.write(work)
    latest = run_sync(_latest(hubs[0]))
    pinned = tmp_path / "checkpoint.json"
    pinned.write_text(json.dumps(latest.to_json()))
    other = tmp_path / "other-chain.json"
    other.write_text(json.dumps(sign_checkpoint(  # a checkpoint of another chain, signed
        hubs[0].signer, latest.seq, bytes(32), latest.at_us, latest.from_seq,
        latest.segment_digest).to_json()))
    steps: list[tuple[str, ...]] = [
        ("summary",), ("verify",), ("verify", "--checkpoint", str(pinned)),
        ("verify", "--checkpoint", str(other)), ("who-consulted", SUBJECT),
        ("who-consulted", SUBJECT, "--json", "--since", "2023-11-17"),
        ("who-consulted", OTHER, "--limit", "3"), ("who-consulted", "00000000097"),
        ("purge", "--before", "2023-11-19", "--kind", "mutation", "--service-kind",
         "svc.mutate=mutation", "--json"),
        ("verify",), ("summary",), ("who-consulted", SUBJECT, "--json"),
    ]
    monkeypatch.setattr(time, "time_ns", lambda: (T0 + 30 * DAY) * 1000)  # the purge's "now"
    outputs = [[_run(hub, capsys, *step) for step in steps] for hub in hubs]
    exports = [_export(hub) for hub in hubs]
    capsys.readouterr()
    for hub in hubs:
        hub.sql("UPDATE audit SET detail = 'nothing to see' WHERE seq = 40")
    steps.append(("verify", "(tampered)"))
    for hub, output in zip(hubs, outputs, strict=True):
        output.append(_run(hub, capsys, "verify"))
    for step, sqlite_out, pg_out in zip(steps, *outputs, strict=True):
        assert sqlite_out == pg_out, step
    codes = [code for code, _, _ in outputs[0]]
    assert codes == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert outputs[0][-1][2].startswith("audit log INVALID: record 40: content does not match")
    assert "not the same chain" in outputs[0][3][2]
    assert json.loads(outputs[0][8][1])["redacted"] > 0
    assert exports[0] == exports[1] and exports[0]["records"]


async def _latest(hub: Hub) -> Checkpoint:
    async with opened(hub.store()) as store:
        latest = await store.latest_checkpoint()
    assert latest is not None
    return latest


def _export(hub: Hub) -> dict[str, Any]:
    """The body of a signed extract about SUBJECT, but its time (both verified)."""
    extract = hub.root / "extract.json"
    assert hub.cli("export", "--subject", SUBJECT, "-o", str(extract)) == 0
    assert audit_cli.main(["verify-export", str(extract), "--key", hub.pub]) == 0
    body = dict(json.loads(extract.read_text())["body"])
    del body["exported_at_us"]
    return body


# -- several replicas on one PostgreSQL database ---------------------------------------------


@pytest.fixture
def pg_hub(pg_dir: Path) -> Hub:
    return Hub("postgresql", pg_dir)


def test_two_replicas_records_verify_as_one_chain_and_answer_who_consulted(
    pg_hub: Hub, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    hub = pg_hub
    monkeypatch.setattr(pg_audit, "VERIFY_CHUNK", 7)  # verify streams the chain in many chunks

    async def replicas() -> None:
        async with opened(hub.store()) as a, opened(hub.store()) as b:
            async def replica(store: Any, sender: str, n: int) -> None:
                for i in range(n):  # each consultation delivered by the other replica
                    ticket = f"{sender}-{i}"
                    records = [accepted(T0 + i, ticket)]
                    await store.commit_batch(sender, "", 0, 0, [(R1, 1, b"x")],
                                             [(r[0], r[1], r[2], sender, *r[4:]) for r in records],
                                             b"ack")
                    await (b if store is a else a).append_audit([delivered(T0 + i, ticket)])
                    if i % 7 == 0:
                        hub.clock.advance(3600)  # time-due checkpoints, signed by either
            await asyncio.gather(replica(a, S, 40), replica(b, R2, 40))
            await a.checkpoint()
    run_sync(replicas())
    assert hub.cli("verify") == 0
    out = capsys.readouterr().out
    assert out.startswith("audit log OK: 160 records, chain verified (seq 1..160);")
    assert "signatures verified" in out
    assert hub.cli("who-consulted", SUBJECT, "--json") == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(c["institution"] for c in found) == sorted([S] * 40 + [R2] * 40)
    assert all(len(c["deliveries"]) == 1 for c in found)
    extract = tmp_path / "extract.json"
    assert hub.cli("export", "--subject", SUBJECT, "-o", str(extract)) == 0
    assert audit_cli.main(["verify-export", str(extract), "--key", hub.pub]) == 0
    assert capsys.readouterr().out.startswith(
        f"audit extract OK: subject {SUBJECT}, 80 records, 80 deliveries, chain head 160")
    hub.sql("UPDATE audit SET detail = 'nothing to see' WHERE seq = 101")
    assert hub.cli("verify") == 1
    assert capsys.readouterr().err.startswith(
        "audit log INVALID: record 101: content does not match")


# -- PostgreSQL's own failures ---------------------------------------------------------------


def _errors(hub: Hub, capsys: Any, *argv: str) -> str:
    assert hub.cli(*argv) == 2
    err: str = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("crossroads audit: error: "), err
    return err


def test_an_unreachable_database_or_one_without_a_hub_store_is_one_line_and_exit_2(
    pg_hub: Hub, capsys  # type: ignore[no-untyped-def]
) -> None:
    assert "holds no hub store" in _errors(pg_hub, capsys, "summary")
    assert run_sync(pg_do(pg_hub.root, lambda conn: conn.fetchval(
        "SELECT to_regclass('audit_head')"))) is None  # the command created nothing
    dsn = (pg_hub.root / PG_DSN_FILE).read_text()
    text = pg_hub.config.read_text()
    pg_hub.config.write_text(text.replace(f'password_file = "{pg_hub.root / PG_PASSWORD_FILE}"',
                                          'password_env = "CROSSROADS_TEST_UNSET"'))
    assert "environment variable CROSSROADS_TEST_UNSET is not set" in _errors(
        pg_hub, capsys, "verify")
    pg_hub.config.write_text(text)
    (pg_hub.root / PG_PASSWORD_FILE).write_text("wrong\n")
    assert "cannot reach the hub's PostgreSQL database" in _errors(pg_hub, capsys, "verify")
    port = dsn.split("@127.0.0.1:")[1].split("/")[0]
    config = pg_hub.config.read_text().replace(f"127.0.0.1:{port}", "127.0.0.1:1")
    pg_hub.config.write_text(config)
    assert "cannot reach the hub's PostgreSQL database" in _errors(
        pg_hub, capsys, "who-consulted", SUBJECT)
