"""SIGHUP: a running daemon takes new certificates, a new CRL and a new log level without a
restart, and without dropping a stream.

Design: :func:`reload` re-reads the configuration file (the one the daemon started with) and
applies what can change in a running process:

* ``[tls]`` certificate, key and CA files (and a node's ``[local_tls]``): re-read, checked
  (the key must be the certificate's, the CA must have issued it) and swapped in place
  (:meth:`node.rpc.tls.TlsMaterial.reload`). Every handshake from then on, on the daemon's
  servers and on the channels it opens, uses them; connections already established, and
  their streams, go on with the old ones until they end on their own. Files that fail the
  check are refused (``tls_reload_refused``) and the old material stays in force.
* the CRL (``[tls] crl``): read again now rather than at the next poll.
* ``log_level``: in force from the next log line.
* ``[metrics]`` (node/metrics_web.py): the endpoint's TLS certificate, key and client CA read
  again, its basic-auth users taken; turning its TLS on or off needs a restart.

Any other key that differs from what the daemon started with is named in a warning
(``reload_needs_restart``) and not applied: the listening address, the data directory or
the limits are fixed for a process's life. A configuration file that no longer parses is
refused whole (``reload_refused``, with its problems), and nothing changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import structlog

from node import logs
from node.config import ConfigError, HubConfig, NodeConfig
from node.rpc.tls import TlsReloadRefused

if TYPE_CHECKING:
    from node.config import TlsFiles
    from node.metrics import MetricsEndpoint
    from node.rpc.revocation import RevocationList
    from node.rpc.tls import TlsMaterial

__all__ = ["RELOADABLE", "Reloadable", "reload"]

log = structlog.get_logger(__name__)

#: The keys a reload applies (the others need a restart).
RELOADABLE = frozenset({"tls", "local_tls", "log_level", "metrics"})

Config = HubConfig | NodeConfig


class Reloadable(Protocol):
    """What a daemon lets SIGHUP change (:class:`node.app.HubApp`, :class:`node.app.NodeApp`)."""

    @property
    def config(self) -> Config: ...
    @property
    def tls(self) -> TlsMaterial: ...
    @property
    def local_tls(self) -> TlsMaterial | None: ...
    @property
    def revocations(self) -> RevocationList: ...
    @property
    def metrics(self) -> MetricsEndpoint | None: ...


def reload(app: Reloadable, read_config: Callable[[], Config]) -> bool:
    """Apply the configuration file as it is now (see the module's design); whether it was
    applied (False: refused, nothing changed)."""
    try:
        config = read_config()
    except (ConfigError, OSError, ValueError) as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]
        log.error("reload_refused", problems=problems, effect="nothing changed")
        return False
    fixed = sorted(f.name for f in dataclasses.fields(config)
                   if f.name not in RELOADABLE
                   and getattr(config, f.name) != getattr(app.config, f.name))
    if fixed:
        log.warning("reload_needs_restart", keys=fixed, effect="kept as started")
    tls = _tls(app.tls, config.tls, "tls")
    local = getattr(config, "local_tls", None)
    local_tls = (_tls(app.local_tls, local, "local_tls")
                 if app.local_tls is not None and local is not None else "unchanged")
    metrics = "off" if app.metrics is None else app.metrics.reload(config.metrics)
    if metrics == "restart":
        log.warning("reload_needs_restart", keys=["metrics"], effect="kept as started")
    crl = app.revocations.refresh()
    logs.set_level(config.log_level)
    log.info("reloaded", tls=tls, local_tls=local_tls, crl="replaced" if crl else "unchanged",
             log_level=config.log_level, metrics=metrics)
    return True


def _tls(material: TlsMaterial, files: TlsFiles, key: str) -> str:
    try:
        return "replaced" if material.reload(files) else "unchanged"
    except (TlsReloadRefused, OSError) as exc:
        log.error("tls_reload_refused", key=key, cert=str(files.cert), error=str(exc),
                  effect="the certificate in use stays")
        return "refused"
