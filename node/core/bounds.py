"""Bounds on variable-size protocol fields that several layers enforce (docs/PROTOCOL.md,
"Bounds", has the whole table: each field, its bound, where it is checked, the refusal).

Pure constants: the configurable bounds live in :class:`node.config.Limits`.
"""

from __future__ import annotations

from node.core.errors import InvalidArgument
from node.core.reasons import CallReason

__all__ = [
    "MAX_DETAIL_CHARS",
    "MAX_HEAD_TEXT_CHARS",
    "MAX_MEDIA_TYPE_CHARS",
    "MAX_ORIGIN_CHARS",
    "MAX_WHO_CONSULTED",
    "at_most",
]

#: A provider's answer detail is cut to this length (at the node and again at the hub: it
#: goes into the hub's audit log with every ANSWERED record).
MAX_DETAIL_CHARS = 1_000
#: A provider's answer media type is cut to this length.
MAX_MEDIA_TYPE_CHARS = 255
#: The routing text of an envelope (sender, service id, legal context, subject number, period
#: dates): at most this many characters each, else INVALID_FIELD. They are copied into the
#: audit log with every record, refused envelopes too; real values are a few dozen characters.
MAX_HEAD_TEXT_CHARS = 256
#: Records one DirectoryAdmin.WhoConsulted call returns at most (limit 0 = 1,000).
MAX_WHO_CONSULTED = 100_000
#: A batch's origin is a node's store identity (a UUID, 36 characters); the hub keeps it per
#: (sender, origin) and with every stored ack, so a longer one is refused.
MAX_ORIGIN_CHARS = 64


def at_most(count: int, limit: int, what: str,
            reason: CallReason = CallReason.INVALID_ARGUMENT) -> None:
    """Refuse a call that carries more than ``limit`` ``what`` (e.g. "envelopes"): checked
    first, before any work proportional to ``count``."""
    if count > limit:
        raise InvalidArgument(f"at most {limit} {what} per call", reason)
