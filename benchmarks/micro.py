"""Micro benchmark of the pure core, per envelope: ``python -m benchmarks.micro``.

Each case runs a function over 1,000 items (the envelopes of one batch, the same ~200-byte
envelopes as :mod:`benchmarks.e2e`), ``--number`` times per repeat; the result is the
**median over ``--repeat`` repeats** of the time per item, in microseconds (plus the minimum,
which is the least disturbed by other load on the machine).

Cases (the hub runs the first four per submitted envelope):

* ``check_batch``: :func:`node.core.envelope.check_batch` over 1,000 decoded heads, hub policy
  (known institutions and services, citizen subjects);
* ``citizen_number_problem``: :func:`node.core.identifiers.citizen_number_problem`, valid
  numbers;
* ``audit_extend``: :meth:`node.core.audit.ChainWriter.extend` for 1,000 ``ACCEPTED`` records
  (one SHA-256 per record);
* ``decode_heads``: :func:`node.wire.envelopes.decode_heads` for 1,000 serialized envelopes
  (protobuf parse + :class:`~node.core.envelope.EnvelopeHead`).

Extra cases, other per-envelope steps of the hub's intake: ``uuid7_tickets`` (hub tickets,
:func:`node.hub.intake._uuid7s`),
``stamp`` (append ticket + time to the envelope bytes), ``outcome_to_proto``.

Results: ``benchmarks/results/micro-<timestamp>.json``.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RECEIVER,
    SENDER,
    SERVICE,
    bench_parser,
    build_batches,
    citizens,
    machine_facts,
    write_results,
)
from benchmarks.phases import results_header
from benchmarks.progress import Progress, latency_curve, series
from node import grpc_runtime
from node.core.audit import ChainWriter
from node.core.envelope import Decision, Policy, check_batch
from node.core.identifiers import citizen_number_problem
from node.core.reasons import Reason
from node.hub.intake import _uuid7s
from node.wire.envelopes import decode_heads, outcome_to_proto, stamp

__all__ = ["main"]

ITEMS = 1_000


def _cases(envelope_bytes: int) -> dict[str, Callable[[], object]]:
    raws = build_batches(0, 1, ITEMS, envelope_bytes)[0]
    _, heads = decode_heads(raws)
    policy = Policy(institutions=frozenset({SENDER, RECEIVER}),
                    services=frozenset({(SERVICE, 1)}), max_payload_bytes=4 * 1024 * 1024)
    numbers = list(citizens()[:ITEMS])
    now = str(time.time_ns() // 1000)
    records = [
        (now, "ACCEPTED", str(uuid.uuid4()), SENDER, RECEIVER, SERVICE, "CITIZEN", n, "ACCEPTED", "")
        for n in numbers
    ]
    chain = ChainWriter()
    accepted = Decision(Reason.ACCEPTED, receivers=(RECEIVER,))
    tickets = [str(uuid.uuid4()) for _ in range(ITEMS)]
    now_us = time.time_ns() // 1000

    def citizen() -> object:
        return [citizen_number_problem(n) for n in numbers]

    return {
        "check_batch": lambda: check_batch(heads, SENDER, policy),
        "citizen_number_problem": citizen,
        "audit_extend": lambda: chain.extend(records),
        "decode_heads": lambda: decode_heads(raws),
        "uuid7_tickets": lambda: list(_uuid7s(ITEMS, now_us)),
        "stamp": lambda: [stamp(r, t, now_us) for r, t in zip(raws, tickets, strict=True)],
        "outcome_to_proto": lambda: [outcome_to_proto(i, accepted, t) for i, t in enumerate(tickets)],
    }


def _measure(name: str, fn: Callable[[], object], repeat: int, number: int) -> dict[str, Any]:
    fn()  # warm caches
    per_item_us = []
    rates = []  # [seconds since the case began, items/s] per repeat
    progress = Progress(f"benchmarks: micro {name}", total=repeat, unit="repeats")
    began = time.perf_counter_ns()
    for k in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        end = time.perf_counter_ns()
        per_item_us.append((end - start) / number / ITEMS / 1000)
        rates.append([round((end - began) / 1e9, 4), round(1e6 / per_item_us[-1], 1)])
        progress.update(k + 1)
    progress.close()
    return {
        "us_per_envelope_median": round(statistics.median(per_item_us), 3),
        "us_per_envelope_min": round(min(per_item_us), 3),
        "repeats": repeat,
        "number": number,
        "series": series(rates, latency_curve(per_item_us), "envelopes", latency_unit="µs"),
    }


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("micro", __doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=31, help="repeats; the median is reported")
    p.add_argument("--number", type=int, default=5, help="runs of 1,000 items per repeat")
    p.add_argument("--envelope-bytes", type=int, default=200)
    p.add_argument("--only", action="append", help="run only this case (repeatable)")
    p.add_argument("--out", help="results directory (default: benchmarks/results)")
    args = p.parse_args(argv)
    cases = _cases(args.envelope_bytes)
    unknown = set(args.only or ()) - set(cases)
    if unknown:
        print(f"unknown case(s): {', '.join(sorted(unknown))}; known: {', '.join(cases)}",
              file=sys.stderr)
        return 2
    results = results_header(
        "micro", argv, machine_facts(),
        parameters={"items": ITEMS, "repeat": args.repeat, "number": args.number,
                    "envelope_bytes": args.envelope_bytes},
        cases={})
    print(f"{'case':<24} {'µs/envelope (median)':>21} {'(min)':>8}")
    for name, fn in cases.items():
        if args.only and name not in args.only:
            continue
        gc.collect()
        r = _measure(name, fn, args.repeat, args.number)
        results["cases"][name] = r
        print(f"{name:<24} {r['us_per_envelope_median']:>21.3f} {r['us_per_envelope_min']:>8.3f}",
              flush=True)
    path = write_results("micro", results, Path(args.out) if args.out else None)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    grpc_runtime.hold_core()  # one gRPC core for every phase (node/grpc_runtime.py)
    raise SystemExit(main())
