"""The base of the node's long-lived streams to the hub: the uplink (``Hub.Submit``) and the
directory watch (``Hub.WatchDirectory``).

Each runs one stream at a time in a :class:`node.rpc.reconnect.Reconnect` loop
(:meth:`HubStream._connection` is one stream, on its own channel). The channel goes to the
address the node's shared :class:`node.rpc.hub_choice.HubChoice` holds when it opens
(:meth:`HubStream._open_channel`); when the stream fails, that address is reported failed, so
the choice moves on to the next hub address, and the loop backs off
(:meth:`HubStream._failed`)."""

from __future__ import annotations

import grpc

from node.config import NodeConfig
from node.rpc.edge import describe
from node.rpc.hub_choice import HubChoice
from node.rpc.reconnect import Reconnect
from node.rpc.tls import TlsMaterial, hub_channel
from node.tasks import BackgroundTask

__all__ = ["HubStream"]


class HubStream(BackgroundTask):
    def __init__(self, config: NodeConfig, tls: TlsMaterial, hubs: HubChoice | None,
                 reconnect: Reconnect) -> None:
        self.config = config
        self.tls = tls
        #: The node's shared hub choice (default: one of its own over ``config.hubs``).
        self.hubs = hubs or HubChoice(config.hubs)
        #: The hub address of the current (or last) stream.
        self.address = self.hubs.current
        #: True while the stream is up.
        self.connected = False
        self._reconnect = reconnect

    async def _run(self) -> None:
        await self._reconnect.run(self._connection, self._failed)

    async def _connection(self) -> None:
        """One stream, on a channel of its own (:meth:`_open_channel`)."""
        raise NotImplementedError

    def _open_channel(self, largest_content_bytes: int) -> grpc.aio.Channel:
        """A channel to the hub address chosen now (it becomes :attr:`address`)."""
        self.address = self.hubs.current
        return hub_channel(self.config, self.tls, largest_content_bytes, self.address)

    async def _failed(self, exc: BaseException, *, logged: bool = False) -> None:
        """The stream at :attr:`address` failed: the choice moves on, then the backoff
        (``logged``: the failure was logged already)."""
        self.hubs.failed(self.address, describe(exc))
        await self._reconnect.back_off(exc, logged=logged, hub=self.address)
