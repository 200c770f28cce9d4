"""What the ``crossroads`` subcommand families share: the one :class:`CliError`, the guard that
turns expected failures into ``<prog>: error: ...`` lines and exit code 2, and the stand-alone
runner behind ``python -m node.cli.audit`` / ``python -m node.cli.directory``.

A command family (``audit``, ``directory``) has a ``register(subparsers)`` that adds its
parser to the ``crossroads`` parser, and wraps each subcommand in :func:`guarded`, naming what
else it expects to fail with (``explain``). ``pki`` keeps its own copy of the guard in
:mod:`pki.cli`: the ``pki`` package does not import ``node``.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pki.output import Parser, failure, wants_json

__all__ = ["EXIT_ERROR", "CliError", "Register", "fail", "guarded", "read_toml", "reason_of",
           "run_alone"]

#: The exit code of an expected failure (bad option, missing file, refusal by the hub).
EXIT_ERROR = 2

Command = Callable[[argparse.Namespace], int]
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class CliError(Exception):
    """An expected failure: printed as one ``<prog>: error: ...`` line per line, exit code 2."""


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's table; CliError naming the file when it is missing or not TOML."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise CliError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path}: {exc}") from None


def fail(prog: str, message: str, stream: TextIO | None = None, as_json: bool = False,
         reason: str = "REFUSED", command: str | None = None) -> int:
    """Print ``message`` as ``<prog>: error: <line>`` lines (``as_json``: one JSON object,
    :func:`pki.output.failure`); return :data:`EXIT_ERROR`."""
    return failure(prog, message, EXIT_ERROR, reason, as_json, stream, command=command)


def _command(prog: str, args: argparse.Namespace) -> str:
    """``audit verify``, ``directory show``: the family and its subcommand."""
    sub = getattr(args, "action", None) or getattr(args, "directory_command", None)
    return " ".join(w for w in (prog.removeprefix("crossroads").strip(), sub) if w)


def reason_of(exc: Exception) -> str:
    """The stable ``reason`` of a failure's JSON (docs/OPERATIONS.md, "Command-line output")."""
    if isinstance(exc, CliError):
        return "REFUSED"
    code = getattr(exc, "code", None)
    if callable(code) and getattr(code(), "name", None):  # a grpc.RpcError
        return str(code().name)
    if isinstance(exc, FileNotFoundError):
        return "NOT_FOUND"
    return "FAILED"


def guarded(prog: str, command: Command, explain: Callable[[Exception], str | None],
            stream: Callable[[argparse.Namespace], TextIO | None] = lambda args: None
            ) -> Command:
    """``command`` with its expected failures printed by :func:`fail`: a :class:`CliError`,
    and any exception ``explain`` returns a message for (None: not expected, raised on)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except CliError as exc:
            return fail(prog, str(exc), stream(args), wants_json(args),
                        command=_command(prog, args))
        except Exception as exc:
            message = explain(exc)
            if message is None:
                raise
            return fail(prog, message, stream(args), wants_json(args), reason_of(exc),
                        _command(prog, args))

    run.__name__ = command.__name__
    return run


def run_alone(family: str, register: Register, argv: Sequence[str] | None = None,
              **settings: object) -> int:
    """Run one command family stand-alone: ``python -m node.cli.<family> [family] COMMAND ...``.

    ``settings`` are set on the parsed arguments (e.g. where output goes). Usage errors are
    printed by argparse and give its exit code (2)."""
    parser = Parser(prog="crossroads")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] != [family]:
        args_list.insert(0, family)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse usage errors: already printed, exit code 2
        return int(exc.code or 0)
    for name, value in settings.items():
        setattr(args, name, value)
    return int(args.func(args) or 0)
