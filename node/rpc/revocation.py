"""The current set of revoked certificate serials, re-read when the CRL file changes.

The CRL's signature is verified against the network CA before it replaces the current set;
a CRL that fails to load (missing, corrupt, badly signed) is logged and the previous set is
kept, so a bad file never silently un-revokes anything.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from node.tasks import cancel_and_wait, spawn
from pki.ca import load_revoked_serials

__all__ = ["RevocationList"]

log = structlog.get_logger(__name__)


class RevocationList:
    def __init__(self, crl: Path | None, ca_cert: Path, poll_seconds: float = 1.0) -> None:
        self.crl, self.ca_cert, self.poll_seconds = crl, ca_cert, poll_seconds
        self.serials: frozenset[int] = frozenset()
        self._mtime: float | None = None
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> frozenset[int]:
        return self.serials

    def refresh(self) -> bool:
        """Reload if the file changed; return True when the set was replaced."""
        if self.crl is None:
            return False
        try:
            mtime = self.crl.stat().st_mtime_ns
        except FileNotFoundError:
            if self._mtime is not None:
                log.error("crl_missing", path=str(self.crl))
            self._mtime = None
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            serials = load_revoked_serials(self.crl, self.ca_cert)
        except Exception as exc:  # noqa: BLE001 - keep the previous list, say why
            log.error("crl_rejected", path=str(self.crl), error=str(exc))
            return False
        self.serials = frozenset(serials)
        log.info("crl_loaded", path=str(self.crl), revoked=len(self.serials))
        return True

    async def start(self) -> None:
        self.refresh()
        if self.crl is not None:
            self._task = spawn(self._poll(), "crl-poll")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            self.refresh()
