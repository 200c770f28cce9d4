"""Liveness and readiness of a hub or a node, for load balancers, orchestrators and systemd.

Served without authentication next to ``/metrics`` on the ``metrics_listen`` port
(:class:`node.metrics.MetricsEndpoint`), so a probe needs no client certificate (unless
``[metrics] client_ca`` asks every connection for one) and no password (``[metrics]
basic_auth_users`` protects ``/metrics`` only); over TLS when ``[metrics]`` has it:

* ``GET /healthz``: 200 while the process answers at all (alive).
* ``GET /readyz``: 200 when every check below passes, 503 otherwise; the body is JSON,
  ``{"ready": bool, "checks": {name: bool}}``, naming what failed.

Checks (:class:`Check`): a hub is ready when it has started and is not stopping
(``SERVING``) and its store answers (``STORE_WRITABLE``: the store-health ping of
node/hub/store_health.py, the same verdict as its gRPC health). A node is ready when its
stream to a hub is up (``HUB_CONNECTED``) and its directory fragment is fresh
(``DIRECTORY_FRESH``: the directory stream is up, or went down at most
``readiness_directory_age_s`` ago; a node that never synced is not ready).

The checks read a few flags and a timestamp the daemon keeps anyway, from the HTTP server's
thread (single reads, safe under the GIL); nothing is computed per envelope.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.app import HubApp, NodeApp

__all__ = ["Check", "Readiness", "hub_readiness", "node_readiness"]


@dataclass(frozen=True)
class Readiness:
    checks: Mapping[Check, bool]

    @property
    def ready(self) -> bool:
        return all(self.checks.values())

    def body(self) -> bytes:
        return json.dumps({"ready": self.ready,
                           "checks": {c.value: ok for c, ok in self.checks.items()}}).encode()


class Check(enum.Enum):
    """What ``/readyz`` checks (its value: the name in the JSON body)."""

    SERVING = "serving"
    STORE_WRITABLE = "store_writable"
    HUB_CONNECTED = "hub_connected"
    DIRECTORY_FRESH = "directory_fresh"


def hub_readiness(app: HubApp) -> Readiness:
    return Readiness({Check.SERVING: app.serving,
                      Check.STORE_WRITABLE: app.health is not None and app.health.healthy})


def node_readiness(app: NodeApp) -> Readiness:
    uplink, watcher = app.uplink, app.watcher
    if uplink is None or watcher is None:  # not started yet
        return Readiness({Check.HUB_CONNECTED: False, Check.DIRECTORY_FRESH: False})
    lost = watcher.disconnected_at
    fresh = watcher.connected or (
        lost is not None
        and app.clock.monotonic() - lost <= app.config.readiness_directory_age_s)
    return Readiness({Check.HUB_CONNECTED: uplink.connected, Check.DIRECTORY_FRESH: fresh})
