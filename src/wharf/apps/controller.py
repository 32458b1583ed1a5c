"""The delivery controller: an application's objects in every cluster of its environment.

All clusters are worked on concurrently. Objects are compared before they are applied (zero
writes when nothing changed), pruned by the application's ownership labels, and watched, so
that drift comes back and status follows the rollout. One overall state sums the clusters up,
with reasons that name them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import structlog
from lightkube import AsyncClient, operators
from lightkube.core.exceptions import ApiError
from lightkube.core.generic_client import ALL_NS
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.batch_v1 import CronJob, Job
from lightkube.resources.core_v1 import (
    ConfigMap,
    Event,
    PersistentVolumeClaim,
    Pod,
    ResourceQuota,
    Secret,
    Service,
    ServiceAccount,
)
from lightkube.resources.networking_v1 import Ingress
from lightkube.resources.policy_v1 import PodDisruptionBudget
from sqlalchemy.orm import Session

from wharf.apps.model import (
    APP_LABEL,
    APPLICATION,
    RELEASE_ROLE,
    ApplicationSpec,
    FailoverPlan,
    ReplicaBounds,
    canary_split,
    delivery_findings,
    desired_objects,
    failover_plan,
    keep_autoscaled_replicas,
    replica_requests,
    room_in,
    spread_of,
    with_replicas,
)
from wharf.apps.service import (
    ApplicationRules,
    app_labels,
    current_revision,
    rendered_for,
    revision_spec,
)
from wharf.clusters.model import CLUSTER, Routing, routing_of
from wharf.clusters.service import ClusterRules
from wharf.core.controller import STATUS_REFRESH_SECONDS, Controller
from wharf.core.errors import OutdatedSpecError
from wharf.core.leases import PLATFORM, Lease, LeaseBook, LeaseLost, cluster_lease, fenced_by
from wharf.core.resources import condition, set_condition
from wharf.kube.apply import (
    OwnedElsewhereError,
    RejectedError,
    RemovalPending,
    apply_watched,
    check_owner,
    contains,
    dry_run,
    is_missing_namespace,
    labelled,
    observe,
    owner_labels,
    prune,
    prune_cached,
    remove_labelled,
    seen_otherwise,
)
from wharf.kube.clients import is_unreachable
from wharf.kube.connections import ClusterConnections, fingerprint
from wharf.kube.informer import ClusterWatches, Informer, synced
from wharf.kube.kinds import BY_API
from wharf.network.model import CanarySplit, endpoints, expose_node_ports, tls_objects
from wharf.network.service import CertificateRules, application_node_ports
from wharf.resources.service import DELETE_VOLUMES, ResourceService
from wharf.store.claims import Holder, held_by
from wharf.store.resources import ResourceStore, StoredResource
from wharf.tenancy.model import (
    MANAGED_BY,
    NAMESPACE_QUOTA,
    PROJECT,
    TENANT_LABEL,
    DeliveryPolicy,
    ProjectSpec,
    namespace_name,
)

log = structlog.get_logger("wharf.apps")
Key = tuple[str, str]  # (tenant, application)
RESOURCES = (
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    Service,
    Ingress,
    ConfigMap,
    Secret,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    ServiceAccount,
)
BY_KIND = {r.__name__: r for r in RESOURCES}


async def _claims_of(
    client: AsyncClient, labels: dict[str, Any], prefix: str
) -> list[tuple[str, str]]:
    """(namespace, name) of the application's claims: those it renders (labelled as its
    own) and those its StatefulSets made (`<template>-<statefulset>-<ordinal>`)."""
    patterns: dict[str, list[re.Pattern[str]]] = {}
    async for item in client.list(StatefulSet, namespace=ALL_NS, labels=labels):
        sts = item.to_dict()
        namespace = sts["metadata"].get("namespace", "")
        for template in sts["spec"].get("volumeClaimTemplates", []):
            name = f"{template['metadata']['name']}-{sts['metadata']['name']}"
            patterns.setdefault(namespace, []).append(re.compile(rf"^{re.escape(name)}-\d+$"))
    found = []
    async for claim in client.list(PersistentVolumeClaim, namespace=ALL_NS):
        meta = claim.to_dict()["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        if not namespace.startswith(prefix):
            continue  # only the tenant's own namespaces: labels elsewhere prove nothing
        mine = all((meta.get("labels") or {}).get(k) == v for k, v in labels.items())
        made = any(p.match(name) for p in patterns.get(namespace, []))
        if mine or made:
            found.append((namespace, name))
    return found


async def remove_volumes(client: AsyncClient, labels: dict[str, Any], prefix: str) -> list[str]:
    """Delete the application's claims (their volumes go as their class's reclaim policy
    says); only in its tenant's namespaces (`prefix`)."""
    removed = []
    for namespace, name in await _claims_of(client, labels, prefix):
        with contextlib.suppress(ApiError):
            await client.delete(PersistentVolumeClaim, name, namespace=namespace)
        removed.append(f"PersistentVolumeClaim/{namespace}/{name}")
    return removed


def resources_in(cluster: StoredResource) -> tuple[Any, ...]:
    """What delivery writes and prunes in a cluster: Kubernetes' own kinds, and those of the
    CRDs the cluster serves (HTTPRoute, cert-manager's Certificate), as its status says."""
    apis = cluster.status.get("apis") or {}
    return RESOURCES + tuple(r for api, kinds in BY_API.items() if apis.get(api) for r in kinds)


def _splits(
    spec: ApplicationSpec,
    rendered: list[dict[str, Any]],
    targets: list[str],
    pins: RevisionPins | None,
) -> dict[str, CanarySplit]:
    """Where a release shifts traffic on the application's HTTPRoutes, its split there."""
    found: dict[str, CanarySplit] = {}
    for cluster in targets:
        weight = pins.weight(cluster) if pins is not None else None
        split = canary_split(spec, rendered, weight) if weight is not None else None
        if split is not None:
            found[cluster] = split
    return found


def routing_in(cluster: StoredResource) -> Routing:
    return routing_of(CLUSTER.typed(cluster).routing, cluster.status.get("apis") or {})


KEPT_STATUS = ("schedule",)


OWNED: dict[str, Any] = {MANAGED_BY: "wharf", APP_LABEL: None}  # None: the label is set
# A revision delivered to one cluster: its spec as stored, its rendered objects, its number.
Variant = tuple[dict[str, Any], list[dict[str, Any]], int]


class NamespacePending(Exception):
    """Delivered before its project's placement made the namespace in some cluster: tried
    again (with the controller's backoff) rather than reported failed."""


class RevisionPins(Protocol):
    """Which revision a cluster's stable workloads run (0: the spec's own)."""

    def revision(self, cluster: str) -> int: ...

    def weight(self, cluster: str) -> int | None:
        """The canary's share of the traffic there while a release shifts it, else None."""
        ...


# (session, tenant, application, spec, revision) -> pins; releases provide it.
Pinning = Callable[[Session, str, str, ApplicationSpec, int], RevisionPins]
# The application's scheduled window open now (as its controller applied it), if any;
# scaling provides it.
Windows = Callable[[StoredResource], ReplicaBounds | None]


@dataclass(frozen=True)
class Exposure:
    """How an application is reached: its node ports by cluster ((service, port) -> node
    port), and the certificates of its routes in the clear (name -> (certificate, key))."""

    ports: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict)
    certificates: dict[str, tuple[str, str]] = field(default_factory=dict)
    splits: dict[str, CanarySplit] = field(default_factory=dict)  # a release's, by cluster


class DeliveryController:
    def __init__(
        self,
        service: ResourceService,
        rules: ApplicationRules,
        certificates: CertificateRules,
        clusters: ClusterRules,
        connections: ClusterConnections,
        resync: float = 30.0,
        pinned: Pinning | None = None,
        window: Windows | None = None,
        failover_grace: float = 15.0,
        share: LeaseBook | None = None,
    ) -> None:
        self.service = service
        self.failover_grace = failover_grace
        # Which clusters this replica delivers to (their leases), and whether it finishes
        # deletes (the platform lease). One process: all of it.
        self.share = share or LeaseBook("local", sole=True)
        self.pinned = pinned
        self.window = window
        self.rules = rules
        self.certificates = certificates
        self.clusters = clusters
        self.connections = connections
        self.watches = ClusterWatches()
        # Applications wait on the network, not the CPU: more of them are worked on at once.
        self.controller = Controller(
            "delivery", self.reconcile, self.list_keys, resync=resync, workers=8
        )
        self.writes = 0
        self.per_cluster: Counter[str] = Counter()  # deliveries by cluster, for /metrics
        # Told after each status write (a release waiting for its promotion to be delivered).
        self.delivered: list[Callable[[Key], None]] = []

    def _lease_of(self, cluster: str, registered: bool = True) -> Lease | None:
        """The lease this replica delivers to `cluster` under, if it holds it; a cluster not
        registered (nothing to write there, only a status to say so) is platform-wide."""
        return self.share.lease(cluster_lease(cluster) if registered else PLATFORM)

    async def list_keys(self) -> Iterable[Key]:
        if not self.share.sole and not self.share.names():
            return []  # a replica holding nothing has nothing to look at

        def apps() -> tuple[list[Key], list[StoredResource]]:
            with self.service.db.reader() as session:
                store = ResourceStore(session)
                live = store.query("Application") + store.query("Application", deleting=True)
                ready = [
                    c
                    for c in store.query("Cluster")
                    if c.status.get("phase") == "Ready" and self._lease_of(c.name) is not None
                ]
                return [(a.tenant, a.name) for a in live], ready

        keys, clusters = await asyncio.to_thread(apps)
        # Objects whose application is gone are found in the clusters (level-triggered cleanup).
        found = await asyncio.gather(*(self._owners_in(c) for c in clusters))
        return sorted(set(keys).union(*found))

    async def _owners_in(self, cluster: StoredResource) -> set[Key]:
        """(tenant, application) of every object Wharf delivered to the cluster."""
        caches = self.caches(cluster.name)
        owners: set[tuple[str, ...]] = {
            (labels.get(TENANT_LABEL, ""), labels.get(APP_LABEL, ""))
            for kind in resources_in(cluster)
            if kind.__name__ in caches
            for obj in caches[kind.__name__].items.values()
            if (labels := obj["metadata"].get("labels") or {})
            and obj["metadata"].get("namespace", "").startswith(f"{labels.get(TENANT_LABEL, '')}--")
        }
        # Kinds not watched yet (no delivery there since start, or a watch relisting) are
        # listed.
        unwatched = [k for k in resources_in(cluster) if k.__name__ not in caches]
        try:
            client = self.connections.client(cluster.name, self.clusters.kubeconfig(cluster))
            owners |= await owner_labels(
                client, unwatched, OWNED, (TENANT_LABEL, APP_LABEL), in_owners_namespace=True
            )
        except Exception as exc:
            log.info("sweep skipped a cluster", cluster=cluster.name, error=str(exc)[:300])
            return set()
        return {(t, a) for t, a in owners if t and a}

    def watch_event(self, event: str, obj: dict[str, Any]) -> None:
        """A delivered Deployment, StatefulSet or pod changed in a cluster: queue its
        application. A release's canary and its pods are the release controller's: their
        every step and pod start would otherwise re-deliver the whole application everywhere.
        An object outside its tenant's namespaces (a tenant's pod labelled as another tenant's
        application, or as one made up) wakes nothing."""
        key = _application_of(obj)
        if event in ("ADDED", "MODIFIED", "DELETED") and key is not None:
            self.controller.queue.add(key)

    def status_event(self, _event: str, obj: dict[str, Any]) -> None:
        """Only the status of such an object changed (a rollout going on, a pod starting):
        its application's status follows, a burst of them looked at once."""
        key = _application_of(obj)
        if key is not None:
            self.controller.queue.add_after(key, STATUS_REFRESH_SECONDS)

    async def _watch(self, cluster: StoredResource) -> dict[str, Informer]:
        """The cluster's watch caches, by kind: every kind delivery writes (its objects only),
        the application's pods, and the cluster's events. Deployments, StatefulSets and pods
        queue their application when they change (drift, rollout); the rest are read."""
        kubeconfig = self.clusters.kubeconfig(cluster)
        client = self.connections.client(cluster.name, kubeconfig)
        kinds = resources_in(cluster)

        def informer(kind: Any, labels: dict[str, Any] | None, queues: bool) -> Informer:
            return Informer(
                client,
                kind,
                labels=labels,
                on_event=self.watch_event if queues else None,
                on_status=self.status_event if queues else None,
                name=f"{cluster.name}/apps/{kind.__name__}",
                watch_seconds=self.connections.timeouts.watch,
            )

        def make() -> list[Informer]:
            # Pods carry only the app label (their template's), what delivery writes both.
            return [
                *(informer(k, OWNED, k in (Deployment, StatefulSet)) for k in kinds),
                informer(Pod, {APP_LABEL: None}, True),
                informer(Event, None, False),
            ]

        # New kinds served (a CRD installed) make a new set of caches.
        version = f"{fingerprint(kubeconfig)}/{','.join(k.__name__ for k in kinds)}"
        informers = await self.watches.ensure(f"apps/{cluster.name}", version, make)
        return {i.resource.__name__: i for i in informers}

    def caches(self, cluster: str) -> dict[str, Informer]:
        """The cluster's watch caches that hold the whole of their kind now (synced)."""
        return synced(self.watches.informers(f"apps/{cluster}"))

    def _load(
        self, key: Key
    ) -> tuple[
        StoredResource | None,
        dict[str, StoredResource],
        list[dict[str, Any]],
        list[str],
        DeliveryPolicy,
        set[str],
        int,
        dict[str, Variant],
        Exposure,
    ]:
        """The application, clusters, rendered objects, target clusters, delivery policy, the
        clusters where its namespace is not its project's (held by another, or conflicted),
        the revision its spec is, the clusters a release keeps on another revision, and how it
        is exposed (node ports, TLS certificates)."""
        with self.service.db.reader() as session:
            store = ResourceStore(session)
            app = store.get("Application", key[0], key[1], with_deleting=True)
            clusters = {c.name: c for c in store.query("Cluster")}
            if app is None or app.deleting_since is not None:
                return app, clusters, [], [], DeliveryPolicy(), set(), 0, {}, Exposure()
            spec = APPLICATION.typed(app)
            project = store.get("Project", key[0], spec.project)
            project_spec = PROJECT.typed(project) if project else ProjectSpec()
            envs = {e.name: e.clusters for e in project_spec.environments}
            targets = envs.get(spec.environment, [])
            namespace = namespace_name(key[0], spec.project, spec.environment)
            held = namespace in held_by(
                session, "namespace", Holder("Project", key[0], spec.project)
            )
            refused = {
                p["cluster"]
                for p in (project.status if project else {}).get("placements", [])
                if p["environment"] == spec.environment and p["state"] == "Conflict"
            }
            if not held:
                refused = set(targets)
            # Read with the spec, in one transaction: the revision is the one this spec is.
            revision = current_revision(session, key[0], key[1])
            rendered = rendered_for(session, spec)
            pins = self.pinned(session, key[0], key[1], spec, revision) if self.pinned else None
            variants = self._variants(session, key, revision, targets, pins)
            exposure = Exposure(
                application_node_ports(session, key[0], key[1]),
                {
                    name: pair
                    for name in sorted({r.tls for r in spec.routes if r.tls})
                    if (pair := self.certificates.opened(session, key[0], name)) is not None
                },
                _splits(spec, rendered, targets, pins),
            )
            return (
                app,
                clusters,
                rendered,
                targets,
                project_spec.delivery,
                refused,
                revision,
                variants,
                exposure,
            )

    def _variants(
        self,
        session: Session,
        key: Key,
        revision: int,
        targets: list[str],
        pins: RevisionPins | None,
    ) -> dict[str, Variant]:
        """Clusters whose stable workloads a release keeps on another revision, with it."""
        if pins is None:
            return {}
        found: dict[int, Variant] = {}
        variants: dict[str, Variant] = {}
        for cluster in targets:
            number = pins.revision(cluster)
            if not number or number == revision:
                continue
            if number not in found:
                stored = revision_spec(session, key[0], key[1], number)
                rendered = rendered_for(session, ApplicationSpec.model_validate(stored))
                found[number] = (stored, rendered, number)
            variants[cluster] = found[number]
        return variants

    async def reconcile(self, key: Key) -> None:
        try:
            await self._reconcile(key)
        except OutdatedSpecError as exc:
            # A stored spec (the application's or its project's) today's rules refuse: said
            # on the application, nothing delivered; a valid apply queues it again.
            log.warning("outdated spec", app=key, error=exc.message)
            platform = self.share.lease(PLATFORM)
            if platform is None:
                return  # said once, by the replica doing the platform-wide part
            with fenced_by(platform):
                await asyncio.to_thread(
                    self.service.write_status,
                    "Application",
                    key[0],
                    key[1],
                    partial(_outdated, exc),
                )

    async def _reconcile(self, key: Key) -> None:
        loaded = await asyncio.to_thread(self._load, key)
        app, clusters, rendered, targets, policy, refused, revision, variants, exposure = loaded
        if app is None or app.deleting_since is not None:
            # Deleted (the record says so) or gone (objects found without an owner): remove
            # its objects everywhere, and only then drop the record.
            volumes = app is not None and app.annotations.get(DELETE_VOLUMES) == "true"
            await asyncio.gather(*(self._remove(key, c, volumes) for c in clusters.values()))
            platform = self.share.lease(PLATFORM)
            if app is not None and platform is not None:
                await self._left_anywhere(key, clusters.values())
                with fenced_by(platform):
                    await asyncio.to_thread(
                        self.service.finish_delete, "Application", key[0], key[1], app.uid
                    )
            return
        spec = self.rules.unsealed(app)
        warnings = sorted(
            {
                message
                for cluster in targets
                for check, message in delivery_findings(
                    desired_objects(key[1], spec, rendered, cluster, app_labels(key[0], spec)),
                    policy.allowedRegistries,
                )
                if getattr(policy.checks, check) == "warn"
            }
        )
        namespace = namespace_name(key[0], spec.project, spec.environment)
        not_ours = {"state": "Conflict", "message": f"namespace {namespace} is not its project's"}
        # Clusters the environment no longer covers lose the application's objects, at the
        # same time and apart: a cluster that hangs there holds up neither the delivery nor
        # its status, and its failure is retried after the status is written.
        leaving = asyncio.gather(
            *(self._remove(key, c) for n, c in clusters.items() if n not in targets),
            return_exceptions=True,
        )
        plan = await self._failover(key, spec, rendered, namespace, targets, refused, clusters)
        # Each cluster is delivered to by the replica holding its lease, which writes only
        # that cluster's part of the status (under that lease).
        mine = {
            c: lease
            for c in targets
            if (lease := self._lease_of(c, registered=c in clusters)) is not None
        }
        results = await asyncio.gather(
            *(
                _settled(not_ours)
                if c in refused
                else self._deliver(
                    key,
                    app,
                    *_planned(
                        self._revision_for(app, spec, rendered, revision, variants.get(c)),
                        c,
                        plan,
                    ),
                    clusters.get(c),
                    c,
                    exposure,
                    lease,
                )
                for c, lease in mine.items()
            )
        )
        if mine or not targets:
            with fenced_by(*mine.values()):
                await asyncio.to_thread(
                    self.service.write_status,
                    "Application",
                    key[0],
                    key[1],
                    partial(
                        _status,
                        dict(zip(mine, results, strict=True)),
                        warnings,
                        app.generation,
                        revision,
                        targets,
                        plan if spec.failover is not None else None,
                    ),
                )
            for listener in self.delivered:
                listener(key)
        failed = [e for e in await leaving if isinstance(e, BaseException)]
        if failed:
            raise failed[0]
        # Pending: a cluster whose namespace is not there yet (nothing else delivered is).
        waiting = [c for c, r in zip(mine, results, strict=True) if r["state"] == "Pending"]
        if waiting:
            raise NamespacePending(f"{namespace} not yet in {', '.join(waiting)}")

    async def _failover(
        self,
        key: Key,
        spec: ApplicationSpec,
        rendered: list[dict[str, Any]],
        namespace: str,
        targets: list[str],
        refused: set[str],
        clusters: dict[str, StoredResource],
    ) -> FailoverPlan | None:
        """Where the replicas of its clusters out past the grace period run meanwhile: in the
        environment's other Ready clusters (never elsewhere), as far as their quota holds."""
        if spec.failover is None or spec.autoscaling is not None:
            return None
        mine = [c for c in targets if c not in refused and c in clusters]
        grace = spec.failover.gracePeriodSeconds
        grace_seconds = self.failover_grace if grace is None else float(grace)
        away = {c: _away_for(clusters[c]) for c in mine}
        out = {c for c, seconds in away.items() if seconds is not None and seconds >= grace_seconds}
        waiting = [grace_seconds - s for c, s in away.items() if s is not None and c not in out]
        if waiting:  # look again when the first one's grace period is over
            loop = asyncio.get_running_loop()
            loop.call_later(max(0.1, min(waiting)), self.controller.queue.add, key)
        spread = spread_of(spec, rendered, mine)
        if not out:
            return failover_plan(spread, set(), {}, spec.failover.minAvailableClusters)
        ready = [c for c in mine if c not in out and clusters[c].status.get("phase") == "Ready"]
        rooms = await asyncio.gather(
            *(self._room(key, spec, rendered, namespace, clusters[c]) for c in ready)
        )
        plan = failover_plan(
            spread, out, dict(zip(ready, rooms, strict=True)), spec.failover.minAvailableClusters
        )
        if plan.moved or plan.heldBack:
            log.info("failover", app=key, out=plan.out, moved=plan.moved, held_back=plan.heldBack)
        return plan

    async def _room(
        self,
        key: Key,
        spec: ApplicationSpec,
        rendered: list[dict[str, Any]],
        namespace: str,
        cluster: StoredResource,
    ) -> int:
        """How many more of the application's replicas the namespace's quota holds in one
        cluster, as the cluster counts it now (none when it cannot be asked)."""
        objects = desired_objects(key[1], spec, rendered, cluster.name, app_labels(key[0], spec))
        try:
            client = self.connections.client(cluster.name, self.clusters.kubeconfig(cluster))
            found = await client.get(ResourceQuota, NAMESPACE_QUOTA, namespace=namespace)
            quota: dict[str, Any] | None = found.to_dict()
        except ApiError as exc:
            if exc.status.code != 404:
                return 0
            quota = None
        except Exception:
            return 0
        return room_in(quota, replica_requests(objects))

    def _revision_for(
        self,
        app: StoredResource,
        spec: ApplicationSpec,
        rendered: list[dict[str, Any]],
        revision: int,
        variant: Variant | None,
    ) -> tuple[ApplicationSpec, list[dict[str, Any]], int]:
        if variant is None:
            return spec, rendered, revision
        stored, other, number = variant
        return self.rules.unsealed(dataclasses.replace(app, spec=stored)), other, number

    async def _remove(self, key: Key, cluster: StoredResource, volumes: bool = False) -> None:
        """Delete the application's objects in one cluster — its volumes only when the delete
        asked for it; failures propagate (and are retried), so that a delete is not reported
        done while something is left. A cluster that is not Ready is passed over: the sweep
        removes what is left when it is back."""
        if cluster.status.get("phase") != "Ready" or self._lease_of(cluster.name) is None:
            return  # not Ready, or another replica's cluster
        client = self.connections.client(cluster.name, self.clusters.kubeconfig(cluster))
        labels: dict[str, Any] = {MANAGED_BY: "wharf", TENANT_LABEL: key[0], APP_LABEL: key[1]}
        if volumes:  # first: the StatefulSets name their claims
            removed = await remove_volumes(client, labels, f"{key[0]}--")
            self.writes += len(removed)
        # Only in the tenant's own namespaces: elsewhere these labels prove nothing.
        removed = await remove_labelled(
            client, resources_in(cluster), labels, namespace_prefix=f"{key[0]}--"
        )
        self.writes += len(removed)
        if removed:
            log.info("removed application objects", cluster=cluster.name, app=key, objects=removed)

    async def _left_anywhere(self, key: Key, clusters: Iterable[StoredResource]) -> None:
        """Before a delete is finished: none of the application's objects is left in any Ready
        cluster, those of other replicas included (a read; their holders remove them)."""
        labels: dict[str, Any] = {MANAGED_BY: "wharf", TENANT_LABEL: key[0], APP_LABEL: key[1]}

        async def left(cluster: StoredResource) -> list[str]:
            client = self.connections.client(cluster.name, self.clusters.kubeconfig(cluster))
            return await labelled(client, resources_in(cluster), labels, f"{key[0]}--")

        ready = [c for c in clusters if c.status.get("phase") == "Ready"]
        found = [o for objects in await asyncio.gather(*(left(c) for c in ready)) for o in objects]
        if found:
            raise RemovalPending(found)

    async def _deliver(
        self,
        key: Key,
        app: StoredResource,
        spec: ApplicationSpec,
        rendered: list[dict[str, Any]],
        revision: int,
        cluster: StoredResource | None,
        name: str,
        exposure: Exposure,
        lease: Lease,
    ) -> dict[str, Any]:
        result = await self._deliver_revision(
            key, app, spec, rendered, cluster, name, exposure, lease
        )
        return {**result, "revision": revision}

    async def _deliver_revision(
        self,
        key: Key,
        app: StoredResource,
        spec: ApplicationSpec,
        rendered: list[dict[str, Any]],
        cluster: StoredResource | None,
        name: str,
        exposure: Exposure,
        lease: Lease,
    ) -> dict[str, Any]:
        if cluster is None:
            return {"state": "Unreachable", "message": f"cluster {name} is not registered"}
        self.per_cluster[name] += 1
        if cluster.status.get("phase") != "Ready":
            return {
                "state": "Unreachable",
                "message": f"cluster {name} is {cluster.status.get('phase', 'not observed')}",
            }
        namespace = namespace_name(key[0], spec.project, spec.environment)
        labels = app_labels(key[0], spec)
        routing = routing_in(cluster)
        window = self.window(app) if self.window is not None else None
        objects = expose_node_ports(
            desired_objects(
                key[1], spec, rendered, name, labels, routing, window, exposure.splits.get(name)
            ),
            exposure.ports.get(name, {}),
        )
        objects += tls_objects(
            key[1], spec.routes, routing, exposure.certificates, {**labels, APP_LABEL: key[1]}
        )
        try:
            client = self.connections.client(name, self.clusters.kubeconfig(cluster))
            caches = await self._watch(cluster)
            for obj in objects:
                obj["metadata"]["namespace"] = namespace
            # Never take over: an object this app renders that another owner already has
            # (another application, or nothing of Wharf's) stops delivery to this cluster.
            owner = {MANAGED_BY: "wharf", TENANT_LABEL: key[0], APP_LABEL: key[1]}
            currents, pending = await self._compared(client, name, objects, owner, spec)
            for wave in _waves(objects, pending):
                self.share.check(lease)  # lost meanwhile: its new holder goes on
                applied = await asyncio.gather(
                    *(
                        apply_watched(client, caches.get(objects[i]["kind"]), objects[i])
                        for i in wave
                    )
                )
                for i, current in zip(wave, applied, strict=True):
                    self.writes += 1
                    currents[i] = current
            observed = [c for c in currents if c is not None]
            self.share.check(lease)
            await self._prune(client, cluster, namespace, key[1], objects)
            return await _cluster_status(client, self.caches(name), namespace, key[1], observed)
        except LeaseLost:
            raise
        except Exception as exc:
            if is_missing_namespace(exc, namespace):  # its project's placement makes it
                message = (
                    f"waiting for its namespace {namespace}: the project's placement makes it "
                    f"(its status says how that goes); the cluster said: {exc}"
                )[:400]
                return {"state": "Pending", "message": message}
            if isinstance(exc, RejectedError):
                return {"state": "Failed", "message": f"rejected by the cluster: {exc}"[:400]}
            if isinstance(exc, OwnedElsewhereError):
                return {"state": "Conflict", "message": str(exc)[:400]}
            message = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("delivery failed", cluster=name, app=key, error=message)
            return {"state": "Unreachable" if is_unreachable(exc) else "Failed", "message": message}

    async def _compared(
        self,
        client: AsyncClient,
        cluster: str,
        objects: list[dict[str, Any]],
        owner: dict[str, str],
        spec: ApplicationSpec,
    ) -> tuple[list[dict[str, Any] | None], list[int]]:
        """Each object as the cluster has it (from the watch caches; read only where a cache
        cannot say), its owner checked, and which ones differ — each of those checked by the
        cluster's schema (a dry run) before anything is written anywhere in it."""
        caches = self.caches(cluster)
        cached = [caches.get(o["kind"]) for o in objects]
        currents = list(
            await asyncio.gather(
                *(
                    _cached_get(cache, o) if cache is not None else observe(client, o)
                    for o, cache in zip(objects, cached, strict=True)
                )
            )
        )
        if spec.autoscaling is not None:
            keep_autoscaled_replicas(objects, currents)
        for current in currents:
            check_owner(current, owner)
        pending = [i for i, c in enumerate(currents) if c is None or not contains(objects[i], c)]
        checked = await asyncio.gather(*(dry_run(client, objects[i]) for i in pending))
        # In the cluster but not as the cache has it (another owner's object, one made
        # again or relabelled while a watch was behind): read it, check its owner, and
        # write only if it differs.
        there = [
            i
            for i, would in zip(pending, checked, strict=True)
            if seen_otherwise(currents[i], would)
        ]
        for i, found in zip(
            there, await asyncio.gather(*(observe(client, objects[i]) for i in there)), strict=True
        ):
            check_owner(found, owner)
            currents[i] = found
        if there and spec.autoscaling is not None:
            keep_autoscaled_replicas(objects, currents)
        return currents, [i for i in pending if not _holds(currents[i], objects[i])]

    async def _prune(
        self,
        client: AsyncClient,
        cluster: StoredResource,
        namespace: str,
        app: str,
        objects: list[dict[str, Any]],
    ) -> None:
        """Delete the application's objects in the namespace that it no longer renders; from
        the watch caches where they hold the kind (each deleted only as the cache saw it),
        else listed. A release's canary objects are the release controller's."""
        keep: dict[str, set[str]] = {}
        for obj in objects:
            keep.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
        ours: dict[str, Any] = {
            MANAGED_BY: "wharf",
            APP_LABEL: app,
            RELEASE_ROLE: operators.not_exists(),
        }
        caches = self.caches(cluster.name)
        for resource in resources_in(cluster):
            kind = resource.__name__
            if kind in caches:
                mine = [o for o in caches[kind].in_namespace(namespace) if _delivered(o, app)]
                removed = await prune_cached(client, mine, keep.get(kind, set()))
            else:
                removed = await prune(client, resource, namespace, ours, keep.get(kind, set()))
            self.writes += len(removed)

    async def stop(self) -> None:
        await self.watches.stop()


# Applied first, all at once: what workloads refer to; then the rest, all at once.
REFERENCED = {"ConfigMap", "Secret", "ServiceAccount", "PersistentVolumeClaim", "Service"}


def _waves(objects: list[dict[str, Any]], pending: list[int]) -> list[list[int]]:
    first = [i for i in pending if objects[i]["kind"] in REFERENCED]
    rest = [i for i in pending if objects[i]["kind"] not in REFERENCED]
    return [w for w in (first, rest) if w]


def _holds(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    return current is not None and contains(desired, current)


def _delivered(obj: dict[str, Any], app: str) -> bool:
    """Delivery's own object of this application (not a release's canary)."""
    labels = obj["metadata"].get("labels") or {}
    return (
        labels.get(MANAGED_BY) == "wharf"
        and labels.get(APP_LABEL) == app
        and RELEASE_ROLE not in labels
    )


def _application_of(obj: dict[str, Any]) -> Key | None:
    """The application a delivered object or pod belongs to; None for a release's canary
    (the release controller's) and for anything outside its tenant's namespaces."""
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    tenant = labels.get(TENANT_LABEL, "")
    ours = (
        APP_LABEL in labels
        and RELEASE_ROLE not in labels
        and bool(tenant)
        and str(meta.get("namespace", "")).startswith(f"{tenant}--")
    )
    return (tenant, labels[APP_LABEL]) if ours else None


async def _cached_get(cache: Informer, obj: dict[str, Any]) -> dict[str, Any] | None:
    meta = obj["metadata"]
    return cache.get(meta.get("namespace") or "", meta["name"])


async def _settled(result: dict[str, Any]) -> dict[str, Any]:
    return result


async def _cluster_status(
    client: AsyncClient,
    cached: dict[str, Informer],
    namespace: str,
    app: str,
    observed: list[dict[str, Any]],
) -> dict[str, Any]:
    """Replicas, conditions, pods and recent events of the application in one cluster, read
    from the (synced) watch caches; the API only when a watch has not synced yet."""
    workloads = []
    settled = True
    for obj in observed:
        kind, name = obj.get("kind"), obj["metadata"]["name"]
        if kind not in ("Deployment", "StatefulSet"):
            continue
        current = cached[kind].get(namespace, name) if kind in cached else None
        if current is None:
            fetched = await client.get(BY_KIND[kind], name, namespace=namespace)
            current = fetched.to_dict()  # type: ignore[attr-defined]
        st = current.get("status", {})
        desired = current.get("spec", {}).get("replicas", 1)
        row = {
            "kind": kind,
            "name": name,
            "desired": desired,
            "updated": st.get("updatedReplicas", 0),
            "ready": st.get("readyReplicas", 0),
            "available": st.get("availableReplicas", 0),
            "conditions": [
                {"type": c["type"], "status": c["status"], "reason": c.get("reason", "")}
                for c in st.get("conditions", [])
            ],
        }
        settled = settled and (
            st.get("observedGeneration", 0) >= current["metadata"].get("generation", 0)
            and row["updated"] == desired
            and row["ready"] == desired
            and st.get("replicas", 0) == desired
        )
        workloads.append(row)
    if "Pod" in cached:
        pod_objects = [
            p
            for p in cached["Pod"].in_namespace(namespace)
            if p["metadata"].get("labels", {}).get(APP_LABEL) == app
        ]
    else:
        pod_objects = [
            p.to_dict()
            async for p in client.list(Pod, namespace=namespace, labels={APP_LABEL: app})
        ]
    pods = sorted(
        (
            {
                "name": p["metadata"]["name"],
                "node": p["spec"].get("nodeName", ""),
                "phase": p.get("status", {}).get("phase", ""),
            }
            for p in pod_objects
        ),
        key=lambda p: p["name"],
    )
    workload_names = {w["name"] for w in workloads}
    pod_names = {p["name"] for p in pods}

    def about_app(name: str) -> bool:
        # Pods by name; ReplicaSets and Jobs by their workload's name and a suffix.
        return name in pod_names or any(
            name.startswith(f"{w}-") or name == w for w in workload_names
        )

    if "Event" in cached:
        event_objects = cached["Event"].in_namespace(namespace)
    else:
        event_objects = [e.to_dict() async for e in client.list(Event, namespace=namespace)]
    events = []
    for e in event_objects:
        involved = e.get("involvedObject", {})
        if about_app(involved.get("name", "")):
            events.append(
                {
                    "type": e.get("type", ""),
                    "reason": e.get("reason", ""),
                    "object": f"{involved.get('kind')}/{involved.get('name')}",
                    "message": e.get("message", ""),
                    "time": e.get("lastTimestamp") or e.get("eventTime") or "",
                }
            )
    return {
        "state": "Available" if settled else "Progressing",
        "message": "" if settled else "rolling out",
        "workloads": workloads,
        "pods": pods,
        "events": sorted(events, key=lambda e: str(e["time"]))[-5:],
        "endpoints": endpoints(observed),
        "volumes": await _volumes(client, namespace, app, observed),
    }


async def _volumes(
    client: AsyncClient, namespace: str, app: str, observed: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The application's claims in one cluster as the cluster holds them: requested size,
    capacity and phase (Pending until a volume is bound to it)."""
    rendered = {o["metadata"]["name"] for o in observed if o.get("kind") == "PersistentVolumeClaim"}
    made = [
        re.compile(rf"^{re.escape(t['metadata']['name'])}-{re.escape(o['metadata']['name'])}-\d+$")
        for o in observed
        if o.get("kind") == "StatefulSet"
        for t in o.get("spec", {}).get("volumeClaimTemplates", [])
    ]
    if not rendered and not made:
        return []
    out = []
    async for item in client.list(PersistentVolumeClaim, namespace=namespace):
        claim = item.to_dict()
        name = claim["metadata"]["name"]
        if name not in rendered and not any(p.match(name) for p in made):
            continue
        spec, status = claim.get("spec", {}), claim.get("status", {})
        out.append(
            {
                "name": name,
                "storageClass": spec.get("storageClassName") or "",
                "requested": spec.get("resources", {}).get("requests", {}).get("storage", ""),
                "capacity": (status.get("capacity") or {}).get("storage", ""),
                "phase": status.get("phase", ""),
            }
        )
    return sorted(out, key=lambda v: str(v["name"]))


def _outdated(exc: OutdatedSpecError, stored: StoredResource) -> dict[str, Any]:
    conditions = set_condition(
        stored.status.get("conditions", []),
        "Available",
        "False",
        "OutdatedSpec",
        exc.message,
        stored.generation,
    )
    return {**stored.status, "state": "Failed", "reason": exc.message, "conditions": conditions}


def _planned(
    delivered: tuple[ApplicationSpec, list[dict[str, Any]], int],
    cluster: str,
    plan: FailoverPlan | None,
) -> tuple[ApplicationSpec, list[dict[str, Any]], int]:
    """What one cluster runs, with the replicas failover gives it beyond its share."""
    spec, rendered, revision = delivered
    if plan is None or cluster not in plan.moved:
        return delivered
    return with_replicas(spec, cluster, plan.replicas[cluster]), rendered, revision


def _away_for(cluster: StoredResource) -> float | None:
    """Seconds the cluster has been Unreachable (None when it is not)."""
    if cluster.status.get("phase") != "Unreachable":
        return None
    ready = condition(cluster.status, "Ready")
    if ready is None or ready.get("status") != "False":
        return None
    since = dt.datetime.fromisoformat(str(ready["lastTransitionTime"]).replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - since).total_seconds()


def _failover_status(
    conditions: list[dict[str, Any]], plan: FailoverPlan | None, generation: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The FailedOver condition and the failover summary (for applications that ask)."""
    if plan is None:
        return conditions, None
    if not plan.out:
        message = "every cluster is in its spread"
        return set_condition(
            conditions, "FailedOver", "False", "AllClusters", message, generation
        ), None
    moved = ", ".join(f"{c} (+{n})" for c, n in sorted(plan.moved.items())) or "nowhere"
    message = f"{', '.join(plan.out)} out past the grace period: replicas moved to {moved}"
    if plan.heldBack:
        message += f"; {plan.heldBack} held back (quota, or too few clusters Ready)"
    summary = {"out": list(plan.out), "moved": dict(plan.moved), "heldBack": plan.heldBack}
    return (
        set_condition(conditions, "FailedOver", "True", "ClusterUnreachable", message, generation),
        summary,
    )


def _status(
    seen: dict[str, dict[str, Any]],
    warnings: list[str],
    generation: int,
    revision: int,
    targets: list[str],
    plan: FailoverPlan | None,
    stored: StoredResource,
) -> dict[str, Any]:
    """The status with the clusters this replica delivered to (`seen`) and the other target
    clusters as their replicas last wrote them."""
    before = stored.status.get("clusters") or {}
    pending = {"state": "Pending", "message": "not yet delivered by its cluster's replica"}
    clusters = {n: seen.get(n) or before.get(n) or pending for n in targets}
    states = {name: c["state"] for name, c in clusters.items()}
    bad = sorted(n for n, s in states.items() if s in ("Unreachable", "Failed", "Conflict"))
    if not clusters:
        state, reason = "Failed", "the environment is placed on no cluster"
    elif bad and len(bad) == len(states):
        state = "Failed"
        reason = "; ".join(f"{n}: {clusters[n]['message']}" for n in bad)
    elif bad:
        state = "Degraded"
        reason = "; ".join(f"{n}: {clusters[n]['message']}" for n in bad)
    elif all(s == "Available" for s in states.values()):
        state, reason = "Available", f"available in {', '.join(sorted(states))}"
    else:
        waiting = sorted(n for n, s in states.items() if s != "Available")
        state, reason = "Progressing", f"rolling out in {', '.join(waiting)}"
    conflicts = sorted(n for n, s in states.items() if s == "Conflict")
    conditions = set_condition(
        stored.status.get("conditions", []),
        "Conflict",
        "True" if conflicts else "False",
        "OwnedElsewhere" if conflicts else "NoConflict",
        "; ".join(f"{n}: {clusters[n]['message']}" for n in conflicts),
        generation,
    )
    conditions = set_condition(
        conditions,
        "Available",
        "True" if state == "Available" else "False",
        state,
        reason,
        generation,
    )
    conditions, failover = _failover_status(conditions, plan, generation)
    # Parts of the status other controllers keep (the scheduled window) stay as they are.
    kept = {k: v for k, v in stored.status.items() if k in KEPT_STATUS}
    if failover is not None:
        kept["failover"] = failover
    return {
        **kept,
        "state": state,
        "reason": reason,
        "observedGeneration": generation,
        "revision": revision,
        "clusters": clusters,
        "warnings": warnings,
        "conditions": conditions,
    }
