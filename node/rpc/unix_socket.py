"""The local API's unix socket: never steal a live one, never exist wider than 0660.

* :func:`claim_socket_path` runs before binding. A path that exists is removed only when it is
  a socket nobody answers on (left by a daemon that died); a socket a live process accepts on
  is refused (:class:`SocketInUse`, naming the ``local_api`` key), so a second node started by
  mistake with the same path cannot unlink the running node's socket and take its clients.
  Anything else at the path (a regular file, a directory) is refused too, never deleted.
* :func:`socket_umask` is held around the bind: the kernel creates the socket file with
  ``0777 & ~umask``, so under umask 0117 it is born 0660 (owner and group read/write) with no
  moment of wider permissions. The umask is process-wide; it is held only for the
  synchronous ``bind`` inside ``add_insecure_port``, and the stores' files do not depend on it
  (node/store/data_dir_guard.py sets their modes explicitly).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SOCKET_MODE", "SocketInUse", "claim_socket_path", "socket_umask"]

SOCKET_MODE = 0o660
_SOCKET_UMASK = 0o777 & ~SOCKET_MODE  # 0o117
_PROBE_TIMEOUT_S = 1.0


class SocketInUse(RuntimeError):
    """``local_api`` names a socket a live process serves, or a path that is not a socket."""


def claim_socket_path(path: Path) -> None:
    """Make ``path`` free for a new socket, deleting only a dead socket left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketInUse(
            f"local_api: {path} exists and is not a socket; refusing to delete it"
            " (remove it yourself or choose another local_api path)")
    if _answers(path):
        raise SocketInUse(
            f"local_api: {path} is the socket of a running process (another node?);"
            " refusing to take it over: stop that process or choose another local_api path")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT_S)
    try:
        probe.connect(str(path))
    except OSError as exc:
        # ECONNREFUSED: nobody listens (a dead daemon's socket). A timeout or EAGAIN means a
        # listener whose backlog is full: alive.
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    else:
        return True
    finally:
        probe.close()


@contextlib.contextmanager
def socket_umask() -> Iterator[None]:
    """Bind under umask 0117 so that the socket is created 0660 at once."""
    previous = os.umask(_SOCKET_UMASK)
    try:
        yield
    finally:
        os.umask(previous)
