"""``crossroads directory ...``: administer the hub's reference directory.

``register(subparsers)`` adds the ``directory`` command to the main ``crossroads`` parser;
every subcommand sets ``func(args) -> int``. ``python -m node.cli.directory ...`` runs the same
commands stand-alone (:func:`node.cli.runner.run_alone`).

Every command that talks to the hub opens one mutual-TLS channel with an *admin*
certificate (``spiffe://<network>/admin/<name>``, ``crossroads pki issue --profile admin``),
verifies the hub as ``hub.<network>.crossroads`` (the network comes from ``--network`` or the
CA certificate), and calls the hub's ``DirectoryAdmin`` service with a deadline
(``--timeout``, default 30 s). Results go to stdout: the directory revision after a change,
or the entries. Failures print one line per problem, ``crossroads directory: error: ...``, to
stderr and return 2: gRPC failures as ``<STATUS>: <details>``, bad values naming the option,
bad files naming file, line or entry, and field.

Values are checked here exactly as in bulk files (:mod:`node.files.directory_import`), so nothing
invalid is sent. ``remove`` first reads the current entry from the hub and deletes *that*
entry, so the delete reaches the fragments that held it (an authorization's institution or
sector) and removing something absent is an error, not a silent no-op. ``import`` validates
the whole file first, then sends it in ``Apply`` calls of at most 5,000 changes; each call is
atomic, and if a later call fails the ones before it stay applied (the message says how many).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc

from node.cli.runner import CliError, guarded, run_alone
from node.core.directory import (
    KINDS,
    ROUTINGS,
    STATUSES,
    SUBJECT_KINDS,
    Entity,
    key_of,
    kind_of,
)
from node.files.directory_import import (
    COLUMNS,
    SECTIONS,
    DirectoryFileError,
    FieldError,
    entities_to_json,
    entity_from_fields,
    entity_to_text_fields,
    kind_name,
    load_file,
)
from pki.output import emit, json_option

__all__ = ["BATCH", "CliError", "main", "register"]

PROG = "crossroads directory"
#: Changes per Apply call in ``import``.
BATCH = 5000
DEFAULT_TIMEOUT = 30.0
MAX_MESSAGE_BYTES = 256 << 20

#: Canonical kind -> the ``part`` name of ShowRequest.
SHOW_PARTS = {kind: ("revoked" if kind == "revoked_certificate" else section)
              for kind, section in SECTIONS.items()}


def _streams(args: argparse.Namespace) -> tuple[TextIO, TextIO]:
    """Where output and errors go: ``main(..., stdout=, stderr=)``, else sys.stdout/stderr."""
    return (getattr(args, "directory_stdout", None) or sys.stdout,
            getattr(args, "directory_stderr", None) or sys.stderr)


def _say(args: argparse.Namespace, text: str = "") -> None:
    print(text, file=_streams(args)[0])


def _result(args: argparse.Namespace, record: dict[str, Any], text: str | None) -> None:
    """One result (pki/output.py: its JSON line with ``--json``, else ``text``)."""
    emit(args, record, text, _streams(args)[0])


def _rpc_text(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    return f"{name}: {details or 'no details'}"


def _explain(exc: Exception) -> str | None:
    if isinstance(exc, DirectoryFileError):
        return "\n".join(exc.lines())
    if isinstance(exc, grpc.RpcError):
        return _rpc_text(exc)
    return None


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected failures into ``crossroads directory: error: ...`` and exit code 2."""
    return guarded(PROG, command, _explain, lambda args: _streams(args)[1])


# -- the connection --------------------------------------------------------------------------


@dataclass
class _Hub:
    stub: Any
    timeout: float

    def apply(self, changes: Sequence[Any]) -> int:
        from node.wire.gen.crossroads.v1 import directory_pb2 as pb

        response = self.stub.Apply(pb.ApplyRequest(changes=list(changes)), timeout=self.timeout)
        return int(response.revision)

    def show(self, part: str = "", subject: str = "") -> tuple[int, list[Entity]]:
        from node.wire.directory import change_from_proto
        from node.wire.gen.crossroads.v1 import directory_pb2 as pb

        response = self.stub.Show(pb.ShowRequest(part=part, subject=subject), timeout=self.timeout)
        entities = []
        for change in response.entries:
            try:
                entity, _ = change_from_proto(change)
            except ValueError as exc:
                raise CliError(f"the hub sent an entry this tool cannot read: {exc}") from None
            entities.append(entity)
        return int(response.revision), entities


def _read(args: argparse.Namespace, dest: str) -> bytes:
    value, option = getattr(args, dest, None), "--" + dest.replace("_", "-")
    if not value:
        raise CliError(f"{option} is required to reach the hub (see '{PROG} --help')")
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {option} {value}: {exc.strerror or exc}") from None


def _network(args: argparse.Namespace, ca_pem: bytes) -> str:
    from pki.identity import validate_network

    if getattr(args, "network", None):
        try:
            return validate_network(args.network)
        except ValueError as exc:
            raise CliError(f"--network: {exc}") from None
    from cryptography import x509

    from pki.ca import PkiError, network_of_ca

    try:
        return network_of_ca(x509.load_pem_x509_certificate(ca_pem))
    except (ValueError, PkiError) as exc:
        raise CliError(f"--ca-cert {args.ca_cert}: cannot tell the network ({exc}); give"
                       " --network") from None


@contextmanager
def _connect(args: argparse.Namespace) -> Iterator[_Hub]:
    from node.rpc.tls import channel_options, hub_tls_name
    from node.wire.gen.crossroads.v1 import directory_pb2_grpc

    address = getattr(args, "hub", None)
    if not address:
        raise CliError(f"--hub HOST:PORT is required to reach the hub (see '{PROG} --help')")
    ca, cert, key = _read(args, "ca_cert"), _read(args, "cert"), _read(args, "key")
    network = _network(args, ca)
    timeout = getattr(args, "timeout", None) or DEFAULT_TIMEOUT
    if timeout <= 0:
        raise CliError(f"--timeout must be more than 0 seconds, got {timeout}")
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                         certificate_chain=cert)
    options = channel_options(hub_tls_name(network), MAX_MESSAGE_BYTES)
    with grpc.secure_channel(address, creds, options=options) as channel:
        yield _Hub(directory_pb2_grpc.DirectoryAdminStub(channel), timeout)


def _change(entity: Entity, delete: bool = False) -> Any:
    from node.wire.directory import change_to_proto

    return change_to_proto(entity, delete=delete)


# -- put commands ----------------------------------------------------------------------------

# For each put command: the entity kind and (option, column, argparse keywords).
_Option = tuple[str, str, dict[str, Any]]
_PUTS: dict[str, tuple[str, str, list[_Option]]] = {
    "put-institution": ("institution", "add or replace an institution", [
        ("--enterprise", "enterprise_number", {"required": True, "help": "enterprise number"}),
        ("--sector", "sector", {"required": True, "help": "sector code, e.g. 17"}),
        ("--name", "name", {"help": "display name"}),
        ("--endpoint", "endpoint", {"help": "host:port of the node's Deliver service"}),
        ("--fingerprint", "cert_fingerprint", {"help": "SHA-256 of the node certificate (hex)"}),
        ("--status", "status", {"choices": STATUSES, "help": "default active"}),
    ]),
    "put-service": ("service", "add or replace a service version", [
        ("--id", "id", {"required": True, "help": "service id, e.g. health.insurability"}),
        ("--version", "version", {"help": "version (default 1)"}),
        ("--kind", "kind", {"required": True, "choices": KINDS}),
        ("--subject-type", "subject_type", {"choices": SUBJECT_KINDS, "help": "default citizen"}),
        ("--routing", "routing", {"choices": ROUTINGS, "help": "default fixed"}),
        ("--provider", "provider", {"help": "enterprise number of the fixed provider"}),
        ("--integration-required", "integration_required",
         {"action": "store_true", "help": "callers must hold an integration of the subject"}),
        ("--min-phase", "min_phase", {"help": "minimum integration phase of the caller"}),
        ("--capacity", "capacities",
         {"action": "append", "help": "capacity relevant for fan-out (repeatable; none = any)"}),
    ]),
    "put-authorization": ("authorization", "add or replace an authorization", [
        ("--id", "id", {"required": True, "help": "authorization id (chosen by you)"}),
        ("--service", "service_id", {"required": True, "help": "service id"}),
        ("--institution", "institution", {"help": "one institution (enterprise number)"}),
        ("--sector", "sector", {"help": "or every institution of a sector"}),
        ("--legal-context", "legal_context", {"help": "deliberation reference (none = any)"}),
        ("--capacity", "capacities",
         {"action": "append", "help": "allowed capacity (repeatable; none = any)"}),
        ("--from", "valid_from", {"metavar": "DATE", "help": "first valid day, YYYY-MM-DD"}),
        ("--to", "valid_to", {"metavar": "DATE", "help": "last valid day, YYYY-MM-DD"}),
    ]),
    "put-subscription": ("subscription", "add or replace a subscription to mutations", [
        ("--id", "id", {"required": True, "help": "subscription id (chosen by you)"}),
        ("--institution", "institution", {"required": True, "help": "the subscriber"}),
        ("--service", "service_id", {"required": True, "help": "the mutation service"}),
        ("--capacity", "capacities",
         {"action": "append", "help": "capacity (repeatable; none = any)"}),
        ("--condition", "condition", {"help": "free-form condition (recorded only)"}),
    ]),
    "put-integration": ("integration", "add or replace an integration (person directory)", [
        ("--subject", "subject", {"required": True, "help": "citizen or enterprise number"}),
        ("--institution", "institution", {"required": True, "help": "who holds the file"}),
        ("--capacity", "capacity", {"required": True, "help": "capacity code"}),
        ("--phase", "phase", {"help": "phase (default 0)"}),
        ("--from", "begin_date", {"metavar": "DATE", "help": "first day, YYYY-MM-DD"}),
        ("--to", "end_date", {"metavar": "DATE", "help": "last day (none = still active)"}),
    ]),
    "put-replacement": ("replacement", "record that a subject number was replaced", [
        ("--old", "old_number", {"required": True, "help": "the replaced number"}),
        ("--new", "new_number", {"required": True, "help": "the number that replaces it"}),
    ]),
    "revoke-cert": ("revoked_certificate", "publish a revoked certificate serial", [
        ("--serial", "serial", {"required": True, "help": "serial number, hexadecimal"}),
        ("--institution", "institution", {"help": "the institution it belonged to"}),
        ("--reason", "reason", {"help": "e.g. key_compromise, superseded"}),
    ]),
}


def _dest(option: str) -> str:
    return "v_" + option.lstrip("-").replace("-", "_")


def entity_from_args(command: str, args: argparse.Namespace) -> Entity:
    """The entity a put command describes; CliError naming the option when a value is bad."""
    kind, _, options = _PUTS[command]
    fields: dict[str, object] = {}
    flag_of: dict[str, str] = {}
    for option, column, _ in options:
        value = getattr(args, _dest(option), None)
        flag_of[column] = option
        if value is not None and value is not False:
            fields[column] = value
    try:
        return entity_from_fields(kind, fields)
    except FieldError as exc:
        if kind == "authorization" and exc.field == "institution" and "exactly one" in exc.message:
            raise CliError("give exactly one of --institution or --sector") from None
        where = flag_of.get(exc.field, exc.field)
        raise CliError(f"{where}: {exc.message}" if where else exc.message) from None


def _put(args: argparse.Namespace) -> int:
    entity = entity_from_args(args.directory_command, args)
    with _connect(args) as hub:
        revision = hub.apply([_change(entity)])
    _result(args, {"revision": revision}, f"revision {revision}")
    return 0


# -- remove ----------------------------------------------------------------------------------

_KEY_HELP = {
    "institution": "ENTERPRISE",
    "service": "ID [VERSION]",
    "authorization": "ID",
    "subscription": "ID",
    "integration": "SUBJECT INSTITUTION CAPACITY [BEGIN_DATE]",
    "replacement": "OLD_NUMBER",
    "revoked_certificate": "SERIAL",
}


def _wanted_key(kind: str, key: Sequence[str]) -> tuple[str, bool]:
    """The :func:`~node.core.directory.key_of` string ``key`` names, and whether it is exact
    (False: a prefix, when the optional last key field is left out)."""
    from datetime import date

    from node.core.identifiers import IdentifierError, parse_enterprise_number

    usage = f"remove {kind} takes {_KEY_HELP[kind]}"
    low, high = {"service": (1, 2), "integration": (3, 4)}.get(kind, (1, 1))
    if not low <= len(key) <= high:
        raise CliError(f"{usage}, got {len(key)} value(s)")
    try:
        if kind == "institution":
            return parse_enterprise_number(key[0]).number, True
        if kind == "service":
            if len(key) == 1:
                return f"{key[0]}/", False
            if not key[1].isdigit():
                raise CliError(f"remove service: VERSION must be a number, got {key[1]!r}")
            return f"{key[0]}/{int(key[1])}", True
        if kind == "integration":
            if not key[2].isdigit():
                raise CliError(f"remove integration: CAPACITY must be a number, got {key[2]!r}")
            head = f"{key[0]}/{parse_enterprise_number(key[1]).number}/{int(key[2])}/"
            if len(key) == 3:
                return head, False
            return head + date.fromisoformat(key[3]).isoformat(), True
        if kind == "revoked_certificate":
            return key[0].lower().replace(":", "").removeprefix("0x"), True
    except IdentifierError as exc:
        raise CliError(f"remove {kind}: {exc.message}") from None
    except ValueError:
        raise CliError(f"remove {kind}: {key[-1]!r} is not a date (YYYY-MM-DD)") from None
    return key[0], True


def _match(kind: str, key: Sequence[str], entities: Sequence[Entity]) -> Entity:
    """The one entity of ``kind`` that ``key`` (its key fields, the last maybe left out) names."""
    wanted, exact = _wanted_key(kind, key)
    found = [e for e in entities if kind_of(e) == kind
             and (key_of(e) == wanted if exact else key_of(e).startswith(wanted))]
    if not found:
        raise CliError(f"no {kind} {' '.join(key)} in the directory")
    if len(found) > 1:
        which = ", ".join(key_of(e) for e in found)
        raise CliError(f"{' '.join(key)} names several entries ({which}): "
                       f"remove {kind} takes {_KEY_HELP[kind]}")
    return found[0]


def _remove(args: argparse.Namespace) -> int:
    try:
        kind = kind_name(args.kind)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if kind in ("integration", "replacement") and not args.key_fields:
        raise CliError(f"remove integration takes {_KEY_HELP[kind]}")
    with _connect(args) as hub:
        # The hub lists integrations and replacements only per subject number.
        subject = args.key_fields[0] if kind in ("integration", "replacement") else ""
        _, entities = hub.show(SHOW_PARTS[kind], subject)
        entity = _match(kind, args.key_fields, entities)
        revision = hub.apply([_change(entity, delete=True)])
    _result(args, {"revision": revision, "removed": f"{kind} {key_of(entity)}"},
            f"revision {revision}")
    return 0


# -- import, show, compact -------------------------------------------------------------------


def _which_change(exc: grpc.RpcError, chunk: Sequence[Entity], start: int) -> str:
    """The hub names a refused change by its index in the request (``change`` in the
    refusal's ErrorInfo metadata): say which entry of the file that is."""
    from node.wire.errors import call_error

    index = call_error(exc).metadata.get("change", "")
    if not index.isdecimal() or int(index) >= len(chunk):
        return ""
    entity = chunk[int(index)]
    return f" [entry {start + int(index) + 1}: {kind_of(entity)} {key_of(entity)}]"


def _import(args: argparse.Namespace) -> int:
    entities = load_file(Path(args.file), args.kind)
    counts: dict[str, int] = {}
    for e in entities:
        counts[SECTIONS[kind_of(e)]] = counts.get(SECTIONS[kind_of(e)], 0) + 1
    summary = ", ".join(f"{n} {section}" for section, n in counts.items()) or "nothing"
    record: dict[str, Any] = {"file": args.file, "entries": len(entities), "counts": counts,
                              "dry_run": args.dry_run, "applied": 0, "calls": 0,
                              "revision": None}
    if args.dry_run:
        _result(args, record, f"{args.file}: {len(entities)} entries valid ({summary});"
                              " nothing sent (--dry-run)")
        return 0
    if not entities:
        _result(args, record, f"{args.file}: no entries")
        return 0
    if not 1 <= args.batch <= BATCH:
        raise CliError(f"--batch must be between 1 and {BATCH}, got {args.batch}")
    applied, calls, revision = 0, 0, 0
    with _connect(args) as hub:
        for start in range(0, len(entities), args.batch):
            chunk = entities[start:start + args.batch]
            try:
                revision = hub.apply([_change(e) for e in chunk])
            except grpc.RpcError as exc:
                done = (f"entries 1-{applied} were applied (revision {revision}); "
                        if applied else "nothing was imported; ")
                raise CliError(f"{_rpc_text(exc)}{_which_change(exc, chunk, start)} ({done}"
                               f"entries {start + 1}-{start + len(chunk)} of {len(entities)}"
                               " were refused)") from None
            applied += len(chunk)
            calls += 1
    _result(args, {**record, "applied": applied, "calls": calls, "revision": revision},
            f"imported {applied} entries ({summary}) in {calls} call{'s' * (calls > 1)}: "
            f"revision {revision}")
    return 0


def _table(entities: Sequence[Entity]) -> list[str]:
    lines: list[str] = []
    for kind, section in SECTIONS.items():
        rows = [entity_to_text_fields(e) for e in entities if kind_of(e) == kind]
        if not rows:
            continue
        columns = list(COLUMNS[kind])
        widths = [max(len(c), *(len(r[c]) for r in rows)) for c in columns]
        lines.append(f"{section} ({len(rows)})")
        lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for row in rows:
            lines.append("  ".join(row[c].ljust(w)
                                   for c, w in zip(columns, widths, strict=True)).rstrip())
        lines.append("")
    return lines


def _show(args: argparse.Namespace) -> int:
    part = ""
    if args.part:
        try:
            part = SHOW_PARTS[kind_name(args.part)]
        except ValueError as exc:
            raise CliError(str(exc)) from None
    elif args.subject:
        part = "integrations"
    if part in ("integrations", "replacements") and not args.subject:
        raise CliError(f"show {part} needs --subject NUMBER (the hub lists them per number)")
    with _connect(args) as hub:
        revision, entities = hub.show(part, args.subject or "")
    document = {"revision": revision, **entities_to_json(entities)}
    if args.json:  # the document on one line (directory import reads it too)
        _result(args, document, None)
    elif args.format == "json":  # the artefact: indented, to keep or import
        _say(args, json.dumps(document, indent=2))
    else:
        _say(args, f"revision {revision}")
        _say(args)
        for line in _table(entities) or ["(no entries)"]:
            _say(args, line)
    return 0


def _compact(args: argparse.Namespace) -> int:
    from node.wire.gen.crossroads.v1 import directory_pb2 as pb

    if args.keep_after < 0:
        raise CliError(f"--keep-after must be 0 or more, got {args.keep_after}")
    with _connect(args) as hub:
        response = hub.stub.Compact(pb.CompactRequest(keep_after=args.keep_after),
                                    timeout=hub.timeout)
    _result(args, {"compacted_revision": response.compacted_revision,
                   "removed": response.removed},
            f"compacted up to revision {response.compacted_revision}: "
            f"{response.removed} changes removed")
    return 0


# -- parser ----------------------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The connection options, accepted before or after the subcommand."""
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection to the hub")
    group.add_argument("--hub", metavar="HOST:PORT", default=default, help="the hub's address")
    group.add_argument("--ca-cert", metavar="FILE", default=default,
                       help="the network CA certificate")
    group.add_argument("--ca", dest="ca_cert", default=default, help=argparse.SUPPRESS)
    group.add_argument("--cert", metavar="FILE", default=default, help="your admin certificate")
    group.add_argument("--key", metavar="FILE", default=default, help="its private key")
    group.add_argument("--network", default=default,
                       help="network name (default: from the CA certificate)")
    group.add_argument("--timeout", type=float, metavar="SECONDS", default=default,
                       help=f"deadline of each call (default {DEFAULT_TIMEOUT:g})")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``directory`` command and its subcommands to a ``crossroads`` parser."""
    directory = subparsers.add_parser(
        "directory", help="administer the reference directory on the hub (admin certificate)",
        description="Administer the hub's reference directory. Needs an admin certificate.")
    _connection_options(directory, suppress=False)
    commands = directory.add_subparsers(dest="directory_command", metavar="COMMAND",
                                        required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text)
        _connection_options(p, suppress=True)
        json_option(p)
        return p

    for name, (kind, help_text, options) in _PUTS.items():
        p = command(name, help_text)
        exclusive = p.add_mutually_exclusive_group(required=True) \
            if kind == "authorization" else None
        for option, _, keywords in options:
            if keywords.get("action") != "store_true":
                keywords = {"metavar": option.lstrip("-").upper().replace("-", "_"), **keywords}
            target = exclusive if exclusive is not None and option in (
                "--institution", "--sector") else p
            target.add_argument(option, dest=_dest(option), **keywords)
        p.set_defaults(func=_guarded(_put))

    p = command("remove", "remove an entry (looked up on the hub first)")
    p.add_argument("kind", metavar="KIND",
                   help="institution, service, authorization, subscription, integration, "
                        "replacement or revoked")
    p.add_argument("key_fields", metavar="KEY", nargs="*", help="the key fields: " + "; ".join(
        f"{kind} {key}" for kind, key in _KEY_HELP.items()))
    p.set_defaults(func=_guarded(_remove))

    p = command("import", "validate a JSON or CSV file and apply it (5,000 changes per call)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--kind", help="what a CSV file holds (default: from the file name or header)")
    p.add_argument("--dry-run", action="store_true", help="only validate the file")
    p.add_argument("--batch", type=int, default=BATCH, help=f"changes per call (max {BATCH})")
    p.set_defaults(func=_guarded(_import))

    p = command("show", "print the directory (or one part of it)")
    p.add_argument("part", metavar="PART", nargs="?",
                   help="institutions, services, authorizations, subscriptions, replacements, "
                        "revoked or integrations (with --subject)")
    p.add_argument("--subject", help="a subject's integrations")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="json: the directory as one indented document, to keep or to import"
                        " again (--json: the same on one line)")
    p.set_defaults(func=_guarded(_show))

    p = command("compact", "drop change history (nodes further behind get a snapshot)")
    p.add_argument("--keep-after", type=int, default=0, metavar="REV",
                   help="keep changes after this revision (0 = the hub keeps the last 10,000)")
    p.set_defaults(func=_guarded(_compact))


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Stand-alone entry point: ``python -m node.cli.directory [directory] COMMAND ...``.

    ``stdout`` and ``stderr`` redirect the command's own output (argparse usage errors still
    go to sys.stderr)."""
    return run_alone("directory", register, argv, directory_stdout=stdout,
                     directory_stderr=stderr)


if __name__ == "__main__":
    sys.exit(main())
