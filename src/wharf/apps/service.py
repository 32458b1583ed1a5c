"""Who may read and publish application templates, and what a change to one may do."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from wharf.apps.catalog import CATALOG
from wharf.apps.model import (
    APP_TEMPLATE,
    APPLICATION,
    ApplicationSpec,
    AppTemplateSpec,
    TemplateVersion,
    TrafficRouting,
    check_autoscaling,
    check_canary_route,
    check_configuration,
    check_version,
    container_images,
    delivery_findings,
    desired_objects,
    image_field,
    render,
    workload_requests,
)
from wharf.clusters.model import CLUSTER, routing_of
from wharf.core.audit import diff, mask
from wharf.core.crypto import SealError, SecretBox, place
from wharf.core.errors import (
    ForbiddenError,
    InvalidError,
    NotFoundError,
    OutdatedSpecError,
    QuotaExceededError,
)
from wharf.core.quantity import add, format_quantity, parse_quantity
from wharf.core.resources import check_name
from wharf.identity.model import Action, Principal
from wharf.network.model import (
    check_node_port_requests,
    check_routes,
    check_volume_changes,
    check_volume_classes,
    volume_requests,
)
from wharf.network.service import (
    PortHolder,
    assign_node_ports,
    check_route_certificates,
    claim_hosts,
    release_node_ports,
)
from wharf.registry.service import TokenSigner, check_images
from wharf.resources.service import (
    Change,
    KindRules,
    ResourceService,
    Verdict,
    project_scopes,
)
from wharf.store.claims import Holder, Wanted, hold, release
from wharf.store.resources import ResourceStore, Scopes, StoredResource
from wharf.store.tables import revisions
from wharf.tenancy.model import (
    ENV_LABEL,
    MANAGED_BY,
    PROJECT,
    PROJECT_LABEL,
    TENANT,
    TENANT_LABEL,
    amounts,
    namespace_name,
    split_project_quota,
)


class AppTemplateRules(KindRules[AppTemplateSpec]):
    """The catalog is shared: every signed-in user reads it; platform admins publish to it."""

    kind = APP_TEMPLATE

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        if p.can(action):
            return "allow"
        return "allow" if action == "read" and p.grants else "forbid"

    def visible_scopes(self, p: Principal, tenant: str | None) -> Scopes:
        return [("", None)] if p.grants else []

    def validate(self, change: Change[AppTemplateSpec]) -> AppTemplateSpec:
        spec = change.spec
        seen: set[str] = set()
        for i, version in enumerate(spec.versions):
            if version.version in seen:
                raise InvalidError(
                    f"spec.versions[{i}].version: {version.version} is listed twice",
                    field=f"spec.versions[{i}].version",
                )
            seen.add(version.version)
            check_version(version, f"spec.versions[{i}]")
        if change.old_spec is not None:
            old = change.old_spec
            new_by_version = {v.version: v for v in spec.versions}
            for published in (v for v in old.versions if v.published):
                now = new_by_version.get(published.version)
                if now is None or now != published:
                    raise InvalidError(
                        f"spec.versions: {published.version} is published and cannot change or "
                        "go away; publish a new version instead",
                        field="spec.versions",
                    )
        return change.spec

    def present_status(self, stored: StoredResource, p: Principal) -> dict[str, Any]:
        try:
            spec = APP_TEMPLATE.typed(stored)
        except OutdatedSpecError as exc:
            return {**stored.status, "problem": exc.message}  # still readable, to be replaced
        versions = [v.version for v in spec.versions]
        published = [v.version for v in spec.versions if v.published]
        return {**stored.status, "versions": versions, "published": published}


def template_version(session: Session, name: str, version: str) -> TemplateVersion:
    stored = ResourceStore(session).get("AppTemplate", "", name)
    if stored is None:
        raise InvalidError(f"spec.template.name: no template {name!r}", field="spec.template.name")
    for v in APP_TEMPLATE.typed(stored).versions:
        if v.version == version:
            return v
    raise InvalidError(
        f"spec.template.version: template {name} has no version {version}",
        field="spec.template.version",
    )


def seed_catalog(session: Session) -> list[str]:
    """Create the built-in templates that are missing; return their names."""
    store = ResourceStore(session)
    made = []
    for name, spec in CATALOG.items():
        if store.get("AppTemplate", "", name) is None:
            validated = AppTemplateSpec.model_validate(spec)
            for i, version in enumerate(validated.versions):
                check_version(version, f"spec.versions[{i}]")
            store.create(
                "AppTemplate",
                "",
                name,
                labels={"wharf.io/catalog": "builtin"},
                annotations={},
                spec=validated.model_dump(mode="json"),
            )
            made.append(name)
    return made


CHANGE_CAUSE = "wharf.io/change-cause"


def _project(session: Session, p: Principal, tenant: str, name: str) -> StoredResource:
    project = ResourceStore(session).get("Project", tenant, name)
    if project is None or not p.can("read", tenant, name):
        raise NotFoundError(
            f"spec.project: project {name!r} not found in tenant {tenant!r}", field="spec.project"
        )
    return project


def _share(project: StoredResource, env: str, cluster: str) -> dict[str, Any] | None:
    for placement in project.status.get("placements", []):
        if (placement["environment"], placement["cluster"]) == (env, cluster):
            return dict(placement)
    return None


def rendered_for(session: Session, spec: ApplicationSpec) -> list[dict[str, Any]]:
    tv = template_version(session, spec.template.name, spec.template.version)
    return render(tv, spec.values)


def app_labels(tenant: str, spec: ApplicationSpec) -> dict[str, str]:
    return {
        MANAGED_BY: "wharf",
        TENANT_LABEL: tenant,
        PROJECT_LABEL: spec.project,
        ENV_LABEL: spec.environment,
    }


def check_strategy(
    session: Session, tenant: str, spec: ApplicationSpec, clusters: list[str]
) -> None:
    """A release strategy may name only the environment's clusters and the tenant's analysis
    templates; anything else is refused before anything starts."""
    strategy = spec.strategy
    if strategy.type == "canary" and strategy.canary is None:
        raise InvalidError(
            "spec.strategy.canary: type canary needs canary.steps", field="spec.strategy.canary"
        )
    for i, step in enumerate(strategy.canary.steps if strategy.canary else []):
        if len(step.chosen()) != 1:
            where = f"spec.strategy.canary.steps[{i}]"
            raise InvalidError(
                f"{where}: set exactly one of setWeight, setReplicas, pause, analysis "
                f"(it sets: {', '.join(step.chosen()) or 'none'})",
                field=where,
            )
    for i, wave in enumerate(strategy.waves):
        for j, cluster in enumerate(wave.clusters):
            if cluster not in clusters:
                where = f"spec.strategy.waves[{i}].clusters[{j}]"
                raise InvalidError(
                    f"{where}: environment {spec.environment} is not placed on {cluster} "
                    f"(it is on: {', '.join(clusters) or 'none'})",
                    field=where,
                )
    store = ResourceStore(session)
    if strategy.canary is not None and strategy.canary.trafficRouting is not None:
        check_traffic_routing(store, spec, strategy.canary.trafficRouting, clusters)
    for i, step in enumerate(strategy.canary.steps if strategy.canary else []):
        for j, name in enumerate(step.analysis.templates if step.analysis else []):
            if store.get("AnalysisTemplate", tenant, name) is None:
                where = f"spec.strategy.canary.steps[{i}].analysis.templates[{j}]"
                raise InvalidError(
                    f"{where}: no AnalysisTemplate {name!r} in tenant {tenant}", field=where
                )


def check_traffic_routing(
    store: ResourceStore, spec: ApplicationSpec, routing: TrafficRouting, clusters: list[str]
) -> None:
    """One router; its host one the application routes (so one the tenant was granted and the
    application holds: another tenant's host is refused here, not by the cluster later); and
    Gateway API only where every cluster of the environment routes with a Gateway."""
    where = "spec.strategy.canary.trafficRouting"
    chosen = routing.chosen()
    if chosen is None:
        return
    if routing.nginx is not None and routing.gatewayAPI is not None:
        raise InvalidError(f"{where}: choose one router, nginx or gatewayAPI", field=where)
    where = f"{where}.{routing.where()}"
    hosts = sorted({r.host for r in spec.routes})
    if chosen.host not in hosts:
        raise InvalidError(
            f"{where}.host: {chosen.host!r} is not a host of the application's spec.routes "
            f"(they are: {', '.join(hosts) or 'none'})",
            field=f"{where}.host",
        )
    if routing.gatewayAPI is None:
        return
    for name in clusters:
        cluster = store.get("Cluster", "", name)
        routed = cluster is not None and (
            routing_of(CLUSTER.typed(cluster).routing, cluster.status.get("apis") or {}).kind
            == "HTTPRoute"
        )
        if not routed:
            raise InvalidError(
                f"{where}: cluster {name} routes with an Ingress, not a Gateway (its "
                "spec.routing); use trafficRouting.nginx there",
                field=where,
            )


def _expandable(session: Session, cluster: str) -> dict[str, bool]:
    """The cluster's storage classes (its catalog, as observed) and whether volumes of each
    may grow."""
    stored = ResourceStore(session).get("Cluster", "", cluster)
    catalog = stored.status.get("storageClasses", []) if stored is not None else []
    return {c["name"]: bool(c.get("allowVolumeExpansion")) for c in catalog}


class ApplicationRules(KindRules[ApplicationSpec]):
    """Developers deliver into their projects; everyone in the project reads."""

    kind = APPLICATION
    owns_cluster_objects = True  # its workloads, services, configuration, … in every cluster
    owns_volumes = True  # its claims: kept on delete unless asked

    def __init__(self, box: SecretBox, signer: TokenSigner | None = None) -> None:
        self.box = box
        self.signer = signer  # reads the registries for the delivery's image checks
        # What packages above keep per application (its releases) and drop with it, in the
        # delete's own transaction: an application made again under the same name starts
        # with none of it.
        self.forget: list[Callable[[Session, str, str], None]] = []

    def project_of(self, name: str, spec: Any) -> str:
        project = spec.get("project", "") if isinstance(spec, dict) else ""
        return project if isinstance(project, str) else ""

    def derived_labels(self, spec: ApplicationSpec) -> dict[str, str]:
        return {PROJECT_LABEL: spec.project}

    def visible_scopes(self, p: Principal, tenant: str | None) -> Scopes:
        """Tenant-wide readers list all of a tenant's applications; project members those of
        their projects (by the project label), as `get` would let them read."""
        return project_scopes(p, tenant, PROJECT_LABEL)

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        if not p.sees_tenant(tenant):
            return "hide"
        if old is None:  # a new one: validate() checks the project it names
            return "allow" if action == "write" else "hide"
        # Read as project_of reads a manifest: authorization must not depend on the rest of
        # the spec meeting today's rules (a row that does not is still read and replaced).
        project = self.project_of(old.name, old.spec)
        if not p.can("read", tenant, project):
            return "hide"
        if action == "read" or p.can_deliver(tenant, project):
            return "allow"
        return "forbid"

    def create_verdict(self, p: Principal, tenant: str, name: str, project: str) -> Verdict:
        if not p.sees_tenant(tenant):
            return "hide"
        if p.can_deliver(tenant, project):
            return "allow"
        return "forbid" if p.can("read", tenant, project) else "hide"

    def validate(self, change: Change[ApplicationSpec]) -> ApplicationSpec:
        session, p, tenant = change.session, change.principal, change.tenant
        check_name(change.name, max_length=40)
        spec = change.spec
        check_configuration(spec.config, spec.overrides)
        check_autoscaling(spec.autoscaling, spec.overrides)
        project = _project(session, p, tenant, spec.project)
        if not p.can_deliver(tenant, spec.project):
            raise ForbiddenError(f"{p.user} may not deliver into project {spec.project}")
        if change.old_spec is not None:
            before = change.old_spec
            if (before.project, before.environment) != (spec.project, spec.environment):
                raise InvalidError(
                    "spec.environment: an application stays in its project and environment; "
                    "create a new one elsewhere",
                    field="spec.environment",
                )
        project_spec = PROJECT.typed(project)
        envs = {e.name: e for e in project_spec.environments}
        if spec.environment not in envs:
            raise InvalidError(
                f"spec.environment: project {spec.project} has no environment "
                f"{spec.environment!r} (it has: {', '.join(envs) or 'none'})",
                field="spec.environment",
            )
        clusters = envs[spec.environment].clusters
        for cluster in spec.overrides:
            if cluster not in clusters:
                raise InvalidError(
                    f"spec.overrides.{cluster}: environment {spec.environment} "
                    f"is not placed on {cluster}",
                    field=f"spec.overrides.{cluster}",
                )
        check_strategy(session, tenant, spec, clusters)
        tv = template_version(session, spec.template.name, spec.template.version)
        if not tv.published:
            raise InvalidError(
                f"spec.template.version: {spec.template.version} of "
                f"{spec.template.name} is not published",
                field="spec.template.version",
            )
        rendered = render(tv, spec.values)
        check_node_port_requests(spec.nodePorts, rendered)
        check_routes(spec.routes, rendered)
        check_canary_route(spec, rendered)
        hosts = [(r.host, f"spec.routes[{i}].host") for i, r in enumerate(spec.routes)]
        claim_hosts(session, tenant, change.name, hosts)
        old_routes = change.old_spec.routes if change.old_spec is not None else []
        used = {r.tls for r in old_routes if r.tls is not None}
        check_route_certificates(session, p, tenant, spec.routes, used)
        previous = None
        if change.old_spec is not None:
            try:
                previous = (change.old_spec, rendered_for(session, change.old_spec))
            except InvalidError:
                previous = None
        policy = project_spec.delivery
        labels = app_labels(tenant, spec)
        namespace = namespace_name(tenant, spec.project, spec.environment)
        owned: dict[str, Wanted] = {}
        stored_tenant = ResourceStore(session).get("Tenant", "", tenant)
        granted_classes = TENANT.typed(stored_tenant).storageClasses if stored_tenant else []
        images: dict[str, str] = {}
        for cluster in clusters:
            objects = desired_objects(change.name, spec, rendered, cluster, labels)
            images |= {i: image_field(spec.values, i) for i in container_images(objects)}
            for obj in objects:
                what = f"{obj['kind']} {obj['metadata']['name']} in namespace {namespace}"
                key = f"{namespace}/{obj['kind']}/{obj['metadata']['name']}"
                owned[key] = Wanted(key, what, "spec.values")
            for check, message in delivery_findings(objects, policy.allowedRegistries):
                if getattr(policy.checks, check) == "refuse":
                    raise InvalidError(
                        f"delivery check {check} refuses it: {message} (the project's "
                        f"spec.delivery.checks.{check} is refuse)",
                        field="spec.values",
                    )
            check_volume_classes(objects, tenant, granted_classes)
            if previous is not None:
                was = desired_objects(change.name, previous[0], previous[1], cluster, labels)
                check_volume_changes(was, objects, cluster, _expandable(session, cluster))
            self._check_quota(change.name, spec, project, cluster, objects, previous, labels)
        if self.signer is not None:
            check_images(session, self.signer, tenant, spec.project, images)
        # Each object a delivery renders has one owner: a second application rendering the
        # same Deployment or Service is refused here, never left to fight in the clusters.
        hold(session, "object", owned.values(), Holder("Application", tenant, change.name))
        holder = PortHolder(tenant, spec.project, namespace, change.name)
        assign_node_ports(session, holder, clusters, spec.nodePorts)
        return self._seal(change)

    def _seal(self, change: Change[ApplicationSpec]) -> ApplicationSpec:
        """Secret values are kept sealed, each bound to its application and key; an unchanged
        value keeps its old ciphertext, so that applying the same manifest again changes
        nothing. A sealed value from anywhere else is refused, never opened for the caller."""
        old_secrets = change.old_spec.config.secrets if change.old_spec is not None else {}
        spec = change.spec
        sealed: dict[str, dict[str, str]] = {}
        for name, data in spec.config.secrets.items():
            sealed[name] = {}
            for key, value in data.items():
                where = f"spec.config.secrets.{name}.{key}"
                at = place(APPLICATION.name, change.tenant, change.name, where)
                before = old_secrets.get(name, {}).get(key)
                if value == before:
                    sealed[name][key] = before  # sent back as it was read (masked)
                    continue
                if self.box.is_sealed(value):
                    try:
                        value = self.box.open(value, at)
                    except SealError as exc:
                        raise InvalidError(
                            f"{where}: a sealed value that is not this application's ({exc}); "
                            "send the value itself",
                            field=where,
                        ) from None
                if before is not None and self._opened(before, at) == value:
                    sealed[name][key] = before
                else:
                    sealed[name][key] = self.box.seal(value, at)
        if not sealed:
            return spec
        config = spec.config.model_copy(update={"secrets": sealed})
        return spec.model_copy(update={"config": config})

    def _opened(self, sealed: str, at: str) -> str | None:
        try:
            return self.box.open_stored(sealed, at)
        except SealError:
            return None

    def _places(self, stored: StoredResource) -> Iterator[tuple[str, str, str, str]]:
        """(secret, key, sealed value, place) of every secret value of a stored application."""
        for name, data in APPLICATION.typed(stored).config.secrets.items():
            for key, value in data.items():
                where = f"spec.config.secrets.{name}.{key}"
                yield name, key, value, place(APPLICATION.name, stored.tenant, stored.name, where)

    def unsealed(self, stored: StoredResource) -> ApplicationSpec:
        """The spec with its secret values opened, for rendering into the clusters; a value
        that does not open stops the delivery (SealError) rather than going out sealed."""
        spec = APPLICATION.typed(stored)
        secrets: dict[str, dict[str, str]] = {}
        for name, key, value, at in self._places(stored):
            secrets.setdefault(name, {})[key] = self.box.open_stored(value, at)
        return spec.model_copy(
            update={"config": spec.config.model_copy(update={"secrets": secrets})}
        )

    def reseal(self, stored: StoredResource) -> dict[str, Any] | None:
        """The spec with every secret value sealed under the current key; None when it is."""
        places = list(self._places(stored))
        if not any(self.box.needs_reseal(value) for _, _, value, _ in places):
            return None
        secrets: dict[str, dict[str, str]] = {}
        for name, key, value, at in places:
            opened = self.box.open_stored(value, at)
            secrets.setdefault(name, {})[key] = self.box.seal(opened, at)
        config = APPLICATION.typed(stored).config.model_copy(update={"secrets": secrets})
        # Only the sealed values change; the rest of the row stays as stored.
        return {**stored.spec, "config": config.model_dump(mode="json")}

    @staticmethod
    def _check_quota(
        app: str,
        spec: ApplicationSpec,
        project: StoredResource,
        cluster: str,
        objects: list[dict[str, Any]],
        previous: tuple[ApplicationSpec, list[dict[str, Any]]] | None,
        labels: dict[str, str],
    ) -> None:
        # The namespace's quota is the project's split (its source of truth); what is in use
        # comes from the cluster, through the project's status.
        project_spec = PROJECT.typed(project)
        shares = split_project_quota(
            amounts(project_spec.quota, "spec.quota"), project_spec.environments
        )
        hard_by_name = shares.get((spec.environment, cluster), {})
        observed = _share(project, spec.environment, cluster) or {}
        need = _asks(objects)
        held: dict[str, Fraction] = {}
        if previous is not None:
            held = _asks(desired_objects(app, previous[0], previous[1], cluster, labels))
        for resource, value in need.items():
            if resource not in hard_by_name:
                continue
            hard = hard_by_name[resource]
            used = parse_quantity(observed.get("used", {}).get(resource, "0"))
            available = hard - used + held.get(resource, Fraction(0))
            if value > available:
                raise QuotaExceededError(
                    f"application {app}: {resource} {format_quantity(value, resource)} in cluster "
                    f"{cluster} would exceed the namespace quota by "
                    f"{format_quantity(value - available, resource)} (quota "
                    f"{format_quantity(hard, resource)}, in use "
                    f"{format_quantity(used, resource)}); nothing was applied",
                    field="spec.values",
                    resource=resource,
                    cluster=cluster,
                    exceededBy=format_quantity(value - available, resource),
                )

    def after_write(
        self,
        session: Session,
        stored: StoredResource | None,
        old: StoredResource | None,
        p: Principal,
    ) -> None:
        if stored is None:
            assert old is not None
            session.execute(
                delete(revisions).where(
                    revisions.c.tenant == old.tenant, revisions.c.application == old.name
                )
            )
            release(session, Holder("Application", old.tenant, old.name))
            release_node_ports(session, old.tenant, old.name)
            for forget in self.forget:
                forget(session, old.tenant, old.name)
            return
        if old is not None and old.spec == stored.spec:
            return
        session.execute(
            insert(revisions).values(
                tenant=stored.tenant,
                application=stored.name,
                number=current_revision(session, stored.tenant, stored.name) + 1,
                spec=stored.spec,
                actor=p.user,
                reason=stored.annotations.get(CHANGE_CAUSE, ""),
                created_at=dt.datetime.now(dt.UTC),
            )
        )


def _asks(objects: list[dict[str, Any]]) -> dict[str, Fraction]:
    """What rendered objects ask of a namespace quota: workloads' requests and volumes."""
    return add(workload_requests(objects), volume_requests(objects))


def current_revision(session: Session, tenant: str, app: str) -> int:
    """The number of the application's newest revision: the one its spec is (0: none yet)."""
    number = session.execute(
        select(func.max(revisions.c.number)).where(
            revisions.c.tenant == tenant, revisions.c.application == app
        )
    ).scalar()
    return int(number or 0)


def list_revisions(session: Session, tenant: str, app: str) -> list[dict[str, Any]]:
    rows = session.execute(
        select(revisions)
        .where(revisions.c.tenant == tenant, revisions.c.application == app)
        .order_by(revisions.c.number)
    )
    out = []
    for row in rows:
        when = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=dt.UTC)
        out.append(
            {
                "revision": row.number,
                "actor": row.actor,
                "reason": row.reason,
                "time": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "template": row.spec["template"],
                "spec": mask(row.spec, APPLICATION.secret_fields),
            }
        )
    return out


def revision_spec(session: Session, tenant: str, app: str, number: int) -> dict[str, Any]:
    spec = session.execute(
        select(revisions.c.spec).where(
            revisions.c.tenant == tenant,
            revisions.c.application == app,
            revisions.c.number == number,
        )
    ).scalar()
    if spec is None:
        raise NotFoundError(f"application {app} has no revision {number}", field="revision")
    result: dict[str, Any] = spec
    return result


def history(
    resources: ResourceService, p: Principal, tenant: str, app: str
) -> list[dict[str, Any]]:
    """The application's revisions, oldest first (404 unless the caller may read it)."""
    resources.get(p, "Application", tenant, app)
    with resources.db.reader() as session:
        return list_revisions(session, tenant, app)


def revision_changes(
    resources: ResourceService, p: Principal, tenant: str, app: str, old: int, new: int
) -> list[dict[str, Any]]:
    """What changed from revision `old` to `new`, secrets masked."""
    resources.get(p, "Application", tenant, app)
    with resources.db.reader() as session:
        before = revision_spec(session, tenant, app, old)
        after = revision_spec(session, tenant, app, new)
    secret = APPLICATION.secret_fields
    return diff(mask(before, secret), mask(after, secret))


def rollback(
    resources: ResourceService, p: Principal, tenant: str, app: str, revision: int
) -> dict[str, Any]:
    """Deliver an earlier revision again, as a new revision that says so."""
    current = resources.get(p, "Application", tenant, app)
    with resources.db.reader() as session:
        spec = revision_spec(session, tenant, app, revision)
    manifest = {
        "kind": "Application",
        "metadata": {
            "name": app,
            "tenant": tenant,
            "labels": current["metadata"]["labels"],
            "annotations": {
                **current["metadata"]["annotations"],
                CHANGE_CAUSE: f"rollback to revision {revision}",
            },
        },
        "spec": spec,
    }
    obj, _ = resources.apply(p, manifest, tenant, kind="Application", name=app)
    return obj
