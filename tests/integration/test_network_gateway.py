"""Routes per cluster against the lab's API servers (with the Gateway API and cert-manager
CRDs installed): an Ingress of the cluster's class with TLS from the uploaded certificate in
both clusters; where a platform admin gives a cluster a Gateway and a ClusterIssuer, HTTPRoutes
(HTTPS, and HTTP redirected to it) and a cert-manager Certificate instead — each validated by
the real API server. Tenants cannot choose the Gateway or issuer, nor write these kinds with
their kubeconfigs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import Wharf, manifest, wait_for
from tests.integration.networking import SERVICE_ONLY, certificate, service_only_template
from wharf.lab import LabCluster


def _live(kubectl, cluster: LabCluster, namespace: str, *what: str) -> list[dict[str, Any]]:
    got = kubectl(cluster, "-n", namespace, "get", *what, "-o", "json", check=False)
    return json.loads(got.stdout)["items"] if got.returncode == 0 else []


def _routing(wharf: Wharf, cluster: str, routing: dict[str, Any]) -> dict[str, Any]:
    body = manifest(wharf.admin.ok("GET", f"/api/v1/clusters/{cluster}"))
    body["spec"]["routing"] = routing
    wharf.admin.ok("PUT", f"/api/v1/clusters/{cluster}", json=body)

    def observed() -> dict[str, Any] | None:
        status = wharf.admin.ok("GET", f"/api/v1/clusters/{cluster}")["status"]
        wanted = "HTTPRoute" if routing.get("gateway") else "Ingress"
        found = status.get("routing", {})
        # The new spec's summary, not the one before it (routes alone may not have changed).
        seen = found.get("ingressClass") == routing.get("ingressClass") or routing.get("gateway")
        return status if found.get("routes") == wanted and seen else None

    return wait_for(observed, what=f"{cluster} routing observed")  # type: ignore[no-any-return]


def test_routes_are_ingresses_or_httproutes_as_each_cluster_says(
    wharf: Wharf, kubectl, tmp_path: Path
):
    service_only_template(wharf)
    owner = wharf.user()
    tenant = wharf.tenant({"cpu": "2", "memory": "2Gi"}, admins=[owner.user])
    wharf.project(tenant, "shop", {"cpu": "1", "memory": "1Gi"})
    suffix = f"g{uuid.uuid4().hex[:6]}.example.com"
    wharf.admin.ok(
        "PUT",
        f"/api/v1/domaingrants/{tenant}",
        json={
            "kind": "DomainGrant",
            "metadata": {"name": tenant},
            "spec": {"tenant": tenant, "domains": [f"*.{suffix}"]},
        },
    )
    pem, key = certificate([f"*.{suffix}"], days=90)
    owner.ok(
        "PUT",
        f"/api/v1/tenants/{tenant}/certificates/wild",
        json={
            "kind": "Certificate",
            "metadata": {"name": "wild", "tenant": tenant},
            "spec": {"certificate": pem, "key": key},
        },
    )
    # Both clusters serve the Gateway API and cert-manager: the lab installed their CRDs.
    lab1 = _routing(wharf, "lab1", {"ingressClass": "lab-nginx"})
    assert lab1["apis"] == {"gatewayAPI": True, "certManager": True}
    assert lab1["routing"] == {"routes": "Ingress", "tls": "uploaded", "ingressClass": "lab-nginx"}

    shop, docs = f"shop.{suffix}", f"docs.{suffix}"
    routes = [
        {"host": shop, "path": "/", "service": "web", "port": 80, "tls": "wild"},
        {"host": docs, "path": "/", "service": "web", "port": 80},
    ]
    app = {
        "kind": "Application",
        "metadata": {"name": "web", "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": SERVICE_ONLY, "version": "1.0.0"},
            "values": {"name": "web"},
            "routes": routes,
        },
    }
    owner.ok("PUT", f"/api/v1/tenants/{tenant}/applications/web", json=app)
    namespace = f"{tenant}--shop-dev"
    clusters = {c.name: c for c in wharf.lab.clusters()}

    # An Ingress with TLS from the uploaded certificate in both clusters; lab1's of its class.
    for name, cluster in clusters.items():
        (ingress,) = wait_for(
            lambda c=cluster: _live(kubectl, c, namespace, "ingress"), what=f"Ingress in {name}"
        )
        assert ingress["spec"]["tls"] == [{"hosts": [shop], "secretName": "web-tls-wild"}]
        assert ingress["spec"].get("ingressClassName") == ("lab-nginx" if name == "lab1" else None)
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
        (secret,) = _live(kubectl, cluster, namespace, "secret", "-l", "wharf.io/app=web")
        assert secret["type"] == "kubernetes.io/tls"

    # A tenant admin cannot choose a cluster's Gateway or issuer.
    body = manifest(wharf.admin.ok("GET", "/api/v1/clusters/lab1"))
    body["spec"]["routing"] = {"gateway": {"name": "mine", "namespace": namespace}}
    refused = owner.put("/api/v1/clusters/lab1", body)
    assert refused.status_code in (403, 404), refused.text

    # The platform admin gives lab1 a Gateway and a ClusterIssuer: HTTPRoutes and an issued
    # Certificate replace the Ingress and the uploaded key there; lab2 stays as it was.
    gateway = {"name": "edge", "namespace": "wharf-gateways"}
    lab1 = _routing(wharf, "lab1", {"gateway": gateway, "clusterIssuer": "lab-ca"})
    assert lab1["routing"] == {
        "routes": "HTTPRoute",
        "tls": "ClusterIssuer lab-ca",
        "gateway": "wharf-gateways/edge",
    }

    def moved() -> list[dict[str, Any]] | None:
        found = _live(kubectl, clusters["lab1"], namespace, "httproutes")
        gone = not _live(kubectl, clusters["lab1"], namespace, "ingress")
        return found if len(found) == 3 and gone else None

    http_routes = wait_for(moved, what="HTTPRoutes in lab1, its Ingress gone")
    by_serves = {r["metadata"]["annotations"]["wharf.io/serves"]: r for r in http_routes}
    assert by_serves["https"]["spec"]["hostnames"] == [shop]
    assert by_serves["https"]["spec"]["parentRefs"][0]["sectionName"] == "https"
    assert by_serves["https"]["spec"]["rules"][0]["backendRefs"][0]["name"] == "web"
    assert by_serves["redirect"]["spec"]["hostnames"] == [shop]
    redirect = by_serves["redirect"]["spec"]["rules"][0]["filters"][0]["requestRedirect"]
    assert redirect == {"scheme": "https", "statusCode": 301}
    assert by_serves["http"]["spec"]["hostnames"] == [docs]
    assert all(
        r["spec"]["parentRefs"][0] | {"sectionName": None}
        == {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "edge",
            "namespace": "wharf-gateways",
            "sectionName": None,
        }
        for r in http_routes
    )
    (issued,) = wait_for(lambda: _live(kubectl, clusters["lab1"], namespace, "certificates"))
    assert issued["spec"]["dnsNames"] == [shop]
    assert issued["spec"]["issuerRef"]["name"] == "lab-ca"
    assert issued["spec"]["secretName"] == "web-tls-wild"
    (grant,) = _live(kubectl, clusters["lab1"], namespace, "referencegrants")
    assert grant["spec"]["to"] == [{"group": "", "kind": "Secret", "name": "web-tls-wild"}]
    assert grant["spec"]["from"][0]["namespace"] == "wharf-gateways"
    wait_for(
        lambda: not _live(kubectl, clusters["lab1"], namespace, "secret", "-l", "wharf.io/app"),
        what="the uploaded key gone from lab1",
    )
    assert _live(kubectl, clusters["lab2"], namespace, "ingress")
    assert not _live(kubectl, clusters["lab2"], namespace, "httproutes")

    # The application's endpoints say how each cluster serves it.
    def endpoints() -> dict[str, Any] | None:
        status = owner.ok("GET", f"/api/v1/tenants/{tenant}/applications/web")["status"]
        found = {c: s.get("endpoints", []) for c, s in (status.get("clusters") or {}).items()}
        kinds = {c: {e["kind"] for e in listed} for c, listed in found.items()}
        return found if kinds.get("lab1", set()) >= {"HTTPRoute"} else None

    listed = wait_for(endpoints, what="lab1's HTTPRoute endpoints")
    hosts = sorted(h for e in listed["lab1"] if e["kind"] == "HTTPRoute" for h in e["hosts"])
    assert hosts == [f"http://{docs}", f"https://{shop}"]

    # The tenant admin's own kubeconfig cannot write these kinds (nor attach to the Gateway).
    config = owner.ok(
        "POST", f"/api/v1/tenants/{tenant}/projects/shop/kubeconfig", params={"env": "dev"}
    )
    path = tmp_path / "owner.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    sneaky = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "sneaky", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "edge", "namespace": "wharf-gateways"}],
            "hostnames": [f"other.{suffix}"],
        },
    }
    grant = {**grant, "metadata": {"name": "sneaky", "namespace": namespace}}
    for obj in (sneaky, grant):
        denied = kubectl(
            clusters["lab1"],
            "create",
            "-f",
            "-",
            kubeconfig=path,
            stdin=json.dumps(obj),
            check=False,
        )
        assert denied.returncode != 0, obj["kind"]
        assert "forbidden" in denied.stderr.lower(), denied.stderr
