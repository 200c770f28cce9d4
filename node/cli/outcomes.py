"""How the application commands (``send``, ``inbox``, ``consult``, ``answer``, ``status``,
``node status``) end: documented exit codes, one line on stderr, never a traceback.

Exit codes (docs/OPERATIONS.md, "The application commands"; also in ``--help``):

    0  done
    1  a negative answer: an envelope refused, a consultation with no data or refused
    2  usage or configuration (bad option, INVALID_ARGUMENT from the node)
    3  the node is unreachable, unavailable or timed out (UNAVAILABLE, DEADLINE_EXCEEDED;
       also NOT_STORED: the node could not store, nothing was): try again later
    4  refused: permission or authentication (PERMISSION_DENIED, UNAUTHENTICATED, a socket
       the user may not open)
    5  ``send --wait``: still pending at the hub; safe to retry with the same ``--ticket``

Before any call the node's address is probed (:func:`probe`): a unix socket path that does
not exist, or that nobody listens on, and a TCP port that refuses, fail at once naming what
was tried, instead of after a call's deadline. Calls are then made without
``wait_for_ready``, so a node that goes away fails them at once too.
"""

from __future__ import annotations

import enum
import errno
import socket
from collections.abc import Callable
from pathlib import Path

import grpc

from node.cli.runner import CliError
from pki.output import failure

__all__ = ["EXIT_CODES_HELP", "Exit", "NodeUnreachable", "exit_for_status", "probe", "run_guarded"]


class Exit(enum.IntEnum):
    DONE = 0
    NEGATIVE = 1
    USAGE = 2
    UNAVAILABLE = 3
    REFUSED = 4
    PENDING = 5


EXIT_CODES_HELP = """exit status:
  0  done
  1  a negative answer (an envelope refused, a consultation with no data or refused)
  2  usage or configuration error
  3  node unreachable, unavailable or timed out (or NOT_STORED): try again later
  4  refused: permission or authentication
  5  send --wait: still pending; safe to retry with the same --ticket"""

_BY_STATUS = {
    grpc.StatusCode.UNAVAILABLE: Exit.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Exit.UNAVAILABLE,
    grpc.StatusCode.CANCELLED: Exit.UNAVAILABLE,
    grpc.StatusCode.PERMISSION_DENIED: Exit.REFUSED,
    grpc.StatusCode.UNAUTHENTICATED: Exit.REFUSED,
    grpc.StatusCode.INVALID_ARGUMENT: Exit.USAGE,
    grpc.StatusCode.OUT_OF_RANGE: Exit.USAGE,
    grpc.StatusCode.UNIMPLEMENTED: Exit.USAGE,
}


def exit_for_status(code: grpc.StatusCode | None) -> Exit:
    """The exit code for a failed call (anything not listed: a negative answer)."""
    return _BY_STATUS.get(code, Exit.NEGATIVE) if code is not None else Exit.NEGATIVE


class NodeUnreachable(Exception):
    """The node's local API could not be reached at ``address``; ``refused``: it exists but
    this user may not open it (exit 4 rather than 3)."""

    def __init__(self, address: str, why: str, refused: bool = False) -> None:
        super().__init__(f"cannot reach the node at {address}: {why}")
        self.refused = refused


def probe(address: str, timeout: float = 3.0) -> None:
    """Connect once to ``address`` (``unix:/path`` or ``host:port``) and close, or raise
    :class:`NodeUnreachable` saying why."""
    if address.startswith("unix:"):
        path = Path(address[5:].removeprefix("//"))
        try:
            exists = path.exists()
        except PermissionError:  # a directory on the way this user may not enter
            raise NodeUnreachable(address, f"permission denied on the way to {path}",
                                  refused=True) from None
        if not exists:
            raise NodeUnreachable(address, f"no socket at {path} (is the node running? see"
                                           " local_api in its node.toml)")
        family: int = socket.AF_UNIX
        target: object = str(path)
    else:
        host, sep, port = address.removeprefix("dns:").rpartition(":")
        if not sep or not port.isdigit():
            raise NodeUnreachable(address, "not unix:/path or host:port")
        host = host.strip("[]")
        try:
            family, _, _, _, target = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
        except (OSError, UnicodeError) as exc:
            raise NodeUnreachable(address, f"cannot resolve {host}: {exc}") from None
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(target)  # type: ignore[arg-type]
        except TimeoutError:
            raise NodeUnreachable(address, f"no answer within {timeout:g} s") from None
        except OSError as exc:
            refused = exc.errno in (errno.EACCES, errno.EPERM)
            why = exc.strerror or str(exc)
            if refused:
                why += " (the socket's group may open it: see local_api in docs/OPERATIONS.md)"
            raise NodeUnreachable(address, why, refused=refused) from None


def run_guarded(command: str, func: Callable[[], int], as_json: bool = False) -> int:
    """Run ``func`` and turn whatever it raises into one line on stderr (``as_json``: one JSON
    object with a stable ``reason``, :func:`pki.output.failure`) and an exit code."""
    def fail(message: str, code: Exit, reason: str) -> int:
        return failure(f"crossroads {command}", message, code, reason, as_json)

    try:
        return int(func() or 0)
    except NodeUnreachable as exc:
        if exc.refused:
            return fail(str(exc), Exit.REFUSED, "NODE_ACCESS_DENIED")
        return fail(str(exc), Exit.UNAVAILABLE, "NODE_UNREACHABLE")
    except grpc.RpcError as exc:  # grpc.Call and grpc.aio.AioRpcError both have these
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        name = code.name if code is not None else "ERROR"
        return fail(f"{name}: {details}", exit_for_status(code), name)
    except CliError as exc:  # the command's own refusal: its message says it all
        return fail(str(exc), Exit.NEGATIVE, "REFUSED")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head: not an error of ours
        return 0
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        return fail(f"{type(exc).__name__}: {exc}", Exit.NEGATIVE, "INTERNAL")
