"""``crossroads audit ...``: the hub's audit log, offline, from its database.

``register(subparsers)`` adds the ``audit`` command (replacing the old ``verify|summary``
pair) to the main ``crossroads`` parser; ``python -m node.cli.audit ...`` runs the same
commands stand-alone (:func:`node.cli.runner.run_alone`). Every command finds the log with
``--db hub.sqlite`` or ``--config hub.toml``: the hub's store as its ``[store]`` table says,
the ``hub.sqlite`` in its ``data_dir`` or, with ``backend = "postgresql"``, its PostgreSQL
database (its DSN, the password from ``password_file`` or ``password_env``, never from the
command line), which holds every replica's records in one chain. The commands see the log
only through :class:`node.store.audit_source.AuditSource`: the same output and exit codes
on either backend. With ``--config`` the hub's directory key (and its ``.pub``) is found
from the config too.

Commands:

* ``verify [--key hub.pub ...] [--checkpoint FILE ...]``: the file's integrity (SQLite
  ``integrity_check``; PostgreSQL checks page checksums as it reads), the hash chain, the
  checkpoints and, with a key, their signatures;
  with ``--checkpoint``, that the chain holds a checkpoint kept outside the hub (a node's,
  from ``crossroads node checkpoint``). Exit 1 naming the first bad record or checkpoint.
* ``summary``: counts by event and refusal reason; chain extent; checkpoints.
* ``who-consulted NUMBER [--since DATE] [--limit N]``: every record about a subject.
* ``export --subject NUMBER [--since DATE] [--signing-key KEY] [-o FILE]``: a signed extract
  (an artefact: the document itself, no ``--json``).
* ``verify-export FILE --key hub.pub``: check an extract with only the hub's public key.
  Exit 1 saying what does not verify.
* ``purge (--before DATE [--kind KIND ...] | --retention KIND=DAYS ...)
  [--service-kind SERVICE=KIND ...] [--directory-db directory.sqlite]``: retention; the
  service kinds from the hub's directory where the store has it (SQLite: ``directory.sqlite``
  next to ``hub.sqlite``), else from the options.

Every command but ``export`` takes ``--json`` (pki/output.py: one JSON line per result; a
verdict that fails is ``{"ok": false, "problem": ...}``, exit 1). Errors (no database, bad
date, unreadable key...) print one line, ``crossroads audit: error: ...`` (``--json``: one
JSON object), to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.runner import CliError, guarded, read_toml, run_alone
from pki.output import emit, json_option, out_option, rfc3339, wants_json

if TYPE_CHECKING:
    from node.store.audit_source import AuditSource

__all__ = ["main", "register"]

PROG = "crossroads audit"
EXIT_INVALID = 1


# -- helpers -------------------------------------------------------------------------------


def _hub_config(args: argparse.Namespace) -> Any:
    from node.config import hub_config

    path = Path(args.config).resolve()
    table = read_toml(path)
    try:
        return hub_config(table, path.parent)
    except Exception as exc:  # noqa: BLE001 - any config problem is one line
        raise CliError(f"{path}: {exc}") from None


def _source(args: argparse.Namespace) -> AuditSource:
    """The audit log the options name: ``--db`` (a SQLite file), else ``--config``'s hub
    store (:func:`node.store.audit_source.audit_source`: SQLite or PostgreSQL)."""
    from node.store.audit_source import SqliteAuditSource, audit_source

    if args.db:
        return SqliteAuditSource(Path(args.db))
    if args.config:
        return audit_source(_hub_config(args))
    raise CliError("give --db or --config")


def _parse_time(text: str) -> int:
    """A date (YYYY-MM-DD) or ISO date-time, UTC unless it says otherwise -> microseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{text!r} is not a date (YYYY-MM-DD or ISO 8601 date-time)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def _time_text(at_us: int) -> str:
    return rfc3339(at_us) or "-"


def _invalid(args: argparse.Namespace, what: str, problem: str) -> int:
    """``what`` does not verify: a result (stdout with ``--json``), exit 1."""
    if wants_json(args):
        emit(args, {"ok": False, "problem": problem}, None)
    else:
        print(f"{what} INVALID: {problem}", file=sys.stderr)
    return EXIT_INVALID


def _lines(value: Any, indent: str = "") -> list[str]:
    """A nested record as indented ``key: value`` lines (the text of ``summary``)."""
    lines: list[str] = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            lines += [f"{indent}{key}:", *_lines(item, indent + "  ")]
        else:
            lines.append(f"{indent}{key}: {item if item != {} else '-'}")
    return lines


def _public_keys(args: argparse.Namespace, required: bool) -> dict[str, Any] | None:
    from node.audit_tool import load_public_keys

    paths = [Path(p) for p in args.key or []]
    if not paths and getattr(args, "config", None):
        from node.wire.signed import public_path

        candidate = public_path(_hub_config(args).directory_key_path)
        if candidate.exists():
            paths = [candidate]
    if not paths:
        if required:
            raise CliError("give --key (the hub's public key file)")
        return None
    try:
        return load_public_keys(paths)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _signer(args: argparse.Namespace) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if args.signing_key:
        path = Path(args.signing_key)
    elif args.config:
        path = _hub_config(args).directory_key_path
    else:
        raise CliError("give --signing-key (the hub's directory key) or --config")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise CliError(f"no signing key at {path}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise CliError(f"{path}: cannot read the signing key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CliError(f"{path} is not an Ed25519 private key")
    return key


def _key_value(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise CliError(f"{what} {text!r}: expected NAME=VALUE")
    return key, value


# -- commands ------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    source = _source(args)
    keys = _public_keys(args, required=False)
    pinned = [_load_checkpoint(Path(f)) for f in args.checkpoint or []]
    report = source.verify(keys, pinned, integrity=not args.skip_integrity_check)
    if report.problem is not None:
        return _invalid(args, "audit log", report.problem)
    log = report.log
    assert log is not None
    text = f"audit log OK: {report.records} records, chain verified"
    if log.records:
        text += f" (seq {log.first_seq}..{log.last_seq}"
        text += f", from signed checkpoint {log.anchor})" if log.anchor else ")"
    if log.redacted:
        text += f"; {log.redacted} redacted by retention"
    if log.checkpoints or log.anchor:
        text += f"; {log.checkpoints} checkpoints"
        text += (f", signatures verified with key {', '.join(sorted(keys or {}))}"
                 if keys else ", signatures NOT checked (give --key hub.pub)")
    else:
        text += "; no signed checkpoints"
    if pinned:
        text += (f"; holds the given checkpoint{'s' if len(pinned) > 1 else ''} "
                 + ", ".join(str(cp.seq) for cp in pinned))
    emit(args, {"ok": True, "records": report.records, "first_seq": log.first_seq,
                "last_seq": log.last_seq, "anchor": log.anchor, "redacted": log.redacted,
                "checkpoints": log.checkpoints, "keys_verified": sorted(keys or {}),
                "pinned_checkpoints": [cp.seq for cp in pinned]}, text)
    return 0


def _load_checkpoint(path: Path) -> Any:
    """A checkpoint as ``crossroads node checkpoint`` writes it (JSON)."""
    from node.core.audit import Checkpoint

    try:
        return Checkpoint.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CliError(f"no checkpoint file at {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{path}: not a checkpoint (JSON from crossroads node checkpoint):"
                       f" {exc}") from None


def _summary(args: argparse.Namespace) -> int:
    summary = _source(args).summary()
    emit(args, summary, "\n".join(_lines(summary)))
    return 0


def _who_consulted(args: argparse.Namespace) -> int:
    since = _parse_time(args.since) if args.since else None
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be at least 1")
    source = _source(args)
    try:
        found = source.who_consulted(args.subject, since, args.limit)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if wants_json(args):
        for c in found:
            emit(args, c.to_json(), None)
        return 0
    for c in found:
        line = f"{_time_text(c.at_us)}  {c.institution or '-':<10}  {c.service_id or '-'}  {c.outcome}"
        if c.event not in ("ACCEPTED", "REJECTED"):
            line += f" ({c.event})"
        if c.receivers:
            line += "  to " + ",".join(c.receivers)
        if c.deliveries:
            line += "  delivered: " + ", ".join(
                f"{d.receiver} {_time_text(d.at_us)}" for d in c.deliveries)
        print(line)
    print(f"{len(found)} records about {args.subject}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    since = _parse_time(args.since) if args.since else None
    source = _source(args)
    signer = _signer(args)
    try:
        document = source.export_subject(args.subject, signer, since)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        body = document["body"]
        print(f"wrote {args.out}: {len(body['records'])} records and"
              f" {len(body['deliveries'])} deliveries about {args.subject}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _verify_export(args: argparse.Namespace) -> int:
    from node.core.audit import ExportError, verify_export

    keys = _public_keys(args, required=True)
    assert keys
    if len(keys) != 1:
        raise CliError("give exactly one --key")
    try:
        document = json.loads(Path(args.file).read_text())
    except FileNotFoundError:
        raise CliError(f"no file at {args.file}") from None
    except (OSError, ValueError) as exc:
        return _invalid(args, "audit extract", f"not JSON ({exc})")
    try:
        body = verify_export(document, next(iter(keys.values())))
    except ExportError as exc:
        return _invalid(args, "audit extract", str(exc))
    emit(args, {"ok": True, "subject": body["subject"], "records": len(body["records"]),
                "deliveries": len(body["deliveries"]), "head_seq": body["head"]["seq"],
                "exported_at_us": body["exported_at_us"], "key_id": document["key_id"]},
         f"audit extract OK: subject {body['subject']}, {len(body['records'])} records,"
         f" {len(body['deliveries'])} deliveries, chain head {body['head']['seq']},"
         f" exported {_time_text(body['exported_at_us'])}, signed by key {document['key_id']}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    import time

    from node.audit_tool import retention_cutoffs, service_kinds_from_directory

    now = time.time_ns() // 1000
    if args.before and args.retention:
        raise CliError("give --before or --retention, not both")
    if args.before:
        before = _parse_time(args.before)
        cutoffs = ({kind: before for kind in args.kind} if args.kind else {"*": before})
    elif args.retention:
        if args.kind:
            raise CliError("--kind goes with --before")
        days: dict[str, float] = {}
        for item in args.retention:
            kind, value = _key_value(item, "--retention")
            try:
                days[kind] = float(value)
            except ValueError:
                raise CliError(f"--retention {item!r}: days must be a number") from None
            if days[kind] < 0:
                raise CliError(f"--retention {item!r}: days must not be negative")
        cutoffs = retention_cutoffs(days, now)
    else:
        raise CliError("give --before DATE or --retention KIND=DAYS")
    source = _source(args)
    if args.directory_db:
        try:
            kinds = service_kinds_from_directory(Path(args.directory_db))
        except (OSError, ValueError, KeyError) as exc:
            raise CliError(f"{args.directory_db}: cannot read service kinds ({exc})") from None
    else:
        kinds = source.service_kinds()
    for item in args.service_kind or []:
        service, kind = _key_value(item, "--service-kind")
        kinds[service] = kind
    report = source.purge_kinds(cutoffs, kinds, args.default_kind, now)
    if wants_json(args):
        emit(args, report.to_json(), None)
    else:
        text = (f"purged: {report.redacted} records redacted, {report.deleted} deleted"
                f" (up to record {report.upto_seq})")
        if report.anchor:
            text += f"; the chain now starts after signed checkpoint {report.anchor}"
        if report.purge_seq:
            text += f"; documented by record {report.purge_seq}"
        if report.note:
            text = f"nothing purged: {report.note}"
        print(text)
    return 0


# -- parser --------------------------------------------------------------------------------


def _explain(exc: Exception) -> str:
    """Any other failure (e.g. sqlite3.DatabaseError) is one line too, exit 2."""
    from node.store.audit_source import SourceUnavailable

    if isinstance(exc, FileNotFoundError | SourceUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    return guarded(PROG, command, _explain)


def _database_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="the hub's hub.sqlite")
    p.add_argument("--config", help="hub.toml: its [store] (SQLite: hub.sqlite in its data_dir;"
                                    " PostgreSQL: its DSN and password file or variable)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``audit`` command and its subcommands to a ``crossroads`` parser."""
    audit = subparsers.add_parser("audit", help="the hub's audit log",
                                  description="The hub's audit log, from its database.")
    commands = audit.add_subparsers(dest="action", metavar="COMMAND", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], text: str
                ) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=text, description=text)
        _database_options(p)
        if name != "export":  # an artefact: the signed extract itself
            json_option(p)
        p.set_defaults(func=_guarded(func))
        return p

    p = command("verify", _verify, "check the hash chain, the checkpoints and their signatures")
    p.add_argument("--key", action="append", metavar="PUB",
                   help="the hub's public key (PEM; repeat for rotated keys); default with"
                        " --config: the .pub next to its directory key")
    p.add_argument("--checkpoint", action="append", metavar="FILE",
                   help="a checkpoint kept outside the hub (crossroads node checkpoint): the"
                        " chain must hold it, proof it did not restart or lose its end"
                        " (repeat for several)")
    p.add_argument("--skip-integrity-check", action="store_true",
                   help="skip SQLite's full PRAGMA integrity_check of the file (O(size);"
                        " PostgreSQL: no such step)")
    command("summary", _summary, "counts by event and reason; chain extent; checkpoints")
    p = command("who-consulted", _who_consulted, "every record about one subject")
    p.add_argument("subject", metavar="NUMBER", help="citizen (or enterprise) number")
    p.add_argument("--since", metavar="DATE", help="only records at or after DATE (UTC)")
    p.add_argument("--limit", type=int, metavar="N", help="only the N most recent")
    p = command("export", _export, "a signed extract of the records about one subject")
    p.add_argument("--subject", required=True, metavar="NUMBER")
    p.add_argument("--since", metavar="DATE")
    p.add_argument("--signing-key", metavar="KEY",
                   help="the hub's directory key (PEM); default with --config: its key")
    out_option(p)
    p = commands.add_parser("verify-export", help="check an extract with the hub's public key",
                            description="Check an audit extract with only the hub's public key.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--key", action="append", required=True, metavar="PUB")
    json_option(p)
    p.set_defaults(func=_guarded(_verify_export), config=None)
    p = command("purge", _purge, "retention: redact old records, cut the chain at a checkpoint")
    p.add_argument("--before", metavar="DATE", help="purge records older than DATE (UTC)")
    p.add_argument("--kind", action="append", metavar="KIND",
                   help="with --before: only services of this kind (repeat; default every kind)")
    p.add_argument("--retention", action="append", metavar="KIND=DAYS",
                   help="keep records of service kind KIND for DAYS days (repeat; '*' = others)")
    p.add_argument("--service-kind", action="append", metavar="SERVICE=KIND",
                   help="a service's kind (overrides the directory's)")
    p.add_argument("--directory-db", metavar="PATH",
                   help="directory.sqlite for service kinds (default with --config: the hub's)")
    p.add_argument("--default-kind", default="unknown",
                   help="kind of services the directory does not know (default: unknown)")


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m node.cli.audit [audit] COMMAND ...``."""
    return run_alone("audit", register, argv)


if __name__ == "__main__":
    raise SystemExit(main())
