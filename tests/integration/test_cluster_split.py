"""Three server replicas on one PostgreSQL and three clusters: the per-cluster work of the
cluster controller, placement and delivery is split by the clusters' leases, so that each
cluster is reconciled by exactly one replica (shown in /metrics and in the Cluster's status).
A replica killed with SIGKILL hands its clusters to the others once its leases expire, with no
write repeated in the clusters (counted in their API servers' audit logs), and a write under
its old epoch is refused afterwards."""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import fresh_postgres
from tests.integration.conftest import WHARF_USER, Api, ServerProcess, wait_for
from wharf.core.leases import Lease, LeaseLost, cluster_lease, fenced_by
from wharf.lab import Lab, LabCluster, find_binaries
from wharf.resources.service import ResourceService
from wharf.store import Database

LEASE_SECONDS = 4
OWNER = re.compile(r'^wharf_cluster_owner\{cluster="([^"]+)",replica="([^"]+)"\} 1\.0$', re.M)
RECONCILES = re.compile(
    r'^wharf_cluster_reconciles_total\{cluster="([^"]+)",controller="([^"]+)"\} ([0-9.]+)$', re.M
)
IMAGE = "registry.example/shop/web:1.0.0"
WRITER = re.compile(r"^wharf/\S+ \(replica ([^)]+)\)$")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    """A third cluster (a lab of its own, one node)."""
    binaries = find_binaries()
    assert binaries is not None
    lab = Lab(tmp_path_factory.mktemp("edge"), binaries)
    lab.up(clusters=1, nodes=1, progress=lambda _: None)
    yield lab.cluster("lab1")
    lab.down(progress=lambda _: None)


@pytest.fixture(scope="module")
def clusters(lab: Lab, edge: LabCluster) -> dict[str, LabCluster]:
    return {"lab1": lab.cluster("lab1"), "lab2": lab.cluster("lab2"), "edge": edge}


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with fresh_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def replicas(
    database_url: str,
    clusters: dict[str, LabCluster],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[ServerProcess]]:
    servers = [
        ServerProcess(
            tmp_path_factory.mktemp(f"split{n}"),
            database_url,
            WHARF_REPLICA=f"r{n}",
            WHARF_LEASE_SECONDS=str(LEASE_SECONDS),
            WHARF_RESYNC_SECONDS="3",
            WHARF_METRICS_PUBLIC="true",
        )
        for n in (1, 2, 3)
    ]
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready(timeout=300)
        admin = servers[0].login()
        for name, cluster in clusters.items():
            kubeconfig = cluster.user_kubeconfig(WHARF_USER, ("system:masters",)).read_text()
            body = {
                "kind": "Cluster",
                "metadata": {"name": name},
                "spec": {"kubeconfig": kubeconfig},
            }
            admin.ok("PUT", f"/api/v1/clusters/{name}", json=body)
        wait_for(
            lambda: all(
                c["status"].get("phase") == "Ready"
                for c in admin.ok("GET", "/api/v1/clusters")["items"]
            ),
            what="three clusters Ready",
        )
        yield servers
    finally:
        for server in servers:
            server.stop()


def _metrics(server: ServerProcess) -> str:
    try:
        return httpx.get(f"{server.url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return ""


def _owners(servers: list[ServerProcess], names: set[str]) -> dict[str, str] | None:
    """Each cluster with the one replica that says it reconciles it (from /metrics); None
    while a cluster has none or two (scrapes one after another may catch a handover)."""
    seen: dict[str, list[str]] = {}
    for server in servers:
        for cluster, replica in OWNER.findall(_metrics(server)):
            seen.setdefault(cluster, []).append(replica)
    if set(seen) != names or any(len(r) != 1 for r in seen.values()):
        return None
    return {c: r[0] for c, r in seen.items()}


def _reconciles(server: ServerProcess) -> Counter[tuple[str, str]]:
    """(cluster, controller) -> reconciles of that cluster's work by this replica."""
    found = RECONCILES.findall(_metrics(server))
    return Counter({(c, k): float(n) for c, k, n in found})


def _status_controllers(api: Api) -> dict[str, dict[str, Any]]:
    return {
        c["metadata"]["name"]: c["status"].get("controller", {})
        for c in api.ok("GET", "/api/v1/clusters")["items"]
    }


@pytest.fixture(scope="module")
def shop(replicas: list[ServerProcess], clusters: dict[str, LabCluster]) -> tuple[str, Api]:
    """A tenant with a project and an application on the three clusters, delivered."""
    admin = replicas[0].login()
    names = list(clusters)
    tenant = "split"
    admin.ok(
        "PUT",
        f"/api/v1/tenants/{tenant}",
        json={
            "kind": "Tenant",
            "metadata": {"name": tenant},
            "spec": {"quota": {"cpu": "6", "memory": "12Gi", "pods": "30"}, "clusters": names},
        },
    )
    admin.ok(
        "PUT",
        f"/api/v1/tenants/{tenant}/projects/shop",
        json={
            "kind": "Project",
            "metadata": {"name": "shop"},
            "spec": {
                "quota": {"cpu": "3", "memory": "6Gi", "pods": "15"},
                "environments": [{"name": "dev", "clusters": names}],
            },
        },
    )
    admin.ok("PUT", f"/api/v1/tenants/{tenant}/applications/web", json=_app(tenant, 1))
    _wait_available(admin, tenant, 1, set(names))
    return tenant, admin


def _app(tenant: str, replicas: int) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": "web", "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": "web", "image": IMAGE, "replicas": replicas},
        },
    }


def _wait_available(api: Api, tenant: str, replicas: int, names: set[str]) -> dict[str, Any]:
    def available() -> dict[str, Any] | None:
        app = api.ok("GET", f"/api/v1/tenants/{tenant}/applications/web")
        clusters = app["status"].get("clusters", {})
        done = set(clusters) == names and all(
            c["state"] == "Available" and [w["ready"] for w in c["workloads"]] == [replicas]
            for c in clusters.values()
        )
        return app if done else None

    return wait_for(available, timeout=120, what=f"web Available with {replicas} replica(s)")  # type: ignore[no-any-return]


def test_each_cluster_is_reconciled_by_exactly_one_replica(
    replicas: list[ServerProcess], shop: tuple[str, Api], clusters: dict[str, LabCluster]
) -> None:
    names = set(clusters)
    owners = wait_for(lambda: _owners(replicas, names), what="each cluster owned once")
    # A fair spread: nobody holds more than its share of the four leases (3 clusters and
    # the platform-wide one) while the others are alive.
    fair = math.ceil((len(names) + 1) / len(replicas))
    assert max(Counter(owners.values()).values()) <= fair, owners
    before = [_reconciles(s) for s in replicas]

    def reconciled_again() -> list[Counter[tuple[str, str]]] | None:
        after = [_reconciles(s) for s in replicas]
        grew = [a - b for a, b in zip(after, before, strict=True)]
        wanted = {(c, k) for c in names for k in ("clusters", "placement", "delivery")}
        return grew if wanted <= set().union(*grew) else None

    # Every replica resyncs every 3 s: each cluster's work is done again, by one of them.
    grew = wait_for(reconciled_again, what="every cluster's work done again")
    assert _owners(replicas, names) == owners, "a lease moved during the look"
    for server, done in zip(replicas, grew, strict=True):
        replica = server.env["WHARF_REPLICA"]
        mine = {c for c, r in owners.items() if r == replica}
        assert {c for c, _ in done} <= mine, (replica, done, owners)
    api = replicas[1].login()
    status = wait_for(
        lambda: (
            (s := _status_controllers(api))
            and {c: v.get("replica") for c, v in s.items()} == owners
            and s
        ),
        what="each cluster's status naming its replica",
    )
    assert all(v["epoch"] >= 1 for v in status.values())


def test_a_killed_replicas_clusters_are_handed_over_without_a_repeated_write(
    replicas: list[ServerProcess],
    shop: tuple[str, Api],
    clusters: dict[str, LabCluster],
    database_url: str,
) -> None:
    tenant, _ = shop
    names = set(clusters)
    owners = wait_for(lambda: _owners(replicas, names), what="each cluster owned once")
    victim_name = owners["edge"]
    victim = next(s for s in replicas if s.env["WHARF_REPLICA"] == victim_name)
    survivors = [s for s in replicas if s is not victim]
    api = survivors[0].login()
    epochs = {c: v["epoch"] for c, v in _status_controllers(api).items()}
    lost = sorted(c for c, r in owners.items() if r == victim_name)
    marks = {name: len(c.writes_by(WHARF_USER)) for name, c in clusters.items()}

    # A change under way while the replica dies: its clusters get it from their new holder.
    api.ok("PUT", f"/api/v1/tenants/{tenant}/applications/web", json=_app(tenant, 2))
    victim.kill()
    killed = time.monotonic()

    def handed_over() -> dict[str, str] | None:
        now = _owners(survivors, names)
        return now if now and victim_name not in now.values() else None

    after = wait_for(handed_over, timeout=LEASE_SECONDS * 6, what="the killed replica's clusters")
    took = time.monotonic() - killed
    _wait_available(api, tenant, 2, names)
    settled = time.monotonic() - killed
    print(
        f"handover after SIGKILL: {took:.1f}s to a new owner of {', '.join(lost)}, "
        f"{settled:.1f}s to the change delivered there (lease {LEASE_SECONDS}s)"
    )
    status = wait_for(
        lambda: (
            (s := _status_controllers(api))
            and all(s[c].get("replica") == after[c] for c in lost)
            and s
        ),
        what="the clusters' status naming their new replica",
    )
    assert all(status[c]["epoch"] > epochs[c] for c in lost)

    # Zero repeated writes: no object written twice with the same content by Wharf, in any
    # of the three clusters, while the change went out and the clusters changed hands.
    namespace = f"{tenant}--shop-dev"
    for name, cluster in clusters.items():
        # A write the API server did not take (the killed replica's request cut off as it
        # died answers 5xx, its body logged all the same) wrote nothing, so is no repeat.
        events = [
            e
            for e in cluster.writes_by(WHARF_USER)[marks[name] :]
            if e.get("objectRef", {}).get("namespace") == namespace
            and "dryRun=" not in e.get("requestURI", "")  # checks that store nothing
            and 200 <= e.get("responseStatus", {}).get("code", 0) < 300
        ]
        writes = [_write_key(e) for e in events]
        assert writes, f"the change reached {name}"
        # Each write names its replica (the user agent): the cluster's holder before the
        # kill or after it, never a third.
        writers = {m[1] if (m := WRITER.search(e.get("userAgent", ""))) else None for e in events}
        assert writers <= {owners[name], after[name]}, (name, writers, owners, after)
        repeated = [w for w, n in Counter(writes).items() if n > 1]
        assert not repeated, f"{name}: written twice with the same content: " + "; ".join(
            _told(e) for e in events if _write_key(e) in repeated
        )

    # Fenced: the killed replica's epoch writes nothing any more, in the status of the
    # per-cluster work (the application's part for its cluster) as anywhere.
    db = Database(database_url)
    try:
        service = ResourceService(db, {})
        old = Lease(cluster_lease("edge"), victim_name, epochs["edge"])
        before = api.ok("GET", f"/api/v1/tenants/{tenant}/applications/web")["status"]
        with pytest.raises(LeaseLost), fenced_by(old):
            service.write_status("Application", tenant, "web", lambda s: {**s.status, "x": 1})
        now = api.ok("GET", f"/api/v1/tenants/{tenant}/applications/web")["status"]
        assert "x" not in now
        assert now["clusters"]["edge"] == before["clusters"]["edge"]
    finally:
        db.dispose()


def _told(event: dict[str, Any]) -> str:
    """A write, said well enough to tell two apart: when, how it ended, from where."""
    ref = event.get("objectRef", {})
    return (
        f"{event.get('verb')} {ref.get('resource')}/{ref.get('name')} at "
        f"{event.get('requestReceivedTimestamp')}..{event.get('stageTimestamp')} answered "
        f"{event.get('responseStatus', {}).get('code')} ({event.get('userAgent')}, "
        f"{event.get('auditID')})"
    )


def _write_key(event: dict[str, Any]) -> str:
    """A write as the API server saw it: verb, object and the body sent."""
    ref = event.get("objectRef", {})
    return json.dumps(
        [
            event.get("verb"),
            ref.get("resource"),
            ref.get("subresource"),
            ref.get("name"),
            event.get("requestObject"),
        ],
        sort_keys=True,
    )
