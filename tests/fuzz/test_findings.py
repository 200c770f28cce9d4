"""Regression tests for what the fuzzing campaign (test_campaign.py) found, each on a real
hub and nodes in process (mTLS, SQLite), with the smallest input that shows it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from node.client import Outcome, make_envelope
from node.testing import DEMO_SERVICE, InProcessNetwork
from node.wire.gen.crossroads.v1 import envelope_pb2, local_pb2, local_pb2_grpc
from tests.conftest import A, B, C, hub_channel, local_call, submit_raw


@pytest.mark.parametrize("sequence", [2**32, 2**63, 2**64 - 1])
async def test_outcomes_of_a_sequence_out_of_range_is_a_clear_refusal(
    network: InProcessNetwork, sequence: int
) -> None:
    # Local.Outcomes answered UNKNOWN: "Value out of range" (an outcome's index is a uint32)
    # or "Python int too large to convert to SQLite INTEGER".
    api = network.nodes[A].local_api

    def outcomes() -> grpc.RpcError:
        with grpc.insecure_channel(api) as channel:
            stub = local_pb2_grpc.LocalStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.Outcomes(local_pb2.OutcomesRequest(sequences=[1, sequence]), timeout=10)
            return err.value

    error = await asyncio.to_thread(outcomes)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("SEQUENCE_OUT_OF_RANGE: "), error.details()
    # The local API goes on answering sequences in range.
    submitted = await local_call(api, "submit", [make_envelope(DEMO_SERVICE, [B], b"x")])
    _, seqs = submitted  # type: ignore[misc]
    found = await local_call(api, "outcomes", seqs, wait_ms=5000)
    assert [o.reason for o in found] == ["ACCEPTED"]  # type: ignore[attr-defined]
    assert all(isinstance(o, Outcome) for o in found)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("first", "count"), [(2**63, 1), (2**63 - 1, 2), (2**64 - 1, 1)])
async def test_submit_with_a_sequence_past_sqlite_integers_is_a_clear_refusal(
    network: InProcessNetwork, first: int, count: int
) -> None:
    # Hub.Submit answered UNKNOWN: "Python int too large to convert to SQLite INTEGER".
    key, cert = network.node_certs[C]
    envelopes = [make_envelope(DEMO_SERVICE, [B], b"x", sender=C) for _ in range(count)]
    async with hub_channel(network.hub_address, network.pki.ca_cert, cert, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await submit_raw(channel, [envelope_pb2.EnvelopeBatch(
                origin="fuzz", first_sequence=first, envelopes=envelopes)])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("SEQUENCE_OUT_OF_RANGE: "), err.value.details()
        # The same origin's next stream, in range, is served.
        (ack,) = await submit_raw(channel, [envelope_pb2.EnvelopeBatch(
            origin="fuzz", first_sequence=1, envelopes=envelopes)])
    assert [o.reason for o in ack.outcomes] == [envelope_pb2.ACCEPTED] * count
