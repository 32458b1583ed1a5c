"""Manual scaling: a new replica count for an application, everywhere or in one cluster.

Scaling is a change of the application's spec (`spec.replicas`, or
`spec.overrides.<cluster>.replicas`), applied through the generic write path: so it is
authorized as any delivery is, checked against the namespace quota before anything moves,
recorded as a revision that says why, and audited.
"""

from __future__ import annotations

from typing import Any

from wharf.apps.model import APPLICATION, ApplicationSpec, autoscaled, desired_objects
from wharf.apps.service import CHANGE_CAUSE, app_labels, rendered_for
from wharf.core.errors import ConflictError, InvalidError
from wharf.identity.model import Principal
from wharf.resources.service import ResourceService
from wharf.store.resources import ResourceStore
from wharf.tenancy.model import PROJECT


def scale(
    resources: ResourceService,
    p: Principal,
    tenant: str,
    app: str,
    replicas: int,
    cluster: str | None = None,
) -> dict[str, Any]:
    """Set the application's replicas (in one cluster, or in all); the object as stored."""
    answer, spec = resources.read(p, APPLICATION, tenant, app)  # 404 unless it may read it
    if p.can_deliver(tenant, spec.project):
        # Only a caller who may scale it learns why it cannot be scaled; anyone else is
        # refused (403) and audited by the write below, which authorizes first.
        clusters = _clusters(resources, tenant, spec)
        if cluster is not None and cluster not in clusters:
            raise InvalidError(
                f"cluster: environment {spec.environment} of {app} is not placed on "
                f"{cluster!r} (it is on: {', '.join(clusters) or 'none'})",
                field="cluster",
            )
        _refuse_autoscaled(resources, tenant, app, spec, [cluster] if cluster else clusters)
    where = f" in {cluster}" if cluster else ""
    manifest = {
        "kind": "Application",
        "metadata": {
            "name": app,
            "tenant": tenant,
            "labels": answer["metadata"]["labels"],
            "annotations": {
                **answer["metadata"]["annotations"],
                CHANGE_CAUSE: f"scaled to {replicas} replicas{where}",
            },
        },
        # Secret values come back masked, which keeps the stored ones.
        "spec": scaled_spec(answer["spec"], replicas, cluster),
    }
    obj, _ = resources.apply(p, manifest, tenant, kind="Application", name=app)
    return obj


def scaled_spec(spec: dict[str, Any], replicas: int, cluster: str | None) -> dict[str, Any]:
    """The spec with the new count: one cluster's override, or everywhere (clusters' own
    counts give way to it)."""
    overrides = {name: dict(o) for name, o in spec.get("overrides", {}).items()}
    if cluster is not None:
        overrides[cluster] = {**overrides.get(cluster, {}), "replicas": replicas}
        return {**spec, "overrides": overrides}
    for override in overrides.values():
        override.pop("replicas", None)
    return {**spec, "replicas": replicas, "overrides": overrides}


def _clusters(resources: ResourceService, tenant: str, spec: ApplicationSpec) -> list[str]:
    with resources.db.reader() as session:
        project = ResourceStore(session).get("Project", tenant, spec.project)
    if project is None:
        return []
    envs = {e.name: e.clusters for e in PROJECT.typed(project).environments}
    return envs.get(spec.environment, [])


def _refuse_autoscaled(
    resources: ResourceService, tenant: str, app: str, spec: ApplicationSpec, clusters: list[str]
) -> None:
    """The application's autoscaler owns its workload's replicas: a count set by hand would be
    undone."""
    if spec.autoscaling is None:
        return
    with resources.db.reader() as session:
        rendered = rendered_for(session, spec)
    for cluster in clusters:
        objects = desired_objects(app, spec, rendered, cluster, app_labels(tenant, spec))
        for kind, name in sorted(autoscaled(objects)):
            raise ConflictError(
                f"{kind} {name} of {app} is scaled by its HorizontalPodAutoscaler in {cluster}: "
                "change its bounds (spec.autoscaling.minReplicas/maxReplicas, or "
                f"spec.overrides.{cluster}.minReplicas/maxReplicas) instead",
                field="spec.autoscaling",
            )
