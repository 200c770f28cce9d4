"""Simulated hosts for the Ansible deploy test: systemd-nspawn containers reached over SSH.

Each host is a ``systemd-nspawn`` container booting real systemd as PID 1 on an overlay root
(lower layer: a read-only bind of this machine's ``/``; upper layer: tmpfs), in a network namespace
of its own. All namespaces hang off a bridge that lives in one more namespace created here, so the
private range (``Lab.subnet``, ``10.213.0.0/24`` by default) exists nowhere but inside the
namespaces this module created. A controller namespace on the same bridge runs
``ansible-playbook`` and ``ssh``.

Everything created is recorded on the :class:`Lab` as it is created, and :meth:`Lab.down` removes
it in reverse order, tolerating partial setups: it is safe to call after any failure, and twice.
A state file (``<workdir>/lab.json``) lets ``python -m tests.deploy.harness down <workdir>``
clean up after a run that was killed with SIGKILL.

Nothing here reads ../shared; nothing here touches this machine's own network configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

SUBNET = "10.213.0"
PREFIX_LEN = 24
# Units enabled in the base image that must not run inside the simulated hosts.
KEEP_ENABLED = {"ssh.service", "sshd.service", "machines.target", "remote-fs.target"}

RECAP_RE = re.compile(
    r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
    r"(?:\s+skipped=(\d+))?(?:\s+rescued=(\d+))?(?:\s+ignored=(\d+))?",
    re.MULTILINE,
)


class LabError(RuntimeError):
    """The simulated hosts could not be set up (not a failure of the code under test)."""


@dataclass
class HostSpec:
    name: str  # inventory name and hostname, e.g. "node-a"
    ip: str


@dataclass
class Recap:
    ok: int
    changed: int
    unreachable: int
    failed: int
    skipped: int = 0


@dataclass
class PlaybookRun:
    argv: list[str]
    returncode: int
    output: str
    seconds: float
    recap: dict[str, Recap] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(r.changed for r in self.recap.values())

    @property
    def failed(self) -> int:
        return sum(r.failed + r.unreachable for r in self.recap.values())


def parse_recap(output: str) -> dict[str, Recap]:
    """Parse the PLAY RECAP block of ansible-playbook output into per-host counters."""
    recap: dict[str, Recap] = {}
    _, sep, tail = output.rpartition("PLAY RECAP")
    if not sep:
        return recap
    for m in RECAP_RE.finditer(tail):
        recap[m.group(1)] = Recap(
            ok=int(m.group(2)),
            changed=int(m.group(3)),
            unreachable=int(m.group(4)),
            failed=int(m.group(5)),
            skipped=int(m.group(6) or 0),
        )
    return recap


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 60, **kw) -> str:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kw
    )
    if check and proc.returncode != 0:
        raise LabError(
            f"command failed ({proc.returncode}): {shlex.join(argv)}\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def missing_prerequisites() -> str | None:
    """Why this machine cannot run the lab, or None when it can."""
    if os.geteuid() != 0:
        return "the deploy test needs root (network namespaces, mounts, systemd-nspawn)"
    for tool, pkg in (
        ("systemd-nspawn", "systemd-container"),
        ("ip", "iproute2"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} not found (package {pkg}); run tests/deploy/prepare-host.sh"
    for path, pkg in (("/usr/sbin/sshd", "openssh-server"), ("/lib/systemd/systemd", "systemd")):
        if not os.path.exists(path):
            return f"{path} not found (package {pkg}); run tests/deploy/prepare-host.sh"
    return None


@dataclass
class Lab:
    """A set of simulated hosts plus a controller namespace. Use as a context manager."""

    workdir: Path
    hosts: list[HostSpec]
    wheelhouse: Path | None = None
    # First three octets of the lab's private /24 (the controller is .254); one per lab.
    subnet: str = SUBNET
    tag: str = field(default_factory=lambda: "xr" + secrets.token_hex(2))
    # What has been created, for teardown (recorded before each step completes).
    namespaces: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    powered_off: set[str] = field(default_factory=set)

    # ---- naming -------------------------------------------------------------------------

    @property
    def bridge_ns(self) -> str:
        return f"{self.tag}-br"

    @property
    def ctl_ns(self) -> str:
        return f"{self.tag}-ctl"

    def host_ns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    @property
    def key(self) -> Path:
        return self.workdir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def ssh_args(self) -> list[str]:
        """SSH options used by both `ssh` here and Ansible (ANSIBLE_SSH_ARGS)."""
        return [
            "-F", "/dev/null",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self.workdir}/cm-%C",
            "-o", "ControlPersist=60s",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def ip(self, name: str) -> str:
        return next(h.ip for h in self.hosts if h.name == name)

    # ---- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _save_state(self) -> None:
        state = {
            "tag": self.tag,
            "subnet": self.subnet,
            "namespaces": self.namespaces,
            "mounts": self.mounts,
            "pids": self.pids,
            "powered_off": sorted(self.powered_off),
            "hosts": [asdict(h) for h in self.hosts],
        }
        (self.workdir / "lab.json").write_text(json.dumps(state, indent=1))

    def up(self, boot_timeout: float = 90) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._save_state()
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        hostkey = self.workdir / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)])
        hostpub = (self.workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        self.known_hosts.write_text(
            "".join(f"{h.ip} {hostpub[0]} {hostpub[1]}\n" for h in self.hosts)
        )
        self._network()
        self._rootfs(hostkey)
        for h in self.hosts:
            self._boot(h)
        deadline = time.monotonic() + boot_timeout
        for h in self.hosts:
            self._wait_booted(h, deadline)

    def _ns_add(self, ns: str) -> None:
        self.namespaces.append(ns)
        self._save_state()
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _network(self) -> None:
        self._ns_add(self.bridge_ns)
        _run(["ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.bridge_ns, "link", "set", "br0", "up"])
        nodes = [("ctl", self.ctl_ns, f"{self.subnet}.254")] + [
            (h.name, self.host_ns(h.name), h.ip) for h in self.hosts
        ]
        for short, ns, ip in nodes:
            self._ns_add(ns)
            port = f"v-{short}"[:15]
            _run(["ip", "-n", self.bridge_ns, "link", "add", port, "type", "veth",
                  "peer", "name", "eth0", "netns", ns])  # fmt: skip
            _run(["ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/{PREFIX_LEN}", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def _mount(self, argv: list[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        self.mounts.append(str(target))
        self._save_state()
        _run([*argv, str(target)])

    def _rootfs(self, hostkey: Path) -> None:
        tmp = self.workdir / "tmpfs"
        self._mount(["mount", "-t", "tmpfs", "-o", "mode=0755,size=4g", "tmpfs"], tmp)
        lower = self.workdir / "lower"
        self._mount(["mount", "--bind", "/"], lower)
        _run(["mount", "-o", "remount,bind,ro", str(lower)])
        wants = sorted(
            p.name
            for d in Path("/etc/systemd/system").glob("*.wants")
            for p in d.iterdir()
            if p.name not in KEEP_ENABLED
        )
        for h in self.hosts:
            upper, work, merged = (tmp / h.name / d for d in ("upper", "work", "merged"))
            upper.mkdir(parents=True)
            work.mkdir()
            etc = upper / "etc"
            (etc / "ssh" / "sshd_config.d").mkdir(parents=True)
            (etc / "systemd" / "system").mkdir(parents=True)
            (upper / "root" / ".ssh").mkdir(parents=True, mode=0o700)
            (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")
            (etc / "hostname").write_text(h.name + "\n")
            (etc / "hosts").write_text(
                "127.0.0.1 localhost\n"
                + "".join(f"{o.ip} {o.name}\n" for o in self.hosts)
            )
            (etc / "ssh" / "sshd_config.d" / "zz-deploy-test.conf").write_text(
                "UsePAM no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n"
                "HostKey /etc/ssh/deploy_test_host_ed25519_key\n"
            )
            shutil.copy(hostkey, etc / "ssh" / "deploy_test_host_ed25519_key")
            os.chmod(etc / "ssh" / "deploy_test_host_ed25519_key", 0o600)
            shutil.copy(self.key.with_suffix(".pub"), upper / "root" / ".ssh" / "authorized_keys")
            for unit in wants:  # mask what the base image enables (postgresql, timers, ...)
                (etc / "systemd" / "system" / unit).symlink_to("/dev/null")
            self._mount(
                ["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={lower},upperdir={upper},workdir={work}"],
                merged,
            )  # fmt: skip

    def _boot(self, h: HostSpec) -> None:
        merged = self.workdir / "tmpfs" / h.name / "merged"
        argv = [
            "systemd-nspawn", "-q", "-D", str(merged), "-M", self.host_ns(h.name),
            f"--network-namespace-path=/run/netns/{self.host_ns(h.name)}",
            "--register=no", "--keep-unit", "--console=passive", "--link-journal=no",
            "--hostname", h.name,
        ]  # fmt: skip
        if self.wheelhouse is not None:
            argv.append(f"--bind-ro={self.wheelhouse}:/var/cache/wheelhouse")
        argv += ["-b", "--", "systemd.show_status=0"]
        log = open(self.workdir / f"nspawn-{h.name}.log", "wb")  # noqa: SIM115 - child owns it
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        self.procs[h.name] = proc
        self.pids[h.name] = proc.pid
        self._save_state()

    def _wait_booted(self, h: HostSpec, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            if self.procs[h.name].poll() is not None:
                log = (self.workdir / f"nspawn-{h.name}.log").read_text(errors="replace")
                raise LabError(f"systemd-nspawn for {h.name} exited:\n{log[-3000:]}")
            r = self.ssh(h.name, "systemctl is-system-running --wait", check=False, timeout=60)
            last = r.stdout.strip() + r.stderr.strip()
            if r.returncode == 0 or last.startswith(("running", "degraded")):
                if not last.startswith("running"):
                    failed = self.ssh(h.name, "systemctl --failed --no-legend", check=False)
                    sys.stderr.write(f"[lab] {h.name} booted {last}: {failed.stdout}\n")
                return
            time.sleep(0.5)
        raise LabError(f"{h.name} did not boot in time (last answer: {last!r})")

    def ssh(
        self, host: str, command: str, *, check: bool = True, timeout: float = 120,
        user: str = "root",
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run a shell command on a host over SSH from the controller namespace."""
        argv = [
            "ip", "netns", "exec", self.ctl_ns, "ssh", *self.ssh_args, "-i", str(self.key),
            f"{user}@{self.ip(host)}", command,
        ]  # fmt: skip
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and r.returncode != 0:
            raise AssertionError(
                f"ssh {host} {command!r} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
            )
        return r

    def controller(self, argv: Sequence[str], **kw) -> list[str]:
        """argv prefix that runs a command inside the controller namespace."""
        return ["ip", "netns", "exec", self.ctl_ns, *argv]

    # ---- power ------------------------------------------------------------------------------

    def init_pid(self, name: str) -> int:
        """This machine's pid of the host's PID 1 (its systemd); LabError when it is not up."""
        for pid in _netns_pids(self.host_ns(name)):
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                nspid = next(ln for ln in status.splitlines() if ln.startswith("NSpid:"))
                if nspid.split()[1:] == [str(pid), "1"]:
                    return pid
        raise LabError(f"{name} is not running (no PID 1 in {self.host_ns(name)})")

    def _link(self, name: str, state: str) -> None:
        _run(["ip", "-n", self.bridge_ns, "link", "set", f"v-{name}"[:15], state])

    def power_off(self, name: str) -> None:
        """Pull the plug on a host: its link goes down first (peers see silence, not a closed
        connection), then every process of the container dies at once (SIGKILL to its PID 1
        ends its PID namespace: the kernel kills all the rest). Its disk (the overlay's upper
        layer) stays as the processes left it; :meth:`power_on` boots it again. Idempotent."""
        self.powered_off.add(name)
        self._save_state()
        self._link(name, "down")
        with contextlib.suppress(LabError, ProcessLookupError):
            os.kill(self.init_pid(name), signal.SIGKILL)
        # SSH control master for this host: its peer is gone without a word.
        subprocess.run(
            self.controller(["ssh", *self.ssh_args, "-O", "exit", f"root@{self.ip(name)}"]),
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        pid = self.pids.pop(name, None)
        proc = self.procs.pop(name, None)
        if pid is not None and not _reap(proc, pid, timeout=15):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _reap(proc, pid, timeout=5)
        for p in _netns_pids(self.host_ns(name)):  # anything that escaped (none expected)
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        self._save_state()

    def power_on(self, name: str, boot_timeout: float = 120) -> None:
        """Boot a host that :meth:`power_off` stopped, on its disk as it was; wait for SSH and
        for systemd to finish starting (its enabled units start as after a power cut)."""
        if name in self.pids:
            raise LabError(f"{name} is already running")
        (h,) = (h for h in self.hosts if h.name == name)
        self._boot(h)
        self._link(name, "up")
        self._wait_booted(h, time.monotonic() + boot_timeout)
        self.powered_off.discard(name)
        self._save_state()

    # ---- teardown -----------------------------------------------------------------------

    def _alive(self, name: str, pid: int) -> bool:
        proc = self.procs.get(name)
        return proc.poll() is None if proc is not None else _pid_alive(pid)

    def save_journals(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for h in self.hosts:
            if h.name not in self.pids:
                continue
            with contextlib.suppress(Exception):
                r = self.ssh(h.name, "journalctl -b --no-pager -o short-precise", check=False,
                             timeout=20)  # fmt: skip
                (dest / f"journal-{h.name}.log").write_text(r.stdout + r.stderr)

    def down(self) -> None:
        """Remove everything this lab created; never raises, safe to call repeatedly."""
        errors: list[str] = []
        # 1. Power off containers: SIGTERM to nspawn asks the container's systemd to shut down.
        for pid in self.pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, pid in list(self.pids.items()):
            while time.monotonic() < deadline and self._alive(name, pid):
                time.sleep(0.1)
            if self._alive(name, pid):
                errors.append(f"nspawn {name} ignored SIGTERM; killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                    os.kill(pid, signal.SIGKILL)
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.wait()
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        self.pids.clear()
        # 2. Whatever still runs in our namespaces (ssh control masters, stray daemons).
        for ns in self.namespaces:
            for _ in range(20):
                out = _netns_pids(ns)
                if not out:
                    break
                for p in out:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
                time.sleep(0.1)
        # 3. Mounts, innermost first.
        for target in reversed(self.mounts):
            r = subprocess.run(["umount", target], capture_output=True, text=True, check=False)
            if r.returncode != 0 and os.path.ismount(target):
                subprocess.run(["umount", "-l", target], capture_output=True, check=False)
                errors.append(f"lazy unmount of {target}: {r.stderr.strip()}")
        self.mounts.clear()
        # 4. Namespaces (their veths go with them).
        for ns in reversed(self.namespaces):
            r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True,
                               check=False)  # fmt: skip
            if r.returncode != 0 and "No such file" not in r.stderr:
                errors.append(f"ip netns del {ns}: {r.stderr.strip()}")
        self.namespaces.clear()
        with contextlib.suppress(OSError):
            self._save_state()
        if errors:
            sys.stderr.write("[lab] teardown: " + "; ".join(errors) + "\n")


def _netns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                         check=False).stdout  # fmt: skip
    return [int(p) for p in out.split()]


def _reap(proc: subprocess.Popen[bytes] | None, pid: int, timeout: float) -> bool:
    """Wait for a (child) process to exit and reap it; whether it did within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return True
        elif not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def _pid_alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == 0
    except ChildProcessError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def down_from_state(workdir: Path) -> None:
    """Tear down a lab from its state file (after a run that could not clean up itself)."""
    state = json.loads((workdir / "lab.json").read_text())
    lab = Lab(workdir=workdir, hosts=[HostSpec(**h) for h in state["hosts"]], tag=state["tag"],
              subnet=state.get("subnet", SUBNET))
    lab.namespaces = state["namespaces"]
    lab.mounts = state["mounts"]
    lab.pids = {k: int(v) for k, v in state["pids"].items()}
    lab.down()


@contextlib.contextmanager
def lab(hosts: list[HostSpec], wheelhouse: Path | None = None) -> Iterator[Lab]:
    workdir = Path(tempfile.mkdtemp(prefix="crossroads-deploy-"))
    try:
        with Lab(workdir=workdir, hosts=hosts, wheelhouse=wheelhouse) as the_lab:
            yield the_lab
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


DEFAULT_HOSTS = [
    HostSpec("ca", f"{SUBNET}.10"),
    HostSpec("hub", f"{SUBNET}.11"),
    HostSpec("node-a", f"{SUBNET}.21"),
    HostSpec("node-b", f"{SUBNET}.22"),
    HostSpec("node-c", f"{SUBNET}.23"),  # joins later (nodes.yml --limit)
    HostSpec("node-d", f"{SUBNET}.24"),  # joins later, crossroads_service_manager: none
]


def main(argv: list[str]) -> int:
    """Manual use: `python -m tests.deploy.harness smoke` boots, checks SSH and tears down;
    `python -m tests.deploy.harness down WORKDIR` cleans up a lab left behind."""
    if len(argv) >= 2 and argv[0] == "down":
        down_from_state(Path(argv[1]))
        return 0
    if argv[:1] == ["smoke"]:
        t0 = time.monotonic()
        with lab(DEFAULT_HOSTS) as the_lab:
            t1 = time.monotonic()
            for h in the_lab.hosts:
                print(h.name, the_lab.ssh(h.name, "hostname; systemctl is-system-running").stdout
                      .split())  # fmt: skip
            print(f"boot {t1 - t0:.1f}s")
        print(f"total {time.monotonic() - t0:.1f}s")
        return 0
    print(main.__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
