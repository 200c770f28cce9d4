"""systemd's notification protocol (``sd_notify(3)``), for ``Type=notify`` units with a
``WatchdogSec``.

Design: :func:`node.app.serve_forever` says ``READY=1`` once the daemon serves (after its
ready file is written), ``STOPPING=1`` as soon as a stop begins, and, while the unit asks for
a watchdog (``WATCHDOG_USEC``, for this process: ``WATCHDOG_PID`` unset or ours), sends
``WATCHDOG=1`` every half period from a task **on the event loop**: a loop that is blocked or
starved stops the pings, and systemd restarts the daemon (``Restart=`` in the unit) instead
of leaving a process that holds its port and answers nothing. Without ``NOTIFY_SOCKET``
(not under systemd, or ``Type=simple``) nothing is sent.

Each state is one datagram to the ``AF_UNIX`` socket systemd names (a path, or ``@...`` for
an abstract one). Written here, a dozen lines, rather than taken from a library: the
packages that do it are unmaintained (``sdnotify``) or need libsystemd's headers to build
(``systemd-python``). A failed send is logged once and never stops the daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

__all__ = ["Notifier"]

log = structlog.get_logger(__name__)


class Notifier:
    """Sends states to systemd; a no-op without ``NOTIFY_SOCKET``."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        ours = environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        #: Seconds between two ``WATCHDOG=1`` (half the unit's ``WatchdogSec``); None: none.
        self.watchdog_every_s = (int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and ours
                                 else None)
        self._failed = False

    def notify(self, *states: str) -> None:
        """Send ``states`` (e.g. ``READY=1``) as one datagram."""
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(states).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("systemd_notify_failed", error=str(exc), states=list(states))
            self._failed = True

    async def watchdog(self) -> None:
        """``WATCHDOG=1`` every :attr:`watchdog_every_s` until cancelled (returns at once
        without a watchdog)."""
        if self.watchdog_every_s is None or not self.address:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_every_s)
