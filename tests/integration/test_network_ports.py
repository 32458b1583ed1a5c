"""The NodePort register, against the lab and both databases: concurrent requests get distinct
ports inside the tenant's range, a port outside it or held by another is refused (nothing
applied), deleting the application frees its port, the Services in the cluster carry the
register's numbers, and a tenant's kubeconfig cannot go around the register."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import Api, Wharf, wait_for
from tests.integration.networking import SERVICE_ONLY, service_only_template

APPS = 50


def _app(tenant: str, name: str, node_port: int | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"service": name, "port": 80}
    if node_port is not None:
        request["nodePort"] = node_port
    return {
        "kind": "Application",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {
            "project": "web",
            "environment": "dev",
            "template": {"name": SERVICE_ONLY, "version": "1.0.0"},
            "values": {"name": name},
            "nodePorts": [request],
        },
    }


def _range(wharf: Wharf, tenant: str, first: int, last: int) -> None:
    body = {
        "kind": "NodePortRange",
        "metadata": {"name": f"{tenant}-lab1"},
        "spec": {"cluster": "lab1", "tenant": tenant, "first": first, "last": last},
    }
    wharf.admin.ok("PUT", f"/api/v1/nodeportranges/{tenant}-lab1", json=body)


def _tenant_with_project(wharf: Wharf, members: list[dict[str, str]] = ()) -> str:  # type: ignore[assignment]
    tenant = wharf.tenant({"cpu": "2", "memory": "2Gi"})
    wharf.project(
        tenant,
        "web",
        {"cpu": "1", "memory": "1Gi"},
        members=list(members),
        envs=[{"name": "dev", "clusters": ["lab1"]}],
    )
    return tenant


def _base(wharf: Wharf) -> int:
    """Where this run's ports start: the lab's clusters outlive each test's Wharf, and the
    Services of the SQLite run are still there when the PostgreSQL run asks for ports."""
    return 30100 if wharf.platform.settings.database_url.startswith("sqlite") else 30600


def _held(api: Api, tenant: str) -> dict[str, int]:
    ports = api.ok("GET", f"/api/v1/tenants/{tenant}/nodeports")["ports"]
    return {p["application"]: p["nodePort"] for p in ports}


def _services(kubectl, wharf: Wharf, namespace: str) -> dict[str, dict[str, Any]]:
    out = kubectl(wharf.lab.clusters()[0], "-n", namespace, "get", "services", "-o", "json")
    return {s["metadata"]["name"]: s for s in json.loads(out.stdout)["items"]}


def test_concurrent_requests_get_distinct_ports_in_the_range_and_a_delete_frees_one(
    wharf: Wharf, kubectl
):
    service_only_template(wharf)
    tenant = _tenant_with_project(wharf)
    other = _tenant_with_project(wharf)
    base = _base(wharf)
    _range(wharf, tenant, base, base + 99)
    _range(wharf, other, base + 100, base + 109)
    names = [f"a{i:02d}" for i in range(APPS)]

    def deliver(name: str) -> int:
        put = wharf.admin.put(f"/api/v1/tenants/{tenant}/applications/{name}", _app(tenant, name))
        assert put.status_code in (200, 201), put.text
        return put.status_code

    with ThreadPoolExecutor(max_workers=APPS) as pool:
        assert set(pool.map(deliver, names)) == {201}
    held = _held(wharf.admin, tenant)
    assert sorted(held) == names
    assert len(set(held.values())) == APPS
    assert all(base <= port <= base + 99 for port in held.values())

    # Outside the range (another tenant's port, or one no tenant has): refused, nothing held.
    for port in (base + 100, base + 200):
        refused = wharf.admin.put(
            f"/api/v1/tenants/{tenant}/applications/outside", _app(tenant, "outside", port)
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == "spec.nodePorts[0].nodePort"
    taken = wharf.admin.put(
        f"/api/v1/tenants/{tenant}/applications/twice", _app(tenant, "twice", held["a00"])
    )
    assert taken.status_code == 409, taken.text
    # Tenant B cannot take tenant A's port either, by number.
    theirs = wharf.admin.put(
        f"/api/v1/tenants/{other}/applications/b", _app(other, "b", held["a00"])
    )
    assert theirs.status_code == 422, theirs.text
    assert wharf.admin.get(f"/api/v1/tenants/{tenant}/applications/outside").status_code == 404
    assert set(_held(wharf.admin, tenant)) == set(names)

    # The cluster holds the register's numbers: every Service is a NodePort of its port.
    namespace = f"{tenant}--web-dev"

    def delivered() -> bool:
        services = _services(kubectl, wharf, namespace)
        return all(
            n in services and services[n]["spec"]["ports"][0].get("nodePort") == held[n]
            for n in names
        )

    wait_for(delivered, timeout=180, what="50 NodePort Services with the register's ports")

    # Deleting the application frees its port: the register drops it, another app gets it.
    freed = held["a07"]
    wharf.admin.ok(
        "DELETE", f"/api/v1/tenants/{tenant}/applications/a07", params={"confirm": "a07"}
    )
    assert "a07" not in _held(wharf.admin, tenant)
    wharf.admin.ok(
        "PUT", f"/api/v1/tenants/{tenant}/applications/again", json=_app(tenant, "again", freed)
    )
    assert _held(wharf.admin, tenant)["again"] == freed
    wait_for(
        lambda: (
            _services(kubectl, wharf, namespace)
            .get("again", {})
            .get("spec", {})
            .get("ports", [{}])[0]
            .get("nodePort")
            == freed
        ),
        timeout=120,
        what="the freed port reused in the cluster",
    )


def test_a_tenant_kubeconfig_cannot_use_a_node_port_it_was_not_given(
    wharf: Wharf, kubectl, tmp_path: Path
):
    service_only_template(wharf)
    dev = wharf.user()
    tenant = _tenant_with_project(wharf, members=[{"user": dev.user, "role": "developer"}])
    other = _tenant_with_project(wharf)
    base = _base(wharf) + 300
    _range(wharf, tenant, base, base + 9)
    _range(wharf, other, base + 10, base + 19)
    wharf.admin.ok(
        "PUT", f"/api/v1/tenants/{tenant}/applications/shop", json=_app(tenant, "shop", base + 1)
    )
    namespace = f"{tenant}--web-dev"
    lab1 = wharf.lab.clusters()[0]

    def listed() -> bool:
        got = kubectl(lab1, "get", "ns", namespace, "-o", "json", check=False)
        if got.returncode != 0:
            return False  # not placed yet
        ns = json.loads(got.stdout)
        return ns["metadata"].get("annotations", {}).get("wharf.io/node-ports") == str(base + 1)

    wait_for(listed, what="the namespace lists its register port")
    hard = json.loads(kubectl(lab1, "-n", namespace, "get", "quota", "-o", "json").stdout)
    assert hard["items"][0]["spec"]["hard"]["services.nodeports"] == "1"

    # A developer (not a project admin, not Wharf) of the tenant, with the kubeconfig Wharf issues.
    config = dev.ok(
        "POST", f"/api/v1/tenants/{tenant}/projects/web/kubeconfig", params={"env": "dev"}
    )
    path = tmp_path / "dev.kubeconfig"
    path.write_text(yaml.safe_dump(config))

    def create(name: str, node_port: int | None) -> Any:
        port: dict[str, Any] = {"port": 80}
        if node_port is not None:
            port["nodePort"] = node_port
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [port]},
        }
        return kubectl(
            lab1,
            "-n",
            namespace,
            "create",
            "-f",
            "-",
            kubeconfig=path,
            stdin=json.dumps(service),
            check=False,
        )

    # In its own range but not given to this namespace, another tenant's, or left to the cluster.
    for name, port in (("mine-unassigned", base + 2), ("theirs", base + 10), ("any", None)):
        result = create(name, port)
        assert result.returncode != 0, f"{name}: {result.stdout}"
        assert "nodePort" in result.stderr, result.stderr
        assert "register" in result.stderr, result.stderr
    # The kubeconfig itself works: a ClusterIP Service is fine.
    plain = kubectl(
        lab1,
        "-n",
        namespace,
        "create",
        "service",
        "clusterip",
        "plain",
        "--tcp=80:80",
        kubeconfig=path,
        check=False,
    )
    assert plain.returncode == 0, plain.stderr
    # And developers of the tenant see their ports; another tenant's admin sees nothing of them.
    assert _held(dev, tenant) == {"shop": base + 1}
    stranger = wharf.user()
    assert stranger.get(f"/api/v1/tenants/{tenant}/nodeports").status_code == 404
    assert stranger.get("/api/v1/clusters/lab1/nodeports").status_code == 404


def test_a_tenant_kubeconfig_cannot_take_a_health_check_node_port_outside_the_register(
    wharf: Wharf, kubectl, tmp_path: Path
):
    """A LoadBalancer with externalTrafficPolicy Local also holds a node port for health
    checks, which quota does not count: it too must be one the register gave the namespace."""
    service_only_template(wharf)
    dev = wharf.user()
    balancers = {"cpu": "1", "memory": "1Gi", "services.loadbalancers": "1"}
    tenant = wharf.tenant({**balancers, "cpu": "2", "memory": "2Gi"})
    member = [{"user": dev.user, "role": "developer"}]
    wharf.project(
        tenant, "web", balancers, members=member, envs=[{"name": "dev", "clusters": ["lab1"]}]
    )
    base = _base(wharf) + 400
    _range(wharf, tenant, base, base + 9)
    wharf.admin.ok(
        "PUT", f"/api/v1/tenants/{tenant}/applications/shop", json=_app(tenant, "shop", base + 1)
    )
    namespace = f"{tenant}--web-dev"
    lab1 = wharf.lab.clusters()[0]
    wait_for(
        lambda: (
            _services(kubectl, wharf, namespace).get("shop", {}).get("spec", {}).get("type")
            == "NodePort"
        ),
        what="the application's NodePort Service",
    )
    config = dev.ok(
        "POST", f"/api/v1/tenants/{tenant}/projects/web/kubeconfig", params={"env": "dev"}
    )
    path = tmp_path / "dev.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    patch = {
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "healthCheckNodePort": base + 5,
        }
    }
    result = kubectl(
        lab1,
        "-n",
        namespace,
        "patch",
        "service",
        "shop",
        "--type=merge",
        "-p",
        json.dumps(patch),
        kubeconfig=path,
        check=False,
    )
    assert result.returncode != 0, result.stdout
    assert "register" in result.stderr, result.stderr
