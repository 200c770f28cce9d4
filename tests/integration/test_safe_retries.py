"""Retries are safe: an envelope submitted again with the same sender ticket (an application
whose first call timed out, or whose ``send --wait`` ended with PENDING) is delivered once,
and the resubmission is answered with the first submission's outcome and sequence."""

from __future__ import annotations

import asyncio

from node.client import make_envelope
from node.testing import DEMO_SERVICE, InProcessNetwork
from tests.conftest import A, B, fetch_all, local_call

CITIZEN = "85073003328"


async def test_resubmission_with_the_same_ticket_is_delivered_once(
    network: InProcessNetwork,
) -> None:
    api = network.local_api(A)
    first = make_envelope(DEMO_SERVICE, [B], b"once", subject_citizen=CITIZEN,
                          sender_ticket="invoice-17")
    outcomes1, seqs1 = await local_call(api, "submit", [first])
    await asyncio.sleep(0.002)  # a later attempt: a new sent time, the same envelope
    again = make_envelope(DEMO_SERVICE, [B], b"once", subject_citizen=CITIZEN,
                          sender_ticket="invoice-17")
    assert again != first
    # Twice again in one call too, with an unrelated envelope between the copies.
    other = make_envelope(DEMO_SERVICE, [B], b"other", subject_citizen=CITIZEN,
                          sender_ticket="invoice-18")
    outcomes2, seqs2 = await local_call(api, "submit", [again, other, again])
    assert [o.reason for o in outcomes1 + outcomes2] == ["ACCEPTED"] * 4
    assert seqs2[0] == seqs2[2] == seqs1[0] and seqs2[1] not in seqs1
    assert outcomes2[0].detail.startswith("RESUBMITTED") and not outcomes1[0].detail

    decided = await local_call(api, "outcomes", [seqs1[0], seqs2[0]], wait_ms=10_000)
    assert decided[0] == decided[1] and decided[0].reason == "ACCEPTED"
    got = await fetch_all(network.local_api(B), 2)
    await asyncio.sleep(0.3)  # a second copy would arrive now
    got += await local_call(network.local_api(B), "fetch", 100)
    assert sorted(e.sender_ticket for e in got) == ["invoice-17", "invoice-18"]


async def test_a_different_envelope_reusing_a_ticket_is_sent(network: InProcessNetwork) -> None:
    """The ticket is free text an application may reuse (one per case file): only the same
    envelope is a resubmission."""
    api = network.local_api(A)
    envelopes = [make_envelope(DEMO_SERVICE, [B], payload, subject_citizen=CITIZEN,
                               sender_ticket="case-1") for payload in (b"one", b"two")]
    _, seqs1 = await local_call(api, "submit", envelopes[:1])
    outcomes, seqs2 = await local_call(api, "submit", envelopes[1:])
    assert outcomes[0].reason == "ACCEPTED" and not outcomes[0].detail
    assert seqs2[0] != seqs1[0]
    got = await fetch_all(network.local_api(B), 2)
    assert sorted(e.payload.data for e in got) == [b"one", b"two"]
