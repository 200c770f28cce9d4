"""The metrics endpoint's web configuration (``[metrics]``, node/metrics_web.py): real HTTP
servers on 127.0.0.1, certificates from the network's PKI. TLS with the right CA works and
plain HTTP to the TLS port does not; ``/metrics`` needs a user's password (401 otherwise,
counted by reason), the probes do not; client certificates when ``client_ca`` says so; the
TLS files are read again on reload."""

from __future__ import annotations

import base64
import http.client
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import structlog.testing

from node.config import ConfigError, MetricsWeb, node_config
from node.metrics import MetricsEndpoint
from node.metrics_web import MAX_AUTHORIZATION, BasicAuth
from node.probes import Readiness
from node.testing import Pki
from tests.conftest import A

PASSWORD = "scrape-me"
#: Cost 4: the lowest bcrypt takes, so the tests stay fast (production hashes: 10-12).
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("metrics-web"))


def _endpoint(web: MetricsWeb, address: str = "127.0.0.1:0") -> Iterator[MetricsEndpoint]:
    endpoint = MetricsEndpoint(address, lambda: iter(()), lambda: Readiness({}), web)
    endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()


def _client_context(pki: Pki, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if cert is not None:
        key, crt = cert
        context.load_cert_chain(crt, key)
    return context


def _get(port: int, path: str, context: ssl.SSLContext | None = None,
         auth: str | None = None, host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    conn = (http.client.HTTPSConnection(host, port, context=context, timeout=10) if context
            else http.client.HTTPConnection(host, port, timeout=10))
    try:
        conn.request("GET", path, headers={"Authorization": auth} if auth is not None else {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _failures(endpoint: MetricsEndpoint, reason: str) -> float:
    value = endpoint.registry.get_sample_value("crossroads_metrics_auth_failures_total",
                                               {"reason": reason})
    assert value is not None
    return value


def test_tls_with_the_network_ca_and_not_plain_http(pki: Pki) -> None:
    key, cert = pki.issue("hub")
    for endpoint in _endpoint(MetricsWeb(tls_cert=cert, tls_key=key)):
        status, _, body = _get(endpoint.port, "/metrics", _client_context(pki))
        assert status == 200 and b"process_cpu_seconds_total" in body
        assert _get(endpoint.port, "/healthz", _client_context(pki))[0] == 200
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            _get(endpoint.port, "/metrics")  # plain HTTP to the TLS port: the handshake fails
        other = Pki(pki.root / "other")
        with pytest.raises(ssl.SSLCertVerificationError):
            _get(endpoint.port, "/metrics", _client_context(other))
        # The server is still up after the failed connections.
        assert _get(endpoint.port, "/metrics", _client_context(pki))[0] == 200


def test_basic_auth_on_metrics_not_on_the_probes(pki: Pki) -> None:
    key, cert = pki.issue("hub")
    web = MetricsWeb(tls_cert=cert, tls_key=key, basic_auth_users=(("prometheus", HASH),))
    with structlog.testing.capture_logs() as logged:
        _refusals_and_success(pki, web)
    # Seven refusals, one log line (at most one a minute), with the count.
    (line,) = [e for e in logged if e["event"] == "metrics_auth_refused"]
    assert line["reason"] == "missing" and line["refused_since_last_line"] == 1


def _refusals_and_success(pki: Pki, web: MetricsWeb) -> None:
    for endpoint in _endpoint(web):
        tls = _client_context(pki)
        status, headers, _ = _get(endpoint.port, "/metrics", tls)
        assert status == 401 and headers["WWW-Authenticate"].startswith('Basic realm="crossroads"')
        assert _failures(endpoint, "missing") == 1
        for auth in (_basic("prometheus", "wrong"), _basic("nobody", PASSWORD)):
            assert _get(endpoint.port, "/metrics", tls, auth)[0] == 401
        assert _failures(endpoint, "wrong") == 2
        assert _get(endpoint.port, "/metrics", tls, "Bearer abc")[0] == 401
        assert _get(endpoint.port, "/metrics", tls, "Basic !!notbase64")[0] == 401
        assert _failures(endpoint, "malformed") == 2
        huge = _basic("prometheus", "x" * MAX_AUTHORIZATION)
        assert _get(endpoint.port, "/metrics", tls, huge)[0] == 401
        assert _failures(endpoint, "oversized") == 1
        for _ in range(2):  # the second from the cache of successful checks
            status, _, body = _get(endpoint.port, "/metrics", tls, _basic("prometheus", PASSWORD))
            assert status == 200
        assert b'crossroads_metrics_auth_failures_total{reason="wrong"} 2.0' in body
        assert _get(endpoint.port, "/healthz", tls)[0] == 200
        assert _get(endpoint.port, "/readyz", tls)[0] == 200


def test_plain_http_off_loopback_is_served_with_a_warning() -> None:
    with structlog.testing.capture_logs() as logged:
        for endpoint in _endpoint(MetricsWeb(), "0.0.0.0:0"):
            assert _get(endpoint.port, "/healthz")[0] == 200
        for endpoint in _endpoint(MetricsWeb()):  # loopback: no warning
            assert _get(endpoint.port, "/healthz")[0] == 200
    (warning,) = [e for e in logged if e["event"] == "metrics_plaintext"]
    assert warning["listen"].startswith("0.0.0.0:") and warning["log_level"] == "warning"


def test_basic_auth_without_tls(pki: Pki) -> None:
    for endpoint in _endpoint(MetricsWeb(basic_auth_users=(("prometheus", HASH),))):
        assert _get(endpoint.port, "/metrics")[0] == 401
        assert _get(endpoint.port, "/metrics", auth=_basic("prometheus", PASSWORD))[0] == 200


def test_client_certificates_when_client_ca_is_set(pki: Pki) -> None:
    key, cert = pki.issue("hub")
    for endpoint in _endpoint(MetricsWeb(tls_cert=cert, tls_key=key, client_ca=pki.ca_cert)):
        assert _get(endpoint.port, "/metrics", _client_context(pki, pki.issue(A)))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            _get(endpoint.port, "/metrics", _client_context(pki))  # no client certificate


def test_reload_reads_the_tls_files_again(pki: Pki) -> None:
    key, cert = pki.issue("hub", basename="metrics-old")
    for endpoint in _endpoint(MetricsWeb(tls_cert=cert, tls_key=key)):
        new_key, new_cert = pki.issue("hub", basename="metrics-new")
        web = MetricsWeb(tls_cert=new_cert, tls_key=new_key, basic_auth_users=(("p", HASH),))
        assert endpoint.reload(web) == "replaced"
        tls = _client_context(pki)
        assert _get(endpoint.port, "/metrics", tls)[0] == 401  # the users are in force too
        conn = http.client.HTTPSConnection("127.0.0.1", endpoint.port, context=tls, timeout=10)
        conn.connect()
        served = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        conn.close()
        assert served == ssl.PEM_cert_to_DER_cert(new_cert.read_text())
        broken = MetricsWeb(tls_cert=new_cert, tls_key=key)  # not that certificate's key
        assert endpoint.reload(broken) == "refused"
        assert endpoint.reload(MetricsWeb()) == "restart"  # TLS off: needs a restart
        assert _get(endpoint.port, "/metrics", tls, _basic("p", PASSWORD))[0] == 200


def test_basic_auth_refusals() -> None:
    auth = BasicAuth({"prometheus": HASH})
    assert auth.refusal(None) == "missing"
    assert auth.refusal(_basic("prometheus", PASSWORD)) is None
    assert auth.refusal(_basic("prometheus", "y" * 100)) == "wrong"  # over bcrypt's 72 bytes
    assert auth.refusal("Basic " + base64.b64encode(b"no-colon").decode()) == "malformed"


def test_one_password_check_at_a_time_and_a_remembered_one_needs_none() -> None:
    """A flood of guesses gets one bcrypt check at a time: the others are refused at once
    (busy), not queued; a scrape whose password is remembered is not held up by them."""
    auth = BasicAuth({"prometheus": HASH})
    assert auth.refusal(_basic("prometheus", PASSWORD)) is None  # checked, remembered
    results: list[str | None] = []
    threads = [threading.Thread(target=lambda: results.append(
        auth.refusal(_basic("prometheus", "guess")))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "wrong" in results and set(results) <= {"wrong", "busy"}
    with auth._hashing:  # a check under way in another thread
        assert auth.refusal(_basic("prometheus", "another guess")) == "busy"
        assert auth.refusal(_basic("prometheus", PASSWORD)) is None


NODE = {"network": "demo", "enterprise_number": A, "listen": "127.0.0.1:0",
        "hubs": ["127.0.0.1:7443"], "local_api": "unix:/tmp/x.sock", "data_dir": "d",
        "hub_directory_key": "k.pub", "metrics_listen": "127.0.0.1:0",
        "tls": {"ca_cert": "ca.crt", "cert": "n.crt", "key": "n.key"}}


@pytest.mark.parametrize(("metrics", "message"), [
    ({"tls_cert": "m.crt"}, "metrics.tls_cert is given without metrics.tls_key"),
    ({"tls_key": "m.key"}, "metrics.tls_key is given without metrics.tls_cert"),
    ({"client_ca": "ca.crt"}, "metrics.client_ca needs metrics.tls_cert"),
    ({"basic_auth_users": {"p": "secret"}}, "metrics.basic_auth_users.p is not a bcrypt hash"),
    ({"basic_auth_users": {"a:b": HASH}}, "user name 'a:b'"),
    ({"basic_auth_users": "p"}, "metrics.basic_auth_users must be a table"),
    ({"tls": True}, "unknown setting metrics.tls"),
])
def test_config_names_the_key(metrics: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        node_config({**NODE, "metrics": metrics}, Path("/etc/crossroads"))


def test_config_reads_the_metrics_table() -> None:
    table = {**NODE, "metrics": {"tls_cert": "m.crt", "tls_key": "m.key",
                                 "basic_auth_users": {"prometheus": HASH}}}
    web = node_config(table, Path("/etc/crossroads")).metrics
    assert web.tls and web.tls_key == Path("/etc/crossroads/m.key")
    assert web.basic_auth_users == (("prometheus", HASH),)
    without = {k: v for k, v in table.items() if k != "metrics_listen"}
    with pytest.raises(ConfigError, match="metrics applies with metrics_listen only"):
        node_config(without, Path("/etc/crossroads"))
