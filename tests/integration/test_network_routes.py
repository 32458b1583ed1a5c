"""Domains, routes and TLS against the lab and both databases: a host is held by one
application across the platform (tenant B cannot claim tenant A's host, in any cluster); a
route with an uploaded certificate becomes a valid Ingress with TLS in both lab clusters; a
certificate's key is sealed and masked, its expiry shown and warned about; bad input is a 4xx
naming the field, with nothing applied."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import Wharf, wait_for
from tests.integration.networking import SERVICE_ONLY, certificate, service_only_template
from wharf.store.resources import ResourceStore


def _grant(wharf: Wharf, tenant: str, *domains: str) -> None:
    body = {
        "kind": "DomainGrant",
        "metadata": {"name": tenant},
        "spec": {"tenant": tenant, "domains": list(domains)},
    }
    wharf.admin.ok("PUT", f"/api/v1/domaingrants/{tenant}", json=body)


def _app(tenant: str, name: str, project: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {
            "project": project,
            "environment": "dev",
            "template": {"name": SERVICE_ONLY, "version": "1.0.0"},
            "values": {"name": name},
            "routes": routes,
        },
    }


def _cert(tenant: str, name: str, pem: str, key: str) -> dict[str, Any]:
    return {
        "kind": "Certificate",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {"certificate": pem, "key": key},
    }


def test_routes_with_tls_become_ingresses_and_hosts_are_held_once(wharf: Wharf, kubectl):
    service_only_template(wharf)
    ta = wharf.user()
    a = wharf.tenant({"cpu": "2", "memory": "2Gi"}, admins=[ta.user])
    b = wharf.tenant({"cpu": "2", "memory": "2Gi"})
    dev = wharf.user()
    member = [{"user": dev.user, "role": "developer"}]
    wharf.project(a, "shop", {"cpu": "1", "memory": "1Gi"}, members=member)
    # B's project is in lab2 only: the register is platform-wide, not per cluster.
    wharf.project(
        b, "copy", {"cpu": "1", "memory": "1Gi"}, envs=[{"name": "dev", "clusters": ["lab2"]}]
    )
    suffix = f"r{uuid.uuid4().hex[:6]}.example.com"
    host = f"shop.{suffix}"
    _grant(wharf, a, f"*.{suffix}")
    _grant(wharf, b, host)  # an exact name under A's wildcard: the hosts decide

    # Certificates: bad ones refused naming the field, nothing stored.
    pem, key = certificate([f"*.{suffix}"], days=90)
    expired, expired_key = certificate([f"*.{suffix}"], days=-1)
    _, other_key = certificate([f"*.{suffix}"], days=90)
    base = f"/api/v1/tenants/{a}/certificates"
    for name, body, field in (
        ("old", _cert(a, "old", expired, expired_key), "spec.certificate"),
        ("mismatched", _cert(a, "mismatched", pem, other_key), "spec.key"),
        ("garbage", _cert(a, "garbage", "not a pem", key), "spec.certificate"),
    ):
        refused = ta.put(f"{base}/{name}", body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == field
        assert ta.get(f"{base}/{name}").status_code == 404
    stored = ta.ok("PUT", f"{base}/wild", json=_cert(a, "wild", pem, key))
    assert stored["spec"]["key"] != key  # masked
    assert stored["status"]["dnsNames"] == [f"*.{suffix}"]
    assert 88 <= stored["status"]["daysLeft"] <= 90
    assert "warning" not in stored["status"]
    soon_pem, soon_key = certificate([f"*.{suffix}"], days=10)
    soon = ta.ok("PUT", f"{base}/soon", json=_cert(a, "soon", soon_pem, soon_key))
    assert soon["status"]["warning"].startswith("expires in 9 days")
    with wharf.platform.db.reader() as session:
        sealed = ResourceStore(session).get("Certificate", a, "wild")
        assert sealed is not None
        assert "PRIVATE KEY" not in json.dumps(sealed.spec)  # sealed at rest

    # Bad routes: each a 4xx naming the field; no application is stored.
    apps = f"/api/v1/tenants/{a}/applications"
    route = {"host": host, "path": "/", "service": "web", "port": 80, "tls": "wild"}
    for bad, field in (
        ({**route, "host": "Shop..example"}, "spec.routes[0].host"),
        ({**route, "host": "shop.elsewhere.example.com"}, "spec.routes[0].host"),
        ({**route, "host": f"a.b.{suffix}"}, "spec.routes[0].host"),  # wildcard is one label
        ({**route, "path": "no-slash"}, "spec.routes[0].path"),
        ({**route, "service": "nope"}, "spec.routes[0].service"),
        ({**route, "tls": "missing"}, "spec.routes[0].tls"),
    ):
        refused = wharf.admin.put(f"{apps}/web", _app(a, "web", "shop", [bad]))
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["field"] == field, refused.text
    assert wharf.admin.get(f"{apps}/web").status_code == 404

    # A developer cannot put the tenant's certificate into its project's namespace (whose
    # Secrets it reads, key and all); one that a tenant admin routed stays when it edits.
    taken_key = dev.put(f"{apps}/web", _app(a, "web", "shop", [route]))
    assert taken_key.status_code == 403, taken_key.text
    assert taken_key.json()["field"] == "spec.routes[0].tls"
    assert wharf.admin.get(f"{apps}/web").status_code == 404
    wharf.admin.ok("PUT", f"{apps}/web", json=_app(a, "web", "shop", [route]))
    dev.ok("PUT", f"{apps}/web", json=_app(a, "web", "shop", [route]))
    # Tenant B, granted the very name, cannot claim the host A holds — nor can another of A's.
    taken = wharf.admin.put(
        f"/api/v1/tenants/{b}/applications/web", _app(b, "web", "copy", [{**route, "tls": None}])
    )
    assert taken.status_code == 409, taken.text
    assert taken.json()["field"] == "spec.routes[0].host"
    assert a not in taken.text
    again = wharf.admin.put(f"{apps}/twin", _app(a, "twin", "shop", [{**route, "service": "twin"}]))
    assert again.status_code == 409, again.text

    # The Ingress with TLS, and its Secret, in both lab clusters (the API servers validated them).
    namespace = f"{a}--shop-dev"
    for cluster in wharf.lab.clusters():

        def ingress(cluster: Any = cluster) -> dict[str, Any] | None:
            got = kubectl(
                cluster, "-n", namespace, "get", "ingress", "web-routes", "-o", "json", check=False
            )
            return json.loads(got.stdout) if got.returncode == 0 else None

        live = wait_for(ingress, what=f"the Ingress in {cluster.name}")
        assert live["spec"]["tls"] == [{"hosts": [host], "secretName": "web-tls-wild"}]
        rule = live["spec"]["rules"][0]
        assert rule["host"] == host
        assert rule["http"]["paths"][0]["backend"]["service"] == {
            "name": "web",
            "port": {"number": 80},
        }
        secret = json.loads(
            kubectl(cluster, "-n", namespace, "get", "secret", "web-tls-wild", "-o", "json").stdout
        )
        assert secret["type"] == "kubernetes.io/tls"
        assert base64.b64decode(secret["data"]["tls.crt"]).decode() == pem

    # The application's status shows each cluster's endpoints in one place.
    def endpoints() -> dict[str, Any] | None:
        status = wharf.admin.ok("GET", f"{apps}/web")["status"]
        found = {c: s.get("endpoints") for c, s in (status.get("clusters") or {}).items()}
        return found if len(found) == 2 and all(found.values()) else None

    for cluster, listed in wait_for(endpoints, what="endpoints of both clusters").items():
        by_kind = {e["kind"]: e for e in listed}
        assert by_kind["Service"]["clusterIP"], cluster
        assert by_kind["Service"]["ports"] == [{"port": 80}]
        assert by_kind["Ingress"]["hosts"] == [f"https://{host}"]

    # Deleting A's application frees the host for B.
    wharf.admin.ok("DELETE", f"{apps}/web", params={"confirm": "web"})
    wharf.admin.ok(
        "PUT",
        f"/api/v1/tenants/{b}/applications/web",
        json=_app(b, "web", "copy", [{**route, "tls": None}]),
    )


def test_a_tenant_kubeconfig_cannot_route_a_host_the_register_did_not_give_it(
    wharf: Wharf, kubectl, tmp_path: Path
):
    """An Ingress made with a tenant's kubeconfig serves only hosts Wharf's register gave the
    namespace: not another tenant's host, not a host-less catch-all, not a default backend."""
    service_only_template(wharf)
    lab1 = [{"name": "dev", "clusters": ["lab1"]}]
    a = wharf.tenant({"cpu": "2", "memory": "2Gi"})
    wharf.project(a, "shop", {"cpu": "1", "memory": "1Gi"}, envs=lab1)
    dev = wharf.user()
    b = wharf.tenant({"cpu": "2", "memory": "2Gi"})
    member = [{"user": dev.user, "role": "developer"}]
    wharf.project(b, "copy", {"cpu": "1", "memory": "1Gi"}, members=member, envs=lab1)
    suffix = f"r{uuid.uuid4().hex[:6]}.example.com"
    host = f"shop.{suffix}"
    _grant(wharf, a, host)
    _grant(wharf, b, f"*.{suffix}")
    route = {"host": host, "path": "/", "service": "web", "port": 80}
    wharf.admin.ok(
        "PUT", f"/api/v1/tenants/{a}/applications/web", json=_app(a, "web", "shop", [route])
    )
    cluster = wharf.lab.clusters()[0]
    # Wharf's own Ingress passes the guard.
    wait_for(
        lambda: (
            kubectl(
                cluster, "-n", f"{a}--shop-dev", "get", "ingress", "web-routes", check=False
            ).returncode
            == 0
        ),
        what="A's Ingress",
    )
    wharf.wait_placed(b, "copy")
    config = dev.ok("POST", f"/api/v1/tenants/{b}/projects/copy/kubeconfig", params={"env": "dev"})
    path = tmp_path / "b.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    backend = {"service": {"name": "copy", "port": {"number": 80}}}
    paths = {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}
    for name, spec in (
        ("theirs", {"rules": [{"host": host, "http": paths}]}),
        ("unclaimed", {"rules": [{"host": f"other.{suffix}", "http": paths}]}),
        ("catch-all", {"rules": [{"http": paths}]}),
        ("default", {"defaultBackend": backend}),
    ):
        ingress = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name},
            "spec": spec,
        }
        made = kubectl(
            cluster,
            "-n",
            f"{b}--copy-dev",
            "create",
            "-f",
            "-",
            kubeconfig=path,
            stdin=json.dumps(ingress),
            check=False,
        )
        assert made.returncode != 0, f"{name}: {made.stdout}"
        assert "register" in made.stderr, made.stderr
