"""A throw-away PostgreSQL server for tests and benchmarks, from the Debian binaries.

The hub's production backend is PostgreSQL; its tests run against a real server, never a
mock. :class:`PostgresServer` makes one the way an operator would, with nothing installed but
Debian's ``postgresql-15`` package (``.ci/run`` installs it):

* ``initdb`` into a fresh directory under ``/tmp`` (not pytest's ``tmp_path``: when the tests
  run as root that is ``0700 root`` and the server's user could not enter it), with
  ``scram-sha-256`` password authentication for TCP and the unix socket, and data checksums;
* ``pg_ctl start`` listening on ``127.0.0.1`` at a free port and on a socket directory inside
  the cluster directory; ``fsync`` stays on, because acknowledged means committed here too;
* small settings for a 2-core machine (``shared_buffers``, ``max_connections``).

``initdb`` and ``postgres`` refuse to run as root. As root, the cluster belongs to an
unprivileged system user (``postgres`` from the Debian package, else ``nobody``) and every
server command runs as that user; as any other user, as that user.

:meth:`PostgresServer.stop` stops the server fast (``pg_ctl -m fast``) and removes the
directory; :meth:`PostgresServer.kill` sends SIGKILL to the postmaster (crash tests). An
``atexit`` hook stops servers a crashed test left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "PgDatabase", "postgres_bindir"]

#: Where Debian puts the server binaries, newest major version first.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: The cluster's superuser; tests create their own roles and databases as it.
SUPERUSER = "crossroads_admin"
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (install Debian's ``postgresql-15``)."""


def postgres_bindir() -> Path:
    """The directory of ``initdb``/``pg_ctl``/``postgres``: ``$CROSSROADS_PG_BINDIR``, else
    Debian's newest ``/usr/lib/postgresql/N/bin``."""
    configured = os.environ.get("CROSSROADS_PG_BINDIR")
    if configured:
        candidates = [Path(configured)]
    else:
        versions = sorted(DEBIAN_ROOT.glob("*/bin"), key=lambda p: _major(p.parent.name), reverse=True)
        candidates = versions
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (apt-get install postgresql-15, "
        "or set CROSSROADS_PG_BINDIR)"
    )


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable("running as root and no unprivileged user (postgres, nobody) to run as")


@dataclass(eq=False)
class PostgresServer:
    """One PostgreSQL cluster on 127.0.0.1; :meth:`start` it, use :attr:`dsn`, :meth:`stop` it."""

    settings: dict[str, str] = field(default_factory=dict)
    #: Further addresses to listen on (besides 127.0.0.1), with scram-sha-256 for their
    #: subnets (``10.77.1.1/24``: listen on 10.77.1.1, let 10.77.1.0/24 in).
    also_listen: tuple[str, ...] = ()
    #: The cluster's directory (made by :meth:`start`), its data and its socket directory.
    root: Path = field(init=False)
    data_dir: Path = field(init=False)
    socket_dir: Path = field(init=False)
    port: int = field(init=False, default=0)
    password: str = field(init=False, default_factory=lambda: secrets.token_urlsafe(18))
    _user: pwd.struct_passwd | None = field(init=False, default=None)

    def dsn(self, database: str = "postgres", user: str = SUPERUSER, host: str = "127.0.0.1") -> str:
        """A libpq URI for ``database`` over TCP (the password is not in it: :attr:`password`)."""
        return f"postgresql://{user}@{host}:{self.port}/{database}"

    def start(self) -> PostgresServer:
        bindir = postgres_bindir()
        self._user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="crossroads-pg-"))
        self.data_dir, self.socket_dir = self.root / "data", self.root / "run"
        self.socket_dir.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._user is not None:
            for path in (self.root, self.socket_dir, pwfile):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        initdb = [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--pwfile",
                  str(pwfile), "--auth", "scram-sha-256", "--data-checksums", "--encoding", "UTF8",
                  "--locale", "C"]
        try:
            self._run(initdb)
        except subprocess.CalledProcessError as exc:
            # initdb's bootstrap backend was once seen dying of SIGSEGV in a loaded full run
            # (not reproduced since): a crash of the throw-away setup step is retried once in
            # a clean directory; any other failure, or a second crash, is raised.
            crashed = exc.returncode < 0 or "terminated by signal" in str(exc.stderr)
            if not crashed:
                raise
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._run(initdb)
        pwfile.unlink()
        self.port = _free_port()
        listen = ["127.0.0.1", *(a.split("/")[0] for a in self.also_listen)]
        conf = {
            "listen_addresses": f"'{','.join(listen)}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "shared_buffers": "'64MB'",
            "max_connections": "60",
            "fsync": "on",
            "synchronous_commit": "on",
            "log_min_messages": "warning",
            **self.settings,
        }
        with (self.data_dir / "postgresql.conf").open("a") as f:
            f.write("\n# crossroads test server\n")
            f.writelines(f"{key} = {value}\n" for key, value in conf.items())
        with (self.data_dir / "pg_hba.conf").open("a") as f:
            f.writelines(f"host all all {ipaddress.ip_interface(a).network} scram-sha-256\n"
                         for a in self.also_listen)
        self._run(
            [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
             "-w", "-t", str(START_TIMEOUT_S), "start"]
        )
        _LIVE.add(self)
        return self

    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster (its children exit when they notice)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        """Start again on the same port and data (after :meth:`kill` or a stop with keep)."""
        bindir = postgres_bindir()
        self._run(
            [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
             "-w", "-t", str(START_TIMEOUT_S), "restart", "-m", "immediate"]
        )

    def stop(self) -> None:
        _LIVE.discard(self)
        if not hasattr(self, "root"):
            return
        if self.pid() is not None:
            with contextlib.suppress(subprocess.CalledProcessError, PostgresUnavailable):
                self._run([str(postgres_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                           "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one SQL statement as the superuser (``psql``); what it printed."""
        result = subprocess.run(
            [str(postgres_bindir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.dsn(database), "-c", statement],
            capture_output=True, text=True, timeout=60,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
                 "PGPASSWORD": self.password})
        if result.returncode != 0:
            raise _Failed(result.returncode, ["psql", "-c", statement], result.stdout,
                          result.stderr)
        return result.stdout

    @contextlib.contextmanager
    def database(self, directory: Path) -> Iterator[PgDatabase]:
        """A fresh database for the block; its password file is written in ``directory``."""
        name = f"test_{secrets.token_hex(6)}"
        self.sql(f"CREATE DATABASE {name}")
        password_file = directory / f"{name}.password"
        password_file.write_text(self.password + "\n")
        password_file.chmod(0o600)
        try:
            yield PgDatabase(name, self.dsn(name), password_file)
        finally:
            self.sql(f"DROP DATABASE {name} WITH (FORCE)")

    def log(self) -> str:
        """The server's log so far (for a failing test's message)."""
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def _run(self, argv: list[str]) -> None:
        user = self._user
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=self.root,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"},
            timeout=START_TIMEOUT_S + 30,
        )
        if result.returncode != 0:
            raise _Failed(result.returncode, argv, result.stdout, f"{result.stderr}\n{self.log()}")

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class PgDatabase:
    """One test's database: its DSN (no password) and the file holding the password."""

    name: str
    dsn: str
    password_file: Path

    def store_table(self, **settings: object) -> dict[str, object]:
        """The hub's ``[store]`` table for this database."""
        return {"backend": "postgresql", "dsn": self.dsn,
                "password_file": str(self.password_file), **settings}


class _Failed(subprocess.CalledProcessError):
    """A server command failed; its message includes what the command and the server said."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


_LIVE: set[PostgresServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        server.stop()
