"""Traffic rules against the lab and both databases: a project's default-deny with one allow
rule is rendered as NetworkPolicies the API servers accept, in both clusters, and the
reachability query answers 10 pairs as the NetworkPolicy semantics say — the same over the
policies read back from the cluster. Who may write the rules; bad input names the field."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.conftest import Wharf, wait_for
from wharf.network.traffic import Address, Pod, may_reach

RULE = {"from": {"application": "web"}, "to": {"application": "db"}, "ports": [5432]}
# (from, to, port, allowed)
PAIRS = [
    ("shop/web", "shop/db", 5432, True),  # the one rule
    ("shop/web", "shop/db", 22, False),  # another port
    ("shop/db", "shop/web", 5432, False),  # the other way round
    ("shop/api", "shop/db", 5432, False),  # another application of the project
    ("ops/monitor", "shop/db", 5432, False),  # another project of the tenant: default-deny
    ("shop/web", "ops/monitor", 80, False),  # egress of shop is denied too
    ("ops/monitor", "ops/agent", 80, True),  # ops has no rules: the tenant's isolation only
    ("shop/web", "dns", 53, False),  # not even DNS, unless a rule says so
    ("203.0.113.5", "shop/web", 80, False),  # from outside
    ("203.0.113.5", "ops/monitor", 80, False),  # outside the tenant: isolation
]


def _policy(tenant: str, project: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "TrafficPolicy",
        "metadata": {"name": project, "tenant": tenant},
        "spec": spec,
    }


def test_default_deny_with_one_rule_is_rendered_and_evaluated(wharf: Wharf, kubectl):
    pa, dev = wharf.user(), wharf.user()
    tenant = wharf.tenant({"cpu": "2", "memory": "2Gi"})
    members = [{"user": pa.user, "role": "project-admin"}, {"user": dev.user}]
    wharf.project(tenant, "shop", {"cpu": "1", "memory": "1Gi"}, members=members)
    wharf.project(tenant, "ops", {"cpu": "1", "memory": "1Gi"})
    path = f"/api/v1/tenants/{tenant}/trafficpolicies/shop"
    body = _policy(tenant, "shop", {"defaultDeny": True, "allow": [RULE]})

    # Bad input names the field; a developer may not write the rules; nothing is stored.
    for bad, field in (
        ({"allow": [{**RULE, "to": {"cidr": "10.0.0.300/8"}}]}, "cidr"),
        ({"allow": [{**RULE, "from": {"project": "ops"}, "to": {"project": "ops"}}]}, "allow"),
        ({"allow": [{**RULE, "to": {"project": "nope"}}]}, "spec.allow[0].to.project"),
    ):
        refused = pa.put(path, _policy(tenant, "shop", bad))
        assert refused.status_code == 422, refused.text
        assert field in refused.json()["field"], refused.text
    assert dev.put(path, body).status_code == 403
    stranger = wharf.user()
    assert stranger.put(path, body).status_code == 404
    assert pa.get(path).status_code == 404
    pa.ok("PUT", path, json=body)

    # In both clusters: the default-deny and the rule's two sides, the isolation replaced.
    namespace = f"{tenant}--shop-dev"
    wanted = {"wharf-default-deny", "wharf-allow-0-in", "wharf-allow-0-out"}

    def live(cluster: Any) -> list[dict[str, Any]]:
        out = kubectl(cluster, "-n", namespace, "get", "networkpolicies", "-o", "json")
        return list(json.loads(out.stdout)["items"])

    for cluster in wharf.lab.clusters():
        wait_for(
            lambda c=cluster: {p["metadata"]["name"] for p in live(c)} == wanted,
            what=f"the traffic policies in {cluster.name}",
        )

    # The query, over what Wharf renders: 10 pairs (asked by someone who sees both projects).
    for source, target, port, allowed in PAIRS:
        answer = wharf.admin.ok(
            "GET",
            f"/api/v1/tenants/{tenant}/reachability",
            params={"env": "dev", "from": source, "to": target, "port": port},
        )
        assert answer["allowed"] is allowed, (source, target, port, answer["reasons"])

    # The same answers over the policies read back from a cluster.
    lab1 = wharf.lab.clusters()[0]
    policies = {ns: _live_policies(kubectl, lab1, ns) for ns in (namespace, f"{tenant}--ops-dev")}
    for source, target, port, allowed in PAIRS:
        verdict = may_reach(_peer(tenant, source), _peer(tenant, target), port, policies)
        assert verdict.allowed is allowed, (source, target, port, verdict.reasons)

    # Bad queries are 4xx naming the parameter; another tenant learns nothing.
    bad = dev.get(
        f"/api/v1/tenants/{tenant}/reachability",
        params={"env": "dev", "from": "not an endpoint", "to": "shop/db", "port": 1},
    )
    assert bad.status_code == 422, bad.text
    assert bad.json()["field"] == "from"
    # A member of shop asks about shop, not about projects it cannot see.
    own = {"env": "dev", "from": "shop/web", "to": "shop/db", "port": 5432}
    assert dev.ok("GET", f"/api/v1/tenants/{tenant}/reachability", params=own)["allowed"]
    unseen = {**own, "from": "ops/monitor"}
    assert dev.get(f"/api/v1/tenants/{tenant}/reachability", params=unseen).status_code == 404
    hidden = stranger.get(
        f"/api/v1/tenants/{tenant}/reachability",
        params={"env": "dev", "from": "shop/web", "to": "shop/db", "port": 5432},
    )
    assert hidden.status_code == 404

    # Without the policy the isolation policy comes back and the rule's policies go.
    pa.ok("DELETE", path, params={"confirm": "shop"})
    wait_for(
        lambda: {p["metadata"]["name"] for p in live(lab1)} == {"wharf-tenant-isolation"},
        what="the isolation policy back",
    )


def _live_policies(kubectl, cluster, namespace: str) -> list[dict[str, Any]]:
    out = kubectl(cluster, "-n", namespace, "get", "networkpolicies", "-o", "json")
    return list(json.loads(out.stdout)["items"])


def _peer(tenant: str, text: str) -> Pod | Address:
    if text == "dns":
        return Pod("kube-system", {"kubernetes.io/metadata.name": "kube-system"}, {})
    if "/" not in text:
        return Address(text)
    project, app = text.split("/")
    namespace = f"{tenant}--{project}-dev"
    labels = {
        "wharf.io/tenant": tenant,
        "wharf.io/project": project,
        "wharf.io/env": "dev",
        "kubernetes.io/metadata.name": namespace,
    }
    return Pod(namespace, labels, {"wharf.io/app": app})
