"""Audit checkpoints on the wire (``crossroads.v1.AuditCheckpoint``) and back."""

from __future__ import annotations

from node.core.audit import Checkpoint
from node.wire.gen.crossroads.v1 import hub_pb2

__all__ = ["checkpoint_from_proto", "checkpoint_to_proto"]


def checkpoint_to_proto(cp: Checkpoint) -> hub_pb2.AuditCheckpoint:
    return hub_pb2.AuditCheckpoint(seq=cp.seq, hash=cp.hash, at_us=cp.at_us,
                                   from_seq=cp.from_seq, segment_digest=cp.segment_digest,
                                   signature=cp.signature, key_id=cp.key_id)


def checkpoint_from_proto(message: hub_pb2.AuditCheckpoint) -> Checkpoint:
    return Checkpoint(message.seq, bytes(message.hash), message.at_us, message.from_seq,
                      bytes(message.segment_digest), bytes(message.signature), message.key_id)
