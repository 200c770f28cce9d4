"""Prometheus metrics of a hub or a node, on an HTTP endpoint of their own (``metrics_listen``).

Nothing is counted per envelope for this: the counters and gauges are read at scrape time
from what the daemon keeps anyway (the intake's counters, the delivery workers' state, the
stores' watermarks and failures, the files' sizes), in the scrape's own thread. Reading those
ints and small dicts there is safe under the GIL (a dict is copied in one C call before it is
walked). The latency histograms (:class:`HubTimings`, :class:`NodeTimings`) are observed once
per batch or per call, never per envelope (an observation costs ~1-2 us). Each daemon has its
own registry, so several in one process (the in-process test network) do not mix.

Names follow Prometheus practice: the unit in the name (``_seconds``, ``_bytes``,
``_timestamp_seconds``), counters end in ``_total``, labels are bounded (reasons and causes
are enums; ``destination`` and ``provider`` are institutions of the directory; ``address``
the node's configured hub list). ``crossroads_hub_*`` and ``crossroads_node_*`` are the
daemons'; ``crossroads_build_info`` and ``crossroads_store_*`` are the same in both.

Hub (``crossroads_hub_*``): envelopes accepted, refused (by reason) and resent duplicates;
batches; envelopes queued and delivered per destination, and whether its delivery stream is
up; consultations in flight; the audit chain's last record; the directory revision. Node
(``crossroads_node_*``): envelopes sent and their outcomes, waiting in the outbox, in the inbox
not yet acknowledged; the hub and directory streams, the hub address in use and the switches
between addresses; the fragment's revision and lag. Both
count the writes their store refused (``crossroads_store_errors_total``, by component and
cause: node/store/failures.py) and export the standard ``process_*`` metrics (CPU, memory,
open files).
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, make_server

import grpc
import structlog
from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from node import metrics_web
from node.config import MetricsWeb
from node.probes import Readiness, hub_readiness, node_readiness

if TYPE_CHECKING:
    from node.app import HubApp, NodeApp
    from node.rpc.revocation import RevocationList
    from node.rpc.tls import TlsMaterial
    from node.store.data_dir import StateLayout
    from node.store.failures import StoreFailures

log = structlog.get_logger(__name__)

_Family = TypeVar("_Family", CounterMetricFamily, GaugeMetricFamily)

__all__ = ["HubTimings", "MetricsEndpoint", "NodeTimings", "hub_metrics", "node_metrics"]

#: Buckets of the network round trips and consultations (seconds): a batch's ack or an
#: answer on loopback takes milliseconds; the bounds are the ack timeout (``[timeouts]
#: ack_s``, 30 s by default) and a consultation's deadline (at most 60 s).
ROUND_TRIP_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                      30.0, 60.0)
#: Buckets of the time an envelope waits in the hub's queue (seconds): milliseconds while the
#: destination is connected, up to hours or days while it is away.
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
                      21600.0, 86400.0)


class HubTimings:
    """The hub's latency histograms, observed once per delivered batch or per consultation
    (the components call these methods; none of them knows Prometheus)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_wait = Histogram(
            "crossroads_hub_queue_wait_seconds",
            "Per delivered batch: how long its oldest envelope waited at the hub, from its"
            " acceptance (its ticket's time) to the batch's sending.",
            buckets=QUEUE_WAIT_BUCKETS, registry=registry)
        self.round_trip = Histogram(
            "crossroads_hub_delivery_round_trip_seconds",
            "Per delivered batch: from its sending to the node's ack (stored at the node).",
            buckets=ROUND_TRIP_BUCKETS, registry=registry)
        self.consultation = Histogram(
            "crossroads_hub_consultation_seconds",
            "Consultations end to end at the hub, from the question to the answer, by status.",
            ["status"], buckets=ROUND_TRIP_BUCKETS, registry=registry)
        self.provider = Histogram(
            "crossroads_hub_consultation_provider_seconds",
            "Per provider asked in a consultation: from the question to its answer (or its"
            " failure), by provider institution (bounded by the directory).",
            ["provider"], buckets=ROUND_TRIP_BUCKETS, registry=registry)

    def delivered(self, queue_wait_s: float, round_trip_s: float) -> None:
        self.queue_wait.observe(max(0.0, queue_wait_s))
        self.round_trip.observe(round_trip_s)

    def consulted(self, status: str, seconds: float) -> None:
        self.consultation.labels(status).observe(seconds)

    def provider_answered(self, provider: str, seconds: float) -> None:
        self.provider.labels(provider).observe(seconds)


class NodeTimings:
    """The node's latency histogram, observed once per acknowledged batch."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.submit_ack = Histogram(
            "crossroads_node_submit_ack_seconds",
            "Per batch the node submitted: from its sending to the hub's ack.",
            buckets=ROUND_TRIP_BUCKETS, registry=registry)

    def acknowledged(self, seconds: float) -> None:
        self.submit_ack.observe(seconds)


class _Collect:
    """A collector made of a function yielding the metrics."""

    def __init__(self, collect: Callable[[], Iterator[Metric]]) -> None:
        self.collect = collect


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(family: _Family, values: Mapping[Any, float]) -> _Family:
    """``family`` with one sample per (sorted) key of ``values``: a label value or a tuple."""
    for key, value in sorted(dict(values).items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [str(key)], value)
    return family


def hub_metrics(app: HubApp) -> Iterator[Metric]:
    if app.intake is None or app.deliverer is None or app.consultations is None:
        return  # not started yet
    stats = app.intake.stats
    yield _build_info()
    yield _ready("crossroads_hub", hub_readiness(app))
    yield _gauge("crossroads_hub_store_damaged",
                 "1 once hub.sqlite was found damaged at run time (restore it; see the log).",
                 1.0 if app.store.damaged else 0.0)
    yield _counter("crossroads_hub_batches", "Envelope batches taken from nodes.", stats.batches)
    yield _counter("crossroads_hub_envelopes_accepted", "Envelopes accepted and queued.",
                   stats.accepted)
    yield _counter("crossroads_hub_envelopes_duplicate",
                   "Resent envelopes answered with their first outcome.", stats.duplicates)
    refused = CounterMetricFamily("crossroads_hub_envelopes_refused",
                                  "Envelopes refused, by reason.", labels=["reason"])
    for reason, count in sorted(dict(stats.by_reason).items()):
        if reason != "ACCEPTED":
            refused.add_metric([reason], count)
    yield refused
    queued = GaugeMetricFamily("crossroads_hub_queue_envelopes",
                               "Envelopes waiting for delivery, by destination.",
                               labels=["destination"])
    oldest = GaugeMetricFamily("crossroads_hub_queue_oldest_age_seconds",
                               "Age of the oldest envelope queued for the destination (the"
                               " first of the batch at its queue head; 0: none queued).",
                               labels=["destination"])
    delivered = CounterMetricFamily("crossroads_hub_delivered_envelopes",
                                    "Envelopes delivered since start, by destination.",
                                    labels=["destination"])
    up = GaugeMetricFamily("crossroads_hub_delivery_connected",
                           "1 when a delivery stream to the destination's node is open on a"
                           " live connection and no batch has waited for its ack longer than"
                           " the keepalive bound (also while idle).",
                           labels=["destination"])
    now_us = app.clock.now_us()
    for name, status in sorted(app.deliverer.status().items()):
        queued.add_metric([name], float(status["pending"]))  # type: ignore[arg-type]
        head = status["oldest_us"]
        oldest.add_metric([name], max(0.0, (now_us - head) / 1e6) if head else 0.0)  # type: ignore[operator]
        delivered.add_metric([name], float(status["delivered"]))  # type: ignore[arg-type]
        up.add_metric([name], 1.0 if status["connected"] else 0.0)
    yield from (queued, oldest, delivered, up)
    yield _labelled(CounterMetricFamily(
        "crossroads_hub_delivery_failures", "Failed delivery attempts (each retried after a"
        " backoff), by cause: a gRPC status, NO_ACK, STREAM_CLOSED, WRONG_ACK,"
        " SERVER_REVOKED, NOT_STORED, OTHER.", labels=["cause"]), app.deliverer.failures)
    yield _gauge("crossroads_hub_consultations_in_flight",
                 "Consultations waiting for their providers.", app.consultations.in_flight)
    yield _gauge("crossroads_hub_audit_last_seq", "Sequence of the audit chain's last record.",
                 app.store.audit_last_seq)
    yield _gauge("crossroads_hub_directory_revision", "Revision of the reference directory.",
                 app.directory.revision)
    yield _refused_calls("crossroads_hub", {"hub": app.auth_refusals})
    yield from _crl_metrics("crossroads_hub", app.revocations)
    yield _certificates("crossroads_hub", {"tls": app.tls})
    yield from _store_metrics(app.store.failures, app.layout, app.database_bytes)


def node_metrics(app: NodeApp) -> Iterator[Metric]:
    store, uplink, watcher = app.store, app.uplink, app.watcher
    if uplink is None or watcher is None:
        return  # not started yet
    yield _build_info()
    yield _ready("crossroads_node", node_readiness(app))
    yield _counter("crossroads_node_sent_accepted", "Envelopes the hub accepted.",
                   store.sent_accepted)
    yield _counter("crossroads_node_sent_refused", "Envelopes the hub refused.",
                   store.sent_refused)
    yield _gauge("crossroads_node_outbox_pending", "Envelopes not decided by the hub yet.",
                 store.pending_count)
    yield _counter("crossroads_node_decided_locally",
                   "Envelopes the uplink decided itself since start: over the node's bounds,"
                   " or given up as UNDELIVERABLE.", uplink.decided_locally)
    yield _counter("crossroads_node_uplink_failures",
                   "Submit sessions with the hub that failed (each followed by a backoff).",
                   uplink.failures)
    yield _gauge("crossroads_node_inbox_unacknowledged",
                 "Envelopes received and not acknowledged by the application yet.",
                 store.inbox_unacknowledged)
    yield _gauge("crossroads_node_hub_connected", "1 when the stream to the hub is up.",
                 1.0 if uplink.connected else 0.0)
    chosen = GaugeMetricFamily("crossroads_node_hub_address",
                               "1 for the hub address the node uses now, 0 for the others of"
                               " its list (the uplink's session is on it when connected).",
                               labels=["address"])
    for address in app.hubs.addresses:
        chosen.add_metric([address], 1.0 if address == app.hubs.current else 0.0)
    yield chosen
    yield _counter("crossroads_node_hub_switches",
                   "Times the node moved to the next hub address since start.",
                   app.hubs.switches)
    yield _gauge("crossroads_node_hub_state_regressed",
                 "1 while the hub presents less than it acknowledged (submitting stopped).",
                 1.0 if store.hub_regression is not None else 0.0)
    yield _gauge("crossroads_node_hub_acknowledged_sequence",
                 "Highest outbox sequence the hub acknowledged, as the node knows it.",
                 store.hub_acked_seq)
    yield _gauge("crossroads_node_directory_connected",
                 "1 when the directory stream from the hub is up.",
                 1.0 if watcher.connected else 0.0)
    yield _gauge("crossroads_node_directory_last_sync_timestamp_seconds",
                 "Last time the directory fragment was known current, Unix seconds: now while"
                 " the directory stream is up, else when it went down or an update was last"
                 " applied (0: never).",
                 app.clock.now_us() / 1e6 if watcher.connected else watcher.current_at)
    yield _gauge("crossroads_node_directory_revision", "Revision of the directory fragment.",
                 app.fragment.revision)
    yield _gauge("crossroads_node_directory_lag", "Revisions the fragment is behind the hub.",
                 app.fragment.lag)
    yield _counter("crossroads_node_local_refused",
                   "Local API calls refused to an application (logged as local_refused).",
                   app.local_permissions.refusals.total)
    yield _refused_calls("crossroads_node", {"node": app.auth_refusals,
                                             "local": app.local_auth_refusals})
    yield from _crl_metrics("crossroads_node", app.revocations)
    yield _certificates("crossroads_node", {"tls": app.tls, "local_tls": app.local_tls})
    yield from _store_metrics(store.failures, app.layout)


@functools.cache
def _build_labels() -> tuple[str, str, str]:
    try:
        version = importlib.metadata.version("crossroads")
    except importlib.metadata.PackageNotFoundError:  # a source tree, not installed
        version = "unknown"
    return version, platform.python_version(), grpc.__version__


def _build_info() -> GaugeMetricFamily:
    info = GaugeMetricFamily("crossroads_build_info",
                             "1, labelled with the daemon's version and those of Python and"
                             " grpcio.", labels=["version", "python", "grpc"])
    info.add_metric(list(_build_labels()), 1.0)
    return info


def _ready(prefix: str, readiness: Readiness) -> GaugeMetricFamily:
    """``/readyz``'s checks as gauges (node/probes.py): 1 while the check passes."""
    return _labelled(GaugeMetricFamily(
        f"{prefix}_ready", "1 while the readiness check passes (/readyz: 200 when all do),"
        " by check.", labels=["check"]),
        {check.value: 1.0 if ok else 0.0 for check, ok in readiness.checks.items()})


def _refused_calls(prefix: str, by_server: Mapping[str, Mapping[str, int]]) -> CounterMetricFamily:
    """Calls the servers' authentication refused (revoked or unknown certificate, wrong role,
    method not open, ...), by server and reason (node/rpc/auth_interceptor.py)."""
    counts = {(server, reason): count for server, refusals in by_server.items()
              for reason, count in dict(refusals).items()}
    return _labelled(CounterMetricFamily(
        f"{prefix}_calls_refused", "Calls refused by the server's authentication, by server"
        " and reason (logged as rpc refusals).", labels=["server", "reason"]), counts)


def _crl_metrics(prefix: str, revocations: RevocationList) -> Iterator[Metric]:
    """The CA's CRL in force: its number, its nextUpdate, whether it is stale."""
    crl = revocations.current
    revocations.gate()  # refresh the staleness flag (and log the transition)
    yield _gauge(f"{prefix}_crl_stale", "1 while the CRL in force is past its nextUpdate.",
                 1.0 if revocations.stale else 0.0)
    yield _gauge(f"{prefix}_crl_number", "CRL number of the CRL in force (0: none).",
                 crl.number if crl else 0)
    yield _gauge(f"{prefix}_crl_next_update_timestamp_seconds",
                 "nextUpdate of the CRL in force, Unix seconds (0: none).",
                 crl.next_update.timestamp() if crl and crl.next_update else 0)


@functools.lru_cache(maxsize=8)
def _not_after(pem: bytes) -> float:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def _certificates(prefix: str, materials: Mapping[str, TlsMaterial | None]) -> GaugeMetricFamily:
    """The daemon's own certificates' notAfter (the ones in force: SIGHUP replaces them)."""
    return _labelled(GaugeMetricFamily(
        f"{prefix}_certificate_expiry_timestamp_seconds",
        "notAfter of the daemon's certificate in force, Unix seconds, by certificate (tls:"
        " its gRPC server and client one; local_tls: the node's TCP local API).",
        labels=["certificate"]),
        {name: _not_after(tls.cert) for name, tls in materials.items() if tls is not None})


def _size(path: Path) -> float | None:
    try:
        return float(path.stat().st_size)
    except FileNotFoundError:
        return None


def _store_metrics(failures: StoreFailures, layout: StateLayout,
                   server_bytes: int | None = None) -> Iterator[Metric]:
    errors = CounterMetricFamily(
        "crossroads_store_errors", "Writes the store refused (nothing stored), by the component"
        " that failed and the cause (DISK_FULL, IO_ERROR, ...).", labels=["component", "cause"])
    for (component, cause), count in sorted(dict(failures.counts).items()):
        errors.add_metric([component, cause.value], count)
    yield errors
    sizes = GaugeMetricFamily("crossroads_store_database_size_bytes",
                              "Size of each SQLite database file of the daemon; on"
                              " PostgreSQL, database=\"postgresql\": pg_database_size, read"
                              " every 60 s.", labels=["database"])
    wal = GaugeMetricFamily("crossroads_store_wal_size_bytes",
                            "Size of each SQLite database's write-ahead log (0: none).",
                            labels=["database"])
    for path in layout.database_paths:
        size = _size(path)
        if size is not None:
            sizes.add_metric([path.stem], size)
            wal.add_metric([path.stem], _size(path.with_name(path.name + "-wal")) or 0.0)
    if server_bytes is not None:
        sizes.add_metric(["postgresql"], float(server_bytes))
    yield from (sizes, wal)


class _QuietHandler(WSGIRequestHandler):
    #: A client that sends nothing for this long (seconds) loses its connection (and thread).
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds: no access log on stderr."""


class _Server(ThreadingWSGIServer):
    """With :attr:`tls` set, each connection's TLS handshake is made in its own thread (a
    client that never completes one holds only that thread, for at most its timeout); a
    failed handshake (plain HTTP, no or a wrong client certificate) closes the connection."""

    tls: ssl.SSLContext | None = None

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        context = self.tls  # read once: a reload swaps it for the next connections
        if context is not None:
            try:
                request.settimeout(_QuietHandler.timeout)
                request = context.wrap_socket(request, server_side=True)
            except (OSError, ValueError):  # ssl.SSLError is an OSError
                request.close()
                return
        super().process_request_thread(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsEndpoint:
    """``/metrics``, ``/healthz`` and ``/readyz`` (node/probes.py) on ``host:port`` (port 0:
    any free one, see :attr:`port`), served by a thread of their own; over TLS and with basic
    authentication on ``/metrics`` as ``web`` (``[metrics]``, node/metrics_web.py) says."""

    def __init__(self, address: str, collect: Callable[[], Iterator[Metric]],
                 ready: Callable[[], Readiness], web: MetricsWeb | None = None) -> None:
        host, _, port = address.rpartition(":")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collect(collect))
        ProcessCollector(registry=self.registry)
        self.auth_failures = Counter(
            "crossroads_metrics_auth_failures", "Requests to /metrics the endpoint's basic"
            " authentication refused (401), by reason: missing, malformed, oversized (an"
            " Authorization header over 1 KiB), wrong (user or password), busy (another"
            " password was being checked).",
            labelnames=["reason"], registry=self.registry)
        for reason in metrics_web.REASONS:
            self.auth_failures.labels(reason)
        self._ready = ready
        self._metrics = make_wsgi_app(self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._address = (host.strip("[]"), int(port))
        self.port = 0
        self.web = web or MetricsWeb()
        self._tls = metrics_web.tls_context(self.web)
        self._auth = (metrics_web.BasicAuth(dict(self.web.basic_auth_users))
                      if self.web.basic_auth_users else None)
        self._refusals = metrics_web.RefusalLog(log)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            readiness = self._ready()
            start_response("200 OK" if readiness.ready else "503 Service Unavailable",
                           [("Content-Type", "application/json")])
            return [readiness.body()]
        auth = self._auth
        if auth is not None:
            refusal = auth.refusal(environ.get("HTTP_AUTHORIZATION"))
            if refusal is not None:
                self.auth_failures.labels(refusal).inc()
                self._refusals.refused(refusal, str(environ.get("REMOTE_ADDR", "")))
                start_response("401 Unauthorized", [
                    ("Content-Type", "text/plain"),
                    ("WWW-Authenticate", 'Basic realm="crossroads", charset="UTF-8"')])
                return [b"unauthorized\n"]
        return self._metrics(environ, start_response)  # type: ignore[no-any-return]

    def start(self) -> None:
        host, port = self._address
        server_class = _Server6 if ":" in host else _Server
        self._server = make_server(host, port, self._app, server_class, _QuietHandler)
        self._server.tls = self._tls
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="metrics-http")
        self._thread.start()
        self.port = int(self._server.server_port)
        if not self.web.tls and not metrics_web.is_loopback(host):
            log.warning("metrics_plaintext", listen=f"{host}:{self.port}",
                        basic_auth=self._auth is not None,
                        fix="set [metrics] tls_cert and tls_key, or listen on loopback")

    def reload(self, web: MetricsWeb) -> str:
        """SIGHUP: the TLS files read again and the users taken from ``web``: "replaced",
        "unchanged", "refused" (a file fails: the old ones stay) or "restart" (TLS turned on
        or off: fixed for the process's life)."""
        if web == self.web and self._tls is None:
            return "unchanged"
        if web.tls != self.web.tls:
            return "restart"
        try:
            context = metrics_web.tls_context(web)
        except (OSError, ValueError) as exc:
            log.error("metrics_tls_reload_refused", cert=str(web.tls_cert), error=str(exc),
                      effect="the certificate in use stays")
            return "refused"
        self.web, self._tls = web, context
        self._auth = metrics_web.BasicAuth(dict(web.basic_auth_users)) if web.basic_auth_users else None
        if self._server is not None:
            self._server.tls = context
        return "replaced"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
