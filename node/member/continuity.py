"""The node's side of hub continuity: check what the hub presents at each ``Register``.

:func:`node.core.continuity.check_continuity` decides; this keeps the result in the node's
store (so a restart does not forget it), logs ``hub_state_regressed`` at error once per
finding, and tells the uplink whether it may submit. While a regression stands the uplink
does not open its submit stream (envelopes stay in the outbox, nothing is lost) and registers
again with backoff: a hub that comes back with its state (the right backup restored) clears
the finding by itself (``hub_state_recovered``); otherwise an operator decides
(``crossroads node accept-hub-state``, docs/OPERATIONS.md "Damaged state").
"""

from __future__ import annotations

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.core.audit import Checkpoint, public_key_id, verify_checkpoint_signature
from node.core.clock import Clock
from node.core.continuity import HubRegression, check_continuity
from node.store.protocols import ContinuityState
from node.wire.checkpoints import checkpoint_from_proto
from node.wire.gen.crossroads.v1 import hub_pb2

__all__ = ["HubContinuity", "HubStateRegressed"]

log = structlog.get_logger(__name__)


class HubStateRegressed(Exception):
    """The hub presented less than this node knows it had (see :class:`HubRegression`)."""

    def __init__(self, regression: HubRegression) -> None:
        super().__init__(f"{regression.reason.value}: {regression.detail}")
        self.regression = regression


class HubContinuity:
    def __init__(self, store: ContinuityState, hub_key: Ed25519PublicKey, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._keys = {public_key_id(hub_key): hub_key}
        self.detected = 0  # findings in this process (a metric)
        self._logged: HubRegression | None = None
        self._unchecked_logged = False

    @property
    def regression(self) -> HubRegression | None:
        return self.store.hub_regression

    def _verify(self, cp: Checkpoint) -> str | None:
        return verify_checkpoint_signature(cp, self._keys)

    async def check(self, reply: hub_pb2.RegisterResponse) -> None:
        """Raise :class:`HubStateRegressed` when the hub lost state; else keep its latest
        checkpoint and clear an earlier finding."""
        store = self.store
        if not reply.store_id:
            # A hub older than these checks presents nothing to compare: say so once, go on
            # (a hub of this version always presents its store id, also a re-created one).
            if not self._unchecked_logged:
                self._unchecked_logged = True
                log.warning("hub_continuity_unchecked",
                            reason="the hub presents no store id (an older version)")
            return
        presented = checkpoint_from_proto(reply.checkpoint) if reply.HasField("checkpoint") else None
        verdict = check_continuity(store.hub_acked_seq, store.hub_checkpoint,
                                   reply.acknowledged_sequence, presented, reply.store_id,
                                   self.clock.now_us(), self._verify)
        if verdict.unverified:
            log.error("hub_checkpoint_unverified", seq=presented.seq if presented else 0,
                      problem=verdict.unverified)
        found = verdict.regression
        if found is not None:
            earlier = store.hub_regression
            if earlier is None or earlier.reason != found.reason:
                await store.save_continuity(store.hub_checkpoint, found)
            if self._logged is None or self._logged.reason != found.reason:
                self.detected += 1
                self._logged = found
                log.error("hub_state_regressed", reason=found.reason.value, detail=found.detail,
                          node_acked_seq=found.node_acked_seq, hub_acked_seq=found.hub_acked_seq,
                          hub_store_id=found.hub_store_id,
                          action="submitting stopped; see docs/OPERATIONS.md, Damaged state")
            raise HubStateRegressed(store.hub_regression or found)
        if store.hub_regression is not None:
            log.warning("hub_state_recovered", previous=store.hub_regression.reason.value,
                        hub_acked_seq=reply.acknowledged_sequence)
            self._logged = None
        if store.hub_regression is not None or verdict.checkpoint != store.hub_checkpoint:
            await store.save_continuity(verdict.checkpoint, None)
