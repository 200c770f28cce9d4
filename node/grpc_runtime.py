"""gRPC's process-wide transport setting, made before gRPC is loaded.

gRPC's core reads ``GRPC_EXPERIMENTS`` once, when the ``grpc`` package is imported, and never
again. The entry points call :func:`apply` before they import ``grpc``: the ``crossroads``
command (importing :mod:`node.cli` does), and the ``tests`` and ``benchmarks`` packages; so
every daemon and tool of this project, and every process they start, runs on the transport
chosen here. Importing :mod:`node` itself writes nothing; an application using
:mod:`node.client` calls :func:`apply` itself, first, to get the same.

The choice: gRPC's *iomgr* TCP transport instead of its newer *EventEngine* one
(``-event_engine_client``, ``-event_engine_listener``, ``-event_engine_for_all_other_endpoints``).
With the EventEngine, sockets are read and written on the engine's own threads, which hand
every finished operation to the thread where grpc.aio waits on its completion queue, which
wakes the event loop: a message costs several thread switches in each process it crosses.
With iomgr the completion-queue thread does the socket work itself while it waits. Measured
on the 2-core machine (``benchmarks/README.md``, "gRPC transport"): a consultation crosses
five processes and caused 96 thread switches, 51 with iomgr; a bare relay hop's CPU per
question fell from ~570 to ~440 µs, and the bare envelope relay went from ~0.9 to ~1.1 M
envelopes/s.

An operator's own ``GRPC_EXPERIMENTS`` (even an empty one) is left as it is; if ``grpc`` was
imported before :func:`apply` runs, the setting cannot apply to this process and nothing is
changed.

gRPC core's own log lines (:func:`quiet_core_logs`): core writes plain-text lines to stderr
(``I1207 03:40:31.956 ... ssl_transport_security.cc:2563] Handshake failed ...``: one per
junk TCP connection at its default verbosity), outside the daemons' JSON logs, and cannot be
routed into them. ``GRPC_VERBOSITY=NONE`` turns them off: whatever matters reaches the JSON
logs through the Python side (a call's status, a stream's end, a port not bound). An
operator's own ``GRPC_VERBOSITY`` / ``GRPC_TRACE`` (to debug gRPC itself) is left as it is.

gRPC's core, held for the process (:func:`hold_core`): gRPC counts its users (every channel,
server and grpc.aio engine calls ``grpc_init`` and, when closed, ``grpc_shutdown``) and, when
the count falls to zero, tears its core down (the iomgr with epoll1's global poller lists, its
timers), to build it again for the next user. A process that runs short-lived servers and
channels one after the other goes through that once per network: the test suite's pytest
process about once per test, the benchmarks once per phase. That path is unsafe while gRPC's
TCP backup poller is polling (iomgr's ``tcp_posix.cc`` starts it when a write blocks, and it
polls in 10-second turns on a thread of its own): the turn ends on a torn-down core, in epoll1's
scan of its global poller lists (``check_neighborhood_for_available_poller``), and the process
dies of a SIGSEGV. CI's pytest process died so twice, while nothing of gRPC was open in it
(the frames located in the stripped library by their return addresses);
``tests/e2e/grpc_teardown_probe.py`` reproduces it in a few rounds. The test suite and the
benchmarks therefore hold one initialisation for their whole life, so the core is built once.
The daemons do not need it: their server lives as long as they do, and a one-shot command
builds the core once anyway.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import MutableMapping

__all__ = ["GRPC_EXPERIMENTS", "GRPC_VERBOSITY", "apply", "hold_core", "quiet_core_logs"]

GRPC_VERBOSITY = "NONE"
GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"


def apply(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``GRPC_EXPERIMENTS`` unless it is set or gRPC is already loaded; True if set."""
    if "GRPC_EXPERIMENTS" in environ or "grpc" in sys.modules:
        return False
    environ["GRPC_EXPERIMENTS"] = GRPC_EXPERIMENTS
    return True


def quiet_core_logs(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``GRPC_VERBOSITY`` to NONE unless it is set or gRPC is already loaded; True if set."""
    if "GRPC_VERBOSITY" in environ or "grpc" in sys.modules:
        return False
    environ["GRPC_VERBOSITY"] = GRPC_VERBOSITY
    return True


_held = False


def hold_core() -> bool:
    """Initialise gRPC's core once more, never to be undone: True the first time, then False.

    The matching ``grpc_shutdown`` never comes, so gRPC's user count stays above zero until the
    process exits and the core is not torn down between one network and the next. gRPC's
    Python package has no public call for it; ``fork_handlers_and_grpc_init`` is what its own
    channels and servers call first (grpcio is pinned in constraints.txt, and
    ``tests/unit/test_grpc_runtime.py`` checks the effect on gRPC's own API trace).
    """
    global _held
    if _held:
        return False
    importlib.import_module("grpc._cython.cygrpc").fork_handlers_and_grpc_init()
    _held = True
    return True
