"""A network namespace the test makes itself, joined to this host by veth links it can cut.

A hub replica run inside :class:`Namespace` reaches the rest of the test only through its
links, each a veth pair with a /24 of its own: ``link(n)`` has ``10.<base>.<n>.1`` on the
host side and ``10.<base>.<n>.2`` inside. :meth:`Namespace.cut` takes the host side down:
packets on that link are dropped (no reset, no refusal: a partition, as a broken switch or a
firewall would make it), until :meth:`Namespace.mend` brings it up again.

Needs root and ``ip`` (iproute2). Names are short (interface names hold 15 characters) and
carry the pid, so concurrent runs on one machine do not collide.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

__all__ = ["Link", "Namespace", "namespaces_available"]


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True, timeout=30)


def namespaces_available() -> str | None:
    """None when this process may make namespaces and links; else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"crxp{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"cannot make a network namespace: {exc}"
    return None


@dataclass(frozen=True)
class Link:
    host_side: str
    host_ip: str
    inside_ip: str


@dataclass
class Namespace:
    """``ip netns`` ``name`` with ``links`` veth links (see the module's docstring)."""

    tag: str
    base: int = 77
    links: int = 2
    name: str = field(init=False)
    link: list[Link] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.name = f"crx{self.tag}{os.getpid() % 100000}"

    def create(self) -> Namespace:
        _ip("netns", "add", self.name)
        self._inside("link", "set", "lo", "up")
        for n in range(self.links):
            host, inside = f"{self.name[:11]}h{n}", f"{self.name[:11]}n{n}"
            subnet = f"10.{self.base}.{n}"
            _ip("link", "add", host, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", self.name)
            _ip("addr", "add", f"{subnet}.1/24", "dev", host)
            _ip("link", "set", host, "up")
            self._inside("addr", "add", f"{subnet}.2/24", "dev", inside)
            self._inside("link", "set", inside, "up")
            self.link.append(Link(host, f"{subnet}.1", f"{subnet}.2"))
        return self

    def _inside(self, *argv: str) -> None:
        _ip("netns", "exec", self.name, "ip", *argv)

    @property
    def wrap(self) -> list[str]:
        """The command prefix that runs a program inside."""
        return ["ip", "netns", "exec", self.name]

    def cut(self, n: int) -> None:
        _ip("link", "set", self.link[n].host_side, "down")

    def mend(self, n: int) -> None:
        _ip("link", "set", self.link[n].host_side, "up")

    def delete(self) -> None:
        for link in self.link:
            subprocess.run(["ip", "link", "del", link.host_side], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)

    def __enter__(self) -> Namespace:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()
