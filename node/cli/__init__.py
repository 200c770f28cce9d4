"""The command lines: ``crossroads`` and its commands, one package.

* :mod:`node.cli.crossroads` - the ``crossroads`` parser: daemons, application tools, demo,
  bench; it adds the commands below (and ``pki``, from :mod:`pki.cli`).
* :mod:`node.cli.audit` - ``crossroads audit ...`` (the hub's audit log, offline).
* :mod:`node.cli.directory` - ``crossroads directory ...`` (the hub's reference directory).
* :mod:`node.cli.outcomes` - exit codes of the application commands, the node probe.

Entry points: the console script ``crossroads`` (:func:`main`) and ``python -m node.cli``.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """The ``crossroads`` command (the console script)."""
    from node.cli.crossroads import main as crossroads

    return crossroads(argv)
