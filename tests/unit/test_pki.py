"""The network CA: identities, profiles, the CSR flow, revocation, verification and the CLI."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import DNSName
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from hypothesis import given
from hypothesis import strategies as st

from node.core.identifiers import enterprise_check_digits
from pki import ca
from pki.cli import main
from pki.identity import (
    Identity,
    admin,
    hub,
    institution,
    parse_spiffe_id,
    spiffe_id,
    tls_name,
)
from tests.unit.properties import examples

NET = "lab"
NODE = institution(NET, "0403019261")
HUB = hub(NET)
ADMIN = admin(NET, "alice")
SERVER_CLIENT = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
E = TypeVar("E", bound=x509.ExtensionType)
REPO = Path(__file__).resolve().parents[2]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    ca.init_ca(tmp_path / "ca", NET)
    return tmp_path / "ca"


# --------------------------------------------------------------------------------------------
# Identities


def test_identity_strings() -> None:
    assert spiffe_id(NODE) == "spiffe://lab/institution/0403019261"
    assert spiffe_id(HUB) == "spiffe://lab/hub"
    assert spiffe_id(ADMIN) == "spiffe://lab/admin/alice"
    assert tls_name(NODE) == "0403019261.institution.lab.crossroads"
    assert tls_name(HUB) == "hub.lab.crossroads"
    assert tls_name(ADMIN) is None
    assert institution(NET, "BE 0403.019.261") == NODE
    for identity in (NODE, HUB, ADMIN):
        assert parse_spiffe_id(spiffe_id(identity)) == identity
        assert str(identity) == spiffe_id(identity)


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("https://lab/hub", "not a spiffe"),
        ("spiffe://Lab/hub", "invalid network"),
        ("spiffe://-lab/hub", "invalid network"),
        ("spiffe:///hub", "invalid network"),
        ("spiffe://lab/hub/", "path must be"),
        ("spiffe://lab/institution", "path must be"),
        ("spiffe://lab/institution/0403019216", "mod-97 check digits"),
        ("spiffe://lab/institution/0403.019.261", "without separators"),
        ("spiffe://lab/institution/2123456791", "establishment unit"),
        ("spiffe://lab/admin/Alice", "invalid admin name"),
        ("spiffe://lab/admin/..", "invalid admin name"),
        ("spiffe://lab/robot/x", "path must be"),
    ],
)
def test_parse_spiffe_id_refuses(uri: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_spiffe_id(uri)


def test_invalid_enterprise_number_names_the_check() -> None:
    with pytest.raises(ValueError, match="mod-97 check digits"):
        institution(NET, "0403019216")


def test_network_names() -> None:
    assert hub("a" * 63).network == "a" * 63
    for bad in ("", "a" * 64, "Lab", "la_b", "lab-", "lab.x"):
        with pytest.raises(ValueError, match="invalid network name"):
            hub(bad)


@examples(50)
@given(st.text(alphabet="0123456789", min_size=7, max_size=7), st.sampled_from("01"))
def test_institution_identities_round_trip(tail: str, head: str) -> None:
    number = head + tail + enterprise_check_digits(head + tail)
    identity = institution(NET, number)
    assert parse_spiffe_id(spiffe_id(identity)) == identity
    assert tls_name(identity) == f"{number}.institution.lab.crossroads"


# --------------------------------------------------------------------------------------------
# The CA


def test_init_ca_writes_a_ca(ca_dir: Path) -> None:
    assert mode(ca_dir / "ca.key") == 0o600
    assert mode(ca_dir) == 0o700
    assert json.loads((ca_dir / "ca.json").read_text())["network"] == NET
    assert (ca_dir / "index.jsonl").read_text() == ""
    cert = load(ca_dir / "ca.crt")
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value == x509.BasicConstraints(True, 0)
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert ext(cert, x509.SubjectKeyIdentifier).value.digest
    assert ca.network_of_ca(cert) == NET
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_init_ca_refuses_to_overwrite(ca_dir: Path) -> None:
    before = (ca_dir / "ca.key").read_bytes()
    with pytest.raises(ca.PkiError, match="already exists"):
        ca.init_ca(ca_dir, NET)
    assert (ca_dir / "ca.key").read_bytes() == before


def test_init_ca_refuses_bad_network(tmp_path: Path) -> None:
    with pytest.raises(ca.PkiError, match="invalid network name"):
        ca.init_ca(tmp_path / "ca", "Bad_Net")
    assert not (tmp_path / "ca").exists()


@pytest.mark.parametrize(
    ("identity", "profile", "ekus", "key_agreement", "days"),
    [
        (NODE, "node", SERVER_CLIENT, True, 397),
        (HUB, "hub", SERVER_CLIENT, True, 397),
        (ADMIN, "admin", [ExtendedKeyUsageOID.CLIENT_AUTH], False, 90),
    ],
)
def test_issue_profiles(
    ca_dir: Path,
    tmp_path: Path,
    identity: Identity,
    profile: str,
    ekus: list[x509.ObjectIdentifier],
    key_agreement: bool,
    days: int,
) -> None:
    key_path, cert_path = ca.issue(ca_dir, tmp_path / "out", identity, profile)
    assert mode(key_path) == 0o600
    cert = load(cert_path)
    assert ca.identity_of_certificate(cert) == identity
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == ekus
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert usage.value.key_agreement is key_agreement
    assert not usage.value.key_cert_sign and not usage.value.key_encipherment
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    ca_ski = ext(load(ca_dir / "ca.crt"), x509.SubjectKeyIdentifier).value.digest
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski
    assert ext(cert, x509.SubjectKeyIdentifier).value.digest
    assert 0 < cert.serial_number < 2**159
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=days) <= lifetime <= timedelta(days=days, minutes=10)
    dns = ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert dns == ([tls_name(identity)] if tls_name(identity) else [])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity.name
    private = serialization.load_pem_private_key(key_path.read_bytes(), None)
    pub = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert private.public_key().public_bytes(*pub) == cert.public_key().public_bytes(*pub)
    [entry] = [json.loads(line) for line in (ca_dir / "index.jsonl").read_text().splitlines()]
    assert entry["serial"] == format(cert.serial_number, "x")
    assert entry["identity"] == spiffe_id(identity)
    assert entry["fingerprint_sha256"] == ca.fingerprint_sha256(cert)
    assert entry["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()


def test_extra_names_and_distinct_serials(ca_dir: Path, tmp_path: Path) -> None:
    _, first = ca.issue(ca_dir, tmp_path, NODE, "node", ["LocalHost"], ["127.0.0.1", "::1"])
    _, second = ca.issue(ca_dir, tmp_path, HUB, "hub")
    san = ext(load(first), x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [tls_name(NODE), "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert load(first).serial_number != load(second).serial_number


def test_certificates_pass_an_rfc5280_verifier(ca_dir: Path, tmp_path: Path) -> None:
    # cryptography's own path validator (Web PKI profile) is stricter than gRPC's TLS stack.
    store = Store([load(ca_dir / "ca.crt")])
    _, node_cert = ca.issue(ca_dir, tmp_path, NODE, "node")
    _, admin_cert = ca.issue(ca_dir, tmp_path, ADMIN, "admin")
    server = PolicyBuilder().store(store).build_server_verifier(DNSName(tls_name(NODE) or ""))
    assert server.verify(load(node_cert), [])
    client = PolicyBuilder().store(store).build_client_verifier()
    verified = client.verify(load(admin_cert), [])
    assert verified.subjects == [x509.UniformResourceIdentifier(spiffe_id(ADMIN))]


def test_bad_extra_names_are_refused(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ca.PkiError, match="invalid DNS name"):
        ca.create_request(tmp_path, NODE, extra_dns=["*.example.org"])
    with pytest.raises(ca.PkiError, match="does not appear to be an IPv4 or IPv6"):
        ca.create_request(tmp_path, NODE, extra_ips=["localhost"])
    assert list(tmp_path.iterdir()) == [ca_dir]


# --------------------------------------------------------------------------------------------
# The CSR flow


def test_request_then_sign(ca_dir: Path, tmp_path: Path) -> None:
    old_umask = os.umask(0)  # even a permissive umask must not expose the key
    try:
        key_path, csr_path = ca.create_request(
            tmp_path / "node", NODE, extra_dns=["node1.internal"], basename="n1"
        )
    finally:
        os.umask(old_umask)
    assert (key_path.name, csr_path.name) == ("n1.key", "n1.csr")
    assert mode(key_path) == 0o600
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.is_signature_valid
    cert_path = ca.sign_request(ca_dir, csr_path, "node", tmp_path / "node" / "n1.crt")
    cert = load(cert_path)
    assert cert.public_key() == csr.public_key()
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [tls_name(NODE), "node1.internal"]
    assert ca.verify_certificate(ca_dir / "ca.crt", cert_path, expected=NODE) == NODE


def test_request_never_overwrites_a_key(tmp_path: Path) -> None:
    key_path, _ = ca.create_request(tmp_path, NODE)
    before = key_path.read_bytes()
    with pytest.raises(ca.PkiError, match="refusing to overwrite a private key"):
        ca.create_request(tmp_path, NODE)
    assert key_path.read_bytes() == before


@pytest.mark.parametrize(
    ("identity", "profile", "fragment"),
    [
        (NODE, "hub", "profile 'hub' is for hub identities"),
        (HUB, "node", "profile 'node' is for institution identities"),
        (ADMIN, "node", "profile 'node' is for institution identities"),
        (NODE, "admin", "profile 'admin' is for admin identities"),
        (hub("other"), "hub", "network 'other' but this CA serves 'lab'"),
    ],
)
def test_sign_refuses_profile_or_network_mismatch(
    ca_dir: Path, tmp_path: Path, identity: Identity, profile: str, fragment: str
) -> None:
    _, csr_path = ca.create_request(tmp_path, identity)
    with pytest.raises(ca.PkiError, match=fragment):
        ca.sign_request(ca_dir, csr_path, profile, tmp_path / "x.crt")
    assert not (tmp_path / "x.crt").exists()
    assert (ca_dir / "index.jsonl").read_text() == ""


def forged_csr(path: Path, names: list[x509.GeneralName]) -> Path:
    """A CSR the library would never write (to check the CA does not trust its input)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        ([x509.UniformResourceIdentifier("spiffe://lab/institution/0403019216")], "mod-97"),
        ([x509.UniformResourceIdentifier("spiffe://lab/institution/0403.019.261")], "separators"),
        ([x509.DNSName("x.lab.crossroads")], "exactly one spiffe:// URI SAN, found 0"),
        (
            [
                x509.UniformResourceIdentifier("spiffe://lab/institution/0403019261"),
                x509.UniformResourceIdentifier("spiffe://lab/hub"),
            ],
            "exactly one spiffe:// URI SAN, found 2",
        ),
        (
            [
                x509.UniformResourceIdentifier("spiffe://lab/institution/0403019261"),
                x509.DNSName("hub.lab.crossroads"),
            ],
            "names are reserved",
        ),
        (
            [
                x509.UniformResourceIdentifier("spiffe://lab/institution/0403019261"),
                x509.DNSName("anything.CROSSROADS"),
            ],
            "names are reserved",
        ),
        (
            [
                x509.UniformResourceIdentifier("spiffe://lab/institution/0403019261"),
                x509.RFC822Name("a@example.org"),
            ],
            "unsupported SAN",
        ),
    ],
)
def test_sign_refuses_forged_requests(
    ca_dir: Path, tmp_path: Path, names: list[x509.GeneralName], fragment: str
) -> None:
    csr_path = forged_csr(tmp_path / "forged.csr", names)
    with pytest.raises(ca.PkiError, match=fragment):
        ca.sign_request(ca_dir, csr_path, "node", tmp_path / "x.crt")


def test_the_ca_writes_the_san_itself(ca_dir: Path, tmp_path: Path) -> None:
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.DNSName("Node1.Example.org"),
        x509.UniformResourceIdentifier("spiffe://lab/institution/0403019261"),
    ]
    csr_path = forged_csr(tmp_path / "n.csr", names)
    cert = load(ca.sign_request(ca_dir, csr_path, "node", tmp_path / "n.crt"))
    assert list(ext(cert, x509.SubjectAlternativeName).value) == [
        x509.UniformResourceIdentifier("spiffe://lab/institution/0403019261"),
        x509.DNSName("0403019261.institution.lab.crossroads"),
        x509.DNSName("node1.example.org"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "0403019261"


def test_sign_refuses_a_tampered_request(ca_dir: Path, tmp_path: Path) -> None:
    _, csr_path = ca.create_request(tmp_path, NODE)
    der = bytearray(
        x509.load_pem_x509_csr(csr_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    )
    der[-1] ^= 0x01  # last byte of the ECDSA signature
    tampered = x509.load_der_x509_csr(bytes(der))
    (tmp_path / "bad.csr").write_bytes(tampered.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ca.PkiError, match="signature is invalid"):
        ca.sign_request(ca_dir, tmp_path / "bad.csr", "node", tmp_path / "x.crt")


def test_lifetime_overrides(ca_dir: Path, tmp_path: Path) -> None:
    _, short = ca.issue(ca_dir, tmp_path, NODE, "node", validity_days=2)
    cert = load(short)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc < timedelta(days=2, minutes=10)
    ca_end = load(ca_dir / "ca.crt").not_valid_after_utc
    _, long = ca.issue(ca_dir, tmp_path, HUB, "hub", validity_days=100_000)
    assert load(long).not_valid_after_utc == ca_end  # clamped to the CA's own lifetime
    now = datetime.now(UTC)
    with pytest.raises(ca.PkiError, match="before it starts"):
        ca.issue(ca_dir, tmp_path, ADMIN, "admin", not_before=now, not_after=now)
    assert not (tmp_path / "admin-alice.key").exists()  # no orphan key left behind


# --------------------------------------------------------------------------------------------
# Revocation and verification


def test_revoke_crl_and_verify(ca_dir: Path, tmp_path: Path) -> None:
    _, victim = ca.issue(ca_dir, tmp_path, NODE, "node")
    _, other = ca.issue(ca_dir, tmp_path, HUB, "hub")
    crl = ca.generate_crl(ca_dir, tmp_path / "crl0.pem")
    assert ca.load_revoked_serials(crl, ca_dir / "ca.crt") == frozenset()
    assert ca.verify_certificate(ca_dir / "ca.crt", victim, crl) == NODE

    serial = ca.revoke(ca_dir, cert_path=victim, reason="key-compromise")
    assert serial == format(load(victim).serial_number, "x")
    assert ca.revoke(ca_dir, cert_path=victim) == serial  # idempotent
    crl = ca.generate_crl(ca_dir, tmp_path / "crl1.pem")
    assert ca.load_revoked_serials(crl, ca_dir / "ca.crt") == {load(victim).serial_number}
    with pytest.raises(ca.PkiError, match=f"serial {serial} is revoked"):
        ca.verify_certificate(ca_dir / "ca.crt", victim, crl)
    assert ca.verify_certificate(ca_dir / "ca.crt", other, crl) == HUB

    parsed = x509.load_pem_x509_crl(crl.read_bytes())
    assert parsed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    entry = parsed.get_revoked_certificate_by_serial_number(load(victim).serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert parsed.next_update_utc is not None
    assert parsed.next_update_utc - parsed.last_update_utc >= timedelta(days=7)


def test_revoke_by_serial(ca_dir: Path, tmp_path: Path) -> None:
    _, cert_path = ca.issue(ca_dir, tmp_path, NODE, "node")
    serial = load(cert_path).serial_number
    colon_hex = ":".join(f"{b:02X}" for b in serial.to_bytes(20, "big"))
    assert ca.revoke(ca_dir, serial_hex=colon_hex) == format(serial, "x")
    crl = ca.generate_crl(ca_dir, tmp_path / "crl.pem")
    assert serial in ca.load_revoked_serials(crl, ca_dir / "ca.crt")
    with pytest.raises(ca.PkiError, match="not issued by this CA"):
        ca.revoke(ca_dir, serial_hex="abc123")
    with pytest.raises(ca.PkiError, match="exactly one"):
        ca.revoke(ca_dir)
    with pytest.raises(ca.PkiError, match="unknown revocation reason"):
        ca.revoke(ca_dir, serial_hex=format(serial, "x"), reason="bored")


def test_expired_and_not_yet_valid(ca_dir: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    _, expired = ca.issue(
        ca_dir,
        tmp_path,
        NODE,
        "node",
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
    )
    with pytest.raises(ca.PkiError, match="expired on"):
        ca.verify_certificate(ca_dir / "ca.crt", expired)
    _, fresh = ca.issue(ca_dir, tmp_path, HUB, "hub")
    assert ca.verify_certificate(ca_dir / "ca.crt", fresh, at=now + timedelta(days=396)) == HUB
    with pytest.raises(ca.PkiError, match="expired on"):
        ca.verify_certificate(ca_dir / "ca.crt", fresh, at=now + timedelta(days=398))
    with pytest.raises(ca.PkiError, match="not valid yet"):
        ca.verify_certificate(ca_dir / "ca.crt", fresh, at=now - timedelta(hours=1))


def test_foreign_ca_is_rejected(ca_dir: Path, tmp_path: Path) -> None:
    # Same network name, same subject: only the signature tells them apart.
    ca.init_ca(tmp_path / "rogue", NET)
    _, foreign = ca.issue(tmp_path / "rogue", tmp_path / "out", NODE, "node")
    with pytest.raises(ca.PkiError, match="not issued by this CA"):
        ca.verify_certificate(ca_dir / "ca.crt", foreign)
    with pytest.raises(ca.PkiError, match="not issued by this CA"):
        ca.revoke(ca_dir, cert_path=foreign)
    rogue_crl = ca.generate_crl(tmp_path / "rogue", tmp_path / "rogue.pem")
    with pytest.raises(ca.PkiError, match="not signed by this CA"):
        ca.load_revoked_serials(rogue_crl, ca_dir / "ca.crt")


def test_expected_identity(ca_dir: Path, tmp_path: Path) -> None:
    _, cert_path = ca.issue(ca_dir, tmp_path, NODE, "node")
    assert ca.verify_certificate(ca_dir / "ca.crt", cert_path, expected=spiffe_id(NODE)) == NODE
    with pytest.raises(ca.PkiError, match="identity mismatch: expected spiffe://lab/hub"):
        ca.verify_certificate(ca_dir / "ca.crt", cert_path, expected=HUB)
    with pytest.raises(ca.PkiError, match="expected identity"):
        ca.verify_certificate(ca_dir / "ca.crt", cert_path, expected="spiffe://lab/nobody")


def test_wrong_network_and_ca_as_leaf(ca_dir: Path, tmp_path: Path) -> None:
    ca_cert = load(ca_dir / "ca.crt")
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub")]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://other/hub")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "other.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ca.PkiError, match="network 'other', not 'lab'"):
        ca.verify_certificate(ca_dir / "ca.crt", tmp_path / "other.crt")
    with pytest.raises(ca.PkiError, match="CA certificate, not a leaf"):
        ca.verify_certificate(ca_dir / "ca.crt", ca_dir / "ca.crt")


def test_ed25519_ca(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ca.init_ca(ca_dir, NET, algorithm="ed25519")
    assert isinstance(load(ca_dir / "ca.crt").public_key(), ed25519.Ed25519PublicKey)
    _, ec_leaf = ca.issue(ca_dir, tmp_path, NODE, "node")
    _, ed_leaf = ca.issue(ca_dir, tmp_path, HUB, "hub", algorithm="ed25519")
    assert ca.verify_certificate(ca_dir / "ca.crt", ec_leaf) == NODE
    assert ca.verify_certificate(ca_dir / "ca.crt", ed_leaf) == HUB
    assert not ext(load(ed_leaf), x509.KeyUsage).value.key_agreement  # no ECDH with Ed25519
    ca.revoke(ca_dir, cert_path=ed_leaf)
    crl = ca.generate_crl(ca_dir, tmp_path / "crl.pem")
    assert ca.load_revoked_serials(crl, ca_dir / "ca.crt") == {load(ed_leaf).serial_number}
    with pytest.raises(ca.PkiError, match="revoked"):
        ca.verify_certificate(ca_dir / "ca.crt", ed_leaf, crl)


def test_missing_ca_and_files(tmp_path: Path) -> None:
    with pytest.raises(ca.PkiError, match="no CA in"):
        ca.issue(tmp_path / "nothing", tmp_path, NODE, "node")
    with pytest.raises(ca.PkiError, match="certificate not found"):
        ca.verify_certificate(tmp_path / "ca.crt", tmp_path / "x.crt")
    (tmp_path / "junk.crt").write_text("hello")
    with pytest.raises(ca.PkiError, match="is not a PEM certificate"):
        ca.load_certificate(tmp_path / "junk.crt")


# --------------------------------------------------------------------------------------------
# The CLI


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_happy_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir, out = str(tmp_path / "ca"), tmp_path / "out"
    code, stdout, _ = run(capsys, "pki", "init-ca", "--ca-dir", ca_dir, "--network", NET)
    assert (code, stdout.strip()) == (0, f"{ca_dir}/ca.crt")

    code, stdout, _ = run(
        capsys,
        "issue",
        "--ca-dir",
        ca_dir,
        "--out-dir",
        str(out),
        "--profile",
        "node",
        "--enterprise",
        "0403.019.261",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--days",
        "30",
    )
    assert code == 0
    assert stdout.split() == [str(out / "0403019261.key"), str(out / "0403019261.crt")]
    cert = load(out / "0403019261.crt")
    assert ca.identity_of_certificate(cert) == NODE
    assert cert.not_valid_after_utc - cert.not_valid_before_utc < timedelta(days=31)

    code, stdout, _ = run(
        capsys,
        "request",
        "--out-dir",
        str(out),
        "--network",
        NET,
        "--profile",
        "admin",
        "--name",
        "alice",
    )
    assert code == 0 and stdout.split() == [
        str(out / "admin-alice.key"),
        str(out / "admin-alice.csr"),
    ]
    code, stdout, _ = run(
        capsys,
        "sign",
        "--ca-dir",
        ca_dir,
        "--csr",
        str(out / "admin-alice.csr"),
        "--profile",
        "admin",
        "--out",
        str(out / "admin-alice.crt"),
    )
    assert (code, stdout.strip()) == (0, str(out / "admin-alice.crt"))

    def verify(cert: Path, *more: str) -> tuple[int, str, str]:
        return run(capsys, "verify", "--ca-cert", f"{ca_dir}/ca.crt", "--cert", str(cert), *more)

    code, stdout, _ = verify(out / "admin-alice.crt", "--identity", "spiffe://lab/admin/alice")
    assert code == 0
    assert stdout.startswith("spiffe://lab/admin/alice valid until 20")

    code, stdout, _ = run(
        capsys, "revoke", "--ca-dir", ca_dir, "--cert", str(out / "0403019261.crt")
    )
    assert code == 0 and format(cert.serial_number, "x") in stdout
    code, stdout, _ = run(capsys, "crl", "--ca-dir", ca_dir, "--out", str(tmp_path / "crl.pem"))
    assert (code, stdout.strip()) == (0, str(tmp_path / "crl.pem"))
    code, _, err = verify(out / "0403019261.crt", "--crl", str(tmp_path / "crl.pem"))
    assert code == 2
    assert err == f"crossroads pki: error: certificate serial {cert.serial_number:x} is revoked\n"


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir = str(tmp_path / "ca")
    assert run(capsys, "init-ca", "--ca-dir", ca_dir, "--network", NET)[0] == 0

    code, _, err = run(
        capsys,
        "issue",
        "--ca-dir",
        ca_dir,
        "--out-dir",
        str(tmp_path),
        "--profile",
        "node",
        "--enterprise",
        "0403019216",
    )
    assert code == 2
    assert err.startswith("crossroads pki: error: invalid enterprise number '0403019216'")
    assert "mod-97 check digits" in err and err.count("\n") == 1

    code, _, err = run(
        capsys, "issue", "--ca-dir", ca_dir, "--out-dir", str(tmp_path), "--profile", "node"
    )
    assert (code, err) == (
        2,
        "crossroads pki: error: profile 'node' needs --enterprise <enterprise number>\n",
    )

    code, _, err = run(capsys, "init-ca", "--ca-dir", ca_dir, "--network", NET)
    assert code == 2 and "already exists" in err

    code, _, err = run(
        capsys,
        "request",
        "--out-dir",
        str(tmp_path / "r"),
        "--network",
        "other",
        "--profile",
        "hub",
    )
    assert code == 0
    code, _, err = run(
        capsys,
        "sign",
        "--ca-dir",
        ca_dir,
        "--csr",
        str(tmp_path / "r" / "hub.csr"),
        "--profile",
        "hub",
        "--out",
        str(tmp_path / "hub.crt"),
    )
    assert code == 2 and "this CA serves 'lab'" in err

    code, _, err = run(capsys, "revoke", "--ca-dir", ca_dir, "--serial", "zz")
    assert (code, err) == (2, "crossroads pki: error: invalid serial 'zz': expected hexadecimal\n")

    code, _, err = run(capsys, "sign", "--ca-dir", ca_dir, "--profile", "root")
    assert code == 2 and "invalid choice: 'root'" in err  # argparse usage error
    code, _, err = run(capsys, "revoke", "--ca-dir", ca_dir, "--serial", "1", "--cert", "x")
    assert code == 2 and "not allowed with argument" in err


def test_cli_register_into_a_parent_parser(tmp_path: Path) -> None:
    import argparse

    from pki.cli import register

    parser = argparse.ArgumentParser(prog="crossroads")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pki", "init-ca", "--ca-dir", str(tmp_path / "ca"), "--network", NET])
    assert args.func(args) == 0
    assert (tmp_path / "ca" / "ca.crt").exists()


def test_cli_as_module(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pki.cli", "init-ca", "--ca-dir", str(tmp_path), "--network", "9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (result.returncode, result.stdout.strip()) == (0, str(tmp_path / "ca.crt"))
