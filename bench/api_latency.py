"""API latency at a steady request rate: list, get and mutation, next to an empty endpoint.

Starts a real `wharf server` (SQLite by default; WHARF_DATABASE_URL for PostgreSQL), seeds
tenants and projects, then sends requests on a fixed schedule (open loop: a slow answer does
not slow the sender) and prints p50/p99 per endpoint beside /healthz of the same server,
measured in the same run. Prints figures; asserts nothing about time.

    uv run python bench/api_latency.py [--rate 50] [--seconds 10] [--projects 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import httpx
from benchkit import PASSWORD, free_port, pct, start_server


def seed(http: httpx.Client, tenants: int, projects: int) -> None:
    per_tenant = max(1, projects // tenants)
    for t in range(tenants):
        name = f"bench{t:03d}"
        http.put(
            f"/api/v1/tenants/{name}",
            json={
                "kind": "Tenant",
                "metadata": {"name": name},
                "spec": {"quota": {"count/configmaps": str(per_tenant * 10)}},
            },
        ).raise_for_status()
        for p in range(per_tenant):
            http.put(
                f"/api/v1/tenants/{name}/projects/p{p:04d}",
                json={
                    "kind": "Project",
                    "metadata": {"name": f"p{p:04d}", "labels": {"team": f"x{p % 7}"}},
                    "spec": {"quota": {"count/configmaps": "10"}},
                },
            ).raise_for_status()


def wait_idle(http: httpx.Client) -> None:
    """Measure the steady state: wait until the controllers have placed what was seeded."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        depths = [
            float(line.rsplit(" ", 1)[1])
            for line in http.get("/metrics").text.splitlines()
            if line.startswith("wharf_controller_queue_depth{")
        ]
        if depths and not any(depths):
            return
        time.sleep(0.5)
    raise SystemExit("the controllers did not settle within 5 minutes")


async def measure(client: httpx.AsyncClient, make, rate: float, seconds: float) -> list[float]:
    """Send make(i) at `rate` per second for `seconds`; return each latency in ms."""
    latencies: list[float] = []
    interval = 1.0 / rate
    start = time.perf_counter()
    tasks = []

    async def one(i: int) -> None:
        method, url, body = make(i)
        sent = time.perf_counter()
        response = await client.request(method, url, json=body)
        latencies.append((time.perf_counter() - sent) * 1000)
        if response.status_code >= 400:
            raise SystemExit(f"{method} {url}: {response.status_code} {response.text}")

    for i in range(int(rate * seconds)):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies


async def run(base: str, token: str, rate: float, seconds: float) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        project = (await client.get("/api/v1/tenants/bench000/projects/p0000")).json()

        def mutate(i: int) -> tuple[str, str, dict]:
            body = {**project, "spec": {**project["spec"], "displayName": f"run {i}"}}
            body["metadata"] = {"name": "p0000"}
            return "PUT", "/api/v1/tenants/bench000/projects/p0000", body

        cases = {
            "empty (GET /healthz)": lambda i: ("GET", "/healthz", None),
            "list (GET /api/v1/projects?limit=100)": lambda i: (
                "GET",
                "/api/v1/projects?limit=100",
                None,
            ),
            "get (GET one project)": lambda i: (
                "GET",
                f"/api/v1/tenants/bench000/projects/p{i % 50:04d}",
                None,
            ),
            "mutation (PUT a project)": mutate,
        }
        await measure(client, cases["empty (GET /healthz)"], rate, 1.0)  # warm up
        print(f"{'endpoint':<42}{'p50 ms':>10}{'p99 ms':>10}{'vs empty p50':>15}")
        baseline = None
        for name, make in cases.items():
            values = await measure(client, make, rate, seconds)
            p50, p99 = pct(values, 50), pct(values, 99)
            baseline = baseline or p50
            print(f"{name:<42}{p50:>10.2f}{p99:>10.2f}{p50 / baseline:>14.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint")
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        db = os.environ.get("WHARF_DATABASE_URL") or f"sqlite:///{Path(tmp) / 'bench.db'}"
        server = start_server(port, {"WHARF_DATABASE_URL": db}, timeout=30)
        try:
            base = f"http://127.0.0.1:{port}"
            token = httpx.post(
                f"{base}/api/v1/login", json={"username": "admin", "password": PASSWORD}
            ).json()["token"]
            http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
            started = time.perf_counter()
            seed(http, args.tenants, args.projects)
            database = http.get("/api/v1/version").json()["database"]
            wait_idle(http)
            print(
                f"seeded {args.tenants} tenants, {args.projects} projects on {database} "
                f"in {time.perf_counter() - started:.1f}s; {args.rate:.0f} req/s for "
                f"{args.seconds:.0f}s per endpoint"
            )
            asyncio.run(run(base, token, args.rate, args.seconds))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
