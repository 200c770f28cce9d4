"""The metrics endpoint's optional web configuration (``[metrics]``): TLS, client
certificates and HTTP basic authentication, as Prometheus' exporter-toolkit ``web-config.yml``
offers them, in the daemon's TOML.

* ``tls_cert`` and ``tls_key`` (both or neither): the endpoint speaks HTTPS only; plain HTTP to
  its port fails the handshake. ``client_ca``: every client must present a certificate issued
  by that CA (the probes too: it is the connection's, not a path's).
* ``basic_auth_users = { name = "<bcrypt hash>" }``: ``/metrics`` needs one of these users
  (``Authorization: Basic``); bcrypt hashes, as exporter-toolkit and ``htpasswd -B`` make them.
  ``/healthz`` and ``/readyz`` stay open (load balancers seldom send credentials; they say
  as little as their status code), over the same TLS when it is on.

A refused request is ``401`` with ``WWW-Authenticate: Basic realm="crossroads"``, counted in
``crossroads_metrics_auth_failures_total{reason}`` (``missing``, ``malformed``,
``oversized``, ``wrong``: a wrong password and an unknown user are the same reason, and cost
the same time; ``busy``: another password was being checked, see below) and logged at most
once a minute (``metrics_auth_refused``, with the count
since the last line). An ``Authorization`` header longer than :data:`MAX_AUTHORIZATION` bytes
is refused unread. A password checks against its hash with bcrypt (constant time); a success
is remembered (a SHA-256 of user, password and hash, at most :data:`CACHE_SIZE` of them) so a
scrape every few seconds does not cost a bcrypt round each. One bcrypt check runs at a time:
a request that would start a second one meanwhile is refused (``busy``) rather than queued,
so a flood of guesses costs the daemon one core's worth of hashing at most (each request
has a thread of its own), while a scrape whose password is remembered still gets through.

The files are checked at start (:func:`problems`, by the start-up self-checks: a problem names
its key) and read again on SIGHUP (:meth:`node.metrics.MetricsEndpoint.reload`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import bcrypt

if TYPE_CHECKING:
    from node.config import MetricsWeb

__all__ = ["CACHE_SIZE", "MAX_AUTHORIZATION", "BasicAuth", "RefusalLog",
           "is_loopback", "problems", "tls_context"]

#: The longest ``Authorization`` header read (a user name and password are far shorter).
MAX_AUTHORIZATION = 1024
#: Successful checks remembered (users x the passwords they use: a handful).
CACHE_SIZE = 64
#: Failure reasons (the counter's label values: a fixed set).
REASONS = ("missing", "malformed", "oversized", "wrong", "busy")
#: A refusal is logged at most this often (seconds); the others are counted.
LOG_EVERY_S = 60.0



@functools.cache
def _dummy(cost: bytes) -> bytes:
    """A hash of that cost an unknown user is checked against: it costs what a wrong password
    costs."""
    return bcrypt.hashpw(b"crossroads-unknown-user", bcrypt.gensalt(rounds=int(cost)))


def tls_context(web: MetricsWeb) -> ssl.SSLContext | None:
    """The server's TLS context (None: plain HTTP); OSError or ssl.SSLError when a file is
    unreadable or the key is not the certificate's."""
    if web.tls_cert is None or web.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(web.tls_cert, web.tls_key)
    if web.client_ca is not None:
        context.load_verify_locations(cafile=web.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def problems(web: MetricsWeb) -> list[str]:
    """What keeps ``[metrics]`` from serving, one line each naming its key (start-up
    self-checks, node/selfcheck.py)."""
    found: list[str] = []
    for key in ("tls_cert", "tls_key", "client_ca"):
        path = getattr(web, key)
        if path is None:
            continue
        try:
            path.read_bytes()
        except OSError as exc:
            found.append(f"metrics.{key}: cannot read {path} ({exc.strerror or exc}); fix the"
                         " path or the file's permissions")
    if found or web.tls_cert is None or web.tls_key is None:
        return found
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(web.tls_cert, web.tls_key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        found.append(f"metrics.tls_key: {web.tls_key} is not the unencrypted PEM key of"
                     f" metrics.tls_cert {web.tls_cert}, or that is no PEM certificate ({exc})")
    if web.client_ca is not None:
        try:
            context.load_verify_locations(cafile=web.client_ca)
        except (OSError, ValueError) as exc:
            found.append(f"metrics.client_ca: {web.client_ca} is not a PEM CA certificate ({exc})")
    return found


def is_loopback(host: str) -> bool:
    """Whether ``host`` (of ``metrics_listen``) is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: may resolve anywhere
        return False


class BasicAuth:
    """Checks ``Authorization: Basic`` against ``users`` (name -> bcrypt hash); thread-safe."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = {name: hashed.encode() for name, hashed in users.items()}
        #: The users' highest cost (``$2b$<cost>$``): an unknown user's check costs as much.
        self._cost = max((h[4:6] for h in self.users.values()), default=b"10")
        self._cache: set[bytes] = set()
        self._lock = threading.Lock()
        #: Held while a password is checked with bcrypt (the module's docstring).
        self._hashing = threading.Lock()

    def refusal(self, header: str | None) -> str | None:
        """Why ``header`` (the request's Authorization, None: absent) is refused (one of
        :data:`REASONS`), or None: a user's right password."""
        if header is None or not header.strip():
            return "missing"
        if len(header) > MAX_AUTHORIZATION:
            return "oversized"
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return "malformed"
        try:
            name, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "malformed"
        if not sep:
            return "malformed"
        return self._check(name, password.encode())

    def _check(self, name: str, password: bytes) -> str | None:
        hashed = self.users.get(name)
        key = hashlib.sha256(b"\0".join((name.encode(), password, hashed or b""))).digest()
        if hashed is not None:
            with self._lock:
                if key in self._cache:
                    return None
        if not self._hashing.acquire(blocking=False):
            return "busy"
        try:
            ok = bcrypt.checkpw(password, hashed or _dummy(self._cost))
        except ValueError:  # a password bcrypt cannot take (over 72 bytes)
            ok = False
        finally:
            self._hashing.release()
        if ok and hashed is not None:
            with self._lock:
                if len(self._cache) >= CACHE_SIZE:
                    self._cache.clear()
                self._cache.add(key)
            return None
        return "wrong"


class RefusalLog:
    """Logs refusals at most once per :data:`LOG_EVERY_S`, with how many there were since."""

    def __init__(self, log: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._clock = log, clock
        self._lock = threading.Lock()
        self._last = -LOG_EVERY_S
        self._since = 0

    def refused(self, reason: str, client: str) -> None:
        with self._lock:
            self._since += 1
            now = self._clock()
            if now - self._last < LOG_EVERY_S:
                return
            count, self._since, self._last = self._since, 0, now
        self._log.warning("metrics_auth_refused", reason=reason, client=client,
                          effect="401", refused_since_last_line=count)

