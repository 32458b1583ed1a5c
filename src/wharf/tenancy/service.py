"""Tenants and projects: who may see and change them, and the quota hierarchy on every write."""

from __future__ import annotations

import datetime as dt
import threading
from fractions import Fraction
from typing import Any

from sqlalchemy.orm import Session

from wharf.clusters.model import NODE_POOL, QUOTA_TO_CAPACITY
from wharf.core.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from wharf.core.quantity import QuantityError, format_resources, parse_quantity
from wharf.core.resources import check_name, spec_of
from wharf.identity import service as identity
from wharf.identity.model import Action, Principal
from wharf.resources.service import Change, KindRules, Verdict, named_project_scopes
from wharf.store.claims import Holder, Wanted, hold, release
from wharf.store.resources import LabelIn, ResourceStore, Scopes, SpecPart, StoredResource
from wharf.tenancy.model import (
    PROJECT,
    PROJECT_LABEL,
    PROJECT_NAME_MAX,
    TENANT,
    TENANT_NAME_MAX,
    ProjectQuota,
    ProjectSpec,
    TenantSpec,
    amounts,
    canonical,
    check_not_below,
    check_tenant_name,
    check_within,
    namespace_name,
    parse_retention,
    split_project_quota,
    total,
)


def _used(status: dict[str, Any]) -> dict[str, Fraction]:
    out: dict[str, Fraction] = {}
    for name, value in (status.get("used") or {}).items():
        try:
            out[canonical(name)] = parse_quantity(value)
        except QuantityError:
            continue
    return out


def platform_capacity(session: Session) -> dict[str, Fraction]:
    """Σ allocatable over every cluster that has reported its capacity."""
    capacity: dict[str, Fraction] = {}
    for cluster in ResourceStore(session).query("Cluster"):
        for name, value in (cluster.status.get("capacity", {}).get("allocatable") or {}).items():
            capacity[name] = capacity.get(name, Fraction(0)) + parse_quantity(value)
    return capacity


def _capacity_limits(capacity: dict[str, Fraction]) -> dict[str, Fraction]:
    """The capacity in quota names (requests.cpu draws on cpu, and so on)."""
    return {canonical(q): capacity.get(c, Fraction(0)) for q, c in QUOTA_TO_CAPACITY.items()}


def _users_exist(session: Session, users: list[str], where: str) -> None:
    for i, user in enumerate(users):
        if not identity.user_exists(session, user):
            raise InvalidError(f"{where}[{i}]: no user {user!r}", field=f"{where}[{i}]")


class TenantRules(KindRules[TenantSpec]):
    kind = TENANT
    owns_cluster_objects = True  # whatever carries its tenant label

    def __init__(self, log_retention: dt.timedelta = dt.timedelta(days=7)) -> None:
        # The log store's own retention: a tenant's may be shorter, never longer (the store
        # keeps nothing past it).
        self.log_retention = log_retention

    def audit_tenant(self, tenant: str, name: str) -> str:
        return name  # a tenant's own object is part of its trail

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        if p.can(action):
            return "allow"
        if p.can("read") or (old is not None and p.sees_tenant(name)):
            return "forbid" if action == "write" else "allow"
        return "hide"

    def visible_scopes(self, p: Principal, tenant: str | None) -> Scopes:
        if p.can("read"):
            return [("", None)]
        tenants = p.visible_tenants()
        return [("", tenants)] if tenants else []

    def validate(self, change: Change[TenantSpec]) -> TenantSpec:
        check_name(change.name, max_length=TENANT_NAME_MAX)
        if change.old is None:
            check_tenant_name(change.name)
        session, spec = change.session, change.spec
        store = ResourceStore(session)
        for i, cluster in enumerate(spec.clusters):
            if store.get("Cluster", "", cluster) is None:
                raise InvalidError(
                    f"spec.clusters[{i}]: no cluster {cluster!r}", field=f"spec.clusters[{i}]"
                )
        for i, pool in enumerate(spec.nodePools):
            stored_pool = store.get("NodePool", "", pool)
            if stored_pool is None:
                raise InvalidError(
                    f"spec.nodePools[{i}]: no node pool {pool!r}", field=f"spec.nodePools[{i}]"
                )
            pool_cluster = NODE_POOL.typed(stored_pool).cluster
            if pool_cluster not in spec.clusters:
                raise InvalidError(
                    f"spec.nodePools[{i}]: {pool!r} is in cluster "
                    f"{pool_cluster!r}, which spec.clusters does not grant",
                    field=f"spec.nodePools[{i}]",
                )
        _users_exist(session, spec.admins, "spec.admins")
        _users_exist(session, spec.viewers, "spec.viewers")
        self._check_log_retention(spec)
        asked = amounts(spec.quota, "spec.quota")
        others = total(
            amounts(TENANT.typed(t).quota, "spec.quota")
            for t in store.query("Tenant")
            if t.name != change.name
        )
        limits = _capacity_limits(platform_capacity(session))
        check_within(
            f"tenant {change.name}",
            "the platform's capacity",
            limits,
            others,
            asked,
            "spec.quota",
            unlimited=set(asked) - set(limits),
        )
        projects = store.query("Project", scopes=[(change.name, None)])
        handed_out = total(amounts(PROJECT.typed(p).quota, "spec.quota") for p in projects)
        check_not_below(
            f"tenant {change.name}", asked, handed_out, "what its projects hold", "spec.quota"
        )
        return spec

    def _check_log_retention(self, spec: TenantSpec) -> None:
        asked = spec.logs.retention if spec.logs else None
        if asked is not None and parse_retention(asked) > self.log_retention:
            raise InvalidError(
                f"spec.logs.retention: {asked} is longer than the log store keeps anything "
                f"({self.log_retention.days}d); use at most that, or leave it out for the "
                "store's retention",
                field="spec.logs.retention",
            )

    def before_delete(self, session: Session, p: Principal, old: StoredResource) -> None:
        projects = ResourceStore(session).query("Project", scopes=[(old.name, None)], limit=5)
        if projects:
            raise ConflictError(
                f"tenant {old.name!r} still has projects ({', '.join(x.name for x in projects)}): "
                "delete them first"
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
            identity.remove_scope(session, old.name)
            return
        spec = TENANT.typed(stored)
        members = [(u, "tenant-admin") for u in spec.admins]
        members += [(u, "viewer") for u in spec.viewers]
        identity.replace_members(session, stored.name, "", members)


class ProjectRules(KindRules[ProjectSpec]):
    kind = PROJECT
    owns_cluster_objects = True  # its namespaces

    def project_of(self, name: str, spec: Any) -> str:
        return name

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        if p.can(action, tenant, name):
            return "allow"
        if p.can("read", tenant, name) and (old is not None or p.can("read", tenant)):
            return "forbid"
        return "hide"

    def visible_scopes(self, p: Principal, tenant: str | None) -> Scopes:
        return named_project_scopes(p, tenant)

    def validate(self, change: Change[ProjectSpec]) -> ProjectSpec:
        check_name(change.name, max_length=PROJECT_NAME_MAX)
        session, spec, p = change.session, change.spec, change.principal
        store = ResourceStore(session)
        # The tenant's row is locked, so concurrent project writes in one tenant take turns
        # and the sum of their quotas is checked against what the others really hold.
        tenant = store.get("Tenant", "", change.tenant, lock=True)
        if tenant is None:
            raise NotFoundError(f"tenant {change.tenant!r} not found")
        _check_pod_security(change)
        old_quota = change.old_spec.quota if change.old_spec else {}
        quota_changes = change.old is None or spec.quota != old_quota
        if quota_changes and not p.is_tenant_admin(change.tenant):
            raise ForbiddenError(
                f"{p.user} may not set project quota: a tenant admin of "
                f"{change.tenant} hands it out"
            )
        _users_exist(session, [m.user for m in spec.members], "spec.members")
        tenant_spec = TENANT.typed(tenant)
        granted = tenant_spec.clusters
        for i, env in enumerate(spec.environments):
            for j, cluster in enumerate(env.clusters):
                if cluster not in granted:
                    raise InvalidError(
                        f"spec.environments[{i}].clusters[{j}]: tenant {change.tenant} may not "
                        f"use cluster {cluster!r} (it may use: {', '.join(granted) or 'none'})",
                        field=f"spec.environments[{i}].clusters[{j}]",
                    )
        asked = amounts(spec.quota, "spec.quota")
        tenant_quota = amounts(tenant_spec.quota, "spec.quota")
        siblings = total(
            _sibling_quota(store, x)
            for x in store.spec_parts("Project", ["quota"], scopes=[(change.tenant, None)])
            if x.name != change.name
        )
        check_within(
            f"project {change.name}",
            f"tenant {change.tenant}'s quota",
            tenant_quota,
            siblings,
            asked,
            "spec.quota",
        )
        if change.old is not None:
            check_not_below(
                f"project {change.name}",
                asked,
                _used(change.old.status),
                "its current usage",
                "spec.quota",
            )
        environments = spec.environments
        split_project_quota(asked, environments)
        hold(
            session,
            "namespace",
            [
                Wanted(
                    namespace_name(change.tenant, change.name, e.name),
                    f"namespace {namespace_name(change.tenant, change.name, e.name)}",
                    f"spec.environments[{i}].name",
                )
                for i, e in enumerate(environments)
            ],
            Holder("Project", change.tenant, change.name),
        )
        return spec

    def before_delete(self, session: Session, p: Principal, old: StoredResource) -> None:
        # Its namespaces hold the applications' objects: they go first, each on its own.
        apps = ResourceStore(session).query(
            "Application", scopes=[(old.tenant, LabelIn(PROJECT_LABEL, frozenset([old.name])))]
        )
        if apps:
            raise ConflictError(
                f"project {old.name!r} still has applications "
                f"({', '.join(a.name for a in apps[:5])}): delete them first"
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
            identity.remove_scope(session, old.tenant, old.name)
            release(session, Holder("Project", old.tenant, old.name))
            return
        members = [(m.user, m.role) for m in PROJECT.typed(stored).members]
        identity.replace_members(session, stored.tenant, stored.name, members)


# Versions of project rows whose whole spec met today's rules when a sibling's write read
# it: each is read and parsed once, not at every write of every sibling (inside the write
# transaction). A version never changes, so this holds across replicas too.
_MEETS_TODAY: dict[tuple[str, int], None] = {}
_MEETS_TODAY_MAX = 20_000
_MEETS_TODAY_LOCK = threading.Lock()


def _sibling_quota(store: ResourceStore, part: SpecPart) -> dict[str, Fraction]:
    """A sibling project's quota; an OutdatedSpecError naming it when its stored spec no
    longer meets today's rules (the write that needs it cannot be judged)."""
    version = (part.uid, part.resource_version)
    if version not in _MEETS_TODAY:
        stored = store.get("Project", part.tenant, part.name)
        if stored is not None:
            PROJECT.typed(stored)
        with _MEETS_TODAY_LOCK:
            if len(_MEETS_TODAY) >= _MEETS_TODAY_MAX:
                del _MEETS_TODAY[next(iter(_MEETS_TODAY))]
            _MEETS_TODAY[version] = None
    return amounts(spec_of(part, ProjectQuota).quota, "spec.quota")


def _pod_security_levels(spec: ProjectSpec) -> dict[str, tuple[str, str]]:
    """The standard each place asks for: {place: (field path, level)}, environments by name."""
    levels = {"": ("spec.podSecurity", str(spec.podSecurity))}
    for i, env in enumerate(spec.environments):
        if env.podSecurity:
            levels[env.name] = (f"spec.environments[{i}].podSecurity", env.podSecurity)
    return levels


def _check_pod_security(change: Change[ProjectSpec]) -> None:
    """Only a platform admin may allow privileged pods; others may keep it where it is."""
    if change.principal.can("write"):
        return
    before = _pod_security_levels(change.old_spec) if change.old_spec else {}
    for place, (where, level) in _pod_security_levels(change.spec).items():
        if level == "privileged" and before.get(place, ("", ""))[1] != "privileged":
            raise ForbiddenError(
                f"{where}: only a platform admin may allow privileged pods", field=where
            )


def tenant_usage(session: Session, tenant: str) -> dict[str, Any]:
    """What a tenant's projects hold (their quotas) and use (from the clusters), in the
    canonical quota names, so that `cpu` and `requests.cpu` add up."""
    projects = ResourceStore(session).query("Project", scopes=[(tenant, None)])
    allocated = total(amounts(PROJECT.typed(p).quota, "spec.quota") for p in projects)
    used = total(_used(p.status) for p in projects)
    return {
        "allocated": format_resources(allocated),
        "used": format_resources(used),
        "projects": len(projects),
    }
