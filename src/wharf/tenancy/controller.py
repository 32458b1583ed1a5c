"""The placement controller: each project environment's namespaces in its clusters.

For every (environment, cluster) pair it keeps one namespace, labelled with tenant, project and
environment, holding the project's ResourceQuota share, a LimitRange with container defaults,
a NetworkPolicy that admits only the tenant's own namespaces, and a ServiceAccount and
RoleBinding per member. Objects are compared before they are applied, so a reconcile that
finds everything in place writes nothing; watches on what Wharf owns bring an out-of-band edit
back within seconds. Namespaces of deleted projects or removed environments are pruned by their
labels, so nothing Wharf does not own is ever touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
from lightkube import AsyncClient
from lightkube.resources.core_v1 import LimitRange, Namespace, ResourceQuota, ServiceAccount
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.rbac_authorization_v1 import RoleBinding

from wharf.clusters.service import ClusterRules
from wharf.core.controller import Controller
from wharf.core.quantity import format_resources, parse_quantity
from wharf.core.resources import set_condition
from wharf.identity.model import CLUSTER_ROLE_FOR
from wharf.kube.apply import ensure, prune, remove_labelled
from wharf.kube.clients import is_unreachable
from wharf.kube.connections import ClusterConnections, fingerprint
from wharf.kube.informer import ClusterWatches, Informer
from wharf.resources.service import ResourceService
from wharf.store.resources import ResourceStore, StoredResource
from wharf.tenancy.model import (
    ENV_LABEL,
    MANAGED_BY,
    PROJECT_LABEL,
    TENANT_LABEL,
    ProjectSpec,
    amounts,
    member_account,
    namespace_name,
    split_project_quota,
    total,
)

log = structlog.get_logger("wharf.tenancy")
Key = tuple[str, str]  # (tenant, project); (tenant, "") recounts the tenant's totals
OWNED = {MANAGED_BY: "wharf"}
# What a deleted project or tenant leaves to remove, found by its labels (a namespace takes
# everything inside it along).
REMOVED_WITH_OWNER = (Namespace,)


@dataclass(frozen=True)
class Desired:
    """What one (environment, cluster) namespace should hold."""

    env: str
    namespace: str
    objects: list[dict[str, Any]]
    members: set[str]


def _labels(tenant: str, project: str, env: str) -> dict[str, str]:
    return {MANAGED_BY: "wharf", TENANT_LABEL: tenant, PROJECT_LABEL: project, ENV_LABEL: env}


def desired_namespace(
    tenant: StoredResource, project: StoredResource, env: str, quota: dict[str, Any]
) -> Desired:
    ns = namespace_name(tenant.name, project.name, env)
    labels = _labels(tenant.name, project.name, env)
    meta = {"namespace": ns, "labels": labels}
    defaults = ProjectSpec.model_validate(project.spec).containerDefaults
    roles = {m["user"]: m["role"] for m in project.spec.get("members", [])}
    for admin in tenant.spec.get("admins", []):
        roles[admin] = "tenant-admin"
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "wharf-quota", **meta},
            "spec": {"hard": format_resources(quota)},
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "wharf-container-defaults", **meta},
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "default": defaults.default,
                        "defaultRequest": defaults.defaultRequest,
                    }
                ]
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "wharf-tenant-isolation", **meta},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"namespaceSelector": {"matchLabels": {TENANT_LABEL: tenant.name}}}]}
                ],
            },
        },
    ]
    for user, role in sorted(roles.items()):
        account = member_account(user)
        objects.append(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, **meta}}
        )
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"wharf-{user}-{role}", **meta},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": CLUSTER_ROLE_FOR[role],
                },
                "subjects": [
                    {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user},
                    {"kind": "ServiceAccount", "name": account, "namespace": ns},
                ],
            }
        )
    return Desired(env, ns, objects, set(roles))


class PlacementController:
    def __init__(
        self,
        service: ResourceService,
        clusters: ClusterRules,
        connections: ClusterConnections,
        resync: float = 30.0,
    ) -> None:
        self.service = service
        self.clusters = clusters
        self.connections = connections
        self.watches = ClusterWatches()
        self.controller = Controller("placement", self.reconcile, self.list_keys, resync=resync)
        self.writes = 0  # API writes made, for metrics and tests

    # -- what to reconcile ------------------------------------------------------------------
    def _ready_clusters(self) -> list[StoredResource]:
        with self.service.db.reader() as session:
            return [
                c
                for c in ResourceStore(session).query("Cluster")
                if c.status.get("phase") == "Ready"
            ]

    async def list_keys(self) -> Iterable[Key]:
        def projects() -> list[Key]:
            with self.service.db.reader() as session:
                store = ResourceStore(session)
                # Deletes acknowledged but not finished (a restart resumes them).
                tenants = [(t.name, "") for t in store.query("Tenant", deleting=True)]
                rows = store.query("Project") + store.query("Project", deleting=True)
                return [(p.tenant, p.name) for p in rows] + tenants

        keys = set(await asyncio.to_thread(projects))
        # Namespaces whose project is gone are found in the clusters (level-triggered cleanup).
        for cluster in await asyncio.to_thread(self._ready_clusters):
            informers = await self._watch(cluster)
            for obj in informers[0].items.values():
                labels = obj.get("metadata", {}).get("labels", {})
                keys.add((labels.get(TENANT_LABEL, ""), labels.get(PROJECT_LABEL, "")))
        return sorted(k for k in keys if k[0])

    async def _watch(self, cluster: StoredResource) -> list[Informer]:
        kubeconfig = self.clusters.kubeconfig(cluster)
        client = self.connections.client(cluster.name, kubeconfig)

        def changed(event: str, obj: dict[str, Any]) -> None:
            labels = obj.get("metadata", {}).get("labels") or {}
            if event in ("MODIFIED", "DELETED") and TENANT_LABEL in labels:
                self.controller.queue.add((labels[TENANT_LABEL], labels.get(PROJECT_LABEL, "")))

        def make() -> list[Informer]:
            return [
                Informer(
                    client,
                    kind,
                    labels=OWNED,
                    on_event=changed,
                    name=f"{cluster.name}/{kind.__name__}",
                )
                for kind in (
                    Namespace,
                    ResourceQuota,
                    LimitRange,
                    NetworkPolicy,
                    RoleBinding,
                    ServiceAccount,
                )
            ]

        return await self.watches.ensure(cluster.name, fingerprint(kubeconfig), make)

    # -- reconcile --------------------------------------------------------------------------
    def _load(
        self, key: Key
    ) -> tuple[StoredResource | None, StoredResource | None, dict[str, StoredResource]]:
        with self.service.db.reader() as session:
            store = ResourceStore(session)
            project = store.get("Project", key[0], key[1], with_deleting=True)
            tenant = store.get("Tenant", "", key[0])
            clusters = {c.name: c for c in store.query("Cluster")}
            return project, tenant, clusters

    async def reconcile(self, key: Key) -> None:
        if not key[1]:
            await self._reconcile_tenant(key[0])
            return
        project, tenant, clusters = await asyncio.to_thread(self._load, key)
        if project is None or project.deleting_since is not None:
            # Deleted (the record says so) or gone (namespaces found without an owner): remove
            # its namespaces everywhere, and only then drop the record.
            labels = {**OWNED, TENANT_LABEL: key[0], PROJECT_LABEL: key[1]}
            await self._remove_everywhere(clusters.values(), labels)
            if project is not None:
                await asyncio.to_thread(
                    self.service.finish_delete, "Project", key[0], key[1], project.uid
                )
            self.controller.queue.add((key[0], ""))
            return
        wanted: dict[str, list[Desired]] = {}
        if project is not None and tenant is not None:
            spec = ProjectSpec.model_validate(project.spec)
            shares = split_project_quota(
                amounts(project.spec.get("quota", {}), "spec.quota"), spec.environments
            )
            for (env, cluster), quota in shares.items():
                wanted.setdefault(cluster, []).append(
                    desired_namespace(tenant, project, env, quota)
                )
        # Every cluster that may hold this project's namespaces: wanted now, or known before.
        placed_before = {
            p["cluster"] for p in (project.status if project else {}).get("placements", [])
        }
        targets = sorted(set(wanted) | placed_before | set(clusters))
        results = await asyncio.gather(
            *(self._reconcile_cluster(key, clusters.get(c), wanted.get(c, [])) for c in targets)
        )
        placements = [p for cluster_placements in results for p in cluster_placements]
        changed = project is None
        if project is not None:
            written = await asyncio.to_thread(
                self.service.write_status,
                "Project",
                key[0],
                key[1],
                partial(_project_status, placements, project.generation),
            )
            changed = written is None or written.resource_version != project.resource_version
        if tenant is not None and changed:
            # The tenant's totals follow its projects: recount when one of them moved, once
            # for many (the queue folds repeated keys into one).
            self.controller.queue.add((key[0], ""))

    async def _reconcile_cluster(
        self, key: Key, cluster: StoredResource | None, desired: list[Desired]
    ) -> list[dict[str, Any]]:
        def placement(d: Desired, state: str, message: str = "", **extra: Any) -> dict[str, Any]:
            return {
                "environment": d.env,
                "cluster": cluster_name,
                "namespace": d.namespace,
                "state": state,
                "message": message,
                **extra,
            }

        cluster_name = cluster.name if cluster else "?"
        if cluster is None:
            return [placement(d, "Unreachable", "cluster is not registered") for d in desired]
        if cluster.status.get("phase") != "Ready":
            why = f"cluster {cluster.name} is {cluster.status.get('phase', 'not yet observed')}"
            return [placement(d, "Unreachable", why) for d in desired]
        try:
            client = self.connections.client(cluster.name, self.clusters.kubeconfig(cluster))
            await self._watch(cluster)
            out = []
            for d in desired:
                quota = await self._apply_namespace(client, d)
                status = quota.get("status", {})
                out.append(
                    placement(d, "Ready", hard=status.get("hard", {}), used=status.get("used", {}))
                )
            keep = {d.namespace for d in desired}
            removed = await prune(
                client,
                Namespace,
                None,
                {**OWNED, TENANT_LABEL: key[0], PROJECT_LABEL: key[1]},
                keep,
            )
            self.writes += len(removed)
            if removed:
                log.info("pruned namespaces", cluster=cluster.name, namespaces=removed)
            return out
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("placement failed", cluster=cluster.name, project=key, error=message)
            state = "Unreachable" if is_unreachable(exc) else "Error"
            return [placement(d, state, message) for d in desired]

    async def _apply_namespace(self, client: AsyncClient, d: Desired) -> dict[str, Any]:
        quota: dict[str, Any] = {}
        for obj in d.objects:
            wrote, current = await ensure(client, obj)
            self.writes += int(wrote)
            if obj["kind"] == "ResourceQuota":
                quota = current
        for resource in (RoleBinding, ServiceAccount):
            keep = {o["metadata"]["name"] for o in d.objects if o["kind"] == resource.__name__}
            removed = await prune(client, resource, d.namespace, OWNED, keep)
            self.writes += len(removed)
        return quota

    async def _remove_everywhere(
        self, clusters: Iterable[StoredResource], labels: dict[str, Any]
    ) -> None:
        """Remove what carries `labels` in every Ready cluster; a failure propagates (and is
        retried). A cluster that is not Ready is passed over: the sweep in `list_keys` finds
        what is left there when it is back."""

        async def remove(cluster: StoredResource) -> None:
            client = self.connections.client(cluster.name, self.clusters.kubeconfig(cluster))
            removed = await remove_labelled(client, REMOVED_WITH_OWNER, labels)
            self.writes += len(removed)
            if removed:
                log.info("removed", cluster=cluster.name, objects=removed)

        ready = [c for c in clusters if c.status.get("phase") == "Ready"]
        await asyncio.gather(*(remove(c) for c in ready))

    def _load_tenant(self, name: str) -> tuple[StoredResource | None, int, list[StoredResource]]:
        with self.service.db.reader() as session:
            store = ResourceStore(session)
            tenant = store.get("Tenant", "", name, with_deleting=True)
            scope = [(name, None)]
            projects = store.count("Project", scopes=scope) + len(
                store.query("Project", scopes=scope, deleting=True)
            )
            return tenant, projects, store.query("Cluster")

    async def _reconcile_tenant(self, name: str) -> None:
        tenant, projects, clusters = await asyncio.to_thread(self._load_tenant, name)
        if tenant is None or tenant.deleting_since is None:
            await asyncio.to_thread(self._tenant_status, name)
            return
        if projects:
            return  # each project's own delete queues its tenant again when it is done
        await self._remove_everywhere(clusters, {**OWNED, TENANT_LABEL: name})
        await asyncio.to_thread(self.service.finish_delete, "Tenant", "", name, tenant.uid)

    def _tenant_status(self, tenant: str) -> None:
        with self.service.db.session() as session:
            store = ResourceStore(session)
            stored = store.get("Tenant", "", tenant)
            if stored is None:
                return
            projects = store.query("Project", scopes=[(tenant, None)])
            allocated = total(amounts(p.spec.get("quota", {}), "spec.quota") for p in projects)
            used = total(
                {k: parse_quantity(v) for k, v in (p.status.get("used") or {}).items()}
                for p in projects
            )
            status = {
                **stored.status,
                "allocated": format_resources(allocated),
                "used": format_resources(used),
                "projects": len(projects),
            }
            store.write_status(stored, status)

    async def stop(self) -> None:
        await self.watches.stop()


def _project_status(
    placements: list[dict[str, Any]], generation: int, stored: StoredResource
) -> dict[str, Any]:
    """The status for what this reconcile saw: `generation` is the spec it started from (a
    newer spec written meanwhile gets its own reconcile, and must not be reported as seen)."""
    used = total({k: parse_quantity(v) for k, v in p.get("used", {}).items()} for p in placements)
    bad = [p for p in placements if p["state"] != "Ready"]
    conditions = stored.status.get("conditions", [])
    if bad:
        message = "; ".join(f"{p['cluster']}/{p['environment']}: {p['message']}" for p in bad)
        reason = (
            "ClusterUnreachable" if any(p["state"] == "Unreachable" for p in bad) else "ApplyFailed"
        )
        conditions = set_condition(conditions, "Ready", "False", reason, message, generation)
    else:
        conditions = set_condition(
            conditions,
            "Ready",
            "True",
            "Placed",
            f"{len(placements)} namespace(s) in place",
            generation,
        )
    return {
        "phase": "Degraded" if bad else "Ready",
        "observedGeneration": generation,
        "placements": sorted(placements, key=lambda p: (p["environment"], p["cluster"])),
        "used": format_resources(used),
        "conditions": conditions,
    }
