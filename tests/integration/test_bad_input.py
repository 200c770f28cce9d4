"""Bad input gets a clear reason per envelope; the batch, the stream and the daemon go on."""

from __future__ import annotations

import hashlib
import sqlite3

import grpc
import pytest

from node.client import make_envelope
from node.testing import DEMO_SERVICE
from node.wire.gen.crossroads.v1 import envelope_pb2
from tests.conftest import A, B, fetch_all, hub_channel, local_call, submit_raw

LIMIT = 2048


@pytest.fixture
async def small_limit_network(start_network):
    limits = {"limits": {"max_payload_bytes": LIMIT}}
    return await start_network(A, B, hub_overrides=limits, node_overrides=limits)


def _bad_envelopes() -> list[tuple[bytes, str]]:
    good = make_envelope(DEMO_SERVICE, [B], b"fine", sender=A, subject_citizen="85073003328")
    bad_digest = envelope_pb2.Envelope.FromString(
        make_envelope(DEMO_SERVICE, [B], b"data", sender=A))
    bad_digest.payload.sha256 = hashlib.sha256(b"other").digest()
    return [
        (good, "ACCEPTED"),
        (b"\x0a\xff\xff\xff\xff\x0f", "MALFORMED_ENVELOPE"),
        (make_envelope("no.such.service", [B], b"x", sender=A), "UNKNOWN_SERVICE"),
        (make_envelope(DEMO_SERVICE, ["0431150351"], b"x", sender=A), "UNKNOWN_RECEIVER"),
        (make_envelope(DEMO_SERVICE, ["0566988259"], b"x", sender=A), "UNKNOWN_RECEIVER"),
        (make_envelope(DEMO_SERVICE, [], b"x", sender=A), "NO_RECEIVER"),
        (make_envelope(DEMO_SERVICE, [B], b"x", sender=A, subject_citizen="85073003327"),
         "SUBJECT_NUMBER_INVALID"),
        (make_envelope(DEMO_SERVICE, [B], b"x", sender=A, subject_citizen="85133000105"),
         "SUBJECT_NUMBER_INVALID"),
        (make_envelope(DEMO_SERVICE, [B], b"x", sender=A, subject_enterprise="0403019216"),
         "SUBJECT_NUMBER_INVALID"),
        (make_envelope(DEMO_SERVICE, [B], b"x" * (LIMIT + 1), sender=A), "PAYLOAD_TOO_LARGE"),
        (bad_digest.SerializeToString(), "PAYLOAD_DIGEST_MISMATCH"),
        (make_envelope("", [B], b"x", sender=A), "INVALID_FIELD"),
        (make_envelope(DEMO_SERVICE, [B], b"last", sender=A, digest=True), "ACCEPTED"),
    ]


async def test_each_bad_envelope_gets_its_reason_and_the_rest_goes_on(small_limit_network) -> None:
    net = small_limit_network
    cases = _bad_envelopes()
    key, cert = net.node_certs[A]
    batch = envelope_pb2.EnvelopeBatch(envelopes=[raw for raw, _ in cases])
    follow_up = envelope_pb2.EnvelopeBatch(envelopes=[make_envelope(DEMO_SERVICE, [B], b"after",
                                                                    sender=A)])
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        first, second = await submit_raw(channel, [batch, follow_up])  # same stream
    reasons = [envelope_pb2.Reason.Name(o.reason) for o in first.outcomes]
    assert reasons == [expected for _, expected in cases]
    assert all(o.detail for o in first.outcomes if o.reason != envelope_pb2.ACCEPTED)
    assert "limit 2048" in first.outcomes[9].detail
    assert envelope_pb2.Reason.Name(second.outcomes[0].reason) == "ACCEPTED"
    got = await fetch_all(net.local_api(B), 3)
    assert sorted(e.payload.data for e in got) == [b"after", b"fine", b"last"]
    db = sqlite3.connect(net.hub_db)
    audited = [r[0] for r in db.execute(
        "SELECT reason FROM audit WHERE event IN ('ACCEPTED', 'REJECTED') ORDER BY seq")]
    assert audited == reasons + ["ACCEPTED"]


async def test_node_refuses_bad_input_at_the_source(small_limit_network) -> None:
    net = small_limit_network
    raws = [
        b"\xff\x00garbage",
        make_envelope(DEMO_SERVICE, [B], b"x", subject_citizen="12345678901"),
        make_envelope(DEMO_SERVICE, [B], b"x" * (LIMIT + 1)),
        make_envelope(DEMO_SERVICE, [B], b"x", sender=B),
        make_envelope(DEMO_SERVICE, [B], b"ok"),
    ]
    outcomes, seqs = await local_call(net.local_api(A), "submit", raws)
    assert [o.reason for o in outcomes] == [
        "MALFORMED_ENVELOPE", "SUBJECT_NUMBER_INVALID", "PAYLOAD_TOO_LARGE", "SENDER_MISMATCH",
        "ACCEPTED"]
    assert seqs[:4] == [0, 0, 0, 0] and seqs[4] > 0
    got = await fetch_all(net.local_api(B), 1)
    assert [e.payload.data for e in got] == [b"ok"]


async def test_oversized_batch_fails_only_its_stream(small_limit_network) -> None:
    """A batch over the envelope-count limit is refused with RESOURCE_EXHAUSTED; the hub
    serves the next stream normally."""
    net = small_limit_network
    key, cert = net.node_certs[A]
    huge = envelope_pb2.EnvelopeBatch(envelopes=[b""] * 10_001)
    async with hub_channel(net.hub_address, net.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await submit_raw(channel, [huge])
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "BATCH_TOO_LARGE" in err.value.details()
        ok = envelope_pb2.EnvelopeBatch(envelopes=[make_envelope(DEMO_SERVICE, [B], b"x", sender=A)])
        (ack,) = await submit_raw(channel, [ok])
    assert ack.outcomes[0].reason == envelope_pb2.ACCEPTED
