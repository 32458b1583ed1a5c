"""The cluster controller: heartbeat, version, capacity from node and pod watches, node pools.

Status is written only when it changes; the heartbeat time alone is refreshed at most every
`heartbeat_write` seconds, so an idle platform does not write to its database every beat.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable
from functools import partial
from typing import Any

import structlog
from lightkube.resources.core_v1 import Node, Pod

from wharf.clusters.model import capacity_of, node_matches, nodes_of
from wharf.clusters.service import ClusterRules
from wharf.core.controller import Controller
from wharf.core.resources import now, set_condition
from wharf.kube.apply import ensure
from wharf.kube.clients import server_version
from wharf.kube.connections import ClusterConnections, fingerprint
from wharf.kube.informer import ClusterWatches, Informer
from wharf.kube.kubeconfig import KubeconfigRefused
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

    def _load(self, name: str) -> tuple[StoredResource | None, list[StoredResource]]:
        with self.service.db.reader() as session:
            store = ResourceStore(session)
            pools = [p for p in store.query("NodePool") if p.spec.get("cluster") == name]
            return store.get("Cluster", "", name), pools

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
        try:
            nodes, pods = await self._watch(name, kubeconfig)
        except KubeconfigRefused as exc:
            await self._refused(stored, str(exc))
            return
        client = self.connections.client(name, kubeconfig)
        status = dict(stored.status)
        try:
            async with asyncio.timeout(5):
                version = await server_version(client)
            reachable, message = True, ""
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
        status["conditions"] = conditions
        status["observedGeneration"] = stored.generation
        last = status.get("lastHeartbeatTime")
        if reachable and (status != stored.status or _older_than(last, self.heartbeat_write)):
            status["lastHeartbeatTime"] = now()
        if status != stored.status:
            await asyncio.to_thread(
                self.service.write_status, "Cluster", "", name, partial(_same, status)
            )

    async def _refused(self, stored: StoredResource, message: str) -> None:
        """A stored kubeconfig this server will not use (stored before today's checks)."""
        status = dict(stored.status)
        status["conditions"] = set_condition(
            status.get("conditions", []), "Ready", "False", "Refused", message, stored.generation
        )
        status["phase"] = "Refused"
        status["observedGeneration"] = stored.generation
        if status != stored.status:
            await asyncio.to_thread(
                self.service.write_status, "Cluster", "", stored.name, partial(_same, status)
            )

    async def _node_pools(
        self, cluster: str, client: Any, pools: list[StoredResource], nodes: list[dict[str, Any]]
    ) -> None:
        for pool in pools:
            selector = pool.spec.get("nodeSelector", {})
            members = sorted(n["metadata"]["name"] for n in nodes if node_matches(n, selector))
            taints = pool.spec.get("taints", [])
            if taints:
                for node in members:
                    desired = {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {"name": node},
                        "spec": {"taints": taints},
                    }
                    await ensure(client, desired)
            status = {
                "nodes": len(members),
                "nodeNames": members,
                "observedGeneration": pool.generation,
            }
            if status != pool.status:
                await asyncio.to_thread(
                    self.service.write_status, "NodePool", "", pool.name, partial(_same, status)
                )

    async def stop(self) -> None:
        await self.watches.stop()


def _same(status: dict[str, Any], _stored: StoredResource) -> dict[str, Any]:
    return status


def _older_than(timestamp: str | None, seconds: float) -> bool:
    if not timestamp:
        return True
    then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - then).total_seconds() >= seconds
