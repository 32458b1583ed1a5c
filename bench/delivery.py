"""Deliver K applications to N clusters through Wharf, next to the physical limit: a plain
concurrent server-side-apply loop of the same manifests, measured in the same run on the same
lab. Prints objects per second, p50/p99 from submit to applied, and the ratio of the two;
then the memory delivery's watch caches take per object, next to the object's size as the API
server sends it (with managedFields) and as the cache keeps it.

    uv run python bench/delivery.py [--apps 50] [--clusters 2] [--compact]

More than 8 clusters need `--compact` (the lab's API servers sharing one etcd: docs/lab.md);
the default is compact from 9 clusters on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import httpx2
from benchkit import PASSWORD, free_port, pct, register_cluster, start_server
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError

from wharf.apps.catalog import CATALOG
from wharf.apps.controller import OWNED, RESOURCES
from wharf.apps.model import ApplicationSpec, TemplateVersion, desired_objects, render
from wharf.kube import async_client
from wharf.kube.informer import Informer, slim
from wharf.lab import Lab, find_binaries
from wharf.lab.lab import MAX_CLUSTERS

IMAGE = "registry.example/bench/web:1.0.0"
SUBMITTERS = 8
POLL_SECONDS = 0.2


def manifests(app: str, clusters: list[str]) -> dict[str, list[dict[str, Any]]]:
    tv = TemplateVersion.model_validate(CATALOG["web-service"]["versions"][0])
    spec = ApplicationSpec.model_validate(
        {
            "project": "bench",
            "environment": "load",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": app, "image": IMAGE, "replicas": 1},
        }
    )
    rendered = render(tv, spec.values)
    return {c: desired_objects(app, spec, rendered, c, {"bench": "baseline"}) for c in clusters}


async def applied(client: Any, obj: dict[str, Any]) -> None:
    """One forced server-side apply, retried as any client would when an overloaded API
    server gives up on it (a shared machine can make it)."""
    for attempt in range(6):
        try:
            await client.apply(from_dict(obj), force=True)
            return
        except (ApiError, httpx2.TimeoutException) as exc:
            code = exc.status.code if isinstance(exc, ApiError) else 0
            if attempt == 5 or code not in (0, 429, 500, 503, 504):
                raise
            await asyncio.sleep(0.5 * 2**attempt)


IN_FLIGHT = 20  # requests at once per cluster: what an HTTP client's pool keeps open


async def baseline(lab: Lab, apps: int) -> tuple[float, list[float], int]:
    """Plain SSA: every object of every app to every cluster, all submitted at once, at most
    `IN_FLIGHT` requests in flight per cluster (200 apps to 10 compact clusters unbounded
    made every API server answer 504 past its retries on the 2-core machine)."""
    clusters = {c.name: async_client(c.kubeconfig, timeout=120) for c in lab.clusters()}
    names = sorted(clusters)
    slots = {name: asyncio.Semaphore(IN_FLIGHT) for name in names}
    for client in clusters.values():
        await client.apply(
            from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "baseline"}})
        )
    latencies: list[float] = []
    count = 0

    async def one(i: int) -> None:
        nonlocal count
        started = time.perf_counter()
        per_cluster = manifests(f"app{i:03d}", names)

        async def to(cluster: str) -> None:
            nonlocal count
            for obj in per_cluster[cluster]:
                obj["metadata"]["namespace"] = "baseline"
                async with slots[cluster]:
                    await applied(clusters[cluster], obj)
                count += 1

        await asyncio.gather(*(to(c) for c in names))
        latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(apps)))
    elapsed = time.perf_counter() - started
    for client in clusters.values():
        await client.close()
    return elapsed, latencies, count


def wharf(lab: Lab, apps: int, workdir: Path) -> tuple[float, list[float], int]:
    port = free_port()
    db = os.environ.get("WHARF_DATABASE_URL") or f"sqlite:///{workdir / 'bench.db'}"
    server = start_server(
        port, {"WHARF_HEARTBEAT_SECONDS": "1", "WHARF_DATABASE_URL": db}, timeout=600
    )
    base = f"http://127.0.0.1:{port}"
    try:
        token = httpx.post(
            f"{base}/api/v1/login",
            json={"username": "admin", "password": PASSWORD},
            timeout=120,
        ).json()["token"]
        http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )
        names = [c.name for c in lab.clusters()]
        for cluster in lab.clusters():
            register_cluster(http, cluster.name, cluster.kubeconfig)
        while not all(
            c["status"].get("capacity") for c in http.get("/api/v1/clusters").json()["items"]
        ):
            time.sleep(0.2)
        http.put(
            "/api/v1/tenants/bench",
            json={
                "kind": "Tenant",
                "metadata": {"name": "bench"},
                "spec": {
                    "quota": {"cpu": "40", "memory": "80Gi", "pods": "600"},
                    "clusters": names,
                },
            },
        ).raise_for_status()
        http.put(
            "/api/v1/tenants/bench/projects/bench",
            json={
                "kind": "Project",
                "metadata": {"name": "bench"},
                "spec": {
                    "quota": {"cpu": "40", "memory": "80Gi", "pods": "600"},
                    "environments": [{"name": "load", "clusters": names}],
                },
            },
        ).raise_for_status()
        while (
            http.get("/api/v1/tenants/bench/projects/bench").json()["status"].get("phase")
            != "Ready"
        ):
            time.sleep(0.2)
        submitted: dict[str, float] = {}
        applied: dict[str, float] = {}

        def submit(i: int) -> None:
            name = f"app{i:03d}"
            submitted[name] = time.perf_counter()
            http.put(
                f"/api/v1/tenants/bench/applications/{name}",
                json={
                    "kind": "Application",
                    "metadata": {"name": name},
                    "spec": {
                        "project": "bench",
                        "environment": "load",
                        "template": {"name": "web-service", "version": "1.0.0"},
                        "values": {"name": name, "image": IMAGE, "replicas": 1},
                    },
                },
            ).raise_for_status()

        print(f"wharf: submitting {apps} applications", flush=True)
        started = time.perf_counter()
        # Submitted as a deploy pipeline would, several at once (the loop applies all at once).
        with ThreadPoolExecutor(max_workers=SUBMITTERS) as pool:
            list(pool.map(submit, range(apps)))
        print(
            f"wharf: {apps} applications submitted ({SUBMITTERS} at once) in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        # Watched at 5 lists a second: the bench's own reads are not delivery's work (at 20 a
        # second, lists of 200 applications with their status took a sizeable share of a core).
        while len(applied) < apps:
            page = http.get("/api/v1/applications", params={"limit": 500}).json()["items"]
            now = time.perf_counter()
            for item in page:
                name, status = item["metadata"]["name"], item["status"]
                clusters = status.get("clusters", {})
                done = (
                    status.get("observedGeneration") == item["metadata"]["generation"]
                    and len(clusters) == len(names)
                    and all(c["state"] in ("Progressing", "Available") for c in clusters.values())
                )
                if done and name not in applied:
                    applied[name] = now
            time.sleep(POLL_SECONDS)
        elapsed = max(applied.values()) - started
        latencies = [(applied[n] - submitted[n]) * 1000 for n in submitted]
        count = apps * len(names) * len(manifests("x", names)[names[0]])
        return elapsed, latencies, count
    finally:
        server.terminate()
        server.wait(timeout=30)


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes a decoded object takes in this process: its containers and what they hold, each
    counted once (strings shared between objects, like interned keys, are counted once)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list):
        size += sum(deep_size(v, seen) for v in obj)
    return size


async def cache_footprint(lab: Lab) -> list[tuple[str, int, float, float, float]]:
    """Per kind delivery watches, in the first cluster: objects, bytes per object on the wire
    (JSON, as listed), in the cache's JSON (managedFields dropped), and in memory here."""
    cluster = lab.clusters()[0]
    client = async_client(cluster.kubeconfig, timeout=120)
    rows = []
    for kind in RESOURCES:
        labels = OWNED
        raw = [o.to_dict() async for o in client.list(kind, namespace="*", labels=labels)]
        if not raw:
            continue
        wire = sum(len(json.dumps(o)) for o in raw) / len(raw)
        cache = Informer(client, kind, labels=labels)
        await cache._list()
        kept = list(cache.items.values())
        slim_json = sum(len(json.dumps(slim(o))) for o in kept) / len(kept)
        seen: set[int] = set()
        memory = sum(deep_size(o, seen) for o in kept) / len(kept)
        rows.append((kind.__name__, len(kept), wire, slim_json, memory))
    await client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--compact", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()
    compact = args.clusters > MAX_CLUSTERS if args.compact is None else args.compact
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("build the lab first: uv run wharf lab build")
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp) / "lab", binaries)
        lab.up(clusters=args.clusters, nodes=3, progress=lambda _: None, compact=compact)
        try:
            base_s, base_lat, base_n = asyncio.run(baseline(lab, args.apps))
            print(f"plain loop: {base_n / base_s:.1f} objects/s", flush=True)
            wharf_s, wharf_lat, wharf_n = wharf(lab, args.apps, Path(tmp))
            footprint = asyncio.run(cache_footprint(lab))
        finally:
            lab.down(progress=lambda _: None)
    kind = "compact " if compact else ""
    print(f"{args.apps} applications (web-service) to {args.clusters} {kind}clusters")
    print(f"{'':<28}{'objects/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    base_rate, wharf_rate = base_n / base_s, wharf_n / wharf_s
    for label, rate, lat in (
        ("plain concurrent SSA loop", base_rate, base_lat),
        ("wharf (submit to applied)", wharf_rate, wharf_lat),
    ):
        print(f"{label:<28}{rate:>10.1f}{pct(lat, 50):>10.0f}{pct(lat, 99):>10.0f}")
    print(f"ratio wharf / plain: {wharf_rate / base_rate:.2f} of the objects per second")
    print("\ndelivery's watch cache in the first cluster, bytes per object")
    print(f"{'kind':<26}{'objects':>8}{'wire JSON':>11}{'cache JSON':>12}{'in memory':>11}")
    for kind_name, count, wire, kept, memory in footprint:
        print(f"{kind_name:<26}{count:>8}{wire:>11.0f}{kept:>12.0f}{memory:>11.0f}")


if __name__ == "__main__":
    main()
