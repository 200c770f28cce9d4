"""SIGHUP on real daemons (node/reload.py): a certificate rotation without a restart and
without dropping a stream, a revocation of the old certificate that the rotated node
survives, files that do not fit refused, and the log level in force at once."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import time
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from node.client import LocalClient, make_envelope
from node.testing import DEMO_SERVICE, ProcessNetwork, write_toml
from pki import ca as pki_ca
from tests.conftest import A, B, fetch_all

pytestmark = pytest.mark.slow


def _events(net: ProcessNetwork, name: str, event: str) -> list[dict[str, object]]:
    lines = (net.root / f"{name}.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return [r for r in records if r.get("event") == event]


def _hup_and_wait(net: ProcessNetwork, name: str, event: str) -> dict[str, object]:
    """SIGHUP ``name``; its first ``event`` line after the signal."""
    before = len(_events(net, name, event))
    os.kill(net.pid(name), signal.SIGHUP)
    deadline = time.monotonic() + 15
    while len(found := _events(net, name, event)) == before:
        assert time.monotonic() < deadline, f"no {event} from {name}"
        time.sleep(0.05)
    return found[before]


def _replace(target: Path, source: Path) -> None:
    """As an operator's tooling would: the new file complete, then renamed over the old."""
    tmp = target.with_suffix(".new")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _send_and_fetch(net: ProcessNetwork, tag: str, count: int = 3) -> None:
    envelopes = [make_envelope(DEMO_SERVICE, [B], b"m", sender_ticket=f"{tag}{i}")
                 for i in range(count)]
    with LocalClient(net.local_api(A)) as client:
        _, seqs = client.submit(envelopes, timeout=30)
        outcomes = client.outcomes(seqs, wait_ms=30_000)
    assert [o.reason for o in outcomes] == ["ACCEPTED"] * count
    got = asyncio.run(fetch_all(net.local_api(B), count))
    assert sorted(e.sender_ticket for e in got) == sorted(f"{tag}{i}" for i in range(count))


def _served_certificate(net: ProcessNetwork) -> bytes:
    """The certificate a new connection to the hub is shown (DER), with B's as client's."""
    key, cert = net.node_certs[B]
    context = ssl.create_default_context(cafile=str(net.pki.ca_cert))
    context.check_hostname = False
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    host, port = net.hub_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw) as tls:
        served = tls.getpeercert(binary_form=True)
    assert served is not None
    return served


def _der(pem: Path) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(Encoding.DER)


def test_sighup_rotates_certificates_without_dropping_a_stream(tmp_path: Path) -> None:
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.start()
        _send_and_fetch(net, "before-")
        old_hub = _der(net.hub_cert)
        assert _served_certificate(net) == old_hub
        old_a_cert = net.root / "old-a.crt"
        shutil.copyfile(net.node_certs[A][1], old_a_cert)
        # New keys and certificates for the hub and for A, written over the configured files.
        hub_key, hub_cert = net.pki.issue("hub", basename="hub-rotated")
        a_key, a_cert = net.pki.issue(A, basename=f"{A}-rotated")
        for target, source in ((net.hub_key, hub_key), (net.hub_cert, hub_cert),
                               (net.node_certs[A][0], a_key), (net.node_certs[A][1], a_cert)):
            _replace(target, source)
        assert _hup_and_wait(net, "hub", "reloaded")["tls"] == "replaced"
        assert _hup_and_wait(net, A, "reloaded")["tls"] == "replaced"
        # A new connection meets the new certificate; the streams open before go on.
        assert _served_certificate(net) == _der(hub_cert) != old_hub
        _send_and_fetch(net, "after-")
        assert len(_events(net, A, "uplink_registered")) == 1  # no reconnection
        # The old certificate of A revoked, the hub's CRL reloaded: A's stream on the old
        # certificate ends at its next message, and A comes back on its new one.
        pki_ca.revoke(net.pki.ca_dir, cert_path=old_a_cert)
        net.pki.crl()
        assert _hup_and_wait(net, "hub", "reloaded")["crl"] == "replaced"
        _send_and_fetch(net, "revoked-")
        assert len(_events(net, A, "uplink_registered")) >= 2


def test_files_that_do_not_fit_are_refused_and_the_level_changes_at_once(
        tmp_path: Path) -> None:
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.start()
        served = _served_certificate(net)
        # A key that is not the certificate's: refused, the hub serves on as it was.
        other_key, _ = net.pki.issue(B, basename="stray")
        _replace(net.hub_key, other_key)
        refused = _hup_and_wait(net, "hub", "tls_reload_refused")
        assert refused["error"] == "the key is not the certificate's"
        assert _served_certificate(net) == served
        _send_and_fetch(net, "still-")
        # A key that cannot change while running is named, not applied.
        table = tomllib.loads((net.root / "hub.toml").read_text())  # as the hub started
        table["limits"] = {"max_payload_bytes": 1024}
        write_toml(net.root / "hub.toml", table)
        # (Waiting for the reload's last line, "reloaded", not its warning: the count of
        # "reloaded" lines below must not race with this reload's.)
        _hup_and_wait(net, "hub", "reloaded")
        assert _events(net, "hub", "reload_needs_restart")[-1]["keys"] == ["limits"]
        # log_level = "error": the next reload's info line ("reloaded") is not written any
        # more, its error line is.
        table["log_level"] = "error"
        write_toml(net.root / "hub.toml", table)
        reloads = len(_events(net, "hub", "reloaded"))
        _hup_and_wait(net, "hub", "tls_reload_refused")
        time.sleep(0.5)
        assert len(_events(net, "hub", "reloaded")) == reloads
        # A file that is no configuration any more: refused whole, the hub serves on.
        (net.root / "hub.toml").write_text("listen = \n")
        assert _hup_and_wait(net, "hub", "reload_refused")["effect"] == "nothing changed"
        _send_and_fetch(net, "last-")


def test_every_old_certificate_revoked_after_a_rotation_by_sighup(tmp_path: Path) -> None:
    """The whole network rotated by SIGHUP (hub, sender A, receiver B), then every old
    certificate revoked: the connections made under the old ones (A's uplink to the hub, the
    hub's deliveries to B) end, and new ones, on the new certificates, carry the traffic."""
    with ProcessNetwork(tmp_path / "net", institutions=(A, B)) as net:
        net.start()
        _send_and_fetch(net, "before-")
        old = {name: net.root / f"old-{name}.crt" for name in ("hub", A, B)}
        shutil.copyfile(net.hub_cert, old["hub"])
        for who in (A, B):
            shutil.copyfile(net.node_certs[who][1], old[who])
        files = {"hub": (net.hub_key, net.hub_cert), A: net.node_certs[A], B: net.node_certs[B]}
        for name, (key_path, cert_path) in files.items():
            new_key, new_cert = net.pki.issue(name, basename=f"{name}-rotated")
            _replace(key_path, new_key)
            _replace(cert_path, new_cert)
            assert _hup_and_wait(net, name, "reloaded")["tls"] == "replaced"
        _send_and_fetch(net, "after-")
        for cert_path in old.values():
            pki_ca.revoke(net.pki.ca_dir, cert_path=cert_path)
        net.pki.crl()
        assert _hup_and_wait(net, "hub", "reloaded")["crl"] == "replaced"
        _send_and_fetch(net, "revoked-")
