"""The ``crossroads`` command: daemons, application tools, audit, PKI, demo.

This is the only module that reads files and the environment; everything it builds gets
validated values.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib.metadata
import json
import os
import sys
import tomllib
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.runner import CliError, read_toml
from pki.output import Parser, emit, failure, json_line, json_option, out_option, wants_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.client import LocalClient
    from node.config import HubConfig, NodeConfig
    from node.store.data_dir import StateLayout
    from node.wire.gen.crossroads.v1 import envelope_pb2

__all__ = ["main"]


def _load_toml(path: Path) -> dict[str, object]:
    try:
        return read_toml(path)
    except CliError as exc:
        raise SystemExit(f"crossroads: error: {exc}") from None


def _run_async(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


def _serve(args: argparse.Namespace, role: str) -> int:
    from node import logs
    from node.config import ConfigError, hub_config, node_config

    path = Path(args.config).resolve()
    table = _load_toml(path)
    try:
        config = (hub_config if role == "hub" else node_config)(table, path.parent)
    except ConfigError as exc:
        return _print_problems(args, path, exc.problems)
    logs.configure(config.log_level, role=role)
    # A crash below Python (a segfault in a C extension) leaves every thread's Python stack
    # on stderr, i.e. in the journal, instead of a process that is just gone.
    faulthandler.enable()
    from node.app import HubApp, NodeApp, serve_forever
    from node.store.data_dir import DataDirError

    if getattr(args, "init_only", False):  # crossroads hub|node init
        return _init_state(args, config, role, path)
    ready = Path(args.ready_file) if args.ready_file else None
    try:
        app = (HubApp(config, init=args.init) if role == "hub"  # type: ignore[arg-type]
               else NodeApp(config, init=args.init))  # type: ignore[arg-type]
        _run_async(serve_forever(app, ready, read_config=_config_reader(role, path)))
    except ConfigError as exc:  # the start-up self-checks (node/selfcheck.py)
        return _print_problems(args, path, exc.problems)
    except DataDirError as exc:  # checked when the app is built, and when its stores open
        print(f"crossroads: error: {role} refuses to start: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one clear line and a failing exit status
        print(f"crossroads: error: {role} could not start: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    return 0


def _config_reader(role: str, path: Path) -> Callable[[], HubConfig | NodeConfig]:
    """Reads the daemon's configuration file again (SIGHUP, node/reload.py): ConfigError
    when it is gone, not TOML or not a valid configuration (never an exit)."""
    from node.config import ConfigError, hub_config, node_config

    def read() -> HubConfig | NodeConfig:
        try:
            table = read_toml(path)
        except CliError as exc:
            raise ConfigError(str(exc)) from None
        return (hub_config if role == "hub" else node_config)(table, path.parent)

    return read


def _init(args: argparse.Namespace, role: str) -> int:
    """``crossroads hub|node init``: create the state on a first start (idempotent)."""
    args.init_only = True
    return _serve(args, role)


def _init_state(args: argparse.Namespace, config: object, role: str, path: Path) -> int:
    from node.app import init_state
    from node.config import ConfigError
    from node.store.data_dir import DataDirError

    try:
        fresh = asyncio.run(init_state(config))  # type: ignore[arg-type]
    except ConfigError as exc:  # the start-up self-checks (node/selfcheck.py)
        return _print_problems(args, path, exc.problems)
    except DataDirError as exc:
        return failure("crossroads", f"{role} init refused: {exc}", 1, "REFUSED", wants_json(args),
                       command=f"{role} init")
    data_dir = config.data_dir  # type: ignore[attr-defined]
    emit(args, {"role": role, "data_dir": data_dir, "created": fresh},
         f"{role} state {'created' if fresh else 'already present'} in {data_dir}")
    return 0


def _node_data(args: argparse.Namespace) -> Path:
    """The node's node.sqlite, from --config (must exist: these commands create nothing)."""
    from node.config import ConfigError, node_config

    path = Path(args.config).resolve()
    try:
        config = node_config(read_toml(path), path.parent)
    except ConfigError as exc:
        raise CliError(f"{path}: {exc}") from None
    db = config.data_dir / "node.sqlite"
    if not db.exists():
        raise CliError(f"no node state at {db} (data_dir)")
    return db


def _state_layout(args: argparse.Namespace, role: str) -> StateLayout:
    """The daemon's state (its SQLite databases and files), from --config."""
    from node.app import node_layout
    from node.config import ConfigError, StoreBackend, hub_config, node_config
    from node.store.backend import hub_layout

    path = Path(args.config).resolve()
    try:
        if role == "node":
            return node_layout(node_config(read_toml(path), path.parent))
        config = hub_config(read_toml(path), path.parent)
    except ConfigError as exc:
        raise CliError(f"{path}: {exc}") from None
    if config.store.backend is StoreBackend.POSTGRESQL:
        raise CliError("this hub keeps its state in PostgreSQL: back up the database with its"
                       " own tools (docs/OPERATIONS.md, \"Running the hub on PostgreSQL\")")
    return hub_layout(config)


def _backup(args: argparse.Namespace, role: str) -> int:
    """``crossroads hub|node backup``: a consistent copy of the state while it serves."""
    from node.store.backup import BackupError, backup

    try:
        manifest = backup(_state_layout(args, role), Path(args.out))
    except (BackupError, OSError) as exc:
        raise CliError(f"backup failed: {exc}") from None
    emit(args, {"role": role, "out": args.out, "files": sorted(manifest.files),
                "taken_at": manifest.taken_at},
         f"{role} state backed up to {args.out}: {', '.join(sorted(manifest.files))}"
         f" ({manifest.taken_at})")
    return 0


def _restore(args: argparse.Namespace, role: str) -> int:
    """``crossroads hub|node restore``: the state from a backup, the daemon stopped."""
    from node.store.backup import BackupError, restore
    from node.store.data_dir_guard import DataDirInUse

    layout = _state_layout(args, role)
    try:
        moved = restore(layout, Path(args.source), replace=args.replace)
    except (BackupError, DataDirInUse, OSError) as exc:
        raise CliError(f"restore refused: {exc}") from None
    emit(args, {"role": role, "data_dir": layout.data_dir, "source": args.source,
                "moved_aside_to": moved},
         f"{role} state restored into {layout.data_dir} from {args.source}"
         + (f"; what was there is in {moved}" if moved else ""))
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    """``crossroads node checkpoint``: the hub's latest audit checkpoint this node has seen,
    as JSON (for ``crossroads audit verify --checkpoint``): an artefact, written as it is
    (indented JSON), to ``--out`` or stdout."""
    from node.store.node_store import stored_checkpoint

    cp = stored_checkpoint(_node_data(args))
    if cp is None:
        raise CliError("this node has seen no signed checkpoint of the hub yet")
    text = json.dumps(cp.to_json(), indent=1, sort_keys=True) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _accept_hub_state(args: argparse.Namespace) -> int:
    """``crossroads node accept-hub-state``: the operator takes the hub's lost state as the
    new baseline (node stopped); see docs/OPERATIONS.md, "Damaged state"."""
    from node.store.node_store import accept_hub_state

    found = accept_hub_state(_node_data(args))
    if found is None:
        emit(args, {"accepted": None, "lost_at_hub_sequences": []},
             "no hub state regression recorded: nothing to accept")
        return 0
    lost = ([found.hub_acked_seq + 1, found.node_acked_seq]
            if found.node_acked_seq > found.hub_acked_seq else [])
    record = {"accepted": found.to_json(), "lost_at_hub_sequences": lost}
    emit(args, record, "accepted the hub's state as the new baseline: "
         + json.dumps(record["accepted"], sort_keys=True)
         + (f"; the hub lost sequences {lost[0]}-{lost[1]} (submitted again)" if lost else ""))
    return 0


def _print_problems(args: argparse.Namespace, path: Path,
                    problems: tuple[str, ...] | list[str]) -> int:
    """A config's problems: a line each (``--json``: one JSON object listing them); exit 2."""
    if wants_json(args):
        prog = " ".join(["crossroads", args.command, getattr(args, "action", "")]).strip()
        return failure(prog, "; ".join(problems), 2, "CONFIG", True,
                       extra={"config": path, "problems": list(problems)})
    for problem in problems:
        print(f"crossroads: error: {path}: {problem}", file=sys.stderr)
    return 2


def _check_config(args: argparse.Namespace, role: str) -> int:
    """Every problem of a hub or node config at once (exit 2), or a short OK (exit 0)."""
    from node.config import read_hub_config, read_node_config
    from node.selfcheck import hub_problems, node_problems

    path = Path(args.config).resolve()
    try:
        with path.open("rb") as f:
            table = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return _print_problems(args, path, [f"cannot read the config: {exc}"])
    if role == "hub":
        hub, problems = read_hub_config(table, path.parent)
        problems += hub_problems(hub)
    else:
        node, problems = read_node_config(table, path.parent)
        problems += node_problems(node)
    if wants_json(args):  # the problems are the result: on stdout
        emit(args, {"config": path, "role": role, "ok": not problems, "problems": problems}, None)
        return 2 if problems else 0
    if problems:
        _print_problems(args, path, problems)
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        return 2
    print(f"{path}: OK ({role})")
    return 0


def _local_client(args: argparse.Namespace) -> LocalClient:
    """A client for the node at ``--local-api``, probed first: an unreachable node is
    reported at once, naming the address (node/cli/outcomes.py)."""
    from node.cli.outcomes import probe
    from node.client import LocalClient

    probe(args.local_api)
    return LocalClient(args.local_api, wait_for_ready=False)


def _message_record(message: Any) -> dict[str, Any]:
    """A protobuf message as a record of the output conventions (pki/output.py): its fields by
    their proto names (snake_case), every field present (unset messages: None), enums by
    name, 64-bit integers as numbers; ``*_unix_us`` times and bytes are converted by
    :func:`pki.output.plain` when printed."""
    record: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            record[field.name] = [_field_value(field, v) for v in value]
        elif field.message_type is not None and not message.HasField(field.name):
            record[field.name] = None
        else:
            record[field.name] = _field_value(field, value)
    return record


def _field_value(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        return _message_record(value)
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    return value


def _send(args: argparse.Namespace) -> int:
    from node.cli.outcomes import Exit
    from node.client import make_envelope

    if args.ticket and (args.ticket_prefix or args.count != 1):
        return failure("crossroads send", "--ticket is one envelope's ticket: not with --count"
                       " or --ticket-prefix", Exit.USAGE, "USAGE", args.json)
    if args.ticket or args.ticket_prefix:
        tickets = [args.ticket] if args.ticket else [
            f"{args.ticket_prefix}{i}" for i in range(args.count)]
    else:  # one of ours, printed with the result: the key to retry with
        generated = uuid.uuid4().hex
        tickets = [generated] if args.count == 1 else [f"{generated}-{i}" for i in range(args.count)]
    payload = (args.payload or "").encode()
    envelopes = [
        make_envelope(
            args.service, args.to, payload, subject_citizen=args.subject_citizen or "",
            subject_enterprise=args.subject_enterprise or "", capacity=args.capacity,
            sender_ticket=ticket, service_version=args.service_version,
        )
        for ticket in tickets
    ]
    refused = pending = 0
    with _local_client(args) as client:
        for start in range(0, len(envelopes), args.batch):
            outcomes, seqs = client.submit(envelopes[start:start + args.batch])
            if args.wait:
                decided = client.outcomes([s for s in seqs if s], wait_ms=args.wait_ms)
                by_seq = dict(zip([s for s in seqs if s], decided, strict=True))
                outcomes = [by_seq.get(s, o) if s else o for o, s in zip(outcomes, seqs, strict=True)]
            for o, s, ticket in zip(outcomes, seqs, tickets[start:], strict=False):
                refused += o.reason not in ("ACCEPTED", "DUPLICATE", "PENDING")
                pending += o.reason == "PENDING"
                emit(args, {"sequence": s, "reason": o.reason, "detail": o.detail,
                             "hub_ticket": o.hub_ticket, "receivers": list(o.receivers),
                             "sender_ticket": ticket},
                      f"{o.reason} sequence={s} ticket={ticket}"
                      + (f" hub_ticket={o.hub_ticket}" if o.hub_ticket else "")
                      + (f" receivers={','.join(o.receivers)}" if o.receivers else "")
                      + (f" ({o.detail})" if o.detail else ""))
    if refused:
        return Exit.NEGATIVE
    if pending:
        retry = (f"--ticket {tickets[0]}" if len(tickets) == 1 else
                 f"--ticket-prefix {tickets[0][:-1]}")
        message = f"{pending} still pending at the hub; safe to retry with {retry}"
        if args.json:
            return failure("crossroads send", message, Exit.PENDING, "PENDING", True)
        print(f"crossroads send: {message}", file=sys.stderr)
        return Exit.PENDING
    return Exit.DONE


def _inbox(args: argparse.Namespace) -> int:
    with _local_client(args) as client:
        envelopes = client.fetch(args.max, wait_ms=args.wait_ms)
        for e in envelopes:
            payload = e.payload.data.decode("utf-8", "replace")
            emit(args, {
                "hub_ticket": e.hub_ticket, "sender": e.sender, "service_id": e.service_id,
                "sender_ticket": e.sender_ticket, "subject": e.subject.number,
                "received_at_unix_us": e.received_at_unix_us, "payload": e.payload.data,
            }, f"{e.hub_ticket} from={e.sender} service={e.service_id}"
               f" ticket={e.sender_ticket} subject={e.subject.number} payload={payload!r}")
        if args.ack and envelopes:
            client.acknowledge([e.hub_ticket for e in envelopes])
    return 0


def _consult(args: argparse.Namespace) -> int:
    from node.cli.outcomes import Exit, probe
    from node.client import consult, make_envelope
    from node.wire.gen.crossroads.v1 import consult_pb2

    question = make_envelope(args.service, [], b"", subject_citizen=args.subject_citizen or "",
                             subject_enterprise=args.subject_enterprise or "",
                             capacity=args.capacity, sender_ticket=args.ticket)
    probe(args.local_api)
    response = consult(args.local_api, question, args.deadline_ms, wait_for_ready=False)
    status = consult_pb2.ConsultStatus.Name(response.status)
    emit(args, _message_record(response), "\n".join(
        [f"{status} hub_ticket={response.hub_ticket}"
         + (f" ({response.outcome.detail})" if response.outcome.detail else "")]
        + [f"  {json_line(_message_record(part))}" for part in response.parts]))
    return {consult_pb2.DATA_FOUND: Exit.DONE,
            consult_pb2.INCOMPLETE_DATA: Exit.UNAVAILABLE}.get(response.status, Exit.NEGATIVE)


def _answer(args: argparse.Namespace) -> int:
    from node.cli.outcomes import probe
    from node.client import serve_answers
    from node.wire.gen.crossroads.v1 import consult_pb2

    async def handler(envelope: envelope_pb2.Envelope) -> tuple[int, bytes]:
        status = consult_pb2.SOURCE_DATA if args.data else consult_pb2.SOURCE_NO_DATA
        emit(args, {"hub_ticket": envelope.hub_ticket, "sender": envelope.sender,
                     "service_id": envelope.service_id, "subject": envelope.subject.number,
                     "status": consult_pb2.SourceStatus.Name(status)},
              f"answered {envelope.hub_ticket} from={envelope.sender}"
              f" service={envelope.service_id} {consult_pb2.SourceStatus.Name(status)}")
        return status, args.data.encode()

    probe(args.local_api)
    try:
        _run_async(serve_answers(args.local_api, handler))
    except KeyboardInterrupt:  # the way to stop a provider
        return 0
    # The node ended the stream (it stopped): not done answering.
    return failure("crossroads answer", f"the node at {args.local_api} closed the stream", 3,
                   "STREAM_CLOSED", args.json)


def _status(args: argparse.Namespace) -> int:
    with _local_client(args) as client:
        record = _message_record(client.status())
    emit(args, record, "\n".join(f"{k}: {v}" for k, v in record.items()))
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from node import sandbox

    root = Path(args.dir)
    try:
        if args.action == "up":
            guide = sandbox.up(root, args.nodes)
            emit(args, {"dir": root.resolve(), **sandbox.state_of(root)}, guide)
            return 0
        if args.action == "status":
            healthy, report, processes = sandbox.status(root)
            if args.json:
                for record in processes:
                    emit(args, record, None)
            else:
                print(report)
            return 0 if healthy else 1
        text, record = sandbox.down(root, purge=args.purge)
        emit(args, record, text)
        return 0
    except sandbox.SandboxError as exc:
        return failure(f"crossroads sandbox {args.action}", str(exc), 1, "REFUSED", args.json)


def _demo(args: argparse.Namespace) -> int:
    from node.demo import run_demo

    return run_demo(Path(args.dir) if args.dir else None, args.envelopes)


def _bench(args: argparse.Namespace) -> int:
    from benchmarks.cli import run

    return run(args)


def _bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``crossroads bench``: defined here, run by :mod:`benchmarks.cli` (benchmarks/README.md)."""
    bench = sub.add_parser(
        "bench", help="run the benchmark suite or parts of it (benchmarks/README.md)",
        description="Run benchmark programs (all of them in order when no PART is named): a JSON"
                    " result and a PNG plot per program (the plot needs `pip install"
                    " 'crossroads[bench]'`). `crossroads bench plot FILE...` re-plots result"
                    " files. Exit status: 0 ok, 1 a part failed, 2 refused arguments or --compare"
                    " file, 3 results written but no plot (matplotlib missing).",
        usage="crossroads bench [PART ...] [options] [[--] ARGS]  |  crossroads bench plot FILE ...",
        allow_abbrev=False)
    bench.add_argument("parts", nargs="*", metavar="PART",
                       help="micro, e2e, mutations, consult_relay, consult, consult_hub, directory,"
                            " audit; other options (ARGS, or anything after --) go to the one PART"
                            " named (to e2e if none is)")
    bench.add_argument("--quick", action="store_true",
                       help="small sizes: a smoke run of every part in minutes, not figures")
    bench.add_argument("--compare", action="append", metavar="FILE",
                       help="a previous result file: print old, new and new/old per figure and"
                            " store it in the new result (repeatable: one per program)")
    bench.add_argument("--out", metavar="DIR", help="results directory (benchmarks/results)")
    json_option(bench, "report (one per run of the command; the parts' summaries go to stderr)")
    bench.add_argument("--no-plot", action="store_true", help="write no PNG")
    bench.set_defaults(func=_bench, takes_unknown_args=True)


def _app_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                help_text: str, func: object, local_api_help: str | None = None
                ) -> argparse.ArgumentParser:
    """An application command: talks to a node's local API; the exit codes in its --help."""
    from node.cli.outcomes import EXIT_CODES_HELP

    parser = sub.add_parser(name, help=help_text, epilog=EXIT_CODES_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _env_option(parser, "--local-api", LOCAL_API_ENV, local_api_help or "the node's local API")
    parser.set_defaults(func=func)
    return parser


#: Environment defaults of ``--local-api`` and ``--config`` (a flag given wins).
LOCAL_API_ENV = "CROSSROADS_LOCAL_API"
CONFIG_ENV = "CROSSROADS_CONFIG"


def _env_option(parser: argparse.ArgumentParser, flag: str, env: str, help_text: str) -> None:
    """``flag``, required unless ``env`` is set (then its default)."""
    default = os.environ.get(env) or None
    parser.add_argument(flag, default=default, required=default is None,
                        help=f"{help_text} (default: ${env})")


def _subject_options(parser: argparse.ArgumentParser) -> None:
    """Whom an envelope is about, and in which capacity the sender asks."""
    parser.add_argument("--subject-citizen")
    parser.add_argument("--subject-enterprise")
    parser.add_argument("--capacity", type=int, default=0)


def _version() -> str:
    """The installed distribution's version (its metadata: one source, pyproject.toml)."""
    try:
        return importlib.metadata.version("crossroads")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="crossroads", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    for role in ("hub", "node"):
        p = sub.add_parser(role, help=f"the {role} daemon")
        rs = p.add_subparsers(dest="action", required=True)
        serve = rs.add_parser("serve", help=f"run the {role} in the foreground")
        _env_option(serve, "--config", CONFIG_ENV, f"{role}.toml")
        serve.add_argument("--ready-file", help="write {pid, ports} as JSON here when serving")
        serve.add_argument("--init", action="store_true",
                           help="first start: create the state if the data directory holds"
                                " none (without it, a missing state refuses to start)")
        serve.set_defaults(func=lambda a, r=role: _serve(a, r))
        init = rs.add_parser("init", help=f"create the {role}'s state on a first start"
                                          " (idempotent; refuses a partial data directory)")
        _env_option(init, "--config", CONFIG_ENV, f"{role}.toml")
        json_option(init)
        init.set_defaults(func=lambda a, r=role: _init(a, r))
        check = rs.add_parser(
            "check-config",
            help=f"check {role}.toml and the files it names (certificate, key, CA, CRL):"
                 " every problem at once, exit 2 if any")
        _env_option(check, "--config", CONFIG_ENV, f"{role}.toml")
        json_option(check, "config's verdict (its problems in a list)")
        check.set_defaults(func=lambda a, r=role: _check_config(a, r))
        bk = rs.add_parser("backup", help=f"copy the {role}'s state (SQLite) while it serves:"
                                          " consistent, checked, with a manifest")
        _env_option(bk, "--config", CONFIG_ENV, f"{role}.toml")
        bk.add_argument("--out", required=True, help="a new (or empty) directory")
        json_option(bk)
        bk.set_defaults(func=lambda a, r=role: _backup(a, r))
        rt = rs.add_parser("restore", help=f"put a backup back as the {role}'s state ({role}"
                                           " stopped)")
        _env_option(rt, "--config", CONFIG_ENV, f"{role}.toml")
        rt.add_argument("--from", dest="source", required=True, help="the backup's directory")
        rt.add_argument("--replace", action="store_true",
                        help="move the state there aside (<data_dir>.before-restore-<time>)")
        json_option(rt)
        rt.set_defaults(func=lambda a, r=role: _restore(a, r))
        if role == "node":
            st = _app_parser(rs, "status", "the node's counters and directory fragment state",
                             _status, local_api_help="unix:/path or host:port")
            json_option(st)
            cp = rs.add_parser("checkpoint", help="the hub's latest signed audit checkpoint this"
                                                  " node has seen (JSON, for audit verify)")
            _env_option(cp, "--config", CONFIG_ENV, "node.toml")
            out_option(cp)
            cp.set_defaults(func=_checkpoint)
            acc = rs.add_parser("accept-hub-state",
                                help="after a hub lost state: take what it now presents as the"
                                     " baseline and submit again (node stopped)")
            _env_option(acc, "--config", CONFIG_ENV, "node.toml")
            json_option(acc)
            acc.set_defaults(func=_accept_hub_state)

    send = _app_parser(sub, "send", "submit envelopes through a node's local API", _send,
                       local_api_help="unix:/path or host:port")
    send.add_argument("--service", required=True)
    send.add_argument("--service-version", type=int, default=0)
    send.add_argument("--to", action="append", required=True, help="receiver enterprise number")
    _subject_options(send)
    send.add_argument("--payload", default="")
    send.add_argument("--count", type=int, default=1)
    send.add_argument("--batch", type=int, default=1000)
    send.add_argument("--ticket", default="",
                      help="the envelope's sender ticket: sending again with the same ticket"
                           " does not send it twice (default: a new one, printed)")
    send.add_argument("--ticket-prefix", default="",
                      help="with --count: ticket PREFIX0, PREFIX1, ...")
    send.add_argument("--wait", action="store_true", help="wait for the hub's outcomes")
    send.add_argument("--wait-ms", type=int, default=30_000)
    json_option(send)

    inbox = _app_parser(sub, "inbox", "read received envelopes from a node's local API", _inbox)
    inbox.add_argument("--max", type=int, default=100)
    inbox.add_argument("--wait-ms", type=int, default=0)
    inbox.add_argument("--ack", action="store_true", help="acknowledge what was printed")
    json_option(inbox)

    ask = _app_parser(sub, "consult", "ask a question through a node (consultation)", _consult)
    ask.add_argument("--service", required=True)
    _subject_options(ask)
    ask.add_argument("--ticket", default="", help="your own ticket for this question")
    ask.add_argument("--deadline-ms", type=int, default=5_000)
    json_option(ask)

    answer = _app_parser(sub, "answer", "answer consultations at a node (a simple provider)",
                         _answer)
    answer.add_argument("--data", default="", help="answer every question with this (else: no data)")
    json_option(answer)

    status = _app_parser(sub, "status", "a node's counters, from its local API", _status)
    json_option(status)

    from node.cli.audit import register as register_audit

    register_audit(sub)

    box = sub.add_parser("sandbox", help="a local network that stays up (hub, nodes, a directory,"
                                         " answering providers) to try the commands on")
    box_actions = box.add_subparsers(dest="action", required=True)
    box_help = {"up": "start it (configs, certificates and state in --dir) and print the"
                      " commands to use it",
                "status": "which of its processes run, and each node's view (exit 1: not all)",
                "down": "stop its processes (the files stay; --purge removes them)"}
    for action, text in box_help.items():
        p = box_actions.add_parser(action, help=text)
        p.add_argument("--dir", default="crossroads-sandbox",
                       help="the sandbox's directory (default: ./crossroads-sandbox)")
        p.set_defaults(func=_sandbox)
        if action == "up":
            p.add_argument("--nodes", type=int, default=3, help="institution nodes, 2 to 7")
        if action == "down":
            p.add_argument("--purge", action="store_true", help="remove the directory too")
        json_option(p)
    demo = sub.add_parser("demo", help="run the local demo network (hub + 7 institution nodes) and stop")
    demo.add_argument("--dir", help="work directory (default: a temporary one)")
    demo.add_argument("--envelopes", type=int, default=3000)
    demo.set_defaults(func=_demo)

    _bench_parser(sub)

    from node.cli.directory import register as register_directory
    from pki.cli import register

    register(sub)
    register_directory(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (argcomplete's hook:
        import argcomplete  # `eval "$(register-python-argcomplete crossroads)"`); it answers

        argcomplete.autocomplete(parser)  # and exits
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "takes_unknown_args", False):
        message = f"unrecognized arguments: {' '.join(unknown)}"
        if wants_json(args):  # as Parser.error while a --json command line is parsed
            raise SystemExit(failure(parser.prog, message, 2, "USAGE", True))
        parser.error(message)
    args.unknown_args = unknown  # a command that takes them hands them on (bench: to a part)
    from node.cli.outcomes import run_guarded

    command = " ".join(a for a in (args.command, getattr(args, "action", None)) if a)
    return run_guarded(command, lambda: args.func(args), wants_json(args))

