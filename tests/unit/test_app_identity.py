"""Application identities (pki profile ``app``) and the node's local API settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from node.config import AppPermissions, ConfigError, node_config
from pki import ca
from pki.cli import main
from pki.identity import app, parse_spiffe_id, spiffe_id, tls_name

A, B = "0403019261", "0428759497"
BASE = Path("/etc/crossroads")
NODE: dict[str, object] = {
    "network": "demo", "enterprise_number": A, "listen": "0.0.0.0:7444",
    "hub": "hub:7443", "local_api": "unix:/run/crossroads/node.sock",
    "data_dir": "/var/lib/crossroads/node", "hub_directory_key": "hub-directory.pub",
    "tls": {"ca_cert": "ca.crt", "cert": "n.crt", "key": "n.key"}}
LOCAL_TLS = {"ca_cert": "ca.crt", "cert": "n.crt", "key": "n.key"}


def test_an_application_is_named_under_its_institution() -> None:
    payroll = app("demo", "0403.019.261", "payroll")
    assert spiffe_id(payroll) == f"spiffe://demo/institution/{A}/app/payroll"
    assert parse_spiffe_id(spiffe_id(payroll)) == payroll
    assert (payroll.kind, payroll.owner, payroll.name) == ("app", A, "payroll")
    assert tls_name(payroll) is None  # a client only
    with pytest.raises(ValueError, match="invalid name"):
        parse_spiffe_id(f"spiffe://demo/institution/{A}/app/Pay roll")
    with pytest.raises(ValueError, match="mod-97|check"):
        parse_spiffe_id("spiffe://demo/institution/0403019216/app/payroll")


def test_pki_issues_client_only_application_certificates(tmp_path: Path) -> None:
    ca.init_ca(tmp_path / "ca", "demo")
    assert main(["issue", "--ca-dir", str(tmp_path / "ca"), "--out-dir", str(tmp_path / "out"),
                 "--profile", "app", "--enterprise", A, "--name", "payroll"]) == 0
    cert = ca.load_certificate(tmp_path / "out" / f"app-{A}-payroll.crt")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://demo/institution/{A}/app/payroll"]
    assert san.get_values_for_type(x509.DNSName) == []
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ca.identity_of_certificate(cert) == app("demo", A, "payroll")
    # An application CSR cannot be signed as a node (nor the reverse).
    key, csr = ca.create_request(tmp_path / "req", app("demo", A, "other"))
    with pytest.raises(ca.PkiError, match="profile 'node' is for institution identities"):
        ca.sign_request(tmp_path / "ca", csr, "node", tmp_path / "req" / "x.crt")


def test_the_app_profile_needs_an_enterprise_and_a_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    ca.init_ca(tmp_path / "ca", "demo")
    assert main(["issue", "--ca-dir", str(tmp_path / "ca"), "--out-dir", str(tmp_path / "out"),
                 "--profile", "app", "--enterprise", A]) == 2
    assert "profile 'app' needs --enterprise <enterprise number> and --name" in (
        capsys.readouterr().err)


@pytest.mark.parametrize("address", ["127.0.0.1:7001", "0.0.0.0:7001", "[::]:7001",
                                     "192.168.1.5:7001"])
def test_a_tcp_local_api_without_mutual_tls_is_refused_naming_local_tls(address: str) -> None:
    with pytest.raises(ConfigError, match=r"^local_tls is required when local_api is a TCP"):
        node_config({**NODE, "local_api": address}, BASE)


def test_a_tcp_local_api_with_applications() -> None:
    cfg = node_config({**NODE, "local_api": "127.0.0.1:7001", "local_tls": LOCAL_TLS,
                       "applications": [{"name": "payroll", "send": ["demo.message"],
                                         "fetch": True}, {"name": "viewer"}]}, BASE)
    assert cfg.local_tls is not None and cfg.local_tls.cert == BASE / "n.crt"
    assert [(a.name, a.permissions) for a in cfg.applications] == [
        ("payroll", AppPermissions(send=frozenset({"demo.message"}), fetch=True)),
        ("viewer", AppPermissions()),
    ]


@pytest.mark.parametrize(("changes", "message"), [
    ({"local_tls": LOCAL_TLS}, "local_tls applies to a TCP local_api only"),
    ({"applications": [{"name": "payroll"}]}, "applications apply to a TCP local_api"),
    ({"local_api": "127.0.0.1:1", "local_tls": LOCAL_TLS, "local_socket": {"fetch": True}},
     "local_socket applies to a unix-socket local_api only"),
    ({"local_api": "127.0.0.1:1", "local_tls": LOCAL_TLS,
      "applications": [{"name": "a"}, {"name": "a"}]}, r"applications\[1\]\.name 'a' is listed twice"),
    ({"local_api": "127.0.0.1:1", "local_tls": LOCAL_TLS,
      "applications": [{"name": "a", "sned": ["x"]}]}, r"unknown setting applications\[0\]\.sned"),
    ({"local_api": "127.0.0.1:1", "local_tls": LOCAL_TLS,
      "applications": [{"name": "a", "send": "demo.message"}]}, r"applications\[0\]\.send must be"),
    ({"local_api": "127.0.0.1:1", "local_tls": LOCAL_TLS,
      "applications": [{"name": "A b"}]}, r"applications\[0\]\.name: invalid name"),
    ({"local_api": "127.0.0.1:1", "local_tls": {"ca_cert": "ca.crt"}}, "local_tls.cert is required"),
    ({"local_socket": {"fetch": "yes"}}, "local_socket.fetch must be true or false"),
])
def test_bad_local_api_settings_are_refused_with_the_key(
    changes: dict[str, object], message: str,
) -> None:
    with pytest.raises(ConfigError, match=message):
        node_config({**NODE, **changes}, BASE)


def test_the_unix_socket_is_unrestricted_unless_local_socket_says() -> None:
    assert node_config(NODE, BASE).local_socket is None
    limited = node_config({**NODE, "local_socket": {"send": ["*"]}}, BASE).local_socket
    assert limited == AppPermissions(send=frozenset({"*"}))
