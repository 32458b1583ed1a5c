"""The release controller's delay per step: from a step's condition being met to the next
step's objects applied in the cluster, as a watch on the lab's API server sees them, over N
concurrent canary releases through 3 clusters; printed next to the analysis interval measured
in the same run (the gap between two measurements of one metric, configured as 1 s).

Each release runs `setReplicas 1, analysis, setReplicas 2, pause 2 s, setReplicas 3,
pause (until promoted), setReplicas 4` in one wave of all clusters, judged by a real
Prometheus scraping the test exporter. The conditions, and when they are met:

- start:    the new revision is written (the PUT answered) -> the canary at 1 replica;
- analysis: the measurement that completes the analysis is stored -> the canary at 2;
- pause:    the 2 s pause has run out (its start + 2 s)         -> the canary at 3;
- promote:  `release promote` answered                          -> the canary at 4.

    uv run python bench/release_steps.py [--releases 20] [--clusters 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from benchkit import PASSWORD, free_port, pct, start_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' exporter

from lightkube import AsyncClient, KubeConfig
from lightkube.resources.apps_v1 import Deployment
from tests.integration.exporter import Exporter

from wharf.lab import Lab, find_binaries
from wharf.lab.prometheus import Prometheus

TENANT, PROJECT, ENV = "bench", "bench", "load"
NAMESPACE = f"{TENANT}--{PROJECT}-{ENV}"
IMAGE = "registry.example/bench/web:1.0.0"
NEW_IMAGE = "registry.example/bench/web:1.1.0"
PAUSE = 2
STEPS: list[dict[str, Any]] = [
    {"setReplicas": 1},
    {"analysis": {"templates": ["error-rate"]}},
    {"setReplicas": 2},
    {"pause": {"duration": PAUSE}},
    {"setReplicas": 3},
    {"pause": {}},
    {"setReplicas": 4},
]
ERROR_RATE = (
    'sum(rate(wharf_test_requests_total{app="${app}",cluster="${cluster}",'
    'revision="${revision}",code="500"}[4s])) / sum(rate(wharf_test_requests_total{'
    'app="${app}",cluster="${cluster}",revision="${revision}"}[4s]))'
)
TEMPLATE = {
    "kind": "AnalysisTemplate",
    "metadata": {"name": "error-rate"},
    "spec": {
        "metrics": [
            {
                "name": "errors",
                "query": ERROR_RATE,
                "interval": 1,
                "count": 3,
                "initialDelay": 2,
                "successCondition": "result < 0.05",
                "failureCondition": "result > 0.3",
                "consecutiveErrorLimit": 10,
            }
        ]
    },
}


class Seen:
    """When each canary Deployment was first seen at each replica count, per cluster (the
    watches run in a thread of their own, so the bench's HTTP calls do not delay them)."""

    def __init__(self) -> None:
        self.at: dict[tuple[str, str, int], float] = {}
        self.lock = threading.Lock()

    def note(self, cluster: str, name: str, replicas: int) -> None:
        with self.lock:
            self.at.setdefault((cluster, name, replicas), time.time())

    def get(self, cluster: str, name: str, replicas: int) -> float | None:
        with self.lock:
            return self.at.get((cluster, name, replicas))


async def watch(cluster: str, kubeconfig: Path, seen: Seen, stop: asyncio.Event) -> None:
    client = AsyncClient(KubeConfig.from_file(kubeconfig), namespace=NAMESPACE)
    while not stop.is_set():
        try:
            async for _event, obj in client.watch(Deployment, namespace=NAMESPACE):
                name = obj.metadata.name if obj.metadata else ""
                if name and name.endswith("-canary") and obj.spec is not None:
                    seen.note(cluster, name.removesuffix("-canary"), obj.spec.replicas or 0)
        except Exception:
            await asyncio.sleep(0.1)
    await client.close()


def watching(clusters: dict[str, Path], seen: Seen) -> tuple[threading.Thread, Any]:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def run() -> None:
        tasks = [asyncio.create_task(watch(c, k, seen, stop)) for c, k in clusters.items()]
        await stop.wait()
        for task in tasks:
            task.cancel()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    return thread, lambda: loop.call_soon_threadsafe(stop.set)


def app(name: str, image: str, clusters: list[str]) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "project": PROJECT,
            "environment": ENV,
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": name, "image": image, "replicas": 1},
            "strategy": {
                "type": "canary",
                "canary": {"steps": STEPS},
                "waves": [{"clusters": clusters}],
            },
        },
    }


def ok(answer: httpx.Response) -> httpx.Response:
    if answer.is_error:
        raise SystemExit(f"{answer.request.method} {answer.request.url}: {answer.text}")
    return answer


def wait(what: str, check: Any, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def reconciles(http: httpx.Client) -> dict[str, float]:
    counts = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("wharf_controller_reconciles{"):
            name = line.split('controller="')[1].split('"')[0]
            counts[name] = float(line.rsplit(" ", 1)[1])
    return counts


def parse(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def set_up(http: httpx.Client, lab: Lab, names: list[str]) -> None:
    for cluster in lab.clusters():
        body = {
            "kind": "Cluster",
            "metadata": {"name": cluster.name},
            "spec": {"kubeconfig": cluster.kubeconfig.read_text()},
        }
        ok(http.put(f"/api/v1/clusters/{cluster.name}", json=body))
    wait(
        "clusters Ready",
        lambda: all(
            c["status"].get("phase") == "Ready" and c["status"].get("capacity")
            for c in http.get("/api/v1/clusters").json()["items"]
        ),
    )
    quota = {"cpu": "12", "memory": "24Gi", "pods": "200"}
    tenant = {"kind": "Tenant", "metadata": {"name": TENANT}, "spec": {"quota": quota}}
    tenant["spec"]["clusters"] = names
    ok(http.put(f"/api/v1/tenants/{TENANT}", json=tenant))
    project = {
        "kind": "Project",
        "metadata": {"name": PROJECT},
        "spec": {"quota": quota, "environments": [{"name": ENV, "clusters": names}]},
    }
    ok(http.put(f"/api/v1/tenants/{TENANT}/projects/{PROJECT}", json=project))
    wait(
        "project Ready",
        lambda: (
            http.get(f"/api/v1/tenants/{TENANT}/projects/{PROJECT}").json()["status"].get("phase")
            == "Ready"
        ),
    )
    path = f"/api/v1/tenants/{TENANT}/analysistemplates/error-rate"
    ok(http.put(path, json=TEMPLATE))


def release(http: httpx.Client, name: str) -> dict[str, Any] | None:
    answer = http.get(f"/api/v1/tenants/{TENANT}/applications/{name}/release")
    return answer.json() if answer.status_code == 200 else None


def delivered(http: httpx.Client, apps: list[str], names: list[str]) -> bool:
    items = http.get(f"/api/v1/tenants/{TENANT}/applications", params={"limit": 500}).json()
    ready = 0
    for item in items["items"]:
        clusters = item["status"].get("clusters", {})
        if len(clusters) == len(names) and all(
            c.get("state") == "Available" for c in clusters.values()
        ):
            ready += 1
    return ready == len(apps)


def run(
    lab: Lab, exporter: Exporter, prometheus: Prometheus, count: int, workdir: Path
) -> tuple[dict[str, list[float]], list[float]]:
    port = free_port()
    db = os.environ.get("WHARF_DATABASE_URL") or f"sqlite:///{workdir / 'bench.db'}"
    env = {
        "WHARF_DATABASE_URL": db,
        "WHARF_HEARTBEAT_SECONDS": "1",
        "WHARF_PROMETHEUS_URL": prometheus.url,
        "WHARF_METRICS_PUBLIC": "true",  # the controllers' reconcile counts, for the report
    }
    # A loaded machine may take more than the default minute to start the server.
    server = start_server(port, env, log=workdir / "server.log", timeout=300)
    base = f"http://127.0.0.1:{port}"
    seen = Seen()
    names = [c.name for c in lab.clusters()]
    thread, stop = watching({c.name: c.kubeconfig for c in lab.clusters()}, seen)
    pool = ThreadPoolExecutor(max_workers=count)
    try:
        token = httpx.post(
            f"{base}/api/v1/login", json={"username": "admin", "password": PASSWORD}
        ).json()["token"]
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        set_up(http, lab, names)
        apps = [f"app{i:02d}" for i in range(count)]
        for name in apps:
            path = f"/api/v1/tenants/{TENANT}/applications/{name}"
            ok(http.put(path, json=app(name, IMAGE, names)))
            for cluster in names:
                exporter.serve(NAMESPACE, name, cluster, 2, errors=0.0)
        wait("first revisions Available", lambda: delivered(http, apps, names), timeout=600)

        def start(name: str) -> float:
            path = f"/api/v1/tenants/{TENANT}/applications/{name}"
            asked = time.time()
            ok(http.put(path, json=app(name, NEW_IMAGE, names)))
            return asked

        before = reconciles(http)
        print("releasing", file=sys.stderr)
        started = dict(zip(apps, pool.map(start, apps), strict=True))

        def waiting(name: str) -> bool:
            body = release(http, name)
            return body is not None and all(
                c["phase"] == "WaitingPromote" for c in body["clusters"].values()
            )

        wait("every release paused for a promote", lambda: all(waiting(a) for a in apps), 600)

        def promote(name: str) -> float:
            path = f"/api/v1/tenants/{TENANT}/applications/{name}/release/promote"
            asked = time.time()  # the controller may act before the answer is back
            ok(http.post(path))
            return asked

        promoted = dict(zip(apps, pool.map(promote, apps), strict=True))
        wait(
            "canaries at 4 replicas",
            lambda: all(seen.get(c, a, 4) for a in apps for c in names),
        )
        after = reconciles(http)
        work = {k: int(after[k] - before.get(k, 0)) for k in sorted(after)}
        print(f"reconciles while releasing: {work}")
        delays: dict[str, list[float]] = {"start": [], "analysis": [], "pause": [], "promote": []}
        gaps: list[float] = []
        for name in apps:
            body = release(http, name)
            assert body is not None
            for cluster in names:
                mine = sorted(
                    parse(m["time"]) for m in body["measurements"] if m["cluster"] == cluster
                )
                gaps += [b - a for a, b in itertools.pairwise(mine)]
                pause_started = parse(body["clusters"][cluster]["stepsStartedAt"]["3"])
                met = {
                    "start": (started[name], 1),
                    "analysis": (mine[-1], 2),
                    "pause": (pause_started + PAUSE, 3),
                    "promote": (promoted[name], 4),
                }
                for what, (at, replicas) in met.items():
                    applied = seen.get(cluster, name, replicas)
                    assert applied is not None
                    delays[what].append(max(0.0, applied - at) * 1000)
        return delays, [g * 1000 for g in gaps]
    finally:
        pool.shutdown()
        stop()
        thread.join(timeout=10)
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--lab", type=Path, help="keep the lab in this folder (reused)")
    args = parser.parse_args()
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("build the lab first: uv run wharf lab build")
    with tempfile.TemporaryDirectory() as tmp, Exporter().running() as exporter:
        lab = Lab(args.lab or Path(tmp) / "lab", binaries)
        prometheus = Prometheus(Path(tmp) / "prometheus", [exporter.address], "1s")
        lab.up(clusters=args.clusters, nodes=2, progress=lambda _: None)
        prometheus.start()
        try:
            delays, gaps = run(lab, exporter, prometheus, args.releases, Path(tmp))
        finally:
            prometheus.stop()
            if args.lab is None:
                lab.down(progress=lambda _: None)
    print(f"{args.releases} concurrent canary releases x {args.clusters} clusters")
    print(f"{'':<44}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}")
    rows = [
        ("analysis interval (configured 1000 ms)", gaps),
        ("step delay: write -> first canary", delays["start"]),
        ("step delay: analysis passed -> next step", delays["analysis"]),
        ("step delay: pause ended -> next step", delays["pause"]),
        ("step delay: promote -> next step", delays["promote"]),
        ("step delay: every step", [d for v in delays.values() for d in v]),
    ]
    for label, values in rows:
        print(f"{label:<44}{len(values):>6}{pct(values, 50):>10.0f}{pct(values, 99):>10.0f}")


if __name__ == "__main__":
    main()
