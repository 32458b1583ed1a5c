"""Placement: a project on both lab clusters gets its namespace and everything in it, and the
clusters enforce the quota. Drift is reverted, a no-op reconcile writes nothing, and deleting
a project removes exactly its own namespaces."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from urllib.parse import unquote

import httpx2
from sqlalchemy import event, text

from tests.integration.conftest import Wharf, cluster_writes, wait_for


def settle(wharf: Wharf) -> None:
    """Wait until the placement controller has nothing queued or running (30 s at most)."""
    portal = wharf.client.portal
    assert portal is not None

    async def idle() -> None:
        async with asyncio.timeout(30):
            await wharf.platform.placement.controller.idle()

    portal.call(idle)


def quiet_resync(placement, monkeypatch) -> None:
    """The controller's own resync out of the way: each resync round is the test's."""

    async def nothing() -> list[tuple[str, str]]:
        return []

    monkeypatch.setattr(placement.controller, "resync_keys", nothing)


def kubectl_json(kubectl, cluster, *args: str) -> dict:
    return json.loads(kubectl(cluster, "get", *args, "-o", "json").stdout)


def test_a_project_on_two_clusters_gets_its_namespaces(wharf: Wharf, kubectl):
    alice = wharf.user()
    bob = wharf.user()
    tenant = wharf.tenant({"cpu": "10", "memory": "20Gi", "pods": "40"}, admins=[alice.user])
    wharf.project(
        tenant,
        "shop",
        {"cpu": "3", "memory": "6Gi", "pods": "10"},
        members=[{"user": bob.user, "role": "developer"}],
    )
    project = wharf.wait_placed(tenant, "shop")
    ns = f"{tenant}--shop-dev"
    assert [
        (p["cluster"], p["namespace"], p["state"]) for p in project["status"]["placements"]
    ] == [
        ("lab1", ns, "Ready"),
        ("lab2", ns, "Ready"),
    ]
    # The project quota is split over the two clusters, exactly; exposure on the nodes'
    # addresses stays closed, as the project was granted none.
    closed = {"services.nodeports": "0", "services.loadbalancers": "0"}
    expected = {
        "lab1": {"requests.cpu": "1500m", "requests.memory": "3Gi", "pods": "5", **closed},
        "lab2": {"requests.cpu": "1500m", "requests.memory": "3Gi", "pods": "5", **closed},
    }
    for cluster in wharf.lab.clusters():
        namespace = kubectl_json(kubectl, cluster, "namespace", ns)
        assert namespace["metadata"]["labels"] == {
            "app.kubernetes.io/managed-by": "wharf",
            "kubernetes.io/metadata.name": ns,
            "wharf.io/tenant": tenant,
            "wharf.io/project": "shop",
            "wharf.io/env": "dev",
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/enforce-version": "latest",
            "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/audit-version": "latest",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/warn-version": "latest",
        }
        quota = kubectl_json(kubectl, cluster, "-n", ns, "resourcequota", "wharf-quota")
        assert quota["spec"]["hard"] == expected[cluster.name]
        limits = kubectl_json(kubectl, cluster, "-n", ns, "limitrange", "wharf-container-defaults")
        assert limits["spec"]["limits"][0]["defaultRequest"] == {"cpu": "100m", "memory": "128Mi"}
        policy = kubectl_json(kubectl, cluster, "-n", ns, "networkpolicy", "wharf-tenant-isolation")
        assert policy["spec"]["ingress"] == [
            {"from": [{"namespaceSelector": {"matchLabels": {"wharf.io/tenant": tenant}}}]}
        ]
        bindings = {
            b["metadata"]["name"]: (b["roleRef"]["name"], [s["name"] for s in b["subjects"]])
            for b in kubectl_json(kubectl, cluster, "-n", ns, "rolebindings")["items"]
        }
        # Members' identities live in wharf-system, one per member and namespace.
        assert bindings == {
            f"wharf.tenant-admin.{alice.user}": ("wharf:tenant-admin", [f"{alice.user}.{ns}"]),
            f"wharf.developer.{bob.user}": ("wharf:developer", [f"{bob.user}.{ns}"]),
        }

    # The cluster itself enforces the quota: its 1500m of CPU does not fit a pod asking for 2.
    lab1 = wharf.lab.cluster("lab1")
    big = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "big"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "registry.example/app:1",
                    "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}},
                }
            ]
        },
    }
    wait_for(
        lambda: (
            kubectl_json(kubectl, lab1, "-n", ns, "resourcequota", "wharf-quota")
            .get("status", {})
            .get("used")
        ),
        what="quota status",
    )
    refused = kubectl(lab1, "-n", ns, "apply", "-f", "-", stdin=json.dumps(big), check=False)
    assert refused.returncode != 0
    assert "exceeded quota: wharf-quota" in refused.stderr


def test_revoking_a_member_removes_the_role_binding(wharf: Wharf, kubectl):
    bob = wharf.user()
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    members = [{"user": bob.user, "role": "viewer"}]
    wharf.project(tenant, "api", {"cpu": "2", "memory": "2Gi"}, members=members)
    wharf.wait_placed(tenant, "api")
    ns = f"{tenant}--api-dev"
    for cluster in wharf.lab.clusters():
        names = [
            b["metadata"]["name"]
            for b in kubectl_json(kubectl, cluster, "-n", ns, "rolebindings")["items"]
        ]
        assert names == [f"wharf.viewer.{bob.user}"]
    wharf.project(tenant, "api", {"cpu": "2", "memory": "2Gi"}, members=[])
    wharf.wait_placed(tenant, "api")
    for cluster in wharf.lab.clusters():
        assert kubectl_json(kubectl, cluster, "-n", ns, "rolebindings")["items"] == []
        accounts = [
            a["metadata"]["name"]
            for a in kubectl_json(kubectl, cluster, "-n", "wharf-system", "serviceaccounts")[
                "items"
            ]
        ]
        assert f"{bob.user}.{ns}" not in accounts


def test_a_system_namespace_deleted_under_wharf_comes_back(wharf: Wharf, kubectl):
    """wharf-system deleted behind Wharf's back (a cluster that left and came back, an
    operator's mistake) is made again by the next placement that needs it, not a minute
    later when the baseline's periodic check comes round."""
    bob = wharf.user()
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    members = [{"user": bob.user, "role": "developer"}]
    wharf.project(tenant, "before", {"cpu": "1", "memory": "1Gi"}, members=members)
    wharf.wait_placed(tenant, "before")  # the baseline was just checked on both clusters
    lab2 = wharf.lab.cluster("lab2")
    hold = json.dumps({"metadata": {"finalizers": ["wharf.test/hold"]}})
    kubectl(lab2, "patch", "namespace", "wharf-system", "--type=merge", "-p", hold)
    kubectl(lab2, "delete", "namespace", "wharf-system", "--wait=false")
    path = f"/api/v1/tenants/{tenant}/projects/shop"
    try:
        wharf.project(tenant, "shop", {"cpu": "1", "memory": "1Gi"}, members=members)

        def lab2_failed() -> str | None:
            status = wharf.admin.ok("GET", path)["status"]
            states = {p["cluster"]: p for p in status.get("placements", [])}
            failed = states.get("lab2", {})
            return failed.get("message") if failed.get("state") == "Error" else None

        # Terminating, it takes no new identities: lab2 says so and why.
        assert "wharf-system" in wait_for(lab2_failed, what="lab2 placement Error")
    finally:
        release = json.dumps([{"op": "remove", "path": "/metadata/finalizers"}])
        kubectl(lab2, "patch", "namespace", "wharf-system", "--type=json", "-p", release)

    def placed() -> bool:
        status = wharf.admin.ok("GET", path)["status"]
        return bool(status.get("phase") == "Ready")

    # Well inside the minute the periodic baseline check waits.
    wait_for(placed, timeout=30, what="shop placed again once wharf-system is gone")
    accounts = kubectl_json(kubectl, lab2, "-n", "wharf-system", "serviceaccounts")["items"]
    assert f"{bob.user}.{tenant}--shop-dev" in {a["metadata"]["name"] for a in accounts}


def test_drift_is_reverted_and_a_no_op_reconcile_writes_nothing(wharf: Wharf, kubectl):
    tenant = wharf.tenant({"cpu": "8", "memory": "8Gi"})
    wharf.project(tenant, "web", {"cpu": "2", "memory": "2Gi"})
    wharf.wait_placed(tenant, "web")
    ns = f"{tenant}--web-dev"
    lab1, lab2 = wharf.lab.clusters()

    # Out-of-band edit of an object Wharf owns: taken back within seconds (by the watch).
    kubectl(
        lab1,
        "-n",
        ns,
        "patch",
        "resourcequota",
        "wharf-quota",
        "--type=merge",
        "-p",
        '{"spec":{"hard":{"requests.cpu":"50"}}}',
    )
    kubectl(lab2, "-n", ns, "delete", "networkpolicy", "wharf-tenant-isolation")
    wait_for(
        lambda: (
            kubectl_json(kubectl, lab1, "-n", ns, "resourcequota", "wharf-quota")["spec"]["hard"][
                "requests.cpu"
            ]
            == "1"
        ),
        timeout=15,
        what="quota drift reverted",
    )
    wait_for(
        lambda: (
            kubectl(
                lab2, "-n", ns, "get", "networkpolicy", "wharf-tenant-isolation", check=False
            ).returncode
            == 0
        ),
        timeout=15,
        what="deleted policy recreated",
    )

    # Let everything settle (the quota controller updates the quota's status after the revert,
    # which the project's status reports), then reconcile again: zero writes to the clusters
    # and zero writes of this tenant's and project's rows.
    placement = wharf.platform.placement
    path = f"/api/v1/tenants/{tenant}/projects/web"
    wait_for(
        lambda: all(
            p["hard"].get("requests.cpu") == "1"
            for p in wharf.admin.ok("GET", path)["status"]["placements"]
        ),
        what="project status reports the reverted quota",
    )
    settle(wharf)
    before = {c.name: len(cluster_writes(c, ns)) for c in (lab1, lab2)}
    assert all(before.values()), "the writes of the first placement are in the audit logs"
    with wharf.platform.db.engine.connect() as conn:
        query = text("SELECT id FROM resources WHERE tenant = :t OR name = :t")
        ids = {row.id for row in conn.execute(query, {"t": tenant})}
    assert len(ids) == 2
    writes: list[str] = []

    def count(_conn, _cursor, statement, parameters, *_args) -> None:
        verb = statement.lstrip().split()[0].upper()
        if "INTO leases" in statement:
            return  # the replica's lease heartbeat (every few seconds), not the reconcile's
        if verb in ("INSERT", "DELETE") or (verb == "UPDATE" and set(_flatten(parameters)) & ids):
            writes.append(statement)

    engine = wharf.platform.db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(3):
            placement.controller.queue.add((tenant, "web"))
            settle(wharf)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    after = {c.name: len(cluster_writes(c, ns)) for c in (lab1, lab2)}
    assert after == before, "a no-op reconcile wrote to a cluster"
    assert writes == [], f"a no-op reconcile wrote to the database: {writes}"


def _flatten(parameters) -> list:
    if isinstance(parameters, dict):
        return list(parameters.values())
    return list(parameters or [])


def test_deleting_a_project_needs_confirmation_and_removes_only_its_own(wharf: Wharf, kubectl):
    tenant = wharf.tenant({"cpu": "8", "memory": "8Gi"})
    for name in ("keep", "gone"):
        wharf.project(tenant, name, {"cpu": "1", "memory": "1Gi"})
        wharf.wait_placed(tenant, name)
    lab1 = wharf.lab.cluster("lab1")
    bystander = f"by-{uuid.uuid4().hex[:6]}"
    kubectl(lab1, "create", "namespace", bystander)

    path = f"/api/v1/tenants/{tenant}/projects/gone"
    refused = wharf.admin.delete(path)
    assert refused.status_code == 422
    assert "confirm=gone" in refused.json()["message"]
    assert wharf.admin.get(path).status_code == 200

    assert wharf.admin.delete(path, params={"confirm": "gone"}).status_code == 200
    assert wharf.admin.get(path).status_code == 404
    for cluster in wharf.lab.clusters():

        def gone(c=cluster) -> bool:
            result = kubectl(c, "get", "namespace", f"{tenant}--gone-dev", check=False)
            return (
                result.returncode != 0
                or '"Terminating"'
                in kubectl(
                    c, "get", "namespace", f"{tenant}--gone-dev", "-o", "json", check=False
                ).stdout
            )

        wait_for(gone, timeout=30, what="namespace of the deleted project removed")
        assert (
            kubectl(cluster, "get", "namespace", f"{tenant}--keep-dev", check=False).returncode == 0
        )
    assert kubectl(lab1, "get", "namespace", bystander, check=False).returncode == 0


def test_kubectl_edits_by_users_outside_wharf_are_left_alone(wharf: Wharf, kubectl):
    """Objects without Wharf's labels in a project namespace are never pruned."""
    tenant = wharf.tenant({"cpu": "4", "memory": "4Gi"})
    wharf.project(tenant, "ops", {"cpu": "1", "memory": "1Gi"})
    wharf.wait_placed(tenant, "ops")
    ns = f"{tenant}--ops-dev"
    lab2 = wharf.lab.cluster("lab2")
    kubectl(lab2, "-n", ns, "create", "rolebinding", "mine", "--clusterrole=view", "--user=carol")
    wharf.platform.placement.controller.queue.add((tenant, "ops"))
    wharf.client.portal.call(wharf.platform.placement.controller.idle)
    names = {
        b["metadata"]["name"]
        for b in kubectl_json(kubectl, lab2, "-n", ns, "rolebindings")["items"]
    }
    assert "mine" in names


def test_a_no_op_reconcile_reads_from_the_watch_caches_not_the_clusters(
    wharf: Wharf, kubectl, monkeypatch
):
    """At a thousand projects the placement's resync made two LISTs per project and cluster
    (and a GET and four LISTs per namespace): all of it now comes from the watch caches."""
    bob = wharf.user()
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    members = [{"user": bob.user, "role": "viewer"}]
    wharf.project(tenant, "api", {"cpu": "2", "memory": "2Gi"}, members=members)
    wharf.wait_placed(tenant, "api")
    ns = f"{tenant}--api-dev"
    placement = wharf.platform.placement
    settle(wharf)
    informers = [i for c in wharf.lab.clusters() for i in placement.watches.informers(c.name)]
    wait_for(lambda: all(i.synced.is_set() for i in informers), what="the watch caches synced")
    requests: list[str] = []
    unsynced: list[str] = []  # a cache relisting after its watch broke reads the cluster
    send = httpx2.AsyncClient.send

    async def counted(self, request, *args, **kwargs):
        path, query = request.url.path, unquote(str(request.url.query))
        # LISTs of namespaces (the prune) and of members' identities count only when they
        # select this tenant: other tests' projects are deleted on this server meanwhile.
        concerns_project = f"/namespaces/{ns}" in path or (
            (path.endswith("/namespaces") or path.endswith("/wharf-system/serviceaccounts"))
            and tenant in query
        )
        if concerns_project and "watch=" not in query:
            broken = [f"{i.name}: {i.error}" for i in informers if not i.synced.is_set()]
            (unsynced if broken else requests).append(f"{request.method} {path} {broken}")
        return await send(self, request, *args, **kwargs)

    monkeypatch.setattr(httpx2.AsyncClient, "send", counted)
    for _ in range(3):
        placement.controller.queue.add((tenant, "api"))
        settle(wharf)
    monkeypatch.setattr(httpx2.AsyncClient, "send", send)
    assert requests == [], f"a no-op reconcile asked the clusters {len(requests)}x: {requests[:3]}"
    assert len(unsynced) < 10, f"the caches were not synced: {unsynced[:3]}"


def test_a_binding_added_with_wharfs_labels_is_pruned_without_waiting_for_the_resync(
    wharf: Wharf, kubectl, monkeypatch
):
    """Prunes read the watch caches: an object someone else adds with Wharf's labels is
    looked at when its watch event comes, not at the next resync (which this test puts an
    hour away; the resync under way, 5 s, is over before the binding is added)."""
    monkeypatch.setattr(wharf.platform.placement.controller, "resync", 3600.0)
    started = time.monotonic()
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    wharf.project(tenant, "api", {"cpu": "2", "memory": "2Gi"})
    wharf.wait_placed(tenant, "api")
    time.sleep(max(0.0, 6.0 - (time.monotonic() - started)))
    ns = f"{tenant}--api-dev"
    lab1 = wharf.lab.clusters()[0]
    stray = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": "stray",
            "namespace": ns,
            "labels": {
                "app.kubernetes.io/managed-by": "wharf",
                "wharf.io/tenant": tenant,
                "wharf.io/project": "api",
                "wharf.io/env": "dev",
            },
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "mallory"}],
    }
    kubectl(lab1, "apply", "-f", "-", stdin=json.dumps(stray))
    wait_for(
        lambda: kubectl(lab1, "-n", ns, "get", "rolebinding", "stray", check=False).returncode != 0,
        timeout=15,
        what="the stray binding pruned",
    )


def test_the_resync_passes_over_placed_projects_between_sweeps(wharf: Wharf, kubectl):
    """Reading a project's inputs every resync kept a tenth of a core busy at a thousand
    projects on an idle server. A project placed Ready everywhere is woken by events and
    looked at by every SWEEP_EVERY-th resync only; one that is not (here: its namespace taken
    by someone outside Wharf, whose removal no watch of Wharf's objects sees) by every one."""
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    wharf.project(tenant, "placed", {"cpu": "1", "memory": "1Gi"})
    wharf.wait_placed(tenant, "placed")
    kubectl(wharf.lab.cluster("lab1"), "create", "namespace", f"{tenant}--waiting-dev")
    wharf.project(tenant, "waiting", {"cpu": "1", "memory": "1Gi"})
    placement = wharf.platform.placement
    path = f"/api/v1/tenants/{tenant}/projects/waiting"

    def looked_at() -> bool:
        obj = wharf.admin.ok("GET", path)
        return obj["status"].get("observedGeneration") == obj["metadata"]["generation"]

    wait_for(looked_at, what="the project whose namespace is taken looked at")
    # Waited for, not asserted once: an event (a watch's relist) may be reconciling it.
    wait_for(lambda: (tenant, "placed") in placement.settled, what="the placed project settled")
    assert (tenant, "waiting") not in placement.settled
    keys = wharf.client.portal.call(placement.list_keys)
    assert (tenant, "placed") not in placement.to_resync(keys, sweep=False)
    assert (tenant, "waiting") in placement.to_resync(keys, sweep=False)
    assert {(tenant, "placed"), (tenant, "waiting")} <= set(placement.to_resync(keys, sweep=True))


def test_a_cluster_changing_phase_looks_at_every_project_again(wharf: Wharf, monkeypatch):
    """A cluster back from Unreachable (or Ready for the first time) is where settled
    projects' namespaces go: its phase change looks at every project, not the next sweep."""
    placement = wharf.platform.placement
    looked: list[str] = []
    monkeypatch.setattr(placement.controller, "queue_all", lambda: looked.append("all"))

    def phase_changed() -> int:
        # In the controllers' loop, with nothing else running meanwhile.
        before = len(looked)
        wharf.platform.clusters.on_phase()
        return len(looked) - before

    assert wharf.client.portal.call(phase_changed) == 1


def test_a_write_whose_notice_was_lost_is_found_by_the_next_resync(wharf: Wharf, monkeypatch):
    """A replica killed between its commit and its NOTIFY leaves a change no one was told
    of: the resync sees the database's objects moved and looks at every project, settled or
    not, instead of waiting for the sweep."""
    placement = wharf.platform.placement
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    wharf.project(tenant, "api", {"cpu": "1", "memory": "1Gi"})
    wharf.wait_placed(tenant, "api")
    wait_for(lambda: (tenant, "api") in placement.settled, what="the project settled")

    quiet_resync(placement, monkeypatch)
    monkeypatch.setattr(placement, "_resyncs", 1)  # the next rounds are not sweeps
    portal = wharf.client.portal
    portal.call(placement.resync_keys)  # takes the database's marker as it is now
    assert (tenant, "api") not in portal.call(placement.resync_keys)
    # A write no one hears of (no listener told, as if its replica died after the commit).
    monkeypatch.setattr(wharf.platform.resources, "listeners", [])
    wharf.project(tenant, "api", {"cpu": "2", "memory": "1Gi"})
    assert (tenant, "api") in portal.call(placement.resync_keys)
    assert (tenant, "api") not in portal.call(placement.resync_keys)


def test_the_resync_puts_back_a_deleted_admission_binding_with_every_project_settled(
    wharf: Wharf, kubectl, monkeypatch
):
    """Wharf's baseline in a cluster (the tenant guard's admission policy and binding, its
    roles, wharf-system) is watched by nothing: a project reconcile checks it, and settled
    projects are not reconciled at each resync, so the resync checks it itself."""
    placement = wharf.platform.placement
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    wharf.project(tenant, "api", {"cpu": "1", "memory": "1Gi"})
    wharf.wait_placed(tenant, "api")
    lab1 = wharf.lab.cluster("lab1")
    binding = ("validatingadmissionpolicybinding", "wharf-tenant-guard")
    kubectl(lab1, "delete", *binding)

    quiet_resync(placement, monkeypatch)
    monkeypatch.setattr(placement, "_baseline_checked", {})  # as if checked over a minute ago
    wharf.client.portal.call(placement.resync_keys)
    assert kubectl(lab1, "get", *binding, check=False).returncode == 0
