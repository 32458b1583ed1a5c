"""The cluster controller: heartbeat, version, capacity from node and pod watches, node pools.

Status is written only when it changes; the heartbeat time alone is refreshed at most every
`heartbeat_write` seconds, so an idle platform does not write to its database every beat.
Node pool taints are merged per node and recorded there, so a node is written only when its
taints differ and a deleted pool takes back exactly its own. A deleted cluster leaves the
platform here: what Wharf put there goes before its record does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import structlog
from lightkube.resources.admissionregistration_v1 import (
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
)
from lightkube.resources.core_v1 import Namespace, Node, Pod
from lightkube.resources.rbac_authorization_v1 import ClusterRole
from lightkube.resources.storage_v1 import StorageClass

from wharf.clusters.model import (
    CLUSTER,
    NODE_POOL,
    GrantedPool,
    NodePoolSpec,
    TenantGrants,
    capacity_of,
    node_matches,
    nodes_of,
    pod_requests,
    pool_labels_of,
    pool_place,
    pool_taints,
    routing_summary,
    served_apis,
    storage_catalog,
    tainted_node,
)
from wharf.clusters.service import ClusterRules
from wharf.core.controller import STATUS_REFRESH_SECONDS, Controller
from wharf.core.errors import OutdatedSpecError
from wharf.core.leases import WORKING_UNDER
from wharf.core.resources import now, set_condition, spec_of
from wharf.kube.apply import MANAGED_BY, apply, remove_labelled
from wharf.kube.clients import api_groups, server_version
from wharf.kube.connections import ClusterConnections, fingerprint
from wharf.kube.informer import ClusterWatches, Informer
from wharf.kube.kubeconfig import KubeconfigRefused
from wharf.resources.service import ResourceService
from wharf.store.resources import ResourceStore, StoredResource

log = structlog.get_logger("wharf.clusters")
DISCOVERY_SECONDS = 60.0
# What a cluster leaving the platform loses besides its pools' taints: whatever Wharf put there
# and labelled as its own (a namespace takes everything inside it along).
LEFT_BEHIND = (
    ValidatingAdmissionPolicyBinding,
    ValidatingAdmissionPolicy,
    ClusterRole,
    Namespace,
)


class PodRequests(Informer):
    """A cluster's pods as capacity counts them (model.pod_requests): 100,000 whole pods
    were gigabytes of the server's memory for a handful of fields each."""

    def _shape(self, obj: dict[str, Any]) -> dict[str, Any]:
        return pod_requests(obj)


class ClusterController:
    def __init__(
        self,
        service: ResourceService,
        rules: ClusterRules,
        connections: ClusterConnections,
        heartbeat: float = 5.0,
        heartbeat_write: float = 60.0,
        probe_timeout: float = 3.0,
    ) -> None:
        self.service = service
        self.rules = rules
        self.connections = connections
        self.heartbeat_write = heartbeat_write
        self.probe_timeout = probe_timeout
        self.on_phase: Callable[[], None] | None = None  # told when a cluster goes or comes
        self.watches = ClusterWatches()
        self.controller = Controller("clusters", self.reconcile, self.list_keys, resync=heartbeat)
        self.writes = 0  # API writes made, for metrics and tests
        self._discovered: dict[str, tuple[float, dict[str, bool]]] = {}
        self.per_cluster: Counter[str] = Counter()  # reconciles by cluster, for /metrics

    async def list_keys(self) -> Iterable[str]:
        def names() -> list[str]:
            with self.service.db.reader() as session:
                store = ResourceStore(session)
                rows = store.query("Cluster") + store.query("Cluster", deleting=True)
                return [c.name for c in rows]

        keys = await asyncio.to_thread(names)
        for gone in self.watches.clusters() - set(keys):
            self.controller.queue.add(gone)
        return keys

    def _load(
        self, name: str
    ) -> tuple[
        StoredResource | None,
        list[StoredResource],
        dict[str, GrantedPool],
        list[tuple[StoredResource, OutdatedSpecError]],
    ]:
        """The cluster (also when being deleted), its node pools (also those being deleted),
        each pool with the tenants granted it, and its pools whose stored spec today's rules
        refuse (other clusters' pools are not read: a fault in one is not this cluster's)."""
        with self.service.db.reader() as session:
            store = ResourceStore(session)
            pools = store.query("NodePool") + store.query("NodePool", deleting=True)
            specs: dict[str, NodePoolSpec] = {}
            outdated: list[tuple[StoredResource, OutdatedSpecError]] = []
            for pool in pools:
                if pool_place(pool).cluster != name:
                    continue
                try:
                    specs[pool.name] = NODE_POOL.typed(pool)
                except OutdatedSpecError as exc:
                    outdated.append((pool, exc))
            mine = [p for p in pools if p.name in specs]
            tenants = [(t.name, spec_of(t, TenantGrants)) for t in store.query("Tenant")]
            granted = {
                p.name: GrantedPool(
                    p.name,
                    specs[p.name],
                    tuple(
                        sorted(
                            set(specs[p.name].tenants)
                            | {t for t, grants in tenants if p.name in grants.nodePools}
                        )
                    ),
                )
                for p in mine
            }
            cluster = store.get("Cluster", "", name, with_deleting=True)
            return cluster, mine, granted, outdated

    async def _watch(
        self, name: str, kubeconfig: dict[str, Any]
    ) -> tuple[Informer, Informer, Informer]:
        client = self.connections.client(name, kubeconfig)

        def changed(event: str, _obj: dict[str, Any]) -> None:
            if event != "SYNCED":
                self.controller.queue.add(name)

        def counted(event: str, _obj: dict[str, Any]) -> None:
            # Pods only change the capacity in use the status shows: a burst of them (an
            # application delivered, a node drained) is looked at once.
            if event != "SYNCED":
                self.controller.queue.add_after(name, STATUS_REFRESH_SECONDS)

        def make() -> list[Informer]:
            return [
                (PodRequests if kind is Pod else Informer)(
                    client,
                    kind,
                    on_event=counted if kind is Pod else changed,
                    name=f"{name}/{plural}",
                    watch_seconds=self.connections.timeouts.watch,
                )
                for kind, plural in (
                    (Node, "nodes"),
                    (Pod, "pods"),
                    (StorageClass, "storageclasses"),
                )
            ]

        nodes, pods, classes = await self.watches.ensure(name, fingerprint(kubeconfig), make)
        return nodes, pods, classes

    async def reconcile(self, name: str) -> None:
        self.per_cluster[name] += 1
        try:
            await self._reconcile(name)
        except OutdatedSpecError as exc:
            # A stored spec (the cluster's, a pool's, a tenant's) today's rules refuse: said on
            # the cluster; retrying cannot help, and a valid apply queues it again.
            log.warning("outdated spec", cluster=name, error=exc.message)
            stored = await asyncio.to_thread(self._cluster, name)
            if stored is not None:
                await self._refused(stored, exc.message, "OutdatedSpec")

    def _cluster(self, name: str) -> StoredResource | None:
        with self.service.db.reader() as session:
            return ResourceStore(session).get("Cluster", "", name)

    async def _reconcile(self, name: str) -> None:
        stored, pools, granted, outdated = await asyncio.to_thread(self._load, name)
        if stored is not None and stored.deleting_since is not None:
            await self._leave(stored, pools)
            stored = None
        if stored is None:
            await self.watches.drop(name)
            await self.connections.forget(name)
            return
        kubeconfig = self.rules.kubeconfig(stored)
        try:
            nodes, pods, classes = await self._watch(name, kubeconfig)
        except KubeconfigRefused as exc:
            await self._refused(stored, str(exc))
            return
        client = self.connections.client(name, kubeconfig)
        status = dict(stored.status)
        version = ""
        try:
            async with asyncio.timeout(self.probe_timeout):
                version = await server_version(client)
            reachable, message = True, ""
        except TimeoutError:
            reachable = False
            message = f"TimeoutError: /version did not answer within {self.probe_timeout:g} s"
        except Exception as exc:
            reachable, message = False, f"{type(exc).__name__}: {exc}"[:300]
        conditions = status.get("conditions", [])
        if reachable:
            status["kubernetesVersion"] = version
            apis = await self._apis(name, client, stored.status.get("apis") or {})
            status["apis"] = apis
            status["routing"] = routing_summary(CLUSTER.typed(stored).routing, apis)
            if nodes.synced.is_set() and pods.synced.is_set():
                status["capacity"] = capacity_of(nodes.items.values(), pods.items.values())
                status["nodes"] = nodes_of(nodes.items.values())
                nodes_now = list(nodes.items.values())
                if outdated:
                    # The nodes keep the taints they have (removing a pool's would open its
                    # nodes to every tenant) until a valid apply repairs the pool.
                    await self._report_outdated(name, outdated)
                else:
                    await self._node_pools(name, client, pools, nodes_now, granted)
            if classes.synced.is_set():
                descriptions = CLUSTER.typed(stored).storageClasses
                status["storageClasses"] = storage_catalog(classes.items.values(), descriptions)
            conditions = set_condition(
                conditions,
                "Ready",
                "True",
                "Reachable",
                f"API server {version} answers",
                stored.generation,
            )
            status["phase"] = "Ready"
        else:
            conditions = set_condition(
                conditions, "Ready", "False", "Unreachable", message, stored.generation
            )
            status["phase"] = "Unreachable"
        phase_changed = status["phase"] != stored.status.get("phase")
        if phase_changed:
            _log_phase(name, stored.status.get("phase"), status["phase"], version or message)
        status["conditions"] = conditions
        status["observedGeneration"] = stored.generation
        lease = WORKING_UNDER.get()
        if lease is not None:
            status["heldBy"] = lease.holder  # the replica that reconciles this cluster
            # ... and the lease it works under: the cluster's placement and delivery too
            status["controller"] = {"replica": lease.holder, "epoch": lease.epoch}
        last = status.get("lastHeartbeatTime")
        if reachable and (status != stored.status or _older_than(last, self.heartbeat_write)):
            status["lastHeartbeatTime"] = now()
        if status != stored.status:
            await asyncio.to_thread(
                self.service.write_status, "Cluster", "", name, partial(_same, status)
            )
        if phase_changed and self.on_phase is not None:
            self.on_phase()

    async def _apis(self, name: str, client: Any, known: dict[str, bool]) -> dict[str, bool]:
        """Which optional APIs the cluster serves (Gateway API, cert-manager), asked at most
        once a minute (CRDs come and go rarely); a failed ask keeps what was known, and never
        makes the cluster unreachable."""
        asked = self._discovered.get(name)
        if asked is not None and time.monotonic() - asked[0] < DISCOVERY_SECONDS:
            return asked[1]
        try:
            async with asyncio.timeout(10):
                apis = served_apis(await api_groups(client))
        except Exception as exc:
            log.info("API discovery failed", cluster=name, error=f"{type(exc).__name__}: {exc}")
            return known
        self._discovered[name] = (time.monotonic(), apis)
        return apis

    async def _refused(self, stored: StoredResource, message: str, reason: str = "Refused") -> None:
        """A stored kubeconfig (or spec) this server will not use (stored before today's
        checks)."""
        status = dict(stored.status)
        status["conditions"] = set_condition(
            status.get("conditions", []), "Ready", "False", reason, message, stored.generation
        )
        status["phase"] = "Refused"
        status["observedGeneration"] = stored.generation
        if status != stored.status:
            await asyncio.to_thread(
                self.service.write_status, "Cluster", "", stored.name, partial(_same, status)
            )

    async def _report_outdated(
        self, cluster: str, outdated: list[tuple[StoredResource, OutdatedSpecError]]
    ) -> None:
        for pool, exc in outdated:
            log.warning("outdated node pool", cluster=cluster, pool=pool.name, error=exc.message)
            status = dict(pool.status)
            status["conditions"] = set_condition(
                status.get("conditions", []),
                "Ready",
                "False",
                "OutdatedSpec",
                exc.message,
                pool.generation,
            )
            if status != pool.status:
                await asyncio.to_thread(
                    self.service.write_status, "NodePool", "", pool.name, partial(_same, status)
                )

    async def _node_pools(
        self,
        cluster: str,
        client: Any,
        pools: list[StoredResource],
        nodes: list[dict[str, Any]],
        granted: dict[str, GrantedPool],
    ) -> None:
        live = [p for p in pools if p.deleting_since is None]
        await self._taint(client, [granted[p.name] for p in live], nodes)
        for pool in live:
            selector = granted[pool.name].spec.nodeSelector
            members = sorted(n["metadata"]["name"] for n in nodes if node_matches(n, selector))
            status = {
                "nodes": len(members),
                "nodeNames": members,
                "observedGeneration": pool.generation,
            }
            if status != pool.status:
                await asyncio.to_thread(
                    self.service.write_status, "NodePool", "", pool.name, partial(_same, status)
                )
        # The taints of deleted pools are gone from every node now: their deletes are done.
        for pool in pools:
            if pool.deleting_since is not None:
                await asyncio.to_thread(
                    self.service.finish_delete, "NodePool", "", pool.name, pool.uid
                )

    async def _taint(
        self, client: Any, pools: list[GrantedPool], nodes: list[dict[str, Any]]
    ) -> None:
        """Give each node its pools' taints and labels (which pools, which tenants), take back
        those Wharf put there and no pool wants any more, and leave every other taint and label;
        write only nodes that differ."""
        for node in nodes:
            taints = pool_taints((p.spec for p in pools), node)
            body = tainted_node(node, taints, pool_labels_of(pools, node))
            if body is not None:
                await apply(client, body)
                self.writes += 1

    async def _leave(self, stored: StoredResource, pools: list[StoredResource]) -> None:
        """A deleted cluster leaves the platform: take back what Wharf put there (its pools'
        taints, the objects labelled as Wharf's), then drop its records. An unreachable
        cluster stays pending until it answers (the failure is retried)."""
        client = self.connections.client(stored.name, self.rules.kubeconfig(stored))
        nodes = [n.to_dict() async for n in client.list(Node)]
        await self._taint(client, [], nodes)
        removed = await remove_labelled(client, LEFT_BEHIND, {MANAGED_BY: "wharf"})
        self.writes += len(removed)
        log.info("cluster left the platform", cluster=stored.name, removed=removed)
        for pool in pools:
            await asyncio.to_thread(self.service.finish_delete, "NodePool", "", pool.name, pool.uid)
        await asyncio.to_thread(self.service.finish_delete, "Cluster", "", stored.name, stored.uid)

    async def stop(self) -> None:
        await self.watches.stop()


def _log_phase(name: str, before: str | None, after: str, detail: str) -> None:
    """One line when a cluster's state changes; the heartbeats in between are not news."""
    if after == "Unreachable":
        log.warning("cluster unreachable", cluster=name, error=detail)
    elif before == "Unreachable":
        log.info("cluster reachable again", cluster=name, version=detail)
    else:
        log.info("cluster ready", cluster=name, version=detail)


def _same(status: dict[str, Any], _stored: StoredResource) -> dict[str, Any]:
    return status


def _older_than(timestamp: str | None, seconds: float) -> bool:
    if not timestamp:
        return True
    then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - then).total_seconds() >= seconds
