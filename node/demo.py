"""``crossroads demo`` / ``make demo``: a hub and three institution nodes on loopback.

Builds a throw-away PKI, starts the hub and three nodes as real processes, has each node's
application send envelopes to the others (plus a few deliberately bad ones), waits until
every accepted envelope reached its receiver's application, prints what was delivered and
the audit summary, verifies the audit chain, and stops everything.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from node.audit_tool import summary, verify_file
from node.client import LocalClient, make_envelope
from node.testing import DEMO_SERVICE, ProcessNetwork

__all__ = ["run_demo"]

NAMES = {"0403019261": "Family allowances fund", "0428759497": "Health insurer",
         "0566988259": "Unemployment office"}
CITIZENS = ("85073003328", "17073003384", "70010108997", "98472899765", "00000100166")


def run_demo(workdir: Path | None, envelopes: int) -> int:
    keep = workdir is not None
    root = workdir or Path(tempfile.mkdtemp(prefix="crossroads-demo-"))
    print(f"Crossroads demo network in {root}")
    net = ProcessNetwork(root, tuple(NAMES))
    try:
        started = time.monotonic()
        net.start()
        print(f"  hub on {net.hub_address}; nodes: "
              + ", ".join(f"{e} ({n})" for e, n in NAMES.items()))
        expected = _send(net, envelopes)
        delivered = _collect(net, expected)
        elapsed = time.monotonic() - started
        print("\nDelivered to each institution's application:")
        for e, count in delivered.items():
            print(f"  {e} {NAMES[e]:<24} {count:>6} envelopes (expected {expected[e]})")
        report = verify_file(net.hub_db)
        print("\nAudit log summary:", json.dumps(summary(net.hub_db)))
        print(f"Audit chain: {'OK' if report.problem is None else report.problem}"
              f" ({report.records} records)")
        ok = delivered == expected and report.problem is None
        print(f"\n{'OK' if ok else 'FAILED'}: {sum(delivered.values())} envelopes delivered"
              f" in {elapsed:.1f} s")
        return 0 if ok else 1
    finally:
        net.stop_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _send(net: ProcessNetwork, total: int) -> dict[str, int]:
    institutions = list(NAMES)
    expected = dict.fromkeys(institutions, 0)
    per_sender = total // len(institutions)
    for i, sender in enumerate(institutions):
        receiver = institutions[(i + 1) % len(institutions)]
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
        print(f"  {sender} sent {per_sender} envelopes to {receiver}; refused at the source: "
              + ", ".join(o.reason for o in outcomes if o.reason != "ACCEPTED"))
    return expected


def _collect(net: ProcessNetwork, expected: dict[str, int], timeout: float = 120) -> dict[str, int]:
    delivered = dict.fromkeys(expected, 0)
    deadline = time.monotonic() + timeout
    while delivered != expected and time.monotonic() < deadline:
        for e in expected:
            with LocalClient(net.local_api(e)) as client:
                got = client.fetch(1000, wait_ms=200)
                if got:
                    client.acknowledge([g.hub_ticket for g in got])
                    delivered[e] += len(got)
    return delivered
