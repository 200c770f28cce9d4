"""Hub continuity, as a node sees it: did the hub forget what it acknowledged?

A hub restored from an older copy, or re-initialized, serves as if nothing happened; only its
nodes hold the evidence. Each node keeps two things from the hub:

* ``acked_seq``: the highest sequence of its own origin the hub acknowledged (every ack means
  stored, so the hub's ``origins`` watermark for that origin can never be below it);
* the latest signed audit checkpoint the hub showed it (chain head ``seq`` and ``hash``).

At every ``Register`` the hub presents its watermark for the node's origin and its latest
checkpoint. :func:`check_continuity` compares: a watermark below ``acked_seq``, a checkpoint
older than the one kept, a different hash at the same position, or no checkpoint where one
was kept means the hub lost state (:class:`ContinuityReason`). A presented checkpoint is kept
only if its signature verifies under the hub's key (the caller's ``verify``); a newer
checkpoint cannot be checked against the older one here (that takes the hub's chain:
``crossroads audit verify --checkpoint``), so it simply replaces it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.core.audit import Checkpoint

__all__ = ["ContinuityReason", "ContinuityVerdict", "HubRegression", "check_continuity"]


class ContinuityReason(enum.StrEnum):
    """How a hub showed it lost state (stable strings: logs, status, metrics)."""

    HUB_WATERMARK_REGRESSED = "HUB_WATERMARK_REGRESSED"
    HUB_CHECKPOINT_REGRESSED = "HUB_CHECKPOINT_REGRESSED"
    HUB_CHECKPOINT_FORKED = "HUB_CHECKPOINT_FORKED"
    HUB_CHECKPOINT_MISSING = "HUB_CHECKPOINT_MISSING"


@dataclass(frozen=True, slots=True)
class HubRegression:
    """What a node found: the hub presented less than the node knows it had."""

    reason: ContinuityReason
    detail: str
    node_acked_seq: int  # what the node knows the hub acknowledged
    hub_acked_seq: int  # what the hub presented
    hub_store_id: str
    detected_at_us: int
    presented_checkpoint: Checkpoint | None = None

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason.value, "detail": self.detail,
                "node_acked_seq": self.node_acked_seq, "hub_acked_seq": self.hub_acked_seq,
                "hub_store_id": self.hub_store_id, "detected_at_us": self.detected_at_us,
                "presented_checkpoint": (self.presented_checkpoint.to_json()
                                         if self.presented_checkpoint else None)}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> HubRegression:
        d = json.loads(text)
        cp = d.get("presented_checkpoint")
        return cls(ContinuityReason(d["reason"]), str(d["detail"]), int(d["node_acked_seq"]),
                   int(d["hub_acked_seq"]), str(d["hub_store_id"]), int(d["detected_at_us"]),
                   Checkpoint.from_json(cp) if cp else None)


@dataclass(frozen=True, slots=True)
class ContinuityVerdict:
    """``regression`` None: the hub is continuous; keep ``checkpoint`` (the newest
    verified). ``unverified``: why the presented checkpoint was not kept, if it was not."""

    regression: HubRegression | None
    checkpoint: Checkpoint | None
    unverified: str = ""


def check_continuity(
    acked_seq: int,
    kept: Checkpoint | None,
    hub_acked_seq: int,
    presented: Checkpoint | None,
    hub_store_id: str,
    now_us: int,
    verify: Callable[[Checkpoint], str | None],
) -> ContinuityVerdict:
    """Compare what the node knows with what the hub presented (see the module)."""
    def regressed(reason: ContinuityReason, detail: str) -> ContinuityVerdict:
        return ContinuityVerdict(HubRegression(reason, detail, acked_seq, hub_acked_seq,
                                               hub_store_id, now_us, presented), kept)

    if hub_acked_seq < acked_seq:
        return regressed(ContinuityReason.HUB_WATERMARK_REGRESSED, (
            f"the hub acknowledged sequences up to {acked_seq} of this node's origin but now"
            f" remembers only up to {hub_acked_seq}"))
    if kept is not None:
        if presented is None:
            return regressed(ContinuityReason.HUB_CHECKPOINT_MISSING, (
                f"the hub signed audit checkpoint {kept.seq} but now presents none"))
        if presented.seq < kept.seq:
            return regressed(ContinuityReason.HUB_CHECKPOINT_REGRESSED, (
                f"the hub signed audit checkpoint {kept.seq} but now presents"
                f" {presented.seq} as its latest"))
        if presented.seq == kept.seq and presented.hash != kept.hash:
            return regressed(ContinuityReason.HUB_CHECKPOINT_FORKED, (
                f"the hub's audit checkpoint {kept.seq} now has another chain hash"))
    if presented is None or (kept is not None and presented.seq == kept.seq):
        return ContinuityVerdict(None, kept)
    problem = verify(presented)
    if problem is not None:
        return ContinuityVerdict(None, kept, problem)
    return ContinuityVerdict(None, presented)
