"""Ports and domains that applications expose, as pure rules.

- NodePorts: a platform admin gives a tenant a range of ports in a cluster (NodePortRange);
  an application asks for a port for one of its Services' ports, by number or "any free one";
  the register (store.tables.node_ports) holds each (cluster, port) once. Wharf writes the
  number into the Service itself (`nodePort`), so the cluster's own allocator agrees with the
  register, and the tenant guard lets a tenant namespace use only the ports listed on it.
- Domains: a platform admin gives a tenant DNS names (DomainGrant); an application claims
  hosts under them for its routes, each host once across the platform.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, Field

from wharf.clusters.model import GatewayRef, Routing
from wharf.core.errors import InvalidError
from wharf.core.quantity import QuantityError, format_quantity, parse_quantity
from wharf.core.resources import Kind, Spec
from wharf.tenancy.guard import HOSTS_ANNOTATION as HOSTS_ANNOTATION
from wharf.tenancy.guard import NODE_PORTS_ANNOTATION as NODE_PORTS_ANNOTATION

# Kubernetes' default --service-node-port-range; ranges must lie inside it, or the cluster
# would refuse the nodePort Wharf writes.
NODE_PORT_MIN = 30000
NODE_PORT_MAX = 32767
NODE_PORT_QUOTA = "services.nodeports"


class NodePortRangeSpec(Spec):
    """Ports of one cluster that one tenant's applications may expose on every node."""

    cluster: str = Field(description="The registered cluster the ports are in")
    tenant: str = Field(description="The tenant whose applications may use them")
    first: int = Field(
        ge=NODE_PORT_MIN, le=NODE_PORT_MAX, description="Lowest port of the range (inclusive)"
    )
    last: int = Field(
        ge=NODE_PORT_MIN, le=NODE_PORT_MAX, description="Highest port of the range (inclusive)"
    )

    def check_ordered(self) -> None:
        if self.last < self.first:
            raise InvalidError(
                f"spec.last: {self.last} is below spec.first ({self.first})", field="spec.last"
            )

    def holds(self, port: int) -> bool:
        return self.first <= port <= self.last

    def text(self) -> str:
        return f"{self.first}-{self.last}"


class NodePortRequest(Spec):
    """One port of one of the application's Services, exposed on every node of each cluster."""

    service: str = Field(description="The name of a Service the template renders")
    port: int = Field(ge=1, le=65535, description="The Service port to expose (spec.ports[].port)")
    nodePort: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="The node port wanted, inside the tenant's ranges; left out, Wharf "
        "assigns a free one in each cluster",
    )


NODE_PORT_RANGE = Kind(
    name="NodePortRange",
    plural="nodeportranges",
    scope="platform",
    spec=NodePortRangeSpec,
    short_names=("nodeportrange", "npr"),
    columns=(
        ("CLUSTER", "spec.cluster"),
        ("TENANT", "spec.tenant"),
        ("FIRST", "spec.first"),
        ("LAST", "spec.last"),
    ),
)


def service_ports(objects: list[dict[str, Any]]) -> dict[str, set[int]]:
    """The ports of each Service among rendered objects, by Service name."""
    out: dict[str, set[int]] = {}
    for obj in objects:
        if obj.get("kind") == "Service":
            ports = obj.get("spec", {}).get("ports", [])
            out[obj["metadata"]["name"]] = {
                p["port"] for p in ports if isinstance(p, dict) and isinstance(p.get("port"), int)
            }
    return out


def _check_service_port(services: dict[str, set[int]], service: str, port: int, where: str) -> None:
    """The Service and port a request or route names are ones the template renders."""
    if service not in services:
        raise InvalidError(
            f"{where}.service: the template renders no Service {service!r} "
            f"(it renders: {', '.join(sorted(services)) or 'none'})",
            field=f"{where}.service",
        )
    if port not in services[service]:
        raise InvalidError(
            f"{where}.port: Service {service} has no port {port}", field=f"{where}.port"
        )


def check_node_port_requests(
    requests: list[NodePortRequest], objects: list[dict[str, Any]]
) -> None:
    """Each request names a Service port the template renders, once."""
    services = service_ports(objects)
    seen: set[tuple[str, int]] = set()
    for i, request in enumerate(requests):
        where = f"spec.nodePorts[{i}]"
        _check_service_port(services, request.service, request.port, where)
        if (request.service, request.port) in seen:
            raise InvalidError(
                f"{where}: Service {request.service} port {request.port} is asked for twice",
                field=where,
            )
        seen.add((request.service, request.port))


def expose_node_ports(
    objects: list[dict[str, Any]], assigned: Mapping[tuple[str, int], int]
) -> list[dict[str, Any]]:
    """The objects with each assigned (service, port) made a NodePort of its register number."""
    if not assigned:
        return objects
    out = copy.deepcopy(objects)
    for obj in out:
        if obj.get("kind") != "Service":
            continue
        name = obj["metadata"]["name"]
        ports = obj.get("spec", {}).get("ports", [])
        numbers = {p.get("port"): assigned.get((name, p.get("port"))) for p in ports}
        if not any(numbers.values()):
            continue
        obj["spec"]["type"] = "NodePort"
        for port in ports:
            if numbers.get(port.get("port")):
                port["nodePort"] = numbers[port.get("port")]
    return out


def node_ports_annotation(ports: list[int]) -> str:
    return ",".join(str(p) for p in sorted(ports))


# -- routes ----------------------------------------------------------------------------------
PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


class Route(Spec):
    """An HTTP route into one of the application's Services: host and path prefix."""

    host: str = Field(
        description="A host under one of the tenant's domains (DomainGrant), held by this "
        "application alone across the platform"
    )
    path: str = Field(default="/", description="Path prefix, starting with /")
    service: str = Field(description="A Service the template renders")
    port: int = Field(ge=1, le=65535, description="Its port (spec.ports[].port)")
    tls: str | None = Field(
        default=None,
        description="A Certificate of the tenant whose names cover the host: HTTPS, and "
        "HTTP redirected to it",
    )


class RoutesView(BaseModel):
    """An Application's routes, read through this view because network may not import apps
    (capabilities depend one way); the rest of its spec is ignored."""

    model_config = ConfigDict(extra="ignore")

    project: str = ""
    environment: str = ""
    routes: list[Route] = Field(default_factory=list)


def check_routes(routes: list[Route], objects: list[dict[str, Any]]) -> None:
    """Paths are paths, and each route leads to a Service port the template renders."""
    services = service_ports(objects)
    seen: set[tuple[str, str]] = set()
    for i, route in enumerate(routes):
        where = f"spec.routes[{i}]"
        check_host(route.host, f"{where}.host")
        if not PATH_RE.fullmatch(route.path) or "//" in route.path or len(route.path) > 1024:
            raise InvalidError(
                f"{where}.path: {route.path!r} is not a path prefix (starts with /, URL "
                "characters only)",
                field=f"{where}.path",
            )
        _check_service_port(services, route.service, route.port, where)
        if (route.host, route.path) in seen:
            raise InvalidError(
                f"{where}.path: {route.host}{route.path} is routed twice", field=f"{where}.path"
            )
        seen.add((route.host, route.path))


def tls_secret_name(app: str, certificate: str) -> str:
    return f"{app}-tls-{certificate}"


GATEWAY_GROUP = "gateway.networking.k8s.io"
# On each HTTPRoute Wharf writes: what it serves (http, https, or redirect to https).
SERVES_ANNOTATION = "wharf.io/serves"
CERT_MANAGER_GROUP = "cert-manager.io"


@dataclass(frozen=True)
class CanarySplit:
    """A release's share of one host's traffic on its HTTPRoute: `weight` percent of the
    requests to `service` go to `canary` instead, and requests matching one of `matches`
    (Gateway API header matches) go to the canary alone."""

    host: str
    service: str
    canary: str
    weight: int
    matches: tuple[dict[str, str], ...] = ()


def route_objects(
    app: str, routes: list[Route], routing: Routing, split: CanarySplit | None = None
) -> list[dict[str, Any]]:
    """The objects that serve the application's routes in one cluster (none without routes):
    HTTPRoutes attached to the cluster's Gateway where it has one (with a release's `split`
    of the traffic), else one Ingress."""
    if not routes:
        return []
    if routing.gateway is not None:
        return http_routes(app, routes, routing.gateway, split)
    return ingress_for(app, routes, routing.ingress_class)


def ingress_for(
    app: str, routes: list[Route], ingress_class: str | None = None
) -> list[dict[str, Any]]:
    """One Ingress for the application's routes: a rule per host, TLS from the certificates'
    Secrets, and plain HTTP redirected where TLS is on."""
    rules: dict[str, list[dict[str, Any]]] = {}
    tls: dict[str, list[str]] = {}
    for route in routes:
        backend = {"service": {"name": route.service, "port": {"number": route.port}}}
        rules.setdefault(route.host, []).append(
            {"path": route.path, "pathType": "Prefix", "backend": backend}
        )
        if route.tls is not None and route.host not in tls.setdefault(route.tls, []):
            tls[route.tls].append(route.host)
    spec: dict[str, Any] = {
        "rules": [{"host": h, "http": {"paths": paths}} for h, paths in rules.items()]
    }
    if ingress_class:
        spec["ingressClassName"] = ingress_class
    metadata: dict[str, Any] = {"name": f"{app}-routes"}
    if tls:
        spec["tls"] = [
            {"hosts": hosts, "secretName": tls_secret_name(app, cert)}
            for cert, hosts in sorted(tls.items())
        ]
        metadata["annotations"] = {"nginx.ingress.kubernetes.io/ssl-redirect": "true"}
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": metadata,
            "spec": spec,
        }
    ]


def _route_name(app: str, host: str) -> str:
    """A stable name per (application, host) that fits any host (DNS names run to 253)."""
    return f"{app}-{hashlib.sha256(host.encode()).hexdigest()[:10]}"


def _http_route(
    name: str, serves: str, host: str, gateway: GatewayRef, rules: list[dict[str, Any]]
) -> dict[str, Any]:
    listener = gateway.httpsListener if serves == "https" else gateway.httpListener
    parent = {
        "group": GATEWAY_GROUP,
        "kind": "Gateway",
        "name": gateway.name,
        "namespace": gateway.namespace,
        "sectionName": listener,
    }
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "annotations": {SERVES_ANNOTATION: serves}},
        "spec": {"parentRefs": [parent], "hostnames": [host], "rules": rules},
    }


def route_name(app: str, host: str) -> str:
    """The name of the HTTPRoute that serves the host (its HTTPS one where it has TLS)."""
    return _route_name(app, host)


def _route_rules(route: Route, split: CanarySplit | None) -> list[dict[str, Any]]:
    """A route's rules: its path to its Service; under a release's split of its host and
    Service, first a rule per match to the canary alone, then the weights between the two."""
    path = {"type": "PathPrefix", "value": route.path}
    backend = {"name": route.service, "port": route.port}
    if split is None or (split.host, split.service) != (route.host, route.service):
        return [{"matches": [{"path": path}], "backendRefs": [backend]}]
    canary = {"name": split.canary, "port": route.port}
    matched = [
        {"matches": [{"path": path, "headers": [match]}], "backendRefs": [canary]}
        for match in split.matches
    ]
    weighted = [{**backend, "weight": 100 - split.weight}, {**canary, "weight": split.weight}]
    return [*matched, {"matches": [{"path": path}], "backendRefs": weighted}]


def http_routes(
    app: str, routes: list[Route], gateway: GatewayRef, split: CanarySplit | None = None
) -> list[dict[str, Any]]:
    """An HTTPRoute per host (rules apply to all of a route's hostnames, and hosts may lead to
    different Services): on the HTTPS listener where the host has TLS, with a second route on
    the HTTP listener that redirects it to HTTPS; on the HTTP listener otherwise. Backends are
    Services of the application's own namespace (no namespace is written, so none other)."""
    by_host: dict[str, list[Route]] = {}
    for route in routes:
        by_host.setdefault(route.host, []).append(route)
    out = []
    for host, mine in by_host.items():
        rules = [rule for r in mine for rule in _route_rules(r, split)]
        name = _route_name(app, host)
        if not any(r.tls for r in mine):
            out.append(_http_route(name, "http", host, gateway, rules))
            continue
        out.append(_http_route(name, "https", host, gateway, rules))
        redirect = {
            "type": "RequestRedirect",
            "requestRedirect": {"scheme": "https", "statusCode": 301},
        }
        out.append(
            _http_route(f"{name}-redirect", "redirect", host, gateway, [{"filters": [redirect]}])
        )
    return out


def tls_objects(
    app: str,
    routes: list[Route],
    routing: Routing,
    certificates: Mapping[str, tuple[str, str]],
    labels: dict[str, str],
) -> list[dict[str, Any]]:
    """What holds the routes' TLS certificates in one cluster: a cert-manager Certificate per
    uploaded certificate used (for exactly the hosts routed with it) where the cluster has a
    ClusterIssuer, else the uploaded certificate as a Secret; with a Gateway, a ReferenceGrant
    lets Gateways of the Gateway's namespace (the platform's) read exactly those Secrets."""
    hosts: dict[str, list[str]] = {}
    for route in routes:
        if route.tls is not None and route.host not in hosts.setdefault(route.tls, []):
            hosts[route.tls].append(route.host)
    out: list[dict[str, Any]] = []
    for name in sorted(hosts):
        if routing.cluster_issuer is not None:
            out.append(issued_certificate(app, name, hosts[name], routing.cluster_issuer, labels))
        elif name in certificates:
            pem, key = certificates[name]
            out.append(tls_secret(app, name, pem, key, labels))
    if routing.gateway is not None and hosts:
        out.append(secret_grant(app, sorted(hosts), routing.gateway, labels))
    return out


def issued_certificate(
    app: str, name: str, hosts: list[str], issuer: str, labels: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": f"{CERT_MANAGER_GROUP}/v1",
        "kind": "Certificate",
        "metadata": {"name": tls_secret_name(app, name), "labels": labels},
        "spec": {
            "secretName": tls_secret_name(app, name),
            "dnsNames": hosts,
            "issuerRef": {"group": CERT_MANAGER_GROUP, "kind": "ClusterIssuer", "name": issuer},
        },
    }


def secret_grant(
    app: str, certificates: list[str], gateway: GatewayRef, labels: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": f"{app}-tls", "labels": labels},
        "spec": {
            "from": [{"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": gateway.namespace}],
            "to": [
                {"group": "", "kind": "Secret", "name": tls_secret_name(app, c)}
                for c in certificates
            ],
        },
    }


# -- domains ---------------------------------------------------------------------------------
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
HOST_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
PATTERN_RE = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})+$")


def check_host(host: str, where: str) -> None:
    if len(host) > 253 or not HOST_RE.fullmatch(host):  # `$` alone lets "\n" through
        raise InvalidError(
            f"{where}: {host!r} is not a valid host name (lowercase DNS labels separated by "
            "dots, e.g. shop.retail.example.com)",
            field=where,
        )


def host_matches(host: str, pattern: str) -> bool:
    """`*.example.com` matches exactly one label in front (as a TLS wildcard does);
    any other pattern only itself."""
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return host == pattern


class DomainGrantSpec(Spec):
    """DNS names one tenant's applications may serve, as exact hosts or one-label wildcards."""

    tenant: str = Field(description="The tenant whose applications may claim hosts under them")
    domains: list[Annotated[str, Field(pattern=PATTERN_RE.pattern, max_length=253)]] = Field(
        min_length=1,
        description="Host names (shop.example.com: only that host) or wildcards "
        "(*.retail.example.com: any one label in front, e.g. shop.retail.example.com; "
        "not deeper)",
    )


DOMAIN_GRANT = Kind(
    name="DomainGrant",
    plural="domaingrants",
    scope="platform",
    spec=DomainGrantSpec,
    short_names=("domaingrant", "domains"),
    columns=(("TENANT", "spec.tenant"), ("DOMAINS", "spec.domains")),
)


# -- certificates ----------------------------------------------------------------------------
EXPIRY_WARNING_DAYS = 30


class CertificateSpec(Spec):
    """A TLS certificate the tenant uploads for its routes; the key is sealed at rest."""

    certificate: str = Field(description="PEM: the certificate, then any intermediates")
    key: str = Field(description="PEM: its private key (sealed at rest, shown masked)")


@dataclass(frozen=True)
class CertificateFacts:
    names: list[str]
    not_after: dt.datetime

    def days_left(self, now: dt.datetime) -> int:
        return (self.not_after - now).days

    def covers(self, host: str) -> bool:
        return any(host_matches(host, name) for name in self.names)


def certificate_facts(pem: str) -> CertificateFacts:
    """The DNS names and expiry of a PEM certificate; InvalidError naming spec.certificate."""
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise InvalidError(
            f"spec.certificate: not a PEM certificate ({exc})", field="spec.certificate"
        ) from None
    leaf = certs[0]
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = sans.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return CertificateFacts([n.lower() for n in names], leaf.not_valid_after_utc)


def check_certificate(pem: str, key_pem: str, now: dt.datetime) -> CertificateFacts:
    """A certificate that is in date, names hosts, and whose key is `key_pem`."""
    facts = certificate_facts(pem)
    if facts.not_after <= now:
        raise InvalidError(
            f"spec.certificate: expired on {facts.not_after.isoformat()}",
            field="spec.certificate",
        )
    if not facts.names:
        raise InvalidError(
            "spec.certificate: names no DNS host (subjectAltName)", field="spec.certificate"
        )
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidError(
            f"spec.key: not an unencrypted PEM private key ({exc})", field="spec.key"
        ) from None
    leaf = x509.load_pem_x509_certificates(pem.encode())[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != leaf.public_key().public_bytes(
        encoding, public
    ):
        raise InvalidError(
            "spec.key: this key does not belong to the certificate", field="spec.key"
        )
    return facts


CERTIFICATE = Kind(
    name="Certificate",
    plural="certificates",
    scope="tenant",
    spec=CertificateSpec,
    secret_fields=("key",),
    short_names=("certificate", "cert", "certs"),
    columns=(("NAMES", "status.dnsNames"), ("EXPIRES", "status.notAfter")),
)


def tls_secret(
    app: str, certificate: str, pem: str, key: str, labels: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": tls_secret_name(app, certificate), "labels": labels},
        "data": {
            "tls.crt": base64.b64encode(pem.encode()).decode(),
            "tls.key": base64.b64encode(key.encode()).decode(),
        },
    }


# -- volumes ---------------------------------------------------------------------------------
def class_storage_quota(storage_class: str) -> str:
    """The ResourceQuota entry that caps one storage class's requested capacity."""
    return f"{storage_class}.storageclass.storage.k8s.io/requests.storage"


@dataclass(frozen=True)
class Volume:
    """A claim the rendered objects make: standalone, or one per replica of a StatefulSet."""

    where: str  # e.g. "StatefulSet db, volumeClaimTemplates data"
    storage_class: str
    size: Fraction
    count: int


def _claim(spec: dict[str, Any], where: str, count: int) -> Volume:
    requested = spec.get("resources", {}).get("requests", {}).get("storage", "0")
    try:
        size = parse_quantity(str(requested))
    except QuantityError:
        raise InvalidError(
            f"spec.values: {where} asks for {requested!r}, not a quantity", field="spec.values"
        ) from None
    return Volume(where, str(spec.get("storageClassName") or ""), size, count)


def volumes(objects: list[dict[str, Any]]) -> list[Volume]:
    out = []
    for obj in objects:
        name = obj.get("metadata", {}).get("name", "")
        if obj.get("kind") == "PersistentVolumeClaim":
            out.append(_claim(obj.get("spec", {}), f"PersistentVolumeClaim {name}", 1))
        if obj.get("kind") == "StatefulSet":
            replicas = int(obj.get("spec", {}).get("replicas", 1) or 0)
            for template in obj.get("spec", {}).get("volumeClaimTemplates", []):
                where = f"StatefulSet {name}, volumeClaimTemplates {template['metadata']['name']}"
                out.append(_claim(template.get("spec", {}), where, replicas))
    return out


def check_volume_classes(objects: list[dict[str, Any]], tenant: str, granted: list[str]) -> None:
    """Every volume that names a storage class names one granted to the tenant: refused here,
    before anything reaches a cluster. (A claim that names none is the cluster's to refuse:
    the tenant guard admits no claim without a class.)"""
    for volume in volumes(objects):
        if volume.storage_class and volume.storage_class not in granted:
            raise InvalidError(
                f"spec.values: {volume.where} names storage class {volume.storage_class!r}, "
                f"which is not granted to tenant {tenant} "
                f"(granted: {', '.join(granted) or 'none'})",
                field="spec.values",
                storageClass=volume.storage_class,
            )


STORAGE = "requests.storage"


def check_volume_changes(
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    cluster: str,
    expandable: Mapping[str, bool],
) -> None:
    """A volume that stays may grow where its class allows it (`expandable`: the cluster's
    classes and their allowVolumeExpansion), never shrink; a StatefulSet's claim templates
    cannot change size at all (Kubernetes refuses to update them in place)."""
    old = {v.where: v for v in volumes(before)}
    for volume in volumes(after):
        was = old.get(volume.where)
        if was is None or volume.size == was.size:
            continue
        sizes = (
            f"from {format_quantity(was.size, STORAGE)} to {format_quantity(volume.size, STORAGE)}"
        )
        where = f"{volume.where}: spec.resources.requests.storage"
        if volume.size < was.size:
            raise InvalidError(
                f"spec.values: {where} would shrink {sizes}; volumes never shrink",
                field="spec.values",
            )
        if volume.where.startswith("StatefulSet"):
            raise InvalidError(
                f"spec.values: {where} would grow {sizes}, but a StatefulSet's claim templates "
                "cannot change (Kubernetes refuses it); render a PersistentVolumeClaim to grow",
                field="spec.values",
            )
        if not expandable.get(volume.storage_class, False):
            raise InvalidError(
                f"spec.values: {where} would grow {sizes}, but storage class "
                f"{volume.storage_class!r} in cluster {cluster} does not allow volume "
                "expansion (allowVolumeExpansion)",
                field="spec.values",
                storageClass=volume.storage_class,
            )


def volume_requests(objects: list[dict[str, Any]]) -> dict[str, Fraction]:
    """What the volumes ask of a namespace quota: capacity in all and per class, and claims."""
    total: dict[str, Fraction] = {}
    for volume in volumes(objects):
        asks = [
            ("requests.storage", volume.size * volume.count),
            ("persistentvolumeclaims", Fraction(volume.count)),
        ]
        if volume.storage_class:
            asks.append((class_storage_quota(volume.storage_class), volume.size * volume.count))
        for key, value in asks:
            total[key] = total.get(key, Fraction(0)) + value
    return total


# -- endpoints -------------------------------------------------------------------------------
def endpoints(observed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where an application is reached in one cluster, from its objects as the cluster holds
    them: each Service's cluster IP and ports (with node ports), each Ingress's hosts."""
    out: list[dict[str, Any]] = []
    for obj in observed:
        name, spec = obj["metadata"]["name"], obj.get("spec", {})
        if obj.get("kind") == "Service":
            ports = [
                {k: p[k] for k in ("port", "nodePort") if k in p} for p in spec.get("ports", [])
            ]
            out.append(
                {
                    "kind": "Service",
                    "name": name,
                    "type": spec.get("type", "ClusterIP"),
                    "clusterIP": spec.get("clusterIP", ""),
                    "ports": ports,
                }
            )
        elif obj.get("kind") == "Ingress":
            tls = {h for t in spec.get("tls", []) for h in t.get("hosts", [])}
            hosts = [r["host"] for r in spec.get("rules", []) if r.get("host")]
            out.append(
                {
                    "kind": "Ingress",
                    "name": name,
                    "hosts": [f"{'https' if h in tls else 'http'}://{h}" for h in hosts],
                }
            )
        elif obj.get("kind") == "HTTPRoute":
            serves = (obj["metadata"].get("annotations") or {}).get(SERVES_ANNOTATION)
            if serves not in ("http", "https"):
                continue  # a redirect to https: the host is listed by its https route
            parent = (spec.get("parentRefs") or [{}])[0]
            out.append(
                {
                    "kind": "HTTPRoute",
                    "name": name,
                    "gateway": f"{parent.get('namespace', '')}/{parent.get('name', '')}",
                    "hosts": [f"{serves}://{h}" for h in spec.get("hostnames", [])],
                }
            )
    return out
