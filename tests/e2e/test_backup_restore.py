"""The restore drill (docs/OPERATIONS.md, "Backup and restore"), on real processes: a hub
backed up online under load, its data directory destroyed, restored and restarted; every
envelope acknowledged before the backup is fetched exactly once afterwards, nothing twice,
and the restored audit chain verifies. Plus the refusals of backup and restore."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from node.client import LocalClient, make_envelope
from node.testing import DEMO_SERVICE, ProcessNetwork
from tests.conftest import A, B

pytestmark = pytest.mark.slow


def crossroads(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", "-m", "node.cli", *args], capture_output=True,
                          text=True, timeout=120, check=False)


class Load:
    """A sends B batches of 20 envelopes, each with its own ticket; B's application fetches
    and acknowledges. Records when each envelope's acknowledgement came, and every fetch."""

    def __init__(self, net: ProcessNetwork) -> None:
        self.net = net
        self.acked_at: dict[str, float] = {}
        self.fetched: list[str] = []
        self.sending, self.fetching = threading.Event(), threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._fetch)]

    def __enter__(self) -> Load:
        self.sending.set()
        self.fetching.set()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sending.clear()
        self.fetching.clear()
        for t in self.threads:
            t.join(30)

    def _send(self) -> None:
        n = 0
        with LocalClient(self.net.local_api(A)) as client:
            while self.sending.is_set():
                tickets = [f"t{n + i}" for i in range(20)]
                n += 20
                outcomes, _ = client.submit(
                    [make_envelope(DEMO_SERVICE, [B], b"x", sender_ticket=t) for t in tickets])
                now = time.monotonic()
                self.acked_at.update((t, now) for t, o in zip(tickets, outcomes, strict=True)
                                     if o.reason == "ACCEPTED")
                time.sleep(0.02)

    def _fetch(self) -> None:
        while self.fetching.is_set():
            try:
                with LocalClient(self.net.local_api(B)) as client:
                    while self.fetching.is_set():
                        got = client.fetch(500, wait_ms=200)
                        self.fetched += [e.sender_ticket for e in got]
                        if got:
                            client.acknowledge([e.hub_ticket for e in got])
            except Exception:  # noqa: BLE001 - the node may be restarting: try again
                time.sleep(0.2)


def test_a_hub_restored_from_an_online_backup_delivers_what_it_had_once(tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.start()
        hub_toml = str(net.root / "hub.toml")
        with Load(net) as load:
            time.sleep(2)
            started = time.monotonic()
            taken = crossroads("hub", "backup", "--config", hub_toml, "--out", str(backup))
            assert taken.returncode == 0, taken.stderr
            time.sleep(1)
            before = {t for t, at in load.acked_at.items() if at < started}
            net.kill("hub")  # the machine is gone ...
            shutil.rmtree(net.root / "hub")  # ... and its disk
            restored = crossroads("hub", "restore", "--config", hub_toml, "--from", str(backup))
            assert restored.returncode == 0, restored.stderr
            net.start_hub()  # where it was, without --init: its state is back
            deadline = time.monotonic() + 60
            while not before <= set(load.fetched) and time.monotonic() < deadline:
                time.sleep(0.2)
            load.sending.clear()
            time.sleep(1)  # a duplicate would show up now
        assert len(before) >= 100
        counts = Counter(load.fetched)
        assert before <= set(counts), f"{len(before - set(counts))} acknowledged ones lost"
        assert [t for t, n in counts.items() if n > 1] == []
        net.stop("hub")
        verify = crossroads("audit", "verify", "--config", hub_toml)
        assert verify.returncode == 0, verify.stdout + verify.stderr


def test_backup_and_restore_refuse_what_would_lose_state(tmp_path: Path) -> None:
    with ProcessNetwork(tmp_path / "net", institutions=(A,)) as net:
        net.start()
        hub_toml = str(net.root / "hub.toml")
        assert crossroads("hub", "backup", "--config", hub_toml,
                          "--out", str(tmp_path / "b")).returncode == 0
        again = crossroads("hub", "backup", "--config", hub_toml, "--out", str(tmp_path / "b"))
        assert again.returncode == 1 and "is not empty" in again.stderr
        running = crossroads("hub", "restore", "--config", hub_toml, "--from", str(tmp_path / "b"))
        assert running.returncode == 1 and "in use by another daemon" in running.stderr
        net.stop("hub")
        present = crossroads("hub", "restore", "--config", hub_toml, "--from", str(tmp_path / "b"))
        assert present.returncode == 1 and "--replace" in present.stderr
        node = crossroads("node", "restore", "--config", str(net.root / f"{A}.toml"),
                          "--from", str(tmp_path / "b"))
        assert node.returncode == 1 and "a backup of a hub, not of a node" in node.stderr
        # A node's state backs up while it runs too, and goes back into an empty data dir.
        node_toml = str(net.root / f"{A}.toml")
        assert crossroads("node", "backup", "--config", node_toml,
                          "--out", str(tmp_path / "n")).returncode == 0
        assert sorted(p.name for p in (tmp_path / "n").iterdir()) == [
            "fragment.sqlite", "manifest.json", "node.sqlite"]
        net.stop(A)
        shutil.rmtree(net.root / "nodes" / A)
        back = crossroads("node", "restore", "--config", node_toml, "--from", str(tmp_path / "n"))
        assert back.returncode == 0, back.stderr
        net.start_node(A)  # without --init: the state is there
        (tmp_path / "b" / "hub.sqlite").write_bytes(b"not the file")
        forged = crossroads("hub", "restore", "--config", hub_toml, "--from", str(tmp_path / "b"),
                            "--replace")
        assert forged.returncode == 1 and "not the file the backup recorded" in forged.stderr
