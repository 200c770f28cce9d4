"""The registry of open channels (node/rpc/server_certs.py, OPEN_CHANNELS): a channel this
process closed is not looked at by the server-certificate check, and the ids of collected
channels do not pile up."""

from __future__ import annotations

import gc

import grpc

from node.rpc import server_certs
from node.rpc.server_certs import OPEN_CHANNELS


async def test_a_closed_or_collected_channel_counts_as_closed_and_is_forgotten(
        monkeypatch) -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    OPEN_CHANNELS.register(channel)
    newest = OPEN_CHANNELS._next - 1
    assert OPEN_CHANNELS._by_id.get(newest) is channel
    assert not OPEN_CHANNELS.closed(newest)
    await channel.close()
    assert OPEN_CHANNELS.closed(newest)
    del channel
    gc.collect()
    assert newest in OPEN_CHANNELS._collected and OPEN_CHANNELS.closed(newest)
    # Many collected channels: the next registration asks channelz which are gone.
    monkeypatch.setattr(server_certs, "PRUNE_AT", 0)
    other = grpc.aio.insecure_channel("127.0.0.1:9")
    OPEN_CHANNELS.register(other)
    assert newest not in OPEN_CHANNELS._collected  # gone from channelz: forgotten
    await other.close()
