"""A damaged or missing state, with real processes and real files (issue #13, "Damaged state").

A hub whose database is gone, damaged or replaced by an older copy must not serve as if new:
it refuses to start (missing, partial, corrupt) or its nodes notice (older copy), and the
audit chain can be checked against a checkpoint a node kept.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from node.client import LocalClient, make_envelope
from node.testing import DEMO_SERVICE, ProcessNetwork
from tests.conftest import A, B

DATABASE_FILES = ("hub.sqlite", "hub.sqlite-wal", "hub.sqlite-shm")


def _send(net: ProcessNetwork, count: int, prefix: str, payload: bytes = b"p" * 64) -> list[int]:
    """Submit ``count`` envelopes A -> B and wait until the hub acknowledged them."""
    envelopes = [make_envelope(DEMO_SERVICE, [B], payload, subject_citizen="85073003328",
                               sender_ticket=f"{prefix}{i}") for i in range(count)]
    with LocalClient(net.local_api(A)) as client:
        outcomes, seqs = client.submit(envelopes, timeout=60)
        assert {o.reason for o in outcomes} == {"ACCEPTED"}
        decided = client.outcomes(seqs, wait_ms=30_000)
    assert {o.reason for o in decided} == {"ACCEPTED"}, decided[:3]
    return seqs


def _crossroads(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", "-m", "node.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _start_refused(net: ProcessNetwork, *extra: str) -> str:
    """Start the hub on its config as an operator would; it must exit (not serve): its
    stderr. A hub that serves is stopped and the test fails."""
    ready = net.root / "refused.ready"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "node.cli", "hub", "serve", "--config",
         str(net.root / "hub.toml"), "--ready-file", str(ready), *extra],
        cwd=net.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=10)
        raise AssertionError("the hub started (or hung) instead of refusing")
    output = proc.communicate(timeout=10)[0]
    assert proc.returncode != 0, output
    return output


def _status(net: ProcessNetwork, who: str) -> dict[str, object]:
    done = _crossroads("node", "status", "--json", "--local-api", net.local_api(who),
                       cwd=net.root)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_hub_refuses_a_lost_or_partial_state_and_keeps_what_it_acknowledged(
        tmp_path: Path) -> None:
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.start(nodes=[A])  # B stays down: what A sends waits at the hub
        _send(net, 20, "kept-")
        net.stop("hub")
        hub_dir = net.root / "hub"
        backup = net.root / "hub-backup"
        shutil.copytree(hub_dir, backup)
        for name in DATABASE_FILES:  # a deleted file after a crash
            (hub_dir / name).unlink(missing_ok=True)

        # Without --init: refused, naming the data directory; the old code served, empty.
        out = _start_refused(net)
        assert "STATE_INCONSISTENT" in out and str(hub_dir) in out, out
        assert "hub.sqlite" in out and "directory.sqlite" in out, out
        # --init does not paper over it: directory.sqlite without hub.sqlite is a partial state.
        out = _start_refused(net, "--init")
        assert "STATE_INCONSISTENT" in out and "--init does not repair" in out, out
        assert not (hub_dir / "hub.sqlite").exists()

        # The whole data directory gone: a first start needs --init, said so.
        shutil.rmtree(hub_dir)
        out = _start_refused(net)
        assert "STATE_MISSING" in out and str(hub_dir) in out and "--init" in out, out
        assert not hub_dir.exists()

        # The backup put back: the hub serves what it had acknowledged, nothing lost.
        shutil.copytree(backup, hub_dir)
        net.start_hub()
        net.start_node(B)
        with LocalClient(net.local_api(B)) as client:
            got: list[str] = []
            deadline = time.monotonic() + 60
            while len(got) < 20 and time.monotonic() < deadline:
                batch = client.fetch(100, wait_ms=500)
                got += [e.sender_ticket for e in batch]
                client.acknowledge([e.hub_ticket for e in batch])
        assert sorted(got) == sorted(f"kept-{i}" for i in range(20))
        net.stop_all()
    done = _crossroads("audit", "verify", "--config", str(net.root / "hub.toml"), cwd=net.root)
    assert done.returncode == 0, done.stderr


def test_hub_refuses_a_database_with_garbage_in_the_middle(tmp_path: Path) -> None:
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.start(nodes=[A])
        _send(net, 300, "g-", payload=b"x" * 2000)
        net.stop_all()
        db = net.root / "hub" / "hub.sqlite"
        assert not (net.root / "hub" / "hub.sqlite-wal").exists()  # checkpointed at stop
        size = db.stat().st_size
        page = 4096
        rng = random.Random(13)
        with db.open("r+b") as f:  # three pages of garbage in the middle of the file
            f.seek((size // 2) // page * page)
            f.write(rng.randbytes(3 * page))
        out = _start_refused(net)
        assert "STATE_CORRUPT" in out and "integrity" in out and str(db) in out, out
        done = _crossroads("audit", "verify", "--db", str(db), cwd=net.root)
        assert done.returncode != 0, done.stdout


def test_node_detects_a_hub_restored_from_an_older_copy(tmp_path: Path) -> None:
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.start(nodes=[A])
        _send(net, 10, "old-")
        net.stop("hub")  # signs a checkpoint of its chain head on the way out
        hub_dir = net.root / "hub"
        older = net.root / "hub-older"
        shutil.copytree(hub_dir, older)
        net.start_hub()
        _wait_for(lambda: _status(net, A)["hub_checkpoint_seq"] != 0, 60,
                  "the node to keep the hub's checkpoint")
        _send(net, 10, "new-")
        net.stop("hub")
        newer = net.root / "hub-newer"
        shutil.copytree(hub_dir, newer)
        net.start_hub()  # the newer checkpoint reaches the node at Register
        _wait_for(lambda: int(str(_status(net, A)["hub_checkpoint_seq"])) > 10, 60,
                  "the node to keep the newer checkpoint")
        checkpoint = net.root / "a-checkpoint.json"
        done = _crossroads("node", "checkpoint", "--config", str(net.root / f"{A}.toml"),
                           "-o", str(checkpoint), cwd=net.root)
        assert done.returncode == 0, done.stderr

        # The restore gone wrong: the older copy put back, the hub started on it as is.
        net.stop("hub")
        shutil.rmtree(hub_dir)
        shutil.copytree(older, hub_dir)
        net.start_hub()
        _wait_for(lambda: _status(net, A)["hub_state"] != "OK", 60,
                  "the node to report the hub's lost state")
        status = _status(net, A)
        assert status["hub_state"] == "HUB_WATERMARK_REGRESSED", status
        assert "20" in str(status["hub_state_detail"]) and "10" in str(status["hub_state_detail"])
        # It does not go on as if nothing happened: what it sends now stays in its outbox.
        with LocalClient(net.local_api(A)) as client:
            client.submit([make_envelope(DEMO_SERVICE, [B], b"held", sender_ticket="held-0")])
        time.sleep(2)
        assert _status(net, A)["outbox_pending"] == 1
        found = [json.loads(line) for line in (net.root / f"{A}.log").read_text().splitlines()
                 if '"hub_state_regressed"' in line]
        assert [(f["level"], f["reason"]) for f in found] == [
            ("error", "HUB_WATERMARK_REGRESSED")], found  # once, at error, with its reason

        # The checkpoint the node kept proves which copy is the real chain.
        hub_toml = str(net.root / "hub.toml")
        key = str(net.root / "pki" / "directory-signing.pub")
        done = _crossroads("audit", "verify", "--db", str(older / "hub.sqlite"), "--key", key,
                           "--checkpoint", str(checkpoint), cwd=net.root)
        assert done.returncode == 1 and "checkpoint" in done.stderr, done.stderr
        done = _crossroads("audit", "verify", "--db", str(newer / "hub.sqlite"), "--key", key,
                           "--checkpoint", str(checkpoint), cwd=net.root)
        assert done.returncode == 0, done.stderr
        assert "holds the given checkpoint" in done.stdout

        # The operator puts the right copy back: the node resumes by itself.
        net.stop("hub")
        shutil.rmtree(hub_dir)
        shutil.copytree(newer, hub_dir)
        net.start_hub()
        _wait_for(lambda: _status(net, A)["hub_state"] == "OK", 60, "the node to resume")
        _wait_for(lambda: _status(net, A)["outbox_pending"] == 0, 60, "the held envelope")
        net.stop_all()
    done = _crossroads("audit", "verify", "--config", hub_toml, cwd=net.root)
    assert done.returncode == 0, done.stderr
