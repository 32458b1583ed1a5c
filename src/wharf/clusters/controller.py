"""The cluster controller: heartbeat, version, capacity from node and pod watches, node pools.

Status is written only when it changes; the heartbeat time alone is refreshed at most every
`heartbeat_write` seconds, so an idle platform does not write to its database every beat.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterable
from functools import partial
from typing import Any

import structlog
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import PatchType

from wharf.clusters.model import (
    POOL_TAINTS_ANNOTATION,
    capacity_of,
    node_matches,
    node_taints,
    nodes_of,
    pool_labels,
    same_taints,
    wharf_node_labels,
)
from wharf.clusters.service import ClusterRules
from wharf.core.controller import Controller
from wharf.core.resources import now, set_condition
from wharf.kube.clients import server_version
from wharf.kube.connections import ClusterConnections, fingerprint
from wharf.kube.informer import ClusterWatches, Informer
from wharf.resources.service import ResourceService
from wharf.store.resources import ResourceStore, StoredResource

log = structlog.get_logger("wharf.clusters")


class ClusterController:
    def __init__(
        self,
        service: ResourceService,
        rules: ClusterRules,
        connections: ClusterConnections,
        heartbeat: float = 5.0,
        heartbeat_write: float = 60.0,
    ) -> None:
        self.service = service
        self.rules = rules
        self.connections = connections
        self.heartbeat_write = heartbeat_write
        self.watches = ClusterWatches()
        self.controller = Controller("clusters", self.reconcile, self.list_keys, resync=heartbeat)

    async def list_keys(self) -> Iterable[str]:
        def names() -> list[str]:
            with self.service.db.reader() as session:
                return [c.name for c in ResourceStore(session).query("Cluster")]

        keys = await asyncio.to_thread(names)
        for gone in self.watches.clusters() - set(keys):
            self.controller.queue.add(gone)
        return keys

    def _load(
        self, name: str
    ) -> tuple[StoredResource | None, list[tuple[StoredResource, set[str]]]]:
        """The cluster, and its node pools with the tenants granted each (either side may
        record the grant: the pool's spec.tenants or the tenant's spec.nodePools)."""
        with self.service.db.reader() as session:
            store = ResourceStore(session)
            pools = [p for p in store.query("NodePool") if p.spec.get("cluster") == name]
            tenants = store.query("Tenant")
            granted = [
                (
                    p,
                    set(p.spec.get("tenants", []))
                    | {t.name for t in tenants if p.name in t.spec.get("nodePools", [])},
                )
                for p in pools
            ]
            return store.get("Cluster", "", name), granted

    async def _watch(self, name: str, kubeconfig: dict[str, Any]) -> tuple[Informer, Informer]:
        client = self.connections.client(name, kubeconfig)

        def changed(event: str, _obj: dict[str, Any]) -> None:
            if event != "SYNCED":
                self.controller.queue.add(name)

        def make() -> list[Informer]:
            return [
                Informer(client, Node, on_event=changed, name=f"{name}/nodes"),
                Informer(client, Pod, on_event=changed, name=f"{name}/pods"),
            ]

        nodes, pods = await self.watches.ensure(name, fingerprint(kubeconfig), make)
        return nodes, pods

    async def reconcile(self, name: str) -> None:
        stored, pools = await asyncio.to_thread(self._load, name)
        if stored is None:
            await self.watches.drop(name)
            await self.connections.forget(name)
            return
        kubeconfig = self.rules.kubeconfig(stored)
        nodes, pods = await self._watch(name, kubeconfig)
        client = self.connections.client(name, kubeconfig)
        status = dict(stored.status)
        version = ""
        try:
            async with asyncio.timeout(5):
                version = await server_version(client)
            reachable, message = True, ""
        except TimeoutError:
            reachable, message = False, "TimeoutError: /version did not answer within 5 s"
        except Exception as exc:
            reachable, message = False, f"{type(exc).__name__}: {exc}"[:300]
        conditions = status.get("conditions", [])
        if reachable:
            status["kubernetesVersion"] = version
            if nodes.synced.is_set() and pods.synced.is_set():
                status["capacity"] = capacity_of(nodes.items.values(), pods.items.values())
                status["nodes"] = nodes_of(nodes.items.values())
                await self._node_pools(name, client, pools, list(nodes.items.values()))
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
        if status["phase"] != stored.status.get("phase"):
            _log_phase(name, stored.status.get("phase"), status["phase"], version or message)
        status["conditions"] = conditions
        status["observedGeneration"] = stored.generation
        last = status.get("lastHeartbeatTime")
        if reachable and (status != stored.status or _older_than(last, self.heartbeat_write)):
            status["lastHeartbeatTime"] = now()
        if status != stored.status:
            await asyncio.to_thread(
                self.service.write_status, "Cluster", "", name, partial(_same, status)
            )

    async def _node_pools(
        self,
        cluster: str,
        client: Any,
        pools: list[tuple[StoredResource, set[str]]],
        nodes: list[dict[str, Any]],
    ) -> None:
        """Label and taint each pool's nodes from the watch cache; write only what differs."""
        wanted: dict[str, tuple[dict[str, str], list[dict[str, Any]]]] = {}
        for pool, tenants in pools:
            selector = pool.spec.get("nodeSelector", {})
            members = sorted(n["metadata"]["name"] for n in nodes if node_matches(n, selector))
            for node in members:
                wanted.setdefault(node, (pool_labels(pool.name, tenants), pool.spec["taints"]))
            status = {
                "nodes": len(members),
                "nodeNames": members,
                "observedGeneration": pool.generation,
            }
            if status != pool.status:
                await asyncio.to_thread(
                    self.service.write_status, "NodePool", "", pool.name, partial(_same, status)
                )
        for node in nodes:
            labels, taints = wanted.get(node["metadata"]["name"], ({}, []))
            try:
                await self._mark_node(client, node, labels, taints)
            except ApiError as exc:
                if exc.status.code != 409:  # changed meanwhile: the watch brings it back
                    raise

    async def _mark_node(
        self, client: Any, node: dict[str, Any], labels: dict[str, str], taints: list[Any]
    ) -> None:
        meta = node["metadata"]
        if wharf_node_labels(node) != labels:
            applied = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": meta["name"], "labels": labels},
            }
            await client.apply(from_dict(applied), field_manager="wharf", force=True)
        before = [
            tuple(k)
            for k in json.loads((meta.get("annotations") or {}).get(POOL_TAINTS_ANNOTATION, "[]"))
        ]
        new = node_taints(node, before, taints)
        if same_taints(new, node.get("spec", {}).get("taints") or []):
            return
        # Taints are one atomic list in the Node API: patch the whole list, guarded by the
        # resourceVersion we computed it from, and remember which entries are ours.
        patch = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "annotations": {
                    POOL_TAINTS_ANNOTATION: json.dumps(
                        sorted([t["key"], t.get("effect", "NoSchedule")] for t in taints)
                    )
                },
            },
            "spec": {"taints": new or None},
        }
        await client.patch(
            Node, meta["name"], patch, patch_type=PatchType.MERGE, field_manager="wharf"
        )

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
