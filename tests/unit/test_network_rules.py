"""The network capability's pure rules: node port requests and Services, host names and
domain patterns."""

from __future__ import annotations

from typing import Any

import pytest

from wharf.clusters.model import (
    ClusterRouting,
    GatewayRef,
    Routing,
    routing_of,
    routing_summary,
    served_apis,
)
from wharf.core.errors import InvalidError
from wharf.core.quantity import parse_quantity
from wharf.network.model import (
    SERVES_ANNOTATION,
    CanarySplit,
    DomainGrantSpec,
    NodePortRangeSpec,
    NodePortRequest,
    Route,
    check_host,
    check_node_port_requests,
    check_routes,
    check_volume_changes,
    check_volume_classes,
    endpoints,
    expose_node_ports,
    host_matches,
    route_objects,
    tls_objects,
    volume_requests,
)
from wharf.network.traffic import TrafficEndpoint

SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 9000}]},
}


def test_an_assigned_port_makes_the_service_a_node_port_of_that_number():
    out = expose_node_ports([SERVICE], {("web", 80): 30123})
    assert out[0]["spec"]["type"] == "NodePort"
    assert out[0]["spec"]["ports"] == [
        {"name": "http", "port": 80, "nodePort": 30123},
        {"name": "admin", "port": 9000},
    ]
    assert "type" not in SERVICE["spec"]  # the rendered objects are left as they were
    assert expose_node_ports([SERVICE], {}) == [SERVICE]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (NodePortRequest(service="api", port=80), "spec.nodePorts[0].service"),
        (NodePortRequest(service="web", port=81), "spec.nodePorts[0].port"),
    ],
)
def test_a_request_names_a_service_port_the_template_renders(request_, field):
    with pytest.raises(InvalidError) as caught:
        check_node_port_requests([request_], [SERVICE])
    assert caught.value.field == field
    check_node_port_requests([NodePortRequest(service="web", port=9000)], [SERVICE])


def test_a_range_is_inside_the_clusters_node_port_range_and_ordered():
    with pytest.raises(InvalidError, match=r"below spec\.first") as caught:
        NodePortRangeSpec(cluster="c", tenant="t", first=30100, last=30099).check_ordered()
    assert caught.value.field == "spec.last"
    with pytest.raises(ValueError, match="greater than or equal"):
        NodePortRangeSpec(cluster="c", tenant="t", first=80, last=90)
    assert NodePortRangeSpec(cluster="c", tenant="t", first=30100, last=30199).holds(30150)


@pytest.mark.parametrize(
    ("host", "pattern", "matches"),
    [
        ("shop.retail.example.com", "*.retail.example.com", True),
        ("a.shop.retail.example.com", "*.retail.example.com", False),  # one label only
        ("retail.example.com", "*.retail.example.com", False),
        ("retail.example.com", "retail.example.com", True),
        ("shop.retail.example.com", "retail.example.com", False),
    ],
)
def test_wildcards_cover_one_label_and_exact_names_only_themselves(host, pattern, matches):
    assert host_matches(host, pattern) is matches


@pytest.mark.parametrize(
    "host",
    ["Shop.example.com", "shop", "-a.example.com", "a..b", "a_b.c", "shop.example.com\n"],
)
def test_invalid_host_names_are_refused_naming_the_field(host):
    with pytest.raises(InvalidError) as caught:
        check_host(host, "spec.routes[0].host")
    assert caught.value.field == "spec.routes[0].host"


@pytest.mark.parametrize("path", ["shop", "/a b", "/a\n", "/a\r\n", "/a{b}", "/a//b"])
def test_a_path_with_spaces_control_characters_or_braces_is_refused(path):
    route = Route(host="shop.example.com", path=path, service="web", port=80)
    with pytest.raises(InvalidError) as caught:
        check_routes([route], [SERVICE])
    assert caught.value.field == "spec.routes[0].path"


def test_domain_patterns_are_hosts_or_one_label_wildcards():
    DomainGrantSpec(tenant="t", domains=["*.retail.example.com", "shop.example.com"])
    for bad in ("*.*.example.com", "example", "shop.*.example.com"):
        with pytest.raises(ValueError, match="should match pattern"):
            DomainGrantSpec(tenant="t", domains=[bad])


STATEFUL = {
    "kind": "StatefulSet",
    "metadata": {"name": "db"},
    "spec": {
        "replicas": 3,
        "volumeClaimTemplates": [
            {
                "metadata": {"name": "data"},
                "spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "2Gi"}}},
            }
        ],
    },
}


def test_volumes_ask_capacity_per_class_for_every_replica():
    asks = volume_requests([STATEFUL])
    assert asks == {
        "requests.storage": parse_quantity("6Gi"),
        "fast.storageclass.storage.k8s.io/requests.storage": parse_quantity("6Gi"),
        "persistentvolumeclaims": 3,
    }


def test_a_volume_of_a_class_not_granted_is_refused_naming_it():
    check_volume_classes([STATEFUL], "acme", ["fast"])
    with pytest.raises(InvalidError, match="'fast', which is not granted to tenant acme") as caught:
        check_volume_classes([STATEFUL], "acme", ["slow"])
    assert caught.value.field == "spec.values"


@pytest.mark.parametrize("text", ["10.0.0.0/33", "not-a-cidr", "10.20.0.5", "::1"])
def test_a_cidr_that_does_not_parse_is_refused(text):
    with pytest.raises(InvalidError, match="not a CIDR") as caught:
        TrafficEndpoint(cidr=text).check("spec.allow[0].to")
    assert caught.value.field == "spec.allow[0].to.cidr"


def test_endpoints_name_cluster_ips_node_ports_and_hosts():
    service = {
        **SERVICE,
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.7",
            "ports": [{"name": "http", "port": 80, "nodePort": 30123}],
        },
    }
    ingress = {
        "kind": "Ingress",
        "metadata": {"name": "web-routes"},
        "spec": {
            "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}],
            "tls": [{"hosts": ["a.example.com"]}],
        },
    }
    assert endpoints([service, ingress]) == [
        {
            "kind": "Service",
            "name": "web",
            "type": "NodePort",
            "clusterIP": "10.96.0.7",
            "ports": [{"port": 80, "nodePort": 30123}],
        },
        {
            "kind": "Ingress",
            "name": "web-routes",
            "hosts": ["https://a.example.com", "http://b.example.com"],
        },
    ]


# -- routes per cluster: Ingress (class), HTTPRoute, TLS from uploads or cert-manager --------
GATEWAY = GatewayRef(name="edge", namespace="gateways")
SECURE = Route(host="shop.example.com", path="/", service="web", port=80, tls="wild")
PLAIN = Route(host="docs.example.com", path="/api", service="api", port=8080)
UPLOADED = {"wild": ("PEM", "KEY")}


def test_an_ingress_takes_the_clusters_ingress_class():
    (ingress,) = route_objects("web", [SECURE], Routing(ingress_class="nginx-internal"))
    assert ingress["kind"] == "Ingress"
    assert ingress["spec"]["ingressClassName"] == "nginx-internal"
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/ssl-redirect": "true"
    }
    (default,) = route_objects("web", [SECURE], Routing())
    assert "ingressClassName" not in default["spec"]
    assert route_objects("web", [], Routing(gateway=GATEWAY)) == []


def test_with_a_gateway_each_host_is_an_httproute_and_tls_hosts_redirect_to_https():
    routes = route_objects("web", [SECURE, PLAIN], Routing(gateway=GATEWAY))
    by_serves = {r["metadata"]["annotations"][SERVES_ANNOTATION]: r for r in routes}
    assert sorted(by_serves) == ["http", "https", "redirect"]
    assert all(r["kind"] == "HTTPRoute" for r in routes)
    https, redirect, http = by_serves["https"], by_serves["redirect"], by_serves["http"]
    assert https["spec"]["hostnames"] == ["shop.example.com"]
    assert https["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "edge",
            "namespace": "gateways",
            "sectionName": "https",
        }
    ]
    # Backends are the application's own Services: no namespace, so no other tenant's.
    assert https["spec"]["rules"] == [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": "web", "port": 80}],
        }
    ]
    assert redirect["spec"]["hostnames"] == ["shop.example.com"]
    assert redirect["spec"]["parentRefs"][0]["sectionName"] == "http"
    assert redirect["spec"]["rules"] == [
        {
            "filters": [
                {
                    "type": "RequestRedirect",
                    "requestRedirect": {"scheme": "https", "statusCode": 301},
                }
            ]
        }
    ]
    assert http["spec"]["hostnames"] == ["docs.example.com"]
    assert http["spec"]["parentRefs"][0]["sectionName"] == "http"
    assert redirect["metadata"]["name"] == f"{https['metadata']['name']}-redirect"
    endpoints_ = endpoints(routes)
    assert sorted(h for e in endpoints_ for h in e["hosts"]) == [
        "http://docs.example.com",
        "https://shop.example.com",
    ]


def test_a_canary_split_weighs_the_hosts_route_and_sends_its_matches_to_the_canary():
    header = {"type": "Exact", "name": "X-Canary", "value": "yes"}
    split = CanarySplit("shop.example.com", "web", "web-canary", 30, (header,))
    routes = route_objects("web", [SECURE, PLAIN], Routing(gateway=GATEWAY), split)
    by_serves = {r["metadata"]["annotations"][SERVES_ANNOTATION]: r for r in routes}
    path = {"type": "PathPrefix", "value": "/"}
    assert by_serves["https"]["spec"]["rules"] == [
        {
            "matches": [{"path": path, "headers": [header]}],
            "backendRefs": [{"name": "web-canary", "port": 80}],
        },
        {
            "matches": [{"path": path}],
            "backendRefs": [
                {"name": "web", "port": 80, "weight": 70},
                {"name": "web-canary", "port": 80, "weight": 30},
            ],
        },
    ]
    # Another host of the application keeps its one backend.
    assert by_serves["http"]["spec"]["rules"][0]["backendRefs"] == [{"name": "api", "port": 8080}]


def test_tls_comes_from_the_upload_or_from_the_clusters_issuer():
    labels = {"app": "web"}
    (secret,) = tls_objects("web", [SECURE, PLAIN], Routing(), UPLOADED, labels)
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "web-tls-wild"
    (issued,) = tls_objects("web", [SECURE, PLAIN], Routing(cluster_issuer="ca"), UPLOADED, labels)
    assert issued["kind"] == "Certificate"
    assert issued["spec"] == {
        "secretName": "web-tls-wild",
        "dnsNames": ["shop.example.com"],  # only the hosts routed with it
        "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "ca"},
    }
    assert "KEY" not in str(issued)  # the uploaded key stays in Wharf


def test_a_gateway_may_read_exactly_the_applications_tls_secrets():
    objects = tls_objects("web", [SECURE], Routing(gateway=GATEWAY), UPLOADED, {})
    grant = next(o for o in objects if o["kind"] == "ReferenceGrant")
    assert grant["spec"] == {
        "from": [
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateways"}
        ],
        "to": [{"group": "", "kind": "Secret", "name": "web-tls-wild"}],
    }
    assert tls_objects("web", [PLAIN], Routing(gateway=GATEWAY), UPLOADED, {}) == []


def test_a_cluster_without_the_apis_routes_by_ingress_with_uploaded_tls():
    spec = ClusterRouting(gateway=GATEWAY, clusterIssuer="ca", ingressClass="nginx")
    assert routing_of(spec, {}) == Routing(ingress_class="nginx")
    assert routing_of(spec, {"gatewayAPI": True, "certManager": True}) == Routing(
        ingress_class="nginx", gateway=GATEWAY, cluster_issuer="ca"
    )
    assert routing_summary(spec, {"gatewayAPI": True}) == {
        "routes": "HTTPRoute",
        "tls": "uploaded",
        "gateway": "gateways/edge",
    }
    assert served_apis({"gateway.networking.k8s.io": ["v1", "v1beta1"]}) == {
        "gatewayAPI": True,
        "certManager": False,
    }


def _claim_of(size: str, storage_class: str = "standard") -> dict[str, Any]:
    return {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"storageClassName": storage_class, "resources": {"requests": {"storage": size}}},
    }


def _set_of(size: str) -> dict[str, Any]:
    template = {"metadata": {"name": "state"}, **_claim_of(size)}
    return {
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {"replicas": 2, "volumeClaimTemplates": [template]},
    }


@pytest.mark.parametrize(
    ("before", "after", "words"),
    [
        (_claim_of("2Gi"), _claim_of("1Gi"), "would shrink from 2Gi to 1Gi"),
        (_claim_of("1Gi", "fixed"), _claim_of("2Gi", "fixed"), "'fixed' in cluster lab1"),
        (_claim_of("1Gi", "gone"), _claim_of("2Gi", "gone"), "'gone' in cluster lab1"),
        (_set_of("1Gi"), _set_of("2Gi"), "a StatefulSet's claim templates cannot change"),
    ],
)
def test_volumes_grow_only_where_the_class_allows_and_never_shrink(before, after, words):
    expandable = {"standard": True, "fixed": False}
    with pytest.raises(InvalidError, match=words) as refused:
        check_volume_changes([before], [after], "lab1", expandable)
    assert refused.value.field == "spec.values"


def test_a_volume_grows_where_its_class_allows_it():
    check_volume_changes([_claim_of("1Gi")], [_claim_of("3Gi")], "lab1", {"standard": True})
    check_volume_changes([], [_claim_of("3Gi", "fixed")], "lab1", {})  # new: not a change
