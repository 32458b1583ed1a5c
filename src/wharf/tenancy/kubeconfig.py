"""`wharf kubeconfig --project P --env E`: a kubeconfig that reaches only that project's
namespaces of one environment, in every cluster the environment is placed on.

It authenticates as the member's ServiceAccount for that namespace, which lives in
`wharf-system` where no tenant role reaches (the placement controller binds it to the member's
role in the namespace), with a short-lived token from the TokenRequest API, so nothing
long-lived leaves the platform and a revoked member's access ends with the ServiceAccount.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lightkube.core.exceptions import ApiError
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount

from wharf.clusters.service import ClusterRules
from wharf.core.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from wharf.identity import service as identity
from wharf.identity.model import Principal
from wharf.kube.connections import ClusterConnections
from wharf.resources.service import ResourceService
from wharf.store.audit import AuditEvent, record
from wharf.store.resources import ResourceStore, StoredResource
from wharf.tenancy.guard import SYSTEM_NAMESPACE, member_account
from wharf.tenancy.model import PROJECT, TENANT, namespace_name

MAX_TTL = 24 * 3600


def _load(
    service: ResourceService, p: Principal, tenant: str, project: str, env: str
) -> tuple[str, int, list[tuple[StoredResource, str]]]:
    with service.db.reader() as session:
        store = ResourceStore(session)
        stored = store.get("Project", tenant, project)
        if stored is None or not p.can("read", tenant, project):
            raise NotFoundError(f"Project {project!r} not found in tenant {tenant!r}")
        tenant_obj = store.get("Tenant", "", tenant)
        spec = PROJECT.typed(stored)
        admins = TENANT.typed(tenant_obj).admins if tenant_obj else []
        members = {m.user for m in spec.members} | set(admins)
        if p.user not in members:
            raise ForbiddenError(
                f"{p.user} is not a member of project {project}: only members and tenant "
                "admins get a kubeconfig for it"
            )
        envs = {e.name: e for e in spec.environments}
        if env not in envs:
            raise InvalidError(
                f"env: project {project} has no environment {env!r} "
                f"(it has: {', '.join(envs) or 'none'})",
                field="env",
            )
        clusters = []
        for name in envs[env].clusters:
            cluster = store.get("Cluster", "", name)
            if cluster is None:
                raise ConflictError(f"cluster {name!r} of environment {env} is not registered")
            clusters.append((cluster, namespace_name(tenant, project, env)))
        return p.user, identity.generation(session, p.user), clusters


async def issue_kubeconfig(
    service: ResourceService,
    rules: ClusterRules,
    connections: ClusterConnections,
    p: Principal,
    tenant: str,
    project: str,
    env: str,
    ttl: int = 8 * 3600,
) -> dict[str, Any]:
    identity.authorize_kubeconfig(p, tenant, project, ttl)
    if not 600 <= ttl <= MAX_TTL:
        raise InvalidError(f"ttl: between 600 and {MAX_TTL} seconds", field="ttl")
    user, generation, clusters = await asyncio.to_thread(_load, service, p, tenant, project, env)
    entries: list[dict[str, Any]] = []
    for cluster, namespace in clusters:
        admin = rules.kubeconfig(cluster)
        context = {c["name"]: c["context"] for c in admin["contexts"]}[admin["current-context"]]
        server = {c["name"]: c["cluster"] for c in admin["clusters"]}[context["cluster"]]
        # A user's request: never in the controllers' slots (kube.clients.IN_FLIGHT).
        client = connections.client(cluster.name, admin, purpose="users")
        account = member_account(user, namespace, generation)
        request = ServiceAccount.Token(
            metadata=ObjectMeta(name=account, namespace=SYSTEM_NAMESPACE),
            spec=TokenRequestSpec(audiences=[], expirationSeconds=ttl),
        )
        try:
            answer = await client.create(request, name=account, namespace=SYSTEM_NAMESPACE)
        except ApiError as exc:
            if exc.status.code == 404:
                raise ConflictError(
                    f"namespace {namespace} in cluster {cluster.name} is not placed yet "
                    "(see the project's status); try again shortly"
                ) from None
            raise
        assert answer.status is not None
        entries.append(
            {
                "cluster": cluster.name,
                "namespace": namespace,
                "server": server,
                "token": answer.status.token,
            }
        )

    def audit() -> None:
        with service.db.session() as session:
            record(
                session,
                AuditEvent(
                    p.user,
                    p.source,
                    "issue-kubeconfig",
                    "Project",
                    tenant,
                    project,
                    "allowed",
                    diff=[{"path": "env", "old": None, "new": env}],
                ),
            )

    await asyncio.to_thread(audit)
    names = [f"{e['cluster']}-{e['namespace']}" for e in entries]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": n, "cluster": e["server"]} for n, e in zip(names, entries, strict=True)
        ],
        "users": [
            {"name": n, "user": {"token": e["token"]}} for n, e in zip(names, entries, strict=True)
        ],
        "contexts": [
            {"name": n, "context": {"cluster": n, "user": n, "namespace": e["namespace"]}}
            for n, e in zip(names, entries, strict=True)
        ],
        "current-context": names[0] if names else "",
    }
