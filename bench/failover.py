"""Failover time next to the grace period: an application spread 2-2-2 over three lab clusters;
one cluster's API server is frozen (SIGSTOP); measured from the freeze to Wharf seeing the
cluster Unreachable, and to 6 replicas ready in the two others; then from the thaw (SIGCONT) to
the spread being back (2 in each cluster). One run per grace period, in the same lab and server.

    uv run python bench/failover.py [--graces 0,5,15] [--probe 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from benchkit import PASSWORD, free_port, start_server

from wharf.lab import Lab, LabCluster, find_binaries

TENANT, PROJECT = "bench", "shop"
NAMESPACE = f"{TENANT}--{PROJECT}-dev"
HEARTBEAT = 1.0
KARMADA = "Karmada's defaults: 40 s grace (cluster-monitor) + 300 s toleration before eviction"


def ok(answer: httpx.Response) -> dict[str, Any]:
    if answer.status_code >= 300:
        raise SystemExit(f"{answer.request.method} {answer.request.url}: {answer.text}")
    return dict(answer.json())


def wait(what: str, check: Callable[[], bool], timeout: float = 180) -> float:
    """Poll `check` every 0.1 s; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def deployment(cluster: LabCluster, app: str) -> dict[str, Any]:
    with cluster.http(timeout=2) as http:
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{app}"
        answer = http.get(path)
        return dict(answer.json()) if answer.status_code == 200 else {}


def ready(clusters: list[LabCluster], app: str) -> int:
    return sum(int(deployment(c, app).get("status", {}).get("readyReplicas", 0)) for c in clusters)


def spread(clusters: list[LabCluster], app: str) -> list[int]:
    return [int(deployment(c, app).get("spec", {}).get("replicas", 0)) for c in clusters]


def set_up(http: httpx.Client, lab: Lab) -> list[str]:
    names = [c.name for c in lab.clusters()]
    for cluster in lab.clusters():
        body = {
            "kind": "Cluster",
            "metadata": {"name": cluster.name},
            "spec": {"kubeconfig": cluster.kubeconfig.read_text()},
        }
        ok(http.put(f"/api/v1/clusters/{cluster.name}", json=body))
    quota = {"cpu": "12", "memory": "24Gi"}
    tenant = {"kind": "Tenant", "metadata": {"name": TENANT}, "spec": {"quota": quota}}
    tenant["spec"]["clusters"] = names
    ok(http.put(f"/api/v1/tenants/{TENANT}", json=tenant))
    project = {
        "kind": "Project",
        "metadata": {"name": PROJECT},
        "spec": {"quota": quota, "environments": [{"name": "dev", "clusters": names}]},
    }
    ok(http.put(f"/api/v1/tenants/{TENANT}/projects/{PROJECT}", json=project))
    path = f"/api/v1/tenants/{TENANT}/projects/{PROJECT}"
    wait("project Ready", lambda: ok(http.get(path))["status"].get("phase") == "Ready")
    return names


def deliver(http: httpx.Client, app: str, grace: int) -> None:
    body = {
        "kind": "Application",
        "metadata": {"name": app},
        "spec": {
            "project": PROJECT,
            "environment": "dev",
            "template": {"name": "worker", "version": "1.0.0"},
            "values": {"name": app, "image": "registry.example/work:1.0.0"},
            "replicas": 2,
            "failover": {"gracePeriodSeconds": grace},
        },
    }
    ok(http.put(f"/api/v1/tenants/{TENANT}/applications/{app}", json=body))


def phase(http: httpx.Client, cluster: str) -> str:
    return str(ok(http.get(f"/api/v1/clusters/{cluster}"))["status"].get("phase"))


def measure(http: httpx.Client, lab: Lab, grace: int) -> tuple[float, float, float]:
    """(detected, failed over, back in the spread) in seconds, for one grace period."""
    clusters = lab.clusters()
    frozen, survivors = clusters[-1], clusters[:-1]
    app = f"work{grace}"
    deliver(http, app, grace)
    wait(f"{app} ready", lambda: ready(clusters, app) == 6)
    apiserver = frozen.running()["kube-apiserver"]
    assert apiserver is not None
    os.kill(apiserver, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        detected = wait("Unreachable", lambda: phase(http, frozen.name) == "Unreachable")
        moved = wait("failover", lambda: ready(survivors, app) == 6, 120 + grace)
    finally:
        os.kill(apiserver, signal.SIGCONT)
    thawed = time.monotonic()
    back = wait("spread back", lambda: spread(clusters, app) == [2, 2, 2])
    ok(http.delete(f"/api/v1/tenants/{TENANT}/applications/{app}", params={"confirm": app}))
    return detected - stopped, moved - stopped, back - thawed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graces", default="0,5,15", help="grace periods (s), comma-separated")
    parser.add_argument("--probe", type=float, default=2.0, help="WHARF_CLUSTER_PROBE_TIMEOUT")
    parser.add_argument("--lab", type=Path, help="keep the lab in this folder (reused)")
    args = parser.parse_args()
    graces = [int(g) for g in args.graces.split(",")]
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("build the lab first: uv run wharf lab build")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(args.lab or Path(tmp) / "lab", binaries)
        lab.up(clusters=3, nodes=1, progress=lambda _: None)
        port = free_port()
        env = {
            "WHARF_DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}",
            "WHARF_HEARTBEAT_SECONDS": str(HEARTBEAT),
            "WHARF_CLUSTER_PROBE_TIMEOUT": str(args.probe),
        }
        server = start_server(port, env, log=Path(tmp) / "server.log", timeout=300)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                login = {"username": "admin", "password": PASSWORD}
                token = ok(http.post("/api/v1/login", json=login))["token"]
                http.headers["Authorization"] = f"Bearer {token}"
                set_up(http, lab)
                rows = [(g, *measure(http, lab, g)) for g in graces]
        finally:
            server.terminate()
            server.wait(timeout=30)
            if args.lab is None:
                lab.down(progress=lambda _: None)
    promised = HEARTBEAT + args.probe
    print(
        f"failover of 6 replicas (2 per cluster) when 1 of 3 clusters freezes; heartbeat "
        f"{HEARTBEAT:g} s, probe timeout {args.probe:g} s (Unreachable promised within "
        f"{promised:g} s)"
    )
    print(
        f"{'grace s':>8}{'detected s':>12}{'failed over s':>15}{'over grace s':>14}"
        f"{'spread back s':>15}"
    )
    for grace, detected, moved, back in rows:
        print(f"{grace:>8}{detected:>12.1f}{moved:>15.1f}{moved - grace:>14.1f}{back:>15.1f}")
    print(KARMADA)


if __name__ == "__main__":
    main()
