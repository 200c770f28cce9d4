"""Which hub address a node uses now: one choice shared by all of the node's hub clients.

A node's config lists the hub's addresses (``hubs``; docs/OPERATIONS.md, "The node's hub
list"). The node's three clients of the hub (the uplink, the consultations caller and the
directory watch) open their channels to :attr:`HubChoice.current`. When one of them sees its
connection or stream to that address fail, it calls :meth:`HubChoice.failed` with the address
it used, and the choice moves to the next address of the list (round robin). The others follow
when their own stream next breaks (or, for consultations, when the next stream opens): a
working stream is never cut to follow the choice.

Only a failure at the *current* address moves the choice: when the three clients see the same
hub go away, the first one moves on and the others' reports about the old address change
nothing (no address is skipped). How soon the next address is tried is each client's own
backoff (:class:`node.rpc.reconnect.Reconnect`), which starts over only after progress.

Every address is the same hub for the checks: the TLS name (``hub_tls_name``, default the
network's hub name) is that of every replica, the server certificate check
(:class:`node.rpc.server_certs.ServerCheck`) looks at the connections to all of the addresses,
and the hub continuity check compares whatever hub answers with what the node stored.

A DNS name that resolves to several addresses is one entry: gRPC's resolver gives the channel
all of them and its ``pick_first`` policy connects to the first that answers.
"""

from __future__ import annotations

import structlog

__all__ = ["HubChoice"]

log = structlog.get_logger(__name__)


class HubChoice:
    """The hub address in use now, out of the configured list (see the module's docstring)."""

    def __init__(self, addresses: tuple[str, ...]) -> None:
        if not addresses:
            raise ValueError("a node needs at least one hub address")
        self.addresses = addresses
        self._index = 0
        #: Times the choice moved to another address since start.
        self.switches = 0

    @property
    def current(self) -> str:
        return self.addresses[self._index]

    def failed(self, address: str, error: str = "") -> None:
        """A client's connection to ``address`` failed: if that is the current choice and
        there is another address, move to the next one (and say so)."""
        if address != self.current or len(self.addresses) == 1:
            return
        self._index = (self._index + 1) % len(self.addresses)
        self.switches += 1
        log.warning("hub_switched", failed=address, now=self.current, error=error,
                    switches=self.switches)
