"""Traffic rules of a project, rendered as NetworkPolicies, and a reachability query that
evaluates NetworkPolicies as Kubernetes defines them — pure.

A project's TrafficPolicy (named after the project) may deny all ingress and egress of its
namespaces by default, and allow traffic from one endpoint to another on some ports. An
endpoint is an application of the project, a project of the same tenant (all of its
applications, in the same environment), an external CIDR, or the cluster's DNS. A rule is
rendered in this project's namespaces only: as ingress where it ends here, as egress where it
starts here; the other project opens its own side with its own rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from wharf.core.errors import InvalidError
from wharf.core.resources import Kind, Spec
from wharf.tenancy.model import APP_LABEL, ENV_LABEL, PROJECT_LABEL, TENANT_LABEL

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


class TrafficEndpoint(Spec):
    """One end of a rule: exactly one of application, project, cidr, dns."""

    application: str | None = Field(default=None, description="An application of this project")
    project: str | None = Field(
        default=None,
        description="A project of the same tenant (every application of it, same environment)",
    )
    cidr: str | None = Field(default=None, description="An external network, e.g. 10.20.0.0/16")
    dns: bool = Field(default=False, description="The cluster's DNS (kube-system, port 53)")

    def check(self, where: str) -> None:
        """Exactly one end is named, and a CIDR parses."""
        chosen = [self.application, self.project, self.cidr, self.dns or None]
        if sum(x is not None for x in chosen) != 1:
            raise InvalidError(
                f"{where}: name exactly one of application, project, cidr, dns", field=where
            )
        if self.cidr is not None:
            try:
                ipaddress.ip_network(self.cidr, strict=False)
                if "/" not in self.cidr:  # an address alone: Kubernetes' ipBlock refuses it
                    raise ValueError(self.cidr)
            except ValueError:
                raise InvalidError(
                    f"{where}.cidr: {self.cidr!r} is not a CIDR (e.g. 10.20.0.0/16)",
                    field=f"{where}.cidr",
                ) from None


class TrafficRule(Spec):
    """Traffic allowed from one endpoint to another, on some TCP ports (all when empty)."""

    from_: TrafficEndpoint = Field(alias="from", description="Where the traffic starts")
    to: TrafficEndpoint = Field(description="Where it goes")
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, description="TCP ports allowed (empty: every port)"
    )


class TrafficPolicySpec(Spec):
    """A project's traffic rules (the policy is named after the project)."""

    defaultDeny: bool = Field(
        default=False,
        description="Deny all ingress and egress of the project's namespaces except what "
        "the rules allow (also traffic from the tenant's other projects)",
    )
    allow: list[TrafficRule] = Field(default_factory=list, description="What is allowed")


TRAFFIC_POLICY = Kind(
    name="TrafficPolicy",
    plural="trafficpolicies",
    scope="tenant",
    spec=TrafficPolicySpec,
    short_names=("trafficpolicy", "traffic"),
    columns=(("DEFAULT-DENY", "spec.defaultDeny"), ("RULES", "spec.allow")),
)


def _here(endpoint: TrafficEndpoint, project: str) -> bool:
    return endpoint.application is not None or endpoint.project == project


def check_rules(spec: TrafficPolicySpec, project: str) -> None:
    for i, rule in enumerate(spec.allow):
        where = f"spec.allow[{i}]"
        rule.from_.check(f"{where}.from")
        rule.to.check(f"{where}.to")
        if not (_here(rule.from_, project) or _here(rule.to, project)):
            raise InvalidError(
                f"{where}: a rule of project {project} starts or ends in it "
                "(an application of it, or project: " + project + ")",
                field=where,
            )
        if rule.from_.dns:
            raise InvalidError(f"{where}.from.dns: DNS is only a destination", field=where)


@dataclass(frozen=True)
class Place:
    """Where the policies go: the tenant, project and environment of one namespace."""

    tenant: str
    project: str
    env: str


def _selector(endpoint: TrafficEndpoint) -> dict[str, Any]:
    """The pods of this project an endpoint here means."""
    if endpoint.application is not None:
        return {"matchLabels": {APP_LABEL: endpoint.application}}
    return {}


def _peer(endpoint: TrafficEndpoint, place: Place) -> dict[str, Any]:
    if endpoint.application is not None:
        return {"podSelector": {"matchLabels": {APP_LABEL: endpoint.application}}}
    if endpoint.project is not None:
        labels = {TENANT_LABEL: place.tenant, PROJECT_LABEL: endpoint.project, ENV_LABEL: place.env}
        return {"namespaceSelector": {"matchLabels": labels}}
    if endpoint.cidr is not None:
        return {"ipBlock": {"cidr": endpoint.cidr}}
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}}}


def _ports(rule: TrafficRule) -> list[dict[str, Any]]:
    if rule.to.dns:
        return [dict(p) for p in DNS_PORTS]
    return [{"port": p, "protocol": "TCP"} for p in rule.ports]


def _policy(name: str, meta: Mapping[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, **meta},
        "spec": spec,
    }


def render_policies(
    spec: TrafficPolicySpec, place: Place, meta: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The NetworkPolicies of one namespace of the project (meta: namespace and labels)."""
    out = []
    if spec.defaultDeny:
        out.append(
            _policy(
                "wharf-default-deny",
                meta,
                {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            )
        )
    for i, rule in enumerate(spec.allow):
        entry: dict[str, Any] = {}
        ports = _ports(rule)
        if ports:
            entry["ports"] = ports
        if _here(rule.to, place.project) and not rule.to.dns:
            ingress = {**entry, "from": [_peer(rule.from_, place)]}
            out.append(
                _policy(
                    f"wharf-allow-{i}-in",
                    meta,
                    {
                        "podSelector": _selector(rule.to),
                        "policyTypes": ["Ingress"],
                        "ingress": [ingress],
                    },
                )
            )
        if _here(rule.from_, place.project):
            egress = {**entry, "to": [_peer(rule.to, place)]}
            out.append(
                _policy(
                    f"wharf-allow-{i}-out",
                    meta,
                    {
                        "podSelector": _selector(rule.from_),
                        "policyTypes": ["Egress"],
                        "egress": [egress],
                    },
                )
            )
    return out


# -- evaluating NetworkPolicies ----------------------------------------------------------------
@dataclass(frozen=True)
class Pod:
    """A pod as NetworkPolicies see it: its namespace, the namespace's labels, its labels."""

    namespace: str
    namespace_labels: Mapping[str, str]
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Address:
    """Something outside the cluster's pods, by IP."""

    ip: str


Peer = Pod | Address


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions); {} selects all."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], other: Peer, own_namespace: str) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, Address):
            return False  # pods are not addressed by IP in this model
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        inside = ip in ipaddress.ip_network(block["cidr"], strict=False)
        return inside and not any(
            ip in ipaddress.ip_network(e, strict=False) for e in block.get("except", [])
        )
    if not isinstance(other, Pod):
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != own_namespace:
        return False  # a podSelector alone means pods of the policy's own namespace
    return selects(peer.get("podSelector"), other.labels)


def _port_matches(ports: list[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        first = p.get("port")
        last = p.get("endPort", first)
        if first is None or (isinstance(first, int) and first <= port <= last):
            return True
    return False


Direction = Literal["Ingress", "Egress"]


def _types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy.get("spec", {})
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _allowed(
    policies: list[Mapping[str, Any]],
    pod: Pod,
    other: Peer,
    port: int,
    protocol: str,
    direction: Direction,
) -> tuple[bool, str]:
    """Whether `pod` may receive from (Ingress) or send to (Egress) `other`, and why."""
    selecting = [
        p
        for p in policies
        if direction in _types(p) and selects(p.get("spec", {}).get("podSelector"), pod.labels)
    ]
    if not selecting:
        return True, f"no {direction.lower()} policy selects it in {pod.namespace}"
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy.get("spec", {}).get(key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(_peer_matches(x, other, pod.namespace) for x in peers)
            if peer_ok and _port_matches(rule.get("ports"), port, protocol):
                return True, f"{policy['metadata']['name']} in {pod.namespace} allows it"
    names = ", ".join(sorted(p["metadata"]["name"] for p in selecting))
    return False, f"{direction.lower()} in {pod.namespace} is limited by {names}, none allows it"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reasons: list[str]


def may_reach(
    source: Peer,
    target: Peer,
    port: int,
    policies: Mapping[str, Sequence[Mapping[str, Any]]],
    protocol: str = "TCP",
) -> Verdict:
    """May `source` open a connection to `target` on `port`? Egress of the source's namespace
    and ingress of the target's must both allow it (policies by namespace)."""
    reasons = []
    allowed = True
    if isinstance(source, Pod):
        ok, why = _allowed(
            list(policies.get(source.namespace, [])), source, target, port, protocol, "Egress"
        )
        allowed &= ok
        reasons.append(why)
    if isinstance(target, Pod):
        ok, why = _allowed(
            list(policies.get(target.namespace, [])), target, source, port, protocol, "Ingress"
        )
        allowed &= ok
        reasons.append(why)
    return Verdict(allowed, reasons)
