"""The workload feed: what Prometheus scrapes from Wharf at /metrics/workloads.

Pods, Deployments and StatefulSets come from the delivery controller's watch caches (no extra
reads of the clusters); CPU and memory from each cluster's `metrics.k8s.io` at scrape time
(metrics-server keeps only the latest value, so there is nothing to watch); owners and quota
from Wharf's own records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.core.generic_client import ALL_NS
from lightkube.generic_resource import create_namespaced_resource
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wharf.apps.model import APPLICATION
from wharf.core.logging import get_logger
from wharf.kube.informer import ClusterWatches
from wharf.monitoring.model import (
    APP_LABELS,
    HELP,
    POD_LABELS,
    QUOTA,
    QUOTA_LABELS,
    READY_REPLICAS,
    REPLICAS,
    RESTARTS,
    Feed,
    Owner,
    add_pods,
    add_quota,
    add_workloads,
    usage,
)
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
