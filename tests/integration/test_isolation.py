"""Tenant isolation on every URL, read-only roles, issued kubeconfigs, and the audit trail."""

from __future__ import annotations

import json

import pytest
import yaml
from sqlalchemy import text

from tests.integration.conftest import Api, Wharf, manifest, wait_for


@pytest.fixture
def two_tenants(wharf: Wharf):
    a_admin, b_admin = wharf.user(), wharf.user()
    a = wharf.tenant({"cpu": "4", "memory": "8Gi"}, admins=[a_admin.user])
    b = wharf.tenant({"cpu": "4", "memory": "8Gi"}, admins=[b_admin.user])
    wharf.project(a, "alpha", {"cpu": "1", "memory": "1Gi"})
    wharf.project(b, "beta", {"cpu": "1", "memory": "1Gi"})
    return a, a_admin, b, b_admin


TRAFFIC = {"kind": "TrafficPolicy", "metadata": {"name": "beta"}, "spec": {"defaultDeny": True}}
CERTIFICATE = {
    "kind": "Certificate",
    "metadata": {"name": "tls"},
    "spec": {"certificate": "x", "key": "y"},
}


def test_a_tenant_gets_404_on_every_url_of_another_and_sees_none_of_its_objects(
    wharf: Wharf, two_tenants
):
    a, a_admin, b, _ = two_tenants
    project = {"kind": "Project", "metadata": {"name": "beta"}, "spec": {"quota": {"cpu": "1"}}}
    missing = {"kind": "Project", "metadata": {"name": "nosuch"}, "spec": {}}
    urls = [
        ("GET", f"/api/v1/tenants/{b}", None),
        ("PUT", f"/api/v1/tenants/{b}", {"kind": "Tenant", "metadata": {"name": b}, "spec": {}}),
        ("DELETE", f"/api/v1/tenants/{b}?confirm={b}", None),
        ("GET", f"/api/v1/tenants/{b}/projects/beta", None),
        ("PUT", f"/api/v1/tenants/{b}/projects/beta", project),
        ("DELETE", f"/api/v1/tenants/{b}/projects/beta?confirm=beta", None),
        ("POST", f"/api/v1/tenants/{b}/projects", missing),
        ("POST", f"/api/v1/tenants/{b}/projects/beta/kubeconfig?env=dev", None),
        ("GET", f"/api/v1/tenants/{b}/projects/nosuch", None),
        # The network registers and rules.
        ("GET", f"/api/v1/tenants/{b}/nodeports", None),
        ("GET", f"/api/v1/tenants/{b}/reachability?env=dev&from=beta/x&to=beta/y&port=80", None),
        ("GET", f"/api/v1/tenants/{b}/trafficpolicies/beta", None),
        ("PUT", f"/api/v1/tenants/{b}/trafficpolicies/beta", TRAFFIC),
        ("GET", f"/api/v1/tenants/{b}/certificates/tls", None),
        ("PUT", f"/api/v1/tenants/{b}/certificates/tls", CERTIFICATE),
        ("GET", "/api/v1/clusters/lab1/nodeports", None),
        ("GET", "/api/v1/nodeportranges/x", None),
        ("GET", "/api/v1/domaingrants/x", None),
    ]
    for method, url, body in urls:
        answer = a_admin.request(method, url, json=body)
        assert answer.status_code == 404, f"{method} {url}: {answer.status_code} {answer.text}"
    # The answer for another tenant's project is the same as for one that does not exist.
    other = a_admin.get(f"/api/v1/tenants/{b}/projects/beta").json()
    none = a_admin.get(f"/api/v1/tenants/{b}/projects/zzz").json()
    assert other["message"].replace("beta", "X") == none["message"].replace("zzz", "X")
    # Lists: only A's objects, and no count or hint of B.
    assert [t["metadata"]["name"] for t in a_admin.ok("GET", "/api/v1/tenants")["items"]] == [a]
    projects = a_admin.ok("GET", "/api/v1/projects")["items"]
    assert [(p["metadata"]["tenant"], p["metadata"]["name"]) for p in projects] == [(a, "alpha")]
    assert a_admin.ok("GET", f"/api/v1/tenants/{b}/projects")["items"] == []
    for kinds in ("trafficpolicies", "certificates"):
        assert a_admin.ok("GET", f"/api/v1/tenants/{b}/{kinds}")["items"] == []
    for kinds in ("nodeportranges", "domaingrants"):
        assert a_admin.ok("GET", f"/api/v1/{kinds}")["items"] == []
    assert a_admin.ok("GET", "/api/v1/audit", params={"tenant": b})["items"] == []
    events = a_admin.ok("GET", "/api/v1/audit")["items"]
    assert events
    # A's events, and the admin's own login outside any tenant; nothing of B, not even the
    # attempts on B just made.
    assert all(e["tenant"] == a or (e["tenant"], e["actor"]) == ("", a_admin.user) for e in events)
    assert b not in json.dumps(events)
    # Clusters are platform infrastructure: a tenant admin is told nothing about them.
    assert a_admin.get("/api/v1/clusters").json()["items"] == []
    assert a_admin.get("/api/v1/clusters/lab1").status_code == 404
    # Nothing of B changed, and every attempt is in the audit trail as denied.
    assert (
        wharf.admin.ok("GET", f"/api/v1/tenants/{b}/projects/beta")["metadata"]["generation"] == 1
    )
    denied = wharf.admin.ok(
        "GET", "/api/v1/audit", params={"actor": a_admin.user, "outcome": "denied"}
    )["items"]
    assert {(e["action"], e["tenant"]) for e in denied} >= {("apply", b), ("delete", b)}


def test_a_viewer_cannot_mutate_anything(wharf: Wharf, two_tenants):
    a, a_admin, _, _ = two_tenants
    viewer = wharf.user()
    tenant = manifest(wharf.admin.ok("GET", f"/api/v1/tenants/{a}"))
    tenant["spec"]["viewers"] = [viewer.user]
    wharf.admin.ok("PUT", f"/api/v1/tenants/{a}", json=tenant)
    assert viewer.ok("GET", f"/api/v1/tenants/{a}/projects/alpha")["metadata"]["name"] == "alpha"
    project = manifest(viewer.ok("GET", f"/api/v1/tenants/{a}/projects/alpha"))
    attempts = [
        ("PUT", f"/api/v1/tenants/{a}/projects/alpha", project),
        (
            "POST",
            f"/api/v1/tenants/{a}/projects",
            {"kind": "Project", "metadata": {"name": "new"}, "spec": {}},
        ),
        ("DELETE", f"/api/v1/tenants/{a}/projects/alpha?confirm=alpha", None),
        ("PUT", f"/api/v1/tenants/{a}", tenant),
        (
            "PUT",
            "/api/v1/clusters/lab3",
            {"kind": "Cluster", "metadata": {"name": "lab3"}, "spec": {"kubeconfig": "x"}},
        ),
        ("POST", "/api/v1/users", {"name": "mallory", "password": "password-123"}),
        ("POST", "/api/v1/platform/rolebindings", {"user": viewer.user, "role": "platform-admin"}),
    ]
    for method, url, body in attempts:
        answer = viewer.request(method, url, json=body)
        assert answer.status_code in (403, 404), f"{method} {url}: {answer.status_code}"
    assert (
        viewer.request("PUT", f"/api/v1/tenants/{a}/projects/alpha", json=project).json()["code"]
        == "forbidden"
    )
    # A read-only token of an admin cannot mutate either.
    body = {"name": "ci", "readOnly": True, "expiresIn": 3600}
    token = a_admin.ok("POST", "/api/v1/tokens", json=body)["token"]
    read_only = Api(wharf.client, token, a_admin.user)
    assert read_only.get(f"/api/v1/tenants/{a}/projects/alpha").status_code == 200
    assert read_only.put(f"/api/v1/tenants/{a}/projects/alpha", project).status_code == 403
    assert (
        wharf.admin.ok("GET", f"/api/v1/tenants/{a}/projects/alpha")["metadata"]["generation"] == 1
    )


def test_tokens_are_shown_once_stored_hashed_scoped_and_expiring(wharf: Wharf, two_tenants):
    a, a_admin, _b, _ = two_tenants
    made = a_admin.ok("POST", "/api/v1/tokens", json={"name": "short", "expiresIn": 1, "tenant": a})
    listed = a_admin.ok("GET", "/api/v1/tokens")["items"]
    assert made["token"] not in json.dumps(listed)
    with wharf.platform.db.engine.connect() as conn:
        stored = [r.secret_hash for r in conn.execute(text("SELECT secret_hash FROM api_tokens"))]
    assert made["token"].split("_", 2)[2] not in stored
    expired = Api(wharf.client, made["token"])
    wait_for(lambda: expired.get("/api/v1/whoami").status_code == 401, timeout=5)
    assert "expired" in expired.get("/api/v1/whoami").json()["message"]
    assert Api(wharf.client, "wharf_nope_nope").get("/api/v1/whoami").status_code == 401
    assert Api(wharf.client, "").get("/api/v1/tenants").status_code == 401


def test_an_issued_kubeconfig_reaches_only_its_project(
    wharf: Wharf, kubectl, two_tenants, tmp_path
):
    a, _a_admin, b, _ = two_tenants
    dev = wharf.user()
    project = manifest(wharf.admin.ok("GET", f"/api/v1/tenants/{a}/projects/alpha"))
    project["spec"]["members"] = [{"user": dev.user, "role": "developer"}]
    wharf.admin.ok("PUT", f"/api/v1/tenants/{a}/projects/alpha", json=project)
    wharf.wait_placed(a, "alpha")
    wharf.wait_placed(b, "beta")
    config = dev.ok(
        "POST", f"/api/v1/tenants/{a}/projects/alpha/kubeconfig", params={"env": "dev", "ttl": 3600}
    )
    assert [c["context"]["namespace"] for c in config["contexts"]] == [f"{a}--alpha-dev"] * 2
    path = tmp_path / "dev.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    for context, cluster in zip(config["contexts"], wharf.lab.clusters(), strict=True):
        own = kubectl(
            cluster,
            "--context",
            context["name"],
            "-n",
            f"{a}--alpha-dev",
            "create",
            "configmap",
            "hello",
            kubeconfig=path,
            check=False,
        )
        assert own.returncode == 0, own.stderr
        other = kubectl(
            cluster,
            "--context",
            context["name"],
            "-n",
            f"{b}--beta-dev",
            "get",
            "pods",
            kubeconfig=path,
            check=False,
        )
        assert other.returncode != 0
        assert "Forbidden" in other.stderr or "forbidden" in other.stderr
        cluster_wide = kubectl(
            cluster, "--context", context["name"], "get", "nodes", kubeconfig=path, check=False
        )
        assert cluster_wide.returncode != 0
    # Someone who is not a member gets none; the call is audited.
    outsider = wharf.user()
    answer = outsider.request("POST", f"/api/v1/tenants/{a}/projects/alpha/kubeconfig?env=dev")
    assert answer.status_code == 404
    issued = wharf.admin.ok("GET", "/api/v1/audit", params={"action": "issue-kubeconfig"})["items"]
    assert [(e["actor"], e["tenant"], e["name"]) for e in issued] == [(dev.user, a, "alpha")]


def test_mutations_are_audited_with_secrets_masked(wharf: Wharf, two_tenants):
    a, a_admin, _, _ = two_tenants
    events = wharf.admin.ok("GET", "/api/v1/audit", params={"kind": "Cluster"})["items"]
    assert events, "registering the lab clusters was audited"
    dumped = json.dumps(events)
    assert "BEGIN CERTIFICATE" not in dumped
    assert "client-key-data" not in dumped
    kubeconfig_change = next(d for d in events[0]["diff"] if d["path"] == "kubeconfig")
    assert kubeconfig_change["new"].startswith("***")
    # The stored kubeconfig is sealed, and reading the cluster never shows it.
    with wharf.platform.db.engine.connect() as conn:
        stored = conn.execute(text("SELECT spec FROM resources WHERE kind = 'Cluster'")).first()
    assert "sealed:v2:" in json.dumps(stored[0])
    assert "BEGIN" not in json.dumps(stored[0])
    assert wharf.admin.ok("GET", "/api/v1/clusters/lab1")["spec"]["kubeconfig"].startswith("***")
    # A tenant admin's change shows who, what and the diff.
    project = manifest(a_admin.ok("GET", f"/api/v1/tenants/{a}/projects/alpha"))
    project["spec"]["quota"]["cpu"] = "2"
    a_admin.ok("PUT", f"/api/v1/tenants/{a}/projects/alpha", json=project)
    latest = a_admin.ok("GET", "/api/v1/audit", params={"tenant": a, "kind": "Project"})["items"][0]
    assert (latest["actor"], latest["action"], latest["outcome"]) == (
        a_admin.user,
        "apply",
        "allowed",
    )
    assert {"path": "spec.quota.cpu", "old": "1", "new": "2"} in latest["diff"]


def test_disabling_a_user_ends_the_kubeconfigs_it_was_issued_at_once(
    wharf: Wharf, kubectl, two_tenants, tmp_path
):
    a, _a_admin, _b, _ = two_tenants
    dev = wharf.user()
    project = manifest(wharf.admin.ok("GET", f"/api/v1/tenants/{a}/projects/alpha"))
    project["spec"]["members"] = [{"user": dev.user, "role": "developer"}]
    wharf.admin.ok("PUT", f"/api/v1/tenants/{a}/projects/alpha", json=project)
    wharf.wait_placed(a, "alpha")
    url = f"/api/v1/tenants/{a}/projects/alpha/kubeconfig"
    old = tmp_path / "old.kubeconfig"
    old.write_text(yaml.safe_dump(dev.ok("POST", url, params={"env": "dev", "ttl": 3600})))
    clusters = wharf.lab.clusters()
    ns = f"{a}--alpha-dev"

    def run(path, cluster):
        context = f"{cluster.name}-{ns}"
        return kubectl(
            cluster,
            "--context",
            context,
            "-n",
            ns,
            "get",
            "configmaps",
            kubeconfig=path,
            check=False,
        )

    def answers(path, cluster) -> bool:
        return run(path, cluster).returncode == 0

    def unknown(path, cluster) -> bool:
        """The token no longer names anyone (not merely someone without rights)."""
        return "Unauthorized" in run(path, cluster).stderr

    assert all(answers(old, c) for c in clusters)
    wharf.admin.ok("POST", f"/api/v1/users/{dev.user}/disable")
    # Not at the token's expiry (an hour): as soon as the clusters hear of it.
    wait_for(lambda: all(unknown(old, c) for c in clusters), timeout=60, what="old token unknown")
    # Enabled again, the user gets new kubeconfigs; what was issued before stays dead.
    wharf.admin.ok("POST", f"/api/v1/users/{dev.user}/enable")
    dev = wharf.login(dev.user, "password-123")  # disabling ended its sessions too
    new = tmp_path / "new.kubeconfig"

    def issued() -> bool:
        answer = dev.request("POST", url, params={"env": "dev", "ttl": 3600})
        if answer.status_code != 200:
            return False
        new.write_text(yaml.safe_dump(answer.json()))
        return all(answers(new, c) for c in clusters)

    wait_for(issued, timeout=60, what="a new kubeconfig works")
    assert all(unknown(old, c) for c in clusters)


def test_a_user_enabled_again_before_the_clusters_heard_of_its_disabling_keeps_no_old_token(
    wharf: Wharf, kubectl, two_tenants, tmp_path
):
    """Disable then enable at once (or while a cluster is away): the placement controller
    may never see the user disabled, yet a token issued before the disable stays dead."""
    from wharf.identity import service as identity
    from wharf.identity.model import Principal

    a, _a_admin, _b, _ = two_tenants
    dev = wharf.user()
    project = manifest(wharf.admin.ok("GET", f"/api/v1/tenants/{a}/projects/alpha"))
    project["spec"]["members"] = [{"user": dev.user, "role": "developer"}]
    wharf.admin.ok("PUT", f"/api/v1/tenants/{a}/projects/alpha", json=project)
    wharf.wait_placed(a, "alpha")
    url = f"/api/v1/tenants/{a}/projects/alpha/kubeconfig"
    old = tmp_path / "old.kubeconfig"
    old.write_text(yaml.safe_dump(dev.ok("POST", url, params={"env": "dev", "ttl": 3600})))
    clusters = wharf.lab.clusters()
    ns = f"{a}--alpha-dev"

    def unknown(cluster) -> bool:
        context = f"{cluster.name}-{ns}"
        args = ("--context", context, "-n", ns, "get", "configmaps")
        return "Unauthorized" in kubectl(cluster, *args, kubeconfig=old, check=False).stderr

    assert not any(unknown(c) for c in clusters)
    # Disabled where no controller hears of it (as if the clusters were away), then enabled
    # through the API: the only reconcile the clusters see is of an enabled user.
    admin = Principal("platform-admin")  # set_disabled checks no role: the API did that
    with wharf.platform.db.session() as session:
        identity.set_disabled(session, admin, dev.user, True)
    wharf.admin.ok("POST", f"/api/v1/users/{dev.user}/enable")
    wait_for(lambda: all(unknown(c) for c in clusters), timeout=60, what="old token unknown")
