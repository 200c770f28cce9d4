"""``crossroads demo`` / ``make demo``: a small social-security network on loopback.

Seven institutions, each a real node process, and the hub, with a throw-away PKI:

* the **population register** publishes an address change (a mutation);
* an **employer** declares the recruitment of a worker to the **contributions institution**,
  whose node turns the accepted declaration into an employment mutation
  (``emit_employment_mutations``), pushed to the subscribers that hold the worker: the
  **unemployment office** and the **health insurer** (the **family allowances fund** holds her
  but did not subscribe to employment mutations);
* the **local welfare centre** consults her social situation; the hub fans the question out
  to every authorized institution holding her file and aggregates the answers, given by
  small answering applications this process plugs into the providers' nodes;
* bulk traffic: a few thousand envelopes through the batched core, plus deliberately bad
  ones refused at the source with their reason;
* finally the citizen's view, "who consulted my data", read from the hub's audit log, and
  the audit chain check.

Everything stops at the end (also on failure); the exit status says whether every step did
what it should.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

from node.audit_tool import summary, verify_file, who_consulted
from node.client import LocalClient, consult, make_envelope, serve_answers
from node.core.declarations import IMMEDIATE, MUTATION_EMPLOYMENT, ImmediateDeclaration, catalogue
from node.core.directory import (
    Authorization,
    Entity,
    Institution,
    Integration,
    Period,
    Service,
    Subscription,
)
from node.store.sqlite import connect_sync
from node.testing import DEMO_SERVICE, ProcessNetwork
from node.wire.declarations import MEDIA_TYPE_IMMEDIATE, decode_payload, encode_immediate
from node.wire.gen.crossroads.v1 import consult_pb2, envelope_pb2

__all__ = ["run_demo"]

POPULATION, CONTRIBUTIONS, UNEMPLOYMENT, HEALTH, FAMILY, WELFARE, EMPLOYER = (
    "0200791978", "0428759497", "0566988259", "0200065765", "0403019261", "0212344876",
    "0201583816")
NAMES = {
    POPULATION: "Population register",
    CONTRIBUTIONS: "Contributions institution",
    UNEMPLOYMENT: "Unemployment office",
    HEALTH: "Health insurer",
    FAMILY: "Family allowances fund",
    WELFARE: "Local welfare centre",
    EMPLOYER: "Employer (bakery)",
}
SECTORS = {POPULATION: 1, CONTRIBUTIONS: 2, UNEMPLOYMENT: 7, HEALTH: 11, FAMILY: 18,
           WELFARE: 17, EMPLOYER: 90}
WORKER = "85073003328"  # the citizen the story is about
ADDRESS = "mutation.address"
SITUATION = "social.situation"
#: The institutions exchanging bulk traffic, and the citizens it is about.
BULK = (UNEMPLOYMENT, HEALTH, FAMILY)
CITIZENS = ("17073003384", "70010108997", "98472899765", "00000100166")


def demo_directory() -> list[Entity]:
    """The reference directory of the demo network."""
    since = Period(date(2020, 1, 1))
    entities: list[Entity] = [Institution(e, SECTORS[e], n) for e, n in NAMES.items()]
    entities += [Service(DEMO_SERVICE, 1, "declaration", "any", "explicit"),
                 *[Authorization(f"demo-{e}", DEMO_SERVICE, e) for e in BULK]]
    entities += catalogue(CONTRIBUTIONS) + [
        Authorization("declare-immediate", IMMEDIATE, EMPLOYER),
        Authorization("publish-employment", MUTATION_EMPLOYMENT, CONTRIBUTIONS),
        Subscription("employment-unemployment", UNEMPLOYMENT, MUTATION_EMPLOYMENT),
        Subscription("employment-health", HEALTH, MUTATION_EMPLOYMENT),
        Service(ADDRESS, 1, "mutation", "citizen", "fan_out"),
        Authorization("publish-address", ADDRESS, POPULATION),
        Subscription("address-health", HEALTH, ADDRESS),
        Subscription("address-family", FAMILY, ADDRESS),
        Service(SITUATION, 1, "consultation", "citizen", "fan_out", integration_required=True),
        *[Authorization(f"situation-{e}", SITUATION, e)
          for e in (WELFARE, UNEMPLOYMENT, HEALTH, FAMILY)],
        # The institutions holding a file on the worker (the welfare centre opened one too:
        # consulting requires it).
        *[Integration(WORKER, e, 1, phase=1, period=since)
          for e in (UNEMPLOYMENT, HEALTH, FAMILY, WELFARE)],
    ]
    return entities


def run_demo(workdir: Path | None, envelopes: int) -> int:
    keep = workdir is not None
    root = workdir or Path(tempfile.mkdtemp(prefix="crossroads-demo-"))
    print(f"Crossroads demo network in {root}")
    net = ProcessNetwork(root, tuple(NAMES), seed=demo_directory(),
                         per_node={CONTRIBUTIONS: {"emit_employment_mutations": True}})
    try:
        started = time.monotonic()
        net.start()
        print(f"  hub on {net.hub_address}; {len(NAMES)} institution nodes:")
        for e, name in NAMES.items():
            print(f"    {e}  {name}")
        checks = [_address_change(net), _recruitment(net), asyncio.run(_consultation(net)),
                  _bulk(net, envelopes)]
        checks.append(_citizens_view(net))
        report = verify_file(net.hub_db)
        print("\nAudit log summary:", json.dumps(summary(net.hub_db)))
        print(f"Audit chain: {'OK' if report.problem is None else report.problem}"
              f" ({report.records} records)")
        ok = all(checks) and report.problem is None
        print(f"\n{'OK' if ok else 'FAILED'}: demo finished in {time.monotonic() - started:.1f} s")
        return 0 if ok else 1
    finally:
        net.stop_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _title(text: str) -> None:
    print(f"\n== {text}")


def _submit(net: ProcessNetwork, sender: str, raws: list[bytes]) -> list[tuple[str, str, tuple[str, ...]]]:
    """Submit and wait for the hub's decisions: ``(reason, hub ticket, receivers)`` each."""
    with LocalClient(net.local_api(sender)) as client:
        outcomes, seqs = client.submit(raws)
        refused = {i: o.reason for i, o in enumerate(outcomes) if o.reason != "ACCEPTED"}
        decided = client.outcomes([s for s in seqs if s], wait_ms=10_000) if any(seqs) else []
    found = iter(decided)
    result = []
    for i in range(len(raws)):
        if i in refused:
            result.append((refused[i], "", ()))
        else:
            d = next(found)
            result.append((d.reason, d.hub_ticket, tuple(d.receivers)))
    return result


def _receive(
    net: ProcessNetwork, who: str, expected: int, timeout: float = 20
) -> list[envelope_pb2.Envelope]:
    """What ``who``'s application reads from its node (acknowledged), until ``expected``."""
    got: list[envelope_pb2.Envelope] = []
    deadline = time.monotonic() + timeout
    with LocalClient(net.local_api(who)) as client:
        while len(got) < expected and time.monotonic() < deadline:
            batch = client.fetch(1000, wait_ms=200)
            if batch:
                client.acknowledge([g.hub_ticket for g in batch])
                got += batch
    return got


def _names(institutions: tuple[str, ...]) -> str:
    return ", ".join(NAMES.get(e, e) for e in institutions) or "nobody"


def _address_change(net: ProcessNetwork) -> bool:
    _title("1. The population register publishes an address change (push to subscribers)")
    raw = make_envelope(ADDRESS, [], b"new address: Rue Haute 12, 1000 Brussels",
                        subject_citizen=WORKER, sender_ticket="address-2026-001")
    ((reason, ticket, receivers),) = _submit(net, POPULATION, [raw])
    print(f"  hub: {reason}, ticket {ticket}, pushed to {_names(receivers)}")
    ok = reason == "ACCEPTED" and set(receivers) == {HEALTH, FAMILY}
    for who in (HEALTH, FAMILY):
        got = _receive(net, who, 1)
        print(f"  {NAMES[who]} received: {[g.payload.data.decode() for g in got]}")
        ok = ok and len(got) == 1
    return ok


def _recruitment(net: ProcessNetwork) -> bool:
    _title("2. The employer declares a recruitment; the contributions institution emits the "
           "employment mutation")
    declaration = ImmediateDeclaration(
        kind="RECRUITMENT", employer_enterprise_number=EMPLOYER, worker_citizen_number=WORKER,
        joint_committee="118", worker_type="OTHER", start_date=date.today().isoformat(),
        planned_weekly_hours=38.0, employer_reference="hire-0001")
    bad = ImmediateDeclaration(
        kind="RECRUITMENT", employer_enterprise_number=EMPLOYER, worker_citizen_number="85073003327",
        joint_committee="999", worker_type="OTHER", start_date="2026-02-30")
    raws = [make_envelope(IMMEDIATE, [], encode_immediate(d), subject_citizen=WORKER,
                          media_type=MEDIA_TYPE_IMMEDIATE, sender_ticket=d.employer_reference)
            for d in (declaration, bad)]
    with LocalClient(net.local_api(EMPLOYER)) as client:
        outcomes, _ = client.submit(raws[1:])
    print(f"  an invalid declaration is refused at the employer's node: {outcomes[0].reason}:"
          f" {outcomes[0].detail}")
    ((reason, ticket, receivers),) = _submit(net, EMPLOYER, raws[:1])
    print(f"  declaration: {reason}, ticket {ticket}, routed to {_names(receivers)}")
    ok = outcomes[0].reason == "INVALID_FIELD" and reason == "ACCEPTED"
    ok = ok and len(_receive(net, CONTRIBUTIONS, 1)) == 1
    for who in (UNEMPLOYMENT, HEALTH):
        got = _receive(net, who, 1)
        for g in got:
            m = decode_payload(MUTATION_EMPLOYMENT, g.payload.media_type, g.payload.data)
            print(f"  {NAMES[who]} received {g.service_id} from {NAMES[g.sender]}:"
                  f" {getattr(m, 'event', '?')} on {getattr(m, 'event_date', '?')},"
                  f" declaration {getattr(m, 'source_declaration_id', '?')}")
        ok = ok and len(got) == 1 and got[0].sender == CONTRIBUTIONS
    nothing = _receive(net, FAMILY, 1, timeout=1.0)
    print(f"  {NAMES[FAMILY]} (holds her file, not subscribed) received: {len(nothing)}")
    return ok and not nothing


async def _consultation(net: ProcessNetwork) -> bool:
    _title("3. The local welfare centre consults her social situation (fan-out)")
    answers = {UNEMPLOYMENT: b"no unemployment benefit since " + date.today().isoformat().encode(),
               HEALTH: b"insured, primary incapacity: none",
               FAMILY: None}  # holds her file, has nothing on her situation

    def handler_for(who: str):  # type: ignore[no-untyped-def]
        async def handler(envelope: envelope_pb2.Envelope) -> tuple[int, bytes]:
            data = answers[who]
            return (consult_pb2.SOURCE_NO_DATA, b"") if data is None else (consult_pb2.SOURCE_DATA, data)
        return handler

    tasks = [asyncio.create_task(serve_answers(net.local_api(who), handler_for(who)))
             for who in answers]
    try:
        question = make_envelope(SITUATION, [], b"", subject_citizen=WORKER, capacity=1,
                                 sender_ticket="file-2026-0042")
        response = None
        for _ in range(20):  # until every answering application is attached to its node
            response = await asyncio.to_thread(consult, net.local_api(WELFARE), question, 2_000)
            if response.status != consult_pb2.INCOMPLETE_DATA:
                break
            await asyncio.sleep(0.25)
        assert response is not None
        took = (response.replied_at_unix_us - response.received_at_unix_us) / 1000
        print(f"  answer: {consult_pb2.ConsultStatus.Name(response.status)}, ticket"
              f" {response.hub_ticket}, {took:.1f} ms at the hub")
        for part in response.parts:
            print(f"    {NAMES[part.institution]:<24} {consult_pb2.SourceStatus.Name(part.status):<15}"
                  f" {part.data.decode()}")
        return (response.status == consult_pb2.DATA_FOUND
                and {p.institution for p in response.parts} == set(answers))
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _bulk(net: ProcessNetwork, total: int) -> bool:
    _title(f"4. Bulk traffic through the batched core ({total} envelopes)")
    expected = dict.fromkeys(BULK, 0)
    per_sender = total // len(BULK)
    for i, sender in enumerate(BULK):
        receiver = BULK[(i + 1) % len(BULK)]
        batch = [
            make_envelope(DEMO_SERVICE, [receiver], f"message {n} from {sender}".encode(),
                          subject_citizen=CITIZENS[n % len(CITIZENS)], sender_ticket=f"{sender}-{n}")
            for n in range(per_sender)
        ]
        bad = [
            make_envelope(DEMO_SERVICE, [receiver], b"x", subject_citizen="85073003327"),
            make_envelope("no.such.service", [receiver], b"x"),
            b"\xff\xfe not a protobuf",
        ]
        with LocalClient(net.local_api(sender)) as client:
            for start in range(0, len(batch), 1000):
                client.submit(batch[start:start + 1000])
            outcomes, _ = client.submit(bad)
        expected[receiver] += per_sender
        print(f"  {NAMES[sender]} sent {per_sender} envelopes to {NAMES[receiver]}; refused at"
              " the source: " + ", ".join(o.reason for o in outcomes if o.reason != "ACCEPTED"))
    delivered = {e: len(_receive(net, e, n, timeout=120)) for e, n in expected.items()}
    for e, count in delivered.items():
        print(f"  {NAMES[e]:<24} received {count:>6} (expected {expected[e]})")
    return delivered == expected


def _citizens_view(net: ProcessNetwork) -> bool:
    _title(f"5. Who consulted my data? (citizen {WORKER}, from the hub's audit log, UTC;"
           f" also: crossroads audit who-consulted {WORKER} --db hub.sqlite)")
    conn = connect_sync(net.hub_db, read_only=True)
    try:
        found = who_consulted(conn, WORKER)
    finally:
        conn.close()
    for c in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.at_us / 1e6))
        who = NAMES.get(c.institution, c.institution or "directory")
        if c.event == "ANSWERED":  # a provider's answer to a consultation
            print(f"  {when}  {'':<26} {'':<22} answered by {_names(c.receivers)}: {c.outcome}")
            continue
        to = f" -> {_names(c.receivers)}" if c.receivers else ""
        print(f"  {when}  {who:<26} {c.service_id or c.event:<22} {c.outcome}{to}")
    services = {c.service_id for c in found if c.event == "ACCEPTED"}
    return {ADDRESS, IMMEDIATE, MUTATION_EMPLOYMENT, SITUATION} <= services
