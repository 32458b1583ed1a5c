"""Tenants, projects and the quota hierarchy, as pure rules.

capacity ≥ Σ tenant quotas ≥ Σ project quotas ≥ Σ namespace quotas, at every level. A project
quota is split over its (environment, cluster) namespaces; the split is exact (fractions), so
the namespaces' ResourceQuotas add up to the project quota and never to more.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as attribute
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from wharf.core.errors import InvalidError, QuotaExceededError
from wharf.core.quantity import (
    QuantityError,
    add,
    format_quantity,
    parse_resources,
    split_quantity,
)
from wharf.core.resources import NAME_RE, Kind, Spec

MANAGED_BY = "app.kubernetes.io/managed-by"
TENANT_LABEL = "wharf.io/tenant"
PROJECT_LABEL = "wharf.io/project"
ENV_LABEL = "wharf.io/env"
NAMESPACE_LABEL = "wharf.io/namespace"
APP_LABEL = "wharf.io/app"
NAMESPACE_QUOTA = "wharf-quota"  # the ResourceQuota of every namespace Wharf places
TENANT_NAME_MAX = 20
PROJECT_NAME_MAX = 24
ENV_NAME_MAX = 12
# Tenant names that would make namespaces look like the system's or Wharf's own.
RESERVED_TENANT_PREFIXES = ("kube", "wharf", "openshift", "default", "system")
PodSecurityLevel = Literal["baseline", "restricted", "privileged"]
POD_SECURITY_LABEL = "pod-security.kubernetes.io"
NODE_SELECTOR_ANNOTATION = "scheduler.alpha.kubernetes.io/node-selector"
DEFAULT_TOLERATIONS_ANNOTATION = "scheduler.alpha.kubernetes.io/defaultTolerations"
TOLERATIONS_WHITELIST_ANNOTATION = "scheduler.alpha.kubernetes.io/tolerationsWhitelist"
# Exposure on the nodes' addresses: never open unless the project's quota grants it.
CLOSED_UNLESS_GRANTED = ("services.nodeports", "services.loadbalancers")

_STANDARD = {
    "cpu",
    "memory",
    "ephemeral-storage",
    "pods",
    "services",
    "secrets",
    "configmaps",
    "replicationcontrollers",
    "resourcequotas",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
}
_PATTERNS = (
    re.compile(r"^count/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
    re.compile(
        r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\.storageclass\.storage\.k8s\.io/"
        r"(requests\.storage|persistentvolumeclaims)$"
    ),
    re.compile(
        r"^(requests\.|limits\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9-]+)+/[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
    ),
)
# Spellings Kubernetes treats as the same quota resource.
_CANONICAL = {
    "cpu": "requests.cpu",
    "memory": "requests.memory",
    "ephemeral-storage": "requests.ephemeral-storage",
}


def canonical(resource: str) -> str:
    """The one name a quota resource goes by, so that `cpu` and `requests.cpu` add up."""
    if resource in _CANONICAL:
        return _CANONICAL[resource]
    if (
        "/" in resource
        and not resource.startswith(("requests.", "limits.", "count/"))
        and (".storageclass.storage.k8s.io/" not in resource)
    ):
        return f"requests.{resource}"  # extended resources are quota'd by their requests
    return resource


def spelled_as(values: Mapping[str, str] | None, names: Iterable[str]) -> dict[str, str]:
    """`values` under the spelling `names` give each quota (`cpu` for `requests.cpu`): usage,
    reported in the clusters' names, shown next to the quota as its owner wrote it."""
    spelling = {canonical(name): name for name in names}
    return {spelling.get(canonical(k), k): v for k, v in (values or {}).items()}


def check_quota_names(quota: Mapping[str, str], where: str) -> None:
    for name in quota:
        if name not in _STANDARD and not any(p.fullmatch(name) for p in _PATTERNS):
            raise InvalidError(
                f"{where}.{name}: not a resource a Kubernetes ResourceQuota accepts "
                "(for example cpu, memory, pods, services.nodeports, requests.storage, "
                "nvidia.com/gpu, count/deployments.apps)",
                field=f"{where}.{name}",
            )


def amounts(quota: Mapping[str, str], where: str) -> dict[str, Fraction]:
    """Parse a quota into canonical names and exact amounts, with errors naming the field."""
    return dict(_amounts(tuple(quota.items()), where))


# A project write sums its tenant's other projects' quotas: most are alike, and each was
# parsed afresh (regular expressions, Fractions) inside the write transaction.
@functools.lru_cache(maxsize=4096)
def _amounts(items: tuple[tuple[str, str], ...], where: str) -> tuple[tuple[str, Fraction], ...]:
    quota = dict(items)
    check_quota_names(quota, where)
    parsed: dict[str, Fraction] = {}
    for name, text in quota.items():
        try:
            parsed.update(parse_resources({name: text}, where))
        except QuantityError as exc:
            raise InvalidError(str(exc), field=f"{where}.{name}") from None
    out: dict[str, Fraction] = {}
    for name, value in parsed.items():
        key = canonical(name)
        if key in out:
            raise InvalidError(
                f"{where}: {name} names the same resource as another key", field=f"{where}.{name}"
            )
        out[key] = value
    return tuple(out.items())


class Member(Spec):
    """A user and the role they hold in the project."""

    user: str = Field(description="A local user's name")
    role: Literal["project-admin", "developer", "viewer"] = Field(
        default="developer",
        description="project-admin manages the project; developer delivers; viewer reads",
    )


class Environment(Spec):
    """A stage of the project (dev, prod, …): one namespace in each of its clusters."""

    name: str = Field(
        description=f"Lowercase letters, digits and '-', at most {ENV_NAME_MAX}; part of "
        "the namespace names",
        json_schema_extra={"pattern": NAME_RE.pattern, "maxLength": ENV_NAME_MAX},
    )
    clusters: list[str] = Field(
        min_length=1, description="Registered clusters (granted to the tenant) to place it on"
    )
    quota: dict[str, str] = Field(
        default_factory=dict,
        description="This environment's share of the project quota (resource: quantity); "
        "what it does not name is split evenly with the other environments",
    )
    podSecurity: PodSecurityLevel | None = Field(
        default=None,
        description="Pod Security Standard enforced in this environment's namespaces "
        "(default: the project's); privileged only by a platform admin",
    )

    @field_validator("name")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value) or len(value) > ENV_NAME_MAX:
            raise ValueError(f"use at most {ENV_NAME_MAX} lowercase letters, digits and '-'")
        return value


class ContainerDefaults(Spec):
    """The LimitRange of the project's namespaces: what a container gets when it says nothing."""

    defaultRequest: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "100m", "memory": "128Mi"},
        description="Requests given to containers that set none",
    )
    default: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "500m", "memory": "512Mi"},
        description="Limits given to containers that set none",
    )


class DeliveryChecks(Spec):
    """What each delivery check does when it finds something: refuse, warn or nothing."""

    latestTag: Literal["refuse", "warn", "off"] = Field(
        default="refuse", description="Images without a tag or tagged :latest"
    )
    registry: Literal["refuse", "warn", "off"] = Field(
        default="refuse", description="Images from outside delivery.allowedRegistries"
    )
    resources: Literal["refuse", "warn", "off"] = Field(
        default="refuse", description="Containers without both requests and limits"
    )
    probes: Literal["refuse", "warn", "off"] = Field(
        default="warn", description="Long-running containers without readiness and liveness probes"
    )


class DeliveryPolicy(Spec):
    """Rules an application must meet before it is delivered to the project's namespaces."""

    allowedRegistries: list[str] = Field(
        default_factory=list, description="Image prefixes allowed; empty allows any"
    )
    checks: DeliveryChecks = Field(
        default_factory=DeliveryChecks, description="What each check does when it finds something"
    )


# A tenant's log retention: whole days or weeks, as the log store counts (by day partitions).
RETENTION_RE = re.compile(r"^([0-9]{1,5})([dw])$")
MIN_RETENTION = dt.timedelta(days=1)


def parse_retention(text: str, where: str = "spec.logs.retention") -> dt.timedelta:
    """`7d`, `30d`, `2w`: at least a day; anything else is an error naming `where`."""
    match = RETENTION_RE.fullmatch(text)  # not `match`: its `$` lets a trailing newline by
    if match is None:
        raise InvalidError(
            f"{where}: {text!r} is not a retention such as 7d, 30d or 2w (whole days or weeks)",
            field=where,
        )
    days = int(match.group(1)) * (7 if match.group(2) == "w" else 1)
    if days < MIN_RETENTION.days:
        raise InvalidError(f"{where}: at least 1d (asked {text})", field=where)
    return dt.timedelta(days=days)


class TenantLogs(Spec):
    """How long the tenant's collected logs are kept in the log store."""

    retention: str | None = Field(
        default=None,
        description="How long the tenant's lines are kept and searchable: whole days or weeks "
        "(7d, 30d, 2w), at least 1d and at most the log store's own retention "
        "(WHARF_LOG_STORE_RETENTION), which is the default. Search never returns older lines; "
        "a daily task deletes them from the store",
        json_schema_extra={"pattern": RETENTION_RE.pattern},
    )

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_retention(value)
            except InvalidError as exc:
                raise ValueError(str(exc).removeprefix("spec.logs.retention: ")) from None
        return value


class TenantSpec(Spec):
    """A department: its admins, the clusters and node pools granted to it, and its quota."""

    displayName: str = Field(default="", description="A name for people")
    admins: list[str] = Field(
        default_factory=list, description="Users who manage the tenant's projects and members"
    )
    viewers: list[str] = Field(default_factory=list, description="Users who may read everything")
    quota: dict[str, str] = Field(
        default_factory=dict,
        description="Resource: quantity, over all its clusters (cpu: '16', memory: 32Gi, "
        "pods: '100', services.nodeports: '4'); its projects' quotas add up to at most this",
    )
    clusters: list[str] = Field(
        default_factory=list, description="Registered clusters its projects may be placed on"
    )
    nodePools: list[str] = Field(
        default_factory=list, description="Node pools its namespaces schedule onto"
    )
    storageClasses: list[str] = Field(
        default_factory=list, description="Storage classes its projects may claim volumes of"
    )
    logs: TenantLogs | None = Field(
        default=None, description="Its collected logs: how long the log store keeps them"
    )

    def log_retention(self, store: dt.timedelta) -> dt.timedelta:
        """How long its lines are kept: its own retention, never past the store's."""
        if self.logs is None or self.logs.retention is None:
            return store
        return min(parse_retention(self.logs.retention), store)


class ProjectQuota(BaseModel):
    """The part of a project's spec its tenant's sums need, read from many rows at once."""

    quota: dict[str, str] = Field(default_factory=dict)


class ProjectSpec(Spec):
    """A team's project: members, quota, and environments placed on clusters."""

    displayName: str = Field(default="", description="A name for people")
    members: list[Member] = Field(
        default_factory=list, description="Users and their roles in the project"
    )
    quota: dict[str, str] = Field(
        default_factory=dict,
        description="Resource: quantity for the whole project, split over its environments' "
        "namespaces; within the tenant's quota",
    )
    environments: list[Environment] = Field(
        default_factory=list, description="Stages, each placed on one or more clusters"
    )
    containerDefaults: ContainerDefaults = Field(
        default_factory=ContainerDefaults,
        description="Requests and limits for containers that set none (LimitRange)",
    )
    delivery: DeliveryPolicy = Field(
        default_factory=DeliveryPolicy, description="Rules applications must meet"
    )
    podSecurity: PodSecurityLevel = Field(
        default="baseline",
        description="Pod Security Standard enforced in the project's namespaces: baseline, "
        "restricted, or privileged (only a platform admin may set privileged)",
    )

    def pod_security(self, env: str) -> PodSecurityLevel:
        for e in self.environments:
            if e.name == env and e.podSecurity is not None:
                return e.podSecurity
        return self.podSecurity

    @field_validator("environments")
    @classmethod
    def _unique_envs(cls, envs: list[Environment]) -> list[Environment]:
        names = [e.name for e in envs]
        if len(names) != len(set(names)):
            raise ValueError("environment names must be unique")
        return envs


TENANT = Kind(
    name="Tenant",
    plural="tenants",
    scope="platform",
    spec=TenantSpec,
    short_names=("tenant", "tenants"),
    columns=(("CLUSTERS", "spec.clusters"), ("QUOTA", "spec.quota")),
)
PROJECT = Kind(
    name="Project",
    plural="projects",
    scope="tenant",
    spec=ProjectSpec,
    short_names=("project", "projects", "proj"),
    columns=(("READY", "status.phase"), ("QUOTA", "spec.quota")),
)


def namespace_name(tenant: str, project: str, env: str) -> str:
    """`<tenant>--<project>-<env>`: no tenant name holds "--", so two tenants never share a
    namespace; within a tenant each name is claimed by one project (store.claims)."""
    return f"{tenant}--{project}-{env}"


def check_tenant_name(name: str) -> None:
    if "--" in name:
        raise InvalidError(
            "metadata.name: tenant names may not hold '--' (it sets the tenant off in "
            "namespace names)",
            field="metadata.name",
        )
    if name.startswith(RESERVED_TENANT_PREFIXES):
        raise InvalidError(
            f"metadata.name: tenant names may not start with "
            f"{', '.join(RESERVED_TENANT_PREFIXES)} (their namespaces would look like the "
            "system's)",
            field="metadata.name",
        )


def pod_security_labels(level: PodSecurityLevel) -> dict[str, str]:
    """Enforce the chosen standard; audit and warn against restricted, so teams see the way."""
    return {
        f"{POD_SECURITY_LABEL}/enforce": level,
        f"{POD_SECURITY_LABEL}/enforce-version": "latest",
        f"{POD_SECURITY_LABEL}/audit": "restricted",
        f"{POD_SECURITY_LABEL}/audit-version": "latest",
        f"{POD_SECURITY_LABEL}/warn": "restricted",
        f"{POD_SECURITY_LABEL}/warn-version": "latest",
    }


@dataclass(frozen=True)
class NamespaceAdditions:
    """What another capability adds to one namespace of one cluster: annotations (read by the
    tenant guard) and ResourceQuota entries that replace the project's share of them."""

    annotations: dict[str, str] = attribute(default_factory=dict)
    hard: dict[str, Fraction] = attribute(default_factory=dict)
    # Objects placed in the namespace with it (NetworkPolicies of traffic rules, say), and
    # whether the tenant-isolation policy stays (a default-deny takes its place).
    objects: list[dict[str, Any]] = attribute(default_factory=list)
    isolation: bool = True


def joined(parts: Iterable[NamespaceAdditions]) -> NamespaceAdditions:
    """What every capability adds to one namespace, together (the isolation policy stays
    unless one of them replaces it)."""
    together = NamespaceAdditions()
    isolation = True
    for part in parts:
        together.annotations.update(part.annotations)
        together.hard.update(part.hard)
        together.objects.extend(part.objects)
        isolation = isolation and part.isolation
    return NamespaceAdditions(together.annotations, together.hard, together.objects, isolation)


def owner_labels(tenant: str, project: str, env: str) -> dict[str, str]:
    """The labels that say a namespace (and what Wharf puts in it) is this project's."""
    return {MANAGED_BY: "wharf", TENANT_LABEL: tenant, PROJECT_LABEL: project, ENV_LABEL: env}


def isolation_policy(tenant: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Ingress only from the tenant's own namespaces (meta: the namespace and labels)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "wharf-tenant-isolation", **meta},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {TENANT_LABEL: tenant}}}]}],
        },
    }


def namespace_hard(
    share: Mapping[str, Fraction], tenant_quota: Mapping[str, Fraction]
) -> dict[str, Fraction]:
    """A namespace's ResourceQuota: its share, and zero of whatever the tenant limits (or what
    exposes nodes) that the project was not given, so nothing a parent limits is unlimited."""
    hard = dict.fromkeys((*tenant_quota, *CLOSED_UNLESS_GRANTED), Fraction(0))
    hard.update(share)
    return hard


def _fmt(resource: str, value: Fraction) -> str:
    return format_quantity(value, resource)


def check_within(
    what: str,
    parent: str,
    limit: Mapping[str, Fraction],
    others: Mapping[str, Fraction],
    asked: Mapping[str, Fraction],
    where: str,
    unlimited: Iterable[str] = (),
) -> None:
    """Refuse `asked` when others + asked exceeds limit; the error says by how much."""
    skip = set(unlimited)
    for resource, value in asked.items():
        if resource in skip:
            continue
        if resource not in limit:
            raise QuotaExceededError(
                f"{what}: {parent} has no quota for {resource}, so none can be handed out",
                field=f"{where}.{resource}",
            )
        total = others.get(resource, Fraction(0)) + value
        if total > limit[resource]:
            over = total - limit[resource]
            raise QuotaExceededError(
                f"{what}: {resource} would exceed {parent} by {_fmt(resource, over)} "
                f"({parent} {_fmt(resource, limit[resource])}, others hold "
                f"{_fmt(resource, others.get(resource, Fraction(0)))}, "
                f"this asks {_fmt(resource, value)})",
                field=f"{where}.{resource}",
                resource=resource,
                exceededBy=_fmt(resource, over),
            )


def check_not_below(
    what: str,
    asked: Mapping[str, Fraction],
    floor: Mapping[str, Fraction],
    floor_name: str,
    where: str,
) -> None:
    """Refuse lowering a quota under what is already used or handed out."""
    for resource, needed in floor.items():
        if needed <= 0:
            continue
        value = asked.get(resource)
        if value is None:
            raise QuotaExceededError(
                f"{what}: removing {resource} from the quota would leave {floor_name} "
                f"({_fmt(resource, needed)}) without a limit; lower it to at least that instead",
                field=f"{where}.{resource}",
            )
        if value < needed:
            raise QuotaExceededError(
                f"{what}: {resource} {_fmt(resource, value)} is below {floor_name} "
                f"({_fmt(resource, needed)}) by {_fmt(resource, needed - value)}; "
                "quota is never cut below what is in use",
                field=f"{where}.{resource}",
                resource=resource,
                shortBy=_fmt(resource, needed - value),
            )


def split_project_quota(
    quota: Mapping[str, Fraction], environments: list[Environment]
) -> dict[tuple[str, str], dict[str, Fraction]]:
    """Each (environment, cluster) namespace's share of the project quota.

    An environment that names a resource in its own quota gets that much; what is left of the
    project's quota for that resource is split evenly over the environments that do not name
    it. Each environment's share is split evenly over its clusters.
    """
    env_amounts = {
        e.name: amounts(e.quota, f"spec.environments[{i}].quota")
        for i, e in enumerate(environments)
    }
    per_env: dict[str, dict[str, Fraction]] = {e.name: {} for e in environments}
    for resource, total in quota.items():
        explicit = {e: a[resource] for e, a in env_amounts.items() if resource in a}
        claimed = sum(explicit.values(), Fraction(0))
        if claimed > total:
            raise QuotaExceededError(
                f"spec.environments: their {resource} quotas add up to "
                f"{_fmt(resource, claimed)}, over the project's {_fmt(resource, total)} by "
                f"{_fmt(resource, claimed - total)}",
                field="spec.environments",
            )
        rest = [e.name for e in environments if e.name not in explicit]
        shares = split_quantity(total - claimed, len(rest), resource) if rest else []
        for env_name, share in zip(rest, shares, strict=True):
            per_env[env_name][resource] = share
        for env_name, value in explicit.items():
            per_env[env_name][resource] = value
    for i, env_amount in enumerate(env_amounts.values()):
        extra = set(env_amount) - set(quota)
        if extra:
            name = sorted(extra)[0]
            raise QuotaExceededError(
                f"spec.environments[{i}].quota: the project has no quota for {name}",
                field=f"spec.environments[{i}].quota",
            )
    result: dict[tuple[str, str], dict[str, Fraction]] = {}
    for env in environments:
        parts: dict[str, list[Fraction]] = {
            r: split_quantity(v, len(env.clusters), r) for r, v in per_env[env.name].items()
        }
        for i, cluster in enumerate(env.clusters):
            result[(env.name, cluster)] = {r: shares[i] for r, shares in parts.items()}
    return result


def total(items: Iterable[Mapping[str, Fraction]]) -> dict[str, Fraction]:
    out: dict[str, Fraction] = {}
    for item in items:
        out = add(out, item)
    return out
