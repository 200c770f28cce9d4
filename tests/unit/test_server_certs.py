"""node.rpc.server_certs reads the certificates a process's connections were presented from
gRPC's channelz. A connection can close between the listing that names it and the look-up of
its socket; that race must not raise out of a delivery or uplink check (seen in a full run:
``ValueError: Failed to get the socket``)."""

from __future__ import annotations

from grpc._cython import cygrpc

from node.rpc import server_certs

GONE = 987_654_321  # no channelz entity of this process has this id


def test_a_subchannel_gone_since_the_listing_has_no_sockets() -> None:
    assert list(server_certs._socket_ids({"subchannelRef": [{"subchannelId": str(GONE)}]})) == []


def test_a_socket_gone_since_the_listing_reads_as_empty() -> None:
    assert server_certs._lookup(cygrpc.channelz_get_socket, GONE, "socket") == {}


def test_listed_sockets_are_still_named() -> None:
    assert list(server_certs._socket_ids({"socketRef": [{"socketId": "7"}]})) == [7]
