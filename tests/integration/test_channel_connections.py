"""Every channel made by node/rpc/tls.py has a connection of its own, even with the same
target and options: gRPC (1.85) does not hand a new channel the
subchannel of an older one. The server-certificate check relies on it
(node/rpc/server_certs.py): a new channel opened after a SIGHUP rotation must not ride on a
lingering closed one's connection made under a certificate revoked since. This guards that
assumption against a gRPC upgrade. Real hub, real PKI; connections read in channelz."""

from __future__ import annotations

import json

from grpc._cython import cygrpc

from node.rpc.server_certs import OPEN_CHANNELS
from node.rpc.tls import TlsMaterial, hub_tls_name, secure_channel
from node.testing import InProcessNetwork
from tests.conftest import A


def _subchannels(channel: object) -> set[int]:
    """The channelz ids of ``channel``'s subchannels (OPEN_CHANNELS knows its channel id)."""
    (channel_id,) = [i for i, c in list(OPEN_CHANNELS._by_id.items()) if c is channel]
    found = json.loads(cygrpc.channelz_get_channel(channel_id))["channel"]
    return {int(ref["subchannelId"]) for ref in found.get("subchannelRef", [])}


async def test_two_channels_to_one_hub_never_share_a_connection(
        network: InProcessNetwork) -> None:
    key, cert = network.node_certs[A]
    tls = TlsMaterial(network.pki.ca_cert.read_bytes(), cert.read_bytes(), key.read_bytes())
    name = hub_tls_name(network.network)
    channels = [secure_channel(network.hub_address, tls, name, 1 << 20) for _ in range(3)]
    try:
        for channel in channels:
            await channel.channel_ready()
        seen = [_subchannels(c) for c in channels]
        assert all(seen), seen  # a connected channel lists its subchannel
        assert len(set().union(*seen)) == sum(map(len, seen)), seen  # none shared
    finally:
        for channel in channels:
            await channel.close()
