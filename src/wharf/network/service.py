"""The port and domain registers: who may grant, what applications may claim, and the claims.

NodePorts are taken in the transaction of the application's write. A port is a row keyed by
(cluster, port): two writes racing for one port cannot both insert it, so the loser moves on to
the next free one (an automatic port) or is refused (a port asked for by number). Hosts are
claims in the platform-wide `host` register (store.claims), held by the application.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from wharf.core.crypto import SealError, SecretBox, place
from wharf.core.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from wharf.core.resources import spec_of
from wharf.identity.model import Action, Principal
from wharf.network.model import (
    CERTIFICATE,
    DOMAIN_GRANT,
    EXPIRY_WARNING_DAYS,
    HOSTS_ANNOTATION,
    NODE_PORT_QUOTA,
    NODE_PORT_RANGE,
    NODE_PORTS_ANNOTATION,
    CertificateSpec,
    DomainGrantSpec,
    NodePortRangeSpec,
    NodePortRequest,
    Route,
    RoutesView,
    certificate_facts,
    check_certificate,
    check_host,
    host_matches,
    node_ports_annotation,
)
from wharf.network.traffic import (
    NAMESPACE_NAME_LABEL,
    TRAFFIC_POLICY,
    Address,
    Peer,
    Place,
    Pod,
    TrafficPolicySpec,
    Verdict,
    check_rules,
    may_reach,
    render_policies,
)
from wharf.resources.service import Change, KindRules, named_project_scopes
from wharf.resources.service import Verdict as Verdict_
from wharf.store.claims import Holder, Wanted, hold
from wharf.store.resources import LabelIn, ResourceStore, Scopes, StoredResource
from wharf.store.tables import node_ports
from wharf.tenancy.model import (
    APP_LABEL,
    PROJECT,
    PROJECT_LABEL,
    TENANT_LABEL,
    NamespaceAdditions,
    isolation_policy,
    namespace_name,
    owner_labels,
)

HOST_REGISTER = "host"


@dataclass(frozen=True)
class Assignment:
    """One port of the register: which application's Service port holds it, where."""

    cluster: str
    port: int
    tenant: str
    project: str
    namespace: str
    application: str
    service: str
    service_port: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "nodePort": self.port,
            "project": self.project,
            "namespace": self.namespace,
            "application": self.application,
            "service": self.service,
            "port": self.service_port,
        }


def _must_exist(store: ResourceStore, kind: str, name: str, where: str) -> None:
    if store.get(kind, "", name) is None:
        raise InvalidError(f"{where}: no {kind.lower()} {name!r}", field=where)


def tenant_ranges(session: Session, tenant: str, cluster: str) -> list[NodePortRangeSpec]:
    specs = [NODE_PORT_RANGE.typed(r) for r in ResourceStore(session).query("NodePortRange")]
    return sorted(
        (s for s in specs if s.tenant == tenant and s.cluster == cluster), key=lambda s: s.first
    )


def _rows(session: Session, *where: Any) -> list[Assignment]:
    rows = session.execute(
        select(node_ports).where(*where).order_by(node_ports.c.cluster, node_ports.c.port)
    )
    return [Assignment(**r._mapping) for r in rows]


class NodePortRangeRules(KindRules[NodePortRangeSpec]):
    """Platform admins hand out ranges; ranges of one cluster never overlap, and a range is
    never cut below the ports its tenant's applications hold."""

    kind = NODE_PORT_RANGE

    def validate(self, change: Change[NodePortRangeSpec]) -> NodePortRangeSpec:
        spec = change.spec
        spec.check_ordered()
        store = ResourceStore(change.session)
        _must_exist(store, "Cluster", spec.cluster, "spec.cluster")
        _must_exist(store, "Tenant", spec.tenant, "spec.tenant")
        for other in store.query("NodePortRange"):
            theirs = NODE_PORT_RANGE.typed(other)
            if other.name == change.name or theirs.cluster != spec.cluster:
                continue
            if theirs.first <= spec.last and spec.first <= theirs.last:
                raise ConflictError(
                    f"spec.first: {spec.text()} overlaps NodePortRange {other.name} "
                    f"({theirs.text()}) in cluster {spec.cluster}",
                    field="spec.first",
                )
        if change.old is not None:
            self._keeps_held_ports(change.session, change.old, spec)
        return spec

    def before_delete(self, session: Session, p: Principal, old: StoredResource) -> None:
        self._keeps_held_ports(session, old, None)

    @staticmethod
    def _keeps_held_ports(
        session: Session, old: StoredResource, new: NodePortRangeSpec | None
    ) -> None:
        before = NODE_PORT_RANGE.typed(old)
        held = _rows(
            session,
            node_ports.c.cluster == before.cluster,
            node_ports.c.tenant == before.tenant,
            node_ports.c.port.between(before.first, before.last),
        )
        lost = [
            a
            for a in held
            if new is None
            or (new.cluster, new.tenant) != (before.cluster, before.tenant)
            or not new.holds(a.port)
        ]
        if lost:
            ports = ", ".join(str(a.port) for a in lost[:5])
            raise ConflictError(
                f"spec: applications of tenant {before.tenant} hold ports {ports} of this range "
                f"in cluster {before.cluster}; release them first",
                field="spec",
            )


def _free_ports(session: Session, cluster: str, ranges: list[NodePortRangeSpec]) -> Iterable[int]:
    """Free ports of the ranges, lowest first, as the register shows them now."""
    for r in ranges:
        taken = {
            a.port
            for a in _rows(
                session, node_ports.c.cluster == cluster, node_ports.c.port.between(r.first, r.last)
            )
        }
        yield from (p for p in range(r.first, r.last + 1) if p not in taken)


def _insert(session: Session, row: dict[str, Any]) -> bool:
    """Take one port; False when another write holds it (now, or committed meanwhile)."""
    try:
        with session.begin_nested():
            session.execute(insert(node_ports).values(**row))
        return True
    except IntegrityError:
        return False


@dataclass(frozen=True)
class PortHolder:
    tenant: str
    project: str
    namespace: str
    application: str


def assign_node_ports(
    session: Session, holder: PortHolder, clusters: list[str], requests: list[NodePortRequest]
) -> None:
    """Hold exactly one port per (cluster, request) for the application: keep what it holds
    and still asks for, take what is new, release the rest."""
    mine = _rows(
        session,
        node_ports.c.tenant == holder.tenant,
        node_ports.c.application == holder.application,
    )
    keep: set[tuple[str, int]] = set()
    for cluster in sorted(clusters):
        ranges = tenant_ranges(session, holder.tenant, cluster)
        for i, request in enumerate(requests):
            held = next(
                (
                    a
                    for a in mine
                    if (a.cluster, a.service, a.service_port)
                    == (cluster, request.service, request.port)
                    and request.nodePort in (None, a.port)
                ),
                None,
            )
            if held is not None:
                keep.add((cluster, held.port))
                continue
            port = _take(session, holder, cluster, ranges, request, f"spec.nodePorts[{i}]")
            keep.add((cluster, port))
    stale = [a for a in mine if (a.cluster, a.port) not in keep]
    for a in stale:
        session.execute(
            delete(node_ports).where(
                and_(node_ports.c.cluster == a.cluster, node_ports.c.port == a.port)
            )
        )


def _take(
    session: Session,
    holder: PortHolder,
    cluster: str,
    ranges: list[NodePortRangeSpec],
    request: NodePortRequest,
    where: str,
) -> int:
    granted = ", ".join(r.text() for r in ranges) or "none"
    row = {
        "cluster": cluster,
        "tenant": holder.tenant,
        "project": holder.project,
        "namespace": holder.namespace,
        "application": holder.application,
        "service": request.service,
        "service_port": request.port,
    }
    if request.nodePort is not None:
        if not any(r.holds(request.nodePort) for r in ranges):
            raise InvalidError(
                f"{where}.nodePort: {request.nodePort} is outside tenant {holder.tenant}'s "
                f"node ports in cluster {cluster} ({granted})",
                field=f"{where}.nodePort",
            )
        if not _insert(session, {**row, "port": request.nodePort}):
            raise ConflictError(
                f"{where}.nodePort: {request.nodePort} is already held in cluster {cluster}",
                field=f"{where}.nodePort",
            )
        return request.nodePort
    if not ranges:
        raise InvalidError(
            f"{where}: tenant {holder.tenant} has no node ports in cluster {cluster}; a "
            "platform admin grants them (NodePortRange)",
            field=where,
        )
    # A port taken by a concurrent write after our read fails its insert: try the next.
    for port in _free_ports(session, cluster, ranges):
        if _insert(session, {**row, "port": port}):
            return port
    raise ConflictError(
        f"{where}: every node port of tenant {holder.tenant} in cluster {cluster} is held "
        f"({granted})",
        field=where,
    )


def release_node_ports(session: Session, tenant: str, application: str) -> None:
    session.execute(
        delete(node_ports).where(
            node_ports.c.tenant == tenant, node_ports.c.application == application
        )
    )


def application_node_ports(
    session: Session, tenant: str, application: str
) -> dict[str, dict[tuple[str, int], int]]:
    """By cluster: (service, service port) -> node port, for rendering the Services."""
    out: dict[str, dict[tuple[str, int], int]] = {}
    for a in _rows(session, node_ports.c.tenant == tenant, node_ports.c.application == application):
        out.setdefault(a.cluster, {})[(a.service, a.service_port)] = a.port
    return out


def namespace_node_ports(session: Session, cluster: str, namespace: str) -> list[int]:
    """The ports the register gives one namespace of one cluster (its guard annotation)."""
    rows = _rows(session, node_ports.c.cluster == cluster, node_ports.c.namespace == namespace)
    return [a.port for a in rows]


def namespace_additions(
    session: Session, tenant: str, project: str, env: str, cluster: str
) -> NamespaceAdditions:
    """For the placement controller: the namespace lists its node ports for the tenant guard
    (its quota of them is exactly their number), and holds the project's traffic rules."""
    namespace = namespace_name(tenant, project, env)
    ports = namespace_node_ports(session, cluster, namespace)
    policy = traffic_policy(session, tenant, project)
    meta = {"namespace": namespace, "labels": owner_labels(tenant, project, env)}
    objects = render_policies(policy, Place(tenant, project, env), meta) if policy else []
    return NamespaceAdditions(
        annotations={
            NODE_PORTS_ANNOTATION: node_ports_annotation(ports),
            HOSTS_ANNOTATION: ",".join(namespace_hosts(session, tenant, project, env)),
        },
        hard={NODE_PORT_QUOTA: Fraction(len(ports))},
        objects=objects,
        isolation=policy is None or not policy.defaultDeny,
    )


def namespace_hosts(session: Session, tenant: str, project: str, env: str) -> list[str]:
    """The hosts the register gives one project environment's applications (its guard
    annotation): an Ingress there may serve only these."""
    apps = ResourceStore(session).query(
        "Application", scopes=[(tenant, LabelIn(PROJECT_LABEL, frozenset({project})))]
    )
    views = (spec_of(a, RoutesView) for a in apps)
    return sorted(
        {r.host for v in views if (v.project, v.environment) == (project, env) for r in v.routes}
    )


def node_port_view(session: Session, p: Principal, tenant: str) -> dict[str, Any]:
    """A tenant's ranges and the ports its applications hold, as far as the caller may see."""
    if not p.sees_tenant(tenant) or ResourceStore(session).get("Tenant", "", tenant) is None:
        raise NotFoundError(f"tenant {tenant!r} not found")
    projects = p.visible_projects(tenant)
    held = [
        a.as_dict()
        for a in _rows(session, node_ports.c.tenant == tenant)
        if projects is None or a.project in projects
    ]
    ranges = [
        {"cluster": s.cluster, "first": s.first, "last": s.last}
        for s in (NODE_PORT_RANGE.typed(r) for r in ResourceStore(session).query("NodePortRange"))
        if s.tenant == tenant
    ]
    return {"tenant": tenant, "ranges": ranges, "ports": held}


def cluster_node_ports(session: Session, p: Principal, cluster: str) -> list[dict[str, Any]]:
    """Every port of a cluster's register (platform readers only)."""
    if not p.can("read") or ResourceStore(session).get("Cluster", "", cluster) is None:
        raise NotFoundError(f"cluster {cluster!r} not found")
    return [
        {**a.as_dict(), "tenant": a.tenant} for a in _rows(session, node_ports.c.cluster == cluster)
    ]


# -- domains ---------------------------------------------------------------------------------
class DomainGrantRules(KindRules[DomainGrantSpec]):
    """Platform admins give tenants DNS names; one name is given to one tenant."""

    kind = DOMAIN_GRANT

    def validate(self, change: Change[DomainGrantSpec]) -> DomainGrantSpec:
        spec = change.spec
        store = ResourceStore(change.session)
        _must_exist(store, "Tenant", spec.tenant, "spec.tenant")
        hold(
            change.session,
            "domain",
            [Wanted(d, f"domain {d}", f"spec.domains[{i}]") for i, d in enumerate(spec.domains)],
            Holder("DomainGrant", "", change.name),
        )
        return spec

    def after_write(
        self,
        session: Session,
        stored: StoredResource | None,
        old: StoredResource | None,
        p: Principal,
    ) -> None:
        if stored is None and old is not None:
            hold(session, "domain", [], Holder("DomainGrant", "", old.name))


def tenant_domains(session: Session, tenant: str) -> list[str]:
    specs = (DOMAIN_GRANT.typed(g) for g in ResourceStore(session).query("DomainGrant"))
    return sorted({d for s in specs if s.tenant == tenant for d in s.domains})


def claim_hosts(
    session: Session, tenant: str, application: str, hosts: list[tuple[str, str]]
) -> None:
    """Hold exactly these hosts ((host, field) pairs) for the application: each under one of
    the tenant's domains, and not held by anything else on the platform."""
    granted = tenant_domains(session, tenant)
    wanted: dict[str, Wanted] = {}
    for host, where in hosts:
        check_host(host, where)
        if not any(host_matches(host, pattern) for pattern in granted):
            raise InvalidError(
                f"{where}: {host} is not under tenant {tenant}'s domains "
                f"({', '.join(granted) or 'none granted'})",
                field=where,
            )
        wanted.setdefault(host, Wanted(host, f"host {host}", where))
    hold(session, HOST_REGISTER, wanted.values(), Holder("Application", tenant, application))


# -- certificates ----------------------------------------------------------------------------
def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateRules(KindRules[CertificateSpec]):
    """Tenant admins upload certificates; the key is sealed to this certificate and field,
    and shown masked; the status says when it expires, and warns 30 days before."""

    kind = CERTIFICATE

    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def visible_scopes(self, p: Principal, tenant: str | None) -> Scopes:
        """Tenant-wide readers only, as `get` lets them read (not a project's members)."""
        tenants = p.visible_tenants()
        if tenants is None:
            return [(tenant, None)] if tenant is not None else [("*", None)]
        wanted = tenants if tenant is None else tenants & {tenant}
        return [(t, None) for t in sorted(wanted) if p.can("read", t)]

    def validate(self, change: Change[CertificateSpec]) -> CertificateSpec:
        spec = change.spec
        at = place(CERTIFICATE.name, change.tenant, change.name, "spec.key")
        old_key = change.old_spec.key if change.old_spec is not None else None
        key = self._key(spec.key, old_key, at)
        check_certificate(spec.certificate, key, _now())
        if old_key is not None and self._opened(old_key, at) == key:
            sealed = old_key  # unchanged: the same ciphertext, so nothing is written
        else:
            sealed = self.box.seal(key, at)
        return spec.model_copy(update={"key": sealed})

    def _key(self, sent: str, old_key: str | None, at: str) -> str:
        """The key in the clear: sent as it is, or sent back as it was read (kept)."""
        if old_key is not None and sent == old_key:
            return self.box.open_stored(old_key, at)
        if not self.box.is_sealed(sent):
            return sent
        try:
            return self.box.open(sent, at)
        except SealError as exc:
            raise InvalidError(
                f"spec.key: a sealed value that is not this certificate's ({exc}); send "
                "the key itself",
                field="spec.key",
            ) from None

    def _opened(self, sealed: str, at: str) -> str | None:
        try:
            return self.box.open_stored(sealed, at)
        except SealError:
            return None

    def present_status(self, stored: StoredResource, p: Principal) -> dict[str, Any]:
        facts = certificate_facts(CERTIFICATE.typed(stored).certificate)
        days = facts.days_left(_now())
        status: dict[str, Any] = {
            **stored.status,
            "dnsNames": facts.names,
            "notAfter": facts.not_after.isoformat().replace("+00:00", "Z"),
            "daysLeft": days,
        }
        if days < EXPIRY_WARNING_DAYS:
            status["warning"] = (
                f"expires in {max(days, 0)} days (on {status['notAfter']}): upload a new one"
            )
        return status

    def before_delete(self, session: Session, p: Principal, old: StoredResource) -> None:
        users = [
            a.name
            for a in ResourceStore(session).query("Application", scopes=[(old.tenant, None)])
            if any(r.tls == old.name for r in spec_of(a, RoutesView).routes)
        ]
        if users:
            raise ConflictError(
                f"certificate {old.name!r} is used by applications ({', '.join(users[:5])}): "
                "change their routes first"
            )

    def reseal(self, stored: StoredResource) -> dict[str, Any] | None:
        """The spec with its key sealed under the current sealing key; None when it is."""
        spec = CERTIFICATE.typed(stored)
        if not self.box.needs_reseal(spec.key):
            return None
        at = place(CERTIFICATE.name, stored.tenant, stored.name, "spec.key")
        sealed = self.box.seal(self.box.open_stored(spec.key, at), at)
        return CERTIFICATE.dump(spec.model_copy(update={"key": sealed}))

    def opened(self, session: Session, tenant: str, name: str) -> tuple[str, str] | None:
        """(certificate, key) in the clear, for rendering the TLS Secret; None when gone."""
        stored = ResourceStore(session).get("Certificate", tenant, name)
        if stored is None:
            return None
        at = place(CERTIFICATE.name, tenant, name, "spec.key")
        spec = CERTIFICATE.typed(stored)
        return spec.certificate, self.box.open_stored(spec.key, at)


def check_route_certificates(
    session: Session, p: Principal, tenant: str, routes: list[Route], used: set[str]
) -> None:
    """Each route with TLS names a certificate of the tenant that covers its host. Only those
    who may write certificates start using one (`used`: the ones the application had): its
    key lands in the project's namespace, whose Secrets every developer there reads."""
    store = ResourceStore(session)
    for i, route in enumerate(routes):
        if route.tls is None:
            continue
        where = f"spec.routes[{i}].tls"
        if route.tls not in used and not p.can("write", tenant):
            raise ForbiddenError(
                f"{where}: only the tenant's admins put a certificate into a route (its key "
                "goes into the project's namespace)",
                field=where,
            )
        stored = store.get("Certificate", tenant, route.tls)
        if stored is None:
            raise InvalidError(f"{where}: no certificate {route.tls!r}", field=where)
        facts = certificate_facts(CERTIFICATE.typed(stored).certificate)
        if not facts.covers(route.host):
            raise InvalidError(
                f"{where}: certificate {route.tls} does not name {route.host} "
                f"(it names {', '.join(facts.names)})",
                field=where,
            )
        if facts.not_after <= _now():
            raise InvalidError(f"{where}: certificate {route.tls} has expired", field=where)


# -- traffic ---------------------------------------------------------------------------------
def traffic_policy(session: Session, tenant: str, project: str) -> TrafficPolicySpec | None:
    stored = ResourceStore(session).get("TrafficPolicy", tenant, project)
    return TRAFFIC_POLICY.typed(stored) if stored is not None else None


class TrafficPolicyRules(KindRules[TrafficPolicySpec]):
    """A project's traffic rules, named after it: its project admins (and tenant admins)
    write them, its members read them."""

    kind = TRAFFIC_POLICY

    def project_of(self, name: str, spec: Any) -> str:
        return name

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict_:
        if p.can(action, tenant, name):
            return "allow"
        return "forbid" if p.can("read", tenant, name) else "hide"

    def visible_scopes(self, p: Principal, tenant: str | None) -> Scopes:
        return named_project_scopes(p, tenant)

    def validate(self, change: Change[TrafficPolicySpec]) -> TrafficPolicySpec:
        spec = change.spec
        store = ResourceStore(change.session)
        if store.get("Project", change.tenant, change.name) is None:
            raise InvalidError(
                f"metadata.name: a TrafficPolicy is named after its project; there is no "
                f"project {change.name!r}",
                field="metadata.name",
            )
        check_rules(spec, change.name)
        for i, rule in enumerate(spec.allow):
            for end, endpoint in (("from", rule.from_), ("to", rule.to)):
                other = endpoint.project
                if other is not None and store.get("Project", change.tenant, other) is None:
                    where = f"spec.allow[{i}].{end}.project"
                    raise InvalidError(f"{where}: no project {other!r}", field=where)
        return change.spec


def _endpoint(text: str, tenant: str, env: str, where: str) -> Peer:
    """`project/application`, or an IP address outside the cluster, or `dns`."""
    if text == "dns":
        labels = {NAMESPACE_NAME_LABEL: "kube-system"}
        return Pod("kube-system", labels, {"k8s-app": "kube-dns"})
    project, sep, app = text.partition("/")
    if sep and project and app:
        namespace = namespace_name(tenant, project, env)
        labels = {**owner_labels(tenant, project, env), NAMESPACE_NAME_LABEL: namespace}
        return Pod(namespace, labels, {APP_LABEL: app, TENANT_LABEL: tenant})
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise InvalidError(
            f"{where}: {text!r} is neither project/application, an IP address nor dns",
            field=where,
        ) from None
    return Address(text)


def rendered_policies(session: Session, tenant: str, env: str) -> dict[str, list[dict[str, Any]]]:
    """The NetworkPolicies Wharf renders in each namespace of the tenant's environment."""
    out: dict[str, list[dict[str, Any]]] = {}
    for project in ResourceStore(session).query("Project", scopes=[(tenant, None)]):
        if env not in {e.name for e in PROJECT.typed(project).environments}:
            continue
        namespace = namespace_name(tenant, project.name, env)
        meta = {"namespace": namespace, "labels": owner_labels(tenant, project.name, env)}
        policy = traffic_policy(session, tenant, project.name)
        policies = render_policies(policy, Place(tenant, project.name, env), meta) if policy else []
        if policy is None or not policy.defaultDeny:
            policies.append(isolation_policy(tenant, meta))
        out[namespace] = policies
    return out


def reachability(
    session: Session, p: Principal, tenant: str, env: str, source: str, target: str, port: int
) -> dict[str, Any]:
    """May `source` reach `target` on TCP `port`, by the policies Wharf renders?"""
    projects = p.visible_projects(tenant)
    if projects is not None and not projects:
        raise NotFoundError(f"tenant {tenant!r} not found")
    if not 1 <= port <= 65535:
        raise InvalidError(f"port: {port} is not a port (1-65535)", field="port")
    ends = {"from": source, "to": target}
    peers = {k: _endpoint(v, tenant, env, k) for k, v in ends.items()}
    for key, peer in peers.items():
        project = ends[key].partition("/")[0]
        hidden = projects is not None and project not in projects
        if isinstance(peer, Pod) and peer.namespace != "kube-system" and hidden:
            raise NotFoundError(f"{key}: project {project!r} not found in tenant {tenant!r}")
    verdict: Verdict = may_reach(
        peers["from"], peers["to"], port, rendered_policies(session, tenant, env)
    )
    return {
        "from": source,
        "to": target,
        "port": port,
        "environment": env,
        "allowed": verdict.allowed,
        "reasons": verdict.reasons,
    }
