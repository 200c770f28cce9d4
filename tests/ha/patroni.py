"""A throw-away highly available PostgreSQL for tests: one etcd member and two Patroni members.

What production runs (docs/OPERATIONS.md, "PostgreSQL with automatic failover"), shrunk onto
loopback with Debian's packages (tests/install-patroni.sh) and nothing else:

* **etcd** (``etcd-server``): one member on 127.0.0.1, free ports, its data in the cluster's
  temporary directory. Patroni keeps the leader key there (``etcd3``: the v3 API).
* **Patroni** (``patroni``) per member, managing PostgreSQL 15 from Debian's binaries
  (``/usr/lib/postgresql/15/bin``): the first to take the leader key runs ``initdb``, the other
  clones it (``pg_basebackup``) and streams from it.
* **Synchronous commit to the standby**: ``synchronous_mode: true`` (Patroni names the standby
  in ``synchronous_standby_names``; ``synchronous_commit = on``): a COMMIT returns once the
  standby has flushed it, so an acknowledged envelope survives the primary. Non-strict
  (``synchronous_mode_strict: false``): with one member left the primary drops back to
  asynchronous commits instead of refusing them; the window this opens is documented in
  docs/ARCHITECTURE.md ("Database failover"). Only the synchronous standby may be promoted.
* **Rejoining**: ``use_pg_rewind`` (the data has checksums): a killed primary started again is
  rewound onto the new timeline and follows as a standby, no manual step; should the rewind
  fail, Patroni clones it afresh (``remove_data_directory_on_rewind_failure``).
* **Timings** for a test: ``ttl`` 8 s, ``loop_wait`` 1 s, ``retry_timeout`` 3 s (Patroni
  requires ``loop_wait + 2 * retry_timeout <= ttl``): a dead primary's leader key expires
  within ``ttl`` and the standby is promoted on its next loop. Small ``shared_buffers``,
  ``max_connections`` in the tens (a 2-core machine).

As root, etcd, Patroni and PostgreSQL run as the unprivileged ``postgres`` user (``initdb`` and
``postgres`` refuse root), in a directory under ``/tmp`` that user owns. Who is primary comes
from Patroni's REST API (``GET /primary``: 200 on the primary only; ``GET /cluster``).

:meth:`PatroniCluster.start` is bounded (:data:`START_TIMEOUT_S`) and fails with the logs;
:meth:`PatroniCluster.stop` kills everything (SIGKILL: nothing of it is worth keeping), also
after a failed start, and an ``atexit`` hook stops clusters a crashed test left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.testing_postgres import (
    SUPERUSER,
    PostgresServer,
    _free_port,
    _server_user,
    postgres_bindir,
)

__all__ = ["Member", "PatroniCluster"]

SCOPE = "crossroads-test"
START_TIMEOUT_S = 180.0
#: Patroni's timings (see the module's docstring): loop_wait + 2 * retry_timeout <= ttl.
TTL_S, LOOP_WAIT_S, RETRY_TIMEOUT_S = 8, 1, 3


def _get(url: str) -> tuple[int, Any]:
    """(status, JSON body) of a GET; (0, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(ValueError):
            return exc.code, json.loads(exc.read() or b"null")
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


@dataclass(eq=False)
class Member:
    """One Patroni member: its PostgreSQL port, REST port, directory and process."""

    name: str
    pg_port: int
    api_port: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def log(self, lines: int = 40) -> str:
        text = []
        for path in [self.root / "patroni.log", *sorted((self.root / "pglog").glob("*"))]:
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                text.append(f"--- {self.name}: {path.name}\n" + "\n".join(tail))
        return "\n".join(text)


@dataclass(eq=False)
class PatroniCluster:
    """See the module's docstring. ``also_listen``: further addresses PostgreSQL listens on,
    with scram-sha-256 for their subnets (``10.77.0.1/24``), as :class:`PostgresServer`'s."""

    members: int = 2
    also_listen: tuple[str, ...] = ()
    root: Path = field(init=False)
    password: str = field(init=False, default_factory=lambda: secrets.token_urlsafe(18))
    _replication_password: str = field(init=False, repr=False,
                                       default_factory=lambda: secrets.token_urlsafe(18))
    member: list[Member] = field(init=False, default_factory=list)
    _etcd: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _etcd_port: int = field(init=False, default=0)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> PatroniCluster:
        _LIVE.add(self)
        try:
            self._start()
        except Exception as exc:
            logs = self.log()
            self.stop()
            raise RuntimeError(f"the Patroni cluster did not come up: {exc}\n{logs}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="crossroads-patroni-"))
        self._own(self.root)
        self._etcd_port, peer = _free_port(), _free_port()
        client, peer_url = f"http://127.0.0.1:{self._etcd_port}", f"http://127.0.0.1:{peer}"
        self._etcd = self._spawn(
            ["etcd", "--name", "e0", "--data-dir", str(self.root / "etcd"),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"e0={peer_url}", "--log-level", "warn"],
            self.root / "etcd.log")
        self._until(lambda: _get(f"{client}/health")[1] == {"health": "true"}, "etcd answers")
        for i in range(self.members):
            member = Member(f"pg{i}", _free_port(), _free_port(), self.root / f"pg{i}")
            member.root.mkdir()
            (member.root / "run").mkdir()
            self._own(member.root, member.root / "run")
            self._write_config(member)
            self.member.append(member)
            self.start_member(member)
        self.wait_healthy(START_TIMEOUT_S)

    def stop(self) -> None:
        """Kill everything (also after a failed start) and remove the directory."""
        _LIVE.discard(self)
        for member in self.member:
            self.kill(member)
        if self._etcd is not None:
            self._etcd.kill()
            self._etcd.wait()
        if hasattr(self, "root"):
            # A postmaster Patroni was starting when it was killed has no postmaster.pid
            # yet: found by its command line, which names this cluster's own directory.
            for pid in _pids_naming(self.root):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PatroniCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- members ---------------------------------------------------------------------------

    def start_member(self, member: Member) -> None:
        """Start the member's Patroni (again): a member that was killed rejoins by itself."""
        member.proc = self._spawn(["patroni", str(member.root / "patroni.yml")],
                                  member.root / "patroni.log")

    def kill(self, member: Member) -> None:
        """Power the member off: SIGKILL its Patroni and, at once, its postmaster's process
        group (Patroni starts the postmaster in a session of its own: every backend is in
        that group and dies with it)."""
        pid, group = member.postmaster_pid(), None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                group = os.getpgid(pid)
        if member.proc is not None:
            member.proc.kill()
        if group is not None and group != os.getpgid(0):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            self._until(lambda: not _alive(group), f"{member.name}'s PostgreSQL is gone", 30)
        if member.proc is not None:
            member.proc.wait()

    def roles(self) -> dict[str, str]:
        """member name -> role (``leader``, ``sync_standby``, ``replica``) of the running
        members, as Patroni's ``GET /cluster`` tells it (asked of any member that answers)."""
        for member in self.member:
            status, body = _get(f"{member.api}/cluster")
            if status == 200 and body:
                return {m["name"]: m["role"] for m in body.get("members", [])
                        if m.get("state") in ("running", "streaming")}
        return {}

    def primary(self) -> Member | None:
        """The member whose ``GET /primary`` answers 200 (None: no primary now)."""
        for member in self.member:
            if _get(f"{member.api}/primary")[0] == 200:
                return member
        return None

    def wait_primary(self, timeout: float, other_than: Member | None = None) -> Member:
        found: list[Member] = []

        def promoted() -> bool:
            primary = self.primary()
            if primary is not None and primary is not other_than:
                found.append(primary)
            return bool(found)
        self._until(promoted, "a primary", timeout)
        return found[0]

    def wait_healthy(self, timeout: float) -> None:
        """Until there is a primary and every other member is its synchronous standby."""
        def healthy() -> bool:
            roles = sorted(self.roles().values())
            return roles == sorted(["leader", *["sync_standby"] * (self.members - 1)])
        self._until(healthy, f"a primary and {self.members - 1} synchronous standby", timeout)

    def switchover(self) -> Member:
        """``patronictl switchover`` to the synchronous standby (a planned change: the old
        primary is demoted to a standby); the new primary."""
        old = self.primary()
        assert old is not None, "no primary to switch over from"
        candidate = next(m for m in self.member if m is not old)
        result = subprocess.run(
            ["patronictl", "-c", str(old.root / "patroni.yml"), "switchover", "--leader",
             old.name, "--candidate", candidate.name, "--force"],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return self.wait_primary(60, other_than=old)

    # -- clients ---------------------------------------------------------------------------

    def dsn(self, database: str = "postgres", user: str = SUPERUSER,
            host: str = "127.0.0.1") -> str:
        """A libpq URI listing every member, ``target_session_attrs=read-write``: the client
        connects to whichever is primary (the password is not in it: :attr:`password`)."""
        hosts = ",".join(f"{host}:{m.pg_port}" for m in self.member)
        return f"postgresql://{user}@{hosts}/{database}?target_session_attrs=read-write"

    #: As a single server's (node/testing_postgres.py): ``psql`` as the superuser, and a fresh
    #: database with its password file; on the primary, since :meth:`dsn` is read-write.
    sql = PostgresServer.sql
    database = PostgresServer.database

    def log(self) -> str:
        """The tails of etcd's, Patroni's and PostgreSQL's logs (for a failing test)."""
        if not hasattr(self, "root"):
            return ""
        parts = [m.log() for m in self.member]
        with contextlib.suppress(OSError):
            parts.insert(0, "--- etcd\n" + "\n".join(
                (self.root / "etcd.log").read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(parts)

    # -- helpers ---------------------------------------------------------------------------

    def _write_config(self, member: Member) -> None:
        listen = ",".join(["127.0.0.1", *(a.split("/")[0] for a in self.also_listen)])
        hba = ["local all all scram-sha-256",
               "host all all 127.0.0.1/32 scram-sha-256",
               "host replication replicator 127.0.0.1/32 scram-sha-256",
               *(f"host all all {ipaddress.ip_interface(a).network} scram-sha-256"
                 for a in self.also_listen)]
        config = {
            "scope": SCOPE, "name": member.name,
            "log": {"level": "WARNING"},
            "restapi": {"listen": f"127.0.0.1:{member.api_port}",
                        "connect_address": f"127.0.0.1:{member.api_port}"},
            "etcd3": {"hosts": [f"127.0.0.1:{self._etcd_port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL_S, "loop_wait": LOOP_WAIT_S, "retry_timeout": RETRY_TIMEOUT_S,
                    "maximum_lag_on_failover": 16 << 20,
                    "synchronous_mode": True, "synchronous_mode_strict": False,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": {
                        "synchronous_commit": "on", "wal_log_hints": "on",
                        "max_connections": 60, "shared_buffers": "32MB",
                        "max_wal_senders": 5, "max_replication_slots": 5,
                        "wal_keep_size": "128MB", "hot_standby": "on"}},
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums",
                           {"auth": "scram-sha-256"}],
            },
            "postgresql": {
                "listen": f"{listen}:{member.pg_port}",
                "connect_address": f"127.0.0.1:{member.pg_port}",
                "data_dir": str(member.data_dir),
                "bin_dir": str(postgres_bindir()),
                "pgpass": str(member.root / "pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": self.password},
                    "replication": {"username": "replicator",
                                    "password": self._replication_password},
                },
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
                "pg_hba": hba,
                "parameters": {"unix_socket_directories": str(member.root / "run"),
                               "logging_collector": "on",
                               "log_directory": str(member.root / "pglog"),
                               "log_min_messages": "warning"},
            },
        }
        path = member.root / "patroni.yml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        path.chmod(0o600)
        self._own(path)

    def _own(self, *paths: Path) -> None:
        user = _server_user()
        if user is not None:
            for path in paths:
                os.chown(path, user.pw_uid, user.pw_gid)

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        user = _server_user()
        with log.open("ab") as out:
            return subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.root, start_new_session=True,
                user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
                     "TZ": "UTC", "HOME": str(self.root)})

    def _until(self, condition: Callable[[], bool], what: str,
               timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:g} s (roles now"
                                     f" {self.roles()})\n{self.log()}")
            time.sleep(0.2)


def _pids_naming(directory: Path) -> list[int]:
    """The processes whose command line names ``directory`` (or a path inside it)."""
    needle = str(directory).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
    return pids


def _alive(group: int) -> bool:
    """Whether a process of ``group`` is left."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


_LIVE: set[PatroniCluster] = set()


@atexit.register
def _stop_leftovers() -> None:
    for cluster in list(_LIVE):
        cluster.stop()
