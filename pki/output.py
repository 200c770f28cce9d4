"""What every ``crossroads`` command prints: one style (docs/OPERATIONS.md, "Command-line
output"), in one module.

It lives in ``pki`` because ``pki`` imports nothing of ``node`` (``pki`` runs alone on the CA
host) and every command family, ``pki``'s included, uses it.

* Without ``--json``: text for people; its wording may change.
* With ``--json``: stdout is JSON Lines, one JSON object per result, compact, keys sorted
  (:func:`json_line`). A command with one result prints one line; a list prints a line per
  item. Keys are snake_case. Values (:func:`plain`): an enum is its name; a timestamp is an
  RFC 3339 UTC string with microseconds (``2026-12-07T15:04:05.123456Z``) under a key ending
  in ``_at`` (the microseconds ``at_us``, ``*_at_us``, ``*_unix_us`` of records become
  ``at``, ``*_at``, ``*_at``; 0 or absent: null); opaque bytes (a payload) are base64 (RFC
  4648, padded); digests, signatures and serials are lowercase hex strings, as the records
  hold them; a path is its string; a missing value is null.
* A failure with ``--json``: one JSON object on stderr (:func:`failure`), ``{"command",
  "error", "exit", "reason"}``: ``reason`` a stable upper-case word (a gRPC status name,
  ``NODE_UNREACHABLE``, ``NODE_ACCESS_DENIED``, ``USAGE``, ``REFUSED``, ``INVALID``,
  ``INTERNAL``, ...), ``error`` the message for people, ``exit`` the exit status.
* Artefacts are no output: ``node checkpoint``, ``audit export`` and ``directory show
  --format json`` write the document itself (indented JSON, the format ``audit verify
  --checkpoint``, ``audit verify-export`` and ``directory import`` read), with ``--json`` or
  without.
"""

from __future__ import annotations

import argparse
import base64
import enum
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any, TextIO

__all__ = ["ARTEFACTS", "FORBIDDEN_FLAGS", "Parser", "emit", "failure", "json_line", "json_option",
           "out_option",
           "plain", "rfc3339", "wants_json"]

#: The commands that write an artefact (a document other commands read), not results.
ARTEFACTS = frozenset({"node checkpoint", "audit export"})

#: Spellings the commands do not use, and the one word they use instead (a hidden alias may
#: keep an old spelling working: tests/e2e/test_cli_output.py checks the parser tree).
FORBIDDEN_FLAGS = {
    "--output": "--out", "--outfile": "--out", "--output-dir": "--out-dir",
    "--workdir": "--dir", "--directory": "--dir", "--cfg": "--config",
    "--config-file": "--config", "--localapi": "--local-api", "--api": "--local-api",
    "--ca": "--ca-cert", "--cacert": "--ca-cert", "--db-path": "--db",
    "--verbose-json": "--json", "--jsonl": "--json",
}

_TIMESTAMP_SUFFIXES = ("_unix_us", "_at_us")


def json_option(parser: argparse.ArgumentParser, what: str = "result") -> None:
    """The ``--json`` flag, the same in every command."""
    parser.add_argument("--json", action="store_true",
                        help=f"print each {what} as one JSON object per line (JSON Lines;"
                             " errors: one JSON object on stderr)")


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def rfc3339(at_us: int | None) -> str | None:
    """Microseconds since the epoch as an RFC 3339 UTC string (0 or None: None)."""
    if not at_us:
        return None
    return datetime.fromtimestamp(at_us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _key(key: str, value: Any) -> tuple[str, Any]:
    if isinstance(value, int) and not isinstance(value, bool):
        if key == "at_us":
            return "at", rfc3339(value)
        for suffix in _TIMESTAMP_SUFFIXES:
            if key.endswith(suffix):
                stem = key[:-len(suffix)]
                return (stem if stem.endswith("_at") else f"{stem}_at"), rfc3339(value)
    return key, plain(value)


def plain(value: Any) -> Any:
    """``value`` in the conventions above, as JSON types."""
    if isinstance(value, Mapping):
        return dict(_key(str(k), v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        items = [plain(v) for v in value]
        return sorted(items) if isinstance(value, set | frozenset) else items
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, PurePath):
        return str(value)
    return value


def json_line(record: Mapping[str, Any]) -> str:
    """One record as its JSON line (no newline)."""
    return json.dumps(plain(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def emit(args: argparse.Namespace, record: Mapping[str, Any], text: str | None,
         stream: TextIO | None = None) -> None:
    """One result: its JSON line with ``--json``, else ``text`` (None: nothing)."""
    out = stream or sys.stdout
    if wants_json(args):
        print(json_line(record), file=out, flush=True)
    elif text is not None:
        print(text, file=out, flush=True)


def failure(prog: str, message: str, code: int, reason: str, as_json: bool,
            stream: TextIO | None = None, extra: Mapping[str, Any] | None = None,
            command: str | None = None) -> int:
    """A failure: ``<prog>: error: <line>`` lines, or with ``as_json`` one JSON object (with
    ``extra``'s keys too; ``command``: the subcommand, default ``prog``'s); returns ``code``."""
    err = stream or sys.stderr
    if as_json:
        command = command or prog.removeprefix("crossroads").strip()
        print(json_line({**(extra or {}), "command": command, "error": message,
                         "exit": int(code), "reason": reason}), file=err, flush=True)
    else:
        for line in message.splitlines() or [""]:
            print(f"{prog}: error: {line}", file=err, flush=True)
    return int(code)


class Parser(argparse.ArgumentParser):
    """The commands' parser: a usage error is one JSON object on stderr (reason ``USAGE``,
    exit 2) when the command line asks for ``--json`` (:attr:`json_requested`, true while a
    command line with ``--json`` is parsed; subcommands' parsers are of this class too),
    else argparse's usage and message."""

    json_requested = False

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        return self._asking(args, lambda words: super(Parser, self).parse_args(words, namespace))

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        return self._asking(
            args, lambda words: super(Parser, self).parse_known_args(words, namespace))

    def _asking(self, args: Any, parse: Any) -> Any:
        words = list(sys.argv[1:] if args is None else args)
        outer = Parser.json_requested
        Parser.json_requested = outer or "--json" in words
        try:
            return parse(words)
        finally:
            Parser.json_requested = outer

    def error(self, message: str) -> Any:
        if Parser.json_requested:
            raise SystemExit(failure(self.prog, message, 2, "USAGE", True))
        return super().error(message)


def out_option(parser: argparse.ArgumentParser, what: str = "write here instead of stdout") -> None:
    """``-o``/``--out FILE`` (``--output``: a hidden alias, the old spelling)."""
    parser.add_argument("-o", "--out", metavar="FILE", help=what)
    parser.add_argument("--output", dest="out", help=argparse.SUPPRESS)
