"""The command lines: ``crossroads`` and its commands, one package.

* :mod:`node.cli.crossroads` - the ``crossroads`` parser: daemons, application tools, demo,
  bench; it adds the commands below (and ``pki``, from :mod:`pki.cli`).
* :mod:`node.cli.audit` - ``crossroads audit ...`` (the hub's audit log, offline).
* :mod:`node.cli.directory` - ``crossroads directory ...`` (the hub's reference directory).
* :mod:`node.cli.outcomes` - exit codes of the application commands, the node probe.
* :mod:`pki.output` - what every command prints: one style (JSON Lines with ``--json``,
  errors as one JSON object), one flag vocabulary; in ``pki``, which imports nothing of node.
* :mod:`node.cli.runner` - what the families share: the one ``CliError``, the guard that prints
  ``<prog>: error: ...`` (exit 2), reading a config file, the stand-alone runner.

Entry points: the console script ``crossroads`` (:func:`main`), ``python -m node.cli`` and the
stand-alone ``python -m node.cli.audit|directory``. All of them import this package first, and
importing it makes gRPC's process-wide settings (:mod:`node.grpc_runtime`: the transport, core's
log verbosity) before anything imports ``grpc``: every daemon and tool, and every process they
start, runs with them. (Importing :mod:`node` itself has no such effect.)
"""

from __future__ import annotations

from node import grpc_runtime as _grpc_runtime

__all__ = ["main"]

_grpc_runtime.apply()
_grpc_runtime.quiet_core_logs()


def main(argv: list[str] | None = None) -> int:
    """The ``crossroads`` command (the console script)."""
    from node.cli.crossroads import main as crossroads

    return crossroads(argv)
