"""``crossroads pki ...``: the network CA on the command line.

``register(subparsers)`` adds the ``pki`` command to the main ``crossroads`` parser; every
subcommand sets ``func(args) -> int``. Failures print one line, ``crossroads pki: error: ...``, to
stderr and return 2. ``python -m pki.cli ...`` runs the same commands stand-alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pki import ca
from pki.identity import Identity, admin, app, hub, institution, parse_spiffe_id
from pki.output import Parser, emit, failure, json_option, wants_json

__all__ = ["main", "register"]

PROG = "crossroads pki"
EXIT_ERROR = 2


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected failures into one stderr line (``--json``: one JSON object) and exit
    code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (ca.PkiError, ValueError) as exc:
            return failure(PROG, str(exc), EXIT_ERROR, "REFUSED", wants_json(args),
                           command=f"pki {args.pki_command}")
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            reason = "NOT_FOUND" if isinstance(exc, FileNotFoundError) else "FAILED"
            return failure(PROG, f"{exc.strerror or exc}{where}", EXIT_ERROR, reason,
                           wants_json(args), command=f"pki {args.pki_command}")

    run.__name__ = command.__name__
    return run


def _identity(args: argparse.Namespace, network: str) -> Identity:
    if args.profile == "node":
        if not args.enterprise:
            raise ValueError("profile 'node' needs --enterprise <enterprise number>")
        return institution(network, args.enterprise)
    if args.profile == "admin":
        if not args.name:
            raise ValueError("profile 'admin' needs --name <admin name>")
        return admin(network, args.name)
    if args.profile == "app":
        if not args.enterprise or not args.name:
            raise ValueError("profile 'app' needs --enterprise <enterprise number> and"
                             " --name <application name>")
        return app(network, args.enterprise, args.name)
    return hub(network)


def _ca_network(ca_dir: Path) -> str:
    return ca.network_of_ca(ca.load_certificate(Path(ca_dir) / "ca.crt"))


# --------------------------------------------------------------------------------------------
# Subcommands


def _init_ca(args: argparse.Namespace) -> int:
    cert = ca.init_ca(args.ca_dir, args.network, algorithm=args.algorithm, validity_days=args.days)
    emit(args, {"ca_cert": cert}, str(cert))
    return 0


def _key_options(args: argparse.Namespace) -> dict[str, object]:
    """The options of a new key and its names (:func:`_add_names`)."""
    return {"extra_dns": args.dns, "extra_ips": args.ip, "algorithm": args.algorithm,
            "basename": args.basename}


def _request(args: argparse.Namespace) -> int:
    key_path, csr_path = ca.create_request(
        args.out_dir, _identity(args, args.network), **_key_options(args))  # type: ignore[arg-type]
    emit(args, {"key": key_path, "csr": csr_path}, f"{key_path}\n{csr_path}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    cert = ca.sign_request(args.ca_dir, args.csr, args.profile, args.out, validity_days=args.days)
    emit(args, {"cert": cert}, str(cert))
    return 0


def _issue(args: argparse.Namespace) -> int:
    key_path, cert_path = ca.issue(
        args.ca_dir, args.out_dir, _identity(args, _ca_network(args.ca_dir)), args.profile,
        validity_days=args.days, **_key_options(args))  # type: ignore[arg-type]
    emit(args, {"key": key_path, "cert": cert_path}, f"{key_path}\n{cert_path}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    serial = ca.revoke(args.ca_dir, serial_hex=args.serial, cert_path=args.cert, reason=args.reason)
    emit(args, {"revoked_serial": serial},
         f"revoked serial {serial} (run 'crossroads pki crl' to publish a new CRL)")
    return 0


def _crl(args: argparse.Namespace) -> int:
    crl = ca.generate_crl(args.ca_dir, args.out, next_update_days=args.days)
    emit(args, {"crl": crl}, str(crl))
    return 0


def _verify(args: argparse.Namespace) -> int:
    expected = parse_spiffe_id(args.identity) if args.identity else None
    identity = ca.verify_certificate(args.ca_cert, args.cert, args.crl, expected)
    cert = ca.load_certificate(args.cert)
    expiry = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    emit(args, {"identity": str(identity), "valid_until": cert.not_valid_after_utc,
                "serial": f"{cert.serial_number:x}"},
         f"{identity} valid until {expiry} (serial {cert.serial_number:x})")
    return 0


# --------------------------------------------------------------------------------------------
# Parser


def _add_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--enterprise", help="enterprise number (profiles node, app)")
    parser.add_argument("--name", help="administrator or application name (profiles admin, app)")
    parser.add_argument(
        "--dns", action="append", default=[], metavar="NAME", help="extra DNS SAN (repeatable)"
    )
    parser.add_argument(
        "--ip", action="append", default=[], metavar="ADDR", help="extra IP SAN (repeatable)"
    )
    parser.add_argument("--algorithm", choices=ca.ALGORITHMS, default="ec-p256", help="key type")
    parser.add_argument("--basename", help="file name stem for the key/CSR/certificate")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pki`` command and its subcommands to a ``crossroads`` parser."""
    pki = subparsers.add_parser("pki", help="the network CA: init, request, sign, revoke, verify")
    commands = pki.add_subparsers(dest="pki_command", metavar="COMMAND", required=True)

    p = commands.add_parser("init-ca", help="create the network CA")
    p.add_argument("--ca-dir", type=Path, required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--algorithm", choices=ca.ALGORITHMS, default="ec-p256")
    p.add_argument("--days", type=int, default=3650, help="CA lifetime (default 3650)")
    json_option(p)
    p.set_defaults(func=_guarded(_init_ca))

    p = commands.add_parser("request", help="generate a key and a CSR on this host")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--profile", choices=ca.PROFILES, required=True)
    _add_names(p)
    json_option(p)
    p.set_defaults(func=_guarded(_request))

    p = commands.add_parser("sign", help="sign a CSR with the CA (checks identity and profile)")
    p.add_argument("--ca-dir", type=Path, required=True)
    p.add_argument("--csr", type=Path, required=True)
    p.add_argument("--profile", choices=ca.PROFILES, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--days", type=int, help="lifetime (default: node/hub/app 397, admin 90)")
    json_option(p)
    p.set_defaults(func=_guarded(_sign))

    p = commands.add_parser("issue", help="request + sign in one step (labs, demos)")
    p.add_argument("--ca-dir", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--profile", choices=ca.PROFILES, required=True)
    p.add_argument("--days", type=int, help="lifetime (default: node/hub/app 397, admin 90)")
    _add_names(p)
    json_option(p)
    p.set_defaults(func=_guarded(_issue))

    p = commands.add_parser("revoke", help="revoke a certificate (then run crl)")
    p.add_argument("--ca-dir", type=Path, required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", help="serial number, hexadecimal")
    which.add_argument("--cert", type=Path, help="the certificate file")
    p.add_argument("--reason", default="unspecified", help="e.g. key_compromise, superseded")
    json_option(p)
    p.set_defaults(func=_guarded(_revoke))

    p = commands.add_parser("crl", help="write a new signed CRL")
    p.add_argument("--ca-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--days", type=int, default=7, help="next update in N days (default 7)")
    json_option(p)
    p.set_defaults(func=_guarded(_crl))

    p = commands.add_parser("verify", help="verify a certificate against the CA (and a CRL)")
    p.add_argument("--ca-cert", type=Path, required=True)
    p.add_argument("--cert", type=Path, required=True)
    p.add_argument("--crl", type=Path)
    p.add_argument("--identity", help="expected spiffe:// identity")
    json_option(p)
    p.set_defaults(func=_guarded(_verify))


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m pki.cli pki ...`` or ``python -m pki.cli ...``).

    (The ``node`` command families share :func:`node.cli.runner.run_alone`; ``pki`` does not
    import ``node``.)"""
    parser = Parser(prog="crossroads")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(words if words[:1] == ["pki"] else ["pki", *words])
    except SystemExit as exc:  # argparse usage errors: already printed, exit code 2
        return int(exc.code or 0)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
