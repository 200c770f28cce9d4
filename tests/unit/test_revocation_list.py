"""The CRL in force: only the network CA's, never replaced by an older one, stale past nextUpdate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node.rpc.revocation import CRL_STALE, RevocationList
from node.testing import Pki
from pki import ca as pki_ca
from pki.ca import PkiError


def test_an_older_crl_never_replaces_a_newer_one(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    _, cert = pki.issue("0403019261")
    serial = int(pki_ca.revoke(pki.ca_dir, cert_path=cert), 16)
    newer = pki.crl().read_bytes()  # CRL number 1, revokes the serial
    older = pki.crl_bytes(number=0)  # revokes nothing
    revocations = RevocationList(None, pki.ca_cert)
    assert revocations.adopt_bytes(newer, "test")
    assert not revocations.adopt_bytes(older, "replayed")
    assert serial in revocations.serials


def test_a_crl_of_another_ca_is_refused(tmp_path: Path) -> None:
    pki, other = Pki(tmp_path / "pki"), Pki(tmp_path / "other")
    revocations = RevocationList(None, pki.ca_cert)
    with pytest.raises(PkiError, match="not signed by this network's CA"):
        revocations.adopt_bytes(other.crl().read_bytes(), "elsewhere")
    assert revocations.current is None


@pytest.mark.parametrize(("policy", "gate"), [("refuse", CRL_STALE), ("warn", None)])
def test_a_stale_crl_follows_the_policy(tmp_path: Path, policy: str, gate: str | None) -> None:
    pki = Pki(tmp_path / "pki")
    stale = pki.crl_bytes(number=3, next_update=datetime.now(UTC) - timedelta(seconds=1))
    revocations = RevocationList(None, pki.ca_cert, stale_policy=policy)
    assert revocations.gate() is None  # nothing loaded: nothing stale
    revocations.adopt_bytes(stale, "test")
    assert revocations.gate() == gate
    assert revocations.stale
