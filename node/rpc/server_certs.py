"""The client side of revocation: which certificate did the hub present on our connections?

gRPC's Python client exposes no auth context (the server side has ``auth_context()``, the
client nothing), so the TLS handshake alone cannot refuse a server certificate the CA revoked:
it only checks the chain, the validity window and the name. gRPC core does record, in its
channelz registry (on by default), the certificate each connection's peer presented. After a
connection is up and before anything confidential is sent on it, :class:`ServerCheck` reads
the serials presented on this process's connections to the target and raises
:class:`ServerRevoked` if the CA revoked any of them; callers drop the connection and back
off.

The registry is process-wide: every connection to the same target is looked at (in a daemon,
all of them are its own connections to the hub). Reading it parses channelz's JSON, so
:meth:`ServerCheck.check` caches the presented serials for ``refresh_s`` seconds; the revoked
set itself is read on every check.
"""

from __future__ import annotations

import asyncio
import base64
import json
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from cryptography import x509
from grpc._cython import cygrpc  # channelz: no public Python API for a client's peer cert

from node.core.clock import Clock, SystemClock

__all__ = [
    "OPEN_CHANNELS",
    "SERVER_CERTIFICATE_REVOKED",
    "SERVER_CERTIFICATE_UNVERIFIED",
    "ServerCheck",
    "ServerRevoked",
    "presented_serials",
    "verify_server",
]

SERVER_CERTIFICATE_REVOKED = "SERVER_CERTIFICATE_REVOKED"
SERVER_CERTIFICATE_UNVERIFIED = "SERVER_CERTIFICATE_UNVERIFIED"


class ServerRevoked(Exception):
    """The server presented a certificate the CA revoked (the reason is the first word)."""


def _pages(get: Callable[[int], str], key: str) -> Iterator[dict[str, object]]:
    start = 0
    while True:
        page = json.loads(get(start))
        items = page.get(key, [])
        yield from items
        if page.get("end", False) or not items:  # proto JSON omits a false "end"
            return
        start = int(items[-1]["ref"][f"{key.rstrip('s')}Id"]) + 1


def _lookup(get: Callable[[int], str], entity_id: int, key: str) -> dict:  # type: ignore[type-arg]
    """One channelz entity by id; {} when it is gone: a connection can close between the
    listing that named it and this look-up (channelz then raises ValueError). A closed
    connection carries nothing, so it presents no certificate to check."""
    try:
        found = json.loads(get(entity_id)).get(key, {})
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _socket_ids(entity: dict) -> Iterator[int]:  # type: ignore[type-arg]
    for ref in entity.get("socketRef", []):
        yield int(ref["socketId"])
    for ref in entity.get("subchannelRef", []):
        yield from _socket_ids(
            _lookup(cygrpc.channelz_get_subchannel, int(ref["subchannelId"]), "subchannel"))


def _matches(channel_target: str, targets: tuple[str, ...]) -> bool:
    return any(channel_target == target or channel_target.endswith(f"/{target}")
               for target in targets)


class _OpenChannels:
    """This process's channels by channelz id, so that :func:`presented_serials` looks only
    at open ones. A channel closed by its owner stays in channelz, with its connection up,
    until the last reference to it or to one of its calls is gone; reference cycles (an
    exception's traceback holding the call) keep it there until the garbage collector runs,
    which in an idle daemon can take minutes. After a SIGHUP rotation such a closed channel,
    still connected under the peer's old certificate, made every new channel's check fail
    once that certificate was revoked: the uplink and the deliveries did not come back
    (tests/e2e/test_reload.py). A channel not registered here counts (fail closed)."""

    def __init__(self) -> None:
        self._by_id: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        #: Ids whose Channel object was collected (its core channel may linger): closed.
        self._collected: set[int] = set()
        self._next = 0

    def register(self, channel: Any) -> None:
        """``channel`` (a grpc.aio channel) was created just now, in this thread: it is the
        newest top channel in channelz (ids only grow)."""
        newest = None
        for entry in _pages(lambda start: cygrpc.channelz_get_top_channels(max(start, self._next)),
                            "channel"):
            newest = int(entry["ref"]["channelId"])
        if newest is not None:
            self._by_id[newest] = channel
            weakref.finalize(channel, self._collected.add, newest)
            self._next = newest + 1
        if len(self._collected) > PRUNE_AT:  # nothing revoked for long: no check pruned it
            self.forget_all_but({int(entry["ref"]["channelId"]) for entry in
                                 _pages(cygrpc.channelz_get_top_channels, "channel")})

    def closed(self, channel_id: int) -> bool:
        if channel_id in self._collected:
            return True
        channel = self._by_id.get(channel_id)
        return channel is not None and bool(channel._channel.closed())

    def forget_all_but(self, listed: set[int]) -> None:
        """Ids channelz no longer lists are gone for good."""
        self._collected &= listed


#: Collected channels remembered before channelz is asked which of them are gone for good
#: (:meth:`_OpenChannels.register`; a check does it each time, :func:`presented_serials`).
PRUNE_AT = 1024

#: The registry :func:`node.rpc.tls.secure_channel` adds every channel to.
OPEN_CHANNELS = _OpenChannels()


def presented_serials(*targets: str) -> frozenset[int]:
    """Serials of the certificates presented by the servers of this process's open
    connections to any of ``targets`` (e.g. ``hub.example:7443``); channels this process
    closed are not looked at (:class:`_OpenChannels`)."""
    serials: set[int] = set()
    listed: set[int] = set()
    for channel in _pages(cygrpc.channelz_get_top_channels, "channel"):
        channel_id = int(channel["ref"]["channelId"])
        listed.add(channel_id)
        data = channel.get("data", {})
        if not isinstance(data, dict) or not _matches(str(data.get("target", "")), targets):
            continue
        if OPEN_CHANNELS.closed(channel_id):
            continue
        for socket_id in _socket_ids(channel):
            socket = _lookup(cygrpc.channelz_get_socket, socket_id, "socket")
            pem = socket.get("security", {}).get("tls", {}).get("remoteCertificate")
            if not pem:
                continue
            try:
                cert = x509.load_pem_x509_certificate(base64.b64decode(pem))
            except ValueError:
                cert = x509.load_der_x509_certificate(base64.b64decode(pem))
            serials.add(cert.serial_number)
    OPEN_CHANNELS.forget_all_but(listed)
    return frozenset(serials)


class ServerCheck:
    """Refuses a server whose presented certificate is revoked, on this process's
    connections to any of ``targets`` (a node's: every address of its hub list, so the check
    applies to whichever the node uses)."""

    def __init__(self, targets: tuple[str, ...], revoked: Callable[[], frozenset[int]],
                 refresh_s: float = 1.0, clock: Clock | None = None) -> None:
        self.targets, self._revoked, self.refresh_s = targets, revoked, refresh_s
        self.clock = clock or SystemClock()
        self._serials: frozenset[int] = frozenset()
        self._read_at = float("-inf")
        #: Connections refused since start.
        self.refused = 0

    def active(self) -> bool:
        """False while nothing is revoked (then there is nothing to check)."""
        return bool(self._revoked())

    def check(self, fresh: bool = False) -> None:
        """Raise :class:`ServerRevoked` if the server presented a revoked certificate.
        ``fresh``: re-read the connections now (a new connection was just made)."""
        revoked = self._revoked()
        if not revoked:
            return
        now = self.clock.monotonic()
        if fresh or now - self._read_at > self.refresh_s:
            self._serials, self._read_at = presented_serials(*self.targets), now
        bad = self._serials & revoked
        if bad:
            self.refused += 1
            raise ServerRevoked(
                f"{SERVER_CERTIFICATE_REVOKED}: {', '.join(self.targets)} presented certificate"
                f" {min(bad):x}, which the network CA revoked")


async def verify_server(channel: object, target: str, revoked: frozenset[int],
                        timeout_s: float) -> None:
    """Before anything is written on ``channel`` (a grpc.aio channel to ``target``): wait for
    it to connect, then raise :class:`ServerRevoked` if the server presented a certificate
    the CA revoked, or if no presented certificate can be read while some are revoked (fail
    closed). Nothing to check while nothing is revoked. The hub's use: before its first
    delivery batch on a new stream to a node, and before a new channel to a provider carries
    its first question (node/hub/delivery.py, node/hub/consult.py)."""
    if not revoked:
        return
    try:
        async with asyncio.timeout(timeout_s):
            await channel.channel_ready()  # type: ignore[attr-defined]
    except TimeoutError:
        raise ServerRevoked(f"{SERVER_CERTIFICATE_UNVERIFIED}: {target} did not connect in"
                            f" {timeout_s:g} s") from None
    serials = presented_serials(target)
    if not serials:
        raise ServerRevoked(f"{SERVER_CERTIFICATE_UNVERIFIED}: no certificate {target} presented"
                            " could be read")
    bad = serials & revoked
    if bad:
        raise ServerRevoked(f"{SERVER_CERTIFICATE_REVOKED}: {target} presented certificate"
                            f" {min(bad):x}, which the network CA revoked")
