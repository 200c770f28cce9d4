"""Audit benchmark: "who consulted my data" over a hub audit log of 10 million records.

``python -m benchmarks.audit [--records 10000000] [--citizens 1000000] [--queries 2000]
[--workdir DIR] [--rebuild] [--verify]``

What runs
---------
1. **The log** (built once, cached). A real ``hub.sqlite`` is written through the hub's own
   write path, :class:`node.store.hub_store.HubStore`: :meth:`~HubStore.commit_batch` per
   batch of ``--batch`` (5,000) envelopes (their queue rows and ``ACCEPTED`` / ``REJECTED``
   audit records, one transaction), then :meth:`~HubStore.commit_delivery` per receiver for
   the previous batch (queue rows deleted, ``DELIVERED`` records appended), with the hub's
   Ed25519 key as signer, so the chain, its head and the signed checkpoints (every 10,000
   records) are exactly what a hub writes. It is *not* a bulk path: every record goes
   through :class:`ChainWriter` and the same SQL and indexes (``audit_subjects``,
   ``audit_delivered_by_ticket``). Only the durability differs: ``synchronous=NORMAL``
   (no fsync per commit; the hub runs ``FULL``), which does not change the file's content.
   The envelopes: ``--citizens`` (1,000,000) valid citizen numbers drawn uniformly, plus one
   *heavy* citizen who is the subject of ``--heavy-share`` (0.1 %) of all envelopes;
   20 institutions as senders and receivers, 6 services, ``--refused-share`` (5 %) refused
   (``REJECTED`` with a reason, no ticket), accepted ones routed to 1 (80 %) or 2 receivers,
   each delivered (one ``DELIVERED`` record per receiver), time-ordered UUIDv7 hub tickets
   like the hub's, timestamps spread evenly over the 365 days before the build.
   About 2.1 records per envelope, so 10 million records are ~4.7 million envelopes.
   The build stops at the first batch that reaches ``--records``.
   The database (+ its signing key, + ``meta.json`` with the build parameters and timings)
   is kept in ``--workdir`` (default ``/tmp/crossroads-bench-audit``, outside the
   repository: ~2.5 GB at full size); a later run with the same parameters reuses it
   (``--rebuild`` forces a new build). ``--verify`` also runs ``crossroads audit verify``'s
   check (:func:`node.audit_tool.verify_file` with the public key) and records its time.
2. **Queries** on a plain read-only :mod:`sqlite3` connection, as ``crossroads audit
   who-consulted`` opens it, each timed around :func:`node.audit_tool.who_consulted`
   (which returns the records and joins their deliveries):

   * ``first_query``: the first query on a fresh connection (the file's pages are likely in
     the OS cache after the build; SQLite's own cache is empty);
   * ``random``: ``--queries`` citizens drawn at random from the pool (a few records each);
   * ``random_since``: the same with ``since`` = ``--since-days`` (30) before the last record;
   * ``heavy``: the heavy citizen (``--heavy-repeat`` times; thousands of records plus their
     deliveries), with ``since`` and with ``limit=100``;
   * ``absent``: valid numbers that never occur.

   Reported per kind: p50, p90, p99, max (ms) and the records returned.

Results: ``benchmarks/results/audit-<timestamp>.json`` and a summary on stdout. No process is
started; everything happens in this process (the build through ``asyncio``, as the hub does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    bench_parser,
    citizens,
    code_digests,
    machine_facts,
    percentile,
    rounded,
    usage_error,
    write_results,
)
from benchmarks.phases import announce, report_end, results_header
from benchmarks.progress import Progress, latency_curve, series
from node import grpc_runtime
from node.core.identifiers import enterprise_check_digits
from node.store.hub_store import HubStore
from node.testing import DEFAULT_INSTITUTIONS
from node.wire.delivery import pack
from node.wire.signed import ensure_signing_key, public_path

__all__ = ["main"]

DEFAULT_WORKDIR = Path("/tmp/crossroads-bench-audit")
#: The heavy citizen: not in the random pool (the pool's seed differs), valid number.
HEAVY = "85073003328"
SERVICES = ("ssn.identity", "ssn.income", "ssn.career", "ssn.address.mutation",
            "health.insurance", "family.allowance")
REASONS = ("NOT_AUTHORIZED", "NOT_INTEGRATED", "PHASE_TOO_LOW", "NO_RECEIVER")
DAY_US = 86_400_000_000
#: Bump when the generated content changes: a cached database of another version is rebuilt.
BUILD_VERSION = 3  # 3: schema 7 (audit_subjects)


def _parser() -> argparse.ArgumentParser:
    p = bench_parser("audit", "who-consulted query times over a hub audit log of --records"
                              " records (built through HubStore and cached in --workdir).")
    p.add_argument("--records", type=int, default=10_000_000, help="audit records in the log")
    p.add_argument("--citizens", type=int, default=1_000_000, help="distinct random subjects")
    p.add_argument("--heavy-share", type=float, default=0.001,
                   help="share of envelopes about the heavy citizen")
    p.add_argument("--refused-share", type=float, default=0.05, help="share of refused envelopes")
    p.add_argument("--batch", type=int, default=5_000, help="envelopes per commit_batch")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--queries", type=int, default=2_000, help="random citizens queried")
    p.add_argument("--heavy-repeat", type=int, default=30, help="queries of the heavy citizen")
    p.add_argument("--since-days", type=int, default=30, help="--since window for *_since")
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR),
                   help=f"where the database is built and cached (default {DEFAULT_WORKDIR})")
    p.add_argument("--rebuild", action="store_true", help="build even if a cached log matches")
    p.add_argument("--verify", action="store_true",
                   help="verify the whole chain and its signed checkpoints after the build")
    p.add_argument("--out", help="results directory (default: benchmarks/results)")
    return p


# -- building the log --------------------------------------------------------------------------


def _institutions(count: int = 20) -> list[str]:
    numbers = list(DEFAULT_INSTITUTIONS)
    k = 0
    while len(numbers) < count:
        first8 = f"0{3_100_000 + 7_919 * k:07d}"
        numbers.append(first8 + enterprise_check_digits(first8))
        k += 1
    return numbers[:count]


def _uuid7(at_us: int, counter: int, rnd: random.Random) -> str:
    """A time-ordered ticket like the hub's (48 bits of ms, version 7, a counter, random)."""
    ms = at_us // 1000
    value = (ms << 80) | (0x7 << 76) | ((counter & 0xFFF) << 64) | (0b10 << 62) | rnd.getrandbits(62)
    return str(uuid.UUID(int=value))


@dataclass
class Batch:
    """One batch of envelopes as the hub stores it, and the deliveries of the previous one."""

    first_seq: int
    last_seq: int
    queue_rows: list[tuple[str, int, bytes]]
    audit: list[tuple[str, ...]]
    deliveries: dict[str, list[tuple[str, ...]]]  # receiver -> its DELIVERED records


async def store_batch(store: HubStore, sender: str, batch: Batch) -> None:
    """The only place that calls the HubStore write API (its signatures may change)."""
    for dest, records in sorted(batch.deliveries.items()):
        # Deliver everything queued for dest so far (the previous batch): upto = last seq.
        await store.commit_delivery(dest, store.next_queue_seq - 1, len(records), records)
    await store.commit_batch(sender, "bench-audit", batch.first_seq, batch.last_seq,
                             batch.queue_rows, batch.audit, b"ack")


class Generator:
    """Envelopes and their audit records, deterministic for a seed."""

    def __init__(self, args: argparse.Namespace, start_us: int, step_us: int) -> None:
        self.rnd = random.Random(args.seed)
        self.pool = citizens(args.citizens, seed=20_240_101 + args.seed)
        if HEAVY in self.pool:  # pragma: no cover - the seeds are chosen so it is not
            raise RuntimeError("the heavy citizen is in the random pool")
        self.institutions = _institutions()
        self.heavy_share = args.heavy_share
        self.refused_share = args.refused_share
        self.at = start_us
        self.step = step_us
        self.counter = 0
        self.envelopes = 0
        self.heavy_envelopes = 0
        self.pending: dict[str, list[str]] = {}  # receiver -> tickets to deliver next batch

    def batch(self, size: int) -> Batch:
        rnd, pool, insts = self.rnd, self.pool, self.institutions
        audit: list[tuple[str, ...]] = []
        queue_rows: list[tuple[str, int, bytes]] = []
        deliveries: dict[str, list[tuple[str, ...]]] = {}
        # The previous batch's envelopes are acknowledged first (a few ms after they were
        # accepted, in the hub's time).
        for dest, tickets in self.pending.items():
            self.at += 1
            at = str(self.at)
            deliveries[dest] = [(at, "DELIVERED", t, "", dest, "", "", "", "DELIVERED", "")
                                for t in tickets]
        self.pending = {}
        for _ in range(size):
            self.at += self.step
            if rnd.random() < self.heavy_share:
                subject = HEAVY
                self.heavy_envelopes += 1
            else:
                subject = pool[rnd.randrange(len(pool))]
            sender = insts[rnd.randrange(len(insts))]
            service = SERVICES[rnd.randrange(len(SERVICES))]
            receivers = rnd.sample(insts, 2 if rnd.random() < 0.2 else 1)
            if rnd.random() < self.refused_share:
                audit.append((str(self.at), "REJECTED", "", sender, ",".join(receivers), service,
                              "citizen", subject, REASONS[rnd.randrange(len(REASONS))],
                              "refused by the directory"))
                continue
            self.counter += 1
            ticket = _uuid7(self.at, self.counter, rnd)
            audit.append((str(self.at), "ACCEPTED", ticket, sender, ",".join(receivers), service,
                          "citizen", subject, "ACCEPTED", ""))
            for dest in receivers:
                queue_rows.append((dest, 1, pack([b"envelope"], [ticket])))
                self.pending.setdefault(dest, []).append(ticket)
        first = self.envelopes + 1
        self.envelopes += size
        return Batch(first, self.envelopes, queue_rows, audit, deliveries)


async def build(db: Path, key: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Write the log through HubStore until it holds at least ``--records`` records (a
    progress line on stderr)."""
    # Records per envelope: 1 (ACCEPTED or REJECTED) + 1.2 deliveries if accepted. Spread the
    # envelopes' times evenly over the last year.
    per_envelope = 1 + (1 - args.refused_share) * 1.2
    envelopes_estimate = max(1, int(args.records / per_envelope))
    end_us = time.time_ns() // 1000
    start_us = end_us - 365 * DAY_US
    gen = Generator(args, start_us, max(1, 365 * DAY_US // envelopes_estimate))
    store = HubStore(db, "NORMAL", signer=ensure_signing_key(key))
    await store.open()
    sender = gen.institutions[0]
    started = time.perf_counter()
    write_s = 0.0
    progress = Progress("benchmarks: audit log", total=args.records, unit="records")
    try:
        while store.chain.last_seq < args.records:
            batch = gen.batch(args.batch)
            t = time.perf_counter()
            await store_batch(store, sender, batch)
            write_s += time.perf_counter() - t
            progress.update(min(store.chain.last_seq, args.records))
        progress.close()
        # Deliver the last batch too, so no envelope is left queued.
        await store_batch(store, sender, Batch(gen.envelopes + 1, gen.envelopes, [], [],
                                               _final_deliveries(gen)))
        await store.checkpoint()
        records = store.chain.last_seq
    finally:
        await store.close()
    total = time.perf_counter() - started
    return {"path": "HubStore.commit_batch + commit_delivery (synchronous=NORMAL, signer on)",
            "records": records, "envelopes": gen.envelopes,
            "heavy_envelopes": gen.heavy_envelopes, "citizens": args.citizens,
            "first_at_us": start_us, "last_at_us": gen.at,
            "seconds": round(total, 1), "store_seconds": round(write_s, 1),
            "records_per_s": round(records / total)}


def _final_deliveries(gen: Generator) -> dict[str, list[tuple[str, ...]]]:
    gen.at += 1
    at = str(gen.at)
    out: dict[str, list[tuple[str, ...]]] = {
        dest: [(at, "DELIVERED", t, "", dest, "", "", "", "DELIVERED", "") for t in tickets]
        for dest, tickets in gen.pending.items()}
    gen.pending = {}
    return out


def _build_key(args: argparse.Namespace) -> dict[str, Any]:
    from node.store.hub_store import MIGRATIONS

    # The schema (its indexes) changes what is built and what a query reads.
    return {"version": BUILD_VERSION, "schema": len(MIGRATIONS), "records": args.records,
            "citizens": args.citizens, "heavy_share": args.heavy_share, "refused_share": args.refused_share,
            "batch": args.batch, "seed": args.seed}


def _sizes(db: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
            if p.exists()}


def ensure_log(args: argparse.Namespace) -> tuple[Path, dict[str, Any], bool]:
    """The cached log for these parameters, built if missing or if ``--rebuild``."""
    key = _build_key(args)
    name = f"audit-{args.records}-{args.citizens}-s{args.seed}"
    root = Path(args.workdir) / name
    db, meta_path = root / "hub.sqlite", root / "meta.json"
    if not args.rebuild and meta_path.exists() and db.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key and meta.get("complete"):
            return db, meta, True
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"  building {args.records:,} records in {root} ...", flush=True)
    built = asyncio.run(build(db, root / "directory-signing.key", args))
    meta = {"key": key, "complete": True, "build": built,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return db, meta, False


# -- queries -----------------------------------------------------------------------------------


def _stats(ms: Sequence[float]) -> dict[str, Any]:
    return {"n": len(ms), "p50": rounded(percentile(ms, 50), 3), "p90": rounded(percentile(ms, 90), 3),
            "p99": rounded(percentile(ms, 99), 3), "max": rounded(max(ms) if ms else None, 3),
            "mean": rounded(statistics.fmean(ms) if ms else None, 3),
            "series": series(None, latency_curve(ms), "queries")}



def _timed(conn: sqlite3.Connection, number: str, **kw: Any) -> tuple[float, int, int]:
    from node.audit_tool import who_consulted

    t = time.perf_counter()
    found = who_consulted(conn, number, **kw)
    ms = (time.perf_counter() - t) * 1000
    return ms, len(found), sum(len(c.deliveries) for c in found)


def run_queries(db: Path, meta: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from node.store.sqlite import connect_sync

    rnd = random.Random(args.seed * 7 + 1)
    pool = citizens(args.citizens, seed=20_240_101 + args.seed)
    since_us = int(meta["build"]["last_at_us"]) - args.since_days * DAY_US
    out: dict[str, Any] = {}
    conn = connect_sync(db, read_only=True)  # as `crossroads audit who-consulted` opens it
    try:
        ms, n, d = _timed(conn, pool[rnd.randrange(len(pool))])
        out["first_query"] = {"ms": rounded(ms, 3), "records": n, "deliveries": d}
        for kind, kw in (("random", {}), ("random_since", {"since_us": since_us})):
            times, counts = [], []
            for _ in range(args.queries):
                ms, n, _d = _timed(conn, pool[rnd.randrange(len(pool))], **kw)
                times.append(ms)
                counts.append(n)
            out[kind] = _stats(times) | {"records_p50": percentile(counts, 50),
                                         "records_max": max(counts)}
        for kind, kw in (("heavy", {}), ("heavy_since", {"since_us": since_us}),
                         ("heavy_limit_100", {"limit": 100})):
            times, n, d = [], 0, 0
            for _ in range(args.heavy_repeat):
                ms, n, d = _timed(conn, HEAVY, **kw)
                times.append(ms)
            out[kind] = _stats(times) | {"records": n, "deliveries": d}
        absent = citizens(200, seed=99_999)  # other valid numbers: almost surely absent
        times = []
        known = set(pool)
        for number in absent:
            if number in known or number == HEAVY:
                continue
            ms, _n, _d = _timed(conn, number)
            times.append(ms)
        out["absent"] = _stats(times)
        out["query_plan"] = _plan(conn)
        out["schema_version"] = int(conn.execute("PRAGMA user_version").fetchone()[0])
        out["audit_indexes"] = [row[0] for row in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit'")]
        out["records_in_log"] = int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])
        out["checkpoints"] = int(conn.execute(
            "SELECT count(*) FROM audit_checkpoints").fetchone()[0])
    finally:
        conn.close()
    out["since_us"] = since_us
    return out


def _plan(conn: sqlite3.Connection) -> str:
    """SQLite's plan for the subject look-up who_consulted runs (whatever form it has)."""
    from node.audit_tool import subject_query

    sql = subject_query("seq") + " ORDER BY seq"
    try:
        return " ".join(str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", (HEAVY,)))
    except sqlite3.Error as exc:
        return f"({type(exc).__name__}: {exc})"


def _verify(db: Path) -> dict[str, Any]:
    from node.audit_tool import load_public_keys, verify_file

    t = time.perf_counter()
    report = verify_file(db, load_public_keys([public_path(db.parent / "directory-signing.key")]))
    return {"ok": report.problem is None, "records": report.records,
            "problem": None if report.problem is None else str(report.problem),
            "seconds": round(time.perf_counter() - t, 1)}


# -- driver --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.records, args.citizens, args.batch, args.queries, args.heavy_repeat) <= 0:
        return usage_error("audit", "sizes and counts must be positive")
    machine = machine_facts()
    announce(f"audit benchmark: {args.records:,} records, {args.citizens:,} citizens", machine,
             args.workdir)
    results = results_header(
        "audit", argv, machine, parameters={k: v for k, v in vars(args).items() if k != "out"},
        code=code_digests(("node/store/hub_store.py", "node/store/audit_queries.py",
                          "node/core/audit.py")))
    status = "ok"
    try:
        t = time.perf_counter()
        db, meta, cached = ensure_log(args)
        results["log"] = {"cached": cached, "db": str(db), "file_bytes": _sizes(db),
                          "prepare_s": round(time.perf_counter() - t, 1), **meta["build"]}
        print(f"  log: {meta['build']['records']:,} records"
              f" ({'cached' if cached else 'built in ' + str(meta['build']['seconds']) + ' s'}),"
              f" {sum(_sizes(db).values()) / 2**30:.2f} GiB", flush=True)
        if args.verify:
            results["verify"] = _verify(db)
            print(f"  verify: {results['verify']}", flush=True)
        load = os.getloadavg()
        results["queries"] = run_queries(db, meta, args)
        results["loadavg_during_queries"] = [round(x, 2) for x in load]
    except (OSError, RuntimeError, sqlite3.Error) as exc:
        status = "failed"
        results["error"] = f"{type(exc).__name__}: {exc}"
        print(f"benchmarks.audit: FAILED: {exc}", file=sys.stderr, flush=True)
    results["status"] = status
    results["loadavg_at_end"] = list(os.getloadavg())
    path = write_results("audit", results, Path(args.out) if args.out else None)
    q = results.get("queries")
    if q:
        print("Results (ms):")
        for kind in ("random", "random_since", "heavy", "heavy_since", "heavy_limit_100",
                     "absent"):
            s = q[kind]
            extra = (f", {s['records']:,} records + {s['deliveries']:,} deliveries"
                     if "records" in s else f", records p50 {s.get('records_p50')}"
                     if "records_p50" in s else "")
            print(f"  {kind:<16}: p50 {s['p50']}, p90 {s['p90']}, p99 {s['p99']},"
                  f" max {s['max']} (n={s['n']}{extra})")
        print(f"  first query on a fresh connection: {q['first_query']['ms']} ms;"
              f" log {q['records_in_log']:,} records, {q['checkpoints']:,} checkpoints")
    return report_end(results, path)


if __name__ == "__main__":
    grpc_runtime.hold_core()  # one gRPC core for every phase (node/grpc_runtime.py)
    raise SystemExit(main())
