"""The pure helpers of benchmarks.audit, benchmarks.consult and benchmarks.mutations."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path

from benchmarks import audit, consult, mutations
from node.audit_tool import load_public_keys, verify_file, who_consulted
from node.core.identifiers import citizen_number_problem, enterprise_number_problem
from node.store.sqlite import connect_sync
from node.wire.signed import public_path


def test_audit_tickets_are_time_ordered_uuid7() -> None:
    rnd = audit.random.Random(1)
    tickets = [audit._uuid7(1_700_000_000_000_000 + i * 1000, i, rnd) for i in range(50)]
    assert tickets == sorted(tickets)
    assert all(uuid.UUID(t).version == 7 for t in tickets)


def test_audit_institutions_and_heavy_citizen_are_valid() -> None:
    numbers = audit._institutions()
    assert len(set(numbers)) == 20
    assert all(enterprise_number_problem(n) is None for n in numbers)
    assert citizen_number_problem(audit.HEAVY) is None


def test_a_small_audit_log_is_a_valid_chain_and_answers_queries(tmp_path: Path) -> None:
    args = audit._parser().parse_args(
        ["--records", "3000", "--citizens", "200", "--batch", "500", "--heavy-share", "0.05",
         "--workdir", str(tmp_path)])
    db, meta, cached = audit.ensure_log(args)
    assert not cached and meta["build"]["records"] >= 3000
    assert audit.ensure_log(args)[2]  # the second time it is reused
    report = verify_file(db, load_public_keys([public_path(db.parent / "directory-signing.key")]))
    assert report.problem is None and report.records == meta["build"]["records"]
    conn = connect_sync(db, read_only=True)
    try:
        heavy = who_consulted(conn, audit.HEAVY)
        assert len(heavy) == meta["build"]["heavy_envelopes"] > 0
        assert any(c.deliveries for c in heavy)
        assert conn.execute("SELECT count(*) FROM queue").fetchone()[0] == 0  # all delivered
    finally:
        conn.close()
    queries = audit.run_queries(db, meta, argparse.Namespace(**vars(args) | {
        "queries": 20, "heavy_repeat": 3}))
    assert queries["heavy"]["records"] == len(heavy)
    assert queries["records_in_log"] == meta["build"]["records"]


def test_consult_summary_counts_statuses_and_latency_from_schedule() -> None:
    samples = [consult.Sample(0.0, sent=0.001, done=0.003, status="DATA_FOUND",
                              where_us=(100, 200, 300, 400, 500)),
               consult.Sample(0.002, sent=0.002, done=0.012, status="INCOMPLETE_DATA"),
               consult.Sample(0.004, status=consult.NOT_SENT)]
    s = consult.summarize(samples, 500.0)
    assert s["statuses"] == {"DATA_FOUND": 1, "INCOMPLETE_DATA": 1, consult.NOT_SENT: 1}
    assert s["latency_ms"]["max"] == 10.0  # 0.012 - 0.002, from the scheduled time
    assert s["ok_latency_ms"]["p50"] == 3.0
    assert s["service_ms"]["p50"] == 6.0  # (2 + 10) / 2
    assert s["where_ms"]["hub_to_provider_app"]["p50"] == 0.2
    assert s["where_ms"]["hub_commit"]["p50"] == 0.4
    assert s["where_ms"]["hub_reply_to_asker"]["p50"] == 0.5
    # Both answered questions were scheduled in the run's first second.
    assert s["p99_ms_by_second"] == [9.93]  # 3 + (10 - 3) x 0.99


def test_consult_repeats_are_summarized_per_rate() -> None:
    def run(rate: float, p50: float, p99: float | None) -> dict[str, object]:
        return {"offered_per_s": rate, "latency_ms": {"p50": p50, "p99": p99}}

    runs = [run(500.0, 2.0, 9.0), run(500.0, 3.0, 30.0), run(500.0, 2.5, 4.0),
            run(2000.0, 60.0, None)]  # a run with no answer has no percentiles
    s = consult.repeat_summary(runs)
    assert s["500"] == {"runs": 3,
                        "p50_ms": {"median": 2.5, "min": 2.0, "max": 3.0, "each": [2.0, 3.0, 2.5]},
                        "p99_ms": {"median": 9.0, "min": 4.0, "max": 30.0,
                                   "each": [9.0, 30.0, 4.0]}}
    assert s["2000"]["runs"] == 1 and s["2000"]["p99_ms"] == {
        "median": None, "min": None, "max": None, "each": []}


def test_consult_open_loop_keeps_the_schedule_when_answers_are_slow() -> None:
    class SlowAsker:
        async def ask(self, sample: consult.Sample) -> None:
            sample.sent = consult.time.perf_counter()
            await asyncio.sleep(0.05)  # far slower than the interval: open loop goes on
            sample.done = consult.time.perf_counter()
            sample.status = "DATA_FOUND"

    samples = asyncio.run(consult.open_loop(SlowAsker(), 1000.0, 0.1,  # type: ignore[arg-type]
                                            10_000, consult.time.monotonic() + 30))
    assert len(samples) == 100 and all(s.status == "DATA_FOUND" for s in samples)
    lags = [s.sent - s.scheduled for s in samples]
    assert max(lags) < 0.04  # sent on time although each answer takes 50 ms


def test_consult_open_loop_does_not_send_beyond_the_in_flight_bound() -> None:
    class StuckAsker:
        async def ask(self, sample: consult.Sample) -> None:
            sample.sent = consult.time.perf_counter()
            await asyncio.sleep(0.3)
            sample.done = consult.time.perf_counter()
            sample.status = "DATA_FOUND"

    samples = asyncio.run(consult.open_loop(StuckAsker(), 1000.0, 0.05,  # type: ignore[arg-type]
                                            10, consult.time.monotonic() + 30))
    assert sum(s.status == consult.NOT_SENT for s in samples) == 40


def test_mutation_subscribers_and_envelopes() -> None:
    subs = mutations.subscriber_numbers(8)
    assert len(set(subs)) == 8 and mutations.SOURCE not in subs
    assert all(enterprise_number_problem(n) is None for n in subs)
    pool = ["85073003328", "17073003384"]
    batches = mutations.build_batches(pool, 3, 2, 10, 200, seed=1)
    assert [len(b) for b in batches] == [10, 10]
    assert all(190 <= len(e) <= 200 for b in batches for e in b)
    entities = list(mutations.directory(subs[:2], pool))
    assert sum(type(e).__name__ == "Integration" for e in entities) == 4


def test_the_in_process_hub_consultation_benchmark_answers_every_question(tmp_path: Path) -> None:
    """benchmarks.consult_hub drives the hub's real consultation path (checks, audit group
    commit) with an in-process provider: every question is answered and audited."""
    import json

    from benchmarks import consult_hub

    assert consult_hub.main(["--questions", "12", "--concurrency", "1,4",
                             "--out", str(tmp_path)]) == 0
    (result,) = tmp_path.glob("consult_hub-*.json")
    runs = json.loads(result.read_text())["results"]
    assert [(r["concurrency"], r["statuses"]) for r in runs] == [
        (1, {"DATA_FOUND": 12}), (4, {"DATA_FOUND": 12})]
