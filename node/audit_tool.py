"""The audit tool's functions (what ``crossroads audit`` and the tests call): the hub's audit
log straight from its SQLite file (verify, summarize, who consulted a subject, signed
extracts, retention purge), plus the parts that are not SQL: loading the hub's public keys
and turning retention periods into cut-off times.

The SQL lives in :mod:`node.store.audit_queries` (the running hub calls it from
:class:`node.store.hub_store.HubStore`); this module re-exports it for the command line.
See docs/AUDIT.md for the formats and the trust argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.store import audit_queries
from node.store.audit_queries import *  # noqa: F403 - this module's interface

__all__ = ["load_public_keys", "retention_cutoffs"]
__all__ += audit_queries.__all__


def load_public_keys(paths: Sequence[Path]) -> dict[str, Ed25519PublicKey]:
    """Key id -> key, from PEM public key files (the hub's ``.pub`` next to its key)."""
    from node.core.audit import public_key_id
    from node.wire.signed import load_public_key

    keys = {}
    for path in paths:
        try:
            key = load_public_key(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"no public key file at {path}") from None
        except ValueError:
            raise ValueError(f"{path}: not an Ed25519 public key (PEM)") from None
        keys[public_key_id(key)] = key
    return keys


def retention_cutoffs(retention_days: Mapping[str, float], now_us: int) -> dict[str, int]:
    """Service kind -> cut-off time (records older are purged); ``"*"`` = any other kind."""
    return {kind: now_us - int(days * 86_400_000_000) for kind, days in retention_days.items()}
