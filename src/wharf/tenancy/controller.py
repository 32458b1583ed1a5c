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
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from types import MappingProxyType
from typing import Any

import structlog
from lightkube import AsyncClient, operators
from lightkube.resources.core_v1 import (
    LimitRange,
    Namespace,
    ResourceQuota,
    Secret,
    ServiceAccount,
)
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.rbac_authorization_v1 import RoleBinding
from sqlalchemy.orm import Session

from wharf.clusters.model import (
    BASE_TOLERATIONS,
    NODE_POOL,
    NodePoolSpec,
    pool_place,
    pool_tenant_label,
)
from wharf.clusters.service import ClusterRules
from wharf.core.controller import STATUS_REFRESH_SECONDS, Controller
from wharf.core.errors import OutdatedSpecError
from wharf.core.leases import PLATFORM, Lease, LeaseBook, LeaseLost, cluster_lease, fenced_by
from wharf.core.quantity import format_resources, parse_quantity
from wharf.core.resources import set_condition
from wharf.identity import service as identity
from wharf.kube.apply import (
    OwnedElsewhereError,
    RemovalPending,
    ensure,
    ensure_cached,
    labelled,
    prune_selected,
    remove_labelled,
)
from wharf.kube.clients import is_unreachable
from wharf.kube.connections import ClusterConnections, fingerprint
from wharf.kube.informer import ClusterWatches, Informer, synced
from wharf.resources.service import ResourceService
from wharf.store.claims import Holder, held_by
from wharf.store.resources import ResourceStore, StoredResource, spec_marker
from wharf.tenancy.guard import (
    CLUSTER_ROLE_FOR,
    STORAGE_CLASSES_ANNOTATION,
    SYSTEM_NAMESPACE,
    cluster_baseline,
    member_account,
)
from wharf.tenancy.model import (
    APP_LABEL,
    DEFAULT_TOLERATIONS_ANNOTATION,
    ENV_LABEL,
    MANAGED_BY,
    NAMESPACE_LABEL,
    NAMESPACE_QUOTA,
    NODE_SELECTOR_ANNOTATION,
    PROJECT,
    PROJECT_LABEL,
    TENANT,
    TENANT_LABEL,
    TOLERATIONS_WHITELIST_ANNOTATION,
    NamespaceAdditions,
    amounts,
    isolation_policy,
    joined,
    namespace_hard,
    namespace_name,
    owner_labels,
    pod_security_labels,
    split_project_quota,
    total,
)
from wharf.tenancy.service import tenant_usage

log = structlog.get_logger("wharf.tenancy")
Key = tuple[str, str]  # (tenant, project); (tenant, "") recounts the tenant's totals
OWNED = {MANAGED_BY: "wharf"}
BASELINE_EVERY = 60.0
SWEEP_EVERY = 10  # resyncs between two that look at settled projects too
# What a deleted project or tenant leaves to remove, found by its labels (a namespace takes
# everything inside it along; the members' identities live in wharf-system).
REMOVED_WITH_OWNER = (Namespace, ServiceAccount)
# Objects other capabilities add to every project namespace (the registry's pull secret)
# carry this label, so that one no longer wanted is pruned.
EXTRA_LABEL = "wharf.io/extra"
# (session, tenant, project, environment, cluster) -> what another capability adds to that
# namespace, read in the reconcile's transaction (node ports, traffic rules, pull secrets).
AdditionsFor = Callable[[Session, str, str, str, str], NamespaceAdditions]


@dataclass(frozen=True)
class Desired:
    """What one (environment, cluster) namespace should hold."""

    env: str
    namespace: str
    objects: list[dict[str, Any]]
    members: set[str]

    @property
    def accounts(self) -> set[str]:
        return {o["metadata"]["name"] for o in self.objects if o["kind"] == "ServiceAccount"}


def _scheduling(tenant: str, pools: list[NodePoolSpec]) -> dict[str, str]:
    """Namespace annotations that keep a tenant's pods on its node pools (enforced by the
    PodNodeSelector and PodTolerationRestriction admission plugins)."""
    if not pools:
        # A whitelist that is not empty admits no pool's taints (an empty one admits all).
        return {TOLERATIONS_WHITELIST_ANNOTATION: json.dumps(BASE_TOLERATIONS)}
    tolerations = [
        {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect}
        for pool in pools
        for t in pool.taints
    ]
    return {
        NODE_SELECTOR_ANNOTATION: f"{pool_tenant_label(tenant)}=true",
        DEFAULT_TOLERATIONS_ANNOTATION: json.dumps(tolerations),
        TOLERATIONS_WHITELIST_ANNOTATION: json.dumps([*BASE_TOLERATIONS, *tolerations]),
    }


def desired_namespace(
    tenant: StoredResource,
    project: StoredResource,
    env: str,
    quota: Mapping[str, Fraction],
    pools: list[NodePoolSpec] = (),  # type: ignore[assignment]
    disabled: frozenset[str] = frozenset(),
    generations: Mapping[str, int] = MappingProxyType({}),
    additions: NamespaceAdditions | None = None,
) -> Desired:
    ns = namespace_name(tenant.name, project.name, env)
    labels = owner_labels(tenant.name, project.name, env)
    meta = {"namespace": ns, "labels": labels}
    spec, tenant_spec = PROJECT.typed(project), TENANT.typed(tenant)
    defaults = spec.containerDefaults
    roles: dict[str, str] = {m.user: m.role for m in spec.members}
    for admin in tenant_spec.admins:
        roles[admin] = "tenant-admin"
    # A disabled user's ServiceAccounts are pruned, which ends every token minted for them.
    roles = {user: role for user, role in roles.items() if user not in disabled}
    annotations = _scheduling(tenant.name, list(pools))
    # Always set: a tenant granted no storage class may claim no volume.
    annotations[STORAGE_CLASSES_ANNOTATION] = ",".join(tenant_spec.storageClasses)
    hard = namespace_hard(quota, amounts(tenant_spec.quota, "spec.quota"))
    if additions is not None:
        annotations.update(additions.annotations)
        hard.update(additions.hard)
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": {**labels, **pod_security_labels(spec.pod_security(env))},
                "annotations": annotations,
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": NAMESPACE_QUOTA, **meta},
            "spec": {"hard": format_resources(hard)},
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
    ]
    if additions is None or additions.isolation:
        objects.append(isolation_policy(tenant.name, meta))
    if additions is not None:
        objects += additions.objects
    for user, role in sorted(roles.items()):
        # The identity lives in wharf-system, out of reach of every tenant role: nobody in the
        # namespace can mint its token, impersonate it or run a pod as it.
        account = member_account(user, ns, generations.get(user, 0))
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {
                    "name": account,
                    "namespace": SYSTEM_NAMESPACE,
                    "labels": {**labels, NAMESPACE_LABEL: ns},
                },
            }
        )
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"wharf.{role}.{user}", **meta},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": CLUSTER_ROLE_FOR[role],
                },
                # Only identities Wharf issues: a cluster user named like a Wharf user gets
                # nothing from this binding.
                "subjects": [
                    {"kind": "ServiceAccount", "name": account, "namespace": SYSTEM_NAMESPACE}
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
        additions: Sequence[AdditionsFor] = (),
        share: LeaseBook | None = None,
    ) -> None:
        self.service = service
        # Which clusters' namespaces this replica keeps (their leases), and whether it does the
        # platform-wide part (deletes finished, tenants' totals). One process: all of it.
        self.share = share or LeaseBook("local", sole=True)
        self.additions = additions
        self.clusters = clusters
        self.connections = connections
        self.watches = ClusterWatches()
        # A project's reconcile waits on its clusters' answers far more than on this process's
        # CPU (distant clusters answer in tens of milliseconds): more of them at once, as
        # delivery does.
        self.controller = Controller(
            "placement",
            self.reconcile,
            self.list_keys,
            resync=resync,
            resync_keys=self.resync_keys,
            workers=8,
        )
        # Projects whose last reconcile here left every namespace Ready: events (the API's
        # writes, the other replicas' through NOTIFY, the watch caches', a cluster's phase)
        # wake them, so the resync looks at them only every SWEEP_EVERY-th time.
        self.settled: set[Key] = set()
        self._resyncs = 0
        self._last_marker: tuple[int, ...] = ()
        self.writes = 0  # API writes made, for metrics and tests
        self.per_cluster: Counter[str] = Counter()  # reconciles by cluster, for /metrics
        self._baseline_checked: dict[tuple[str, int], float] = {}

    # -- what to reconcile ------------------------------------------------------------------
    def _ready_clusters(self) -> list[StoredResource]:
        """The Ready clusters whose work this replica holds."""
        with self.service.db.reader() as session:
            return [
                c
                for c in ResourceStore(session).query("Cluster")
                if c.status.get("phase") == "Ready" and self._lease_of(c.name) is not None
            ]

    def _lease_of(self, cluster: str, registered: bool = True) -> Lease | None:
        """The lease this replica works on `cluster` under, if it holds it; a cluster not
        registered (nothing to write there, only a status to say so) is platform-wide."""
        return self.share.lease(cluster_lease(cluster) if registered else PLATFORM)

    async def resync_keys(self) -> Iterable[Key]:
        """The periodic resync: every key when a write may have gone unannounced (the
        database's objects or users moved since the last resync: a replica killed between its
        commit and its NOTIFY) and each SWEEP_EVERY-th time; otherwise only those not settled
        (placed with a conflict, on a cluster not Ready, failed, not yet looked at). At a
        thousand projects, reading each one's inputs every 30 s kept a tenth of a core busy on
        an idle server. The clusters' baselines, which no watch covers, are checked here too."""
        self._resyncs += 1
        marker = await asyncio.to_thread(self._marker)
        moved, self._last_marker = marker != self._last_marker, marker
        if not self._holds_any():
            return []
        ready = await asyncio.to_thread(self._ready_clusters)
        keys = await self._keys(ready)
        await self._check_baselines(ready)
        return self.to_resync(keys, sweep=moved or self._resyncs % SWEEP_EVERY == 0)

    def _marker(self) -> tuple[int, ...]:
        with self.service.db.reader() as session:
            return spec_marker(session) + identity.users_marker(session)

    async def _check_baselines(self, ready: list[StoredResource]) -> None:
        """Wharf's roles, admission policy and system namespace in each cluster this replica
        holds (at most once a minute each): a project reconcile checks them too, but settled
        projects are not reconciled at every resync."""
        for cluster in ready:
            try:
                client = self._client(cluster)
                await self._baseline(cluster.name, client)
            except Exception as exc:  # the cluster's next reconcile reports it
                log.warning("baseline check failed", cluster=cluster.name, error=str(exc))

    def to_resync(self, keys: Iterable[Key], sweep: bool) -> list[Key]:
        return list(keys) if sweep else [k for k in keys if k not in self.settled]

    def _holds_any(self) -> bool:
        """A replica holding nothing has nothing to look at."""
        return self.share.sole or bool(self.share.names())

    def _client(self, cluster: StoredResource) -> AsyncClient:
        return self.connections.client(cluster.name, self.clusters.kubeconfig(cluster))

    async def list_keys(self) -> Iterable[Key]:
        if not self._holds_any():
            return []
        return await self._keys(await asyncio.to_thread(self._ready_clusters))

    async def _keys(self, ready: list[StoredResource]) -> list[Key]:
        """Every project (and tenant being deleted), and the owners of namespaces found in
        the `ready` clusters."""

        def projects() -> list[Key]:
            with self.service.db.reader() as session:
                store = ResourceStore(session)
                # Deletes acknowledged but not finished (a restart resumes them).
                tenants = [(t.name, "") for t in store.query("Tenant", deleting=True)]
                rows = store.query("Project") + store.query("Project", deleting=True)
                return [(p.tenant, p.name) for p in rows] + tenants

        keys = set(await asyncio.to_thread(projects))
        # Namespaces whose project is gone are found in the clusters (level-triggered cleanup).
        for cluster in ready:
            informers = await self._watch(cluster)
            for obj in informers[0].items.values():
                labels = obj.get("metadata", {}).get("labels", {})
                keys.add((labels.get(TENANT_LABEL, ""), labels.get(PROJECT_LABEL, "")))
        return sorted(k for k in keys if k[0])

    async def _watch(self, cluster: StoredResource) -> list[Informer]:
        kubeconfig = self.clusters.kubeconfig(cluster)
        client = self.connections.client(cluster.name, kubeconfig)

        def changed(event: str, obj: dict[str, Any]) -> None:
            # Reconciles read and prune from these caches: an object that appears (made by
            # someone else with Wharf's labels, or by a write the cache has not seen) is
            # looked at as soon as it does.
            if event in ("ADDED", "MODIFIED", "DELETED"):
                key = _owner_key(obj)
                if key is not None:
                    self.controller.queue.add(key)

        def counted(event: str, obj: dict[str, Any]) -> None:
            key = _owner_key(obj)
            if key is not None:
                self.controller.queue.add_after(key, STATUS_REFRESH_SECONDS)

        def make() -> list[Informer]:
            kinds: list[tuple[Any, dict[str, Any]]] = [
                (kind, OWNED)
                for kind in (
                    Namespace,
                    ResourceQuota,
                    LimitRange,
                    NetworkPolicy,
                    RoleBinding,
                    ServiceAccount,
                )
            ]
            # Only the secrets other capabilities add to namespaces (pull secrets), not
            # applications' own.
            kinds.append((Secret, {**OWNED, EXTRA_LABEL: operators.exists()}))
            return [
                Informer(
                    client,
                    kind,
                    labels=labels,
                    on_event=changed,
                    # A quota's use, counted by the cluster, is shown in the project's status
                    # and changes nothing Wharf wrote: it waits behind the changes (1,000
                    # projects placed had their quotas' counts queue a round of them ahead
                    # of the next edit), and a burst of counts is looked at once.
                    on_status=counted,
                    name=f"{cluster.name}/{kind.__name__}",
                    watch_seconds=self.connections.timeouts.watch,
                )
                for kind, labels in kinds
            ]

        return await self.watches.ensure(cluster.name, fingerprint(kubeconfig), make)

    # -- reconcile --------------------------------------------------------------------------
    def _load(
        self, key: Key
    ) -> tuple[
        StoredResource | None,
        StoredResource | None,
        dict[str, StoredResource],
        dict[str, list[NodePoolSpec]],
        set[str],
        frozenset[str],
        dict[str, int],
        dict[tuple[str, str], NamespaceAdditions],
    ]:
        """Project, tenant, clusters, the tenant's node pools by cluster, the namespace names
        the project holds (it places no other), the users who are disabled, the generations of
        those disabled before, and what other capabilities add to each (environment, cluster)
        namespace."""
        with self.service.db.reader() as session:
            store = ResourceStore(session)
            held = held_by(session, "namespace", Holder("Project", key[0], key[1]))
            project = store.get("Project", key[0], key[1], with_deleting=True)
            tenant = store.get("Tenant", "", key[0])
            clusters = {c.name: c for c in store.query("Cluster")}
            tenant_pools = TENANT.typed(tenant).nodePools if tenant is not None else []
            pools: dict[str, list[NodePoolSpec]] = {}
            for pool in store.query("NodePool"):
                if pool.name not in tenant_pools and not pool_place(pool).serves(key[0]):
                    # Another tenant's pool is not read: a fault in its row (a spec today's
                    # rules refuse) stops that tenant's placement, not everyone's.
                    continue
                spec = NODE_POOL.typed(pool)
                pools.setdefault(spec.cluster, []).append(spec)
            disabled = identity.disabled_users(session)
            generations = identity.generations(session)
            additions: dict[tuple[str, str], NamespaceAdditions] = {}
            if project is not None:
                for env in PROJECT.typed(project).environments:
                    for cluster in env.clusters:
                        additions[(env.name, cluster)] = joined(
                            a(session, key[0], key[1], env.name, cluster) for a in self.additions
                        )
            return project, tenant, clusters, pools, held, disabled, generations, additions

    async def reconcile(self, key: Key) -> None:
        if not key[1]:
            await self._reconcile_tenant(key[0])
            return
        try:
            await self._reconcile_project(key)
        except OutdatedSpecError as exc:
            # A stored spec today's rules refuse: say so on the project and touch nothing in
            # the clusters (retrying cannot help; a valid apply queues it again).
            log.warning("outdated spec", project=key, error=exc.message)
            platform = self.share.lease(PLATFORM)
            if platform is None:
                return  # said once, by the replica doing the platform-wide part
            with fenced_by(platform):
                await asyncio.to_thread(
                    self.service.write_status, "Project", key[0], key[1], partial(_outdated, exc)
                )

    async def _reconcile_project(self, key: Key) -> None:
        self.settled.discard(key)  # until this reconcile finds it placed
        loaded = await asyncio.to_thread(self._load, key)
        project, tenant, clusters, pools, held, disabled, generations, additions = loaded
        if project is None or project.deleting_since is not None:
            # Deleted (the record says so) or gone (namespaces found without an owner): remove
            # its namespaces everywhere, and only then drop the record.
            labels = {**OWNED, TENANT_LABEL: key[0], PROJECT_LABEL: key[1]}
            await self._remove_everywhere(clusters.values(), labels)
            platform = self.share.lease(PLATFORM)
            if project is not None and platform is not None:
                await self._left_anywhere(clusters.values(), labels)
                with fenced_by(platform):
                    await asyncio.to_thread(
                        self.service.finish_delete, "Project", key[0], key[1], project.uid
                    )
            self.controller.queue.add((key[0], ""))
            return
        wanted: dict[str, list[Desired]] = {}
        if project is not None and tenant is not None:
            spec = PROJECT.typed(project)
            shares = split_project_quota(amounts(spec.quota, "spec.quota"), spec.environments)
            for (env, cluster), quota in shares.items():
                wanted.setdefault(cluster, []).append(
                    desired_namespace(
                        tenant,
                        project,
                        env,
                        quota,
                        pools.get(cluster, []),
                        disabled,
                        generations,
                        additions.get((env, cluster)),
                    )
                )
        # Every cluster that may hold this project's namespaces: wanted now, or known before.
        placed_before = {
            p["cluster"] for p in (project.status if project else {}).get("placements", [])
        }
        targets = sorted(set(wanted) | placed_before | set(clusters))
        # Each cluster's part is done by the replica holding its lease, and only that part
        # of the status is written by it (under that lease).
        mine = {
            c: lease
            for c in targets
            if (lease := self._lease_of(c, registered=c in clusters)) is not None
        }
        if not mine:
            # Nothing of it here: a lease gained or a cluster added looks at every key again.
            self.settled.add(key)
            return
        results = await asyncio.gather(
            *(
                self._reconcile_cluster(key, clusters.get(c), wanted.get(c, []), held, lease)
                for c, lease in mine.items()
            )
        )
        placements = [p for cluster_placements in results for p in cluster_placements]
        changed = project is None
        if project is not None:
            with fenced_by(*mine.values()):
                written = await asyncio.to_thread(
                    self.service.write_status,
                    "Project",
                    key[0],
                    key[1],
                    partial(
                        _project_status,
                        placements,
                        project.generation,
                        set(mine),
                        {(d.env, d.namespace, c) for c, ds in wanted.items() for d in ds},
                    ),
                )
            changed = written is None or written.resource_version != project.resource_version
            if all(p["state"] == "Ready" for p in placements):
                self.settled.add(key)
        if tenant is not None and changed:
            # The tenant's totals follow its projects: recount when one of them moved, once
            # for many (the queue folds repeated keys into one).
            self.controller.queue.add((key[0], ""))

    async def _baseline(self, cluster: str, client: AsyncClient) -> None:
        """Wharf's roles, admission policy and system namespace, checked once a minute (and
        at once when the cluster's credentials change: a new client is a new key)."""
        memo = (cluster, id(client))
        if time.monotonic() - self._baseline_checked.get(memo, -BASELINE_EVERY) < BASELINE_EVERY:
            return
        settled = True
        for obj in cluster_baseline():
            wrote, current = await ensure(client, obj, owner=OWNED)
            self.writes += int(wrote)
            # A baseline object on its way out (a cluster that left, or someone deleting
            # wharf-system) is gone in a moment: check again at the next reconcile.
            settled = settled and not current.get("metadata", {}).get("deletionTimestamp")
        if settled:
            self._baseline_checked[memo] = time.monotonic()

    def _forget_baseline(self, cluster: str) -> None:
        """A placement that failed on a cluster checks the baseline again next time: what
        failed may be the baseline itself, gone since it was last seen."""
        for memo in [m for m in self._baseline_checked if m[0] == cluster]:
            del self._baseline_checked[memo]

    async def _reconcile_cluster(
        self,
        key: Key,
        cluster: StoredResource | None,
        desired: list[Desired],
        held: set[str],
        lease: Lease | None = None,
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
        if cluster is not None:
            self.per_cluster[cluster.name] += 1
        if cluster is None:
            return [placement(d, "Unreachable", "cluster is not registered") for d in desired]
        if cluster.status.get("phase") != "Ready":
            why = f"cluster {cluster.name} is {cluster.status.get('phase', 'not yet observed')}"
            return [placement(d, "Unreachable", why) for d in desired]
        try:
            client = self._client(cluster)
            caches = synced(await self._watch(cluster))
            await self._baseline(cluster.name, client)
            out = []
            for d in desired:
                if lease is not None:
                    self.share.check(lease)  # lost meanwhile: its new holder goes on
                if d.namespace not in held:
                    message = f"namespace {d.namespace} is held by another Project"
                    out.append(placement(d, "Conflict", message))
                    continue
                try:
                    quota = await self._apply_namespace(client, caches, d)
                except OwnedElsewhereError as exc:
                    log.warning("placement conflict", cluster=cluster.name, error=str(exc))
                    out.append(placement(d, "Conflict", str(exc)))
                    continue
                status = quota.get("status", {})
                out.append(
                    placement(d, "Ready", hard=status.get("hard", {}), used=status.get("used", {}))
                )
            owner = {**OWNED, TENANT_LABEL: key[0], PROJECT_LABEL: key[1]}
            keep = {d.namespace for d in desired}
            if lease is not None:
                self.share.check(lease)
            removed = await _prune(client, caches, Namespace, None, owner, keep)
            # Members' identities of namespaces that are gone (or no longer theirs) go too.
            accounts = set().union(*(d.accounts for d in desired))
            removed += await _prune(
                client, caches, ServiceAccount, SYSTEM_NAMESPACE, owner, accounts
            )
            self.writes += len(removed)
            if removed:
                log.info("pruned", cluster=cluster.name, objects=removed)
            return out
        except LeaseLost:
            raise
        except Exception as exc:
            self._forget_baseline(cluster.name)
            message = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("placement failed", cluster=cluster.name, project=key, error=message)
            state = "Unreachable" if is_unreachable(exc) else "Error"
            return [placement(d, state, message) for d in desired]

    async def _apply_namespace(
        self, client: AsyncClient, caches: Caches, d: Desired
    ) -> dict[str, Any]:
        owner = {
            k: v
            for k, v in d.objects[0]["metadata"]["labels"].items()
            if k in (MANAGED_BY, TENANT_LABEL, PROJECT_LABEL, ENV_LABEL)
        }
        # Access goes first, before anything can stop this reconcile: bindings of removed
        # members, and identities older versions kept inside the namespace (where its
        # developers could use them). Applications' own objects (app label) are not ours here.
        mine: dict[str, Any] = {**owner, APP_LABEL: operators.not_exists()}
        keep = {o["metadata"]["name"] for o in d.objects if o["kind"] == "RoleBinding"}
        removed = await _prune(client, caches, RoleBinding, d.namespace, mine, keep)
        removed += await _prune(client, caches, ServiceAccount, d.namespace, mine, set())
        extras = {o["metadata"]["name"] for o in d.objects if o["kind"] == "Secret"}
        extra: dict[str, Any] = {**mine, EXTRA_LABEL: operators.exists()}
        removed += await _prune(client, caches, Secret, d.namespace, extra, extras)
        # Policies of traffic rules that are gone (or the isolation a default-deny replaced).
        policies = {o["metadata"]["name"] for o in d.objects if o["kind"] == "NetworkPolicy"}
        removed += await _prune(client, caches, NetworkPolicy, d.namespace, mine, policies)
        self.writes += len(removed)
        quota: dict[str, Any] = {}
        for obj in d.objects:
            # Never adopt: an object of this name that carries another owner's labels (or
            # none of Wharf's) stops the placement with a Conflict instead.
            wrote, current = await ensure_cached(client, caches.get(obj["kind"]), obj, owner)
            self.writes += int(wrote)
            if obj["kind"] == "ResourceQuota":
                quota = current
        return quota

    async def _remove_everywhere(
        self, clusters: Iterable[StoredResource], labels: dict[str, Any]
    ) -> None:
        """Remove what carries `labels` in every Ready cluster; a failure propagates (and is
        retried). A cluster that is not Ready is passed over: the sweep in `list_keys` finds
        what is left there when it is back."""

        async def remove(cluster: StoredResource) -> None:
            client = self._client(cluster)
            removed = await remove_labelled(client, REMOVED_WITH_OWNER, labels)
            self.writes += len(removed)
            if removed:
                log.info("removed", cluster=cluster.name, objects=removed)

        ready = [
            c
            for c in clusters
            if c.status.get("phase") == "Ready" and self._lease_of(c.name) is not None
        ]
        await asyncio.gather(*(remove(c) for c in ready))

    async def _left_anywhere(
        self, clusters: Iterable[StoredResource], labels: dict[str, Any]
    ) -> None:
        """Before a delete is finished: nothing carrying `labels` is left (or not yet being
        removed) in any Ready cluster, those of other replicas included (a read; their
        holders remove it). Something left is an error: the delete is retried."""

        async def left(cluster: StoredResource) -> list[str]:
            client = self._client(cluster)
            return await labelled(client, REMOVED_WITH_OWNER, labels)

        ready = [c for c in clusters if c.status.get("phase") == "Ready"]
        found = [o for objects in await asyncio.gather(*(left(c) for c in ready)) for o in objects]
        if found:
            raise RemovalPending(found)

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
        platform = self.share.lease(PLATFORM)
        if tenant is None or tenant.deleting_since is None:
            if platform is not None:  # the tenant's totals: platform-wide bookkeeping
                with fenced_by(platform):
                    await asyncio.to_thread(self._tenant_status, name)
            return
        if projects:
            return  # each project's own delete queues its tenant again when it is done
        labels = {**OWNED, TENANT_LABEL: name}
        await self._remove_everywhere(clusters, labels)
        if platform is not None:
            await self._left_anywhere(clusters, labels)
            with fenced_by(platform):
                await asyncio.to_thread(self.service.finish_delete, "Tenant", "", name, tenant.uid)

    def _tenant_status(self, tenant: str) -> None:
        # Counted in a read, written in a short write: counting every project inside the
        # write held SQLite's one writer (and the API's writes) meanwhile. A project that
        # moves after the count queues another one, which runs after this one.
        with self.service.db.reader() as session:
            usage = tenant_usage(session, tenant)
        self.service.write_status("Tenant", "", tenant, lambda stored: {**stored.status, **usage})

    async def stop(self) -> None:
        await self.watches.stop()


Caches = Mapping[str, Informer]  # a cluster's synced watch caches, by kind


def _owner_key(obj: dict[str, Any]) -> Key | None:
    """The project (or tenant) a watched object's event is about, if its labels may say so.

    Inside a project's namespaces the labels are the tenant's to write (its developers may
    make secrets): there an object names only the project whose namespace it sits in, so
    nobody queues another tenant's work, or an endless stream of made-up projects. A Namespace
    is where it is; wharf-system is Wharf's alone."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    tenant, project = labels.get(TENANT_LABEL), labels.get(PROJECT_LABEL, "")
    place = meta.get("namespace") or meta.get("name") or ""
    if not tenant or (
        place != SYSTEM_NAMESPACE and not (project and place.startswith(f"{tenant}--{project}-"))
    ):
        return None
    return tenant, project


async def _prune(
    client: AsyncClient,
    caches: Caches,
    resource: Any,
    namespace: str | None,
    selector: dict[str, Any],
    keep: set[str],
) -> list[str]:
    cache = caches.get(resource.__name__)
    return await prune_selected(client, cache, resource, namespace, selector, keep)


def _outdated(exc: OutdatedSpecError, stored: StoredResource) -> dict[str, Any]:
    """The status of a project that cannot be placed because a spec it rests on (its own, its
    tenant's or a node pool's) no longer meets today's rules."""
    conditions = set_condition(
        stored.status.get("conditions", []),
        "Ready",
        "False",
        "OutdatedSpec",
        exc.message,
        stored.generation,
    )
    return {**stored.status, "phase": "Degraded", "conditions": conditions}


def _project_status(
    seen: list[dict[str, Any]],
    generation: int,
    clusters: set[str],
    expected: set[tuple[str, str, str]],
    stored: StoredResource,
) -> dict[str, Any]:
    """The status for what this reconcile saw in `clusters` (the other clusters' placements
    as their replicas last wrote them, and Pending where none has yet): `generation` is the
    spec it started from (a newer spec written meanwhile gets its own reconcile, and must not
    be reported as seen). `expected`: every (environment, namespace, cluster) wanted."""
    kept = [p for p in stored.status.get("placements", []) if p.get("cluster") not in clusters]
    placements = kept + seen
    known = {(p["environment"], p["cluster"]) for p in placements}
    placements += [
        {
            "environment": env,
            "cluster": cluster,
            "namespace": namespace,
            "state": "Pending",
            "message": "not yet placed by its cluster's replica",
        }
        for env, namespace, cluster in sorted(expected)
        if (env, cluster) not in known
    ]
    # Usage of what the project holds quota for (the namespaces also count what it was
    # granted none of, always zero).
    held = amounts(PROJECT.typed(stored).quota, "spec.quota")
    used = {
        k: v
        for k, v in total(
            {k: parse_quantity(v) for k, v in p.get("used", {}).items()} for p in placements
        ).items()
        if k in held or v
    }
    bad = [p for p in placements if p["state"] != "Ready"]
    conditions = stored.status.get("conditions", [])
    conflicts = [p for p in placements if p["state"] == "Conflict"]
    conditions = set_condition(
        conditions,
        "Conflict",
        "True" if conflicts else "False",
        "OwnedElsewhere" if conflicts else "NoConflict",
        "; ".join(f"{p['cluster']}/{p['environment']}: {p['message']}" for p in conflicts),
        generation,
    )
    if bad:
        message = "; ".join(f"{p['cluster']}/{p['environment']}: {p['message']}" for p in bad)
        reason = (
            "Conflict"
            if conflicts
            else "ClusterUnreachable"
            if any(p["state"] == "Unreachable" for p in bad)
            else "Pending"
            if all(p["state"] == "Pending" for p in bad)
            else "ApplyFailed"
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
