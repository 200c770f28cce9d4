"""Prometheus metrics of a hub or a node, on an HTTP endpoint of their own (``metrics_listen``).

Nothing is counted on the hot paths for this: every value is read at scrape time from what the
daemon keeps anyway (the intake's counters, the delivery workers' state, the stores'
watermarks), in the scrape's own thread. Reading those ints and small dicts there is safe
under the GIL (a dict is copied in one C call before it is walked). Each daemon has its own
registry, so several in one process (the in-process test network) do not mix.

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

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from node.probes import Readiness

if TYPE_CHECKING:
    from node.app import HubApp, NodeApp
    from node.rpc.revocation import RevocationList
    from node.store.failures import StoreFailures

__all__ = ["MetricsEndpoint", "hub_metrics", "node_metrics"]


class _Collect:
    """A collector made of a function yielding the metrics."""

    def __init__(self, collect: Callable[[], Iterator[Metric]]) -> None:
        self.collect = collect


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def hub_metrics(app: HubApp) -> Iterator[Metric]:
    if app.intake is None or app.deliverer is None or app.consultations is None:
        return  # not started yet
    stats = app.intake.stats
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
    delivered = CounterMetricFamily("crossroads_hub_delivered_envelopes",
                                    "Envelopes delivered since start, by destination.",
                                    labels=["destination"])
    up = GaugeMetricFamily("crossroads_hub_delivery_connected",
                           "1 when a delivery stream to the destination's node is open on a"
                           " live connection and no batch has waited for its ack longer than"
                           " the keepalive bound (also while idle).",
                           labels=["destination"])
    for name, status in sorted(app.deliverer.status().items()):
        queued.add_metric([name], float(status["pending"]))  # type: ignore[arg-type]
        delivered.add_metric([name], float(status["delivered"]))  # type: ignore[arg-type]
        up.add_metric([name], 1.0 if status["connected"] else 0.0)
    yield from (queued, delivered, up)
    yield _gauge("crossroads_hub_consultations_in_flight",
                 "Consultations waiting for their providers.", app.consultations.in_flight)
    yield _gauge("crossroads_hub_audit_last_seq", "Sequence of the audit chain's last record.",
                 app.store.chain.last_seq)
    yield _gauge("crossroads_hub_directory_revision", "Revision of the reference directory.",
                 app.directory.revision)
    yield from _crl_metrics("crossroads_hub", app.revocations)
    yield _store_errors(app.store.failures)


def node_metrics(app: NodeApp) -> Iterator[Metric]:
    store, uplink, watcher = app.store, app.uplink, app.watcher
    if uplink is None or watcher is None:
        return  # not started yet
    yield _counter("crossroads_node_sent_accepted", "Envelopes the hub accepted.",
                   store.sent_accepted)
    yield _counter("crossroads_node_sent_refused", "Envelopes the hub refused.",
                   store.sent_refused)
    yield _gauge("crossroads_node_outbox_pending", "Envelopes not decided by the hub yet.",
                 store.pending_count)
    yield _counter("crossroads_node_decided_locally",
                   "Envelopes the uplink decided itself since start: over the node's bounds,"
                   " or given up as UNDELIVERABLE.", uplink.decided_locally)
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
    yield _gauge("crossroads_node_directory_revision", "Revision of the directory fragment.",
                 app.fragment.revision)
    yield _gauge("crossroads_node_directory_lag", "Revisions the fragment is behind the hub.",
                 app.fragment.lag)
    yield _counter("crossroads_node_local_refused",
                   "Local API calls refused to an application (logged as local_refused).",
                   app.local_permissions.refusals.total)
    yield from _crl_metrics("crossroads_node", app.revocations)
    yield _store_errors(store.failures)


def _crl_metrics(prefix: str, revocations: RevocationList) -> Iterator[Metric]:
    """The CA's CRL in force: its number, its nextUpdate, whether it is stale."""
    crl = revocations.current
    revocations.gate()  # refresh the staleness flag (and log the transition)
    yield _gauge(f"{prefix}_crl_stale", "1 while the CRL in force is past its nextUpdate.",
                 1.0 if revocations.stale else 0.0)
    yield _gauge(f"{prefix}_crl_number", "CRL number of the CRL in force (0: none).",
                 crl.number if crl else 0)
    yield _gauge(f"{prefix}_crl_next_update_seconds",
                 "nextUpdate of the CRL in force, Unix seconds (0: none).",
                 crl.next_update.timestamp() if crl and crl.next_update else 0)


def _store_errors(failures: StoreFailures) -> CounterMetricFamily:
    errors = CounterMetricFamily(
        "crossroads_store_errors", "Writes the store refused (nothing stored), by the component"
        " that failed and the cause (DISK_FULL, IO_ERROR, ...).", labels=["component", "cause"])
    for (component, cause), count in sorted(dict(failures.counts).items()):
        errors.add_metric([component, cause.value], count)
    return errors


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds: no access log on stderr."""


class _Server6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class MetricsEndpoint:
    """``/metrics``, ``/healthz`` and ``/readyz`` (node/probes.py) on ``host:port`` (port 0:
    any free one, see :attr:`port`), served by a thread of their own."""

    def __init__(self, address: str, collect: Callable[[], Iterator[Metric]],
                 ready: Callable[[], Readiness]) -> None:
        host, _, port = address.rpartition(":")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collect(collect))
        ProcessCollector(registry=self.registry)
        self._ready = ready
        self._metrics = make_wsgi_app(self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._address = (host.strip("[]"), int(port))
        self.port = 0

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
        return self._metrics(environ, start_response)  # type: ignore[no-any-return]

    def start(self) -> None:
        host, port = self._address
        server_class = _Server6 if ":" in host else ThreadingWSGIServer
        self._server = make_server(host, port, self._app, server_class, _QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="metrics-http")
        self._thread.start()
        self.port = int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
