"""The current set of revoked certificate serials: the network CA's CRL, kept fresh.

Where the CRL comes from:

* a file (the hub's ``[tls] crl``, optionally a node's): re-read when it changes;
* the directory stream (nodes): the hub publishes the CA-signed CRL it loaded, and the node
  hands it to :meth:`RevocationList.adopt`.

Either way the CRL's signature is verified against the network CA before it replaces the
current one, and a CRL with a lower CRL number than the one held never replaces it (no
replayed old list can un-revoke anything). A CRL that fails to load (missing, corrupt, badly
signed) is logged and the previous set is kept.

Staleness: once the held CRL's ``nextUpdate`` has passed, :meth:`RevocationList.gate` answers
``CRL_STALE`` under the ``refuse`` policy (every peer is then refused until a fresh CRL
arrives) or ``None`` under ``warn``; either way an error is logged once per episode and
:attr:`RevocationList.stale` (a metric) reads True. The start-up checks
(:mod:`node.selfcheck`) refuse a configured CRL that is missing, unsigned or already stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import structlog

from node.core.clock import Clock, SystemClock, utc_datetime
from node.core.reasons import CallReason
from node.tasks import cancel_and_wait, spawn
from pki.ca import load_certificate
from pki.crl import VerifiedCrl, read_crl, verify_crl

__all__ = ["CRL_STALE", "RevocationList"]

log = structlog.get_logger(__name__)

#: The refusal reason while the CRL is past its nextUpdate under the ``refuse`` policy.
CRL_STALE = CallReason.CRL_STALE


class RevocationList:
    def __init__(self, crl: Path | None, ca_cert: Path, poll_seconds: float = 1.0,
                 stale_policy: str = "refuse", clock: Clock | None = None) -> None:
        self.crl, self.ca_cert, self.poll_seconds = crl, ca_cert, poll_seconds
        self.clock = clock or SystemClock()
        self.stale_policy = stale_policy
        self.serials: frozenset[int] = frozenset()
        #: The CRL in force (None: none loaded yet).
        self.current: VerifiedCrl | None = None
        #: Called with each CRL that replaced the current one (e.g. publish it to nodes).
        self.on_loaded: list[Callable[[VerifiedCrl], None]] = []
        #: True while the CRL in force is past its nextUpdate.
        self.stale = False
        self._mtime: float | None = None
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> frozenset[int]:
        return self.serials

    def refresh(self) -> bool:
        """Reload if the file changed; return True when the set was replaced."""
        self._check_stale()
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
            crl = read_crl(self.crl, self.ca_cert)
        except Exception as exc:  # noqa: BLE001 - keep the previous list, say why
            log.error("crl_rejected", path=str(self.crl), error=str(exc))
            return False
        return self.adopt(crl, source=str(self.crl))

    def adopt_bytes(self, data: bytes, source: str) -> bool:
        """Verify ``data`` (PEM or DER) against the CA and adopt it; raises PkiError when the
        CA did not sign it."""
        return self.adopt(verify_crl(data, load_certificate(self.ca_cert), f"CRL from {source}"),
                          source)

    def adopt(self, crl: VerifiedCrl, source: str) -> bool:
        """Make ``crl`` (already verified) the one in force unless it is older than the held
        one; True when it replaced it."""
        held = self.current
        if held is not None and crl.number < held.number:
            log.warning("crl_older_ignored", source=source, number=crl.number,
                        held=held.number)
            return False
        if held is not None and crl.der == held.der:
            return False
        self.current = crl
        self.serials = crl.serials
        log.info("crl_loaded", source=source, number=crl.number, revoked=len(crl.serials),
                 next_update=crl.next_update.isoformat() if crl.next_update else None)
        self._check_stale()
        for callback in self.on_loaded:
            callback(crl)
        return True

    def gate(self) -> CallReason | None:
        """The reason to refuse every peer now (``CRL_STALE``), or None."""
        self._check_stale()
        return CRL_STALE if self.stale and self.stale_policy == "refuse" else None

    def _check_stale(self) -> None:
        crl = self.current
        stale = crl is not None and crl.stale_at(utc_datetime(self.clock))
        if stale and not self.stale:
            assert crl is not None and crl.next_update is not None
            log.error("crl_stale", source=str(self.crl or "directory"), number=crl.number,
                      next_update=crl.next_update.isoformat(), policy=self.stale_policy)
        elif self.stale and not stale:
            log.info("crl_fresh_again", number=crl.number if crl else None)
        self.stale = stale

    async def start(self) -> None:
        self.refresh()
        self._task = spawn(self._poll(), "crl-poll")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            self.refresh()

