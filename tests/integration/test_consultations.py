"""Consultations through the hub: fan-out to providers, aggregation, deadlines (real servers)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from datetime import date

import grpc
import pytest

from node.client import Consulter, consult, make_envelope, serve_answers
from node.core.directory import Authorization, Institution, Integration, Period, Service
from node.rpc.multiplex import CallFailed
from node.testing import InProcessNetwork, default_directory
from node.wire.gen.crossroads.v1 import consult_pb2 as cpb
from node.wire.gen.crossroads.v1 import local_pb2_grpc

ASKER, P1, P2, P3 = "0403019261", "0428759497", "0566988259", "0200065765"
ALL = (ASKER, P1, P2, P3)
CITIZEN = "85073003328"
SERVICE = "income.status"


def seed() -> list:
    since = Period(date(2020, 1, 1))
    return default_directory(ALL) + [
        Institution(ASKER, 17, "Welfare centre"),
        Service(SERVICE, 1, "consultation", "citizen", "fan_out", integration_required=True),
        *[Authorization(f"a-{e}", SERVICE, e) for e in ALL],
        *[Integration(CITIZEN, e, 1, phase=1, period=since) for e in ALL],
    ]


@pytest.fixture
async def net(tmp_path):
    network = InProcessNetwork(tmp_path / "net", institutions=ALL, seed=seed())
    await network.start()
    try:
        yield network
    finally:
        await network.stop()


async def provider(net: InProcessNetwork, who: str, delay: float = 0.0, data: bytes | None = None):
    async def handler(envelope):
        assert envelope.hub_ticket and envelope.sender == ASKER
        await asyncio.sleep(delay)
        if data is None:
            return cpb.SOURCE_NO_DATA, b""
        return cpb.SOURCE_DATA, data + b" for " + envelope.subject.number.encode()

    ready = asyncio.Event()
    task = asyncio.create_task(serve_answers(net.local_api(who), handler, ready))
    await asyncio.wait_for(ready.wait(), 5)
    await _attached(net, who)
    return task


async def _attached(net: InProcessNetwork, *who: str) -> None:
    for _ in range(100):  # the nodes have attached the streams
        if all(net.nodes[w].answering.session is not None for w in who):
            break
        await asyncio.sleep(0.01)


async def ask(net: InProcessNetwork, deadline_ms: int = 2_000) -> tuple[cpb.ConsultResponse, float]:
    question = make_envelope(SERVICE, [], b"", subject_citizen=CITIZEN, capacity=1,
                             sender_ticket="q-1")
    started = time.monotonic()
    response = await asyncio.to_thread(consult, net.local_api(ASKER), question, deadline_ms)
    return response, time.monotonic() - started


async def stop(*tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def test_all_sources_answer_data_found_with_three_parts(net) -> None:
    tasks = [await provider(net, p, data=p.encode()) for p in (P1, P2, P3)]
    try:
        response, _ = await ask(net)
    finally:
        await stop(*tasks)
    assert response.status == cpb.DATA_FOUND
    assert sorted(p.institution for p in response.parts) == sorted((P1, P2, P3))
    assert all(p.status == cpb.SOURCE_DATA for p in response.parts)
    assert {p.data for p in response.parts} == {f"{p} for {CITIZEN}".encode() for p in (P1, P2, P3)}
    assert response.hub_ticket and response.sender_ticket == "q-1"
    assert response.sent_at_unix_us <= response.received_at_unix_us <= response.replied_at_unix_us


async def test_one_provider_down_gives_incomplete_data_within_the_deadline(net) -> None:
    await net.stop_node(P3)  # its node is down
    tasks = [await provider(net, p, data=b"x") for p in (P1, P2)]
    try:
        response, elapsed = await ask(net, deadline_ms=1_500)
    finally:
        await stop(*tasks)
    assert response.status == cpb.INCOMPLETE_DATA
    parts = {p.institution: p for p in response.parts}
    assert parts[P3].status in (cpb.SOURCE_UNAVAILABLE, cpb.SOURCE_TIMEOUT)
    assert parts[P3].detail
    assert parts[P1].status == parts[P2].status == cpb.SOURCE_DATA
    assert elapsed < 1.5 + 1.0  # the deadline plus the local call's own overhead


async def test_slow_or_absent_application_is_incomplete_never_a_hang(net) -> None:
    slow = await provider(net, P1, delay=5.0, data=b"late")
    fast = await provider(net, P2)  # answers "no data"
    try:  # P3's node is up but no application answers there
        response, elapsed = await ask(net, deadline_ms=800)
    finally:
        await stop(slow, fast)
    parts = {p.institution: p for p in response.parts}
    assert response.status == cpb.INCOMPLETE_DATA
    assert parts[P1].status == cpb.SOURCE_TIMEOUT
    assert parts[P2].status == cpb.SOURCE_NO_DATA
    assert parts[P3].status == cpb.SOURCE_UNAVAILABLE and "no application" in parts[P3].detail
    assert elapsed < 0.8 + 1.0


async def test_all_answer_without_data_is_no_data_found_and_refusals_are_reported(net) -> None:
    tasks = [await provider(net, p) for p in (P1, P2, P3)]
    try:
        response, _ = await ask(net)
        unknown = make_envelope(SERVICE, [], b"", subject_citizen="17073003384", capacity=1)
        refused = await asyncio.to_thread(consult, net.local_api(ASKER), unknown, 1000)
    finally:
        await stop(*tasks)
    assert response.status == cpb.NO_DATA_FOUND
    assert refused.status == cpb.REFUSED  # not integrated: refused at the source
    assert refused.outcome.detail


async def test_concurrent_questions_are_all_answered(net) -> None:
    """Answers computed at the same time share the provider application's one stream."""
    async def jittery(envelope):
        await asyncio.sleep(random.random() / 50)
        return cpb.SOURCE_DATA, envelope.sender_ticket.encode()

    tasks = []
    for p in (P1, P2, P3):
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(serve_answers(net.local_api(p), jittery, ready)))
        await asyncio.wait_for(ready.wait(), 5)
    try:
        await _attached(net, P1, P2, P3)
        async with grpc.aio.insecure_channel(net.local_api(ASKER)) as channel:
            stub = local_pb2_grpc.LocalStub(channel)
            questions = [make_envelope(SERVICE, [], b"", subject_citizen=CITIZEN, capacity=1,
                                       sender_ticket=f"q-{i}") for i in range(60)]
            responses = await asyncio.gather(*(
                stub.Consult(cpb.ConsultRequest(envelope=q, deadline_ms=10_000), timeout=15)
                for q in questions))
    finally:
        await stop(*tasks)
    assert [r.status for r in responses] == [cpb.DATA_FOUND] * 60
    assert all({p.data for p in r.parts} == {f"q-{i}".encode()} for i, r in enumerate(responses))


async def test_an_asker_that_gives_up_still_leaves_the_answers_audited(net) -> None:
    tasks = [await provider(net, p, delay=1.5, data=b"x") for p in (P1, P2, P3)]
    try:
        question = make_envelope(SERVICE, [], b"", subject_citizen=CITIZEN, capacity=1)
        async with grpc.aio.insecure_channel(net.local_api(ASKER)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await local_pb2_grpc.LocalStub(channel).Consult(
                    cpb.ConsultRequest(envelope=question, deadline_ms=5_000), timeout=0.8)
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        answered: list = []
        for _ in range(100):  # the providers answer at ~1.5 s; the hub records it anyway
            await asyncio.sleep(0.1)
            answered = await net.hub.store.who_consulted(CITIZEN)
            if sum(c.event == "ANSWERED" for c in answered) == 3:
                break
    finally:
        await stop(*tasks)
    assert sorted((c.event, c.outcome, tuple(c.receivers)) for c in answered
                  if c.event == "ANSWERED") == sorted(
        ("ANSWERED", "SOURCE_DATA", (p,)) for p in (P1, P2, P3))


async def test_questions_on_one_stream_and_a_provider_node_that_restarts(net) -> None:
    """``Consulter`` (the ``Local.Consultations`` stream); the hub's ``Node.Answers`` stream to
    a provider node that went down fails over to SOURCE_UNAVAILABLE at once and is opened
    again when the node is back."""
    def question(i: int) -> bytes:
        return make_envelope(SERVICE, [], b"", subject_citizen=CITIZEN, capacity=1,
                             sender_ticket=f"s-{i}")

    tasks = {p: await provider(net, p, data=b"x") for p in (P1, P2, P3)}
    try:
        async with Consulter(net.local_api(ASKER)) as consulter:
            first = await asyncio.gather(*(consulter.consult(question(i), 5_000)
                                           for i in range(30)))
            assert [r.status for r in first] == [cpb.DATA_FOUND] * 30
            assert [r.sender_ticket for r in first] == [f"s-{i}" for i in range(30)]

            await stop(tasks.pop(P1))
            await net.stop_node(P1)
            started = time.monotonic()
            down = await consulter.consult(question(30), 5_000)
            assert time.monotonic() - started < 4  # not the whole deadline
            assert down.status == cpb.INCOMPLETE_DATA
            assert {p.institution: p.status for p in down.parts}[P1] == cpb.SOURCE_UNAVAILABLE

            await net.start_node(P1)
            tasks[P1] = await provider(net, P1, data=b"x")
            back = None
            for i in range(50):  # until the node has registered again
                back = await consulter.consult(question(100 + i), 5_000)
                if back.status == cpb.DATA_FOUND:
                    break
                await asyncio.sleep(0.1)
            assert back is not None and back.status == cpb.DATA_FOUND
            assert sorted(p.institution for p in back.parts) == sorted((P1, P2, P3))
    finally:
        await stop(*tasks.values())


async def test_questions_beyond_the_hubs_in_flight_limit_are_refused_and_audited(tmp_path) -> None:
    """With the hub's limit at 2 consultations in flight per stream, the third and fourth
    of four concurrent questions are refused at once (RESOURCE_EXHAUSTED) and each refusal
    is in the audit log (REJECTED, TOO_MANY_IN_FLIGHT) under the citizen asked about; the
    two taken are answered."""
    net = InProcessNetwork(tmp_path / "net", institutions=ALL, seed=seed(),
                           hub_overrides={"limits": {"consultations_in_flight": 2}})
    await net.start()
    tasks = [await provider(net, p, delay=0.5, data=b"x") for p in (P1, P2, P3)]
    try:
        async with Consulter(net.local_api(ASKER)) as asker:
            results = await asyncio.gather(*(
                asker.consult(make_envelope(SERVICE, [], b"", subject_citizen=CITIZEN,
                                            capacity=1, sender_ticket=f"q-{i}"), 5_000)
                for i in range(4)), return_exceptions=True)
        refused = [r for r in results if isinstance(r, CallFailed)]
        answered = [r for r in results if isinstance(r, cpb.ConsultResponse)]
        assert [r.code for r in refused] == ["RESOURCE_EXHAUSTED"] * 2
        assert sorted(cpb.ConsultStatus.Name(r.status) for r in answered) == ["DATA_FOUND"] * 2
        records: list = []
        for _ in range(50):  # committed with the next group, not before the refusal
            records = [c for c in await net.hub.store.who_consulted(CITIZEN)
                       if c.outcome == "TOO_MANY_IN_FLIGHT"]
            if len(records) == 2:
                break
            await asyncio.sleep(0.05)
        assert [(c.event, c.institution, c.service_id) for c in records] == [
            ("REJECTED", ASKER, SERVICE)] * 2
    finally:
        await stop(*tasks)
        await net.stop()


async def test_no_answer_leaves_the_hub_before_its_question_is_in_the_log(net) -> None:
    """The ACCEPTED record is durable when the asker gets DATA_FOUND (another connection
    sees it at once); each source's ANSWERED record follows with the next commit, and the
    admin query commits it first."""
    import sqlite3

    group = net.hub.consultations.audit
    commit = group._commit  # a slow disk: each commit takes 0.3 s

    async def slow_commit(records):
        await asyncio.sleep(0.3)
        await commit(records)

    group._commit = slow_commit
    tasks = [await provider(net, p, data=b"x") for p in (P1, P2, P3)]
    try:
        response, _ = await ask(net)
        conn = sqlite3.connect(net.hub_db)
        try:
            logged = conn.execute("SELECT event, sender, receiver, subject_number FROM audit"
                                  " WHERE hub_ticket = ?", (response.hub_ticket,)).fetchall()
        finally:
            conn.close()
        assert response.status == cpb.DATA_FOUND
        assert ("ACCEPTED", ASKER, ",".join(sorted((P1, P2, P3))), CITIZEN) in [
            (e, s, ",".join(sorted(r.split(","))), n) for e, s, r, n in logged]
        await net.hub.consultations.audit.flush()
        found = [c for c in await net.hub.store.who_consulted(CITIZEN)
                 if c.hub_ticket == response.hub_ticket]
        assert sorted((c.event, c.outcome) for c in found) == [
            ("ACCEPTED", "ACCEPTED")] + [("ANSWERED", "SOURCE_DATA")] * 3
    finally:
        await stop(*tasks)
