"""The ``crossroads`` command: daemons, application tools, audit, PKI, demo.

This is the only module that reads files and the environment; everything it builds gets
validated values.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import sys
import tomllib
from pathlib import Path

__all__ = ["main"]


def _load_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SystemExit(f"crossroads: error: config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SystemExit(f"crossroads: error: {path}: {exc}") from None


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
        _print_problems(path, exc.problems)
        return 2
    logs.configure(config.log_level, role=role)
    # A crash below Python (a segfault in a C extension) leaves every thread's Python stack
    # on stderr, i.e. in the journal, instead of a process that is just gone.
    faulthandler.enable()
    from node.app import HubApp, NodeApp, serve_forever
    from node.store.data_dir import DataDirError

    if getattr(args, "init_only", False):  # crossroads hub|node init
        return _init_state(config, role, path)
    ready = Path(args.ready_file) if args.ready_file else None
    try:
        app = (HubApp(config, init=args.init) if role == "hub"  # type: ignore[arg-type]
               else NodeApp(config, init=args.init))  # type: ignore[arg-type]
    except ConfigError as exc:  # the start-up self-checks (node/selfcheck.py)
        _print_problems(path, exc.problems)
        return 2
    except DataDirError as exc:
        print(f"crossroads: error: {role} refuses to start: {exc}", file=sys.stderr)
        return 1
    try:
        _run_async(serve_forever(app, ready))
    except DataDirError as exc:
        print(f"crossroads: error: {role} refuses to start: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one clear line and a failing exit status
        print(f"crossroads: error: {role} could not start: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    return 0


def _init(args: argparse.Namespace, role: str) -> int:
    """``crossroads hub|node init``: create the state on a first start (idempotent)."""
    args.init_only = True
    return _serve(args, role)


def _init_state(config: object, role: str, path: Path) -> int:
    from node.app import init_state
    from node.config import ConfigError
    from node.store.data_dir import DataDirError

    try:
        fresh = asyncio.run(init_state(config))  # type: ignore[arg-type]
    except ConfigError as exc:  # the start-up self-checks (node/selfcheck.py)
        _print_problems(path, exc.problems)
        return 2
    except DataDirError as exc:
        print(f"crossroads: error: {role} init refused: {exc}", file=sys.stderr)
        return 1
    print(f"{role} state {'created' if fresh else 'already present'} in"
          f" {config.data_dir}")  # type: ignore[attr-defined]
    return 0


def _node_data(args: argparse.Namespace) -> Path:
    """The node's node.sqlite, from --config (must exist: these commands create nothing)."""
    from node.config import ConfigError, node_config

    path = Path(args.config).resolve()
    try:
        config = node_config(_load_toml(path), path.parent)
    except ConfigError as exc:
        raise SystemExit(f"crossroads: error: {path}: {exc}") from None
    db = config.data_dir / "node.sqlite"
    if not db.exists():
        raise SystemExit(f"crossroads: error: no node state at {db} (data_dir)")
    return db


def _checkpoint(args: argparse.Namespace) -> int:
    """``crossroads node checkpoint``: the hub's latest audit checkpoint this node has seen,
    as JSON (for ``crossroads audit verify --checkpoint``)."""
    from node.store.node_store import stored_checkpoint

    cp = stored_checkpoint(_node_data(args))
    if cp is None:
        print("crossroads: error: this node has seen no signed checkpoint of the hub yet",
              file=sys.stderr)
        return 1
    text = json.dumps(cp.to_json(), indent=1, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _accept_hub_state(args: argparse.Namespace) -> int:
    """``crossroads node accept-hub-state``: the operator takes the hub's lost state as the
    new baseline (node stopped); see docs/OPERATIONS.md, "Damaged state"."""
    from node.store.node_store import accept_hub_state

    found = accept_hub_state(_node_data(args))
    if found is None:
        print("no hub state regression recorded: nothing to accept")
        return 0
    print(json.dumps({"accepted": found.to_json(),
                      "lost_at_hub_sequences": [found.hub_acked_seq + 1, found.node_acked_seq]
                      if found.node_acked_seq > found.hub_acked_seq else []}, indent=2))
def _print_problems(path: Path, problems: tuple[str, ...] | list[str]) -> None:
    for problem in problems:
        print(f"crossroads: error: {path}: {problem}", file=sys.stderr)


def _check_config(args: argparse.Namespace, role: str) -> int:
    """Every problem of a hub or node config at once (exit 2), or a short OK (exit 0)."""
    from node.config import read_hub_config, read_node_config
    from node.selfcheck import hub_problems, node_problems

    path = Path(args.config).resolve()
    try:
        with path.open("rb") as f:
            table = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        _print_problems(path, [f"cannot read the config: {exc}"])
        return 2
    if role == "hub":
        hub, problems = read_hub_config(table, path.parent)
        problems += hub_problems(hub)
    else:
        node, problems = read_node_config(table, path.parent)
        problems += node_problems(node)
    if problems:
        _print_problems(path, problems)
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        return 2
    print(f"{path}: OK ({role})")
    return 0


def _send(args: argparse.Namespace) -> int:
    from node.client import LocalClient, make_envelope

    payload = (args.payload or "").encode()
    envelopes = [
        make_envelope(
            args.service, args.to, payload, subject_citizen=args.subject_citizen or "",
            subject_enterprise=args.subject_enterprise or "", capacity=args.capacity,
            sender_ticket=f"{args.ticket_prefix}{i}" if args.ticket_prefix else "",
            service_version=args.service_version,
        )
        for i in range(args.count)
    ]
    refused = 0
    with LocalClient(args.local_api) as client:
        for start in range(0, len(envelopes), args.batch):
            outcomes, seqs = client.submit(envelopes[start:start + args.batch])
            if args.wait:
                decided = client.outcomes([s for s in seqs if s], wait_ms=args.wait_ms)
                by_seq = dict(zip([s for s in seqs if s], decided, strict=True))
                outcomes = [by_seq.get(s, o) if s else o for o, s in zip(outcomes, seqs, strict=True)]
            for o, s in zip(outcomes, seqs, strict=True):
                refused += o.reason not in ("ACCEPTED", "DUPLICATE")
                print(json.dumps({"sequence": s, "reason": o.reason, "detail": o.detail,
                                  "hub_ticket": o.hub_ticket, "receivers": list(o.receivers)}))
    return 1 if refused else 0


def _inbox(args: argparse.Namespace) -> int:
    from node.client import LocalClient

    with LocalClient(args.local_api) as client:
        envelopes = client.fetch(args.max, wait_ms=args.wait_ms)
        for e in envelopes:
            print(json.dumps({
                "hub_ticket": e.hub_ticket, "sender": e.sender, "service_id": e.service_id,
                "sender_ticket": e.sender_ticket, "subject": e.subject.number,
                "received_at_unix_us": e.received_at_unix_us,
                "payload": e.payload.data.decode("utf-8", "replace"),
            }))
        if args.ack and envelopes:
            client.acknowledge([e.hub_ticket for e in envelopes])
    return 0


def _consult(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from node.client import consult, make_envelope

    question = make_envelope(args.service, [], b"", subject_citizen=args.subject_citizen or "",
                             subject_enterprise=args.subject_enterprise or "",
                             capacity=args.capacity, sender_ticket=args.ticket)
    response = consult(args.local_api, question, args.deadline_ms)
    print(json.dumps(MessageToDict(response), indent=2))
    return 0 if response.status in (1, 2) else 1


def _answer(args: argparse.Namespace) -> int:
    from node.client import serve_answers
    from node.wire.gen.crossroads.v1 import consult_pb2

    async def handler(envelope: object) -> tuple[int, bytes]:
        if args.data:
            return consult_pb2.SOURCE_DATA, args.data.encode()
        return consult_pb2.SOURCE_NO_DATA, b""

    try:
        _run_async(serve_answers(args.local_api, handler))
    except KeyboardInterrupt:
        pass
    return 0


def _status(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from node.client import LocalClient

    with LocalClient(args.local_api) as client:
        print(json.dumps(MessageToDict(client.status(), always_print_fields_with_no_presence=True),
                         indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from node.demo import run_demo

    return run_demo(Path(args.dir) if args.dir else None, args.envelopes)


def _bench(args: argparse.Namespace) -> int:
    from benchmarks.e2e import main as bench_main

    return bench_main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossroads", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    for role in ("hub", "node"):
        p = sub.add_parser(role, help=f"the {role} daemon")
        rs = p.add_subparsers(dest="action", required=True)
        serve = rs.add_parser("serve", help=f"run the {role} in the foreground")
        serve.add_argument("--config", required=True, help=f"{role}.toml")
        serve.add_argument("--ready-file", help="write {pid, ports} as JSON here when serving")
        serve.add_argument("--init", action="store_true",
                           help="first start: create the state if the data directory holds"
                                " none (without it, a missing state refuses to start)")
        serve.set_defaults(func=lambda a, r=role: _serve(a, r))
        init = rs.add_parser("init", help=f"create the {role}'s state on a first start"
                                          " (idempotent; refuses a partial data directory)")
        init.add_argument("--config", required=True, help=f"{role}.toml")
        init.set_defaults(func=lambda a, r=role: _init(a, r))
        check = rs.add_parser(
            "check-config",
            help=f"check {role}.toml and the files it names (certificate, key, CA, CRL):"
                 " every problem at once, exit 2 if any")
        check.add_argument("--config", required=True, help=f"{role}.toml")
        check.set_defaults(func=lambda a, r=role: _check_config(a, r))
        if role == "node":
            st = rs.add_parser("status", help="the node's counters and directory fragment state")
            st.add_argument("--local-api", required=True, help="unix:/path or host:port")
            st.set_defaults(func=_status)
            cp = rs.add_parser("checkpoint", help="the hub's latest signed audit checkpoint this"
                                                  " node has seen (JSON, for audit verify)")
            cp.add_argument("--config", required=True, help="node.toml")
            cp.add_argument("-o", "--output", help="write here instead of stdout")
            cp.set_defaults(func=_checkpoint)
            acc = rs.add_parser("accept-hub-state",
                                help="after a hub lost state: take what it now presents as the"
                                     " baseline and submit again (node stopped)")
            acc.add_argument("--config", required=True, help="node.toml")
            acc.set_defaults(func=_accept_hub_state)

    send = sub.add_parser("send", help="submit envelopes through a node's local API")
    send.add_argument("--local-api", required=True, help="unix:/path or host:port")
    send.add_argument("--service", required=True)
    send.add_argument("--service-version", type=int, default=0)
    send.add_argument("--to", action="append", required=True, help="receiver enterprise number")
    send.add_argument("--subject-citizen")
    send.add_argument("--subject-enterprise")
    send.add_argument("--capacity", type=int, default=0)
    send.add_argument("--payload", default="")
    send.add_argument("--count", type=int, default=1)
    send.add_argument("--batch", type=int, default=1000)
    send.add_argument("--ticket-prefix", default="")
    send.add_argument("--wait", action="store_true", help="wait for the hub's outcomes")
    send.add_argument("--wait-ms", type=int, default=30_000)
    send.set_defaults(func=_send)

    inbox = sub.add_parser("inbox", help="read received envelopes from a node's local API")
    inbox.add_argument("--local-api", required=True)
    inbox.add_argument("--max", type=int, default=100)
    inbox.add_argument("--wait-ms", type=int, default=0)
    inbox.add_argument("--ack", action="store_true", help="acknowledge what was printed")
    inbox.set_defaults(func=_inbox)

    ask = sub.add_parser("consult", help="ask a question through a node (consultation)")
    ask.add_argument("--local-api", required=True)
    ask.add_argument("--service", required=True)
    ask.add_argument("--subject-citizen")
    ask.add_argument("--subject-enterprise")
    ask.add_argument("--capacity", type=int, default=0)
    ask.add_argument("--ticket", default="", help="your own ticket for this question")
    ask.add_argument("--deadline-ms", type=int, default=5_000)
    ask.set_defaults(func=_consult)

    answer = sub.add_parser("answer", help="answer consultations at a node (a simple provider)")
    answer.add_argument("--local-api", required=True)
    answer.add_argument("--data", default="", help="answer every question with this (else: no data)")
    answer.set_defaults(func=_answer)

    status = sub.add_parser("status", help="a node's counters, from its local API")
    status.add_argument("--local-api", required=True)
    status.set_defaults(func=_status)

    from node.audit_cli import register as register_audit

    register_audit(sub)

    demo = sub.add_parser("demo", help="run the local demo network (hub + 7 institution nodes) and stop")
    demo.add_argument("--dir", help="work directory (default: a temporary one)")
    demo.add_argument("--envelopes", type=int, default=3000)
    demo.set_defaults(func=_demo)

    bench = sub.add_parser("bench", help="end-to-end benchmark (see benchmarks/e2e.py)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)

    from node.directory_cli import register as register_directory
    from pki.cli import register

    register(sub)
    register_directory(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the benchmark parses its own options
        from benchmarks.e2e import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
