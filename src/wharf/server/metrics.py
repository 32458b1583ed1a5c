"""The server's own metrics and access log, recorded around every request.

Labels are bounded: the route template (never the raw path, which carries tenant, project and
application names, or whatever a caller typed), a known method, and the status code. So the
number of series does not grow with names or with unauthenticated callers' guesses.
The recorder is plain ASGI rather than Starlette's BaseHTTPMiddleware, whose task group would
wrap an error raised while a body streams in (see wharf.server.limits) into an ExceptionGroup.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wharf.core.config import Settings
from wharf.core.errors import ForbiddenError
from wharf.identity.api import authenticate_request

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


PerCluster = Callable[[], Mapping[str, Mapping[str, int]]]


class ClusterReconciles(Collector):
    """Reconciles per cluster and controller, read from the controllers at scrape time (the
    controllers count; they know nothing of Prometheus)."""

    def __init__(self, counts: PerCluster) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "wharf_cluster_reconciles",
            "Reconciles of one cluster's work, by controller, since this process started",
            labels=["cluster", "controller"],
        )
        for controller, clusters in self.counts().items():
            for cluster, count in sorted(clusters.items()):
                family.add_metric([cluster, controller], count)
        yield family


class LeasesHeld(Collector):
    """The leases this replica holds (`sum by (lease)` over all replicas is 1 for each)."""

    def __init__(self, replica: str, held: Callable[[], list[str]]) -> None:
        self.replica = replica
        self.held = held

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "wharf_lease_held",
            "1 for each lease (a cluster's work, or the platform-wide controllers') this "
            "replica holds",
            labels=["lease", "replica"],
        )
        for lease in self.held():
            family.add_metric([lease, self.replica], 1)
        yield family


class ClusterOwners(Collector):
    """The clusters this replica reconciles (cluster controller, placement and delivery), by
    their lease: `sum by (cluster)` over all replicas is 1 for each cluster."""

    def __init__(self, replica: str, owned: Callable[[], dict[str, int]]) -> None:
        self.replica = replica
        self.owned = owned

    def collect(self) -> Iterator[Metric]:
        owner = GaugeMetricFamily(
            "wharf_cluster_owner",
            "1 for each cluster whose work this replica does now",
            labels=["cluster", "replica"],
        )
        epoch = GaugeMetricFamily(
            "wharf_cluster_owner_epoch",
            "The epoch of the cluster's lease this replica works under",
            labels=["cluster", "replica"],
        )
        for cluster, number in sorted(self.owned().items()):
            owner.add_metric([cluster, self.replica], 1)
            epoch.add_metric([cluster, self.replica], number)
        yield owner
        yield epoch


class Metrics:
    """The server's own Prometheus metrics, in a registry per app (tests build many apps)."""

    def __init__(
        self,
        per_cluster: PerCluster = dict,
        replica: str = "",
        held: Callable[[], list[str]] = list,
        owned: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ClusterReconciles(per_cluster))
        self.registry.register(LeasesHeld(replica, held))
        self.registry.register(ClusterOwners(replica, owned))
        self.requests = Counter(
            "wharf_http_requests_total",
            "HTTP requests served",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "wharf_controller_queue_depth",
            "Keys waiting to be reconciled",
            ["controller"],
            registry=self.registry,
        )
        self.reconciles = Gauge(
            "wharf_controller_reconciles",
            "Reconciles done since start",
            ["controller"],
            registry=self.registry,
        )
        self.cluster_writes = Gauge(
            "wharf_placement_cluster_writes",
            "Writes the placement controller made to clusters",
            registry=self.registry,
        )
        self.changes_heard = Gauge(
            "wharf_replica_changes_heard",
            "Writes taken by other replicas that this one was told of (PostgreSQL NOTIFY)",
            registry=self.registry,
        )
        self.latency = Histogram(
            "wharf_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )


PROBES = {"/healthz", "/readyz", "/metrics"}


def route_template(scope: Scope) -> str:
    """The template of the route that answered (the router notes it in the scope when it
    matches): matching every route again, as before, found only the top-level routes — the
    API's, inside included routers, all counted as "unmatched" — and cost a request a second
    walk of the routing table."""
    return str(getattr(scope.get("route"), "path", None) or "unmatched")


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics, log: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        route = route_template(scope)
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.latency.labels(method, route).observe(elapsed)
        client = scope.get("client")
        # Probes and scrapes come every few seconds and are not news unless they fail.
        quiet = route in PROBES and status < 400
        (self.log.debug if quiet else self.log.info)(
            "request",
            method=method,
            path=scope["path"],
            status=status,
            ms=round(elapsed * 1000, 2),
            client=client[0] if client else None,
        )


def authorize_scrape(request: Request, settings: Settings) -> None:
    """Metrics name the server's routes, controllers and load: they are for a scraper with
    WHARF_METRICS_TOKEN, or a platform admin's or viewer's token; public only by the setting
    WHARF_METRICS_PUBLIC (for a server whose port only the monitoring network reaches)."""
    if settings.metrics_public:
        return
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    expected = settings.metrics_token
    if expected and scheme.lower() == "bearer" and hmac.compare_digest(sent.strip(), expected):
        return
    if not authenticate_request(request).can("read"):
        raise ForbiddenError(
            "metrics are for platform admins and viewers, and scrapers holding WHARF_METRICS_TOKEN"
        )
