"""The workload feed: what Prometheus scrapes from Wharf at /metrics/workloads.

Pods, Deployments and StatefulSets come from the delivery controller's watch caches (no extra
reads of the clusters); CPU and memory from each cluster's `metrics.k8s.io` at scrape time
(metrics-server keeps only the latest value, so there is nothing to watch); owners and quota
from Wharf's own records.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
from lightkube import AsyncClient
from lightkube.core.generic_client import ALL_NS
from lightkube.generic_resource import create_namespaced_resource
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wharf.apps.model import APPLICATION
from wharf.core.errors import NotFoundError, WharfError
from wharf.core.logging import get_logger
from wharf.identity.model import Principal
from wharf.kube.informer import ClusterWatches
from wharf.monitoring.model import (
    APP_LABELS,
    CHARTS,
    HELP,
    POD_LABELS,
    QUOTA,
    QUOTA_LABELS,
    READY_REPLICAS,
    REPLICAS,
    RESTARTS,
    UNITS,
    Chart,
    ChartAnswer,
    Feed,
    Line,
    MetricsAnswer,
    Owner,
    PodUse,
    QuotaLine,
    Scope,
    TimeRange,
    TopAnswer,
    add_pods,
    add_quota,
    add_workloads,
    chart_queries,
    check_name,
    quota_query,
    top_queries,
    usage,
)
from wharf.resources.service import ResourceService
from wharf.store import Database
from wharf.store.resources import ResourceStore
from wharf.tenancy.model import APP_LABEL, PROJECT, namespace_name

log = get_logger("wharf.monitoring")
USAGE_TIMEOUT = 5.0  # seconds a cluster's metrics.k8s.io may take before the scrape goes on

PodMetrics = create_namespaced_resource("metrics.k8s.io", "v1beta1", "PodMetrics", "pods")
Quota = tuple[str, str, dict[str, str]]  # tenant, project, resource -> quantity
ClientFor = Callable[[str], AsyncClient | None]


class Records:
    """What Wharf's database says: applications' owners, projects' quota, ready clusters."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def read(
        self,
    ) -> tuple[dict[tuple[str, str], Owner], list[tuple[str, str, dict[str, str]]], list[str]]:
        with self.db.reader() as session:
            store = ResourceStore(session)
            owners: dict[tuple[str, str], Owner] = {}
            for stored in store.query("Application"):
                spec = APPLICATION.typed(stored)
                namespace = namespace_name(stored.tenant, spec.project, spec.environment)
                owners[(namespace, stored.name)] = Owner(stored.tenant, spec.project, stored.name)
            quotas = [
                (p.tenant, p.name, dict(PROJECT.typed(p).quota)) for p in store.query("Project")
            ]
            clusters = [c.name for c in store.query("Cluster") if c.status.get("phase") == "Ready"]
        return owners, quotas, clusters


class WorkloadFeed:
    """Builds the feed on each scrape."""

    def __init__(self, db: Database, watches: ClusterWatches, client_for: ClientFor) -> None:
        self.records = Records(db)
        self.watches = watches
        self.client_for = client_for

    async def collect(self) -> Feed:
        owners, quotas, clusters = await asyncio.to_thread(self.records.read)
        feed = Feed()
        used = await asyncio.gather(*(self._usage(c) for c in clusters))
        for cluster, by_pod in zip(clusters, used, strict=True):
            self._add_cluster(feed, cluster, owners, by_pod)
        for tenant, project, quota in quotas:
            add_quota(feed, tenant, project, quota)
        return feed

    def _add_cluster(
        self,
        feed: Feed,
        cluster: str,
        owners: dict[tuple[str, str], Owner],
        used: dict[tuple[str, str], tuple[float, float]],
    ) -> None:
        cached = {
            i.resource.__name__: list(i.items.values())
            for i in self.watches.informers(f"apps/{cluster}")
        }
        add_pods(feed, cluster, owners, cached.get("Pod", []), used, APP_LABEL)
        workloads = cached.get("Deployment", []) + cached.get("StatefulSet", [])
        add_workloads(feed, cluster, owners, workloads, APP_LABEL)

    async def _usage(self, cluster: str) -> dict[tuple[str, str], tuple[float, float]]:
        """(namespace, pod) -> (cores, bytes) from the cluster's metrics.k8s.io; empty when
        it does not answer in time (the other series are still worth scraping)."""
        client = self.client_for(cluster)
        if client is None:
            return {}
        try:
            async with asyncio.timeout(USAGE_TIMEOUT):
                found: dict[tuple[str, str], tuple[float, float]] = {}
                async for item in client.list(PodMetrics, namespace=ALL_NS):
                    obj: dict[str, Any] = item.to_dict()  # type: ignore[no-untyped-call]
                    meta = obj.get("metadata", {})
                    found[(meta.get("namespace", ""), meta.get("name", ""))] = usage(obj)
                return found
        except Exception as exc:  # the feed goes on without this cluster's use
            log.info("pod metrics unavailable", cluster=cluster, error=str(exc)[:300])
            return {}


class FeedCollector(Collector):
    """A collected feed as Prometheus metric families (one registry per scrape)."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed

    def collect(self) -> Any:
        for name, samples in self.feed.samples.items():
            labels = (
                QUOTA_LABELS
                if name == QUOTA
                else APP_LABELS
                if name in (REPLICAS, READY_REPLICAS)
                else POD_LABELS
            )
            # Restarts only grow: a counter, so rate() and increase() read it as one.
            family: GaugeMetricFamily | CounterMetricFamily = (
                CounterMetricFamily(name, HELP[name], labels=list(labels))
                if name == RESTARTS
                else GaugeMetricFamily(name, HELP[name], labels=list(labels))
            )
            for values, value in sorted(samples.items()):
                family.add_metric(list(values), value)
            metric: Metric = family
            yield metric


# --- Reading it back: charts and `wharf top`, scoped by the caller's grants ---------------

NO_REQUEST_RATE = (
    "no request-rate chart: the lab's simulated pods serve no traffic and Wharf has no "
    "source of request counts yet (an ingress controller's metrics would be one)"
)
QUERY_TIMEOUT = 10.0


class MetricsUnavailableError(WharfError):
    code = "metrics-unavailable"
    status = 503


def visible_scope(
    resources: ResourceService, p: Principal, tenant: str, project: str, app: str | None
) -> Scope:
    """The scope the caller may read: its project (404 when not visible), and an application
    of that project (404 when not visible or of another project). Names are checked first, so
    nothing else reaches a query."""
    check_name(tenant, "tenant")
    check_name(project, "project")
    if app is not None:
        check_name(app, "app")
    resources.read(p, PROJECT, tenant, project)
    if app is not None:
        _, spec = resources.read(p, APPLICATION, tenant, app)
        if spec.project != project:
            raise NotFoundError(f"application {app} not found in project {project}", field="app")
    return Scope(tenant, project, app)


class PrometheusReader:
    """Queries one Prometheus through its HTTP API; every query text comes from the model."""

    def __init__(self, url: str | None) -> None:
        self.url = url

    def _get(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        if not self.url:
            raise MetricsUnavailableError("no Prometheus is configured (WHARF_PROMETHEUS_URL)")
        try:
            answer = httpx.get(f"{self.url}{path}", params=params, timeout=QUERY_TIMEOUT)
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise MetricsUnavailableError(
                f"Prometheus did not answer: {type(exc).__name__}"
            ) from exc
        if body.get("status") != "success":
            raise MetricsUnavailableError(f"Prometheus refused the query: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def range(self, promql: str, when: TimeRange) -> list[dict[str, Any]]:
        params = {
            "query": promql,
            "start": f"{when.start.timestamp():.3f}",
            "end": f"{when.end.timestamp():.3f}",
            "step": str(when.step),
        }
        return self._get("/api/v1/query_range", params)

    def instant(self, promql: str, at: dt.datetime | None = None) -> list[dict[str, Any]]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        return self._get("/api/v1/query", params)


def chart(reader: PrometheusReader, name: Chart, scope: Scope, when: TimeRange) -> ChartAnswer:
    lines = [
        Line(
            name=line,
            labels={k: v for k, v in row["metric"].items() if k in ("app", "cluster")},
            points=[(float(t), float(v)) for t, v in row["values"]],
        )
        for line, promql in chart_queries(name, scope).items()
        for row in reader.range(promql, when)
    ]
    quota_promql = quota_query(name, scope)
    quota = (
        [
            QuotaLine(resource=row["metric"]["resource"], value=float(row["value"][1]))
            for row in reader.instant(quota_promql, when.end)
        ]
        if quota_promql
        else []
    )
    lines.sort(key=lambda line: (line.name, sorted(line.labels.items())))
    return ChartAnswer(chart=name, unit=UNITS[name], lines=lines, quota=quota)


def charts(
    reader: PrometheusReader, scope: Scope, when: TimeRange, names: tuple[Chart, ...] = CHARTS
) -> MetricsAnswer:
    return MetricsAnswer(
        tenant=scope.tenant,
        project=scope.project,
        app=scope.app,
        start=when.start,
        end=when.end,
        step=when.step,
        charts=[chart(reader, name, scope, when) for name in names],
        requestRate=NO_REQUEST_RATE,
    )


def _pod_key(row: dict[str, Any]) -> tuple[str, str, str]:
    labels = row["metric"]
    return labels.get("app", ""), labels.get("cluster", ""), labels.get("pod", "")


def top(reader: PrometheusReader, scope: Scope) -> TopAnswer:
    columns = {
        column: {_pod_key(r): float(r["value"][1]) for r in reader.instant(promql)}
        for column, promql in top_queries(scope).items()
    }
    pods = [
        PodUse(
            app=app,
            cluster=cluster,
            pod=pod,
            cpu=columns["cpu"].get((app, cluster, pod)),
            memory=columns["memory"].get((app, cluster, pod)),
            restarts=int(columns["restarts"].get((app, cluster, pod), 0)),
            ready=columns["ready"][(app, cluster, pod)] == 1,
        )
        for app, cluster, pod in sorted(columns["ready"])
    ]
    return TopAnswer(tenant=scope.tenant, project=scope.project, app=scope.app, pods=pods)
