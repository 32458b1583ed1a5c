"""An unreachable cluster is reported and caught up with; a killed server loses nothing."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from functools import partial

import pytest

from tests.integration.conftest import (
    WHARF_USER,
    ServerProcess,
    Wharf,
    manifest,
    register_clusters,
    wait_for,
)
from wharf.lab import Lab, LabCluster, find_binaries


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    """A third cluster, in a lab of its own, that this module may freeze and thaw."""
    binaries = find_binaries()
    assert binaries is not None
    lab = Lab(tmp_path_factory.mktemp("edge"), binaries)
    lab.up(clusters=1, nodes=1, progress=lambda _: None)
    yield lab.cluster("lab1")
    lab.down(progress=lambda _: None)


def project_on_lab1_and_edge(wharf: Wharf, edge: LabCluster, project: str, env: str) -> str:
    """Register edge, and place a new tenant's project environment on lab1 and edge."""
    kubeconfig = edge.user_kubeconfig(WHARF_USER, ("system:masters",)).read_text()
    body = {"kind": "Cluster", "metadata": {"name": "edge"}, "spec": {"kubeconfig": kubeconfig}}
    wharf.admin.ok("PUT", "/api/v1/clusters/edge", json=body)
    wait_for(
        lambda: wharf.admin.ok("GET", "/api/v1/clusters/edge")["status"].get("phase") == "Ready",
        what="edge Ready",
    )
    tenant = wharf.tenant({"cpu": "4", "memory": "4Gi"}, clusters=["lab1", "edge"])
    wharf.project(
        tenant,
        project,
        {"cpu": "2", "memory": "2Gi"},
        envs=[{"name": env, "clusters": ["lab1", "edge"]}],
    )
    wharf.wait_placed(tenant, project)
    return tenant


def test_an_unreachable_cluster_is_reported_and_caught_up_with(wharf: Wharf, edge, kubectl):
    tenant = project_on_lab1_and_edge(wharf, edge, "site", "prod")
    ns = f"{tenant}--site-prod"
    apiserver = edge.running()["kube-apiserver"]
    assert apiserver is not None
    os.kill(apiserver, signal.SIGSTOP)
    try:
        cluster = wait_for(
            lambda: (
                (c := wharf.admin.ok("GET", "/api/v1/clusters/edge"))["status"]["phase"]
                == "Unreachable"
                and c
            ),
            timeout=30,
            what="edge Unreachable",
        )
        ready = next(c for c in cluster["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Unreachable")
        # A change accepted while edge is away: lab1 gets it now, edge says why it has not.
        member = wharf.user()
        project = manifest(wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}/projects/site"))
        project["spec"]["members"] = [{"user": member.user, "role": "developer"}]
        wharf.admin.ok("PUT", f"/api/v1/tenants/{tenant}/projects/site", json=project)

        def degraded() -> dict | None:
            obj = wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}/projects/site")
            done = obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
            return obj if done and obj["status"]["phase"] == "Degraded" else None

        status = wait_for(degraded, timeout=30, what="project reports edge")["status"]
        condition = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert condition["reason"] == "ClusterUnreachable"
        assert "cluster edge is Unreachable" in condition["message"]
        states = {p["cluster"]: p["state"] for p in status["placements"]}
        assert states == {"lab1": "Ready", "edge": "Unreachable"}
        lab1 = wharf.lab.cluster("lab1")
        wait_for(
            lambda: (
                kubectl(
                    lab1,
                    "-n",
                    ns,
                    "get",
                    "rolebinding",
                    f"wharf.developer.{member.user}",
                    check=False,
                ).returncode
                == 0
            ),
            what="lab1 has the new member",
        )
    finally:
        os.kill(apiserver, signal.SIGCONT)
    # Back again: the controller catches up without anyone asking.
    wharf.wait_placed(tenant, "site")
    binding = kubectl(
        edge, "-n", ns, "get", "rolebinding", f"wharf.developer.{member.user}", check=False
    )
    assert binding.returncode == 0, binding.stderr


def test_killing_the_server_mid_reconcile_loses_nothing(lab, database_url, kubectl, tmp_path):
    server = ServerProcess(tmp_path, database_url)
    server.start()
    try:
        admin = server.login()
        register_clusters(admin, lab)
        tenant = "crash" + os.urandom(3).hex()
        admin.ok(
            "PUT",
            f"/api/v1/tenants/{tenant}",
            json={
                "kind": "Tenant",
                "metadata": {"name": tenant},
                "spec": {"quota": {"cpu": "6"}, "clusters": ["lab1", "lab2"]},
            },
        )
        envs = [{"name": e, "clusters": ["lab1", "lab2"]} for e in ("dev", "test", "prod")]
        admin.ok(
            "PUT",
            f"/api/v1/tenants/{tenant}/projects/big",
            json={
                "kind": "Project",
                "metadata": {"name": "big"},
                "spec": {"quota": {"cpu": "6"}, "environments": envs},
            },
        )
        lab1 = lab.cluster("lab1")

        def some_namespace() -> bool:
            listing = kubectl(
                lab1,
                "get",
                "namespaces",
                "-l",
                f"wharf.io/tenant={tenant}",
                "-o",
                "name",
                check=False,
            )
            return bool(listing.stdout.strip())

        # Kill it as soon as the first namespace shows: in the middle of placing six.
        wait_for(some_namespace)
        server.kill()
        server.start()

        def converged() -> dict | None:
            obj = admin.ok("GET", f"/api/v1/tenants/{tenant}/projects/big")
            return obj if obj["status"].get("phase") == "Ready" else None

        project = wait_for(converged, timeout=60, what="convergence after restart")
        assert len(project["status"]["placements"]) == 6
        for cluster in lab.clusters():
            names = kubectl(
                cluster, "get", "namespaces", "-l", f"wharf.io/tenant={tenant}", "-o", "json"
            ).stdout
            found = sorted(n["metadata"]["name"] for n in json.loads(names)["items"])
            assert found == [f"{tenant}--big-{e}" for e in ("dev", "prod", "test")]
            for ns in found:
                quota = json.loads(
                    kubectl(
                        cluster, "-n", ns, "get", "resourcequota", "wharf-quota", "-o", "json"
                    ).stdout
                )
                assert quota["spec"]["hard"] == {
                    "requests.cpu": "1",
                    "services.nodeports": "0",
                    "services.loadbalancers": "0",
                }
        # What was accepted before the kill is all there: objects and their audit events.
        audit = admin.ok("GET", "/api/v1/audit", params={"name": tenant})["items"]
        assert [(e["kind"], e["action"]) for e in audit] == [("Tenant", "apply")]
        audit = admin.ok("GET", "/api/v1/audit", params={"tenant": tenant})["items"]
        assert [(e["kind"], e["action"]) for e in audit] == [
            ("Project", "apply"),
            ("Tenant", "apply"),
        ]
    finally:
        server.stop()


def test_a_delivery_with_one_cluster_stopped_is_degraded_then_completes(
    wharf: Wharf, edge, kubectl
):
    tenant = project_on_lab1_and_edge(wharf, edge, "shop", "dev")
    apiserver = edge.running()["kube-apiserver"]
    assert apiserver is not None
    path = f"/api/v1/tenants/{tenant}/applications/web"
    body = {
        "kind": "Application",
        "metadata": {"name": "web", "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": "web", "image": "registry.example/web:2.0.1", "replicas": 1},
        },
    }
    os.kill(apiserver, signal.SIGSTOP)
    try:
        wait_for(
            lambda: (
                wharf.admin.ok("GET", "/api/v1/clusters/edge")["status"]["phase"] == "Unreachable"
            ),
            timeout=30,
            what="edge Unreachable",
        )
        wharf.admin.ok("PUT", path, json=body)

        def degraded() -> dict | None:
            obj = wharf.admin.ok("GET", path)
            return obj if obj["status"].get("state") == "Degraded" else None

        app = wait_for(degraded, timeout=60, what="application Degraded")
        assert "edge" in app["status"]["reason"]
        assert "lab1" not in app["status"]["reason"]
        assert app["status"]["clusters"]["edge"]["state"] == "Unreachable"
        wait_for(
            lambda: (
                wharf.admin.ok("GET", path)["status"]["clusters"]["lab1"]["state"] == "Available"
            ),
            timeout=60,
            what="lab1 Available while edge is away",
        )
    finally:
        os.kill(apiserver, signal.SIGCONT)
    # Back again: the delivery completes there without anyone asking.
    wait_for(
        lambda: wharf.admin.ok("GET", path)["status"].get("state") == "Available",
        timeout=90,
        what="application Available in both clusters",
    )
    ns = f"{tenant}--shop-dev"
    assert kubectl(edge, "-n", ns, "get", "deployment", "web", check=False).returncode == 0


def _log_events(server: ServerProcess) -> list[dict]:
    lines = (server.workdir / "server.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _heartbeats(admin) -> float:
    metrics = admin.get("/metrics").text  # metrics are for authenticated scrapers
    line = next(m for m in metrics.splitlines() if 'reconciles{controller="clusters"}' in m)
    return float(line.split()[-1])


def test_the_log_tells_when_a_cluster_goes_away_and_comes_back_not_each_heartbeat(
    edge: LabCluster, tmp_path
):
    kubeconfig = edge.user_kubeconfig(WHARF_USER, ("system:masters",)).read_text()
    body = {"kind": "Cluster", "metadata": {"name": "edge"}, "spec": {"kubeconfig": kubeconfig}}
    apiserver = edge.running()["kube-apiserver"]
    assert apiserver is not None
    with ServerProcess(tmp_path, WHARF_LOG_FORMAT="json") as server:
        admin = server.login()
        admin.ok("PUT", "/api/v1/clusters/edge", json=body)

        def phase(want: str) -> bool:
            return bool(admin.ok("GET", "/api/v1/clusters/edge")["status"].get("phase") == want)

        def beats_after(count: float, more: int) -> bool:
            return _heartbeats(admin) >= count + more

        wait_for(lambda: phase("Ready"), what="edge Ready")
        wait_for(partial(beats_after, _heartbeats(admin), 5), what="5 heartbeats")
        os.kill(apiserver, signal.SIGSTOP)
        try:
            wait_for(lambda: phase("Unreachable"), timeout=30, what="edge Unreachable")
            wait_for(partial(beats_after, _heartbeats(admin), 3), what="3 more heartbeats")
        finally:
            os.kill(apiserver, signal.SIGCONT)
        wait_for(lambda: phase("Ready"), timeout=30, what="edge back")
        wait_for(partial(beats_after, _heartbeats(admin), 5), what="5 heartbeats after")
        events = _log_events(server)
    # The heartbeats themselves are not news: no line per probe, from us or the HTTP client.
    assert not [e for e in events if e["event"].startswith("HTTP Request")]
    # (Other lines may name edge too: this server prunes what earlier tests left there.)
    said = [e for e in events if e.get("cluster") == "edge" and e["event"].startswith("cluster ")]
    assert [(e["event"], e["level"]) for e in said] == [
        ("cluster ready", "info"),
        ("cluster unreachable", "warning"),
        ("cluster reachable again", "info"),
    ]
    assert said[0]["version"] == said[2]["version"] == "v1.37.2"
    assert "TimeoutError" in said[1]["error"]

    # Nothing else repeats with the probes either, however long the cluster is away: watch
    # retries, readiness checks, a reconcile failing the same way at each retry (what
    # controllers do to objects in a cluster, and each key's first failure, are news).
    def what(e: dict) -> tuple:
        # A line about another lease (each cluster's, the platform's) is other news.
        return (e["event"], e.get("informer"), e.get("controller"), e.get("key"), e.get("lease"))

    others = [
        what(e)
        for e in events
        if e["event"] != "request" and "cluster" not in e and e["level"] != "debug"
    ]
    repeated = [line for line, count in Counter(others).items() if count > 1]
    assert not repeated, [e for e in events if what(e) in repeated]
    # Nor are the readiness probes and metrics scrapes (the test made many of both).
    assert not [e for e in events if e.get("path") in ("/readyz", "/metrics")]
    # Wharf's own API requests are still logged, one line each.
    assert {"event": "request", "method": "PUT", "path": "/api/v1/clusters/edge"}.items() <= next(
        e for e in events if e.get("path") == "/api/v1/clusters/edge"
    ).items()
