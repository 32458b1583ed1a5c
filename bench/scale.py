"""The control plane at scale: N compact lab clusters, P kwok pods across them, 1,000 projects.

Starts (or reuses, `--lab DIR`) a compact lab of N clusters, starts a real `wharf server`,
registers the clusters, then creates P pods across them (Deployments pinned to two extra kwok
nodes per cluster of large pod capacity, so no scheduler is in the way), seeds T tenants and
1,000 projects through the API (each placed on a few clusters, one on every cluster), waits for
the controllers to settle, and prints, each next to its baseline measured in the same run:

- the server's RSS: with no clusters, with the clusters (no load pods), with the pods and with
  the projects; the growth per watched pod next to a pod's serialized (JSON) size;
- the console overview and project list p50/p99 next to /healthz of the same server;
- the time for a project's quota edit to reach all its clusters' ResourceQuotas next to a
  plain concurrent server-side apply of the same ResourceQuota change to every cluster.

Prints figures; asserts nothing about time.

    uv run python bench/scale.py [--clusters 30] [--pods 100000] [--projects 1000]
        [--tenants 20] [--per-project 3] [--requests 100] [--changes 10] [--lab DIR]
        [--keep-lab] [--server-log PATH] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from benchkit import PASSWORD, free_port, pct, register_cluster, start_server
from console import fetch, measure, peak_rss_mb
from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_global_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod, ResourceQuota

from wharf.kube import async_client
from wharf.lab import Lab, find_binaries
from wharf.lab.lab import KWOK_NODE_ANNOTATION, SETUP_TIMEOUT, LabCluster
from wharf.tenancy.model import NAMESPACE_QUOTA, namespace_name

LOAD_NS = "scale-load"
BASELINE_NS = "scale-baseline"
PER_DEPLOYMENT = 500  # pods per load Deployment
IMAGE = "registry.example/scale/idle:1.0.0"
WIDE = "wide"  # the project on every cluster, whose quota edits are timed
FIELD_MANAGER = "wharf-scale-bench"
CHANGE_TIMEOUT = 300.0  # seconds a project edit may take to reach its clusters
# Node status is a subresource; lightkube's Node has no status-on-create, so a raw resource.
RawNode = create_global_resource("", "v1", "Node", "nodes")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cpu_seconds(pid: int) -> float:
    """The process's user and system CPU time so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    rss = peak_rss_mb(pid)
    return rss[1] if rss else float("nan")


# -- the lab's load ----------------------------------------------------------------------------
def bulk_nodes(cluster: LabCluster, pods: int) -> list[str]:
    """Two kwok nodes that take `pods` pods each and more (the lab's nodes take 110)."""
    names = [f"{cluster.name}-bulk-{i}" for i in (1, 2)]
    with cluster.http(SETUP_TIMEOUT) as client:
        for name in names:
            # Room besides the load for the tenants' quotas, which the platform's capacity bounds.
            capacity = {"cpu": "1000", "memory": "4000Gi", "pods": str(pods + 5000)}
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                    "labels": {"kubernetes.io/hostname": name, "type": "kwok"},
                },
                "status": {"capacity": capacity, "allocatable": capacity},
            }
            answer = client.post("/api/v1/nodes", json=node)
            if answer.status_code not in (201, 409):
                raise SystemExit(f"{cluster.name}: creating node {name}: {answer.text}")
    return names


def load_deployment(name: str, replicas: int, node: str) -> dict[str, Any]:
    labels = {"scale.bench/load": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": LOAD_NS, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    # Pinned: kwok runs them at once, the scheduler is not what is measured.
                    "nodeName": node,
                    "containers": [
                        {
                            "name": "idle",
                            "image": IMAGE,
                            "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}},
                        }
                    ],
                },
            },
        },
    }


async def create_load(clusters: list[LabCluster], pods: int) -> None:
    per_cluster = [pods // len(clusters) + (i < pods % len(clusters)) for i in range(len(clusters))]

    async def one(cluster: LabCluster, count: int) -> None:
        nodes = bulk_nodes(cluster, count)
        client = async_client(cluster.kubeconfig, timeout=60)
        try:
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LOAD_NS}}
            await client.apply(from_dict(namespace), field_manager=FIELD_MANAGER)
            for d in range(math.ceil(count / PER_DEPLOYMENT)):
                replicas = min(PER_DEPLOYMENT, count - d * PER_DEPLOYMENT)
                manifest = load_deployment(f"load-{d:03d}", replicas, nodes[d % 2])
                await client.apply(from_dict(manifest), field_manager=FIELD_MANAGER, force=True)
        finally:
            await client.close()

    await asyncio.gather(*(one(c, n) for c, n in zip(clusters, per_cluster, strict=True)))


async def available_pods(clients: dict[str, AsyncClient]) -> int:
    async def one(client: AsyncClient) -> int:
        total = 0
        async for d in client.list(Deployment, namespace=LOAD_NS):
            total += (d.status.availableReplicas or 0) if d.status else 0
        return total

    return sum(await asyncio.gather(*(one(c) for c in clients.values())))


async def wait_for_load(clients: dict[str, AsyncClient], pods: int) -> float:
    started = time.perf_counter()
    last = -1.0
    while (ready := await available_pods(clients)) < pods:
        if time.perf_counter() - last > 15:
            say(f"load: {ready:,} / {pods:,} pods available")
            last = time.perf_counter()
        await asyncio.sleep(3)
    return time.perf_counter() - started


async def serialized_pods(clients: dict[str, AsyncClient]) -> tuple[int, int]:
    """(pods, their JSON bytes) in every cluster, as a list returns them (the informer's view)."""
    count = size = 0
    for client in clients.values():
        async for pod in client.list(Pod, namespace="*"):
            count += 1
            size += len(json.dumps(pod.to_dict(), separators=(",", ":")))
    return count, size


# -- wharf -------------------------------------------------------------------------------------
def login(base: str) -> httpx.Client:
    answer = httpx.post(f"{base}/api/v1/login", json={"username": "admin", "password": PASSWORD})
    token = answer.json()["token"]
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def register(http: httpx.Client, clusters: list[LabCluster]) -> float:
    started = time.perf_counter()
    for cluster in clusters:
        register_cluster(http, cluster.name, cluster.kubeconfig)
    wait_until(
        "clusters Ready",
        lambda: sum(
            c["status"].get("phase") == "Ready" and bool(c["status"].get("capacity"))
            for c in http.get("/api/v1/clusters", params={"limit": 500}).json()["items"]
        ),
        len(clusters),
    )
    return time.perf_counter() - started


def wait_until(what: str, count: Callable[[], int], target: int, timeout: float = 3600) -> None:
    deadline, last = time.monotonic() + timeout, -1.0
    while (done := count()) < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: {done} of {target} after {timeout:.0f}s")
        if time.monotonic() - last > 15:
            say(f"{what}: {done:,} / {target:,}")
            last = time.monotonic()
        time.sleep(1)


def cluster_pods(http: httpx.Client) -> int:
    """The pods the clusters' status counts (the cluster controller's informers)."""
    items = http.get("/api/v1/clusters", params={"limit": 500}).json()["items"]
    return sum(
        int(c["status"].get("capacity", {}).get("requested", {}).get("pods", "0")) for c in items
    )


def project_manifest(name: str, clusters: list[str], pods: int) -> dict[str, Any]:
    return {
        "kind": "Project",
        "metadata": {"name": name},
        "spec": {
            "quota": {"cpu": "1", "memory": "1Gi", "pods": str(pods)},
            "environments": [{"name": "prod", "clusters": clusters}],
        },
    }


def placement(args: argparse.Namespace, names: list[str]) -> dict[tuple[str, str], list[str]]:
    """(tenant, project) -> its clusters: projects round-robin over tenants and clusters; the
    first tenant's WIDE project on all of them."""
    out: dict[tuple[str, str], list[str]] = {("t00", WIDE): names}
    k = min(args.per_project, len(names))
    for i in range(args.projects - 1):
        tenant = f"t{i % args.tenants:02d}"
        out[(tenant, f"p{i:04d}")] = [names[(i * k + j) % len(names)] for j in range(k)]
    return out


def tenant_quota(args: argparse.Namespace, clusters: int) -> dict[str, str]:
    """Room for its projects and the WIDE one's edits (the tenants' quotas add up to at most
    the platform's capacity, so not more)."""
    projects = math.ceil(args.projects / args.tenants) + 1
    pods = projects * 10 * args.per_project + (21 + args.changes) * clusters
    return {"cpu": str(projects), "memory": f"{projects}Gi", "pods": str(pods)}


async def seed(base: str, token: str, args: argparse.Namespace, names: list[str]) -> float:
    """Tenants and projects through the API, 8 at a time; the seconds until all are Ready."""
    started = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as http:
        for t in range(args.tenants):
            tenant = {
                "kind": "Tenant",
                "metadata": {"name": f"t{t:02d}"},
                "spec": {
                    "quota": tenant_quota(args, len(names)),
                    "clusters": names,
                },
            }
            answer = await http.put(f"/api/v1/tenants/t{t:02d}", json=tenant)
            if answer.status_code >= 400:
                raise SystemExit(f"tenant t{t:02d}: {answer.status_code} {answer.text}")
        gate = asyncio.Semaphore(8)
        placed = placement(args, names)

        async def put(tenant: str, project: str, clusters: list[str]) -> None:
            async with gate:
                pods = 10 * len(clusters)
                answer = await http.put(
                    f"/api/v1/tenants/{tenant}/projects/{project}",
                    json=project_manifest(project, clusters, pods),
                )
                if answer.status_code >= 400:
                    raise SystemExit(f"{tenant}/{project}: {answer.status_code} {answer.text}")

        await asyncio.gather(*(put(t, p, c) for (t, p), c in placed.items()))
    say(f"{len(placed)} projects applied in {time.perf_counter() - started:.0f}s")
    return started


def ready_projects(http: httpx.Client) -> int:
    ready, cont = 0, None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"continue": cont} if cont else {})}
        page = http.get("/api/v1/projects", params=params).json()
        for p in page["items"]:
            status = p.get("status", {})
            ready += (
                status.get("phase") == "Ready"
                and status.get("observedGeneration") == p["metadata"]["generation"]
            )
        cont = page.get("metadata", {}).get("continue")
        if not cont:
            return ready


# -- propagation -------------------------------------------------------------------------------
async def quota_everywhere(
    clients: dict[str, AsyncClient], namespace: str, pods: str, started: float
) -> float:
    """Seconds from `started` until every cluster's wharf-quota in `namespace` holds `pods`."""

    async def one(client: AsyncClient) -> float:
        while True:
            try:
                quota = await client.get(ResourceQuota, NAMESPACE_QUOTA, namespace=namespace)
                hard = quota.spec.hard if quota.spec else None
                if hard and hard.get("pods") == pods:
                    return time.perf_counter() - started
            except ApiError:
                pass
            await asyncio.sleep(0.1)

    try:
        async with asyncio.timeout(CHANGE_TIMEOUT):
            return max(await asyncio.gather(*(one(c) for c in clients.values())))
    except TimeoutError:
        say(f"a quota edit did not reach every cluster within {CHANGE_TIMEOUT:.0f}s")
        return float("inf")


async def wharf_changes(
    http: httpx.AsyncClient, clients: dict[str, AsyncClient], names: list[str], changes: int
) -> list[float]:
    namespace = namespace_name("t00", WIDE, "prod")
    times = []
    for i in range(changes):
        per_cluster = 20 + i + 1
        manifest = project_manifest(WIDE, names, per_cluster * len(names))
        queued = await queue_depth(http, "placement")
        started = time.perf_counter()
        answer = await http.put(f"/api/v1/tenants/t00/projects/{WIDE}", json=manifest)
        answer.raise_for_status()
        taken = time.perf_counter() - started
        times.append(await quota_everywhere(clients, namespace, str(per_cluster), started))
        say(
            f"quota edit {i + 1}: {times[-1]:.2f}s to every cluster, the PUT answered in "
            f"{taken:.2f}s ({queued} keys queued in placement)"
        )
    return times


async def queue_depth(http: httpx.AsyncClient, controller: str) -> str:
    """The controller's queue depth as /metrics says it (what an edit may wait behind)."""
    prefix = f'wharf_controller_queue_depth{{controller="{controller}"}} '
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(prefix):
            return line.removeprefix(prefix)
    return "?"


async def plain_changes(clients: dict[str, AsyncClient], changes: int) -> list[float]:
    """The same ResourceQuota change by a plain concurrent SSA to every cluster (in a namespace
    of its own: wharf would put its own quota back)."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BASELINE_NS}}
    for client in clients.values():
        await client.apply(from_dict(namespace), field_manager=FIELD_MANAGER)
    times = []
    for i in range(changes):
        quota = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": NAMESPACE_QUOTA, "namespace": BASELINE_NS},
            "spec": {"hard": {"cpu": "1", "memory": "1Gi", "pods": str(20 + i + 1)}},
        }
        started = time.perf_counter()
        await asyncio.gather(
            *(
                c.apply(from_dict(quota), field_manager=FIELD_MANAGER, force=True)
                for c in clients.values()
            )
        )
        times.append(time.perf_counter() - started)
    return times


# -- the run -----------------------------------------------------------------------------------
async def console_pages(base: str, requests: int) -> list[tuple[str, list[float], int]]:
    out = []
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        login = await client.post(
            "/console/login", data={"username": "admin", "password": PASSWORD}
        )
        if login.status_code != 303:
            raise SystemExit(f"console login failed: {login.status_code}")
        for _ in range(20):
            await client.get("/healthz")
        for name, url, expect in (
            ("GET /healthz (baseline)", "/healthz", '"ok"'),
            ("console overview /console/", "/console/", "<h1>Overview</h1>"),
            ("console projects /console/projects", "/console/projects", "<h1>Projects</h1>"),
        ):
            _, size = await fetch(client, url, expect)
            out.append((name, await measure(client, url, expect, requests, 0), size))
    return out


def run(lab: Lab, args: argparse.Namespace, workdir: Path) -> None:
    clusters = lab.clusters()
    names = [c.name for c in clusters]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = args.database_url or f"sqlite:///{workdir / 'scale.db'}"
    log = args.server_log or workdir / "server.log"
    server = start_server(port, {"WHARF_DATABASE_URL": db}, log, timeout=300)
    say(f"server ready (log {log})")
    rss: list[tuple[str, float, float]] = []

    def note(row: tuple[str, float, float]) -> None:
        rss.append(row)
        say(f"server {row[0]}: RSS {row[1]:.0f} MiB, CPU {row[2]:.0f} s so far")

    try:
        http = login(base)
        time.sleep(2)
        note(("no clusters registered", rss_mib(server.pid), cpu_seconds(server.pid)))
        seconds = register(http, clusters)
        time.sleep(5)
        note(
            (
                f"{len(names)} clusters registered, before the load",
                rss_mib(server.pid),
                cpu_seconds(server.pid),
            )
        )
        say(f"{len(names)} clusters Ready in wharf in {seconds:.0f}s")
        clients = {c.name: async_client(c.kubeconfig, timeout=120) for c in clusters}
        loop = asyncio.new_event_loop()
        try:
            started = time.perf_counter()
            loop.run_until_complete(create_load(clusters, args.pods))
            say(f"load Deployments applied in {time.perf_counter() - started:.0f}s")
            load_s = loop.run_until_complete(wait_for_load(clients, args.pods))
            say(f"{args.pods:,} pods available in {load_s:.0f}s")
            wait_until(
                "pods counted in the clusters' status", lambda: cluster_pods(http), args.pods
            )
            pods, pod_bytes = loop.run_until_complete(serialized_pods(clients))
            time.sleep(5)
            note(
                (
                    f"with {pods:,} pods in the clusters",
                    rss_mib(server.pid),
                    cpu_seconds(server.pid),
                )
            )
            token = http.headers["Authorization"].split()[1]
            seeded = loop.run_until_complete(seed(base, token, args, names))
            wait_until("projects Ready", lambda: ready_projects(http), args.projects)
            settle_s = time.perf_counter() - seeded
            say(f"{args.projects} projects Ready {settle_s:.0f}s after the first was applied")
            time.sleep(5)
            note(
                (
                    f"with {args.projects:,} projects placed",
                    rss_mib(server.pid),
                    cpu_seconds(server.pid),
                )
            )
            pages = loop.run_until_complete(console_pages(base, args.requests))
            for name, values, _ in pages:
                say(f"{name}: p50 {pct(values, 50):.1f} ms, p99 {pct(values, 99):.1f} ms")

            async def changes() -> tuple[list[float], list[float]]:
                async with httpx.AsyncClient(
                    base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120
                ) as h:
                    mine = await wharf_changes(h, clients, names, args.changes)
                return mine, await plain_changes(clients, args.changes)

            wharf_s, plain_s = loop.run_until_complete(changes())
            note(
                (
                    "peak, at the end",
                    (peak_rss_mb(server.pid) or (0, 0))[0],
                    cpu_seconds(server.pid),
                )
            )
        finally:
            for client in clients.values():
                loop.run_until_complete(client.close())
            loop.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    report(args, names, pods, pod_bytes, rss, pages, wharf_s, plain_s, settle_s)


def report(
    args: argparse.Namespace,
    names: list[str],
    pods: int,
    pod_bytes: int,
    rss: list[tuple[str, float, float]],
    pages: list[tuple[str, list[float], int]],
    wharf_s: list[float],
    plain_s: list[float],
    settle_s: float,
) -> None:
    print(
        f"\n{len(names)} compact clusters, {pods:,} pods, {args.projects:,} projects of "
        f"{args.tenants} tenants (each on {args.per_project} clusters, {WIDE!r} on all)"
    )
    print(f"\n  {'server':<48}{'RSS MiB':>9}{'CPU s':>9}  (CPU: its total so far)")
    for what, mib, cpu in rss:
        print(f"  {what:<48}{mib:>9.0f}{cpu:>9.0f}")
    grown = (rss[2][1] - rss[1][1]) * 2**20
    print(
        f"  growth per pod watched: {grown / max(pods, 1):,.0f} bytes; a pod's JSON as listed: "
        f"{pod_bytes / max(pods, 1):,.0f} bytes (all pods: {pod_bytes / 2**20:,.0f} MiB)"
    )
    print(f"\nprojects: all {args.projects:,} Ready {settle_s:.0f}s after the first apply")
    print(f"\nconsole, {args.requests} requests per page, one at a time")
    print(f"  {'page':<40}{'p50 ms':>9}{'p99 ms':>9}{'KiB':>8}{'p99 vs healthz':>16}")
    base99 = pct(pages[0][1], 99)
    for name, values, size in pages:
        p99 = pct(values, 99)
        print(
            f"  {name:<40}{pct(values, 50):>9.1f}{p99:>9.1f}{size / 1024:>8.1f}"
            f"{p99 / base99:>15.1f}x"
        )
    print(f"\na project quota edit reaching all {len(names)} clusters, {args.changes} edits")
    print(f"  {'':<48}{'p50 ms':>9}{'max ms':>9}")
    for label, values in (
        ("plain concurrent SSA to every cluster", plain_s),
        ("wharf: PUT to every ResourceQuota changed", wharf_s),
    ):
        ms = [v * 1000 for v in values]
        print(f"  {label:<48}{pct(ms, 50):>9.0f}{max(ms):>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=30)
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--per-project", type=int, default=3, help="clusters per project")
    parser.add_argument("--requests", type=int, default=100, help="per console page")
    parser.add_argument("--changes", type=int, default=10, help="project quota edits timed")
    parser.add_argument("--lab", type=Path, help="lab directory (reused if up)")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab running")
    parser.add_argument("--server-log", type=Path, help="keep the server's log here")
    parser.add_argument("--database-url", help="a fresh, empty database (default: SQLite)")
    args = parser.parse_args()
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("build the lab first: uv run wharf lab build")
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(args.lab or Path(tmp) / "lab", binaries)
        started = time.perf_counter()
        lab.up(clusters=args.clusters, nodes=2, progress=say, crd_bundles=(), compact=True)
        say(f"lab of {args.clusters} compact clusters up in {time.perf_counter() - started:.0f}s")
        try:
            run(lab, args, Path(tmp))
        finally:
            if not args.keep_lab:
                lab.down(progress=say)


if __name__ == "__main__":
    main()
