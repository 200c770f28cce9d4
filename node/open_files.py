"""The process's open-file limit: raised at start, and the share of it left to connections.

Every TCP connection a daemon accepts costs a file descriptor, from its ``accept`` on, before
TLS says who the peer is. Under systemd's default (``LimitNOFILE`` soft 1024) about a
thousand idle sockets were enough to make the hub's ``accept`` fail with EMFILE, and nodes
could no longer connect. So:

* the units set ``LimitNOFILE`` (deploy/ansible/roles/crossroads/templates), and a daemon
  started by hand raises its own soft limit to the hard one at start (:func:`raise_soft_limit`,
  logged as ``open_files_limit``);
* each gRPC server accepts at most :func:`connection_cap` connections at once, half the soft
  limit: the other half stays for the databases, logs, and the connections the daemon opens
  itself (the hub's one per node), whatever a flood of sockets does.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

__all__ = ["OpenFilesLimit", "connection_cap", "raise_soft_limit"]

#: Never fewer than this many connections per server, even under a tiny limit.
MIN_CONNECTIONS = 64


@dataclass(frozen=True, slots=True)
class OpenFilesLimit:
    soft: int
    hard: int
    soft_before: int


def raise_soft_limit() -> OpenFilesLimit:
    """Raise ``RLIMIT_NOFILE``'s soft limit to its hard limit (an unprivileged process may)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY or target < 0:
        # Linux does not allow an infinite RLIMIT_NOFILE; keep a finite, generous value.
        target = max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    else:
        target = soft
    return OpenFilesLimit(soft=target, hard=hard, soft_before=soft)


def connection_cap(servers: int = 1) -> int:
    """Connections each of the process's ``servers`` may hold at once: together, half the
    current soft open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft < 0:
        soft = 1 << 20
    return max(MIN_CONNECTIONS, soft // (2 * servers))
