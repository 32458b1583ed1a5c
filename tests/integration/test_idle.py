"""An idle platform writes nothing to its clusters.

A platform using every feature — tenants with node pools (two of them tainting one node),
projects with members and environments on both clusters, applications of every catalog
template with configuration, secrets and per-cluster overrides — is left alone for a minute
while its controllers keep resyncing (every 5 s, heartbeats every second). The API servers'
audit logs must show no write by Wharf's identity in that minute.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.integration.conftest import WHARF_USER, Wharf, wait_for

IMAGE = "registry.example/shop/web:1.4.2"
IDLE_SECONDS = 60


def node_pool(wharf: Wharf, name: str, selector: dict[str, str], key: str) -> None:
    body = {
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "cluster": "lab2",
            "nodeSelector": selector,
            "taints": [{"key": key, "value": name, "effect": "PreferNoSchedule"}],
        },
    }
    wharf.admin.ok("PUT", f"/api/v1/nodepools/{name}", json=body)


def app(tenant: str, name: str, template: str, values: dict[str, Any], **spec: Any) -> dict:
    return {
        "kind": "Application",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": template, "version": "1.0.0"},
            "values": {"name": name, "image": IMAGE, **values},
            **spec,
        },
    }


def settled(wharf: Wharf, path: str, field: str, values: tuple[str, ...]) -> bool:
    obj = wharf.admin.ok("GET", path)
    status = obj["status"]
    fresh = status.get("observedGeneration") == obj["metadata"]["generation"]
    return fresh and status.get(field) in values


def writes(wharf: Wharf) -> list[dict[str, Any]]:
    return [e for c in wharf.lab.clusters() for e in c.writes_by(WHARF_USER)]


def test_an_idle_platform_using_every_feature_writes_nothing_to_its_clusters(wharf: Wharf, kubectl):
    dev = wharf.user()
    viewer = wharf.user()
    # Node 1 of lab2 is in both pools: each gives it a taint, and neither takes the other's.
    node_pool(wharf, "zone2", {"topology.kubernetes.io/zone": "lab2-zone-2"}, "wharf.test/zone2")
    node_pool(wharf, "node1", {"kubernetes.io/hostname": "lab2-node-1"}, "wharf.test/node1")
    tenant = wharf.tenant(
        {"cpu": "8", "memory": "16Gi", "pods": "40"},
        admins=[dev.user],
        viewers=[viewer.user],
        nodePools=["zone2", "node1"],
    )
    project = {
        "kind": "Project",
        "metadata": {"name": "shop"},
        "spec": {
            "quota": {"cpu": "4", "memory": "8Gi", "pods": "20"},
            "members": [{"user": dev.user, "role": "developer"}],
            "environments": [
                {"name": "dev", "clusters": ["lab1", "lab2"]},
                {"name": "prod", "clusters": ["lab2"]},
            ],
            "delivery": {"checks": {"latestTag": "warn"}},
        },
    }
    wharf.admin.ok("PUT", f"/api/v1/tenants/{tenant}/projects/shop", json=project)
    wharf.wait_placed(tenant, "shop")
    overrides = {
        "lab2": {
            "replicas": 1,
            "registry": "mirror.lab2.local:5000",
            "env": {"REGION": "two"},
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "100m", "memory": "128Mi"},
            },
        }
    }
    config = {
        "configMaps": {"settings": {"MODE": "fast", "LEVEL": "3"}},
        "secrets": {"db": {"PASSWORD": "s3cret", "USER": "shop"}},
    }
    apps = {
        "web": app(
            tenant, "web", "web-service", {"replicas": 2}, config=config, overrides=overrides
        ),
        "worker": app(tenant, "worker", "worker", {"replicas": 1}, config=config),
        "db": app(tenant, "db", "stateful-service", {"replicas": 1, "storage": "1Gi"}),
        "nightly": app(tenant, "nightly", "cron-job", {"schedule": "0 3 * * *"}),
    }
    for name, body in apps.items():
        dev.ok("PUT", f"/api/v1/tenants/{tenant}/applications/{name}", json=body)
    for name in apps:
        # Stateful pods wait for a volume no lab provisions: delivered, but not Available.
        path = f"/api/v1/tenants/{tenant}/applications/{name}"
        wait_for(
            lambda path=path: settled(wharf, path, "state", ("Available", "Progressing")),
            timeout=90,
            what=f"{name} delivered",
        )
    for name in ("web", "worker", "nightly"):
        path = f"/api/v1/tenants/{tenant}/applications/{name}"
        wait_for(
            lambda path=path: settled(wharf, path, "state", ("Available",)),
            timeout=90,
            what=f"{name} Available",
        )
    lab2 = wharf.lab.cluster("lab2")

    def tainted() -> bool:
        nodes = json.loads(kubectl(lab2, "get", "nodes", "-o", "json").stdout)["items"]
        keys = {
            n["metadata"]["name"]: {t["key"] for t in n["spec"].get("taints", [])} for n in nodes
        }
        return keys["lab2-node-1"] >= {"wharf.test/zone2", "wharf.test/node1"} and (
            "wharf.test/zone2" in keys["lab2-node-3"]
        )

    wait_for(tainted, what="both pools' taints on node 1")
    # Namespaces other tests left behind are removed by this server's sweep (their owners are
    # not in its database); wait until that is done, then until every controller is idle.
    for cluster in wharf.lab.clusters():
        wait_for(
            lambda c=cluster: (
                {
                    n["metadata"]["name"]
                    for n in json.loads(
                        kubectl(
                            c, "get", "ns", "-l", "app.kubernetes.io/managed-by=wharf", "-o", "json"
                        ).stdout
                    )["items"]
                }
                <= {f"{tenant}--shop-dev", f"{tenant}--shop-prod"}
            ),
            timeout=120,
            what=f"only this platform's namespaces in {cluster.name}",
        )
    portal = wharf.client.portal
    assert portal is not None

    async def settle() -> None:
        async with asyncio.timeout(60):
            for controller in wharf.platform.controllers():
                controller.queue_all()
            await asyncio.sleep(0.5)
            for controller in wharf.platform.controllers():
                await controller.idle()

    portal.call(settle)
    before = len(writes(wharf))
    time.sleep(IDLE_SECONDS)
    idle = writes(wharf)[before:]
    what = sorted(
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('namespace', '')}/"
        f"{e['objectRef'].get('name', '')}"
        for e in idle
    )
    assert what == [], f"{len(what)} writes by an idle platform: {what[:20]}"
